//! Unmodified programs run with the C ABI drop-in (`libmmld.so` preloaded,
//! through `mmld exec`) must behave as they do with glibc alone: each is
//! run both ways in fresh processes and the outputs and exit statuses are
//! compared, and the `--report` must show that mmld loaded the libraries
//! the program `dlopen`ed (so a drop-in that quietly handed everything to
//! glibc would fail).
//!
//! The programs come from Debian packages that `.ci/run` installs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `target/release` (this test runs from `target/release/deps`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target directory")
        .to_path_buf()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `mmld` and `libmmld.so` built together in their own target directory
/// (`cargo test` builds neither the cdylib's file nor, for this package,
/// the binary; the test's own target directory is locked while it runs).
fn built() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let dir = target_dir().parent().expect("target").join("capi");
        let status = Command::new(cargo)
            .current_dir(repo())
            .args(["build", "--release", "-q", "-p", "mmld", "-p", "mmld-capi"])
            .args(["--lib", "--bins", "--example", "panic_host", "--target-dir"])
            .arg(&dir)
            .status()
            .expect("running cargo");
        assert!(status.success(), "building mmld and libmmld.so failed");
        dir.join("release")
    })
}

fn mmld() -> PathBuf {
    built().join("mmld")
}

fn require(program: &str) {
    assert!(
        Path::new(program).is_file(),
        "{program} is required (installed by .ci/run)"
    );
}

struct Run {
    glibc: Output,
    mmld: Output,
    report: String,
}

/// Run `program args` with glibc, then with `mmld exec --report`.
fn both(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("report.txt");
    let mut plain = Command::new(program);
    plain
        .args(args)
        .env_remove("LD_PRELOAD")
        .env_remove("MMLD_TRACE");
    let mut dropin = Command::new(mmld());
    dropin
        .arg("exec")
        .arg("--report")
        .arg(&report)
        .arg("--")
        .arg(program)
        .args(args)
        .env_remove("LD_PRELOAD")
        .env_remove("MMLD_TRACE");
    for (k, v) in env {
        plain.env(k, v);
        dropin.env(k, v);
    }
    let glibc = plain.output().expect("running the program");
    let mmld = dropin.output().expect("running mmld exec");
    let report = std::fs::read_to_string(&report).unwrap_or_default();
    Run {
        glibc,
        mmld,
        report,
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Run {
    /// Same exit status and standard output.
    fn assert_same(&self) {
        assert_eq!(
            self.glibc.status.code(),
            self.mmld.status.code(),
            "exit status differs\nglibc stderr:\n{}\nmmld stderr:\n{}",
            text(&self.glibc.stderr),
            text(&self.mmld.stderr)
        );
        assert_eq!(
            text(&self.glibc.stdout),
            text(&self.mmld.stdout),
            "output differs; mmld stderr:\n{}",
            text(&self.mmld.stderr)
        );
    }

    /// The report lists a library whose path ends with each of `files`.
    fn assert_loaded_by_mmld(&self, files: &[&str]) {
        for f in files {
            assert!(
                self.report.lines().any(|l| l.starts_with("mmld\t")
                    && l.split('\t').nth(2).is_some_and(|p| p.ends_with(f))),
                "{f} not loaded by mmld; report:\n{}",
                self.report
            );
        }
    }
}

fn gcc(source: &str, output: &Path, extra: &[&str]) {
    let out = Command::new("gcc")
        .arg("-O1")
        .arg("-o")
        .arg(output)
        .arg(repo().join(source))
        .args(extra)
        .output()
        .expect("running gcc");
    assert!(out.status.success(), "gcc failed:\n{}", text(&out.stderr));
}

#[test]
fn c_abi_semantics_match_glibc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let probe = dir.path().join("probe");
    gcc("testlibs/capi/probe.c", &probe, &["-ldl", "-lpthread"]);
    let testlibs = repo().join("testlibs");
    let run = both(&probe, &[testlibs.to_str().expect("utf-8 path")], &[]);
    run.assert_same();
    assert!(text(&run.mmld.stdout).contains("add(2, 3) = 5"));
    run.assert_loaded_by_mmld(&["/libdemo.so", "/libversioned.so"]);
}

#[test]
fn what_mmld_does_not_serve_falls_through_with_a_trace_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let probe = dir.path().join("probe");
    gcc("testlibs/capi/probe.c", &probe, &["-ldl", "-lpthread"]);
    let out = Command::new(mmld())
        .args(["exec", "--"])
        .arg(&probe)
        .arg(repo().join("testlibs"))
        .env("MMLD_TRACE", "capi")
        .env_remove("LD_PRELOAD")
        .output()
        .expect("mmld exec probe");
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("dlmopen: handle add 9"),
        "{}",
        text(&out.stdout)
    );
    let trace = text(&out.stderr);
    for line in [
        "dlmopen (namespaces): glibc serves it",
        "dlopen(NULL): glibc serves it",
        "mmld cannot load it (libmmld-no-such-library.so: open: cannot find",
        "mode mmld does not serve: glibc serves it",
    ] {
        assert!(trace.contains(line), "no {line:?} in:\n{trace}");
    }
}

#[test]
fn cxx_exception_frames_are_named_with_the_drop_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = dir.path().join("throw_host");
    gcc("testlibs/capi/throw_host.c", &host, &["-ldl"]);
    let lib = repo().join("testlibs/libthrower.so");
    let run = both(&host, &[lib.to_str().expect("utf-8 path")], &[]);
    run.assert_same();
    let out = text(&run.mmld.stdout);
    assert!(out.contains("caught: boom at depth 2"), "{out}");
    for f in ["thrower_inner", "thrower_outer", "thrower_run"] {
        assert!(
            out.contains(&format!("frame: {f} in libthrower.so")),
            "{out}"
        );
    }
    run.assert_loaded_by_mmld(&["/libthrower.so", "/libstdc++.so.6"]);
}

#[test]
fn rust_plugin_panic_backtrace_names_the_plugin() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let plugin_target = target_dir().parent().expect("target").join("rust-plugin");
    let status = Command::new(cargo)
        .current_dir(repo())
        .args([
            "build",
            "--release",
            "-q",
            "-p",
            "mmld-rust-plugin",
            "--target-dir",
        ])
        .arg(&plugin_target)
        .status()
        .expect("running cargo");
    assert!(status.success(), "building the Rust plugin failed");
    let plugin = plugin_target.join("release/libmmld_rust_plugin.so");
    let host = built().join("examples/panic_host");
    let run = both(
        &host,
        &[plugin.to_str().expect("utf-8 path")],
        &[("RUST_BACKTRACE", "1")],
    );
    run.assert_same();
    let frames = |o: &Output| -> Vec<String> {
        text(&o.stderr)
            .lines()
            .filter(|l| {
                l.contains("mmld_rust_plugin::") || l.contains("plugin_panic_with_backtrace")
            })
            .map(str::to_string)
            .collect()
    };
    let with = frames(&run.mmld);
    assert_eq!(frames(&run.glibc), with);
    for f in [
        "mmld_rust_plugin::panic_inner",
        "mmld_rust_plugin::panic_outer",
    ] {
        assert!(
            with.iter().any(|l| l.contains(f)),
            "{f} missing:\n{}",
            text(&run.mmld.stderr)
        );
    }
    run.assert_loaded_by_mmld(&["/libmmld_rust_plugin.so"]);
}

const PYTHON: &str = "/usr/bin/python3";

const PYTHON_WORKLOAD: &str = r#"
import sqlite3, ssl, hashlib, ctypes, decimal, json, zlib, lzma, bz2, readline, _curses, sys
c = sqlite3.connect(":memory:")
c.execute("create table t(x)")
c.executemany("insert into t values(?)", [(i,) for i in range(100)])
print("sqlite3", c.execute("select sum(x), count(*) from t").fetchone())
print("ssl", ssl.OPENSSL_VERSION_INFO[:2], ssl.create_default_context().verify_mode)
print("hashlib", hashlib.sha256(b"mmld").hexdigest(), hashlib.md5(b"x").hexdigest())
z = ctypes.CDLL("libz.so.1")
z.zlibVersion.restype = ctypes.c_char_p
print("ctypes zlibVersion", z.zlibVersion(), ctypes.sizeof(ctypes.c_long))
print("decimal", decimal.Decimal(1) / decimal.Decimal(7))
print("json", json.dumps({"a": [1, 2, 3], "b": None}, sort_keys=True))
print("zlib", zlib.crc32(b"mmld"), zlib.decompress(zlib.compress(b"a" * 1000)) == b"a" * 1000)
print("lzma", lzma.decompress(lzma.compress(b"mmld" * 10)) == b"mmld" * 10)
print("bz2", bz2.decompress(bz2.compress(b"mmld" * 10)) == b"mmld" * 10)
readline.add_history("mmld")
print("readline", readline.get_current_history_length(), readline.get_history_item(1))
_curses.setupterm("xterm", sys.stdout.fileno())
print("_curses", _curses.ncurses_version.major, _curses.tigetnum("colors"), _curses.tparm(_curses.tigetstr("cup"), 5, 10))
"#;

#[test]
fn python_extension_modules_match_glibc() {
    require(PYTHON);
    let run = both(Path::new(PYTHON), &["-c", PYTHON_WORKLOAD], &[]);
    run.assert_same();
    assert!(run.glibc.status.success(), "{}", text(&run.glibc.stderr));
    run.assert_loaded_by_mmld(&[
        "/_sqlite3.cpython-311-x86_64-linux-gnu.so",
        "/_ssl.cpython-311-x86_64-linux-gnu.so",
        "/_hashlib.cpython-311-x86_64-linux-gnu.so",
        "/_ctypes.cpython-311-x86_64-linux-gnu.so",
        "/_decimal.cpython-311-x86_64-linux-gnu.so",
        "/_json.cpython-311-x86_64-linux-gnu.so",
        "/_lzma.cpython-311-x86_64-linux-gnu.so",
        "/_bz2.cpython-311-x86_64-linux-gnu.so",
        "/readline.cpython-311-x86_64-linux-gnu.so",
        "/_curses.cpython-311-x86_64-linux-gnu.so",
        "/libsqlite3.so.0",
        "/libssl.so.3",
    ]);
}

#[test]
fn python_stdlib_tests_pass_with_the_drop_in() {
    require(PYTHON);
    // Debian's libpython3.11-testsuite ships these (not test_sqlite3).
    let mut tests = vec!["test_ctypes", "test_hashlib", "test_zlib", "test_decimal"];
    if Path::new("/usr/lib/python3.11/test/test_sqlite3").is_dir() {
        tests.push("test_sqlite3");
    }
    for t in &tests {
        let file = format!("/usr/lib/python3.11/test/{t}.py");
        assert!(
            Path::new(&file).is_file() || Path::new(&file.replace(".py", "")).is_dir(),
            "{t} missing: libpython3.11-testsuite is required (installed by .ci/run)"
        );
    }
    let mut args = vec!["-m", "test"];
    args.extend(&tests);
    let run = both(Path::new(PYTHON), &args, &[]);
    assert_eq!(
        run.glibc.status.code(),
        run.mmld.status.code(),
        "{}",
        text(&run.mmld.stdout)
    );
    let result = |o: &Output| {
        text(&o.stdout)
            .lines()
            .filter(|l| l.starts_with("Tests result:") || l.contains("tests OK"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        result(&run.glibc),
        result(&run.mmld),
        "{}",
        text(&run.mmld.stdout)
    );
    assert!(run.mmld.status.success(), "{}", text(&run.mmld.stdout));
    run.assert_loaded_by_mmld(&[
        "/_ctypes.cpython-311-x86_64-linux-gnu.so",
        "/_hashlib.cpython-311-x86_64-linux-gnu.so",
        "/_decimal.cpython-311-x86_64-linux-gnu.so",
    ]);
}

#[test]
fn perl_xs_modules_match_glibc() {
    require("/usr/bin/perl");
    let script = r#"$Data::Dumper::Sortkeys = 1; my $d = Storable::thaw(Storable::freeze({a => [1, 2, 3], b => "mmld"})); print Dumper($d), POSIX::floor(2.7), " ", POSIX::strftime("%Y", gmtime(0)), " ", List::Util::sum(1 .. 10), " ", List::Util::max(3, 9, 2), "\n";"#;
    let run = both(
        Path::new("/usr/bin/perl"),
        &[
            "-MPOSIX",
            "-MStorable",
            "-MData::Dumper",
            "-MList::Util",
            "-e",
            script,
        ],
        &[],
    );
    run.assert_same();
    assert!(
        text(&run.mmld.stdout).contains("1970 55 9"),
        "{}",
        text(&run.mmld.stdout)
    );
    run.assert_loaded_by_mmld(&[
        "/POSIX/POSIX.so",
        "/Storable/Storable.so",
        "/Dumper/Dumper.so",
        "/List/Util/Util.so",
    ]);
}

#[test]
fn imagemagick_converts_png_to_jpeg_and_gif() {
    require("/usr/bin/convert");
    let dir = tempfile::tempdir().expect("tempdir");
    let png = dir.path().join("in.png");
    let made = Command::new("/usr/bin/convert")
        .args(["-size", "64x48", "gradient:red-blue"])
        .arg(&png)
        .status()
        .expect("running convert");
    assert!(made.success());
    for (ext, coder) in [("jpg", "/coders/jpeg.so"), ("gif", "/coders/gif.so")] {
        let out = dir.path().join(format!("out.{ext}"));
        let args = [png.to_str().expect("utf-8"), out.to_str().expect("utf-8")];
        let run = both(Path::new("/usr/bin/convert"), &args, &[]);
        run.assert_same();
        assert!(run.mmld.status.success(), "{}", text(&run.mmld.stderr));
        // The file the drop-in run wrote last; convert it again with glibc
        // to compare bytes.
        let with_mmld = std::fs::read(&out).expect("output written");
        let again = Command::new("/usr/bin/convert")
            .args(args)
            .status()
            .expect("convert");
        assert!(again.success());
        assert_eq!(
            with_mmld,
            std::fs::read(&out).expect("output written"),
            "{ext} differs"
        );
        run.assert_loaded_by_mmld(&["/coders/png.so", coder]);
    }
}

#[test]
fn gst_inspect_scans_the_core_plugins() {
    require("/usr/bin/gst-inspect-1.0");
    let dir = tempfile::tempdir().expect("tempdir");
    // A fresh registry per run: each run scans the plugins itself.
    let glibc_reg = dir.path().join("glibc.bin");
    let mmld_reg = dir.path().join("mmld.bin");
    let mut plain = Command::new("/usr/bin/gst-inspect-1.0");
    plain
        .env("GST_REGISTRY", &glibc_reg)
        .env_remove("LD_PRELOAD");
    let glibc = plain.output().expect("gst-inspect");
    let report = dir.path().join("report.txt");
    let with = Command::new(mmld())
        .arg("exec")
        .arg("--report")
        .arg(&report)
        .args(["--", "/usr/bin/gst-inspect-1.0"])
        .env("GST_REGISTRY", &mmld_reg)
        .env_remove("LD_PRELOAD")
        .output()
        .expect("mmld exec gst-inspect");
    let run = Run {
        glibc,
        mmld: with,
        report: std::fs::read_to_string(&report).unwrap_or_default(),
    };
    run.assert_same();
    assert!(
        text(&run.mmld.stdout).contains("coreelements"),
        "{}",
        text(&run.mmld.stdout)
    );
    run.assert_loaded_by_mmld(&["/libgstcoreelements.so", "/libgstcoretracers.so"]);
}

#[test]
fn exec_passes_the_exit_status_and_names_a_missing_program() {
    let st = Command::new(mmld())
        .args(["exec", "--", "/bin/sh", "-c", "exit 7"])
        .status()
        .expect("mmld exec");
    assert_eq!(st.code(), Some(7));
    let out = Command::new(mmld())
        .args(["exec", "--", "/nonexistent/program"])
        .output()
        .expect("mmld exec");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("/nonexistent/program"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn gdb_script_sees_libraries_the_drop_in_loaded() {
    assert!(
        Command::new("gdb").arg("--version").output().is_ok(),
        "gdb is required (installed by .ci/run)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let host = dir.path().join("throw_host");
    gcc("testlibs/capi/throw_host.c", &host, &["-ldl"]);
    let out = Command::new("gdb")
        .args(["-batch", "-nx", "-x"])
        .arg(repo().join("gdb/mmld.py"))
        .args(["-ex", "set breakpoint pending on", "-ex"])
        .arg(format!(
            "set environment LD_PRELOAD={}",
            built().join("libmmld.so").display()
        ))
        .args([
            "-ex",
            "break thrower_inner",
            "-ex",
            "run",
            "-ex",
            "bt",
            "-ex",
            "info symbol $pc",
            "--args",
        ])
        .arg(&host)
        .arg(repo().join("testlibs/libthrower.so"))
        .output()
        .expect("running gdb");
    let t = text(&out.stdout);
    assert!(t.contains("Breakpoint 1, "), "{t}");
    assert!(t.contains("#0  thrower_inner"), "{t}");
    assert!(t.contains("thrower_outer"), "{t}");
    assert!(
        t.contains("in section .text of") && t.contains("libthrower.so"),
        "{t}"
    );
}
