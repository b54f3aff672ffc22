//! The report behind `mmld maps`: each maps line of an object, annotated.
//!
//! Owns: cutting maps lines at role boundaries, the section list, resident
//! and page-cache counts per piece, and the text and JSON forms. Must never:
//! count a page outside the object's span (a kernel VMA can extend past it
//! when an anonymous `.bss` merges with a neighbouring anonymous mapping).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::path::Path;

use super::elf::ElfFacts;
use super::layout::{MappedBy, ObjectLayout, Role, objects_in_process, open_mapped_file};
use super::proc::{PageProbe, PageState, Privilege, Vma, read_vmas};
use super::{Pid, Result, pages_in, sys};

/// One maps line, or the part of it that has one role.
#[derive(Debug, Clone)]
pub struct MapsRow {
    /// First process address.
    pub start: u64,
    /// End process address (exclusive).
    pub end: u64,
    /// What this part of the object is.
    pub role: Role,
    /// The whole maps line this piece belongs to.
    pub vma: Vma,
    /// Allocated sections overlapping the piece.
    pub sections: Vec<String>,
    /// Pages in the row.
    pub pages: u64,
    /// Pages present in the process's page tables (the zero page excluded
    /// when that can be told).
    pub resident: u64,
    /// Pages mapping the shared zero page (privileged only).
    pub zero: u64,
    /// Pages of the file behind the piece that are in the page cache; `None`
    /// for anonymous memory, or when `mincore` cannot tell (see
    /// `sys::mincore_sees_page_cache`).
    pub cached: Option<u64>,
    /// Every page of the piece, as pagemap (and kpagecount) saw it; the
    /// counts above are counted from these, and pictures draw them.
    pub states: Vec<PageState>,
}

impl MapsRow {
    /// File offset of the piece's first page, for file mappings.
    pub fn file_offset(&self) -> Option<u64> {
        self.vma
            .is_file()
            .then(|| self.vma.offset + (self.start - self.vma.start))
    }
}

/// One object of a [`MapsReport`], row by row.
#[derive(Debug, Clone)]
pub struct ObjectMaps {
    /// Where it lies.
    pub layout: ObjectLayout,
    /// One row per role range.
    pub rows: Vec<MapsRow>,
    /// Why some figures are missing or approximate, if they are.
    pub warning: Option<String>,
}

impl ObjectMaps {
    /// Resident pages over all rows.
    pub fn resident(&self) -> u64 {
        self.rows.iter().map(|r| r.resident).sum()
    }
    /// Pages over all rows.
    pub fn pages(&self) -> u64 {
        self.rows
            .iter()
            .filter(|r| r.role != Role::Gap)
            .map(|r| r.pages)
            .sum()
    }
}

/// What `mmld maps` shows: each object's mappings in one process, annotated.
#[derive(Debug, Clone)]
pub struct MapsReport {
    /// The process.
    pub pid: i32,
    /// What the figures could be read with.
    pub privilege: Privilege,
    /// The objects, in address order.
    pub objects: Vec<ObjectMaps>,
    /// Mapped files that could not be examined, with why.
    pub skipped: Vec<String>,
}

/// Annotate the maps of `pid` for objects whose layout is known (those mmld
/// mapped in this process).
pub fn maps_of_objects(pid: Pid, layouts: &[ObjectLayout]) -> Result<MapsReport> {
    let privilege = Privilege::detect();
    let vmas = read_vmas(pid, false)?;
    let mut probe = PageProbe::open(pid, privilege)?;
    let mut objects = Vec::new();
    let mut skipped = Vec::new();
    for layout in layouts {
        let (facts, file, warning) = match File::open(&layout.path) {
            Ok(f) => match ElfFacts::read(&f, &layout.path) {
                Ok(facts) => (facts, Some(f), None),
                Err(e) => (ElfFacts::default(), Some(f), Some(e.to_string())),
            },
            Err(e) => (
                ElfFacts::default(),
                None,
                Some(format!("{}: {e}", layout.path.display())),
            ),
        };
        if let Some(w) = &warning {
            skipped.push(w.clone());
        }
        let rows = annotate(layout, &facts, file.as_ref(), &vmas, &mut probe)?;
        objects.push(ObjectMaps {
            layout: layout.clone(),
            rows,
            warning,
        });
    }
    Ok(MapsReport {
        pid: pid.id(),
        privilege,
        objects,
        skipped,
    })
}

/// Annotate every ELF object mapped in `pid`, whoever mapped it.
pub fn maps_of_process(pid: Pid) -> Result<MapsReport> {
    let privilege = Privilege::detect();
    let vmas = read_vmas(pid, false)?;
    let (found, skipped) = objects_in_process(pid, &vmas)?;
    let mut probe = PageProbe::open(pid, privilege)?;
    let mut objects = Vec::new();
    for obj in found {
        // The object's first file mapping opens the very file it maps.
        let file = vmas
            .iter()
            .find(|v| {
                v.start >= obj.layout.start
                    && v.start < obj.layout.end
                    && v.path.as_ref() == Some(&obj.layout.path)
            })
            .and_then(|v| open_mapped_file(pid, v, &obj.layout.path).ok())
            .map(|(f, _)| f);
        let rows = annotate(&obj.layout, &obj.facts, file.as_ref(), &vmas, &mut probe)?;
        objects.push(ObjectMaps {
            layout: obj.layout,
            rows,
            warning: obj.warning,
        });
    }
    Ok(MapsReport {
        pid: pid.id(),
        privilege,
        objects,
        skipped,
    })
}

fn annotate(
    layout: &ObjectLayout,
    facts: &ElfFacts,
    file: Option<&File>,
    vmas: &[Vma],
    probe: &mut PageProbe,
) -> Result<Vec<MapsRow>> {
    let roles = layout.roles();
    let sees_cache = file.is_some_and(sys::mincore_sees_page_cache);
    let mut rows = Vec::new();
    for vma in vmas
        .iter()
        .filter(|v| v.start < layout.end && v.end > layout.start)
    {
        for r in &roles {
            let (start, end) = (
                vma.start.max(layout.start).max(r.start),
                vma.end.min(layout.end).min(r.end),
            );
            if start >= end {
                continue;
            }
            let pages = probe.pages(start, end)?;
            let cached = match (file, vma.is_file() && sees_cache) {
                (Some(f), true) => {
                    let offset = vma.offset + (start - vma.start);
                    sys::page_cache_residency(f, offset, end - start)
                        .ok()
                        .map(|v| v.iter().filter(|&&b| b).count() as u64)
                }
                _ => None,
            };
            rows.push(MapsRow {
                start,
                end,
                role: r.role,
                vma: vma.clone(),
                sections: if r.role == Role::Gap {
                    Vec::new()
                } else {
                    facts.sections_in(
                        start.wrapping_sub(layout.bias),
                        end.wrapping_sub(layout.bias),
                    )
                },
                pages: pages_in(start, end),
                resident: pages.iter().filter(|p| p.present).count() as u64,
                zero: pages.iter().filter(|p| p.zero).count() as u64,
                cached,
                states: pages,
            });
        }
    }
    Ok(rows)
}

pub(super) fn mapped_by(m: MappedBy) -> &'static str {
    match m {
        MappedBy::Mmld { copied: false } => "mmld (mmap)",
        MappedBy::Mmld { copied: true } => "mmld (read: copied into anonymous memory)",
        MappedBy::Other => "the system loader",
    }
}

fn short(path: &Path) -> String {
    path.display().to_string()
}

/// Resident pages of each row of an earlier report, keyed by its range
/// (empty without one).
pub(super) fn resident_by_row(earlier: Option<&MapsReport>) -> HashMap<(u64, u64), u64> {
    earlier
        .map(|e| {
            e.objects
                .iter()
                .flat_map(|o| o.rows.iter().map(|r| ((r.start, r.end), r.resident)))
                .collect()
        })
        .unwrap_or_default()
}

impl MapsReport {
    /// Text form. With `earlier` (the same objects measured before a call),
    /// resident counts show as `before → after`.
    pub fn to_text(&self, earlier: Option<&MapsReport>) -> String {
        let mut out = String::new();
        let before = resident_by_row(earlier);
        for obj in &self.objects {
            let l = &obj.layout;
            let _ = writeln!(
                out,
                "{} ({}): {:x}-{:x}, load bias {:#x}, mapped by {}",
                l.name,
                short(&l.path),
                l.start,
                l.end,
                l.bias,
                mapped_by(l.mapped_by)
            );
            if let Some(w) = &obj.warning {
                let _ = writeln!(out, "  warning: {w}");
            }
            let mut last_vma = None;
            for r in &obj.rows {
                if last_vma != Some((r.vma.start, r.vma.end)) {
                    let _ = writeln!(out, "  {}", r.vma.maps_line());
                    if r.vma.start < l.start || r.vma.end > l.end {
                        let _ = writeln!(
                            out,
                            "      (this kernel mapping extends beyond the object: the kernel merged it with a neighbouring mapping of the same protection; only the object's part is counted)"
                        );
                    }
                    last_vma = Some((r.vma.start, r.vma.end));
                }
                let whole = r.start == r.vma.start && r.end == r.vma.end;
                let range = if whole {
                    String::new()
                } else {
                    format!("{:x}-{:x} ", r.start, r.end)
                };
                let resident = match before.get(&(r.start, r.end)) {
                    Some(b) if earlier.is_some() => format!("{b} → {}/{}", r.resident, r.pages),
                    _ => format!("{}/{}", r.resident, r.pages),
                };
                let cached = match r.cached {
                    Some(c) => format!("{c}/{}", r.pages),
                    None if r.vma.is_file() => "?".to_string(),
                    None => "-".to_string(),
                };
                let zero = if r.zero > 0 {
                    format!(" (+{} zero-page)", r.zero)
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "      {range}{:<7} resident {resident}{zero}  cached {cached}  {}",
                    r.role.label(),
                    if r.role == Role::Gap {
                        "(inaccessible hole between segments)".to_string()
                    } else {
                        r.sections.join(" ")
                    }
                );
            }
            let total_before = earlier.and_then(|e| {
                e.objects
                    .iter()
                    .find(|o| o.layout.start == l.start && o.layout.path == l.path)
                    .map(ObjectMaps::resident)
            });
            let _ = writeln!(
                out,
                "  total: {}{} of {} pages resident in process {}\n",
                total_before.map_or(String::new(), |b| format!("{b} → ")),
                obj.resident(),
                obj.pages(),
                self.pid
            );
        }
        for s in &self.skipped {
            let _ = writeln!(out, "skipped: {s}");
        }
        out.push_str(
            "resident: pages present in this process's page tables (/proc/PID/pagemap), what smaps counts as Rss.\n\
             cached: pages of the file in the page cache (mincore on a fresh view of the file), whoever read them;\n\
             \x20       '-' for anonymous memory, '?' where mincore cannot tell (file neither owned nor writable).\n",
        );
        out
    }
}
