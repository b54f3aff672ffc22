//! What is loaded: every mmld-mapped object, its open count and flags.
//!
//! Owns: the loader lock (one load or unload at a time, re-entrant so a
//! constructor may itself load a library, as glibc allows), the list of
//! loaded objects in load order, reuse by device and inode, the global
//! scope's order, the decision of what to unload when a handle is closed,
//! and glibc's ordering of constructors and destructors ([`sort_maps`]).
//! Must never: hold the data lock while running code of a loaded object.

use crate::fixedhash::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, ThreadId};

use crate::object::LoadedObject;

/// A lock the same thread may take again: loads nest when a constructor
/// loads a library.
pub struct LoaderLock {
    state: Mutex<LockState>,
    released: Condvar,
}

struct LockState {
    owner: Option<ThreadId>,
    depth: usize,
    /// Threads blocked in `lock`: only then does a release need a wake-up
    /// (a system call).
    waiters: usize,
}

pub struct LoaderGuard<'a> {
    lock: &'a LoaderLock,
}

impl LoaderLock {
    const fn new() -> Self {
        LoaderLock {
            state: Mutex::new(LockState {
                owner: None,
                depth: 0,
                waiters: 0,
            }),
            released: Condvar::new(),
        }
    }

    pub fn lock(&self) -> LoaderGuard<'_> {
        let me = thread::current().id();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match state.owner {
                None => {
                    state.owner = Some(me);
                    state.depth = 1;
                    break;
                }
                Some(owner) if owner == me => {
                    state.depth += 1;
                    break;
                }
                Some(_) => {
                    state.waiters += 1;
                    state = self.released.wait(state).unwrap_or_else(|e| e.into_inner());
                    state.waiters -= 1;
                }
            }
        }
        LoaderGuard { lock: self }
    }

    /// Does some thread hold the lock now (a load or an unload running)?
    pub fn is_held(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .owner
            .is_some()
    }
}

impl Drop for LoaderGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.lock.state.lock().unwrap_or_else(|e| e.into_inner());
        state.depth = state.depth.saturating_sub(1);
        if state.depth == 0 {
            state.owner = None;
            if state.waiters > 0 {
                self.lock.released.notify_one();
            }
        }
    }
}

pub static LOADER_LOCK: LoaderLock = LoaderLock::new();

/// One loaded object and its bookkeeping.
pub struct Entry {
    pub object: Arc<LoadedObject>,
    /// Handles opened directly on this object.
    pub open_count: usize,
    /// Its symbols are in the global scope (`OpenOptions::global` on it or
    /// on a library that needs it, as `RTLD_GLOBAL` does).
    pub global: bool,
    /// When it joined the global scope (0: not global). The global scope is
    /// in this order, which is not load order when a library loaded
    /// locally is later reopened with the global option.
    pub global_seq: u64,
    /// glibc's `l_initfini` of a library opened directly: its whole local
    /// scope (mmld-mapped objects only) in the sorted order its
    /// constructors were computed from, itself first. `None` for an object
    /// only ever loaded as a dependency, whose `l_initfini` is its direct
    /// dependencies (`LoadedObject::dep_ids`).
    pub initfini: Option<Vec<u64>>,
    /// Objects outside its dependencies that its relocations bound to
    /// (glibc's `l_reldeps`): kept loaded as long as it is.
    pub reldeps: Vec<u64>,
    /// Never unloaded (`DF_1_NODELETE` or `OpenOptions::nodelete`).
    pub nodelete: bool,
    /// Position in constructor order across all loads (0: not run yet).
    /// Destructor order is not its reverse: see [`Registry::fini_order`].
    pub init_seq: u64,
    /// Thread-local destructors registered by its code and not yet run.
    pub pending_thread_dtors: usize,
}

#[derive(Default)]
pub struct Registry {
    /// In load order: the order of the global scope.
    pub entries: Vec<Entry>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    entries: Vec::new(),
});

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static NEXT_INIT_SEQ: AtomicU64 = AtomicU64::new(1);
static NEXT_GLOBAL_SEQ: AtomicU64 = AtomicU64::new(1);

pub fn next_object_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

pub fn next_init_seq() -> u64 {
    NEXT_INIT_SEQ.fetch_add(1, Ordering::Relaxed)
}

/// A thread-local destructor was registered by code of the object whose
/// span holds `addr`: keep that object loaded until it has run. Returns the
/// object's id.
pub fn thread_dtor_registered(addr: u64) -> Option<u64> {
    let mut reg = registry();
    let e = reg
        .entries
        .iter_mut()
        .find(|e| e.object.mapping.vaddr_of(addr).is_some())?;
    e.pending_thread_dtors += 1;
    Some(e.object.id)
}

/// A destructor counted by [`thread_dtor_registered`] has run. The object
/// is unloaded by the next close that finds it unused, as with glibc.
pub fn thread_dtor_done(id: u64) {
    if let Some(e) = registry().entry_mut(id) {
        e.pending_thread_dtors = e.pending_thread_dtors.saturating_sub(1);
    }
}

/// Short, data-only access to the registry.
pub fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

impl Registry {
    pub fn find_by_file(&self, dev: u64, ino: u64) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.object.dev == dev && e.object.ino == ino)
    }

    /// glibc matches a `DT_NEEDED` name against the sonames of loaded objects
    /// before searching the file system.
    pub fn find_by_soname(&self, name: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.object.soname.as_deref() == Some(name))
    }

    pub fn entry_mut(&mut self, id: u64) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.object.id == id)
    }

    /// mmld's part of the global scope, in the order objects joined it.
    pub fn global_objects(&self) -> Vec<Arc<LoadedObject>> {
        let mut globals: Vec<&Entry> = self.entries.iter().filter(|e| e.global).collect();
        globals.sort_by_key(|e| e.global_seq);
        globals.into_iter().map(|e| Arc::clone(&e.object)).collect()
    }

    /// Add `ids` (a library's local scope, in order) to the global scope,
    /// skipping those already in it, as glibc's `add_to_global` does.
    pub fn make_global(&mut self, ids: &[u64]) {
        for &id in ids {
            if let Some(e) = self.entry_mut(id)
                && !e.global
            {
                e.global = true;
                e.global_seq = NEXT_GLOBAL_SEQ.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Every loaded object in the order glibc would run destructors at
    /// exit or when unloading (dependents first): `_dl_sort_maps` over the
    /// objects in load order, following `l_initfini` and `l_reldeps`.
    pub fn fini_order(&self) -> Vec<u64> {
        let maps: Vec<u64> = self.entries.iter().map(|e| e.object.id).collect();
        let edges = SortEdges {
            initfini: self
                .entries
                .iter()
                .map(|e| (e.object.id, e.initfini_edges()))
                .collect(),
            reldeps: self
                .entries
                .iter()
                .filter(|e| !e.reldeps.is_empty())
                .map(|e| (e.object.id, e.reldeps.clone()))
                .collect(),
        };
        sort_maps(&maps, &edges, false, true)
    }

    /// Remove every object no longer reachable from an open handle or a
    /// nodelete object (through dependencies and relocation dependencies),
    /// and return them in glibc's destructor order ([`Registry::fini_order`]).
    pub fn collect_unused(&mut self) -> Vec<Arc<LoadedObject>> {
        let mut live: HashSet<u64> = HashSet::default();
        let mut stack: Vec<u64> = self
            .entries
            .iter()
            .filter(|e| e.open_count > 0 || e.nodelete || e.pending_thread_dtors > 0)
            .map(|e| e.object.id)
            .collect();
        while let Some(id) = stack.pop() {
            if !live.insert(id) {
                continue;
            }
            if let Some(e) = self.entries.iter().find(|e| e.object.id == id) {
                stack.extend(e.object.dep_ids.iter().copied());
                stack.extend(e.reldeps.iter().copied());
            }
        }
        // glibc sorts every loaded object, then runs the destructors of the
        // ones it unloads in that order.
        let rank: HashMap<u64, usize> = self
            .fini_order()
            .into_iter()
            .enumerate()
            .map(|(i, id)| (id, i))
            .collect();
        let mut dead: Vec<Entry> = Vec::new();
        let mut kept: Vec<Entry> = Vec::with_capacity(self.entries.len());
        for e in self.entries.drain(..) {
            if live.contains(&e.object.id) {
                kept.push(e);
            } else {
                dead.push(e);
            }
        }
        self.entries = kept;
        dead.sort_by_key(|e| rank.get(&e.object.id).copied().unwrap_or(usize::MAX));
        dead.into_iter().map(|e| e.object).collect()
    }
}

impl Entry {
    /// glibc's `l_initfini` minus the object itself: what `_dl_sort_maps`
    /// follows from it.
    pub fn initfini_edges(&self) -> Vec<u64> {
        match &self.initfini {
            Some(list) => list
                .iter()
                .copied()
                .filter(|&id| id != self.object.id)
                .collect(),
            None => self.object.dep_ids.clone(),
        }
    }
}

/// The dependency links [`sort_maps`] follows, by object id.
#[derive(Debug, Default)]
pub struct SortEdges {
    /// `l_initfini`: direct dependencies in `DT_NEEDED` order, or a directly
    /// opened library's sorted local scope.
    pub initfini: HashMap<u64, Vec<u64>>,
    /// `l_reldeps`: bindings outside the dependencies.
    pub reldeps: HashMap<u64, Vec<u64>>,
}

/// glibc's `_dl_sort_maps` with the DFS algorithm (the default since glibc
/// 2.35, `glibc.rtld.dynamic_sort=2`), as Debian's glibc 2.36 runs it.
///
/// A depth-first traversal starts from each of `maps` in turn, from the
/// last to the first, follows `initfini` links (and `reldeps` links when
/// `for_fini`), and places each object when it is finished; the result is
/// the reverse of that finishing order: dependents before their
/// dependencies. With `force_first`, `maps[0]` is moved back to the front
/// afterwards (it can move only through a cycle). When `for_fini` and some
/// traversed object had `reldeps`, a second pass over the result follows
/// `initfini` links only, so `DT_NEEDED` order wins over relocation
/// dependencies in a cycle; glibc returns that result as is.
///
/// Constructors run in the reverse of the result, destructors in its order.
/// Links to objects not in `maps` are ignored.
pub fn sort_maps(maps: &[u64], edges: &SortEdges, force_first: bool, for_fini: bool) -> Vec<u64> {
    let members: HashSet<u64> = maps.iter().copied().collect();
    let mut finished = Vec::with_capacity(maps.len());
    let mut visited: HashSet<u64> =
        HashSet::with_capacity_and_hasher(maps.len(), Default::default());
    let mut saw_reldeps = false;
    for &start in maps.iter().rev() {
        dfs(
            start,
            edges,
            for_fini.then_some(&mut saw_reldeps),
            &members,
            &mut visited,
            &mut finished,
        );
    }
    let mut sorted: Vec<u64> = finished.into_iter().rev().collect();
    if saw_reldeps {
        let mut finished = Vec::with_capacity(sorted.len());
        let mut visited: HashSet<u64> =
            HashSet::with_capacity_and_hasher(sorted.len(), Default::default());
        for &start in sorted.iter().rev() {
            dfs(start, edges, None, &members, &mut visited, &mut finished);
        }
        return finished.into_iter().rev().collect();
    }
    if force_first
        && let Some(&first) = maps.first()
        && let Some(at) = sorted.iter().position(|&id| id == first)
    {
        sorted.remove(at);
        sorted.insert(0, first);
    }
    sorted
}

/// One depth-first traversal of [`sort_maps`], iterative so a long chain
/// cannot overflow the stack. `reldeps` is `Some` in the first pass of a
/// destructor sort: relocation dependencies are followed too, and the flag
/// records that some were.
fn dfs(
    start: u64,
    edges: &SortEdges,
    mut reldeps: Option<&mut bool>,
    members: &HashSet<u64>,
    visited: &mut HashSet<u64>,
    finished: &mut Vec<u64>,
) {
    if !members.contains(&start) || !visited.insert(start) {
        return;
    }
    let links = |id: u64, reldeps: &mut Option<&mut bool>| -> Vec<u64> {
        let mut out = edges.initfini.get(&id).cloned().unwrap_or_default();
        if let Some(flag) = reldeps.as_deref_mut()
            && let Some(extra) = edges.reldeps.get(&id)
            && !extra.is_empty()
        {
            *flag = true;
            out.extend_from_slice(extra);
        }
        out
    };
    let mut stack: Vec<(u64, Vec<u64>, usize)> = vec![(start, links(start, &mut reldeps), 0)];
    while let Some((node, deps, next)) = stack.last_mut() {
        let found = deps
            .iter()
            .enumerate()
            .skip(*next)
            .find(|(_, d)| members.contains(d) && !visited.contains(d))
            .map(|(k, &d)| (k, d));
        match found {
            Some((k, dep)) => {
                *next = k + 1;
                visited.insert(dep);
                let dep_links = links(dep, &mut reldeps);
                stack.push((dep, dep_links, 0));
            }
            None => {
                finished.push(*node);
                stack.pop();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edges(initfini: &[(u64, &[u64])], reldeps: &[(u64, &[u64])]) -> SortEdges {
        SortEdges {
            initfini: initfini.iter().map(|(k, v)| (*k, v.to_vec())).collect(),
            reldeps: reldeps.iter().map(|(k, v)| (*k, v.to_vec())).collect(),
        }
    }

    // Ids: 1 top, 2 left, 3 right, 4 base; the results below are what
    // glibc 2.36 prints for testlibs/diamond (tests/deps.rs checks that).
    #[test]
    fn diamond_constructors_follow_glibc() {
        // At dlopen the root has no l_initfini yet: no links from 1.
        let e = edges(&[(2, &[4]), (3, &[4]), (4, &[])], &[]);
        let sorted = sort_maps(&[1, 2, 3, 4], &e, true, false);
        assert_eq!(sorted, [1, 2, 3, 4]);
        // Constructors run in reverse: base, right, left, top.
        let inits: Vec<u64> = sorted.into_iter().rev().collect();
        assert_eq!(inits, [4, 3, 2, 1]);
    }

    #[test]
    fn cycle_keeps_the_opened_library_first() {
        // 1 (cyca) <-> 2 (cycb): the traversal from 2 finishes 1 first, and
        // force_first moves 1 back: constructors cycb, cyca.
        let e = edges(&[(2, &[1])], &[]);
        assert_eq!(sort_maps(&[1, 2], &e, true, false), [1, 2]);
        // At unload 1 has its recorded l_initfini [1, 2]. The traversal
        // starts from 2 (loaded last), reaches 1 through 2's link and
        // finishes 1 first: destructors cycb, cyca, the same order as the
        // constructors, as glibc does.
        let e = edges(&[(1, &[2]), (2, &[1])], &[]);
        assert_eq!(sort_maps(&[1, 2], &e, false, true), [2, 1]);
    }

    #[test]
    fn reldeps_trigger_a_needed_only_second_pass() {
        // 2 needs 1, and a relocation of 1 bound to 2: the first pass follows
        // both links, the second only DT_NEEDED: 2 before 1.
        let e = edges(&[(2, &[1])], &[(1, &[2])]);
        assert_eq!(sort_maps(&[1, 2], &e, false, true), [2, 1]);
        // Without for_fini the reldeps are ignored altogether.
        assert_eq!(sort_maps(&[1, 2], &e, false, false), [2, 1]);
    }

    #[test]
    fn links_outside_maps_are_ignored_and_long_chains_do_not_recurse() {
        let e = edges(&[(1, &[99])], &[]);
        assert_eq!(sort_maps(&[1], &e, false, false), [1]);
        let n = 100_000u64;
        let chain: Vec<(u64, Vec<u64>)> = (1..n).map(|i| (i, vec![i + 1])).collect();
        let e = SortEdges {
            initfini: chain.into_iter().collect(),
            reldeps: HashMap::default(),
        };
        let maps: Vec<u64> = (1..=n).collect();
        assert_eq!(sort_maps(&maps, &e, true, false), maps);
    }
}
