//! A static description of one ELF file, for `mmld info`.
//!
//! Owns: gathering what `readelf -d -l` would show (segments, dynamic
//! entries, relocation counts, symbol and version counts) from an inert
//! copy of the file in memory mmld owns (a file mapping would fault if the
//! file were truncated meanwhile). Must never: relocate, run code, or map
//! anything executable.

use std::collections::BTreeMap;
use std::path::Path;

use crate::arch::current as arch;
use crate::elf::{DynamicInfo, ElfFile};
use crate::error::{AttachContext, Result, Stage};
use crate::link::symbols::{self, SymbolTable};
use crate::map::Mapping;

/// What `mmld info` prints about one file: the facts `readelf -l -d
/// --dyn-syms` shows, as mmld reads them, gathered without running any of
/// the file. Made by [`describe`].
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Description {
    /// `DT_SONAME`.
    pub soname: Option<String>,
    /// `DT_NEEDED` names, in order.
    pub needed: Vec<String>,
    /// `DT_RPATH`.
    pub rpath: Option<String>,
    /// `DT_RUNPATH`.
    pub runpath: Option<String>,
    /// Bytes of address space the object spans, whole pages.
    pub span: u64,
    /// Largest `p_align` of any `PT_LOAD` (at least the page size).
    pub max_align: u64,
    /// The `PT_LOAD` segments, in address order.
    pub segments: Vec<SegmentInfo>,
    /// `PT_GNU_RELRO`: the addresses made read-only after relocation.
    pub relro: Option<std::ops::Range<u64>>,
    /// `PT_TLS`: the thread-local storage template.
    pub tls: Option<TlsInfo>,
    /// `Some(true)` if `PT_GNU_STACK` asks for an executable stack, `None`
    /// without `PT_GNU_STACK`.
    pub stack_executable: Option<bool>,
    /// `DT_FLAGS` (`DF_*` bits).
    pub flags: u64,
    /// `DT_FLAGS_1` (`DF_1_*` bits).
    pub flags_1: u64,
    /// Every entry of the dynamic section, in file order, before the first
    /// `DT_NULL`.
    pub dynamic: Vec<DynamicEntry>,
    /// Relocation counts by type name, across `DT_RELA` and `DT_JMPREL`.
    pub relocations: BTreeMap<String, usize>,
    /// Addresses relocated by `DT_RELR`.
    pub relr_addresses: usize,
    /// Words in `DT_RELR`, `None` without one.
    pub relr_words: Option<u64>,
    /// Every `.dynsym` entry, index 0 included (as `readelf --dyn-syms`).
    pub symbols: Vec<DynamicSymbol>,
    /// The symbol hash tables present: `GNU`, `SysV`, `GNU + SysV` or `none`.
    pub hash: &'static str,
    /// Versions the object defines (not the base version).
    pub version_definitions: Vec<String>,
    /// Versions the object requires, as `VERSION@file`.
    pub version_references: Vec<String>,
}

/// One `PT_LOAD` segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SegmentInfo {
    /// Index among the program headers.
    pub index: usize,
    /// `p_flags` (`PF_R`, `PF_W`, `PF_X`).
    pub flags: u32,
    /// `p_vaddr`.
    pub vaddr: u64,
    /// `p_memsz`.
    pub memsz: u64,
    /// `p_offset`.
    pub offset: u64,
    /// `p_filesz`.
    pub filesz: u64,
    /// `p_align`.
    pub align: u64,
}

/// The `PT_TLS` template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct TlsInfo {
    /// Address of the initialisation image.
    pub vaddr: u64,
    /// Bytes of the image (`.tdata`).
    pub filesz: u64,
    /// Bytes of the block (`.tdata` and `.tbss`).
    pub memsz: u64,
    /// Alignment of the block.
    pub align: u64,
}

/// One entry of the dynamic section.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct DynamicEntry {
    /// `d_tag` (`DT_*`).
    pub tag: u64,
    /// `d_val` / `d_ptr`, as in the file (addresses unbiased).
    pub value: u64,
    /// For the tags whose value is a `.dynstr` offset (`DT_NEEDED`,
    /// `DT_SONAME`, `DT_RPATH`, `DT_RUNPATH`), the string.
    pub string: Option<String>,
}

/// One `.dynsym` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct DynamicSymbol {
    /// Index in `.dynsym`.
    pub index: u32,
    /// `st_value` (unbiased).
    pub value: u64,
    /// `st_size`.
    pub size: u64,
    /// Symbol type (`STT_*`, the low four bits of `st_info`).
    pub kind: u8,
    /// Binding (`STB_*`, the high four bits of `st_info`).
    pub bind: u8,
    /// Visibility (`STV_*`, the low two bits of `st_other`).
    pub visibility: u8,
    /// `st_shndx`: 0 for an undefined symbol.
    pub section: u16,
    /// The name (lossily decoded).
    pub name: String,
    /// The version a definition carries or a reference asks for.
    pub version: Option<String>,
    /// For a versioned definition: whether it is hidden (`name@V`, not the
    /// default `name@@V`).
    pub hidden: bool,
}

impl Description {
    /// `.dynsym` entries with a definition (index 0 is never one).
    pub fn defined_symbols(&self) -> impl Iterator<Item = &DynamicSymbol> {
        self.symbols
            .iter()
            .filter(|s| s.index != 0 && s.section != symbols::SHN_UNDEF)
    }

    /// `.dynsym` entries that refer to another object's definition.
    pub fn undefined_symbols(&self) -> impl Iterator<Item = &DynamicSymbol> {
        self.symbols
            .iter()
            .filter(|s| s.index != 0 && s.section == symbols::SHN_UNDEF)
    }
}

/// Describe the file at `path` without running any of it.
///
/// ```
/// # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testlibs/libdemo.so");
/// let d = mmld::describe(path.as_ref())?;
/// assert_eq!(d.soname.as_deref(), Some("libdemo.so"));
/// assert!(d.needed.iter().any(|n| n == "libc.so.6"));
/// assert!(d.defined_symbols().any(|s| s.name == "add"));
/// # Ok::<(), mmld::Error>(())
/// ```
pub fn describe(path: &Path) -> Result<Description> {
    let elf = ElfFile::open(path).at(path, Stage::Read)?;
    let mapping =
        Mapping::copy_for_inspection(&elf.file, &elf.plan, &elf.dynamic).at(path, Stage::Map)?;
    crate::link::check_relocation_count(&elf.dynamic).at(path, Stage::Link)?;
    let table = SymbolTable::new(&mapping, &elf.dynamic).at(path, Stage::Link)?;
    let string = |o: u64| -> Result<String> {
        table
            .string(o)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .at(path, Stage::Read)
    };
    let d = &elf.dynamic;
    let mut relocations = BTreeMap::new();
    for range in [d.rela, d.jmprel].into_iter().flatten() {
        if let Some(bytes) = mapping.read_only(range.vaddr, range.size) {
            for chunk in bytes.as_slice().chunks_exact(24) {
                let info = u64::from_le_bytes(chunk[8..16].try_into().unwrap_or([0; 8]));
                let name = arch::relocation_name((info & 0xffff_ffff) as u32);
                *relocations.entry(name.to_string()).or_insert(0) += 1;
            }
        }
    }
    let relr_addresses = d
        .relr
        .and_then(|r| mapping.read_only(r.vaddr, r.size))
        .map(|b| {
            b.as_slice()
                .chunks_exact(8)
                .map(|c| {
                    let w = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
                    if w & 1 == 0 {
                        1
                    } else {
                        (w >> 1).count_ones() as usize
                    }
                })
                .sum()
        })
        .unwrap_or(0);
    let plan = &elf.plan;
    Ok(Description {
        soname: d.soname.map(string).transpose()?,
        needed: d.needed.iter().map(|&o| string(o)).collect::<Result<_>>()?,
        rpath: d.rpath.map(string).transpose()?,
        runpath: d.runpath.map(string).transpose()?,
        span: plan.span(),
        max_align: plan.max_align,
        segments: plan
            .segments
            .iter()
            .map(|g| SegmentInfo {
                index: g.index,
                flags: g.flags,
                vaddr: g.vaddr,
                memsz: g.memsz,
                offset: g.offset,
                filesz: g.filesz,
                align: g.align,
            })
            .collect(),
        relro: plan.relro.map(|r| r.vaddr..r.vaddr.saturating_add(r.size)),
        tls: plan.tls.map(|t| TlsInfo {
            vaddr: t.vaddr,
            filesz: t.filesz,
            memsz: t.memsz,
            align: t.align,
        }),
        stack_executable: plan.stack_executable,
        flags: d.flags,
        flags_1: d.flags_1,
        dynamic: dynamic_entries(d, &string),
        relocations,
        relr_addresses,
        relr_words: d.relr.map(|r| r.size / 8),
        symbols: dynamic_symbols(&table, path)?,
        hash: match (table.has_gnu_hash(), table.has_sysv_hash()) {
            (true, true) => "GNU + SysV",
            (true, false) => "GNU",
            (false, true) => "SysV",
            (false, false) => "none",
        },
        version_definitions: table
            .version_definitions()
            .filter_map(|v| string(u64::from(v.name)).ok())
            .collect(),
        version_references: table
            .version_references()
            .filter_map(|v| {
                let file = string(u64::from(v.file)).ok()?;
                Some(format!("{}@{file}", string(u64::from(v.name)).ok()?))
            })
            .collect(),
    })
}

/// The raw entries, with the strings of those that name one.
fn dynamic_entries(d: &DynamicInfo, string: &dyn Fn(u64) -> Result<String>) -> Vec<DynamicEntry> {
    use goblin::elf::dynamic::{DT_NEEDED, DT_RPATH, DT_RUNPATH, DT_SONAME};
    d.entries
        .iter()
        .map(|&(tag, value)| DynamicEntry {
            tag,
            value,
            string: matches!(tag, DT_NEEDED | DT_SONAME | DT_RPATH | DT_RUNPATH)
                .then(|| string(value).ok())
                .flatten(),
        })
        .collect()
}

/// Every `.dynsym` entry with its name and version.
fn dynamic_symbols(table: &SymbolTable, path: &Path) -> Result<Vec<DynamicSymbol>> {
    let text = |o: u64| -> Result<String> {
        table
            .string(o)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .at(path, Stage::Read)
    };
    let mut out = Vec::new();
    for index in 0..table.len() {
        let Some(s) = table.symbol(index) else { break };
        let (version, hidden) = if s.is_defined() {
            match table.defined_version(index) {
                Some((v, hidden)) => (Some(v), hidden),
                None => (None, false),
            }
        } else {
            (table.required_version(index), false)
        };
        out.push(DynamicSymbol {
            index,
            value: s.value,
            size: s.size,
            kind: s.kind(),
            bind: s.bind(),
            visibility: s.other & 0x3,
            section: s.shndx,
            name: text(u64::from(s.name))?,
            version: version.map(|v| text(u64::from(v.name))).transpose()?,
            hidden,
        });
    }
    Ok(out)
}
