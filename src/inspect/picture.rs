//! The model behind `--svg` and `--html`: every page of every segment in
//! one of the page states ([`PageClass`]), in one strip per process, with
//! the same frames marked alike in every strip.
//!
//! Owns: turning a [`MapsReport`] or a [`ShareReport`] into segments of
//! cells, and the aggregation that keeps large objects legible (a run of
//! pages in the same state becomes one cell). Must never: measure, or show
//! a figure its report does not hold: every cell is drawn from the page
//! states the report counted its numbers from, and every total is the
//! report's own (`ObjectMaps::resident`, `ShareReport::totals`).

use std::collections::HashMap;

use super::layout::Role;
use super::maps::{MapsReport, MapsRow, ObjectMaps};
use super::proc::{PageClass, PageState};
use super::share::{ShareReport, ShareRow};

/// Segments with more pages than this draw runs of pages instead of pages,
/// so the picture keeps its width and a sane height (libLLVM has tens of
/// thousands of pages).
pub const PAGES_DRAWN_ONE_BY_ONE: u64 = 512;

/// The sums a picture states, one entry per strip where per process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Pages of the objects.
    pub pages: u64,
    /// Resident pages, per strip.
    pub resident: Vec<u64>,
    /// Zero-page pages, per strip.
    pub zero: Vec<u64>,
    /// Distinct frames, summed over segments (share, privileged only).
    pub physical: Option<u64>,
}

/// A picture of a report: objects, their segments, and each page state per process (strip).
#[derive(Debug, Clone)]
pub struct Picture {
    /// What was measured, e.g. `mmld share libdemo.so`.
    pub title: String,
    /// Strategy, call, privilege: one line each.
    pub lines: Vec<String>,
    /// One label per strip (`pid 1234`, `after load`).
    pub strips: Vec<String>,
    /// Frames are known, so cells carry frame marks.
    pub frames: bool,
    /// The objects, in address order.
    pub objects: Vec<ObjectPicture>,
    /// Totals over every object.
    pub totals: Totals,
    /// The totals in words, as the text report words them.
    pub total_lines: Vec<String>,
    /// Lines printed under the picture.
    pub notes: Vec<String>,
}

/// One object of a [`Picture`].
#[derive(Debug, Clone)]
pub struct ObjectPicture {
    /// Soname or file name.
    pub name: String,
    /// Path, span, who mapped it.
    pub detail: String,
    /// Its segments, in address order.
    pub segments: Vec<SegmentPicture>,
    /// Present for `maps` (per object totals); `share` totals the report.
    pub totals: Option<Totals>,
}

/// One segment of an [`ObjectPicture`].
#[derive(Debug, Clone)]
pub struct SegmentPicture {
    /// Role label (`text`, `data+.bss`).
    pub role: String,
    /// The roles of its pages.
    pub roles: Vec<Role>,
    /// `r`, `w`, `x` as in `/proc/PID/maps`.
    pub perms: String,
    /// File virtual addresses.
    pub vaddr: (u64, u64),
    /// Sections it holds.
    pub sections: Vec<String>,
    /// Its pages.
    pub pages: u64,
    /// The row's figures as the text report gives them.
    pub summary: String,
    /// Cells are runs of pages rather than single pages.
    pub aggregated: bool,
    /// Runs of pages drawn as one cell.
    pub cells: Vec<Cell>,
}

/// One page, or a run of pages, in every strip. The run ends where any
/// strip changes state, so cells line up across strips.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// Index of the first page within the segment.
    pub first: u64,
    /// Pages in the cell.
    pub pages: u64,
    /// The page state per strip (process).
    pub strips: Vec<StripCell>,
}

/// A cell's state in one strip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StripCell {
    /// How the pages are held.
    pub class: PageClass,
    /// A hash of the frames behind the cell in this strip (privileged,
    /// resident cells only): equal marks in two strips are the same frames.
    pub mark: Option<u64>,
    /// How many strips map these very frames here (1 = this one only).
    pub sharers: usize,
    /// Least and most kpagecount (mappings system-wide) over the cell.
    pub mapcount: Option<(u64, u64)>,
    /// Page-cache pages of the cell with unwritten file changes, which
    /// smaps counts as dirty.
    pub cache_dirty: u64,
}

/// What strip `s` has at page `i`: its class and the first strip that maps
/// the same frame there (itself when none does, or frames are unknown).
fn key_at(strips: &[&[PageState]], i: usize) -> Vec<(PageClass, usize)> {
    let mut first_with: HashMap<u64, usize> = HashMap::new();
    strips
        .iter()
        .enumerate()
        .map(|(s, states)| {
            let here = states.get(i).copied().unwrap_or_default();
            let leader = match (here.present, here.pfn) {
                (true, Some(pfn)) => *first_with.entry(pfn).or_insert(s),
                _ => s,
            };
            (here.class(), leader)
        })
        .collect()
}

/// FNV-1a over the frame numbers: a stable mark for a set of frames.
fn frames_mark(pfns: impl Iterator<Item = u64>) -> Option<u64> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut any = false;
    for pfn in pfns {
        any = true;
        for b in pfn.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    any.then_some(h)
}

/// Cut the pages of one segment (one state list per strip) into cells: one
/// per page, or with `aggregate`, one per run of pages whose key is the
/// same in every strip.
pub fn cells(strips: &[&[PageState]], aggregate: bool) -> Vec<Cell> {
    let len = strips.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = Vec::new();
    let mut i = 0;
    while i < len {
        let key = key_at(strips, i);
        let mut j = i + 1;
        if aggregate {
            while j < len && key_at(strips, j) == key {
                j += 1;
            }
        }
        let mut sharers: HashMap<usize, usize> = HashMap::new();
        for (_, leader) in &key {
            *sharers.entry(*leader).or_default() += 1;
        }
        let strip_cells = key
            .iter()
            .enumerate()
            .map(|(s, &(class, leader))| {
                let run = strips[s].get(i..j).unwrap_or_default();
                let resident = class.resident();
                let mapcounts = run.iter().filter_map(|p| p.mapcount);
                StripCell {
                    class,
                    mark: if resident {
                        frames_mark(run.iter().filter_map(|p| p.pfn))
                    } else {
                        None
                    },
                    sharers: sharers.get(&leader).copied().unwrap_or(1),
                    cache_dirty: run.iter().filter(|p| p.present && p.cache_dirty).count() as u64,
                    mapcount: if resident {
                        mapcounts.clone().min().zip(mapcounts.max())
                    } else {
                        None
                    },
                }
            })
            .collect();
        out.push(Cell {
            first: i as u64,
            pages: (j - i) as u64,
            strips: strip_cells,
        });
        i = j;
    }
    out
}

fn segment(row: SegmentRow<'_>, strips: &[&[PageState]]) -> SegmentPicture {
    let aggregated = row.pages > PAGES_DRAWN_ONE_BY_ONE;
    SegmentPicture {
        role: row
            .roles
            .iter()
            .map(|r| r.label())
            .collect::<Vec<_>>()
            .join("+"),
        roles: row.roles.to_vec(),
        perms: row.perms.to_string(),
        vaddr: row.vaddr,
        sections: row.sections.to_vec(),
        pages: row.pages,
        summary: row.summary,
        aggregated,
        cells: cells(strips, aggregated),
    }
}

/// What a segment picture takes from a report row.
struct SegmentRow<'a> {
    roles: &'a [Role],
    perms: &'a str,
    vaddr: (u64, u64),
    sections: &'a [String],
    pages: u64,
    summary: String,
}

fn join(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

impl Picture {
    /// `mmld maps`: one strip for the process; with `earlier` (the same
    /// objects measured after load, before a call), two strips: after load,
    /// after the call.
    pub fn of_maps(report: &MapsReport, earlier: Option<&MapsReport>, title: &str) -> Picture {
        let earlier = earlier.filter(|e| same_rows(e, report));
        let mut strips = Vec::new();
        if earlier.is_some() {
            strips.push(format!("after load (pid {})", report.pid));
            strips.push("after the call".to_string());
        } else {
            strips.push(format!("pid {}", report.pid));
        }
        let mut totals = Totals {
            resident: vec![0; strips.len()],
            zero: vec![0; strips.len()],
            ..Totals::default()
        };
        let mut objects = Vec::new();
        for (k, obj) in report.objects.iter().enumerate() {
            let before = earlier.and_then(|e| e.objects.get(k));
            let pic = maps_object(obj, before);
            if let Some(t) = &pic.totals {
                totals.pages += t.pages;
                for (sum, v) in totals.resident.iter_mut().zip(&t.resident) {
                    *sum += v;
                }
                for (sum, v) in totals.zero.iter_mut().zip(&t.zero) {
                    *sum += v;
                }
            }
            objects.push(pic);
        }
        let total_lines = objects
            .iter()
            .filter_map(|o| {
                o.totals.as_ref().map(|t| {
                    format!(
                        "{}: {} of {} pages resident",
                        o.name,
                        t.resident
                            .iter()
                            .map(u64::to_string)
                            .collect::<Vec<_>>()
                            .join(" → "),
                        t.pages
                    )
                })
            })
            .collect();
        Picture {
            title: title.to_string(),
            lines: vec![report.privilege.describe()],
            strips,
            frames: report.privilege.physical(),
            objects,
            totals,
            total_lines,
            notes: report
                .skipped
                .iter()
                .map(|s| format!("skipped: {s}"))
                .collect(),
        }
    }

    /// `mmld share`: one strip per worker.
    pub fn of_share(report: &ShareReport) -> Picture {
        let n = report.pids.len();
        let mut objects: Vec<ObjectPicture> = Vec::new();
        for row in &report.rows {
            let seg = share_segment(row, n);
            match objects.last_mut() {
                Some(o) if o.name == row.object => o.segments.push(seg),
                _ => objects.push(ObjectPicture {
                    name: row.object.clone(),
                    detail: String::new(),
                    segments: vec![seg],
                    totals: None,
                }),
            }
        }
        let t = report.totals();
        let mut lines = vec![format!(
            "{} processes, strategy {}{}",
            n,
            report.strategy,
            report
                .call
                .as_ref()
                .map_or(String::new(), |c| format!(", each called {c}"))
        )];
        lines.push(report.privilege.describe());
        let mut total_lines = vec![
            format!("pages: {}", t.pages),
            format!("resident pages per process: {}", join(&t.resident)),
        ];
        if let Some(p) = t.physical {
            total_lines.push(format!(
                "physical pages (distinct frames per segment, summed): {p}"
            ));
        }
        total_lines.push(format!(
            "Rss KiB per process: {}{}",
            join(&t.smaps.iter().map(|s| s.rss).collect::<Vec<_>>()),
            if t.smaps_exact { "" } else { " (*)" }
        ));
        total_lines.push(format!(
            "Pss KiB per process: {}{}",
            join(&t.smaps.iter().map(|s| s.pss).collect::<Vec<_>>()),
            if t.smaps_exact { "" } else { " (*)" }
        ));
        Picture {
            title: format!("mmld share {}", report.library),
            lines,
            strips: report.pids.iter().map(|p| format!("pid {p}")).collect(),
            frames: report.privilege.physical(),
            objects,
            totals: Totals {
                pages: t.pages,
                resident: t.resident,
                zero: t.zero,
                physical: t.physical,
            },
            total_lines,
            notes: report.notes.clone(),
        }
    }
}

fn same_rows(a: &MapsReport, b: &MapsReport) -> bool {
    a.objects.len() == b.objects.len()
        && a.objects.iter().zip(&b.objects).all(|(x, y)| {
            x.rows.len() == y.rows.len()
                && x.rows
                    .iter()
                    .zip(&y.rows)
                    .all(|(r, s)| (r.start, r.end) == (s.start, s.end))
        })
}

fn maps_object(obj: &ObjectMaps, before: Option<&ObjectMaps>) -> ObjectPicture {
    let l = &obj.layout;
    let mut segments = Vec::new();
    for (k, row) in obj.rows.iter().enumerate() {
        let earlier_row = before.and_then(|b| b.rows.get(k));
        let mut strips: Vec<&[PageState]> = Vec::new();
        let mut resident = Vec::new();
        if let Some(e) = earlier_row {
            strips.push(&e.states);
            resident.push(e.resident);
        }
        strips.push(&row.states);
        resident.push(row.resident);
        segments.push(segment(maps_row(l.bias, row, &resident), &strips));
    }
    let mut resident = Vec::new();
    let mut zero = Vec::new();
    if let Some(b) = before {
        resident.push(b.resident());
        zero.push(b.rows.iter().map(|r| r.zero).sum());
    }
    resident.push(obj.resident());
    zero.push(obj.rows.iter().map(|r| r.zero).sum());
    ObjectPicture {
        name: l.name.clone(),
        detail: format!(
            "{}: {:x}-{:x}, load bias {:#x}",
            l.path.display(),
            l.start,
            l.end,
            l.bias
        ),
        segments,
        totals: Some(Totals {
            pages: obj.pages(),
            resident,
            zero,
            physical: None,
        }),
    }
}

fn maps_row<'a>(bias: u64, row: &'a MapsRow, resident: &[u64]) -> SegmentRow<'a> {
    let mut cached = match row.cached {
        Some(c) => format!(", cached {c}/{}", row.pages),
        None => String::new(),
    };
    if row.relocation_cache {
        cached.push_str(", relocated pages from the relocation cache");
    }
    SegmentRow {
        roles: std::slice::from_ref(&row.role),
        perms: &row.vma.perms,
        vaddr: (row.start.wrapping_sub(bias), row.end.wrapping_sub(bias)),
        sections: &row.sections,
        pages: row.pages,
        summary: format!(
            "resident {}/{}{cached}",
            resident
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" → "),
            row.pages
        ),
    }
}

fn share_segment(row: &ShareRow, n: usize) -> SegmentPicture {
    let resident: Vec<u64> = row.workers.iter().map(|f| f.resident).collect();
    let physical = row.physical.as_ref().map_or(String::new(), |p| {
        format!(", physical {}", p.physical_pages)
    });
    let strips: Vec<&[PageState]> = row
        .workers
        .iter()
        .take(n)
        .map(|f| f.states.as_slice())
        .collect();
    segment(
        SegmentRow {
            roles: &row.roles,
            perms: &row.perms,
            vaddr: row.vaddr,
            sections: &row.sections,
            pages: row.pages,
            summary: format!("resident {}{physical}", join(&resident)),
        },
        &strips,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(pfn: u64, mapcount: u64, file: bool) -> PageState {
        PageState {
            present: true,
            file,
            pfn: Some(pfn),
            mapcount: Some(mapcount),
            ..PageState::default()
        }
    }

    #[test]
    fn one_frame_in_every_strip_gets_one_mark() {
        let a = [page(10, 2, true), page(11, 2, true), PageState::default()];
        let b = a;
        let c = cells(&[&a, &b], true);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].pages, 2);
        assert_eq!(c[0].strips[0].class, PageClass::Shared);
        assert_eq!(c[0].strips[0].sharers, 2);
        assert_eq!(c[0].strips[0].mark, c[0].strips[1].mark);
        assert_eq!(c[1].strips[1].class, PageClass::Absent);
        assert_eq!(c[1].strips[1].mark, None);
    }

    #[test]
    fn unwritten_file_pages_stay_clean_and_are_counted() {
        let mut p = page(5, 1, true);
        p.cache_dirty = true;
        let c = cells(&[&[p, page(6, 1, true)]], true);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].strips[0].class, PageClass::PrivateClean);
        assert_eq!(c[0].strips[0].cache_dirty, 1);
    }

    #[test]
    fn private_copies_get_their_own_marks_and_break_runs_per_strip() {
        let a = [page(1, 1, false), page(2, 1, false)];
        let b = [page(3, 1, false), page(4, 1, true)];
        let c = cells(&[&a, &b], true);
        assert_eq!(c.len(), 2, "strip b changes class at page 1");
        assert_eq!(c[0].strips[0].class, PageClass::PrivateDirty);
        assert_eq!(c[1].strips[1].class, PageClass::PrivateClean);
        assert_ne!(c[0].strips[0].mark, c[0].strips[1].mark);
        assert_eq!(c[0].strips[0].sharers, 1);
        let one_by_one = cells(&[&a, &b], false);
        assert_eq!(one_by_one.len(), 2);
        assert!(one_by_one.iter().all(|c| c.pages == 1));
    }
}
