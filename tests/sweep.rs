//! The machine sweep: every shared object glibc's `dlopen` loads, mmld loads.
//!
//! Every ELF64 x86-64 `ET_DYN` file under `/usr/lib/x86_64-linux-gnu`
//! (recursively, one per device and inode) is opened in a fresh process of
//! this test binary, once with glibc's `dlopen(RTLD_NOW | RTLD_LOCAL)` and
//! once with `mmld::Library::open`, each under a timeout. The two outcomes
//! must agree: an object glibc loads and mmld refuses fails the sweep, so
//! does one mmld loads that glibc refuses, and so does any crash or hang of
//! mmld's process that glibc's process does not share.
//!
//! Fresh processes keep one object's constructors, TLS and failures from
//! touching the next, and make glibc's verdict independent of what mmld did.
//!
//! Environment:
//! * `MMLD_SWEEP_DIR`: sweep another directory instead;
//! * `MMLD_SWEEP_REPORT=FILE`: write one tab-separated line per object
//!   (path, glibc's outcome, mmld's outcome) for inspection;
//! * `MMLD_SWEEP_JOBS`: how many children run at once (default: CPUs).

use std::collections::{BTreeSet, HashSet};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const DEFAULT_DIR: &str = "/usr/lib/x86_64-linux-gnu";
const CHILD_LOADER: &str = "MMLD_SWEEP_CHILD_LOADER";
const CHILD_PATH: &str = "MMLD_SWEEP_CHILD_PATH";
/// A child that takes longer than this is a hang (glibc's slowest load
/// here, libLLVM's tree, takes well under a second).
const TIMEOUT: Duration = Duration::from_secs(60);
/// Exit status a child uses for "the loader refused the object".
const REFUSED: i32 = 3;

/// What one loader did with one object, in its own process.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Loaded,
    /// Loaded, but the process died by this signal while exiting
    /// (destructors, atexit handlers).
    LoadedThenSignal(i32),
    Refused(String),
    Signal(i32),
    Hang,
    /// The child did not run as expected (exit code, no verdict line).
    Broken(String),
}

impl Outcome {
    fn loaded(&self) -> bool {
        matches!(self, Outcome::Loaded | Outcome::LoadedThenSignal(_))
    }

    fn short(&self) -> String {
        match self {
            Outcome::Loaded => "loaded".into(),
            Outcome::LoadedThenSignal(s) => format!("loaded, then signal {s} at exit"),
            Outcome::Refused(why) => format!("refused: {why}"),
            Outcome::Signal(s) => format!("killed by signal {s}"),
            Outcome::Hang => format!("no answer in {} s", TIMEOUT.as_secs()),
            Outcome::Broken(why) => format!("child broke: {why}"),
        }
    }
}

/// The child's half: open one object with one loader, say what happened
/// on stdout, and exit through `exit` so destructors run as in a program.
#[test]
fn sweep_child() {
    let (Ok(loader), Ok(path)) = (std::env::var(CHILD_LOADER), std::env::var(CHILD_PATH)) else {
        return; // run as an ordinary test: nothing to do
    };
    let verdict = match loader.as_str() {
        "glibc" => open_with_glibc(&path),
        _ => open_with_mmld(&path),
    };
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match verdict {
        Ok(()) => {
            let _ = writeln!(out, "SWEEP-LOADED");
            let _ = out.flush();
            std::process::exit(0);
        }
        Err(why) => {
            let _ = writeln!(out, "SWEEP-REFUSED {}", why.replace('\n', " "));
            let _ = out.flush();
            std::process::exit(REFUSED);
        }
    }
}

fn open_with_glibc(path: &str) -> Result<(), String> {
    let c = std::ffi::CString::new(path).map_err(|e| e.to_string())?;
    // SAFETY: dlopen with a valid C string; the handle is kept until exit,
    // as a program that loads a plugin keeps it.
    let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns NULL or a C string valid until the next
        // dl* call on this thread.
        let msg = unsafe { libc::dlerror() };
        if msg.is_null() {
            return Err("dlopen returned NULL".into());
        }
        // SAFETY: non-NULL dlerror result is a NUL-terminated string.
        return Err(unsafe { std::ffi::CStr::from_ptr(msg) }
            .to_string_lossy()
            .into_owned());
    }
    Ok(())
}

fn open_with_mmld(path: &str) -> Result<(), String> {
    // SAFETY: loading a system library runs its constructors, exactly as
    // glibc's dlopen does in the other child.
    match unsafe { mmld::Library::open(path) } {
        Ok(lib) => {
            // Kept until exit, like the glibc handle.
            std::mem::forget(lib);
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Run one child and classify how it ended.
fn run_child(loader: &str, path: &Path) -> Outcome {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return Outcome::Broken(format!("no test binary path: {e}")),
    };
    // The verdict goes to a file, not a pipe: a constructor that starts a
    // process inheriting stdout must not keep the sweep waiting.
    let out_file = match tempfile::tempfile() {
        Ok(f) => f,
        Err(e) => return Outcome::Broken(format!("temporary file: {e}")),
    };
    let stdout = match out_file.try_clone() {
        Ok(f) => f,
        Err(e) => return Outcome::Broken(format!("temporary file: {e}")),
    };
    let child = Command::new(exe)
        .args(["sweep_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_LOADER, loader)
        .env(CHILD_PATH, path)
        .env_remove("MMLD_TRACE")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return Outcome::Broken(format!("spawn: {e}")),
    };
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Outcome::Hang;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Outcome::Broken(format!("wait: {e}")),
        }
    };
    let mut bytes = Vec::new();
    let mut out_file = out_file;
    let _ = std::io::Seek::rewind(&mut out_file);
    let _ = out_file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    // libtest prints "test sweep_child ... " before the verdict, on its line.
    let said_loaded = text.lines().any(|l| l.ends_with("SWEEP-LOADED"));
    let refusal = text.lines().find_map(|l| {
        l.split_once("SWEEP-REFUSED ")
            .map(|(_, why)| why.to_string())
    });
    match (status.code(), status.signal()) {
        (Some(0), _) if said_loaded => Outcome::Loaded,
        (Some(REFUSED), _) if refusal.is_some() => Outcome::Refused(refusal.unwrap_or_default()),
        (_, Some(sig)) if said_loaded => Outcome::LoadedThenSignal(sig),
        (_, Some(sig)) => Outcome::Signal(sig),
        (code, _) => Outcome::Broken(format!(
            "exit status {code:?}, output {:?}",
            text.chars().take(200).collect::<String>()
        )),
    }
}

/// Is `path` an ELF64 little-endian x86-64 ET_DYN file? Reads 20 bytes.
fn is_x86_64_dyn(path: &Path) -> bool {
    let mut head = [0u8; 20];
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    if f.read_exact(&mut head).is_err() {
        return false;
    }
    head.starts_with(b"\x7fELF")
        && head[4] == 2 // ELFCLASS64
        && head[5] == 1 // little-endian
        && u16::from_le_bytes([head[16], head[17]]) == 3 // ET_DYN
        && u16::from_le_bytes([head[18], head[19]]) == 62 // EM_X86_64
}

/// Every candidate under `dir`, recursively, one path per (device, inode),
/// in a stable order.
fn candidates(dir: &Path) -> Vec<PathBuf> {
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut found = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(link_meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if link_meta.is_dir() {
                stack.push(path);
                continue;
            }
            // Symlinks count through their target's inode.
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() || !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            if is_x86_64_dyn(&path) {
                found.insert(path);
            }
        }
    }
    found.into_iter().collect()
}

/// Does this pair of outcomes show mmld behaving differently from glibc in
/// a way the sweep forbids? Returns the reason when it does.
fn mismatch(glibc: &Outcome, mmld: &Outcome) -> Option<&'static str> {
    match (glibc, mmld) {
        (g, m) if g.loaded() && !m.loaded() => Some("glibc loads it, mmld does not"),
        (g, m) if !g.loaded() && m.loaded() => Some("mmld loads what glibc refuses"),
        // A crash or hang glibc's process shares is the object's own.
        (Outcome::Signal(a), Outcome::Signal(b)) if a == b => None,
        (Outcome::LoadedThenSignal(a), Outcome::LoadedThenSignal(b)) if a == b => None,
        (Outcome::Hang, Outcome::Hang) => None,
        // So is an exit from the object's own constructor that glibc's
        // process makes too, with the same status and output (libasan
        // ends the process when it is not the first library).
        (Outcome::Broken(a), Outcome::Broken(b)) if a == b => None,
        (_, Outcome::Signal(_) | Outcome::LoadedThenSignal(_)) => Some("mmld's process crashed"),
        (_, Outcome::Hang) => Some("mmld's process hung"),
        (_, Outcome::Broken(_)) => Some("mmld's child broke"),
        _ => None,
    }
}

#[test]
fn every_object_glibc_loads_mmld_loads() {
    if std::env::var_os(CHILD_LOADER).is_some() {
        return;
    }
    let dir = std::env::var_os("MMLD_SWEEP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR));
    let objects = candidates(&dir);
    assert!(
        objects.len() >= 50,
        "only {} shared objects found under {}: is this a Debian machine with .ci/run's packages?",
        objects.len(),
        dir.display()
    );
    let jobs = std::env::var("MMLD_SWEEP_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(PathBuf, Outcome, Outcome)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = objects.get(i) else { break };
                    let glibc = run_child("glibc", path);
                    let mmld = run_child("mmld", path);
                    if let Ok(mut r) = results.lock() {
                        r.push((path.clone(), glibc, mmld));
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(results.len(), objects.len(), "every object was swept");

    if let Some(report) = std::env::var_os("MMLD_SWEEP_REPORT") {
        let text: String = results
            .iter()
            .map(|(p, g, m)| format!("{}\t{}\t{}\n", p.display(), g.short(), m.short()))
            .collect();
        std::fs::write(&report, text).expect("write the sweep report");
    }

    let glibc_loads = results.iter().filter(|r| r.1.loaded()).count();
    let mmld_loads = results.iter().filter(|r| r.2.loaded()).count();
    let failures: Vec<String> = results
        .iter()
        .filter_map(|(p, g, m)| {
            mismatch(g, m).map(|why| {
                format!(
                    "{}: {why}\n    glibc: {}\n    mmld:  {}",
                    p.display(),
                    g.short(),
                    m.short()
                )
            })
        })
        .collect();
    println!(
        "sweep of {}: {} objects, glibc loads {glibc_loads}, mmld loads {mmld_loads}, {} differ",
        dir.display(),
        results.len(),
        failures.len()
    );
    assert!(
        glibc_loads > 0,
        "glibc loaded nothing: the sweep's children are broken"
    );
    assert!(
        failures.is_empty(),
        "{} of {} objects differ from glibc:\n{}",
        failures.len(),
        results.len(),
        failures.join("\n")
    );
}
