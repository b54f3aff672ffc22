//! Looking a name up in a scope, object by object, as glibc's
//! `_dl_lookup_symbol_x` does.
//!
//! Owns: the first definition in scope order (mmld objects through their
//! own tables, host objects through the host snapshot or glibc), turning a
//! definition into a [`Binding`], and the process-wide table of
//! `STB_GNU_UNIQUE` definitions. Must never: write to an image, or cache a
//! binding across loads (the scope changes).

use crate::fixedhash::HashMap;
use std::ffi::CString;

use super::hostscope::HostScope;
use super::symbols::{self, Request, Sym, SymbolTable};
use super::{Binding, Provider};
use crate::host;

/// `STB_GNU_UNIQUE` definitions bound so far: name to (address, size).
/// Objects that provide one are never unloaded (see the loader), so the
/// addresses stay valid.
type UniqueTable = std::sync::Mutex<HashMap<Vec<u8>, (u64, u64)>>;

pub(super) fn unique_symbols() -> &'static UniqueTable {
    static T: std::sync::OnceLock<UniqueTable> = std::sync::OnceLock::new();
    T.get_or_init(|| std::sync::Mutex::new(HashMap::default()))
}

/// The reference being bound is defined by the object being linked, and a
/// lookup of it in that object's tables would find this very symbol.
#[derive(Clone, Copy)]
pub(super) struct OwnDefinition<'t> {
    pub(super) symbols: &'t SymbolTable,
    pub(super) sym: Sym,
}

/// Resolve `name` (with an optional version) in `scope`, in order.
pub fn resolve_in_scope(
    scope: &[Provider<'_>],
    req: &Request<'_>,
    host: &HostScope,
) -> Option<Binding> {
    resolve_with_own(scope, req, host, None)
}

/// As [`resolve_in_scope`]; when `own` is given, the walk still asks every
/// object before the linked one (an earlier definition, the executable's
/// say, interposes), but takes `own` when it reaches that object instead
/// of searching its tables for the symbol the relocation already names.
pub(super) fn resolve_with_own(
    scope: &[Provider<'_>],
    req: &Request<'_>,
    host: &HostScope,
    own: Option<OwnDefinition<'_>>,
) -> Option<Binding> {
    for (provider, p) in scope.iter().enumerate() {
        match p {
            Provider::Object {
                symbols,
                bias,
                tls_module,
                code,
                ..
            } => {
                let found = match own {
                    Some(o) if std::ptr::eq(*symbols, o.symbols) => Some(o.sym),
                    _ => symbols.lookup(req).map(|(_, sym)| sym),
                };
                if let Some(sym) = found {
                    let mut b = binding_for(sym, *bias, provider, *tls_module);
                    // Read only for IFUNCs: not worth a walk of the code
                    // ranges on every other binding.
                    b.resolver_in_code =
                        b.ifunc && code.iter().any(|&(s, e)| b.addr >= s && b.addr < e);
                    return Some(b);
                }
            }
            Provider::HostGlobal | Provider::Host(_) => {
                // The host's own tables answer misses cheaply; glibc is asked
                // only when an object could not be read.
                let ask_glibc = |handle: Option<&host::HostLibrary>| {
                    let name = CString::new(req.name).ok()?;
                    let version = req.version.and_then(|v| CString::new(v.name).ok());
                    match handle {
                        Some(lib) => lib.symbol(&name, version.as_deref()),
                        None => host::global_symbol(&name, version.as_deref()),
                    }
                };
                let found = match p {
                    Provider::Host(lib) => {
                        match lib.path_str().and_then(|n| host.object_named(n)) {
                            Some(o) => o.lookup(req),
                            None => ask_glibc(Some(lib)),
                        }
                    }
                    _ if !host.incomplete => host.lookup_global(req),
                    _ => ask_glibc(None),
                };
                if let Some(addr) = found {
                    return Some(Binding {
                        addr,
                        size: 0,
                        ifunc: false,
                        resolver_in_code: false,
                        unique: false,
                        provider,
                        tls_module: None,
                        value: addr,
                    });
                }
            }
        }
    }
    None
}

pub(super) fn binding_for(
    sym: Sym,
    bias: u64,
    provider: usize,
    tls_module: Option<u64>,
) -> Binding {
    let is_tls = sym.kind() == symbols::STT_TLS;
    let is_abs = sym.shndx == symbols::SHN_ABS;
    Binding {
        addr: if is_tls || is_abs {
            sym.value
        } else {
            sym.value.wrapping_add(bias)
        },
        size: sym.size,
        ifunc: sym.kind() == symbols::STT_GNU_IFUNC,
        resolver_in_code: false,
        unique: sym.bind() == symbols::STB_GNU_UNIQUE,
        provider,
        tls_module: if is_tls { tls_module } else { None },
        value: sym.value,
    }
}
