//! The fast paths: `RELATIVE` relocations and `DT_RELR`.
//!
//! Owns: B + A writes that need no symbol, one checked write each; for a
//! large library these are nearly all of its relocations (libLLVM: 362,379
//! of 382,145). Must never: allocate or look anything up per relocation.

use super::RelocationCounts;
use super::reloc::{RELA_SIZE, Rela, out_of_bounds, rela_from, write};
use crate::arch::{RelocKind, current as arch};
use crate::elf::VRange;
use crate::error::{ErrorKind, KindResult};
use crate::map::Mapping;

/// `RelocKind::Relative`: B + A.
pub(super) fn apply_relative(
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

/// The leading `DT_RELACOUNT` (`relacount`) entries of `DT_RELA`
/// (`entries`), which the linker marks as all relative: applied with one
/// compare of the type each instead of classifying and counting it (glibc
/// does not even compare; a file that lies stops the run, and the general
/// loop then reports the entry). Returns how many were applied.
pub(super) fn apply_counted_relative(
    mapping: &mut Mapping,
    entries: &[u8],
    relacount: u64,
    bias: u64,
    counts: &mut RelocationCounts,
) -> KindResult<usize> {
    let limit = usize::try_from(relacount)
        .unwrap_or(usize::MAX)
        .min(entries.len() / RELA_SIZE);
    let mut writer = mapping.writer();
    let counted = entries.get(..limit * RELA_SIZE).unwrap_or_default();
    let mut done = 0;
    let mut rtype = 0;
    for chunk in counted.chunks_exact(RELA_SIZE) {
        let Some(r) = rela_from(chunk) else { break };
        // Inlined, the classification is one compare of the type.
        if arch::classify(r.rtype) != RelocKind::Relative {
            break;
        }
        if !writer.write_u64(r.offset, bias.wrapping_add(r.addend as u64)) {
            return Err(out_of_bounds("DT_RELA", done, r.offset));
        }
        rtype = r.rtype;
        done += 1;
    }
    // Every entry of the run has the one relative type.
    counts.add_many(rtype, done);
    Ok(done)
}

/// Decode `DT_RELR` (packed relative relocations): an even word is an
/// address to relocate; an odd word is a bitmap of the 63 words after the
/// last address. Returns how many words were relocated.
pub(super) fn apply_relr(mapping: &mut Mapping, relr: VRange, bias: u64) -> KindResult<usize> {
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
