//! mmld: a user-space dynamic loader for ELF shared objects on x86-64 Linux.
//!
//! mmld maps, relocates and runs shared objects itself, inside a process
//! whose C library is glibc, with the semantics of glibc's `dlopen`. The
//! API is shaped like `libloading`: [`Library`], [`Symbol`] and
//! [`OpenOptions`]. Errors are one type, [`Error`], which names the file,
//! the [`Stage`] and the cause; [`Error::kind`] sorts them into
//! [`ErrorKind`]s a program can match on.
//!
//! ```
//! # let lib_path = concat!(env!("CARGO_MANIFEST_DIR"), "/testlibs/libdemo.so");
//! // SAFETY: libdemo's constructors are sound, and `add` has this signature.
//! let lib = unsafe { mmld::Library::open(lib_path) }?;
//! let add = unsafe { lib.get::<extern "C" fn(i64, i64) -> i64>("add") }?;
//! assert_eq!(add(2, 3), 5);
//! # Ok::<(), mmld::Error>(())
//! ```
//!
//! Besides loading, the crate can look at a file without running it
//! ([`describe`], [`check_image`], [`dependency_tree`]) and, with the
//! `inspect` feature, at what is mapped in a process and how much of it is
//! shared (`inspect`).
//!
//! # Features
//!
//! - `cli` (default): the `mmld` command and what only it needs (clap,
//!   anyhow, serde_json, tracing-subscriber). Turn it off with
//!   `default-features = false` to depend on the library alone, which
//!   needs goblin, libc, thiserror and tracing, and compiles no C.
//! - `inspect` (on with `cli`): the `inspect` module, which reads `/proc`
//!   through procfs.
//! - `serde` (on with `cli`): `serde::Serialize` for [`Description`] and,
//!   with `inspect`, the JSON forms of the reports (`inspect::json`) and
//!   `Serialize`/`Deserialize` for `inspect::ObjectLayout`.
//!
//! The loader reports what it does through `tracing` events under the
//! targets `mmld::libs`, `mmld::bindings` and `mmld::share` (shared
//! relocations: one line per object, hit, written or fallback and why);
//! install any subscriber to see them.
#![warn(missing_docs)]

// The stages (READ → MAP → LINK → RUN) and their driver. Private: their
// types change whenever the loader does; see docs/ARCHITECTURE.md.
mod arch;
mod bytes;
mod check_image;
mod describe;
mod elf;
mod error;
mod fixedhash;
mod library;
mod link;
mod loader;
mod map;
mod object;
mod registry;
mod relshare;

// Not part of the API: the C ABI drop-in of this workspace (`capi/`) and
// this crate's own integration tests reach into these. Hidden from the
// documentation; they change without notice.
#[doc(hidden)]
pub mod host;
#[doc(hidden)]
pub mod objects;
#[doc(hidden)]
pub mod runtime;
#[doc(hidden)]
pub mod search;

#[cfg(feature = "inspect")]
pub mod inspect;

pub use check_image::{CheckSummary, check_image};
pub use describe::{Description, DynamicEntry, DynamicSymbol, SegmentInfo, TlsInfo, describe};
pub use error::{Error, ErrorKind, Result, Stage};
pub use library::{
    Library, ObjectView, OpenOptions, SegmentView, Symbol, SymbolInfo, SymbolKind, SymbolName,
    lookup_default,
};
pub use loader::{CheckReport, TreeNode};
pub use relshare::{SharedRelocations, SharingOutcome};

/// Resolve the dependency tree of `path` without linking or running it
/// (what `mmld deps` shows). Missing libraries appear in the tree and in the
/// returned errors.
///
/// ```
/// # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testlibs/diamond/libdtop.so");
/// // libdtop needs libdleft and libdright, which both need libdbase.
/// let (tree, missing) = mmld::dependency_tree(path)?;
/// assert!(missing.is_empty());
/// assert_eq!(tree[0].name, "libdtop.so");
/// let dbase: Vec<_> = tree.iter().filter(|n| n.name == "libdbase.so").collect();
/// assert_eq!(dbase.len(), 2); // listed under both parents,
/// assert_eq!(dbase.iter().filter(|n| n.repeat).count(), 1); // in full once
/// # Ok::<(), mmld::Error>(())
/// ```
pub fn dependency_tree(path: impl AsRef<std::path::Path>) -> Result<(Vec<TreeNode>, Vec<Error>)> {
    loader::tree(path.as_ref())
}
