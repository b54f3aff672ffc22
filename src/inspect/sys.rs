//! The inspector's only `unsafe`: `mincore` over a temporary view of a file,
//! and `geteuid`/`faccessat` to know whether `mincore` will tell the truth.
//!
//! Owns: the temporary mapping's whole life (map, ask, unmap) inside one
//! function. Must never: touch a mapping it did not create, or let the view
//! outlive the call.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use super::PAGE;

pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Will `mincore` report page-cache residency for `file`? Since Linux 5.2
/// it does so only for files the caller owns or could open for writing (or
/// with CAP_FOWNER, which root has); for other files it reports only pages
/// mapped in the caller's own page tables, which for a fresh view is none.
pub fn mincore_sees_page_cache(file: &File) -> bool {
    let uid = effective_uid();
    if uid == 0 {
        return true;
    }
    if file.metadata().is_ok_and(|m| m.uid() == uid) {
        return true;
    }
    // SAFETY: the descriptor is open for the whole call; the empty path with
    // AT_EMPTY_PATH names the descriptor itself, and the C string literal is
    // NUL-terminated.
    unsafe {
        libc::faccessat(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::W_OK,
            libc::AT_EACCESS | libc::AT_EMPTY_PATH,
        ) == 0
    }
}

/// For each page of `file` from `offset` (page-aligned) for `len` bytes:
/// is it in the page cache? Asks `mincore` about a private read-only view of
/// the file made for the purpose, so the answer does not depend on which
/// pages any process has touched.
pub fn page_cache_residency(file: &File, offset: u64, len: u64) -> io::Result<Vec<bool>> {
    if len == 0 {
        return Ok(Vec::new());
    }
    if !offset.is_multiple_of(PAGE) {
        return Err(io::Error::other("offset is not page-aligned"));
    }
    let pages = len.div_ceil(PAGE);
    let map_len = usize::try_from(pages * PAGE).map_err(|_| io::Error::other("range too large"))?;
    let off = libc::off_t::try_from(offset).map_err(|_| io::Error::other("offset too large"))?;
    // SAFETY: a new read-only private mapping at an address the kernel
    // chooses; it cannot replace or alias anything that exists, and nothing
    // reads through it (mincore only looks at the page tables and cache).
    let view = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            map_len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            off,
        )
    };
    if view == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let mut vec = vec![0u8; pages as usize];
    // SAFETY: `view..view+map_len` is the mapping just made; `vec` holds
    // one byte per page of it, as mincore requires.
    let rc = unsafe { libc::mincore(view, map_len, vec.as_mut_ptr()) };
    let err = (rc != 0).then(io::Error::last_os_error);
    // SAFETY: unmapping exactly the view made above, which nothing else
    // refers to.
    unsafe { libc::munmap(view, map_len) };
    match err {
        Some(e) => Err(e),
        None => Ok(vec.into_iter().map(|b| b & 1 != 0).collect()),
    }
}
