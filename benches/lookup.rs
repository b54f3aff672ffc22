//! Symbol lookup on a loaded library, hit and miss: `Library::get` against
//! `dlsym` on a handle, in the same run.
//!
//! ```sh
//! cargo bench --bench lookup
//! ```
//!
//! Groups are `lookup-<lib>-<hit|miss>-<input>`, each with an `mmld` and a
//! `glibc` side. Two kinds of input, each the same for both sides:
//!
//! - `str`: both start from a `&str`. mmld takes it as it is; glibc's side
//!   builds the `CString` that `dlsym` needs on every call (what
//!   `libloading` does for a name without a trailing NUL), so the
//!   allocation is part of its time.
//! - `cstr`: both get the same pre-built `&CStr` (no allocation on either
//!   side; mmld accepts `&CStr` names).
//!
//! A miss on both sides searches the library and its dependencies (for
//! these libraries: libc, and libm for libsqlite3) and fails. glibc's
//! `dlsym` records an error string for `dlerror` (not fetched here); mmld
//! returns an `Err` (dropped).
//!
//! mmld's figures are for a library that has built its scope index (one
//! hash and one probe per lookup, hit or miss): it does after about half
//! as many lookups as its scope has symbols, and the bench says after how
//! many. The lookups before that walk the scope object by object, as
//! `dlsym` does (about 35 ns for a hit, 90 ns for a miss here).
//!
//! Then the three loaders (mmld, glibc, dlopen-rs 0.8) in fresh processes
//! (dlopen-rs cannot share this process, see `common/peers.rs`):
//! `MMLD_LOOKUP_ROUNDS` rounds (default 7) of one process per loader in
//! rotating order; each loads the library, does 20,000 hits and 20,000
//! misses as warm-up (mmld's scope index is built by then), then 101 rounds
//! of 1,000 hits and 1,000 misses and reports the median ns per lookup.
//! Each loader gets the name in the form its API takes, prepared outside
//! the loop (mmld and dlopen-rs `&str`, glibc `&CStr`). Ratios to glibc are
//! taken within each round; the table is saved to
//! `target/mmld-bench/lookup3.md`.
//!
//! mmld loads each library first, then glibc loads its own copy (mmld would
//! otherwise reuse the host's copy and measure `dlsym`); the bench checks
//! that mmld mapped it.

mod common;

use std::ffi::{CStr, CString, c_void};
use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkGroup, Criterion, measurement::WallTime};

use common::{canonical, cstring, system_lib, test_lib};

struct Case {
    label: &'static str,
    path: std::path::PathBuf,
    hit: &'static str,
}

const MISS: &str = "mmld_bench_no_such_symbol";

fn cases() -> Vec<Case> {
    let mut v = vec![Case {
        label: "libdemo",
        path: test_lib("libdemo.so"),
        hit: "demo_format",
    }];
    match system_lib("libsqlite3.so.0") {
        Some(path) => v.push(Case {
            label: "libsqlite3",
            path,
            hit: "sqlite3_open_v2",
        }),
        None => eprintln!("lookup: libsqlite3.so.0 is not installed; skipped"),
    }
    v
}

fn bench_pair(
    g: &mut BenchmarkGroup<'_, WallTime>,
    lib: &mmld::Library,
    handle: *mut c_void,
    name: &'static str,
    input: &str,
    expect_found: bool,
) {
    match input {
        "str" => {
            g.bench_function("mmld", |b| {
                b.iter(|| {
                    // SAFETY: the address is only passed to black_box.
                    let r = unsafe { lib.get::<*const c_void>(black_box(name)) };
                    debug_assert_eq!(r.is_ok(), expect_found);
                    black_box(r.map(|s| *s).ok())
                })
            });
            g.bench_function("glibc", |b| {
                b.iter(|| {
                    let c = CString::new(black_box(name)).unwrap();
                    // SAFETY: live handle, NUL-terminated name.
                    let p = unsafe { libc::dlsym(handle, c.as_ptr()) };
                    debug_assert_eq!(!p.is_null(), expect_found);
                    black_box(p)
                })
            });
        }
        _ => {
            let owned = CString::new(name).unwrap();
            let c: &CStr = &owned;
            g.bench_function("mmld", |b| {
                b.iter(|| {
                    // SAFETY: the address is only passed to black_box.
                    let r = unsafe { lib.get::<*const c_void>(black_box(c)) };
                    debug_assert_eq!(r.is_ok(), expect_found);
                    black_box(r.map(|s| *s).ok())
                })
            });
            g.bench_function("glibc", |b| {
                b.iter(|| {
                    // SAFETY: live handle, NUL-terminated name.
                    let p = unsafe { libc::dlsym(handle, black_box(c).as_ptr()) };
                    debug_assert_eq!(!p.is_null(), expect_found);
                    black_box(p)
                })
            });
        }
    }
}

fn lookup(c: &mut Criterion) {
    for case in cases() {
        // mmld first, so that it maps its own copy.
        // SAFETY: loading runs the library's constructors.
        let lib = unsafe { mmld::Library::open(&case.path) }
            .unwrap_or_else(|e| panic!("mmld cannot open {}: {e}", case.path.display()));
        assert!(
            lib.objects()
                .iter()
                .any(|o| canonical(&o.path) == canonical(&case.path)),
            "mmld reused a host copy of {}",
            case.path.display()
        );
        let handle = common::glibc_open(&cstring(&case.path), libc::RTLD_NOW | libc::RTLD_LOCAL);

        // mmld answers from its scope index once a library has served
        // about as many lookups as building the index costs (half the
        // scope's symbol count); criterion's warm-up would get there too,
        // but the bench says so and checks it.
        let mut before_index = 0usize;
        while lib.indexed_names().is_none() && before_index < 10_000_000 {
            // SAFETY: as in bench_pair.
            let _ = unsafe { lib.get::<*const c_void>(case.hit) };
            before_index += 1;
        }
        let names = lib
            .indexed_names()
            .expect("mmld builds its scope index after enough lookups");
        eprintln!(
            "lookup: {}: scope index of {names} names built after {before_index} lookups",
            case.label
        );

        // Both sides agree on what exists.
        // SAFETY: as in bench_pair.
        assert!(unsafe { lib.get::<*const c_void>(case.hit) }.is_ok());
        assert!(unsafe { lib.get::<*const c_void>(MISS) }.is_err());

        for (kind, name, found) in [("hit", case.hit, true), ("miss", MISS, false)] {
            for input in ["str", "cstr"] {
                let mut g = c.benchmark_group(format!("lookup-{}-{kind}-{input}", case.label));
                bench_pair(&mut g, &lib, handle, name, input, found);
                g.finish();
            }
        }
        // SAFETY: balances the dlopen above; nothing from it is used after.
        unsafe { libc::dlclose(handle) };
        drop(lib);
    }
}

/// The three loaders in fresh processes (markdown).
fn three_loaders() -> String {
    use common::peers::{Loader, Workers, cell_ns, cell_ratio, verdict};
    use std::fmt::Write as _;
    let rounds = common::env_usize("MMLD_LOOKUP_ROUNDS", 7);
    let w = Workers::new();
    let mut md = format!(
        "Machine: {}\n\nCommand: `cargo bench --bench lookup` ({rounds} rounds, one fresh process per loader \
         each, order rotating; each process: 20,000 + 20,000 warm-up lookups, then the median of 101 rounds \
         of 1,000; ratios to glibc within each round)\n\n",
        common::machine_line()
    );
    if let Some(e) = w.dlopen_rs_error() {
        let _ = writeln!(md, "dlopen-rs was not measured: {e}\n");
    }
    md.push_str(
        "| lookup | mmld | glibc | dlopen-rs | mmld/glibc (p25–p75) | dlopen-rs/glibc (p25–p75) | target | |\n\
         |---|---:|---:|---:|---:|---:|---|---|\n",
    );
    for case in cases() {
        let p = case.path.to_str().expect("UTF-8 path");
        let r = w.rounds(rounds, &["lookup", "101", p, case.hit, MISS], None);
        if r.rounds
            .iter()
            .filter_map(|x| x.get(&Loader::Mmld))
            .any(|f| f.get("indexed").map(String::as_str) != Some("1"))
        {
            eprintln!(
                "lookup: {}: mmld's scope index was not built after the warm-up",
                case.label
            );
        }
        for (kind, key) in [("hit", "hit_ns"), ("miss", "miss_ns")] {
            let _ = writeln!(
                md,
                "| {} {kind} | {} | {} | {} | {} | {} | ≤ {} | {} |",
                case.label,
                cell_ns(&r, Loader::Mmld, key),
                cell_ns(&r, Loader::Glibc, key),
                cell_ns(&r, Loader::DlopenRs, key),
                cell_ratio(&r, Loader::Mmld, key),
                cell_ratio(&r, Loader::DlopenRs, key),
                common::LOOKUP_TARGET,
                verdict(&r, key, Some(common::LOOKUP_TARGET)),
            );
        }
    }
    md
}

fn main() {
    common::workers::dispatch();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    lookup(&mut c);
    c.final_summary();
    if common::bench_mode() {
        common::table::print("symbol lookup", &["lookup-"]);
        let md = three_loaders();
        println!("\n### symbol lookup, three loaders in fresh processes\n\n{md}");
        common::save_markdown("lookup3.md", &md);
    }
}
