//! What is loaded: every mmld-mapped object, its open count and flags.
//!
//! Owns: the loader lock (one load or unload at a time, re-entrant so a
//! constructor may itself load a library, as glibc allows), the list of
//! loaded objects in load order, reuse by device and inode, and the
//! decision of what to unload when a handle is closed. Must never: hold the
//! data lock while running code of a loaded object.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, ThreadId};

use crate::object::LoadedObject;

/// A lock the same thread may take again: loads nest when a constructor
/// loads a library.
pub struct LoaderLock {
    state: Mutex<(Option<ThreadId>, usize)>,
    released: Condvar,
}

pub struct LoaderGuard<'a> {
    lock: &'a LoaderLock,
}

impl LoaderLock {
    const fn new() -> Self {
        LoaderLock {
            state: Mutex::new((None, 0)),
            released: Condvar::new(),
        }
    }

    /// Take the lock only if no other thread holds it.
    pub fn try_lock(&self) -> Option<LoaderGuard<'_>> {
        let me = thread::current().id();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.0 {
            None => *state = (Some(me), 1),
            Some(owner) if owner == me => state.1 += 1,
            Some(_) => return None,
        }
        Some(LoaderGuard { lock: self })
    }

    pub fn lock(&self) -> LoaderGuard<'_> {
        let me = thread::current().id();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match state.0 {
                None => {
                    *state = (Some(me), 1);
                    break;
                }
                Some(owner) if owner == me => {
                    state.1 += 1;
                    break;
                }
                Some(_) => {
                    state = self.released.wait(state).unwrap_or_else(|e| e.into_inner());
                }
            }
        }
        LoaderGuard { lock: self }
    }
}

impl Drop for LoaderGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.lock.state.lock().unwrap_or_else(|e| e.into_inner());
        state.1 = state.1.saturating_sub(1);
        if state.1 == 0 {
            state.0 = None;
            self.lock.released.notify_one();
        }
    }
}

pub static LOADER_LOCK: LoaderLock = LoaderLock::new();

/// One loaded object and its bookkeeping.
pub struct Entry {
    pub object: Arc<LoadedObject>,
    /// Handles opened directly on this object.
    pub open_count: usize,
    /// Its symbols are in the global scope (`OpenOptions::global`).
    pub global: bool,
    /// Never unloaded (`DF_1_NODELETE` or `OpenOptions::nodelete`).
    pub nodelete: bool,
    /// Position in constructor order; destructors run in reverse.
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

    pub fn global_objects(&self) -> Vec<Arc<LoadedObject>> {
        self.entries
            .iter()
            .filter(|e| e.global)
            .map(|e| Arc::clone(&e.object))
            .collect()
    }

    /// Remove every object no longer reachable from an open handle or a
    /// nodelete object, and return them in destructor order (latest
    /// initialised first, which puts dependents before their dependencies).
    pub fn collect_unused(&mut self) -> Vec<Arc<LoadedObject>> {
        let mut live: HashSet<u64> = HashSet::new();
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
            }
        }
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
        dead.sort_by(|a, b| b.init_seq.cmp(&a.init_seq));
        dead.into_iter().map(|e| e.object).collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
