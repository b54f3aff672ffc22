//! `--share-relocations DIR` and `--verify-shared-relocations` on `run`,
//! `maps` and `share`: the options, how a library's sharing outcome is
//! shown, and `share`'s comparison against a normal load.
//!
//! Owns: turning the flags into `OpenOptions` (and into a worker's
//! arguments), the text and JSON of `Library::relocation_sharing`, and the
//! "memory saved" summary `share` prints under its table. Must never: look
//! inside the cache or decide whether it may be used; the library does
//! that, and these are only its answers.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::Value;

use mmld::inspect::ShareTotals;
use mmld::inspect::share::ShareReport;
use mmld::{SharedRelocations, SharingOutcome};

/// The shared-relocation flags of `run`, `maps` and `share`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ShareRelocArgs {
    /// Share relocated pages across processes through a cache in DIR (owned
    /// by you, writable by no one else): the first load writes it, later
    /// loads map its pages instead of relocating them. Same as
    /// MMLD_SHARE_RELOCATIONS=DIR.
    #[arg(long, value_name = "DIR")]
    pub share_relocations: Option<PathBuf>,
    /// With --share-relocations: also relocate fully and compare every page
    /// taken from the cache, failing the load on any difference.
    #[arg(long, requires = "share_relocations")]
    pub verify_shared_relocations: bool,
}

impl ShareRelocArgs {
    /// Whether sharing was asked for on the command line.
    pub fn on(&self) -> bool {
        self.share_relocations.is_some()
    }

    /// Apply the flags to `options` (nothing without `--share-relocations`,
    /// so `MMLD_SHARE_RELOCATIONS` still applies as the library reads it).
    pub fn apply(&self, options: &mut mmld::OpenOptions) {
        if let Some(dir) = &self.share_relocations {
            options.share_relocations(dir.clone());
            options.verify_shared_relocations(self.verify_shared_relocations);
        }
    }

    /// The same flags for a child `mmld` process (share's workers).
    pub fn child_args(&self) -> Vec<std::ffi::OsString> {
        let mut out = Vec::new();
        if let Some(dir) = &self.share_relocations {
            out.push("--share-relocations".into());
            out.push(
                std::path::absolute(dir)
                    .unwrap_or_else(|_| dir.clone())
                    .into(),
            );
            if self.verify_shared_relocations {
                out.push("--verify-shared-relocations".into());
            }
        }
        out
    }
}

/// Write the cache directory's files back to disk, as the kernel does
/// within half a minute anyway: until then a freshly written cache page is
/// dirty in the page cache, and smaps counts a dirty page-cache page that
/// one process alone maps as that process's Private_Dirty.
pub fn write_back(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if let Ok(f) = std::fs::File::open(e.path()) {
            let _ = f.sync_all();
        }
    }
}

/// `hit`, `written`, `fallback` or `off`, and the fallback's reason.
pub fn outcome_label(o: &SharingOutcome) -> (&'static str, Option<&str>) {
    match o {
        SharingOutcome::Off => ("off", None),
        SharingOutcome::Hit => ("hit", None),
        SharingOutcome::Written => ("written", None),
        SharingOutcome::Fallback(why) => ("fallback", Some(why.as_str())),
        _ => ("other", None),
    }
}

/// One object's outcome in JSON form (what `maps --json` and share's
/// workers carry).
#[derive(serde::Serialize)]
struct OutcomeJson<'a> {
    path: std::borrow::Cow<'a, str>,
    outcome: &'static str,
    reason: Option<&'a str>,
    pages_from_cache: usize,
    pages_private: usize,
    cache_file: Option<std::borrow::Cow<'a, str>>,
    address: usize,
}

/// One object's outcome as JSON (what `maps --json` and share's workers carry).
pub fn to_json(s: &SharedRelocations) -> Value {
    let (outcome, reason) = outcome_label(&s.outcome);
    let view = OutcomeJson {
        path: s.path.to_string_lossy(),
        outcome,
        reason,
        pages_from_cache: s.pages_from_cache,
        pages_private: s.pages_private,
        cache_file: s.cache_file.as_ref().map(|p| p.to_string_lossy()),
        address: s.address,
    };
    serde_json::to_value(view).unwrap_or(Value::Null)
}

/// Every object's outcome as a JSON array.
pub fn all_to_json(lib: &mmld::Library) -> Value {
    Value::Array(lib.relocation_sharing().iter().map(to_json).collect())
}

/// One line per object mmld mapped: what the cache did for it.
pub fn to_text(sharing: &[SharedRelocations]) -> String {
    let mut out = String::new();
    for s in sharing {
        let (outcome, reason) = outcome_label(&s.outcome);
        let name = s.path.file_name().map_or_else(
            || s.path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let _ = write!(
            out,
            "shared relocations: {name}: {outcome}, {} pages from the cache, {} relocated privately",
            s.pages_from_cache, s.pages_private
        );
        if let Some(r) = reason {
            let _ = write!(out, " ({r})");
        }
        out.push('\n');
    }
    out
}

/// The cache files the library's objects map pages from, as the kernel
/// names them in `/proc/PID/maps` (canonical paths).
pub fn cache_files(lib: &mmld::Library) -> Vec<PathBuf> {
    lib.relocation_sharing()
        .into_iter()
        .filter_map(|s| s.cache_file)
        .map(|f| std::fs::canonicalize(&f).unwrap_or(f))
        .collect()
}

/// `share --share-relocations`: the workers' report against the same
/// library loaded normally by as many workers.
pub struct Comparison<'a> {
    /// The workers that loaded with the cache.
    pub shared: &'a ShareReport,
    /// As many workers that loaded normally.
    pub normal: &'a ShareReport,
    /// Each shared worker's outcomes (its ready line's `relocation_sharing`).
    pub outcomes: Vec<Value>,
}

fn sum(v: &[u64]) -> u64 {
    v.iter().sum()
}

fn private_dirty(t: &ShareTotals) -> Vec<u64> {
    t.smaps.iter().map(|s| s.private_dirty).collect()
}

/// Distinct frames behind the RELRO rows, summed (privileged only).
fn relro_physical(r: &ShareReport) -> Option<u64> {
    r.rows
        .iter()
        .filter(|row| row.roles.contains(&mmld::inspect::Role::Relro))
        .map(|row| row.physical.as_ref().map(|p| p.physical_pages))
        .sum()
}

/// Resident RELRO pages per worker.
fn relro_resident(r: &ShareReport) -> Vec<u64> {
    let mut per = vec![0; r.pids.len()];
    for row in r
        .rows
        .iter()
        .filter(|row| row.roles.contains(&mmld::inspect::Role::Relro))
    {
        for (w, f) in row.workers.iter().enumerate().take(per.len()) {
            per[w] += f.resident;
        }
    }
    per
}

impl Comparison<'_> {
    /// Outcome counts over all workers and objects: `hit 52, written 0, ...`.
    fn outcome_counts(&self) -> Vec<(String, u64)> {
        let mut counts: Vec<(String, u64)> = Vec::new();
        for o in self.outcomes.iter().filter_map(Value::as_array).flatten() {
            let label = o["outcome"].as_str().unwrap_or("?").to_string();
            match counts.iter_mut().find(|(l, _)| *l == label) {
                Some((_, n)) => *n += 1,
                None => counts.push((label, 1)),
            }
        }
        counts
    }

    /// The summary printed under share's table.
    pub fn to_text(&self) -> String {
        let (s, n) = (self.shared.totals(), self.normal.totals());
        let (sd, nd) = (private_dirty(&s), private_dirty(&n));
        let procs = sd.len().max(1) as u64;
        let mut out = String::new();
        let counts = self
            .outcome_counts()
            .iter()
            .map(|(l, c)| format!("{l} {c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "\nshared relocations: objects over all workers: {counts}"
        );
        let _ = writeln!(
            out,
            "private dirty per process: {} KiB with the cache, {} KiB loaded normally ({} measured each way)",
            sum(&sd) / procs,
            sum(&nd) / procs,
            if procs == 1 {
                "1 worker".to_string()
            } else {
                format!("{procs} workers")
            }
        );
        let saved = sum(&nd).saturating_sub(sum(&sd));
        let _ = writeln!(
            out,
            "memory saved: {} KiB per process{}",
            saved / procs,
            if procs == 1 {
                String::new()
            } else {
                format!(", {saved} KiB over the {procs} processes")
            }
        );
        if let (Some(a), Some(b)) = (relro_physical(self.shared), relro_physical(self.normal)) {
            let per = |r: &ShareReport| relro_resident(r).into_iter().max().unwrap_or(0);
            let _ = writeln!(
                out,
                "RELRO physical pages across the workers: {a} with the cache ({} resident in each), {b} loaded normally ({} resident in each)",
                per(self.shared),
                per(self.normal)
            );
        }
        out
    }

    /// The summary as JSON (the `relocation_sharing` member of share's report).
    pub fn to_json(&self) -> Value {
        let (s, n) = (self.shared.totals(), self.normal.totals());
        let (sd, nd) = (private_dirty(&s), private_dirty(&n));
        let view = SummaryJson {
            workers: &self.outcomes,
            saved_kib: sum(&nd).saturating_sub(sum(&sd)),
            private_dirty_kib: sd,
            normal_private_dirty_kib: nd,
            relro_physical_pages: relro_physical(self.shared),
            normal_relro_physical_pages: relro_physical(self.normal),
            relro_resident_pages: relro_resident(self.shared),
            normal_relro_resident_pages: relro_resident(self.normal),
            normal_totals: n.json(),
            normal_pids: &self.normal.pids,
        };
        serde_json::to_value(view).unwrap_or(Value::Null)
    }
}

/// The comparison's JSON form ([`Comparison::to_json`]).
#[derive(serde::Serialize)]
struct SummaryJson<'a, T: serde::Serialize> {
    workers: &'a [Value],
    private_dirty_kib: Vec<u64>,
    normal_private_dirty_kib: Vec<u64>,
    saved_kib: u64,
    relro_physical_pages: Option<u64>,
    normal_relro_physical_pages: Option<u64>,
    relro_resident_pages: Vec<u64>,
    normal_relro_resident_pages: Vec<u64>,
    normal_totals: T,
    normal_pids: &'a [i32],
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(outcome: SharingOutcome, from_cache: usize) -> SharedRelocations {
        let mut s = SharedRelocations::clone(&base());
        s.outcome = outcome;
        s.pages_from_cache = from_cache;
        s
    }

    fn base() -> SharedRelocations {
        // The only constructor outside the crate: a library's own report.
        // SAFETY: loading the test library runs its constructors, as every
        // test that loads it does.
        let lib = unsafe {
            mmld::Library::open(concat!(env!("CARGO_MANIFEST_DIR"), "/testlibs/libdemo.so"))
        }
        .expect("load testlibs/libdemo.so");
        lib.relocation_sharing()
            .into_iter()
            .next()
            .expect("libdemo.so has a sharing record")
    }

    #[test]
    fn flags_reach_workers_with_an_absolute_directory() {
        let args = ShareRelocArgs {
            share_relocations: Some("cache".into()),
            verify_shared_relocations: true,
        };
        let child = args.child_args();
        assert_eq!(child.len(), 3);
        assert_eq!(child[0], "--share-relocations");
        assert!(PathBuf::from(&child[1]).is_absolute());
        assert_eq!(child[2], "--verify-shared-relocations");
        assert!(ShareRelocArgs::default().child_args().is_empty());
    }

    #[test]
    fn outcomes_are_named_with_their_reason() {
        let off = base();
        assert_eq!(outcome_label(&off.outcome), ("off", None));
        let hit = record(SharingOutcome::Hit, 12);
        let fell = record(
            SharingOutcome::Fallback("cache directory is group-writable".into()),
            0,
        );
        let text = to_text(&[hit.clone(), fell]);
        assert!(
            text.contains("libdemo.so: hit, 12 pages from the cache"),
            "{text}"
        );
        assert!(text.contains("fallback, 0 pages from the cache, 0 relocated privately (cache directory is group-writable)"), "{text}");
        assert_eq!(to_json(&hit)["outcome"], "hit");
        assert_eq!(to_json(&hit)["pages_from_cache"], 12);
    }
}
