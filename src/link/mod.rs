//! LINK: bind symbols and apply relocations to a mapped image.
//!
//! Owns: the scope an object's references are resolved in, the relocation
//! formulas of the x86-64 psABI (with `arch`), IFUNC handling, and the report
//! of what was bound. Must never: map or unmap memory, or run any code of the
//! object other than IFUNC resolvers (and none at all in a dry run).

// Host objects sit at the crate root so `runtime` can ask glibc without
// importing `link`; re-exported at this path for callers outside the crate.
pub use crate::host;
pub mod hostscope;
pub mod index;
pub mod symbols;

use std::collections::HashMap;
use std::ffi::CString;

use crate::arch::current as arch;
use crate::elf::{DynamicInfo, VRange};
use crate::error::{ErrorKind, KindResult};
use crate::map::{Mapping, RoBytes};
use symbols::{Request, Sym, SymbolTable, VersionRequest};

/// Whether LINK may run code of the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    /// Call IFUNC resolvers: the object will run.
    Run,
    /// Never call into the object; collect every unresolved symbol instead
    /// of stopping at the first (`mmld check`).
    DryRun,
}

/// One place a symbol can come from.
pub enum Provider<'a> {
    /// The host's global scope, through glibc's `dlsym`.
    HostGlobal,
    /// A library the host loaded, and its dependencies.
    Host(&'a host::HostLibrary),
    /// An object mmld mapped (possibly the one being linked).
    Object {
        name: &'a str,
        symbols: &'a SymbolTable,
        bias: u64,
        /// TLS module id, when the object has a `PT_TLS`.
        tls_module: Option<u64>,
        /// Executable address ranges: an IFUNC resolver must lie in one.
        code: &'a [(u64, u64)],
    },
}

/// Where a reference was bound.
#[derive(Debug, Clone, Copy)]
pub struct Binding {
    /// The symbol's address (for IFUNCs, the resolver's).
    pub addr: u64,
    pub size: u64,
    /// The definition is an IFUNC in an mmld object: call `addr` to get the
    /// implementation.
    pub ifunc: bool,
    /// For IFUNCs: `addr` lies in an executable segment of its object.
    pub resolver_in_code: bool,
    /// The definition is `STB_GNU_UNIQUE`: one definition process-wide.
    pub unique: bool,
    /// Index of the provider in the scope, for tracing.
    pub provider: usize,
    pub tls_module: Option<u64>,
    /// Definition's value, unbiased (the offset for TLS symbols).
    pub value: u64,
}

/// Relocations seen, by type: a plain array for the types x86-64 defines,
/// counted once per relocation on the hot path.
#[derive(Debug, Clone)]
pub struct RelocationCounts([usize; 64]);

impl Default for RelocationCounts {
    fn default() -> Self {
        RelocationCounts([0; 64])
    }
}

impl RelocationCounts {
    fn add(&mut self, rtype: u32) {
        if let Some(c) = self.0.get_mut(rtype as usize) {
            *c += 1;
        }
    }

    /// `(type, count)` for every type seen.
    pub fn iter(&self) -> impl Iterator<Item = (u32, usize)> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(t, n)| (t as u32, *n))
    }

    pub fn get(&self, rtype: u32) -> usize {
        self.0.get(rtype as usize).copied().unwrap_or(0)
    }

    /// Total of all types.
    pub fn total(&self) -> usize {
        self.0.iter().sum()
    }
}

/// Counts of what LINK did, for `mmld info`, tracing and tests.
#[derive(Debug, Default, Clone)]
pub struct LinkReport {
    pub by_type: RelocationCounts,
    pub relr_addresses: usize,
    pub ifunc_calls: usize,
    pub host_bindings: usize,
    pub unique_bindings: usize,
    pub unresolved: Vec<String>,
}

/// Everything relocation needs about the object being linked.
pub struct LinkTarget<'a> {
    pub name: &'a str,
    pub mapping: &'a mut Mapping,
    pub dynamic: &'a DynamicInfo,
    pub symbols: &'a SymbolTable,
    pub tls_module: Option<u64>,
}

/// `STB_GNU_UNIQUE` definitions bound so far: name to (address, size).
/// Objects that provide one are never unloaded (see the loader), so the
/// addresses stay valid.
type UniqueTable = std::sync::Mutex<HashMap<Vec<u8>, (u64, u64)>>;

fn unique_symbols() -> &'static UniqueTable {
    static T: std::sync::OnceLock<UniqueTable> = std::sync::OnceLock::new();
    T.get_or_init(|| std::sync::Mutex::new(HashMap::new()))
}

/// Resolve `name` (with an optional version) in `scope`, in order.
pub fn resolve_in_scope(
    scope: &[Provider<'_>],
    req: &Request<'_>,
    host: &hostscope::HostScope,
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
                if let Some((_, sym)) = symbols.lookup(req) {
                    let mut b = binding_for(sym, *bias, provider, *tls_module);
                    b.resolver_in_code = code.iter().any(|&(s, e)| b.addr >= s && b.addr < e);
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

fn binding_for(sym: Sym, bias: u64, provider: usize, tls_module: Option<u64>) -> Binding {
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

/// Bindings by symbol index: a dense table, cheaper than hashing for the
/// hundreds of thousands of relocations of a large library.
struct BindingCache {
    /// 0: not bound yet; n: `bindings[n - 1]`.
    slot_of: Vec<u32>,
    bindings: Vec<Option<Binding>>,
}

impl BindingCache {
    fn new(symbols: u32) -> Self {
        BindingCache {
            slot_of: vec![0; symbols as usize],
            bindings: Vec::new(),
        }
    }

    fn get(&self, sym: u32) -> Option<Option<Binding>> {
        let slot = *self.slot_of.get(sym as usize)?;
        if slot == 0 {
            return None;
        }
        self.bindings.get(slot as usize - 1).copied()
    }

    fn insert(&mut self, sym: u32, binding: Option<Binding>) {
        self.bindings.push(binding);
        let slot = u32::try_from(self.bindings.len()).unwrap_or(0);
        if let Some(s) = self.slot_of.get_mut(sym as usize) {
            *s = slot;
        }
    }
}

struct Rela {
    offset: u64,
    rtype: u32,
    sym: u32,
    addend: i64,
}

fn rela_at(table: &RoBytes, index: usize) -> Option<Rela> {
    let off = index.checked_mul(24)?;
    let b = table.as_slice().get(off..off.checked_add(24)?)?;
    let word =
        |i: usize| -> Option<u64> { Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?)) };
    let info = word(8)?;
    Some(Rela {
        offset: word(0)?,
        rtype: (info & 0xffff_ffff) as u32,
        sym: (info >> 32) as u32,
        addend: word(16)? as i64,
    })
}

/// A relocation whose value needs an IFUNC resolver call. Applied after all
/// other relocations, so resolvers see a fully relocated object.
struct Deferred {
    table: &'static str,
    index: usize,
    offset: u64,
    resolver: u64,
    /// Checked when the binding was made: the resolver is code.
    checked: bool,
}

/// Apply every relocation of `target`, binding symbols in `scope`; `host`
/// answers for the host's objects (one snapshot per load).
pub fn relocate(
    target: &mut LinkTarget<'_>,
    scope: &[Provider<'_>],
    host: &hostscope::HostScope,
    mode: LinkMode,
    mut on_bind: impl FnMut(&[u8], Option<&[u8]>, &Binding),
) -> KindResult<LinkReport> {
    let mut report = LinkReport::default();
    let bias = target.mapping.bias();

    if let Some(relr) = target.dynamic.relr {
        report.relr_addresses = apply_relr(target.mapping, relr, bias)?;
    }

    // Each symbol is bound once per object: relocations against the same
    // symbol (GOT slot, PLT slot, data pointers) reuse the result.
    let mut cache = BindingCache::new(target.symbols.len());
    let mut deferred: Vec<Deferred> = Vec::new();
    for (table, range) in [
        ("DT_RELA", target.dynamic.rela),
        ("DT_JMPREL", target.dynamic.jmprel),
    ] {
        let Some(range) = range else { continue };
        let bytes = target.mapping.read_only(range.vaddr, range.size).ok_or(
            ErrorKind::TableOutsideImage {
                tag: table,
                addr: range.vaddr,
                end: range.vaddr.saturating_add(range.size),
            },
        )?;
        let count = bytes.len() / 24;
        for index in 0..count {
            let Some(r) = rela_at(&bytes, index) else {
                break;
            };
            report.by_type.add(r.rtype);
            // The common case of large libraries (hundreds of thousands of
            // entries): no symbol, one checked write.
            if r.rtype == arch::R_RELATIVE {
                apply_relative(target.mapping, table, index, &r, bias)?;
                continue;
            }
            let outcome = apply_one(
                target,
                scope,
                host,
                mode,
                table,
                index,
                &r,
                &mut cache,
                &mut report,
                &mut on_bind,
            )?;
            if let Some((resolver, checked)) = outcome {
                deferred.push(Deferred {
                    table,
                    index,
                    offset: r.offset,
                    resolver,
                    checked,
                });
            }
        }
    }

    for d in deferred {
        // Checked in a dry run too, so `check` fails exactly when a load would.
        if !d.checked && !target.mapping.executable_at(d.resolver.wrapping_sub(bias)) {
            return Err(ErrorKind::BadCodePointer {
                what: format!("IFUNC resolver for relocation {} in {}", d.index, d.table),
                addr: d.resolver.wrapping_sub(bias),
            });
        }
        let value = match mode {
            LinkMode::Run => {
                report.ifunc_calls += 1;
                // SAFETY: the resolver lies in an executable segment of this
                // object, and every non-IFUNC relocation has been applied.
                unsafe { crate::runtime::call::ifunc_resolver(d.resolver) }
            }
            LinkMode::DryRun => 0,
        };
        write(target.mapping, d.table, d.index, d.offset, value)?;
    }
    if mode == LinkMode::DryRun && !report.unresolved.is_empty() {
        report.unresolved.sort();
        report.unresolved.dedup();
    }
    Ok(report)
}

fn write(
    mapping: &mut Mapping,
    table: &'static str,
    index: usize,
    offset: u64,
    value: u64,
) -> KindResult<()> {
    if mapping.write_u64(offset, value) {
        Ok(())
    } else {
        Err(ErrorKind::RelocationOutOfBounds {
            table,
            index,
            offset,
            width: 8,
        })
    }
}

/// The value of a TLS relocation. mmld objects use dynamic TLS only: their
/// module ids come from `runtime::tls`; host modules keep glibc's ids.
fn tls_value(
    target: &LinkTarget<'_>,
    table: &'static str,
    index: usize,
    r: &Rela,
    b: &Binding,
    from_host: bool,
) -> KindResult<u64> {
    let addend = r.addend as u64;
    let own = r.sym == 0 || b.provider == usize::MAX;
    let host_block = || {
        crate::runtime::tls::host_module_of(b.addr).ok_or_else(|| ErrorKind::TlsUnsupported {
            detail: format!(
                "relocation {index} in {table} refers to a host thread-local variable at {:#x} that is in no host TLS block",
                b.addr
            ),
        })
    };
    let no_module = || ErrorKind::TlsUnsupported {
        detail: format!(
            "relocation {index} in {table} ({}) refers to an object without PT_TLS",
            arch::relocation_name(r.rtype)
        ),
    };
    match r.rtype {
        arch::R_DTPMOD64 => {
            if own {
                target.tls_module.ok_or_else(no_module)
            } else if let Some(m) = b.tls_module {
                Ok(m)
            } else if from_host {
                Ok(host_block()?.0)
            } else {
                Err(no_module())
            }
        }
        arch::R_DTPOFF64 => {
            if from_host && !own {
                Ok(b.addr.wrapping_sub(host_block()?.1).wrapping_add(addend))
            } else {
                Ok(b.value.wrapping_add(addend))
            }
        }
        _ => {
            if from_host && !own {
                Ok(crate::runtime::tls::host_tp_offset(b.addr).wrapping_add(addend))
            } else {
                Err(ErrorKind::TlsUnsupported {
                    detail: format!(
                        "relocation {index} in {table} is R_X86_64_TPOFF64 against a variable of an mmld-loaded object: it needs the static TLS block (initial-exec model{}), which cannot grow after start-up; rebuild it with -ftls-model=global-dynamic",
                        if target.dynamic.flags & crate::elf::DF_STATIC_TLS != 0 {
                            ", DF_STATIC_TLS"
                        } else {
                            ""
                        }
                    ),
                })
            }
        }
    }
}

/// `R_X86_64_RELATIVE`: B + A.
fn apply_relative(
    mapping: &mut Mapping,
    table: &'static str,
    index: usize,
    r: &Rela,
    bias: u64,
) -> KindResult<()> {
    write(
        mapping,
        table,
        index,
        r.offset,
        bias.wrapping_add(r.addend as u64),
    )
}

/// Apply one `Elf64_Rela`; returns the resolver address if the value must
/// come from an IFUNC resolver later.
#[allow(clippy::too_many_arguments)]
fn apply_one(
    target: &mut LinkTarget<'_>,
    scope: &[Provider<'_>],
    host: &hostscope::HostScope,
    mode: LinkMode,
    table: &'static str,
    index: usize,
    r: &Rela,
    cache: &mut BindingCache,
    report: &mut LinkReport,
    on_bind: &mut impl FnMut(&[u8], Option<&[u8]>, &Binding),
) -> KindResult<Option<(u64, bool)>> {
    let bias = target.mapping.bias();
    let unsupported = || ErrorKind::UnsupportedRelocation {
        table,
        index,
        rtype: r.rtype,
        name: arch::relocation_name(r.rtype),
        offset: r.offset,
    };
    match r.rtype {
        arch::R_NONE => return Ok(None),
        arch::R_RELATIVE => {
            apply_relative(target.mapping, table, index, r, bias)?;
            return Ok(None);
        }
        arch::R_IRELATIVE => {
            // Check the target now so a bad offset fails before any call.
            if !target.mapping.writable_range(r.offset, 8) {
                return Err(ErrorKind::RelocationOutOfBounds {
                    table,
                    index,
                    offset: r.offset,
                    width: 8,
                });
            }
            return Ok(Some((bias.wrapping_add(r.addend as u64), false)));
        }
        arch::R_64
        | arch::R_GLOB_DAT
        | arch::R_JUMP_SLOT
        | arch::R_SIZE64
        | arch::R_DTPMOD64
        | arch::R_DTPOFF64
        | arch::R_TPOFF64 => {}
        arch::R_TLSDESC => {
            return Err(ErrorKind::TlsUnsupported {
                detail: format!(
                    "relocation {index} in {table} at {:#x} is R_X86_64_TLSDESC (code built with -mtls-dialect=gnu2), which mmld does not implement",
                    r.offset
                ),
            });
        }
        _ => return Err(unsupported()),
    }

    let binding = if r.sym == 0 {
        // No symbol: S is 0 (absolute addend).
        Some(Binding {
            addr: 0,
            size: 0,
            ifunc: false,
            resolver_in_code: false,
            unique: false,
            provider: usize::MAX,
            tls_module: None,
            value: 0,
        })
    } else {
        let sym = target
            .symbols
            .symbol(r.sym)
            .ok_or_else(|| ErrorKind::SymbolIndexOutOfRange {
                table,
                index,
                offset: r.offset,
                symbol: r.sym,
                count: target.symbols.len(),
            })?;
        match cache.get(r.sym) {
            Some(b) => b,
            None => {
                let b = bind_symbol(target, scope, host, r.sym, &sym, mode, report, on_bind)?;
                cache.insert(r.sym, b);
                b
            }
        }
    };
    let Some(b) = binding else {
        // Weak undefined, or unresolved in a dry run: the slot stays 0.
        write(target.mapping, table, index, r.offset, 0)?;
        return Ok(None);
    };
    if matches!(
        r.rtype,
        arch::R_DTPMOD64 | arch::R_DTPOFF64 | arch::R_TPOFF64
    ) {
        let from_host = matches!(
            scope.get(b.provider),
            Some(Provider::HostGlobal | Provider::Host(_))
        );
        let value = tls_value(target, table, index, r, &b, from_host)?;
        write(target.mapping, table, index, r.offset, value)?;
        return Ok(None);
    }
    if b.ifunc && r.rtype != arch::R_SIZE64 {
        if !target.mapping.writable_range(r.offset, 8) {
            return Err(ErrorKind::RelocationOutOfBounds {
                table,
                index,
                offset: r.offset,
                width: 8,
            });
        }
        // Only R_64 carries an addend onto an IFUNC; psABI defines the
        // result as the resolved address plus the addend, which the
        // deferred pass cannot add, so refuse the rare non-zero case.
        if r.addend != 0 {
            return Err(unsupported());
        }
        if !b.resolver_in_code && b.provider != usize::MAX {
            return Err(ErrorKind::BadCodePointer {
                what: format!("IFUNC resolver bound by relocation {index} in {table}"),
                addr: b.addr,
            });
        }
        return Ok(Some((b.addr, b.provider != usize::MAX)));
    }
    let value = match r.rtype {
        arch::R_64 => b.addr.wrapping_add(r.addend as u64),
        arch::R_SIZE64 => b.size.wrapping_add(r.addend as u64),
        _ => b.addr,
    };
    write(target.mapping, table, index, r.offset, value)?;
    Ok(None)
}

#[allow(clippy::too_many_arguments)]
fn bind_symbol(
    target: &LinkTarget<'_>,
    scope: &[Provider<'_>],
    host: &hostscope::HostScope,
    index: u32,
    sym: &Sym,
    mode: LinkMode,
    report: &mut LinkReport,
    on_bind: &mut impl FnMut(&[u8], Option<&[u8]>, &Binding),
) -> KindResult<Option<Binding>> {
    let bias = target.mapping.bias();
    if sym.bind() == symbols::STB_LOCAL {
        // Local symbols bind to themselves; no lookup.
        return Ok(Some(binding_for(*sym, bias, usize::MAX, target.tls_module)));
    }
    let (name, name_hash) = target.symbols.name_and_gnu_hash(sym)?;
    if let Some(addr) = crate::runtime::cxa::interposed(name) {
        // mmld's own implementations of the few runtime functions that must
        // know about mmld's objects (TLS, C++ thread-exit destructors).
        let b = Binding {
            addr,
            size: 0,
            ifunc: false,
            resolver_in_code: false,
            unique: false,
            provider: usize::MAX - 1,
            tls_module: None,
            value: 0,
        };
        on_bind(name, None, &b);
        return Ok(Some(b));
    }
    let version = target.symbols.required_version(index);
    let version_name = match version {
        Some(v) => Some(target.symbols.string(u64::from(v.name))?),
        None => None,
    };
    let req = Request {
        name,
        gnu_hash: name_hash,
        version: version.zip(version_name).map(|(v, n)| VersionRequest {
            name: n,
            hash: v.hash,
            exact_only: false,
        }),
    };
    if let Some(mut b) = resolve_in_scope(scope, &req, host) {
        if b.unique && mode == LinkMode::Run {
            // The first definition bound wins for the whole process.
            let mut table = unique_symbols().lock().unwrap_or_else(|e| e.into_inner());
            let first = table.entry(name.to_vec()).or_insert((b.addr, b.size));
            b.addr = first.0;
            b.size = first.1;
            report.unique_bindings += 1;
        }
        if matches!(
            scope.get(b.provider),
            Some(Provider::HostGlobal | Provider::Host(_))
        ) {
            report.host_bindings += 1;
        }
        on_bind(name, version_name, &b);
        return Ok(Some(b));
    }
    if sym.bind() == symbols::STB_WEAK {
        return Ok(None);
    }
    let shown = String::from_utf8_lossy(name).into_owned();
    let vshown = version_name.map(|v| String::from_utf8_lossy(v).into_owned());
    match mode {
        LinkMode::DryRun => {
            report.unresolved.push(match &vshown {
                Some(v) => format!("{shown}@{v}"),
                None => shown,
            });
            Ok(None)
        }
        LinkMode::Run => Err(ErrorKind::UnresolvedSymbol {
            name: shown,
            version: vshown,
            referenced_by: Some(target.name.to_string()),
        }),
    }
}

/// Decode `DT_RELR` (packed relative relocations): an even word is an
/// address to relocate; an odd word is a bitmap of the 63 words after the
/// last address. Returns how many words were relocated.
fn apply_relr(mapping: &mut Mapping, relr: VRange, bias: u64) -> KindResult<usize> {
    let bytes = mapping
        .read_only(relr.vaddr, relr.size)
        .ok_or(ErrorKind::TableOutsideImage {
            tag: "DT_RELR",
            addr: relr.vaddr,
            end: relr.vaddr.saturating_add(relr.size),
        })?;
    let mut next: Option<u64> = None;
    let mut count = 0usize;
    for (index, chunk) in bytes.as_slice().chunks_exact(8).enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let entry = u64::from_le_bytes(word);
        let fail = |offset| ErrorKind::RelocationOutOfBounds {
            table: "DT_RELR",
            index,
            offset,
            width: 8,
        };
        if entry & 1 == 0 {
            if !mapping.add_u64(entry, bias) {
                return Err(fail(entry));
            }
            count += 1;
            next = Some(entry.wrapping_add(8));
        } else {
            let base = next.ok_or_else(|| ErrorKind::MalformedTable {
                table: "DT_RELR",
                detail: format!("entry {index} is a bitmap with no address before it"),
            })?;
            let mut bits = entry >> 1;
            let mut at = base;
            while bits != 0 {
                if bits & 1 != 0 {
                    if !mapping.add_u64(at, bias) {
                        return Err(fail(at));
                    }
                    count += 1;
                }
                bits >>= 1;
                at = at.wrapping_add(8);
            }
            next = Some(base.wrapping_add(63 * 8));
        }
    }
    Ok(count)
}
