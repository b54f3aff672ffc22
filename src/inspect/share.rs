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
use std::fmt::Write as _;

use serde_json::{Value, json};

use super::elf::ElfFacts;
use super::layout::{ObjectLayout, Role, RoleRange};
use super::proc::{PageProbe, PageState, Privilege, Smaps, Vma, read_vmas};
use super::{Error, PAGE, Pid, Result, pages_in};

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
    fn file_backed(&self) -> bool {
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
            let mut states: Vec<Vec<PageState>> = Vec::new();
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
                });
                states.push(pages);
            }
            let physical = privilege.physical().then(|| physical(&states));
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

fn physical(states: &[Vec<PageState>]) -> Physical {
    let n = states.len() as u64;
    let positions = states.iter().map(Vec::len).max().unwrap_or(0);
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

/// "4 each", "1, 2, 2", or "1-3".
fn spread(values: &[u64]) -> String {
    match values {
        [] => "-".into(),
        [v] => v.to_string(),
        [v, rest @ ..] if rest.iter().all(|x| x == v) => format!("{v} each"),
        _ if values.len() <= 4 => values
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(","),
        _ => format!(
            "{}-{}",
            values.iter().min().unwrap_or(&0),
            values.iter().max().unwrap_or(&0)
        ),
    }
}

/// Like [`spread`], with a unit: "4 KiB each", "4,8 KiB".
fn spread_kib(values: &[u64]) -> String {
    let s = spread(values);
    match s.strip_suffix(" each") {
        Some(v) => format!("{v} KiB each"),
        None => format!("{s} KiB"),
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl ShareReport {
    fn why_private(&self, row: &ShareRow) -> &'static str {
        if self.strategy == "read" && !row.file_backed() {
            return "copied into anonymous memory by the read strategy";
        }
        match row.roles.first() {
            Some(Role::Relro) => "written by relocation, then made read-only",
            Some(Role::Data) => "written by relocation, .bss-tail zeroing or code: copy-on-write",
            Some(Role::Bss) => "anonymous, written by code",
            Some(Role::Text | Role::Rodata) => "written after mapping: copy-on-write",
            Some(Role::Gap) | None => "private",
        }
    }

    /// One sentence per row saying what the figures mean.
    pub fn conclusion(&self, row: &ShareRow) -> String {
        let n = self.pids.len() as u64;
        let label = format!("{} {}", row.object, row.label());
        let resident: Vec<u64> = row.workers.iter().map(|f| f.resident).collect();
        let total_resident: u64 = resident.iter().sum();
        let dirty = row.workers.iter().any(|f| f.smaps.private_dirty > 0);
        if row.roles.iter().all(|r| *r == Role::Gap) {
            return format!(
                "{label}: {} of address space, no memory",
                plural(row.pages, "page", "pages")
            );
        }
        if total_resident == 0 {
            let zero: u64 = row.workers.iter().map(|f| f.zero).sum();
            let zero = if zero > 0 {
                format!("; reads mapped the shared zero page {zero} times")
            } else {
                String::new()
            };
            return format!(
                "{label}: no page resident in any process ({} mapped, none touched){zero}",
                plural(row.pages, "page", "pages")
            );
        }
        let Some(p) = &row.physical else {
            let pss_lt_rss = row.workers.iter().any(|f| f.smaps.pss < f.smaps.rss);
            let rss: Vec<u64> = row.workers.iter().map(|f| f.smaps.rss).collect();
            let pss: Vec<u64> = row.workers.iter().map(|f| f.smaps.pss).collect();
            return if pss_lt_rss {
                format!(
                    "{label}: Rss {}, Pss {}: Pss < Rss, so pages are shared with other processes",
                    spread_kib(&rss),
                    spread_kib(&pss)
                )
            } else if dirty {
                format!(
                    "{label}: private to each process (Pss = Rss = {}; {})",
                    spread_kib(&rss),
                    self.why_private(row)
                )
            } else {
                format!("{label}: Pss = Rss = {}: not shared", spread_kib(&rss))
            };
        };
        let per = resident.iter().copied().max().unwrap_or(0);
        if n == 1 {
            let maps = match (p.min_mapcount_in_all, p.max_mapcount) {
                (Some(a), Some(b)) if a == b => format!(
                    ", each frame mapped {} system-wide",
                    plural(a, "time", "times")
                ),
                (Some(a), Some(b)) => format!(", frames mapped {a}-{b} times system-wide"),
                _ => String::new(),
            };
            let kind = if dirty {
                format!(" (private, {})", self.why_private(row))
            } else {
                String::new()
            };
            return format!(
                "{label}: {} of {} resident{maps}{kind}",
                p.resident_in_any,
                plural(row.pages, "page", "pages")
            );
        }
        if p.physical_pages == p.resident_in_any && p.max_sharers > 1 {
            let pages = plural(p.resident_in_any, "page", "pages");
            return if p.frames_in_all == p.physical_pages {
                format!("{label}: {pages} resident, 1 physical copy shared by all {n} processes")
            } else {
                format!(
                    "{label}: {pages} resident, 1 physical copy of each; {} mapped by all {n} processes, the rest by fewer (fault-around, which maps the cached neighbours of a faulting page, is opportunistic)",
                    p.frames_in_all
                )
            };
        }
        if p.physical_pages == total_resident {
            let copies = resident.iter().filter(|&&r| r > 0).count() as u64;
            return format!(
                "{label}: {} of {} ({})",
                plural(copies, "private copy", "private copies"),
                plural(per, "page", "pages"),
                self.why_private(row)
            );
        }
        format!(
            "{label}: {} physical pages behind {total_resident} resident page mappings: {} shared by several processes, {} private{}",
            p.physical_pages,
            p.shared_frames,
            p.physical_pages.saturating_sub(p.shared_frames),
            if dirty {
                format!(" ({})", self.why_private(row))
            } else {
                String::new()
            }
        )
    }

    pub fn conclusions(&self) -> Vec<String> {
        self.rows.iter().map(|r| self.conclusion(r)).collect()
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let pids: Vec<String> = self.pids.iter().map(i32::to_string).collect();
        let _ = writeln!(
            out,
            "{}: {} (pid {}), strategy {}{}",
            self.library,
            plural(self.pids.len() as u64, "process", "processes"),
            pids.join(" "),
            self.strategy,
            match &self.call {
                Some(c) if self.pids.len() > 1 => format!(", each called {c}"),
                Some(c) => format!(", called {c}"),
                None => String::new(),
            }
        );
        let _ = writeln!(out, "{}\n", self.privilege.describe());
        let header = [
            "object",
            "role",
            "perms",
            "vaddr",
            "pages",
            "resident",
            "physical",
            "Rss KiB",
            "Pss KiB",
            "Shr_Clean",
            "Prv_Clean",
            "Prv_Dirty",
        ];
        let mut table: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
        for r in &self.rows {
            let col = |f: &dyn Fn(&WorkerFigures) -> u64| -> String {
                let v: Vec<u64> = r.workers.iter().map(f).collect();
                spread(&v)
            };
            let star = if r.workers.iter().any(|f| !f.smaps_exact) {
                "*"
            } else {
                ""
            };
            table.push(vec![
                r.object.clone(),
                r.label(),
                r.perms.clone(),
                format!("{:x}-{:x}", r.vaddr.0, r.vaddr.1),
                r.pages.to_string(),
                col(&|f| f.resident),
                r.physical
                    .as_ref()
                    .map_or("-".to_string(), |p| p.physical_pages.to_string()),
                format!("{}{star}", col(&|f| f.smaps.rss)),
                format!("{}{star}", col(&|f| f.smaps.pss)),
                format!("{}{star}", col(&|f| f.smaps.shared_clean)),
                format!("{}{star}", col(&|f| f.smaps.private_clean)),
                format!("{}{star}", col(&|f| f.smaps.private_dirty)),
            ]);
        }
        let widths: Vec<usize> = (0..header.len())
            .map(|c| {
                table
                    .iter()
                    .map(|row| row[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in &table {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                let w = widths[c];
                // Text columns left-aligned, numbers right-aligned.
                if c < 4 {
                    let _ = write!(line, "{cell:<w$}  ");
                } else {
                    let _ = write!(line, "{cell:>w$}  ");
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        out.push('\n');
        for c in self.conclusions() {
            let _ = writeln!(out, "{c}");
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                let _ = writeln!(out, "note: {n}");
            }
        }
        out
    }

    pub fn to_json(&self) -> Value {
        let per = |r: &ShareRow, f: &dyn Fn(&WorkerFigures) -> Value| -> Value {
            Value::Array(r.workers.iter().map(f).collect())
        };
        json!({
            "library": self.library,
            "strategy": self.strategy,
            "processes": self.pids.len(),
            "privileged": self.privilege.physical(),
            "pids": self.pids,
            "call": self.call,
            "page_size": PAGE,
            "segments": self.rows.iter().map(|r| json!({
                "object": r.object,
                "role": r.label(),
                "roles": r.roles.iter().map(|x| x.label()).collect::<Vec<_>>(),
                "perms": r.perms,
                "vaddr": [r.vaddr.0, r.vaddr.1],
                "file_offset": r.file_offset,
                "sections": r.sections,
                "pages": r.pages,
                "resident_pages": per(r, &|f| json!(f.resident)),
                "zero_pages": per(r, &|f| json!(f.zero)),
                "physical_pages": r.physical.as_ref().map(|p| p.physical_pages),
                "resident_in_any": r.physical.as_ref().map(|p| p.resident_in_any),
                "resident_in_all": r.physical.as_ref().map(|p| p.resident_in_all),
                "frames_in_all": r.physical.as_ref().map(|p| p.frames_in_all),
                "max_sharers": r.physical.as_ref().map(|p| p.max_sharers),
                "min_kpagecount_in_all": r.physical.as_ref().and_then(|p| p.min_mapcount_in_all),
                "rss_kib": per(r, &|f| json!(f.smaps.rss)),
                "pss_kib": per(r, &|f| json!(f.smaps.pss)),
                "shared_clean_kib": per(r, &|f| json!(f.smaps.shared_clean)),
                "shared_dirty_kib": per(r, &|f| json!(f.smaps.shared_dirty)),
                "private_clean_kib": per(r, &|f| json!(f.smaps.private_clean)),
                "private_dirty_kib": per(r, &|f| json!(f.smaps.private_dirty)),
                "smaps_exact": per(r, &|f| json!(f.smaps_exact)),
                "addresses": per(r, &|f| json!([f.start, f.end])),
                "vmas": per(r, &|f| json!(f.vmas.iter().map(|(s, e)| [*s, *e]).collect::<Vec<_>>())),
                "conclusion": self.conclusion(r),
            })).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }
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
        let states = vec![vec![st(7, 3), PageState::default()]; 3];
        let p = physical(&states);
        assert_eq!(p.physical_pages, 1);
        assert_eq!(p.resident_in_any, 1);
        assert_eq!(p.resident_in_all, 1);
        assert_eq!(p.frames_in_all, 1);
        assert_eq!(p.max_sharers, 3);
        assert_eq!(p.min_mapcount_in_all, Some(3));
    }

    #[test]
    fn private_copies_are_distinct_frames() {
        let states = vec![vec![st(1, 1)], vec![st(2, 1)], vec![PageState::default()]];
        let p = physical(&states);
        assert_eq!(p.physical_pages, 2);
        assert_eq!(p.resident_in_any, 1);
        assert_eq!(p.resident_in_all, 0);
        assert_eq!(p.max_sharers, 1);
        assert_eq!(p.min_mapcount_in_all, None);
    }

    #[test]
    fn spread_is_compact() {
        assert_eq!(spread(&[4, 4, 4]), "4 each");
        assert_eq!(spread(&[4]), "4");
        assert_eq!(spread(&[1, 2, 3]), "1,2,3");
        assert_eq!(spread(&[1, 2, 3, 4, 5]), "1-5");
    }
}
