//! Thin wrappers over the memory syscalls MAP needs.
//!
//! Owns: every `mmap`, `mprotect` and `munmap` call in mmld, turning their
//! failures into `io::Error`. Must never: decide addresses or sizes: callers
//! pass ranges inside a reservation they own, which is why these are `unsafe`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

/// Reserve `len` bytes of address space, inaccessible, at an address the
/// kernel picks. Reserving is safe: it cannot clobber existing mappings.
pub fn reserve(len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: a non-fixed anonymous PROT_NONE mapping creates new address
    // space only; it cannot alias or replace anything that exists.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned NULL"))
}

/// Map `len` bytes of `fd` from `offset` privately, at an address the
/// kernel picks: the first segment of an object mapped over its whole span,
/// so that this one mapping is also the span's reservation (glibc's way).
/// Safe for the same reason as [`reserve`]: it only creates address space.
pub fn map_file_anywhere(
    len: usize,
    prot: i32,
    fd: BorrowedFd<'_>,
    offset: u64,
) -> io::Result<NonNull<u8>> {
    let offset = libc::off_t::try_from(offset).map_err(|_| io::Error::other("offset too large"))?;
    // SAFETY: a non-fixed mapping creates new address space only; it cannot
    // alias or replace anything that exists.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_PRIVATE,
            fd.as_raw_fd(),
            offset,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned NULL"))
}

/// Map `len` bytes of `fd` from `offset` at exactly `addr`, privately.
///
/// # Safety
/// `addr..addr+len` must lie inside a reservation the caller owns and that no
/// Rust reference currently points into.
pub unsafe fn map_file_fixed(
    addr: *mut u8,
    len: usize,
    prot: i32,
    fd: BorrowedFd<'_>,
    offset: u64,
) -> io::Result<()> {
    let offset = libc::off_t::try_from(offset).map_err(|_| io::Error::other("offset too large"))?;
    // SAFETY: the caller guarantees the range is its own reservation.
    let p = unsafe {
        libc::mmap(
            addr.cast(),
            len,
            prot,
            libc::MAP_PRIVATE | libc::MAP_FIXED,
            fd.as_raw_fd(),
            offset,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Map zero-filled anonymous memory at exactly `addr`.
///
/// # Safety
/// As for [`map_file_fixed`].
pub unsafe fn map_anon_fixed(addr: *mut u8, len: usize, prot: i32) -> io::Result<()> {
    // SAFETY: the caller guarantees the range is its own reservation.
    let p = unsafe {
        libc::mmap(
            addr.cast(),
            len,
            prot,
            libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Map zero-filled anonymous memory at exactly `addr`, without reserving
/// swap for it (`MAP_NORESERVE`): for copies of sparse files, whose holes
/// are never written.
///
/// # Safety
/// As for [`map_file_fixed`].
pub unsafe fn map_anon_fixed_unreserved(addr: *mut u8, len: usize, prot: i32) -> io::Result<()> {
    // SAFETY: the caller guarantees the range is its own reservation.
    let p = unsafe {
        libc::mmap(
            addr.cast(),
            len,
            prot,
            libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Change the protection of `addr..addr+len`.
///
/// # Safety
/// The range must be inside a reservation the caller owns, and no Rust
/// reference may rely on the access being removed.
pub unsafe fn protect(addr: *mut u8, len: usize, prot: i32) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: the caller guarantees ownership of the range.
    if unsafe { libc::mprotect(addr.cast(), len, prot) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Unmap `addr..addr+len`.
///
/// # Safety
/// The caller must own the range and nothing may use it afterwards.
pub unsafe fn unmap(addr: *mut u8, len: usize) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: the caller guarantees ownership and that the range is dead.
    if unsafe { libc::munmap(addr.cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Linux 5.14+: fault in pages writable in one call (`MADV_POPULATE_WRITE`).
const MADV_POPULATE_WRITE: i32 = 23;

/// Pre-fault `addr..addr+len` for writing. Failure (an older kernel) is
/// harmless: the pages then fault one by one as they are written.
///
/// # Safety
/// The range must be a writable private mapping the caller owns.
pub unsafe fn populate_write(addr: *mut u8, len: usize) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: the caller guarantees ownership; populating only faults pages
    // in, exactly as writes would.
    if unsafe { libc::madvise(addr.cast(), len, MADV_POPULATE_WRITE) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reserve `len` bytes of address space, inaccessible, at exactly `addr`,
/// without replacing anything (`MAP_FIXED_NOREPLACE`, Linux 4.17+). Fails
/// with `EEXIST` when something is mapped there; a kernel that does not
/// know the flag treats `addr` as a hint, so a reservation elsewhere is
/// given back and reported as `EEXIST` too.
pub fn reserve_at(addr: usize, len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: without MAP_FIXED the kernel never replaces an existing
    // mapping: it fails (or, on an old kernel, picks another address).
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE
                | libc::MAP_ANONYMOUS
                | libc::MAP_NORESERVE
                | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    if p as usize != addr {
        // SAFETY: the reservation was just made by this call, elsewhere.
        let _ = unsafe { unmap(p.cast(), len) };
        return Err(io::Error::from_raw_os_error(libc::EEXIST));
    }
    NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned NULL"))
}
