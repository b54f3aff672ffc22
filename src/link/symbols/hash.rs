//! The GNU and System V hash tables of one object, and their hash
//! functions.
//!
//! Owns: reading and validating both tables (bounded by the file, chains
//! checked for an end) and the hash functions. Must never: follow a chain
//! without a bound, or read outside the bytes `tables` hands it.

use super::tables::{malformed, table_bytes, table_bytes_to_segment_end, u32_at};
use crate::error::{ErrorKind, KindResult};
use crate::map::{Mapping, RoBytes};

/// The GNU hash function (Bernstein's, as binutils uses it): `h * 33 + c`
/// per byte. Four bytes per step, `h * 33^4 + a * 33^3 + b * 33^2 +
/// c * 33 + d` (the same value, wrapping), so the multiplications do not
/// wait on each other: every binding of a load hashes its name.
pub fn gnu_hash(name: &[u8]) -> u32 {
    const P1: u32 = 33;
    const P2: u32 = P1 * P1;
    const P3: u32 = P2 * P1;
    const P4: u32 = P3 * P1;
    let mut chunks = name.chunks_exact(4);
    let mut h = 5381u32;
    for chunk in &mut chunks {
        if let [a, b, c, d] = *chunk {
            h = h
                .wrapping_mul(P4)
                .wrapping_add(u32::from(a).wrapping_mul(P3))
                .wrapping_add(u32::from(b).wrapping_mul(P2))
                .wrapping_add(u32::from(c).wrapping_mul(P1))
                .wrapping_add(u32::from(d));
        }
    }
    chunks
        .remainder()
        .iter()
        .fold(h, |h, &c| h.wrapping_mul(P1).wrapping_add(u32::from(c)))
}

/// The System V ELF hash function.
pub fn sysv_hash(name: &[u8]) -> u32 {
    let mut h: u32 = 0;
    for &c in name {
        h = (h << 4).wrapping_add(u32::from(c));
        let g = h & 0xf000_0000;
        if g != 0 {
            h ^= g >> 24;
        }
        h &= !g;
    }
    h
}

#[derive(Debug, Clone, Copy)]
pub(super) struct GnuHash {
    pub(super) nbuckets: u32,
    pub(super) symoffset: u32,
    pub(super) bloom_mask: u32,
    pub(super) bloom_shift: u32,
    pub(super) bloom: RoBytes,
    pub(super) buckets: RoBytes,
    pub(super) chains: RoBytes,
    /// Object address of the chain array, for the overlap check.
    pub(super) chains_at: u64,
    /// The bucket start whose chain was walked to count the symbols.
    pub(super) last_chain: u32,
    /// One past the last hashed symbol (`symoffset` when no bucket is
    /// used: the object exports nothing).
    pub(super) hashed_end: u32,
}

impl GnuHash {
    /// No bucket is used: every symbol lies below `symoffset`, and the
    /// table says nothing about how many there are.
    pub(super) fn hashes_nothing(&self) -> bool {
        self.last_chain == 0
    }

    /// The GNU hash of the name of symbol `index`, read from the table
    /// instead of computed: its chain word is the hash with bit 0 replaced
    /// by the end-of-chain mark. Bit 0 is recovered from the bucket: of the
    /// two candidates (bit 0 clear or set, which fall in different buckets
    /// when there are two or more), the right one is the bucket whose chain
    /// reaches `index` without an end mark before it. `None` (the caller
    /// hashes the name) when the table cannot tell: one bucket, an
    /// unhashed index, or a table that fits neither or both candidates.
    pub(super) fn hash_of(&self, index: u32) -> Option<u32> {
        if self.nbuckets < 2 || index < self.symoffset || index >= self.hashed_end {
            return None;
        }
        let word = u32_at(&self.chains, (index - self.symoffset) as usize)?;
        let reaches = |hash: u32| -> Option<bool> {
            let start = u32_at(&self.buckets, (hash % self.nbuckets) as usize)?;
            if start < self.symoffset || start > index {
                return Some(false);
            }
            for i in start..index {
                if u32_at(&self.chains, (i - self.symoffset) as usize)? & 1 != 0 {
                    return Some(false);
                }
            }
            Some(true)
        };
        match (reaches(word & !1)?, reaches(word | 1)?) {
            (true, false) => Some(word & !1),
            (false, true) => Some(word | 1),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct SysvHash {
    pub(super) nbucket: u32,
    pub(super) buckets: RoBytes,
    pub(super) chains: RoBytes,
    /// Object address range of the whole table.
    pub(super) range: (u64, u64),
}

pub(super) fn parse_sysv(
    mapping: &Mapping,
    addr: u64,
    validate_chains: bool,
) -> KindResult<SysvHash> {
    let header = table_bytes(mapping, "DT_HASH", addr, 8)?;
    let nbucket = u32_at(&header, 0).ok_or_else(|| malformed("DT_HASH", "header truncated"))?;
    let nchain = u32_at(&header, 1).ok_or_else(|| malformed("DT_HASH", "header truncated"))?;
    if nbucket == 0 {
        return Err(ErrorKind::EmptyHashTable { table: "DT_HASH" });
    }
    let limit = crate::elf::limits::MAX_SYMBOLS;
    if nchain > limit || nbucket > limit {
        return Err(ErrorKind::LimitExceeded {
            what: "DT_HASH",
            count: u64::from(nchain.max(nbucket)),
            limit: u64::from(limit),
        });
    }
    let buckets_at = addr.saturating_add(8);
    let buckets_len = u64::from(nbucket) * 4;
    let chains_len = u64::from(nchain) * 4;
    let buckets = table_bytes(mapping, "DT_HASH buckets", buckets_at, buckets_len)?;
    let chains_at = buckets_at.saturating_add(buckets_len);
    let chains = table_bytes(mapping, "DT_HASH chains", chains_at, chains_len)?;
    let table = SysvHash {
        nbucket,
        buckets,
        chains,
        range: (addr, chains_at.saturating_add(chains_len)),
    };
    if validate_chains {
        validate_sysv_chains(&table, nchain)?;
    }
    Ok(table)
}

/// Walk every SysV chain once. Each symbol belongs to exactly one chain, so
/// a symbol reached twice is a cycle (or chains merging), and an index past
/// `nchain` is out of the table: both refused here, in O(nbucket + nchain),
/// so a lookup can never loop.
fn validate_sysv_chains(table: &SysvHash, nchain: u32) -> KindResult<()> {
    let mut seen = vec![0u64; (nchain as usize).div_ceil(64)];
    for bucket in 0..table.nbucket as usize {
        let start = u32_at(&table.buckets, bucket)
            .ok_or_else(|| malformed("DT_HASH", format!("bucket {bucket} truncated")))?;
        let mut index = start;
        while index != 0 {
            let slot = seen.get_mut(index as usize / 64).ok_or_else(|| {
                malformed(
                    "DT_HASH",
                    format!(
                        "chain of bucket {bucket} reaches symbol {index}, past nchain {nchain}"
                    ),
                )
            })?;
            let bit = 1u64 << (index % 64);
            if *slot & bit != 0 {
                return Err(ErrorKind::EndlessHashChain {
                    table: "DT_HASH",
                    start,
                    detail: format!("symbol {index} is reached twice: the chain loops"),
                });
            }
            *slot |= bit;
            index = u32_at(&table.chains, index as usize).ok_or_else(|| {
                malformed(
                    "DT_HASH",
                    format!("chain entry {index} is past nchain {nchain}"),
                )
            })?;
        }
    }
    Ok(())
}

/// The highest chain start in the bucket array, after checking that no
/// bucket starts below `symoffset`. One pass over the bucket words (the
/// host's libc has thousands, read on every first load); the smallest
/// non-empty start is checked once after it.
fn highest_bucket(buckets: &RoBytes, nbuckets: u32, symoffset: u32) -> KindResult<u32> {
    let mut max_start = 0u32;
    let mut min_start = u32::MAX;
    let words = buckets.as_slice().chunks_exact(4);
    if words.len() < nbuckets as usize {
        return Err(malformed("DT_GNU_HASH", "bucket truncated"));
    }
    for word in words {
        let b = u32::from_le_bytes(word.try_into().unwrap_or_default());
        max_start = max_start.max(b);
        min_start = min_start.min(b.wrapping_sub(1));
    }
    if min_start.wrapping_add(1) < symoffset && min_start != u32::MAX {
        let i = (0..nbuckets as usize)
            .find(|&i| u32_at(buckets, i).is_some_and(|b| b != 0 && b < symoffset))
            .unwrap_or(0);
        let b = u32_at(buckets, i).unwrap_or(0);
        return Err(malformed(
            "DT_GNU_HASH",
            format!("bucket {i} starts at symbol {b}, below symoffset {symoffset}"),
        ));
    }
    Ok(max_start)
}

/// The GNU hash table's header, Bloom filter, buckets and chain array
/// (bounded by its segment), without counting the symbols: what a lookup
/// needs. `last_chain` and `hashed_end` are left 0 until [`parse_gnu`]
/// counts.
pub(super) fn gnu_header(mapping: &Mapping, addr: u64) -> KindResult<GnuHash> {
    let header = table_bytes(mapping, "DT_GNU_HASH", addr, 16)?;
    let field = |i| u32_at(&header, i).ok_or_else(|| malformed("DT_GNU_HASH", "header truncated"));
    let (nbuckets, symoffset, bloom_size, bloom_shift) =
        (field(0)?, field(1)?, field(2)?, field(3)?);
    if nbuckets == 0 {
        return Err(ErrorKind::EmptyHashTable {
            table: "DT_GNU_HASH",
        });
    }
    if bloom_size == 0 || !bloom_size.is_power_of_two() {
        return Err(malformed(
            "DT_GNU_HASH",
            format!("Bloom filter size {bloom_size} is not a power of two"),
        ));
    }
    // The second Bloom bit is `hash >> shift` of a 32-bit hash.
    if bloom_shift >= 32 {
        return Err(malformed(
            "DT_GNU_HASH",
            format!("Bloom filter shift {bloom_shift} is not below 32"),
        ));
    }
    let bloom_at = addr.saturating_add(16);
    let bloom_len = u64::from(bloom_size) * 8;
    let buckets_at = bloom_at.saturating_add(bloom_len);
    let buckets_len = u64::from(nbuckets) * 4;
    let chains_at = buckets_at.saturating_add(buckets_len);
    let bloom = table_bytes(mapping, "DT_GNU_HASH bloom filter", bloom_at, bloom_len)?;
    let buckets = table_bytes(mapping, "DT_GNU_HASH buckets", buckets_at, buckets_len)?;
    let chains = table_bytes_to_segment_end(mapping, "DT_GNU_HASH chains", chains_at)
        .unwrap_or(RoBytes::EMPTY);
    Ok(GnuHash {
        nbuckets,
        symoffset,
        bloom_mask: bloom_size - 1,
        bloom_shift,
        bloom,
        buckets,
        chains,
        chains_at,
        last_chain: 0,
        hashed_end: 0,
    })
}

/// Parse the GNU hash table and count the symbols it covers (the dynamic
/// section does not say how many symbols there are).
pub(super) fn parse_gnu(mapping: &Mapping, addr: u64) -> KindResult<(GnuHash, u32)> {
    let header = gnu_header(mapping, addr)?;
    let GnuHash {
        nbuckets,
        symoffset,
        ref buckets,
        ref chains,
        ..
    } = header;
    // The highest bucket start, then that chain's end, bounds the table.
    let max_start = highest_bucket(buckets, nbuckets, symoffset)?;
    let endless = |detail: &str| ErrorKind::EndlessHashChain {
        table: "DT_GNU_HASH",
        start: max_start,
        detail: detail.to_string(),
    };
    let count = if max_start == 0 {
        symoffset
    } else {
        // Bounded by the file-backed end of the segment (each step reads
        // the next word or fails) and by a symbol count no library has: a
        // sparse file backs gigabytes of zeros, a chain without end.
        let mut index = max_start;
        loop {
            if index >= crate::elf::limits::MAX_SYMBOLS {
                return Err(endless("more symbols than any real library has"));
            }
            let chain = u32_at(chains, (index - symoffset) as usize)
                .ok_or_else(|| endless("no end marker before the end of its segment"))?;
            if chain & 1 != 0 {
                break index
                    .checked_add(1)
                    .ok_or_else(|| endless("more than 2^32 symbols"))?;
            }
            index = index
                .checked_add(1)
                .ok_or_else(|| endless("more than 2^32 symbols"))?;
        }
    };
    Ok((
        GnuHash {
            last_chain: max_start,
            hashed_end: count,
            ..header
        },
        count,
    ))
}

#[cfg(test)]
mod tests {
    use super::{gnu_hash, sysv_hash};

    #[test]
    fn hash_functions_match_known_values() {
        // Values from the gABI and binutils documentation examples.
        assert_eq!(gnu_hash(b""), 5381);
        assert_eq!(gnu_hash(b"printf"), 0x156b_2bb8);
        // Every length against the byte-at-a-time definition.
        let name = b"sqlite3_value_text16le_and_some_more";
        for n in 0..=name.len() {
            let slow = name[..n].iter().fold(5381u32, |h, &c| {
                h.wrapping_mul(33).wrapping_add(u32::from(c))
            });
            assert_eq!(gnu_hash(&name[..n]), slow, "length {n}");
        }
        assert_eq!(sysv_hash(b""), 0);
        assert_eq!(sysv_hash(b"printf"), 0x0779_05a6);
        assert_eq!(sysv_hash(b"GLIBC_2.2.5"), 0x0969_1a75);
    }

    /// The hash read back from a real library's GNU table is the hash of
    /// the name, for every symbol the table holds.
    #[test]
    fn stored_hash_is_the_name_hash() {
        for lib in ["libsqlite3.so.0", "libz.so.1", "libstdc++.so.6"] {
            let path = std::path::Path::new("/usr/lib/x86_64-linux-gnu").join(lib);
            let elf = crate::elf::ElfFile::open(&path).expect("open");
            let mapping =
                crate::map::Mapping::copy_for_inspection(&elf.file, &elf.plan, &elf.dynamic)
                    .expect("map");
            let table = super::super::SymbolTable::new(&mapping, &elf.dynamic).expect("symbols");
            let gnu = table.gnu.as_ref().expect("a GNU hash table");
            let mut read = 0;
            for index in 1..table.count() {
                let sym = table.symbol(index).expect("symbol");
                let (name, hash) = table.name_and_gnu_hash_at(index, &sym).expect("name");
                assert_eq!(hash, gnu_hash(name), "{lib} symbol {index}");
                read += usize::from(gnu.hash_of(index).is_some());
            }
            // Every hashed symbol's hash is read from the table.
            let hashed = table.count() - gnu.symoffset;
            assert_eq!(read, hashed as usize, "{lib}");
        }
    }
}
