//! Concurrency: loading, looking up and unloading from many threads at once
//! is safe, and a constructor that itself loads a library does not deadlock.
//!
//! * Eight threads open, use and close overlapping sets of libraries (the
//!   test libraries, libz, and libpng16, which needs libz: a shared
//!   dependency) for thousands of iterations, checking every result, and
//!   the process's mappings and descriptors return to their baseline.
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
