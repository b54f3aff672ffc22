//! Faulting in, before the relocation loop, the pages it is about to write.
//!
//! Owns: finding the pages the `DT_RELA` and `DT_JMPREL` entries write (the
//! tables say so before any write happens) and asking MAP to fault each
//! run of them in for writing with one `MADV_POPULATE_WRITE`, instead of one
//! copy-on-write page fault per page during the loop. Must never: populate
//! a page no relocation writes (that page would turn private for nothing),
//! or touch anything outside a writable segment (MAP checks that again).

use super::LinkTarget;
use super::reloc::{RELA_SIZE, rela_words};
use crate::arch::{RelocKind, current as arch};

/// Runs shorter than this are left to fault page by page: one `madvise`
/// costs about what a page fault costs, so it pays only for several pages.
const MIN_RUN_PAGES: u64 = 3;

/// Fault in, for writing, every run of at least [`MIN_RUN_PAGES`] pages
/// that the object's relocation tables write. Failures are harmless: the
/// pages then fault one by one as they are written.
pub(super) fn populate_written_pages(target: &LinkTarget<'_>) {
    // Objects whose writable segments span fewer pages than a run (libz:
    // two) skip the pass over their tables.
    let writable_pages: u64 = target
        .mapping
        .segments()
        .iter()
        .filter(|s| s.plan.writable())
        .map(|s| {
            let start = s.plan.vaddr / arch::PAGE_SIZE;
            let end = s.plan.end().div_ceil(arch::PAGE_SIZE);
            end.saturating_sub(start)
        })
        .sum();
    if writable_pages < MIN_RUN_PAGES {
        return;
    }
    let mut pages: Vec<u64> = Vec::new();
    for range in [target.dynamic.rela, target.dynamic.jmprel]
        .into_iter()
        .flatten()
    {
        let Some(bytes) = target.mapping.read_only(range.vaddr, range.size) else {
            // The loop reports a table outside the image.
            return;
        };
        let mut last = u64::MAX;
        for chunk in bytes.as_slice().chunks_exact(RELA_SIZE) {
            let Some((offset, rtype)) = rela_words(chunk) else {
                break;
            };
            // Tables come sorted by offset in runs: most entries fall on
            // the page the entry before already put in the list. (A TLS
            // descriptor there whose second word crosses into the next
            // page leaves that page to fault as usual.)
            let page = offset / arch::PAGE_SIZE;
            if page == last {
                continue;
            }
            let width = match arch::classify(rtype) {
                RelocKind::None => continue,
                RelocKind::TlsDescriptor => 16,
                _ => arch::WORD_SIZE,
            };
            pages.push(page);
            last = offset.saturating_add(width - 1) / arch::PAGE_SIZE;
            if last != page {
                pages.push(last);
            }
        }
    }
    pages.sort_unstable();
    pages.dedup();
    let mut runs = pages.chunk_by(|a, b| b.checked_sub(*a) == Some(1));
    for run in &mut runs {
        let (Some(&first), Some(&last)) = (run.first(), run.last()) else {
            continue;
        };
        let len = last - first + 1;
        if len >= MIN_RUN_PAGES {
            target
                .mapping
                .populate_for_writing(first * arch::PAGE_SIZE, len * arch::PAGE_SIZE);
        }
    }
}
