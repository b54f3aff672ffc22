//! Three loaders in fresh processes, interleaved: the parent side of the
//! first-load, cycle and lookup comparisons between mmld, glibc and
//! dlopen-rs 0.8.
//!
//! Why separate processes: dlopen-rs exports `dlopen`, `dlsym`, `dlclose`,
//! `dl_iterate_phdr` and `__cxa_atexit` unmangled, so in any binary that
//! links it those names are dlopen-rs's, not glibc's. It is therefore never
//! a dependency of mmld (mmld itself calls glibc's `dlopen`); it lives in
//! `benches/peers/dlopen_rs_runner`, its own workspace with its own
//! `Cargo.lock`, which this module builds into `<target>/peers` with
//! `cargo build --release --locked`. The mmld and glibc workers are the
//! bench binary itself (`--worker`, see `workers.rs`); all three run the
//! same measuring code (`proto.rs`).
//!
//! A round runs one process per loader, in an order that cycles through
//! the six permutations, so no loader always goes first or last. A ratio
//! "to glibc" is taken within each round and the median of those is
//! reported, next to each loader's median.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::proto::LINE_TAG;

pub type Fields = BTreeMap<String, String>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Loader {
    Mmld,
    Glibc,
    DlopenRs,
}

pub const LOADERS: [Loader; 3] = [Loader::Mmld, Loader::Glibc, Loader::DlopenRs];

impl Loader {
    pub fn label(self) -> &'static str {
        match self {
            Loader::Mmld => "mmld",
            Loader::Glibc => "glibc",
            Loader::DlopenRs => "dlopen-rs",
        }
    }
}

/// dlopen-rs does not search Debian's multiarch directory, where
/// libLLVM-15's dependencies live (it stops at `libz3.so.4`); for those
/// rows every loader runs with this `LD_LIBRARY_PATH`.
pub const MULTIARCH: &str = "/usr/lib/x86_64-linux-gnu";

/// The `LD_LIBRARY_PATH` a library's row runs with (same for all three).
pub fn ld_library_path(lib_file: &str) -> Option<&'static str> {
    lib_file.starts_with("libLLVM").then_some(MULTIARCH)
}

/// The label of the dlopen-rs runner loading nothing (whole-process
/// baselines of that binary).
pub const NONE_DLOPEN_RS: &str = "none-dlopen-rs";

/// How to start each loader's worker.
pub struct Workers {
    this_exe: PathBuf,
    dlopen_rs: Result<PathBuf, String>,
}

fn runner_manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peers/dlopen_rs_runner/Cargo.toml")
}

/// Builds the dlopen-rs runner (a no-op when it is up to date).
fn build_dlopen_rs() -> Result<PathBuf, String> {
    let target = super::markdown_dir()
        .parent()
        .map(|t| t.join("peers"))
        .unwrap_or_else(|| PathBuf::from("target/peers"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "building the dlopen-rs runner ({}) into {}",
        runner_manifest().display(),
        target.display()
    );
    let out = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "--quiet",
            "--manifest-path",
        ])
        .arg(runner_manifest())
        .arg("--target-dir")
        .arg(&target)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build of the dlopen-rs runner failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let exe = target.join("release/dlopen_rs_runner");
    if exe.exists() {
        Ok(exe)
    } else {
        Err(format!("{} missing after the build", exe.display()))
    }
}

impl Workers {
    /// The mmld and glibc workers (this binary) and the dlopen-rs runner,
    /// built now. A failed build leaves dlopen-rs out, said in every table.
    pub fn new() -> Workers {
        let this_exe = std::env::current_exe().expect("current_exe");
        let dlopen_rs = build_dlopen_rs();
        if let Err(e) = &dlopen_rs {
            eprintln!("dlopen-rs column left empty: {e}");
        }
        Workers {
            this_exe,
            dlopen_rs,
        }
    }

    pub fn dlopen_rs_error(&self) -> Option<&str> {
        self.dlopen_rs.as_ref().err().map(String::as_str)
    }

    /// Loaders that can run here.
    pub fn loaders(&self) -> Vec<Loader> {
        LOADERS
            .into_iter()
            .filter(|l| *l != Loader::DlopenRs || self.dlopen_rs.is_ok())
            .collect()
    }

    /// The dlopen-rs runner loading nothing (`--worker none`): the
    /// whole-process baseline of that binary.
    pub fn dlopen_rs_none(&self) -> Option<(PathBuf, Vec<String>)> {
        self.program(NONE_DLOPEN_RS)
    }

    /// Program and leading arguments of one loader's worker (`None` for
    /// dlopen-rs when its runner could not be built). `label` may be
    /// `none` (this binary, loading nothing).
    /// `none-dlopen-rs` is the dlopen-rs runner loading nothing.
    pub fn program(&self, label: &str) -> Option<(PathBuf, Vec<String>)> {
        let runner = || self.dlopen_rs.as_ref().ok().cloned();
        let (exe, worker) = match label {
            NONE_DLOPEN_RS => (runner()?, "none"),
            l if l == Loader::DlopenRs.label() => (runner()?, l),
            l => (self.this_exe.clone(), l),
        };
        Some((exe, vec!["--worker".into(), worker.into()]))
    }

    /// A command for a worker, with `LD_LIBRARY_PATH` removed (cargo points
    /// it into `target/` and the toolchain) or set to `ld_path`.
    pub fn command(&self, label: &str, ld_path: Option<&str>) -> Option<Command> {
        let (exe, lead) = self.program(label)?;
        let mut c = super::worker_command(exe);
        c.args(lead);
        if let Some(p) = ld_path {
            c.env("LD_LIBRARY_PATH", p);
        }
        Some(c)
    }

    /// Runs one worker and parses its `MMLD_RUN` line.
    pub fn run(
        &self,
        loader: Loader,
        args: &[&str],
        ld_path: Option<&str>,
    ) -> Result<Fields, String> {
        let mut c = self
            .command(loader.label(), ld_path)
            .ok_or_else(|| format!("{} worker unavailable", loader.label()))?;
        let out = c.args(args).output().map_err(|e| format!("spawn: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find(|l| l.starts_with(LINE_TAG))
            .ok_or_else(|| {
                format!(
                    "{} {} failed ({}): {}",
                    loader.label(),
                    args.join(" "),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            })?;
        Ok(parse_line(line))
    }

    /// `rounds` rounds, one process per available loader each, order
    /// rotating through the permutations. A loader whose worker fails is
    /// reported (once) and left out of the remaining rounds.
    pub fn rounds(&self, rounds: usize, args: &[&str], ld_path: Option<&str>) -> Rounds {
        const PERMS: [[usize; 3]; 6] = [
            [0, 1, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
            [0, 2, 1],
            [1, 0, 2],
        ];
        let mut r = Rounds::default();
        let mut active = self.loaders();
        for i in 0..rounds {
            let mut round: BTreeMap<Loader, Fields> = BTreeMap::new();
            for &k in &PERMS[i % 6] {
                let Some(&loader) = LOADERS.get(k) else {
                    continue;
                };
                if !active.contains(&loader) {
                    continue;
                }
                match self.run(loader, args, ld_path) {
                    Ok(f) => {
                        round.insert(loader, f);
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        r.failed.insert(loader, first_line(&e));
                        active.retain(|l| *l != loader);
                    }
                }
            }
            r.rounds.push(round);
        }
        r
    }
}

fn first_line(s: &str) -> String {
    let l = s.lines().last().unwrap_or("").trim();
    l.chars().take(160).collect()
}

pub fn parse_line(line: &str) -> Fields {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn num(f: &Fields, key: &str) -> f64 {
    f.get(key).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

/// Results of interleaved rounds.
#[derive(Default)]
pub struct Rounds {
    pub rounds: Vec<BTreeMap<Loader, Fields>>,
    /// Loaders whose worker failed, with the reason.
    pub failed: BTreeMap<Loader, String>,
}

impl Rounds {
    pub fn values(&self, loader: Loader, key: &str) -> Vec<f64> {
        self.rounds
            .iter()
            .filter_map(|r| r.get(&loader))
            .map(|f| num(f, key))
            .collect()
    }

    pub fn median(&self, loader: Loader, key: &str) -> f64 {
        super::median(&self.values(loader, key))
    }

    /// Per-round `loader / glibc` of `key`, for rounds that have both.
    pub fn ratios(&self, loader: Loader, key: &str) -> Vec<f64> {
        self.rounds
            .iter()
            .filter_map(|r| Some(num(r.get(&loader)?, key) / num(r.get(&Loader::Glibc)?, key)))
            .collect()
    }

    pub fn ratio(&self, loader: Loader, key: &str) -> f64 {
        super::median(&self.ratios(loader, key))
    }

    /// How many rounds had this loader.
    pub fn count(&self, loader: Loader) -> usize {
        self.rounds
            .iter()
            .filter(|r| r.contains_key(&loader))
            .count()
    }

    /// A field that should be the same in every run (e.g. `still_loaded`):
    /// whether any run has it non-zero.
    pub fn any_nonzero(&self, loader: Loader, key: &str) -> bool {
        self.values(loader, key)
            .iter()
            .any(|v| *v != 0.0 && v.is_finite())
    }
}

/// "12.3 µs" or the failure reason.
pub fn cell_ns(r: &Rounds, loader: Loader, key: &str) -> String {
    match r.failed.get(&loader) {
        Some(e) if r.count(loader) == 0 => format!("failed: {e}"),
        _ => super::fmt_ns(r.median(loader, key)),
    }
}

pub fn cell_ratio(r: &Rounds, loader: Loader, key: &str) -> String {
    if r.count(loader) == 0 {
        return "—".into();
    }
    let v = r.ratios(loader, key);
    format!(
        "{} ({}–{})",
        super::fmt_ratio(super::median(&v)),
        super::fmt_ratio(super::percentile(&v, 0.25)),
        super::fmt_ratio(super::percentile(&v, 0.75))
    )
}

/// "met" when mmld's median ratio is at or under the target and under
/// dlopen-rs's (the issue asks for both); otherwise says which failed.
pub fn verdict(r: &Rounds, key: &str, target: Option<f64>) -> String {
    let m = r.ratio(Loader::Mmld, key);
    let d = r.ratio(Loader::DlopenRs, key);
    let Some(t) = target else {
        return "—".into();
    };
    let under = m <= t;
    let beats = !d.is_finite() || m < d;
    match (under, beats) {
        (true, true) => "met".into(),
        (false, true) => format!("not met (> {t})"),
        (true, false) => "not met (dlopen-rs faster)".into(),
        (false, false) => format!("not met (> {t}, dlopen-rs faster)"),
    }
}
