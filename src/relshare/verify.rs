//! Verification mode: a cache entry checked against a full relocation.
//!
//! Owns: the comparison, after the object was relocated normally in this
//! process, of every page of the entry with the live page, byte by byte,
//! except the words of per-process relocations (which a hit re-applies);
//! and the checks that this process's per-process relocations are the
//! entry's and that every page relocation wrote is in the entry. Must
//! never: change the mapping (the session maps the entry afterwards).

use std::collections::BTreeSet;

use super::classify;
use super::session::{Entry as CacheEntry, ObjectLink, read_page};
use crate::arch::current::PAGE_SIZE;
use crate::error::ErrorKind;

/// `Ok` when a hit would give exactly the memory this full relocation
/// gave; otherwise the first difference.
pub(super) fn compare(
    entry: &CacheEntry,
    obj: &ObjectLink<'_>,
    recorded: &[u32],
    offsets: &[(u64, u64)],
) -> Result<(), ErrorKind> {
    let differ = |page: u64, byte: u64| ErrorKind::SharedRelocationsDiffer {
        page_offset: page,
        byte_offset: byte,
        cache_file: entry.path.clone(),
    };
    let h = &entry.header;
    if recorded != h.per_process.as_slice() {
        // The first relocation the two lists disagree on, by its target.
        let k = recorded
            .iter()
            .zip(&h.per_process)
            .position(|(a, b)| a != b)
            .unwrap_or(recorded.len().min(h.per_process.len()));
        let code = recorded
            .get(k)
            .or(h.per_process.get(k))
            .copied()
            .unwrap_or(0);
        let at = classify::listed_offsets(obj.mapping, obj.dynamic, &[code])
            .and_then(|v| v.first().map(|w| w.0))
            .unwrap_or(0);
        return Err(differ(crate::elf::page_down(at), at));
    }
    let cached: BTreeSet<u64> = h.pages.iter().map(|p| p.vaddr).collect();
    if let Some(missing) = classify::relocated_pages(obj.mapping, obj.dynamic)
        .into_iter()
        .find(|p| !cached.contains(p))
    {
        return Err(differ(missing, missing));
    }
    // Every byte per-process relocations write, in order.
    let mut masked: Vec<u64> = offsets
        .iter()
        .flat_map(|&(o, w)| (0..w).map(move |i| o.saturating_add(i)))
        .collect();
    masked.sort_unstable();
    let is_masked = |addr: u64| masked.binary_search(&addr).is_ok();
    for (k, p) in h.pages.iter().enumerate() {
        let live = obj.mapping.copy_pages(p.vaddr, PAGE_SIZE);
        let (Some(live), Some(image)) = (live, read_page(entry, k)) else {
            return Err(differ(p.vaddr, p.vaddr));
        };
        let first = live
            .iter()
            .zip(&image)
            .enumerate()
            .find(|(i, (a, b))| a != b && !is_masked(p.vaddr + *i as u64));
        if let Some((i, _)) = first {
            return Err(differ(p.vaddr, p.vaddr + i as u64));
        }
    }
    Ok(())
}
