//! Integration tests for the `mmld` binary: `mmld run` argument passing and
//! return types, its error exits, and `mmld info` (text and JSON) checked
//! against `readelf`.

mod common;

use std::process::{Command, Output};

use common::*;

/// Run the built `mmld` from the package root (so `testlibs/...` paths
/// work as in the README), with tracing off.
fn mmld(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmld"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("MMLD_TRACE")
        .args(args)
        .output()
        .expect("run mmld")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `mmld run <args>` must succeed, print exactly `expected` and nothing on
/// stderr.
fn run_ok(args: &[&str], expected: &str) {
    let mut full = vec!["run"];
    full.extend_from_slice(args);
    let o = mmld(&full);
    assert!(
        o.status.success(),
        "mmld {full:?} failed ({}): {}",
        o.status,
        stderr(&o)
    );
    assert_eq!(stdout(&o), expected, "mmld {full:?}");
    assert_eq!(stderr(&o), "", "mmld {full:?}");
}

/// `mmld run <args>` must fail with exit status 1, print nothing on stdout
/// and a message containing every one of `needles` on stderr.
fn run_err(args: &[&str], needles: &[&str]) {
    let mut full = vec!["run"];
    full.extend_from_slice(args);
    let o = mmld(&full);
    assert_eq!(o.status.code(), Some(1), "mmld {full:?}: {}", stderr(&o));
    assert_eq!(stdout(&o), "", "mmld {full:?} printed a result");
    let err = stderr(&o);
    for n in needles {
        assert!(err.contains(n), "mmld {full:?}: stderr {err:?} lacks {n:?}");
    }
}

const DEMO: &str = "testlibs/libdemo.so";

#[test]
fn run_add_prints_five() {
    run_ok(&[DEMO, "add", "2", "3"], "5\n");
}

#[test]
fn run_zlib_version_as_string() {
    run_ok(
        &[LIBZ, "zlibVersion", "--ret", "str"],
        &format!("{}\n", zlib_version_from_file_name()),
    );
}

#[test]
fn run_passes_six_ints_and_eight_doubles_interleaved() {
    // mix(a, b, ..., n) = Σ k·arg_k; with arg_k = k that is Σ k² = 1015.
    run_ok(
        &[
            DEMO, "mix", "1", "2.0", "3", "4.0", "5", "6.0", "7", "8.0", "9", "10.0", "11", "12.0",
            "13.0", "14.0", "--ret", "f64",
        ],
        "1015\n",
    );
    // Classes are assigned in order whatever the interleaving, so the same
    // values with doubles and integers reordered among themselves differ.
    run_ok(
        &[
            DEMO, "mix", "11", "14.0", "9", "12.0", "7", "10.0", "5", "8.0", "3", "6.0", "1",
            "4.0", "2.0", "13.0", "--ret", "f64",
        ],
        &format!(
            "{}\n",
            11.0 + 2.0 * 14.0
                + 3.0 * 9.0
                + 4.0 * 12.0
                + 5.0 * 7.0
                + 6.0 * 10.0
                + 7.0 * 5.0
                + 8.0 * 8.0
                + 9.0 * 3.0
                + 10.0 * 6.0
                + 11.0 * 1.0
                + 12.0 * 4.0
                + 13.0 * 2.0
                + 14.0 * 13.0
        ),
    );
}

#[test]
fn run_return_and_argument_types() {
    run_ok(&[DEMO, "half", "f32:3", "--ret", "f32"], "1.5\n");
    run_ok(&[DEMO, "scale", "1.5", "f64:4", "--ret", "f64"], "6\n");
    run_ok(&[DEMO, "negate_i32", "i32:5", "--ret", "i32"], "-5\n");
    run_ok(&[DEMO, "negate_i32", "i32:-7", "--ret", "i32"], "7\n");
    run_ok(&[DEMO, "u32_max", "--ret", "u32"], "4294967295\n");
    run_ok(&[DEMO, "u32_max", "--ret", "i32"], "-1\n");
    run_ok(&[DEMO, "greeting", "--ret", "str"], "hello from libdemo\n");
    run_ok(&[DEMO, "add", "0x10", "-3"], "13\n");
    run_ok(
        &[DEMO, "add", "-1", "0", "--ret", "u64"],
        "18446744073709551615\n",
    );
    run_ok(&[DEMO, "demo_format", "42", "--ret", "str"], "n=42\n");
    run_ok(&[DEMO, "demo_strlen", "hello", "--ret", "u64"], "5\n");
    run_ok(&[DEMO, "demo_strlen", "str:12345", "--ret", "u64"], "5\n");
    run_ok(&[DEMO, "demo_word", "1", "--ret", "str"], "beta\n");
    run_ok(&[DEMO, "demo_word", "9", "--ret", "str"], "(null)\n");
    run_ok(&[DEMO, "demo_has_weak", "--ret", "i32"], "0\n");
    run_ok(&[DEMO, "bss_poke", "0", "1", "--ret", "void"], "");
    run_ok(
        &["testlibs/libversioned.so", "vfunc", "--ret", "i32"],
        "2\n",
    );
    run_ok(&["testlibs/libifunc.so", "ifunc_value"], "42\n");
    run_ok(
        &["testlibs/libdemo_relr.so", "demo_apply", "0", "40", "2"],
        "42\n",
    );
    run_ok(&["testlibs/libdemo_sysv.so", "add", "2", "3"], "5\n");
}

#[test]
fn run_ret_ptr_prints_hex() {
    let o = mmld(&["run", DEMO, "greeting", "--ret", "ptr"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let hex = out
        .strip_suffix('\n')
        .and_then(|s| s.strip_prefix("0x"))
        .unwrap_or_else(|| panic!("not 0x-hex: {out:?}"));
    let value = u64::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("not hex: {out:?}"));
    assert_ne!(value, 0);
}

#[test]
fn run_refuses_arguments_that_would_go_on_the_stack() {
    run_err(
        &[DEMO, "add", "1", "2", "3", "4", "5", "6", "7"],
        &["more than 6 integer"],
    );
    run_err(
        &[
            DEMO, "scale", "1.0", "2.0", "3.0", "4.0", "5.0", "6.0", "7.0", "8.0", "9.0", "--ret",
            "f64",
        ],
        &["more than 8 floating-point"],
    );
    // Strings are pointers: they count as integer-class arguments.
    run_err(
        &[DEMO, "add", "a", "b", "c", "d", "e", "f", "g"],
        &["more than 6 integer"],
    );
}

#[test]
fn run_refuses_a_data_object() {
    run_err(
        &[DEMO, "demo_data_value"],
        &["demo_data_value", "not a function"],
    );
}

#[test]
fn run_unknown_symbol_is_named() {
    run_err(
        &[DEMO, "no_such_function_here"],
        &["no_such_function_here", "not found"],
    );
}

#[test]
fn run_missing_file_is_named() {
    run_err(
        &["testlibs/does_not_exist.so", "add", "1", "2"],
        &["does_not_exist.so"],
    );
}

#[test]
fn run_unresolved_reference_fails_the_load() {
    run_err(
        &["testlibs/libmissing.so", "call_missing"],
        &["libmissing.so", "mmld_no_such_function", "undefined symbol"],
    );
}

#[test]
fn run_rejects_a_non_elf_file() {
    run_err(&["testlibs/demo.c", "add"], &["demo.c", "not an ELF file"]);
}

#[test]
fn run_bad_typed_argument_is_an_error() {
    run_err(&[DEMO, "negate_i32", "i32:99999999999"], &["out of range"]);
    run_err(&[DEMO, "half", "f32:abc", "--ret", "f32"], &["abc"]);
}

// ---------------------------------------------------------------------------
// mmld info

fn program_header_perms(path: &std::path::Path) -> Vec<String> {
    use goblin::elf::program_header::{PF_R, PF_W, PF_X, PT_LOAD};
    let bytes = std::fs::read(path).unwrap();
    let elf = goblin::elf::Elf::parse(&bytes).unwrap();
    elf.program_headers
        .iter()
        .filter(|p| p.p_type == PT_LOAD)
        .map(|p| {
            format!(
                "{}{}{}",
                if p.p_flags & PF_R != 0 { 'r' } else { '-' },
                if p.p_flags & PF_W != 0 { 'w' } else { '-' },
                if p.p_flags & PF_X != 0 { 'x' } else { '-' }
            )
        })
        .collect()
}

fn relro_of(path: &std::path::Path) -> (u64, u64) {
    let bytes = std::fs::read(path).unwrap();
    let elf = goblin::elf::Elf::parse(&bytes).unwrap();
    let r = elf
        .program_headers
        .iter()
        .find(|p| p.p_type == goblin::elf::program_header::PT_GNU_RELRO)
        .expect("fixture has PT_GNU_RELRO");
    (r.p_vaddr, r.p_memsz)
}

#[test]
fn info_text_describes_libdemo() {
    let o = mmld(&["info", DEMO]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let has = |want: &[&str]| lines.iter().any(|l| l.as_slice() == want);

    assert!(has(&["soname:", "libdemo.so"]), "{out}");
    assert!(has(&["needed:", "libc.so.6"]), "{out}");
    let (vaddr, size) = relro_of(&testlib("libdemo.so"));
    let relro = format!("{:#x}..{:#x}", vaddr, vaddr + size);
    assert!(has(&["relro:", &relro]), "{out}");

    // One segment row per PT_LOAD, with its permissions, in order.
    let perms: Vec<&str> = lines
        .iter()
        .filter(|l| l.len() == 6 && l[0].parse::<usize>().is_ok())
        .map(|l| l[1])
        .collect();
    assert_eq!(perms, program_header_perms(&testlib("libdemo.so")), "{out}");
    assert!(perms.contains(&"r-x") && perms.contains(&"rw-"), "{out}");

    // Relocation counts by type, as readelf counts them.
    let counts = readelf_reloc_counts(&testlib("libdemo.so"));
    assert!(counts.len() >= 4);
    for (name, n) in &counts {
        assert!(has(&[name, &n.to_string()]), "{name} {n} missing:\n{out}");
    }
}

#[test]
fn info_json_matches_readelf() {
    for name in [
        "libdemo.so",
        "libdemo_relr.so",
        "libdemo_sysv.so",
        "libversioned.so",
        "libifunc.so",
        "libmissing.so",
    ] {
        let rel = format!("testlibs/{name}");
        let o = mmld(&["info", &rel, "--json"]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{name}: invalid JSON ({e}): {}", stdout(&o)));
        let path = testlib(name);

        assert_eq!(v["soname"], name);
        // DT_NEEDED names as readelf shows them: "... Shared library: [libc.so.6]".
        let needed: Vec<String> = readelf(&["-dW"], &path)
            .lines()
            .filter(|l| l.contains("(NEEDED)"))
            .filter_map(|l| Some(l.split('[').nth(1)?.trim_end_matches(']').to_string()))
            .collect();
        assert_eq!(v["needed"], serde_json::json!(needed), "{name}");

        let relocations: std::collections::BTreeMap<String, usize> =
            serde_json::from_value(v["relocations"].clone()).unwrap();
        assert_eq!(relocations, readelf_reloc_counts(&path), "{name}");
        assert_eq!(
            v["relr_addresses"].as_u64(),
            Some(readelf_relr_count(&path) as u64),
            "{name}"
        );

        let perms: Vec<String> = v["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["perms"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(perms, program_header_perms(&path), "{name}");

        let (vaddr, size) = relro_of(&path);
        assert_eq!(v["relro"]["vaddr"].as_u64(), Some(vaddr), "{name}");
        assert_eq!(v["relro"]["size"].as_u64(), Some(size), "{name}");
    }
}

#[test]
fn info_refuses_a_non_elf_file() {
    let o = mmld(&["info", "testlibs/README.md"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "");
    assert!(stderr(&o).contains("README.md"), "{}", stderr(&o));
}
