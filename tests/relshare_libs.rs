//! Shared relocations (issue 15) on real libraries, each load in a fresh
//! process: the first load with an empty cache writes it, the second maps
//! its pages (in verification mode, which also relocates fully and fails on
//! any byte that differs), and a function of the library returns what it
//! returns under a normal mmld load and under glibc. Then every way a cache
//! must not be used: a changed file, a moved dependency, another
//! executable, and hostile cache directories and files. Last, `mmld share`
//! shows libLLVM-15's RELRO as one physical copy across four workers.
//!
//! A child is this test binary re-run on `probe_child` with the work in
//! its environment (`RELSHARE_*`); it prints one `RELSHARE {json}` line with
//! the probe's result and what the cache did for every object.

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use relshare_probes::{
    Loaded, probe_curl, probe_llvm, probe_sqlite, probe_stdcxx, probe_xml2, sharing_json,
};

mod relshare_probes;

const LIB_DIR: &str = "/usr/lib/x86_64-linux-gnu";
const TAG: &str = "RELSHARE ";

/// The libraries of the issue, each with the probe that exercises it.
const LIBS: &[(&str, &str)] = &[
    ("sqlite", "libsqlite3.so.0"),
    ("xml2", "libxml2.so.2"),
    ("curl", "libcurl.so.4"),
    ("stdcxx", "libstdc++.so.6"),
    ("llvm", "libLLVM-15.so.1"),
];

fn system_lib(probe: &str) -> Option<PathBuf> {
    let (_, file) = LIBS.iter().find(|(p, _)| *p == probe)?;
    let path = Path::new(LIB_DIR).join(file);
    if path.exists() {
        Some(path)
    } else {
        eprintln!("skipped: {} is not installed", path.display());
        None
    }
}

// ---------------------------------------------------------------------------
// The child: load, probe, report
// ---------------------------------------------------------------------------

/// The child's side: the work is in `RELSHARE_*`. Not a test of its own:
/// without `RELSHARE_PROBE` it returns at once.
#[test]
fn probe_child() {
    let Ok(probe) = std::env::var("RELSHARE_PROBE") else {
        return;
    };
    let path = std::env::var("RELSHARE_PATH").unwrap();
    let loaded = match std::env::var("RELSHARE_LOADER").as_deref() {
        Ok("glibc") => {
            let c = CString::new(path.as_str()).unwrap();
            // SAFETY: loading a system library with glibc, as the test intends.
            let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
            assert!(!h.is_null(), "glibc dlopen {path} failed");
            Loaded::Glibc(h)
        }
        _ => {
            let mut o = mmld::OpenOptions::new();
            if let Ok(dir) = std::env::var("RELSHARE_DIR") {
                o.share_relocations(dir);
                o.verify_shared_relocations(std::env::var_os("RELSHARE_VERIFY").is_some());
            }
            // SAFETY: loading a system library, as the test intends.
            match unsafe { o.open(&path) } {
                Ok(lib) => Loaded::Mmld(lib),
                // The parent expects this load to fail: its error is the answer.
                Err(e) if std::env::var_os("RELSHARE_EXPECT_ERROR").is_some() => {
                    println!("\n{TAG}{}", json!({"error": e.to_string()}));
                    return;
                }
                Err(e) => panic!("mmld: {e}"),
            }
        }
    };
    let result = match probe.as_str() {
        "sqlite" => probe_sqlite(&loaded),
        "xml2" => probe_xml2(&loaded),
        "curl" => probe_curl(&loaded),
        "stdcxx" => probe_stdcxx(&loaded),
        "llvm" => probe_llvm(&loaded),
        other => panic!("unknown probe {other}"),
    };
    let sharing = match &loaded {
        Loaded::Mmld(lib) => sharing_json(lib),
        Loaded::Glibc(_) => Value::Array(Vec::new()),
    };
    println!("\n{TAG}{}", json!({"result": result, "sharing": sharing}));
}

// ---------------------------------------------------------------------------
// The parent's side
// ---------------------------------------------------------------------------

/// One child's answer.
#[derive(Debug)]
struct Probe {
    result: String,
    /// Every object mmld mapped: `outcome`, `pages_from_cache`, `cache_file`...
    sharing: Vec<Value>,
}

impl Probe {
    /// The sharing record of the object whose path ends in `file`.
    fn object(&self, file: &str) -> &Value {
        self.sharing
            .iter()
            .find(|s| s["path"].as_str().is_some_and(|p| p.ends_with(file)))
            .unwrap_or_else(|| panic!("no sharing record for {file} in {:#?}", self.sharing))
    }
    fn outcome(&self, file: &str) -> String {
        self.object(file)["outcome"]
            .as_str()
            .unwrap_or("?")
            .to_string()
    }
}

/// How a child runs.
#[derive(Default)]
struct Run<'a> {
    loader: &'a str,
    dir: Option<&'a Path>,
    verify: bool,
    /// `LD_LIBRARY_PATH` for the child (none otherwise).
    ld_path: Option<&'a Path>,
    /// The load is expected to fail; `Probe::result` is then its error.
    expect_error: bool,
}

fn child(probe: &str, path: &Path, run: &Run<'_>) -> Probe {
    let exe = std::env::current_exe().unwrap();
    let mut c = Command::new(exe);
    c.args(["probe_child", "--exact", "--nocapture", "--test-threads=1"])
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("MMLD_SHARE_RELOCATIONS")
        .env_remove("MMLD_SHARE_RELOCATIONS_VERIFY")
        .env_remove("MMLD_TRACE")
        .env_remove("RELSHARE_DIR")
        .env_remove("RELSHARE_VERIFY")
        .env("RELSHARE_PROBE", probe)
        .env("RELSHARE_PATH", path)
        .env("RELSHARE_LOADER", run.loader);
    if let Some(d) = run.dir {
        c.env("RELSHARE_DIR", d);
    }
    if run.verify {
        c.env("RELSHARE_VERIFY", "1");
    }
    if let Some(p) = run.ld_path {
        c.env("LD_LIBRARY_PATH", p);
    }
    if run.expect_error {
        c.env("RELSHARE_EXPECT_ERROR", "1");
    }
    let out = c.output().expect("re-run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{probe} child ({}) failed: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        run.loader,
        out.status
    );
    let line = stdout
        .lines()
        .find_map(|l| l.find(TAG).map(|i| &l[i + TAG.len()..]))
        .unwrap_or_else(|| panic!("no {TAG}line\n--- stdout\n{stdout}\n--- stderr\n{stderr}"));
    let v: Value = serde_json::from_str(line).unwrap();
    if run.expect_error {
        let error = v["error"].as_str();
        assert!(
            error.is_some(),
            "{probe}: the load was expected to fail: {v}"
        );
        return Probe {
            result: error.unwrap_or_default().to_string(),
            sharing: Vec::new(),
        };
    }
    Probe {
        result: v["result"].as_str().unwrap().to_string(),
        sharing: v["sharing"].as_array().cloned().unwrap_or_default(),
    }
}

fn glibc(probe: &str, path: &Path) -> Probe {
    child(
        probe,
        path,
        &Run {
            loader: "glibc",
            ..Run::default()
        },
    )
}

fn mmld(probe: &str, path: &Path, dir: Option<&Path>, verify: bool) -> Probe {
    child(
        probe,
        path,
        &Run {
            loader: "mmld",
            dir,
            verify,
            ..Run::default()
        },
    )
}

/// A fresh cache directory: owned by us, mode 0700.
fn cache_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    d
}

/// Empty cache → written; second process → hit for every object written,
/// byte-identical in verification mode; the same result as a normal mmld
/// load and as glibc.
fn hit_matches_normal_and_glibc(probe: &str) {
    let Some(path) = system_lib(probe) else {
        return;
    };
    let reference = glibc(probe, &path);
    let normal = mmld(probe, &path, None, false);
    assert_eq!(normal.result, reference.result, "normal mmld load vs glibc");
    assert!(
        normal.sharing.iter().all(|s| s["outcome"] == "off"),
        "no cache asked for, none used: {:#?}",
        normal.sharing
    );

    let dir = cache_dir();
    let first = mmld(probe, &path, Some(dir.path()), false);
    assert_eq!(first.result, reference.result, "first load with the cache");
    let file = path.file_name().unwrap().to_str().unwrap();
    assert_eq!(first.outcome(file), "written", "{:#?}", first.sharing);

    let second = mmld(probe, &path, Some(dir.path()), true);
    assert_eq!(second.result, reference.result, "cache hit, verified");
    assert_eq!(second.outcome(file), "hit", "{:#?}", second.sharing);
    for written in first.sharing.iter().filter(|s| s["outcome"] == "written") {
        let p = written["path"].as_str().unwrap();
        let again = second
            .sharing
            .iter()
            .find(|s| s["path"] == p)
            .unwrap_or_else(|| panic!("{p} not in the second load"));
        assert_eq!(again["outcome"], "hit", "{p}: {again}");
        assert!(
            again["pages_from_cache"].as_u64().unwrap() > 0,
            "{p}: a hit maps pages from the cache: {again}"
        );
    }
}

#[test]
fn sqlite_hit_is_identical_and_correct() {
    hit_matches_normal_and_glibc("sqlite");
}

#[test]
fn libxml2_with_icu_hit_is_identical_and_correct() {
    hit_matches_normal_and_glibc("xml2");
}

#[test]
fn libcurl_tree_hit_is_identical_and_correct() {
    hit_matches_normal_and_glibc("curl");
}

#[test]
fn libstdcxx_hit_is_identical_and_correct() {
    hit_matches_normal_and_glibc("stdcxx");
}

#[test]
fn libllvm_hit_is_identical_and_correct() {
    hit_matches_normal_and_glibc("llvm");
}

/// Not a hit, and the probe's result is still glibc's.
fn assert_not_hit(p: &Probe, file: &str, reference: &Probe, case: &str) {
    assert_eq!(p.result, reference.result, "{case}: result");
    let outcome = p.outcome(file);
    assert!(
        outcome == "fallback" || outcome == "written",
        "{case}: {file} must fall back to a normal load, got {outcome}: {:#?}",
        p.sharing
    );
}

#[test]
fn a_changed_file_falls_back() {
    let Some(system) = system_lib("sqlite") else {
        return;
    };
    let reference = glibc("sqlite", &system);
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("libsqlite3.so.0");
    std::fs::copy(&system, &copy).unwrap();
    let dir = cache_dir();
    let first = mmld("sqlite", &copy, Some(dir.path()), false);
    assert_eq!(first.outcome("libsqlite3.so.0"), "written");
    // Rewrite the copy: different contents (bytes after the section
    // headers, which no loader reads), different size and mtime.
    let mut bytes = std::fs::read(&copy).unwrap();
    bytes.extend_from_slice(b"changed");
    std::fs::write(&copy, &bytes).unwrap();
    let f = std::fs::File::options().write(true).open(&copy).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    drop(f);
    let second = mmld("sqlite", &copy, Some(dir.path()), true);
    assert_not_hit(&second, "libsqlite3.so.0", &reference, "changed file");
}

#[test]
fn a_moved_dependency_falls_back() {
    let Some(xml) = system_lib("xml2") else {
        return;
    };
    let reference = glibc("xml2", &xml);
    let dir = cache_dir();
    let first = mmld("xml2", &xml, Some(dir.path()), false);
    assert_eq!(
        first.outcome("libxml2.so.2"),
        "written",
        "{:#?}",
        first.sharing
    );
    // libz.so.1 copied elsewhere and found first through LD_LIBRARY_PATH:
    // a dependency with another identity (and so another address).
    let moved = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(LIB_DIR).join("libz.so.1"),
        moved.path().join("libz.so.1"),
    )
    .unwrap();
    let second = child(
        "xml2",
        &xml,
        &Run {
            loader: "mmld",
            dir: Some(dir.path()),
            verify: true,
            ld_path: Some(moved.path()),
            ..Run::default()
        },
    );
    let libz = second.object("libz.so.1");
    assert!(
        libz["path"]
            .as_str()
            .unwrap()
            .starts_with(moved.path().to_str().unwrap()),
        "libz came from the moved copy: {libz}"
    );
    assert_not_hit(&second, "libxml2.so.2", &reference, "moved dependency");
}

/// `mmld maps --json` with the cache: the report, as the CLI (another
/// executable than this test binary) loads the library.
fn cli_maps(path: &Path, dir: &Path, call: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_mmld"))
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("MMLD_SHARE_RELOCATIONS")
        .args(["maps", "--json", "--share-relocations"])
        .arg(dir)
        .arg("--verify-shared-relocations")
        .arg("--call")
        .args(call)
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mmld maps: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn cli_outcome(v: &Value, file: &str) -> String {
    v["relocation_sharing"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"].as_str().is_some_and(|p| p.ends_with(file)))
        .and_then(|s| s["outcome"].as_str())
        .unwrap_or("?")
        .to_string()
}

#[test]
fn a_different_executable_falls_back_and_maps_marks_cache_pages() {
    let Some(path) = system_lib("sqlite") else {
        return;
    };
    let version = glibc("sqlite", &path)
        .result
        .rsplit(" / ")
        .next()
        .unwrap()
        .to_string();
    let dir = cache_dir();
    let first = mmld("sqlite", &path, Some(dir.path()), false);
    assert_eq!(first.outcome("libsqlite3.so.0"), "written");
    let call = ["sqlite3_libversion", "--ret", "str"];
    // The executable can interpose symbols: another one never takes this
    // test binary's pages.
    let other = cli_maps(&path, dir.path(), &call);
    let outcome = cli_outcome(&other, "libsqlite3.so.0");
    assert!(outcome == "fallback" || outcome == "written", "{other}");
    assert_eq!(other["called"], format!("sqlite3_libversion() = {version}"));
    // The CLI's own cache now serves the CLI, and maps marks those pages.
    let again = cli_maps(&path, dir.path(), &call);
    assert_eq!(cli_outcome(&again, "libsqlite3.so.0"), "hit", "{again}");
    assert_eq!(again["called"], format!("sqlite3_libversion() = {version}"));
    let rows: Vec<&Value> = again["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| {
            o["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("libsqlite3.so.0"))
        })
        .flat_map(|o| o["rows"].as_array().unwrap())
        .collect();
    let from_cache: Vec<&&Value> = rows
        .iter()
        .filter(|r| r["from_relocation_cache"] == true)
        .collect();
    assert!(
        !from_cache.is_empty(),
        "maps marks the cache's pages: {rows:#?}"
    );
    let canonical_dir = std::fs::canonicalize(dir.path()).unwrap();
    for r in from_cache {
        assert!(
            r["mapped_file"]
                .as_str()
                .unwrap()
                .starts_with(canonical_dir.to_str().unwrap()),
            "{r}"
        );
    }
}

/// A cache written normally, then made hostile by `spoil`: the next load
/// must not use it, and must still work.
fn hostile(case: &str, dir_is_hostile: bool, spoil: impl FnOnce(&Path, &Path)) {
    let Some(path) = system_lib("sqlite") else {
        return;
    };
    let reference = glibc("sqlite", &path);
    let dir = cache_dir();
    let first = mmld("sqlite", &path, Some(dir.path()), false);
    assert_eq!(first.outcome("libsqlite3.so.0"), "written", "{case}");
    let file = PathBuf::from(
        first.object("libsqlite3.so.0")["cache_file"]
            .as_str()
            .unwrap_or_else(|| panic!("{case}: a written object names its cache file")),
    );
    assert!(file.starts_with(dir.path()), "{case}: {}", file.display());
    spoil(dir.path(), &file);
    let second = mmld("sqlite", &path, Some(dir.path()), false);
    assert_not_hit(&second, "libsqlite3.so.0", &reference, case);
    if dir_is_hostile {
        // Nothing is written into a directory that is not trusted either.
        assert_eq!(second.outcome("libsqlite3.so.0"), "fallback", "{case}");
        let why = second.object("libsqlite3.so.0")["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            why.contains("cache directory"),
            "{case}: the reason names the directory: {why}"
        );
    }
    // Verification mode does not turn a refused cache into an error either.
    let third = mmld("sqlite", &path, Some(dir.path()), true);
    assert_eq!(third.result, reference.result, "{case}: verified load");
    // Give the directory back, so that it can be removed.
    let _ = std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700));
}

#[test]
fn a_cache_directory_owned_by_another_user_is_ignored() {
    hostile("other owner", true, |dir, _| {
        std::os::unix::fs::chown(dir, Some(65534), Some(65534)).unwrap();
    });
}

#[test]
fn a_group_writable_cache_directory_is_ignored() {
    hostile("group-writable", true, |dir, _| {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o770)).unwrap();
    });
}

#[test]
fn a_symlinked_cache_file_is_ignored() {
    hostile("symlinked file", false, |dir, file| {
        let target = dir.join("moved-aside");
        std::fs::rename(file, &target).unwrap();
        std::os::unix::fs::symlink(&target, file).unwrap();
    });
}

#[test]
fn a_truncated_cache_file_is_ignored() {
    hostile("truncated file", false, |_, file| {
        let len = std::fs::metadata(file).unwrap().len();
        let f = std::fs::File::options().write(true).open(file).unwrap();
        f.set_len(len / 2).unwrap();
    });
}

#[test]
fn a_corrupted_cache_file_is_ignored() {
    hostile("corrupted file", false, |_, file| {
        let mut bytes = std::fs::read(file).unwrap();
        // The header and the table of what each page depends on.
        for b in bytes.iter_mut().take(4096).skip(8) {
            *b ^= 0x5a;
        }
        std::fs::write(file, &bytes).unwrap();
    });
}

#[test]
fn share_shows_llvm_relro_as_one_physical_copy() {
    let Some(path) = system_lib("llvm") else {
        return;
    };
    let dir = cache_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_mmld"))
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("MMLD_SHARE_RELOCATIONS")
        .args(["share", "--json", "--procs", "4", "--share-relocations"])
        .arg(dir.path())
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mmld share: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sharing = &report["relocation_sharing"];
    for worker in sharing["workers"].as_array().unwrap() {
        let llvm = worker
            .as_array()
            .unwrap()
            .iter()
            .find(|s| {
                s["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("libLLVM-15.so.1"))
            })
            .unwrap();
        assert_eq!(llvm["outcome"], "hit", "every measured worker hits: {llvm}");
    }
    let relro: Vec<&Value> = report["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["object"] == "libLLVM-15.so.1" && s["role"] == "RELRO")
        .collect();
    assert_eq!(relro.len(), 1, "{:#?}", report["segments"]);
    let row = relro[0];
    let resident: Vec<u64> = row["resident_pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let per = *resident.iter().max().unwrap();
    assert!(per > 0, "libLLVM's RELRO is resident: {row}");
    let max_of = |k: &str| -> u64 {
        sharing[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .max()
            .unwrap()
    };
    let normal_per = max_of("normal_relro_resident_pages");
    assert!(
        normal_per > 1000,
        "a normal load relocates libLLVM's RELRO: {sharing}"
    );
    if report["privileged"] == true {
        let physical = row["physical_pages"].as_u64().unwrap();
        // One copy, not four: only the few pages that depend on per-process
        // values (host objects, TLS, IFUNC) are one per worker.
        assert!(
            physical < per + per / 2,
            "RELRO: {physical} physical pages behind {per} resident per worker: {row}"
        );
        assert_eq!(
            row["max_sharers"], 4,
            "the cache's pages are shared by all four: {row}"
        );
        let normal = sharing["normal_relro_physical_pages"].as_u64().unwrap();
        assert!(
            normal >= 4 * normal_per - normal_per / 10,
            "loaded normally, four copies: {normal} physical behind {normal_per} per worker"
        );
    } else {
        eprintln!("not privileged: physical pages not checked, Private_Dirty only");
    }
    let dirty = |k: &str| -> u64 {
        sharing[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum()
    };
    assert!(
        dirty("private_dirty_kib") < dirty("normal_private_dirty_kib"),
        "the cache saves private dirty memory: {sharing}"
    );
}

#[test]
fn verification_fails_loudly_on_a_changed_cache_page() {
    let Some(path) = system_lib("sqlite") else {
        return;
    };
    let dir = cache_dir();
    let first = mmld("sqlite", &path, Some(dir.path()), false);
    assert_eq!(first.outcome("libsqlite3.so.0"), "written");
    let file = PathBuf::from(
        first.object("libsqlite3.so.0")["cache_file"]
            .as_str()
            .unwrap(),
    );
    // The last page of the file is a page image (the header comes first):
    // the header's checksum does not cover it, so only verification can
    // tell it from the page a full relocation writes.
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    assert!(n >= 2 * 4096, "a header page and at least one image");
    for b in &mut bytes[n - 4096..] {
        *b ^= 0xff;
    }
    std::fs::write(&file, &bytes).unwrap();
    let failed = child(
        "sqlite",
        &path,
        &Run {
            loader: "mmld",
            dir: Some(dir.path()),
            verify: true,
            expect_error: true,
            ..Run::default()
        },
    );
    assert!(
        failed.result.contains("shared relocations differ"),
        "verification names the difference: {}",
        failed.result
    );
}
