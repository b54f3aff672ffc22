//! Process exit with mmld libraries still loaded, compared with glibc:
//! their destructors run after the executable's own (glibc's `_dl_fini`
//! order), exit handlers they registered keep glibc's relative order, and
//! `exit` waits for an unload another thread is in the middle of
//! (glibc's `test-dlclose-exit-race`). Each case runs in a fresh process.

use std::ffi::c_int;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

use mmld::Library;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// In a child process: the file the events go to.
const OUT_VAR: &str = "MMLD_EXIT_OUT";

fn plugin() -> PathBuf {
    Path::new(ROOT).join("testlibs/exit/libexitplugin.so")
}

/// `exitplugin_alive`, once the child has loaded the plugin.
static ALIVE: AtomicUsize = AtomicUsize::new(0);
static OUT_FD: AtomicI32 = AtomicI32::new(-1);

fn report(who: &str) {
    let alive = ALIVE.load(Ordering::Acquire);
    let fd = OUT_FD.load(Ordering::Acquire);
    if alive == 0 || fd < 0 {
        return;
    }
    // SAFETY: the address of `exitplugin_alive`, whose library the child
    // never unloads.
    let f: extern "C" fn() -> c_int = unsafe { std::mem::transmute(alive) };
    let line = format!(
        "{who}: plugin {}\n",
        if f() != 0 { "alive" } else { "finalized" }
    );
    // SAFETY: writing our own bytes to a descriptor this process owns.
    unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
}

extern "C" fn exe_at_exit() {
    report("executable atexit handler");
}

extern "C" fn exe_destructor() {
    report("executable destructor");
}

/// The test executable's own destructor: glibc's `_dl_fini` runs it, as
/// it runs the exit oracle's `__attribute__((destructor))`. It does
/// nothing unless a child armed it.
#[used]
#[unsafe(link_section = ".fini_array")]
static EXE_DESTRUCTOR: extern "C" fn() = exe_destructor;

fn open_plugin() -> Library {
    // SAFETY: our own fixture.
    unsafe { Library::open(plugin()) }.expect("load libexitplugin.so")
}

fn setup(lib: &Library, out: c_int, started: c_int) {
    let setup = unsafe { lib.get::<extern "C" fn(c_int, c_int)>("exitplugin_setup") }.unwrap();
    setup(out, started);
}

/// Run `test` alone in a child process of this test binary with a fresh
/// results file; returns what the child wrote there.
fn child(test: &str) -> String {
    let dir = tempfile::tempdir().expect("temporary directory");
    let results = dir.path().join("events");
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([test, "--exact", "--test-threads=1", "--nocapture"])
        .env(OUT_VAR, &results)
        .output()
        .expect("re-run the test binary");
    assert!(
        out.status.success(),
        "child {test} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(&results).unwrap_or_default()
}

/// In a child: the results file, opened for appending.
fn child_output() -> Option<std::fs::File> {
    let path = std::env::var_os(OUT_VAR)?;
    Some(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open the results file"),
    )
}

#[test]
fn destructors_at_exit_run_after_the_executables_as_with_glibc() {
    if let Some(out) = child_output() {
        let lib = open_plugin();
        let fd = out.as_raw_fd();
        setup(&lib, fd, -1);
        let alive = unsafe { lib.get::<extern "C" fn() -> c_int>("exitplugin_alive") }.unwrap();
        ALIVE.store(*alive as usize, Ordering::Release);
        OUT_FD.store(fd, Ordering::Release);
        // SAFETY: registers a plain function with the C library.
        unsafe { libc::atexit(exe_at_exit) };
        std::mem::forget(lib);
        std::mem::forget(out);
        std::process::exit(0);
    }
    let oracle = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("exit_oracle.{}", std::process::id()));
    let built = Command::new("gcc")
        .current_dir(ROOT)
        .args(["-O1", "-Wall", "-o"])
        .arg(&oracle)
        .args(["testlibs/exit/exit_oracle.c", "-ldl"])
        .status()
        .expect("run gcc");
    assert!(built.success(), "gcc failed to build exit_oracle.c");
    let glibc = Command::new(&oracle)
        .arg(plugin())
        .output()
        .expect("run the exit oracle");
    let _ = std::fs::remove_file(&oracle);
    let glibc = String::from_utf8_lossy(&glibc.stdout).into_owned();
    assert_eq!(
        glibc,
        "executable atexit handler: plugin alive\n\
         plugin __cxa_atexit handler\n\
         executable destructor: plugin alive\n\
         plugin destructor completed\n"
    );
    let mmld = child("destructors_at_exit_run_after_the_executables_as_with_glibc");
    assert_eq!(mmld, glibc);
}

#[test]
fn exit_waits_for_an_unload_in_another_thread() {
    if let Some(out) = child_output() {
        let lib = open_plugin();
        let mut fds = [0 as c_int; 2];
        // SAFETY: `fds` has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        setup(&lib, out.as_raw_fd(), fds[1]);
        std::mem::forget(out);
        let _unloading = std::thread::spawn(move || drop(lib));
        // The destructor has started: exit now, while it runs.
        let mut byte = 0u8;
        // SAFETY: reading one byte into a local.
        let n = unsafe { libc::read(fds[0], (&raw mut byte).cast(), 1) };
        assert_eq!(n, 1);
        std::process::exit(0);
    }
    for run in 0..10 {
        let events = child("exit_waits_for_an_unload_in_another_thread");
        assert!(
            events.contains("plugin destructor completed\n"),
            "run {run}: the destructor was cut off by exit: {events:?}"
        );
    }
}
