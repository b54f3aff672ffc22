//! The load transaction: everything one load maps and registers.
//!
//! Owns: the batch of objects a load maps (each [`Pending`] with its
//! mapping), the policy checks made before mapping, publishing the batch to
//! the registry as [`LoadedObject`]s, and the registry changes that keep
//! objects loaded (open counts, `nodelete`, global) on open, reuse and
//! close. This is the only file that adds objects to the registry.
//! Rollback is ownership: until [`Batch::publish`] succeeds, every mapping
//! and TLS module id belongs to the batch and is released when it drops.
//! Must never: publish an object before every object of the batch has been
//! validated (constructor and destructor pointers), or run any code of an
//! object.

use crate::fixedhash::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use super::initfini::{initfini_of, run_destructors};
use super::scope::{local_scope_of, mapped_ids};
use super::{Loaded, Mode, Settings};
use crate::elf::{DynamicInfo, ElfFile, LoadPlan};
use crate::error::{AttachContext, Error, ErrorKind, Result, Stage};
use crate::host::HostLibrary;
use crate::link::hostscope::HostScope;
use crate::link::symbols::SymbolTable;
use crate::link::{LinkReport, Provider};
use crate::map::{Mapping, Protection};
use crate::object::{Dep, LoadedObject, ScopeItem};
use crate::registry::{self, Entry, LOADER_LOCK};
use crate::runtime::lazy::LazyStubs;
use crate::runtime::tls::TlsModule;
use crate::search::{self, Provenance};

/// Where a needed name was resolved during one load.
#[derive(Debug, Clone)]
pub(super) enum Resolved {
    Host(Arc<HostLibrary>),
    /// Index into the batch of objects this load maps.
    Batch(usize),
    Existing(Arc<LoadedObject>),
}

/// An object mapped by this load, not yet published.
pub(super) struct Pending {
    pub(super) path: PathBuf,
    /// The path as the loader was given it (glibc's `l_name`).
    pub(super) opened_as: PathBuf,
    pub(super) name: String,
    pub(super) soname: Option<String>,
    pub(super) dev: u64,
    pub(super) ino: u64,
    pub(super) plan: LoadPlan,
    pub(super) dynamic: DynamicInfo,
    pub(super) symbols: SymbolTable,
    pub(super) needed: Vec<String>,
    pub(super) rpath: Vec<PathBuf>,
    pub(super) runpath: Option<Vec<PathBuf>>,
    pub(super) loader: Option<usize>,
    pub(super) provenance: Provenance,
    /// Resolved `DT_NEEDED` entries, in order; entries that could not be
    /// found (only kept going past for `mmld deps`) are left out.
    pub(super) deps: Vec<Resolved>,
    /// Positions in `needed` of the entries left out of `deps`.
    pub(super) missing_at: Vec<usize>,
    /// Objects outside its dependencies that its relocations bound to
    /// (glibc's `l_reldeps`); never `Host`.
    pub(super) reldeps: Vec<Resolved>,
    pub(super) code_ranges: Vec<(u64, u64)>,
    /// Load bias of this object's mapping (fixed once mapped).
    pub(super) bias: u64,
    /// TLS module id, reserved at mapping when the object has `PT_TLS`.
    pub(super) tls: Option<TlsModule>,
    /// PLT slots bound on first call (lazy loads).
    pub(super) lazy: LazyStubs,
    /// Records of its dynamic TLS descriptors (kept as long as the object).
    pub(super) descriptors: crate::runtime::tlsdesc::Descriptors,
    pub(super) report: LinkReport,
    /// A relocation made one of its `STB_GNU_UNIQUE` definitions the
    /// process's: it stays loaded (glibc marks it nodelete).
    pub(super) unique_bound: bool,
    /// Host objects its relocations bound to (glibc's relocation
    /// dependencies on them): held as long as the object lives.
    pub(super) host_holds: Vec<Arc<crate::link::hostref::HostRef>>,
}

impl Pending {
    /// This object as a place symbols come from, before it is published.
    pub(super) fn provider(&self) -> Provider<'_> {
        Provider::Object {
            name: &self.name,
            symbols: &self.symbols,
            bias: self.bias,
            tls_module: self.tls.as_ref().map(|t| t.id),
            code: &self.code_ranges,
        }
    }
}

pub(super) struct Batch {
    pub(super) mode: Mode,
    pub(super) settings: Settings,
    pub(super) pending: Vec<Pending>,
    pub(super) mappings: Vec<Mapping>,
    pub(super) hosts: HashMap<String, Arc<HostLibrary>>,
    /// The host's objects: read once when the load starts (to tell which
    /// libraries the host already has) and once more before linking
    /// (resolution may have asked glibc to load a glibc-family library).
    pub(super) host: Arc<HostScope>,
    pub(super) ld_library_path: Vec<PathBuf>,
    /// `mmld deps`: record missing libraries and go on.
    pub(super) keep_going: bool,
    pub(super) missing: Vec<Error>,
    /// Shared relocations: what happened to each object (batch order).
    pub(super) sharing: Vec<crate::relshare::SharedRelocations>,
    /// Shared relocations for this load, when they are on.
    pub(super) share: Option<crate::relshare::Session>,
}

impl Batch {
    pub(super) fn new(mode: Mode, settings: Settings) -> Self {
        // Before any object can bind mmld's `__cxa_thread_atexit_impl`.
        crate::runtime::cxa::install(crate::runtime::cxa::ObjectHooks {
            hold: registry::thread_dtor_registered,
            release: registry::thread_dtor_done,
        });
        Batch {
            mode,
            settings,
            pending: Vec::new(),
            mappings: Vec::new(),
            hosts: HashMap::default(),
            host: crate::link::hostscope::host_scope(),
            ld_library_path: ld_library_path(),
            keep_going: false,
            missing: Vec::new(),
            sharing: Vec::new(),
            share: match mode {
                Mode::Run => crate::relshare::Session::start(settings.share),
                Mode::Check => None,
            },
        }
    }

    pub(super) fn add_root(&mut self, path: &Path, elf: ElfFile) -> Result<usize> {
        self.map_object(path, elf, None, Provenance::Path)
    }

    pub(super) fn check_policy(&self, path: &Path, elf: &ElfFile) -> Result<()> {
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
        // glibc's `dlopen` refuses an executable before running any of its
        // code; `mmld deps` (like `ldd`) still shows its tree.
        if elf.dynamic.is_pie() && !self.keep_going {
            return Err(Error::new(
                path,
                Stage::Read,
                ErrorKind::PositionIndependentExecutable,
            ));
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

    pub(super) fn map_object(
        &mut self,
        path: &Path,
        elf: ElfFile,
        loader: Option<usize>,
        provenance: Provenance,
    ) -> Result<usize> {
        self.check_policy(path, &elf)?;
        // A check copies what it reads into memory it owns: a file
        // mapping would fault if the file were truncated meanwhile.
        let mapping = match (self.mode, self.share.as_mut()) {
            (Mode::Run, Some(share)) => {
                share.map(path, &elf, self.settings.strategy, Protection::Exact)
            }
            (Mode::Run, None) => Mapping::map(
                &elf.file,
                &elf.plan,
                self.settings.strategy,
                Protection::Exact,
            ),
            (Mode::Check, _) => Mapping::copy_for_inspection(&elf.file, &elf.plan, &elf.dynamic),
        }
        .at(path, Stage::Map)?;
        // The descriptor is closed here: mappings keep the file alive.
        let ElfFile {
            file,
            dev,
            ino,
            plan,
            dynamic,
            ..
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
            opened_as: path.to_path_buf(),
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
            tls: plan_tls.map(|_| TlsModule::reserve()),
            lazy: LazyStubs::default(),
            descriptors: Default::default(),
            report: LinkReport::default(),
            unique_bound: false,
            host_holds: Vec::new(),
        });
        self.mappings.push(mapping);
        Ok(self.pending.len() - 1)
    }

    /// Turn the batch into published objects (registry entries, not yet
    /// opened). Returns them in batch order (root first).
    pub(super) fn publish(&mut self) -> Result<Vec<Arc<LoadedObject>>> {
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
        let ids: Vec<u64> = ready.iter().map(|_| registry::next_object_id()).collect();
        let mut resolved = Vec::with_capacity(ready.len());
        let mut reldeps: Vec<Vec<u64>> = Vec::with_capacity(ready.len());
        let mut objects = Vec::with_capacity(ready.len());
        let mut unique_bound = Vec::with_capacity(ready.len());
        for ((p, mapping, fini), id) in ready.into_iter().zip(&ids) {
            unique_bound.push(p.unique_bound);
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
        for ((o, reldeps), unique_bound) in objects.iter().zip(reldeps).zip(unique_bound) {
            // Like glibc, an object whose STB_GNU_UNIQUE definition was
            // bound stays loaded: other objects may use it. An object that
            // defines one nobody bound can go.
            let nodelete = o.dynamic.nodelete() || unique_bound;
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
}

/// `LD_LIBRARY_PATH`, read per load as glibc reads it per process: a
/// change to the environment applies to the next load. `$ORIGIN` in it is
/// the executable's directory.
pub(super) fn ld_library_path() -> Vec<PathBuf> {
    if search::secure::env_var_os("LD_LIBRARY_PATH").is_some() {
        search::ld_library_path_from_env(
            std::env::current_exe()
                .ok()
                .as_deref()
                .and_then(Path::parent),
        )
    } else {
        // Unset: nothing to search, and no need to find the executable for
        // `$ORIGIN` (a readlink per load).
        Vec::new()
    }
}

/// One more open handle on the object already loaded from the file
/// `(dev, ino)`, with `settings` applied to it as `dlopen` applies its
/// flags to a library it already has.
pub(super) fn reuse_root(dev: u64, ino: u64, settings: Settings) -> Option<Loaded> {
    let mut reg = registry::registry();
    let entry = reg
        .entries
        .iter_mut()
        .find(|e| e.object.dev == dev && e.object.ino == ino)?;
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
        sharing: Vec::new(),
    })
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
    // `collect_unused` returns them in glibc's `dlclose` order.
    run_destructors(&dead);
    // Dropping the last references unmaps them.
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
        lazy: p.lazy,
        _descriptors: p.descriptors,
        host_holds: p.host_holds,
        frames,
        path: p.path,
        opened_as: p.opened_as,
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

pub(super) fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Record one more open handle on a freshly published `root` (and, with the
/// global option, put its whole local scope in the global scope, as
/// `RTLD_GLOBAL` does). Returns its `l_initfini`, for the constructors.
pub(super) fn open_handle(
    root: &LoadedObject,
    scope: &[ScopeItem],
    settings: Settings,
) -> Vec<u64> {
    let mut reg = registry::registry();
    if let Some(e) = reg.entry_mut(root.id) {
        e.open_count += 1;
        e.nodelete |= settings.nodelete;
    }
    if settings.global {
        // RTLD_GLOBAL puts the library's whole local scope in the
        // global scope, not just the library.
        reg.make_global(&mapped_ids(scope));
    }
    initfini_of(&mut reg, root, scope)
}
