//! The load's side of shared relocations (`relshare`).
//!
//! Owns: describing the scope an object is linked in to `relshare`, and
//! the per-object reports of a load. Must never: decide anything about the
//! cache (that is `relshare`), or touch a mapping.

use super::transaction::{Batch, Pending, Resolved};
use crate::link::Provider;
use crate::relshare::{ObjectLink, ScopeEntry, SharedRelocations};

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

/// The scope of one object as `relshare` keys it: `bases` are the
/// batch's mapping addresses, by batch index.
pub(super) fn scope_entries(
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
