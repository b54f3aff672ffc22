//! The mmld and glibc workers of the fresh-process benchmarks: a bench
//! binary started as `<bench> --worker <mmld|glibc|none> <mode> ...` runs
//! one of them through the shared protocol (`proto.rs`) and exits. The
//! dlopen-rs worker is a separate binary (`peers.rs` says why).

use std::ffi::c_void;

use super::proto::{self, Loader, Name, Nothing, ObjectSpan};

pub struct Mmld;

impl Loader for Mmld {
    type Lib = mmld::Library;

    fn name(&self) -> &'static str {
        "mmld"
    }

    fn open(&self, path: &Name) -> Result<mmld::Library, String> {
        // SAFETY: loading runs the library's constructors, which the
        // benchmark accepts for every loader.
        unsafe { mmld::Library::open(path.s.as_str()) }.map_err(|e| e.to_string())
    }

    fn get(&self, lib: &mmld::Library, sym: &Name) -> Option<*const c_void> {
        // SAFETY: the address is only compared and passed to black_box.
        unsafe { lib.get::<*const c_void>(sym.s.as_str()) }
            .ok()
            .map(|s| *s)
    }

    fn close(&self, lib: mmld::Library) {
        drop(lib);
    }

    fn own_objects(&self, lib: &mmld::Library) -> Vec<ObjectSpan> {
        super::mmld_objects(lib)
    }

    fn note(&self, lib: &mmld::Library) -> String {
        let hits = lib
            .relocation_sharing()
            .iter()
            .filter(|s| matches!(s.outcome, mmld::SharingOutcome::Hit))
            .count();
        format!(
            "indexed={} cache_hits={hits}",
            u8::from(lib.indexed_names().is_some())
        )
    }
}

pub struct Glibc;

impl Loader for Glibc {
    type Lib = *mut c_void;

    fn name(&self) -> &'static str {
        "glibc"
    }

    fn open(&self, path: &Name) -> Result<*mut c_void, String> {
        // SAFETY: `path.c` is NUL-terminated; loading runs constructors.
        let h = unsafe { libc::dlopen(path.c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if h.is_null() {
            Err(super::dlerror())
        } else {
            Ok(h)
        }
    }

    fn get(&self, lib: &*mut c_void, sym: &Name) -> Option<*const c_void> {
        // SAFETY: live handle, NUL-terminated name.
        let p = unsafe { libc::dlsym(*lib, sym.c.as_ptr()) };
        (!p.is_null()).then_some(p.cast_const())
    }

    fn close(&self, lib: *mut c_void) {
        // SAFETY: balances the dlopen that returned `lib`.
        unsafe { libc::dlclose(lib) };
    }
}

/// If this process was started as a worker, runs it (never returns);
/// otherwise does nothing. Called first thing in the benches' `main`.
pub fn dispatch() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some("--worker") {
        return;
    }
    let rest = args.get(3..).unwrap_or(&[]);
    match args.get(2).map(String::as_str) {
        Some("mmld") => proto::worker_main(&Mmld, rest),
        Some("glibc") => proto::worker_main(&Glibc, rest),
        Some("none") => proto::worker_main(&Nothing, rest),
        _ => {
            eprintln!("usage: <bench> --worker <mmld|glibc|none> <first|cycle|lookup> ...");
            std::process::exit(2)
        }
    }
}
