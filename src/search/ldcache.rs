//! Reader for glibc's `/etc/ld.so.cache`.
//!
//! Owns: decoding the cache file ldconfig writes (format "glibc-ld.so.cache"
//! version 1.1, optionally behind an old "ld.so-1.7.0" header) into an
//! ordered soname -> path table, and the process-wide copy of the system
//! cache. Must never: trust a count, offset or length from the file without
//! bounds-checking it, panic on any input, or touch the filesystem except to
//! read the cache file itself.
//!
//! Layout verified against the Debian glibc 2.36 cache on x86_64 (all
//! integers little-endian, offsets from the start of the new-format header):
//!
//! ```text
//!  0  magic        "glibc-ld.so.cache" (17 bytes)
//! 17  version      "1.1"               (3 bytes)
//! 20  nlibs        u32
//! 24  len_strings  u32
//! 28  flags        u8   (low two bits: 0 unknown, 1 invalid, 2 LE, 3 BE)
//! 29  padding      [u8; 3]
//! 32  extension_offset u32 (from the start of the FILE; 0 = none)
//! 36  unused       [u32; 3]
//! 48  entries      nlibs x 24 bytes:
//!                    +0 flags i32, +4 key u32, +8 value u32,
//!                    +12 osversion u32, +16 hwcap u64
//!     strings      len_strings bytes of NUL-terminated names and paths
//! ```
//!
//! Which entries are kept, and why:
//! * Only entries flagged `FLAG_ELF_LIBC6 | FLAG_X8664_LIB64` (0x0303): glibc
//!   on x86_64 accepts nothing else, and the others (i386, x32) are the wrong
//!   ELF class or ABI for this loader anyway.
//! * Only entries with `hwcap == 0`. Non-zero hwcap entries name either a
//!   glibc-hwcaps subdirectory (x86-64-v2/v3/v4, chosen by ISA level) or a
//!   legacy hwcap/platform subdirectory. Ignoring them means the baseline
//!   library is used even when an optimised build exists: same ABI, so still
//!   correct, and ldconfig always lists the baseline entry when the baseline
//!   file exists (on Debian it always does). A soname that exists *only* in
//!   an hwcaps subdirectory is not found here; the default-directory step
//!   then reports it missing, which is the conservative outcome.
//! * `osversion` is ignored: glibc 2.36 no longer compares it.
//!
//! Lookup returns the first kept entry with that exact name in file order.
//! ldconfig sorts entries so that the preferred one comes first, and glibc's
//! binary search walks back to the first match, so the two agree. glibc
//! compares names with digit runs treated as numbers ("so.01" == "so.1");
//! exact byte comparison is used here because sonames are never written
//! with leading zeros in practice.

use crate::fixedhash::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where glibc's ldconfig writes the cache.
pub const SYSTEM_CACHE_PATH: &str = "/etc/ld.so.cache";

/// `FLAG_ELF_LIBC6 | FLAG_X8664_LIB64`: the only entry kind usable here.
pub const FLAG_X86_64_LIBC6: i32 = 0x0303;

const NEW_MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
const OLD_MAGIC: &[u8] = b"ld.so-1.7.0";

const NEW_HEADER_LEN: usize = 48;
const NEW_ENTRY_LEN: usize = 24;
// The old header is an 11-byte magic then a u32 count, padded to 16 by C
// alignment; each old entry is three 32-bit words.
const OLD_HEADER_LEN: usize = 16;
const OLD_ENTRY_LEN: usize = 12;
// The new header follows the old table aligned to 8, the alignment of the
// u64 hwcap field in the new entries.
const NEW_HEADER_ALIGN: usize = 8;

const ENDIAN_MASK: u8 = 3;
const ENDIAN_LITTLE: u8 = 2;

const EXTENSION_MAGIC: u32 = 0xeaa4_2174;
const EXTENSION_TAG_GENERATOR: u32 = 0;
const EXTENSION_HEADER_LEN: usize = 8;
const EXTENSION_SECTION_LEN: usize = 16;

/// Why a cache file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LdCacheError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not an ld.so.cache: expected \"glibc-ld.so.cache1.1\" or \"ld.so-1.7.0\" at offset 0")]
    BadMagic,
    #[error(
        "old-format ld.so.cache (ld.so-1.7.0) without a glibc-ld.so.cache1.1 section \
         at offset {offset:#x}; regenerate it with a current ldconfig"
    )]
    OldFormatOnly { offset: usize },
    #[error(
        "ld.so.cache truncated: {what} at offset {offset:#x} needs {needed} bytes, \
         file has {len}"
    )]
    Truncated {
        what: &'static str,
        offset: usize,
        needed: usize,
        len: usize,
    },
    #[error(
        "ld.so.cache has flags byte {flags:#04x} at offset {offset:#x}: \
         not little-endian, cannot be used on x86_64"
    )]
    WrongEndian { flags: u8, offset: usize },
    #[error(
        "ld.so.cache entry {index}: {what} string offset {offset:#x} is outside the file, \
         unterminated or empty"
    )]
    BadString {
        index: usize,
        what: &'static str,
        offset: u32,
    },
}

/// One usable cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    name: String,
    path: PathBuf,
}

/// The usable entries of an ld.so.cache, in file order.
#[derive(Debug, Clone, Default)]
pub struct LdCache {
    entries: Vec<Entry>,
    // Index of the first entry per name, so lookups need not scan.
    first: HashMap<String, usize>,
    total: usize,
    generator: Option<String>,
}

impl LdCache {
    /// Decodes a whole cache file image.
    pub fn parse(bytes: &[u8]) -> Result<Self, LdCacheError> {
        let hdr = locate_new_header(bytes)?;

        let nlibs = read_u32(bytes, hdr + 20, "entry count")?;
        let len_strings = read_u32(bytes, hdr + 24, "string table length")?;
        let flags_offset = hdr + 28;
        let flags = read_u8(bytes, flags_offset, "flags byte")?;
        // glibc accepts "unknown" (written by old ldconfig) as native order.
        if flags != 0 && flags & ENDIAN_MASK != ENDIAN_LITTLE {
            return Err(LdCacheError::WrongEndian {
                flags,
                offset: flags_offset,
            });
        }
        let extension_offset = read_u32(bytes, hdr + 32, "extension offset")?;

        let entries_start = hdr + NEW_HEADER_LEN;
        let entries_len = to_usize(nlibs)
            .checked_mul(NEW_ENTRY_LEN)
            .ok_or_else(|| overflow("entry table", entries_start, bytes))?;
        check_span(bytes, entries_start, entries_len, "entry table")?;
        let strings_start = entries_start + entries_len;
        check_span(bytes, strings_start, to_usize(len_strings), "string table")?;

        let count = to_usize(nlibs);
        let mut cache = LdCache {
            entries: Vec::with_capacity(count),
            first: HashMap::with_capacity_and_hasher(count, Default::default()),
            total: count,
            generator: None,
        };
        // Plain arithmetic from here on is safe: the whole entry table was
        // bounds-checked against the file length above.
        for index in 0..count {
            let at = entries_start + index * NEW_ENTRY_LEN;
            let flags = read_i32(bytes, at, "entry flags")?;
            let key = read_u32(bytes, at + 4, "entry key")?;
            let value = read_u32(bytes, at + 8, "entry value")?;
            let hwcap = read_u64(bytes, at + 16, "entry hwcap")?;
            // Validated for every entry, kept or not, so that a damaged
            // table is reported rather than half-used.
            let name = read_str(bytes, hdr, key, index, "name")?;
            let path = read_str(bytes, hdr, value, index, "path")?;
            if flags != FLAG_X86_64_LIBC6 || hwcap != 0 {
                continue;
            }
            // A name that is not UTF-8 can never equal a `&str` query.
            let Ok(name) = std::str::from_utf8(name) else {
                continue;
            };
            let path = PathBuf::from(OsStr::from_bytes(path));
            cache
                .first
                .entry(name.to_owned())
                .or_insert(cache.entries.len());
            cache.entries.push(Entry {
                name: name.to_owned(),
                path,
            });
        }
        // The extension directory only carries diagnostics and hwcaps data
        // (unused here); glibc treats a bad one as absent, and so do we.
        cache.generator = read_generator(bytes, extension_offset);
        Ok(cache)
    }

    /// Reads and decodes `/etc/ld.so.cache`.
    pub fn load_system() -> Result<Self, LdCacheError> {
        Self::load(Path::new(SYSTEM_CACHE_PATH))
    }

    /// Reads and decodes the cache file at `path`.
    pub fn load(path: &Path) -> Result<Self, LdCacheError> {
        let bytes = std::fs::read(path).map_err(|source| LdCacheError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&bytes)
    }

    /// The path of the preferred library with this exact soname.
    pub fn lookup(&self, soname: &str) -> Option<&Path> {
        let index = *self.first.get(soname)?;
        self.entries.get(index).map(|e| e.path.as_path())
    }

    /// Number of usable (x86-64 libc6, non-hwcap) entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of entries in the file, including ones of other kinds.
    pub fn total_entries(&self) -> usize {
        self.total
    }

    /// The "generator" extension text (the ldconfig version that wrote the
    /// file), when present.
    pub fn generator(&self) -> Option<&str> {
        self.generator.as_deref()
    }

    /// Usable entries in file order, duplicates included.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.entries
            .iter()
            .map(|e| (e.name.as_str(), e.path.as_path()))
    }
}

/// The system cache, read once per process. `None` when it is missing or
/// unusable: the loader then just skips the cache step, as glibc does.
pub fn system_cache() -> Option<&'static LdCache> {
    static CACHE: OnceLock<Option<LdCache>> = OnceLock::new();
    CACHE.get_or_init(|| LdCache::load_system().ok()).as_ref()
}

/// Finds the offset of the "glibc-ld.so.cache1.1" header.
fn locate_new_header(bytes: &[u8]) -> Result<usize, LdCacheError> {
    if bytes.starts_with(NEW_MAGIC) {
        return Ok(0);
    }
    if !bytes.starts_with(OLD_MAGIC) {
        return Err(LdCacheError::BadMagic);
    }
    // Pre-2.32 ldconfig wrote the old table first and the new one after it,
    // so skip the old table rather than decode it.
    let old_count = read_u32(bytes, OLD_MAGIC.len() + 1, "old-format entry count")?;
    let old_end = to_usize(old_count)
        .checked_mul(OLD_ENTRY_LEN)
        .and_then(|n| n.checked_add(OLD_HEADER_LEN))
        .ok_or_else(|| overflow("old-format entry table", OLD_HEADER_LEN, bytes))?;
    let hdr = old_end
        .checked_next_multiple_of(NEW_HEADER_ALIGN)
        .ok_or_else(|| overflow("new-format header", old_end, bytes))?;
    check_span(bytes, hdr, NEW_HEADER_LEN, "new-format header")
        .map_err(|_| LdCacheError::OldFormatOnly { offset: hdr })?;
    match bytes.get(hdr..) {
        Some(rest) if rest.starts_with(NEW_MAGIC) => Ok(hdr),
        _ => Err(LdCacheError::OldFormatOnly { offset: hdr }),
    }
}

/// The text of the generator extension section, if the directory is sound.
fn read_generator(bytes: &[u8], extension_offset: u32) -> Option<String> {
    let dir = to_usize(extension_offset);
    if dir == 0 || !dir.is_multiple_of(4) {
        return None;
    }
    if read_u32(bytes, dir, "").ok()? != EXTENSION_MAGIC {
        return None;
    }
    let count = to_usize(read_u32(bytes, dir.checked_add(4)?, "").ok()?);
    for i in 0..count {
        let at = i
            .checked_mul(EXTENSION_SECTION_LEN)?
            .checked_add(dir)?
            .checked_add(EXTENSION_HEADER_LEN)?;
        if read_u32(bytes, at, "").ok()? != EXTENSION_TAG_GENERATOR {
            continue;
        }
        let offset = to_usize(read_u32(bytes, at.checked_add(8)?, "").ok()?);
        let size = to_usize(read_u32(bytes, at.checked_add(12)?, "").ok()?);
        let data = bytes.get(offset..offset.checked_add(size)?)?;
        return std::str::from_utf8(data).ok().map(str::to_owned);
    }
    None
}

/// The NUL-terminated string at `offset` from the new header.
fn read_str<'a>(
    bytes: &'a [u8],
    hdr: usize,
    offset: u32,
    index: usize,
    what: &'static str,
) -> Result<&'a [u8], LdCacheError> {
    let bad = || LdCacheError::BadString {
        index,
        what,
        offset,
    };
    let start = hdr.checked_add(to_usize(offset)).ok_or_else(bad)?;
    let tail = bytes.get(start..).ok_or_else(bad)?;
    let len = tail.iter().position(|&b| b == 0).ok_or_else(bad)?;
    match tail.get(..len) {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(bad()),
    }
}

fn read_u8(bytes: &[u8], offset: usize, what: &'static str) -> Result<u8, LdCacheError> {
    read_array::<1>(bytes, offset, what).map(|[b]| b)
}

fn read_u32(bytes: &[u8], offset: usize, what: &'static str) -> Result<u32, LdCacheError> {
    read_array(bytes, offset, what).map(u32::from_le_bytes)
}

fn read_i32(bytes: &[u8], offset: usize, what: &'static str) -> Result<i32, LdCacheError> {
    read_array(bytes, offset, what).map(i32::from_le_bytes)
}

fn read_u64(bytes: &[u8], offset: usize, what: &'static str) -> Result<u64, LdCacheError> {
    read_array(bytes, offset, what).map(u64::from_le_bytes)
}

fn read_array<const N: usize>(
    bytes: &[u8],
    offset: usize,
    what: &'static str,
) -> Result<[u8; N], LdCacheError> {
    let slice = offset
        .checked_add(N)
        .and_then(|end| bytes.get(offset..end))
        .ok_or_else(|| truncated(what, offset, N, bytes))?;
    <[u8; N]>::try_from(slice).map_err(|_| truncated(what, offset, N, bytes))
}

fn check_span(
    bytes: &[u8],
    offset: usize,
    len: usize,
    what: &'static str,
) -> Result<(), LdCacheError> {
    match offset.checked_add(len) {
        Some(end) if end <= bytes.len() => Ok(()),
        _ => Err(truncated(what, offset, len, bytes)),
    }
}

fn truncated(what: &'static str, offset: usize, needed: usize, bytes: &[u8]) -> LdCacheError {
    LdCacheError::Truncated {
        what,
        offset,
        needed,
        len: bytes.len(),
    }
}

fn overflow(what: &'static str, offset: usize, bytes: &[u8]) -> LdCacheError {
    truncated(what, offset, usize::MAX, bytes)
}

// usize is 64 bits on every target this loader supports, so this never
// loses information; saturating keeps it total elsewhere.
fn to_usize(v: u32) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn real_cache_bytes() -> Option<Vec<u8>> {
        std::fs::read(SYSTEM_CACHE_PATH).ok()
    }

    /// `ldconfig -p` lines for x86-64 libc6 entries without hwcap, in order.
    fn ldconfig_entries() -> Option<Vec<(String, PathBuf)>> {
        let out = ["ldconfig", "/sbin/ldconfig", "/usr/sbin/ldconfig"]
            .iter()
            .find_map(|prog| Command::new(prog).arg("-p").output().ok())?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8(out.stdout).ok()?;
        let mut result = Vec::new();
        for line in text.lines().skip(1) {
            let Some(line) = line.strip_prefix('\t') else {
                continue;
            };
            let Some((lhs, path)) = line.split_once(") => ") else {
                continue;
            };
            let Some((name, kind)) = lhs.split_once(" (") else {
                continue;
            };
            let mut parts = kind.split(", ");
            if parts.next() != Some("libc6,x86-64") {
                continue;
            }
            if parts.any(|p| p.starts_with("hwcap")) {
                continue;
            }
            result.push((name.to_owned(), PathBuf::from(path)));
        }
        Some(result)
    }

    #[test]
    fn real_cache_resolves_core_libraries() -> TestResult {
        let Some(bytes) = real_cache_bytes() else {
            eprintln!("no {SYSTEM_CACHE_PATH}; skipping");
            return Ok(());
        };
        let cache = LdCache::parse(&bytes)?;
        assert!(!cache.is_empty());
        for name in ["libc.so.6", "libz.so.1"] {
            let path = cache.lookup(name).ok_or(format!("{name} not in cache"))?;
            assert!(path.is_absolute(), "{name} -> {}", path.display());
            assert!(path.exists(), "{name} -> {} missing", path.display());
        }
        assert_eq!(cache.lookup("libdoes-not-exist.so.42"), None);
        Ok(())
    }

    #[test]
    fn real_cache_matches_ldconfig_listing() -> TestResult {
        let Some(bytes) = real_cache_bytes() else {
            eprintln!("no {SYSTEM_CACHE_PATH}; skipping");
            return Ok(());
        };
        let Some(expected) = ldconfig_entries() else {
            eprintln!("ldconfig -p unavailable; skipping");
            return Ok(());
        };
        let cache = LdCache::parse(&bytes)?;
        let ours: Vec<(String, PathBuf)> = cache
            .iter()
            .map(|(n, p)| (n.to_owned(), p.to_path_buf()))
            .collect();
        assert_eq!(ours.len(), expected.len());
        for (i, (a, b)) in ours.iter().zip(expected.iter()).enumerate() {
            assert_eq!(a, b, "entry {i} differs");
        }
        // The first listing of each name is what lookup must return.
        let mut seen = crate::fixedhash::HashSet::default();
        for (name, path) in &expected {
            if seen.insert(name.as_str()) {
                assert_eq!(cache.lookup(name), Some(path.as_path()), "{name}");
            }
        }
        Ok(())
    }

    #[test]
    fn system_cache_is_shared() {
        let (a, b) = (system_cache(), system_cache());
        assert_eq!(a.is_some(), b.is_some(), "system_cache() changed");
        if let (Some(a), Some(b)) = (a, b) {
            assert!(std::ptr::eq(a, b));
        } else {
            assert!(!Path::new(SYSTEM_CACHE_PATH).exists());
        }
    }

    #[test]
    fn truncated_copies_never_panic() {
        let Some(bytes) = real_cache_bytes() else {
            return;
        };
        let mut lengths: Vec<usize> = (0..200).collect();
        lengths.extend((200..bytes.len()).step_by(97));
        lengths.extend(bytes.len().saturating_sub(64)..bytes.len());
        for len in lengths {
            let Some(prefix) = bytes.get(..len) else {
                continue;
            };
            let result = LdCache::parse(prefix);
            // Anything shorter than header + entry table cannot be valid.
            if len < NEW_HEADER_LEN {
                assert!(result.is_err(), "len {len} accepted");
            }
        }
    }

    #[test]
    fn bit_flipped_copies_never_panic() {
        let Some(bytes) = real_cache_bytes() else {
            return;
        };
        // Every header bit, then a spread of bits across entries and strings.
        let mut bits: Vec<usize> = (0..NEW_HEADER_LEN * 8).collect();
        let total_bits = bytes.len() * 8;
        let mut x: usize = 0x9e37_79b9;
        for _ in 0..2000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            bits.push((x >> 17) % total_bits);
        }
        let mut copy = bytes.clone();
        for bit in bits {
            let (byte, mask) = (bit / 8, 1u8 << (bit % 8));
            let flip = |c: &mut Vec<u8>| {
                if let Some(b) = c.get_mut(byte) {
                    *b ^= mask;
                }
            };
            flip(&mut copy);
            let _ = LdCache::parse(&copy);
            flip(&mut copy);
        }
        // Extreme values in the count and offset fields.
        for field in [20usize, 24, 32] {
            for v in [u32::MAX, u32::MAX / 24, 0x8000_0000, 1] {
                let mut c = bytes.clone();
                if let Some(dst) = c.get_mut(field..field + 4) {
                    dst.copy_from_slice(&v.to_le_bytes());
                }
                let _ = LdCache::parse(&c);
            }
        }
    }

    /// Builds a new-format cache from (flags, name, path, hwcap) rows.
    fn build_cache(rows: &[(i32, &str, &str, u64)], endian_flags: u8) -> Vec<u8> {
        let mut strings = Vec::new();
        let strings_base = NEW_HEADER_LEN + rows.len() * NEW_ENTRY_LEN;
        let mut offsets = Vec::new();
        for (_, name, path, _) in rows {
            let k = strings_base + strings.len();
            strings.extend_from_slice(name.as_bytes());
            strings.push(0);
            let v = strings_base + strings.len();
            strings.extend_from_slice(path.as_bytes());
            strings.push(0);
            offsets.push((k as u32, v as u32));
        }
        let mut out = Vec::new();
        out.extend_from_slice(NEW_MAGIC);
        out.extend_from_slice(&(rows.len() as u32).to_le_bytes());
        out.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        out.push(endian_flags);
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&[0; 12]);
        for ((flags, _, _, hwcap), (k, v)) in rows.iter().zip(offsets) {
            out.extend_from_slice(&flags.to_le_bytes());
            out.extend_from_slice(&k.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&hwcap.to_le_bytes());
        }
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn hand_built_cache() -> TestResult {
        let rows = [
            (0x0303, "libfoo.so.2", "/opt/v3/libfoo.so.2", 1u64 << 62),
            (0x0303, "libfoo.so.2", "/opt/a/libfoo.so.2", 0),
            (0x0303, "libfoo.so.2", "/opt/b/libfoo.so.2", 0),
            (0x0001, "libbar.so.1", "/usr/lib32/libbar.so.1", 0),
            (0x0803, "libbar.so.1", "/usr/libx32/libbar.so.1", 0),
            (0x0303, "libbar.so.1", "/usr/lib64/libbar.so.1", 0),
        ];
        let bytes = build_cache(&rows, ENDIAN_LITTLE);
        let cache = LdCache::parse(&bytes)?;
        assert_eq!(cache.total_entries(), 6);
        assert_eq!(cache.len(), 3);
        assert_eq!(
            cache.lookup("libfoo.so.2"),
            Some(Path::new("/opt/a/libfoo.so.2"))
        );
        assert_eq!(
            cache.lookup("libbar.so.1"),
            Some(Path::new("/usr/lib64/libbar.so.1"))
        );
        assert_eq!(cache.lookup("libfoo.so"), None);
        let names: Vec<&str> = cache.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["libfoo.so.2", "libfoo.so.2", "libbar.so.1"]);

        // Unknown endianness is accepted; big-endian and "invalid" are not.
        assert!(LdCache::parse(&build_cache(&rows, 0)).is_ok());
        for bad in [1u8, 3] {
            assert!(matches!(
                LdCache::parse(&build_cache(&rows, bad)),
                Err(LdCacheError::WrongEndian { .. })
            ));
        }
        Ok(())
    }

    #[test]
    fn old_format_prefix_is_skipped() -> TestResult {
        let new = build_cache(&[(0x0303, "libq.so.1", "/q/libq.so.1", 0)], 2);
        // Two old entries: 16 + 24 = 40, already 8-aligned; use three to
        // force padding (16 + 36 = 52 -> 56).
        let mut bytes = Vec::new();
        bytes.extend_from_slice(OLD_MAGIC);
        bytes.push(0);
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(&[0xAA; 3 * OLD_ENTRY_LEN]);
        bytes.extend_from_slice(&[0; 4]);
        assert_eq!(bytes.len(), 56);
        bytes.extend_from_slice(&new);
        let cache = LdCache::parse(&bytes)?;
        assert_eq!(cache.lookup("libq.so.1"), Some(Path::new("/q/libq.so.1")));

        let mut old_only = Vec::new();
        old_only.extend_from_slice(OLD_MAGIC);
        old_only.push(0);
        old_only.extend_from_slice(&0u32.to_le_bytes());
        old_only.extend_from_slice(&[0; 64]);
        assert!(matches!(
            LdCache::parse(&old_only),
            Err(LdCacheError::OldFormatOnly { offset: 16 })
        ));
        Ok(())
    }

    #[test]
    fn malformed_inputs_are_errors() {
        assert!(matches!(LdCache::parse(b""), Err(LdCacheError::BadMagic)));
        assert!(matches!(
            LdCache::parse(b"ELF\x7f not a cache"),
            Err(LdCacheError::BadMagic)
        ));
        let good = build_cache(&[(0x0303, "liba.so", "/a/liba.so", 0)], 2);
        // Key offset past the end of the file.
        let mut bad = good.clone();
        if let Some(dst) = bad.get_mut(NEW_HEADER_LEN + 4..NEW_HEADER_LEN + 8) {
            dst.copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        }
        assert!(matches!(
            LdCache::parse(&bad),
            Err(LdCacheError::BadString { what: "name", .. })
        ));
        // Unterminated final string.
        let mut bad = good.clone();
        bad.pop();
        assert!(LdCache::parse(&bad).is_err());
        // Entry count larger than the file.
        let mut bad = good;
        if let Some(dst) = bad.get_mut(20..24) {
            dst.copy_from_slice(&1000u32.to_le_bytes());
        }
        assert!(matches!(
            LdCache::parse(&bad),
            Err(LdCacheError::Truncated {
                what: "entry table",
                ..
            })
        ));
    }
}
