//! What mmld has mapped, as the C library's introspection calls describe
//! objects: `dl_iterate_phdr`, `dladdr` and `_dl_find_object`.
//!
//! Owns: read-only views of every object in the registry (program headers,
//! span, unwind table, the debugger's `link_map` node, the symbol nearest
//! an address), for the C ABI drop-in (`capi/`) and tools. Must never:
//! change the registry, or keep an object loaded beyond one call (the views
//! hold the object only while the caller's visitor runs).

use std::ffi::{CStr, c_char};
use std::sync::Arc;

use crate::link::symbols;
use crate::object::LoadedObject;
use crate::registry::registry;
use crate::runtime::debugger;

/// One mapped object, described for `dl_iterate_phdr`-style consumers.
pub struct MappedObject<'a> {
    /// The path it was loaded from (the debugger list's `l_name`).
    pub name: &'a CStr,
    /// Load bias (`dlpi_addr`).
    pub bias: u64,
    /// Its program headers, as in the file (empty from [`containing`]).
    pub phdrs: &'a [libc::Elf64_Phdr],
    /// First and one-past-last address of its span.
    pub start: u64,
    pub end: u64,
    /// mmld's TLS module id (0 without TLS).
    pub tls_modid: u64,
    /// The `PT_GNU_EH_FRAME` table in memory (0 without one).
    pub eh_frame_hdr: u64,
    /// The `struct link_map`-shaped node debuggers see (`mmld_r_debug`).
    pub link_map: *mut debugger::LinkMap,
}

/// How many objects mmld has added and removed, for `dlpi_adds`/`dlpi_subs`.
pub fn changes() -> (u64, u64) {
    debugger::changes()
}

fn loaded() -> Vec<Arc<LoadedObject>> {
    registry()
        .entries
        .iter()
        .map(|e| Arc::clone(&e.object))
        .collect()
}

/// The object whose span contains `addr`. Unwinders ask this for every
/// frame: one object is kept, nothing is allocated.
fn holding(addr: u64) -> Option<Arc<LoadedObject>> {
    registry()
        .entries
        .iter()
        .find(|e| {
            let base = e.object.mapping.base();
            addr >= base && addr - base < e.object.mapping.len() as u64
        })
        .map(|e| Arc::clone(&e.object))
}

fn phdrs_of(o: &LoadedObject) -> Vec<libc::Elf64_Phdr> {
    o.plan
        .program_headers
        .iter()
        .map(|p| libc::Elf64_Phdr {
            p_type: p.p_type,
            p_flags: p.p_flags,
            p_offset: p.p_offset,
            p_vaddr: p.p_vaddr,
            p_paddr: p.p_paddr,
            p_filesz: p.p_filesz,
            p_memsz: p.p_memsz,
            p_align: p.p_align,
        })
        .collect()
}

/// `with_phdrs`: fill `phdrs` (only `dl_iterate_phdr` reads them; the
/// others run for every frame an unwinder walks and allocate nothing).
fn visit_one<R>(
    o: &LoadedObject,
    with_phdrs: bool,
    visit: &mut impl FnMut(&MappedObject<'_>) -> Option<R>,
) -> Option<R> {
    let link_map = debugger::link_map_of(o.id)?;
    // SAFETY: the node lives while the object is registered, and `o` (an
    // Arc from the registry) keeps the object for this call.
    let name = unsafe { CStr::from_ptr((*link_map).l_name) };
    let phdrs = if with_phdrs { phdrs_of(o) } else { Vec::new() };
    let view = MappedObject {
        name,
        bias: o.mapping.bias(),
        phdrs: &phdrs,
        start: o.mapping.base(),
        end: o.mapping.base() + o.mapping.len() as u64,
        tls_modid: o.tls.as_ref().map_or(0, |t| t.id),
        eh_frame_hdr: o
            .plan
            .eh_frame_hdr
            .map_or(0, |r| o.mapping.bias().wrapping_add(r.vaddr)),
        link_map,
    };
    visit(&view)
}

/// Visit mmld's objects in load order until `visit` returns `Some`. The
/// objects stay mapped while `visit` runs.
pub fn find_map<R>(mut visit: impl FnMut(&MappedObject<'_>) -> Option<R>) -> Option<R> {
    loaded().iter().find_map(|o| visit_one(o, true, &mut visit))
}

/// The object whose span contains `addr`, handed to `visit`.
pub fn containing<R>(addr: u64, mut visit: impl FnMut(&MappedObject<'_>) -> R) -> Option<R> {
    let o = holding(addr)?;
    visit_one(&o, false, &mut |v| Some(visit(v)))
}

/// The exported symbol of the object containing `addr` that `addr` falls
/// in (or, for a symbol without size, exactly starts), as `dladdr` picks
/// it: the closest one at or below `addr`. Returns its name (a C string in
/// the object's own string table, valid while the object is loaded) and
/// address, and the address of its `.dynsym` entry.
pub fn symbol_at(addr: u64) -> Option<(*const c_char, u64, u64)> {
    let o = holding(addr)?;
    let bias = o.mapping.bias();
    let mut best: Option<(u32, symbols::Sym, u64)> = None;
    for (index, sym) in o.symbols.exported() {
        if sym.kind() == symbols::STT_TLS || sym.shndx == symbols::SHN_ABS {
            continue;
        }
        let start = bias.wrapping_add(sym.value);
        let inside = addr >= start && (addr - start < sym.size || (sym.size == 0 && addr == start));
        if inside && best.as_ref().is_none_or(|(_, _, b)| start > *b) {
            best = Some((index, sym, start));
        }
    }
    let (index, sym, start) = best?;
    let name = o.symbols.symbol_name(&sym).ok()?;
    let entry = o.dynamic.symtab.map_or(0, |t| {
        bias.wrapping_add(t)
            .wrapping_add(u64::from(index) * std::mem::size_of::<libc::Elf64_Sym>() as u64)
    });
    // The string table keeps each name NUL-terminated right after it.
    Some((name.as_ptr().cast(), start, entry))
}
