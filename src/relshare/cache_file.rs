//! The cache file: one object's relocated pages at one address.
//!
//! Owns: the format (all little-endian):
//!
//! ```text
//! magic "MMLDRELC", version u32, header length u32
//! object identity, address, span            (what and where)
//! executable identity                       (it can interpose)
//! scope: count u32, entries                 (every object lookups saw)
//! host global objects: count u32, (dev, ino) each
//! pages: count u32, (vaddr u64, flags u32) each (RELRO, per process, scope)
//! per-process relocations: count u32, u32 each (link::sharing::encode)
//! bound scope positions: count u32, u32 each
//! SipHash-2-4 of all the above (key 0), u64
//! zero padding to a page boundary, then one page image per page entry
//! ```
//!
//! and reading it back with every count and length checked against the
//! file's size and fixed limits. Must never: index or trust a byte of the
//! file unchecked: a cache file is input, and a bad one is an error
//! string (the fallback reason), never a panic.

use std::fs::File;

use super::address::{Identity, siphash24};
use crate::arch::current::PAGE_SIZE;

const MAGIC: &[u8; 8] = b"MMLDRELC";
const VERSION: u32 = 2;
/// No real object needs a bigger header (libLLVM's is about 60 KiB).
const MAX_HEADER: u32 = 64 << 20;
const MAX_COUNT: u32 = 1 << 26;
/// Bytes of a cache file read at once on a hit.
const FIRST_READ: u64 = 4096;

/// Page flag: the page lies in `PT_GNU_RELRO`.
pub const PAGE_RELRO: u32 = 1;
/// Page flag: it holds relocations re-applied in every process (host
/// objects, TLS, IFUNC results): it ends private.
pub const PAGE_PER_PROCESS: u32 = 2;
/// Page flag: it holds symbol bindings into other stable objects, so it
/// depends on the whole recorded scope. A page with neither this flag nor
/// `PAGE_PER_PROCESS` depends only on the object's own address.
pub const PAGE_SCOPE: u32 = 4;

/// One entry of the lookup scope an object was relocated in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScopeKey {
    pub kind: ScopeKind,
    pub id: Identity,
    /// Where a stable mmld object is mapped; 0 otherwise.
    pub address: u64,
}

/// What a scope entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum ScopeKind {
    /// The host's global scope (its objects are in `Header::hosts`).
    #[default]
    HostGlobal = 0,
    /// A library the host loaded (device and inode).
    Host = 1,
    /// An mmld object at its stable address.
    Stable = 2,
    /// An mmld object elsewhere (device and inode): bindings into it are
    /// per process, but it can still interpose.
    Unstable = 3,
}

impl ScopeKind {
    fn from_u8(b: u8) -> Option<ScopeKind> {
        Some(match b {
            0 => ScopeKind::HostGlobal,
            1 => ScopeKind::Host,
            2 => ScopeKind::Stable,
            3 => ScopeKind::Unstable,
            _ => return None,
        })
    }
}

/// A page of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageEntry {
    /// Object address of the page.
    pub vaddr: u64,
    pub flags: u32,
}

/// Everything before the page images.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    pub object: Identity,
    pub address: u64,
    pub span: u64,
    pub executable: Identity,
    /// The object's GNU build id (empty when it has none).
    pub build_id: Vec<u8>,
    pub scope: Vec<ScopeKey>,
    pub hosts: Vec<(u64, u64)>,
    pub pages: Vec<PageEntry>,
    pub per_process: Vec<u32>,
    pub bound: Vec<u32>,
}

impl Header {
    /// Where the page images start.
    pub fn data_offset(encoded_len: usize) -> u64 {
        (encoded_len as u64).next_multiple_of(PAGE_SIZE)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        put32(&mut out, VERSION);
        put32(&mut out, 0); // header length, filled in below
        put_id(&mut out, &self.object);
        put64(&mut out, self.address);
        put64(&mut out, self.span);
        put_id(&mut out, &self.executable);
        put32(&mut out, self.build_id.len() as u32);
        out.extend_from_slice(&self.build_id);
        put32(&mut out, self.scope.len() as u32);
        for k in &self.scope {
            out.push(k.kind as u8);
            put_id(&mut out, &k.id);
            put64(&mut out, k.address);
        }
        put32(&mut out, self.hosts.len() as u32);
        for (d, i) in &self.hosts {
            put64(&mut out, *d);
            put64(&mut out, *i);
        }
        let runs = page_runs(&self.pages);
        put32(&mut out, runs.len() as u32);
        for (vaddr, count, flags) in runs {
            put64(&mut out, vaddr);
            put32(&mut out, count);
            put32(&mut out, flags);
        }
        for list in [&self.per_process, &self.bound] {
            put32(&mut out, list.len() as u32);
            for v in list.iter() {
                put32(&mut out, *v);
            }
        }
        let len = (out.len() + 8) as u32;
        out[12..16].copy_from_slice(&len.to_le_bytes());
        let sum = siphash24((0, 0), &out);
        put64(&mut out, sum);
        out
    }

    /// Parse a header; the error says what is wrong with it.
    pub fn decode(bytes: &[u8], max_pages: u64) -> Result<Header, String> {
        let corrupt = |what: &str| format!("corrupt header ({what})");
        let mut r = Reader { bytes, at: 0 };
        if r.take(8) != Some(MAGIC.as_slice()) {
            return Err(corrupt("bad magic"));
        }
        if r.u32() != Some(VERSION) {
            return Err(corrupt("unknown version"));
        }
        let len = r.u32().ok_or_else(|| corrupt("truncated"))? as usize;
        let (Some(body), Some(sum)) = (
            len.checked_sub(8).and_then(|n| bytes.get(..n)),
            len.checked_sub(8).and_then(|n| bytes.get(n..len)),
        ) else {
            return Err(corrupt("truncated"));
        };
        let mut s = [0u8; 8];
        s.copy_from_slice(sum);
        if siphash24((0, 0), body) != u64::from_le_bytes(s) {
            return Err(corrupt("checksum mismatch"));
        }
        let mut r = Reader {
            bytes: body,
            at: 16,
        };
        Self::fields(&mut r, max_pages).ok_or_else(|| corrupt("malformed fields"))
    }

    /// The fields after the length; `max_pages` bounds the page table
    /// (what the file can hold) before it is expanded.
    fn fields(r: &mut Reader<'_>, max_pages: u64) -> Option<Header> {
        let mut h = Header {
            object: r.id()?,
            address: r.u64()?,
            span: r.u64()?,
            executable: r.id()?,
            ..Header::default()
        };
        let n = r.u32()? as usize;
        if n > super::buildid::MAX_LEN {
            return None;
        }
        h.build_id = r.take(n)?.to_vec();
        let n = r.count(49)?;
        h.scope.reserve_exact(n as usize);
        for _ in 0..n {
            let kind = ScopeKind::from_u8(*r.take(1)?.first()?)?;
            h.scope.push(ScopeKey {
                kind,
                id: r.id()?,
                address: r.u64()?,
            });
        }
        for _ in 0..r.count(16)? {
            h.hosts.push((r.u64()?, r.u64()?));
        }
        let runs = r.count(16)?;
        let mut total: u64 = 0;
        for _ in 0..runs {
            let (vaddr, count, flags) = (r.u64()?, r.u32()?, r.u32()?);
            total = total.checked_add(u64::from(count))?;
            if count == 0 || total > max_pages {
                return None;
            }
            h.pages.reserve(count as usize);
            for k in 0..u64::from(count) {
                let vaddr = vaddr.checked_add(k.checked_mul(PAGE_SIZE)?)?;
                h.pages.push(PageEntry { vaddr, flags });
            }
        }
        let n = r.count(4)?;
        h.per_process.reserve_exact(n as usize);
        for _ in 0..n {
            h.per_process.push(r.u32()?);
        }
        for _ in 0..r.count(4)? {
            h.bound.push(r.u32()?);
        }
        (r.at == r.bytes.len()).then_some(h)
    }
}

/// Read and check the header of an open cache file: its length, checksum
/// and fields, and that the file holds exactly the pages it lists. Returns
/// the header and the file offset of the first page image.
pub fn read_header(file: &File, size: u64) -> Result<(Header, u64), String> {
    use std::os::unix::fs::FileExt;
    let truncated = |_| "corrupt header (truncated)".to_string();
    // One read covers the whole header of every library seen (1-4 KiB);
    // a longer one costs a second read.
    let mut bytes = vec![0u8; size.min(FIRST_READ) as usize];
    file.read_exact_at(&mut bytes, 0).map_err(truncated)?;
    let len = bytes
        .get(12..16)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or("corrupt header (truncated)")?;
    if !(24..=MAX_HEADER).contains(&len) || u64::from(len) > size {
        return Err("corrupt header (bad length)".into());
    }
    let have = bytes.len();
    bytes.resize(len as usize, 0);
    if let Some(rest) = bytes.get_mut(have..).filter(|r| !r.is_empty()) {
        file.read_exact_at(rest, have as u64).map_err(truncated)?;
    }
    let h = Header::decode(&bytes, size / PAGE_SIZE)?;
    let data = Header::data_offset(len as usize);
    let expected = (h.pages.len() as u64)
        .checked_mul(PAGE_SIZE)
        .and_then(|p| p.checked_add(data));
    if expected != Some(size) {
        return Err(format!(
            "truncated or padded: {size} bytes, header lists {} pages",
            h.pages.len()
        ));
    }
    Ok((h, data))
}

/// The whole file: header, padding, then `pages` (one image per entry).
/// The page table as runs of adjacent pages with the same flags, `(first
/// page, pages, flags)`: libLLVM-15's 2,086 pages are 104 runs, so
/// the header a hit reads and checksums stays small.
fn page_runs(pages: &[PageEntry]) -> Vec<(u64, u32, u32)> {
    let mut runs: Vec<(u64, u32, u32)> = Vec::new();
    for p in pages {
        match runs.last_mut() {
            Some((first, n, flags))
                if *flags == p.flags
                    && first.checked_add(u64::from(*n) * PAGE_SIZE) == Some(p.vaddr) =>
            {
                *n += 1
            }
            _ => runs.push((p.vaddr, 1, p.flags)),
        }
    }
    runs
}

pub fn encode_file(h: &Header, pages: &[u8]) -> Vec<u8> {
    let mut out = h.encode();
    let data = Header::data_offset(out.len()) as usize;
    out.resize(data, 0);
    out.extend_from_slice(pages);
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    /// A count of entries `size` bytes each that the rest can hold.
    fn count(&mut self, size: usize) -> Option<u32> {
        let n = self.u32()?;
        let fits = (n as usize).checked_mul(size)? <= self.bytes.len().saturating_sub(self.at);
        (n <= MAX_COUNT && fits).then_some(n)
    }
    fn id(&mut self) -> Option<Identity> {
        Some(Identity {
            dev: self.u64()?,
            ino: self.u64()?,
            size: self.u64()?,
            mtime_ns: self.u64()?,
            ctime_ns: self.u64()?,
        })
    }
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_id(out: &mut Vec<u8>, id: &Identity) {
    for v in [id.dev, id.ino, id.size, id.mtime_ns, id.ctime_ns] {
        put64(out, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        let id = Identity {
            dev: 1,
            ino: 2,
            size: 3,
            mtime_ns: 4,
            ctime_ns: 5,
        };
        Header {
            object: id,
            address: 0x2000_0000_0000,
            span: 0x5000,
            executable: Identity { ino: 9, ..id },
            build_id: vec![7; 20],
            scope: vec![
                ScopeKey::default(),
                ScopeKey {
                    kind: ScopeKind::Stable,
                    id,
                    address: 0x2000_0000_0000,
                },
            ],
            hosts: vec![(8, 9)],
            pages: vec![
                PageEntry {
                    vaddr: 0x2000,
                    flags: PAGE_RELRO,
                },
                PageEntry {
                    vaddr: 0x3000,
                    flags: 0,
                },
            ],
            per_process: vec![3, 1 << 31],
            bound: vec![0, 1],
        }
    }

    fn read_header_of(f: File) -> Result<(Header, u64), String> {
        let size = f.metadata().unwrap().len();
        read_header(&f, size)
    }

    fn write(dir: &std::path::Path, bytes: &[u8]) -> File {
        let p = dir.join("f");
        std::fs::write(&p, bytes).unwrap();
        File::open(&p).unwrap()
    }

    #[test]
    fn a_file_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let h = sample();
        let pages = vec![0xabu8; 2 * PAGE_SIZE as usize];
        let bytes = encode_file(&h, &pages);
        assert_eq!(bytes.len() as u64 % PAGE_SIZE, 0);
        let data = Header::data_offset(h.encode().len());
        assert_eq!(read_header_of(write(d.path(), &bytes)), Ok((h, data)));
    }

    #[test]
    fn a_truncated_file_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let bytes = encode_file(&sample(), &vec![0u8; 2 * PAGE_SIZE as usize]);
        for cut in [0, 10, 100, bytes.len() - 1] {
            let err = read_header_of(write(d.path(), &bytes[..cut])).unwrap_err();
            assert!(
                err.contains("truncated") || err.contains("corrupt"),
                "{cut}: {err}"
            );
        }
    }

    #[test]
    fn a_corrupted_header_or_page_table_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let bytes = encode_file(&sample(), &vec![0u8; 2 * PAGE_SIZE as usize]);
        let header_len = sample().encode().len();
        // Every byte of the header, flipped, is caught (magic, version,
        // length, fields, page table, checksum).
        for i in 0..header_len {
            let mut bad = bytes.clone();
            bad[i] ^= 0x41;
            assert!(read_header_of(write(d.path(), &bad)).is_err(), "byte {i}");
        }
    }

    #[test]
    fn a_page_table_that_disagrees_with_the_size_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut h = sample();
        h.pages.push(PageEntry {
            vaddr: 0x4000,
            flags: 0,
        });
        // A consistent header (checksum fine) listing a page the file lacks.
        let bytes = encode_file(&h, &vec![0u8; 2 * PAGE_SIZE as usize]);
        let err = read_header_of(write(d.path(), &bytes)).unwrap_err();
        assert!(err.contains("truncated or padded"), "{err}");
    }

    #[test]
    fn absurd_counts_are_refused_without_allocating() {
        let mut bytes = sample().encode();
        // scope count -> 0xffff_ffff, checksum recomputed: the count check
        // fails, not the checksum.
        let at = 16 + 40 + 16 + 40 + 4 + 20;
        bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let n = bytes.len() - 8;
        let sum = siphash24((0, 0), &bytes[..n]);
        bytes[n..].copy_from_slice(&sum.to_le_bytes());
        assert_eq!(
            Header::decode(&bytes, 2).unwrap_err(),
            "corrupt header (malformed fields)"
        );
    }

    #[test]
    fn adjacent_pages_are_stored_as_one_run_and_come_back_whole() {
        let mut h = sample();
        h.pages = (0..5)
            .map(|k| PageEntry {
                vaddr: 0x10_000 + k * PAGE_SIZE,
                flags: if k == 3 { PAGE_PER_PROCESS } else { 0 },
            })
            .collect();
        assert_eq!(page_runs(&h.pages).len(), 3);
        let bytes = h.encode();
        assert_eq!(Header::decode(&bytes, 5), Ok(h.clone()));
        // A page table longer than the file can hold is refused before
        // it is expanded.
        assert_eq!(
            Header::decode(&bytes, 4).unwrap_err(),
            "corrupt header (malformed fields)"
        );
    }
}
