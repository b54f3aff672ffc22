//! Placing an object's span: the first mapping of a load, which every
//! later segment is mapped into.
//!
//! Owns: choosing how the span is reserved (the first segment's own file
//! mapping stretched over the span, as glibc does, or an inaccessible
//! reservation), alignment above the page size, the guard page after the
//! span, and closing the holes between segments. Must never: leave a page
//! outside every segment accessible once mapping is done, or grant any page
//! of a segment, even for a moment, a permission its flags do not grant.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::ptr::NonNull;

use super::{Mapping, Protection, Strategy, map_err, prot_of, sys};
use crate::arch::current::PAGE_SIZE;
use crate::elf::{LoadPlan, Segment, page_down, page_up};
use crate::error::{ErrorKind, KindResult};

impl Mapping {
    /// Where the span goes and what occupies it first: the first segment's
    /// file mapping stretched over the whole span when that grants nothing
    /// beyond what the segments will have (see [`first_maps_span`]), which
    /// saves the separate reservation `mmap` on every load; otherwise an
    /// inaccessible reservation. Returns the mapping and whether the first
    /// segment's file pages are already in place.
    pub(super) fn place(
        file: &File,
        plan: &LoadPlan,
        strategy: Strategy,
        protection: Protection,
    ) -> KindResult<(Mapping, bool)> {
        if strategy == Strategy::Mmap && first_maps_span(plan, protection) {
            return Self::map_span_from_first(file, plan, protection).map(|m| (m, true));
        }
        Self::reserve(plan, strategy, protection).map(|m| (m, false))
    }

    /// glibc's pattern: one file mapping of the first segment's pages that
    /// runs on over the whole span (read-only: [`first_maps_span`] allows
    /// it only then), so it is the span's reservation too. Every other
    /// segment is then mapped over it with `MAP_FIXED`, and
    /// [`Mapping::close_holes`] takes every page no segment covers back to
    /// `PROT_NONE`. The `Mapping` owns the span from the first call on, so
    /// an error in a later step unmaps all of it.
    fn map_span_from_first(
        file: &File,
        plan: &LoadPlan,
        protection: Protection,
    ) -> KindResult<Mapping> {
        let first = plan.segments.first().ok_or(ErrorKind::NoLoadSegments)?;
        let span = span_len(plan)?;
        let guard = if last_page_anonymous(plan) {
            PAGE_SIZE as usize
        } else {
            0
        };
        let total = span
            .checked_add(guard)
            .ok_or_else(|| map_err("reserving address space")(io::Error::other("span overflow")))?;
        let base = sys::map_file_anywhere(
            total,
            prot_of(first, protection),
            file.as_fd(),
            page_down(first.offset),
        )
        .map_err(map_err("mapping a segment from the file"))?;
        Ok(Self::owned_span(
            base,
            span,
            guard,
            plan,
            Strategy::Mmap,
            protection,
        ))
    }

    /// After [`Mapping::map_span_from_first`]: the pages between segments
    /// and the guard page after the span still hold the first segment's
    /// file mapping; none of them may stay readable.
    pub(super) fn close_holes(&mut self, plan: &LoadPlan) -> KindResult<()> {
        let between = plan.segments.windows(2).filter_map(|w| {
            let (a, b) = (w.first()?, w.get(1)?);
            Some((page_up(a.end())?, page_down(b.vaddr)))
        });
        let end = plan.max_vaddr;
        let guard = (end, end.saturating_add(self.guard as u64));
        for (start, end) in between.chain([guard]).filter(|(s, e)| e > s) {
            // SAFETY: start..end lies inside the span (or is its guard page),
            // which this mapping owns; nothing refers to a hole.
            unsafe { sys::protect(self.ptr_at(start), (end - start) as usize, libc::PROT_NONE) }
                .map_err(map_err("closing the gaps between segments"))?;
        }
        Ok(())
    }

    pub(super) fn reserve(
        plan: &LoadPlan,
        strategy: Strategy,
        protection: Protection,
    ) -> KindResult<Mapping> {
        let span = span_len(plan)?;
        let align = usize::try_from(plan.max_align).unwrap_or(usize::MAX);
        let extra = alignment_slack(plan);
        // One inaccessible page stays reserved after the span: without it
        // the kernel may merge the object's anonymous .bss mapping with an
        // unrelated anonymous mapping above, and /proc would then charge
        // that neighbour's pages to the object.
        let guard = PAGE_SIZE as usize;
        let total = span
            .checked_add(extra)
            .and_then(|t| t.checked_add(guard))
            .ok_or_else(|| map_err("reserving address space")(io::Error::other("span overflow")))?;
        let raw = sys::reserve(total).map_err(map_err("reserving address space"))?;
        let raw_addr = raw.as_ptr() as usize;
        let aligned = if extra > 0 {
            raw_addr.next_multiple_of(align)
        } else {
            raw_addr
        };
        let head = aligned - raw_addr;
        let tail = total - head - span - guard;
        // SAFETY: head and tail are the unused ends of the reservation just
        // made; nothing refers to them.
        unsafe {
            let _ = sys::unmap(raw.as_ptr(), head);
            let _ = sys::unmap(raw.as_ptr().add(head + span + guard), tail);
        }
        let base = NonNull::new(aligned as *mut u8).unwrap_or(raw);
        Ok(Self::owned_span(
            base, span, guard, plan, strategy, protection,
        ))
    }

    /// The owner of a span just placed at `base` (`span` bytes, then
    /// `guard` bytes kept inaccessible), with no segment recorded yet.
    pub(super) fn owned_span(
        base: NonNull<u8>,
        span: usize,
        guard: usize,
        plan: &LoadPlan,
        strategy: Strategy,
        protection: Protection,
    ) -> Mapping {
        Mapping {
            base,
            len: span,
            bias: (base.as_ptr() as u64).wrapping_sub(plan.min_vaddr),
            segments: Vec::with_capacity(plan.segments.len()),
            sealed: None,
            strategy,
            protection,
            owned: true,
            last_segment: std::sync::atomic::AtomicUsize::new(0),
            guard,
        }
    }
}

/// The span as a length, or the plan's own size error.
fn span_len(plan: &LoadPlan) -> KindResult<usize> {
    usize::try_from(plan.span()).map_err(|_| ErrorKind::SegmentTooLarge {
        index: 0,
        vaddr: plan.min_vaddr,
        memsz: plan.span(),
        limit: crate::elf::MAX_SPAN,
    })
}

/// Extra address space to reserve so that an aligned start exists: objects
/// with `p_align` above the page size (huge-page friendly layouts) expect
/// their start to be that aligned.
fn alignment_slack(plan: &LoadPlan) -> usize {
    let align = usize::try_from(plan.max_align).unwrap_or(usize::MAX);
    if align > PAGE_SIZE as usize && align <= (1 << 30) {
        align - PAGE_SIZE as usize
    } else {
        0
    }
}

/// May the first segment's file mapping stand in for the reservation? Only
/// when it is read-only and every segment is readable: then the moment
/// before the other segments are mapped over it grants no page more than
/// its segment will have (holes are closed right after, before anything
/// reads the image). A first segment with write or execute permission, a
/// segment without read permission, a first segment without file bytes, or
/// an alignment above the page size (the span must start aligned) take the
/// separate reservation instead.
fn first_maps_span(plan: &LoadPlan, protection: Protection) -> bool {
    let Some(first) = plan.segments.first() else {
        return false;
    };
    alignment_slack(plan) == 0
        && first.filesz > 0
        && prot_of(first, protection) == libc::PROT_READ
        && plan.segments.iter().all(Segment::readable)
}

/// Does the span end in anonymous memory (`.bss` pages, or a non-writable
/// segment's copied last page)? Then an inaccessible page must follow it:
/// without one the kernel may merge that anonymous mapping with an
/// unrelated one above, and /proc would charge the neighbour's pages to the
/// object.
fn last_page_anonymous(plan: &LoadPlan) -> bool {
    plan.segments.last().is_some_and(|seg| {
        let file_pages_end = page_up(seg.file_end_vaddr()).unwrap_or(u64::MAX);
        let partial = !seg.file_end_vaddr().is_multiple_of(PAGE_SIZE);
        seg.filesz == 0
            || page_up(seg.end()).unwrap_or(u64::MAX) > file_pages_end
            || (seg.memsz > seg.filesz && partial && !seg.writable())
    })
}
