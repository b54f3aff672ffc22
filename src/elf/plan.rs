//! The load plan: what to map, where, with which protection.
//!
//! Owns: turning the ELF header and program headers into a validated
//! [`LoadPlan`]. Every offset, size and address that MAP will use is checked
//! here, so MAP can trust the plan. Must never: allocate in proportion to
//! anything the file claims without a bound, or touch memory other than the
//! bytes it is given.

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::header as eh;
use goblin::elf::program_header::{self as ph, ProgramHeader};

use crate::arch::current::{MACHINE, PAGE_SIZE};
use crate::error::{ErrorKind, KindResult};

/// Size of the ELF64 file header.
pub const EHDR_SIZE: usize = eh::header64::SIZEOF_EHDR;
/// Size of one ELF64 program header.
pub const PHDR_SIZE: usize = ph::program_header64::SIZEOF_PHDR;
/// Largest span mmld agrees to reserve for one object (64 GiB). The biggest
/// real libraries are a few hundred MiB; a larger claim is a corrupt or
/// hostile file, refused before any `mmap`.
pub const MAX_SPAN: u64 = 1 << 36;
/// Largest `PT_TLS` block (and alignment) accepted: every thread that uses
/// the module gets one block. Real libraries use kilobytes.
pub const MAX_TLS: u64 = 1 << 28;
/// Largest `PT_DYNAMIC` accepted (65536 entries): READ copies it out of the
/// file before mapping. Real dynamic sections have a few dozen entries.
pub const MAX_DYNAMIC: u64 = 1 << 20;

pub const PF_X: u32 = ph::PF_X;
pub const PF_W: u32 = ph::PF_W;
pub const PF_R: u32 = ph::PF_R;

/// One `PT_LOAD` segment, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Index in the program header table, for messages.
    pub index: usize,
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub filesz: u64,
    /// `PF_R | PF_W | PF_X` bits.
    pub flags: u32,
    pub align: u64,
}

impl Segment {
    pub fn end(&self) -> u64 {
        // Validated in `LoadPlan::parse`: cannot overflow.
        self.vaddr + self.memsz
    }
    pub fn file_end_vaddr(&self) -> u64 {
        self.vaddr + self.filesz
    }
    pub fn readable(&self) -> bool {
        self.flags & PF_R != 0
    }
    pub fn writable(&self) -> bool {
        self.flags & PF_W != 0
    }
    pub fn executable(&self) -> bool {
        self.flags & PF_X != 0
    }
    /// Is `vaddr..vaddr+len` wholly inside this segment's memory image?
    pub fn contains(&self, vaddr: u64, len: u64) -> bool {
        vaddr >= self.vaddr && vaddr.checked_add(len).is_some_and(|end| end <= self.end())
    }
}

/// An address range in the object's own (unbiased) address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VRange {
    pub vaddr: u64,
    pub size: u64,
}

/// The `PT_TLS` template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsTemplate {
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub align: u64,
}

/// Everything MAP needs, validated.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub e_type: u16,
    pub entry: u64,
    /// `PT_LOAD`s in address order, disjoint.
    pub segments: Vec<Segment>,
    /// Lowest mapped address, page-aligned down.
    pub min_vaddr: u64,
    /// End of the highest segment, page-aligned up.
    pub max_vaddr: u64,
    /// Largest `p_align` of any `PT_LOAD` (at least the page size).
    pub max_align: u64,
    pub dynamic: Option<VRange>,
    /// File range of `PT_DYNAMIC`, for reading it before mapping.
    pub dynamic_file: Option<(u64, u64)>,
    pub tls: Option<TlsTemplate>,
    pub relro: Option<VRange>,
    pub eh_frame_hdr: Option<VRange>,
    /// `Some(true)` if `PT_GNU_STACK` asks for an executable stack,
    /// `None` when there is no `PT_GNU_STACK` at all.
    pub stack_executable: Option<bool>,
    /// Address of the program headers in memory, if they are mapped.
    pub phdr_vaddr: Option<u64>,
    pub phnum: u16,
    /// The raw program headers, for `mmld info`.
    pub program_headers: Vec<ProgramHeader>,
    pub file_len: u64,
}

impl LoadPlan {
    /// File range `(offset, length)` of the program header table, from the
    /// ELF header bytes, checked to lie inside a file of `file_len` bytes.
    /// The reader uses it to read exactly the table, wherever it is.
    pub fn program_header_range(ehdr: &[u8], file_len: u64) -> KindResult<(u64, u64)> {
        let header = parse_ident_and_header(ehdr, file_len)?;
        table_range(&header, file_len)
    }

    /// Validate the header and program headers. `bytes` must start at file
    /// offset 0 and hold at least the header and program header table;
    /// `file_len` is the size of the whole file.
    pub fn parse(bytes: &[u8], file_len: u64) -> KindResult<LoadPlan> {
        let header = parse_ident_and_header(bytes, file_len)?;
        let (offset, len) = table_range(&header, file_len)?;
        let table = usize::try_from(offset)
            .ok()
            .and_then(|start| bytes.get(start..start.checked_add(usize::try_from(len).ok()?)?))
            .ok_or_else(|| {
                ErrorKind::BadHeader(format!(
                    "program header table ends at {:#x}, but only {:#x} bytes were read",
                    offset.saturating_add(len),
                    bytes.len()
                ))
            })?;
        Self::from_header_and_table(&header, table, file_len)
    }

    /// Validate the header (in `ehdr`, the first bytes of the file) and the
    /// program header table (in `table`, read from the range
    /// [`program_header_range`](Self::program_header_range) returned).
    pub fn parse_parts(ehdr: &[u8], table: &[u8], file_len: u64) -> KindResult<LoadPlan> {
        let header = parse_ident_and_header(ehdr, file_len)?;
        let (offset, len) = table_range(&header, file_len)?;
        if table.len() as u64 != len {
            return Err(ErrorKind::BadHeader(format!(
                "program header table at {offset:#x} is {len:#x} bytes, but {:#x} were read",
                table.len()
            )));
        }
        Self::from_header_and_table(&header, table, file_len)
    }

    fn from_header_and_table(
        header: &goblin::elf64::header::Header,
        table: &[u8],
        file_len: u64,
    ) -> KindResult<LoadPlan> {
        let ctx = Ctx::new(Container::Big, Endian::Little);
        let phdrs = ProgramHeader::parse(table, 0, usize::from(header.e_phnum), ctx)
            .map_err(|e| ErrorKind::BadHeader(format!("program headers: {e}")))?;
        Self::from_program_headers(
            header.e_type,
            header.e_entry,
            header.e_phoff,
            phdrs,
            file_len,
        )
    }

    fn from_program_headers(
        e_type: u16,
        entry: u64,
        phoff: u64,
        phdrs: Vec<ProgramHeader>,
        file_len: u64,
    ) -> KindResult<LoadPlan> {
        let mut segments: Vec<Segment> = Vec::new();
        let mut plan = LoadPlan {
            e_type,
            entry,
            segments: Vec::new(),
            min_vaddr: 0,
            max_vaddr: 0,
            max_align: PAGE_SIZE,
            dynamic: None,
            dynamic_file: None,
            tls: None,
            relro: None,
            eh_frame_hdr: None,
            stack_executable: None,
            phdr_vaddr: None,
            phnum: u16::try_from(phdrs.len()).unwrap_or(u16::MAX),
            program_headers: Vec::new(),
            file_len,
        };
        let mut explicit_phdr = None;
        for (index, p) in phdrs.iter().enumerate() {
            match p.p_type {
                ph::PT_LOAD => {
                    if p.p_memsz == 0 {
                        continue;
                    }
                    let seg = validate_load(index, p, file_len)?;
                    check_after(segments.last(), &seg, index)?;
                    plan.max_align = plan.max_align.max(seg.align);
                    segments.push(seg);
                }
                ph::PT_DYNAMIC => {
                    if p.p_memsz > MAX_DYNAMIC || p.p_filesz > MAX_DYNAMIC {
                        return Err(ErrorKind::SegmentTooLarge {
                            index,
                            vaddr: p.p_vaddr,
                            memsz: p.p_memsz.max(p.p_filesz),
                            limit: MAX_DYNAMIC,
                        });
                    }
                    plan.dynamic = Some(VRange {
                        vaddr: p.p_vaddr,
                        size: p.p_memsz,
                    });
                    plan.dynamic_file = Some((p.p_offset, p.p_filesz));
                }
                ph::PT_TLS => {
                    plan.tls = Some(tls_template(index, p)?);
                }
                ph::PT_GNU_RELRO => {
                    plan.relro = Some(VRange {
                        vaddr: p.p_vaddr,
                        size: p.p_memsz,
                    })
                }
                ph::PT_GNU_EH_FRAME => {
                    plan.eh_frame_hdr = Some(VRange {
                        vaddr: p.p_vaddr,
                        size: p.p_memsz,
                    })
                }
                ph::PT_GNU_STACK => plan.stack_executable = Some(p.p_flags & PF_X != 0),
                ph::PT_PHDR => explicit_phdr = Some(p.p_vaddr),
                _ => {}
            }
        }
        let (Some(first), Some(last)) = (segments.first(), segments.last()) else {
            return Err(ErrorKind::NoLoadSegments);
        };
        plan.min_vaddr = page_down(first.vaddr);
        plan.max_vaddr = page_up(last.end()).ok_or(ErrorKind::SegmentTooLarge {
            index: last.index,
            vaddr: last.vaddr,
            memsz: last.memsz,
            limit: MAX_SPAN,
        })?;
        if plan.max_vaddr - plan.min_vaddr > MAX_SPAN {
            return Err(ErrorKind::SegmentTooLarge {
                index: last.index,
                vaddr: last.vaddr,
                memsz: last.memsz,
                limit: MAX_SPAN,
            });
        }

        check_ranges(&plan, &segments)?;
        plan.phdr_vaddr = phdr_address(explicit_phdr, phoff, &phdrs, &segments);
        plan.segments = segments;
        plan.program_headers = phdrs;
        Ok(plan)
    }

    /// The segment whose memory image holds `vaddr..vaddr+len`, if any.
    pub fn segment_containing(&self, vaddr: u64, len: u64) -> Option<&Segment> {
        // Few segments (usually 4): a linear scan beats a binary search.
        self.segments.iter().find(|s| s.contains(vaddr, len))
    }

    /// Size of the address span to reserve.
    pub fn span(&self) -> u64 {
        self.max_vaddr - self.min_vaddr
    }
}

fn validate_load(index: usize, p: &ProgramHeader, file_len: u64) -> KindResult<Segment> {
    if p.p_filesz > p.p_memsz {
        return Err(ErrorKind::FileSizeExceedsMemSize {
            index,
            filesz: p.p_filesz,
            memsz: p.p_memsz,
        });
    }
    if p.p_align > 1 && !p.p_align.is_power_of_two() {
        return Err(ErrorKind::BadAlignment {
            index,
            align: p.p_align,
        });
    }
    if p.p_offset % PAGE_SIZE != p.p_vaddr % PAGE_SIZE {
        return Err(ErrorKind::MisalignedSegment {
            index,
            offset: p.p_offset,
            vaddr: p.p_vaddr,
        });
    }
    let file_end = p.p_offset.checked_add(p.p_filesz);
    if p.p_filesz > 0 && file_end.is_none_or(|end| end > file_len) {
        return Err(ErrorKind::SegmentOutOfFile {
            index,
            offset: p.p_offset,
            end: file_end.unwrap_or(u64::MAX),
            file_len,
        });
    }
    let too_large = ErrorKind::SegmentTooLarge {
        index,
        vaddr: p.p_vaddr,
        memsz: p.p_memsz,
        limit: MAX_SPAN,
    };
    if p.p_memsz > MAX_SPAN || p.p_vaddr > (1 << 47) {
        return Err(too_large);
    }
    Ok(Segment {
        index,
        vaddr: p.p_vaddr,
        memsz: p.p_memsz,
        offset: p.p_offset,
        filesz: p.p_filesz,
        flags: p.p_flags,
        align: p.p_align.max(PAGE_SIZE),
    })
}

/// The program header table's file range, checked against the file size
/// without overflow.
fn table_range(header: &goblin::elf64::header::Header, file_len: u64) -> KindResult<(u64, u64)> {
    let offset = header.e_phoff;
    let count = header.e_phnum;
    let len = u64::from(count) * PHDR_SIZE as u64;
    match offset.checked_add(len) {
        Some(end) if end <= file_len => Ok((offset, len)),
        _ => Err(ErrorKind::ProgramHeadersOutOfFile {
            offset,
            count,
            file_len,
        }),
    }
}

/// Check `e_ident` byte by byte (so each mismatch has its own message), then
/// let goblin decode the rest of the ELF64 header.
fn parse_ident_and_header(
    bytes: &[u8],
    file_len: u64,
) -> KindResult<goblin::elf64::header::Header> {
    let ident = bytes.get(..eh::SIZEOF_IDENT).ok_or(ErrorKind::TooSmall {
        len: bytes.len() as u64,
    })?;
    let magic = [ident[0], ident[1], ident[2], ident[3]];
    if magic != *eh::ELFMAG {
        return Err(ErrorKind::NotElf { magic });
    }
    if ident[eh::EI_CLASS] != eh::ELFCLASS64 {
        return Err(ErrorKind::Not64Bit {
            class: ident[eh::EI_CLASS],
        });
    }
    if ident[eh::EI_DATA] != eh::ELFDATA2LSB {
        return Err(ErrorKind::NotLittleEndian {
            data: ident[eh::EI_DATA],
        });
    }
    if bytes.len() < EHDR_SIZE || file_len < EHDR_SIZE as u64 {
        return Err(ErrorKind::TooSmall {
            len: file_len.min(bytes.len() as u64),
        });
    }
    let header = goblin::elf64::header::Header::parse(bytes)
        .map_err(|e| ErrorKind::BadHeader(e.to_string()))?;
    if header.e_machine != MACHINE {
        return Err(ErrorKind::WrongMachine {
            machine: header.e_machine,
            name: eh::machine_to_str(header.e_machine),
        });
    }
    if header.e_version != 1 {
        return Err(ErrorKind::BadVersion {
            version: header.e_version,
        });
    }
    if header.e_type != eh::ET_DYN {
        return Err(ErrorKind::NotSharedObject {
            e_type: header.e_type,
            name: eh::et_to_str(header.e_type),
        });
    }
    if header.e_phnum > 0 && usize::from(header.e_phentsize) != PHDR_SIZE {
        return Err(ErrorKind::BadEntrySize {
            what: "e_phentsize",
            found: u64::from(header.e_phentsize),
            expected: PHDR_SIZE as u64,
        });
    }
    if header.e_phnum == 0 || header.e_phnum == 0xffff {
        return Err(ErrorKind::BadHeader(format!(
            "e_phnum is {} (no program headers, or the PN_XNUM escape, which shared objects never need)",
            header.e_phnum
        )));
    }
    Ok(header)
}

pub fn page_down(v: u64) -> u64 {
    v & !(PAGE_SIZE - 1)
}

pub fn page_up(v: u64) -> Option<u64> {
    v.checked_add(PAGE_SIZE - 1).map(page_down)
}

/// A `PT_LOAD` must start after the one before it ends, and on a later
/// page.
fn check_after(prev: Option<&Segment>, seg: &Segment, index: usize) -> KindResult<()> {
    let Some(prev) = prev else { return Ok(()) };
    if seg.vaddr < prev.end() {
        return Err(ErrorKind::SegmentsOverlap {
            index,
            vaddr: seg.vaddr,
            previous_end: prev.end(),
        });
    }
    // MAP gives each segment whole pages; a shared page
    // would get the later segment's protection and
    // contents. No real linker emits this layout.
    if page_up(prev.end()).is_none_or(|end| page_down(seg.vaddr) < end) {
        return Err(ErrorKind::SegmentsSharePage {
            index,
            previous: prev.index,
            vaddr: seg.vaddr,
            page: page_down(seg.vaddr),
        });
    }
    Ok(())
}

/// The TLS template of a `PT_TLS`, its size and alignment bounded.
fn tls_template(index: usize, p: &ProgramHeader) -> KindResult<TlsTemplate> {
    if p.p_filesz > p.p_memsz {
        return Err(ErrorKind::FileSizeExceedsMemSize {
            index,
            filesz: p.p_filesz,
            memsz: p.p_memsz,
        });
    }
    if (p.p_align > 1 && !p.p_align.is_power_of_two()) || p.p_align > MAX_TLS {
        return Err(ErrorKind::BadAlignment {
            index,
            align: p.p_align,
        });
    }
    // Every thread that touches the module gets a block of
    // p_memsz bytes: an absurd size is refused here.
    if p.p_memsz > MAX_TLS {
        return Err(ErrorKind::SegmentTooLarge {
            index,
            vaddr: p.p_vaddr,
            memsz: p.p_memsz,
            limit: MAX_TLS,
        });
    }
    Ok(TlsTemplate {
        vaddr: p.p_vaddr,
        filesz: p.p_filesz,
        memsz: p.p_memsz,
        align: p.p_align.max(1),
    })
}

/// Every auxiliary range that later stages read must lie in the image.
fn check_ranges(plan: &LoadPlan, segments: &[Segment]) -> KindResult<()> {
    let file_len = plan.file_len;
    let inside = |r: &VRange| segments.iter().any(|s| s.contains(r.vaddr, r.size));
    if let Some(d) = plan.dynamic {
        let (off, fsz) = plan.dynamic_file.unwrap_or((0, 0));
        // The section is read from the file before mapping, so its file
        // offset must be where the segment puts its address: otherwise
        // the bytes READ checks are not the bytes in memory.
        let in_file = segments.iter().any(|s| {
            s.contains(d.vaddr, d.size)
                && d.vaddr
                    .checked_add(d.size)
                    .is_some_and(|e| e <= s.file_end_vaddr())
                && off.checked_sub(s.offset) == Some(d.vaddr - s.vaddr)
        });
        let file_ok = off.checked_add(fsz).is_some_and(|e| e <= file_len) && fsz <= d.size;
        if !in_file || !file_ok {
            return Err(ErrorKind::DynamicOutsideImage {
                vaddr: d.vaddr,
                size: d.size,
            });
        }
    } else {
        return Err(ErrorKind::NoDynamic);
    }
    // RELRO is made read-only after relocation; anywhere but inside a
    // writable segment that would strip another segment's permissions.
    if let Some(r) = plan.relro
        && !segments
            .iter()
            .any(|s| s.writable() && s.contains(r.vaddr, r.size))
    {
        return Err(ErrorKind::RelroNotWritable {
            vaddr: r.vaddr,
            end: r.vaddr.saturating_add(r.size),
        });
    }
    if let Some(r) = plan.eh_frame_hdr
        && !inside(&r)
    {
        return Err(ErrorKind::TableOutsideImage {
            tag: "PT_GNU_EH_FRAME",
            addr: r.vaddr,
            end: r.vaddr.saturating_add(r.size),
        });
    }
    if let Some(t) = plan.tls {
        // The TLS image (.tdata) is copied out for every module
        // instance: it must come from the file, not a claimed .bss.
        let in_file = segments.iter().any(|s| {
            s.contains(t.vaddr, t.filesz)
                && t.vaddr
                    .checked_add(t.filesz)
                    .is_some_and(|e| e <= s.file_end_vaddr())
        });
        if t.filesz > 0 && !in_file {
            return Err(ErrorKind::TableOutsideImage {
                tag: "PT_TLS",
                addr: t.vaddr,
                end: t.vaddr.saturating_add(t.filesz),
            });
        }
    }
    Ok(())
}

/// The program headers' own address: `PT_PHDR` when present, otherwise the
/// segment whose file part holds `e_phoff` (as glibc computes it).
fn phdr_address(
    explicit_phdr: Option<u64>,
    phoff: u64,
    phdrs: &[ProgramHeader],
    segments: &[Segment],
) -> Option<u64> {
    let inside = |r: &VRange| segments.iter().any(|s| s.contains(r.vaddr, r.size));
    let table_len = phdrs.len() as u64 * PHDR_SIZE as u64;
    explicit_phdr
        .filter(|v| {
            inside(&VRange {
                vaddr: *v,
                size: table_len,
            })
        })
        .or_else(|| {
            segments.iter().find_map(|s| {
                let rel = phoff.checked_sub(s.offset)?;
                (rel.checked_add(table_len)? <= s.filesz).then(|| s.vaddr + rel)
            })
        })
}
