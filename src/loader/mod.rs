//! The load driver: READ → MAP → LINK → RUN for a whole dependency tree,
//! in glibc's `dlopen` order, and the reverse on close.
//!
//! Owns: the public entry points (`open`, `check`, `tree`, `close`) and the
//! order of the steps. Each concern lives in its own file:
//! - `transaction`: what one load mapped and registered, how it is undone
//!   on failure, and publishing to the registry (nowhere else does);
//! - `resolve`: where a `DT_NEEDED` name is found (host object, object
//!   mmld already has, or a file from the library search);
//! - `scope`: the lookup scopes glibc builds (global, local, `deep_bind`,
//!   `DT_SYMBOLIC`);
//! - `relocate`: linking each new object in its scope and recording the
//!   objects its bindings reached (glibc's `l_reldeps`);
//! - `initfini`: constructor and destructor order (`_dl_sort_maps`);
//! - `lazy`: the scope a lazy load's PLT calls are bound in on first call;
//! - `tree`: the dependency tree `mmld deps` shows and `check`'s report.
//!
//! Must never: leave anything behind when a load fails: every mapping of a
//! failed load is unmapped and no constructor of it has run.

mod initfini;
mod lazy;
mod relocate;
mod resolve;
mod root;
mod scope;
mod share;
mod transaction;
mod tree;

use std::path::Path;
use std::sync::Arc;

use crate::error::{AttachContext, Error, ErrorKind, Result, Stage};
use crate::link::LinkMode;
use crate::link::hostscope::HostScope;
use crate::map::Strategy;
use crate::object::{LoadedObject, ScopeItem};
use crate::registry::LOADER_LOCK;

use initfini::{register_exit_handler, run_constructors};
pub use root::HostRoot;
use root::Located;
use scope::materialize_scope;
pub use transaction::close;
use transaction::{Batch, open_handle};
pub use tree::{CheckReport, TreeNode};

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
    /// Bind a PLT call that has no definition yet on its first call
    /// (`RTLD_LAZY`), in objects without `DF_BIND_NOW`.
    pub lazy: bool,
    /// Open only a library already loaded (`RTLD_NOLOAD`).
    pub no_load: bool,
    /// Shared relocations (`relshare`): cache directory and verification.
    pub share: crate::relshare::ShareSettings,
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
            lazy: false,
            no_load: false,
            share: crate::relshare::ShareSettings::default(),
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
    /// Shared relocations, per object this load mapped (load order);
    /// empty when the load mapped nothing.
    pub sharing: Vec<crate::relshare::SharedRelocations>,
}

/// What opening a library produced.
pub enum Opened {
    /// An object mmld mapped (now or before).
    Mapped(Loaded),
    /// The host's own copy.
    Host(HostRoot),
}

/// Open `name` (a path, or a name searched as `dlopen` searches it) and
/// everything it needs.
pub fn open(name: &Path, settings: Settings) -> Result<Opened> {
    let _guard = LOADER_LOCK.lock();
    // One host snapshot for the whole load: `locate`, the batch and the
    // linker each ask for it, and while this reference lives a later ask
    // gets the same snapshot (unless glibc's object counters moved) instead
    // of listing and holding every host object again.
    let _host = crate::link::hostscope::host_scope();
    let (path, elf) = match root::locate(name, settings)? {
        Located::Mapped(existing) => return Ok(Opened::Mapped(existing)),
        Located::Host(h) => return Ok(Opened::Host(h)),
        Located::File(path, elf) => (path, elf),
    };
    let path = path.as_path();
    let mut batch = Batch::new(Mode::Run, settings);
    batch.add_root(path, *elf)?;
    if let Some(soname) = batch.pending.first().and_then(|p| p.soname.clone())
        && crate::host::is_glibc_family(&soname)
    {
        // A copy of a C-library component under another file name: the
        // host's own copy serves, and this mapping goes with the batch.
        drop(batch);
        return root::glibc_family(Path::new(&soname), settings).map(Opened::Host);
    }
    batch.resolve_all()?;
    let scope_items = batch.root_scope();
    batch.link_all(&scope_items, LinkMode::Run)?;
    batch.sharing = batch.sharing_reports();
    let objects = batch.publish()?;
    let root = Arc::clone(objects.first().ok_or_else(|| {
        Error::new(
            path,
            Stage::Run,
            ErrorKind::Other("load produced no object".into()),
        )
    })?);
    let scope = materialize_scope(&scope_items, &objects);
    lazy::arm(&objects, &scope, settings.deep_bind);
    let init_order = open_handle(&root, &scope, settings);
    register_exit_handler();
    run_constructors(&init_order, &scope);
    Ok(Opened::Mapped(Loaded {
        scope,
        root,
        host: Arc::clone(&batch.host),
        sharing: std::mem::take(&mut batch.sharing),
    }))
}

/// Load and link `path` and its tree without running any of its code.
pub fn check(path: &Path, settings: Settings) -> Result<CheckReport> {
    let _guard = LOADER_LOCK.lock();
    let (path, elf) = root::file_for(path)?;
    let path = path.as_path();
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
    let (path, elf) = root::file_for(path)?;
    let path = path.as_path();
    let mut batch = Batch::new(Mode::Check, Settings::default());
    batch.keep_going = true;
    batch.add_root(path, elf)?;
    batch.resolve_all()?;
    let errors = std::mem::take(&mut batch.missing);
    Ok((batch.tree(), errors))
}
