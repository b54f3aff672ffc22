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
use crate::elf::{DynamicInfo, ElfFile, LoadPlan};
use crate::error::{AttachContext, Result, Stage};
use crate::link::symbols::{self, SymbolTable};
use crate::map::Mapping;

/// Everything `mmld info` prints.
#[derive(Debug, Clone)]
pub struct Description {
    pub plan: LoadPlan,
    pub dynamic: DynamicInfo,
    pub soname: Option<String>,
    pub needed: Vec<String>,
    pub rpath: Option<String>,
    pub runpath: Option<String>,
    /// Relocation counts by type name, across `DT_RELA` and `DT_JMPREL`.
    pub relocations: BTreeMap<String, usize>,
    /// Addresses relocated by `DT_RELR`.
    pub relr_addresses: usize,
    pub symbols_total: u32,
    pub symbols_defined: usize,
    pub symbols_undefined: usize,
    pub functions: usize,
    pub objects: usize,
    pub tls_symbols: usize,
    pub ifuncs: usize,
    pub hash: &'static str,
    pub version_definitions: Vec<String>,
    pub version_references: Vec<String>,
}

/// Describe the file at `path` without running any of it.
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
    let mut desc = Description {
        soname: d.soname.map(string).transpose()?,
        needed: d.needed.iter().map(|&o| string(o)).collect::<Result<_>>()?,
        rpath: d.rpath.map(string).transpose()?,
        runpath: d.runpath.map(string).transpose()?,
        relocations,
        relr_addresses,
        symbols_total: table.len(),
        symbols_defined: 0,
        symbols_undefined: 0,
        functions: 0,
        objects: 0,
        tls_symbols: 0,
        ifuncs: 0,
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
        plan: elf.plan.clone(),
        dynamic: elf.dynamic.clone(),
    };
    for i in 1..table.len() {
        let Some(s) = table.symbol(i) else { break };
        if s.is_defined() {
            desc.symbols_defined += 1;
            match s.kind() {
                symbols::STT_FUNC => desc.functions += 1,
                symbols::STT_OBJECT | symbols::STT_COMMON => desc.objects += 1,
                symbols::STT_TLS => desc.tls_symbols += 1,
                symbols::STT_GNU_IFUNC => desc.ifuncs += 1,
                _ => {}
            }
        } else {
            desc.symbols_undefined += 1;
        }
    }
    Ok(desc)
}
