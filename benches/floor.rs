//! The kernel floor: what loading a library costs when a loader does only
//! the kernel work glibc does for it, next to glibc's whole load, both
//! timed by small C programs in fresh processes. It says how much of each
//! first-load and cycle target's budget (target × glibc's time) is left
//! once the kernel has been paid.
//!
//! ```sh
//! cargo bench --bench floor                  # all libraries
//! cargo bench --bench floor -- libz          # only names containing "libz"
//! MMLD_FLOOR_PAIRS=41 MMLD_FLOOR_CYCLES=5000 cargo bench --bench floor
//! ```
//!
//! At run time the bench compiles two C programs from `benches/floor/` with
//! gcc (`-O2 -Wall -Wl,-z,now -lm`, and `-ldl` for the second) into a
//! temporary directory; both use libm, as every worker of the other benches
//! does, so libsqlite3's and libstdc++'s libm is already in the process:
//!
//! - `floor.c`: glibc's kernel work for the library's own file, done
//!   glibc's way: open, read of the headers, fstat, the first `PT_LOAD`
//!   mapped over the whole span (its mapping is the reservation), one
//!   `MAP_FIXED` mmap per further `PT_LOAD`, `PROT_NONE` over holes if
//!   any, `.bss`, reading the relocation tables, one write into each page a
//!   relocation writes (the copy-on-write fault; written without being read
//!   first, as glibc writes RELA targets), `mprotect` of RELRO, close. Only
//!   the library's own file: no dependencies, no symbol lookup, no
//!   constructors.
//! - `glibc_load.c`: `dlopen(RTLD_NOW | RTLD_LOCAL)` + `dlsym` of the same
//!   symbol as the `first_load` bench (`add` for `libdemo.so`).
//!
//! Measurements:
//!
//! 1. First load, for the libraries of `first_load` and `testlibs/libdemo.so`:
//!    one discarded warm-up pair (page cache), then `MMLD_FLOOR_PAIRS` (default
//!    21) pairs of fresh processes `glibc_load first PATH SYM` and
//!    `floor first PATH`, alternating which goes first. Each process times
//!    only its own load. Reported: both medians, the median of the pairwise
//!    floor/glibc ratios, the issue's target for that library, its budget
//!    (target × glibc's median) and what the floor leaves of it.
//! 2. Warm cycle (load + unload, repeated in one process) for `libdemo.so`,
//!    libz and libsqlite3: `glibc_load cycle N` (adds `dlsym` and `dlclose`)
//!    and `floor cycle N` (adds `munmap`), N = `MMLD_FLOOR_CYCLES` (default
//!    2000), 3 repetitions in alternating order; each process prints the
//!    median of its N cycles, the table gives the median of the 3.
//!
//! Workers run without `LD_LIBRARY_PATH` (see `first_load.rs`). Results are
//! printed as markdown and saved to `target/mmld-bench/floor.md`. Without
//! `--bench` (as `cargo test --benches` runs it) it only does a small smoke
//! run of libz.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{FIRST_LOAD_LIBS, env_usize, fmt_ratio, median, system_lib, test_lib};

/// Repetitions of each cycle process.
const CYCLE_REPS: usize = 3;

/// The libraries of the cycle bench (with its symbols).
const CYCLE_LIBS: &[&str] = &["libdemo.so", "libz.so.1", "libsqlite3.so.0"];

type Fields = BTreeMap<String, String>;

fn gcc(args: &[&str]) {
    let out = Command::new("gcc")
        .args(args)
        .output()
        .expect("gcc not found: the floor bench needs gcc");
    assert!(
        out.status.success(),
        "gcc {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Compiles `floor` and `glibc_load` into `dir`; returns their paths.
fn build(dir: &Path) -> (PathBuf, PathBuf) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/floor");
    let floor = dir.join("floor");
    let glibc = dir.join("glibc_load");
    let s = |p: &Path| p.to_str().expect("UTF-8 path").to_string();
    let flags = ["-O2", "-Wall", "-Wl,-z,now"];
    let mut a: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
    a.extend([
        "-o".into(),
        s(&floor),
        s(&src.join("floor.c")),
        "-lm".into(),
    ]);
    gcc(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let mut a: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
    a.extend([
        "-o".into(),
        s(&glibc),
        s(&src.join("glibc_load.c")),
        "-ldl".into(),
        "-lm".into(),
    ]);
    gcc(&a.iter().map(String::as_str).collect::<Vec<_>>());
    (floor, glibc)
}

/// Runs one worker (fresh process, no `LD_LIBRARY_PATH`) and parses its
/// `key value key value ...` line.
fn run(program: &Path, args: &[&str]) -> Fields {
    let out = common::worker_command(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} {} failed ({}):\n{stdout}\n{}",
        program.display(),
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let words: Vec<&str> = stdout.split_whitespace().collect();
    words
        .chunks_exact(2)
        .map(|kv| (kv[0].to_string(), kv[1].to_string()))
        .collect()
}

fn num(f: &Fields, key: &str) -> f64 {
    f.get(key).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
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

fn fmt_us(us: f64) -> String {
    if us.is_finite() {
        format!("{us:.1} µs")
    } else {
        "—".into()
    }
}

/// One library's runs, either mode.
struct Row {
    name: String,
    runs: usize,
    glibc_us: Vec<f64>,
    floor_us: Vec<f64>,
    ratios: Vec<f64>,
    floor_runs: Vec<Fields>,
    /// glibc's cycle left the library loaded (a reference count was measured).
    glibc_kept: bool,
}

impl Row {
    fn new(name: &str) -> Row {
        Row {
            name: name.to_string(),
            runs: 0,
            glibc_us: Vec::new(),
            floor_us: Vec::new(),
            ratios: Vec::new(),
            floor_runs: Vec::new(),
            glibc_kept: false,
        }
    }

    fn push(&mut self, g: &Fields, f: Fields, key: &str) {
        let (gu, fu) = (num(g, key), num(&f, key));
        self.glibc_us.push(gu);
        self.floor_us.push(fu);
        self.ratios.push(fu / gu);
        self.glibc_kept |= num(g, "still_loaded") == 1.0;
        self.floor_runs.push(f);
        self.runs += 1;
    }

    fn floor_field(&self, key: &str) -> f64 {
        median(
            &self
                .floor_runs
                .iter()
                .map(|f| num(f, key))
                .collect::<Vec<_>>(),
        )
    }
}

/// `times` pairs of glibc's and the floor's runs, alternating which goes
/// first; `key` is the field of glibc's output that holds its time.
fn alternate<G, F>(name: &str, times: usize, key: &str, mut glibc: G, mut floor: F) -> Row
where
    G: FnMut() -> Fields,
    F: FnMut() -> Fields,
{
    let mut row = Row::new(name);
    for i in 0..times {
        let (g, f) = if i % 2 == 0 {
            let g = glibc();
            (g, floor())
        } else {
            let f = floor();
            (glibc(), f)
        };
        row.push(&g, f, key);
    }
    row
}

fn first_load(floor: &Path, glibc: &Path, name: &str, path: &str, sym: &str, pairs: usize) -> Row {
    let g_args = ["first", path, sym];
    let f_args = ["first", path];
    // One discarded pair: page cache and dentry cache warm for both.
    run(glibc, &g_args);
    run(floor, &f_args);
    let row = alternate(
        name,
        pairs,
        "us",
        || run(glibc, &g_args),
        || run(floor, &f_args),
    );
    eprintln!(
        "floor first {name}: glibc {} floor {} floor/glibc {} ({pairs} pairs)",
        fmt_us(median(&row.glibc_us)),
        fmt_us(median(&row.floor_us)),
        fmt_ratio(median(&row.ratios))
    );
    row
}

fn cycle(floor: &Path, glibc: &Path, name: &str, path: &str, sym: &str, n: usize) -> Row {
    let n = n.to_string();
    let g_args = ["cycle", &n, path, sym];
    let f_args = ["cycle", &n, path];
    let row = alternate(
        name,
        CYCLE_REPS,
        "median_us",
        || run(glibc, &g_args),
        || run(floor, &f_args),
    );
    eprintln!(
        "floor cycle {name}: glibc {} floor {} floor/glibc {} ({CYCLE_REPS} × {n} cycles)",
        fmt_us(median(&row.glibc_us)),
        fmt_us(median(&row.floor_us)),
        fmt_ratio(median(&row.ratios))
    );
    row
}

fn target_cell(t: Option<f64>) -> String {
    t.map(|t| format!("≤ {t}×")).unwrap_or_else(|| "—".into())
}

/// `target` gives the issue's target ratio for a row's library.
fn table(rows: &[Row], runs_label: &str, target: fn(&str) -> Option<f64>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| library | {runs_label} | glibc (median) | floor (median) | floor/glibc (p25–p75) | target | budget (target × glibc) | budget left after the floor | pages written | mmap / mprotect calls |\n\
         |---|---:|---:|---:|---:|---|---:|---:|---:|---:|"
    );
    for r in rows {
        let g = median(&r.glibc_us);
        let f = median(&r.floor_us);
        let t = target(&r.name);
        let budget = t.map_or(f64::NAN, |t| g * t);
        let _ = writeln!(
            s,
            "| {}{} | {} | {} | {} | {} ({}–{}) | {} | {} | {} | {:.0} | {:.0} / {:.0} |",
            r.name,
            if r.glibc_kept {
                " (glibc kept it loaded!)"
            } else {
                ""
            },
            r.runs,
            fmt_us(g),
            fmt_us(f),
            fmt_ratio(median(&r.ratios)),
            fmt_ratio(percentile(&r.ratios, 0.25)),
            fmt_ratio(percentile(&r.ratios, 0.75)),
            target_cell(t),
            fmt_us(budget),
            fmt_us(budget - f),
            r.floor_field("pages_written"),
            r.floor_field("mmaps"),
            r.floor_field("mprotects"),
        );
    }
    s
}

fn main() {
    let bench = common::bench_mode();
    let filters = common::filters();
    // Without --bench (cargo test --benches): libz only, a smoke test.
    let (pairs, cycles) = if bench {
        (
            env_usize("MMLD_FLOOR_PAIRS", 21),
            env_usize("MMLD_FLOOR_CYCLES", 2000),
        )
    } else {
        (1, 20)
    };
    assert!(
        pairs >= 1 && cycles >= 1,
        "MMLD_FLOOR_PAIRS and MMLD_FLOOR_CYCLES must be at least 1"
    );

    let mut libs: Vec<(String, PathBuf, String)> = Vec::new();
    let demo = test_lib("libdemo.so");
    if demo.exists() {
        libs.push(("libdemo.so".to_string(), demo, "add".to_string()));
    } else {
        eprintln!("floor: {} is not built; skipped", demo.display());
    }
    for (file, sym) in FIRST_LOAD_LIBS {
        match system_lib(file) {
            Some(p) => libs.push((file.to_string(), p, sym.to_string())),
            None => eprintln!("floor: {file} is not installed; skipped"),
        }
    }
    libs.retain(|(name, _, _)| {
        (bench || name == "libz.so.1")
            && (filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
    });

    if libs.is_empty() {
        eprintln!("floor: no library to measure (filters: {filters:?})");
        return;
    }

    let tmp = tempfile::tempdir().expect("create a temporary directory for the C programs");
    let (floor, glibc) = build(tmp.path());

    let first: Vec<Row> = libs
        .iter()
        .map(|(name, path, sym)| {
            let p = path.to_str().expect("UTF-8 path");
            first_load(&floor, &glibc, name, p, sym, pairs)
        })
        .collect();
    let cycled: Vec<Row> = libs
        .iter()
        .filter(|(name, _, _)| CYCLE_LIBS.contains(&name.as_str()))
        .map(|(name, path, sym)| {
            let p = path.to_str().expect("UTF-8 path");
            cycle(&floor, &glibc, name, p, sym, cycles)
        })
        .collect();

    let mut md = String::new();
    let _ = writeln!(
        md,
        "Machine: {}\n\nCommand: `cargo bench --bench floor` ({pairs} process pairs per library, alternating order; \
         cycles: {CYCLE_REPS} processes per side × {cycles} cycles)\n",
        common::machine_line()
    );
    md.push_str(
        "The floor (`benches/floor/floor.c`) is the kernel work glibc's loader does for the library's own \
         file, done glibc's way, and nothing else: open, read of the headers, fstat, the first `PT_LOAD` \
         mapped over the whole span (that mapping is the reservation; no separate `PROT_NONE` mmap), one \
         `MAP_FIXED` mmap per further `PT_LOAD`, `PROT_NONE` over holes between segments if any, `.bss` \
         (zeroing its partial page, an anonymous mapping for the rest), reading the dynamic section and the \
         relocation tables to find the pages they write, one write into each such page (its copy-on-write \
         fault; RELA targets written without being read first, as glibc writes them), `mprotect` of RELRO, \
         close. It maps only the library's own file (no dependencies), looks up no symbol and runs no \
         constructor, so a loader that maps the file cannot be faster than the floor. glibc's side \
         (`benches/floor/glibc_load.c`) is `dlopen(RTLD_NOW | RTLD_LOCAL)` + `dlsym`, timed the same way in \
         a plain C process. The budget is the issue's target times glibc's median; what the floor leaves of \
         it is what symbol binding, dependencies and the rest of a loader may cost.\n\n",
    );
    md.push_str(
        "#### First load in a fresh process (floor: one load; glibc: `dlopen` + `dlsym`)\n\n",
    );
    md.push_str(&table(&first, "pairs", common::first_load_target));
    if !cycled.is_empty() {
        let _ = writeln!(
            md,
            "\n#### Warm cycle, median per cycle (floor: load + `munmap`; glibc: `dlopen` + `dlsym` + `dlclose`; \
             {cycles} cycles per process)\n"
        );
        md.push_str(&table(&cycled, "processes per side", common::cycle_target));
    }
    println!("\n{md}");
    if bench {
        common::save_markdown("floor.md", &md);
    }
}
