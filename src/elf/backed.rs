//! Reading the bytes a file really has, into memory the caller owns.
//!
//! Owns: copying a range of a file into a buffer with `pread`, skipping the
//! holes of a sparse file (they read as zeros, and the caller's fresh
//! anonymous buffer already is zero there, untouched and so free), and
//! noticing a file that shrank meanwhile. Commands that promise never to
//! crash (`check`, `info`) read through here instead of mapping the file:
//! a file mapping faults (SIGBUS) when the file is truncated under it; a
//! copy in owned memory cannot. Must never: map the file, or read a byte
//! past the range asked for.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

/// Fill `dst` with the file's bytes at `offset..offset + dst.len()`,
/// writing only where the file has data. `dst` must be zero to begin with.
/// Fails if the file no longer covers the whole range (it was truncated).
pub fn read_backed(file: &File, dst: &mut [u8], offset: u64) -> io::Result<()> {
    let end = offset
        .checked_add(dst.len() as u64)
        .ok_or_else(|| io::Error::other("range overflows"))?;
    let mut at = offset;
    while at < end {
        let Some(data) = next_data(file, at)? else {
            break;
        };
        if data >= end {
            break;
        }
        let hole = next_hole(file, data)?.min(end);
        if hole <= data {
            // The file changed between the two questions: read the rest.
            read_range(file, dst, offset, data, end)?;
            break;
        }
        read_range(file, dst, offset, data, hole)?;
        at = hole;
    }
    // Holes read as zeros only up to the end of the file.
    let len = file.metadata()?.len();
    if len < end {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the file ends at {len:#x}, before {end:#x}: it was truncated"),
        ));
    }
    Ok(())
}

/// `dst[from - base .. to - base]` from file offsets `from..to`.
fn read_range(file: &File, dst: &mut [u8], base: u64, from: u64, to: u64) -> io::Result<()> {
    let range = usize::try_from(from - base)
        .ok()
        .zip(usize::try_from(to - base).ok());
    let part = range
        .and_then(|(s, e)| dst.get_mut(s..e))
        .ok_or_else(|| io::Error::other("range outside the buffer"))?;
    file.read_exact_at(part, from)
}

/// The first offset at or after `at` with data; `None` if only a hole
/// (or the end of the file) follows. Without `SEEK_DATA` support, all of
/// the file counts as data.
fn next_data(file: &File, at: u64) -> io::Result<Option<u64>> {
    match seek(file, at, libc::SEEK_DATA) {
        Ok(o) => Ok(Some(o)),
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(Some(at)),
        Err(e) => Err(e),
    }
}

/// The first hole at or after `at` (the end of the file counts as one).
fn next_hole(file: &File, at: u64) -> io::Result<u64> {
    match seek(file, at, libc::SEEK_HOLE) {
        Ok(o) => Ok(o),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(u64::MAX),
        Err(e) => Err(e),
    }
}

fn seek(file: &File, at: u64, whence: i32) -> io::Result<u64> {
    let at = libc::off_t::try_from(at).map_err(|_| io::Error::other("offset too large"))?;
    // SAFETY: lseek on a descriptor we own; it moves only the file offset,
    // which mmld never uses (every read is a pread at an explicit offset).
    let r = unsafe { libc::lseek(file.as_raw_fd(), at, whence) };
    u64::try_from(r).map_err(|_| io::Error::last_os_error())
}
