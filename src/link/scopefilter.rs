//! One Bloom filter over the whole global scope of the host.
//!
//! Owns: building the combined filter of the global host objects' symbol
//! hashes, deciding when it pays (by the global probes all loads make),
//! and keeping it across loads while the global scope is the same. Must
//! never: answer for a scope whose tables it was not built from (a false
//! "absent" would make a lookup miss a definition).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::symbols::SymbolTable;

/// Building the combined filter reads every hash of the global scope
/// (about 80,000 instructions for libc and friends); without it a probe
/// tests each global object's own Bloom filter (four or five of them). It
/// pays from about this many probes, over all loads, since it is kept
/// while the host's global scope stays the same.
const FILTER_PAYS_FROM: usize = 300;

/// One Bloom filter over every symbol of the global scope. Most lookups of
/// a load are for the library's own symbols and miss the host entirely;
/// this answers them with two bit tests instead of one probe per object.
pub(super) struct ScopeFilter {
    /// Boxed array: every position is masked below its length, so no
    /// access needs a check (a host's global scope has thousands of
    /// hashes to add).
    bits: Box<[u64; ScopeFilter::WORDS]>,
}

impl ScopeFilter {
    // 64 Ki bits (8 KiB): about 2.6% false positives for the ~5,000
    // symbols of a typical host's global scope.
    const BITS_LOG2: u32 = 16;
    const WORDS: usize = (1usize << Self::BITS_LOG2) / 64;

    fn positions(hash: u32) -> (usize, usize) {
        let mask = (1u32 << Self::BITS_LOG2) - 1;
        let second = hash.wrapping_mul(0x9e37_79b1) >> (32 - Self::BITS_LOG2);
        ((hash & mask) as usize, (second & mask) as usize)
    }

    fn set(&mut self, p: usize) {
        self.bits[(p / 64) % Self::WORDS] |= 1 << (p % 64);
    }

    fn get(&self, p: usize) -> bool {
        self.bits[(p / 64) % Self::WORDS] & (1 << (p % 64)) != 0
    }

    /// `None` if some table has no GNU hash table to read hashes from.
    fn build<'a>(tables: impl Iterator<Item = &'a Arc<SymbolTable>>) -> Option<ScopeFilter> {
        let mut filter = ScopeFilter {
            bits: Box::new([0u64; Self::WORDS]),
        };
        for table in tables {
            for h in table.gnu_hashes()? {
                // Chain entries have the low bit cleared; requests are
                // normalised the same way in `may_contain`.
                let (a, b) = Self::positions(h);
                filter.set(a);
                filter.set(b);
            }
        }
        Some(filter)
    }

    pub(super) fn may_contain(&self, hash: u32) -> bool {
        let (a, b) = Self::positions(hash & !1);
        self.get(a) && self.get(b)
    }
}

/// The combined filter of one global scope, kept across loads: a later
/// snapshot whose global objects share these very tables (the snapshot
/// cache reuses a table only for the same object, loaded and held again)
/// has the same symbols, so the same filter.
struct KeptFilter {
    tables: Vec<Arc<SymbolTable>>,
    filter: Option<Arc<ScopeFilter>>,
}

static KEPT_FILTER: Mutex<Option<KeptFilter>> = Mutex::new(None);
/// Global probes made by all loads so far: the filter pays once their
/// total does, whether one large load makes them or many small ones.
static GLOBAL_PROBES: AtomicUsize = AtomicUsize::new(0);

/// The filter for the global scope made of `tables` (in order), if one
/// should be used: the kept one when it was built for these very tables,
/// else a new one once all loads together have made enough probes
/// (counting this load's `probes`). `Some(None)`: some table has no GNU
/// hash table, so no filter can be built for this scope.
pub(super) fn for_scope<'a>(
    tables: impl Iterator<Item = &'a Arc<SymbolTable>> + Clone,
    probes: usize,
) -> Option<Option<Arc<ScopeFilter>>> {
    let total = GLOBAL_PROBES
        .fetch_add(probes, Ordering::Relaxed)
        .saturating_add(probes);
    {
        let kept = KEPT_FILTER.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = kept.as_ref()
            && tables.clone().count() == k.tables.len()
            && tables
                .clone()
                .zip(&k.tables)
                .all(|(a, b)| Arc::ptr_eq(a, b))
        {
            return Some(k.filter.clone());
        }
    }
    if total < FILTER_PAYS_FROM {
        return None;
    }
    let filter = ScopeFilter::build(tables.clone()).map(Arc::new);
    *KEPT_FILTER.lock().unwrap_or_else(|e| e.into_inner()) = Some(KeptFilter {
        tables: tables.cloned().collect(),
        filter: filter.clone(),
    });
    Some(filter)
}
