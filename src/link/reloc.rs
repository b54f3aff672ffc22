//! The relocation loop: every `Elf64_Rela` of an object, applied by the
//! kind `arch` classifies it as.
//!
//! Owns: walking `DT_RELA` and `DT_JMPREL`, binding each symbol once per
//! object, the formula of each [`RelocKind`], and IFUNC values (computed
//! after every other relocation, so resolvers see a relocated object).
//! Must never: name an architecture's relocation numbers, allocate per
//! relocation, or call an IFUNC resolver in a dry run.

use super::bindcache::{BindingCache, Cached};
use super::hostscope::HostScope;
use super::lookup::{OwnDefinition, binding_for, resolve_with_own, unique_symbols};
use super::relative::{apply_counted_relative, apply_relative, apply_relr};
use super::symbols::{self, Own, Request, Sym, VersionRequest};
use super::{Binding, LinkMode, LinkReport, LinkTarget, Provider};
use crate::arch::{RelocKind, current as arch};
use crate::elf::{DynamicInfo, VRange};
use crate::error::{ErrorKind, KindResult};
use crate::map::Mapping;

/// Bytes of one `Elf64_Rela`.
pub(super) const RELA_SIZE: usize = goblin::elf::reloc::reloc64::SIZEOF_RELA;

/// One `Elf64_Rela`, its `r_info` split.
pub(super) struct Rela {
    pub(super) offset: u64,
    pub(super) rtype: u32,
    pub(super) sym: u32,
    pub(super) addend: i64,
}

/// Decode one entry; `b` is `RELA_SIZE` bytes (from `chunks_exact`, so the
/// compiler drops the length checks).
#[inline]
pub(super) fn rela_from(b: &[u8]) -> Option<Rela> {
    let (offset, rest) = b.split_first_chunk::<8>()?;
    let (info, rest) = rest.split_first_chunk::<8>()?;
    let addend = rest.first_chunk::<8>()?;
    let info = u64::from_le_bytes(*info);
    Some(Rela {
        offset: u64::from_le_bytes(*offset),
        rtype: (info & 0xffff_ffff) as u32,
        sym: (info >> 32) as u32,
        addend: i64::from_le_bytes(*addend),
    })
}

/// The target offset and type of one entry, without the rest.
#[inline]
pub(super) fn rela_words(b: &[u8]) -> Option<(u64, u32)> {
    let (offset, rest) = b.split_first_chunk::<8>()?;
    let info = rest.first_chunk::<8>()?;
    Some((
        u64::from_le_bytes(*offset),
        (u64::from_le_bytes(*info) & 0xffff_ffff) as u32,
    ))
}

/// Where one relocation sits, for error messages.
#[derive(Clone, Copy)]
pub(super) struct Site {
    pub(super) table: &'static str,
    pub(super) index: usize,
}

/// A relocation whose value needs an IFUNC resolver call. Applied after all
/// other relocations, so resolvers see a fully relocated object.
struct Deferred {
    site: Site,
    offset: u64,
    resolver: u64,
    /// Checked when the binding was made: the resolver is code.
    checked: bool,
}

/// A binding for a relocation without a symbol: S is 0.
const NO_SYMBOL: Binding = Binding {
    addr: 0,
    size: 0,
    ifunc: false,
    resolver_in_code: false,
    unique: false,
    provider: usize::MAX,
    tls_module: None,
    value: 0,
};

/// Everything that stays fixed, or accumulates, while one object's
/// relocations are applied.
struct RelocationContext<'c, 'a, 'p, F> {
    target: &'c mut LinkTarget<'a>,
    scope: &'c [Provider<'p>],
    host: &'c HostScope,
    mode: LinkMode,
    bias: u64,
    /// Each symbol is bound once per object: relocations against the same
    /// symbol (GOT slot, PLT slot, data pointers) reuse the result.
    cache: BindingCache,
    deferred: Vec<Deferred>,
    report: LinkReport,
    on_bind: F,
}

/// A sparse file can back relocation tables gigabytes long with a few
/// kilobytes on disk: refuse counts no library has before walking them.
pub fn check_relocation_count(dynamic: &DynamicInfo) -> KindResult<()> {
    let limit = crate::elf::limits::MAX_RELOCATIONS;
    let size = |r: Option<VRange>| r.map_or(0, |r| r.size);
    let rela = (size(dynamic.rela) / 24).saturating_add(size(dynamic.jmprel) / 24);
    let relr = size(dynamic.relr) / 8;
    for (what, count) in [("DT_RELA and DT_JMPREL", rela), ("DT_RELR", relr)] {
        if count > limit {
            return Err(ErrorKind::LimitExceeded { what, count, limit });
        }
    }
    Ok(())
}

/// Apply every relocation of `target`, binding symbols in `scope`; `host`
/// answers for the host's objects (one snapshot per load).
pub fn relocate(
    target: &mut LinkTarget<'_>,
    scope: &[Provider<'_>],
    host: &HostScope,
    mode: LinkMode,
    on_bind: impl FnMut(&[u8], Option<&[u8]>, &Binding),
) -> KindResult<LinkReport> {
    check_relocation_count(target.dynamic)?;
    let bias = target.mapping.bias();
    let mut report = LinkReport::default();
    // A shared-relocations hit has every RELR word in the cache's pages.
    let replay = target.share.as_mut().and_then(|h| h.replay.take());
    if let (Some(relr), None) = (target.dynamic.relr, &replay) {
        report.relr_addresses = apply_relr(target.mapping, relr, bias)?;
    }
    // Not on a shared-relocations hit: the cache's pages are already
    // relocated, and populating them for writing would make them private.
    if mode == LinkMode::Run && replay.is_none() {
        super::prefault::populate_written_pages(target);
    }
    super::tls::start(target, mode);
    let size = |r: Option<VRange>| r.map_or(0, |r| r.size);
    let entries = (size(target.dynamic.rela) / RELA_SIZE as u64)
        .saturating_add(size(target.dynamic.jmprel) / RELA_SIZE as u64);
    // Recording shared relocations reads each binding's provider and
    // uniqueness again on every relocation: keep whole bindings then.
    let cache = BindingCache::new(
        target.symbols.len(),
        usize::try_from(entries).unwrap_or(usize::MAX),
        target.share.is_none(),
    );
    let mut cx = RelocationContext {
        target,
        scope,
        host,
        mode,
        bias,
        cache,
        deferred: Vec::new(),
        report,
        on_bind,
    };
    match &replay {
        Some(list) => cx.apply_listed(list)?,
        // The recording hook hoisted out of the loop: a normal load runs a
        // loop with no trace of it.
        None if cx.target.share.is_some() => {
            for table in ["DT_RELA", "DT_JMPREL"] {
                cx.apply_table::<true>(table)?;
            }
        }
        None => {
            for table in ["DT_RELA", "DT_JMPREL"] {
                cx.apply_table::<false>(table)?;
            }
        }
    }
    if let (Some(h), Some(list)) = (cx.target.share.as_mut(), replay) {
        h.replay = Some(list);
    }
    cx.install_lazy_stubs()?;
    // IFUNC resolvers may read the object's TLS: its static block, if it
    // needs one, is in place before they run.
    super::tls::finish(cx.target, mode)?;
    cx.apply_deferred()?;
    super::tls::check_image_unchanged(cx.target)?;
    let mut report = cx.report;
    if mode == LinkMode::DryRun && !report.unresolved.is_empty() {
        report.unresolved.sort();
        report.unresolved.dedup();
    }
    Ok(report)
}

impl<F: FnMut(&[u8], Option<&[u8]>, &Binding)> RelocationContext<'_, '_, '_, F> {
    /// `RECORD`: note which relocations are per process (shared
    /// relocations, normal load).
    fn apply_table<const RECORD: bool>(&mut self, table: &'static str) -> KindResult<()> {
        let range = match table {
            "DT_RELA" => self.target.dynamic.rela,
            _ => self.target.dynamic.jmprel,
        };
        let Some(range) = range else { return Ok(()) };
        let bytes = self
            .target
            .mapping
            .read_only(range.vaddr, range.size)
            .ok_or(ErrorKind::TableOutsideImage {
                tag: table,
                addr: range.vaddr,
                end: range.vaddr.saturating_add(range.size),
            })?;
        let entries = bytes.as_slice();
        let count = entries.len() / RELA_SIZE;
        let bias = self.bias;
        let mut index = match table {
            "DT_RELA" => apply_counted_relative(
                self.target.mapping,
                entries,
                self.target.dynamic.relacount,
                bias,
                &mut self.report.by_type,
            )?,
            _ => 0,
        };
        while index < count {
            // The common case of large libraries (hundreds of thousands of
            // entries, in long runs): no symbol, one write into the segment
            // the writer already checked. The table's bounds were checked
            // once above; entries are decoded from fixed-size chunks.
            let mut writer = self.target.mapping.writer();
            let counts = &mut self.report.by_type;
            let mut other = None;
            let rest = entries.get(index * RELA_SIZE..).unwrap_or_default();
            for chunk in rest.chunks_exact(RELA_SIZE) {
                let Some(r) = rela_from(chunk) else { break };
                counts.add(r.rtype);
                let kind = arch::classify(r.rtype);
                if kind != RelocKind::Relative {
                    other = Some((r, kind));
                    break;
                }
                if !writer.write_u64(r.offset, bias.wrapping_add(r.addend as u64)) {
                    return Err(out_of_bounds(table, index, r.offset));
                }
                index += 1;
            }
            let Some((r, kind)) = other else {
                break;
            };
            if RECORD {
                self.record_sharing(Site { table, index }, &r, kind)?;
            }
            self.apply_one(Site { table, index }, &r, kind)?;
            index += 1;
        }
        Ok(())
    }

    /// Shared relocations, normal load: note `r` if its value may differ
    /// between processes (see `link::sharing`). Its binding is made here
    /// and cached, so `apply_one` finds the same one.
    #[cold]
    fn record_sharing(&mut self, site: Site, r: &Rela, kind: RelocKind) -> KindResult<()> {
        let (per_process, through_scope) = match kind {
            RelocKind::None | RelocKind::Relative => (false, false),
            RelocKind::IRelative | RelocKind::Unsupported => (true, false),
            _ if kind.is_tls() => (true, false),
            _ => match self.binding(site, r, kind)? {
                Some(b) => {
                    let stable = self
                        .target
                        .share
                        .as_deref()
                        .is_some_and(|h| h.stable_provider(b.provider));
                    (b.ifunc || b.unique || !stable, b.provider != usize::MAX)
                }
                None => (true, false),
            },
        };
        let Some(h) = self.target.share.as_deref_mut() else {
            return Ok(());
        };
        if !per_process {
            if through_scope {
                h.scope_bound.push(r.offset);
            }
        } else if let Some(code) = super::sharing::encode(site.table, site.index) {
            h.per_process.push(code);
        }
        Ok(())
    }

    /// Shared relocations, cache hit: apply only the relocations `list`
    /// names (their pages are private; every other page came from the
    /// cache already relocated).
    fn apply_listed(&mut self, list: &[u32]) -> KindResult<()> {
        for &code in list {
            let (table, index) = super::sharing::decode(code);
            let range = match table {
                "DT_RELA" => self.target.dynamic.rela,
                _ => self.target.dynamic.jmprel,
            };
            let entry = range
                .and_then(|range| self.target.mapping.read_only(range.vaddr, range.size))
                .and_then(|bytes| {
                    let start = index.checked_mul(RELA_SIZE)?;
                    rela_from(bytes.as_slice().get(start..start.checked_add(RELA_SIZE)?)?)
                });
            let Some(r) = entry else {
                return Err(ErrorKind::MalformedTable {
                    table,
                    detail: format!(
                        "shared relocations name relocation {index}, which the table does not have"
                    ),
                });
            };
            self.report.by_type.add(r.rtype);
            let kind = arch::classify(r.rtype);
            self.apply_one(Site { table, index }, &r, kind)?;
        }
        Ok(())
    }

    /// Apply one relocation other than `Relative`, or defer it when its
    /// value comes from an IFUNC resolver.
    #[inline(always)]
    fn apply_one(&mut self, site: Site, r: &Rela, kind: RelocKind) -> KindResult<()> {
        match kind {
            RelocKind::None => return Ok(()),
            RelocKind::Relative => {
                return apply_relative(self.target.mapping, site.table, site.index, r, self.bias);
            }
            RelocKind::IRelative => {
                // Check the target now so a bad offset fails before any call.
                self.check_writable(site, r.offset)?;
                let resolver = self.bias.wrapping_add(r.addend as u64);
                self.defer(site, r.offset, resolver, false);
                return Ok(());
            }
            RelocKind::Unsupported => return Err(unsupported(site, r)),
            _ => debug_assert!(kind.needs_symbol()),
        }
        let bound = match self.binding(site, r, kind) {
            // A call nothing defines yet: a lazy load binds it on first call.
            Err(e @ ErrorKind::UnresolvedSymbol { .. }) if kind == RelocKind::CallSlot => {
                return self.bind_on_first_call(r, e);
            }
            other => other?,
        };
        let Some(b) = bound else {
            // Weak undefined, or unresolved in a dry run: the slot stays 0
            // (a descriptor gives the addend as the address, as glibc's).
            if kind == RelocKind::TlsDescriptor {
                return super::tls::undefined_weak(self.target, site, r);
            }
            return write(self.target.mapping, site.table, site.index, r.offset, 0);
        };
        if kind.is_tls() {
            let from_host = matches!(
                self.scope.get(b.provider),
                Some(Provider::HostGlobal | Provider::Host(_))
            );
            return super::tls::apply(self.target, site, r, kind, &b, from_host);
        }
        if b.ifunc && kind != RelocKind::SymbolSize {
            return self.defer_ifunc(site, r, &b);
        }
        let value = match kind {
            RelocKind::SymbolPlusAddend => b.addr.wrapping_add(r.addend as u64),
            RelocKind::SymbolSize => b.size.wrapping_add(r.addend as u64),
            _ => b.addr,
        };
        write(self.target.mapping, site.table, site.index, r.offset, value)
    }

    /// Leave PLT slot `r` to be bound on its first call, when the load is
    /// lazy and the slot can be written later (an aligned word outside
    /// RELRO); otherwise fail with `unresolved`.
    fn bind_on_first_call(&mut self, r: &Rela, unresolved: ErrorKind) -> KindResult<()> {
        let writable_later = r.offset.is_multiple_of(arch::WORD_SIZE)
            && self
                .target
                .mapping
                .writable_range(r.offset, arch::WORD_SIZE);
        let got = self.target.mapping.address_of(r.offset);
        let Some(lazy) = self.target.lazy.as_mut() else {
            return Err(unresolved);
        };
        let in_relro = lazy
            .relro
            .is_some_and(|v| r.offset >= v.vaddr && r.offset < v.vaddr.saturating_add(v.size));
        if !writable_later || in_relro || self.mode != LinkMode::Run {
            return Err(unresolved);
        }
        lazy.stubs.want(r.offset, got, r.sym);
        self.report.lazy_slots += 1;
        Ok(())
    }

    /// Point every slot left for its first call at its stub. Done before
    /// IFUNC resolvers run, so no slot is ever left holding nothing.
    fn install_lazy_stubs(&mut self) -> KindResult<()> {
        let Some(lazy) = self.target.lazy.as_mut() else {
            return Ok(());
        };
        let slots = lazy.stubs.build().map_err(|source| ErrorKind::Mmap {
            what: "lazy-call stubs",
            source,
        })?;
        for (offset, stub) in slots {
            write(self.target.mapping, "DT_JMPREL", 0, offset, stub)?;
        }
        Ok(())
    }

    /// The binding for `r`'s symbol (`NO_SYMBOL` for index 0), bound once
    /// per symbol; `None` when it stays unbound (weak, or a dry run).
    #[inline]
    fn binding(&mut self, site: Site, r: &Rela, kind: RelocKind) -> KindResult<Option<Binding>> {
        if r.sym == 0 {
            return Ok(Some(NO_SYMBOL));
        }
        // Only an index `bind_new` validated is ever cached.
        match self.cache.get(r.sym) {
            Some(Cached::Rich(b)) => Ok(b),
            // A TLS relocation against a symbol that is not `STT_TLS` (no
            // linker makes one) needs the provider and value a plain entry
            // does not keep: it is bound again (the same lookup, the same
            // result).
            Some(Cached::Plain(_)) if kind.is_tls() => self.bind_new(site, r),
            Some(Cached::Plain(p)) => Ok(Some(Binding {
                addr: p.addr,
                size: p.size,
                ..NO_SYMBOL
            })),
            None => self.bind_new(site, r),
        }
    }

    /// First relocation against a symbol: check its index, bind it, cache
    /// the result. Kept out of line: the loop itself stays small.
    #[inline(never)]
    fn bind_new(&mut self, site: Site, r: &Rela) -> KindResult<Option<Binding>> {
        let sym =
            self.target
                .symbols
                .symbol(r.sym)
                .ok_or_else(|| ErrorKind::SymbolIndexOutOfRange {
                    table: site.table,
                    index: site.index,
                    offset: r.offset,
                    symbol: r.sym,
                    count: self.target.symbols.len(),
                })?;
        let b = self.bind_symbol(r.sym, &sym)?;
        self.cache.insert(r.sym, b, sym.kind() == symbols::STT_TLS);
        Ok(b)
    }

    /// A symbolic relocation bound to an IFUNC: its value is what the
    /// resolver returns, computed after every other relocation.
    fn defer_ifunc(&mut self, site: Site, r: &Rela, b: &Binding) -> KindResult<()> {
        self.check_writable(site, r.offset)?;
        // Only S + A carries an addend onto an IFUNC; psABI defines the
        // result as the resolved address plus the addend, which the
        // deferred pass cannot add, so refuse the rare non-zero case.
        if r.addend != 0 {
            return Err(unsupported(site, r));
        }
        if !b.resolver_in_code && b.provider != usize::MAX {
            return Err(ErrorKind::BadCodePointer {
                what: format!(
                    "IFUNC resolver bound by relocation {} in {}",
                    site.index, site.table
                ),
                addr: b.addr,
            });
        }
        self.defer(site, r.offset, b.addr, b.provider != usize::MAX);
        Ok(())
    }

    fn defer(&mut self, site: Site, offset: u64, resolver: u64, checked: bool) {
        self.deferred.push(Deferred {
            site,
            offset,
            resolver,
            checked,
        });
    }

    fn check_writable(&self, site: Site, offset: u64) -> KindResult<()> {
        if self.target.mapping.writable_range(offset, arch::WORD_SIZE) {
            Ok(())
        } else {
            Err(ErrorKind::RelocationOutOfBounds {
                table: site.table,
                index: site.index,
                offset,
                width: arch::WORD_SIZE,
            })
        }
    }

    /// Call each deferred IFUNC resolver and write what it returns.
    fn apply_deferred(&mut self) -> KindResult<()> {
        let bias = self.bias;
        for d in std::mem::take(&mut self.deferred) {
            // Checked in a dry run too, so `check` fails exactly when a load would.
            if !d.checked
                && !self
                    .target
                    .mapping
                    .executable_at(d.resolver.wrapping_sub(bias))
            {
                return Err(ErrorKind::BadCodePointer {
                    what: format!(
                        "IFUNC resolver for relocation {} in {}",
                        d.site.index, d.site.table
                    ),
                    addr: d.resolver.wrapping_sub(bias),
                });
            }
            let value = match self.mode {
                LinkMode::Run => {
                    self.report.ifunc_calls += 1;
                    // SAFETY: the resolver lies in an executable segment of
                    // this object, and every non-IFUNC relocation has been
                    // applied.
                    unsafe { crate::runtime::call::ifunc_resolver(d.resolver) }
                }
                LinkMode::DryRun => 0,
            };
            write(
                self.target.mapping,
                d.site.table,
                d.site.index,
                d.offset,
                value,
            )?;
        }
        Ok(())
    }

    /// Bind symbol `index` of the object in the scope; `None` when it stays
    /// unbound (weak undefined, or unresolved in a dry run).
    fn bind_symbol(&mut self, index: u32, sym: &Sym) -> KindResult<Option<Binding>> {
        let target = &*self.target;
        // Local symbols bind to themselves; no lookup. So does a protected
        // definition, whatever precedes it in the scope (glibc's rule: the
        // object's own references never reach an interposer).
        if sym.bind() == symbols::STB_LOCAL
            || (sym.is_defined() && sym.visibility() == symbols::STV_PROTECTED)
        {
            let bias = target.mapping.bias();
            return Ok(Some(binding_for(*sym, bias, usize::MAX, target.tls_module)));
        }
        let (name, name_hash) = target.symbols.name_and_gnu_hash_at(index, sym)?;
        if let Some(addr) = crate::runtime::cxa::interposed(name) {
            // mmld's own implementations of the few runtime functions that
            // must know about mmld's objects (TLS, C++ thread-exit
            // destructors).
            let b = Binding {
                provider: usize::MAX - 1,
                addr,
                ..NO_SYMBOL
            };
            (self.on_bind)(name, None, &b);
            return Ok(Some(b));
        }
        let (version, own) = target.symbols.reference_version(index, sym);
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
        // The object's own definition: its tables need not be searched for
        // the symbol the relocation names (the scope before it still is).
        let own = match own {
            Own::Yes => true,
            Own::No => false,
            Own::Check => target.symbols.accepts_own(index, *sym, &req),
        }
        .then_some(OwnDefinition {
            symbols: target.symbols,
            sym: *sym,
        });
        if let Some(mut b) = resolve_with_own(self.scope, &req, self.host, own) {
            if b.unique && self.mode == LinkMode::Run {
                // The first definition bound wins for the whole process.
                let mut table = unique_symbols().lock().unwrap_or_else(|e| e.into_inner());
                match table.entry(name.to_vec()) {
                    std::collections::hash_map::Entry::Occupied(first) => {
                        (b.addr, b.size) = *first.get();
                    }
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        // This definition becomes the process's: its object
                        // must outlive every later binding to it.
                        slot.insert((b.addr, b.size));
                        if !self.report.unique_providers.contains(&b.provider) {
                            self.report.unique_providers.push(b.provider);
                        }
                    }
                }
                self.report.unique_bindings += 1;
            }
            if matches!(
                self.scope.get(b.provider),
                Some(Provider::HostGlobal | Provider::Host(_))
            ) {
                self.report.host_bindings += 1;
            }
            (self.on_bind)(name, version_name, &b);
            return Ok(Some(b));
        }
        if sym.bind() == symbols::STB_WEAK {
            return Ok(None);
        }
        self.unresolved(name, version_name)
    }

    /// A strong reference nothing defines: an error, or in a dry run one
    /// more line of the report.
    fn unresolved(&mut self, name: &[u8], version: Option<&[u8]>) -> KindResult<Option<Binding>> {
        let shown = String::from_utf8_lossy(name).into_owned();
        let vshown = version.map(|v| String::from_utf8_lossy(v).into_owned());
        match self.mode {
            LinkMode::DryRun => {
                self.report.unresolved.push(match &vshown {
                    Some(v) => format!("{shown}@{v}"),
                    None => shown,
                });
                Ok(None)
            }
            LinkMode::Run => Err(ErrorKind::UnresolvedSymbol {
                name: shown,
                version: vshown,
                referenced_by: Some(self.target.name.to_string()),
            }),
        }
    }
}

fn unsupported(site: Site, r: &Rela) -> ErrorKind {
    ErrorKind::UnsupportedRelocation {
        table: site.table,
        index: site.index,
        rtype: r.rtype,
        name: arch::relocation_name(r.rtype),
        offset: r.offset,
    }
}

/// Write one relocated word, or say which relocation points outside the
/// object's writable memory.
#[inline]
pub(super) fn write(
    mapping: &mut Mapping,
    table: &'static str,
    index: usize,
    offset: u64,
    value: u64,
) -> KindResult<()> {
    if mapping.write_u64(offset, value) {
        Ok(())
    } else {
        Err(out_of_bounds(table, index, offset))
    }
}

#[cold]
pub(super) fn out_of_bounds(table: &'static str, index: usize, offset: u64) -> ErrorKind {
    ErrorKind::RelocationOutOfBounds {
        table,
        index,
        offset,
        width: arch::WORD_SIZE,
    }
}
