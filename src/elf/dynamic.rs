//! Dynamic-section facts.
//!
//! Owns: decoding `PT_DYNAMIC` entries (with goblin's `Dyn` layout) into
//! [`DynamicInfo`], and checking that every table they point to lies inside
//! the object's image, has a sane entry size, and sits where LINK can trust
//! it not to change. Must never: dereference an address; LINK reads the
//! tables from the mapped image through `map::Image`.

use goblin::elf::dynamic as dt;

use super::plan::{LoadPlan, VRange};
use crate::error::{ErrorKind, KindResult};

/// Tags goblin (0.10) does not name (packed relative relocations, binutils
/// 2.38+): kept here until it does.
pub const DT_RELRSZ: u64 = 35;
pub const DT_RELR: u64 = 36;
pub const DT_RELRENT: u64 = 37;

pub const DF_SYMBOLIC: u64 = dt::DF_SYMBOLIC;
pub const DF_TEXTREL: u64 = dt::DF_TEXTREL;
pub const DF_BIND_NOW: u64 = dt::DF_BIND_NOW;
pub const DF_STATIC_TLS: u64 = dt::DF_STATIC_TLS;
pub const DF_1_NOW: u64 = dt::DF_1_NOW;
pub const DF_1_NODELETE: u64 = dt::DF_1_NODELETE;
/// `DF_1_PIE`: a position-independent executable, which glibc's `dlopen`
/// refuses.
pub const DF_1_PIE: u64 = dt::DF_1_PIE;

const DYN_SIZE: usize = dt::dyn64::SIZEOF_DYN;
const RELA_SIZE: u64 = goblin::elf::reloc::reloc64::SIZEOF_RELA as u64;
const SYM_SIZE: u64 = goblin::elf::sym::sym64::SIZEOF_SYM as u64;

/// The dynamic section, decoded and validated against the load plan.
#[derive(Debug, Clone, Default)]
pub struct DynamicInfo {
    /// `DT_NEEDED` string-table offsets, in order.
    pub needed: Vec<u64>,
    pub soname: Option<u64>,
    pub rpath: Option<u64>,
    pub runpath: Option<u64>,
    pub strtab: Option<VRange>,
    pub symtab: Option<u64>,
    pub hash: Option<u64>,
    pub gnu_hash: Option<u64>,
    pub versym: Option<u64>,
    pub verdef: Option<(u64, u64)>,
    pub verneed: Option<(u64, u64)>,
    pub rela: Option<VRange>,
    pub jmprel: Option<VRange>,
    pub relr: Option<VRange>,
    /// `DT_RELACOUNT`: how many leading `DT_RELA` entries are relative
    /// (0 when absent).
    pub relacount: u64,
    pub init: Option<u64>,
    pub fini: Option<u64>,
    pub init_array: Option<VRange>,
    pub fini_array: Option<VRange>,
    pub flags: u64,
    pub flags_1: u64,
    pub textrel: bool,
    pub symbolic: bool,
    /// Every `(tag, value)` up to `DT_NULL`, for `mmld info`.
    pub entries: Vec<(u64, u64)>,
}

/// Entries that mean something only with another one: a table's size and
/// entry size, a version table's count.
#[derive(Default)]
struct Companions {
    strsz: Option<u64>,
    syment: Option<u64>,
    /// (address, size, entry size or kind)
    rela: (Option<u64>, Option<u64>, Option<u64>),
    jmprel: (Option<u64>, Option<u64>, Option<u64>),
    relr: (Option<u64>, Option<u64>, Option<u64>),
    init_array: (Option<u64>, Option<u64>),
    fini_array: (Option<u64>, Option<u64>),
    verdefnum: Option<u64>,
    verneednum: Option<u64>,
    has_rel: bool,
}

impl DynamicInfo {
    /// Decode `bytes` (the file contents of `PT_DYNAMIC`) and validate every
    /// address against `plan`.
    pub fn parse(bytes: &[u8], plan: &LoadPlan) -> KindResult<DynamicInfo> {
        let (mut info, companions) = DynamicInfo::decode(bytes);
        info.complete(companions)?;
        info.validate_addresses(plan)?;
        Ok(info)
    }

    /// Every entry up to `DT_NULL`: what stands alone goes into the info,
    /// what needs another entry (a size, a count) into the companions.
    fn decode(bytes: &[u8]) -> (DynamicInfo, Companions) {
        let mut info = DynamicInfo::default();
        let mut c = Companions::default();
        for chunk in bytes.chunks_exact(DYN_SIZE) {
            let (tag, val) = decode_dyn(chunk);
            if tag == dt::DT_NULL {
                break;
            }
            info.entries.push((tag, val));
            match tag {
                dt::DT_NEEDED => info.needed.push(val),
                dt::DT_SONAME => info.soname = Some(val),
                dt::DT_RPATH => info.rpath = Some(val),
                dt::DT_RUNPATH => info.runpath = Some(val),
                dt::DT_STRTAB => {
                    info.strtab = Some(VRange {
                        vaddr: val,
                        size: 0,
                    })
                }
                dt::DT_STRSZ => c.strsz = Some(val),
                dt::DT_SYMTAB => info.symtab = Some(val),
                dt::DT_SYMENT => c.syment = Some(val),
                dt::DT_HASH => info.hash = Some(val),
                dt::DT_GNU_HASH => info.gnu_hash = Some(val),
                dt::DT_VERSYM => info.versym = Some(val),
                dt::DT_VERDEF => info.verdef = Some((val, 0)),
                dt::DT_VERDEFNUM => c.verdefnum = Some(val),
                dt::DT_VERNEED => info.verneed = Some((val, 0)),
                dt::DT_VERNEEDNUM => c.verneednum = Some(val),
                dt::DT_RELA => c.rela.0 = Some(val),
                dt::DT_RELASZ => c.rela.1 = Some(val),
                dt::DT_RELAENT => c.rela.2 = Some(val),
                dt::DT_RELACOUNT => info.relacount = val,
                dt::DT_REL | dt::DT_RELSZ => c.has_rel |= val != 0,
                dt::DT_JMPREL => c.jmprel.0 = Some(val),
                dt::DT_PLTRELSZ => c.jmprel.1 = Some(val),
                dt::DT_PLTREL => c.jmprel.2 = Some(val),
                DT_RELR => c.relr.0 = Some(val),
                DT_RELRSZ => c.relr.1 = Some(val),
                DT_RELRENT => c.relr.2 = Some(val),
                dt::DT_INIT => info.init = Some(val),
                dt::DT_FINI => info.fini = Some(val),
                dt::DT_INIT_ARRAY => c.init_array.0 = Some(val),
                dt::DT_INIT_ARRAYSZ => c.init_array.1 = Some(val),
                dt::DT_FINI_ARRAY => c.fini_array.0 = Some(val),
                dt::DT_FINI_ARRAYSZ => c.fini_array.1 = Some(val),
                dt::DT_FLAGS => info.flags |= val,
                dt::DT_FLAGS_1 => info.flags_1 |= val,
                dt::DT_TEXTREL => info.textrel = true,
                dt::DT_SYMBOLIC => info.symbolic = true,
                // The old spelling of DF_BIND_NOW.
                dt::DT_BIND_NOW => info.flags |= DF_BIND_NOW,
                _ => {}
            }
        }
        (info, c)
    }

    /// Pair each table with its size and entry size, and check them.
    fn complete(&mut self, c: Companions) -> KindResult<()> {
        let info = self;
        info.textrel |= info.flags & DF_TEXTREL != 0;
        info.symbolic |= info.flags & DF_SYMBOLIC != 0;
        if c.has_rel {
            return Err(ErrorKind::MalformedTable {
                table: "dynamic section",
                detail: "DT_REL relocations (without addends) are not used on x86-64".into(),
            });
        }

        if let Some(s) = info.strtab.as_mut() {
            s.size = c.strsz.ok_or(ErrorKind::MissingDynamicEntry {
                tag: "DT_STRSZ",
                needed_by: "DT_STRTAB",
            })?;
        } else if !info.needed.is_empty() || info.soname.is_some() || info.symtab.is_some() {
            return Err(ErrorKind::MissingDynamicEntry {
                tag: "DT_STRTAB",
                needed_by: "DT_NEEDED, DT_SONAME or DT_SYMTAB",
            });
        }
        if let Some(e) = c.syment
            && e != SYM_SIZE
        {
            return Err(ErrorKind::BadEntrySize {
                what: "DT_SYMENT",
                found: e,
                expected: SYM_SIZE,
            });
        }
        info.rela = table_with_size("DT_RELA", c.rela.0, c.rela.1, RELA_SIZE)?;
        if let Some(e) = c.rela.2
            && e != RELA_SIZE
        {
            return Err(ErrorKind::BadEntrySize {
                what: "DT_RELAENT",
                found: e,
                expected: RELA_SIZE,
            });
        }
        info.jmprel = table_with_size("DT_JMPREL", c.jmprel.0, c.jmprel.1, RELA_SIZE)?;
        if info.jmprel.is_some() && c.jmprel.2.is_some_and(|k| k != dt::DT_RELA) {
            return Err(ErrorKind::MalformedTable {
                table: "DT_PLTREL",
                detail: format!(
                    "PLT relocations are of kind {}, but x86-64 uses DT_RELA (7)",
                    c.jmprel.2.unwrap_or(0)
                ),
            });
        }
        info.relr = table_with_size("DT_RELR", c.relr.0, c.relr.1, 8)?;
        if let Some(e) = c.relr.2
            && e != 8
        {
            return Err(ErrorKind::BadEntrySize {
                what: "DT_RELRENT",
                found: e,
                expected: 8,
            });
        }
        info.init_array = table_with_size("DT_INIT_ARRAY", c.init_array.0, c.init_array.1, 8)?;
        info.fini_array = table_with_size("DT_FINI_ARRAY", c.fini_array.0, c.fini_array.1, 8)?;
        if let Some((addr, _)) = info.verdef {
            info.verdef = Some((addr, c.verdefnum.unwrap_or(0)));
        }
        if let Some((addr, _)) = info.verneed {
            info.verneed = Some((addr, c.verneednum.unwrap_or(0)));
        }
        Ok(())
    }

    fn validate_addresses(&self, plan: &LoadPlan) -> KindResult<()> {
        // Tables LINK reads in place must sit in segments that never become
        // writable: that is what lets LINK hold plain slices of them.
        let read_only: [(&'static str, Option<VRange>); 4] = [
            ("DT_STRTAB", self.strtab),
            ("DT_RELA", self.rela),
            ("DT_JMPREL", self.jmprel),
            ("DT_RELR", self.relr),
        ];
        for (tag, range) in read_only {
            if let Some(r) = range {
                check_range(plan, tag, r, true)?;
            }
        }
        // Tables whose length LINK learns only later: the start must be in
        // a read-only segment now; LINK bounds the rest by that segment.
        let starts: [(&'static str, Option<u64>); 6] = [
            ("DT_SYMTAB", self.symtab),
            ("DT_HASH", self.hash),
            ("DT_GNU_HASH", self.gnu_hash),
            ("DT_VERSYM", self.versym),
            ("DT_VERDEF", self.verdef.map(|v| v.0)),
            ("DT_VERNEED", self.verneed.map(|v| v.0)),
        ];
        for (tag, addr) in starts {
            if let Some(vaddr) = addr {
                check_range(plan, tag, VRange { vaddr, size: 1 }, true)?;
            }
        }
        // Arrays of code pointers are written by relocation, then read.
        for (tag, range) in [
            ("DT_INIT_ARRAY", self.init_array),
            ("DT_FINI_ARRAY", self.fini_array),
        ] {
            if let Some(r) = range {
                check_range(plan, tag, r, false)?;
            }
        }
        for (tag, addr) in [("DT_INIT", self.init), ("DT_FINI", self.fini)] {
            if let Some(vaddr) = addr
                && !plan
                    .segment_containing(vaddr, 1)
                    .is_some_and(|s| s.executable())
            {
                return Err(ErrorKind::BadCodePointer {
                    what: tag.to_string(),
                    addr: vaddr,
                });
            }
        }
        Ok(())
    }

    pub fn bind_now(&self) -> bool {
        self.flags & DF_BIND_NOW != 0 || self.flags_1 & DF_1_NOW != 0
    }

    pub fn nodelete(&self) -> bool {
        self.flags_1 & DF_1_NODELETE != 0
    }

    /// A position-independent executable (`DF_1_PIE`), not a library.
    pub fn is_pie(&self) -> bool {
        self.flags_1 & DF_1_PIE != 0
    }
}

fn decode_dyn(chunk: &[u8]) -> (u64, u64) {
    let mut tag = [0u8; 8];
    let mut val = [0u8; 8];
    // `chunks_exact(16)` guarantees both halves exist.
    tag.copy_from_slice(chunk.get(..8).unwrap_or(&[0; 8]));
    val.copy_from_slice(chunk.get(8..16).unwrap_or(&[0; 8]));
    (u64::from_le_bytes(tag), u64::from_le_bytes(val))
}

fn table_with_size(
    what: &'static str,
    addr: Option<u64>,
    size: Option<u64>,
    unit: u64,
) -> KindResult<Option<VRange>> {
    match (addr, size) {
        (None, None) => Ok(None),
        (Some(_), None) | (None, Some(_)) => Err(ErrorKind::MalformedTable {
            table: what,
            detail: "address and size entries must come together".into(),
        }),
        (Some(vaddr), Some(size)) => {
            if size % unit != 0 {
                return Err(ErrorKind::BadTableSize { what, size, unit });
            }
            Ok((size > 0).then_some(VRange { vaddr, size }))
        }
    }
}

fn check_range(plan: &LoadPlan, tag: &'static str, r: VRange, read_only: bool) -> KindResult<()> {
    let end = r.vaddr.saturating_add(r.size);
    // The start decides the segment: a start outside every segment is one
    // error, a table that starts well but runs on (a size entry too large)
    // is another.
    let seg = plan
        .segment_containing(r.vaddr, 1)
        .ok_or(ErrorKind::TableOutsideImage {
            tag,
            addr: r.vaddr,
            end,
        })?;
    // A table must come from the file, not from zero-filled .bss.
    if r.vaddr
        .checked_add(r.size)
        .is_none_or(|e| e > seg.file_end_vaddr())
    {
        return Err(ErrorKind::TableOverrunsSegment {
            tag,
            addr: r.vaddr,
            end,
            segment_end: seg.file_end_vaddr(),
        });
    }
    if read_only && seg.writable() {
        return Err(ErrorKind::TableInWritableSegment { tag, addr: r.vaddr });
    }
    Ok(())
}
