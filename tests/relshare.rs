//! Shared relocations (issue 15) through the library API, each load in a
//! fresh process (this test binary re-run as a child): the first process
//! writes the cache, the second maps it, verification mode compares it
//! with a full relocation, and every kind of bad cache falls back to a
//! normal load. The big libraries and the CLI are tested in `cli.rs`'s
//! issue-15 tests.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::testlib;
use mmld::{ErrorKind, OpenOptions, SharingOutcome};

const LIB: &str = "RELSHARE_CHILD_LIB";
const DIR: &str = "RELSHARE_CHILD_DIR";
const VERIFY: &str = "RELSHARE_CHILD_VERIFY";
const BLOCK: &str = "RELSHARE_CHILD_BLOCK";

/// The child: load the library, report every object's outcome and what
/// its functions return.
#[test]
fn relshare_child() {
    let Some(lib) = std::env::var_os(LIB) else {
        return;
    };
    if let Some(at) = std::env::var(BLOCK)
        .ok()
        .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
    {
        // Something else already lives at the stable address.
        // SAFETY: a new anonymous page; NOREPLACE never replaces a mapping.
        let p = unsafe {
            libc::mmap(
                at as *mut libc::c_void,
                4096,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        assert_eq!(p as u64, at, "reserving the stable address");
    }
    let mut options = OpenOptions::new();
    if let Some(dir) = std::env::var_os(DIR) {
        options.share_relocations(dir);
    }
    options.verify_shared_relocations(std::env::var_os(VERIFY).is_some());
    // SAFETY: the fixtures' constructors are sound.
    let lib = match unsafe { options.open(&lib) } {
        Ok(lib) => lib,
        Err(e) => {
            match e.kind() {
                ErrorKind::SharedRelocationsDiffer {
                    page_offset,
                    byte_offset,
                    ..
                } => {
                    println!("RELSHARE DIFFER {page_offset:#x} {byte_offset:#x}")
                }
                _ => println!("RELSHARE ERROR {e}"),
            }
            return;
        }
    };
    for s in lib.relocation_sharing() {
        let (kind, why) = match &s.outcome {
            SharingOutcome::Off => ("off", String::new()),
            SharingOutcome::Hit => ("hit", String::new()),
            SharingOutcome::Written => ("written", String::new()),
            SharingOutcome::Fallback(why) => ("fallback", why.clone()),
            _ => ("other", String::new()),
        };
        println!(
            "RELSHARE OUTCOME {} {kind} {} {} {:#x} {why}",
            s.path.file_name().unwrap().to_string_lossy(),
            s.pages_from_cache,
            s.pages_private,
            s.address
        );
    }
    for line in results(&lib) {
        println!("RELSHARE RESULT {line}");
    }
}

/// What the fixture's functions return, through relocated pointers.
fn results(lib: &mmld::Library) -> Vec<String> {
    use std::ffi::{CStr, c_char};
    let mut out = Vec::new();
    // SAFETY (all): the fixtures' signatures.
    if let Ok(word) = unsafe { lib.get::<extern "C" fn(i64) -> *const c_char>("demo_word") } {
        let apply =
            unsafe { lib.get::<extern "C" fn(i64, i64, i64) -> i64>("demo_apply") }.unwrap();
        for i in 0..4 {
            out.push(
                unsafe { CStr::from_ptr(word(i)) }
                    .to_string_lossy()
                    .into_owned(),
            );
            out.push(apply(i, 7, 5).to_string());
        }
    }
    if let Ok(catch) = unsafe { lib.get::<extern "C" fn(i32) -> i32>("cxx_catch") } {
        let name =
            unsafe { lib.get::<extern "C" fn() -> *const c_char>("cxx_global_name") }.unwrap();
        let tls = unsafe { lib.get::<extern "C" fn(i32) -> i32>("cxx_thread_append") }.unwrap();
        out.push(catch(3).to_string());
        out.push(catch(-1).to_string());
        out.push(
            unsafe { CStr::from_ptr(name()) }
                .to_string_lossy()
                .into_owned(),
        );
        out.push(tls(3).to_string());
        out.push(tls(4).to_string());
    }
    if let Ok(get) = unsafe { lib.get::<extern "C" fn() -> i64>("desc_tls_get") } {
        let report = unsafe { lib.get::<extern "C" fn() -> *const c_char>("desc_report") }.unwrap();
        out.push(get().to_string());
        out.push(
            unsafe { CStr::from_ptr(report()) }
                .to_string_lossy()
                .into_owned(),
        );
    }
    if let Ok(sum) = unsafe { lib.get::<extern "C" fn() -> i32>("diamond_sum") } {
        out.push(format!("diamond_sum {}", sum()));
    }
    for name in ["call_ifunc_value", "call_ifunc_ptr", "call_local_ifunc"] {
        if let Ok(f) = unsafe { lib.get::<extern "C" fn() -> i64>(name) } {
            out.push(format!("{name} {}", f()));
        }
    }
    out
}

#[derive(Debug, Default)]
struct Run {
    /// Per object: file name, outcome, pages from cache, pages private,
    /// address, reason.
    outcomes: Vec<(String, String, usize, usize, String, String)>,
    results: Vec<String>,
    differ: Option<(String, String)>,
    error: Option<String>,
}

fn run(lib: &Path, dir: Option<&Path>, verify: bool, env: &[(&str, &Path)]) -> Run {
    let cmd = Command::new(std::env::current_exe().unwrap());
    run_with(cmd, lib, dir, verify, env)
}

fn run_with(
    mut cmd: Command,
    lib: &Path,
    dir: Option<&Path>,
    verify: bool,
    env: &[(&str, &Path)],
) -> Run {
    cmd.args([
        "relshare_child",
        "--exact",
        "--test-threads=1",
        "--nocapture",
    ])
    .env(LIB, lib)
    .env_remove("MMLD_SHARE_RELOCATIONS")
    .env_remove("MMLD_SHARE_RELOCATIONS_VERIFY");
    if let Some(d) = dir {
        cmd.env(DIR, d);
    }
    if verify {
        cmd.env(VERIFY, "1");
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut run = Run::default();
    for line in stdout.lines() {
        // libtest prints "test relshare_child ... " before the first line.
        let Some(at) = line.find("RELSHARE ") else {
            continue;
        };
        let rest = &line[at + "RELSHARE ".len()..];
        let (tag, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        match tag {
            "OUTCOME" => {
                let f: Vec<&str> = rest.splitn(6, ' ').collect();
                run.outcomes.push((
                    f[0].into(),
                    f[1].into(),
                    f[2].parse().unwrap(),
                    f[3].parse().unwrap(),
                    f[4].into(),
                    f.get(5).unwrap_or(&"").to_string(),
                ));
            }
            "RESULT" => run.results.push(rest.into()),
            "DIFFER" => {
                let (p, b) = rest.split_once(' ').unwrap();
                run.differ = Some((p.into(), b.into()));
            }
            "ERROR" => run.error = Some(rest.into()),
            _ => {}
        }
    }
    assert!(run.error.is_none(), "load failed: {:?}", run.error);
    run
}

fn cache_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    d
}

fn root(run: &Run) -> &(String, String, usize, usize, String, String) {
    run.outcomes.first().expect("the child reported the root")
}

fn cache_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "relcache"))
        .collect();
    v.sort();
    v
}

/// First process writes, second maps the cache, third verifies it, and
/// all of them compute what a load without the feature computes.
fn second_process_hits(lib: &str) {
    let path = testlib(lib);
    let dir = cache_dir();
    let plain = run(&path, None, false, &[]);
    assert!(
        plain.outcomes.iter().all(|o| o.1 == "off"),
        "{:?}",
        plain.outcomes
    );
    assert!(!plain.results.is_empty());
    let first = run(&path, Some(dir.path()), false, &[]);
    assert!(
        first.outcomes.iter().all(|o| o.1 == "written"),
        "{:?}",
        first.outcomes
    );
    let second = run(&path, Some(dir.path()), false, &[]);
    for o in &second.outcomes {
        assert_eq!(o.1, "hit", "{o:?}");
    }
    assert!(
        root(&second).2 > 0,
        "pages from the cache: {:?}",
        root(&second)
    );
    // The same stable address in both processes.
    assert_eq!(root(&first).4, root(&second).4);
    let verified = run(&path, Some(dir.path()), true, &[]);
    assert!(
        verified.outcomes.iter().all(|o| o.1 == "hit"),
        "{:?}",
        verified.outcomes
    );
    assert_eq!(plain.results, first.results);
    assert_eq!(plain.results, second.results);
    assert_eq!(plain.results, verified.results);
}

#[test]
fn a_second_process_maps_the_relocated_pages_of_libdemo() {
    second_process_hits("libdemo.so");
}

#[test]
fn a_second_process_maps_the_relocated_pages_of_a_relr_object() {
    second_process_hits("libdemo_relr.so");
}

#[test]
fn a_second_process_maps_the_relocated_pages_of_a_cxx_tree() {
    // libcxx.so and libstdc++ (mmld maps both: the test binary has no C++
    // runtime), with TLS, exceptions and symbols bound into the host.
    second_process_hits("libcxx.so");
}

#[test]
fn a_second_process_maps_the_relocated_pages_of_a_tls_descriptor_user() {
    // TLSDESC writes two words per relocation, both per process.
    second_process_hits("libtls_desc.so");
}

#[test]
fn a_second_process_maps_the_relocated_pages_of_an_ifunc_user() {
    // IRELATIVE and symbolic relocations to IFUNCs: resolvers run again.
    second_process_hits("libifunc.so");
}

#[test]
fn an_address_in_use_falls_back_to_a_normal_load() {
    let path = testlib("libdemo.so");
    let dir = cache_dir();
    let first = run(&path, Some(dir.path()), false, &[]);
    let stable = root(&first).4.clone();
    let blocker = std::ffi::OsString::from(&stable);
    let blocked = run(
        &path,
        Some(dir.path()),
        false,
        &[(BLOCK, Path::new(&blocker))],
    );
    let r = root(&blocked);
    assert_eq!(r.1, "fallback");
    assert!(
        r.5.contains(&format!(
            "address {stable} collides with an existing mapping"
        )),
        "{r:?}"
    );
    assert_ne!(r.4, stable);
    assert_eq!(first.results, blocked.results);
}

#[test]
fn a_moved_dependency_falls_back_for_the_objects_that_bind_to_it() {
    // The diamond tree in a private directory: libdtop needs libdleft and
    // libdright (in lib/), which both need libdbase; liborderlog beside.
    let tree = tempfile::tempdir().unwrap();
    let top_dir = tree.path().join("d");
    std::fs::create_dir_all(top_dir.join("lib")).unwrap();
    let copy = |from: &str, to: &Path| std::fs::copy(testlib(from), to).unwrap();
    copy("diamond/libdtop.so", &top_dir.join("libdtop.so"));
    for l in ["libdleft.so", "libdright.so", "libdbase.so"] {
        copy(&format!("diamond/lib/{l}"), &top_dir.join("lib").join(l));
    }
    copy("liborderlog.so", &tree.path().join("liborderlog.so"));
    let top = top_dir.join("libdtop.so");
    let dir = cache_dir();
    let first = run(&top, Some(dir.path()), false, &[]);
    assert!(
        first.outcomes.iter().all(|o| o.1 == "written"),
        "{:?}",
        first.outcomes
    );
    // Replace libdbase by a new file.
    let base = top_dir.join("lib/libdbase.so");
    std::fs::remove_file(&base).unwrap();
    copy("diamond/lib/libdbase.so", &base);
    let moved = run(&top, Some(dir.path()), false, &[]);
    let outcome = |name: &str| {
        moved
            .outcomes
            .iter()
            .find(|o| o.0 == name)
            .cloned()
            .expect(name)
    };
    // A new entry, or (when the file system reuses the freed inode, so the
    // address stays) the old one replaced.
    let b = outcome("libdbase.so");
    assert!(b.1 == "written" || b.5.contains("stale"), "{b:?}");
    for user in ["libdtop.so", "libdleft.so", "libdright.so"] {
        let o = outcome(user);
        assert_eq!(o.1, "fallback", "{o:?}");
        assert!(o.5.contains("lookup scope differs"), "{o:?}");
    }
    let again = run(&top, Some(dir.path()), false, &[]);
    assert!(
        again.outcomes.iter().all(|o| o.1 == "hit"),
        "{:?}",
        again.outcomes
    );
    assert_eq!(first.results, moved.results);
    assert_eq!(first.results, again.results);
    assert!(!first.results.is_empty());
}

#[test]
fn another_executable_falls_back() {
    let path = testlib("libdemo.so");
    let dir = cache_dir();
    assert_eq!(root(&run(&path, Some(dir.path()), false, &[])).1, "written");
    // The same program as another file: it could interpose differently.
    let bin = tempfile::tempdir().unwrap();
    let other = bin.path().join("other-program");
    std::fs::copy(std::env::current_exe().unwrap(), &other).unwrap();
    let r = run_with(Command::new(&other), &path, Some(dir.path()), false, &[]);
    assert_eq!(root(&r).1, "fallback");
    assert!(root(&r).5.contains("another executable"), "{:?}", root(&r));
}

#[test]
fn the_environment_turns_sharing_on() {
    let path = testlib("libdemo.so");
    let dir = cache_dir();
    let first = run(
        &path,
        None,
        false,
        &[("MMLD_SHARE_RELOCATIONS", dir.path())],
    );
    assert_eq!(root(&first).1, "written");
    let second = run(
        &path,
        None,
        false,
        &[("MMLD_SHARE_RELOCATIONS", dir.path())],
    );
    assert_eq!(root(&second).1, "hit");
}

#[test]
fn a_changed_library_falls_back_and_its_entry_is_rewritten() {
    let (_lib_dir, lib) = common::fresh_copy("libdemo.so");
    let dir = cache_dir();
    assert_eq!(root(&run(&lib, Some(dir.path()), false, &[])).1, "written");
    // Rewritten in place (same inode, so the same address): one more
    // byte at the end, which no segment covers.
    let mut f = std::fs::OpenOptions::new().append(true).open(&lib).unwrap();
    std::io::Write::write_all(&mut f, b"\0").unwrap();
    drop(f);
    let changed = run(&lib, Some(dir.path()), false, &[]);
    let r = root(&changed);
    assert_eq!(r.1, "fallback");
    assert!(
        r.5.contains("stale") && r.5.contains("changed") && r.5.contains("rewritten"),
        "{r:?}"
    );
    let again = run(&lib, Some(dir.path()), false, &[]);
    assert_eq!(root(&again).1, "hit");
    assert_eq!(changed.results, again.results);
}

/// Run after a first load wrote the entry, with `spoil` applied to the
/// directory and its entry; the load must fall back, saying `why`.
fn falls_back(spoil: impl Fn(&Path, &Path), why: &str) {
    let path = testlib("libdemo.so");
    let base = cache_dir();
    let dir = base.path().join("cache");
    let first = run(&path, Some(&dir), false, &[]);
    assert_eq!(root(&first).1, "written");
    let entry = cache_files(&dir).into_iter().next().expect("an entry");
    spoil(&dir, &entry);
    let spoiled = run(&path, Some(&dir), false, &[]);
    let r = root(&spoiled);
    assert_eq!(r.1, "fallback", "{r:?}");
    assert!(r.5.contains(why), "expected {why:?} in {r:?}");
    assert_eq!(first.results, spoiled.results);
}

#[test]
fn a_group_writable_directory_is_not_used() {
    falls_back(
        |dir, _| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o770)).unwrap(),
        "group-writable",
    );
}

#[test]
fn a_symlinked_directory_is_not_used() {
    let base = cache_dir();
    let real = base.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = base.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let r = run(&testlib("libdemo.so"), Some(&link), false, &[]);
    assert_eq!(root(&r).1, "fallback");
    assert!(root(&r).5.contains("symbolic link"), "{:?}", root(&r));
}

#[test]
fn a_directory_of_another_user_is_not_used() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return; // Only root can give a directory away.
    }
    falls_back(
        |dir, _| std::os::unix::fs::chown(dir, Some(65534), None).unwrap(),
        "owned by uid 65534",
    );
}

#[test]
fn a_cache_file_of_another_user_is_not_used() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    falls_back(
        |_, entry| std::os::unix::fs::chown(entry, Some(65534), None).unwrap(),
        "owned by uid 65534",
    );
}

#[test]
fn a_symlinked_cache_file_is_not_followed() {
    falls_back(
        |dir, entry| {
            let elsewhere = dir.join("elsewhere");
            std::fs::rename(entry, &elsewhere).unwrap();
            std::os::unix::fs::symlink(&elsewhere, entry).unwrap();
        },
        "symbolic link",
    );
}

#[test]
fn a_truncated_cache_file_is_not_used() {
    falls_back(
        |_, entry| {
            let len = std::fs::metadata(entry).unwrap().len();
            let f = std::fs::OpenOptions::new().write(true).open(entry).unwrap();
            f.set_len(len - 4096).unwrap();
        },
        "truncated",
    );
}

#[test]
fn a_corrupted_cache_header_is_not_used() {
    falls_back(
        |_, entry| {
            let mut bytes = std::fs::read(entry).unwrap();
            bytes[40] ^= 1;
            std::fs::write(entry, bytes).unwrap();
        },
        "corrupt header",
    );
}

#[test]
fn verification_reports_a_cache_page_that_differs() {
    let path = testlib("libdemo.so");
    let dir = cache_dir();
    assert_eq!(root(&run(&path, Some(dir.path()), false, &[])).1, "written");
    let entry = cache_files(dir.path()).into_iter().next().unwrap();
    let mut bytes = std::fs::read(&entry).unwrap();
    // The header length is at bytes 12..16; page images start at the next
    // page boundary. Flip every byte of the first image: no page is all
    // per-process words, so some flipped byte must be compared.
    let header = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let data = header.next_multiple_of(4096);
    for b in &mut bytes[data..data + 4096] {
        *b ^= 0xff;
    }
    std::fs::write(&entry, bytes).unwrap();
    let verified = run(&path, Some(dir.path()), true, &[]);
    let (page, byte) = verified.differ.expect("verification must fail");
    let page = u64::from_str_radix(page.trim_start_matches("0x"), 16).unwrap();
    let byte = u64::from_str_radix(byte.trim_start_matches("0x"), 16).unwrap();
    assert!(byte >= page && byte < page + 4096, "{page:#x} {byte:#x}");
}

#[test]
fn a_secure_mode_process_never_shares() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 || Command::new("setpriv").arg("--help").output().is_err() {
        println!("skipped: making a setuid binary needs root and setpriv");
        return;
    }
    // A setuid-root copy of this test binary run by `nobody`: AT_SECURE.
    let bin_dir = tempfile::Builder::new()
        .prefix("relshare-setuid")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    std::fs::set_permissions(bin_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let setuid = bin_dir.path().join("relshare-setuid");
    std::fs::copy(std::env::current_exe().unwrap(), &setuid).unwrap();
    std::fs::set_permissions(&setuid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let dir = cache_dir();
    let as_nobody = || {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&setuid);
        cmd
    };
    let lib = testlib("libdemo.so");
    // Neither the option nor the environment turns it on.
    let by_option = run_with(as_nobody(), &lib, Some(dir.path()), false, &[]);
    let by_env = run_with(
        as_nobody(),
        &lib,
        None,
        false,
        &[("MMLD_SHARE_RELOCATIONS", dir.path())],
    );
    for r in [&by_option, &by_env] {
        assert_eq!(root(r).1, "off", "{:?}", r.outcomes);
        assert!(!r.results.is_empty());
    }
    assert!(cache_files(dir.path()).is_empty());
    // The same binary, not setuid, does share.
    let plain = run(&lib, Some(dir.path()), false, &[]);
    assert_eq!(root(&plain).1, "written");
}
