//! Symbol tables read in place, for the objects glibc loaded (the host's).
//!
//! A load asks each host object only what its lookups need: most host
//! objects answer every probe from their Bloom filter, and a hit needs one
//! hash chain, one name and, for a versioned symbol, the object's version
//! definitions. Reading the whole table up front (counting the symbols
//! through every bucket, listing every version) was a third of a small
//! load's instructions. Here the table is only located: the GNU hash
//! header, and each table bounded by the file-backed end of its segment;
//! the symbol count and the version lists are read on first need and kept
//! with the table (which the host snapshot keeps across loads).
//!
//! Owns: that constructor and the reads it defers. Must never: read outside
//! the segment a table lies in (every lookup stays bounded by `limit`), or
//! be used for an object mmld maps: those are validated whole by
//! [`SymbolTable::new`], the fuzz surface.

use std::sync::OnceLock;

use super::hash::{gnu_header, parse_gnu, parse_sysv};
use super::tables::{table_bytes_to_segment_end, u32_at};
use super::versions::{VERSYM_HIDDEN, parse_verdef, parse_verneed};
use super::{SYM_SIZE, Sym, SymbolTable, VersionName, unhashed_symbol_count};
use crate::elf::DynamicInfo;
use crate::error::{ErrorKind, KindResult};
use crate::map::Mapping;

/// What the deferred reads of a table read in place need.
#[derive(Debug)]
pub(super) struct Deferred {
    mapping: Mapping,
    dynamic: DynamicInfo,
    symtab: u64,
    /// One past the last symbol the GNU hash table covers, once counted.
    hashed_end: OnceLock<u32>,
}

impl SymbolTable {
    /// Locate the tables `dynamic` points to in `mapping` (a host object
    /// glibc loaded and the caller holds) without reading them through.
    pub fn in_place(mapping: Mapping, dynamic: DynamicInfo) -> KindResult<SymbolTable> {
        let mut table = SymbolTable::strings_only(&mapping, &dynamic)?;
        let Some(symtab) = dynamic.symtab else {
            return Ok(table.without_symbols());
        };
        table.gnu = dynamic
            .gnu_hash
            .map(|a| gnu_header(&mapping, a))
            .transpose()?;
        table.sysv = dynamic
            .hash
            .map(|a| parse_sysv(&mapping, a, false))
            .transpose()?;
        if table.gnu.is_none() && table.sysv.is_none() {
            return Err(ErrorKind::NoHashTable);
        }
        table.symtab = table_bytes_to_segment_end(&mapping, "DT_SYMTAB", symtab)?;
        let fits = table.symtab.len() / SYM_SIZE;
        table.limit = u32::try_from(fits)
            .unwrap_or(u32::MAX)
            .min(crate::elf::limits::MAX_SYMBOLS);
        if let Some(addr) = dynamic.versym {
            table.versym = Some(table_bytes_to_segment_end(&mapping, "DT_VERSYM", addr)?);
        }
        table.deferred = Some(Box::new(Deferred {
            mapping,
            dynamic,
            symtab,
            hashed_end: OnceLock::new(),
        }));
        Ok(table)
    }

    /// The exact symbol count of a table read in place, counted as
    /// [`SymbolTable::new`] counts (0 if the tables do not allow it, so
    /// nothing iterates past them).
    pub(super) fn count_in_place(&self) -> u32 {
        let Some(d) = self.deferred.as_deref() else {
            return 0;
        };
        let mut count = self.sysv.map(|s| (s.chains.len() / 4) as u32);
        if let Some(addr) = d.dynamic.gnu_hash {
            let Ok((gnu, mut gnu_count)) = parse_gnu(&d.mapping, addr) else {
                return 0;
            };
            if gnu.hashes_nothing() && count.is_none() {
                gnu_count = gnu_count.max(unhashed_symbol_count(&d.mapping, &d.dynamic, d.symtab));
            }
            let _ = d.hashed_end.set(gnu.hashed_end);
            count = Some(count.map_or(gnu_count, |c| c.max(gnu_count)));
        }
        count.unwrap_or(0).min(self.limit)
    }

    /// One past the last symbol the GNU hash table covers.
    pub(super) fn hashed_end(&self) -> Option<u32> {
        let g = self.gnu.as_ref()?;
        match self.deferred.as_deref() {
            None => Some(g.hashed_end),
            Some(d) => {
                self.count();
                d.hashed_end.get().copied()
            }
        }
    }

    /// Definitions by version index.
    pub(super) fn verdefs(&self) -> &[Option<VersionName>] {
        self.verdefs.get_or_init(|| {
            self.deferred
                .as_deref()
                .and_then(|d| {
                    let (addr, num) = d.dynamic.verdef?;
                    parse_verdef(&d.mapping, addr, num).ok()
                })
                .unwrap_or_default()
        })
    }

    /// References by version index.
    pub(super) fn verneeds(&self) -> &[Option<VersionName>] {
        self.verneeds.get_or_init(|| {
            self.deferred
                .as_deref()
                .and_then(|d| {
                    let (addr, num) = d.dynamic.verneed?;
                    parse_verneed(&d.mapping, addr, num).ok()
                })
                .unwrap_or_default()
        })
    }

    /// Visit defined symbols the hash table reaches, bucket by bucket,
    /// without counting the table first, until `visit` returns `true`.
    /// Hidden (non-default) versions are skipped. Only indices a chain
    /// reaches are read, so every one is a real symbol.
    pub fn visit_hashed(&self, mut visit: impl FnMut(u32, &Sym) -> bool) {
        let Some(g) = self.gnu.as_ref() else {
            for (index, sym) in self.default_definitions() {
                if visit(index, &sym) {
                    return;
                }
            }
            return;
        };
        for bucket in 0..g.nbuckets as usize {
            let Some(mut index) = u32_at(&g.buckets, bucket) else {
                return;
            };
            if index == 0 || index < g.symoffset {
                continue;
            }
            while index < self.limit {
                let Some(chain) = u32_at(&g.chains, (index - g.symoffset) as usize) else {
                    return;
                };
                let hidden = self.versym.is_some() && self.versym(index) & VERSYM_HIDDEN != 0;
                if let Some(sym) = self.symbol(index)
                    && Self::is_candidate(&sym)
                    && !hidden
                    && visit(index, &sym)
                {
                    return;
                }
                if chain & 1 != 0 {
                    break;
                }
                index += 1;
            }
        }
    }
}
