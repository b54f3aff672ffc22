//! MAP: turn a validated [`LoadPlan`] into memory.
//!
//! Owns: the object's address span, from its placement (`place.rs`: the
//! first segment's mapping over the span, or a `PROT_NONE` reservation) to
//! the final `munmap`, and every access LINK and RUN make to it (bounds- and
//! permission-checked reads and writes). Must never: interpret ELF tables
//! (that is LINK), or hand out a reference into memory that can change while
//! the reference lives.

mod code;
mod inspect;
mod overlay;
mod place;
mod placement;
mod sys;
mod writer;

pub use code::CodePages;

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::ptr::NonNull;

use crate::arch::current::PAGE_SIZE;
use crate::elf::{LoadPlan, Segment, VRange, page_down, page_up};
use crate::error::{ErrorKind, KindResult};

/// How segment permissions are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// Exactly what each segment's `p_flags` ask for: a runnable object.
    Exact,
    /// Never executable: for inspecting or checking untrusted files.
    Inert,
}

/// Where the segments' contents come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// `MAP_PRIVATE` file mappings: text shared through the page cache.
    Mmap,
    /// Copy each segment into anonymous memory, as a naive loader would.
    Read,
}

/// A segment as mapped.
#[derive(Debug, Clone, Copy)]
pub struct MappedSegment {
    pub plan: Segment,
    /// The protection the segment ended up with.
    pub prot: i32,
}

/// The object's mapped span. Unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    base: NonNull<u8>,
    len: usize,
    /// Added to an object's virtual address to get a process address.
    bias: u64,
    segments: Vec<MappedSegment>,
    /// Page range made read-only after relocation.
    sealed: Option<(u64, u64)>,
    strategy: Strategy,
    protection: Protection,
    /// `false` for a view of memory someone else mapped (a host object):
    /// then dropping the `Mapping` leaves the memory alone.
    owned: bool,
    /// Index of the segment the last lookup found (a hint only).
    last_segment: std::sync::atomic::AtomicUsize,
    /// Size of the `PROT_NONE` page kept reserved after the span.
    guard: usize,
}

// SAFETY: `Mapping` owns its span exclusively; the raw base pointer is only
// an address. Mutation goes through `&mut self`, reads of read-only pages are
// immutable data, so sharing or sending it between threads is sound.
unsafe impl Send for Mapping {}
// SAFETY: see `Send` above: `&Mapping` only permits reads.
unsafe impl Sync for Mapping {}

fn prot_of(seg: &Segment, protection: Protection) -> i32 {
    let mut prot = 0;
    if seg.readable() {
        prot |= libc::PROT_READ;
    }
    if seg.writable() {
        prot |= libc::PROT_WRITE;
    }
    if seg.executable() {
        match protection {
            Protection::Exact => prot |= libc::PROT_EXEC,
            // Inert images must stay readable for inspection.
            Protection::Inert => prot |= libc::PROT_READ,
        }
    }
    prot
}

fn map_err(what: &'static str) -> impl FnOnce(io::Error) -> ErrorKind {
    move |source| ErrorKind::Mmap { what, source }
}

impl Mapping {
    /// Reserve the span and map each `PT_LOAD` of `file` into it.
    pub fn map(
        file: &File,
        plan: &LoadPlan,
        strategy: Strategy,
        protection: Protection,
    ) -> KindResult<Mapping> {
        let (mapping, first_mapped) = Self::place(file, plan, strategy, protection)?;
        Self::map_segments(mapping, file, plan, first_mapped)
    }

    /// Map each `PT_LOAD` of `file` into the span `mapping` reserved;
    /// `first_mapped`: [`Mapping::place`] already mapped the first
    /// segment's file pages over the span (its holes are closed here).
    fn map_segments(
        mut mapping: Mapping,
        file: &File,
        plan: &LoadPlan,
        first_mapped: bool,
    ) -> KindResult<Mapping> {
        let (strategy, protection) = (mapping.strategy, mapping.protection);
        for (i, seg) in plan.segments.iter().enumerate() {
            let prot = prot_of(seg, protection);
            match strategy {
                Strategy::Mmap => {
                    mapping.map_segment_from_file(file, seg, prot, first_mapped && i == 0)?;
                }
                // Only the bytes the file has are read: the holes of a
                // sparse file stay untouched zero pages.
                Strategy::Read => mapping.fill_segment(seg, prot, |dst, offset| {
                    crate::elf::backed::read_backed(file, dst, offset).map_err(|source| {
                        ErrorKind::Io {
                            op: "reading a segment",
                            source,
                        }
                    })
                })?,
            }
            mapping.segments.push(MappedSegment { plan: *seg, prot });
        }
        if first_mapped {
            mapping.close_holes(plan)?;
        }
        Ok(mapping)
    }

    /// Build the image from bytes already in memory (fuzzing, tests): each
    /// segment is copied into anonymous memory. The plan was validated
    /// against `bytes.len()`, so every file range is inside `bytes`.
    pub fn from_bytes(
        bytes: &[u8],
        plan: &LoadPlan,
        protection: Protection,
    ) -> KindResult<Mapping> {
        let mut mapping = Self::reserve(plan, Strategy::Read, protection)?;
        for seg in &plan.segments {
            let prot = prot_of(seg, protection);
            mapping.fill_segment(seg, prot, |dst, offset| {
                let start = usize::try_from(offset).ok();
                let src = start
                    .and_then(|s| bytes.get(s..s.checked_add(dst.len())?))
                    .ok_or(ErrorKind::SegmentOutOfFile {
                        index: seg.index,
                        offset,
                        end: offset.saturating_add(dst.len() as u64),
                        file_len: bytes.len() as u64,
                    })?;
                dst.copy_from_slice(src);
                Ok(())
            })?;
            mapping.segments.push(MappedSegment { plan: *seg, prot });
        }
        Ok(mapping)
    }

    /// Describe an object the host's loader mapped (at `bias`, with these
    /// `PT_LOAD`s) so LINK can read its tables like an mmld object's.
    ///
    /// # Safety
    /// The object must stay mapped, with these segments readable as their
    /// flags say, for as long as the returned value (and any `RoBytes` made
    /// from it) lives; its read-only segments must never change.
    pub unsafe fn borrow_host(bias: u64, segments: &[Segment]) -> Option<Mapping> {
        let first = segments.first()?;
        let last = segments.last()?;
        let start = bias.wrapping_add(page_down(first.vaddr));
        let end = bias.wrapping_add(page_up(last.end())?);
        let base = NonNull::new(start as usize as *mut u8)?;
        Some(Mapping {
            base,
            len: usize::try_from(end.checked_sub(start)?).ok()?,
            bias,
            segments: segments
                .iter()
                .map(|s| MappedSegment {
                    plan: *s,
                    prot: prot_of(s, Protection::Exact),
                })
                .collect(),
            sealed: None,
            strategy: Strategy::Mmap,
            protection: Protection::Exact,
            owned: false,
            last_segment: std::sync::atomic::AtomicUsize::new(0),
            guard: 0,
        })
    }

    /// Process address of the page holding object address `vaddr`. The plan
    /// guarantees `min_vaddr <= vaddr < max_vaddr`.
    fn ptr_at(&self, vaddr: u64) -> *mut u8 {
        // Callers check that vaddr is inside the span before using the result.
        self.base
            .as_ptr()
            .wrapping_add(vaddr.wrapping_sub(self.min_vaddr()) as usize)
    }

    fn min_vaddr(&self) -> u64 {
        (self.base.as_ptr() as u64).wrapping_sub(self.bias)
    }

    /// `in_place`: the segment's file pages are already mapped with `prot`
    /// (the first segment, mapped over the span by [`Mapping::place`]).
    fn map_segment_from_file(
        &mut self,
        file: &File,
        seg: &Segment,
        prot: i32,
        in_place: bool,
    ) -> KindResult<()> {
        let page_start = page_down(seg.vaddr);
        let file_map_end = if seg.filesz > 0 {
            page_up(seg.file_end_vaddr()).unwrap_or(u64::MAX)
        } else {
            page_start
        };
        let zero_tail = seg.memsz > seg.filesz
            && seg.filesz > 0
            && !seg.file_end_vaddr().is_multiple_of(PAGE_SIZE);
        // A non-writable segment's last file page is never mapped from the
        // file when its tail must be zeroed: the file page would have to be
        // writable for a moment. It is copied into an anonymous page
        // instead (below), so every file page gets exactly `prot`.
        let copied_page = (zero_tail && !seg.writable()).then(|| page_down(seg.file_end_vaddr()));
        let from_file_end = copied_page.unwrap_or(file_map_end);
        if from_file_end > page_start && !in_place {
            // SAFETY: page_start..from_file_end lies inside this mapping's
            // reservation (the plan bounds every segment by max_vaddr), and
            // no reference into the reservation exists yet.
            unsafe {
                sys::map_file_fixed(
                    self.ptr_at(page_start),
                    (from_file_end - page_start) as usize,
                    prot,
                    file.as_fd(),
                    page_down(seg.offset),
                )
            }
            .map_err(map_err("mapping a segment from the file"))?;
        }
        match copied_page {
            Some(page) => self.copy_last_page(file, seg, page, prot)?,
            // A writable segment's page is zeroed in place, as the kernel
            // does for ELF executables: it has the write permission anyway.
            None if zero_tail => self.zero_bss_tail(seg),
            None => {}
        }
        self.map_anonymous_rest(seg, file_map_end, prot)
    }

    /// The last, partly file-backed page of a non-writable segment: an
    /// anonymous page holding the file's bytes up to `p_filesz` and zeros
    /// after them, then given the segment's protection. Anonymous memory is
    /// no file page, so no file page is ever writable.
    fn copy_last_page(
        &mut self,
        file: &File,
        seg: &Segment,
        page: u64,
        prot: i32,
    ) -> KindResult<()> {
        let len = (seg.file_end_vaddr() - page) as usize;
        let offset = page_down(seg.offset) + (page - page_down(seg.vaddr));
        // SAFETY: the page lies inside the reservation (it holds the end of
        // the segment's file bytes) and nothing refers to it yet.
        unsafe {
            sys::map_anon_fixed(
                self.ptr_at(page),
                PAGE_SIZE as usize,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        }
        .map_err(map_err("mapping the last file page of a segment"))?;
        // SAFETY: the first `len` bytes of the page just mapped read-write;
        // this slice is the only reference to them and ends before the
        // protection changes.
        let dst = unsafe { std::slice::from_raw_parts_mut(self.ptr_at(page), len) };
        file.read_exact_at(dst, offset)
            .map_err(|source| ErrorKind::Io {
                op: "reading the last file page of a segment",
                source,
            })?;
        // SAFETY: the segment's own protection on its own anonymous page.
        unsafe { sys::protect(self.ptr_at(page), PAGE_SIZE as usize, prot) }
            .map_err(map_err("protecting the last file page of a segment"))
    }

    /// Zero the part of a writable segment's last file page past
    /// `p_filesz`: the file has other bytes there, but the program expects
    /// `.bss` zeros.
    fn zero_bss_tail(&mut self, seg: &Segment) {
        let start = seg.file_end_vaddr();
        let end = page_up(start).unwrap_or(start);
        // SAFETY: start..end is the tail of a page just mapped with the
        // segment's protection, which includes PROT_WRITE, inside our
        // reservation.
        unsafe { std::ptr::write_bytes(self.ptr_at(start), 0, (end - start) as usize) };
    }

    fn map_anonymous_rest(&mut self, seg: &Segment, from: u64, prot: i32) -> KindResult<()> {
        let end = page_up(seg.end()).unwrap_or(u64::MAX);
        if end > from {
            // SAFETY: from..end is inside the reservation (segment bounds
            // are validated against max_vaddr) and not referenced yet.
            unsafe { sys::map_anon_fixed(self.ptr_at(from), (end - from) as usize, prot) }
                .map_err(map_err("mapping anonymous .bss pages"))?;
        }
        Ok(())
    }

    /// Copy a segment's file bytes into fresh anonymous memory.
    fn fill_segment(
        &mut self,
        seg: &Segment,
        prot: i32,
        read: impl FnOnce(&mut [u8], u64) -> KindResult<()>,
    ) -> KindResult<()> {
        let page_start = page_down(seg.vaddr);
        let end = page_up(seg.end()).unwrap_or(u64::MAX);
        // SAFETY: page_start..end is inside the reservation, unreferenced.
        // Not charged against the commit limit up front: only the pages
        // the file has data for are ever written.
        unsafe {
            sys::map_anon_fixed_unreserved(
                self.ptr_at(page_start),
                (end - page_start) as usize,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        }
        .map_err(map_err("mapping anonymous memory for a segment"))?;
        if seg.filesz > 0 {
            // SAFETY: vaddr..vaddr+filesz is inside the pages just mapped
            // read-write, and this slice is the only reference to them.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(self.ptr_at(seg.vaddr), seg.filesz as usize)
            };
            read(dst, seg.offset)?;
        }
        // SAFETY: same pages, now given the segment's own protection.
        unsafe { sys::protect(self.ptr_at(page_start), (end - page_start) as usize, prot) }
            .map_err(map_err("protecting a copied segment"))
    }

    /// Fault in, for writing, the whole pages of `range` in one call.
    /// Relocation writes nearly every page of a RELRO range (that is why the
    /// linker put those pages there), so doing it up front replaces one
    /// page fault per page with one system call, without dirtying a page
    /// that would otherwise stay clean.
    pub fn prefault_for_relocation(&self, range: VRange) {
        let start = page_down(range.vaddr);
        let Some(end) = page_up(range.vaddr.saturating_add(range.size)) else {
            return;
        };
        if end <= start || !self.writable_range(range.vaddr, range.size.max(1)) {
            return;
        }
        // The range is inside one writable segment (checked above); its
        // last page may extend past the RELRO range into the same segment.
        let len = self
            .segment_containing(start.max(range.vaddr), 1)
            .map_or(0, |s| end.min(page_up(s.plan.end()).unwrap_or(end)) - start);
        // SAFETY: inside a writable, owned segment of this mapping.
        let _ = unsafe { sys::populate_write(self.ptr_at(start), len as usize) };
    }

    /// Fault in, for writing, the whole pages `vaddr..vaddr + len` (page
    /// aligned) in one call, when they all belong to one writable segment
    /// of this mapping and lie outside sealed RELRO; otherwise do nothing.
    /// LINK asks for exactly the pages relocation is about to write.
    pub fn populate_for_writing(&self, vaddr: u64, len: u64) {
        let Some(end) = vaddr.checked_add(len) else {
            return;
        };
        let in_segment = self.segments.iter().any(|s| {
            s.prot & libc::PROT_WRITE != 0
                && page_down(s.plan.vaddr) <= vaddr
                && page_up(s.plan.end()).is_some_and(|e| end <= e)
        });
        let sealed = self.sealed.is_some_and(|(s, e)| vaddr < e && end > s);
        if !self.owned || !in_segment || sealed || len == 0 {
            return;
        }
        // SAFETY: whole pages of a writable segment this mapping owns, not
        // sealed; populating only faults them in, as the writes would.
        let _ = unsafe { sys::populate_write(self.ptr_at(vaddr), len as usize) };
    }

    /// Make the RELRO range read-only. Like glibc, only whole pages inside
    /// the range are protected: the page holding its end may carry data.
    pub fn seal_relro(&mut self, relro: VRange) -> KindResult<()> {
        let start = page_down(relro.vaddr);
        let end = page_down(relro.vaddr.saturating_add(relro.size));
        if end <= start {
            return Ok(());
        }
        // SAFETY: the plan checked that the RELRO range lies inside a
        // segment, so these pages are ours; nothing holds references into
        // writable pages (writes go through raw pointers).
        unsafe { sys::protect(self.ptr_at(start), (end - start) as usize, libc::PROT_READ) }
            .map_err(map_err("making RELRO read-only"))?;
        self.sealed = Some((start, end));
        Ok(())
    }

    /// A view of `len` bytes at `vaddr`, which must lie in a readable segment
    /// that is never writable.
    pub fn read_only(&self, vaddr: u64, len: u64) -> Option<RoBytes> {
        let seg = self.segment_containing(vaddr, len)?;
        if seg.plan.writable() || seg.prot & libc::PROT_READ == 0 {
            return None;
        }
        Some(RoBytes {
            ptr: self.ptr_at(vaddr),
            len: len as usize,
        })
    }

    /// The read-only segment holding `vaddr`: lets LINK bound a table whose
    /// length it does not know yet.
    pub fn read_only_until_segment_end(&self, vaddr: u64) -> Option<RoBytes> {
        let seg = self.segment_containing(vaddr, 1)?;
        self.read_only(vaddr, seg.plan.end() - vaddr)
    }

    pub fn segment_containing(&self, vaddr: u64, len: u64) -> Option<&MappedSegment> {
        // Relocations come in address order, so the segment of the last
        // hit is almost always the next one's too.
        let hint = self.last_segment.load(std::sync::atomic::Ordering::Relaxed);
        if let Some(s) = self.segments.get(hint)
            && s.plan.contains(vaddr, len)
        {
            return Some(s);
        }
        let (i, s) = self
            .segments
            .iter()
            .enumerate()
            .find(|(_, s)| s.plan.contains(vaddr, len))?;
        self.last_segment
            .store(i, std::sync::atomic::Ordering::Relaxed);
        Some(s)
    }

    /// Read 8 bytes from any readable segment.
    pub fn read_u64(&self, vaddr: u64) -> Option<u64> {
        let seg = self.segment_containing(vaddr, 8)?;
        if seg.prot & libc::PROT_READ == 0 {
            return None;
        }
        // SAFETY: the 8 bytes are inside a mapped, readable segment; an
        // unaligned read of plain bytes is always valid.
        Some(unsafe { self.ptr_at(vaddr).cast::<u64>().read_unaligned() })
    }

    /// Copy `len` bytes at `vaddr` out of any readable segment.
    pub fn copy_out(&self, vaddr: u64, len: u64) -> Option<Vec<u8>> {
        let seg = self.segment_containing(vaddr, len)?;
        if seg.prot & libc::PROT_READ == 0 {
            return None;
        }
        let mut out = vec![0u8; usize::try_from(len).ok()?];
        // SAFETY: the range is inside a mapped, readable segment; copying
        // plain bytes out does not create a reference into the mapping.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr_at(vaddr), out.as_mut_ptr(), out.len()) };
        Some(out)
    }

    /// Write 8 bytes into a writable segment that has not been sealed.
    pub fn write_u64(&mut self, vaddr: u64, value: u64) -> bool {
        if !self.writable_range(vaddr, 8) {
            return false;
        }
        // SAFETY: the range is inside a mapped writable segment outside the
        // sealed RELRO pages; no Rust reference points into writable pages.
        unsafe { self.ptr_at(vaddr).cast::<u64>().write_unaligned(value) };
        true
    }

    /// Add `delta` to the 8 bytes at `vaddr` (packed relative relocations
    /// keep their addend in place).
    pub fn add_u64(&mut self, vaddr: u64, delta: u64) -> bool {
        if !self.writable_range(vaddr, 8) {
            return false;
        }
        // SAFETY: as in `write_u64`; reading first is valid for the same
        // reason (writable segments are readable on x86-64).
        unsafe {
            let p = self.ptr_at(vaddr).cast::<u64>();
            p.write_unaligned(p.read_unaligned().wrapping_add(delta));
        }
        true
    }

    pub fn writable_range(&self, vaddr: u64, len: u64) -> bool {
        if !self.owned {
            // Host objects are read, never written.
            return false;
        }
        let Some(seg) = self.segment_containing(vaddr, len) else {
            return false;
        };
        if seg.prot & libc::PROT_WRITE == 0 {
            return false;
        }
        match self.sealed {
            Some((s, e)) => vaddr.saturating_add(len) <= s || vaddr >= e,
            None => true,
        }
    }

    /// Process address ranges of the executable segments (where an IFUNC
    /// resolver or a constructor must lie).
    pub fn code_ranges(&self) -> Vec<(u64, u64)> {
        self.segments
            .iter()
            .filter(|s| s.plan.executable())
            .map(|s| (self.address_of(s.plan.vaddr), self.address_of(s.plan.end())))
            .collect()
    }

    /// Is `vaddr` inside an executable segment?
    pub fn executable_at(&self, vaddr: u64) -> bool {
        self.segment_containing(vaddr, 1)
            .is_some_and(|s| s.plan.executable())
    }

    /// Process address for object address `vaddr`.
    pub fn address_of(&self, vaddr: u64) -> u64 {
        vaddr.wrapping_add(self.bias)
    }

    /// Object address for process address `addr`, if it is in the span.
    pub fn vaddr_of(&self, addr: u64) -> Option<u64> {
        let base = self.base.as_ptr() as u64;
        (addr >= base && addr < base + self.len as u64).then(|| addr.wrapping_sub(self.bias))
    }

    pub fn bias(&self) -> u64 {
        self.bias
    }

    pub fn base(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn segments(&self) -> &[MappedSegment] {
        &self.segments
    }

    pub fn sealed_range(&self) -> Option<(u64, u64)> {
        self.sealed
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    pub fn protection(&self) -> Protection {
        self.protection
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        // SAFETY: the span is ours; the registry drops a mapping only after
        // the object's destructors ran and its last handle is gone.
        let _ = unsafe { sys::unmap(self.base.as_ptr(), self.len + self.guard) };
    }
}

/// Bytes of a read-only segment of a live [`Mapping`].
///
/// Invariant: a `RoBytes` is stored only next to the `Mapping` that made it
/// (inside the same loaded object), so it never outlives the mapping, and the
/// bytes never change because read-only segments are never made writable.
#[derive(Debug, Clone, Copy)]
pub struct RoBytes {
    ptr: *const u8,
    len: usize,
}

// SAFETY: the bytes are immutable for the mapping's life (see invariant).
unsafe impl Send for RoBytes {}
// SAFETY: as above.
unsafe impl Sync for RoBytes {}

impl RoBytes {
    pub const EMPTY: RoBytes = RoBytes {
        ptr: std::ptr::NonNull::<u8>::dangling().as_ptr(),
        len: 0,
    };

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: by the type's invariant the bytes are mapped, readable
        // and immutable for as long as this value is reachable.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
