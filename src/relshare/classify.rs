//! Which pages and scope entries shared relocations depend on.
//!
//! Owns: the scope an object was relocated in, as cache keys (an mmld
//! object counts as stable only when this process placed it at its stable
//! address); the pages an object's relocations write (every `DT_RELA`,
//! `DT_JMPREL` and `DT_RELR` target); and the pages and words of the
//! relocations recorded as per process. Must never: write to the mapping,
//! or decide a relocation's value (the relocation loop does, see
//! `link::sharing`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use super::address::Identity;
use super::cache_file::{ScopeKey, ScopeKind};
use crate::arch::RelocKind;
use crate::arch::current::{self as arch, PAGE_SIZE};
use crate::elf::{DynamicInfo, VRange, page_down};
use crate::link::hostscope::HostScope;
use crate::map::Mapping;

/// One entry of the scope an object is relocated in, as the loader sees it.
#[derive(Debug, Clone)]
pub enum ScopeEntry {
    /// The host's global scope.
    HostGlobal,
    /// A library the host loaded (its path, if known).
    Host(Option<String>),
    /// An object mmld mapped: file and where its span starts.
    Mapped { dev: u64, ino: u64, base: u64 },
}

/// Objects this process placed at their stable address, by base: a scope
/// entry at such a base, from the same file, is stable.
static STABLE: Mutex<BTreeMap<u64, Identity>> = Mutex::new(BTreeMap::new());

pub fn remember_stable(base: u64, id: Identity) {
    STABLE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(base, id);
}

fn stable_at(base: u64, dev: u64, ino: u64) -> Option<Identity> {
    let table = STABLE.lock().unwrap_or_else(|e| e.into_inner());
    table
        .get(&base)
        .copied()
        .filter(|id| id.dev == dev && id.ino == ino)
}

/// The `(device, inode)` of the host library at `path`: the snapshot's
/// (looked up once per process and kept), else a `stat` of the path.
fn host_file_id(path: &str, host: &HostScope) -> Option<(u64, u64)> {
    match host.objects.iter().find(|o| o.name == path) {
        Some(o) => o.file_id(),
        None => Identity::of_path(std::path::Path::new(path))
            .ok()
            .map(|i| (i.dev, i.ino)),
    }
}

/// The scope as cache keys, and for each position whether bindings into it
/// are stable.
pub fn scope_keys(entries: &[ScopeEntry], host: &HostScope) -> (Vec<ScopeKey>, Vec<bool>) {
    entries
        .iter()
        .map(|e| match e {
            ScopeEntry::HostGlobal => (ScopeKey::default(), false),
            ScopeEntry::Host(path) => {
                let id = path
                    .as_deref()
                    .and_then(|p| host_file_id(p, host))
                    .map(|(dev, ino)| Identity {
                        dev,
                        ino,
                        ..Identity::default()
                    })
                    .unwrap_or_default();
                (
                    ScopeKey {
                        kind: ScopeKind::Host,
                        id,
                        address: 0,
                    },
                    false,
                )
            }
            ScopeEntry::Mapped { dev, ino, base } => match stable_at(*base, *dev, *ino) {
                Some(id) => (
                    ScopeKey {
                        kind: ScopeKind::Stable,
                        id,
                        address: *base,
                    },
                    true,
                ),
                None => {
                    let id = Identity {
                        dev: *dev,
                        ino: *ino,
                        ..Identity::default()
                    };
                    (
                        ScopeKey {
                            kind: ScopeKind::Unstable,
                            id,
                            address: 0,
                        },
                        false,
                    )
                }
            },
        })
        .unzip()
}

/// The executable and the host's global objects, by file: they can
/// interpose on any lookup, so a cache entry holds only for the same ones.
pub fn host_set(host: &HostScope) -> (Identity, Vec<(u64, u64)>) {
    // Once per process: the file behind /proc/self/exe cannot change while
    // the process runs (writing a running executable fails with ETXTBSY;
    // a replacement by rename is another inode, and /proc/self/exe keeps
    // naming the old one).
    static EXE: std::sync::OnceLock<Identity> = std::sync::OnceLock::new();
    let exe = *EXE.get_or_init(|| {
        Identity::of_path(std::path::Path::new("/proc/self/exe")).unwrap_or_default()
    });
    let hosts = host
        .objects
        .iter()
        .filter(|o| o.global)
        .filter_map(|o| o.file_id())
        .collect();
    (exe, hosts)
}

/// One relocation table's entries, as `(r_offset)` of each, bounded by
/// what the mapping holds.
fn rela_offsets(mapping: &Mapping, range: Option<VRange>) -> Vec<u64> {
    let Some(bytes) = range.and_then(|r| mapping.read_only(r.vaddr, r.size)) else {
        return Vec::new();
    };
    bytes
        .as_slice()
        .chunks_exact(24)
        .filter_map(|c| Some(u64::from_le_bytes(c.get(..8)?.try_into().ok()?)))
        .collect()
}

/// Every word `DT_RELR` relocates.
fn relr_offsets(mapping: &Mapping, range: Option<VRange>, out: &mut Vec<u64>) {
    let Some(bytes) = range.and_then(|r| mapping.read_only(r.vaddr, r.size)) else {
        return;
    };
    let mut next: Option<u64> = None;
    for c in bytes.as_slice().chunks_exact(8) {
        let Some(entry) = c.try_into().ok().map(u64::from_le_bytes) else {
            continue;
        };
        if entry & 1 == 0 {
            out.push(entry);
            next = Some(entry.wrapping_add(8));
        } else if let Some(base) = next {
            let mut bits = entry >> 1;
            let mut at = base;
            while bits != 0 {
                if bits & 1 != 0 {
                    out.push(at);
                }
                bits >>= 1;
                at = at.wrapping_add(8);
            }
            next = Some(base.wrapping_add(63 * 8));
        }
    }
}

/// The pages holding the 8 bytes at `offset`.
fn pages_of(offset: u64) -> [u64; 2] {
    [page_down(offset), page_down(offset.saturating_add(7))]
}

/// Every page an object's relocations write.
pub fn relocated_pages(mapping: &Mapping, dynamic: &DynamicInfo) -> BTreeSet<u64> {
    let mut offsets = rela_offsets(mapping, dynamic.rela);
    offsets.extend(rela_offsets(mapping, dynamic.jmprel));
    relr_offsets(mapping, dynamic.relr, &mut offsets);
    offsets
        .into_iter()
        .flat_map(pages_of)
        .filter(|p| mapping.writable_pages(*p, PAGE_SIZE))
        .collect()
}

/// The bytes the listed relocations (`link::sharing` codes) write, as
/// `(offset, width)`: 16 bytes for a TLS descriptor, 8 otherwise. `None`
/// when a code names an entry the tables do not have. Reads only the
/// listed entries: a hit must not walk the whole table.
pub fn listed_offsets(
    mapping: &Mapping,
    dynamic: &DynamicInfo,
    list: &[u32],
) -> Option<Vec<(u64, u64)>> {
    let table = |r: Option<VRange>| r.and_then(|r| mapping.read_only(r.vaddr, r.size));
    let (rela, jmprel) = (table(dynamic.rela), table(dynamic.jmprel));
    let word = |b: &[u8]| -> Option<u64> { Some(u64::from_le_bytes(b.try_into().ok()?)) };
    list.iter()
        .map(|&code| {
            let (name, index) = crate::link::sharing::decode(code);
            let t = if name == "DT_JMPREL" { jmprel } else { rela }?;
            let start = index.checked_mul(24)?;
            let entry = t.as_slice().get(start..start.checked_add(16)?)?;
            let offset = word(entry.get(..8)?)?;
            let rtype = (word(entry.get(8..)?)? & 0xffff_ffff) as u32;
            let width = match arch::classify(rtype) {
                RelocKind::TlsDescriptor => 16,
                _ => 8,
            };
            Some((offset, width))
        })
        .collect()
}

/// The pages the words at `offsets` touch, sorted, each once (a sorted
/// vector: building a `BTreeSet` of libLLVM-15's per-process words cost
/// 190,000 instructions a hit).
pub fn pages_of_words(offsets: &[(u64, u64)]) -> Vec<u64> {
    let mut pages: Vec<u64> = offsets
        .iter()
        .flat_map(|&(o, w)| [page_down(o), page_down(o.saturating_add(w - 1))])
        .collect();
    pages.sort_unstable();
    pages.dedup();
    pages
}

/// Is the page at `vaddr` wholly inside `relro` (made read-only after
/// relocation)? Only those may be mapped read-only from the cache.
pub fn in_relro(vaddr: u64, relro: Option<VRange>) -> bool {
    // The pages `Mapping::seal_relro` protects.
    relro.is_some_and(|r| {
        vaddr >= page_down(r.vaddr)
            && vaddr.saturating_add(PAGE_SIZE) <= page_down(r.vaddr.saturating_add(r.size))
    })
}
