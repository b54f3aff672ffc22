//! Scale: one huge generated library, and a thousand small plugins in one
//! process. Shows how load and lookup costs grow, for mmld and for glibc.
//!
//! ```sh
//! cargo bench --bench scale                          # generates, compiles, measures
//! MMLD_SCALE_DIR=/tmp/mmld-scale cargo bench --bench scale   # keep and reuse the build
//! ```
//!
//! At run time the bench writes C sources into a temporary directory (or
//! `$MMLD_SCALE_DIR`) and compiles them with gcc (nothing is committed):
//!
//! - `libscale_big.so`: 100,000 exported functions `fn_<i>`, each calling
//!   the next through the PLT (100,000 `R_X86_64_JUMP_SLOT`), a table of
//!   pointers to all of them (100,000 `R_X86_64_64`: the functions are
//!   preemptible) and a table of their names (100,000 `R_X86_64_RELATIVE`).
//!   Four translation units, compiled in parallel at -O0 (about a minute on
//!   two cores).
//! - `libscale_1k.so`: the same with 1,000 functions.
//! - 1,000 plugins `libplugin_<i>.so`: one object compiled once, linked 1,000
//!   times with its own `DT_SONAME` (distinct files and inodes, so both
//!   loaders treat them as distinct libraries). Like real plugins they all
//!   export the same entry points (`plugin_entry`, ...), call each other
//!   through the PLT and call libc.
//!
//! Measurements (each loader in its own processes, so mmld never reuses a
//! copy glibc loaded):
//!
//! 1. Load + one lookup of each generated library, in fresh processes
//!    (`MMLD_SCALE_PAIRS` pairs, default 5, alternating order).
//! 2. Lookup time in the 1,000- and 100,000-symbol libraries: 1,000
//!    different names that exist (spread over the table) and 1,000 that do
//!    not, looked up in rounds; the median round gives ns per lookup. Both
//!    sides get the same pre-built `&CStr` names (no allocation on either).
//!    These libraries call nothing outside themselves, so they have no
//!    `DT_NEEDED`: a miss searches the library alone. The plugins need libc,
//!    so a miss there goes on into the host's libc, on both sides.
//! 3. One process loads the 1,000 plugins one after another, timing each
//!    open + get; after 1, 10, 100 and 1,000 plugins it times lookups (hit
//!    and miss) on the first and on the newest plugin. Three processes per
//!    loader; the per-plugin load times are reported as medians per range
//!    (1st, 2nd–10th, 11th–100th, then 101st–250th, 251st–500th, 501st–1000th).
//!
//! Workers run without `LD_LIBRARY_PATH` (see `first_load.rs`).
//!
//! Results are printed as markdown and saved to `target/mmld-bench/scale.md`.
//! Without `--bench` (as `cargo test --benches` runs it) it only does a
//! small smoke run.

mod common;

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, c_void};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use common::{cstring, env_usize, fmt_ns, fmt_ratio, median};

/// Bumped when the generated sources change (a kept directory is rebuilt).
const GENERATOR_VERSION: &str = "scale-gen-1";

struct Sizes {
    big: usize,
    small: usize,
    plugins: usize,
    units: usize,
}

// ---------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn gcc(args: &[&str], cwd: &Path) {
    let out = Command::new("gcc")
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("gcc not found: the scale bench needs gcc");
    assert!(
        out.status.success(),
        "gcc {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run `jobs` on all cores.
fn parallel(jobs: Vec<Box<dyn Fn() + Send + Sync>>) {
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    job();
                }
            });
        }
    });
}

/// Sources of a library with `n` functions split over `units` files.
fn generate_table_lib(dir: &Path, stem: &str, n: usize, units: usize) -> Vec<String> {
    let mut files = Vec::new();
    let per = n.div_ceil(units);
    for u in 0..units {
        let lo = u * per;
        let hi = ((u + 1) * per).min(n);
        let mut c = String::with_capacity((hi - lo) * 80);
        // Declarations of the callees (the next function may be in the next unit).
        let _ = writeln!(c, "int fn_{}(int);", hi % n);
        for i in lo..hi {
            let next = (i + 1) % n;
            let _ = writeln!(
                c,
                "int fn_{next}(int);\nint fn_{i}(int x) {{ return x > 0 ? fn_{next}(x - 1) + 1 : {i}; }}"
            );
        }
        let name = format!("{stem}_{u}.c");
        write(&dir.join(&name), &c);
        files.push(name);
    }
    let mut t = String::with_capacity(n * 40);
    for i in 0..n {
        let _ = writeln!(t, "int fn_{i}(int);");
    }
    let _ = writeln!(t, "int (*fn_table[{n}])(int) = {{");
    for i in 0..n {
        let _ = writeln!(t, "  fn_{i},");
    }
    let _ = writeln!(t, "}};\nconst char *const fn_names[{n}] = {{");
    for i in 0..n {
        let _ = writeln!(t, "  \"fn_{i}\",");
    }
    let _ = writeln!(t, "}};");
    let name = format!("{stem}_table.c");
    write(&dir.join(&name), &t);
    files.push(name);
    files
}

fn build_table_lib(dir: &Path, stem: &str, n: usize, units: usize) -> PathBuf {
    let files = generate_table_lib(dir, stem, n, units);
    let dir_owned = dir.to_path_buf();
    let jobs: Vec<Box<dyn Fn() + Send + Sync>> = files
        .iter()
        .map(|f| {
            let (f, d) = (f.clone(), dir_owned.clone());
            Box::new(move || {
                let obj = f.replace(".c", ".o");
                gcc(&["-O0", "-fPIC", "-c", &f, "-o", &obj], &d);
            }) as Box<dyn Fn() + Send + Sync>
        })
        .collect();
    parallel(jobs);
    let so = format!("lib{stem}.so");
    let mut args: Vec<String> = vec![
        "-shared".into(),
        "-Wl,-z,now".into(),
        format!("-Wl,-soname,{so}"),
        "-o".into(),
        so.clone(),
    ];
    args.extend(files.iter().map(|f| f.replace(".c", ".o")));
    gcc(&args.iter().map(String::as_str).collect::<Vec<_>>(), dir);
    dir.join(so)
}

const PLUGIN_C: &str = r#"
#include <string.h>
#include <stdlib.h>
static int state;
int plugin_helper(int x) { return x * 3 + state; }
int plugin_step(int x) { return plugin_helper(x) + 1; }
int plugin_entry(const char *s) { state++; return plugin_step((int)strlen(s)); }
int plugin_parse(const char *s) { return atoi(s) + plugin_helper(1); }
int (*plugin_table[])(int) = { plugin_helper, plugin_step };
const char *plugin_name = "plugin";
"#;

fn build_plugins(dir: &Path, n: usize) -> Vec<PathBuf> {
    write(&dir.join("plugin.c"), PLUGIN_C);
    gcc(&["-O0", "-fPIC", "-c", "plugin.c", "-o", "plugin.o"], dir);
    let d = dir.to_path_buf();
    let jobs: Vec<Box<dyn Fn() + Send + Sync>> = (0..n)
        .map(|i| {
            let d = d.clone();
            Box::new(move || {
                let so = format!("libplugin_{i}.so");
                gcc(
                    &[
                        "-shared",
                        "-Wl,-z,now",
                        &format!("-Wl,-soname,{so}"),
                        "-o",
                        &so,
                        "plugin.o",
                    ],
                    &d,
                );
            }) as Box<dyn Fn() + Send + Sync>
        })
        .collect();
    parallel(jobs);
    (0..n)
        .map(|i| dir.join(format!("libplugin_{i}.so")))
        .collect()
}

struct Built {
    big: PathBuf,
    small: PathBuf,
    plugin_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

fn build(sizes: &Sizes) -> Built {
    let (tmp, root) = match std::env::var_os("MMLD_SCALE_DIR") {
        Some(d) => (None, PathBuf::from(d)),
        None => {
            let t = tempfile::tempdir().expect("tempdir");
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let stamp = format!(
        "{GENERATOR_VERSION} big={} small={} plugins={} units={}",
        sizes.big, sizes.small, sizes.plugins, sizes.units
    );
    let stamp_file = root.join("stamp");
    let big = root.join("libscale_big.so");
    let small = root.join("libscale_1k.so");
    let plugin_dir = root.join("plugins");
    if std::fs::read_to_string(&stamp_file).ok().as_deref() == Some(stamp.as_str()) {
        eprintln!("scale: reusing {}", root.display());
    } else {
        let t = Instant::now();
        let _ = std::fs::remove_dir_all(&plugin_dir);
        std::fs::create_dir_all(&plugin_dir).expect("mkdir");
        build_table_lib(&root, "scale_1k", sizes.small, 1);
        eprintln!(
            "scale: built libscale_1k.so ({:.1} s)",
            t.elapsed().as_secs_f64()
        );
        build_plugins(&plugin_dir, sizes.plugins);
        eprintln!(
            "scale: built {} plugins ({:.1} s)",
            sizes.plugins,
            t.elapsed().as_secs_f64()
        );
        build_table_lib(&root, "scale_big", sizes.big, sizes.units);
        eprintln!(
            "scale: built libscale_big.so with {} functions ({:.1} s)",
            sizes.big,
            t.elapsed().as_secs_f64()
        );
        write(&stamp_file, &stamp);
    }
    Built {
        big,
        small,
        plugin_dir,
        _tmp: tmp,
    }
}

// ---------------------------------------------------------------------------
// The two loaders behind one interface (inside a worker process)
// ---------------------------------------------------------------------------

enum Loaded {
    Mmld(mmld::Library),
    Glibc(*mut c_void),
}

impl Loaded {
    fn open(loader: &str, path: &Path) -> Loaded {
        match loader {
            // SAFETY: loading runs the generated library's (empty) constructors.
            "mmld" => Loaded::Mmld(
                unsafe { mmld::Library::open(path) }.unwrap_or_else(|e| panic!("mmld: {e}")),
            ),
            _ => Loaded::Glibc(common::glibc_open(
                &cstring(path),
                libc::RTLD_NOW | libc::RTLD_LOCAL,
            )),
        }
    }

    /// Look `name` up; both sides take the same pre-built `&CStr`.
    #[inline]
    fn get(&self, name: &CStr) -> Option<*const c_void> {
        match self {
            // SAFETY: only the address is used.
            Loaded::Mmld(l) => unsafe { l.get::<*const c_void>(name) }.ok().map(|s| *s),
            Loaded::Glibc(h) => {
                // SAFETY: live handle, NUL-terminated name.
                let p = unsafe { libc::dlsym(*h, name.as_ptr()) };
                (!p.is_null()).then_some(p.cast_const())
            }
        }
    }
}

/// ns per lookup: `rounds` rounds over `names`, median round.
fn time_lookups(lib: &Loaded, names: &[CString], rounds: usize, expect: bool) -> f64 {
    let mut per_round = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        for n in names {
            let r = lib.get(std::hint::black_box(n));
            debug_assert_eq!(r.is_some(), expect);
            std::hint::black_box(r);
        }
        per_round.push(t.elapsed().as_nanos() as f64 / names.len() as f64);
    }
    median(&per_round)
}

fn hit_names(n: usize, count: usize) -> Vec<CString> {
    (0..count)
        .map(|k| CString::new(format!("fn_{}", (k * n / count + k % 7) % n)).unwrap())
        .collect()
}

fn miss_names(count: usize) -> Vec<CString> {
    (0..count)
        .map(|k| CString::new(format!("fn_missing_{k}")).unwrap())
        .collect()
}

const TAG: &str = "MMLD_SCALE";

/// `--worker load <loader> <path> <n>`: load + one lookup, then lookups.
fn worker_load(loader: &str, path: &Path, n: usize) {
    let first = CString::new(format!("fn_{}", n / 2)).unwrap();
    let t = Instant::now();
    let lib = Loaded::open(loader, path);
    let found = lib.get(&first);
    let load_ns = t.elapsed().as_nanos();
    assert!(found.is_some(), "{first:?} not found");
    let relocs = match &lib {
        Loaded::Mmld(l) => l
            .objects()
            .first()
            .map(|o| o.relocations.iter().map(|(_, c)| c).sum::<usize>() + o.relr_addresses)
            .unwrap_or(0),
        Loaded::Glibc(_) => 0,
    };
    let hits = hit_names(n, 1000);
    let misses = miss_names(1000);
    let hit = time_lookups(&lib, &hits, 31, true);
    let miss = time_lookups(&lib, &misses, 31, false);
    println!("{TAG} load_ns={load_ns} hit_ns={hit:.2} miss_ns={miss:.2} relocs={relocs}");
    std::mem::forget(lib);
}

/// `--worker plugins <loader> <dir> <count>`: load the plugins one by one.
fn worker_plugins(loader: &str, dir: &Path, count: usize) {
    let entry = c"plugin_entry";
    let miss = c"plugin_missing_symbol";
    let mut loaded: Vec<Loaded> = Vec::with_capacity(count);
    let mut loads = Vec::with_capacity(count);
    let mut lookups: Vec<(usize, f64, f64, f64)> = Vec::new();
    for i in 0..count {
        let path = dir.join(format!("libplugin_{i}.so"));
        let t = Instant::now();
        let lib = Loaded::open(loader, &path);
        let s = lib.get(entry);
        loads.push(t.elapsed().as_nanos());
        assert!(s.is_some());
        loaded.push(lib);
        let k = i + 1;
        if [1, 10, 100, 1000, count].contains(&k) && !lookups.iter().any(|(c, ..)| *c == k) {
            let names = vec![entry.to_owned(); 100];
            let misses = vec![miss.to_owned(); 100];
            let first_hit = time_lookups(&loaded[0], &names, 51, true);
            let last_hit = time_lookups(&loaded[k - 1], &names, 51, true);
            let last_miss = time_lookups(&loaded[k - 1], &misses, 51, false);
            lookups.push((k, first_hit, last_hit, last_miss));
        }
    }
    let loads: Vec<String> = loads.iter().map(u128::to_string).collect();
    let lookups: Vec<String> = lookups
        .iter()
        .map(|(k, a, b, c)| format!("{k}:{a:.2}:{b:.2}:{c:.2}"))
        .collect();
    println!(
        "{TAG} loads={} lookups={}",
        loads.join(","),
        lookups.join(";")
    );
    std::mem::forget(loaded);
}

// ---------------------------------------------------------------------------
// Parent
// ---------------------------------------------------------------------------

fn run(args: &[&str]) -> BTreeMap<String, String> {
    let exe = std::env::current_exe().expect("current_exe");
    let out = common::worker_command(&exe)
        .arg("--worker")
        .args(args)
        .output()
        .expect("spawn worker");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(line) = stdout.lines().find(|l| l.starts_with(TAG)) else {
        panic!(
            "worker {args:?} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn f(m: &BTreeMap<String, String>, k: &str) -> f64 {
    m.get(k).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

struct LibRow {
    name: String,
    symbols: usize,
    relocs: f64,
    mmld: Vec<BTreeMap<String, String>>,
    glibc: Vec<BTreeMap<String, String>>,
}

fn measure_lib(name: &str, path: &Path, n: usize, pairs: usize) -> LibRow {
    let p = path.to_str().expect("UTF-8 path");
    let ns = n.to_string();
    // Warm-up (page cache), discarded.
    run(&["load", "mmld", p, &ns]);
    run(&["load", "glibc", p, &ns]);
    let mut row = LibRow {
        name: name.into(),
        symbols: n,
        relocs: f64::NAN,
        mmld: Vec::new(),
        glibc: Vec::new(),
    };
    for i in 0..pairs {
        if i % 2 == 0 {
            row.mmld.push(run(&["load", "mmld", p, &ns]));
            row.glibc.push(run(&["load", "glibc", p, &ns]));
        } else {
            row.glibc.push(run(&["load", "glibc", p, &ns]));
            row.mmld.push(run(&["load", "mmld", p, &ns]));
        }
    }
    row.relocs = f(&row.mmld[0], "relocs");
    row
}

fn pair_ratio(m: &[BTreeMap<String, String>], g: &[BTreeMap<String, String>], k: &str) -> f64 {
    median(
        &m.iter()
            .zip(g)
            .map(|(a, b)| f(a, k) / f(b, k))
            .collect::<Vec<_>>(),
    )
}

fn med(v: &[BTreeMap<String, String>], k: &str) -> f64 {
    median(&v.iter().map(|m| f(m, k)).collect::<Vec<_>>())
}

struct PluginRun {
    loads: Vec<f64>,
    /// count → (first hit, newest hit, newest miss) ns
    lookups: BTreeMap<usize, (f64, f64, f64)>,
}

fn parse_plugins(m: &BTreeMap<String, String>) -> PluginRun {
    let loads = m["loads"]
        .split(',')
        .map(|v| v.parse().unwrap_or(f64::NAN))
        .collect();
    let lookups = m["lookups"]
        .split(';')
        .filter_map(|e| {
            let v: Vec<&str> = e.split(':').collect();
            Some((
                v.first()?.parse().ok()?,
                (
                    v.get(1)?.parse().ok()?,
                    v.get(2)?.parse().ok()?,
                    v.get(3)?.parse().ok()?,
                ),
            ))
        })
        .collect();
    PluginRun { loads, lookups }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--worker") {
        let a: Vec<&str> = args[2..].iter().map(String::as_str).collect();
        match a[..] {
            ["load", loader, path, n] => worker_load(loader, Path::new(path), n.parse().unwrap()),
            ["plugins", loader, dir, n] => {
                worker_plugins(loader, Path::new(dir), n.parse().unwrap())
            }
            _ => {
                eprintln!("usage: scale --worker load|plugins <mmld|glibc> <path|dir> <n>");
                std::process::exit(2);
            }
        }
        std::process::exit(0);
    }

    let bench = common::bench_mode();
    let sizes = if bench {
        Sizes {
            big: env_usize("MMLD_SCALE_FUNCTIONS", 100_000),
            small: 1000,
            plugins: env_usize("MMLD_SCALE_PLUGINS", 1000),
            units: 4,
        }
    } else {
        Sizes {
            big: 3000,
            small: 1000,
            plugins: 10,
            units: 2,
        }
    };
    let pairs = if bench {
        env_usize("MMLD_SCALE_PAIRS", 5)
    } else {
        1
    };
    let plugin_runs = if bench { 3 } else { 1 };

    let built = build(&sizes);

    let libs = [
        measure_lib("libscale_1k.so", &built.small, sizes.small, pairs),
        measure_lib("libscale_big.so", &built.big, sizes.big, pairs),
    ];

    let dir = built.plugin_dir.to_str().expect("UTF-8 path");
    let count = sizes.plugins.to_string();
    let mut plugin = BTreeMap::<&str, Vec<PluginRun>>::new();
    for i in 0..plugin_runs {
        let order = if i % 2 == 0 {
            ["mmld", "glibc"]
        } else {
            ["glibc", "mmld"]
        };
        for loader in order {
            let r = parse_plugins(&run(&["plugins", loader, dir, &count]));
            plugin.entry(loader).or_default().push(r);
        }
    }

    // ---- tables
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Machine: {}\n\nCommand: `cargo bench --bench scale` ({pairs} process pairs per library, {plugin_runs} plugin processes per loader)\n",
        common::machine_line()
    );
    let _ = writeln!(
        md,
        "#### Generated libraries: load + one lookup (fresh process), and lookups\n"
    );
    let _ = writeln!(
        md,
        "| library | exported functions | relocations | load mmld | load glibc | load mmld/glibc | hit mmld | hit glibc | miss mmld | miss glibc |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for l in &libs {
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
            l.name,
            l.symbols,
            l.relocs,
            fmt_ns(med(&l.mmld, "load_ns")),
            fmt_ns(med(&l.glibc, "load_ns")),
            fmt_ratio(pair_ratio(&l.mmld, &l.glibc, "load_ns")),
            fmt_ns(med(&l.mmld, "hit_ns")),
            fmt_ns(med(&l.glibc, "hit_ns")),
            fmt_ns(med(&l.mmld, "miss_ns")),
            fmt_ns(med(&l.glibc, "miss_ns")),
        );
    }
    {
        // Linear growth: the load time per relocation stays about the same
        // from the small library to the big one (fixed costs dominate the
        // small one, so its figure is an upper bound).
        let per_reloc =
            |l: &LibRow, side: &[BTreeMap<String, String>]| fmt_ns(med(side, "load_ns") / l.relocs);
        let _ = writeln!(
            md,
            "\nLoad time per relocation, {} → {} relocations: mmld {} → {}, glibc {} → {}. \
             A hit in the {}-symbol library costs mmld {} and glibc {} of a hit in the {}-symbol one.\n",
            libs[0].relocs,
            libs[1].relocs,
            per_reloc(&libs[0], &libs[0].mmld),
            per_reloc(&libs[1], &libs[1].mmld),
            per_reloc(&libs[0], &libs[0].glibc),
            per_reloc(&libs[1], &libs[1].glibc),
            libs[1].symbols,
            fmt_ratio(med(&libs[1].mmld, "hit_ns") / med(&libs[0].mmld, "hit_ns")),
            fmt_ratio(med(&libs[1].glibc, "hit_ns") / med(&libs[0].glibc, "hit_ns")),
            libs[0].symbols,
        );
    }

    let _ = writeln!(
        md,
        "#### {} plugins in one process: time to load the k-th plugin (open + get, medians over the range and the runs)\n",
        sizes.plugins
    );
    let _ = writeln!(
        md,
        "| plugins | mmld per load | glibc per load | mmld/glibc | mmld cumulative | glibc cumulative |\n|---|---:|---:|---:|---:|---:|"
    );
    let ranges: Vec<(usize, usize)> = [
        (1, 1),
        (2, 10),
        (11, 100),
        (101, 250),
        (251, 500),
        (501, 1000),
    ]
    .into_iter()
    .filter(|&(lo, _)| lo <= sizes.plugins)
    .map(|(lo, hi)| (lo, hi.min(sizes.plugins)))
    .collect();
    let range_median = |runs: &[PluginRun], lo: usize, hi: usize| {
        median(
            &runs
                .iter()
                .flat_map(|r| r.loads[lo - 1..hi].iter().copied())
                .collect::<Vec<_>>(),
        )
    };
    let cumulative = |runs: &[PluginRun], hi: usize| {
        median(
            &runs
                .iter()
                .map(|r| r.loads[..hi].iter().sum::<f64>())
                .collect::<Vec<_>>(),
        )
    };
    for &(lo, hi) in &ranges {
        let m = range_median(&plugin["mmld"], lo, hi);
        let g = range_median(&plugin["glibc"], lo, hi);
        let label = if lo == hi {
            format!("#{lo}")
        } else {
            format!("#{lo}–#{hi}")
        };
        let _ = writeln!(
            md,
            "| {label} | {} | {} | {} | {} (after {hi}) | {} |",
            fmt_ns(m),
            fmt_ns(g),
            fmt_ratio(m / g),
            fmt_ns(cumulative(&plugin["mmld"], hi)),
            fmt_ns(cumulative(&plugin["glibc"], hi)),
        );
    }
    let _ = writeln!(
        md,
        "\n#### Lookup as plugins accumulate (`plugin_entry` hit / a miss, ns per lookup, medians over the runs)\n"
    );
    let _ = writeln!(
        md,
        "| plugins loaded | hit in 1st: mmld / glibc | hit in newest: mmld / glibc | miss in newest: mmld / glibc |\n|---|---:|---:|---:|"
    );
    let counts: Vec<usize> = plugin["mmld"][0].lookups.keys().copied().collect();
    for k in counts {
        let pick = |loader: &str, which: usize| {
            median(
                &plugin[loader]
                    .iter()
                    .filter_map(|r| r.lookups.get(&k))
                    .map(|t| [t.0, t.1, t.2][which])
                    .collect::<Vec<_>>(),
            )
        };
        let _ = writeln!(
            md,
            "| {k} | {} / {} | {} / {} | {} / {} |",
            fmt_ns(pick("mmld", 0)),
            fmt_ns(pick("glibc", 0)),
            fmt_ns(pick("mmld", 1)),
            fmt_ns(pick("glibc", 1)),
            fmt_ns(pick("mmld", 2)),
            fmt_ns(pick("glibc", 2)),
        );
    }
    println!("\n{md}");
    if bench {
        common::save_markdown("scale.md", &md);
    }
}
