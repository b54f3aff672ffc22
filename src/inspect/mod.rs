//! SEE: what is mapped, measured with the kernel's own accounting.
//!
//! Owns: reading `/proc/PID/maps`, `/proc/PID/smaps`, `/proc/PID/pagemap`,
//! `/proc/kpagecount` and `/proc/kpageflags` (through the `procfs` crate),
//! page-cache residency (`mincore`), and the section headers of the ELF files
//! behind the mappings (through goblin; this is not the load path). From
//! these it builds the reports behind `mmld maps` and `mmld share`: which
//! part of an object each mapping is (text, read-only data, RELRO, data,
//! `.bss`, gap), which sections it covers, how many of its pages are resident,
//! and how many physical copies of them exist across processes; and the
//! pictures of those reports (`picture`, `svg`), drawn from the same page
//! states the reports count.
//!
//! Must never: change, protect or unmap a mapping it did not create, or
//! write to any process's memory. The only mappings it creates are private
//! read-only views of files, made to ask `mincore` about the page cache and
//! unmapped before the call returns (see `sys`).
//!
//! Two notions of "resident" are kept apart on purpose:
//!
//! - **resident** (in a process): the page is present in that process's page
//!   tables: `/proc/PID/pagemap` bit 63, the same thing smaps' `Rss` counts.
//!   The shared zero page, which a read of untouched `.bss` maps, is not
//!   counted when `/proc/kpageflags` can tell (privileged); smaps does not
//!   count it either.
//! - **cached** (in the page cache): the file's page is in memory, whoever
//!   read it. `mincore` reports this for file mappings. A library whose file
//!   is fully cached can still have only a handful of pages resident in a
//!   process that has just loaded it: pages are mapped into a process lazily,
//!   on first touch (plus the kernel's fault-around of up to 16 neighbours).

mod elf;
#[cfg(feature = "serde")]
pub mod json;
mod layout;
pub mod maps;
pub mod picture;
mod proc;
pub mod share;
mod share_report;
pub mod svg;
mod svg_row;
mod sys;

pub use elf::{ElfFacts, LoadSegment, SectionInfo};
pub use layout::{FoundObject, MappedBy, ObjectLayout, Role, RoleRange, objects_in_process};
pub use proc::{PageClass, PageProbe, PageState, Privilege, Smaps, Vma, read_vmas};
pub use share_report::ShareTotals;

use std::path::PathBuf;

use crate::arch::current::PAGE_SIZE;

/// A process to inspect: this one, or another by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pid {
    /// This process.
    Myself,
    /// Another process, by id.
    Other(i32),
}

impl Pid {
    /// The numeric id (for `Myself`, this process's).
    pub fn id(self) -> i32 {
        match self {
            Pid::Myself => std::process::id() as i32,
            Pid::Other(p) => p,
        }
    }

    fn process(self) -> Result<procfs::process::Process> {
        match self {
            Pid::Myself => procfs::process::Process::myself(),
            Pid::Other(p) => procfs::process::Process::new(p),
        }
        .map_err(|error| Error::Proc {
            what: format!("opening /proc/{}", self.label()),
            error,
        })
    }

    fn label(self) -> String {
        match self {
            Pid::Myself => "self".to_string(),
            Pid::Other(p) => p.to_string(),
        }
    }
}

/// Why an inspection failed. The message includes the underlying error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a file failed.
    #[error("{}: {what}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being read.
        what: &'static str,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// Reading a `/proc` file failed.
    #[error("{what}: {error}")]
    Proc {
        /// What was being read.
        what: String,
        /// procfs's error.
        error: procfs::ProcError,
    },
    #[error("{}: {what}", path.display())]
    /// An ELF file behind a mapping could not be parsed.
    Elf {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// A layout could not be worked out (or decoded); the message says why.
    #[error("{0}")]
    Layout(String),
}

/// The inspection reports' result type.
pub type Result<T> = std::result::Result<T, Error>;

/// The page size the inspector counts in.
pub const PAGE: u64 = PAGE_SIZE;

pub(crate) fn page_down(v: u64) -> u64 {
    v & !(PAGE - 1)
}

pub(crate) fn page_up(v: u64) -> u64 {
    v.saturating_add(PAGE - 1) & !(PAGE - 1)
}

/// Pages in `start..end` (both page-aligned in practice).
pub(crate) fn pages_in(start: u64, end: u64) -> u64 {
    page_up(end).saturating_sub(page_down(start)) / PAGE
}
