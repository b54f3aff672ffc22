//! The load's side of shared relocations (`relshare`).
//!
//! Owns: describing the scope an object is linked in to `relshare`, and
//! the per-object reports of a load. Must never: decide anything about the
//! cache (that is `relshare`), or touch a mapping.

use super::transaction::{Batch, Pending, Resolved};
use crate::error::{AttachContext, Stage};
use crate::link::LinkMode;
use crate::link::Provider;
use crate::link::sharing::ShareHook;
use crate::relshare::{ObjectLink, ScopeEntry, Session, SharedRelocations};

impl Batch {
    /// What shared relocations did for each object of the batch.
    pub(super) fn sharing_reports(&self) -> Vec<SharedRelocations> {
        let objects = self
            .pending
            .iter()
            .zip(&self.mappings)
            .map(|(p, m)| (p.path.clone(), m.base()));
        match &self.share {
            Some(s) => s.reports(objects),
            None => objects
                .map(|(p, b)| SharedRelocations::off(p, b as usize))
                .collect(),
        }
    }
}

impl Batch {
    /// The scope of an object about to be linked, as `relshare` keys it
    /// (empty when the feature is off or nothing will run).
    pub(super) fn share_scope(
        &self,
        mode: LinkMode,
        scope: &[Provider<'_>],
        owners: &[Option<Resolved>],
    ) -> Vec<ScopeEntry> {
        if self.share.is_none() || mode != LinkMode::Run {
            return Vec::new();
        }
        let bases: Vec<u64> = self.mappings.iter().map(|m| m.base()).collect();
        scope_entries(&self.pending, &bases, scope, owners)
    }
}

/// Before linking `obj`: the hook the relocation loop records into or
/// replays from (`None` when the feature is off or nothing will run).
pub(super) fn before_link(
    share: Option<&mut Session>,
    obj: ObjectLink<'_>,
) -> crate::error::Result<Option<ShareHook>> {
    let Some(s) = share else {
        return Ok(None);
    };
    if obj.scope.is_empty() {
        return Ok(None);
    }
    let path = obj.path.to_path_buf();
    s.before_link(obj).at(&path, Stage::Map)
}

/// After linking `obj`: write, verify or account for its cache entry.
pub(super) fn after_link(
    share: Option<&mut Session>,
    obj: ObjectLink<'_>,
    hook: Option<ShareHook>,
    bound: &mut [bool],
) -> crate::error::Result<()> {
    match share {
        Some(s) => s.after_link(obj, hook, bound),
        None => Ok(()),
    }
}

/// The scope of one object as `relshare` keys it: `bases` are the
/// batch's mapping addresses, by batch index.
fn scope_entries(
    pending: &[Pending],
    bases: &[u64],
    scope: &[Provider<'_>],
    owners: &[Option<Resolved>],
) -> Vec<ScopeEntry> {
    scope
        .iter()
        .zip(owners)
        .map(|(provider, owner)| match (provider, owner) {
            (Provider::HostGlobal, _) => ScopeEntry::HostGlobal,
            (Provider::Host(h), _) => ScopeEntry::Host(h.path_str().map(str::to_string)),
            (_, Some(Resolved::Batch(j))) => match (pending.get(*j), bases.get(*j)) {
                (Some(q), Some(&base)) => ScopeEntry::Mapped {
                    dev: q.dev,
                    ino: q.ino,
                    base,
                },
                _ => ScopeEntry::Host(None),
            },
            (_, Some(Resolved::Existing(o))) => ScopeEntry::Mapped {
                dev: o.dev,
                ino: o.ino,
                base: o.mapping.base(),
            },
            (_, _) => ScopeEntry::Host(None),
        })
        .collect()
}

/// Object `p`, mapped at `mapping`, as `relshare` sees it while linking.
pub(super) fn object_link<'a>(
    p: &'a Pending,
    mapping: &'a mut crate::map::Mapping,
    scope: &'a [ScopeEntry],
    host: &'a crate::link::hostscope::HostScope,
    lazy: bool,
) -> ObjectLink<'a> {
    ObjectLink {
        path: &p.path,
        mapping,
        dynamic: &p.dynamic,
        relro: p.plan.relro,
        scope,
        host,
        lazy,
    }
}
