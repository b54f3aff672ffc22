//! Runs of relocation writes with one bounds check each.
//!
//! Owns: [`RelocWriter`], which remembers the writable stretch of the last
//! segment it wrote to (a segment minus sealed RELRO pages), so a run of
//! writes into one segment costs two compares each instead of a segment
//! search. Must never: outlive a change of the mapping's protections (it
//! holds the mapping's `&mut` borrow, so nothing can seal or unmap while it
//! lives), or write outside a segment whose protection grants writing.

use super::Mapping;

/// A relocation writer over one mapping; see the module comment.
pub struct RelocWriter<'m> {
    mapping: &'m mut Mapping,
    /// Object addresses `lo..hi` are writable (empty until the first write).
    lo: u64,
    hi: u64,
}

impl Mapping {
    /// A writer for a run of relocations.
    pub fn writer(&mut self) -> RelocWriter<'_> {
        RelocWriter {
            mapping: self,
            lo: 0,
            hi: 0,
        }
    }
}

impl RelocWriter<'_> {
    /// Write the 8 bytes at object address `vaddr`; `false` when they are
    /// not all inside writable memory of the mapping.
    #[inline]
    pub fn write_u64(&mut self, vaddr: u64, value: u64) -> bool {
        let inside = vaddr >= self.lo && vaddr.checked_add(8).is_some_and(|e| e <= self.hi);
        if !inside && !self.refill(vaddr) {
            return false;
        }
        // SAFETY: `lo..hi` lies inside one mapped segment whose protection
        // grants writing and outside the sealed RELRO pages (see `refill`);
        // the mapping is borrowed mutably for the writer's life, so neither
        // can change, and no Rust reference points into writable pages.
        unsafe {
            self.mapping
                .ptr_at(vaddr)
                .cast::<u64>()
                .write_unaligned(value)
        };
        true
    }

    /// Find the writable stretch holding `vaddr..vaddr + 8`, as
    /// `Mapping::writable_range` decides it.
    #[cold]
    fn refill(&mut self, vaddr: u64) -> bool {
        if !self.mapping.writable_range(vaddr, 8) {
            return false;
        }
        let Some(seg) = self.mapping.segment_containing(vaddr, 8) else {
            return false;
        };
        let (mut lo, mut hi) = (seg.plan.vaddr, seg.plan.end());
        if let Some((s, e)) = self.mapping.sealed {
            // `writable_range` put the 8 bytes wholly on one side.
            if vaddr < s {
                hi = hi.min(s);
            } else {
                lo = lo.max(e);
            }
        }
        self.lo = lo;
        self.hi = hi;
        true
    }
}
