//! Shared relocations (opt-in): each object mmld maps placed at a stable
//! address, and its relocated pages mapped from a cache file so that every
//! process of the same user, on the same boot, shares one physical copy.
//!
//! Owns: the policy (when the feature is on, what an entry is valid for,
//! what a process may trust), the stable address of an object, the cache
//! file's format, and the per-object outcome a [`Library`](crate::Library)
//! reports. `address` derives addresses, `trust` checks the directory and
//! files, `cache_file` reads and writes the format, `classify` says which
//! scope entries are stable, `buildid` reads an object's build id,
//! `session` drives one load.
//! Must never: trust a byte of a cache file before the file passed every
//! trust check and its header matched the live state; map a cache page
//! with a permission the object's segment does not grant; or be used in a
//! secure-mode process.

mod address;
mod buildid;
mod cache_file;
mod classify;
mod session;
mod trust;
mod verify;

pub use classify::ScopeEntry;
pub use session::{ObjectLink, Session};

use std::path::PathBuf;

/// What shared relocations did for one object of a load.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SharingOutcome {
    /// The feature was off for this load.
    Off,
    /// The object's relocated pages came from a valid cache entry.
    Hit,
    /// The object was placed at its stable address and relocated normally,
    /// and a cache entry was written for later loads.
    Written,
    /// The object was loaded normally (and, where possible, its entry
    /// rewritten); the text says why, e.g. "address 0x2a00_0000_0000
    /// collides with an existing mapping", "cache entry stale: libfoo.so
    /// changed", "cache directory /x is group-writable".
    Fallback(String),
}

/// Shared relocations for one object a load mapped
/// ([`Library::relocation_sharing`](crate::Library::relocation_sharing)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharedRelocations {
    /// The object's file.
    pub path: PathBuf,
    /// What happened.
    pub outcome: SharingOutcome,
    /// Pages mapped from the cache file (only on a hit).
    pub pages_from_cache: usize,
    /// Pages holding relocations whose values differ between processes
    /// (host objects, TLS, IFUNC results): relocated privately in this
    /// process, on a hit or not.
    pub pages_private: usize,
    /// The cache file used or written, if any.
    pub cache_file: Option<PathBuf>,
    /// Where the object's first page is mapped in this process.
    pub address: usize,
}

impl SharedRelocations {
    /// The report for an object loaded with the feature off.
    pub(crate) fn off(path: PathBuf, address: usize) -> Self {
        SharedRelocations {
            path,
            outcome: SharingOutcome::Off,
            pages_from_cache: 0,
            pages_private: 0,
            cache_file: None,
            address,
        }
    }
}

/// The environment variable that turns the feature on for every load.
pub const ENV_DIR: &str = "MMLD_SHARE_RELOCATIONS";
/// The environment variable that turns verification on (`1`).
pub const ENV_VERIFY: &str = "MMLD_SHARE_RELOCATIONS_VERIFY";

/// The feature's settings for one load, as options and environment give
/// them.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShareSettings {
    /// Cache directory set by `OpenOptions::share_relocations`.
    pub dir: Option<&'static std::path::Path>,
    /// Set by `OpenOptions::verify_shared_relocations`.
    pub verify: bool,
}

/// What a load uses: the directory (options first, then the environment)
/// and whether to verify. `None` when the feature is off, and always in
/// secure mode, where neither options nor environment turn it on: a
/// setuid program must not map code pointers from a file a less
/// privileged user may have written.
pub fn effective(settings: ShareSettings) -> Option<(PathBuf, bool)> {
    if crate::search::secure::is_secure() {
        return None;
    }
    let env = |name| crate::search::secure::env_var_os(name).filter(|v| !v.is_empty());
    let dir = settings
        .dir
        .map(PathBuf::from)
        .or_else(|| env(ENV_DIR).map(PathBuf::from))?;
    let verify = settings.verify || env(ENV_VERIFY).is_some_and(|v| v == "1");
    Some((dir, verify))
}
