//! The glibc oracle and the replay protocol that `deps.rs` and
//! `static_tls.rs` share: the same script of steps is run by
//! `testlibs/glibc_oracle.c` under glibc's `dlopen` and by the test binary's
//! own `replay_child` under mmld, each in a fresh process, and the two
//! outputs are compared.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The glibc oracle, compiled once per test process. It exports
/// `mmld_exe_*` so an executable definition can interpose, as the test
/// binaries' own do.
pub fn oracle() -> &'static Path {
    static ORACLE: OnceLock<PathBuf> = OnceLock::new();
    ORACLE.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("glibc_oracle.{}", std::process::id()));
        let status = Command::new("gcc")
            .current_dir(ROOT)
            .args([
                "-O1",
                "-Wall",
                "-Wl,--export-dynamic-symbol=mmld_exe_*",
                "-o",
            ])
            .arg(&out)
            .args(["testlibs/glibc_oracle.c", "-ldl", "-lpthread"])
            .status()
            .expect("run gcc to build the glibc oracle");
        assert!(
            status.success(),
            "gcc failed to build testlibs/glibc_oracle.c"
        );
        out
    })
}

/// The environment both loaders run in: the caller's search path, trace,
/// tunables and OpenMP settings removed (cargo's LD_LIBRARY_PATH would be
/// searched by both loaders; the static TLS surplus and the team size must
/// be the defaults), then `env` added.
pub fn clean(cmd: &mut Command, env: &[(&str, &str)]) {
    cmd.current_dir(ROOT)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("GLIBC_TUNABLES")
        .env_remove("MMLD_TRACE")
        .env_remove("OMP_NUM_THREADS")
        .env_remove("OMP_DYNAMIC")
        .env_remove("OMP_THREAD_LIMIT")
        .envs(env.iter().copied());
}

/// Replay `steps` with glibc in a fresh process with `env` added.
pub fn replay_glibc(steps: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let mut cmd = Command::new(oracle());
    clean(&mut cmd, env);
    let out = cmd.args(steps).output().expect("run the glibc oracle");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Replay `steps` with mmld in a fresh process of this test binary (its
/// `replay_child` test reads them from `MMLD_REPLAY`), with `env` added.
pub fn replay_mmld(steps: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new(exe);
    // libtest runs the test on a thread of its own, whose malloc arena
    // would grow in /proc/self/maps; one arena keeps all of malloc in
    // [heap], which the maps comparisons leave out.
    cmd.env("MALLOC_ARENA_MAX", "1");
    clean(&mut cmd, env);
    let out = cmd
        .env("MMLD_REPLAY", steps.join("\n"))
        .args(["replay_child", "--exact", "--nocapture", "--test-threads=1"])
        .output()
        .expect("run the mmld replay child");
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        // libtest's "test replay_child ... " has no newline before the
        // first line the test prints.
        .filter_map(|l| l.find("replay> ").map(|at| l[at + 8..].to_owned()))
        .collect();
    assert!(
        out.status.success(),
        "the mmld replay of {steps:?} failed ({}); it printed {lines:#?}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    lines
}

/// Error lines differ in wording between the two loaders: compare only
/// that an error happened, and at which step.
pub fn normalized(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| match l.strip_prefix("error:open:") {
            Some(_) => "error:open".to_owned(),
            None => l.clone(),
        })
        .collect()
}

/// Replay `steps` with both loaders, require the same output, and require
/// it to be `expected` (error lines compared as `error:open`). Returns
/// mmld's lines.
pub fn same_as_glibc(steps: &[&str], env: &[(&str, &str)], expected: &[&str]) -> Vec<String> {
    let glibc = replay_glibc(steps, env);
    let mmld = replay_mmld(steps, env);
    assert_eq!(
        normalized(&mmld),
        normalized(&glibc),
        "mmld and glibc disagree on {steps:?}\nmmld:  {mmld:#?}\nglibc: {glibc:#?}"
    );
    assert_eq!(normalized(&mmld), expected, "steps {steps:?}");
    mmld
}

/// One line of the mmld side's output, in the protocol `replay_mmld` reads.
pub fn say(line: impl AsRef<str>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "replay> {}", line.as_ref());
    let _ = out.flush();
}
