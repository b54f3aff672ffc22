//! Questions about loaded objects: `dladdr`, `dladdr1`, `dlinfo`,
//! `dl_iterate_phdr` and `_dl_find_object`, answered for mmld's objects as
//! well as glibc's, so unwinders, backtraces and profilers see mmld-loaded
//! code by name.
//!
//! Owns: translating `mmld::objects` views into glibc's structures. Must
//! never: answer for an address or handle mmld does not own (glibc does).

use std::ffi::{c_int, c_void};

use mmld_core::host::{self, real::PhdrCallback};
use mmld_core::objects::{self, MappedObject};

use crate::{errors, handles};

/// `dladdr`: the object and nearest symbol of `addr`.
///
/// # Safety
/// `info` points to a writable `Dl_info`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dladdr(addr: *const c_void, info: *mut libc::Dl_info) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { dladdr1(addr, info, std::ptr::null_mut(), 0) }
}

const RTLD_DL_SYMENT: c_int = 1;
const RTLD_DL_LINKMAP: c_int = 2;

/// `dladdr1`: `dladdr` plus the symbol entry or the `link_map`.
///
/// # Safety
/// `info` points to a writable `Dl_info`; `extra` to a writable pointer
/// when `flags` asks for one.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dladdr1(
    addr: *const c_void,
    info: *mut libc::Dl_info,
    extra: *mut *mut c_void,
    flags: c_int,
) -> c_int {
    let a = addr as u64;
    let Some((fname, fbase, link_map)) =
        objects::containing(a, |o| (o.name.as_ptr(), o.start, o.link_map))
    else {
        // SAFETY: forwarded as given.
        return unsafe {
            if flags == 0 {
                (host::real().dladdr)(addr, info)
            } else {
                (host::real().dladdr1)(addr, info, extra, flags)
            }
        };
    };
    let symbol = objects::symbol_at(a);
    // SAFETY: the caller's contract; the strings live in the object (its
    // debugger node and its string table) while it stays loaded.
    unsafe {
        (*info).dli_fname = fname;
        (*info).dli_fbase = fbase as *mut c_void;
        (*info).dli_sname = symbol.map_or(std::ptr::null(), |s| s.0);
        (*info).dli_saddr = symbol.map_or(std::ptr::null_mut(), |s| s.1 as *mut c_void);
        if !extra.is_null() {
            match flags {
                RTLD_DL_SYMENT => {
                    *extra = symbol.map_or(std::ptr::null_mut(), |s| s.2 as *mut c_void)
                }
                RTLD_DL_LINKMAP => *extra = link_map.cast(),
                _ => {}
            }
        }
    }
    1
}

/// `dlinfo` for an mmld handle; glibc's for the rest.
///
/// # Safety
/// `arg` points to what `request` writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlinfo(handle: *mut c_void, request: c_int, arg: *mut c_void) -> c_int {
    crate::init();
    let Some(h) = handles::mmld_handle(handle) else {
        errors::begin(false);
        // SAFETY: forwarded as given.
        return unsafe { (host::real().dlinfo)(handle, request, arg) };
    };
    errors::begin(true);
    let base = h.library().base_address();
    let answered = objects::containing(base, |o| {
        // SAFETY: the caller's contract for each request.
        unsafe { answer(&h, o, request, arg) }
    });
    match answered {
        Some(Ok(())) => 0,
        Some(Err(message)) => {
            errors::set(message);
            -1
        }
        None => {
            errors::set(format!("{}: object is being unloaded", h.path().display()));
            -1
        }
    }
}

/// # Safety
/// `arg` points to what `request` writes.
unsafe fn answer(
    h: &handles::Handle,
    o: &MappedObject<'_>,
    request: c_int,
    arg: *mut c_void,
) -> Result<(), String> {
    // SAFETY: the caller's contract.
    unsafe {
        match request {
            libc::RTLD_DI_LMID => *arg.cast::<libc::Lmid_t>() = libc::LM_ID_BASE,
            libc::RTLD_DI_LINKMAP => *arg.cast::<*mut c_void>() = o.link_map.cast(),
            libc::RTLD_DI_ORIGIN => {
                let dir = h.path().parent().unwrap_or(std::path::Path::new("."));
                let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
                let bytes = dir.as_os_str().as_encoded_bytes();
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), arg.cast::<u8>(), bytes.len());
                *arg.cast::<u8>().add(bytes.len()) = 0;
            }
            libc::RTLD_DI_TLS_MODID => *arg.cast::<usize>() = o.tls_modid as usize,
            libc::RTLD_DI_TLS_DATA => {
                *arg.cast::<*mut c_void>() = if o.tls_modid == 0 {
                    std::ptr::null_mut()
                } else {
                    mmld_core::runtime::tls::address_in_this_thread(o.tls_modid, 0) as *mut c_void
                }
            }
            _ => {
                return Err(format!(
                    "{}: dlinfo request {request} is not supported for libraries mmld loaded",
                    h.path().display()
                ));
            }
        }
    }
    Ok(())
}

/// The user's callback and glibc's counters, seen while glibc iterates.
struct Iteration {
    callback: PhdrCallback,
    data: *mut c_void,
    counters: (u64, u64),
}

unsafe extern "C" fn through_glibc(
    info: *mut libc::dl_phdr_info,
    size: usize,
    data: *mut c_void,
) -> c_int {
    // SAFETY: `data` is the `Iteration` below; `info` is glibc's.
    unsafe {
        let it = &mut *data.cast::<Iteration>();
        it.counters = ((*info).dlpi_adds, (*info).dlpi_subs);
        // mmld's static TLS carriers are not libraries: hidden, as from
        // mmld's own walks.
        let name = (*info).dlpi_name;
        if !name.is_null() && host::is_hidden(std::ffi::CStr::from_ptr(name).to_bytes()) {
            return 0;
        }
        match it.callback {
            Some(f) => f(info, size, it.data),
            None => 0,
        }
    }
}

/// `dl_iterate_phdr`: glibc's objects, then mmld's.
///
/// # Safety
/// `callback` is a valid function taking `data`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dl_iterate_phdr(callback: PhdrCallback, data: *mut c_void) -> c_int {
    let mut it = Iteration {
        callback,
        data,
        counters: (0, 0),
    };
    // SAFETY: glibc calls `through_glibc` with `it` during this call.
    let r = unsafe { (host::real().dl_iterate_phdr)(Some(through_glibc), (&raw mut it).cast()) };
    let Some(f) = callback else { return r };
    if r != 0 {
        return r;
    }
    let (adds, subs) = objects::changes();
    objects::find_map(|o| {
        let mut info = libc::dl_phdr_info {
            dlpi_addr: o.bias,
            dlpi_name: o.name.as_ptr(),
            dlpi_phdr: o.phdrs.as_ptr(),
            dlpi_phnum: o.phdrs.len() as u16,
            dlpi_adds: it.counters.0 + adds,
            dlpi_subs: it.counters.1 + subs,
            dlpi_tls_modid: o.tls_modid as usize,
            dlpi_tls_data: std::ptr::null_mut(),
        };
        // SAFETY: `info` and what it points to live for this call.
        let r = unsafe {
            f(
                &raw mut info,
                std::mem::size_of::<libc::dl_phdr_info>(),
                data,
            )
        };
        (r != 0).then_some(r)
    })
    .unwrap_or(0)
}

/// glibc 2.35's `struct dl_find_object`.
#[repr(C)]
pub struct DlFindObject {
    flags: u64,
    map_start: *mut c_void,
    map_end: *mut c_void,
    link_map: *mut c_void,
    eh_frame: *mut c_void,
    reserved: [u64; 7],
}

/// `_dl_find_object`: the object containing `pc` and its unwind table.
///
/// # Safety
/// `result` points to a writable `struct dl_find_object`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _dl_find_object(pc: *mut c_void, result: *mut DlFindObject) -> c_int {
    let found = objects::containing(pc as u64, |o| {
        // SAFETY: the caller's contract.
        unsafe {
            (*result).flags = 0;
            (*result).map_start = o.start as *mut c_void;
            (*result).map_end = o.end as *mut c_void;
            (*result).link_map = o.link_map.cast();
            (*result).eh_frame = o.eh_frame_hdr as *mut c_void;
        }
    });
    if found.is_some() {
        return 0;
    }
    match host::real().dl_find_object {
        // SAFETY: forwarded as given.
        Some(f) => unsafe { f(pc, result.cast()) },
        None => -1,
    }
}
