//! Helpers shared by the benchmarks: where the libraries are, glibc's
//! `dl*` calls, `/proc/self/smaps`, heap statistics, and the small
//! statistics and table printing every bench needs.
//!
//! Each bench binary includes this module with `mod common;` and uses a
//! different part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::collections::HashSet;
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

/// Canonical form of a path as the kernel shows it in `/proc/self/maps`.
pub fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Whether any mapping of this process is backed by `path`.
pub fn mapped_in_process(path: &Path) -> bool {
    let want = canonical(path);
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .any(|p| Path::new(p) == want)
}

// ---------------------------------------------------------------------------
// Memory accounting
// ---------------------------------------------------------------------------

/// One mapping of `/proc/self/smaps` with the fields the memory table uses
/// (all in KiB, as the kernel reports them).
#[derive(Debug, Clone, Default)]
pub struct SmapsEntry {
    pub start: u64,
    pub end: u64,
    pub path: Option<String>,
    pub size: u64,
    pub rss: u64,
    pub private_dirty: u64,
    pub private_clean: u64,
    pub shared_clean: u64,
    pub anonymous: u64,
}

pub fn read_smaps() -> Vec<SmapsEntry> {
    let text = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let mut out: Vec<SmapsEntry> = Vec::new();
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16))
            && !first.ends_with(':')
        {
            let path = line
                .split_whitespace()
                .nth(5)
                .map(str::to_string)
                .filter(|p| p.starts_with('/'));
            out.push(SmapsEntry {
                start,
                end,
                path,
                ..Default::default()
            });
            continue;
        }
        let Some(e) = out.last_mut() else { continue };
        let mut it = line.split_whitespace();
        let (Some(key), Some(val)) = (it.next(), it.next()) else {
            continue;
        };
        let Ok(v) = val.parse::<u64>() else { continue };
        match key {
            "Size:" => e.size = v,
            "Rss:" => e.rss = v,
            "Private_Dirty:" => e.private_dirty = v,
            "Private_Clean:" => e.private_clean = v,
            "Shared_Clean:" => e.shared_clean = v,
            "Anonymous:" => e.anonymous = v,
            _ => {}
        }
    }
    out
}

/// `Private_Dirty` and `Anonymous` of the whole process, from
/// `/proc/self/smaps_rollup` (KiB).
pub fn rollup() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("Private_Dirty:"), field("Anonymous:"))
}

/// Bytes the C heap has handed out (`mallinfo2`: arena in use plus
/// mmapped chunks). Rust's global allocator is glibc's malloc here, so this
/// covers both loaders' own bookkeeping.
pub fn heap_in_use() -> u64 {
    // SAFETY: mallinfo2 only reads malloc's statistics.
    let m = unsafe { libc::mallinfo2() };
    (m.uordblks + m.hblkhd) as u64
}

/// An object a loader brought into the process: its file and its address
/// span (first to last `PT_LOAD`, page-rounded).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectSpan {
    pub path: String,
    pub start: u64,
    pub end: u64,
}

/// Every object glibc knows about (`dl_iterate_phdr`), with its span.
pub fn glibc_objects() -> Vec<ObjectSpan> {
    unsafe extern "C" fn cb(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut c_void,
    ) -> libc::c_int {
        // SAFETY: glibc passes a valid info struct and our Vec as `data`.
        unsafe {
            let out = &mut *(data as *mut Vec<ObjectSpan>);
            let info = &*info;
            let name = if info.dlpi_name.is_null() {
                String::new()
            } else {
                CStr::from_ptr(info.dlpi_name)
                    .to_string_lossy()
                    .into_owned()
            };
            let phdrs = std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize);
            let mut lo = u64::MAX;
            let mut hi = 0u64;
            for ph in phdrs.iter().filter(|p| p.p_type == libc::PT_LOAD) {
                lo = lo.min(ph.p_vaddr);
                hi = hi.max(ph.p_vaddr + ph.p_memsz);
            }
            if lo < hi {
                let page = 4096u64;
                out.push(ObjectSpan {
                    path: name,
                    start: (info.dlpi_addr + lo) & !(page - 1),
                    end: (info.dlpi_addr + hi).div_ceil(page) * page,
                });
            }
        }
        0
    }
    let mut v: Vec<ObjectSpan> = Vec::new();
    // SAFETY: the callback matches the C signature and only writes to `v`.
    unsafe { libc::dl_iterate_phdr(Some(cb), (&raw mut v).cast()) };
    v
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

/// Memory that the given objects occupy: every mapping inside one of their
/// spans (file-backed, `.bss` anonymous pages, `PROT_NONE` gaps) and every
/// mapping of one of their files elsewhere. KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct ObjectMemory {
    pub mappings: u64,
    pub rss: u64,
    pub private_dirty: u64,
    pub anonymous: u64,
}

pub fn object_memory(objects: &[ObjectSpan], smaps: &[SmapsEntry]) -> ObjectMemory {
    let paths: HashSet<PathBuf> = objects
        .iter()
        .map(|o| canonical(Path::new(&o.path)))
        .collect();
    let mut m = ObjectMemory::default();
    for e in smaps {
        let inside = objects.iter().any(|o| e.start < o.end && o.start < e.end);
        let same_file = e
            .path
            .as_deref()
            .is_some_and(|p| paths.contains(Path::new(p)));
        if inside || same_file {
            m.mappings += 1;
            m.rss += e.rss;
            m.private_dirty += e.private_dirty;
            m.anonymous += e.anonymous;
        }
    }
    m
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

/// One line about the machine, for the README.
pub fn machine_line() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    // SAFETY: returns a static NUL-terminated string.
    let glibc = unsafe { CStr::from_ptr(gnu_get_libc_version()) }
        .to_string_lossy()
        .into_owned();
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
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

pub mod table;

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
