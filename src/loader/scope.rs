//! Lookup scopes, built the way glibc's `dlopen` builds them.
//!
//! Owns: the root's local scope (itself, then its dependencies
//! breadth-first, each once: glibc's `l_searchlist`), the same walk for an
//! object already loaded, and the scope each new object is linked in
//! (glibc's `l_scope`: global scope then local scope; local first with
//! `deep_bind`; the object itself first with `DT_SYMBOLIC`). Must never:
//! walk into a host library's dependencies (the host resolves lookups in
//! them), or change the registry.

use std::collections::VecDeque;

use crate::fixedhash::HashSet;
use std::sync::Arc;

use super::transaction::{Batch, Pending, Resolved};
use crate::host::HostLibrary;
use crate::link::Provider;
use crate::object::{Dep, LoadedObject, ScopeItem};

/// A scope entry before publication: pending objects are indices.
#[derive(Clone)]
pub(super) enum ScopeSlot {
    Host(Arc<HostLibrary>),
    Batch(usize),
    Existing(Arc<LoadedObject>),
}

pub(super) fn materialize_scope(
    slots: &[ScopeSlot],
    objects: &[Arc<LoadedObject>],
) -> Vec<ScopeItem> {
    slots
        .iter()
        .filter_map(|s| match s {
            ScopeSlot::Host(h) => Some(ScopeItem::Host(Arc::clone(h))),
            ScopeSlot::Existing(o) => Some(ScopeItem::Mapped(Arc::clone(o))),
            ScopeSlot::Batch(i) => objects.get(*i).map(|o| ScopeItem::Mapped(Arc::clone(o))),
        })
        .collect()
}

/// Breadth-first closure of an already published object's dependencies.
pub(super) fn local_scope_of(root: &Arc<LoadedObject>) -> Vec<ScopeItem> {
    let mut out = vec![ScopeItem::Mapped(Arc::clone(root))];
    let mut seen_objects: HashSet<u64> = HashSet::from_iter([root.id]);
    let mut seen_hosts: HashSet<String> = HashSet::default();
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

/// Ids of the mmld-mapped objects of a scope, in order.
pub(super) fn mapped_ids(scope: &[ScopeItem]) -> Vec<u64> {
    scope
        .iter()
        .filter_map(|s| match s {
            ScopeItem::Mapped(o) => Some(o.id),
            ScopeItem::Host(_) => None,
        })
        .collect()
}

impl Batch {
    /// The root's local scope: itself and its dependencies, breadth-first,
    /// each once (glibc's `l_searchlist`). Libraries already loaded take
    /// their place in the same breadth-first walk, and so do their own
    /// dependencies; host libraries are listed but not walked into (the
    /// host resolves lookups in them with their dependencies).
    pub(super) fn root_scope(&self) -> Vec<ScopeSlot> {
        enum Node {
            Batch(usize),
            Existing(Arc<LoadedObject>),
        }
        let mut out = vec![ScopeSlot::Batch(0)];
        let mut seen_batch: HashSet<usize> = HashSet::from_iter([0]);
        let mut seen_existing: HashSet<u64> = HashSet::default();
        let mut seen_hosts: HashSet<String> = HashSet::default();
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
}

pub(super) fn provider_name(p: &Provider<'_>) -> String {
    match p {
        Provider::HostGlobal => "host global scope".to_string(),
        Provider::Host(h) => h.name.clone(),
        Provider::Object { name, .. } => (*name).to_string(),
    }
}

/// The scope object `i` of the batch is linked in (glibc's `l_scope`):
/// the global scope (the host's, then libraries opened global), then the
/// root's local scope; the local scope first with `deep_bind`, and with
/// `DT_SYMBOLIC` the object itself before both (dl-object.c, dl-load.c).
/// Each provider goes with the mmld object it belongs to (`None` for the
/// host), to record relocation dependencies.
pub(super) fn link_scope<'p>(
    pending: &'p [Pending],
    i: usize,
    root_scope: &'p [ScopeSlot],
    globals: &'p [Arc<LoadedObject>],
    deep_bind: bool,
) -> Vec<(Provider<'p>, Option<Resolved>)> {
    let mut global_part: Vec<(Provider<'_>, Option<Resolved>)> = vec![(Provider::HostGlobal, None)];
    global_part.extend(
        globals
            .iter()
            .map(|o| (o.provider(), Some(Resolved::Existing(Arc::clone(o))))),
    );
    let local_part = root_scope.iter().filter_map(|slot| {
        Some(match slot {
            ScopeSlot::Host(h) => (Provider::Host(h), None),
            ScopeSlot::Existing(o) => (o.provider(), Some(Resolved::Existing(Arc::clone(o)))),
            ScopeSlot::Batch(j) => (pending.get(*j)?.provider(), Some(Resolved::Batch(*j))),
        })
    });
    let mut scope: Vec<(Provider<'_>, Option<Resolved>)> = Vec::new();
    if let Some(p) = pending.get(i)
        && p.dynamic.symbolic
    {
        scope.push((p.provider(), Some(Resolved::Batch(i))));
    }
    if deep_bind {
        scope.extend(local_part);
        scope.extend(global_part);
    } else {
        scope.extend(global_part);
        scope.extend(local_part);
    }
    scope
}
