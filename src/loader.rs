//! The pipeline driver: READ → MAP → LINK → RUN for a whole dependency tree.
//!
//! Owns: finding each `DT_NEEDED` library (host or file), mapping the new
//! ones, building their lookup scope the way glibc's `dlopen` does (global
//! scope, then the root's breadth-first local scope; local first with
//! `deep_bind`; the object itself first with `DT_SYMBOLIC`), recording the
//! objects bindings reached outside their dependencies (glibc's
//! `l_reldeps`), relocating and initialising in glibc's `_dl_sort_maps`
//! order, publishing objects in the registry, and the dependency tree
//! `mmld deps` shows; and the reverse on close. Must never: leave anything
//! behind when a load fails: every mapping of a failed load is unmapped and
//! no constructor of it has run.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use crate::elf::{ElfFile, LoadPlan};
use crate::error::{AttachContext, Error, ErrorKind, Result, Stage};
use crate::link::host::{self, HostLibrary};
use crate::link::hostscope::HostScope;
use crate::link::symbols::SymbolTable;
use crate::link::{self, Binding, LinkMode, LinkReport, LinkTarget, Provider};
use crate::map::{Mapping, Protection, Strategy};
use crate::object::{Dep, LoadedObject, ScopeItem};
use crate::registry::{self, Entry, LOADER_LOCK, SortEdges};
use crate::search::{self, Provenance, SearchRequest};

/// Loader settings, filled by `OpenOptions`.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub global: bool,
    pub deep_bind: bool,
    pub nodelete: bool,
    pub strategy: Strategy,
    pub allow_writable_executable: bool,
    pub allow_text_relocations: bool,
    pub allow_executable_stack: bool,
    /// Fault in RELRO pages for writing in one call before relocating.
    pub prefault_relro: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            global: false,
            deep_bind: false,
            nodelete: false,
            strategy: Strategy::Mmap,
            allow_writable_executable: false,
            allow_text_relocations: false,
            allow_executable_stack: false,
            prefault_relro: false,
        }
    }
}

/// Run a load for real, or only check that it would link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Run,
    Check,
}

/// What a finished load hands to `Library`.
pub struct Loaded {
    pub root: Arc<LoadedObject>,
    /// The root's local scope: itself, then its dependencies breadth-first.
    pub scope: Vec<ScopeItem>,
    /// The host's objects as of this load (lookups in host dependencies).
    pub host: Arc<HostScope>,
}

/// Where a needed name was resolved during one load.
#[derive(Debug, Clone)]
enum Resolved {
    Host(Arc<HostLibrary>),
    /// Index into the batch of objects this load maps.
    Batch(usize),
    Existing(Arc<LoadedObject>),
}

/// An object mapped by this load, not yet published.
struct Pending {
    path: PathBuf,
    name: String,
    soname: Option<String>,
    dev: u64,
    ino: u64,
    plan: LoadPlan,
    dynamic: crate::elf::DynamicInfo,
    symbols: SymbolTable,
    needed: Vec<String>,
    rpath: Vec<PathBuf>,
    runpath: Option<Vec<PathBuf>>,
    loader: Option<usize>,
    provenance: Provenance,
    /// Resolved `DT_NEEDED` entries, in order; entries that could not be
    /// found (only kept going past for `mmld deps`) are left out.
    deps: Vec<Resolved>,
    /// Positions in `needed` of the entries left out of `deps`.
    missing_at: Vec<usize>,
    /// Objects outside its dependencies that its relocations bound to
    /// (glibc's `l_reldeps`); never `Host`.
    reldeps: Vec<Resolved>,
    code_ranges: Vec<(u64, u64)>,
    /// Load bias of this object's mapping (fixed once mapped).
    bias: u64,
    /// TLS module id, reserved at mapping when the object has `PT_TLS`.
    tls: Option<crate::runtime::tls::TlsModule>,
    report: LinkReport,
}

/// One line of a dependency tree (`mmld deps`), in depth-first order: each
/// library's `DT_NEEDED` entries follow it, one level deeper, in order.
#[derive(Debug, Clone)]
pub struct TreeNode {
    /// The needed name (the root: its soname or file name).
    pub name: String,
    /// `None` when it was not found.
    pub path: Option<PathBuf>,
    /// How the search found it (`None` for host objects and missing ones).
    pub provenance: Option<Provenance>,
    /// `true` if the host provides it (glibc family or already loaded).
    pub host: bool,
    /// Already loaded by mmld before this request: reused, not mapped again.
    pub reused: bool,
    /// Its dependencies are listed at another line of the tree, not here:
    /// the line under `loaded_for`, or for libraries already loaded before,
    /// the first line that names them.
    pub repeat: bool,
    /// The library whose `DT_NEEDED` search found it in this load (`None`
    /// for the root, host libraries and libraries loaded before).
    pub loaded_for: Option<String>,
    pub needed_by: Option<String>,
    pub depth: usize,
}

/// Result of `check`: the tree and every unresolved symbol per object.
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub tree: Vec<TreeNode>,
    pub unresolved: Vec<(String, Vec<String>)>,
    pub reports: Vec<(String, LinkReport)>,
}

fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Open `path` and everything it needs.
pub fn open(path: &Path, settings: Settings) -> Result<Loaded> {
    let _guard = LOADER_LOCK.lock();
    let elf = ElfFile::open(path).at(path, Stage::Read)?;
    if let Some(existing) = reuse_root(&elf, settings) {
        tracing::debug!(target: "mmld::libs", path = %path.display(), "already loaded: reusing");
        return Ok(existing);
    }
    let mut batch = Batch::new(Mode::Run, settings);
    batch.add_root(path, elf)?;
    batch.resolve_all()?;
    let scope_items = batch.root_scope();
    batch.link_all(&scope_items, LinkMode::Run)?;
    let objects = batch.publish()?;
    let root = Arc::clone(objects.first().ok_or_else(|| {
        Error::new(
            path,
            Stage::Run,
            ErrorKind::Other("load produced no object".into()),
        )
    })?);
    let scope = materialize_scope(&scope_items, &objects);
    let init_order = {
        let mut reg = registry::registry();
        if let Some(e) = reg.entry_mut(root.id) {
            e.open_count += 1;
            e.nodelete |= settings.nodelete;
        }
        if settings.global {
            // RTLD_GLOBAL puts the library's whole local scope in the
            // global scope, not just the library.
            reg.make_global(&mapped_ids(&scope));
        }
        initfini_of(&mut reg, &root, &scope)
    };
    register_exit_handler();
    run_constructors(&init_order, &scope);
    Ok(Loaded {
        scope,
        root,
        host: Arc::clone(&batch.host),
    })
}

/// Load and link `path` and its tree without running any of its code.
pub fn check(path: &Path, settings: Settings) -> Result<CheckReport> {
    let _guard = LOADER_LOCK.lock();
    let elf = ElfFile::open(path).at(path, Stage::Read)?;
    let mut batch = Batch::new(Mode::Check, settings);
    batch.add_root(path, elf)?;
    batch.resolve_all()?;
    let scope_items = batch.root_scope();
    batch.link_all(&scope_items, LinkMode::DryRun)?;
    // `publish` validates these before a real load; so must a check.
    for (p, mapping) in batch.pending.iter().zip(&batch.mappings) {
        crate::runtime::initializers(mapping, &p.dynamic).at(&p.path, Stage::Run)?;
        crate::runtime::finalizers(mapping, &p.dynamic).at(&p.path, Stage::Run)?;
    }
    Ok(batch.check_report())
}

/// Resolve the tree of `path` without linking (for `mmld deps`). Missing
/// libraries are reported in the tree instead of failing.
pub fn tree(path: &Path) -> Result<(Vec<TreeNode>, Vec<Error>)> {
    let _guard = LOADER_LOCK.lock();
    let elf = ElfFile::open(path).at(path, Stage::Read)?;
    let mut batch = Batch::new(Mode::Check, Settings::default());
    batch.keep_going = true;
    batch.add_root(path, elf)?;
    batch.resolve_all()?;
    let errors = std::mem::take(&mut batch.missing);
    Ok((batch.tree(), errors))
}

fn reuse_root(elf: &ElfFile, settings: Settings) -> Option<Loaded> {
    let mut reg = registry::registry();
    let entry = reg
        .entries
        .iter_mut()
        .find(|e| e.object.dev == elf.dev && e.object.ino == elf.ino)?;
    entry.open_count += 1;
    entry.nodelete |= settings.nodelete;
    let root = Arc::clone(&entry.object);
    let scope = local_scope_of(&root);
    if settings.global {
        reg.make_global(&mapped_ids(&scope));
    }
    // A library first loaded as a dependency and now opened directly gets
    // its own sorted l_initfini, as in glibc (every constructor in it has
    // run already).
    initfini_of(&mut reg, &root, &scope);
    Some(Loaded {
        root,
        scope,
        host: crate::link::hostscope::host_scope(),
    })
}

/// Ids of the mmld-mapped objects of a scope, in order.
fn mapped_ids(scope: &[ScopeItem]) -> Vec<u64> {
    scope
        .iter()
        .filter_map(|s| match s {
            ScopeItem::Mapped(o) => Some(o.id),
            ScopeItem::Host(_) => None,
        })
        .collect()
}

/// glibc's `l_initfini` of a library opened directly: its local scope
/// sorted by [`registry::sort_maps`] with the library forced first and, as
/// when glibc's `_dl_map_object_deps` sorts it, no links of its own.
/// Computed when the library is first opened directly and kept in its
/// registry entry: destructor order at unload follows it.
fn initfini_of(reg: &mut registry::Registry, root: &LoadedObject, scope: &[ScopeItem]) -> Vec<u64> {
    if let Some(list) = reg
        .entries
        .iter()
        .find(|e| e.object.id == root.id)
        .and_then(|e| e.initfini.clone())
    {
        return list;
    }
    let maps = mapped_ids(scope);
    let edges = SortEdges {
        initfini: reg
            .entries
            .iter()
            .filter(|e| e.object.id != root.id)
            .map(|e| (e.object.id, e.initfini_edges()))
            .collect(),
        reldeps: HashMap::new(),
    };
    let sorted = registry::sort_maps(&maps, &edges, true, false);
    if let Some(e) = reg.entry_mut(root.id) {
        e.initfini = Some(sorted.clone());
    }
    sorted
}

/// Breadth-first closure of an already published object's dependencies.
fn local_scope_of(root: &Arc<LoadedObject>) -> Vec<ScopeItem> {
    let mut out = vec![ScopeItem::Mapped(Arc::clone(root))];
    let mut seen_objects: HashSet<u64> = HashSet::from([root.id]);
    let mut seen_hosts: HashSet<String> = HashSet::new();
    let mut queue: VecDeque<Arc<LoadedObject>> = VecDeque::from([Arc::clone(root)]);
    while let Some(obj) = queue.pop_front() {
        for dep in obj.deps() {
            match dep {
                Dep::Host(h) => {
                    if seen_hosts.insert(h.name.clone()) {
                        out.push(ScopeItem::Host(Arc::clone(h)));
                    }
                }
                Dep::Mapped(w) => {
                    if let Some(o) = w.upgrade()
                        && seen_objects.insert(o.id)
                    {
                        out.push(ScopeItem::Mapped(Arc::clone(&o)));
                        queue.push_back(o);
                    }
                }
            }
        }
    }
    out
}

/// A scope entry before publication: pending objects are indices.
#[derive(Clone)]
enum ScopeSlot {
    Host(Arc<HostLibrary>),
    Batch(usize),
    Existing(Arc<LoadedObject>),
}

fn materialize_scope(slots: &[ScopeSlot], objects: &[Arc<LoadedObject>]) -> Vec<ScopeItem> {
    slots
        .iter()
        .filter_map(|s| match s {
            ScopeSlot::Host(h) => Some(ScopeItem::Host(Arc::clone(h))),
            ScopeSlot::Existing(o) => Some(ScopeItem::Mapped(Arc::clone(o))),
            ScopeSlot::Batch(i) => objects.get(*i).map(|o| ScopeItem::Mapped(Arc::clone(o))),
        })
        .collect()
}

struct Batch {
    mode: Mode,
    settings: Settings,
    pending: Vec<Pending>,
    mappings: Vec<Mapping>,
    hosts: HashMap<String, Arc<HostLibrary>>,
    /// The host's objects: read once when the load starts (to tell which
    /// libraries the host already has) and once more before linking
    /// (resolution may have asked glibc to load a glibc-family library).
    host: Arc<HostScope>,
    ld_library_path: Vec<PathBuf>,
    /// `mmld deps`: record missing libraries and go on.
    keep_going: bool,
    missing: Vec<Error>,
}

impl Batch {
    fn new(mode: Mode, settings: Settings) -> Self {
        Batch {
            mode,
            settings,
            pending: Vec::new(),
            mappings: Vec::new(),
            hosts: HashMap::new(),
            host: crate::link::hostscope::host_scope(),
            // Read per load, as glibc reads it per process: a change to
            // the environment applies to the next load. `$ORIGIN` in it is
            // the executable's directory.
            ld_library_path: if std::env::var_os("LD_LIBRARY_PATH").is_some() {
                search::ld_library_path_from_env(
                    std::env::current_exe()
                        .ok()
                        .as_deref()
                        .and_then(Path::parent),
                )
            } else {
                // Unset: nothing to search, and no need to find the
                // executable for `$ORIGIN` (a readlink per load).
                Vec::new()
            },
            keep_going: false,
            missing: Vec::new(),
        }
    }

    fn add_root(&mut self, path: &Path, elf: ElfFile) -> Result<usize> {
        self.map_object(path, elf, None, Provenance::Path)
    }

    fn check_policy(&self, path: &Path, elf: &ElfFile) -> Result<()> {
        let s = &self.settings;
        if !s.allow_writable_executable
            && let Some(seg) = elf
                .plan
                .segments
                .iter()
                .find(|g| g.writable() && g.executable())
        {
            return Err(Error::new(
                path,
                Stage::Read,
                ErrorKind::WritableExecutable { index: seg.index },
            ));
        }
        if !s.allow_executable_stack && elf.plan.stack_executable == Some(true) {
            return Err(Error::new(path, Stage::Read, ErrorKind::ExecutableStack));
        }
        if elf.dynamic.textrel {
            // Text relocations would need the text made writable while the
            // object is mapped; mmld does not do that, allowed or not.
            let kind = if s.allow_text_relocations {
                ErrorKind::Other(
                    "object has text relocations (DT_TEXTREL), which mmld does not apply".into(),
                )
            } else {
                ErrorKind::TextRelocations
            };
            return Err(Error::new(path, Stage::Read, kind));
        }
        Ok(())
    }

    fn map_object(
        &mut self,
        path: &Path,
        elf: ElfFile,
        loader: Option<usize>,
        provenance: Provenance,
    ) -> Result<usize> {
        self.check_policy(path, &elf)?;
        let protection = match self.mode {
            Mode::Run => Protection::Exact,
            Mode::Check => Protection::Inert,
        };
        let mapping = Mapping::map(&elf.file, &elf.plan, self.settings.strategy, protection)
            .at(path, Stage::Map)?;
        // The descriptor is closed here: mappings keep the file alive.
        let ElfFile {
            file,
            dev,
            ino,
            plan,
            dynamic,
        } = elf;
        drop(file);
        let symbols = SymbolTable::new(&mapping, &dynamic).at(path, Stage::Link)?;
        let string = |off: u64| -> Result<String> {
            symbols
                .string(off)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .at(path, Stage::Read)
        };
        let soname = dynamic.soname.map(string).transpose()?;
        let needed = dynamic
            .needed
            .iter()
            .map(|&o| string(o))
            .collect::<Result<Vec<_>>>()?;
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let origin = abs.parent().map(Path::to_path_buf);
        let runpath = dynamic
            .runpath
            .map(|o| string(o).map(|s| search::split_rpath(&s, origin.as_deref())))
            .transpose()?;
        let rpath = match dynamic.rpath {
            // glibc ignores DT_RPATH when DT_RUNPATH is present.
            Some(o) if runpath.is_none() => search::split_rpath(&string(o)?, origin.as_deref()),
            _ => Vec::new(),
        };
        let code_ranges = mapping.code_ranges();
        tracing::debug!(
            target: "mmld::libs",
            path = %path.display(),
            base = format_args!("{:#x}", mapping.base()),
            size = mapping.len(),
            "mapped"
        );
        let name = soname.clone().unwrap_or_else(|| display_name(path));
        let plan_tls = plan.tls;
        self.pending.push(Pending {
            path: abs,
            name,
            soname,
            dev,
            ino,
            plan,
            dynamic,
            symbols,
            needed,
            rpath,
            runpath,
            loader,
            provenance,
            deps: Vec::new(),
            missing_at: Vec::new(),
            reldeps: Vec::new(),
            code_ranges,
            bias: mapping.bias(),
            tls: plan_tls.map(|_| crate::runtime::tls::TlsModule::reserve()),
            report: LinkReport::default(),
        });
        self.mappings.push(mapping);
        Ok(self.pending.len() - 1)
    }

    /// Breadth-first over `DT_NEEDED`, mapping each new library once.
    fn resolve_all(&mut self) -> Result<()> {
        let mut i = 0;
        while i < self.pending.len() {
            let needed = self
                .pending
                .get(i)
                .map(|p| p.needed.clone())
                .unwrap_or_default();
            let mut deps = Vec::with_capacity(needed.len());
            let mut missing_at = Vec::new();
            for (k, name) in needed.iter().enumerate() {
                match self.resolve_one(i, name) {
                    Ok(r) => deps.push(r),
                    Err(e) if self.keep_going => {
                        missing_at.push(k);
                        self.missing.push(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            if let Some(p) = self.pending.get_mut(i) {
                p.deps = deps;
                p.missing_at = missing_at;
            }
            i += 1;
        }
        Ok(())
    }

    fn host_library(&mut self, name: &str, load_if_absent: bool) -> Option<Arc<HostLibrary>> {
        if let Some(h) = self.hosts.get(name) {
            return Some(Arc::clone(h));
        }
        // Ask the host-scope table, not glibc: an `RTLD_NOLOAD` probe by
        // bare name makes glibc search the file system for it.
        let h = match self
            .host
            .loaded_as(name)
            .and_then(|o| HostLibrary::loaded_from(name, &o.name))
        {
            Some(h) => h,
            None if load_if_absent => HostLibrary::load_system(name)?,
            None => return None,
        };
        let h = Arc::new(h);
        self.hosts.insert(name.to_string(), Arc::clone(&h));
        Some(h)
    }

    fn resolve_one(&mut self, from: usize, name: &str) -> Result<Resolved> {
        let requester = self
            .pending
            .get(from)
            .map(|p| (p.name.clone(), p.path.clone()))
            .unwrap_or_default();
        // The C library's own family belongs to the host: bind to its copy,
        // asking glibc to load it if the host has not yet.
        if host::is_glibc_family(name) {
            if let Some(h) = self.host_library(name, true) {
                tracing::debug!(target: "mmld::libs", name, needed_by = %requester.0, "provided by the host (glibc family)");
                return Ok(Resolved::Host(h));
            }
        } else if !name.contains('/')
            && let Some(h) = self.host_library(name, false)
        {
            tracing::debug!(target: "mmld::libs", name, needed_by = %requester.0, "already loaded by the host: reusing");
            return Ok(Resolved::Host(h));
        }
        if let Some(e) = registry::registry().find_by_soname(name) {
            tracing::debug!(target: "mmld::libs", name, needed_by = %requester.0, file = %e.object.path.display(), "already loaded by mmld: reusing");
            return Ok(Resolved::Existing(Arc::clone(&e.object)));
        }
        if let Some(j) = self
            .pending
            .iter()
            .position(|p| p.soname.as_deref() == Some(name))
        {
            return Ok(Resolved::Batch(j));
        }

        let chain = self.rpath_chain(from);
        let requester_runpath = self.pending.get(from).and_then(|p| p.runpath.clone());
        let nodeflib = self
            .pending
            .get(from)
            .is_some_and(|p| p.dynamic.flags_1 & 0x800 != 0);
        let req = SearchRequest {
            name,
            rpaths_of_chain: &chain,
            runpath: requester_runpath.as_deref(),
            ld_library_path: &self.ld_library_path,
            nodeflib,
        };
        let candidates = search::candidates(&req, search::system_cache());
        let mut searched = Vec::new();
        for (candidate, provenance) in candidates {
            tracing::debug!(target: "mmld::libs", file = %candidate.display(), how = %provenance, "trying");
            searched.push(candidate.clone());
            let elf = match ElfFile::open(&candidate) {
                Ok(elf) => elf,
                // Like glibc: a missing file or an object for another
                // machine or class is skipped; the search goes on.
                Err(
                    ErrorKind::Io { .. }
                    | ErrorKind::WrongMachine { .. }
                    | ErrorKind::Not64Bit { .. }
                    | ErrorKind::NotLittleEndian { .. }
                    | ErrorKind::NotRegularFile { .. },
                ) => continue,
                Err(kind) => return Err(Error::new(&candidate, Stage::Read, kind)),
            };
            if let Some(e) = registry::registry().find_by_file(elf.dev, elf.ino) {
                return Ok(Resolved::Existing(Arc::clone(&e.object)));
            }
            if let Some(j) = self
                .pending
                .iter()
                .position(|p| p.dev == elf.dev && p.ino == elf.ino)
            {
                return Ok(Resolved::Batch(j));
            }
            tracing::debug!(target: "mmld::libs", name, file = %candidate.display(), how = %provenance, needed_by = %requester.0, "found");
            let j = self.map_object(&candidate, elf, Some(from), provenance)?;
            return Ok(Resolved::Batch(j));
        }
        Err(Error::new(
            &requester.1,
            Stage::Open,
            ErrorKind::MissingDependency {
                name: name.to_string(),
                needed_by: requester.0,
                searched,
            },
        ))
    }

    /// `DT_RPATH`s of the requesting object and of each object that loaded
    /// it, up to the root (used only when the requester has no RUNPATH).
    fn rpath_chain(&self, from: usize) -> Vec<(String, Vec<PathBuf>)> {
        let mut out = Vec::new();
        let mut at = Some(from);
        while let Some(i) = at {
            let Some(p) = self.pending.get(i) else { break };
            out.push((p.name.clone(), p.rpath.clone()));
            at = p.loader;
            if out.len() > self.pending.len() {
                break;
            }
        }
        out
    }

    /// The root's local scope: itself and its dependencies, breadth-first,
    /// each once (glibc's `l_searchlist`). Libraries already loaded take
    /// their place in the same breadth-first walk, and so do their own
    /// dependencies; host libraries are listed but not walked into (the
    /// host resolves lookups in them with their dependencies).
    fn root_scope(&self) -> Vec<ScopeSlot> {
        enum Node {
            Batch(usize),
            Existing(Arc<LoadedObject>),
        }
        let mut out = vec![ScopeSlot::Batch(0)];
        let mut seen_batch: HashSet<usize> = HashSet::from([0]);
        let mut seen_existing: HashSet<u64> = HashSet::new();
        let mut seen_hosts: HashSet<String> = HashSet::new();
        let mut queue: VecDeque<Node> = VecDeque::from([Node::Batch(0)]);
        while let Some(node) = queue.pop_front() {
            let deps: Vec<Resolved> = match node {
                Node::Batch(i) => self
                    .pending
                    .get(i)
                    .map(|p| p.deps.clone())
                    .unwrap_or_default(),
                Node::Existing(o) => o
                    .deps()
                    .iter()
                    .filter_map(|d| match d {
                        Dep::Host(h) => Some(Resolved::Host(Arc::clone(h))),
                        Dep::Mapped(w) => w.upgrade().map(Resolved::Existing),
                    })
                    .collect(),
            };
            for dep in deps {
                match dep {
                    Resolved::Batch(j) => {
                        if seen_batch.insert(j) {
                            out.push(ScopeSlot::Batch(j));
                            queue.push_back(Node::Batch(j));
                        }
                    }
                    Resolved::Host(h) => {
                        if seen_hosts.insert(h.name.clone()) {
                            out.push(ScopeSlot::Host(h));
                        }
                    }
                    Resolved::Existing(o) => {
                        if seen_existing.insert(o.id) {
                            out.push(ScopeSlot::Existing(Arc::clone(&o)));
                            queue.push_back(Node::Existing(o));
                        }
                    }
                }
            }
        }
        out
    }

    /// Relocate every object of the batch, dependencies first.
    fn link_all(&mut self, root_scope: &[ScopeSlot], mode: LinkMode) -> Result<()> {
        let globals = registry::registry().global_objects();
        self.host = crate::link::hostscope::host_scope();
        let host = Arc::clone(&self.host);
        // Bindings are cached per symbol, so each object probes the global
        // scope at most once per entry of its symbol table.
        let probes = self
            .pending
            .iter()
            .map(|p| p.symbols.count() as usize)
            .sum();
        host.expect_global_probes(probes);
        let order = self.dependency_order();
        for i in order {
            self.link_one(i, root_scope, &globals, &host, mode)?;
        }
        Ok(())
    }

    /// The order glibc relocates (and then initialises) a load in: the
    /// reverse of [`registry::sort_maps`] over the batch in breadth-first
    /// order, with the root forced first and, as at that point in glibc's
    /// `_dl_map_object_deps`, without links of its own. Objects loaded
    /// before cannot reach new ones, so leaving them out changes nothing.
    /// Batch indices stand in for object ids.
    fn dependency_order(&self) -> Vec<usize> {
        let maps: Vec<u64> = (0..self.pending.len() as u64).collect();
        let edges = SortEdges {
            initfini: self
                .pending
                .iter()
                .enumerate()
                .skip(1)
                .map(|(i, p)| {
                    let deps = p
                        .deps
                        .iter()
                        .filter_map(|d| match d {
                            Resolved::Batch(j) => Some(*j as u64),
                            _ => None,
                        })
                        .collect();
                    (i as u64, deps)
                })
                .collect(),
            reldeps: HashMap::new(),
        };
        registry::sort_maps(&maps, &edges, true, false)
            .into_iter()
            .rev()
            .map(|i| i as usize)
            .collect()
    }

    fn link_one(
        &mut self,
        i: usize,
        root_scope: &[ScopeSlot],
        globals: &[Arc<LoadedObject>],
        host: &HostScope,
        mode: LinkMode,
    ) -> Result<()> {
        let (Some(p), Some(mapping)) = (self.pending.get(i), self.mappings.get_mut(i)) else {
            return Ok(());
        };
        // Each provider goes with the mmld object it belongs to (`None` for
        // the host), to record relocation dependencies.
        let mut global_part: Vec<(Provider<'_>, Option<Resolved>)> =
            vec![(Provider::HostGlobal, None)];
        global_part.extend(
            globals
                .iter()
                .map(|o| (o.provider(), Some(Resolved::Existing(Arc::clone(o))))),
        );
        let mut local_part: Vec<(Provider<'_>, Option<Resolved>)> =
            Vec::with_capacity(root_scope.len());
        for slot in root_scope {
            local_part.push(match slot {
                ScopeSlot::Host(h) => (Provider::Host(h), None),
                ScopeSlot::Existing(o) => (o.provider(), Some(Resolved::Existing(Arc::clone(o)))),
                ScopeSlot::Batch(j) => {
                    let Some(q) = self.pending.get(*j) else {
                        continue;
                    };
                    let provider = Provider::Object {
                        name: &q.name,
                        symbols: &q.symbols,
                        bias: q.bias,
                        tls_module: q.tls.as_ref().map(|t| t.id),
                        code: &q.code_ranges,
                    };
                    (provider, Some(Resolved::Batch(*j)))
                }
            });
        }
        // glibc's l_scope: [global scope, local scope], the local scope first
        // with RTLD_DEEPBIND, and DT_SYMBOLIC puts the object itself before
        // both (dl-object.c, dl-load.c).
        let mut scope: Vec<(Provider<'_>, Option<Resolved>)> = Vec::new();
        if p.dynamic.symbolic {
            let own = Provider::Object {
                name: &p.name,
                symbols: &p.symbols,
                bias: p.bias,
                tls_module: p.tls.as_ref().map(|t| t.id),
                code: &p.code_ranges,
            };
            scope.push((own, Some(Resolved::Batch(i))));
        }
        if self.settings.deep_bind {
            scope.extend(local_part);
            scope.extend(global_part);
        } else {
            scope.extend(global_part);
            scope.extend(local_part);
        }
        let (scope, owners): (Vec<Provider<'_>>, Vec<Option<Resolved>>) = scope.into_iter().unzip();
        let names: Vec<String> = scope.iter().map(provider_name).collect();
        // Which scope entries received a binding (indexed by position).
        let mut bound = vec![false; scope.len()];
        let mut target = LinkTarget {
            name: &p.name,
            mapping,
            dynamic: &p.dynamic,
            symbols: &p.symbols,
            tls_module: p.tls.as_ref().map(|t| t.id),
        };
        let from = p.name.clone();
        if let (Some(relro), LinkMode::Run, true) =
            (p.plan.relro, mode, self.settings.prefault_relro)
        {
            target.mapping.prefault_for_relocation(relro);
        }
        let report = link::relocate(&mut target, &scope, host, mode, |sym, ver, b: &Binding| {
            if let Some(slot) = bound.get_mut(b.provider) {
                *slot = true;
            }
            if tracing::enabled!(target: "mmld::bindings", tracing::Level::DEBUG) {
                let to = names
                    .get(b.provider)
                    .map(String::as_str)
                    .unwrap_or("itself");
                tracing::debug!(
                    target: "mmld::bindings",
                    "{from}: {}{} -> {to} at {:#x}",
                    String::from_utf8_lossy(sym),
                    ver.map(|v| format!("@{}", String::from_utf8_lossy(v))).unwrap_or_default(),
                    b.addr
                );
            }
        })
        .at(&p.path, Stage::Link)?;
        // The TLS image is taken after relocation: .tdata can hold
        // relocated pointers.
        if let (Some(t), Some(module), LinkMode::Run) = (p.plan.tls, p.tls.as_ref(), mode) {
            let image = mapping
                .copy_out(t.vaddr, t.filesz)
                .ok_or(ErrorKind::TableOutsideImage {
                    tag: "PT_TLS",
                    addr: t.vaddr,
                    end: t.vaddr.saturating_add(t.filesz),
                })
                .at(&p.path, Stage::Link)?;
            module
                .publish(image, t.memsz, t.align)
                .map_err(|detail| ErrorKind::TlsUnsupported { detail })
                .at(&p.path, Stage::Link)?;
        }
        if let Some(relro) = p.plan.relro {
            mapping.seal_relro(relro).at(&p.path, Stage::Map)?;
        }
        let reldeps = self.relocation_dependencies(i, root_scope, &bound, &owners);
        if let Some(p) = self.pending.get_mut(i) {
            p.report = report;
            p.reldeps = reldeps;
        }
        Ok(())
    }

    /// The objects object `i` bound symbols to that it does not depend on
    /// (glibc's `add_dependency`): not itself, not the host, not
    /// `DF_1_NODELETE` objects, and not already among its dependencies,
    /// which for the root means its whole local scope and for the others
    /// their direct `DT_NEEDED` entries. A binding into a library opened
    /// with the global option, or into a sibling that interposes, must
    /// keep that object loaded as long as object `i` is.
    fn relocation_dependencies(
        &self,
        i: usize,
        root_scope: &[ScopeSlot],
        bound: &[bool],
        owners: &[Option<Resolved>],
    ) -> Vec<Resolved> {
        let Some(p) = self.pending.get(i) else {
            return Vec::new();
        };
        let already = |r: &Resolved| -> bool {
            let same = |d: &Resolved| match (d, r) {
                (Resolved::Batch(a), Resolved::Batch(b)) => a == b,
                (Resolved::Existing(a), Resolved::Existing(b)) => a.id == b.id,
                _ => false,
            };
            if i == 0 {
                root_scope.iter().any(|slot| match (slot, r) {
                    (ScopeSlot::Batch(a), Resolved::Batch(b)) => a == b,
                    (ScopeSlot::Existing(a), Resolved::Existing(b)) => a.id == b.id,
                    _ => false,
                })
            } else {
                p.deps.iter().any(same)
            }
        };
        let indices: Vec<usize> = bound
            .iter()
            .enumerate()
            .filter_map(|(k, used)| used.then_some(k))
            .collect();
        let mut out: Vec<Resolved> = Vec::new();
        for k in indices {
            let Some(Some(r)) = owners.get(k) else {
                continue;
            };
            let nodelete = match r {
                Resolved::Batch(j) if *j == i => continue,
                Resolved::Batch(j) => self.pending.get(*j).is_some_and(|q| q.dynamic.nodelete()),
                Resolved::Existing(o) => o.dynamic.nodelete(),
                Resolved::Host(_) => continue,
            };
            if nodelete || already(r) {
                continue;
            }
            let duplicate = out.iter().any(|d| match (d, r) {
                (Resolved::Batch(a), Resolved::Batch(b)) => a == b,
                (Resolved::Existing(a), Resolved::Existing(b)) => a.id == b.id,
                _ => false,
            });
            if !duplicate {
                tracing::debug!(target: "mmld::libs", from = %p.name, to = %self.resolved_name(r), "relocation dependency");
                out.push(r.clone());
            }
        }
        out
    }

    fn resolved_name(&self, r: &Resolved) -> String {
        match r {
            Resolved::Host(h) => h.name.clone(),
            Resolved::Batch(j) => self
                .pending
                .get(*j)
                .map(|q| q.name.clone())
                .unwrap_or_default(),
            Resolved::Existing(o) => o.name.clone(),
        }
    }

    /// Turn the batch into published objects (registry entries, not yet
    /// opened). Returns them in batch order (root first).
    fn publish(&mut self) -> Result<Vec<Arc<LoadedObject>>> {
        let pending = std::mem::take(&mut self.pending);
        let mappings = std::mem::take(&mut self.mappings);
        // Validate every constructor and destructor before publishing
        // anything, so a bad pointer fails the whole load cleanly.
        let mut ready = Vec::with_capacity(pending.len());
        for (p, mapping) in pending.into_iter().zip(mappings) {
            let _init =
                crate::runtime::initializers(&mapping, &p.dynamic).at(&p.path, Stage::Run)?;
            let fini = crate::runtime::finalizers(&mapping, &p.dynamic).at(&p.path, Stage::Run)?;
            ready.push((p, mapping, fini));
        }
        let any_unique = ready.iter().any(|(p, _, _)| p.report.unique_bindings > 0);
        let ids: Vec<u64> = ready.iter().map(|_| registry::next_object_id()).collect();
        let mut resolved = Vec::with_capacity(ready.len());
        let mut reldeps: Vec<Vec<u64>> = Vec::with_capacity(ready.len());
        let mut objects = Vec::with_capacity(ready.len());
        for ((p, mapping, fini), id) in ready.into_iter().zip(&ids) {
            resolved.push(p.deps.clone());
            reldeps.push(
                p.reldeps
                    .iter()
                    .filter_map(|r| match r {
                        Resolved::Batch(j) => ids.get(*j).copied(),
                        Resolved::Existing(o) => Some(o.id),
                        Resolved::Host(_) => None,
                    })
                    .collect(),
            );
            objects.push(Arc::new(make_object(p, mapping, fini, *id, &ids)));
        }
        // Dependencies are weak references, filled in once every object of
        // the batch exists (they may refer to each other in a cycle).
        for (obj, deps) in objects.iter().zip(resolved) {
            let deps = deps
                .into_iter()
                .map(|d| match d {
                    Resolved::Host(h) => Dep::Host(h),
                    Resolved::Batch(j) => {
                        Dep::Mapped(objects.get(j).map(Arc::downgrade).unwrap_or_default())
                    }
                    Resolved::Existing(o) => Dep::Mapped(Arc::downgrade(&o)),
                })
                .collect();
            let _ = obj.deps.set(deps);
        }
        let mut reg = registry::registry();
        for (o, reldeps) in objects.iter().zip(reldeps) {
            // Like glibc, an object whose STB_GNU_UNIQUE definitions were
            // bound stays loaded: other objects may use them.
            let nodelete = o.dynamic.nodelete() || (any_unique && o.symbols.defines_unique());
            reg.entries.push(Entry {
                object: Arc::clone(o),
                open_count: 0,
                global: false,
                global_seq: 0,
                nodelete,
                initfini: None,
                reldeps,
                init_seq: 0,
                pending_thread_dtors: 0,
            });
        }
        Ok(objects)
    }

    fn check_report(&self) -> CheckReport {
        CheckReport {
            tree: self.tree(),
            unresolved: self
                .pending
                .iter()
                .filter(|p| !p.report.unresolved.is_empty())
                .map(|p| (p.name.clone(), p.report.unresolved.clone()))
                .collect(),
            reports: self
                .pending
                .iter()
                .map(|p| (p.name.clone(), p.report.clone()))
                .collect(),
        }
    }

    /// The dependency tree, depth-first from the root, each `DT_NEEDED`
    /// entry under the library that needs it, in order. A library mapped by
    /// this load has its dependencies listed under the library whose search
    /// found it (the one its provenance is about); everywhere else it is a
    /// single line marked `repeat`, so shared libraries appear once in full
    /// and cycles end. Libraries mmld had loaded before are listed in full
    /// where first met, with their recorded dependencies.
    fn tree(&self) -> Vec<TreeNode> {
        #[derive(Clone)]
        enum Node {
            Batch(usize),
            Existing(Arc<LoadedObject>),
            Host(Arc<HostLibrary>),
            Missing,
        }
        #[derive(PartialEq, Eq, Hash)]
        enum Key {
            Batch(usize),
            Existing(u64),
            Host(String),
        }
        let children = |node: &Node| -> Vec<(String, Node)> {
            match node {
                Node::Batch(i) => {
                    let Some(p) = self.pending.get(*i) else {
                        return Vec::new();
                    };
                    let mut deps = p.deps.iter();
                    p.needed
                        .iter()
                        .enumerate()
                        .filter_map(|(k, name)| {
                            if p.missing_at.contains(&k) {
                                return Some((name.clone(), Node::Missing));
                            }
                            let node = match deps.next()? {
                                Resolved::Batch(j) => Node::Batch(*j),
                                Resolved::Existing(o) => Node::Existing(Arc::clone(o)),
                                Resolved::Host(h) => Node::Host(Arc::clone(h)),
                            };
                            Some((name.clone(), node))
                        })
                        .collect()
                }
                Node::Existing(o) => o
                    .needed
                    .iter()
                    .zip(o.deps())
                    .filter_map(|(name, d)| {
                        let node = match d {
                            Dep::Host(h) => Node::Host(Arc::clone(h)),
                            Dep::Mapped(w) => Node::Existing(w.upgrade()?),
                        };
                        Some((name.clone(), node))
                    })
                    .collect(),
                Node::Host(_) | Node::Missing => Vec::new(),
            }
        };
        let mut out = Vec::new();
        let mut listed: HashSet<Key> = HashSet::new();
        let root_name = self
            .pending
            .first()
            .map(|p| p.name.clone())
            .unwrap_or_default();
        // (name, node, needed_by and its batch index, depth), popped in
        // depth-first order.
        type Item = (String, Node, Option<(String, Option<usize>)>, usize);
        let mut stack: Vec<Item> = vec![(root_name, Node::Batch(0), None, 0)];
        while let Some((name, node, parent, depth)) = stack.pop() {
            let parent_index = parent.as_ref().and_then(|(_, i)| *i);
            let needed_by = parent.map(|(n, _)| n);
            let loader = match &node {
                Node::Batch(i) => self.pending.get(*i).and_then(|p| p.loader),
                _ => None,
            };
            let full_here = match &node {
                Node::Batch(i) => {
                    (*i == 0 || loader == parent_index) && listed.insert(Key::Batch(*i))
                }
                Node::Existing(o) => listed.insert(Key::Existing(o.id)),
                Node::Host(h) => {
                    listed.insert(Key::Host(h.name.clone()));
                    true
                }
                Node::Missing => true,
            };
            let repeat = !full_here;
            let loaded_for = loader
                .and_then(|l| self.pending.get(l))
                .map(|l| l.name.clone());
            let own_index = match &node {
                Node::Batch(i) => Some(*i),
                _ => None,
            };
            let (path, provenance, host, reused) = match &node {
                Node::Batch(i) => {
                    let p = self.pending.get(*i);
                    (
                        p.map(|p| p.path.clone()),
                        p.map(|p| p.provenance.clone()),
                        false,
                        false,
                    )
                }
                Node::Existing(o) => (
                    Some(o.path.clone()),
                    Some(o.provenance.clone()),
                    false,
                    true,
                ),
                Node::Host(h) => (h.path(), None, true, false),
                Node::Missing => (None, None, false, false),
            };
            if !repeat {
                for (child, child_node) in children(&node).into_iter().rev() {
                    stack.push((
                        child,
                        child_node,
                        Some((name.clone(), own_index)),
                        depth + 1,
                    ));
                }
            }
            out.push(TreeNode {
                name,
                path,
                provenance,
                host,
                reused,
                repeat,
                loaded_for,
                needed_by,
                depth,
            });
        }
        out
    }
}

fn provider_name(p: &Provider<'_>) -> String {
    match p {
        Provider::HostGlobal => "host global scope".to_string(),
        Provider::Host(h) => h.name.clone(),
        Provider::Object { name, .. } => (*name).to_string(),
    }
}

/// Run the constructors of the objects of `scope` not initialised yet, in
/// the reverse of the root's sorted `l_initfini` (`order`): dependencies
/// first, as glibc's `_dl_init` does. For the diamond top -> {left, right}
/// -> base this is base, right, left, top (not a post-order walk from the
/// root, which would give base, left, right, top); in a cycle the library
/// opened runs last.
fn run_constructors(order: &[u64], scope: &[ScopeItem]) {
    for id in order.iter().rev() {
        let Some(obj) = scope.iter().find_map(|s| match s {
            ScopeItem::Mapped(o) if o.id == *id => Some(o),
            _ => None,
        }) else {
            continue;
        };
        if obj.initialized.swap(true, Ordering::AcqRel) {
            continue;
        }
        let seq = registry::next_init_seq();
        if let Some(e) = registry::registry().entry_mut(obj.id) {
            e.init_seq = seq;
        }
        let inits = crate::runtime::initializers(&obj.mapping, &obj.dynamic).unwrap_or_default();
        tracing::debug!(target: "mmld::libs", name = %obj.name, count = inits.len(), "running constructors");
        // SAFETY: the object is fully relocated, published and mapped (the
        // scope holds an Arc), and the addresses were validated by
        // `initializers`.
        unsafe { crate::runtime::run_initializers(&inits) };
    }
}

/// Run, at process exit, the destructors of objects still loaded (glibc does
/// the same for libraries opened with `dlopen`). Nothing is unmapped: exit
/// handlers registered by those objects may still run after this.
extern "C" fn finalize_at_exit() {
    // A thread stuck inside a load at exit must not make exit hang.
    let Some(_guard) = LOADER_LOCK.try_lock() else {
        return;
    };
    // glibc's _dl_fini sorts every loaded object the same way as dlclose.
    let live: Vec<Arc<LoadedObject>> = {
        let reg = registry::registry();
        reg.fini_order()
            .into_iter()
            .filter_map(|id| reg.entries.iter().find(|e| e.object.id == id))
            .map(|e| Arc::clone(&e.object))
            .collect()
    };
    for obj in live {
        if obj.initialized.load(Ordering::Acquire) && !obj.finalized.swap(true, Ordering::AcqRel) {
            // SAFETY: still mapped (registry and we hold it); destructors
            // were validated at load.
            unsafe { crate::runtime::run_finalizers(&obj.finalizers) };
        }
    }
}

fn register_exit_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a function with the C library's exit handlers;
        // it takes no arguments and only touches mmld's own state.
        unsafe { libc::atexit(finalize_at_exit) };
    });
}

/// Drop one open handle on `root`; unload whatever is no longer needed.
pub fn close(root: &Arc<LoadedObject>) {
    let _guard = LOADER_LOCK.lock();
    let dead = {
        let mut reg = registry::registry();
        if let Some(e) = reg.entry_mut(root.id) {
            e.open_count = e.open_count.saturating_sub(1);
        }
        reg.collect_unused()
    };
    for obj in &dead {
        if obj.initialized.load(Ordering::Acquire) && !obj.finalized.swap(true, Ordering::AcqRel) {
            tracing::debug!(target: "mmld::libs", name = %obj.name, "running destructors and unmapping");
            // SAFETY: the object is still mapped (we hold an Arc) and its
            // destructors were validated at load.
            unsafe { crate::runtime::run_finalizers(&obj.finalizers) };
        }
    }
    drop(dead);
}

fn make_object(
    p: Pending,
    mapping: Mapping,
    finalizers: Vec<u64>,
    id: u64,
    ids: &[u64],
) -> LoadedObject {
    let dep_ids = p
        .deps
        .iter()
        .filter_map(|d| match d {
            Resolved::Host(_) => None,
            Resolved::Batch(j) => ids.get(*j).copied(),
            Resolved::Existing(o) => Some(o.id),
        })
        .collect();
    // Unwind tables are registered before any constructor can throw.
    let frames = crate::runtime::unwind::FrameRegistration::register(&mapping, p.plan.eh_frame_hdr);
    crate::runtime::debugger::add(
        id,
        &p.path,
        mapping.bias(),
        p.plan.dynamic.map_or(0, |d| mapping.address_of(d.vaddr)),
    );
    LoadedObject {
        id,
        tls: p.tls,
        frames,
        path: p.path,
        name: p.name,
        soname: p.soname,
        dev: p.dev,
        ino: p.ino,
        plan: p.plan,
        dynamic: p.dynamic,
        symbols: p.symbols,
        needed: p.needed,
        provenance: p.provenance,
        link_report: p.report,
        finalizers,
        dep_ids,
        deps: OnceLock::new(),
        code_ranges: p.code_ranges,
        initialized: AtomicBool::new(false),
        finalized: AtomicBool::new(false),
        mapping,
    }
}
