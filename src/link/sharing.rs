//! The relocation loop's side of shared relocations: which relocations
//! have values that differ between processes, and a replay of only those.
//!
//! Owns: the rule that sorts one relocation into "stable" (its value
//! depends only on where mmld placed objects at stable addresses) or "per
//! process" (host objects, mmld's own runtime, TLS, IFUNC results,
//! `STB_GNU_UNIQUE` bindings, weak references left unbound), and the
//! encoding of a relocation's table and index in one word. Must never:
//! decide whether a cache is valid (that is `relshare`), or skip a
//! relocation unless the caller asked for a replay.

/// A relocation named by table and index: bit 31 set for `DT_JMPREL`.
pub fn encode(table: &str, index: usize) -> Option<u32> {
    let index = u32::try_from(index).ok().filter(|i| i & JMPREL_BIT == 0)?;
    Some(if table == "DT_JMPREL" {
        index | JMPREL_BIT
    } else {
        index
    })
}

/// The table and index [`encode`] packed.
pub fn decode(code: u32) -> (&'static str, usize) {
    if code & JMPREL_BIT != 0 {
        ("DT_JMPREL", (code & !JMPREL_BIT) as usize)
    } else {
        ("DT_RELA", code as usize)
    }
}

const JMPREL_BIT: u32 = 1 << 31;

/// What the relocation loop records, or replays, for shared relocations.
#[derive(Debug, Default)]
pub struct ShareHook {
    /// For each scope position: the provider is an mmld object placed at
    /// its stable address, so addresses in it are the same in every
    /// process that validated the cache.
    pub stable: Vec<bool>,
    /// Recorded while relocating normally: every relocation whose value
    /// may differ between processes, in the order applied.
    pub per_process: Vec<u32>,
    /// Recorded while relocating normally: where stable relocations bound
    /// through the scope (not `RELATIVE`, not the object's own local
    /// definitions) write, so each cached page can say it depends on the
    /// scope and not only on the object's own address.
    pub scope_bound: Vec<u64>,
    /// On a cache hit: apply only these relocations (`DT_RELR` and every
    /// other relocation are already in the cache's pages).
    pub replay: Option<Vec<u32>>,
}

impl ShareHook {
    /// Is scope position `provider` stable? `usize::MAX` is the object
    /// itself (its own local or protected definition, or no symbol).
    pub fn stable_provider(&self, provider: usize) -> bool {
        provider == usize::MAX || self.stable.get(provider).copied().unwrap_or(false)
    }
}
