//! The bytes of the tiny ELF object through which mmld asks glibc for static
//! TLS (see `static_tls`).
//!
//! Owns: laying out a minimal x86-64 `ET_DYN` object: one read-write
//! `PT_LOAD` holding everything, a `PT_TLS` whose initialisation image is
//! the caller's bytes, `DF_STATIC_TLS`, a `DT_HASH` symbol table with the
//! block's TLS symbol and one exported data word, and one
//! `R_X86_64_TPOFF64` that makes glibc write the block's offset from the
//! thread pointer into that word. Must never: touch memory other than its
//! own `Vec`, or make a syscall: it is pure safe Rust, testable on its own.

/// The exported word glibc relocates with the block's `TPOFF64`.
pub const OFFSET_SYMBOL: &str = "mmld_static_tls_offset";
/// The block's own TLS symbol, at offset 0 of the block.
pub const BLOCK_SYMBOL: &str = "mmld_static_tls_block";
/// `DT_SONAME` of every such object: how a reader of `dl_iterate_phdr`
/// output can tell it is not a library.
pub const SONAME: &str = "mmld-static-tls";

/// The largest TLS alignment accepted. glibc refuses static blocks aligned
/// more than its static TLS alignment (64 on x86-64) anyway; this bound
/// only keeps the padding of a hostile `p_align` from costing memory.
pub const MAX_ALIGN: u64 = 1 << 16;

/// Size and alignment unit of every block: glibc's static TLS alignment on
/// x86-64 (its TCB's), the most a static block may ask for there.
pub const GRANULE: u64 = 64;

/// What the object's TLS block must look like.
#[derive(Debug, Clone, Copy)]
pub struct TlsShape<'a> {
    /// `.tdata` after relocation.
    pub image: &'a [u8],
    /// `p_memsz`: `.tdata` plus `.tbss`.
    pub memsz: u64,
    /// `p_align` (0 and 1 both mean unaligned).
    pub align: u64,
}

use super::elf_writer::{
    DT_FLAGS, DT_HASH, DT_NULL, DT_RELA, DT_RELAENT, DT_RELASZ, DT_SONAME, DT_STRSZ, DT_STRTAB,
    DT_SYMENT, DT_SYMTAB, DYN_SIZE, EHDR_SIZE, PF_R, PHDR_SIZE, Phdr, SYM_SIZE, Writer,
    load_dynamic_stack, write_header, write_phdrs,
};

const RELA_SIZE: usize = goblin::elf::reloc::reloc64::SIZEOF_RELA;
const PHDR_COUNT: usize = 4;
use goblin::elf::dynamic::DF_STATIC_TLS;
use goblin::elf::program_header::PT_TLS;
use goblin::elf::sym::{STB_GLOBAL, STT_OBJECT, STT_TLS, STV_PROTECTED};
/// Any defined section index: glibc only checks "not `SHN_UNDEF`" and never
/// reads section headers, and this object has none.
const DEFINED_SHNDX: u16 = 1;

const R_X86_64_TPOFF64: u64 = goblin::elf::reloc::R_X86_64_TPOFF64 as u64;

/// Where each part of the object goes, computed before writing so the
/// headers can name offsets of parts written after them.
struct Layout {
    symtab: u64,
    strtab: u64,
    strsz: u64,
    hash: u64,
    rela: u64,
    dynamic: u64,
    word: u64,
    tls: u64,
    end: u64,
}

/// Symbol names in `.dynstr`: offset 0 is the empty name.
fn strings() -> (Vec<u8>, [u32; 3]) {
    let mut s = vec![0u8];
    let mut offsets = [0u32; 3];
    for (slot, name) in offsets
        .iter_mut()
        .zip([BLOCK_SYMBOL, OFFSET_SYMBOL, SONAME])
    {
        *slot = s.len() as u32;
        s.extend_from_slice(name.as_bytes());
        s.push(0);
    }
    (s, offsets)
}

const DYNAMIC_ENTRIES: usize = 11;

fn layout(strsz: usize, shape: &TlsShape<'_>, align: u64) -> Option<Layout> {
    let round = |v: u64, a: u64| v.checked_add(a - 1).map(|x| x & !(a - 1));
    let symtab = (EHDR_SIZE + PHDR_COUNT * PHDR_SIZE) as u64;
    let strtab = symtab + 3 * SYM_SIZE as u64;
    let strsz = strsz as u64;
    let hash = round(strtab + strsz, 8)?;
    // nbucket, nchain, one bucket, three chain entries: 4-byte words.
    let rela = round(hash + 6 * 4, 8)?;
    let dynamic = rela + RELA_SIZE as u64;
    let word = dynamic + (DYNAMIC_ENTRIES * 16) as u64;
    let tls = round(word + 8, align)?;
    let end = tls.checked_add(shape.image.len() as u64)?;
    Some(Layout {
        symtab,
        strtab,
        strsz,
        hash,
        rela,
        dynamic,
        word,
        tls,
        end,
    })
}

/// The object's bytes, or why the shape cannot be expressed.
pub fn build(shape: &TlsShape<'_>) -> Result<Vec<u8>, String> {
    let align = shape.align.max(1);
    if !align.is_power_of_two() || align > MAX_ALIGN {
        return Err(format!(
            "TLS alignment {align:#x} is not a power of two up to {MAX_ALIGN:#x}"
        ));
    }
    // glibc pads an allocation to the block's alignment, and never takes
    // padding back: every load/unload cycle would lose some surplus, and
    // padding under a younger block keeps older released blocks from being
    // reclaimed (measured: 200-byte blocks aligned to 16 exhaust the
    // default surplus in 7 cycles, 208-byte ones cycle forever, and a
    // 1-byte block next to an 8-aligned one loses 8 bytes per cycle). With
    // every block a multiple of one granule and aligned to it, no padding
    // ever arises after the first block. The extra bytes are `.tbss`, zero
    // in every thread.
    let memsz = shape
        .memsz
        .max(1)
        .checked_next_multiple_of(align.max(GRANULE))
        .ok_or("TLS block too large")?;
    let align = align.max(GRANULE);
    if (shape.image.len() as u64) > memsz {
        return Err(format!(
            "TLS image of {} bytes is larger than its block ({memsz} bytes)",
            shape.image.len()
        ));
    }
    let (strtab, names) = strings();
    let l = layout(strtab.len(), shape, align).ok_or("TLS image too large")?;
    let mut w = Writer::default();
    write_header(&mut w, PHDR_COUNT as u16);
    write_tls_phdrs(&mut w, &l, shape, memsz, align);
    write_symbols(&mut w, &l, names);
    w.bytes.extend_from_slice(&strtab);
    w.pad_to(8);
    debug_assert_eq!(w.pos(), l.hash);
    // DT_HASH with one bucket: every name hashes to it, and the chain walks
    // symbols 2 then 1.
    for v in [1u32, 3, 2, 0, 0, 1] {
        w.u32(v);
    }
    w.pad_to(8);
    debug_assert_eq!(w.pos(), l.rela);
    w.u64(l.word);
    w.u64((1 << 32) | R_X86_64_TPOFF64);
    w.u64(0);
    debug_assert_eq!(w.pos(), l.dynamic);
    for (tag, value) in [
        (DT_HASH, l.hash),
        (DT_STRTAB, l.strtab),
        (DT_SYMTAB, l.symtab),
        (DT_STRSZ, l.strsz),
        (DT_SYMENT, SYM_SIZE as u64),
        (DT_RELA, l.rela),
        (DT_RELASZ, RELA_SIZE as u64),
        (DT_RELAENT, RELA_SIZE as u64),
        (DT_SONAME, u64::from(names[2])),
        (DT_FLAGS, DF_STATIC_TLS),
        (DT_NULL, 0),
    ] {
        w.u64(tag);
        w.u64(value);
    }
    debug_assert_eq!(w.pos(), l.word);
    w.u64(0);
    while w.pos() < l.tls {
        w.u8(0);
    }
    w.bytes.extend_from_slice(shape.image);
    debug_assert_eq!(w.pos(), l.end);
    Ok(w.bytes)
}

fn write_tls_phdrs(w: &mut Writer, l: &Layout, shape: &TlsShape<'_>, memsz: u64, align: u64) {
    // One writable PT_LOAD: glibc adjusts `.dynamic` in place and writes
    // the relocated word.
    let load_align = crate::arch::current::PAGE_SIZE.max(align);
    let [load, dynamic, stack] = load_dynamic_stack(
        l.end,
        l.dynamic,
        (DYNAMIC_ENTRIES * DYN_SIZE) as u64,
        load_align,
    );
    let tls = Phdr {
        p_type: PT_TLS,
        flags: PF_R,
        offset: l.tls,
        filesz: shape.image.len() as u64,
        memsz,
        align,
    };
    write_phdrs(w, &[load, dynamic, tls, stack]);
}

fn write_symbols(w: &mut Writer, l: &Layout, names: [u32; 3]) {
    let mut sym = |name: u32, info: u8, other: u8, shndx: u16, value: u64, size: u64| {
        w.u32(name);
        w.u8(info);
        w.u8(other);
        w.u16(shndx);
        w.u64(value);
        w.u64(size);
    };
    sym(0, 0, 0, 0, 0, 0);
    // Protected: the TPOFF64 against it binds to this object itself, so no
    // other object's symbol of the same name can interpose.
    sym(
        names[0],
        (STB_GLOBAL << 4) | STT_TLS,
        STV_PROTECTED,
        DEFINED_SHNDX,
        0,
        1,
    );
    sym(
        names[1],
        (STB_GLOBAL << 4) | STT_OBJECT,
        STV_PROTECTED,
        DEFINED_SHNDX,
        l.word,
        8,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(bytes: &[u8], at: u64) -> u64 {
        let at = at as usize;
        u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn tls_segment_holds_the_image_at_an_aligned_offset() {
        let image = [1u8, 2, 3, 4, 5];
        let obj = build(&TlsShape {
            image: &image,
            memsz: 40,
            align: 64,
        })
        .unwrap();
        let ph = |i: u64, field: u64| word(&obj, 64 + i * 56 + field);
        // Third program header is PT_TLS: offset, filesz, memsz, align.
        assert_eq!(
            u32::from_le_bytes(obj[176..180].try_into().unwrap()),
            PT_TLS
        );
        let off = ph(2, 8);
        assert_eq!(off % 64, 0);
        assert_eq!(&obj[off as usize..off as usize + 5], &image);
        assert_eq!(ph(2, 32), 5);
        // memsz rounded up to the alignment, so glibc never pads.
        assert_eq!(ph(2, 40), 64);
        assert_eq!(ph(2, 48), 64);
        assert_eq!(ph(0, 32), obj.len() as u64);
    }

    #[test]
    fn shapes_glibc_would_misread_are_refused() {
        let big = TlsShape {
            image: &[0; 100],
            memsz: 4,
            align: 8,
        };
        assert!(build(&big).is_err());
        let odd = TlsShape {
            image: &[],
            memsz: 4,
            align: 24,
        };
        assert!(build(&odd).is_err());
    }
}
