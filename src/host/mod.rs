//! The host process as a symbol provider.
//!
//! Owns: asking glibc's loader about objects mmld does not map: the global
//! scope (`dlsym(RTLD_DEFAULT)` and `dlvsym`), whether a library is already
//! loaded (`dlopen` with `RTLD_NOLOAD`), glibc-family names, and the
//! objects glibc holds for mmld that are not libraries (hidden from every
//! walk). Must never: load a library into the host (every `dlopen` here has
//! `RTLD_NOLOAD`, except the glibc family's own), or call glibc's `dl*`
//! functions by name: they go through `real`, which stays glibc's when the
//! C ABI drop-in interposes the names.

pub mod real;

use crate::fixedhash::HashSet;
use std::ffi::{CStr, CString};
use std::sync::{Mutex, OnceLock};

pub use real::real;

/// A failed probe leaves a message in glibc's `dlerror` state, which is the
/// program's (the drop-in's `dlerror` reports it): read it away.
fn forget_error() {
    // SAFETY: dlerror has no preconditions.
    unsafe { (real().dlerror)() };
}

/// Libraries that belong to the C library itself: mmld never maps them,
/// because two copies of libc in one process corrupt each other's state.
pub const GLIBC_FAMILY: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libresolv.so.2",
    "libutil.so.1",
    "libanl.so.1",
    "libnsl.so.1",
    "libBrokenLocale.so.1",
    "libmvec.so.1",
    "libc_malloc_debug.so.0",
    "libthread_db.so.1",
    "ld-linux-x86-64.so.2",
];

/// Is `name` (a `DT_NEEDED` string or a path) one of the glibc family?
pub fn is_glibc_family(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    GLIBC_FAMILY.contains(&base)
}

/// A handle to a library the host process already has loaded.
#[derive(Debug)]
pub struct HostLibrary {
    /// glibc's handle, taken on first use for an object that lives as long
    /// as the process (`permanent`): most loads never ask glibc about it.
    handle: std::sync::atomic::AtomicPtr<libc::c_void>,
    pub name: String,
    /// The path glibc loaded it from, looked up once.
    path: std::sync::OnceLock<Option<String>>,
}

// SAFETY: a dlopen handle is an opaque token glibc accepts from any thread.
unsafe impl Send for HostLibrary {}
// SAFETY: as above; the handle is never dereferenced by mmld.
unsafe impl Sync for HostLibrary {}

impl HostLibrary {
    /// The host's copy of `name`, if the host has loaded it. Never loads.
    pub fn find_loaded(name: &str) -> Option<HostLibrary> {
        let handle = glibc_dlopen(name, libc::RTLD_NOW | libc::RTLD_NOLOAD)?;
        Some(HostLibrary {
            handle: handle.into(),
            name: name.to_string(),
            path: std::sync::OnceLock::new(),
        })
    }

    /// The host's object glibc loaded from `path`, one that is never
    /// unloaded (the C library, the dynamic linker, a start-up library):
    /// no reference is needed to keep it, and a handle is taken only if
    /// something asks glibc about it.
    pub fn permanent(name: &str, path: &str) -> HostLibrary {
        HostLibrary {
            handle: std::ptr::null_mut::<libc::c_void>().into(),
            name: name.to_string(),
            path: std::sync::OnceLock::from(Some(path.to_string())),
        }
    }

    /// glibc's handle, taken now if it was left for first use.
    fn handle(&self) -> Option<*mut libc::c_void> {
        use std::sync::atomic::Ordering;
        let h = self.handle.load(Ordering::Acquire);
        if !h.is_null() {
            return Some(h);
        }
        // Only a permanent library leaves its handle for later, and it
        // always knows its path.
        let Some(Some(path)) = self.path.get() else {
            return None;
        };
        let taken = glibc_dlopen(path, libc::RTLD_NOW | libc::RTLD_NOLOAD)?;
        match self.handle.compare_exchange(
            std::ptr::null_mut(),
            taken,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Some(taken),
            Err(other) => {
                // Another thread took one first: give this one back.
                // SAFETY: balances the RTLD_NOLOAD dlopen just made.
                unsafe { (real().dlclose)(taken) };
                Some(other)
            }
        }
    }

    /// The path glibc loaded this library from, as `dl_iterate_phdr` names it.
    pub fn path_str(&self) -> Option<&str> {
        self.path
            .get_or_init(|| self.path().map(|p| p.to_string_lossy().into_owned()))
            .as_deref()
    }

    /// The host's copy of the object glibc loaded from `path` (an absolute
    /// path, as `dl_iterate_phdr` names it), reported under `name`. Matching
    /// a loaded object by its full name makes glibc search nothing.
    pub fn loaded_from(name: &str, path: &str) -> Option<HostLibrary> {
        let handle = glibc_dlopen(path, libc::RTLD_NOW | libc::RTLD_NOLOAD)?;
        Some(HostLibrary {
            handle: handle.into(),
            name: name.to_string(),
            path: std::sync::OnceLock::from(Some(path.to_string())),
        })
    }

    /// Ask glibc to load `name` (used only for the glibc family, which must
    /// be the host's own copy).
    pub fn load_system(name: &str) -> Option<HostLibrary> {
        let handle = glibc_dlopen(name, libc::RTLD_NOW | libc::RTLD_LOCAL)?;
        Some(HostLibrary {
            handle: handle.into(),
            name: name.to_string(),
            path: std::sync::OnceLock::new(),
        })
    }

    /// The file the host loaded this library from.
    pub fn path(&self) -> Option<std::path::PathBuf> {
        /// The public head of glibc's `struct link_map` (stable ABI).
        #[repr(C)]
        struct LinkMapHead {
            l_addr: usize,
            l_name: *const libc::c_char,
        }
        if let Some(Some(p)) = self.path.get() {
            return Some(std::path::PathBuf::from(p));
        }
        let handle = self.handle()?;
        let mut map: *const LinkMapHead = std::ptr::null();
        // SAFETY: RTLD_DI_LINKMAP stores a `struct link_map *` for a valid
        // handle; the head fields are part of glibc's public ABI, and the
        // name string lives as long as the library (we hold a reference).
        unsafe {
            if (real().dlinfo)(handle, libc::RTLD_DI_LINKMAP, (&raw mut map).cast()) != 0
                || map.is_null()
                || (*map).l_name.is_null()
            {
                return None;
            }
            let name = CStr::from_ptr((*map).l_name);
            use std::os::unix::ffi::OsStrExt;
            Some(std::path::PathBuf::from(std::ffi::OsStr::from_bytes(
                name.to_bytes(),
            )))
        }
    }

    /// Look `name` up in this library and its dependencies, as `dlsym` does.
    pub fn symbol(&self, name: &CStr, version: Option<&CStr>) -> Option<u64> {
        dl_lookup(self.handle()?, name, version)
    }
}

impl Drop for HostLibrary {
    fn drop(&mut self) {
        let handle = *self.handle.get_mut();
        if !handle.is_null() {
            // SAFETY: balances the reference taken by the RTLD_NOLOAD dlopen.
            unsafe { (real().dlclose)(handle) };
        }
    }
}

/// Look `name` up in the host's global scope (the executable, its
/// libraries, and `RTLD_GLOBAL` libraries), as a relocation would.
///
/// Asked through the main program's handle, not `RTLD_DEFAULT`: glibc
/// searches the same global scope for both, but a hit through
/// `RTLD_DEFAULT` records a dependency of the caller (the executable, which
/// never unloads) on the defining library and so makes that library
/// impossible to unload for the rest of the process. mmld keeps what it
/// binds to alive with its own references instead (`hostref`).
pub fn global_symbol(name: &CStr, version: Option<&CStr>) -> Option<u64> {
    dl_lookup(main_program_handle()?, name, version)
}

/// glibc's handle for the main program, whose `dlsym` searches the global
/// scope (the main program's search list, extended by `RTLD_GLOBAL` loads).
/// glibc's own `dlopen` of `name` with `flags`; a refusal clears glibc's
/// error state and gives `None`. Callers pass `RTLD_NOLOAD` (a look-up that
/// runs no constructor and maps nothing) except for the glibc family, which
/// must be the host's own copy.
fn glibc_dlopen(name: &str, flags: libc::c_int) -> Option<*mut libc::c_void> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string, and `real()` is glibc's
    // dlopen itself, never the drop-in's.
    let handle = unsafe { (real().dlopen)(c.as_ptr(), flags) };
    if handle.is_null() {
        forget_error();
        return None;
    }
    Some(handle)
}

fn main_program_handle() -> Option<*mut libc::c_void> {
    struct Handle(*mut libc::c_void);
    // SAFETY: an opaque token glibc accepts from any thread.
    unsafe impl Send for Handle {}
    // SAFETY: as above; never dereferenced.
    unsafe impl Sync for Handle {}
    static MAIN: std::sync::OnceLock<Handle> = std::sync::OnceLock::new();
    let h = MAIN.get_or_init(|| {
        // SAFETY: dlopen(NULL) returns the main program's handle; it loads
        // nothing. The reference is kept for the life of the process.
        Handle(unsafe { (real().dlopen)(std::ptr::null(), libc::RTLD_NOW) })
    });
    (!h.0.is_null()).then_some(h.0)
}

fn dl_lookup(handle: *mut libc::c_void, name: &CStr, version: Option<&CStr>) -> Option<u64> {
    // SAFETY: dlerror/dlsym/dlvsym take valid NUL-terminated strings and a
    // handle that is RTLD_DEFAULT or one glibc gave us. dlerror is cleared
    // first so a NULL result can be told apart from a symbol at address 0.
    unsafe {
        let real = real();
        (real.dlerror)();
        let p = match version {
            Some(v) => (real.dlvsym)(handle, name.as_ptr(), v.as_ptr()),
            None => (real.dlsym)(handle, name.as_ptr()),
        };
        if p.is_null() && !(real.dlerror)().is_null() {
            return None;
        }
        Some(p as u64)
    }
}

/// One object of the host process, as `dl_iterate_phdr` describes it.
pub struct HostObjectInfo<'a> {
    /// `dlpi_name`: a path, or empty for the executable.
    pub name: &'a CStr,
    /// Load bias.
    pub bias: u64,
    pub phdrs: &'a [libc::Elf64_Phdr],
    /// glibc's TLS module id (0 without TLS).
    pub tls_modid: u64,
    /// The calling thread's TLS block of this object, if allocated.
    pub tls_data: u64,
    /// glibc's `(dlpi_adds, dlpi_subs)`: changes when anything is loaded
    /// or unloaded.
    pub generation: (u64, u64),
}

/// Names (as `dl_iterate_phdr` reports them) of objects glibc loaded for
/// mmld that are not libraries: the static TLS objects of
/// `runtime::static_tls`. Nothing binds to them and no report lists them.
fn hidden() -> &'static Mutex<HashSet<Vec<u8>>> {
    static H: OnceLock<Mutex<HashSet<Vec<u8>>>> = OnceLock::new();
    H.get_or_init(|| Mutex::new(HashSet::default()))
}

/// Hide the object glibc will list as `name`, before it is loaded. The
/// lock is never held across a `dl*` call: `dl_iterate_phdr` callbacks
/// take it while glibc holds its own.
pub fn hide(name: &[u8]) {
    hidden()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.to_vec());
}

/// Forget a hidden name, once glibc no longer lists the object.
pub fn unhide(name: &[u8]) {
    hidden()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(name);
}

/// Is `name` one of the hidden objects?
pub fn is_hidden(name: &[u8]) -> bool {
    // Every hidden name is a /proc path; libraries almost never are, so
    // they are told apart without the lock.
    name.starts_with(b"/proc/")
        && hidden()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
}

/// Visit every object the host has loaded, in load order, until `visit`
/// returns `true`. Hidden objects are skipped.
pub fn each_host_object<F: FnMut(&HostObjectInfo<'_>) -> bool>(mut visit: F) {
    unsafe extern "C" fn trampoline<F: FnMut(&HostObjectInfo<'_>) -> bool>(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut libc::c_void,
    ) -> i32 {
        // SAFETY: glibc passes a valid `dl_phdr_info` that lives for this
        // call, and `data` is the `&mut F` handed to dl_iterate_phdr below.
        unsafe {
            let visit = &mut *data.cast::<F>();
            let info = &*info;
            let phdrs = if info.dlpi_phdr.is_null() {
                &[][..]
            } else {
                std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum))
            };
            let name = if info.dlpi_name.is_null() {
                c""
            } else {
                CStr::from_ptr(info.dlpi_name)
            };
            if is_hidden(name.to_bytes()) {
                return 0;
            }
            let object = HostObjectInfo {
                name,
                bias: info.dlpi_addr,
                phdrs,
                tls_modid: info.dlpi_tls_modid as u64,
                tls_data: info.dlpi_tls_data as u64,
                generation: (info.dlpi_adds, info.dlpi_subs),
            };
            i32::from(visit(&object))
        }
    }
    // SAFETY: the trampoline only reads what glibc hands it for the
    // duration of each call; `visit` outlives the iteration.
    unsafe { (real().dl_iterate_phdr)(Some(trampoline::<F>), (&raw mut visit).cast()) };
}
