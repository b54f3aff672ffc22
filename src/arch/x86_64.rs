//! x86-64 (psABI) relocation types and machine facts: the file that defines
//! what `R_X86_64_GLOB_DAT` and every other x86-64 relocation means.
//!
//! Owns: the numbers and names from the x86-64 psABI that the loader needs,
//! and [`classify`], which maps each relocation type to the
//! [`RelocKind`] `link` applies. Must never: apply a relocation itself
//! (that is `link::reloc`).

use goblin::elf::header::EM_X86_64;
use goblin::elf::reloc as r;

use super::RelocKind;

/// `e_machine` for x86-64.
pub const MACHINE: u16 = EM_X86_64;
/// The only page size x86-64 Linux uses for user mappings of files.
pub const PAGE_SIZE: u64 = 4096;
/// Bytes of the word every relocation mmld applies writes.
pub const WORD_SIZE: u64 = 8;
/// Relocation types are below this (sizes `link`'s per-type counters).
pub const RELOC_TYPES: usize = 64;

// The psABI's numbers, as goblin names them; short names here because
// every use is already x86-64's.
pub const R_NONE: u32 = r::R_X86_64_NONE;
pub const R_64: u32 = r::R_X86_64_64;
pub const R_PC32: u32 = r::R_X86_64_PC32;
pub const R_COPY: u32 = r::R_X86_64_COPY;
pub const R_GLOB_DAT: u32 = r::R_X86_64_GLOB_DAT;
pub const R_JUMP_SLOT: u32 = r::R_X86_64_JUMP_SLOT;
pub const R_RELATIVE: u32 = r::R_X86_64_RELATIVE;
pub const R_DTPMOD64: u32 = r::R_X86_64_DTPMOD64;
pub const R_DTPOFF64: u32 = r::R_X86_64_DTPOFF64;
pub const R_TPOFF64: u32 = r::R_X86_64_TPOFF64;
pub const R_SIZE64: u32 = r::R_X86_64_SIZE64;
pub const R_TLSDESC: u32 = r::R_X86_64_TLSDESC;
pub const R_IRELATIVE: u32 = r::R_X86_64_IRELATIVE;

/// What relocation type `rtype` means (psABI table "Relocation Types").
/// `R_X86_64_COPY` is for executables only, and the 32-bit and PC-relative
/// types never appear in a shared object's dynamic relocations: all are
/// refused.
#[inline]
pub fn classify(rtype: u32) -> RelocKind {
    match rtype {
        R_NONE => RelocKind::None,
        R_RELATIVE => RelocKind::Relative,
        R_64 => RelocKind::SymbolPlusAddend,
        R_GLOB_DAT => RelocKind::SymbolAddress,
        R_JUMP_SLOT => RelocKind::CallSlot,
        R_SIZE64 => RelocKind::SymbolSize,
        R_DTPMOD64 => RelocKind::TlsModule,
        R_DTPOFF64 => RelocKind::TlsOffset,
        R_TPOFF64 => RelocKind::TlsStaticOffset,
        R_TLSDESC => RelocKind::TlsDescriptor,
        R_IRELATIVE => RelocKind::IRelative,
        _ => RelocKind::Unsupported,
    }
}

/// A human name for a relocation type, for error messages and `mmld info`.
pub fn relocation_name(rtype: u32) -> &'static str {
    match rtype {
        R_NONE => "R_X86_64_NONE",
        R_64 => "R_X86_64_64",
        R_PC32 => "R_X86_64_PC32",
        3 => "R_X86_64_GOT32",
        4 => "R_X86_64_PLT32",
        R_COPY => "R_X86_64_COPY",
        R_GLOB_DAT => "R_X86_64_GLOB_DAT",
        R_JUMP_SLOT => "R_X86_64_JUMP_SLOT",
        R_RELATIVE => "R_X86_64_RELATIVE",
        9 => "R_X86_64_GOTPCREL",
        10 => "R_X86_64_32",
        11 => "R_X86_64_32S",
        12 => "R_X86_64_16",
        13 => "R_X86_64_PC16",
        14 => "R_X86_64_8",
        15 => "R_X86_64_PC8",
        R_DTPMOD64 => "R_X86_64_DTPMOD64",
        R_DTPOFF64 => "R_X86_64_DTPOFF64",
        R_TPOFF64 => "R_X86_64_TPOFF64",
        19 => "R_X86_64_TLSGD",
        20 => "R_X86_64_TLSLD",
        21 => "R_X86_64_DTPOFF32",
        22 => "R_X86_64_GOTTPOFF",
        23 => "R_X86_64_TPOFF32",
        24 => "R_X86_64_PC64",
        25 => "R_X86_64_GOTOFF64",
        26 => "R_X86_64_GOTPC32",
        32 => "R_X86_64_SIZE32",
        R_SIZE64 => "R_X86_64_SIZE64",
        34 => "R_X86_64_GOTPC32_TLSDESC",
        35 => "R_X86_64_TLSDESC_CALL",
        R_TLSDESC => "R_X86_64_TLSDESC",
        R_IRELATIVE => "R_X86_64_IRELATIVE",
        38 => "R_X86_64_RELATIVE64",
        _ => "unknown",
    }
}

/// Bytes of one lazy-call stub (see [`lazy_stub`]); a power of two, so
/// stubs never straddle a cache line.
pub const LAZY_STUB_SIZE: usize = 32;

/// The machine code of one lazy-call stub: the PLT slot of an unbound
/// function points here. It loads `record` (what the slot is) into `%r11`,
/// a scratch register no argument travels in, and jumps to `entry`, which
/// saves the caller's argument registers before binding the slot:
///
/// ```text
/// endbr64                      f3 0f 1e fa        (a valid indirect-branch target)
/// movabs $record, %r11         49 bb <imm64>
/// jmp    *0(%rip)              ff 25 00 00 00 00
/// .quad  entry                 <imm64>
/// int3 ...                     padding
/// ```
pub fn lazy_stub(record: u64, entry: u64) -> [u8; LAZY_STUB_SIZE] {
    let mut code = [0xcc; LAZY_STUB_SIZE];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        code[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(&[0xf3, 0x0f, 0x1e, 0xfa]);
    put(&[0x49, 0xbb]);
    put(&record.to_le_bytes());
    put(&[0xff, 0x25, 0, 0, 0, 0]);
    put(&entry.to_le_bytes());
    code
}

/// The vector state a lazy-call entry saves around the binder with
/// `xsave`: SSE, AVX, MPX bounds, AVX-512 mask and upper halves (XCR0
/// bits 1, 2, 3, 5, 6, 7), the components arguments can travel in. x87
/// and AMX tiles are never used for arguments.
pub const LAZY_XSAVE_COMPONENTS: u64 = 0b1110_1110;

/// Bytes `fxsave` writes: the legacy area, which holds every argument
/// register (`%xmm0`-`%xmm7`) of a CPU without `xsave`.
pub const FXSAVE_AREA: u64 = 512;
/// The legacy area plus the `xsave` header that follows it.
pub const XSAVE_HEADER_END: u64 = 576;
