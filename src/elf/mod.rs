//! READ: file bytes to a validated load plan and dynamic-section facts.
//!
//! Owns: opening the file safely (no blocking on FIFOs, no directories),
//! reading only the headers and the dynamic section, and validating them.
//! Must never: map memory or follow addresses into the image; everything
//! here is pure, bounded work on bytes, which makes it the fuzz surface.

pub mod backed;
mod dynamic;
pub mod limits;
mod plan;

use std::fs::File;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

pub use dynamic::*;
pub use plan::*;

use crate::error::{ErrorKind, KindResult};

/// An opened, validated ELF shared object, not yet mapped.
#[derive(Debug)]
pub struct ElfFile {
    pub file: File,
    pub dev: u64,
    pub ino: u64,
    pub plan: LoadPlan,
    pub dynamic: DynamicInfo,
    /// The `fstat` of the open file (sizes and times: the identity shared
    /// relocations check, without a second `fstat`).
    pub meta: std::fs::Metadata,
}

/// Bytes read up front: the ELF header and a program header table of up
/// to 17 entries right after it (real libraries have 9-14; glibc reads
/// 832 bytes). A larger table costs a second read. Every byte of the
/// buffer is zeroed first and may be the first touch of a heap page, so
/// it is no larger than that.
const FIRST_READ: usize = 1024;

impl ElfFile {
    /// Open `path` and validate its headers and dynamic section.
    pub fn open(path: &Path) -> KindResult<ElfFile> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            // O_NONBLOCK: opening a FIFO must fail fast, not wait for a writer.
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)
            .map_err(|source| ErrorKind::Io { op: "open", source })?;
        let meta = file.metadata().map_err(|source| ErrorKind::Io {
            op: "fstat",
            source,
        })?;
        let ft = meta.file_type();
        if !ft.is_file() {
            let what = if ft.is_dir() {
                "a directory"
            } else if ft.is_fifo() {
                "a FIFO"
            } else if ft.is_socket() {
                "a socket"
            } else if ft.is_char_device() {
                "a character device"
            } else if ft.is_block_device() {
                "a block device"
            } else {
                "not a regular file"
            };
            return Err(ErrorKind::NotRegularFile { what });
        }
        let file_len = meta.len();
        let mut head = vec![
            0u8;
            usize::try_from(file_len)
                .unwrap_or(FIRST_READ)
                .min(FIRST_READ)
        ];
        read_exact_at(&file, &mut head, 0, "reading the ELF header")?;
        // Read exactly the program header table (at most 65535 * 56 bytes),
        // wherever the header says it is: never "everything up to it".
        let (ph_offset, ph_len) = LoadPlan::program_header_range(&head, file_len)?;
        let in_head = usize::try_from(ph_offset)
            .ok()
            .and_then(|start| head.get(start..start.checked_add(usize::try_from(ph_len).ok()?)?));
        let plan = match in_head {
            Some(table) => LoadPlan::parse_parts(&head, table, file_len)?,
            None => {
                let mut table = vec![0u8; usize::try_from(ph_len).unwrap_or(0)];
                read_exact_at(&file, &mut table, ph_offset, "reading program headers")?;
                LoadPlan::parse_parts(&head, &table, file_len)?
            }
        };
        let dynamic = match plan.dynamic_file {
            Some((offset, size)) => {
                // The plan checked offset + size <= file_len.
                let mut bytes = vec![0u8; usize::try_from(size).unwrap_or(0)];
                read_exact_at(&file, &mut bytes, offset, "reading the dynamic section")?;
                DynamicInfo::parse(&bytes, &plan)?
            }
            None => return Err(ErrorKind::NoDynamic),
        };
        Ok(ElfFile {
            dev: meta.dev(),
            ino: meta.ino(),
            file,
            plan,
            dynamic,
            meta,
        })
    }
}

/// Parse headers and dynamic section from bytes already in memory.
pub fn parse_bytes(bytes: &[u8]) -> KindResult<(LoadPlan, DynamicInfo)> {
    let plan = LoadPlan::parse(bytes, bytes.len() as u64)?;
    let (offset, size) = plan.dynamic_file.ok_or(ErrorKind::NoDynamic)?;
    // parse() checked offset + size <= bytes.len().
    let dyn_bytes = usize::try_from(offset)
        .ok()
        .and_then(|o| bytes.get(o..o.checked_add(usize::try_from(size).ok()?)?))
        .ok_or(ErrorKind::DynamicOutsideImage {
            vaddr: plan.dynamic.map_or(0, |d| d.vaddr),
            size,
        })?;
    let dynamic = DynamicInfo::parse(dyn_bytes, &plan)?;
    Ok((plan, dynamic))
}

fn read_exact_at(file: &File, buf: &mut [u8], offset: u64, op: &'static str) -> KindResult<()> {
    file.read_exact_at(buf, offset)
        .map_err(|source| ErrorKind::Io { op, source })
}
