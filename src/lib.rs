//! mmld: a user-space dynamic loader for ELF shared objects on x86-64 Linux.
//!
//! The pipeline is READ ([`elf`]) → MAP ([`map`]) → LINK ([`link`]) → RUN
//! ([`runtime`]), driven by `loader` over whole dependency trees, with the
//! `registry` keeping track of what is loaded. The public API is
//! [`Library`], [`Symbol`] and [`OpenOptions`], shaped like `libloading`:
//!
//! ```no_run
//! let lib = unsafe { mmld::Library::open("testlibs/libdemo.so") }?;
//! let add = unsafe { lib.get::<extern "C" fn(i64, i64) -> i64>("add") }?;
//! assert_eq!(add(2, 3), 5);
//! # Ok::<(), mmld::Error>(())
//! ```

pub mod arch;
mod bytes;
pub mod check_image;
pub mod describe;
pub mod elf;
mod error;
pub mod host;
pub mod inspect;
mod library;
pub mod link;
mod loader;
pub mod map;
mod object;
pub mod objects;
mod registry;
pub mod runtime;
pub mod search;

pub use check_image::{CheckSummary, check_image};
pub use error::{Error, ErrorKind, Result, Stage};
pub use library::{
    Library, ObjectView, OpenOptions, SegmentView, Symbol, SymbolInfo, SymbolKind, SymbolName,
    lookup_default,
};
pub use loader::{CheckReport, TreeNode};

/// Resolve the dependency tree of `path` without linking or running it
/// (what `mmld deps` shows). Missing libraries appear in the tree and in the
/// returned errors.
pub fn dependency_tree(path: impl AsRef<std::path::Path>) -> Result<(Vec<TreeNode>, Vec<Error>)> {
    loader::tree(path.as_ref())
}
