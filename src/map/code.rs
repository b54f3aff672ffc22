//! Code mmld generates at run time (lazy-call stubs), in pages of its own.
//!
//! Owns: one anonymous mapping per block of generated code, from the
//! `mmap` to the `munmap`. The bytes are written while the pages are
//! read-write, then the pages become read-execute before any address in
//! them is handed out. Must never: have a page writable and executable at
//! the same time, or let the code change after it is published.

use std::io;
use std::ptr::NonNull;

use super::sys;
use crate::arch::current::PAGE_SIZE;

/// Read-execute pages holding code written once; unmapped on drop.
#[derive(Debug)]
pub struct CodePages {
    start: NonNull<u8>,
    len: usize,
}

// SAFETY: the pages are immutable once built and owned by this value alone;
// sharing their address between threads is what they are for.
unsafe impl Send for CodePages {}
// SAFETY: as above; no method mutates through `&self`.
unsafe impl Sync for CodePages {}

impl CodePages {
    /// Copy `code` into fresh pages and make them read-execute.
    pub fn new(code: &[u8]) -> io::Result<CodePages> {
        let page = PAGE_SIZE as usize;
        let len = code
            .len()
            .max(1)
            .checked_next_multiple_of(page)
            .ok_or_else(|| io::Error::other("generated code too large"))?;
        let start = sys::reserve(len)?;
        // Owned from here: an error below unmaps the reservation.
        let pages = CodePages { start, len };
        // SAFETY: the range is the reservation just made, which nothing
        // else refers to.
        unsafe { sys::protect(start.as_ptr(), len, libc::PROT_READ | libc::PROT_WRITE)? };
        // SAFETY: the pages are writable, `len >= code.len()`, and the
        // source is a distinct allocation.
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), start.as_ptr(), code.len()) };
        // SAFETY: as above; write access is dropped before execute is added
        // by the same call, so no instant has both.
        unsafe { sys::protect(start.as_ptr(), len, libc::PROT_READ | libc::PROT_EXEC)? };
        Ok(pages)
    }

    /// Address of the first byte.
    pub fn address(&self) -> u64 {
        self.start.as_ptr() as u64
    }
}

impl Drop for CodePages {
    fn drop(&mut self) {
        // SAFETY: this value owns the mapping; its owner drops it only once
        // no code can run in it (the object whose slots pointed here is
        // being unmapped too).
        let _ = unsafe { sys::unmap(self.start.as_ptr(), self.len) };
    }
}
