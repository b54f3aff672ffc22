//! Lazy calls (`OpenOptions::lazy`, the counterpart of `RTLD_LAZY`),
//! compared with glibc: each scenario is a list of steps (see
//! `testlibs/lazy/lazy_oracle.c`) replayed in a fresh process by glibc's
//! `dlopen` and by mmld, and the two must print the same results, end with
//! the same status and write the same error message.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier, OnceLock};

use common::{diff, maps_snapshot, run_in_child};
use mmld::{Library, OpenOptions};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// In a child process: the steps to replay with mmld, one per line.
const STEPS_VAR: &str = "MMLD_LAZY_STEPS";
/// In a child process: where to write the results (stdout belongs to
/// libtest).
const OUT_VAR: &str = "MMLD_LAZY_OUT";

fn lib(name: &str) -> String {
    Path::new(ROOT)
        .join("testlibs/lazy")
        .join(name)
        .display()
        .to_string()
}

fn oracle() -> &'static Path {
    static ORACLE: OnceLock<PathBuf> = OnceLock::new();
    ORACLE.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("lazy_oracle.{}", std::process::id()));
        let status = Command::new("gcc")
            .current_dir(ROOT)
            .args(["-O1", "-Wall", "-o"])
            .arg(&out)
            .args(["testlibs/lazy/lazy_oracle.c", "-ldl"])
            .status()
            .expect("run gcc to build the lazy oracle");
        assert!(status.success(), "gcc failed to build lazy_oracle.c");
        out
    })
}

/// What one replay printed and how it ended.
#[derive(Debug)]
struct Outcome {
    lines: Vec<String>,
    /// Standard error, with the program's own path replaced by `PROGRAM`.
    stderr: String,
    status: Option<i32>,
}

fn glibc(steps: &[String], env: &[(&str, &str)]) -> Outcome {
    let exe = oracle();
    let out = Command::new(exe)
        .envs(env.iter().copied())
        .args(steps)
        .output()
        .expect("run the lazy oracle");
    Outcome {
        lines: String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
        stderr: String::from_utf8_lossy(&out.stderr).replace(&exe.display().to_string(), "PROGRAM"),
        status: out.status.code(),
    }
}

fn mmld(steps: &[String], env: &[(&str, &str)]) -> Outcome {
    let exe = std::env::current_exe().expect("path of the test binary");
    let dir = tempfile::tempdir().expect("temporary directory");
    let results = dir.path().join("results");
    let out = Command::new(&exe)
        .args([
            "replay_steps_in_child",
            "--exact",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(STEPS_VAR, steps.join("\n"))
        .env(OUT_VAR, &results)
        .envs(env.iter().copied())
        .output()
        .expect("re-run the test binary");
    Outcome {
        lines: std::fs::read_to_string(&results)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect(),
        stderr: String::from_utf8_lossy(&out.stderr).replace(&exe.display().to_string(), "PROGRAM"),
        status: out.status.code(),
    }
}

/// Replay `steps` with both loaders and require the same outcome; returns
/// mmld's.
fn compare(steps: &[String]) -> Outcome {
    compare_with_env(steps, &[])
}

fn compare_with_env(steps: &[String], env: &[(&str, &str)]) -> Outcome {
    let g = glibc(steps, env);
    let m = mmld(steps, env);
    assert_eq!(
        m.lines, g.lines,
        "results differ\nmmld: {m:#?}\nglibc: {g:#?}"
    );
    assert_eq!(
        m.status, g.status,
        "exit status differs\nmmld: {m:#?}\nglibc: {g:#?}"
    );
    assert_eq!(
        m.stderr, g.stderr,
        "messages differ\nmmld: {m:#?}\nglibc: {g:#?}"
    );
    m
}

/// The mmld side of the step language, in a child process.
#[test]
fn replay_steps_in_child() {
    let (Ok(steps), Some(out)) = (std::env::var(STEPS_VAR), std::env::var_os(OUT_VAR)) else {
        return;
    };
    let mut out = std::fs::File::create(out).expect("create the results file");
    let mut say = |line: String| {
        // Unbuffered: a step may end the process.
        out.write_all(format!("{line}\n").as_bytes())
            .expect("write a result");
    };
    let mut handles: Vec<Option<Library>> = Vec::new();
    for step in steps.lines() {
        let parts: Vec<&str> = step.split(':').collect();
        let handle = |n: &str| -> &Library {
            handles[n.parse::<usize>().unwrap()]
                .as_ref()
                .expect("open handle")
        };
        match parts[0] {
            "open" => {
                let opened = unsafe {
                    OpenOptions::new()
                        .lazy(parts[2] == "lazy")
                        .global(parts.get(3) == Some(&"global"))
                        .open(parts[1])
                };
                say(format!(
                    "open={}",
                    if opened.is_ok() { "ok" } else { "error" }
                ));
                handles.push(opened.ok());
            }
            "close" => {
                handles[parts[1].parse::<usize>().unwrap()] = None;
                say("close=ok".into());
            }
            "int" => {
                let f = unsafe { handle(parts[1]).get::<extern "C" fn(i32) -> i32>(parts[2]) }
                    .expect("symbol");
                say(format!("{}={}", parts[2], f(parts[3].parse().unwrap())));
            }
            "dbl" => {
                let f = unsafe { handle(parts[1]).get::<extern "C" fn() -> f64>(parts[2]) }
                    .expect("symbol");
                say(format!("{}={:016x}", parts[2], f().to_bits()));
            }
            other => panic!("unknown step {other}"),
        }
    }
}

fn steps(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_missing_function_that_is_never_called_does_not_stop_a_lazy_load() {
    let lazy = lib("liblazy.so");
    let m = compare(&steps(&[
        &format!("open:{lazy}:lazy"),
        "int:0:lazy_loaded:0",
    ]));
    assert_eq!(m.lines, ["open=ok", "lazy_loaded=7"]);
    // Eager binding (the default) refuses the same library.
    let m = compare(&steps(&[&format!("open:{lazy}:now")]));
    assert_eq!(m.lines, ["open=error"]);
}

#[test]
fn a_lazy_call_binds_to_a_definition_loaded_later_with_global() {
    let mut list = vec![
        format!("open:{}:lazy", lib("liblazy.so")),
        format!("open:{}:now:global", lib("liblazydef.so")),
        "int:0:lazy_call_late:5".into(),
        "int:0:lazy_call_late:6".into(),
        "dbl:0:lazy_call_args".into(),
        "dbl:0:lazy_call_args".into(),
        "dbl:0:lazy_call_varargs".into(),
    ];
    if std::arch::is_x86_feature_detected!("avx") {
        list.push("dbl:0:lazy_call_ymm".into());
    }
    if std::arch::is_x86_feature_detected!("avx512f") {
        list.push("dbl:0:lazy_call_zmm".into());
    }
    // The binding keeps the defining library loaded after its handle is
    // closed, as glibc's relocation dependencies do.
    list.push("close:1".into());
    list.push("int:0:lazy_call_late:7".into());
    let m = compare(&list);
    let value = |name: &str| -> String {
        m.lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {m:#?}"))
            .to_string()
    };
    assert_eq!(value("lazy_call_late"), "16");
    assert_eq!(
        value("lazy_call_args"),
        format!("{:016x}", 1973f64.to_bits())
    );
    assert_eq!(
        value("lazy_call_varargs"),
        format!("{:016x}", 262.625f64.to_bits())
    );
    assert!(m.lines.iter().any(|l| l == "lazy_call_late=22"), "{m:#?}");
}

#[test]
fn a_lazy_call_nothing_defines_ends_the_process_with_glibcs_message() {
    let lazy = lib("liblazy.so");
    let m = compare(&steps(&[
        &format!("open:{lazy}:lazy"),
        "int:0:lazy_loaded:0",
        "int:0:lazy_call_never:0",
        "int:0:lazy_loaded:0",
    ]));
    assert_eq!(m.status, Some(127));
    assert_eq!(
        m.stderr,
        format!("PROGRAM: symbol lookup error: {lazy}: undefined symbol: mmld_lazy_never\n")
    );
    assert_eq!(m.lines, ["open=ok", "lazy_loaded=7"]);
    // glibc names the library as it was opened, relative or not.
    let relative = Path::new(&lazy)
        .strip_prefix(std::env::current_dir().expect("cwd"))
        .map(|p| format!("./{}", p.display()))
        .expect("fixtures below the working directory");
    let m = compare(&steps(&[
        &format!("open:{relative}:lazy"),
        "int:0:lazy_call_never:0",
    ]));
    assert_eq!(
        m.stderr,
        format!("PROGRAM: symbol lookup error: {relative}: undefined symbol: mmld_lazy_never\n")
    );
}

#[test]
fn data_references_bind_now_objects_and_ld_bind_now_stay_eager_under_lazy() {
    let m = compare(&steps(&[&format!("open:{}:lazy", lib("liblazydata.so"))]));
    assert_eq!(m.lines, ["open=error"]);
    let missing = Path::new(ROOT).join("testlibs/libmissing.so");
    let m = compare(&steps(&[&format!("open:{}:lazy", missing.display())]));
    assert_eq!(m.lines, ["open=error"]);
    // LD_BIND_NOW makes every load eager, lazy or not.
    let lazy = lib("liblazy.so");
    let m = compare_with_env(
        &steps(&[&format!("open:{lazy}:lazy")]),
        &[("LD_BIND_NOW", "1")],
    );
    assert_eq!(m.lines, ["open=error"]);
}

fn open(name: &str, lazy: bool, global: bool) -> Library {
    unsafe { OpenOptions::new().lazy(lazy).global(global).open(lib(name)) }
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn first_calls_from_eight_threads_at_once_all_bind() {
    if !run_in_child("first_calls_from_eight_threads_at_once_all_bind") {
        return;
    }
    let lazy = Arc::new(open("liblazy.so", true, false));
    let _def = open("liblazydef.so", false, true);
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let lazy = Arc::clone(&lazy);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let late =
                    unsafe { lazy.get::<extern "C" fn(i32) -> i32>("lazy_call_late") }.unwrap();
                let args = unsafe { lazy.get::<extern "C" fn() -> f64>("lazy_call_args") }.unwrap();
                barrier.wait();
                (late(t), args())
            })
        })
        .collect();
    for (t, th) in threads.into_iter().enumerate() {
        assert_eq!(th.join().unwrap(), (3 * t as i32 + 1, 1973.0));
    }
}

#[test]
fn stubs_are_never_writable_and_executable_and_go_with_their_library() {
    if !run_in_child("stubs_are_never_writable_and_executable_and_go_with_their_library") {
        return;
    }
    // A first cycle, so that whatever mmld keeps for the life of the
    // process (caches, the host scope) exists before the snapshot.
    for cycle in 0..2 {
        let before = (cycle == 1).then(maps_snapshot);
        let lazy = open("liblazy.so", true, false);
        let def = open("liblazydef.so", false, true);
        let late = unsafe { lazy.get::<extern "C" fn(i32) -> i32>("lazy_call_late") }.unwrap();
        assert_eq!(late(1), 4);
        for m in common::self_maps().iter() {
            use procfs::process::MMPermissions as P;
            assert!(
                !m.perms.contains(P::WRITE | P::EXECUTE),
                "W+X mapping: {}",
                common::maps_line(m)
            );
        }
        drop(def);
        drop(lazy);
        if let Some(before) = before {
            let after = maps_snapshot();
            assert_eq!(before, after, "{}", diff(&before, &after));
        }
    }
}

// The entry every stub jumps to, tested alone: a binder that wrecks every
// register a call can carry arguments in (integer registers, %al of a
// variadic call, and with `vzeroall` every %ymm/%zmm argument register
// whole) must still hand the function exactly the caller's arguments.

use mmld::runtime::lazy::{LazyMiss, LazyResolver, LazyStubs};
use std::sync::atomic::{AtomicU64, Ordering};

struct Wrecker {
    targets: Vec<u64>,
}

impl LazyResolver for Wrecker {
    fn resolve(&self, symbol: u32) -> Result<u64, LazyMiss> {
        // SAFETY: only scratch registers are written, and declared so.
        unsafe {
            std::arch::asm!(
                "mov rdi, -1", "mov rsi, -1", "mov rdx, -1", "mov rcx, -1",
                "mov r8, -1", "mov r9, -1", "mov r10, -1", "xor eax, eax",
                out("rdi") _, out("rsi") _, out("rdx") _, out("rcx") _,
                out("r8") _, out("r9") _, out("r10") _, out("rax") _,
            );
            if std::arch::is_x86_feature_detected!("avx") {
                std::arch::asm!("vzeroall", out("ymm0") _, out("ymm1") _, out("ymm2") _,
                    out("ymm3") _, out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
                    out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
                    out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _);
            } else {
                std::arch::asm!("xorps xmm0, xmm0", "xorps xmm1, xmm1", "xorps xmm7, xmm7",
                    out("xmm0") _, out("xmm1") _, out("xmm7") _);
            }
        }
        Ok(self.targets[symbol as usize])
    }
}

#[test]
fn the_binder_hands_every_argument_register_through_intact() {
    let def = open("liblazydef.so", false, false);
    let mut cases = vec![
        ("lazy_pass_args", "mmld_lazy_args"),
        ("lazy_pass_varargs", "mmld_lazy_varargs"),
    ];
    if std::arch::is_x86_feature_detected!("avx") {
        cases.push(("lazy_pass_ymm", "mmld_lazy_ymm"));
    }
    if std::arch::is_x86_feature_detected!("avx512f") {
        cases.push(("lazy_pass_zmm", "mmld_lazy_zmm"));
    }
    let address = |name: &str| -> u64 {
        *unsafe { def.get::<usize>(name) }.unwrap_or_else(|e| panic!("{e}")) as u64
    };
    let slots: Vec<AtomicU64> = cases.iter().map(|_| AtomicU64::new(0)).collect();
    let mut stubs = LazyStubs::default();
    for (i, slot) in slots.iter().enumerate() {
        stubs.want(8 * i as u64, slot.as_ptr() as u64, i as u32);
    }
    let built = stubs.build().expect("stubs");
    let targets: Vec<u64> = cases.iter().map(|(_, callee)| address(callee)).collect();
    stubs.arm(Box::new(Wrecker {
        targets: targets.clone(),
    }));
    for (i, (caller, callee)) in cases.iter().enumerate() {
        let pass = unsafe { def.get::<extern "C" fn(u64) -> f64>(*caller) }.unwrap();
        let expected = pass(targets[i]);
        let through_stub = pass(built[i].1);
        assert_eq!(
            through_stub.to_bits(),
            expected.to_bits(),
            "{caller} -> {callee}"
        );
        // The first call bound the slot.
        assert_eq!(slots[i].load(Ordering::Acquire), targets[i], "{callee}");
    }
    drop(stubs);
}
