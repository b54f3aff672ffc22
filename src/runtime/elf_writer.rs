//! Encoding the pieces of the tiny ELF objects mmld builds in memory for
//! glibc to `dlopen` (the static TLS object, `tls_object`; the exit hook,
//! `exit_hook`): a little-endian writer, the ELF header and program
//! headers, and the numbers they use.
//!
//! Owns: the byte layout of `Elf64_Ehdr` and `Elf64_Phdr` for an x86-64
//! `ET_DYN` object linked at address 0 without section headers. Must
//! never: touch memory other than its own `Vec`, or make a syscall.

pub const EHDR_SIZE: usize = 64;
pub const PHDR_SIZE: usize = 56;
pub const SYM_SIZE: usize = 24;
pub const DYN_SIZE: usize = 16;

pub const PT_LOAD: u32 = 1;
pub const PT_DYNAMIC: u32 = 2;
pub const PT_GNU_STACK: u32 = 0x6474_e551;
pub const PF_W: u32 = 2;
pub const PF_R: u32 = 4;

pub const DT_NULL: u64 = 0;
pub const DT_NEEDED: u64 = 1;
pub const DT_HASH: u64 = 4;
pub const DT_STRTAB: u64 = 5;
pub const DT_SYMTAB: u64 = 6;
pub const DT_RELA: u64 = 7;
pub const DT_RELASZ: u64 = 8;
pub const DT_RELAENT: u64 = 9;
pub const DT_STRSZ: u64 = 10;
pub const DT_SYMENT: u64 = 11;
pub const DT_SONAME: u64 = 14;
pub const DT_FINI_ARRAY: u64 = 26;
pub const DT_FINI_ARRAYSZ: u64 = 28;
pub const DT_FLAGS: u64 = 30;

/// A little-endian byte writer: a whole object is built with it, so no
/// offset arithmetic can write outside the buffer.
#[derive(Default)]
pub struct Writer {
    pub bytes: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.bytes.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }
    pub fn pad_to(&mut self, align: usize) {
        while !self.bytes.len().is_multiple_of(align) {
            self.bytes.push(0);
        }
    }
    pub fn pos(&self) -> u64 {
        self.bytes.len() as u64
    }
}

/// The ELF header of an x86-64 `ET_DYN` object whose `phnum` program
/// headers follow it directly, with no section headers.
pub fn write_header(w: &mut Writer, phnum: u16) {
    // Magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT, ELFOSABI_SYSV, padding.
    w.bytes
        .extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    w.u16(3); // ET_DYN
    w.u16(crate::arch::current::MACHINE);
    w.u32(1); // EV_CURRENT
    w.u64(0); // e_entry
    w.u64(EHDR_SIZE as u64); // e_phoff
    w.u64(0); // e_shoff: no section headers
    w.u32(0); // e_flags
    w.u16(EHDR_SIZE as u16);
    w.u16(PHDR_SIZE as u16);
    w.u16(phnum);
    w.u16(64); // e_shentsize
    w.u16(0); // e_shnum
    w.u16(0); // e_shstrndx
}

/// One program header; the object is linked at 0, so addresses are file
/// offsets.
pub struct Phdr {
    pub p_type: u32,
    pub flags: u32,
    pub offset: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub align: u64,
}

pub fn write_phdrs(w: &mut Writer, phdrs: &[Phdr]) {
    for p in phdrs {
        w.u32(p.p_type);
        w.u32(p.flags);
        w.u64(p.offset);
        w.u64(p.offset); // p_vaddr: the object is linked at 0
        w.u64(p.offset); // p_paddr
        w.u64(p.filesz);
        w.u64(p.memsz);
        w.u64(p.align);
    }
}

/// One writable `PT_LOAD` over the whole object, its `PT_DYNAMIC`, and a
/// `PT_GNU_STACK` that keeps glibc from making thread stacks executable.
pub fn load_dynamic_stack(end: u64, dynamic: u64, dynamic_size: u64, align: u64) -> [Phdr; 3] {
    [
        Phdr {
            p_type: PT_LOAD,
            flags: PF_R | PF_W,
            offset: 0,
            filesz: end,
            memsz: end,
            align,
        },
        Phdr {
            p_type: PT_DYNAMIC,
            flags: PF_R | PF_W,
            offset: dynamic,
            filesz: dynamic_size,
            memsz: dynamic_size,
            align: 8,
        },
        Phdr {
            p_type: PT_GNU_STACK,
            flags: PF_R | PF_W,
            offset: 0,
            filesz: 0,
            memsz: 0,
            align: 16,
        },
    ]
}
