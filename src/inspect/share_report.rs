//! The forms of the `mmld share` report: the table, one conclusion per
//! row, the totals and the JSON.
//!
//! Owns: wording and layout of the figures [`super::share::measure`]
//! gathered. Must never: measure, or show a figure the rows do not hold
//! (totals are sums of the rows, nothing else).

use std::fmt::Write as _;

use super::layout::Role;
use super::proc::Smaps;
use super::share::{ShareReport, ShareRow, WorkerFigures};

/// The rows of a [`ShareReport`] summed: what its table's "total" line,
/// its JSON `totals` and its pictures show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareTotals {
    /// Pages of the objects' segments (gaps left out).
    pub pages: u64,
    /// Per worker.
    pub resident: Vec<u64>,
    /// Zero-page pages, per worker.
    pub zero: Vec<u64>,
    /// Distinct frames per row, summed over the rows (privileged only). A
    /// file page mapped by two segments counts in each.
    pub physical: Option<u64>,
    /// smaps summed, per worker.
    pub smaps: Vec<Smaps>,
    /// `false` when some row's smaps figures cover memory beyond the object.
    pub smaps_exact: bool,
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

    /// The rows summed, per worker. Gap rows hold no memory and are left out
    /// of `pages`, as `mmld maps` leaves them out of its totals.
    pub fn totals(&self) -> ShareTotals {
        let n = self.pids.len();
        let mut t = ShareTotals {
            pages: 0,
            resident: vec![0; n],
            zero: vec![0; n],
            physical: self.privilege.physical().then_some(0),
            smaps: vec![Smaps::default(); n],
            smaps_exact: true,
        };
        for r in &self.rows {
            if !r.roles.iter().all(|x| *x == Role::Gap) {
                t.pages += r.pages;
            }
            for (w, f) in r.workers.iter().enumerate().take(n) {
                t.resident[w] += f.resident;
                t.zero[w] += f.zero;
                t.smaps[w].add(&f.smaps);
                t.smaps_exact &= f.smaps_exact;
            }
            if let (Some(sum), Some(p)) = (t.physical.as_mut(), &r.physical) {
                *sum += p.physical_pages;
            }
        }
        t
    }

    /// What the figures show, in sentences.
    pub fn conclusions(&self) -> Vec<String> {
        self.rows.iter().map(|r| self.conclusion(r)).collect()
    }

    /// The table's last line: [`ShareReport::totals`] in its columns.
    fn total_row(&self) -> Vec<String> {
        let t = self.totals();
        let star = if t.smaps_exact { "" } else { "*" };
        let kib = |f: &dyn Fn(&Smaps) -> u64| -> String {
            let v: Vec<u64> = t.smaps.iter().map(f).collect();
            format!("{}{star}", spread(&v))
        };
        vec![
            "total".to_string(),
            String::new(),
            String::new(),
            String::new(),
            t.pages.to_string(),
            spread(&t.resident),
            t.physical.map_or("-".to_string(), |p| p.to_string()),
            kib(&|s| s.rss),
            kib(&|s| s.pss),
            kib(&|s| s.uss()),
            kib(&|s| s.shared_clean),
            kib(&|s| s.private_clean),
            kib(&|s| s.private_dirty),
        ]
    }

    /// The report as a table.
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
            "USS KiB",
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
                format!("{}{star}", col(&|f| f.smaps.uss())),
                format!("{}{star}", col(&|f| f.smaps.shared_clean)),
                format!("{}{star}", col(&|f| f.smaps.private_clean)),
                format!("{}{star}", col(&|f| f.smaps.private_dirty)),
            ]);
        }
        table.push(self.total_row());
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_compact() {
        assert_eq!(spread(&[4, 4, 4]), "4 each");
        assert_eq!(spread(&[4]), "4");
        assert_eq!(spread(&[1, 2, 3]), "1,2,3");
        assert_eq!(spread(&[1, 2, 3, 4, 5]), "1-5");
    }
}
