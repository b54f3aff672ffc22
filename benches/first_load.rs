//! First load in fresh processes, memory left behind, page faults and
//! syscalls per load: mmld, glibc's `dlopen(RTLD_NOW | RTLD_LOCAL)` +
//! `dlsym`, and dlopen-rs 0.8, interleaved.
//!
//! ```sh
//! cargo bench --bench first_load                 # all libraries, 21 rounds each
//! cargo bench --bench first_load -- libz         # only names containing "libz"
//! MMLD_BENCH_PAIRS=41 cargo bench --bench first_load
//! ```
//!
//! Each measurement is one fresh process running one loader's worker
//! (`benches/common/proto.rs`): mmld's and glibc's are this binary
//! re-executed with `--worker`, dlopen-rs's is
//! `benches/peers/dlopen_rs_runner`, built by the bench (see
//! `common/peers.rs` for why dlopen-rs cannot be linked here). For each
//! library: one discarded warm-up round (page cache), then
//! `MMLD_BENCH_PAIRS` rounds (default 21) of one process per loader, the
//! order rotating. Each worker times only its own open + one symbol lookup
//! (names prepared before the timer, in the form each API takes), counts
//! the page faults of that region (`getrusage`), measures memory after the
//! load, and prints one `MMLD_RUN` line. Ratios to glibc are taken within
//! each round; the table gives their median and quartiles.
//!
//! The workers link no C++ runtime, so libstdc++.so.6 is not in the process
//! before the load (`preloaded=0` says so). Every worker links libm
//! (`proto.rs` says why), so the libm that libsqlite3 and libstdc++ need is
//! the host's for all three loaders. libLLVM-15 runs with
//! `LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu` for all three loaders:
//! dlopen-rs does not search Debian's multiarch directory and otherwise
//! fails on `libz3.so.4`. Other rows run without `LD_LIBRARY_PATH`
//! (`cargo bench` sets one into `target/` and the toolchain, which would add
//! failed `openat` calls to every dependency search).
//!
//! Memory ("what each loader leaves behind after load"): the objects the
//! load brought in are the new entries of `dl_iterate_phdr` (glibc's, or
//! dlopen-rs's in its runner) plus, for mmld, those it mapped itself. From
//! `/proc/self/smaps`, every mapping inside one of their address spans
//! (file pages, `.bss`, gaps) or backed by one of their files is summed:
//! `Private_Dirty` and `Anonymous`. Heap growth is `mallinfo2()`
//! (`uordblks + hblkhd`) after minus before: all three allocate with
//! glibc's malloc.
//!
//! Syscalls: when `strace` is installed, each loader runs once more under
//! `strace -f`; the worker writes a marker (`write(-1, "MMLD_BENCH_BEGIN")`)
//! before open and another after the lookup, and the syscalls between the
//! markers are counted. The whole-process total from `strace -c -f` is
//! shown next to it, with a worker that loads nothing (`none`) as baseline.
//!
//! Results are printed as markdown tables and saved to
//! `target/mmld-bench/first_load.md` (read by `cargo bench --bench report`).

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::peers::{Loader, Rounds, Workers, cell_ns, cell_ratio, ld_library_path, verdict};
use common::proto::{BEGIN, END};
use common::{
    FIRST_LOAD_LIBS, env_usize, first_load_target, fmt_ratio, mapped_in_process, system_lib,
    warm_cache,
};

/// One library: its file name, path, symbol, and the rounds measured.
struct LibResult {
    name: String,
    path: PathBuf,
    symbol: String,
    rounds: Rounds,
}

impl LibResult {
    fn ld_path(&self) -> Option<&'static str> {
        ld_library_path(&self.name)
    }
}

fn measure(w: &Workers, name: &str, path: &Path, symbol: &str, rounds: usize) -> LibResult {
    let p = path.to_str().expect("UTF-8 path");
    let args = ["first", p, symbol];
    let ld = ld_library_path(name);
    // One discarded round: page cache and dentry cache warm for all.
    w.rounds(1, &args, ld);
    let r = w.rounds(rounds, &args, ld);
    let mut line = format!("first_load {name}:");
    for l in w.loaders() {
        let _ = write!(
            line,
            " {} {} ({})",
            l.label(),
            cell_ns(&r, l, "ns"),
            fmt_ratio(r.ratio(l, "ns"))
        );
    }
    eprintln!("{line} ({rounds} rounds)");
    LibResult {
        name: name.to_string(),
        path: path.to_path_buf(),
        symbol: symbol.to_string(),
        rounds: r,
    }
}

fn kib(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.0}")
    } else {
        "—".into()
    }
}

fn time_table(results: &[LibResult]) -> String {
    let mut s = String::new();
    s.push_str(
        "| library | rounds | mmld | glibc | dlopen-rs | mmld/glibc (p25–p75) | dlopen-rs/glibc (p25–p75) | target | |\n\
         |---|---:|---:|---:|---:|---:|---:|---|---|\n",
    );
    for r in results {
        let rr = &r.rounds;
        let pre = [Loader::Mmld, Loader::Glibc, Loader::DlopenRs]
            .iter()
            .any(|l| rr.any_nonzero(*l, "preloaded"));
        let t = first_load_target(&r.name);
        let _ = writeln!(
            s,
            "| {}{}{} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            if r.ld_path().is_some() { " ¹" } else { "" },
            if pre { " (already in process!)" } else { "" },
            rr.count(Loader::Glibc),
            cell_ns(rr, Loader::Mmld, "ns"),
            cell_ns(rr, Loader::Glibc, "ns"),
            cell_ns(rr, Loader::DlopenRs, "ns"),
            cell_ratio(rr, Loader::Mmld, "ns"),
            cell_ratio(rr, Loader::DlopenRs, "ns"),
            t.map(|t| format!("≤ {t}")).unwrap_or_else(|| "—".into()),
            verdict(rr, "ns", t),
        );
    }
    if results.iter().any(|r| r.ld_path().is_some()) {
        s.push_str(
            "\n¹ run with `LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu` for all three loaders: dlopen-rs \
             does not search Debian's multiarch directory and cannot find libLLVM-15's dependencies \
             (`libz3.so.4`) without it.\n",
        );
    }
    s
}

fn memory_table(results: &[LibResult]) -> String {
    let mut s = String::new();
    s.push_str(
        "| library | objects mapped mmld / glibc / dlopen-rs | private dirty KiB mmld / glibc / dlopen-rs | page faults in the load mmld / glibc / dlopen-rs | heap growth KiB mmld / glibc / dlopen-rs | process Δ private dirty KiB mmld / glibc / dlopen-rs | target private dirty ≤ glibc |\n\
         |---|---:|---:|---:|---:|---:|---|\n",
    );
    for r in results {
        let rr = &r.rounds;
        let three = |k: &str, scale: f64| {
            [Loader::Mmld, Loader::Glibc, Loader::DlopenRs]
                .iter()
                .map(|l| {
                    let v = rr.median(*l, k) / scale;
                    if scale == 1.0 {
                        kib(v)
                    } else if v.is_finite() {
                        format!("{v:.1}")
                    } else {
                        "—".into()
                    }
                })
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let met = rr.median(Loader::Mmld, "private_dirty_kb")
            <= rr.median(Loader::Glibc, "private_dirty_kb");
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            three("objects", 1.0),
            three("private_dirty_kb", 1.0),
            three("minflt", 1.0),
            three("heap_bytes", 1024.0),
            three("proc_private_dirty_kb", 1.0),
            if met { "met" } else { "not met" },
        );
    }
    s
}

// ---------------------------------------------------------------------------
// Syscalls under strace
// ---------------------------------------------------------------------------

fn strace_available() -> bool {
    Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `strace` plus its options, then the worker's program and arguments.
fn strace_command(
    w: &Workers,
    label: &str,
    strace_opts: &[&str],
    out: &Path,
    r: &LibResult,
) -> Result<Command, String> {
    let (exe, lead) = w
        .program(label)
        .ok_or_else(|| format!("{label} worker unavailable"))?;
    let mut c = common::worker_command("strace");
    if let Some(p) = r.ld_path() {
        c.env("LD_LIBRARY_PATH", p);
    }
    c.args(strace_opts)
        .arg("-o")
        .arg(out)
        .arg("--")
        .arg(exe)
        .args(lead);
    c.arg("first").arg(&r.path).arg(&r.symbol);
    Ok(c)
}

fn run_strace(mut c: Command) -> Result<(), String> {
    let out = c.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Syscalls between the markers, by name, from a `strace -f -o` trace.
fn strace_between_markers(
    w: &Workers,
    label: &str,
    r: &LibResult,
) -> Result<BTreeMap<String, u64>, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let trace = dir.path().join("trace");
    run_strace(strace_command(w, label, &["-f"], &trace, r)?)?;
    let text = std::fs::read_to_string(&trace).map_err(|e| e.to_string())?;
    let begin = String::from_utf8_lossy(BEGIN).into_owned();
    let end = String::from_utf8_lossy(END).into_owned();
    let mut counts = BTreeMap::new();
    let mut inside = false;
    for line in text.lines() {
        if line.contains(&begin) {
            inside = true;
            continue;
        }
        if line.contains(&end) {
            break;
        }
        if !inside {
            continue;
        }
        // "<pid> name(args) = ret", or "<... name resumed>" continuations.
        let rest = line.trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ');
        if rest.starts_with("<...") || rest.starts_with("+++") || rest.starts_with("---") {
            continue;
        }
        if let Some(name) = rest
            .split('(')
            .next()
            .filter(|n| !n.is_empty() && !n.contains(' '))
        {
            *counts.entry(name.to_string()).or_insert(0) += 1;
        }
    }
    if !inside {
        return Err("markers not found in the trace".into());
    }
    Ok(counts)
}

/// Whole-process total from `strace -c -f`.
fn strace_c_total(w: &Workers, label: &str, r: &LibResult) -> Result<u64, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let summary = dir.path().join("summary");
    run_strace(strace_command(w, label, &["-c", "-f"], &summary, r)?)?;
    let text = std::fs::read_to_string(&summary).map_err(|e| e.to_string())?;
    // "100.00    0.000123           1       123         4 total"
    text.lines()
        .find(|l| l.trim_end().ends_with("total"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| "no total line in strace -c output".into())
}

fn syscall_table(w: &Workers, results: &[LibResult]) -> String {
    if !strace_available() {
        return "(strace is not installed: no syscall counts)\n".into();
    }
    let mut s = String::new();
    s.push_str(
        "| library | loader | syscalls in open + lookup | of which | whole process (`strace -c -f`); none: the same binary loading nothing |\n\
         |---|---|---:|---|---:|\n",
    );
    for r in results {
        let base_bench = strace_c_total(w, "none", r);
        let base_runner = strace_c_total(w, common::peers::NONE_DLOPEN_RS, r);
        for loader in w.loaders() {
            let label = loader.label();
            let base = if loader == Loader::DlopenRs {
                &base_runner
            } else {
                &base_bench
            };
            match strace_between_markers(w, label, r) {
                Ok(counts) => {
                    let total: u64 = counts.values().sum();
                    let mut by: Vec<(&String, &u64)> = counts.iter().collect();
                    by.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
                    let detail = by
                        .iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let whole = match (strace_c_total(w, label, r), base) {
                        (Ok(t), Ok(b)) => format!("{t} (none: {b})"),
                        (Err(e), _) => format!("? ({e})"),
                        (_, Err(e)) => format!("? ({e})"),
                    };
                    let _ = writeln!(s, "| {} | {label} | {total} | {detail} | {whole} |", r.name);
                }
                Err(e) => {
                    let _ = writeln!(s, "| {} | {label} | ? | strace failed: {e} | |", r.name);
                }
            }
        }
    }
    s
}

fn main() {
    common::workers::dispatch();
    let bench = common::bench_mode();
    let filters = common::filters();
    // Without --bench (cargo test --benches): one round of libz, a smoke test.
    let rounds = if bench {
        env_usize("MMLD_BENCH_PAIRS", 21)
    } else {
        1
    };
    let mut libs: Vec<(String, PathBuf, String)> = Vec::new();
    for (file, sym) in FIRST_LOAD_LIBS {
        if !bench && *file != "libz.so.1" {
            continue;
        }
        if !filters.is_empty() && !filters.iter().any(|f| file.contains(f.as_str())) {
            continue;
        }
        match system_lib(file) {
            Some(p) => libs.push((file.to_string(), p, sym.to_string())),
            None => eprintln!("first_load: {file} is not installed; skipped"),
        }
    }
    if libs.iter().any(|(_, p, _)| mapped_in_process(p)) {
        eprintln!("first_load: warning: the bench process itself has one of the libraries mapped");
    }

    let w = Workers::new();
    let results: Vec<LibResult> = libs
        .iter()
        .map(|(name, path, sym)| measure(&w, name, path, sym, rounds))
        .collect();
    // Issue 15: the same loads with a relocation cache an earlier load wrote.
    let warm: Vec<warm_cache::WarmRow> = libs
        .iter()
        .filter(|(name, _, _)| warm_cache::WARM_CACHE_LIBS.iter().any(|(n, _)| n == name))
        .map(|(name, path, sym)| warm_cache::measure(&w, name, path, sym, rounds))
        .collect();

    let mut md = String::new();
    let _ = write!(
        md,
        "Machine: {}\n\nCommand: `cargo bench --bench first_load` ({rounds} rounds per library, one fresh process \
         per loader each, order rotating; ratios to glibc taken within each round)\n\n",
        common::machine_line()
    );
    if let Some(e) = w.dlopen_rs_error() {
        let _ = writeln!(md, "dlopen-rs was not measured: {e}\n");
    }
    md.push_str("#### First load in a fresh process (open + one symbol lookup)\n\n");
    md.push_str(&time_table(&results));
    if !warm.is_empty() {
        md.push_str("\n#### First load with a warm relocation cache (issue 15)\n\n");
        md.push_str(&warm_cache::table(&warm));
    }
    md.push_str("\n#### Memory and page faults (medians over the runs)\n\n");
    md.push_str(&memory_table(&results));
    if bench {
        md.push_str(
            "\n#### Syscalls per load (`strace -f`, between markers around open + lookup)\n\n",
        );
        md.push_str(&syscall_table(&w, &results));
    }
    println!("\n{md}");
    if bench {
        common::save_markdown("first_load.md", &md);
    }
}
