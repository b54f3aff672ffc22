//! The ELF facts the inspector needs, read from a file with goblin:
//! `PT_LOAD` and `PT_GNU_RELRO` program headers and the named section
//! headers.
//!
//! Owns: bounded reads of the header, the program header table, the section
//! header table and `.shstrtab`. Must never: read the whole file (libLLVM is
//! over 100 MiB), trust a count or offset without checking it against the
//! file size, or panic on a malformed file.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::program_header::{self as ph, ProgramHeader};
use goblin::elf::section_header::{self as sh, SectionHeader};

use super::{Error, Result};

/// One `PT_LOAD`, in file addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSegment {
    /// `p_vaddr`.
    pub vaddr: u64,
    /// `p_memsz`.
    pub memsz: u64,
    /// `p_filesz`.
    pub filesz: u64,
    /// `p_offset`.
    pub offset: u64,
    /// `p_flags`: `PF_X` = 1, `PF_W` = 2, `PF_R` = 4.
    pub flags: u32,
}

impl LoadSegment {
    /// Has `PF_X`.
    pub fn executable(&self) -> bool {
        self.flags & ph::PF_X != 0
    }
    /// Has `PF_W`.
    pub fn writable(&self) -> bool {
        self.flags & ph::PF_W != 0
    }
}

/// One allocated section: it occupies memory when the object is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionInfo {
    /// Section name.
    pub name: String,
    /// `sh_addr` (file virtual address).
    pub addr: u64,
    /// `sh_size`.
    pub size: u64,
    /// `SHT_NOBITS` (`.bss`): memory with no bytes in the file.
    pub nobits: bool,
}

/// What the inspector knows about one ELF file.
#[derive(Debug, Clone, Default)]
pub struct ElfFacts {
    /// `e_type` (`ET_DYN` = 3, `ET_EXEC` = 2).
    pub e_type: u16,
    /// The `PT_LOAD` segments.
    pub loads: Vec<LoadSegment>,
    /// `PT_GNU_RELRO` as `(vaddr, memsz)`.
    pub relro: Option<(u64, u64)>,
    /// Allocated sections in address order (`.tbss` left out: it takes no
    /// address space of its own).
    pub sections: Vec<SectionInfo>,
}

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const SHDR_SIZE: usize = 64;
/// No real file has more; bounds what a hostile header can make us read.
const MAX_HEADERS: usize = 1 << 16;
const MAX_SHSTRTAB: u64 = 16 << 20;

fn elf_error(path: &Path, what: impl Into<String>) -> Error {
    Error::Elf {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

fn read_at(file: &File, path: &Path, offset: u64, len: usize, file_len: u64) -> Result<Vec<u8>> {
    let end = offset.checked_add(len as u64);
    if end.is_none_or(|e| e > file_len) {
        return Err(elf_error(
            path,
            format!(
                "{len} bytes at offset {offset:#x} lie beyond the end of the file ({file_len} bytes)"
            ),
        ));
    }
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)
        .map_err(|error| Error::Io {
            path: path.to_path_buf(),
            what: "reading ELF headers",
            error,
        })?;
    Ok(buf)
}

impl ElfFacts {
    /// Open `path` and read its facts.
    pub fn read_path(path: &Path) -> Result<ElfFacts> {
        let file = File::open(path).map_err(|error| Error::Io {
            path: path.to_path_buf(),
            what: "opening",
            error,
        })?;
        Self::read(&file, path)
    }

    /// Read the facts of an open file; `path` is only for messages.
    pub fn read(file: &File, path: &Path) -> Result<ElfFacts> {
        let file_len = file
            .metadata()
            .map_err(|error| Error::Io {
                path: PathBuf::from(path),
                what: "fstat",
                error,
            })?
            .len();
        let head = read_at(file, path, 0, EHDR_SIZE, file_len)?;
        if head.get(..goblin::elf::header::SELFMAG) != Some(goblin::elf::header::ELFMAG.as_slice())
        {
            return Err(elf_error(path, "not an ELF file"));
        }
        if head.get(4) != Some(&2) || head.get(5) != Some(&1) {
            return Err(elf_error(path, "not a 64-bit little-endian ELF file"));
        }
        let header = goblin::elf64::header::Header::parse(&head)
            .map_err(|e| elf_error(path, format!("bad ELF header: {e}")))?;
        let ctx = Ctx::new(Container::Big, Endian::Little);

        let mut facts = ElfFacts {
            e_type: header.e_type,
            ..ElfFacts::default()
        };

        let phnum = usize::from(header.e_phnum);
        if phnum > 0 {
            if usize::from(header.e_phentsize) != PHDR_SIZE {
                return Err(elf_error(
                    path,
                    format!("e_phentsize is {}", header.e_phentsize),
                ));
            }
            let bytes = read_at(file, path, header.e_phoff, phnum * PHDR_SIZE, file_len)?;
            let phdrs = ProgramHeader::parse(&bytes, 0, phnum, ctx)
                .map_err(|e| elf_error(path, format!("bad program headers: {e}")))?;
            for p in &phdrs {
                match p.p_type {
                    ph::PT_LOAD => facts.loads.push(LoadSegment {
                        vaddr: p.p_vaddr,
                        memsz: p.p_memsz,
                        filesz: p.p_filesz,
                        offset: p.p_offset,
                        flags: p.p_flags,
                    }),
                    ph::PT_GNU_RELRO => facts.relro = Some((p.p_vaddr, p.p_memsz)),
                    _ => {}
                }
            }
        }
        facts.sections = read_sections(file, path, &header, file_len, ctx)?;
        Ok(facts)
    }

    /// Names of the allocated sections overlapping file addresses
    /// `start..end`, in address order.
    pub fn sections_in(&self, start: u64, end: u64) -> Vec<String> {
        self.sections
            .iter()
            .filter(|s| {
                let s_end = s.addr.saturating_add(s.size.max(1));
                s.addr < end && s_end > start
            })
            .map(|s| s.name.clone())
            .collect()
    }
}

/// Section headers are optional at run time (a stripped-of-everything file
/// still loads), so a file without them yields no sections, not an error.
fn read_sections(
    file: &File,
    path: &Path,
    header: &goblin::elf64::header::Header,
    file_len: u64,
    ctx: Ctx,
) -> Result<Vec<SectionInfo>> {
    if header.e_shoff == 0 {
        return Ok(Vec::new());
    }
    if usize::from(header.e_shentsize) != SHDR_SIZE {
        return Err(elf_error(
            path,
            format!("e_shentsize is {}", header.e_shentsize),
        ));
    }
    // Extended numbering: e_shnum 0 and e_shstrndx SHN_XINDEX put the real
    // values in section 0's sh_size and sh_link.
    let first = read_at(file, path, header.e_shoff, SHDR_SIZE, file_len)?;
    let zero = SectionHeader::parse_from(&first, 0, 1, ctx)
        .map_err(|e| elf_error(path, format!("bad section header 0: {e}")))?;
    let zero = zero.first();
    let shnum = match header.e_shnum {
        0 => zero.map_or(0, |z| z.sh_size as usize),
        n => usize::from(n),
    };
    let shstrndx = match u32::from(header.e_shstrndx) {
        sh::SHN_XINDEX => zero.map_or(0, |z| z.sh_link as usize),
        n => n as usize,
    };
    if shnum == 0 {
        return Ok(Vec::new());
    }
    if shnum > MAX_HEADERS {
        return Err(elf_error(path, format!("{shnum} section headers")));
    }
    let bytes = read_at(file, path, header.e_shoff, shnum * SHDR_SIZE, file_len)?;
    let shdrs = SectionHeader::parse_from(&bytes, 0, shnum, ctx)
        .map_err(|e| elf_error(path, format!("bad section headers: {e}")))?;
    let names = match shdrs.get(shstrndx) {
        Some(s) if s.sh_type != sh::SHT_NOBITS && s.sh_size <= MAX_SHSTRTAB => {
            read_at(file, path, s.sh_offset, s.sh_size as usize, file_len)?
        }
        _ => Vec::new(),
    };
    let mut out: Vec<SectionInfo> = shdrs
        .iter()
        .filter(|s| s.sh_flags & u64::from(sh::SHF_ALLOC) != 0)
        .filter(|s| !(s.sh_type == sh::SHT_NOBITS && s.sh_flags & u64::from(sh::SHF_TLS) != 0))
        .map(|s| SectionInfo {
            name: section_name(&names, s.sh_name),
            addr: s.sh_addr,
            size: s.sh_size,
            nobits: s.sh_type == sh::SHT_NOBITS,
        })
        .collect();
    out.sort_by_key(|s| (s.addr, s.size));
    Ok(out)
}

fn section_name(table: &[u8], offset: usize) -> String {
    let Some(tail) = table.get(offset..) else {
        return format!("<section name at {offset:#x}>");
    };
    let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
    String::from_utf8_lossy(&tail[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_string_table() {
        let table = b"\0.text\0.data\0";
        assert_eq!(section_name(table, 1), ".text");
        assert_eq!(section_name(table, 7), ".data");
        assert_eq!(section_name(table, 0), "");
        assert!(section_name(table, 99).starts_with("<section"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let dir = std::env::temp_dir().join(format!("mmld-inspect-elf-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let p = dir.join("junk");
        std::fs::write(&p, b"\x7fELF\x02\x01\x01junkjunk").unwrap();
        assert!(ElfFacts::read_path(&p).is_err());
        std::fs::write(
            &p,
            b"not elf at all, but long enough to have a header of sixty-four bytes....",
        )
        .unwrap();
        assert!(ElfFacts::read_path(&p).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
