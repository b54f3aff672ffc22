//! Concurrency: loading, looking up and unloading from many threads at once
//! is safe, and a constructor that itself loads a library does not deadlock.
//!
//! * Eight threads open, use and close overlapping sets of libraries (the
//!   test libraries, libz, and libpng16, which needs libz: a shared
//!   dependency) for thousands of iterations, checking every result, and
//!   the process's mappings and descriptors return to their baseline.
//! * Ten threads for `MMLD_STRESS_SECS` seconds (a few in CI): eight open,
//!   call and drop libcurl, libxml2, libsqlite3, libpng16, libssh2, libz
//!   and the test libraries (their dependencies overlap: libz, libssl,
//!   libzstd); a ninth cycles other libraries through glibc's own
//!   `dlopen`/`dlclose`, local and global; a tenth starts short-lived
//!   threads that use an mmld-loaded library's thread-local variables.
//!   Every result is checked; mappings and descriptors return to baseline.
//! * The host's own loader unloading libraries in one thread while another
//!   loads with mmld (mmld must hold what it reads: issue 13).
//! * `libreentrant.so`'s constructor calls back into this test, which loads
//!   and unloads other libraries with mmld while the outer load still holds
//!   the (re-entrant) loader lock, and starts a thread that must wait for
//!   the lock and then succeed.
//!
//! Each test runs alone in a child process (one malloc arena), so the
//! mapping comparison sees only its own work.

mod common;

use std::collections::VecDeque;
use std::ffi::{CStr, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mmld::{Library, OpenOptions};

const LIBZ: &str = "/usr/lib/x86_64-linux-gnu/libz.so.1";
const LIBPNG: &str = "/usr/lib/x86_64-linux-gnu/libpng16.so.16";

/// CRC-32 of "hello", as zlib computes it.
const CRC_HELLO: u64 = 0x3610_a686;

fn testlib(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testlibs")
        .join(name)
}

/// Run the test `name` alone in a child process; `true` in the child.
fn in_child(name: &str) -> bool {
    const VAR: &str = "MMLD_STRESS_CHILD";
    if std::env::var(VAR).as_deref() == Ok(name) {
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(VAR, name)
        .env("MALLOC_ARENA_MAX", "1")
        // glibc keeps the stacks of joined threads for reuse (40 MiB by
        // default), and how many it keeps depends on how the threads
        // happened to overlap: with no cache, a joined thread's stack is
        // unmapped at once, so the maps comparison sees only mmld's doing.
        .env("GLIBC_TUNABLES", "glibc.pthread.stack_cache_size=0")
        .output()
        .expect("run the test binary in a child process");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success() && text.contains("1 passed"),
        "child process for {name} failed ({}):\n{text}",
        out.status
    );
    false
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The libraries the threads share. The three libdemo flavours are one
/// source linked three ways (RELA, RELR, SysV hash); libpng16 needs libz.
fn library_set() -> Vec<PathBuf> {
    vec![
        testlib("libdemo.so"),
        testlib("libdemo_relr.so"),
        testlib("libdemo_sysv.so"),
        PathBuf::from(LIBZ),
        PathBuf::from(LIBPNG),
    ]
}

fn c_str(p: *const c_char) -> String {
    assert!(!p.is_null());
    // SAFETY: the libraries return NUL-terminated static strings.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Look up and call functions of `lib` (library `which` of the set) and
/// check their results.
fn verify(which: usize, lib: &Library) {
    // SAFETY (for every `get` below): each type is the C prototype of the
    // named function, and `lib` outlives the calls.
    unsafe {
        match which {
            0..=2 => {
                let add = lib
                    .get::<extern "C" fn(i64, i64) -> i64>("add")
                    .expect("add");
                assert_eq!(add(2, 3), 5);
                let apply = lib
                    .get::<extern "C" fn(i64, i64, i64) -> i64>("demo_apply")
                    .expect("demo_apply");
                assert_eq!(apply(0, 40, 2), 42, "R_X86_64_64 slot");
                assert_eq!(apply(2, 6, 7), 42, "RELATIVE slot");
                let word = lib
                    .get::<extern "C" fn(i64) -> *const c_char>("demo_word")
                    .expect("demo_word");
                assert_eq!(c_str(word(1)), "beta");
                let strlen = lib
                    .get::<extern "C" fn(*const c_char) -> usize>("demo_strlen")
                    .expect("demo_strlen");
                assert_eq!(strlen(c"hello".as_ptr()), 5, "IFUNC bound from the host");
                assert!(lib.get::<extern "C" fn()>("no_such_symbol").is_err());
            }
            _ => {
                // libz directly, or through libpng's scope (its dependency).
                let version = lib
                    .get::<extern "C" fn() -> *const c_char>("zlibVersion")
                    .expect("zlibVersion");
                assert!(c_str(version()).starts_with("1."));
                let crc = lib
                    .get::<extern "C" fn(u64, *const u8, u32) -> u64>("crc32")
                    .expect("crc32");
                assert_eq!(crc(0, b"hello".as_ptr(), 5), CRC_HELLO);
                if which == 4 {
                    let png = lib
                        .get::<extern "C" fn() -> u32>("png_access_version_number")
                        .expect("png_access_version_number");
                    assert!(png() >= 10600);
                }
            }
        }
    }
}

/// One thread's work: open a shared library, use it, keep a few open at
/// once (so lifetimes overlap across threads), close the oldest; and load
/// and unload the thread's private copy of libdemo (its own inode, so every
/// open really maps, links and runs constructors, and every close unmaps).
fn worker(thread: u64, iterations: usize, libs: &[PathBuf], private: &Path) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (thread + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut held: VecDeque<(usize, Library)> = VecDeque::new();
    for i in 0..iterations {
        // SAFETY: a copy of the test library.
        let own = unsafe { Library::open(private) }
            .unwrap_or_else(|e| panic!("thread {thread}, iteration {i}: {e}"));
        verify(0, &own);
        drop(own);
        let which = (rng.next() % libs.len() as u64) as usize;
        // SAFETY: the test libraries and two system libraries.
        let lib = unsafe { Library::open(&libs[which]) }
            .unwrap_or_else(|e| panic!("thread {thread}, iteration {i}: {e}"));
        verify(which, &lib);
        held.push_back((which, lib));
        if held.len() > (rng.next() % 4) as usize
            && let Some((w, old)) = held.pop_front()
        {
            verify(w, &old);
            drop(old);
        }
        if i % 64 == 0 {
            OpenOptions::new()
                .check(&libs[which])
                .unwrap_or_else(|e| panic!("check: {e}"));
        }
    }
}

fn run_threads(threads: u64, iterations: usize, dir: &Path) {
    let libs = library_set();
    let copies: Vec<PathBuf> = (0..threads)
        .map(|t| {
            let copy = dir.join(format!("libdemo_thread{t}.so"));
            if !copy.exists() {
                std::fs::copy(testlib("libdemo.so"), &copy).expect("copy libdemo.so");
            }
            copy
        })
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = copies
            .iter()
            .enumerate()
            .map(|(t, copy)| {
                let libs = &libs;
                s.spawn(move || worker(t as u64, iterations, libs, copy))
            })
            .collect();
        for h in handles {
            h.join().expect("a worker thread panicked");
        }
    });
}

#[test]
fn eight_threads_load_look_up_and_unload() {
    if !in_child("eight_threads_load_look_up_and_unload") {
        return;
    }
    const THREADS: u64 = 8;
    const ITERATIONS: usize = 1500;
    // Warm up with the same thread count: thread stacks, the ld.so.cache
    // view and the glibc-family libraries the host dlopens stay after it.
    let dir = tempfile::tempdir().expect("tempdir");
    run_threads(THREADS, 50, dir.path());
    let maps_before = common::maps_snapshot();
    let fds_before = common::fds_snapshot();
    let started = Instant::now();
    run_threads(THREADS, ITERATIONS, dir.path());
    println!(
        "{THREADS} threads x {ITERATIONS} iterations in {:?}",
        started.elapsed()
    );
    let maps_after = common::maps_snapshot();
    assert_eq!(
        fds_before,
        common::fds_snapshot(),
        "file descriptors leaked"
    );
    assert!(
        maps_before == maps_after,
        "mappings did not return to the baseline:\n{}",
        common::diff(&maps_before, &maps_after)
    );
    for l in &maps_after {
        assert!(
            !l.contains("libdemo") && !l.contains("libz.so") && !l.contains("libpng16"),
            "still mapped: {l}"
        );
    }
}

// ---------------------------------------------------------------------------
// A constructor that loads a library through mmld.

/// What the callback did, for the test to check afterwards.
static CALLBACK_LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// A library loaded inside the constructor and kept open past it.
static KEPT: Mutex<Option<Library>> = Mutex::new(None);
/// A thread started inside the constructor that loads libz: it must wait
/// for the loader lock the constructor's thread holds, then succeed.
static WAITER: Mutex<Option<JoinHandle<Result<u64, String>>>> = Mutex::new(None);

fn log(line: String) {
    CALLBACK_LOG
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(line);
}

/// Called by libreentrant.so's constructor, during `Library::open` of it.
extern "C" fn reentrant_callback() {
    // Nothing may unwind into C: record a panic instead.
    let result = catch_unwind(AssertUnwindSafe(|| {
        // A nested load, used, and kept open after the constructor returns.
        // SAFETY: the test library.
        let demo = unsafe { Library::open(testlib("libdemo.so")) }.map_err(|e| e.to_string())?;
        // SAFETY: long add(long, long).
        let add = unsafe { demo.get::<extern "C" fn(i64, i64) -> i64>("add") }
            .map_err(|e| e.to_string())?;
        log(format!("nested add = {}", add(40, 2)));
        // A nested load and unload, entirely inside the constructor.
        // SAFETY: the test library.
        let relr =
            unsafe { Library::open(testlib("libdemo_relr.so")) }.map_err(|e| e.to_string())?;
        verify(1, &relr);
        drop(relr);
        log("nested open and close".to_string());
        // A nested check.
        OpenOptions::new()
            .check(LIBPNG)
            .map_err(|e| e.to_string())?;
        log("nested check".to_string());
        // Another thread: blocks on the loader lock until the outer load
        // is done, then loads libz.
        let waiter = std::thread::spawn(|| {
            // SAFETY: a system library.
            let z = unsafe { Library::open(LIBZ) }.map_err(|e| e.to_string())?;
            // SAFETY: uLong crc32(uLong, const Bytef *, uInt).
            let crc = unsafe { z.get::<extern "C" fn(u64, *const u8, u32) -> u64>("crc32") }
                .map_err(|e| e.to_string())?;
            Ok(crc(0, b"hello".as_ptr(), 5))
        });
        *WAITER.lock().unwrap_or_else(|e| e.into_inner()) = Some(waiter);
        *KEPT.lock().unwrap_or_else(|e| e.into_inner()) = Some(demo);
        Ok::<(), String>(())
    }));
    match result {
        Ok(Ok(())) => log("callback done".to_string()),
        Ok(Err(e)) => log(format!("callback error: {e}")),
        Err(_) => log("callback panicked".to_string()),
    }
}

#[test]
fn constructor_loading_a_library_does_not_deadlock() {
    if !in_child("constructor_loading_a_library_does_not_deadlock") {
        return;
    }
    let callback: extern "C" fn() = reentrant_callback;
    // SAFETY: this child process runs only this test, and no other thread
    // reads the environment while it is changed.
    unsafe {
        std::env::set_var(
            "MMLD_REENTRANT_CALLBACK",
            format!("{:#x}", callback as usize),
        )
    };

    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: the test library; its constructor calls `reentrant_callback`.
        let lib = unsafe { Library::open(testlib("libreentrant.so")) };
        let _ = tx.send(lib);
    });
    let lib = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the outer load finished (no deadlock)")
        .expect("libreentrant.so loads");
    // SAFETY: int reentrant_callback_calls(void).
    let calls = unsafe { lib.get::<extern "C" fn() -> i32>("reentrant_callback_calls") }
        .expect("reentrant_callback_calls");
    assert_eq!(calls(), 1, "the constructor called back once");
    let log = CALLBACK_LOG
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert_eq!(
        log,
        [
            "nested add = 42",
            "nested open and close",
            "nested check",
            "callback done"
        ],
        "callback log"
    );
    let waiter = WAITER
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .expect("the waiter thread was started");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(waiter.join());
    });
    let crc = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the thread waiting for the loader lock finished")
        .expect("the waiter did not panic")
        .expect("the waiter loaded libz");
    assert_eq!(crc, CRC_HELLO);
    // The library loaded inside the constructor is still usable.
    let kept = KEPT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .expect("kept library");
    verify(0, &kept);
    drop(kept);
    drop(lib);
    let maps = common::maps_snapshot();
    assert!(
        !maps
            .iter()
            .any(|l| l.contains("libreentrant") || l.contains("libdemo")),
        "everything unloaded"
    );
}

// ---------------------------------------------------------------------------
// The host's own loader at work in another thread.

/// Seconds a host-race test runs: `MMLD_STRESS_SECS`, or a short default
/// for CI (the race it guards against showed within two seconds).
fn stress_duration(default_secs: u64) -> Duration {
    let secs = std::env::var("MMLD_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_secs);
    Duration::from_secs(secs)
}

/// Libraries the host itself `dlopen`s and `dlclose`s; none of them is
/// among the libraries mmld loads in these tests.
const HOST_CYCLED: &[&CStr] = &[
    c"/usr/lib/x86_64-linux-gnu/libyaml-0.so.2",
    c"/usr/lib/x86_64-linux-gnu/libzstd.so.1",
    c"/usr/lib/x86_64-linux-gnu/libbz2.so.1.0",
    c"/usr/lib/x86_64-linux-gnu/liblz4.so.1",
];

/// One round of the host's own loader: open every library of
/// `HOST_CYCLED` (local or global), check it with `dlsym`, close them all.
fn host_dlopen_round(global: bool) -> usize {
    let mode = libc::RTLD_NOW
        | if global {
            libc::RTLD_GLOBAL
        } else {
            libc::RTLD_LOCAL
        };
    let mut handles = Vec::new();
    for path in HOST_CYCLED {
        // SAFETY: system libraries loaded by the system loader.
        let h = unsafe { libc::dlopen(path.as_ptr(), mode) };
        assert!(!h.is_null(), "glibc dlopen {path:?}");
        handles.push(h);
    }
    // SAFETY: valid handles; the names are NUL-terminated.
    let found = unsafe { libc::dlsym(handles[0], c"yaml_get_version_string".as_ptr()) };
    assert!(!found.is_null(), "dlsym in libyaml");
    for h in handles.iter().rev() {
        // SAFETY: each handle is closed once.
        assert_eq!(unsafe { libc::dlclose(*h) }, 0, "glibc dlclose");
    }
    HOST_CYCLED.len()
}

#[test]
fn host_dlclose_races_with_mmld_loads() {
    if !in_child("host_dlclose_races_with_mmld_loads") {
        return;
    }
    // A short warm-up: the thread stack glibc caches after a join, and the
    // glibc-family state the first loads leave, belong to the baseline.
    race_host_and_mmld(Duration::from_millis(50));
    let maps_before = common::maps_snapshot();
    let fds_before = common::fds_snapshot();
    let duration = stress_duration(2);
    let (host_rounds, mmld_rounds) = race_host_and_mmld(duration);
    println!("{host_rounds} host rounds, {mmld_rounds} mmld rounds in {duration:?}");
    assert!(host_rounds > 0 && mmld_rounds > 0);
    assert_eq!(
        fds_before,
        common::fds_snapshot(),
        "file descriptors leaked"
    );
    let maps_after = common::maps_snapshot();
    assert!(
        maps_before == maps_after,
        "mappings did not return to the baseline:\n{}",
        common::diff(&maps_before, &maps_after)
    );
}

/// One thread cycles libraries through glibc while this one loads, uses and
/// drops libdemo with mmld, for `duration`. Returns both round counts.
fn race_host_and_mmld(duration: Duration) -> (usize, usize) {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let host = s.spawn(|| {
            let mut rounds = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                host_dlopen_round(rounds % 2 == 1);
                rounds += 1;
            }
            rounds
        });
        let started = Instant::now();
        let mut rounds = 0usize;
        while started.elapsed() < duration {
            // SAFETY: the test library.
            let lib = unsafe { Library::open(testlib("libdemo.so")) }.expect("libdemo.so");
            verify(0, &lib);
            drop(lib);
            rounds += 1;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (host.join().expect("host thread"), rounds)
    })
}

// ---------------------------------------------------------------------------
// Ten threads: mmld loads, the host's own loader, and TLS in new threads.

const WIDE_SET: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/libcurl.so.4",
    "/usr/lib/x86_64-linux-gnu/libxml2.so.2",
    "/usr/lib/x86_64-linux-gnu/libsqlite3.so.0",
    LIBPNG,
    "/usr/lib/x86_64-linux-gnu/libssh2.so.1",
    LIBZ,
];

/// Call into library `which` of `WIDE_SET` and check the answers.
fn verify_wide(which: usize, lib: &Library) {
    // SAFETY (for every `get` below): each type is the C prototype of the
    // named function, and `lib` outlives the calls.
    unsafe {
        match which {
            0 => {
                let version = lib
                    .get::<extern "C" fn() -> *const c_char>("curl_version")
                    .expect("curl_version");
                assert!(c_str(version()).starts_with("libcurl/"));
            }
            1 => {
                let strlen = lib
                    .get::<extern "C" fn(*const c_char) -> i32>("xmlStrlen")
                    .expect("xmlStrlen");
                assert_eq!(strlen(c"hello".as_ptr()), 5);
            }
            2 => {
                let number = lib
                    .get::<extern "C" fn() -> i32>("sqlite3_libversion_number")
                    .expect("sqlite3_libversion_number");
                assert!(number() >= 3_000_000);
                let complete = lib
                    .get::<extern "C" fn(*const c_char) -> i32>("sqlite3_complete")
                    .expect("sqlite3_complete");
                assert_eq!(complete(c"select 1;".as_ptr()), 1);
                assert_eq!(complete(c"select 1".as_ptr()), 0);
            }
            3 => verify(4, lib),
            4 => {
                let version = lib
                    .get::<extern "C" fn(i32) -> *const c_char>("libssh2_version")
                    .expect("libssh2_version");
                assert!(c_str(version(0)).starts_with("1."));
            }
            _ => verify(3, lib),
        }
    }
}

/// One of the eight loading threads: a random library of the wide set or
/// a test library, used, kept a while, dropped, until `stop`.
fn wide_worker(thread: u64, libs: &[PathBuf], stop: &std::sync::atomic::AtomicBool) -> usize {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (thread + 7).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut held: VecDeque<(usize, Library)> = VecDeque::new();
    let mut rounds = 0;
    let total = WIDE_SET.len() + libs.len();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let which = (rng.next() % total as u64) as usize;
        let path = match WIDE_SET.get(which) {
            Some(p) => PathBuf::from(p),
            None => libs[which - WIDE_SET.len()].clone(),
        };
        // SAFETY: system libraries and the test libraries.
        let lib = unsafe { Library::open(&path) }
            .unwrap_or_else(|e| panic!("thread {thread}: {}: {e}", path.display()));
        let check = |w: usize, l: &Library| match w.checked_sub(WIDE_SET.len()) {
            None => verify_wide(w, l),
            Some(k) => verify(k, l),
        };
        check(which, &lib);
        held.push_back((which, lib));
        if held.len() > (rng.next() % 4) as usize
            && let Some((w, old)) = held.pop_front()
        {
            check(w, &old);
        }
        rounds += 1;
    }
    rounds
}

/// The tenth thread: short-lived threads, each using the TLS of an
/// mmld-loaded library from its first access to its exit.
fn tls_worker(stop: &std::sync::atomic::AtomicBool) -> usize {
    // SAFETY: the test library.
    let lib = unsafe { Library::open(testlib("libtls.so")) }.expect("libtls.so");
    // SAFETY: long tls_bump(long); const char *tls_get_text(void).
    let (bump, text) = unsafe {
        (
            *lib.get::<extern "C" fn(i64) -> i64>("tls_bump")
                .expect("tls_bump"),
            *lib.get::<extern "C" fn() -> *const c_char>("tls_get_text")
                .expect("tls_get_text"),
        )
    };
    let mut threads = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let handles: Vec<_> = (0..4i64)
            .map(|k| {
                std::thread::spawn(move || {
                    // Each thread starts from the initial image.
                    assert_eq!(bump(0), 100);
                    assert_eq!(c_str(text()), "tls-hello");
                    for i in 1..=10 {
                        assert_eq!(bump(k), 100 + i * k);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("a TLS thread panicked");
        }
        threads += 4;
    }
    drop(lib);
    threads
}

/// Eight loading threads, the host's loader and the TLS thread, for
/// `duration`. Returns (mmld loads, host rounds, TLS threads).
fn run_ten_threads(duration: Duration) -> (usize, usize, usize) {
    let libs = library_set();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let loaders: Vec<_> = (0..8u64)
            .map(|t| {
                let (libs, stop) = (&libs, &stop);
                s.spawn(move || wide_worker(t, libs, stop))
            })
            .collect();
        let host = s.spawn(|| {
            let mut rounds = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                host_dlopen_round(rounds % 2 == 1);
                rounds += 1;
            }
            rounds
        });
        let tls = s.spawn(|| tls_worker(&stop));
        std::thread::sleep(duration);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let loads = loaders
            .into_iter()
            .map(|h| h.join().expect("a loading thread panicked"))
            .sum();
        (
            loads,
            host.join().expect("the host-loader thread panicked"),
            tls.join().expect("the TLS thread panicked"),
        )
    })
}

#[test]
fn ten_threads_with_the_host_loader_and_tls() {
    if !in_child("ten_threads_with_the_host_loader_and_tls") {
        return;
    }
    // Warm-up: libraries that stay for the life of the process once
    // loaded (libstdc++'s unique symbols, the glibc family), cached thread
    // stacks, the ld.so.cache view.
    let all: Vec<Library> = WIDE_SET
        .iter()
        // SAFETY: system libraries.
        .map(|p| unsafe { Library::open(p) }.unwrap_or_else(|e| panic!("{p}: {e}")))
        .collect();
    for (which, lib) in all.iter().enumerate() {
        verify_wide(which, lib);
    }
    drop(all);
    run_ten_threads(Duration::from_millis(500));
    let maps_before = common::maps_snapshot();
    let fds_before = common::fds_snapshot();
    let duration = stress_duration(3);
    let (loads, host, tls) = run_ten_threads(duration);
    println!("{duration:?}: {loads} mmld loads, {host} host dlopen rounds, {tls} TLS threads");
    assert!(loads > 0 && host > 0 && tls > 0);
    assert_eq!(
        fds_before,
        common::fds_snapshot(),
        "file descriptors leaked"
    );
    let maps_after = common::maps_snapshot();
    assert!(
        maps_before == maps_after,
        "mappings did not return to the baseline:\n{}",
        common::diff(&maps_before, &maps_after)
    );
}
