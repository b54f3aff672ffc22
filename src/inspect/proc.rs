//! `/proc` readers: maps and smaps per mapping, pagemap per page,
//! kpagecount and kpageflags per physical page. Through `procfs`, except
//! the reads of `/proc/kpage*` ([`KPageTable`] says why).
//!
//! Owns: turning procfs's types into the few numbers the reports use, and
//! deciding whether physical page frames are visible (privilege). Must
//! never: write to `/proc` (no `clear_refs`, no soft-dirty reset): the
//! inspector observes, it does not reset the kernel's counters.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use procfs::PhysicalPageFlags;
use procfs::process::{MMapPath, MemoryMap, PageInfo};

use super::{Error, PAGE, Pid, Result};

/// The smaps figures of one mapping (or a sum of several), in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Smaps {
    /// `Rss`, KiB.
    pub rss: u64,
    /// `Pss`, KiB.
    pub pss: u64,
    /// `Shared_Clean`, KiB.
    pub shared_clean: u64,
    /// `Shared_Dirty`, KiB.
    pub shared_dirty: u64,
    /// `Private_Clean`, KiB.
    pub private_clean: u64,
    /// `Private_Dirty`, KiB.
    pub private_dirty: u64,
    /// `Anonymous`, KiB.
    pub anonymous: u64,
    /// `Swap`, KiB.
    pub swap: u64,
}

impl Smaps {
    fn from_map(m: &MemoryMap) -> Smaps {
        let kib = |k: &str| m.extension.map.get(k).copied().unwrap_or(0) / 1024;
        Smaps {
            rss: kib("Rss"),
            pss: kib("Pss"),
            shared_clean: kib("Shared_Clean"),
            shared_dirty: kib("Shared_Dirty"),
            private_clean: kib("Private_Clean"),
            private_dirty: kib("Private_Dirty"),
            anonymous: kib("Anonymous"),
            swap: kib("Swap"),
        }
    }

    /// Unique set size, as smem counts it: the pages only this process
    /// maps (`Private_Clean` + `Private_Dirty`), KiB. What unloading the
    /// object from this one process would give back.
    pub fn uss(&self) -> u64 {
        self.private_clean + self.private_dirty
    }

    /// Add another mapping's figures.
    pub fn add(&mut self, o: &Smaps) {
        self.rss += o.rss;
        self.pss += o.pss;
        self.shared_clean += o.shared_clean;
        self.shared_dirty += o.shared_dirty;
        self.private_clean += o.private_clean;
        self.private_dirty += o.private_dirty;
        self.anonymous += o.anonymous;
        self.swap += o.swap;
    }
}

/// One line of `/proc/PID/maps` (a VMA), with its smaps figures if read.
#[derive(Debug, Clone)]
pub struct Vma {
    /// First address.
    pub start: u64,
    /// End address (exclusive).
    pub end: u64,
    /// As in maps: `r-xp`.
    pub perms: String,
    /// File offset.
    pub offset: u64,
    /// Device (major, minor) of the file.
    pub dev: (i32, i32),
    /// Inode of the file (0 for anonymous memory).
    pub inode: u64,
    /// The mapped file, for file mappings.
    pub path: Option<PathBuf>,
    /// What maps shows in the path column otherwise (`[heap]`, `[anon]`...),
    /// empty for a plain anonymous mapping.
    pub pseudo: String,
    /// Its smaps figures, when read.
    pub smaps: Option<Smaps>,
}

impl Vma {
    /// Backed by a file.
    pub fn is_file(&self) -> bool {
        self.path.is_some()
    }

    /// `st_dev` encoding of `dev`, for comparing with `stat`.
    pub fn dev_id(&self) -> u64 {
        libc::makedev(self.dev.0 as u32, self.dev.1 as u32)
    }

    /// The maps line, in the kernel's format.
    pub fn maps_line(&self) -> String {
        let path = match &self.path {
            Some(p) => p.display().to_string(),
            None => self.pseudo.clone(),
        };
        format!(
            "{:x}-{:x} {} {:08x} {:02x}:{:02x} {:<8} {}",
            self.start, self.end, self.perms, self.offset, self.dev.0, self.dev.1, self.inode, path
        )
        .trim_end()
        .to_string()
    }

    fn from_map(m: &MemoryMap, with_smaps: bool) -> Vma {
        let (path, pseudo) = match &m.pathname {
            MMapPath::Path(p) => (Some(p.clone()), String::new()),
            MMapPath::Heap => (None, "[heap]".into()),
            MMapPath::Stack => (None, "[stack]".into()),
            MMapPath::TStack(t) => (None, format!("[stack:{t}]")),
            MMapPath::Vdso => (None, "[vdso]".into()),
            MMapPath::Vvar => (None, "[vvar]".into()),
            MMapPath::Vsyscall => (None, "[vsyscall]".into()),
            MMapPath::Rollup => (None, "[rollup]".into()),
            MMapPath::Anonymous => (None, String::new()),
            MMapPath::Vsys(k) => (None, format!("/SYSV{k:08x}")),
            MMapPath::Other(s) => (None, format!("[{s}]")),
        };
        Vma {
            start: m.address.0,
            end: m.address.1,
            perms: m.perms.as_str(),
            offset: m.offset,
            dev: m.dev,
            inode: m.inode,
            path,
            pseudo,
            smaps: with_smaps.then(|| Smaps::from_map(m)),
        }
    }
}

/// Read `/proc/PID/maps`, or `/proc/PID/smaps` when `with_smaps` (the same
/// lines with per-mapping figures; slower: the kernel walks page tables).
pub fn read_vmas(pid: Pid, with_smaps: bool) -> Result<Vec<Vma>> {
    let process = pid.process()?;
    let maps = if with_smaps {
        process.smaps()
    } else {
        process.maps()
    }
    .map_err(|error| Error::Proc {
        what: format!(
            "reading /proc/{}/{}",
            pid.label(),
            if with_smaps { "smaps" } else { "maps" }
        ),
        error,
    })?;
    Ok(maps.iter().map(|m| Vma::from_map(m, with_smaps)).collect())
}

/// What this process may see of physical memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privilege {
    /// Running as root.
    pub root: bool,
    /// Holding `CAP_SYS_ADMIN` (needed for page frame numbers and `/proc/kpage*`).
    pub cap_sys_admin: bool,
    /// `/proc/kpagecount` and `/proc/kpageflags` opened.
    pub kpage_files: bool,
}

impl Privilege {
    /// What this process may read.
    pub fn detect() -> Privilege {
        const CAP_SYS_ADMIN: u32 = 21;
        let cap_sys_admin = procfs::process::Process::myself()
            .and_then(|p| p.status())
            .is_ok_and(|s| s.capeff & (1 << CAP_SYS_ADMIN) != 0);
        Privilege {
            root: super::sys::effective_uid() == 0,
            cap_sys_admin,
            kpage_files: KPageTable::open(KPAGECOUNT).is_some()
                && KPageTable::open(KPAGEFLAGS).is_some(),
        }
    }

    /// Page frame numbers in pagemap are real (not zeroed) and can be
    /// looked up in kpagecount.
    pub fn physical(&self) -> bool {
        self.cap_sys_admin && self.kpage_files
    }

    /// A sentence saying what can be measured with this privilege.
    pub fn describe(&self) -> String {
        if self.physical() {
            "privileged: physical frames from /proc/PID/pagemap, map counts from /proc/kpagecount"
                .to_string()
        } else {
            format!(
                "not privileged ({}): /proc/PID/pagemap hides physical frames and /proc/kpagecount is unreadable without CAP_SYS_ADMIN, so only smaps figures and per-process residency are shown",
                if self.root {
                    "root without CAP_SYS_ADMIN"
                } else {
                    "not root"
                }
            )
        }
    }
}

/// What pagemap (and, privileged, kpageflags/kpagecount) say about one
/// virtual page of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageState {
    /// In the process's page tables, and not the shared zero page.
    pub present: bool,
    /// The shared zero page (a read of never-written anonymous memory).
    pub zero: bool,
    /// Swapped out.
    pub swapped: bool,
    /// A page-cache page (not an anonymous copy).
    pub file: bool,
    /// Mapped by exactly one page-table entry in the whole system.
    pub exclusive: bool,
    /// Physical frame number, when privileged.
    pub pfn: Option<u64>,
    /// How many page-table entries map that frame, system-wide (kpagecount).
    pub mapcount: Option<u64>,
    /// A page-cache page whose file changes are not yet written back
    /// (kpageflags, privileged only): smaps counts it dirty.
    pub cache_dirty: bool,
}

/// The state a picture draws a page in. Resident pages are split the way
/// smaps splits them: shared when the frame has two mappings or more
/// (kpagecount when privileged, else pagemap's "exclusively mapped" bit,
/// which the kernel sets from the same count), otherwise clean when it is a
/// page-cache page and dirty when it is anonymous (a copy-on-write copy, or
/// memory that never had a file behind it). Where smaps differs: it calls
/// a page-cache page dirty while the file has changes not yet written back
/// (a library just copied or built); here it is still the file's page, not
/// a copy, so clean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PageClass {
    /// Not in the process's page tables (never touched, or swapped out).
    Absent,
    /// The shared zero page: a read of never-written anonymous memory. Not
    /// resident, as smaps counts it (privileged only; otherwise such a page
    /// shows as shared, since pagemap alone cannot tell it apart).
    Zero,
    /// Resident and mapped by more than one process (or a page-cache page).
    Shared,
    /// Resident, only this process, unchanged since read from the file.
    PrivateClean,
    /// Resident, only this process, written (copy-on-write or anonymous).
    PrivateDirty,
}

impl PageClass {
    /// Every class, in drawing order.
    pub const ALL: [PageClass; 5] = [
        PageClass::Absent,
        PageClass::Zero,
        PageClass::Shared,
        PageClass::PrivateClean,
        PageClass::PrivateDirty,
    ];

    /// Present in the page tables, as the reports' "resident" counts.
    pub fn resident(self) -> bool {
        matches!(
            self,
            PageClass::Shared | PageClass::PrivateClean | PageClass::PrivateDirty
        )
    }

    /// The class name in pictures (SVG `class`, CSS).
    pub fn css(self) -> &'static str {
        match self {
            PageClass::Absent => "none",
            PageClass::Zero => "zero",
            PageClass::Shared => "shared",
            PageClass::PrivateClean => "clean",
            PageClass::PrivateDirty => "dirty",
        }
    }

    /// A short name for keys and JSON.
    pub fn label(self) -> &'static str {
        match self {
            PageClass::Absent => "not resident",
            PageClass::Zero => "zero page (not resident)",
            PageClass::Shared => "resident, shared",
            PageClass::PrivateClean => "resident, private clean",
            PageClass::PrivateDirty => "private dirty",
        }
    }
}

impl PageState {
    /// The page's class.
    pub fn class(&self) -> PageClass {
        if self.zero {
            return PageClass::Zero;
        }
        if !self.present {
            return PageClass::Absent;
        }
        let shared = match self.mapcount {
            Some(m) => m > 1,
            None => !self.exclusive,
        };
        if shared {
            PageClass::Shared
        } else if self.file {
            PageClass::PrivateClean
        } else {
            PageClass::PrivateDirty
        }
    }
}

const KPAGECOUNT: &str = "/proc/kpagecount";
const KPAGEFLAGS: &str = "/proc/kpageflags";

/// `/proc/kpagecount` or `/proc/kpageflags`: one 64-bit entry per physical
/// frame, read 8 bytes at a time at the frame's offset. procfs's readers
/// refill an 8 KiB buffer after every seek, and the kernel computes every
/// entry of a read: frames behind a mapping are scattered, so that cost
/// about 100 µs per page (seconds for libLLVM's tree in `mmld share`).
struct KPageTable(File);

impl KPageTable {
    fn open(path: &str) -> Option<KPageTable> {
        File::open(path).ok().map(KPageTable)
    }

    /// The entry of frame `pfn`, if the kernel has one.
    fn get(&self, pfn: u64) -> Option<u64> {
        let mut entry = [0u8; 8];
        self.0.read_exact_at(&mut entry, pfn.checked_mul(8)?).ok()?;
        Some(u64::from_ne_bytes(entry))
    }
}

/// Reads pagemap of one process, and kpagecount/kpageflags if allowed.
pub struct PageProbe {
    pid: Pid,
    pagemap: procfs::process::PageMap,
    kcount: Option<KPageTable>,
    kflags: Option<KPageTable>,
}

impl PageProbe {
    /// Open `pid`'s pagemap (and `/proc/kpage*` when privileged).
    pub fn open(pid: Pid, privilege: Privilege) -> Result<PageProbe> {
        let pagemap = pid.process()?.pagemap().map_err(|error| Error::Proc {
            what: format!("opening /proc/{}/pagemap", pid.label()),
            error,
        })?;
        let (kcount, kflags) = if privilege.physical() {
            (KPageTable::open(KPAGECOUNT), KPageTable::open(KPAGEFLAGS))
        } else {
            (None, None)
        };
        Ok(PageProbe {
            pid,
            pagemap,
            kcount,
            kflags,
        })
    }

    /// The state of every page in `start..end` (page-aligned addresses).
    pub fn pages(&mut self, start: u64, end: u64) -> Result<Vec<PageState>> {
        if end <= start {
            return Ok(Vec::new());
        }
        let first = (start / PAGE) as usize;
        let last = end.div_ceil(PAGE) as usize;
        let infos = self
            .pagemap
            .get_range_info(first..last)
            .map_err(|error| Error::Proc {
                what: format!(
                    "reading /proc/{}/pagemap for {start:#x}-{end:#x}",
                    self.pid.label()
                ),
                error,
            })?;
        let mut out = Vec::with_capacity(infos.len());
        for info in infos {
            let state = match info {
                PageInfo::SwapPage(f) => PageState {
                    swapped: true,
                    file: f.contains(procfs::process::SwapPageFlags::FILE),
                    exclusive: f.contains(procfs::process::SwapPageFlags::MMAP_EXCLUSIVE),
                    ..PageState::default()
                },
                PageInfo::MemoryPage(f) => {
                    use procfs::process::MemoryPageFlags as F;
                    if !f.contains(F::PRESENT) {
                        PageState::default()
                    } else {
                        let raw = f.get_page_frame_number().0;
                        let pfn = (self.kcount.is_some() && raw != 0).then_some(raw);
                        let mut s = PageState {
                            present: true,
                            file: f.contains(F::FILE),
                            exclusive: f.contains(F::MMAP_EXCLUSIVE),
                            pfn,
                            ..PageState::default()
                        };
                        if let Some(pfn) = pfn {
                            let flags = self
                                .kflags
                                .as_ref()
                                .and_then(|k| k.get(pfn))
                                .map(PhysicalPageFlags::from_bits_truncate);
                            if flags.is_some_and(|fl| fl.contains(PhysicalPageFlags::ZERO_PAGE)) {
                                s.present = false;
                                s.zero = true;
                            }
                            s.cache_dirty = s.file
                                && flags.is_some_and(|fl| fl.contains(PhysicalPageFlags::DIRTY));
                            s.mapcount = self.kcount.as_ref().and_then(|k| k.get(pfn));
                        }
                        s
                    }
                }
            };
            out.push(state);
        }
        Ok(out)
    }
}
