//! An object's GNU build id (`NT_GNU_BUILD_ID` in a `PT_NOTE`), part of
//! the identity a cache entry is checked against.
//!
//! Owns: finding the note in the object's mapped, read-only image. Must
//! never: read outside a read-only segment of the mapping (notes sit in
//! the first `PT_LOAD`, which relocation never writes), or fail a load: an
//! object without a readable build id has an empty one.

use goblin::elf::program_header::PT_NOTE;

use crate::elf::LoadPlan;
use crate::map::Mapping;

/// `n_type` of the GNU build id note.
const NT_GNU_BUILD_ID: u32 = 3;
/// Longest build id kept (ld writes 20 bytes for SHA-1, 16 for MD5/UUID).
pub const MAX_LEN: usize = 64;

/// The build id of the object mapped at `mapping`, or empty.
pub fn of(plan: &LoadPlan, mapping: &Mapping) -> Vec<u8> {
    plan.program_headers
        .iter()
        .filter(|p| p.p_type == PT_NOTE)
        .filter_map(|p| mapping.read_only(p.p_vaddr, p.p_memsz))
        .find_map(|notes| find(notes.as_slice()))
        .unwrap_or_default()
}

/// The descriptor of the first `NT_GNU_BUILD_ID` note named "GNU" in a
/// note segment's bytes (4-byte aligned entries, as every x86-64 linker
/// writes them).
fn find(mut notes: &[u8]) -> Option<Vec<u8>> {
    let word = |b: &[u8], at: usize| -> Option<usize> {
        let w = u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?);
        usize::try_from(w).ok()
    };
    let pad4 = |n: usize| n.checked_next_multiple_of(4);
    while notes.len() >= 12 {
        let (namesz, descsz, ntype) = (word(notes, 0)?, word(notes, 4)?, word(notes, 8)?);
        let name_end = 12usize.checked_add(pad4(namesz)?)?;
        let desc_end = name_end.checked_add(pad4(descsz)?)?;
        let name = notes.get(12..12usize.checked_add(namesz)?)?;
        if ntype == NT_GNU_BUILD_ID as usize && name == b"GNU\0" && descsz <= MAX_LEN {
            return notes
                .get(name_end..name_end.checked_add(descsz)?)
                .map(<[u8]>::to_vec);
        }
        notes = notes.get(desc_end..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(name: &[u8], ntype: u32, desc: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(name.len() as u32).to_le_bytes());
        v.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        v.extend_from_slice(&ntype.to_le_bytes());
        v.extend_from_slice(name);
        v.resize(v.len().next_multiple_of(4), 0);
        v.extend_from_slice(desc);
        v.resize(v.len().next_multiple_of(4), 0);
        v
    }

    #[test]
    fn the_build_id_note_is_found_after_other_notes() {
        let mut notes = note(b"GNU\0", 5, &[1, 2, 3, 4, 5, 6, 7, 8]);
        notes.extend(note(b"GNU\0", NT_GNU_BUILD_ID, &[0xab; 20]));
        assert_eq!(find(&notes), Some(vec![0xab; 20]));
    }

    #[test]
    fn other_owners_and_truncated_notes_give_none() {
        assert_eq!(find(&note(b"XYZ\0", NT_GNU_BUILD_ID, &[1; 20])), None);
        let whole = note(b"GNU\0", NT_GNU_BUILD_ID, &[1; 20]);
        for cut in [0, 11, 15, 20, whole.len() - 4] {
            assert_eq!(find(&whole[..cut]), None, "{cut}");
        }
    }
}
