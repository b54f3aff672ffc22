//! First load in fresh processes, memory left behind, and syscalls per load:
//! mmld against glibc's `dlopen(RTLD_NOW)` + `dlsym`.
//!
//! ```sh
//! cargo bench --bench first_load                 # all libraries, 21 pairs each
//! cargo bench --bench first_load -- libz         # only names containing "libz"
//! MMLD_BENCH_PAIRS=41 cargo bench --bench first_load
//! ```
//!
//! The bench re-executes itself as a worker (`--worker <mmld|glibc|none>
//! <path> <symbol>`), one fresh process per measurement. For each library it
//! runs one discarded warm-up pair (page cache), then `MMLD_BENCH_PAIRS`
//! pairs (default 21), alternating which loader goes first. Each worker
//! times only its own open + one symbol lookup with an `Instant` around them,
//! measures memory after the load, and prints one line:
//!
//! ```text
//! MMLD_FIRST_LOAD loader=mmld lib=libz.so.1 ns=... objects=... mappings=... rss_kb=... private_dirty_kb=... anon_kb=... heap_bytes=... proc_private_dirty_kb=... proc_anon_kb=... preloaded=0
//! ```
//!
//! Both workers get the same absolute path and symbol name as `&str`
//! (command-line arguments); glibc's side builds its two `CString`s inside
//! the timed region. The worker binary links no C++ runtime, so
//! libstdc++.so.6 is not in the process before the load (`preloaded=0`
//! says so; with `preloaded=1` both sides would measure a reference bump).
//!
//! Memory ("what each loader leaves behind after load"): the objects the
//! load brought in are the library and its new dependencies (mmld: those it
//! mapped, from `Library::objects()`, plus anything it asked glibc to load;
//! glibc: the new entries of `dl_iterate_phdr`). From `/proc/self/smaps`,
//! every mapping inside one of their address spans (file pages, `.bss`,
//! gaps) or backed by one of their files is summed: `Private_Dirty` and
//! `Anonymous`. Heap growth is `mallinfo2()` (`uordblks + hblkhd`) after
//! minus before: both loaders allocate their bookkeeping with glibc's
//! malloc. The process-wide change of `smaps_rollup` is reported too.
//!
//! Syscalls: when `strace` is installed, each loader runs once more under
//! `strace -f`; the worker writes a marker (`write(-1, "MMLD_BENCH_BEGIN")`)
//! before open and another after the lookup, and the syscalls between the
//! markers are counted. The whole-process total from `strace -c -f` is
//! shown next to it, with a worker that loads nothing (`none`) as baseline.
//!
//! Workers run without `LD_LIBRARY_PATH`: `cargo bench` sets one (into
//! `target/` and the toolchain) that would add failed `openat` calls to
//! every dependency search of both loaders.
//!
//! Results are printed as markdown tables and saved to
//! `target/mmld-bench/first_load.md` (read by `cargo bench --bench report`).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::ffi::{CString, c_void};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{
    FIRST_LOAD_LIBS, ObjectSpan, env_usize, fmt_ns, fmt_ratio, glibc_objects, heap_in_use,
    mapped_in_process, median, mmld_objects, object_memory, read_smaps, rollup, system_lib,
};

const LINE_TAG: &str = "MMLD_FIRST_LOAD";
const BEGIN: &[u8] = b"MMLD_BENCH_BEGIN";
const END: &[u8] = b"MMLD_BENCH_END";

fn marker(m: &[u8]) {
    // SAFETY: writing to an invalid descriptor fails with EBADF and has no
    // effect; strace shows the call and its buffer.
    unsafe { libc::write(-1, m.as_ptr().cast(), m.len()) };
}

// ---------------------------------------------------------------------------
// Worker (one fresh process, one load)
// ---------------------------------------------------------------------------

fn worker(loader: &str, path: &str, symbol: &str) -> ! {
    let preloaded = mapped_in_process(Path::new(path));
    let before_objects: HashSet<ObjectSpan> = glibc_objects().into_iter().collect();
    let (pd0, an0) = rollup();
    let heap0 = heap_in_use();

    let mut mmld_lib = None;
    marker(BEGIN);
    let t = Instant::now();
    match loader {
        "mmld" => {
            // SAFETY: loading runs the library's constructors.
            let lib = unsafe { mmld::Library::open(path) }.unwrap_or_else(|e| panic!("mmld: {e}"));
            // SAFETY: only the address is used.
            let s =
                unsafe { lib.get::<*const c_void>(symbol) }.unwrap_or_else(|e| panic!("mmld: {e}"));
            std::hint::black_box(*s);
            mmld_lib = Some(lib);
        }
        "glibc" => {
            let p = CString::new(path).unwrap();
            let h = common::glibc_open(&p, libc::RTLD_NOW);
            let n = CString::new(symbol).unwrap();
            // SAFETY: live handle, NUL-terminated name.
            let s = unsafe { libc::dlsym(h, n.as_ptr()) };
            assert!(!s.is_null(), "dlsym {symbol}: {}", common::dlerror());
            std::hint::black_box(s);
        }
        _ => {}
    }
    let ns = t.elapsed().as_nanos();
    marker(END);
    let heap1 = heap_in_use();

    let mut objects: Vec<ObjectSpan> = glibc_objects()
        .into_iter()
        .filter(|o| !before_objects.contains(o))
        .collect();
    if let Some(lib) = &mmld_lib {
        objects.extend(mmld_objects(lib));
    }
    let mem = object_memory(&objects, &read_smaps());
    let (pd1, an1) = rollup();
    let lib_name = Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    println!(
        "{LINE_TAG} loader={loader} lib={lib_name} ns={ns} objects={} mappings={} rss_kb={} \
         private_dirty_kb={} anon_kb={} heap_bytes={} proc_private_dirty_kb={} proc_anon_kb={} preloaded={}",
        objects.len(),
        mem.mappings,
        mem.rss,
        mem.private_dirty,
        mem.anonymous,
        heap1 as i64 - heap0 as i64,
        pd1 as i64 - pd0 as i64,
        an1 as i64 - an0 as i64,
        u8::from(preloaded),
    );
    // Leave without unloading: only the load is measured.
    std::mem::forget(mmld_lib);
    std::process::exit(0)
}

// ---------------------------------------------------------------------------
// Parent
// ---------------------------------------------------------------------------

type Fields = BTreeMap<String, String>;

fn run_worker(loader: &str, path: &Path, symbol: &str) -> Fields {
    let exe = std::env::current_exe().expect("current_exe");
    let out = common::worker_command(&exe)
        .arg("--worker")
        .arg(loader)
        .arg(path)
        .arg(symbol)
        .output()
        .expect("spawn worker");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(line) = stdout.lines().find(|l| l.starts_with(LINE_TAG)) else {
        panic!(
            "worker {loader} {} failed ({}):\n{stdout}\n{}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn num(f: &Fields, key: &str) -> f64 {
    f.get(key).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

struct LibResult {
    name: String,
    pairs: usize,
    mmld_ns: Vec<f64>,
    glibc_ns: Vec<f64>,
    ratios: Vec<f64>,
    mmld_runs: Vec<Fields>,
    glibc_runs: Vec<Fields>,
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let i = ((s.len() - 1) as f64 * p).round() as usize;
    s[i]
}

fn measure(name: &str, path: &Path, symbol: &str, pairs: usize) -> LibResult {
    // One discarded pair: page cache and dentry cache warm for both.
    run_worker("mmld", path, symbol);
    run_worker("glibc", path, symbol);
    let mut r = LibResult {
        name: name.to_string(),
        pairs,
        mmld_ns: Vec::new(),
        glibc_ns: Vec::new(),
        ratios: Vec::new(),
        mmld_runs: Vec::new(),
        glibc_runs: Vec::new(),
    };
    for i in 0..pairs {
        let (m, g) = if i % 2 == 0 {
            let m = run_worker("mmld", path, symbol);
            (m, run_worker("glibc", path, symbol))
        } else {
            let g = run_worker("glibc", path, symbol);
            (run_worker("mmld", path, symbol), g)
        };
        let (mn, gn) = (num(&m, "ns"), num(&g, "ns"));
        r.mmld_ns.push(mn);
        r.glibc_ns.push(gn);
        r.ratios.push(mn / gn);
        r.mmld_runs.push(m);
        r.glibc_runs.push(g);
    }
    eprintln!(
        "first_load {name}: mmld {} glibc {} ratio {} ({pairs} pairs)",
        fmt_ns(median(&r.mmld_ns)),
        fmt_ns(median(&r.glibc_ns)),
        fmt_ratio(median(&r.ratios))
    );
    r
}

fn med_field(runs: &[Fields], key: &str) -> f64 {
    median(&runs.iter().map(|f| num(f, key)).collect::<Vec<_>>())
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
        "| library | pairs | mmld (median) | glibc (median) | median of pairwise mmld/glibc | ratio p25–p75 | target ≤ 0.5× |\n\
         |---|---:|---:|---:|---:|---:|---|\n",
    );
    for r in results {
        let ratio = median(&r.ratios);
        let pre = r
            .mmld_runs
            .iter()
            .chain(&r.glibc_runs)
            .any(|f| num(f, "preloaded") != 0.0);
        s.push_str(&format!(
            "| {}{} | {} | {} | {} | {} | {}–{} | {} |\n",
            r.name,
            if pre { " (already in process!)" } else { "" },
            r.pairs,
            fmt_ns(median(&r.mmld_ns)),
            fmt_ns(median(&r.glibc_ns)),
            fmt_ratio(ratio),
            fmt_ratio(percentile(&r.ratios, 0.25)),
            fmt_ratio(percentile(&r.ratios, 0.75)),
            if ratio <= 0.5 { "met" } else { "not met" },
        ));
    }
    s
}

fn memory_table(results: &[LibResult]) -> String {
    let mut s = String::new();
    s.push_str(
        "| library | objects mapped mmld / glibc | private dirty KiB mmld / glibc | anonymous KiB mmld / glibc | RSS KiB mmld / glibc | heap growth KiB mmld / glibc | process Δ private dirty KiB mmld / glibc | target private dirty ≤ glibc |\n\
         |---|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in results {
        let m = |k: &str| med_field(&r.mmld_runs, k);
        let g = |k: &str| med_field(&r.glibc_runs, k);
        s.push_str(&format!(
            "| {} | {} / {} | {} / {} | {} / {} | {} / {} | {:.1} / {:.1} | {} / {} | {} |\n",
            r.name,
            kib(m("objects")),
            kib(g("objects")),
            kib(m("private_dirty_kb")),
            kib(g("private_dirty_kb")),
            kib(m("anon_kb")),
            kib(g("anon_kb")),
            kib(m("rss_kb")),
            kib(g("rss_kb")),
            m("heap_bytes") / 1024.0,
            g("heap_bytes") / 1024.0,
            kib(m("proc_private_dirty_kb")),
            kib(g("proc_private_dirty_kb")),
            if m("private_dirty_kb") <= g("private_dirty_kb") {
                "met"
            } else {
                "not met"
            },
        ));
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

/// Syscalls between the markers, by name, from a `strace -f -o` trace.
fn strace_between_markers(
    loader: &str,
    path: &Path,
    symbol: &str,
) -> Result<BTreeMap<String, u64>, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let trace = dir.path().join("trace");
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = common::worker_command("strace")
        .arg("-f")
        .arg("-o")
        .arg(&trace)
        .arg("--")
        .arg(exe)
        .args(["--worker", loader])
        .arg(path)
        .arg(symbol)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
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
fn strace_c_total(loader: &str, path: &Path, symbol: &str) -> Result<u64, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let summary = dir.path().join("summary");
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = common::worker_command("strace")
        .args(["-c", "-f", "-o"])
        .arg(&summary)
        .arg("--")
        .arg(exe)
        .args(["--worker", loader])
        .arg(path)
        .arg(symbol)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let text = std::fs::read_to_string(&summary).map_err(|e| e.to_string())?;
    // "100.00    0.000123           1       123         4 total"
    text.lines()
        .find(|l| l.trim_end().ends_with("total"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| "no total line in strace -c output".into())
}

fn syscall_table(libs: &[(String, PathBuf, String)]) -> String {
    if !strace_available() {
        return "(strace is not installed: no syscall counts)\n".into();
    }
    let mut s = String::new();
    s.push_str(
        "| library | loader | syscalls in open + lookup | of which | whole process (`strace -c -f`), `none` = loads nothing |\n\
         |---|---|---:|---|---:|\n",
    );
    for (name, path, symbol) in libs {
        let base = strace_c_total("none", path, symbol);
        for loader in ["mmld", "glibc"] {
            match strace_between_markers(loader, path, symbol) {
                Ok(counts) => {
                    let total: u64 = counts.values().sum();
                    let mut by: Vec<(&String, &u64)> = counts.iter().collect();
                    by.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
                    let detail = by
                        .iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let whole = match (strace_c_total(loader, path, symbol), &base) {
                        (Ok(t), Ok(b)) => format!("{t} (none: {b})"),
                        (Err(e), _) => format!("? ({e})"),
                        (_, Err(e)) => format!("? ({e})"),
                    };
                    s.push_str(&format!(
                        "| {name} | {loader} | {total} | {detail} | {whole} |\n"
                    ));
                }
                Err(e) => {
                    s.push_str(&format!(
                        "| {name} | {loader} | ? | strace failed: {e} | |\n"
                    ));
                }
            }
        }
    }
    s
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--worker") {
        let [_, _, loader, path, symbol] = &args[..] else {
            eprintln!("usage: first_load --worker <mmld|glibc|none> <path> <symbol>");
            std::process::exit(2);
        };
        worker(loader, path, symbol);
    }

    let bench = common::bench_mode();
    let filters = common::filters();
    // Without --bench (cargo test --benches): one pair of libz, a smoke test.
    let pairs = if bench {
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

    let results: Vec<LibResult> = libs
        .iter()
        .map(|(name, path, sym)| measure(name, path, sym, pairs))
        .collect();

    let mut md = String::new();
    md.push_str(&format!(
        "Machine: {}\n\nCommand: `cargo bench --bench first_load` ({pairs} process pairs per library, alternating order)\n\n",
        common::machine_line()
    ));
    md.push_str("#### First load in a fresh process (open + one symbol lookup)\n\n");
    md.push_str(&time_table(&results));
    md.push_str("\n#### Memory left behind after the load (medians over the runs)\n\n");
    md.push_str(&memory_table(&results));
    if bench {
        md.push_str(
            "\n#### Syscalls per load (`strace -f`, between markers around open + lookup)\n\n",
        );
        md.push_str(&syscall_table(&libs));
    }
    println!("\n{md}");
    if bench {
        common::save_markdown("first_load.md", &md);
    }
}
