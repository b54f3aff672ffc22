//! MAP for inspection: an inert image in memory mmld owns.
//!
//! Owns: building the image `check`, `info` and `deps` read, from the file's
//! bytes copied with `pread` (holes of a sparse file skipped) rather than
//! mapped: a file mapping faults (SIGBUS) when the file is truncated under
//! it, a copy cannot. Only what an inspection reads is copied: writable
//! segments (relocation targets, init and fini arrays) and the tables the
//! dynamic section names; the rest (code, read-only data) is left as zero
//! pages, which nothing of an inspection reads. Must never: map anything
//! executable or from the file.

use std::fs::File;

use super::{MappedSegment, Mapping, Protection, Strategy, prot_of};
use crate::elf::{DynamicInfo, LoadPlan, Segment};
use crate::error::{ErrorKind, KindResult};

impl Mapping {
    /// The image of `file` for inspection: never executable, never mapped
    /// from the file, with the bytes an inspection reads.
    pub fn copy_for_inspection(
        file: &File,
        plan: &LoadPlan,
        dynamic: &DynamicInfo,
    ) -> KindResult<Mapping> {
        let mut mapping = Self::reserve(plan, Strategy::Read, Protection::Inert)?;
        for seg in &plan.segments {
            let prot = prot_of(seg, Protection::Inert);
            let bytes = bytes_needed(seg, dynamic);
            mapping.fill_segment(seg, prot, |dst, offset| {
                let Some(part) = dst.get_mut(..bytes) else {
                    return Ok(());
                };
                crate::elf::backed::read_backed(file, part, offset).map_err(|source| {
                    ErrorKind::Io {
                        op: "reading a segment",
                        source,
                    }
                })
            })?;
            mapping.segments.push(MappedSegment { plan: *seg, prot });
        }
        Ok(mapping)
    }
}

/// How many of `seg`'s file bytes, from its start, an inspection reads.
/// All of a writable segment. Of a read-only one, up to the end of the
/// last table it holds: linkers put the tables first (hash, symbols,
/// strings, versions, relocations) and code and data after them, so
/// checking libLLVM (one 108 MB segment) copies its first megabytes. A
/// table of unknown size (symbols, hash, versions) after every table of
/// known size takes the rest of the segment.
fn bytes_needed(seg: &Segment, d: &DynamicInfo) -> usize {
    let whole = usize::try_from(seg.filesz).unwrap_or(usize::MAX);
    if seg.writable() {
        return whole;
    }
    let known = [
        d.strtab,
        d.rela,
        d.jmprel,
        d.relr,
        d.init_array,
        d.fini_array,
    ];
    let known_end = known
        .into_iter()
        .flatten()
        .filter(|r| seg.contains(r.vaddr, 1))
        .map(|r| r.vaddr.saturating_add(r.size))
        .max();
    let unknown = [d.symtab, d.hash, d.gnu_hash, d.versym];
    let unknown_start = unknown
        .into_iter()
        .flatten()
        .chain(d.verdef.map(|v| v.0))
        .chain(d.verneed.map(|v| v.0))
        .filter(|&a| seg.contains(a, 1))
        .max();
    let end = match (known_end, unknown_start) {
        (None, None) => return 0,
        (Some(k), Some(u)) if u < k => k,
        (Some(k), None) => k,
        _ => return whole,
    };
    usize::try_from(end.saturating_sub(seg.vaddr))
        .unwrap_or(usize::MAX)
        .min(whole)
}
