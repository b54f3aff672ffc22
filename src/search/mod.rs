//! Finding the file for a needed library.
//!
//! Owns: the glibc-compatible search order ([`paths`]) and the reader for
//! `/etc/ld.so.cache` ([`ldcache`]). Must never: open, map or validate the
//! candidate libraries themselves; the loader does that, so this module can
//! stay pure apart from reading the cache file and `LD_LIBRARY_PATH`.

pub mod ldcache;
pub mod paths;
pub mod secure;

pub use ldcache::{LdCache, LdCacheError, system_cache};
pub use paths::{
    DEFAULT_DIRS, Provenance, SearchRequest, candidates, expand_element, expand_element_in,
    expand_origin, ld_library_path_from_env, split_ld_library_path, split_rpath,
};
