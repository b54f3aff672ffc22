//! A one-probe index of every name a library's local scope exports, for
//! libraries that are asked for many symbols.
//!
//! Owns: hashing names word by word, the open-addressing table, and the
//! rule that the first object of the scope that defines a name wins (so the
//! index answers exactly what walking the scope object by object answers).
//! Must never: decide an address it cannot compute once for all callers
//! (IFUNC results and thread-local addresses are left to the scope walk),
//! or keep a pointer into an object: it holds its own copy of the names,
//! so it can be kept and searched without any unsafe code.
//!
//! Why a second table when every object has a GNU hash table: the GNU hash
//! is a byte-at-a-time recurrence (each byte waits for the previous one),
//! and a lookup then probes one object after another; a miss in a library
//! whose scope includes libc walks every object. Here a name costs one
//! multiply per 16 bytes and one probe for the whole scope, hit or miss.
//! For well-formed tables both answers agree; for a GNU table whose Bloom
//! filter leaves out a symbol its chains hold, the walk misses and the
//! index finds it (the definition is still inside that object).

use super::symbols::{Sym, SymbolTable};
use crate::bytes::{same_bytes, word};

/// What the index knows about a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The scope defines it here, the same for every caller and thread.
    Address(u64),
    /// The first definition needs the scope walk (IFUNC, TLS).
    Walk,
    /// No object of the scope defines it (for an unversioned lookup).
    Absent,
}

/// Marks an entry whose address only the scope walk can give.
const WALK: u64 = u64::MAX;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Final address, or `WALK`.
    address: u64,
    /// Where the name starts in `names`.
    name_at: u32,
    name_len: u32,
}

/// Names of one scope, hashed once.
#[derive(Debug)]
pub struct ScopeIndex {
    /// 0: empty. Otherwise the hash's high 32 bits above `entry + 1`, so a
    /// probe rejects most other names without touching `entries`.
    slots: Vec<u64>,
    entries: Vec<Entry>,
    /// Every indexed name, back to back.
    names: Vec<u8>,
    mask: usize,
}

const MIX0: u64 = 0xa076_1d64_78bd_642f;
const MIX1: u64 = 0xe703_7ed1_a0b4_28db;
const MIX2: u64 = 0x8ebc_6af0_9c88_c6e3;

/// Multiply to 128 bits and fold the halves: one multiply mixes 64 bits.
fn fold(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

fn half_word(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at.wrapping_add(4))
        .and_then(|b| b.try_into().ok())
        .map_or(0, |b| u64::from(u32::from_le_bytes(b)))
}

/// A 64-bit hash of `name`, reading it 8 or 16 bytes at a time: the two
/// words at each end overlap for lengths that are not a multiple of 8,
/// which covers every byte without a byte loop.
pub fn name_hash(name: &[u8]) -> u64 {
    let len = name.len();
    let mut seed = MIX0 ^ len as u64;
    let (a, b) = if len <= 16 {
        if len >= 8 {
            (word(name, 0), word(name, len - 8))
        } else if len >= 4 {
            (half_word(name, 0), half_word(name, len - 4))
        } else {
            let byte = |i: usize| u64::from(name.get(i).copied().unwrap_or(0));
            let packed = if len == 0 {
                0
            } else {
                (byte(0) << 16) | (byte(len / 2) << 8) | byte(len - 1)
            };
            (packed, 0)
        }
    } else {
        let mut at = 0;
        while len - at > 16 {
            seed = fold(word(name, at) ^ MIX1, word(name, at + 8) ^ seed);
            at += 16;
        }
        (word(name, len - 16), word(name, len - 8))
    };
    fold(fold(a ^ MIX1, b ^ seed), MIX2 ^ len as u64)
}

impl ScopeIndex {
    /// Index `tables` in scope order. `address` gives a definition's final
    /// address, or `None` when only the scope walk can (IFUNC, TLS).
    pub fn build(
        tables: &[&SymbolTable],
        mut address: impl FnMut(usize, &Sym) -> Option<u64>,
    ) -> ScopeIndex {
        let upper: usize = tables.iter().map(|t| t.count() as usize).sum();
        let capacity = (upper.max(8) * 2).next_power_of_two();
        let mut index = ScopeIndex {
            slots: vec![0; capacity],
            entries: Vec::with_capacity(upper),
            names: Vec::new(),
            mask: capacity - 1,
        };
        for (source, table) in tables.iter().enumerate() {
            for (_, sym) in table.default_definitions() {
                let Ok(name) = table.string(u64::from(sym.name)) else {
                    continue;
                };
                let found = address(source, &sym).filter(|&a| a != WALK);
                index.insert_first(name, found.unwrap_or(WALK));
            }
        }
        index.entries.shrink_to_fit();
        index.names.shrink_to_fit();
        index
    }

    /// Insert unless an earlier object (or an earlier symbol of the same
    /// object) already defines the name: the first definition wins.
    fn insert_first(&mut self, name: &[u8], address: u64) {
        let hash = name_hash(name);
        let mut at = hash as usize & self.mask;
        loop {
            let Some(slot) = self.slots.get(at).copied() else {
                return;
            };
            if slot == 0 {
                let number = self.entries.len() as u64 + 1;
                let (Ok(name_at), Ok(name_len)) =
                    (u32::try_from(self.names.len()), u32::try_from(name.len()))
                else {
                    return;
                };
                if number > u64::from(u32::MAX) {
                    return;
                }
                self.names.extend_from_slice(name);
                self.entries.push(Entry {
                    address,
                    name_at,
                    name_len,
                });
                if let Some(s) = self.slots.get_mut(at) {
                    *s = (hash & !0xffff_ffff) | number;
                }
                return;
            }
            if self.entry_for(slot, hash, name).is_some() {
                return;
            }
            at = (at + 1) & self.mask;
        }
    }

    /// The entry of `slot` if it holds `name`.
    fn entry_for(&self, slot: u64, hash: u64, name: &[u8]) -> Option<&Entry> {
        if slot >> 32 != hash >> 32 {
            return None;
        }
        let e = self.entries.get((slot as u32 as usize).wrapping_sub(1))?;
        let start = e.name_at as usize;
        let stored = self.names.get(start..start + e.name_len as usize)?;
        same_bytes(stored, name).then_some(e)
    }

    /// What the scope answers for an unversioned lookup of `name`.
    pub fn find(&self, name: &[u8]) -> Answer {
        let hash = name_hash(name);
        let mut at = hash as usize & self.mask;
        // The table is at most half full, so an empty slot always comes.
        for _ in 0..=self.mask {
            let Some(&slot) = self.slots.get(at) else {
                break;
            };
            if slot == 0 {
                return Answer::Absent;
            }
            if let Some(e) = self.entry_for(slot, hash, name) {
                return match e.address {
                    WALK => Answer::Walk,
                    a => Answer::Address(a),
                };
            }
            at = (at + 1) & self.mask;
        }
        Answer::Walk
    }

    /// Names indexed (first definitions only).
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::name_hash;

    #[test]
    fn hash_depends_on_every_byte_and_the_length() {
        let base = b"sqlite3_open_v2_and_a_long_tail_x".to_vec();
        for len in 0..base.len() {
            let name = &base[..len];
            let h = name_hash(name);
            for i in 0..len {
                let mut changed = name.to_vec();
                changed[i] ^= 1;
                assert_ne!(h, name_hash(&changed), "len {len}, byte {i}");
            }
            if len > 0 {
                assert_ne!(h, name_hash(&base[..len - 1]), "len {len}");
            }
        }
    }
}
