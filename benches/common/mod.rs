//! Helpers shared by the benchmarks: where the libraries are, glibc's
//! `dl*` calls, `/proc/self/smaps`, heap statistics, and the small
//! statistics and table printing every bench needs.
//!
//! Each bench binary includes this module with `mod common;` and uses a
//! different part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::ffi::{CStr, CString, c_void};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Directories searched for the system libraries the benches load.
const LIB_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
];

/// The real libraries of the first-load and memory benchmarks, with a symbol
/// each loader looks up after loading.
pub const FIRST_LOAD_LIBS: &[(&str, &str)] = &[
    ("libz.so.1", "zlibVersion"),
    ("libsqlite3.so.0", "sqlite3_libversion"),
    ("libcrypto.so.3", "OpenSSL_version"),
    ("libstdc++.so.6", "__cxa_demangle"),
    ("libLLVM-15.so.1", "LLVMContextCreate"),
];

/// Full path of a system library by file name, if installed. Both loaders
/// get this same absolute path (no search on either side).
pub fn system_lib(name: &str) -> Option<PathBuf> {
    LIB_DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// A library built by build.rs into `testlibs/`.
pub fn test_lib(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testlibs")
        .join(name)
}

pub fn cstring(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

/// `dlerror()` as a string (or a placeholder).
pub fn dlerror() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string owned by glibc.
    unsafe {
        let e = libc::dlerror();
        if e.is_null() {
            "unknown dlerror".into()
        } else {
            CStr::from_ptr(e).to_string_lossy().into_owned()
        }
    }
}

/// glibc `dlopen`, panicking with `dlerror()` on failure.
pub fn glibc_open(path: &CStr, flags: libc::c_int) -> *mut c_void {
    // SAFETY: `path` is NUL-terminated; loading runs the library's
    // constructors, which the benchmark accepts (as mmld's open does).
    let h = unsafe { libc::dlopen(path.as_ptr(), flags) };
    assert!(!h.is_null(), "dlopen {path:?}: {}", dlerror());
    h
}

/// Whether glibc currently has `path` loaded (`RTLD_NOLOAD`, no side effect
/// beyond a reference that is dropped again).
pub fn glibc_has_loaded(path: &Path) -> bool {
    let c = cstring(path);
    // SAFETY: RTLD_NOLOAD never maps or runs anything.
    unsafe {
        let h = libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
        if h.is_null() {
            false
        } else {
            libc::dlclose(h);
            true
        }
    }
}

// ---------------------------------------------------------------------------
// Memory accounting (the rest lives in `proto`, shared with the dlopen-rs runner)
// ---------------------------------------------------------------------------

/// Every object glibc knows about (`dl_iterate_phdr`), with its span.
pub fn glibc_objects() -> Vec<ObjectSpan> {
    proto::dl_objects()
}

/// Every object of an mmld library's tree that mmld mapped itself.
pub fn mmld_objects(lib: &mmld::Library) -> Vec<ObjectSpan> {
    lib.objects()
        .into_iter()
        .map(|o| ObjectSpan {
            path: o.path.to_string_lossy().into_owned(),
            start: o.base,
            end: o.base + o.size,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Statistics and output
// ---------------------------------------------------------------------------

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// A duration in nanoseconds, printed with a unit that keeps 3 figures.
pub fn fmt_ns(ns: f64) -> String {
    if !ns.is_finite() {
        "—".into()
    } else if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

pub fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let i = ((s.len() - 1) as f64 * p).round() as usize;
    s[i]
}

pub fn fmt_ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}×")
    } else {
        "—".into()
    }
}

/// Whether the binary was started by `cargo bench` (which passes `--bench`)
/// rather than by `cargo test --benches` (which does not): without it the
/// heavy harness=false benches only do a smoke run.
pub fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Filters given on the command line (`cargo bench --bench X -- libz`).
pub fn filters() -> Vec<String> {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect()
}

/// A command for a worker process: the same environment minus
/// `LD_LIBRARY_PATH`, which `cargo bench` points into `target/` and the
/// toolchain (every dependency search of either loader would first try
/// those directories).
pub fn worker_command(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    let mut c = std::process::Command::new(program);
    c.env_remove("LD_LIBRARY_PATH");
    c
}

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One line about the machine, for docs/BENCHMARKS.md.
pub fn machine_line() -> String {
    use procfs::Current;
    let cpu = procfs::CpuInfo::current()
        .ok()
        .and_then(|c| c.model_name(0).map(str::to_string))
        .unwrap_or_else(|| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    // SAFETY: returns a static NUL-terminated string.
    let glibc = unsafe { CStr::from_ptr(gnu_get_libc_version()) }
        .to_string_lossy()
        .into_owned();
    let load = procfs::LoadAverage::current()
        .map(|l| format!("{:.2} {:.2} {:.2}", l.one, l.five, l.fifteen))
        .unwrap_or_default();
    format!(
        "nproc {}, CPU {cpu}, kernel {kernel}, glibc {glibc}, load average {load}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
    )
}

unsafe extern "C" {
    fn gnu_get_libc_version() -> *const libc::c_char;
}

pub mod peers;
pub mod proto;
pub mod table;
pub mod workers;

#[allow(unused_imports)]
pub use proto::{
    ObjectMemory, ObjectSpan, SmapsEntry, canonical, heap_in_use, mapped_in_process, object_memory,
    read_smaps, rollup,
};

// ---------------------------------------------------------------------------
// The targets (median ratio to glibc in the same round)
// ---------------------------------------------------------------------------

/// First load in a fresh process, by library file name.
pub fn first_load_target(lib_file: &str) -> Option<f64> {
    [
        ("libz.so", 0.9),
        ("libsqlite3.so", 0.5),
        ("libcrypto.so", 0.6),
        ("libstdc++.so", 0.5),
        ("libLLVM-15.so", 0.6),
    ]
    .into_iter()
    .find(|(p, _)| lib_file.starts_with(p))
    .map(|(_, t)| t)
}

/// Load + get + unload cycle, by label (`libdemo`, `libz`, `libsqlite3`)
/// or file name.
pub fn cycle_target(lib: &str) -> Option<f64> {
    [("libdemo", 0.8), ("libz", 0.8), ("libsqlite3", 0.5)]
        .into_iter()
        .find(|(p, _)| lib.starts_with(p))
        .map(|(_, t)| t)
}

/// Lookups, hits and misses.
pub const LOOKUP_TARGET: f64 = 0.2;

/// Where the harness=false benches leave their markdown (`target/mmld-bench/`).
pub fn markdown_dir() -> PathBuf {
    table::criterion_dir()
        .parent()
        .map(|t| t.join("mmld-bench"))
        .unwrap_or_else(|| PathBuf::from("target/mmld-bench"))
}

pub fn save_markdown(name: &str, text: &str) {
    let dir = markdown_dir();
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join(name), text);
    }
}
