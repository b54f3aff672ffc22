//! The worker side of every fresh-process benchmark, shared by the three
//! loaders: the mmld and glibc workers (the bench binaries re-executed with
//! `--worker`) and the dlopen-rs runner (`benches/peers/dlopen_rs_runner`,
//! which includes this file by path). One copy of the measuring code means
//! the three loaders are timed, counted and printed the same way.
//!
//! It depends on std, libc and procfs only: never on mmld or dlopen-rs (the runner
//! links dlopen-rs, whose `dlopen` and `dl_iterate_phdr` replace glibc's in
//! that binary; a binary that links mmld must never link dlopen-rs).
//!
//! Protocol (`<binary> --worker <loader> <mode> ARGS`), one line on stdout
//! starting with `MMLD_RUN`, then `key=value` fields:
//!
//! - `first PATH SYM`: one open + one lookup in this fresh process; `ns`
//!   (that region only), `minflt`/`majflt` (page faults in the region, from
//!   `getrusage`), `heap_bytes` (`mallinfo2` growth), the process's change of
//!   private dirty and anonymous memory, and the memory of the objects the
//!   load brought in (see [`object_memory`]).
//! - `cycle N PATH SYM`: N times open + lookup + close; the median, p10, p90
//!   of one cycle, and `still_loaded=1` if the library is still mapped after
//!   the last close (then a reference count was measured, not a load).
//! - `lookup ROUNDS PATH HIT MISS`: load, warm up with [`LOOKUP_WARMUP`]
//!   hits and misses, then `ROUNDS` rounds of [`LOOKUP_BATCH`] hits and as
//!   many misses; the median ns per lookup of each.
//!
//! Each timed region runs inside [`mmld_bench_region`], an unmangled,
//! never-inlined function, so `valgrind --tool=callgrind
//! --toggle-collect=mmld_bench_region` counts exactly the region's
//! instructions, in every loader's binary. Markers (`write(-1, ...)`)
//! before and after the `first` region let `strace` count its syscalls.
#![allow(dead_code)]

use std::collections::HashSet;
use std::ffi::{CStr, CString, c_void};
use std::hint::black_box;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use procfs::process::MMapPath;

pub const LINE_TAG: &str = "MMLD_RUN";
pub const BEGIN: &[u8] = b"MMLD_BENCH_BEGIN";
pub const END: &[u8] = b"MMLD_BENCH_END";
/// Lookups done before a `lookup` worker measures (mmld builds its scope
/// index after about half as many lookups as its scope has symbols: 2,868
/// for libsqlite3; every loader gets the same warm-up).
pub const LOOKUP_WARMUP: usize = 20_000;
/// Lookups per timed round of a `lookup` worker.
pub const LOOKUP_BATCH: usize = 1_000;

/// A name prepared outside every timed region in the two forms loaders
/// take (`&str` for mmld and dlopen-rs, `&CStr` for glibc), so that no
/// loader pays for a conversion the others skip.
pub struct Name {
    pub s: String,
    pub c: CString,
}

impl Name {
    pub fn new(s: &str) -> Name {
        Name {
            s: s.to_string(),
            c: CString::new(s).unwrap_or_else(|_| fail("name with an inner NUL")),
        }
    }
}

/// One loader, as the workers drive it.
pub trait Loader {
    type Lib;
    /// `mmld`, `glibc` or `dlopen-rs`.
    fn name(&self) -> &'static str;
    fn open(&self, path: &Name) -> Result<Self::Lib, String>;
    fn get(&self, lib: &Self::Lib, sym: &Name) -> Option<*const c_void>;
    fn close(&self, lib: Self::Lib);
    /// Objects this loader mapped that glibc's `dl_iterate_phdr` does not
    /// list (mmld's own); the others are found as new `dl_iterate_phdr`
    /// entries.
    fn own_objects(&self, _lib: &Self::Lib) -> Vec<ObjectSpan> {
        Vec::new()
    }
    /// Extra `key=value` fields for the output line.
    fn note(&self, _lib: &Self::Lib) -> String {
        String::new()
    }
}

/// A loader that loads nothing: the baseline of whole-process counts
/// (every worker binary accepts `--worker none`).
pub struct Nothing;

impl Loader for Nothing {
    type Lib = ();

    fn name(&self) -> &'static str {
        "none"
    }

    fn open(&self, _path: &Name) -> Result<(), String> {
        Ok(())
    }

    fn get(&self, _lib: &(), _sym: &Name) -> Option<*const c_void> {
        Some(std::ptr::null())
    }

    fn close(&self, _lib: ()) {}
}

/// The timed region: callgrind's `--toggle-collect` target.
#[unsafe(no_mangle)]
#[inline(never)]
pub fn mmld_bench_region(f: &mut dyn FnMut()) {
    f();
    black_box(());
}

pub fn fail(msg: &str) -> ! {
    eprintln!("worker: {msg}");
    std::process::exit(1)
}

pub fn marker(m: &[u8]) {
    // SAFETY: writing to an invalid descriptor fails with EBADF and has no
    // effect; strace shows the call and its buffer.
    unsafe { libc::write(-1, m.as_ptr().cast(), m.len()) };
}

/// Minor and major page faults of this process so far.
pub fn faults() -> (i64, i64) {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    (ru.ru_minflt, ru.ru_majflt)
}

/// Bytes the C heap has handed out (`mallinfo2`: arena in use plus
/// mmapped chunks). Rust's global allocator is glibc's malloc here, so this
/// covers every loader's own bookkeeping.
pub fn heap_in_use() -> u64 {
    // SAFETY: mallinfo2 only reads malloc's statistics.
    let m = unsafe { libc::mallinfo2() };
    (m.uordblks + m.hblkhd) as u64
}

/// `Private_Dirty` and `Anonymous` of the whole process, from
/// `/proc/self/smaps_rollup` (KiB).
pub fn rollup() -> (u64, u64) {
    let Ok(rollup) = procfs::process::Process::myself().and_then(|p| p.smaps_rollup()) else {
        return (0, 0);
    };
    let field = |name: &str| {
        rollup
            .memory_map_rollup
            .iter()
            .next()
            .and_then(|m| m.extension.map.get(name))
            .map_or(0, |bytes| bytes / 1024)
    };
    (field("Private_Dirty"), field("Anonymous"))
}

/// This process's mappings (`/proc/self/maps`), empty if it cannot be read.
fn self_maps() -> Vec<procfs::process::MemoryMap> {
    procfs::process::Process::myself()
        .and_then(|p| p.maps())
        .map(|m| m.0)
        .unwrap_or_default()
}

/// Canonical form of a path as the kernel shows it in `/proc/self/maps`.
pub fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Whether any mapping of this process is backed by `path`.
pub fn mapped_in_process(path: &Path) -> bool {
    let want = canonical(path);
    self_maps()
        .iter()
        .any(|m| matches!(&m.pathname, MMapPath::Path(p) if *p == want))
}

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
    let Ok(smaps) = procfs::process::Process::myself().and_then(|p| p.smaps()) else {
        return Vec::new();
    };
    smaps
        .iter()
        .map(|m| {
            // procfs gives the kB fields in bytes.
            let kib = |k: &str| m.extension.map.get(k).map_or(0, |b| b / 1024);
            SmapsEntry {
                start: m.address.0,
                end: m.address.1,
                path: match &m.pathname {
                    MMapPath::Path(p) => Some(p.to_string_lossy().into_owned()),
                    _ => None,
                },
                size: kib("Size"),
                rss: kib("Rss"),
                private_dirty: kib("Private_Dirty"),
                private_clean: kib("Private_Clean"),
                shared_clean: kib("Shared_Clean"),
                anonymous: kib("Anonymous"),
            }
        })
        .collect()
}

/// An object a loader brought into the process: its file and its address
/// span (first to last `PT_LOAD`, page-rounded).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectSpan {
    pub path: String,
    pub start: u64,
    pub end: u64,
}

/// Every object `dl_iterate_phdr` reports, with its span. In the dlopen-rs
/// runner this is dlopen-rs's `dl_iterate_phdr` (it replaces glibc's there),
/// which lists what dlopen-rs loaded.
pub fn dl_objects() -> Vec<ObjectSpan> {
    unsafe extern "C" fn cb(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut c_void,
    ) -> libc::c_int {
        // SAFETY: the loader passes a valid info struct and our Vec as `data`.
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
            if info.dlpi_phdr.is_null() {
                return 0;
            }
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

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn at(s: &[f64], p: f64) -> f64 {
    if s.is_empty() {
        return f64::NAN;
    }
    s[((s.len() - 1) as f64 * p).round() as usize]
}

fn parse_count(s: &str) -> usize {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => n,
        _ => fail(&format!("bad count {s:?}")),
    }
}

#[link(name = "m")]
unsafe extern "C" {
    fn cbrt(x: f64) -> f64;
}

/// Every worker binary links libm, so all three loaders start from the same
/// host objects (executable, libc, libm, libgcc_s, ld.so): the criterion
/// bench binaries link it anyway, and without this the dlopen-rs runner
/// would be the only worker that loads (and, in a cycle, reloads) the libm
/// that libsqlite3 and libstdc++ need. The call keeps `--as-needed` from
/// dropping the `DT_NEEDED`.
fn use_libm() {
    // SAFETY: cbrt is a pure libm function.
    black_box(unsafe { cbrt(black_box(27.0)) });
}

/// Runs one worker command (`args` after `--worker <loader>`) and exits.
pub fn worker_main<L: Loader>(loader: &L, args: &[String]) -> ! {
    use_libm();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args[..] {
        ["first", path, sym] => first(loader, path, sym),
        ["cycle", n, path, sym] => cycle(loader, parse_count(n), path, sym),
        ["lookup", rounds, path, hit, miss] => lookup(loader, parse_count(rounds), path, hit, miss),
        _ => {
            eprintln!(
                "usage: --worker LOADER first PATH SYM | cycle N PATH SYM | lookup ROUNDS PATH HIT MISS"
            );
            std::process::exit(2)
        }
    }
}

fn first<L: Loader>(loader: &L, path: &str, sym: &str) -> ! {
    let (path_n, sym_n) = (Name::new(path), Name::new(sym));
    let preloaded = mapped_in_process(Path::new(path));
    let before: HashSet<ObjectSpan> = dl_objects().into_iter().collect();
    let (pd0, an0) = rollup();
    let heap0 = heap_in_use();
    let mut lib: Option<L::Lib> = None;
    let mut err: Option<String> = None;
    let mut found = false;

    let (min0, maj0) = faults();
    marker(BEGIN);
    let t = Instant::now();
    mmld_bench_region(&mut || match loader.open(black_box(&path_n)) {
        Ok(l) => {
            found = black_box(loader.get(&l, black_box(&sym_n))).is_some();
            lib = Some(l);
        }
        Err(e) => err = Some(e),
    });
    let ns = t.elapsed().as_nanos();
    marker(END);
    let (min1, maj1) = faults();
    let heap1 = heap_in_use();

    if let Some(e) = err {
        fail(&format!("{}: cannot open {path}: {e}", loader.name()));
    }
    let Some(lib) = lib else {
        fail("no library after open")
    };
    if !found {
        fail(&format!("{}: {sym} not found in {path}", loader.name()));
    }
    let mut objects: Vec<ObjectSpan> = dl_objects()
        .into_iter()
        .filter(|o| !before.contains(o))
        .collect();
    objects.extend(loader.own_objects(&lib));
    let mem = object_memory(&objects, &read_smaps());
    let (pd1, an1) = rollup();
    let lib_name = Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    println!(
        "{LINE_TAG} mode=first loader={} lib={lib_name} ns={ns} minflt={} majflt={} objects={} mappings={} \
         rss_kb={} private_dirty_kb={} anon_kb={} heap_bytes={} proc_private_dirty_kb={} proc_anon_kb={} \
         preloaded={} {}",
        loader.name(),
        min1 - min0,
        maj1 - maj0,
        objects.len(),
        mem.mappings,
        mem.rss,
        mem.private_dirty,
        mem.anonymous,
        heap1 as i64 - heap0 as i64,
        pd1 as i64 - pd0 as i64,
        an1 as i64 - an0 as i64,
        u8::from(preloaded),
        loader.note(&lib),
    );
    // Leave without unloading: only the load is measured.
    std::mem::forget(lib);
    std::process::exit(0)
}

fn cycle<L: Loader>(loader: &L, n: usize, path: &str, sym: &str) -> ! {
    let (path_n, sym_n) = (Name::new(path), Name::new(sym));
    let mut times = Vec::with_capacity(n);
    let mut err: Option<String> = None;
    for _ in 0..n {
        let t = Instant::now();
        mmld_bench_region(&mut || match loader.open(black_box(&path_n)) {
            Ok(l) => {
                if black_box(loader.get(&l, black_box(&sym_n))).is_none() {
                    err = Some(format!("{sym} not found"));
                }
                loader.close(l);
            }
            Err(e) => err = Some(e),
        });
        times.push(t.elapsed().as_nanos() as f64);
        if let Some(e) = &err {
            fail(&format!("{}: {path}: {e}", loader.name()));
        }
    }
    let still = mapped_in_process(Path::new(path));
    let first = times[0];
    let s = sorted(times);
    println!(
        "{LINE_TAG} mode=cycle loader={} median_ns={:.0} p10_ns={:.0} p90_ns={:.0} first_ns={first:.0} n={n} still_loaded={}",
        loader.name(),
        at(&s, 0.5),
        at(&s, 0.1),
        at(&s, 0.9),
        u8::from(still),
    );
    std::process::exit(0)
}

fn lookup<L: Loader>(loader: &L, rounds: usize, path: &str, hit: &str, miss: &str) -> ! {
    let (path_n, hit_n, miss_n) = (Name::new(path), Name::new(hit), Name::new(miss));
    let lib = loader
        .open(&path_n)
        .unwrap_or_else(|e| fail(&format!("{}: cannot open {path}: {e}", loader.name())));
    if loader.get(&lib, &hit_n).is_none() || loader.get(&lib, &miss_n).is_some() {
        fail(&format!(
            "{}: {hit} must exist and {miss} must not",
            loader.name()
        ));
    }
    for _ in 0..LOOKUP_WARMUP {
        black_box(loader.get(&lib, black_box(&hit_n)));
        black_box(loader.get(&lib, black_box(&miss_n)));
    }
    let batch = |name: &Name| {
        let t = Instant::now();
        for _ in 0..LOOKUP_BATCH {
            black_box(loader.get(&lib, black_box(name)));
        }
        t.elapsed().as_nanos() as f64 / LOOKUP_BATCH as f64
    };
    let (mut hits, mut misses) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        hits.push(batch(&hit_n));
        misses.push(batch(&miss_n));
    }
    println!(
        "{LINE_TAG} mode=lookup loader={} hit_ns={:.2} miss_ns={:.2} rounds={rounds} batch={LOOKUP_BATCH} warmup={LOOKUP_WARMUP} {}",
        loader.name(),
        at(&sorted(hits), 0.5),
        at(&sorted(misses), 0.5),
        loader.note(&lib),
    );
    std::process::exit(0)
}

/// The path as bytes for C (`Name` holds a `CString` already; this is for
/// callers holding a `Path`).
pub fn path_cstring(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap_or_else(|_| fail("path with NUL"))
}
