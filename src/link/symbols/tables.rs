//! Bounded reads of an object's dynamic tables.
//!
//! Owns: the rule that every table LINK reads lies in the file-backed part
//! of one read-only segment, and little-endian field reads that return
//! `None` instead of panicking; the string table every `SymbolTable`
//! starts from. Must never: index without a check, or hand out bytes of a
//! writable segment.

use crate::error::{ErrorKind, KindResult};
use std::sync::OnceLock;

use super::SymbolTable;
use crate::elf::DynamicInfo;
use crate::map::{Mapping, RoBytes};

pub(super) fn u32_at(bytes: &RoBytes, index: usize) -> Option<u32> {
    u32_at_off(bytes.as_slice(), index.checked_mul(4)?)
}

pub(super) fn u64_at(bytes: &RoBytes, index: usize) -> Option<u64> {
    let off = index.checked_mul(8)?;
    let b = bytes.as_slice().get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

pub(super) fn u16_at(bytes: &[u8], off: usize) -> Option<u16> {
    let b = bytes.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes(b.try_into().ok()?))
}

pub(super) fn u32_at_off(bytes: &[u8], off: usize) -> Option<u32> {
    let b = bytes.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

/// `len` bytes at `addr` from the file-backed part of one read-only
/// segment. Every table LINK reads goes through here, so a table's size is
/// bounded by the file, never by a `.bss` the file merely claims.
pub(super) fn table_bytes(
    mapping: &Mapping,
    tag: &'static str,
    addr: u64,
    len: u64,
) -> KindResult<RoBytes> {
    let end = addr.saturating_add(len);
    // `let else` rather than `ok_or`: this runs for every table entry a
    // load reads, and building and dropping an unused error is not free.
    let Some(seg) = mapping.segment_containing(addr, 1) else {
        return Err(ErrorKind::TableOutsideImage { tag, addr, end });
    };
    let file_end = seg.plan.file_end_vaddr();
    if addr.checked_add(len).is_none_or(|e| e > file_end) {
        return Err(ErrorKind::TableOverrunsSegment {
            tag,
            addr,
            end,
            segment_end: file_end,
        });
    }
    if len == 0 {
        return Ok(RoBytes::EMPTY);
    }
    let writable = seg.plan.writable();
    match mapping.read_only(addr, len) {
        Some(bytes) => Ok(bytes),
        None if writable => Err(ErrorKind::TableInWritableSegment { tag, addr }),
        None => Err(ErrorKind::TableOutsideImage { tag, addr, end }),
    }
}

/// The bytes from `addr` to the end of the file-backed part of its
/// segment: the bound for a table whose length is not known yet.
pub(super) fn table_bytes_to_segment_end(
    mapping: &Mapping,
    tag: &'static str,
    addr: u64,
) -> KindResult<RoBytes> {
    let len = mapping
        .segment_containing(addr, 1)
        .map(|s| s.plan.file_end_vaddr().saturating_sub(addr))
        .unwrap_or(0);
    table_bytes(mapping, tag, addr, len.max(1)).or_else(|e| match e {
        // A start in the zero-filled tail: nothing of the file to read.
        ErrorKind::TableOverrunsSegment { .. } if len == 0 => Ok(RoBytes::EMPTY),
        e => Err(e),
    })
}

/// Do `a` and `b` (start, end) overlap?
pub(super) fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

pub(super) fn malformed(table: &'static str, detail: impl Into<String>) -> ErrorKind {
    ErrorKind::MalformedTable {
        table,
        detail: detail.into(),
    }
}

/// Length of the NUL-terminated string at the start of `bytes`, if it ends
/// inside them. Eight bytes per step (the classic "has a zero byte" test):
/// every binding of a load measures its name, and the generic search costs
/// about 100 instructions for a 20-byte name.
pub(super) fn nul_position(bytes: &[u8]) -> Option<usize> {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = bytes.chunks_exact(8);
    let mut at = 0usize;
    for chunk in &mut words {
        let word = u64::from_le_bytes(chunk.try_into().ok()?);
        let zero = word.wrapping_sub(LOW) & !word & HIGH;
        if zero != 0 {
            // The lowest flagged byte is the first zero (flags above a
            // zero can be false, never below it).
            return Some(at + (zero.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&c| c == 0)
        .map(|i| at + i)
}

/// Reads of the small entries of a linked table (`DT_VERDEF`,
/// `DT_VERNEED`): the first read checks its entry as [`table_bytes`] does
/// and keeps the rest of that segment's file-backed bytes, so later entries
/// in the same stretch cost a slice check instead of a segment search.
/// A read outside the kept stretch takes the checked path again, so each
/// read succeeds or fails exactly as `table_bytes` would decide it.
pub(super) struct EntryReader<'m> {
    mapping: &'m Mapping,
    base: u64,
    bytes: RoBytes,
}

impl<'m> EntryReader<'m> {
    pub(super) fn new(mapping: &'m Mapping) -> Self {
        EntryReader {
            mapping,
            base: 0,
            bytes: RoBytes::EMPTY,
        }
    }

    /// The `N` bytes at `at`.
    pub(super) fn read<const N: usize>(
        &mut self,
        tag: &'static str,
        at: u64,
    ) -> KindResult<[u8; N]> {
        let kept = at
            .checked_sub(self.base)
            .and_then(|off| usize::try_from(off).ok())
            .and_then(|off| self.bytes.as_slice().get(off..)?.first_chunk::<N>());
        if let Some(b) = kept {
            return Ok(*b);
        }
        let entry = table_bytes(self.mapping, tag, at, N as u64)?;
        let b =
            entry
                .as_slice()
                .first_chunk::<N>()
                .copied()
                .ok_or(ErrorKind::TableOutsideImage {
                    tag,
                    addr: at,
                    end: at.saturating_add(N as u64),
                })?;
        if let Ok(rest) = table_bytes_to_segment_end(self.mapping, tag, at) {
            self.base = at;
            self.bytes = rest;
        }
        Ok(b)
    }
}

/// The start both constructors share: the string table, and the shape of
/// a table without symbols.
impl SymbolTable {
    /// A table with only its string table read: where both constructors
    /// ([`SymbolTable::new`], [`SymbolTable::in_place`]) start.
    pub(super) fn strings_only(
        mapping: &Mapping,
        dynamic: &DynamicInfo,
    ) -> KindResult<SymbolTable> {
        let strtab = match dynamic.strtab {
            Some(r) => table_bytes(mapping, "DT_STRTAB", r.vaddr, r.size)?,
            None => RoBytes::EMPTY,
        };
        Ok(SymbolTable {
            strtab,
            symtab: RoBytes::EMPTY,
            limit: 0,
            count: OnceLock::new(),
            gnu: None,
            sysv: None,
            versym: None,
            verdefs: OnceLock::new(),
            verneeds: OnceLock::new(),
            deferred: None,
        })
    }

    /// The table of an object without `DT_SYMTAB`: no symbols, no versions.
    pub(super) fn without_symbols(self) -> SymbolTable {
        self.set_versions(Vec::new(), Vec::new());
        let _ = self.count.set(0);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::nul_position;

    #[test]
    fn nul_position_agrees_with_a_byte_search() {
        let mut bytes: Vec<u8> = (1..=40u8).map(|b| b.wrapping_mul(37) | 1).collect();
        bytes.extend_from_slice(&[0x80, 0x01, 0xff, 0x00, 0x80]);
        for start in 0..bytes.len() {
            for end in start..=bytes.len() {
                let s = &bytes[start..end];
                assert_eq!(
                    nul_position(s),
                    s.iter().position(|&c| c == 0),
                    "{start}..{end}"
                );
            }
        }
        // A zero right after bytes 0x01 (where the subtraction borrows).
        let s = [0x01, 0x01, 0x00, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01];
        assert_eq!(nul_position(&s), Some(2));
        assert_eq!(nul_position(&[0x00; 9]), Some(0));
    }
}
