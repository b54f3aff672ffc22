//! Handles: what `dlopen` returns, and the calls that take one.
//!
//! Owns: the table of handles mmld served (one per loaded root, counted
//! like glibc's), deciding who serves a `dlopen` (glibc for its own family,
//! for objects the host already has and for what mmld cannot load; mmld for
//! the rest), and dispatching `dlsym`/`dlvsym`/`dlclose` on a handle to
//! mmld or to glibc. Must never: hold the table's lock while mmld loads or
//! unloads (constructors and destructors call back into `dlopen`).

use std::ffi::{CStr, c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use mmld_core::host::{self, HostLibrary};
use mmld_core::{Library, OpenOptions, objects};

use crate::{Forward, errors, report};

/// One root mmld loaded for `dlopen`.
pub struct Handle {
    lib: Library,
    /// The path as the library was found, for messages.
    path: PathBuf,
}

struct Entry {
    handle: Arc<Handle>,
    opens: usize,
    global: bool,
    /// Opened with `RTLD_NODELETE`: the handle stays valid after the last
    /// `dlclose`, as glibc's does.
    pinned: bool,
}

static TABLE: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

fn table() -> std::sync::MutexGuard<'static, Vec<Entry>> {
    TABLE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The handle value a C caller sees: the `Handle`'s address.
fn value_of(h: &Arc<Handle>) -> *mut c_void {
    Arc::as_ptr(h).cast_mut().cast()
}

/// The mmld handle `value` denotes, if it is one.
pub fn mmld_handle(value: *mut c_void) -> Option<Arc<Handle>> {
    table()
        .iter()
        .find(|e| value_of(&e.handle) == value)
        .map(|e| Arc::clone(&e.handle))
}

impl Handle {
    pub fn library(&self) -> &Library {
        &self.lib
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What a handle argument means.
enum Target {
    /// `RTLD_DEFAULT`: the global scope, as seen by the caller.
    Default,
    /// The program's own handle (`dlopen(NULL)`): the global scope.
    Program,
    Next,
    Mmld(Arc<Handle>),
    Glibc,
}

fn classify(value: *mut c_void) -> Target {
    if value == libc::RTLD_DEFAULT {
        Target::Default
    } else if value == program_handle() {
        Target::Program
    } else if value == libc::RTLD_NEXT {
        Target::Next
    } else if let Some(h) = mmld_handle(value) {
        Target::Mmld(h)
    } else {
        Target::Glibc
    }
}

/// glibc's handle for the program (what `dlopen(NULL)` returns).
fn program_handle() -> *mut c_void {
    static MAIN: OnceLock<usize> = OnceLock::new();
    *MAIN.get_or_init(|| {
        // SAFETY: dlopen(NULL) loads nothing; it returns the main map.
        unsafe { (host::real().dlopen)(std::ptr::null(), libc::RTLD_LAZY) as usize }
    }) as *mut c_void
}

const KNOWN_FLAGS: c_int = libc::RTLD_LAZY
    | libc::RTLD_NOW
    | libc::RTLD_GLOBAL
    | libc::RTLD_NODELETE
    | libc::RTLD_NOLOAD
    | libc::RTLD_DEEPBIND;

/// Hand the call to glibc's `f` (the shim jumps there).
fn forward(slot: *mut Forward, f: usize, why: &str, what: &str) -> *mut c_void {
    tracing::debug!(target: "mmld::capi", what, "{why}: glibc serves it");
    // SAFETY: `slot` is the shim's stack slot for this call.
    unsafe { *slot = f };
    std::ptr::null_mut()
}

/// `dlopen`'s Rust half (see the shim in lib.rs).
pub extern "C" fn dlopen_impl(
    name: *const c_char,
    flags: c_int,
    _caller: usize,
    slot: *mut Forward,
) -> *mut c_void {
    crate::init();
    errors::begin(false);
    let real = host::real().dlopen as usize;
    if name.is_null() {
        return forward(slot, real, "dlopen(NULL)", "the program");
    }
    // SAFETY: dlopen's contract: a NUL-terminated file name.
    let cname = unsafe { CStr::from_ptr(name) };
    let Ok(text) = cname.to_str() else {
        return forward(slot, real, "not UTF-8", &cname.to_string_lossy());
    };
    if flags & (libc::RTLD_LAZY | libc::RTLD_NOW) == 0 || flags & !KNOWN_FLAGS != 0 {
        return forward(slot, real, "mode mmld does not serve", text);
    }
    if host::is_glibc_family(text) {
        return forward(slot, real, "C library component", text);
    }
    if HostLibrary::find_loaded(text).is_some() {
        return forward(slot, real, "already loaded by the host", text);
    }
    match open_with_mmld(text, flags) {
        Ok(Some(h)) => {
            report::record(h.library(), text);
            value_of(&h)
        }
        Ok(None) => std::ptr::null_mut(),
        // Not found by mmld's search (the caller's own DT_RPATH/DT_RUNPATH
        // are glibc's to search), or not loadable by mmld.
        Err(e) => forward(slot, real, &format!("mmld cannot load it ({e})"), text),
    }
}

/// Open `name` with mmld (a bare name is searched as `dlopen` from the
/// program searches it), or take another reference to the handle that
/// already has it. `Ok(None)`: `RTLD_NOLOAD` and not loaded.
fn open_with_mmld(name: &str, flags: c_int) -> Result<Option<Arc<Handle>>, mmld_core::Error> {
    let global = flags & libc::RTLD_GLOBAL != 0;
    let mut options = OpenOptions::new();
    options
        .global(global)
        .deep_bind(flags & libc::RTLD_DEEPBIND != 0)
        .nodelete(flags & libc::RTLD_NODELETE != 0)
        .no_load(flags & libc::RTLD_NOLOAD != 0)
        // RTLD_LAZY: a call to a function nothing defines yet binds on
        // first call (mmld binds the rest at load, see `lazy`).
        .lazy(flags & libc::RTLD_NOW == 0);
    // SAFETY: loading runs the library's code, which is what the program
    // asked for by calling dlopen.
    let lib = match unsafe { options.open(name) } {
        Ok(lib) => lib,
        Err(e) if matches!(e.kind(), mmld_core::ErrorKind::NotLoaded) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut t = table();
    // The same object again: one handle, counted (as glibc's).
    if let Some(e) = t
        .iter_mut()
        .find(|e| e.handle.lib.base_address() == lib.base_address())
    {
        e.opens += 1;
        e.global |= global;
        e.pinned |= flags & libc::RTLD_NODELETE != 0;
        let h = Arc::clone(&e.handle);
        drop(t);
        drop(lib);
        return Ok(Some(h));
    }
    let path = lib.path().to_path_buf();
    let handle = Arc::new(Handle { lib, path });
    t.push(Entry {
        handle: Arc::clone(&handle),
        opens: 1,
        global,
        pinned: flags & libc::RTLD_NODELETE != 0,
    });
    Ok(Some(handle))
}

/// `dlclose`.
pub fn dlclose_impl(value: *mut c_void) -> c_int {
    crate::init();
    let closing = {
        let mut t = table();
        match t.iter().position(|e| value_of(&e.handle) == value) {
            None => None,
            Some(i) => {
                let e = &mut t[i];
                // A nodelete library keeps its handle (glibc's stays valid:
                // a later `RTLD_NOLOAD` open finds it).
                e.opens = e.opens.saturating_sub(1);
                Some((e.opens == 0 && !e.pinned).then(|| t.remove(i)))
            }
        }
    };
    match closing {
        // Not ours: glibc's handle (or garbage, which glibc reports).
        None => {
            errors::begin(false);
            // SAFETY: forwarded as given.
            unsafe { (host::real().dlclose)(value) }
        }
        Some(gone) => {
            errors::begin(true);
            // Unloads (destructors run) without the table locked.
            drop(gone);
            0
        }
    }
}

/// `dlsym`'s Rust half.
pub extern "C" fn dlsym_impl(
    value: *mut c_void,
    name: *const c_char,
    caller: usize,
    slot: *mut Forward,
) -> *mut c_void {
    lookup(value, name, None, caller, slot, host::real().dlsym as usize)
}

/// `dlvsym`'s Rust half.
pub extern "C" fn dlvsym_impl(
    value: *mut c_void,
    name: *const c_char,
    version: *const c_char,
    caller: usize,
    slot: *mut Forward,
) -> *mut c_void {
    if version.is_null() {
        return forward(slot, host::real().dlvsym as usize, "no version", "dlvsym");
    }
    // SAFETY: dlvsym's contract: a NUL-terminated version name.
    let version = unsafe { CStr::from_ptr(version) };
    lookup(
        value,
        name,
        Some(version),
        caller,
        slot,
        host::real().dlvsym as usize,
    )
}

/// `dlmopen`: link-map namespaces are glibc's.
pub extern "C" fn dlmopen_impl(
    _lmid: libc::Lmid_t,
    name: *const c_char,
    _flags: c_int,
    _caller: usize,
    slot: *mut Forward,
) -> *mut c_void {
    crate::init();
    errors::begin(false);
    let what = if name.is_null() {
        String::from("(null)")
    } else {
        // SAFETY: dlmopen's contract: a NUL-terminated file name.
        unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned()
    };
    forward(
        slot,
        host::real().dlmopen as usize,
        "dlmopen (namespaces)",
        &what,
    )
}

fn lookup(
    value: *mut c_void,
    name: *const c_char,
    version: Option<&CStr>,
    caller: usize,
    slot: *mut Forward,
    real: usize,
) -> *mut c_void {
    crate::init();
    if name.is_null() {
        errors::begin(false);
        return forward(slot, real, "NULL symbol name", "dlsym");
    }
    // SAFETY: dlsym's contract: a NUL-terminated symbol name.
    let name = unsafe { CStr::from_ptr(name) };
    let found = match classify(value) {
        Target::Glibc => {
            errors::begin(false);
            // Silent: most programs' lookups in libraries glibc holds.
            // SAFETY: `slot` is the shim's stack slot for this call.
            unsafe { *slot = real };
            return std::ptr::null_mut();
        }
        Target::Next if objects::containing(caller as u64, |_| ()).is_none() => {
            errors::begin(false);
            // SAFETY: as above; glibc sees the original caller.
            unsafe { *slot = real };
            return std::ptr::null_mut();
        }
        Target::Next => {
            errors::begin(true);
            next_after(caller as u64, name, version)
        }
        Target::Default => {
            errors::begin(true);
            global(name, version, true)
        }
        Target::Program => {
            errors::begin(true);
            global(name, version, false)
        }
        Target::Mmld(h) => {
            errors::begin(true);
            in_handle(&h, name, version).map_err(|_| undefined(Some(h.path()), name, version))
        }
    };
    match found {
        Ok(address) => address as *mut c_void,
        Err(message) => {
            errors::set(message);
            std::ptr::null_mut()
        }
    }
}

fn in_handle(h: &Handle, name: &CStr, version: Option<&CStr>) -> mmld_core::Result<u64> {
    // SAFETY: only the address is taken; the program decides its type.
    unsafe {
        match version {
            Some(v) => h
                .lib
                .get_versioned::<*mut c_void>(name, &v.to_string_lossy())
                .map(|s| *s as u64),
            None => h.lib.get::<*mut c_void>(name).map(|s| *s as u64),
        }
    }
}

/// `RTLD_DEFAULT` (`default`: glibc then records the defining library as
/// a dependency of the caller, so it stays loaded: `mmld::lookup_default`
/// does the same) or the program's handle (`Library::this`): the host's
/// global scope, then the libraries mmld opened global, in order.
fn global(name: &CStr, version: Option<&CStr>, default: bool) -> Result<u64, String> {
    let program = Library::this();
    let found = match version {
        None if default => mmld_core::lookup_default(name).map(|i| i.address),
        // SAFETY: only the address is taken; the program decides its type.
        None => unsafe { program.get::<*mut c_void>(name) }.map(|s| *s as u64),
        // SAFETY: as above.
        Some(v) => unsafe { program.get_versioned::<*mut c_void>(name, &v.to_string_lossy()) }
            .map(|s| *s as u64),
    };
    found.map_err(|_| undefined(None, name, version))
}

/// `RTLD_NEXT` from code mmld mapped: the libraries mmld opened global
/// after the caller's own handle (mmld's objects come after every object
/// of glibc's global scope, which the caller's library already saw).
fn next_after(caller: u64, name: &CStr, version: Option<&CStr>) -> Result<u64, String> {
    let caller_path = objects::containing(caller, |o| o.name.to_owned());
    let handles: Vec<(Arc<Handle>, bool)> = table()
        .iter()
        .map(|e| (Arc::clone(&e.handle), e.global))
        .collect();
    let own = handles.iter().position(|(h, _)| {
        h.lib.objects().first().is_some_and(|o| {
            caller_path
                .as_deref()
                .is_some_and(|c| c.to_bytes() == o.path.as_os_str().as_encoded_bytes())
        })
    });
    let after = own.map_or(handles.len(), |i| i + 1);
    handles
        .iter()
        .skip(after)
        .filter(|(_, global)| *global)
        .find_map(|(h, _)| in_handle(h, name, version).ok())
        .ok_or_else(|| undefined(None, name, version))
}

/// glibc's message for a failed lookup.
fn undefined(file: Option<&Path>, name: &CStr, version: Option<&CStr>) -> String {
    let mut m = match file {
        Some(f) => format!(
            "{}: undefined symbol: {}",
            f.display(),
            name.to_string_lossy()
        ),
        None => format!("undefined symbol: {}", name.to_string_lossy()),
    };
    if let Some(v) = version {
        m.push_str(&format!(", version {}", v.to_string_lossy()));
    }
    m
}
