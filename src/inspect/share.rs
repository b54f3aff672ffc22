//! The report behind `mmld share`: how the pages of one library are shared
//! between processes that loaded it, segment by segment.
//!
//! Owns: measuring a set of live processes (smaps per mapping; pagemap,
//! kpagecount and kpageflags per page when privileged), lining their
//! mappings up role by role, and the table, conclusions and JSON. Must
//! never: start, stop or signal a process (the caller owns the workers), or
//! present a figure for a part of a mapping as if it were the whole: when
//! the kernel merged two roles into one mapping (two anonymous neighbours
//! with the same protection), they are reported as one row.

use std::collections::{BTreeSet, HashMap};

use super::elf::ElfFacts;
use super::layout::{ObjectLayout, Role, RoleRange};
use super::proc::{PageProbe, PageState, Privilege, Smaps, Vma, read_vmas};
use super::{Error, Pid, Result, pages_in};

/// One measured process and the objects it has mapped.
#[derive(Debug, Clone)]
pub struct Worker {
    pub pid: i32,
    pub objects: Vec<ObjectLayout>,
}

/// One row's figures in one process.
#[derive(Debug, Clone)]
pub struct WorkerFigures {
    pub pid: i32,
    /// The row's process addresses in this worker.
    pub start: u64,
    pub end: u64,
    /// The kernel mappings (VMAs) the figures come from.
    pub vmas: Vec<(u64, u64)>,
    /// smaps summed over those VMAs, in KiB.
    pub smaps: Smaps,
    /// `false` when a VMA extends beyond the object, so smaps also counts
    /// memory that is not the object's.
    pub smaps_exact: bool,
    /// Pages present in the page tables (zero page excluded when known).
    pub resident: u64,
    pub zero: u64,
    /// Every page of the row in this process, as pagemap (and kpagecount)
    /// saw it; `resident`, `zero` and the physical figures are counted from
    /// these, and pictures draw them.
    pub states: Vec<PageState>,
}

/// Physical pages behind a row across all processes (privileged only).
#[derive(Debug, Clone, Default)]
pub struct Physical {
    /// Distinct physical frames behind the row in all processes together.
    pub physical_pages: u64,
    /// Page positions resident in at least one process.
    pub resident_in_any: u64,
    /// Page positions resident in every process.
    pub resident_in_all: u64,
    /// Frames that every process maps.
    pub frames_in_all: u64,
    /// The most processes mapping one frame.
    pub max_sharers: u64,
    /// Frames mapped by two processes or more.
    pub shared_frames: u64,
    /// Smallest kpagecount (mappings system-wide) among the frames behind
    /// positions resident in every process.
    pub min_mapcount_in_all: Option<u64>,
    /// Largest kpagecount of any frame behind the row.
    pub max_mapcount: Option<u64>,
}

/// One role (or several the kernel merged) of one object.
#[derive(Debug, Clone)]
pub struct ShareRow {
    pub object: String,
    pub roles: Vec<Role>,
    /// File virtual addresses of the row (process address minus bias).
    pub vaddr: (u64, u64),
    pub perms: String,
    pub file_offset: Option<u64>,
    pub sections: Vec<String>,
    pub pages: u64,
    pub workers: Vec<WorkerFigures>,
    pub physical: Option<Physical>,
}

impl ShareRow {
    pub fn label(&self) -> String {
        self.roles
            .iter()
            .map(|r| r.label())
            .collect::<Vec<_>>()
            .join("+")
    }
    pub(crate) fn file_backed(&self) -> bool {
        self.file_offset.is_some()
    }
}

#[derive(Debug, Clone)]
pub struct ShareReport {
    pub library: String,
    pub strategy: String,
    /// What each process called, with its result, e.g. `add(2, 3) = 5`.
    pub call: Option<String>,
    pub privilege: Privilege,
    pub pids: Vec<i32>,
    pub rows: Vec<ShareRow>,
    pub notes: Vec<String>,
}

/// Measure `workers`, which must all have mapped the same objects.
pub fn measure(
    library: &str,
    strategy: &str,
    call: Option<String>,
    workers: &[Worker],
) -> Result<ShareReport> {
    let privilege = Privilege::detect();
    let first = workers
        .first()
        .ok_or_else(|| Error::Layout("no process to measure".into()))?;
    check_same_objects(workers, first)?;
    let mut vmas: Vec<Vec<Vma>> = Vec::with_capacity(workers.len());
    let mut probes: Vec<PageProbe> = Vec::with_capacity(workers.len());
    for w in workers {
        vmas.push(read_vmas(Pid::Other(w.pid), true)?);
        probes.push(PageProbe::open(Pid::Other(w.pid), privilege)?);
    }

    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for (j, obj0) in first.objects.iter().enumerate() {
        let facts = ElfFacts::read_path(&obj0.path).unwrap_or_else(|e| {
            notes.push(format!("no section names for {}: {e}", obj0.name));
            ElfFacts::default()
        });
        // Each worker's role ranges for this object: the same roles (same
        // file), at that worker's addresses.
        let roles: Vec<Vec<RoleRange>> = workers.iter().map(|w| w.objects[j].roles()).collect();
        let roles0 = &roles[0];
        let groups = row_groups(workers, j, &roles, &vmas);
        for (a, b) in groups {
            let mut figures = Vec::new();
            let mut perms = BTreeSet::new();
            let mut file_offset = None;
            for (w, worker) in workers.iter().enumerate() {
                let (start, end) = (roles[w][a].start, roles[w][b].end);
                let mut smaps = Smaps::default();
                let mut exact = true;
                let mut row_vmas = Vec::new();
                for v in vmas[w].iter().filter(|v| v.start < end && v.end > start) {
                    if let Some(s) = &v.smaps {
                        smaps.add(s);
                    }
                    exact &= v.start >= start && v.end <= end;
                    row_vmas.push((v.start, v.end));
                    perms.insert(v.perms.clone());
                    if w == 0 && file_offset.is_none() && v.is_file() {
                        file_offset = Some(v.offset + start.saturating_sub(v.start));
                    }
                }
                let pages = probes[w].pages(start, end)?;
                figures.push(WorkerFigures {
                    pid: worker.pid,
                    start,
                    end,
                    vmas: row_vmas,
                    smaps,
                    smaps_exact: exact,
                    resident: pages.iter().filter(|p| p.present).count() as u64,
                    zero: pages.iter().filter(|p| p.zero).count() as u64,
                    states: pages,
                });
            }
            let physical = privilege.physical().then(|| physical_of(&figures));
            let (vs, ve) = (
                roles0[a].start.wrapping_sub(obj0.bias),
                roles0[b].end.wrapping_sub(obj0.bias),
            );
            let row_roles: Vec<Role> = roles0[a..=b].iter().map(|r| r.role).collect();
            rows.push(ShareRow {
                object: obj0.name.clone(),
                sections: if row_roles.iter().all(|r| *r == Role::Gap) {
                    Vec::new()
                } else {
                    facts.sections_in(vs, ve)
                },
                roles: row_roles,
                vaddr: (vs, ve),
                perms: perms.into_iter().collect::<Vec<_>>().join(","),
                file_offset,
                pages: pages_in(roles0[a].start, roles0[b].end),
                workers: figures,
                physical,
            });
        }
    }
    add_row_notes(&rows, &mut notes);
    Ok(ShareReport {
        library: library.to_string(),
        strategy: strategy.to_string(),
        call,
        privilege,
        pids: workers.iter().map(|w| w.pid).collect(),
        rows,
        notes,
    })
}

/// Notes on rows whose smaps figures are not the object's alone.
fn add_row_notes(rows: &[ShareRow], notes: &mut Vec<String>) {
    if rows.iter().any(|r| r.roles.len() > 1) {
        notes.push(
        "a row naming several roles (like data+.bss) is one kernel mapping: the kernel merges neighbouring anonymous mappings with the same protection, so smaps has one set of figures for them".into(),
    );
    }
    for r in rows {
        if let Some(note) = beyond_object_note(r) {
            notes.push(note);
        }
    }
}

/// Every worker must have mapped the same objects as the first.
fn check_same_objects(workers: &[Worker], first: &Worker) -> Result<()> {
    for w in workers {
        let same = w.objects.len() == first.objects.len()
            && w.objects
                .iter()
                .zip(&first.objects)
                .all(|(a, b)| a.path == b.path && a.roles().len() == b.roles().len());
        if !same {
            return Err(Error::Layout(format!(
                "process {} mapped different objects than process {}",
                w.pid, first.pid
            )));
        }
    }
    Ok(())
}

/// Role indices the kernel put in one VMA (in any worker) form one row:
/// `(first role, last role)` of each row of object `j`.
fn row_groups(
    workers: &[Worker],
    j: usize,
    roles: &[Vec<RoleRange>],
    vmas: &[Vec<Vma>],
) -> Vec<(usize, usize)> {
    let nroles = roles.first().map_or(0, Vec::len);
    let mut group_end: Vec<usize> = (0..nroles).collect();
    for (w, worker) in workers.iter().enumerate() {
        let obj = &worker.objects[j];
        for v in vmas[w]
            .iter()
            .filter(|v| v.start < obj.end && v.end > obj.start)
        {
            let hit: Vec<usize> = roles[w]
                .iter()
                .enumerate()
                .filter(|(_, r)| r.start < v.end && r.end > v.start)
                .map(|(i, _)| i)
                .collect();
            if let (Some(&a), Some(&b)) = (hit.first(), hit.last()) {
                group_end[a] = group_end[a].max(b);
            }
        }
    }
    let mut groups = Vec::new();
    let mut i = 0;
    while i < nroles {
        let mut end = group_end[i];
        let mut k = i;
        while k <= end {
            end = end.max(group_end[k]);
            k += 1;
        }
        groups.push((i, end));
        i = end + 1;
    }
    groups
}

/// A note for a row whose smaps figures cover a kernel mapping larger than
/// the object (the kernel merged neighbouring anonymous memory).
fn beyond_object_note(r: &ShareRow) -> Option<String> {
    let beyond: Vec<(i32, u64)> = r
        .workers
        .iter()
        .filter(|f| !f.smaps_exact)
        .map(|f| {
            let outside: u64 = f
                .vmas
                .iter()
                .map(|&(s, e)| (e - s).saturating_sub(e.min(f.end).saturating_sub(s.max(f.start))))
                .sum();
            (f.pid, outside / 1024)
        })
        .collect();
    if beyond.is_empty() {
        return None;
    }
    let by = match beyond.as_slice() {
        [(_, k), rest @ ..]
            if beyond.len() == r.workers.len() && rest.iter().all(|(_, x)| x == k) =>
        {
            format!("by {k} KiB in every process")
        }
        _ => beyond
            .iter()
            .map(|(p, k)| format!("by {k} KiB in pid {p}"))
            .collect::<Vec<_>>()
            .join(", "),
    };
    Some(format!(
        "smaps figures marked * for {} {} cover a kernel mapping that extends beyond the object ({by}): the kernel merged the object's anonymous memory with a neighbouring anonymous mapping of the same protection. Resident and physical counts stay within the object.",
        r.object,
        r.label(),
    ))
}

fn physical_of(figures: &[WorkerFigures]) -> Physical {
    let states: Vec<&[PageState]> = figures.iter().map(|f| f.states.as_slice()).collect();
    physical(&states)
}

fn physical(states: &[&[PageState]]) -> Physical {
    let n = states.len() as u64;
    let positions = states.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut frames: HashMap<u64, (u64, Option<u64>)> = HashMap::new();
    let mut p = Physical::default();
    for k in 0..positions {
        let here: Vec<&PageState> = states
            .iter()
            .filter_map(|s| s.get(k))
            .filter(|s| s.present)
            .collect();
        if !here.is_empty() {
            p.resident_in_any += 1;
        }
        if here.len() as u64 == n {
            p.resident_in_all += 1;
            let m = here.iter().filter_map(|s| s.mapcount).min();
            p.min_mapcount_in_all = match (p.min_mapcount_in_all, m) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        for s in here {
            if let Some(pfn) = s.pfn {
                let e = frames.entry(pfn).or_insert((0, s.mapcount));
                e.0 += 1;
            }
        }
    }
    p.physical_pages = frames.len() as u64;
    p.frames_in_all = frames.values().filter(|(c, _)| *c == n).count() as u64;
    p.max_sharers = frames.values().map(|(c, _)| *c).max().unwrap_or(0);
    p.shared_frames = frames.values().filter(|(c, _)| *c > 1).count() as u64;
    p.max_mapcount = frames.values().filter_map(|(_, m)| *m).max();
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(pfn: u64, mapcount: u64) -> PageState {
        PageState {
            present: true,
            pfn: Some(pfn),
            mapcount: Some(mapcount),
            ..PageState::default()
        }
    }

    #[test]
    fn one_shared_frame_is_one_physical_page() {
        let one = [st(7, 3), PageState::default()];
        let p = physical(&[&one, &one, &one]);
        assert_eq!(p.physical_pages, 1);
        assert_eq!(p.resident_in_any, 1);
        assert_eq!(p.resident_in_all, 1);
        assert_eq!(p.frames_in_all, 1);
        assert_eq!(p.max_sharers, 3);
        assert_eq!(p.min_mapcount_in_all, Some(3));
    }

    #[test]
    fn private_copies_are_distinct_frames() {
        let p = physical(&[&[st(1, 1)], &[st(2, 1)], &[PageState::default()]]);
        assert_eq!(p.physical_pages, 2);
        assert_eq!(p.resident_in_any, 1);
        assert_eq!(p.resident_in_all, 0);
        assert_eq!(p.max_sharers, 1);
        assert_eq!(p.min_mapcount_in_all, None);
    }
}
