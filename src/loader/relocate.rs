//! Linking a load: each new object relocated in its scope, dependencies
//! first.
//!
//! Owns: driving `link::relocate` for every object of the batch, the TLS
//! image taken after relocation, sealing RELRO, and the objects a binding
//! reached outside an object's dependencies (glibc's `l_reldeps`). Must
//! never: decide what a relocation means (that is `arch` and `link`), or
//! publish anything.

use std::sync::Arc;

use super::scope::{ScopeSlot, link_scope, provider_name};
use super::share::{after_link, before_link, object_link};
use super::transaction::{Batch, Pending, Resolved};
use crate::error::{AttachContext, ErrorKind, Result, Stage};
use crate::link::hostscope::HostScope;
use crate::link::{self, Binding, LazyTarget, LinkMode, LinkTarget, Provider};
use crate::map::Mapping;
use crate::object::LoadedObject;
use crate::registry;
use crate::runtime::lazy::LazyStubs;

impl Batch {
    /// Relocate every object of the batch, dependencies first.
    pub(super) fn link_all(&mut self, root_scope: &[ScopeSlot], mode: LinkMode) -> Result<()> {
        let globals = registry::registry().global_objects();
        self.host = crate::link::hostscope::host_scope();
        let host = Arc::clone(&self.host);
        // Bindings are cached per symbol, so each object probes the global
        // scope at most once per entry of its symbol table.
        // With shared relocations a hit binds only its per-process
        // relocations (libstdc++: 326 of 5,195), too few to repay
        // building the combined filter of the host's global scope.
        let probes = if self.share.as_ref().is_some_and(|s| s.may_hit()) {
            0
        } else {
            self.pending
                .iter()
                .map(|p| p.symbols.count() as usize)
                .sum()
        };
        host.expect_global_probes(probes);
        let order = self.dependency_order();
        for i in order {
            self.link_one(i, root_scope, &globals, &host, mode)?;
        }
        Ok(())
    }

    pub(super) fn link_one(
        &mut self,
        i: usize,
        root_scope: &[ScopeSlot],
        globals: &[Arc<LoadedObject>],
        host: &HostScope,
        mode: LinkMode,
    ) -> Result<()> {
        // A lazy load leaves unbound PLT calls to their first call, except
        // in objects that ask to be bound now, as glibc does.
        let lazy = mode == LinkMode::Run
            && self.settings.lazy
            && !super::lazy::bind_now_from_env()
            && self.pending.get(i).is_some_and(|p| !p.dynamic.bind_now());
        let mut stubs = match self.pending.get_mut(i) {
            Some(p) if lazy => std::mem::take(&mut p.lazy),
            _ => LazyStubs::default(),
        };
        let Some(p) = self.pending.get(i) else {
            return Ok(());
        };
        let deep_bind = self.settings.deep_bind;
        let (scope, owners): (Vec<Provider<'_>>, Vec<Option<Resolved>>) =
            link_scope(&self.pending, i, root_scope, globals, deep_bind)
                .into_iter()
                .unzip();
        // Which scope entries received a binding (indexed by position).
        let mut bound = vec![false; scope.len()];
        let share_scope = self.share_scope(mode, &scope, &owners);
        let Some(mapping) = self.mappings.get_mut(i) else {
            return Ok(());
        };
        let obj = object_link(p, &mut *mapping, &share_scope, host, lazy);
        let mut share_hook = before_link(self.share.as_mut(), obj)?;
        // Pages mapped from a relocation cache must not be faulted in for writing.
        let prefault =
            self.settings.prefault_relro && share_hook.as_ref().is_none_or(|h| h.replay.is_none());
        let mut descriptors = crate::runtime::tlsdesc::Descriptors::default();
        let mut target = LinkTarget {
            name: &p.name,
            mapping,
            dynamic: &p.dynamic,
            symbols: &p.symbols,
            tls_module: p.tls.as_ref().map(|t| t.id),
            lazy: lazy.then_some(LazyTarget {
                stubs: &mut stubs,
                relro: p.plan.relro,
            }),
            tls: link::tls::TlsLink::new(
                p.tls.as_ref().filter(|_| mode == LinkMode::Run),
                p.plan.tls,
                &mut descriptors,
            ),
            share: share_hook.as_mut(),
        };
        let from = p.name.clone();
        if let (Some(relro), LinkMode::Run, true) = (p.plan.relro, mode, prefault) {
            target.mapping.prefault_for_relocation(relro);
        }
        // Asked once per object, not per binding; names only for the trace.
        let trace = tracing::enabled!(target: "mmld::bindings", tracing::Level::DEBUG);
        let names: Vec<String> = scope.iter().filter(|_| trace).map(provider_name).collect();
        let mut host_holds = crate::link::hostscope::HoldSet::default();
        let report = link::relocate(&mut target, &scope, host, mode, |sym, ver, b: &Binding| {
            if let Some(slot) = bound.get_mut(b.provider) {
                *slot = true;
            }
            if matches!(scope.get(b.provider), Some(Provider::HostGlobal)) {
                host_holds.add(host, b.addr, sym, ver);
            }
            if trace {
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
        let obj = object_link(p, &mut *mapping, &share_scope, host, lazy);
        after_link(self.share.as_mut(), obj, share_hook, &mut bound)?;
        finish_image(p, mapping, mode)?;
        let reldeps = self.relocation_dependencies(i, root_scope, &bound, &owners);
        self.keep_unique_providers(&report.unique_providers, &owners);
        if let Some(p) = self.pending.get_mut(i) {
            p.report = report;
            p.reldeps = reldeps;
            p.lazy = stubs;
            p.descriptors = descriptors;
            p.host_holds = host_holds.into_vec();
        }
        Ok(())
    }

    /// The objects object `i` bound symbols to that it does not depend on
    /// (glibc's `add_dependency`): not itself, not the host, not
    /// `DF_1_NODELETE` objects, and not already among its dependencies,
    /// which for the root means its whole local scope and for the others
    /// their direct `DT_NEEDED` entries. A binding into a library opened
    /// with the global option, or into a sibling that interposes, must
    /// keep that object loaded as long as object `i` is.
    pub(super) fn relocation_dependencies(
        &self,
        i: usize,
        root_scope: &[ScopeSlot],
        bound: &[bool],
        owners: &[Option<Resolved>],
    ) -> Vec<Resolved> {
        let Some(p) = self.pending.get(i) else {
            return Vec::new();
        };
        let already = |r: &Resolved| -> bool {
            let same = |d: &Resolved| match (d, r) {
                (Resolved::Batch(a), Resolved::Batch(b)) => a == b,
                (Resolved::Existing(a), Resolved::Existing(b)) => a.id == b.id,
                _ => false,
            };
            if i == 0 {
                root_scope.iter().any(|slot| match (slot, r) {
                    (ScopeSlot::Batch(a), Resolved::Batch(b)) => a == b,
                    (ScopeSlot::Existing(a), Resolved::Existing(b)) => a.id == b.id,
                    _ => false,
                })
            } else {
                p.deps.iter().any(same)
            }
        };
        let indices: Vec<usize> = bound
            .iter()
            .enumerate()
            .filter_map(|(k, used)| used.then_some(k))
            .collect();
        let mut out: Vec<Resolved> = Vec::new();
        for k in indices {
            let Some(Some(r)) = owners.get(k) else {
                continue;
            };
            let nodelete = match r {
                Resolved::Batch(j) if *j == i => continue,
                Resolved::Batch(j) => self.pending.get(*j).is_some_and(|q| q.dynamic.nodelete()),
                Resolved::Existing(o) => o.dynamic.nodelete(),
                Resolved::Host(_) => continue,
            };
            if nodelete || already(r) {
                continue;
            }
            let duplicate = out.iter().any(|d| match (d, r) {
                (Resolved::Batch(a), Resolved::Batch(b)) => a == b,
                (Resolved::Existing(a), Resolved::Existing(b)) => a.id == b.id,
                _ => false,
            });
            if !duplicate {
                tracing::debug!(target: "mmld::libs", from = %p.name, to = %self.resolved_name(r), "relocation dependency");
                out.push(r.clone());
            }
        }
        out
    }

    /// The objects whose `STB_GNU_UNIQUE` definitions a relocation just
    /// made the process's (scope positions in `owners`) are never
    /// unloaded, as glibc marks them nodelete: the process-wide table
    /// points into them.
    fn keep_unique_providers(&mut self, providers: &[usize], owners: &[Option<Resolved>]) {
        for k in providers {
            match owners.get(*k) {
                Some(Some(Resolved::Batch(j))) => {
                    if let Some(q) = self.pending.get_mut(*j) {
                        q.unique_bound = true;
                    }
                }
                Some(Some(Resolved::Existing(o))) => {
                    if let Some(e) = registry::registry().entry_mut(o.id) {
                        e.nodelete = true;
                    }
                }
                _ => {}
            }
        }
    }

    pub(super) fn resolved_name(&self, r: &Resolved) -> String {
        match r {
            Resolved::Host(h) => h.name.clone(),
            Resolved::Batch(j) => self
                .pending
                .get(*j)
                .map(|q| q.name.clone())
                .unwrap_or_default(),
            Resolved::Existing(o) => o.name.clone(),
        }
    }
}

/// After relocation: the TLS image taken, then RELRO sealed.
fn finish_image(p: &Pending, mapping: &mut Mapping, mode: LinkMode) -> Result<()> {
    if mode == LinkMode::Run {
        publish_tls(p, mapping)?;
    }
    if let Some(relro) = p.plan.relro {
        mapping.seal_relro(relro).at(&p.path, Stage::Map)?;
    }
    Ok(())
}

/// Hand a new object's TLS initialisation image to its module. Taken after
/// relocation: `.tdata` can hold relocated pointers. A module with a static
/// block got its image during linking.
fn publish_tls(p: &Pending, mapping: &Mapping) -> Result<()> {
    let (Some(t), Some(module)) = (
        p.plan.tls,
        p.tls.as_ref().filter(|m| m.static_offset().is_none()),
    ) else {
        return Ok(());
    };
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
        .at(&p.path, Stage::Link)
}
