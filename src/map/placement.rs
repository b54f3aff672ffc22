//! MAP at a chosen address: the placement hook shared relocations use.
//!
//! Owns: reserving an object's span at exactly the address asked for, or
//! saying it could not. Must never: replace an existing mapping (the
//! reservation uses `MAP_FIXED_NOREPLACE`), or choose the address itself.

use std::fs::File;

use super::{Mapping, Protection, Strategy, map_err, sys};
use crate::arch::current::PAGE_SIZE;
use crate::elf::LoadPlan;
use crate::error::{ErrorKind, KindResult};

impl Mapping {
    /// Map `file` as [`Mapping::map`] does, with its first page at exactly
    /// `addr` (page-aligned, and aligned as the plan's `p_align` asks).
    /// An address in use fails with `ErrorKind::Mmap` carrying `EEXIST`,
    /// and nothing stays mapped.
    pub fn map_at(
        file: &File,
        plan: &LoadPlan,
        strategy: Strategy,
        protection: Protection,
        addr: u64,
    ) -> KindResult<Mapping> {
        let span = usize::try_from(plan.span()).map_err(|_| ErrorKind::SegmentTooLarge {
            index: 0,
            vaddr: plan.min_vaddr,
            memsz: plan.span(),
            limit: crate::elf::MAX_SPAN,
        })?;
        let misaligned = !addr.is_multiple_of(plan.max_align.max(PAGE_SIZE));
        let start = usize::try_from(addr).ok().filter(|_| !misaligned);
        // As in `reserve`: one inaccessible page after the span.
        let guard = PAGE_SIZE as usize;
        let total = span.checked_add(guard);
        let (Some(start), Some(total)) = (start, total) else {
            return Err(map_err("reserving address space at a stable address")(
                std::io::Error::from_raw_os_error(libc::EINVAL),
            ));
        };
        let base = sys::reserve_at(start, total)
            .map_err(map_err("reserving address space at a stable address"))?;
        // `reserve_at` returns exactly `start` (or fails), so the bias is
        // `start - min_vaddr`.
        let mapping = Self::owned_span(base, span, guard, plan, strategy, protection);
        Self::map_segments(mapping, file, plan, false)
    }
}
