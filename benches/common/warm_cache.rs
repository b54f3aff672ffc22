//! The "warm cache" rows of `first_load` (issue 15): the same fresh-process
//! first load, with mmld sharing relocations through a cache that an
//! earlier load already wrote, against glibc and dlopen-rs in the same
//! rounds.
//!
//! The cache is turned on the way an unmodified host would turn it on:
//! `MMLD_SHARE_RELOCATIONS=DIR` in the workers' environment (glibc and
//! dlopen-rs ignore it). One discarded round writes the cache (mmld's
//! worker is this bench binary, the executable the cache is checked
//! against) and is written back to disk; the measured rounds then find it,
//! which each mmld worker confirms with `cache_hits=N` (objects whose pages
//! came from the cache).

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::peers::{Loader, Rounds, Workers, cell_ns, cell_ratio, ld_library_path, verdict};
use super::{fmt_ratio, median};

/// The libraries with a warm-cache row and the target for each.
pub const WARM_CACHE_LIBS: &[(&str, f64)] = &[("libstdc++.so.6", 0.5), ("libLLVM-15.so.1", 0.3)];

/// Environment variable the library reads (any load in the process).
const SHARE_VAR: &str = "MMLD_SHARE_RELOCATIONS";

/// One warm-cache row.
pub struct WarmRow {
    name: String,
    target: f64,
    rounds: Rounds,
}

/// A fresh cache directory for one library: owned by us, mode 0700.
fn cache_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mmld-bench-cache.{}.{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).expect("create the bench's cache directory");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .expect("chmod the bench's cache directory");
    dir
}

/// Write the fresh cache files back to disk, as the kernel does within
/// half a minute anyway. Until then their pages are dirty in the page
/// cache, and smaps counts a dirty page-cache page that one process alone
/// maps as that process's Private_Dirty: each worker, alone, would report
/// the cache's pages it touched (about 500 KiB for libLLVM-15) as its own.
fn write_back(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if let Ok(f) = std::fs::File::open(e.path()) {
            let _ = f.sync_all();
        }
    }
}

/// Measure the warm-cache row of `name` at `path` (looking up `symbol`).
pub fn measure(w: &Workers, name: &str, path: &Path, symbol: &str, rounds: usize) -> WarmRow {
    let target = WARM_CACHE_LIBS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(f64::NAN, |(_, t)| *t);
    let dir = cache_dir(name);
    let p = path.to_str().expect("UTF-8 path");
    let args = ["first", p, symbol];
    let ld = ld_library_path(name);
    // SAFETY: the bench's main thread is its only thread; the variable is
    // read only by the worker processes it starts.
    unsafe { std::env::set_var(SHARE_VAR, &dir) };
    // The discarded round writes the cache (and warms the page cache).
    w.rounds(1, &args, ld);
    write_back(&dir);
    let r = w.rounds(rounds, &args, ld);
    // SAFETY: as above.
    unsafe { std::env::remove_var(SHARE_VAR) };
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "first_load warm cache {name}: mmld {} ({}), cache hits {} objects",
        cell_ns(&r, Loader::Mmld, "ns"),
        fmt_ratio(r.ratio(Loader::Mmld, "ns")),
        median(&r.values(Loader::Mmld, "cache_hits"))
    );
    WarmRow {
        name: name.to_string(),
        target,
        rounds: r,
    }
}

/// The warm-cache table.
pub fn table(rows: &[WarmRow]) -> String {
    let mut s = String::new();
    s.push_str(
        "| library (warm cache) | rounds | mmld | glibc | dlopen-rs | mmld/glibc (p25–p75) | dlopen-rs/glibc (p25–p75) | objects hit (median) | private dirty KiB mmld / glibc | target | |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n",
    );
    for r in rows {
        let rr = &r.rounds;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} / {:.0} | ≤ {} | {} |",
            r.name,
            rr.count(Loader::Glibc),
            cell_ns(rr, Loader::Mmld, "ns"),
            cell_ns(rr, Loader::Glibc, "ns"),
            cell_ns(rr, Loader::DlopenRs, "ns"),
            cell_ratio(rr, Loader::Mmld, "ns"),
            cell_ratio(rr, Loader::DlopenRs, "ns"),
            median(&rr.values(Loader::Mmld, "cache_hits")),
            rr.median(Loader::Mmld, "private_dirty_kb"),
            rr.median(Loader::Glibc, "private_dirty_kb"),
            r.target,
            verdict(rr, "ns", Some(r.target)),
        );
    }
    s
}
