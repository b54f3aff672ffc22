//! Reading a C string at an address a called function returned, without
//! trusting the address (`mmld run --ret str`).
//!
//! Owns: the one read of arbitrary process memory the CLI makes. Must
//! never: dereference the address directly; every byte is copied with
//! `process_vm_readv` on this process, which fails with `EFAULT` instead of
//! faulting when a page is unmapped or unreadable.

use anyhow::{Result, bail};

/// Longest string printed; a longer one is cut there (and says so).
const LIMIT: usize = 1 << 20;
const PAGE: usize = 4096;

/// The NUL-terminated string at `addr`, lossily decoded.
pub fn c_string(addr: u64) -> Result<String> {
    let mut bytes = Vec::new();
    let mut at = addr as usize;
    while bytes.len() < LIMIT {
        // One page at a time: a read that crosses into an unmapped page
        // would fail as a whole, or stop short, and this keeps it simple.
        let len = PAGE - at % PAGE;
        let mut buf = vec![0u8; len];
        let n = read_own(at, &mut buf);
        if n == 0 {
            if bytes.is_empty() {
                bail!(
                    "the function returned {addr:#x}, which is not the address of readable memory (--ret str needs a pointer to a NUL-terminated string)"
                );
            }
            bail!(
                "the string at {addr:#x} runs into unreadable memory at {at:#x} after {} bytes without a NUL",
                bytes.len()
            );
        }
        if let Some(end) = buf[..n].iter().position(|&b| b == 0) {
            bytes.extend_from_slice(&buf[..end]);
            return Ok(String::from_utf8_lossy(&bytes).into_owned());
        }
        bytes.extend_from_slice(&buf[..n]);
        at = match at.checked_add(n) {
            Some(next) => next,
            None => break,
        };
    }
    let mut s = String::from_utf8_lossy(&bytes).into_owned();
    s.push_str(" [cut: no NUL in the first 1 MiB]");
    Ok(s)
}

/// Copy `buf.len()` bytes from `addr` in this process; how many were
/// readable (0 when the first byte is not).
fn read_own(addr: usize, buf: &mut [u8]) -> usize {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes `buf`, which we own mutably for the call;
    // `remote` is only read by the kernel, which checks it and returns
    // EFAULT (not a fault in this process) for unmapped or unreadable pages.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    usize::try_from(n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_string_and_refuses_unmapped_addresses() {
        let s = c"hello";
        assert_eq!(c_string(s.as_ptr() as u64).unwrap(), "hello");
        assert!(c_string(0x10).is_err());
        assert!(c_string(u64::MAX - 3).is_err());
    }
}
