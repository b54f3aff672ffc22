//! The pipeline driver: READ → MAP → LINK → RUN for a whole dependency tree.
//!
//! Owns: finding each `DT_NEEDED` library (host or file), mapping the new
//! ones, building their lookup scope the way glibc's `dlopen` does,
//! relocating them dependencies-first, publishing them in the registry, and
//! running their constructors; and the reverse on close. Must never: leave
//! anything behind when a load fails: every mapping of a failed load is
//! unmapped and no constructor of it has run.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use crate::elf::{ElfFile, LoadPlan};
use crate::error::{AttachContext, Error, ErrorKind, Result, Stage};
use crate::link::host::{self, HostLibrary};
use crate::link::symbols::SymbolTable;
use crate::link::{self, Binding, LinkMode, LinkReport, LinkTarget, Provider};
use crate::map::{Mapping, Protection, Strategy};
use crate::object::{Dep, LoadedObject, ScopeItem};
use crate::registry::{self, Entry, LOADER_LOCK};
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
    deps: Vec<Resolved>,
    code_ranges: Vec<(u64, u64)>,
    /// Load bias of this object's mapping (fixed once mapped).
    bias: u64,
    /// TLS module id, reserved at mapping when the object has `PT_TLS`.
    tls: Option<crate::runtime::tls::TlsModule>,
    report: LinkReport,
}

/// Report of a check-mode load.
#[derive(Debug, Clone)]
pub struct TreeNode {
    pub name: String,
    pub path: Option<PathBuf>,
    pub provenance: Option<Provenance>,
    /// `true` if the host provides it (glibc family or already loaded).
    pub host: bool,
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
    {
        let mut reg = registry::registry();
        if let Some(e) = reg.entry_mut(root.id) {
            e.open_count += 1;
            e.global |= settings.global;
            e.nodelete |= settings.nodelete;
        }
    }
    register_exit_handler();
    run_constructors(&root);
    Ok(Loaded {
        scope: materialize_scope(&scope_items, &objects),
        root,
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
    entry.global |= settings.global;
    entry.nodelete |= settings.nodelete;
    let root = Arc::clone(&entry.object);
    drop(reg);
    let scope = local_scope_of(&root);
    Some(Loaded { root, scope })
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
    ld_library_path: Vec<PathBuf>,
    /// `mmld deps`: record missing libraries and go on.
    keep_going: bool,
    missing: Vec<Error>,
    missing_nodes: Vec<TreeNode>,
}

impl Batch {
    fn new(mode: Mode, settings: Settings) -> Self {
        Batch {
            mode,
            settings,
            pending: Vec::new(),
            mappings: Vec::new(),
            hosts: HashMap::new(),
            ld_library_path: search::ld_library_path_from_env(None),
            keep_going: false,
            missing: Vec::new(),
            missing_nodes: Vec::new(),
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
        let code_ranges = mapping
            .segments()
            .iter()
            .filter(|s| s.plan.executable())
            .map(|s| {
                (
                    mapping.address_of(s.plan.vaddr),
                    mapping.address_of(s.plan.end()),
                )
            })
            .collect();
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
            for name in needed {
                match self.resolve_one(i, &name) {
                    Ok(r) => deps.push(r),
                    Err(e) if self.keep_going => {
                        let depth = self.depth_of(i) + 1;
                        self.missing_nodes.push(TreeNode {
                            name: name.clone(),
                            path: None,
                            provenance: None,
                            host: false,
                            needed_by: self.pending.get(i).map(|p| p.name.clone()),
                            depth,
                        });
                        self.missing.push(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            if let Some(p) = self.pending.get_mut(i) {
                p.deps = deps;
            }
            i += 1;
        }
        Ok(())
    }

    fn depth_of(&self, mut i: usize) -> usize {
        let mut d = 0;
        while let Some(l) = self.pending.get(i).and_then(|p| p.loader) {
            d += 1;
            i = l;
            if d > self.pending.len() {
                break;
            }
        }
        d
    }

    fn host_library(&mut self, name: &str, load_if_absent: bool) -> Option<Arc<HostLibrary>> {
        if let Some(h) = self.hosts.get(name) {
            return Some(Arc::clone(h));
        }
        let h = match HostLibrary::find_loaded(name) {
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
    /// each once (glibc's `l_searchlist`).
    fn root_scope(&self) -> Vec<ScopeSlot> {
        let mut out = vec![ScopeSlot::Batch(0)];
        let mut seen_batch: HashSet<usize> = HashSet::from([0]);
        let mut seen_existing: HashSet<u64> = HashSet::new();
        let mut seen_hosts: HashSet<String> = HashSet::new();
        let mut queue: VecDeque<usize> = VecDeque::from([0]);
        while let Some(i) = queue.pop_front() {
            let Some(p) = self.pending.get(i) else {
                continue;
            };
            for dep in &p.deps {
                match dep {
                    Resolved::Batch(j) => {
                        if seen_batch.insert(*j) {
                            out.push(ScopeSlot::Batch(*j));
                            queue.push_back(*j);
                        }
                    }
                    Resolved::Host(h) => {
                        if seen_hosts.insert(h.name.clone()) {
                            out.push(ScopeSlot::Host(Arc::clone(h)));
                        }
                    }
                    Resolved::Existing(o) => {
                        for item in local_scope_of(o) {
                            match item {
                                ScopeItem::Mapped(m) => {
                                    if seen_existing.insert(m.id) {
                                        out.push(ScopeSlot::Existing(m));
                                    }
                                }
                                ScopeItem::Host(h) => {
                                    if seen_hosts.insert(h.name.clone()) {
                                        out.push(ScopeSlot::Host(h));
                                    }
                                }
                            }
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
        let order = self.dependency_order();
        for i in order {
            self.link_one(i, root_scope, &globals, mode)?;
        }
        Ok(())
    }

    /// Post-order over the batch: each object after the objects it needs
    /// (cycles are broken where first met).
    fn dependency_order(&self) -> Vec<usize> {
        let mut order = Vec::with_capacity(self.pending.len());
        let mut state = vec![0u8; self.pending.len()];
        for start in 0..self.pending.len() {
            self.visit(start, &mut state, &mut order);
        }
        order
    }

    fn visit(&self, i: usize, state: &mut [u8], order: &mut Vec<usize>) {
        // Iterative DFS so a deep chain cannot overflow the stack.
        let mut stack: Vec<(usize, usize)> = vec![(i, 0)];
        while let Some((node, next)) = stack.pop() {
            if next == 0 {
                match state.get(node) {
                    Some(0) => {}
                    _ => continue,
                }
                if let Some(s) = state.get_mut(node) {
                    *s = 1;
                }
            }
            let deps = self
                .pending
                .get(node)
                .map(|p| p.deps.as_slice())
                .unwrap_or(&[]);
            let child = deps
                .iter()
                .enumerate()
                .skip(next)
                .find_map(|(k, d)| match d {
                    Resolved::Batch(j) if state.get(*j) == Some(&0) => Some((k, *j)),
                    _ => None,
                });
            match child {
                Some((k, j)) => {
                    stack.push((node, k + 1));
                    stack.push((j, 0));
                }
                None => {
                    if let Some(s) = state.get_mut(node) {
                        *s = 2;
                    }
                    order.push(node);
                }
            }
        }
    }

    fn link_one(
        &mut self,
        i: usize,
        root_scope: &[ScopeSlot],
        globals: &[Arc<LoadedObject>],
        mode: LinkMode,
    ) -> Result<()> {
        let (Some(p), Some(mapping)) = (self.pending.get(i), self.mappings.get_mut(i)) else {
            return Ok(());
        };
        let mut global_part: Vec<Provider<'_>> = vec![Provider::HostGlobal];
        global_part.extend(globals.iter().map(|o| o.provider()));
        let mut local_part: Vec<Provider<'_>> = Vec::with_capacity(root_scope.len());
        for slot in root_scope {
            local_part.push(match slot {
                ScopeSlot::Host(h) => Provider::Host(h),
                ScopeSlot::Existing(o) => o.provider(),
                ScopeSlot::Batch(j) => {
                    let Some(q) = self.pending.get(*j) else {
                        continue;
                    };
                    Provider::Object {
                        name: &q.name,
                        symbols: &q.symbols,
                        bias: q.bias,
                        tls_module: q.tls.as_ref().map(|t| t.id),
                        code: &q.code_ranges,
                    }
                }
            });
        }
        let mut scope: Vec<Provider<'_>> = Vec::new();
        if p.dynamic.symbolic {
            // DT_SYMBOLIC: the object's own definitions win over everything.
            scope.push(Provider::Object {
                name: &p.name,
                symbols: &p.symbols,
                bias: p.bias,
                tls_module: p.tls.as_ref().map(|t| t.id),
                code: &p.code_ranges,
            });
        }
        if self.settings.deep_bind {
            scope.extend(local_part);
            scope.extend(global_part);
        } else {
            scope.extend(global_part);
            scope.extend(local_part);
        }
        let names: Vec<String> = scope.iter().map(provider_name).collect();
        let mut target = LinkTarget {
            name: &p.name,
            mapping,
            dynamic: &p.dynamic,
            symbols: &p.symbols,
            tls_module: p.tls.as_ref().map(|t| t.id),
        };
        let from = p.name.clone();
        let report = link::relocate(&mut target, &scope, mode, |sym, ver, b: &Binding| {
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
        if let Some(p) = self.pending.get_mut(i) {
            p.report = report;
        }
        Ok(())
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
        let mut objects = Vec::with_capacity(ready.len());
        for ((p, mapping, fini), id) in ready.into_iter().zip(&ids) {
            resolved.push(p.deps.clone());
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
        for o in &objects {
            // Like glibc, an object whose STB_GNU_UNIQUE definitions were
            // bound stays loaded: other objects may use them.
            let nodelete = o.dynamic.nodelete()
                || (any_unique && o.symbols.defines_unique());
            reg.entries.push(Entry {
                object: Arc::clone(o),
                open_count: 0,
                global: false,
                nodelete,
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

    /// The tree in BFS order, each library listed where first needed.
    fn tree(&self) -> Vec<TreeNode> {
        let mut out = Vec::new();
        let mut listed_hosts: HashSet<String> = HashSet::new();
        for (i, p) in self.pending.iter().enumerate() {
            out.push(TreeNode {
                name: p.name.clone(),
                path: Some(p.path.clone()),
                provenance: Some(p.provenance.clone()),
                host: false,
                needed_by: p
                    .loader
                    .and_then(|l| self.pending.get(l))
                    .map(|l| l.name.clone()),
                depth: self.depth_of(i),
            });
            for d in &p.deps {
                match d {
                    Resolved::Host(h) if listed_hosts.insert(h.name.clone()) => {
                        out.push(TreeNode {
                            name: h.name.clone(),
                            path: h.path(),
                            provenance: None,
                            host: true,
                            needed_by: Some(p.name.clone()),
                            depth: self.depth_of(i) + 1,
                        })
                    }
                    Resolved::Existing(o) => out.push(TreeNode {
                        name: o.name.clone(),
                        path: Some(o.path.clone()),
                        provenance: Some(o.provenance.clone()),
                        host: false,
                        needed_by: Some(p.name.clone()),
                        depth: self.depth_of(i) + 1,
                    }),
                    _ => {}
                }
            }
        }
        out.extend(self.missing_nodes.iter().cloned());
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

/// Run constructors of every not-yet-initialised object reachable from
/// `root`, dependencies first.
fn run_constructors(root: &Arc<LoadedObject>) {
    let mut order: Vec<Arc<LoadedObject>> = Vec::new();
    let mut seen: HashSet<u64> = HashSet::new();
    // Iterative post-order DFS over mapped dependencies.
    let mut stack: Vec<(Arc<LoadedObject>, usize)> = vec![(Arc::clone(root), 0)];
    seen.insert(root.id);
    while let Some((obj, next)) = stack.pop() {
        let child = obj
            .deps()
            .iter()
            .enumerate()
            .skip(next)
            .find_map(|(k, d)| match d {
                Dep::Mapped(w) => w
                    .upgrade()
                    .filter(|o| !seen.contains(&o.id))
                    .map(|o| (k, o)),
                Dep::Host(_) => None,
            });
        match child {
            Some((k, c)) => {
                seen.insert(c.id);
                stack.push((obj, k + 1));
                stack.push((c, 0));
            }
            None => order.push(obj),
        }
    }
    for obj in order {
        if obj.initialized.swap(true, Ordering::AcqRel) {
            continue;
        }
        let seq = registry::next_init_seq();
        if let Some(e) = registry::registry().entry_mut(obj.id) {
            e.init_seq = seq;
        }
        let inits = crate::runtime::initializers(&obj.mapping, &obj.dynamic).unwrap_or_default();
        tracing::debug!(target: "mmld::libs", name = %obj.name, count = inits.len(), "running constructors");
        // SAFETY: the object is fully relocated, published and mapped (we
        // hold an Arc), and the addresses were validated by `initializers`.
        unsafe { crate::runtime::run_initializers(&inits) };
    }
}

/// Run, at process exit, the destructors of objects still loaded (glibc does
/// the same for libraries opened with `dlopen`). Nothing is unmapped: exit
/// handlers registered by those objects may still run after this.
extern "C" fn finalize_at_exit() {
    // A thread stuck inside a load at exit must not make exit hang.
    let Some(_guard) = LOADER_LOCK.try_lock() else { return };
    let mut live: Vec<(u64, Arc<LoadedObject>)> = registry::registry()
        .entries
        .iter()
        .map(|e| (e.init_seq, Arc::clone(&e.object)))
        .collect();
    live.sort_by(|a, b| b.0.cmp(&a.0));
    for (_, obj) in live {
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
