//! The exit hook: a place in glibc's `_dl_fini` for mmld's destructors.
//!
//! glibc runs the destructors of the objects it loaded from `_dl_fini`,
//! the executable's first, then the others in its dependency order; exit
//! handlers (`atexit`) run before all of that. For mmld's libraries to be
//! finalised where glibc would finalise a `dlopen`ed library, after the
//! executable's own destructors, mmld has glibc `dlopen` a tiny object it
//! builds in memory (a `memfd`, named like `tls_object`'s and hidden from
//! mmld's host scope the same way) whose only code pointer is one
//! `DT_FINI_ARRAY` entry: the address of mmld's exit routine. glibc calls
//! array entries as they are (relocation would only add the object's own
//! load address, and there is none to add), so the object needs no code,
//! no relocation and no executable page. It needs `libc.so.6`, so glibc
//! finalises it before libc.
//!
//! The object is loaded only when the process exits (see [`arm`]): before
//! that, a load pays one exit-handler registration, and the process
//! carries no extra object or private page.
//!
//! Owns: building that object (with `elf_writer`), loading it at most once
//! per process, and keeping it (and the descriptor that names it) for the
//! life of the process. Must never: be unloaded, or load a second hook.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;

use super::elf_writer::{
    DT_FINI_ARRAY, DT_FINI_ARRAYSZ, DT_HASH, DT_NEEDED, DT_NULL, DT_SONAME, DT_STRSZ, DT_STRTAB,
    DT_SYMENT, DT_SYMTAB, DYN_SIZE, EHDR_SIZE, PHDR_SIZE, SYM_SIZE, Writer, load_dynamic_stack,
    write_header, write_phdrs,
};
use crate::error::{ErrorKind, KindResult};

/// `DT_SONAME` of the hook object.
pub const SONAME: &str = "mmld-exit-hook";
/// What the hook needs: glibc's `_dl_fini` finalises it before these.
/// Only libraries the process can never unload: the hook keeps what it
/// needs loaded.
const NEEDED: &[&str] = &["libc.so.6"];

/// Where each part of the hook object goes.
struct Layout {
    symtab: u64,
    strtab: u64,
    hash: u64,
    dynamic: u64,
    dynamic_entries: usize,
    fini_array: u64,
    end: u64,
}

fn layout(strsz: u64, needed: usize) -> Layout {
    let round8 = |v: u64| v.next_multiple_of(8);
    let symtab = (EHDR_SIZE + 3 * PHDR_SIZE) as u64;
    let strtab = symtab + SYM_SIZE as u64;
    // nbucket, nchain, one bucket, one chain entry: 4-byte words.
    let hash = round8(strtab + strsz);
    let dynamic = hash + 16;
    // DT_NEEDED..., HASH, STRTAB, SYMTAB, STRSZ, SYMENT, SONAME,
    // FINI_ARRAY, FINI_ARRAYSZ, NULL.
    let dynamic_entries = needed + 9;
    let fini_array = dynamic + (dynamic_entries * DYN_SIZE) as u64;
    Layout {
        symtab,
        strtab,
        hash,
        dynamic,
        dynamic_entries,
        fini_array,
        end: fini_array + 8,
    }
}

/// The hook object's bytes: `routine` as its only `DT_FINI_ARRAY` entry,
/// `needed` as its `DT_NEEDED` entries.
pub fn build(routine: u64, needed: &[&str]) -> Vec<u8> {
    let mut strtab = vec![0u8];
    let name_at = |name: &str, strtab: &mut Vec<u8>| {
        let at = strtab.len() as u64;
        strtab.extend_from_slice(name.as_bytes());
        strtab.push(0);
        at
    };
    let needed_at: Vec<u64> = needed.iter().map(|n| name_at(n, &mut strtab)).collect();
    let soname_at = name_at(SONAME, &mut strtab);
    let l = layout(strtab.len() as u64, needed.len());
    let mut w = Writer::default();
    write_header(&mut w, 3);
    let dynamic_size = (l.dynamic_entries * DYN_SIZE) as u64;
    let page = crate::arch::current::PAGE_SIZE;
    write_phdrs(
        &mut w,
        &load_dynamic_stack(l.end, l.dynamic, dynamic_size, page),
    );
    debug_assert_eq!(w.pos(), l.symtab);
    w.bytes.extend_from_slice(&[0; SYM_SIZE]);
    w.bytes.extend_from_slice(&strtab);
    w.pad_to(8);
    debug_assert_eq!(w.pos(), l.hash);
    // DT_HASH with one bucket and only the null symbol: every lookup in
    // this object misses at once.
    for v in [1u32, 1, 0, 0] {
        w.u32(v);
    }
    debug_assert_eq!(w.pos(), l.dynamic);
    let entries = needed_at.iter().map(|&at| (DT_NEEDED, at)).chain([
        (DT_HASH, l.hash),
        (DT_STRTAB, l.strtab),
        (DT_SYMTAB, l.symtab),
        (DT_STRSZ, strtab.len() as u64),
        (DT_SYMENT, SYM_SIZE as u64),
        (DT_SONAME, soname_at),
        (DT_FINI_ARRAY, l.fini_array),
        (DT_FINI_ARRAYSZ, 8),
        (DT_NULL, 0),
    ]);
    for (tag, value) in entries {
        w.u64(tag);
        w.u64(value);
    }
    debug_assert_eq!(w.pos(), l.fini_array);
    w.u64(routine);
    debug_assert_eq!(w.pos(), l.end);
    w.bytes
}

/// The hook as glibc has it loaded. Never closed: glibc must still list
/// it when the process exits. The descriptor stays open so that
/// `/proc/PID/fd/N` names this object and no later one.
struct Installed {
    _fd: OwnedFd,
    _handle: usize,
}

/// Where the process is in the hook's life.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No load has asked for the hook yet.
    Idle,
    /// The installer is registered with glibc's exit handlers.
    Armed,
    /// The installer has run (the process is exiting): a load from now on
    /// installs the hook at once.
    Exiting,
}

struct State {
    phase: Phase,
    routine: Option<extern "C" fn()>,
    /// Does anything need the hook at exit (objects still loaded, or an
    /// unload in progress)?
    needed: Option<fn() -> bool>,
    installed: Option<Installed>,
}

static STATE: Mutex<State> = Mutex::new(State {
    phase: Phase::Idle,
    routine: None,
    needed: None,
    installed: None,
});

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

unsafe extern "C" {
    /// glibc's registration of an exit handler; a null `dso` ties it to no
    /// object, so no `__cxa_finalize` (a `dlclose`) ever runs it early.
    fn __cxa_atexit(
        f: unsafe extern "C" fn(*mut std::ffi::c_void),
        arg: *mut std::ffi::c_void,
        dso: *mut std::ffi::c_void,
    ) -> std::ffi::c_int;
}

/// Make sure `routine` runs from glibc's `_dl_fini` at exit, where glibc
/// would finalise a library `dlopen`ed when the exit began: after the
/// executable's own destructors and after every exit handler.
///
/// The hook object is built and loaded only when the process exits, from
/// an exit handler registered here (the first call; later calls do
/// nothing): exit handlers all run before `_dl_fini`, and an object glibc
/// loads from one of them is finalised by that `_dl_fini` like any other.
/// A load then costs one `__cxa_atexit` instead of a `memfd`, a `dlopen`
/// and a private page, and a process that unloaded everything before
/// exiting never builds the hook at all (`needed` says so). A load made
/// after the installer ran (from a later exit handler) installs the hook
/// at once.
pub fn arm(routine: extern "C" fn(), needed: fn() -> bool) -> KindResult<()> {
    let mut s = state();
    s.routine = Some(routine);
    s.needed = Some(needed);
    match s.phase {
        Phase::Armed => Ok(()),
        Phase::Exiting => install_locked(&mut s, routine),
        Phase::Idle => {
            // SAFETY: registers a function that takes its (unused)
            // argument and only touches mmld's own state and glibc's
            // `dlopen`; glibc calls it once, from `exit`.
            let rc = unsafe {
                __cxa_atexit(install_at_exit, std::ptr::null_mut(), std::ptr::null_mut())
            };
            if rc != 0 {
                // No room for an exit handler: load the hook now.
                return install_locked(&mut s, routine);
            }
            s.phase = Phase::Armed;
            Ok(())
        }
    }
}

/// The exit handler `arm` registers.
unsafe extern "C" fn install_at_exit(_: *mut std::ffi::c_void) {
    let (routine, needed) = {
        let mut s = state();
        s.phase = Phase::Exiting;
        (s.routine, s.needed)
    };
    let Some(routine) = routine else { return };
    // Asked without the state lock: `needed` takes the registry's.
    if !needed.is_some_and(|n| n()) {
        return;
    }
    let mut s = state();
    if let Err(e) = install_locked(&mut s, routine) {
        drop(s);
        tracing::warn!(target: "mmld::libs", "exit hook: {e}; destructors run from exit handlers");
        // Glibc refused the hook: run the destructors now, after the exit
        // handlers registered later but before the executable's
        // destructors, rather than never.
        routine();
    }
}

/// Build the hook object and have glibc load it (once).
fn install_locked(s: &mut State, routine: extern "C" fn()) -> KindResult<()> {
    if s.installed.is_some() {
        return Ok(());
    }
    let bytes = build(routine as usize as u64, NEEDED);
    let fd = super::static_tls::memfd_with(c"mmld-exit-hook", &bytes)?;
    let name = CString::new(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        fd.as_raw_fd()
    ))
    .map_err(|_| ErrorKind::Other("exit hook: memfd path contains a NUL byte".into()))?;
    // Named before glibc lists it, so no reader of the host's objects ever
    // takes it for a library.
    crate::host::hide(name.as_bytes());
    // SAFETY: `name` is NUL-terminated; the object has no constructor and
    // no relocation: glibc maps it, loads libc.so.6 (already loaded) as its
    // dependency and runs nothing of it until exit.
    let handle =
        unsafe { (crate::host::real().dlopen)(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        crate::host::unhide(name.as_bytes());
        return Err(ErrorKind::Other(format!(
            "glibc refused mmld's exit hook object: {}",
            super::static_tls::dlerror()
        )));
    }
    s.installed = Some(Installed {
        _fd: fd,
        _handle: handle as usize,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(bytes: &[u8], at: u64) -> u64 {
        let at = at as usize;
        u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn the_only_fini_array_entry_is_the_routine() {
        let obj = build(0x1234_5678, &["libc.so.6"]);
        let l = layout(1 + 10 + SONAME.len() as u64 + 1, 1);
        assert_eq!(obj.len() as u64, l.end);
        let mut tags = Vec::new();
        for k in 0..l.dynamic_entries as u64 {
            tags.push((
                word(&obj, l.dynamic + 16 * k),
                word(&obj, l.dynamic + 16 * k + 8),
            ));
        }
        assert!(tags.contains(&(DT_FINI_ARRAY, l.fini_array)));
        assert!(tags.contains(&(DT_FINI_ARRAYSZ, 8)));
        assert_eq!(tags.last(), Some(&(DT_NULL, 0)));
        assert_eq!(word(&obj, l.fini_array), 0x1234_5678);
        // DT_NEEDED names libc.so.6 in the string table.
        let (_, at) = tags.iter().find(|(t, _)| *t == DT_NEEDED).copied().unwrap();
        let s = (l.strtab + at) as usize;
        assert_eq!(&obj[s..s + 10], b"libc.so.6\0");
        // The whole object is one read-write PT_LOAD: no executable page.
        let flags = u32::from_le_bytes(obj[68..72].try_into().unwrap());
        assert_eq!(flags, 6);
    }
}
