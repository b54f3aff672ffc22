//! LINK: bind symbols and apply relocations to a mapped image.
//!
//! Owns: the scope an object's references are resolved in, applying the
//! relocation kinds `arch` classifies (in one architecture-neutral loop),
//! IFUNC handling, and the report of what was bound. Must never: map or
//! unmap memory itself (a lazy load's call stubs are `runtime::lazy`'s),
//! name an architecture's relocation numbers (ask `arch`), or run any code
//! of the object other than IFUNC resolvers (and none at all in a dry run).
//!
//! Files: `reloc` (the relocation loop and each kind's formula), `relative`
//! (the fast paths: `RELATIVE` runs and `DT_RELR`), `prefault` (the pages
//! relocation will write, faulted in ahead in runs), `tls` (values of TLS
//! relocations), `lookup` (a name in a scope), `symbols` (one object's
//! tables), `hostscope` and `index` (lookups in the host and in whole
//! scopes), with `hostdynamic` (a host object's dynamic section) and
//! `startup` (which host objects were loaded at start-up).

mod bindcache;
mod hostdynamic;
pub mod hostref;
pub mod hostscope;
pub mod index;
mod lookup;
mod prefault;
mod relative;
mod reloc;
mod scopefilter;
pub mod sharing;
mod startup;
pub mod symbols;
pub mod tls;

use crate::arch::current as arch;
use crate::elf::DynamicInfo;
use crate::map::Mapping;
use symbols::SymbolTable;

pub use lookup::resolve_in_scope;
pub use reloc::{check_relocation_count, relocate};

/// Whether LINK may run code of the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    /// Call IFUNC resolvers: the object will run.
    Run,
    /// Never call into the object; collect every unresolved symbol instead
    /// of stopping at the first (`mmld check`).
    DryRun,
}

/// One place a symbol can come from.
pub enum Provider<'a> {
    /// The host's global scope, through glibc's `dlsym`.
    HostGlobal,
    /// A library the host loaded, and its dependencies.
    Host(&'a crate::host::HostLibrary),
    /// An object mmld mapped (possibly the one being linked).
    Object {
        name: &'a str,
        symbols: &'a SymbolTable,
        bias: u64,
        /// TLS module id, when the object has a `PT_TLS`.
        tls_module: Option<u64>,
        /// Executable address ranges: an IFUNC resolver must lie in one.
        code: &'a [(u64, u64)],
    },
}

/// Where a reference was bound.
#[derive(Debug, Clone, Copy)]
pub struct Binding {
    /// The symbol's address (for IFUNCs, the resolver's).
    pub addr: u64,
    pub size: u64,
    /// The definition is an IFUNC in an mmld object: call `addr` to get the
    /// implementation.
    pub ifunc: bool,
    /// For IFUNCs: `addr` lies in an executable segment of its object.
    pub resolver_in_code: bool,
    /// The definition is `STB_GNU_UNIQUE`: one definition process-wide.
    pub unique: bool,
    /// Index of the provider in the scope, for tracing.
    pub provider: usize,
    pub tls_module: Option<u64>,
    /// Definition's value, unbiased (the offset for TLS symbols).
    pub value: u64,
}

/// Relocations seen, by type: a plain array over the architecture's type
/// numbers, counted once per relocation on the hot path.
#[derive(Debug, Clone)]
pub struct RelocationCounts([usize; arch::RELOC_TYPES]);

impl Default for RelocationCounts {
    fn default() -> Self {
        RelocationCounts([0; arch::RELOC_TYPES])
    }
}

impl RelocationCounts {
    fn add(&mut self, rtype: u32) {
        if let Some(c) = self.0.get_mut(rtype as usize) {
            *c += 1;
        }
    }

    fn add_many(&mut self, rtype: u32, n: usize) {
        if let Some(c) = self.0.get_mut(rtype as usize) {
            *c += n;
        }
    }

    /// `(type, count)` for every type seen.
    pub fn iter(&self) -> impl Iterator<Item = (u32, usize)> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(t, n)| (t as u32, *n))
    }

    /// Total of all types.
    pub fn total(&self) -> usize {
        self.0.iter().sum()
    }
}

/// Counts of what LINK did, for `mmld info`, tracing and tests.
#[derive(Debug, Default, Clone)]
pub struct LinkReport {
    pub by_type: RelocationCounts,
    pub relr_addresses: usize,
    pub ifunc_calls: usize,
    pub host_bindings: usize,
    pub unique_bindings: usize,
    /// PLT slots left to bind on first call (lazy loads only).
    pub lazy_slots: usize,
    /// Scope positions whose `STB_GNU_UNIQUE` definitions this object's
    /// relocations made the process-wide one (the first bound): those
    /// objects must stay loaded, as glibc makes them nodelete.
    pub unique_providers: Vec<usize>,
    pub unresolved: Vec<String>,
}

/// Everything relocation needs about the object being linked.
pub struct LinkTarget<'a> {
    pub name: &'a str,
    pub mapping: &'a mut Mapping,
    pub dynamic: &'a DynamicInfo,
    pub symbols: &'a SymbolTable,
    pub tls_module: Option<u64>,
    /// Set for a lazy load: PLT slots whose function has no definition yet
    /// get a stub that binds them on first call, instead of failing.
    pub lazy: Option<LazyTarget<'a>>,
    /// The object's TLS module, segment and descriptor records.
    pub tls: tls::TlsLink<'a>,
    /// Shared relocations: record which relocations are per process, or
    /// replay only those (`None`: the feature is off for this object).
    pub share: Option<&'a mut sharing::ShareHook>,
}

/// Where a lazy load's unbound PLT slots go, and which slots may not be
/// left unbound.
pub struct LazyTarget<'a> {
    pub stubs: &'a mut crate::runtime::lazy::LazyStubs,
    /// Made read-only after relocation: a slot in it could never be bound.
    pub relro: Option<crate::elf::VRange>,
}
