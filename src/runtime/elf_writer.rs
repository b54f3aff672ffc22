//! Encoding the pieces of the tiny ELF objects mmld builds in memory for
//! glibc to `dlopen` (the static TLS object, `tls_object`; the exit hook,
//! `exit_hook`): a little-endian writer, the ELF header and program
//! headers, and the numbers they use.
//!
//! Owns: the byte layout of `Elf64_Ehdr` and `Elf64_Phdr` for an x86-64
//! `ET_DYN` object linked at address 0 without section headers. Must
//! never: touch memory other than its own `Vec`, or make a syscall.

pub const EHDR_SIZE: usize = goblin::elf::header::header64::SIZEOF_EHDR;
pub const PHDR_SIZE: usize = goblin::elf::program_header::program_header64::SIZEOF_PHDR;
pub const SYM_SIZE: usize = goblin::elf::sym::sym64::SIZEOF_SYM;
pub const DYN_SIZE: usize = goblin::elf::dynamic::dyn64::SIZEOF_DYN;

pub use goblin::elf::dynamic::{
    DT_FINI_ARRAY, DT_FINI_ARRAYSZ, DT_FLAGS, DT_HASH, DT_NEEDED, DT_NULL, DT_RELA, DT_RELAENT,
    DT_RELASZ, DT_SONAME, DT_STRSZ, DT_STRTAB, DT_SYMENT, DT_SYMTAB,
};
pub use goblin::elf::program_header::{PF_R, PF_W, PT_DYNAMIC, PT_GNU_STACK, PT_LOAD};

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
    use goblin::elf::header as eh;
    // Magic, class, data, version, OS ABI (System V), padding.
    let mut ident = [0u8; eh::SIZEOF_IDENT];
    ident[..eh::SELFMAG].copy_from_slice(eh::ELFMAG);
    ident[eh::EI_CLASS] = eh::ELFCLASS64;
    ident[eh::EI_DATA] = eh::ELFDATA2LSB;
    ident[eh::EI_VERSION] = eh::EV_CURRENT;
    ident[eh::EI_OSABI] = eh::ELFOSABI_NONE;
    w.bytes.extend_from_slice(&ident);
    w.u16(eh::ET_DYN);
    w.u16(crate::arch::current::MACHINE);
    w.u32(u32::from(eh::EV_CURRENT));
    w.u64(0); // e_entry
    w.u64(EHDR_SIZE as u64); // e_phoff
    w.u64(0); // e_shoff: no section headers
    w.u32(0); // e_flags
    w.u16(EHDR_SIZE as u16);
    w.u16(PHDR_SIZE as u16);
    w.u16(phnum);
    w.u16(goblin::elf::section_header::section_header64::SIZEOF_SHDR as u16);
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
