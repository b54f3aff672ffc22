//! MAP for shared relocations: whole pages of a writable segment read
//! out, or replaced by pages of another file (the relocation cache).
//!
//! Owns: the checks that make replacing pages safe: the pages belong to one
//! writable segment of an owned mapping and to no other segment, RELRO is
//! not sealed yet, and the replacement never gets a permission the
//! segment's flags do not grant (never executable; writable only if asked
//! and the segment is). Must never: decide which pages or file (that is
//! `relshare`), or replace pages of a read-only or executable segment.

use std::os::fd::BorrowedFd;

use super::{Mapping, map_err, sys};
use crate::arch::current::PAGE_SIZE;
use crate::elf::{page_down, page_up};
use crate::error::{ErrorKind, KindResult};

impl Mapping {
    /// Is `vaddr..vaddr+len` whole pages of one writable, non-executable
    /// segment of this owned mapping, shared with no other segment?
    pub fn writable_pages(&self, vaddr: u64, len: u64) -> bool {
        let Some(end) = vaddr.checked_add(len) else {
            return false;
        };
        if !self.owned
            || len == 0
            || !vaddr.is_multiple_of(PAGE_SIZE)
            || !len.is_multiple_of(PAGE_SIZE)
        {
            return false;
        }
        let pages = |s: &super::MappedSegment| {
            (
                page_down(s.plan.vaddr),
                page_up(s.plan.end()).unwrap_or(u64::MAX),
            )
        };
        let Some(seg) = self.segments.iter().find(|s| {
            let (lo, hi) = pages(s);
            vaddr >= lo && end <= hi
        }) else {
            return false;
        };
        let others_disjoint = self.segments.iter().all(|s| {
            let (lo, hi) = pages(s);
            std::ptr::eq(s, seg) || end <= lo || vaddr >= hi
        });
        let sealed = self.sealed.is_some_and(|(s, e)| vaddr < e && end > s);
        seg.prot & libc::PROT_WRITE != 0
            && seg.prot & libc::PROT_EXEC == 0
            && seg.plan.writable()
            && !seg.plan.executable()
            && others_disjoint
            && !sealed
    }

    /// A copy of the whole pages `vaddr..vaddr+len` (see [`writable_pages`](Self::writable_pages)).
    pub fn copy_pages(&self, vaddr: u64, len: u64) -> Option<Vec<u8>> {
        if !self.writable_pages(vaddr, len) {
            return None;
        }
        let mut out = vec![0u8; usize::try_from(len).ok()?];
        // SAFETY: the pages are mapped readable (writable segments are
        // readable on x86-64) inside this owned span; copying bytes out
        // creates no reference into the mapping.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr_at(vaddr), out.as_mut_ptr(), out.len()) };
        Some(out)
    }

    /// Replace the whole pages `vaddr..vaddr+len` by `len` bytes of `fd`
    /// from `offset`, `MAP_PRIVATE`: readable, and writable only when
    /// `writable` (a page that will be written before RELRO is sealed).
    pub fn overlay_pages(
        &mut self,
        vaddr: u64,
        len: u64,
        fd: BorrowedFd<'_>,
        offset: u64,
        writable: bool,
    ) -> KindResult<()> {
        if !self.writable_pages(vaddr, len) {
            return Err(ErrorKind::Other(format!(
                "cannot map cache pages at {vaddr:#x}..{:#x}: not whole pages of one writable segment",
                vaddr.saturating_add(len)
            )));
        }
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: the pages are inside this owned span (checked above), and
        // no Rust reference points into writable pages; the new contents
        // replace the old ones for every later access.
        unsafe { sys::map_file_fixed(self.ptr_at(vaddr), len as usize, prot, fd, offset) }
            .map_err(map_err("mapping pages of the relocation cache"))
    }
}
