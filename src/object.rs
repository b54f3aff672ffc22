//! A loaded object: one mapped ELF file with its tables and dependencies.
//!
//! Owns: the pieces that live exactly as long as an object is mapped (the
//! mapping, the symbol tables that point into it, its constructors and
//! destructors), and symbol lookup in an object's local scope. Must never:
//! decide when an object is unloaded (that is the registry's job).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use crate::elf::{DynamicInfo, LoadPlan};
use crate::host::HostLibrary;
use crate::link::symbols::{Request, Sym, SymbolTable};
use crate::link::{LinkReport, Provider};
use crate::map::Mapping;
use crate::runtime::lazy::LazyStubs;
use crate::runtime::tls::TlsModule;
use crate::runtime::unwind::FrameRegistration;
use crate::search::Provenance;

/// An entry of a scope: provided by the host, or mapped by mmld.
#[derive(Debug, Clone)]
pub enum ScopeItem {
    Host(Arc<HostLibrary>),
    Mapped(Arc<LoadedObject>),
}

/// A direct dependency as an object remembers it. Mapped dependencies are
/// weak so that cycles in `DT_NEEDED` do not keep objects alive forever.
#[derive(Debug, Clone)]
pub enum Dep {
    Host(Arc<HostLibrary>),
    Mapped(Weak<LoadedObject>),
}

/// One mmld-mapped object. Fields that are set once while loading are plain;
/// the few that change after publication are atomics.
#[derive(Debug)]
pub struct LoadedObject {
    /// Unique for the life of the process.
    pub id: u64,
    pub path: PathBuf,
    /// The path as the loader was given it, relative or not (glibc's
    /// `l_name`): what error messages at run time name.
    pub opened_as: PathBuf,
    /// `DT_SONAME` if present, otherwise the file name.
    pub name: String,
    pub soname: Option<String>,
    pub dev: u64,
    pub ino: u64,
    pub plan: LoadPlan,
    pub dynamic: DynamicInfo,
    pub symbols: SymbolTable,
    pub needed: Vec<String>,
    pub provenance: Provenance,
    pub link_report: LinkReport,
    /// Validated destructor addresses, in call order.
    pub finalizers: Vec<u64>,
    /// Ids of the objects this one needs (mmld-mapped ones only), so the
    /// registry can compute what is still in use without `Arc` cycles.
    pub dep_ids: Vec<u64>,
    /// Direct dependencies in `DT_NEEDED` order, set once at publication.
    pub deps: OnceLock<Vec<Dep>>,
    /// Address ranges of executable segments (process addresses), for
    /// checking IFUNC resolvers other objects bind to.
    pub code_ranges: Vec<(u64, u64)>,
    pub(crate) initialized: AtomicBool,
    pub(crate) finalized: AtomicBool,
    /// The object's TLS module, unregistered (and every thread's block
    /// freed) when the object is dropped.
    pub tls: Option<TlsModule>,
    /// Stubs of PLT slots bound on first call; freed with the object.
    pub lazy: LazyStubs,
    /// Records its TLS descriptors point to: they die with the object.
    pub _descriptors: crate::runtime::tlsdesc::Descriptors,
    /// Host objects its relocations bound to, kept loaded while it lives.
    pub host_holds: Vec<Arc<crate::link::hostref::HostRef>>,
    /// Unwind tables registered with libgcc; deregistered before unmapping.
    pub frames: Option<FrameRegistration>,
    /// Kept last: dropped after everything that points into it.
    pub mapping: Mapping,
}

impl Drop for LoadedObject {
    fn drop(&mut self) {
        // Debuggers must forget the object before its memory goes away.
        crate::runtime::debugger::remove(self.id);
    }
}

impl LoadedObject {
    pub fn provider(&self) -> Provider<'_> {
        Provider::Object {
            name: &self.name,
            symbols: &self.symbols,
            bias: self.mapping.bias(),
            tls_module: self.tls.as_ref().map(|t| t.id),
            code: &self.code_ranges,
        }
    }

    /// Look a symbol up in this object only.
    pub fn lookup(&self, req: &Request<'_>) -> Option<(u32, Sym)> {
        self.symbols.lookup(req)
    }

    pub fn deps(&self) -> &[Dep] {
        self.deps.get().map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether its unwind tables are registered with the host's unwinder.
    pub fn has_unwind_tables(&self) -> bool {
        self.frames.is_some()
    }

    pub fn is_initialized(&self) -> bool {
        self.initialized.load(Ordering::Acquire)
    }
}
