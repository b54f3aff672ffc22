//! Lookups that are not in one mmld-mapped library's scope: the program
//! itself ([`Library::this`]), a library that is the host's own copy, and
//! the process-wide lookup ([`lookup_default`], `dlsym(RTLD_DEFAULT)`).
//!
//! Owns: the order of the process-wide search (the host's global scope,
//! then every library mmld put in the global scope, in the order it joined
//! it), and keeping a library found that way loaded, as glibc does. Must
//! never: map or load anything.

use std::ffi::CString;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::AtomicUsize;

use super::names::clean_name;
use super::{
    Library, Root, SymbolInfo, SymbolKind, SymbolName, definition_address, describe_definition,
};
use crate::error::{Error, ErrorKind, Result, Stage};
use crate::host;
use crate::link::hostscope::{HostObject, host_scope};
use crate::link::symbols::{self, Request};
use crate::registry;

impl Library {
    /// The running program, like `dlopen(NULL)` (libloading's
    /// `Library::this`): `get` searches the program and the libraries it
    /// loaded, then every library opened with `OpenOptions::global`, in the
    /// order they joined the global scope. Dropping it unloads nothing.
    pub fn this() -> Library {
        let scope = host_scope();
        let program = scope.objects.iter().find(|o| o.name.is_empty());
        let path = std::env::current_exe().unwrap_or_default();
        let bias_and_base = (
            program.map_or(0, |o| o.bias),
            program.map_or(0, |o| o.base()),
        );
        Library::outside(Root::Process(Box::new(bias_and_base)), &path)
    }

    /// A library that stands for something mmld did not map.
    pub(super) fn outside(root: Root, path: &Path) -> Library {
        Library {
            root,
            scope: Vec::new(),
            host_tables: Vec::new(),
            index: OnceLock::new(),
            lookups: AtomicUsize::new(0),
            index_after: usize::MAX,
            file: crate::error::interned_path(path),
            sharing: Vec::new(),
        }
    }

    /// A lookup through a library mmld did not map: `dlsym` on the host's
    /// copy, or the program's global scope.
    pub(super) fn lookup_outside(&self, raw: &[u8], version: Option<&[u8]>) -> Result<SymbolInfo> {
        let name = clean_name(raw).map_err(|k| Error::new(self.file, Stage::Lookup, k))?;
        let found = match &self.root {
            Root::Host(h) => {
                let cname = CString::new(name).ok();
                let cver = version.and_then(|v| CString::new(v).ok());
                let address = cname.and_then(|n| h.lib.symbol(&n, cver.as_deref()));
                let scope = host_scope();
                let object = scope.object_named(&h.path.to_string_lossy());
                address.map(|a| host_info(a, object, name, version))
            }
            // A handle on the program: no dependency is recorded, as with
            // `dlsym` on glibc's handle for it.
            _ => process_lookup(name, version, false),
        };
        found.ok_or_else(|| not_found(self.file, name, version))
    }
}

/// Look `name` up as `dlsym(RTLD_DEFAULT, name)` does from the program:
/// the host's global scope (the executable, the libraries it loaded, and
/// those it opened `RTLD_GLOBAL`), then every library opened through mmld
/// with `OpenOptions::global`, in the order they joined the global scope.
///
/// As with glibc, a library whose definition is found this way stays loaded
/// for the rest of the process (glibc records a dependency of the program
/// on it), so the address stays valid.
pub fn lookup_default(name: &(impl SymbolName + ?Sized)) -> Result<SymbolInfo> {
    let file = std::path::Path::new("RTLD_DEFAULT");
    let name = clean_name(name.symbol_bytes()).map_err(|k| Error::new(file, Stage::Lookup, k))?;
    process_lookup(name, None, true).ok_or_else(|| not_found(file, name, None))
}

fn process_lookup(name: &[u8], version: Option<&[u8]>, pin: bool) -> Option<SymbolInfo> {
    let mut req = Request::new(name, version);
    if let Some(v) = req.version.as_mut() {
        v.exact_only = true;
    }
    let host = host_scope();
    let in_host = if host.incomplete {
        let cname = CString::new(name).ok()?;
        let cver = version.and_then(|v| CString::new(v).ok());
        host::global_symbol(&cname, cver.as_deref()).map(|a| (a, None))
    } else {
        host.objects
            .iter()
            .filter(|o| o.global)
            .find_map(|o| o.lookup(&req).map(|a| (a, Some(&**o))))
    };
    if let Some((address, object)) = in_host {
        return Some(host_info(address, object, name, version));
    }
    let globals = registry::registry().global_objects();
    let (obj, index, sym) = globals
        .iter()
        .find_map(|o| o.lookup(&req).map(|(i, s)| (o, i, s)))?;
    if pin && let Some(e) = registry::registry().entry_mut(obj.id) {
        e.nodelete = true;
    }
    Some(describe_definition(
        obj,
        index,
        sym,
        definition_address(obj, &sym),
    ))
}

/// A definition in a host object, described from its own tables when
/// they were read (the executable's name is empty: shown as "the program").
fn host_info(
    address: u64,
    object: Option<&HostObject>,
    name: &[u8],
    version: Option<&[u8]>,
) -> SymbolInfo {
    let sym = object.and_then(|o| o.symbols.lookup(&Request::new(name, version)));
    let kind = match sym.map(|(_, s)| s.kind()) {
        Some(symbols::STT_FUNC) => SymbolKind::Function,
        Some(symbols::STT_GNU_IFUNC) => SymbolKind::IndirectFunction,
        Some(symbols::STT_OBJECT | symbols::STT_COMMON) => SymbolKind::Object,
        Some(symbols::STT_TLS) => SymbolKind::ThreadLocal,
        _ => SymbolKind::Other,
    };
    let object_name = match object.map(|o| o.name.as_str()) {
        Some("") | None => "the program".to_string(),
        Some(path) => path.rsplit('/').next().unwrap_or(path).to_string(),
    };
    SymbolInfo {
        address,
        size: sym.map_or(0, |(_, s)| s.size),
        kind,
        object: object_name,
        in_code: object.is_some_and(|o| o.in_code(address)),
        version: version.map(|v| String::from_utf8_lossy(v).into_owned()),
    }
}

fn not_found(file: &std::path::Path, name: &[u8], version: Option<&[u8]>) -> Error {
    Error::new(
        file,
        Stage::Lookup,
        ErrorKind::SymbolNotFound {
            name: String::from_utf8_lossy(name).into_owned(),
            version: version.map(|v| String::from_utf8_lossy(v).into_owned()),
        },
    )
}
