//! Prints every benchmark's latest results as markdown, ready for
//! `docs/BENCHMARKS.md`:
//!
//! ```sh
//! cargo bench --bench cycle && cargo bench --bench lookup      # criterion groups + three loaders
//! cargo bench --bench first_load && cargo bench --bench scale  # fresh processes
//! cargo bench --bench floor                                    # the kernel floor
//! cargo bench --bench report                                   # all tables, with ratios
//! cargo bench --bench report -- --callgrind                    # instruction counts (valgrind)
//! ```
//!
//! The criterion tables come from `target/criterion/<group>/{mmld,glibc}/new/
//! estimates.json` (median point estimates; ratio = mmld/glibc); the others
//! are the markdown the benches saved in `target/mmld-bench/`.
//!
//! `--callgrind` counts instructions instead of time, the figure that does
//! not move with the machine's load: for libz and libsqlite3 (or the
//! libraries named on the command line), one fresh-process first load per
//! loader (`first` worker) and, for libz, 100 load + get + unload cycles
//! (`cycle` worker), each under `valgrind --tool=callgrind
//! --collect-atstart=no --toggle-collect=mmld_bench_region --dump-instr=no`,
//! so only the timed region (open + lookup [+ close]) is counted; the whole
//! process is counted too, next to a worker that loads nothing. The
//! callgrind files stay in `target/mmld-bench/callgrind/` for
//! `callgrind_annotate --inclusive=yes FILE`. The table is saved to
//! `target/mmld-bench/callgrind.md`.

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::peers::{Loader, Workers};

/// Cycles counted by the callgrind cycle row.
const CALLGRIND_CYCLES: usize = 100;

/// `Ir` total of a callgrind output file (its `totals:` or `summary:` line).
fn callgrind_total(file: &Path) -> Result<u64, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{}: no totals line", file.display()))
}

/// A worker program and its leading arguments (`--worker <loader>`).
type Program = Option<(PathBuf, Vec<String>)>;

/// Runs one worker under callgrind; `region` restricts counting to
/// `mmld_bench_region`. Returns the instruction count.
fn callgrind(
    program: Program,
    args: &[&str],
    ld_path: Option<&str>,
    out: &Path,
    region: bool,
) -> Result<u64, String> {
    let (exe, lead) = program.ok_or_else(|| "worker unavailable".to_string())?;
    let label = lead.last().cloned().unwrap_or_default();
    let mut c = common::worker_command("valgrind");
    if let Some(p) = ld_path {
        c.env("LD_LIBRARY_PATH", p);
    }
    c.args(["--tool=callgrind", "--dump-instr=no", "--dump-line=no"])
        .arg(format!("--callgrind-out-file={}", out.display()));
    if region {
        c.args(["--collect-atstart=no", "--toggle-collect=mmld_bench_region"]);
    }
    let o = c
        .arg("--")
        .arg(exe)
        .args(lead)
        .args(args)
        .output()
        .map_err(|e| format!("valgrind: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "valgrind {label} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    callgrind_total(out)
}

fn fmt_count(n: Result<u64, String>) -> String {
    match n {
        Ok(n) => {
            let s = n.to_string();
            let mut out = String::new();
            for (i, ch) in s.chars().enumerate() {
                if i > 0 && (s.len() - i) % 3 == 0 {
                    out.push(',');
                }
                out.push(ch);
            }
            out
        }
        Err(e) => format!("failed: {e}"),
    }
}

fn ratio(a: &Result<u64, String>, b: &Result<u64, String>) -> String {
    match (a, b) {
        (Ok(a), Ok(b)) if *b > 0 => common::fmt_ratio(*a as f64 / *b as f64),
        _ => "—".into(),
    }
}

fn callgrind_report() {
    if Command::new("valgrind").arg("--version").output().is_err() {
        eprintln!("report --callgrind: valgrind is not installed (apt-get install valgrind)");
        std::process::exit(1);
    }
    let dir = common::markdown_dir().join("callgrind");
    std::fs::create_dir_all(&dir).expect("create target/mmld-bench/callgrind");
    let w = Workers::new();
    let filters = common::filters();
    let libs: Vec<&str> = if filters.is_empty() {
        vec!["libz.so.1", "libsqlite3.so.0"]
    } else {
        common::FIRST_LOAD_LIBS
            .iter()
            .map(|(f, _)| *f)
            .filter(|f| filters.iter().any(|x| f.contains(x.as_str())))
            .collect()
    };
    let mut md = format!(
        "Machine: {}\n\nCommand: `cargo bench --bench report -- --callgrind` (valgrind's callgrind; \
         \"load\" counts only the worker's timed region: open + one lookup, or for the cycle row \
         {CALLGRIND_CYCLES} × open + lookup + close divided by {CALLGRIND_CYCLES}; \"whole process\" counts \
         everything from exec to exit, with a worker that loads nothing as the baseline of each binary)\n\n\
         | load | instructions mmld | glibc | dlopen-rs | mmld/glibc | dlopen-rs/glibc | whole process mmld / glibc / dlopen-rs (the same binaries loading nothing: bench binary / dlopen-rs runner) |\n\
         |---|---:|---:|---:|---:|---:|---|\n",
        common::machine_line()
    );
    let loaders = [Loader::Mmld, Loader::Glibc, Loader::DlopenRs];
    let mut jobs: Vec<(String, String, Vec<String>)> = Vec::new();
    for lib in &libs {
        let Some((_, sym)) = common::FIRST_LOAD_LIBS.iter().find(|(f, _)| f == lib) else {
            continue;
        };
        let Some(path) = common::system_lib(lib) else {
            eprintln!("report: {lib} is not installed; skipped");
            continue;
        };
        let p = path.to_string_lossy().into_owned();
        jobs.push((
            format!("first load {lib}"),
            lib.to_string(),
            vec!["first".into(), p.clone(), sym.to_string()],
        ));
        if *lib == "libz.so.1" {
            jobs.push((
                format!("cycle {lib} (per cycle)"),
                lib.to_string(),
                vec![
                    "cycle".into(),
                    CALLGRIND_CYCLES.to_string(),
                    p,
                    sym.to_string(),
                ],
            ));
        }
    }
    for (title, lib, args) in jobs {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let ld = common::peers::ld_library_path(&lib);
        let per = if a[0] == "cycle" {
            CALLGRIND_CYCLES as u64
        } else {
            1
        };
        let tag = format!("{}-{}", a[0], lib);
        let mut region = Vec::new();
        let mut whole = Vec::new();
        for l in loaders {
            let out = dir.join(format!("{tag}-{}.out", l.label()));
            let n = callgrind(w.program(l.label()), &a, ld, &out, true).map(|n| n / per);
            eprintln!("callgrind {title} {}: {}", l.label(), fmt_count(n.clone()));
            region.push(n);
            let out = dir.join(format!("{tag}-{}-whole.out", l.label()));
            whole.push(callgrind(w.program(l.label()), &a, ld, &out, false));
        }
        let none = |p: Program, name: &str| {
            callgrind(p, &a, ld, &dir.join(format!("{tag}-{name}.out")), false)
        };
        let base_bench = none(w.program("none"), "none-whole");
        let base_runner = none(w.dlopen_rs_none(), "dlopen-rs-none-whole");
        let _ = writeln!(
            md,
            "| {title} | {} | {} | {} | {} | {} | {} / {} / {} ({} / {}) |",
            fmt_count(region[0].clone()),
            fmt_count(region[1].clone()),
            fmt_count(region[2].clone()),
            ratio(&region[0], &region[1]),
            ratio(&region[2], &region[1]),
            fmt_count(whole[0].clone()),
            fmt_count(whole[1].clone()),
            fmt_count(whole[2].clone()),
            fmt_count(base_bench),
            fmt_count(base_runner),
        );
    }
    let shown = dir
        .strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(&dir)
        .display()
        .to_string();
    let _ = writeln!(
        md,
        "\nPer-function profiles: `callgrind_annotate --inclusive=yes {shown}/first-libz.so.1-mmld.out`; \
         phases, page faults and syscalls: `benches/profile.sh`."
    );
    println!("{md}");
    common::save_markdown("callgrind.md", &md);
}

fn main() {
    common::workers::dispatch();
    if std::env::args().any(|a| a == "--callgrind") {
        callgrind_report();
        return;
    }
    println!("Machine now: {}", common::machine_line());
    common::table::print(
        "Load + get + unload cycle (`cargo bench --bench cycle`)",
        &["cycle-"],
    );
    common::table::print("Symbol lookup (`cargo bench --bench lookup`)", &["lookup-"]);
    for (name, what) in [
        ("cycle3.md", "Load + get + unload cycle, three loaders"),
        ("lookup3.md", "Symbol lookup, three loaders"),
        ("first_load.md", "First load, memory, syscalls"),
        ("scale.md", "Scale"),
        ("floor.md", "Kernel floor"),
        ("callgrind.md", "Instruction counts"),
    ] {
        let path = common::markdown_dir().join(name);
        println!("\n### {what} ({})\n", path.display());
        match std::fs::read_to_string(&path) {
            Ok(t) => println!("{t}"),
            Err(_) => println!("(not run yet)"),
        }
    }
}
