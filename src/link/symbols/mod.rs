//! Symbol tables of one object: `.dynsym`, `.dynstr`, GNU and SysV hash
//! tables, and symbol versions.
//!
//! Owns: finding a symbol by name (and version) in one object, exactly as
//! glibc matches it, and bounding every table read by the file-backed part
//! of the read-only segment it lives in (so no table is larger than the
//! file). Must never: follow a hash chain without a bound (an endless or
//! cyclic chain is an error when the table is read, not a hang later),
//! index a table without a check, or search more than one object (scopes
//! are built by `link` and the loader).

mod hash;
mod inplace;
mod tables;
mod versions;

use std::sync::OnceLock;

use crate::elf::DynamicInfo;
use crate::error::{ErrorKind, KindResult};
use crate::map::{Mapping, RoBytes};
use hash::{GnuHash, SysvHash, parse_gnu, parse_sysv};
pub use hash::{gnu_hash, sysv_hash};
use tables::{malformed, nul_position, overlaps, table_bytes, u16_at, u32_at, u64_at};
use versions::{VERSYM_HIDDEN, parse_verdef, parse_verneed};

pub const SYM_SIZE: usize = goblin::elf::sym::sym64::SIZEOF_SYM;

pub use goblin::elf::sym::{
    STB_GLOBAL, STB_GNU_UNIQUE, STB_LOCAL, STB_WEAK, STT_COMMON, STT_FUNC, STT_GNU_IFUNC,
    STT_NOTYPE, STT_OBJECT, STT_TLS,
};

/// `st_other` visibility: defined here, bound here by this object's own
/// references, but still exported.
pub const STV_PROTECTED: u8 = goblin::elf::sym::STV_PROTECTED;

// goblin types section indices as u32 (`e_shstrndx` and friends);
// `st_shndx` is 16 bits, and both values fit.
pub const SHN_UNDEF: u16 = goblin::elf::section_header::SHN_UNDEF as u16;
pub const SHN_ABS: u16 = goblin::elf::section_header::SHN_ABS as u16;

const VER_FLG_BASE: u16 = goblin::elf::symver::VER_FLG_BASE;

/// One `Elf64_Sym`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sym {
    pub name: u32,
    pub info: u8,
    pub other: u8,
    pub shndx: u16,
    pub value: u64,
    pub size: u64,
}

impl Sym {
    pub fn bind(&self) -> u8 {
        self.info >> 4
    }
    pub fn kind(&self) -> u8 {
        self.info & 0xf
    }
    pub fn is_defined(&self) -> bool {
        self.shndx != SHN_UNDEF
    }
    pub fn visibility(&self) -> u8 {
        self.other & 3
    }
}

/// A version a reference asks for or a definition carries.
#[derive(Debug, Clone, Copy)]
pub struct VersionName {
    /// Offset of the name in `.dynstr`.
    pub name: u32,
    pub hash: u32,
    /// Definition: `VER_FLG_BASE`. Reference: `VER_FLG_WEAK`.
    pub flags: u16,
    /// For references, the `.dynstr` offset of the file name in `VERNEED`.
    pub file: u32,
}

/// Would a lookup find a reference's own symbol in its own object?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Own {
    Yes,
    No,
    /// Only [`SymbolTable::accepts_own`] can tell (a defined symbol whose
    /// version index names a needed version: no linker makes one).
    Check,
}

impl From<bool> for Own {
    fn from(yes: bool) -> Own {
        if yes { Own::Yes } else { Own::No }
    }
}

/// What a lookup asks for.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub name: &'a [u8],
    pub gnu_hash: u32,
    pub version: Option<VersionRequest<'a>>,
}

#[derive(Debug, Clone, Copy)]
pub struct VersionRequest<'a> {
    pub name: &'a [u8],
    pub hash: u32,
    /// A hidden or weak reference only matches its exact version.
    pub exact_only: bool,
}

impl<'a> Request<'a> {
    pub fn new(name: &'a [u8], version: Option<&'a [u8]>) -> Self {
        Request {
            name,
            gnu_hash: gnu_hash(name),
            version: version.map(|v| VersionRequest {
                name: v,
                hash: sysv_hash(v),
                exact_only: false,
            }),
        }
    }
}

/// The symbol tables of one mapped object.
#[derive(Debug)]
pub struct SymbolTable {
    strtab: RoBytes,
    symtab: RoBytes,
    /// How many entries a lookup may read: the symbol count of a table
    /// read whole; for one read in place ([`SymbolTable::in_place`]), as
    /// many as its segment holds (a bound for memory safety only: chains
    /// end at their own marker).
    limit: u32,
    /// The number of `.dynsym` entries (counted on first need in place).
    count: OnceLock<u32>,
    gnu: Option<GnuHash>,
    sysv: Option<SysvHash>,
    versym: Option<RoBytes>,
    /// Definitions by version index (read on first need in place).
    verdefs: OnceLock<Vec<Option<VersionName>>>,
    /// References by version index (read on first need in place).
    verneeds: OnceLock<Vec<Option<VersionName>>>,
    /// For a table read in place: what counting and the version lists
    /// need later.
    deferred: Option<Box<inplace::Deferred>>,
}

impl SymbolTable {
    /// Locate and validate the tables `dynamic` points to inside `mapping`.
    pub fn new(mapping: &Mapping, dynamic: &DynamicInfo) -> KindResult<SymbolTable> {
        let mut table = SymbolTable::strings_only(mapping, dynamic)?;
        let Some(symtab_addr) = dynamic.symtab else {
            return Ok(table.without_symbols());
        };
        if let Some(addr) = dynamic.hash {
            // SysV chains are walked only when there is no GNU hash table;
            // only then is validating every chain worth its cost.
            table.sysv = Some(parse_sysv(mapping, addr, dynamic.gnu_hash.is_none())?);
        }
        let mut count = table.sysv.map(|s| (s.chains.len() / 4) as u32);
        if let Some(addr) = dynamic.gnu_hash {
            let (gnu, mut gnu_count) = parse_gnu(mapping, addr)?;
            if gnu.hashes_nothing() && count.is_none() {
                gnu_count = gnu_count.max(unhashed_symbol_count(mapping, dynamic, symtab_addr));
            }
            table.gnu = Some(gnu);
            count = Some(count.map_or(gnu_count, |c| c.max(gnu_count)));
        }
        let count = count.ok_or(ErrorKind::NoHashTable)?;
        let sym_bytes = u64::from(count) * SYM_SIZE as u64;
        let versym_len = u64::from(count) * 2;
        // Before reading tables sized by `count`: a runaway chain makes
        // `count` wrong, and that is the error to report.
        if let Some(g) = table.gnu.as_ref() {
            let sysv = table.sysv.map(|h| h.range);
            check_gnu_chains(g, count, dynamic, symtab_addr, sysv)?;
        }
        table.symtab = table_bytes(mapping, "DT_SYMTAB", symtab_addr, sym_bytes)?;
        table.limit = count;
        let _ = table.count.set(count);
        if let Some(addr) = dynamic.versym {
            table.versym = Some(table_bytes(mapping, "DT_VERSYM", addr, versym_len)?);
        }
        let verdefs = match dynamic.verdef {
            Some((addr, num)) => parse_verdef(mapping, addr, num)?,
            None => Vec::new(),
        };
        let verneeds = match dynamic.verneed {
            Some((addr, num)) => parse_verneed(mapping, addr, num)?,
            None => Vec::new(),
        };
        table.set_versions(verdefs, verneeds);
        Ok(table)
    }

    fn set_versions(&self, verdefs: Vec<Option<VersionName>>, verneeds: Vec<Option<VersionName>>) {
        let _ = self.verdefs.set(verdefs);
        let _ = self.verneeds.set(verneeds);
    }

    /// Number of entries in `.dynsym`.
    pub fn len(&self) -> u32 {
        self.count()
    }

    pub fn has_gnu_hash(&self) -> bool {
        self.gnu.is_some()
    }

    /// The GNU hash of every symbol in the GNU hash table (its chain array
    /// stores them, low bit aside), or `None` without a GNU hash table.
    pub fn gnu_hashes(&self) -> Option<impl Iterator<Item = u32> + '_> {
        let g = self.gnu.as_ref()?;
        let n = self.hashed_end()?.saturating_sub(g.symoffset) as usize;
        // One slice bound for the whole array, then plain words: a host's
        // global scope has thousands of them.
        let words = g.chains.as_slice().get(..n.checked_mul(4)?)?;
        Some(
            words
                .chunks_exact(4)
                .map(|w| u32::from_le_bytes(w.try_into().unwrap_or_default()) & !1),
        )
    }

    /// The symbol count if it is known; for a table read in place and not
    /// counted yet, an estimate from its hash table's size (ld gives a GNU
    /// table between half and one bucket per hashed symbol), so a
    /// heuristic does not make it count.
    pub fn count_estimate(&self) -> u32 {
        if let Some(&c) = self.count.get() {
            return c;
        }
        match (&self.gnu, &self.sysv) {
            (_, Some(s)) => (s.chains.len() / 4) as u32,
            (Some(g), None) => g
                .symoffset
                .saturating_add(g.nbuckets.saturating_mul(3) / 2)
                .min(self.limit),
            (None, None) => 0,
        }
    }

    /// Number of `.dynsym` entries.
    pub fn count(&self) -> u32 {
        *self.count.get_or_init(|| self.count_in_place())
    }

    pub fn has_sysv_hash(&self) -> bool {
        self.sysv.is_some()
    }

    /// Entry `index` of `.dynsym`. One bounds check for the whole entry,
    /// then fields at fixed offsets (every binding and every candidate of
    /// a lookup decodes one).
    #[inline]
    pub fn symbol(&self, index: u32) -> Option<Sym> {
        if index >= self.limit {
            return None;
        }
        let off = index as usize * SYM_SIZE;
        let b: &[u8; SYM_SIZE] = self
            .symtab
            .as_slice()
            .get(off..off.checked_add(SYM_SIZE)?)?
            .try_into()
            .ok()?;
        let (name, rest) = b.split_first_chunk::<4>()?;
        let (&[info, other], rest) = rest.split_first_chunk::<2>()?;
        let (shndx, rest) = rest.split_first_chunk::<2>()?;
        let (value, size) = rest.split_first_chunk::<8>()?;
        Some(Sym {
            name: u32::from_le_bytes(*name),
            info,
            other,
            shndx: u16::from_le_bytes(*shndx),
            value: u64::from_le_bytes(*value),
            size: u64::from_le_bytes(size.first_chunk::<8>().copied()?),
        })
    }

    /// The NUL-terminated string at `offset` in `.dynstr`, without the NUL.
    pub fn string(&self, offset: u64) -> KindResult<&[u8]> {
        let bad = || ErrorKind::BadString {
            offset,
            size: self.strtab.len() as u64,
        };
        let start = usize::try_from(offset).map_err(|_| bad())?;
        let tail = self.strtab.as_slice().get(start..).ok_or_else(bad)?;
        // A word-at-a-time search for the terminator: this runs for every
        // symbol a load binds.
        let len = nul_position(tail).ok_or_else(bad)?;
        tail.get(..len).ok_or_else(bad)
    }

    /// The name of `sym` and its GNU hash: every binding of a load needs
    /// both. The terminator is found with a word-at-a-time search, then
    /// the hash takes four bytes per step (a byte-at-a-time loop that also
    /// tests for the terminator was half of a binding's own cost).
    pub fn name_and_gnu_hash(&self, sym: &Sym) -> KindResult<(&[u8], u32)> {
        let name = self.string(u64::from(sym.name))?;
        Ok((name, gnu_hash(name)))
    }

    /// As [`Self::name_and_gnu_hash`] for symbol `index` of this table: a
    /// symbol the object defines has its hash in the GNU table already,
    /// which is cheaper to read than the name is to hash.
    pub fn name_and_gnu_hash_at(&self, index: u32, sym: &Sym) -> KindResult<(&[u8], u32)> {
        let name = self.string(u64::from(sym.name))?;
        let stored = self.gnu.as_ref().and_then(|g| g.hash_of(index));
        Ok((name, stored.unwrap_or_else(|| gnu_hash(name))))
    }

    /// Is the string at `offset` exactly `name`? Compares in place instead
    /// of first scanning for the terminator: the hot path of every lookup.
    fn string_is(&self, offset: u32, name: &[u8]) -> bool {
        let start = offset as usize;
        let table = self.strtab.as_slice();
        start
            .checked_add(name.len())
            .and_then(|end| Some((table.get(start..end)?, table.get(end)?)))
            .is_some_and(|(bytes, &nul)| nul == 0 && bytes == name)
    }

    pub fn symbol_name(&self, sym: &Sym) -> KindResult<&[u8]> {
        self.string(u64::from(sym.name))
    }

    /// The raw version index of symbol `index` (0 when there is no table).
    pub fn versym(&self, index: u32) -> u16 {
        self.versym
            .as_ref()
            .and_then(|v| u16_at(v.as_slice(), index as usize * 2))
            .unwrap_or(1)
    }

    /// The version a reference (an undefined symbol) asks for, if any.
    pub fn required_version(&self, index: u32) -> Option<VersionName> {
        let ndx = usize::from(self.versym(index) & !VERSYM_HIDDEN);
        if ndx < 2 {
            return None;
        }
        self.verneeds()
            .get(ndx)
            .copied()
            .flatten()
            .or_else(|| self.verdefs().get(ndx).copied().flatten())
    }

    /// The version a definition carries, and whether it is hidden.
    pub fn defined_version(&self, index: u32) -> Option<(VersionName, bool)> {
        let raw = self.versym(index);
        let ndx = usize::from(raw & !VERSYM_HIDDEN);
        let v = self.verdefs().get(ndx).copied().flatten()?;
        Some((v, raw & VERSYM_HIDDEN != 0))
    }

    /// Names of every version this object defines (not the base version).
    pub fn version_definitions(&self) -> impl Iterator<Item = &VersionName> {
        self.verdefs()
            .iter()
            .flatten()
            .filter(|v| v.flags & VER_FLG_BASE == 0)
    }

    pub fn version_references(&self) -> impl Iterator<Item = &VersionName> {
        self.verneeds().iter().flatten()
    }

    /// Look `req` up in this object, as glibc's `do_lookup_x` does for one
    /// object: hash chain, then name, then type, then version.
    pub fn lookup(&self, req: &Request<'_>) -> Option<(u32, Sym)> {
        if let Some(g) = &self.gnu {
            return self.lookup_gnu(g, req);
        }
        if let Some(s) = &self.sysv {
            return self.lookup_sysv(s, req);
        }
        None
    }

    /// Does the GNU Bloom filter rule out a symbol with this hash? `false`
    /// without a GNU table. The first test of every lookup, inlined where
    /// a scope is searched: most probes of a load end here.
    #[inline]
    pub fn bloom_excludes(&self, hash: u32) -> bool {
        let Some(g) = &self.gnu else { return false };
        let at = ((hash / 64) & g.bloom_mask) as usize * 8;
        let Some(word) = g.bloom.as_slice().get(at..at + 8) else {
            return false;
        };
        let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
        let mask = (1u64 << (hash % 64)) | (1u64 << ((hash >> g.bloom_shift) % 64));
        word & mask != mask
    }

    fn lookup_gnu(&self, g: &GnuHash, req: &Request<'_>) -> Option<(u32, Sym)> {
        let h = req.gnu_hash;
        let word = u64_at(&g.bloom, ((h / 64) & g.bloom_mask) as usize)?;
        let mask = (1u64 << (h % 64)) | (1u64 << ((h >> g.bloom_shift) % 64));
        if word & mask != mask {
            return None;
        }
        let mut index = u32_at(&g.buckets, (h % g.nbuckets) as usize)?;
        if index == 0 || index < g.symoffset {
            return None;
        }
        // Bounded by the symbol count: a chain that never sets its end bit
        // stops at the table's end instead of running on.
        while index < self.limit {
            let chain = u32_at(&g.chains, (index - g.symoffset) as usize)?;
            if (chain | 1) == (h | 1)
                && let Some(found) = self.check_match(index, req)
            {
                return Some(found);
            }
            if chain & 1 != 0 {
                return None;
            }
            index += 1;
        }
        None
    }

    fn lookup_sysv(&self, s: &SysvHash, req: &Request<'_>) -> Option<(u32, Sym)> {
        let h = sysv_hash(req.name);
        let mut index = u32_at(&s.buckets, (h % s.nbucket) as usize)?;
        // A chain visits each symbol at most once; more steps means a cycle.
        let mut steps = 0u32;
        while index != 0 && steps <= self.limit {
            if let Some(found) = self.check_match(index, req) {
                return Some(found);
            }
            index = u32_at(&s.chains, index as usize)?;
            steps += 1;
        }
        None
    }

    /// Can `sym` answer a lookup at all (by any name)? glibc skips
    /// undefined and local symbols, types other code cannot bind to, and
    /// zero-valued definitions that are neither absolute nor TLS.
    fn is_candidate(sym: &Sym) -> bool {
        sym.is_defined()
            && (sym.value != 0 || sym.shndx == SHN_ABS || sym.kind() == STT_TLS)
            && matches!(
                sym.kind(),
                STT_NOTYPE | STT_OBJECT | STT_FUNC | STT_COMMON | STT_TLS | STT_GNU_IFUNC
            )
            && matches!(sym.bind(), STB_GLOBAL | STB_WEAK | STB_GNU_UNIQUE)
    }

    /// Every symbol an unversioned lookup (`dlsym`) of its own name would
    /// find in this object, in the order the hash chains would meet them:
    /// exactly the hashed symbols that are candidates and not hidden.
    pub fn default_definitions(&self) -> impl Iterator<Item = (u32, Sym)> + '_ {
        let first = match (&self.gnu, &self.sysv) {
            (Some(g), _) => g.symoffset,
            (None, Some(_)) => 1,
            (None, None) => self.count(),
        };
        (first..self.count()).filter_map(move |index| {
            let sym = self.symbol(index)?;
            let visible = self.versym.is_none() || self.versym(index) & VERSYM_HIDDEN == 0;
            (Self::is_candidate(&sym) && visible).then_some((index, sym))
        })
    }

    fn check_match(&self, index: u32, req: &Request<'_>) -> Option<(u32, Sym)> {
        let sym = self.symbol(index)?;
        if !Self::is_candidate(&sym) {
            return None;
        }
        if !self.string_is(sym.name, req.name) {
            return None;
        }
        self.version_accepts(index, sym, req)
    }

    /// The version a reference to symbol `index` (`sym`) asks for, as
    /// [`Self::required_version`] gives it, and whether a lookup of the
    /// symbol's own name with that version would accept `sym` itself in
    /// this table (`Own::Check`: only the full check can tell). One read
    /// of the version tables for both: every binding of a load asks.
    pub fn reference_version(&self, index: u32, sym: &Sym) -> (Option<VersionName>, Own) {
        let candidate = Self::is_candidate(sym);
        if self.versym.is_none() {
            return (None, Own::from(candidate));
        }
        let raw = self.versym(index);
        let ndx = usize::from(raw & !VERSYM_HIDDEN);
        let hidden = raw & VERSYM_HIDDEN != 0;
        if ndx < 2 {
            return (None, Own::from(candidate && !hidden));
        }
        let need = self.verneeds().get(ndx).copied().flatten();
        let def = self.verdefs().get(ndx).copied().flatten();
        match (need, def) {
            // The version is the definition's own: a lookup accepts it
            // unless it is the hidden base version (see `version_accepts`).
            (None, Some(d)) => (
                Some(d),
                Own::from(candidate && (d.flags & VER_FLG_BASE == 0 || !hidden)),
            ),
            (None, None) => (None, Own::from(candidate && !hidden)),
            (Some(n), _) if candidate => (Some(n), Own::Check),
            (Some(n), _) => (Some(n), Own::No),
        }
    }

    /// The full form of [`Own::Check`]: would a lookup of `req`, which
    /// names symbol `index` (`sym`), accept that symbol? The name compare
    /// is skipped: the name is the symbol's own.
    pub fn accepts_own(&self, index: u32, sym: Sym, req: &Request<'_>) -> bool {
        Self::is_candidate(&sym) && self.version_accepts(index, sym, req).is_some()
    }

    /// The version half of [`Self::check_match`].
    fn version_accepts(&self, index: u32, sym: Sym, req: &Request<'_>) -> Option<(u32, Sym)> {
        if self.versym.is_none() {
            // An object without versions satisfies any request.
            return Some((index, sym));
        }
        let raw = self.versym(index);
        let hidden = raw & VERSYM_HIDDEN != 0;
        let def = self
            .verdefs()
            .get(usize::from(raw & !VERSYM_HIDDEN))
            .copied()
            .flatten();
        match req.version {
            None => {
                // Unversioned lookups (dlsym) take the default version.
                (!hidden).then_some((index, sym))
            }
            Some(want) => {
                let matches = def.is_some_and(|d| {
                    d.hash == want.hash
                        && d.flags & VER_FLG_BASE == 0
                        && self.string(u64::from(d.name)).ok() == Some(want.name)
                });
                if matches {
                    return Some((index, sym));
                }
                // glibc accepts an unversioned (base or global) definition for
                // a versioned reference, unless it is hidden.
                let unversioned = def.is_none_or(|d| d.flags & VER_FLG_BASE != 0);
                (unversioned && !hidden && !want.exact_only).then_some((index, sym))
            }
        }
    }

    /// Iterate every defined, exported symbol (for `mmld info`).
    pub fn exported(&self) -> impl Iterator<Item = (u32, Sym)> + '_ {
        (1..self.count()).filter_map(move |i| {
            let s = self.symbol(i)?;
            (s.is_defined() && s.bind() != STB_LOCAL).then_some((i, s))
        })
    }
}

/// How many entries `.dynsym` has when the GNU hash table hashes none (an
/// object that exports nothing: a plugin that registers itself from a
/// constructor). The linker then sets `symoffset` to 1 whatever the count,
/// so the count comes from the layout instead: `.dynsym` ends where the
/// next table the dynamic section names begins (ld puts `.dynstr` right
/// after it), and never past the file-backed part of its segment. An upper
/// bound in any layout, exact in the linkers' own.
fn unhashed_symbol_count(mapping: &Mapping, dynamic: &DynamicInfo, symtab: u64) -> u32 {
    let segment_end = mapping
        .segment_containing(symtab, 1)
        .map_or(symtab, |s| s.plan.file_end_vaddr());
    let starts = [
        dynamic.strtab.map(|r| r.vaddr),
        dynamic.versym,
        dynamic.verdef.map(|v| v.0),
        dynamic.verneed.map(|v| v.0),
        dynamic.gnu_hash,
        dynamic.hash,
        dynamic.rela.map(|r| r.vaddr),
        dynamic.jmprel.map(|r| r.vaddr),
        dynamic.relr.map(|r| r.vaddr),
    ];
    let end = starts
        .into_iter()
        .flatten()
        .filter(|&a| a > symtab)
        .fold(segment_end, u64::min);
    u32::try_from(end.saturating_sub(symtab) / SYM_SIZE as u64).unwrap_or(u32::MAX)
}

/// The GNU chain array must be as long as the symbol table says and lie
/// apart from every other table. Checked before reading tables sized by
/// `count`: a runaway chain makes `count` wrong, and that is the error to
/// report.
fn check_gnu_chains(
    g: &GnuHash,
    count: u32,
    dynamic: &DynamicInfo,
    symtab_addr: u64,
    sysv: Option<(u64, u64)>,
) -> KindResult<()> {
    let sym_bytes = u64::from(count) * SYM_SIZE as u64;
    let versym_len = u64::from(count) * 2;
    // The chain array covers the hashed symbols, symoffset..hashed_end
    // (none at all when the object exports nothing).
    let n = u64::from(g.hashed_end.min(count).saturating_sub(g.symoffset)) * 4;
    if (g.chains.len() as u64) < n {
        return Err(malformed(
            "DT_GNU_HASH",
            "chain array is shorter than the symbol table",
        ));
    }
    // The symbol count comes from walking one chain to its end
    // marker. A chain without one runs on into whatever follows
    // (in ld's layout, .dynsym); the tables must stay disjoint.
    let chains = (g.chains_at, g.chains_at.saturating_add(n));
    let others = [
        (
            "DT_SYMTAB",
            Some((symtab_addr, symtab_addr.saturating_add(sym_bytes))),
        ),
        (
            "DT_STRTAB",
            dynamic
                .strtab
                .map(|r| (r.vaddr, r.vaddr.saturating_add(r.size))),
        ),
        (
            "DT_VERSYM",
            dynamic.versym.map(|a| (a, a.saturating_add(versym_len))),
        ),
        ("DT_HASH", sysv),
        (
            "DT_VERDEF",
            dynamic.verdef.map(|v| (v.0, v.0.saturating_add(1))),
        ),
        (
            "DT_VERNEED",
            dynamic.verneed.map(|v| (v.0, v.0.saturating_add(1))),
        ),
        (
            "DT_RELA",
            dynamic
                .rela
                .map(|r| (r.vaddr, r.vaddr.saturating_add(r.size))),
        ),
        (
            "DT_JMPREL",
            dynamic
                .jmprel
                .map(|r| (r.vaddr, r.vaddr.saturating_add(r.size))),
        ),
        (
            "DT_RELR",
            dynamic
                .relr
                .map(|r| (r.vaddr, r.vaddr.saturating_add(r.size))),
        ),
    ];
    for (tag, range) in others {
        if let Some(range) = range
            && overlaps(chains, range)
        {
            return Err(ErrorKind::EndlessHashChain {
                table: "DT_GNU_HASH",
                start: g.last_chain,
                detail: format!(
                    "its chain array {:#x}..{:#x} runs into {tag} at {:#x}",
                    chains.0, chains.1, range.0
                ),
            });
        }
    }
    Ok(())
}
