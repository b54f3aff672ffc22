//! Binding a lazy load's PLT calls on first call.
//!
//! Owns: the scope a first call is resolved in (glibc's `l_scope` as it is
//! at the time of the call: the global scope, which may have grown since
//! the load, then the local scope the object was linked in; `deep_bind`
//! and `DT_SYMBOLIC` as at the load), recording the object a call bound to
//! as a relocation dependency (glibc's `add_dependency`), and handing each
//! object's resolver to its stubs once it is published. Must never: hold
//! the registry's lock while asking glibc anything or running an IFUNC
//! resolver, or bind a call to an object that is being unloaded.

use std::sync::{Arc, Weak};

use crate::host::HostLibrary;
use crate::link::Provider;
use crate::link::symbols::{self, Request};
use crate::object::{LoadedObject, ScopeItem};
use crate::registry;
use crate::runtime::lazy::{LazyMiss, LazyResolver};

/// glibc honours `LD_BIND_NOW` (set and not empty) for every load: no call
/// is left for later.
pub(super) fn bind_now_from_env() -> bool {
    std::env::var_os("LD_BIND_NOW").is_some_and(|v| !v.is_empty())
}

/// A scope entry that does not keep an object loaded.
enum WeakItem {
    Host(Arc<HostLibrary>),
    Mapped(Weak<LoadedObject>),
}

struct LazyScope {
    object: Weak<LoadedObject>,
    /// The local scope the object was linked in, in order.
    local: Vec<WeakItem>,
    deep_bind: bool,
}

/// Give every object of a finished load that has lazy slots the scope its
/// first calls resolve in: `scope` is the root's local scope, which every
/// object of the load was linked in.
pub(super) fn arm(objects: &[Arc<LoadedObject>], scope: &[ScopeItem], deep_bind: bool) {
    for obj in objects.iter().filter(|o| !o.lazy.is_empty()) {
        let local = scope
            .iter()
            .map(|item| match item {
                ScopeItem::Host(h) => WeakItem::Host(Arc::clone(h)),
                ScopeItem::Mapped(o) => WeakItem::Mapped(Arc::downgrade(o)),
            })
            .collect();
        obj.lazy.arm(Box::new(LazyScope {
            object: Arc::downgrade(obj),
            local,
            deep_bind,
        }));
    }
}

impl LazyResolver for LazyScope {
    fn resolve(&self, symbol: u32) -> Result<u64, LazyMiss> {
        let Some(obj) = self.object.upgrade() else {
            return Err(miss_of_unknown(symbol));
        };
        let (name, version) = symbol_name(&obj, symbol).ok_or_else(|| miss_of_unknown(symbol))?;
        let req = Request::new(name, version);
        let miss = || LazyMiss {
            object: obj.opened_as.display().to_string(),
            name: String::from_utf8_lossy(name).into_owned(),
            version: version.map(|v| String::from_utf8_lossy(v).into_owned()),
        };
        // An object found in the scope may be unloaded by another thread
        // before the binding is recorded; then the lookup starts again
        // without it.
        for _ in 0..8 {
            match self.bind_once(&obj, &req) {
                Bound::To(addr) => return Ok(addr),
                Bound::Nothing => return Err(miss()),
                Bound::Vanished => continue,
            }
        }
        Err(miss())
    }
}

enum Bound {
    To(u64),
    Nothing,
    /// The defining object was unloaded meanwhile.
    Vanished,
}

impl LazyScope {
    fn bind_once(&self, obj: &Arc<LoadedObject>, req: &Request<'_>) -> Bound {
        let globals = registry::registry().global_objects();
        let host = crate::link::hostscope::host_scope();
        let local: Vec<ScopeItem> = self
            .local
            .iter()
            .filter_map(|item| match item {
                WeakItem::Host(h) => Some(ScopeItem::Host(Arc::clone(h))),
                WeakItem::Mapped(w) => w.upgrade().map(ScopeItem::Mapped),
            })
            .collect();
        let (providers, owners) = scope_of(obj, &globals, &local, self.deep_bind);
        let Some(b) = crate::link::resolve_in_scope(&providers, req, &host) else {
            return Bound::Nothing;
        };
        let owner = owners.get(b.provider).copied().flatten();
        if let Some(target) = owner
            && !record_dependency(obj, target, &local)
        {
            return Bound::Vanished;
        }
        tracing::debug!(
            target: "mmld::bindings",
            "{}: {} -> {:#x}, bound on first call",
            obj.name,
            String::from_utf8_lossy(req.name),
            b.addr
        );
        if !b.ifunc {
            return Bound::To(b.addr);
        }
        if !b.resolver_in_code {
            return Bound::Nothing;
        }
        // SAFETY: the resolver lies in an executable segment of a loaded,
        // relocated object, which the binding now keeps loaded.
        Bound::To(unsafe { crate::runtime::call::ifunc_resolver(b.addr) })
    }
}

/// The scope of a first call from `obj`, each entry with the mmld object
/// it belongs to: global scope then local scope (local first with
/// `deep_bind`), `obj` itself first with `DT_SYMBOLIC`.
fn scope_of<'a>(
    obj: &'a Arc<LoadedObject>,
    globals: &'a [Arc<LoadedObject>],
    local: &'a [ScopeItem],
    deep_bind: bool,
) -> (Vec<Provider<'a>>, Vec<Option<&'a Arc<LoadedObject>>>) {
    let mut global_part: Vec<(Provider<'a>, Option<&'a Arc<LoadedObject>>)> =
        vec![(Provider::HostGlobal, None)];
    global_part.extend(globals.iter().map(|o| (o.provider(), Some(o))));
    let local_part = local.iter().map(|item| match item {
        ScopeItem::Host(h) => (Provider::Host(h), None),
        ScopeItem::Mapped(o) => (o.provider(), Some(o)),
    });
    let mut scope = Vec::new();
    if obj.dynamic.symbolic {
        scope.push((obj.provider(), Some(obj)));
    }
    if deep_bind {
        scope.extend(local_part);
        scope.extend(global_part);
    } else {
        scope.extend(global_part);
        scope.extend(local_part);
    }
    scope.into_iter().unzip()
}

/// Keep `target` loaded as long as `obj` is, unless it already is (itself,
/// a dependency, the local scope of a library opened directly, nodelete).
/// `false` when `target` is no longer loaded.
fn record_dependency(obj: &LoadedObject, target: &LoadedObject, local: &[ScopeItem]) -> bool {
    let is_root = matches!(local.first(), Some(ScopeItem::Mapped(o)) if o.id == obj.id);
    let in_local = local
        .iter()
        .any(|i| matches!(i, ScopeItem::Mapped(o) if o.id == target.id));
    if target.id == obj.id || obj.dep_ids.contains(&target.id) || (is_root && in_local) {
        return true;
    }
    let mut reg = registry::registry();
    let Some(t) = reg.entries.iter().find(|e| e.object.id == target.id) else {
        // Unloading: bind to it only if it goes away with `obj` (the
        // caller holds it through the local scope until the call).
        return in_local;
    };
    if t.nodelete {
        return true;
    }
    if let Some(e) = reg.entry_mut(obj.id)
        && !e.reldeps.contains(&target.id)
    {
        e.reldeps.push(target.id);
    }
    true
}

/// Name and required version of symbol `index` of `obj`.
fn symbol_name(obj: &LoadedObject, index: u32) -> Option<(&[u8], Option<&[u8]>)> {
    let table: &symbols::SymbolTable = &obj.symbols;
    let sym = table.symbol(index)?;
    let (name, _) = table.name_and_gnu_hash(&sym).ok()?;
    let version = match table.required_version(index) {
        Some(v) => Some(table.string(u64::from(v.name)).ok()?),
        None => None,
    };
    Some((name, version))
}

fn miss_of_unknown(symbol: u32) -> LazyMiss {
    LazyMiss {
        object: "<unloaded object>".into(),
        name: format!("symbol #{symbol}"),
        version: None,
    }
}
