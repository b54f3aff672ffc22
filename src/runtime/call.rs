//! Calls from mmld into code of a loaded object.
//!
//! Owns: every transmute of an address into a function pointer that mmld
//! itself calls (IFUNC resolvers, constructors, destructors). Must never: be
//! given an address that the caller has not checked lies in an executable
//! segment of a live object.

use std::ffi::{c_char, c_int};
use std::sync::OnceLock;

type InitFn = unsafe extern "C" fn(c_int, *const *const c_char, *const *const c_char);
type VoidFn = unsafe extern "C" fn();
type ResolverFn = unsafe extern "C" fn() -> u64;

unsafe extern "C" {
    static environ: *const *const c_char;
}

/// `argc`/`argv` as glibc passes them to constructors, rebuilt once from
/// `/proc/self/cmdline` (Rust does not expose the originals) and kept for
/// the life of the process, since constructors may keep the pointers.
struct Args {
    argc: c_int,
    argv: Vec<*const c_char>,
    _storage: Vec<std::ffi::CString>,
}

// SAFETY: the pointers point into `_storage`, which is never mutated after
// construction and lives as long as the `Args` (a process-wide static).
unsafe impl Send for Args {}
// SAFETY: as above; shared read-only.
unsafe impl Sync for Args {}

fn process_args() -> &'static Args {
    static ARGS: OnceLock<Args> = OnceLock::new();
    ARGS.get_or_init(|| {
        let storage: Vec<std::ffi::CString> = std::env::args_os()
            .filter_map(|a| std::ffi::CString::new(a.into_encoded_bytes()).ok())
            .collect();
        let mut argv: Vec<*const c_char> = storage.iter().map(|s| s.as_ptr()).collect();
        argv.push(std::ptr::null());
        Args {
            argc: c_int::try_from(storage.len()).unwrap_or(c_int::MAX),
            argv,
            _storage: storage,
        }
    })
}

/// Call an IFUNC resolver and return the implementation it picks.
///
/// # Safety
/// `addr` must be the resolver of a live, fully relocated object.
pub unsafe fn ifunc_resolver(addr: u64) -> u64 {
    // SAFETY: the caller guarantees `addr` is a resolver; x86-64 resolvers
    // take no arguments and return an address.
    unsafe {
        let f: ResolverFn = std::mem::transmute::<usize, ResolverFn>(addr as usize);
        f()
    }
}

/// Call a constructor (`DT_INIT` or an `DT_INIT_ARRAY` entry) with the
/// arguments glibc gives it.
///
/// # Safety
/// `addr` must be a constructor of a live, relocated object.
pub unsafe fn constructor(addr: u64) {
    let args = process_args();
    // SAFETY: the caller guarantees `addr`; the argument pointers live for
    // the whole process (static `Args`, the C library's `environ`).
    unsafe {
        let f: InitFn = std::mem::transmute::<usize, InitFn>(addr as usize);
        f(args.argc, args.argv.as_ptr(), environ);
    }
}

/// Call a destructor (`DT_FINI` or a `DT_FINI_ARRAY` entry).
///
/// # Safety
/// `addr` must be a destructor of a live object.
pub unsafe fn destructor(addr: u64) {
    // SAFETY: the caller guarantees `addr` is a destructor; they take no
    // arguments.
    unsafe {
        let f: VoidFn = std::mem::transmute::<usize, VoidFn>(addr as usize);
        f();
    }
}
