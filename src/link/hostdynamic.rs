//! A host object's dynamic section, read from the memory glibc mapped.
//!
//! Owns: turning the entries glibc may have rewritten in place into the
//! link-time addresses `symbols` expects. Must never: write to the host
//! object, or be called for one that is not held (or permanent).

use goblin::elf::dynamic as dt;

use crate::elf::{DynamicInfo, VRange};
use crate::map::Mapping;

/// Read the host object's dynamic section. glibc rewrites the address
/// entries of most objects in place to absolute addresses (not those of the
/// vDSO, whose dynamic section is read-only); an entry at or above the bias
/// is taken as already relocated.
pub(super) fn read_dynamic(
    mapping: &Mapping,
    vaddr: u64,
    size: u64,
    bias: u64,
    with_needed: bool,
) -> Option<DynamicInfo> {
    let bytes = mapping.copy_out(vaddr, size)?;
    let unbias = |v: u64| if bias != 0 && v >= bias { v - bias } else { v };
    let mut info = DynamicInfo::default();
    let (mut strsz, mut verdefnum, mut verneednum) = (0, 0, 0);
    for chunk in bytes.chunks_exact(16) {
        let tag = u64::from_le_bytes(chunk.get(..8)?.try_into().ok()?);
        let val = u64::from_le_bytes(chunk.get(8..16)?.try_into().ok()?);
        match tag {
            dt::DT_NULL => break,
            dt::DT_NEEDED if with_needed => info.needed.push(val),
            dt::DT_STRTAB => {
                info.strtab = Some(VRange {
                    vaddr: unbias(val),
                    size: 0,
                })
            }
            dt::DT_STRSZ => strsz = val,
            dt::DT_SONAME => info.soname = Some(val),
            dt::DT_RPATH => info.rpath = Some(val),
            dt::DT_RUNPATH => info.runpath = Some(val),
            dt::DT_SYMTAB => info.symtab = Some(unbias(val)),
            dt::DT_HASH => info.hash = Some(unbias(val)),
            dt::DT_GNU_HASH => info.gnu_hash = Some(unbias(val)),
            dt::DT_VERSYM => info.versym = Some(unbias(val)),
            dt::DT_VERDEF => info.verdef = Some((unbias(val), 0)),
            dt::DT_VERDEFNUM => verdefnum = val,
            dt::DT_VERNEED => info.verneed = Some((unbias(val), 0)),
            dt::DT_VERNEEDNUM => verneednum = val,
            _ => {}
        }
    }
    if let Some(s) = info.strtab.as_mut() {
        s.size = strsz;
    }
    info.verdef = info.verdef.map(|(a, _)| (a, verdefnum));
    info.verneed = info.verneed.map(|(a, _)| (a, verneednum));
    Some(info)
}
