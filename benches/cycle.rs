//! Load + get one symbol + unload, repeated: mmld against glibc's
//! `dlopen(RTLD_NOW | RTLD_LOCAL)` + `dlsym` + `dlclose`, in the same run,
//! and then the three loaders (mmld, glibc, dlopen-rs 0.8) in fresh
//! processes.
//!
//! ```sh
//! cargo bench --bench cycle            # all three libraries
//! cargo bench --bench cycle -- libz    # one
//! MMLD_CYCLE_ROUNDS=9 MMLD_CYCLE_N=500 cargo bench --bench cycle
//! ```
//!
//! Each group `cycle-<lib>` has an `mmld` and a `glibc` side; after the
//! groups run, a markdown table with both medians and mmld/glibc is printed.
//!
//! dlopen-rs cannot share this process (it replaces glibc's `dlopen`; see
//! `common/peers.rs`), so the three-loader table comes from whole
//! processes: `MMLD_CYCLE_ROUNDS` rounds (default 7), each one process per
//! loader in rotating order, each process running `MMLD_CYCLE_N` cycles
//! (default 400) through the shared worker code (`common/proto.rs`) and
//! printing the median cycle. Ratios to glibc are taken within each round.
//! A process whose library is still mapped after its last cycle says so
//! (then it measured a reference count, not a load). The table is saved to
//! `target/mmld-bench/cycle3.md`.
//!
//! Fairness: both sides start from the same `&str` path and `&str` symbol
//! name each iteration. mmld takes them as they are; glibc's side builds the
//! two `CString`s it needs inside the timed loop (as `libloading` does for a
//! name without a trailing NUL). That is two small allocations, tens of
//! nanoseconds against a cycle of tens of microseconds.
//!
//! A cycle only measures a load if the library is really unloaded at the end
//! of each iteration: the bench checks before and after each group that
//! neither loader still has it mapped, and says so if one does (then that
//! side measured a reference-count bump, not a load).
//!
//! Host dependencies: this binary links libm.so.6 (criterion uses it), so
//! libsqlite3's libm is already in the process for both sides and neither
//! cycles it. (mmld binds glibc-family libraries from the host, asking glibc
//! to load one the host lacks, and leaves it loaded after the unload; the
//! bench prints any object that stays in the host after its sanity load, as
//! both sides then run with it resident.)

mod common;

use std::ffi::{CString, c_void};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::Criterion;

use common::{canonical, glibc_has_loaded, mapped_in_process, system_lib, test_lib};

fn libraries() -> Vec<(&'static str, PathBuf, &'static str)> {
    let mut v = vec![("libdemo", test_lib("libdemo.so"), "add")];
    for (label, file, sym) in [
        ("libz", "libz.so.1", "zlibVersion"),
        ("libsqlite3", "libsqlite3.so.0", "sqlite3_libversion"),
    ] {
        match system_lib(file) {
            Some(p) => v.push((label, p, sym)),
            None => eprintln!("cycle: {file} is not installed; skipped"),
        }
    }
    v
}

/// Is the library still in the process after a cycle? Reports it.
fn check_unloaded(when: &str, label: &str, path: &std::path::Path) -> bool {
    let mapped = mapped_in_process(path);
    let glibc = glibc_has_loaded(path);
    if mapped || glibc {
        eprintln!(
            "cycle-{label}: {when}: still in the process (mapped: {mapped}, known to glibc: {glibc}); \
             the cycle measures a reference count, not a load"
        );
    }
    !mapped && !glibc
}

fn cycle(c: &mut Criterion) {
    for (label, path, sym) in libraries() {
        let path_str: &str = path.to_str().expect("UTF-8 path");
        check_unloaded("before", label, &path);
        let host_before: Vec<String> = common::glibc_objects()
            .into_iter()
            .map(|o| o.path)
            .collect();

        // mmld must map the library itself (not reuse a host copy).
        {
            // SAFETY: loading a system library runs its constructors.
            let lib = unsafe { mmld::Library::open(path_str) }
                .unwrap_or_else(|e| panic!("mmld cannot open {path_str}: {e}"));
            let mapped_by_mmld = lib
                .objects()
                .iter()
                .any(|o| canonical(&o.path) == canonical(&path));
            assert!(mapped_by_mmld, "mmld reused a host copy of {path_str}");
        }
        for o in common::glibc_objects() {
            if !host_before.contains(&o.path) {
                eprintln!(
                    "cycle-{label}: {} stays loaded in the host after mmld's unload; \
                     both sides run with it resident",
                    o.path
                );
            }
        }

        let mut g = c.benchmark_group(format!("cycle-{label}"));
        g.bench_function("mmld", |b| {
            b.iter(|| {
                // SAFETY: as above; the symbol is only read as an address.
                let lib = unsafe { mmld::Library::open(black_box(path_str)) }.unwrap();
                let s = unsafe { lib.get::<*const c_void>(black_box(sym)) }.unwrap();
                black_box(*s);
                drop(lib);
            })
        });
        check_unloaded("after mmld", label, &path);
        g.bench_function("glibc", |b| {
            b.iter(|| {
                let p = CString::new(black_box(path_str)).unwrap();
                let h = common::glibc_open(&p, libc::RTLD_NOW | libc::RTLD_LOCAL);
                let n = CString::new(black_box(sym)).unwrap();
                // SAFETY: `h` is a live handle, `n` NUL-terminated.
                let s = unsafe { libc::dlsym(h, n.as_ptr()) };
                assert!(!s.is_null());
                black_box(s);
                // SAFETY: balances the dlopen above.
                unsafe { libc::dlclose(h) };
            })
        });
        check_unloaded("after glibc", label, &path);
        g.finish();
    }
}

/// The three loaders in fresh processes (markdown).
fn three_loaders() -> String {
    use common::peers::{Loader, Workers, cell_ns, cell_ratio, verdict};
    use std::fmt::Write as _;
    let rounds = common::env_usize("MMLD_CYCLE_ROUNDS", 7);
    let n = common::env_usize("MMLD_CYCLE_N", 400).to_string();
    let filters = common::filters();
    let w = Workers::new();
    let mut md = format!(
        "Machine: {}\n\nCommand: `cargo bench --bench cycle` ({rounds} rounds, one fresh process per loader \
         each, order rotating; each process runs {n} cycles of open + get + close and reports its median cycle; \
         ratios to glibc within each round)\n\n",
        common::machine_line()
    );
    if let Some(e) = w.dlopen_rs_error() {
        let _ = writeln!(md, "dlopen-rs was not measured: {e}\n");
    }
    md.push_str(
        "| library | mmld | glibc | dlopen-rs | mmld/glibc (p25–p75) | dlopen-rs/glibc (p25–p75) | target | |\n\
         |---|---:|---:|---:|---:|---:|---|---|\n",
    );
    for (label, path, sym) in libraries() {
        if !filters.is_empty() && !filters.iter().any(|f| label.contains(f.as_str())) {
            continue;
        }
        let p = path.to_str().expect("UTF-8 path");
        let r = w.rounds(rounds, &["cycle", &n, p, sym], None);
        let kept: Vec<&str> = w
            .loaders()
            .into_iter()
            .filter(|l| r.any_nonzero(*l, "still_loaded"))
            .map(Loader::label)
            .collect();
        let t = common::cycle_target(label);
        let _ = writeln!(
            md,
            "| {label}{} | {} | {} | {} | {} | {} | {} | {} |",
            if kept.is_empty() {
                String::new()
            } else {
                format!(" (still mapped after close: {})", kept.join(", "))
            },
            cell_ns(&r, Loader::Mmld, "median_ns"),
            cell_ns(&r, Loader::Glibc, "median_ns"),
            cell_ns(&r, Loader::DlopenRs, "median_ns"),
            cell_ratio(&r, Loader::Mmld, "median_ns"),
            cell_ratio(&r, Loader::DlopenRs, "median_ns"),
            t.map(|t| format!("≤ {t}")).unwrap_or_else(|| "—".into()),
            verdict(&r, "median_ns", t),
        );
    }
    md
}

fn main() {
    common::workers::dispatch();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    cycle(&mut c);
    c.final_summary();
    if common::bench_mode() {
        common::table::print("load + get + unload cycle", &["cycle-"]);
        let md = three_loaders();
        println!("\n### load + get + unload cycle, three loaders in fresh processes\n\n{md}");
        common::save_markdown("cycle3.md", &md);
    }
}
