//! Constructor and destructor order: the file that orders constructors.
//!
//! Owns: glibc's `_dl_sort_maps` order for a load (relocation and
//! initialisation), each directly opened library's `l_initfini`, running
//! constructors dependencies first, and destructors at close and at exit.
//! Must never: run a constructor twice or a destructor of an object whose
//! constructors did not run, or run either for a load that failed.

use crate::fixedhash::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::scope::mapped_ids;
use super::transaction::{Batch, Resolved};
use crate::object::{LoadedObject, ScopeItem};
use crate::registry::{self, LOADER_LOCK, SortEdges};

/// glibc's `l_initfini` of a library opened directly: its local scope
/// sorted by [`registry::sort_maps`] with the library forced first and, as
/// when glibc's `_dl_map_object_deps` sorts it, no links of its own.
/// Computed when the library is first opened directly and kept in its
/// registry entry: destructor order at unload follows it.
pub(super) fn initfini_of(
    reg: &mut registry::Registry,
    root: &LoadedObject,
    scope: &[ScopeItem],
) -> Vec<u64> {
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
        reldeps: HashMap::default(),
    };
    let sorted = registry::sort_maps(&maps, &edges, true, false);
    if let Some(e) = reg.entry_mut(root.id) {
        e.initfini = Some(sorted.clone());
    }
    sorted
}

impl Batch {
    /// The order glibc relocates (and then initialises) a load in: the
    /// reverse of [`registry::sort_maps`] over the batch in breadth-first
    /// order, with the root forced first and, as at that point in glibc's
    /// `_dl_map_object_deps`, without links of its own. Objects loaded
    /// before cannot reach new ones, so leaving them out changes nothing.
    /// Batch indices stand in for object ids.
    pub(super) fn dependency_order(&self) -> Vec<usize> {
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
            reldeps: HashMap::default(),
        };
        registry::sort_maps(&maps, &edges, true, false)
            .into_iter()
            .rev()
            .map(|i| i as usize)
            .collect()
    }
}

/// Run the constructors of the objects of `scope` not initialised yet, in
/// the reverse of the root's sorted `l_initfini` (`order`): dependencies
/// first, as glibc's `_dl_init` does. For the diamond top -> {left, right}
/// -> base this is base, right, left, top (not a post-order walk from the
/// root, which would give base, left, right, top); in a cycle the library
/// opened runs last.
pub(super) fn run_constructors(order: &[u64], scope: &[ScopeItem]) {
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
/// the same for libraries opened with `dlopen`), from glibc's `_dl_fini`
/// through the exit hook. Nothing is unmapped: other objects' destructors
/// may still call into them.
extern "C" fn finalize_at_exit() {
    // Another thread inside a load or an unload finishes it first, as
    // glibc's `_dl_fini` waits for its load lock (test-dlclose-exit-race):
    // a destructor running in that thread is never cut off by exit.
    let _guard = LOADER_LOCK.lock();
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

/// Make sure the destructors of mmld's objects run at exit, after the
/// executable's own, where glibc's `_dl_fini` would run them for a library
/// `dlopen`ed before the exit began (see `runtime::exit_hook`). Called by
/// every load that maps an object; only the first registers anything
/// (or, during exit, loads the hook).
/// Should glibc refuse the hook, the destructors run from the exit
/// handlers instead, before the executable's destructors.
pub(super) fn register_exit_handler() {
    if let Err(e) = crate::runtime::exit_hook::arm(finalize_at_exit, needed_at_exit) {
        static FALLBACK: std::sync::Once = std::sync::Once::new();
        FALLBACK.call_once(|| {
            tracing::warn!(target: "mmld::libs", "exit hook: {e}; destructors at exit run from atexit");
            // SAFETY: registers a function with the C library's exit
            // handlers; it takes no arguments and only touches mmld's own
            // state.
            unsafe { libc::atexit(finalize_at_exit) };
        });
    }
}

/// At exit: is any object still loaded, or is another thread inside a load
/// or an unload (whose destructors `finalize_at_exit` must wait for)?
fn needed_at_exit() -> bool {
    LOADER_LOCK.is_held() || !registry::registry().entries.is_empty()
}

/// Run the destructors of objects being unloaded, in the order given,
/// each once, and only for objects whose constructors ran.
pub(super) fn run_destructors(dead: &[Arc<LoadedObject>]) {
    for obj in dead {
        if obj.initialized.load(Ordering::Acquire) && !obj.finalized.swap(true, Ordering::AcqRel) {
            tracing::debug!(target: "mmld::libs", name = %obj.name, "running destructors and unmapping");
            // SAFETY: the object is still mapped (the caller holds an Arc)
            // and its destructors were validated at load.
            unsafe { crate::runtime::run_finalizers(&obj.finalizers) };
        }
    }
}
