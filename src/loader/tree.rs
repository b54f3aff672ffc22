//! The dependency tree `mmld deps` shows, and `mmld check`'s report.
//!
//! Owns: turning a resolved batch into [`TreeNode`] lines, depth-first,
//! each library's dependencies listed once in full. Must never: map, link
//! or change the registry; it only reads what resolution recorded.

use crate::fixedhash::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use super::transaction::{Batch, Resolved};
use crate::host::HostLibrary;
use crate::object::{Dep, LoadedObject};
use crate::search::Provenance;

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
    /// The library whose `DT_NEEDED` entry this line is (`None` for the root).
    pub needed_by: Option<String>,
    /// Nesting level: 0 for the root, 1 for its `DT_NEEDED` entries, ...
    pub depth: usize,
    /// The load bias mmld gave it (glibc's `l_addr`, what `ldd` prints):
    /// known for objects mmld had loaded and, in a check, for those it
    /// mapped; `None` for host objects and in a tree that maps nothing.
    pub load_address: Option<u64>,
}

/// Result of [`OpenOptions::check`](crate::OpenOptions::check): the tree,
/// and every unresolved symbol per object.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CheckReport {
    /// The dependency tree, as [`dependency_tree`](crate::dependency_tree) gives it.
    pub tree: Vec<TreeNode>,
    /// Per object with unresolved references: its name and the references
    /// (`name@version` where versioned).
    pub unresolved: Vec<(String, Vec<String>)>,
    /// The objects mmld would map (not the host's), by name.
    pub mapped: Vec<String>,
}

/// A line of the tree before it is drawn.
#[derive(Clone)]
enum Node {
    Batch(usize),
    Existing(Arc<LoadedObject>),
    Host(Arc<HostLibrary>),
    Missing,
}

/// What has been listed in full already.
#[derive(PartialEq, Eq, Hash)]
enum Key {
    Batch(usize),
    Existing(u64),
    Host(String),
}

impl Batch {
    pub(super) fn check_report(&self) -> CheckReport {
        CheckReport {
            tree: self.tree(),
            unresolved: self
                .pending
                .iter()
                .filter(|p| !p.report.unresolved.is_empty())
                .map(|p| (p.name.clone(), p.report.unresolved.clone()))
                .collect(),
            mapped: self.pending.iter().map(|p| p.name.clone()).collect(),
        }
    }

    /// The dependency tree, depth-first from the root, each `DT_NEEDED`
    /// entry under the library that needs it, in order. A library mapped by
    /// this load has its dependencies listed under the library whose search
    /// found it (the one its provenance is about); everywhere else it is a
    /// single line marked `repeat`, so shared libraries appear once in full
    /// and cycles end. Libraries mmld had loaded before are listed in full
    /// where first met, with their recorded dependencies.
    pub(super) fn tree(&self) -> Vec<TreeNode> {
        let mut out = Vec::new();
        let mut listed: HashSet<Key> = HashSet::default();
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
            if !repeat {
                let own_index = match &node {
                    Node::Batch(i) => Some(*i),
                    _ => None,
                };
                for (child, child_node) in self.tree_children(&node).into_iter().rev() {
                    stack.push((
                        child,
                        child_node,
                        Some((name.clone(), own_index)),
                        depth + 1,
                    ));
                }
            }
            let (path, provenance, host, reused) = self.tree_facts(&node);
            let load_address = match &node {
                Node::Batch(i) => self.pending.get(*i).map(|p| p.bias).filter(|&b| b != 0),
                Node::Existing(o) => Some(o.mapping.bias()),
                Node::Host(_) | Node::Missing => None,
            };
            out.push(TreeNode {
                name,
                path,
                provenance,
                host,
                reused,
                repeat,
                loaded_for: loader
                    .and_then(|l| self.pending.get(l))
                    .map(|l| l.name.clone()),
                needed_by,
                depth,
                load_address,
            });
        }
        out
    }

    /// A node's `DT_NEEDED` entries in order, each with what it resolved to.
    fn tree_children(&self, node: &Node) -> Vec<(String, Node)> {
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
    }

    /// Path, provenance, host and reused of a node's line.
    fn tree_facts(&self, node: &Node) -> (Option<PathBuf>, Option<Provenance>, bool, bool) {
        match node {
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
        }
    }
}
