//! The `mmld` command as a Unix tool (issue 17): quiet on a closed pipe,
//! no crash on a bad `--ret str`, the OS cause named once, plurals,
//! `share` reporting a worker's error once, `--call` before LIBRARY,
//! tracing (`MMLD_TRACE` categories, `--trace` in `share`'s workers,
//! `--trace-file`, `NO_COLOR` and terminals), the readelf and ldd formats
//! checked against readelf and ldd themselves, `check --json`, shell
//! completions and the manual page.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Output, Stdio};

use common::*;

const DEMO: &str = "testlibs/libdemo.so";

fn mmld_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mmld"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("MMLD_TRACE")
        .env_remove("NO_COLOR")
        .args(args);
    c
}

fn mmld(args: &[&str]) -> Output {
    mmld_cmd(args).output().expect("run mmld")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Killed by SIGPIPE (as `cat` would be) or finished: either way quiet.
fn ended_quietly(o: &Output, what: &str) {
    use std::os::unix::process::ExitStatusExt;
    let e = err(o);
    assert!(
        !e.contains("panicked") && !e.contains("Broken pipe") && e.is_empty(),
        "{what}: stderr {e:?}"
    );
    assert!(
        o.status.success() || o.status.signal() == Some(libc::SIGPIPE),
        "{what}: {}",
        o.status
    );
}

#[test]
fn a_closed_pipe_ends_quietly() {
    // The reader is gone before mmld writes anything: every write fails.
    for args in [
        &["info", "--json", DEMO][..],
        &["info", "--dyn-syms", DEMO],
        &["deps", DEMO],
        &["deps", "--json", DEMO],
        &["check", "--json", DEMO],
        &["maps", "--json", DEMO],
        &["share", "--procs", "2", "--json", DEMO],
        &["run", DEMO, "add", "2", "3"],
    ] {
        let mut child = mmld_cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mmld");
        drop(child.stdout.take());
        let o = child.wait_with_output().expect("wait");
        ended_quietly(&o, &format!("{args:?}"));
    }
    // The issue's own pipeline, on a library whose JSON is larger than a
    // pipe's buffer, so mmld is still writing when head exits.
    let bin = env!("CARGO_BIN_EXE_mmld");
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{bin}' info --json /usr/lib/x86_64-linux-gnu/libstdc++.so.6 | head -c 10"
        ))
        .output()
        .expect("sh");
    assert_eq!(o.stdout.len(), 10);
    assert_eq!(err(&o), "", "stderr of the pipeline");
}

#[test]
fn ret_str_on_an_unreadable_address_is_an_error() {
    // add returns 5: not a pointer to anything.
    let o = mmld(&["run", DEMO, "add", "2", "3", "--ret", "str"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(
        err(&o).contains("0x5, which is not the address of readable memory"),
        "{}",
        err(&o)
    );
    // A real string still prints.
    let o = mmld(&["run", DEMO, "demo_word", "0", "--ret", "str"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(!out(&o).trim().is_empty());
}

#[test]
fn the_os_cause_is_named_once() {
    let o = mmld(&["run", "/nonexistent/libnothing.so", "f"]);
    assert_eq!(o.status.code(), Some(1));
    let e = err(&o);
    assert_eq!(e.matches("No such file or directory").count(), 1, "{e}");
    assert!(e.contains("/nonexistent/libnothing.so"), "{e}");
}

#[test]
fn counts_have_the_right_plural() {
    // libdemo needs only libc (the host's): one object mapped.
    let o = mmld(&["check", DEMO]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("(1 object mapped by mmld"), "{}", out(&o));
    let o = mmld(&["check", "testlibs/libmissing.so"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains(": 1 undefined symbol\n"), "{}", err(&o));
    let o = mmld(&["check", "testlibs/libcheckbad.so"]);
    assert!(err(&o).contains(": 2 undefined symbols\n"), "{}", err(&o));
    let o = mmld(&["check", "testlibs/diamond/libdtop.so"]);
    assert!(out(&o).contains("(5 objects mapped by mmld"), "{}", out(&o));
}

#[test]
fn share_reports_a_workers_error_once() {
    let o = mmld(&["share", "--procs", "3", "testlibs/libmissing.so"]);
    assert_eq!(o.status.code(), Some(1));
    let e = err(&o);
    assert_eq!(e.matches("mmld_no_such_function").count(), 1, "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert_eq!(out(&o), "");
}

#[test]
fn call_arguments_may_come_before_the_library() {
    // The order clap's usage line shows: [OPTIONS] [LIBRARY].
    let o = mmld(&["maps", "--call", "add", "2", "3", DEMO]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("add(2, 3) = 5"), "{}", out(&o));
    // The other order still works.
    let o = mmld(&["maps", DEMO, "--call", "add", "2", "3"]);
    assert!(out(&o).contains("add(2, 3) = 5"), "{}", out(&o));
    let o = mmld(&["share", "--procs", "2", "--call", "counter_bump", DEMO]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        out(&o).contains("each called counter_bump() = "),
        "{}",
        out(&o)
    );
    // --call with a symbol alone has no library to take.
    let o = mmld(&["maps", "--call", "add"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("needs a LIBRARY"), "{}", err(&o));
}

#[test]
fn mmld_trace_warns_about_unknown_categories() {
    let o = mmld_cmd(&["run", DEMO, "add", "2", "3"])
        .env("MMLD_TRACE", "libs,bogus")
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(out(&o), "5\n");
    let e = err(&o);
    assert!(e.contains("unknown category bogus"), "{e}");
    assert!(
        e.contains("mmld::libs"),
        "the known category still traces: {e}"
    );
    let o = mmld_cmd(&["run", DEMO, "add", "2", "3"])
        .env("MMLD_TRACE", "libs,bindings")
        .output()
        .unwrap();
    assert!(!err(&o).contains("unknown"), "{}", err(&o));
}

#[test]
fn trace_file_gets_the_trace_and_share_workers_trace_too() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("trace.log");
    let f = file.to_str().unwrap();
    let o = mmld(&["--trace-file", f, "run", DEMO, "add", "2", "3"]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(err(&o), "", "the trace went to the file");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("mmld::libs") && text.contains("running constructors"),
        "{text}"
    );
    assert!(!text.contains('\x1b'), "no colour in a file");

    // Each of share's workers loads the library: with --trace they trace.
    std::fs::remove_file(&file).unwrap();
    let o = mmld(&["--trace-file", f, "share", "--procs", "3", DEMO]);
    assert!(o.status.success(), "{}", err(&o));
    let text = std::fs::read_to_string(&file).unwrap();
    let loads = text
        .lines()
        .filter(|l| l.contains("running constructors") && l.contains("libdemo.so"))
        .count();
    assert_eq!(loads, 3, "{text}");
    let o = mmld(&["--trace", "share", "--procs", "2", DEMO]);
    let e = err(&o);
    let loads = e
        .lines()
        .filter(|l| l.contains("running constructors") && l.contains("libdemo.so"))
        .count();
    assert_eq!(loads, 2, "{e}");
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    // Piped: never coloured.
    let o = mmld(&["--trace", "run", DEMO, "add", "2", "3"]);
    assert!(err(&o).contains("mmld::libs"));
    assert!(!err(&o).contains('\x1b'), "{:?}", err(&o));
    // On a terminal (script(1) gives one): coloured, unless NO_COLOR.
    let bin = env!("CARGO_BIN_EXE_mmld");
    let in_pty = |no_color: bool| {
        let mut c = Command::new("script");
        c.current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("MMLD_TRACE")
            .args([
                "-qec",
                &format!("'{bin}' --trace run {DEMO} add 2 3"),
                "/dev/null",
            ]);
        if no_color {
            c.env("NO_COLOR", "1");
        } else {
            c.env_remove("NO_COLOR");
        }
        let o = c.output().expect("script(1) from util-linux");
        assert!(o.status.success(), "{}", err(&o));
        out(&o)
    };
    let coloured = in_pty(false);
    assert!(
        coloured.contains("mmld::libs") && coloured.contains('\x1b'),
        "{coloured:?}"
    );
    let plain = in_pty(true);
    assert!(
        plain.contains("mmld::libs") && !plain.contains('\x1b'),
        "{plain:?}"
    );
}

/// `(name, canonical path)` pairs of ldd's or `deps --flat`'s lines that
/// resolve a name to a file.
fn resolved(text: &str) -> BTreeSet<(String, std::path::PathBuf)> {
    text.lines()
        .filter_map(|l| {
            let (name, rest) = l.trim().split_once(" => ")?;
            let path = rest.split(" (").next()?;
            Some((name.to_string(), std::fs::canonicalize(path).ok()?))
        })
        .collect()
}

#[test]
fn deps_flat_matches_ldd() {
    for lib in [
        "testlibs/diamond/libdtop.so",
        "testlibs/rpath/libchaintop.so",
        "/usr/lib/x86_64-linux-gnu/libpng16.so.16",
    ] {
        let o = mmld(&["deps", "--flat", lib]);
        assert!(o.status.success(), "{lib}: {}", err(&o));
        let ours = out(&o);
        let ldd = Command::new("ldd")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg(lib)
            .output()
            .unwrap();
        assert_eq!(resolved(&ours), resolved(&out(&ldd)), "{lib}:\n{ours}");
        for line in ours.lines() {
            assert!(line.starts_with('\t'), "ldd indents with a tab: {line:?}");
            // Every library mmld maps has its load address, as ldd prints it.
            if line.contains("/testlibs/") {
                assert!(line.contains(" (0x"), "{line}");
            }
        }
    }
    let o = mmld(&["deps", "--flat", "testlibs/libcheckbad.so"]);
    assert!(o.status.success(), "{}", err(&o));
}

/// readelf's `--dyn-syms -W` rows, without its version indices `(n)`.
fn readelf_dyn_syms(lib: &str) -> Vec<Vec<String>> {
    let text = readelf(&["--dyn-syms", "-W"], std::path::Path::new(lib));
    rows(&text)
}

fn rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| {
            l.trim_start()
                .split(':')
                .next()
                .is_some_and(|n| n.trim().parse::<u32>().is_ok())
        })
        .map(|l| {
            let l = match l.rfind(" (") {
                Some(i) if l.ends_with(')') => &l[..i],
                _ => l,
            };
            l.split_whitespace().map(String::from).collect()
        })
        .collect()
}

#[test]
fn info_dyn_syms_matches_readelf() {
    let root = env!("CARGO_MANIFEST_DIR");
    for lib in [
        "libdemo.so",
        "libversioned.so",
        "libifunc.so",
        "libtls.so",
        "libcxx.so",
    ] {
        let path = format!("{root}/testlibs/{lib}");
        let o = mmld(&["info", "--dyn-syms", &path]);
        assert!(o.status.success(), "{lib}: {}", err(&o));
        let ours = rows(&out(&o));
        let theirs = readelf_dyn_syms(&path);
        assert_eq!(ours, theirs, "{lib}");
        assert!(out(&o).starts_with(&format!(
            "Symbol table '.dynsym' contains {} entries:",
            theirs.len()
        )));
    }
}

#[test]
fn info_dynamic_matches_readelf() {
    let root = env!("CARGO_MANIFEST_DIR");
    for lib in [
        "libdemo.so",
        "rpath/libchaintop.so",
        "diamond/libdtop.so",
        "libversioned.so",
    ] {
        let path = format!("{root}/testlibs/{lib}");
        let o = mmld(&["info", "--dynamic", &path]);
        assert!(o.status.success(), "{lib}: {}", err(&o));
        let theirs = readelf(&["-d", "-W"], std::path::Path::new(&path));
        // Tag, type and value of every entry before DT_NULL.
        let entries = |t: &str| -> Vec<String> {
            t.lines()
                .map(str::trim)
                .filter(|l| l.starts_with("0x") && !l.contains("(NULL)"))
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect()
        };
        assert_eq!(entries(&out(&o)), entries(&theirs), "{lib}");
    }
}

#[test]
fn check_json() {
    let o = mmld(&["check", "--json", "testlibs/libcheckbad.so"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).expect("one JSON object");
    assert_eq!(v["ok"], false);
    let unresolved = v["unresolved"].as_array().unwrap();
    assert_eq!(unresolved.len(), 2, "{v}");
    let objects: BTreeSet<&str> = unresolved
        .iter()
        .map(|u| u["object"].as_str().unwrap())
        .collect();
    assert_eq!(objects, BTreeSet::from(["libcheckbad.so", "libmissing.so"]));
    let o = mmld(&["check", "--json", DEMO]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["mapped"], serde_json::json!(["libdemo.so"]));
}

#[test]
fn completions_and_manual_come_from_the_command_line_definition() {
    for shell in ["bash", "zsh", "fish"] {
        let o = mmld(&["completions", shell]);
        assert!(o.status.success(), "{shell}: {}", err(&o));
        let text = out(&o);
        for sub in ["share", "maps", "deps", "dyn-syms", "trace-file"] {
            assert!(text.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    // bash accepts its script.
    let o = mmld(&["completions", "bash"]);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("mmld.bash");
    std::fs::write(&script, &o.stdout).unwrap();
    let check = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", err(&check));
    let o = mmld(&["man"]);
    assert!(o.status.success());
    let page = out(&o);
    assert!(
        page.starts_with(".ie") || page.contains(".TH mmld"),
        "{}",
        &page[..200.min(page.len())]
    );
    for sub in ["share", "completions", "\\-\\-trace"] {
        assert!(page.contains(sub), "man page lacks {sub}");
    }
}

#[test]
fn share_measures_running_processes_with_uss_and_totals() {
    let libc = "/lib/x86_64-linux-gnu/libc.so.6";
    let mut sleepers: Vec<std::process::Child> = (0..2)
        .map(|_| Command::new("sleep").arg("600").spawn().expect("sleep"))
        .collect();
    // Until each has exec'd sleep and mapped libc.
    for s in &sleepers {
        while !maps_of(s.id()).is_some_and(|m| {
            m.iter()
                .any(|v| path_text(&v.pathname).contains("libc.so.6"))
        }) {
            std::thread::yield_now();
        }
    }
    let pids = format!("{},{}", sleepers[0].id(), sleepers[1].id());
    let text = mmld(&["share", "--pid", &pids, libc]);
    let json = mmld(&["share", "--json", "--pid", &pids, libc]);
    for s in &mut sleepers {
        let _ = s.kill();
        let _ = s.wait();
    }
    assert!(text.status.success(), "{}", err(&text));
    let t = out(&text);
    assert!(
        t.contains(&format!(
            "2 processes (pid {} {})",
            sleepers[0].id(),
            sleepers[1].id()
        )),
        "{t}"
    );
    assert!(t.contains("USS KiB"), "{t}");
    assert!(t.lines().any(|l| l.starts_with("total ")), "{t}");
    let v: serde_json::Value = serde_json::from_str(&out(&json)).expect("JSON");
    let segments = v["segments"].as_array().unwrap();
    assert!(!segments.is_empty());
    for s in segments {
        for w in 0..2 {
            let f = |k: &str| s[k][w].as_u64().unwrap();
            // smem's USS: what only this process maps.
            assert_eq!(
                f("uss_kib"),
                f("private_clean_kib") + f("private_dirty_kib"),
                "{s}"
            );
        }
        if s["role"] == "text" {
            // Every process maps libc's text: none of it is unique to one.
            assert_eq!(s["uss_kib"], serde_json::json!([0, 0]), "{s}");
        }
    }
    let totals = &v["totals"];
    for w in 0..2 {
        let sum: u64 = segments
            .iter()
            .map(|s| s["uss_kib"][w].as_u64().unwrap())
            .sum();
        assert_eq!(totals["uss_kib"][w].as_u64(), Some(sum), "{totals}");
    }
    // A process that has not mapped the library is an error naming it.
    let o = mmld(&[
        "share",
        "--pid",
        &std::process::id().to_string(),
        "testlibs/libcheckbad.so",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("has not mapped"), "{}", err(&o));
}

/// The keys of a JSON object, sorted.
fn keys(v: &serde_json::Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

fn sorted(mut k: Vec<&str>) -> Vec<&str> {
    k.sort_unstable();
    k
}

fn json_of(args: &[&str]) -> serde_json::Value {
    let o = mmld(args);
    assert!(o.status.success(), "{args:?}: {}", err(&o));
    serde_json::from_str(&out(&o)).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", out(&o)))
}

// The --json outputs are what scripts read: their keys stay as they are,
// whichever way they are produced.
#[test]
fn json_outputs_keep_their_keys() {
    let info = json_of(&["info", "--json", DEMO]);
    assert_eq!(
        keys(&info),
        sorted(vec![
            "path",
            "soname",
            "span",
            "segments",
            "relro",
            "tls",
            "needed",
            "rpath",
            "runpath",
            "flags",
            "relocations",
            "relr_addresses",
            "symbols",
            "versions_defined",
            "versions_required",
            "dynamic",
            "dyn_syms",
        ])
    );
    assert_eq!(
        keys(&info["symbols"]),
        sorted(vec![
            "total",
            "defined",
            "undefined",
            "functions",
            "objects",
            "tls",
            "ifunc",
            "hash"
        ])
    );
    assert_eq!(
        keys(&info["segments"][0]),
        sorted(vec![
            "index", "perms", "vaddr", "memsz", "offset", "filesz", "align"
        ])
    );
    assert_eq!(keys(&info["relro"]), ["size", "vaddr"]);

    let deps = json_of(&["deps", "--json", DEMO]);
    assert_eq!(
        keys(&deps[0]),
        sorted(vec![
            "name",
            "path",
            "found_by",
            "provider",
            "reused",
            "repeat",
            "loaded_for",
            "needed_by",
            "depth",
        ])
    );
    assert_eq!(deps[0]["provider"], "mmld");

    let check = json_of(&["check", "--json", DEMO]);
    assert_eq!(keys(&check), ["library", "mapped", "ok", "unresolved"]);

    let row_keys = vec![
        "start",
        "end",
        "vma",
        "perms",
        "offset",
        "file_backed",
        "role",
        "sections",
        "pages",
        "resident",
        "zero_pages",
        "cached",
    ];
    let maps = json_of(&["maps", "--json", DEMO]);
    assert_eq!(
        keys(&maps),
        ["called", "objects", "pid", "privileged", "skipped"]
    );
    assert_eq!(maps["called"], serde_json::Value::Null);
    assert_eq!(
        keys(&maps["objects"][0]),
        sorted(vec![
            "name",
            "path",
            "start",
            "end",
            "bias",
            "mapped_by",
            "warning",
            "pages",
            "resident_pages",
            "rows",
        ])
    );
    assert_eq!(
        keys(&maps["objects"][0]["rows"][0]),
        sorted(row_keys.clone())
    );
    // After a call, each row also says what was resident before it.
    let called = json_of(&["maps", "--json", "--call", "add", "2", "3", DEMO]);
    assert_eq!(called["called"], "add(2, 3) = 5");
    let mut with_before = row_keys;
    with_before.push("resident_after_load");
    for row in called["objects"][0]["rows"].as_array().unwrap() {
        assert_eq!(keys(row), sorted(with_before.clone()));
    }

    let share = json_of(&["share", "--procs", "2", "--json", DEMO]);
    assert_eq!(
        keys(&share),
        sorted(vec![
            "library",
            "strategy",
            "processes",
            "privileged",
            "pids",
            "call",
            "page_size",
            "segments",
            "totals",
            "notes",
        ])
    );
    let kib = [
        "rss_kib",
        "pss_kib",
        "uss_kib",
        "shared_clean_kib",
        "shared_dirty_kib",
        "private_clean_kib",
        "private_dirty_kib",
    ];
    let mut segment = vec![
        "object",
        "role",
        "roles",
        "perms",
        "vaddr",
        "file_offset",
        "sections",
        "pages",
        "resident_pages",
        "zero_pages",
        "physical_pages",
        "resident_in_any",
        "resident_in_all",
        "frames_in_all",
        "max_sharers",
        "min_kpagecount_in_all",
        "smaps_exact",
        "addresses",
        "vmas",
        "conclusion",
    ];
    segment.extend(kib);
    for seg in share["segments"].as_array().unwrap() {
        assert_eq!(keys(seg), sorted(segment.clone()));
        // One figure per worker.
        assert_eq!(seg["uss_kib"].as_array().map(Vec::len), Some(2), "{seg}");
    }
    let mut totals = vec![
        "pages",
        "resident_pages",
        "zero_pages",
        "physical_pages",
        "smaps_exact",
    ];
    totals.extend(kib);
    assert_eq!(keys(&share["totals"]), sorted(totals));
}
