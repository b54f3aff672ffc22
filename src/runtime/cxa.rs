//! C++ runtime hooks that must know about mmld's objects.
//!
//! Owns: mmld's `__cxa_thread_atexit_impl`, bound into mmld-mapped code in
//! place of glibc's. glibc attributes a thread-local destructor to the
//! object that registered it and keeps that object loaded until the
//! destructor has run; it cannot do that for objects it does not know, so
//! mmld wraps each registration in a record that holds the object alive and
//! hands the wrapper to glibc. Must never: call a destructor itself (glibc
//! decides when a thread's destructors run), or import the registry: the
//! registry sits above `runtime`, so it hands its accounting in through
//! [`install`] instead.

use std::ffi::{c_int, c_void};
use std::sync::OnceLock;

type Dtor = unsafe extern "C" fn(*mut c_void);
type AtExitImpl = unsafe extern "C" fn(Dtor, *mut c_void, *mut c_void) -> c_int;

fn glibc_impl() -> Option<AtExitImpl> {
    static F: OnceLock<usize> = OnceLock::new();
    let addr = *F.get_or_init(|| {
        crate::host::global_symbol(c"__cxa_thread_atexit_impl", Some(c"GLIBC_2.18")).unwrap_or(0)
            as usize
    });
    // SAFETY: a non-zero address from dlvsym for this versioned name is
    // glibc's function with exactly this signature.
    (addr != 0).then(|| unsafe { std::mem::transmute::<usize, AtExitImpl>(addr) })
}

/// How a registration keeps its object loaded: supplied by the layer that
/// owns the registry (the loader installs it before the first load).
#[derive(Debug, Clone, Copy)]
pub struct ObjectHooks {
    /// Take a hold on the mmld object containing this address, if any;
    /// returns its id.
    pub hold: fn(u64) -> Option<u64>,
    /// Release one hold taken by `hold`.
    pub release: fn(u64),
}

static HOOKS: OnceLock<ObjectHooks> = OnceLock::new();

/// Set the hooks; later calls change nothing (there is one registry).
pub fn install(hooks: ObjectHooks) {
    let _ = HOOKS.set(hooks);
}

fn release(id: Option<u64>) {
    if let (Some(id), Some(h)) = (id, HOOKS.get()) {
        (h.release)(id);
    }
}

struct Record {
    dtor: Dtor,
    arg: *mut c_void,
    /// The registering object, kept loaded (with everything it needs) by
    /// the registry until this destructor has run, as glibc does.
    object: Option<u64>,
}

unsafe extern "C" fn run_record(record: *mut c_void) {
    // SAFETY: `record` is the Box leaked in `thread_atexit` below; glibc
    // calls each registration exactly once.
    let record = unsafe { Box::from_raw(record.cast::<Record>()) };
    // SAFETY: the destructor and argument are what the library registered;
    // its object is still mapped because `record` holds it.
    unsafe { (record.dtor)(record.arg) };
    release(record.object);
}

/// `__cxa_thread_atexit_impl` for mmld-mapped code.
unsafe extern "C" fn thread_atexit(dtor: Dtor, arg: *mut c_void, dso_symbol: *mut c_void) -> c_int {
    let Some(real) = glibc_impl() else { return -1 };
    let object = HOOKS.get().and_then(|h| (h.hold)(dso_symbol as u64));
    let record = Box::into_raw(Box::new(Record { dtor, arg, object }));
    // Attribute the wrapper to this function's own object (the host), which
    // glibc knows and never unloads while the process runs.
    let host_symbol = thread_atexit as *const () as *mut c_void;
    // SAFETY: forwarding a valid registration to glibc; `run_record`
    // consumes `record` exactly once when the thread's destructors run.
    let rc = unsafe { real(run_record, record.cast(), host_symbol) };
    if rc != 0 {
        // SAFETY: glibc did not take the record; reclaim it.
        let record = unsafe { Box::from_raw(record) };
        release(record.object);
    }
    rc
}

/// Functions mmld binds in place of the host's for code it maps.
pub fn interposed(name: &[u8]) -> Option<u64> {
    match name {
        b"__tls_get_addr" => Some(crate::runtime::tls::tls_get_addr_entry()),
        b"__cxa_thread_atexit_impl" => Some(thread_atexit as *const () as u64),
        _ => None,
    }
}
