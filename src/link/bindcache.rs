//! The per-object binding cache of the relocation loop: each symbol is
//! bound once per object, and every later relocation against it (a
//! function's GOT slot and PLT slot, data pointers) reuses the result.
//!
//! Owns: where a binding is kept by symbol index, and in how few bytes.
//! Must never: keep a binding across objects or loads (the scope changes),
//! or hand back less of a binding than its relocation kind reads.

use super::Binding;

/// Bindings by symbol index: a dense table, cheaper than hashing for the
/// hundreds of thousands of relocations of a large library.
///
/// Most bindings are an address and a size: those are kept as 16 bytes
/// (`plain`), a quarter of a full [`Binding`], because every entry is a
/// byte of heap the load touches for the first time (libsqlite3 binds
/// 1,441 symbols: 23 KiB instead of 92, and each fresh heap page is a
/// page fault). IFUNC, TLS and unbound results keep the whole `Binding`
/// (`rich`); they are few.
pub(super) struct BindingCache {
    /// 0: not bound yet; `n` below `RICH`: `plain[n - 1]`; `RICH | i`:
    /// `rich[i]`.
    slot_of: Vec<u32>,
    plain: Vec<PlainBinding>,
    rich: Vec<Option<Binding>>,
    /// Plain entries allowed (otherwise every binding is kept whole).
    compact: bool,
}

/// A binding that needs nothing but its address and size.
#[derive(Clone, Copy)]
pub(super) struct PlainBinding {
    pub(super) addr: u64,
    pub(super) size: u64,
}

/// Marks a `slot_of` entry as an index into `rich`.
const RICH: u32 = 1 << 31;

/// A cached binding as the relocation loop reads it.
pub(super) enum Cached {
    /// Address and size only: enough for every kind but TLS.
    Plain(PlainBinding),
    Rich(Option<Binding>),
}

impl BindingCache {
    /// `symbolic`: relocations that name a symbol, an upper bound on the
    /// bindings (together with the symbol count): the plain list is sized
    /// once and never regrown.
    pub(super) fn new(symbols: u32, symbolic: usize, compact: bool) -> Self {
        let plain = if compact {
            symbolic.min(symbols as usize)
        } else {
            0
        };
        BindingCache {
            slot_of: vec![0; symbols as usize],
            plain: Vec::with_capacity(plain),
            rich: Vec::new(),
            compact,
        }
    }

    #[inline]
    pub(super) fn get(&self, sym: u32) -> Option<Cached> {
        let slot = *self.slot_of.get(sym as usize)?;
        if slot == 0 {
            return None;
        }
        if slot & RICH != 0 {
            return self
                .rich
                .get((slot & !RICH) as usize)
                .copied()
                .map(Cached::Rich);
        }
        self.plain
            .get(slot as usize - 1)
            .copied()
            .map(Cached::Plain)
    }

    /// `tls_symbol`: the reference is `STT_TLS`, whose relocations read
    /// more of the binding than its address.
    pub(super) fn insert(&mut self, sym: u32, binding: Option<Binding>, tls_symbol: bool) {
        let slot = match binding {
            Some(b) if self.compact && !b.ifunc && b.tls_module.is_none() && !tls_symbol => {
                self.plain.push(PlainBinding {
                    addr: b.addr,
                    size: b.size,
                });
                u32::try_from(self.plain.len())
                    .ok()
                    .filter(|n| n & RICH == 0)
            }
            _ => {
                self.rich.push(binding);
                u32::try_from(self.rich.len() - 1)
                    .ok()
                    .filter(|n| n & RICH == 0)
                    .map(|n| n | RICH)
            }
        };
        if let (Some(s), Some(slot)) = (self.slot_of.get_mut(sym as usize), slot) {
            *s = slot;
        }
    }
}
