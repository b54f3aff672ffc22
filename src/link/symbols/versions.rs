//! Symbol versions: `DT_VERDEF` and `DT_VERNEED`, by version index.
//!
//! Owns: reading both tables into one list of names per index, bounded by
//! the file and by the 15-bit index space. Must never: follow an entry
//! chain past its count, or trust an offset without a check.

use super::VersionName;
use super::tables::{EntryReader, malformed, u16_at, u32_at_off};
use crate::error::KindResult;
use crate::map::Mapping;

/// The hidden bit of a `DT_VERSYM` entry or a `vd_ndx`.
pub(super) const VERSYM_HIDDEN: u16 = 0x8000;
const VER_FLG_WEAK: u16 = goblin::elf::symver::VER_FLG_WEAK;
/// Version indices are 15 bits; more entries than this is a corrupt table.
const MAX_VERSIONS: usize = 0x8000;

fn set_version(table: &mut Vec<Option<VersionName>>, ndx: u16, v: VersionName) {
    let ndx = usize::from(ndx & !VERSYM_HIDDEN);
    if ndx >= MAX_VERSIONS {
        return;
    }
    if table.len() <= ndx {
        table.resize(ndx + 1, None);
    }
    table[ndx] = Some(v);
}

/// Room for the indices a table of `num` entries usually uses (index 1 is
/// the base; references number on from the definitions), so the list is
/// not regrown entry by entry.
fn capacity(num: u64) -> usize {
    (num.min(64) as usize) * 2 + 2
}

pub(super) fn parse_verdef(
    mapping: &Mapping,
    addr: u64,
    num: u64,
) -> KindResult<Vec<Option<VersionName>>> {
    let mut out = Vec::with_capacity(capacity(num));
    let mut reader = EntryReader::new(mapping);
    let mut at = addr;
    for i in 0..num.min(MAX_VERSIONS as u64) {
        let entry = reader.read::<20>("DT_VERDEF", at)?;
        let e = entry.as_slice();
        let bad = || malformed("DT_VERDEF", format!("entry {i} at {at:#x} is truncated"));
        let flags = u16_at(e, 2).ok_or_else(bad)?;
        let ndx = u16_at(e, 4).ok_or_else(bad)?;
        let hash = u32_at_off(e, 8).ok_or_else(bad)?;
        let aux = u32_at_off(e, 12).ok_or_else(bad)?;
        let next = u32_at_off(e, 16).ok_or_else(bad)?;
        let aux_at = at.checked_add(u64::from(aux)).ok_or_else(bad)?;
        let name = u32_at_off(&reader.read::<8>("DT_VERDEF aux", aux_at)?, 0).ok_or_else(bad)?;
        set_version(
            &mut out,
            ndx,
            VersionName {
                name,
                hash,
                flags,
                file: 0,
            },
        );
        if next == 0 {
            break;
        }
        at = at.checked_add(u64::from(next)).ok_or_else(bad)?;
    }
    Ok(out)
}

pub(super) fn parse_verneed(
    mapping: &Mapping,
    addr: u64,
    num: u64,
) -> KindResult<Vec<Option<VersionName>>> {
    let mut out = Vec::with_capacity(capacity(num));
    let mut reader = EntryReader::new(mapping);
    let mut at = addr;
    // Total entries visited, bounded so a looping list cannot hang us.
    let mut budget = MAX_VERSIONS;
    for i in 0..num.min(MAX_VERSIONS as u64) {
        let entry = reader.read::<16>("DT_VERNEED", at)?;
        let e = entry.as_slice();
        let bad = || malformed("DT_VERNEED", format!("entry {i} at {at:#x} is truncated"));
        let cnt = u16_at(e, 2).ok_or_else(bad)?;
        let file = u32_at_off(e, 4).ok_or_else(bad)?;
        let aux = u32_at_off(e, 8).ok_or_else(bad)?;
        let next = u32_at_off(e, 12).ok_or_else(bad)?;
        let mut aux_at = at.checked_add(u64::from(aux)).ok_or_else(bad)?;
        for _ in 0..cnt {
            budget = budget
                .checked_sub(1)
                .ok_or_else(|| malformed("DT_VERNEED", "too many version references"))?;
            let a = reader.read::<16>("DT_VERNEED aux", aux_at)?;
            let a = a.as_slice();
            let bad_aux = || {
                malformed(
                    "DT_VERNEED",
                    format!("aux entry at {aux_at:#x} is truncated"),
                )
            };
            let hash = u32_at_off(a, 0).ok_or_else(bad_aux)?;
            let flags = u16_at(a, 4).ok_or_else(bad_aux)?;
            let other = u16_at(a, 6).ok_or_else(bad_aux)?;
            let name = u32_at_off(a, 8).ok_or_else(bad_aux)?;
            let anext = u32_at_off(a, 12).ok_or_else(bad_aux)?;
            set_version(
                &mut out,
                other,
                VersionName {
                    name,
                    hash,
                    flags: flags & VER_FLG_WEAK,
                    file,
                },
            );
            if anext == 0 {
                break;
            }
            aux_at = aux_at.checked_add(u64::from(anext)).ok_or_else(bad_aux)?;
        }
        if next == 0 {
            break;
        }
        at = at.checked_add(u64::from(next)).ok_or_else(bad)?;
    }
    Ok(out)
}
