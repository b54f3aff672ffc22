//! References that keep the host's own objects loaded while mmld uses them.
//!
//! Owns: taking a reference from glibc on an object `dl_iterate_phdr`
//! reported (`dlopen(path, RTLD_NOLOAD | RTLD_NOW)`), checking that the
//! reference is to that very object (same load address), and giving it back
//! (`dlclose`) when the last user drops it. The host may `dlclose` its own
//! libraries from any thread at any moment; a library whose tables mmld
//! reads, or into which an mmld object bound a symbol, must not go away
//! underneath (glibc keeps the same promise with its relocation
//! dependencies). Must never: load a library (every `dlopen` here has
//! `RTLD_NOLOAD`), be called from inside a `dl_iterate_phdr` callback (glibc
//! holds its loader locks there), or be called while holding an mmld mutex
//! that code running under glibc's loader lock could want.

use std::ffi::{CStr, c_void};

/// One reference on a host object. Objects that can never be unloaded (the
/// executable, the vDSO) need none and hold a null handle.
#[derive(Debug)]
pub struct HostRef {
    handle: *mut c_void,
}

// SAFETY: a dlopen handle is an opaque token glibc accepts from any thread.
unsafe impl Send for HostRef {}
// SAFETY: as above; mmld never dereferences it.
unsafe impl Sync for HostRef {}

/// The public head of glibc's `struct link_map` (part of its stable ABI).
#[repr(C)]
struct LinkMapHead {
    l_addr: usize,
}

impl HostRef {
    /// For an object that lives as long as the process.
    pub fn permanent() -> HostRef {
        HostRef {
            handle: std::ptr::null_mut(),
        }
    }

    /// Does the object live as long as the process (no reference held)?
    pub fn is_permanent(&self) -> bool {
        self.handle.is_null()
    }

    /// A reference on the object glibc loaded as `name` (its `dlpi_name`),
    /// if it is still loaded at load bias `bias`. `None` when the object is
    /// gone, or when the name now denotes another object (unloaded and
    /// loaded again elsewhere, or one in another namespace).
    pub fn take(name: &CStr, bias: u64) -> Option<HostRef> {
        // SAFETY: RTLD_NOLOAD never maps anything or runs a constructor; it
        // only counts one more reference on an object already loaded.
        let handle = unsafe {
            (crate::host::real().dlopen)(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD)
        };
        if handle.is_null() {
            // SAFETY: clears the error glibc recorded for this thread.
            unsafe { (crate::host::real().dlerror)() };
            return None;
        }
        let held = HostRef { handle };
        (held.load_bias()? == bias).then_some(held)
    }

    /// The load bias glibc records for the referenced object.
    fn load_bias(&self) -> Option<u64> {
        let mut map: *const LinkMapHead = std::ptr::null();
        // SAFETY: RTLD_DI_LINKMAP stores the handle's `struct link_map *`;
        // its first field is `l_addr` in every glibc; the object stays
        // loaded because `self` holds a reference.
        unsafe {
            if (crate::host::real().dlinfo)(
                self.handle,
                libc::RTLD_DI_LINKMAP,
                (&raw mut map).cast(),
            ) != 0
                || map.is_null()
            {
                return None;
            }
            Some((*map).l_addr as u64)
        }
    }
}

impl Drop for HostRef {
    fn drop(&mut self) {
        if !self.handle.is_null() {
            // SAFETY: balances the RTLD_NOLOAD dlopen in `take`, once.
            unsafe { (crate::host::real().dlclose)(self.handle) };
        }
    }
}

/// Is the object at `bias` with these segments one that lives as long as
/// the process: the vDSO (the kernel maps it), the dynamic linker (at
/// `AT_BASE`), or the C library this code calls (loaded at start-up, never
/// unloaded)? These need no reference, which spares a `dlopen` per load.
pub fn is_permanent(bias: u64, phdrs: &[libc::Elf64_Phdr]) -> bool {
    let Some(start) = start_of(bias, phdrs) else {
        return false;
    };
    // SAFETY: getauxval only reads the auxiliary vector.
    let vdso = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
    (vdso != 0 && start == vdso) || is_libc_or_interpreter(bias, phdrs)
}

/// Is it the vDSO (which the kernel maps, and which is in no scope)?
pub fn is_vdso(bias: u64, phdrs: &[libc::Elf64_Phdr]) -> bool {
    // SAFETY: getauxval only reads the auxiliary vector.
    let vdso = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
    vdso != 0 && start_of(bias, phdrs) == Some(vdso)
}

/// Is it the dynamic linker (at `AT_BASE`) or the C library this code
/// calls? Both are in every dynamically linked process's global scope.
pub fn is_libc_or_interpreter(bias: u64, phdrs: &[libc::Elf64_Phdr]) -> bool {
    let Some(start) = start_of(bias, phdrs) else {
        return false;
    };
    // SAFETY: getauxval only reads the auxiliary vector.
    let interpreter = unsafe { libc::getauxval(libc::AT_BASE) };
    let libc_code = libc::dlopen as *const () as usize as u64;
    let holds_libc = phdrs.iter().filter(|p| p.p_type == libc::PT_LOAD).any(|p| {
        let s = bias.wrapping_add(p.p_vaddr);
        libc_code >= s && libc_code - s < p.p_memsz
    });
    (interpreter != 0 && start == interpreter) || holds_libc
}

/// Process address of the page its lowest `PT_LOAD` starts on.
fn start_of(bias: u64, phdrs: &[libc::Elf64_Phdr]) -> Option<u64> {
    let first = phdrs
        .iter()
        .filter(|p| p.p_type == libc::PT_LOAD)
        .map(|p| p.p_vaddr)
        .min()?;
    Some(bias.wrapping_add(first & !0xfff))
}
