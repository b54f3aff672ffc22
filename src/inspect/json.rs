//! The JSON forms of the `mmld maps` and `mmld share` reports (feature
//! `serde`).
//!
//! Owns: the shape a script reads: key names, units in the names (`_kib`,
//! `_pages`), per-worker figures as arrays in worker order, roles by label.
//! Each form is a borrowed view of its report that derives
//! `serde::Serialize`; make one with [`MapsReport::json`] or
//! [`ShareReport::json`] and hand it to any serde serializer.
//! Must never: compute a figure its report does not hold (counts here are
//! the reports' own sums), or be deserialized into a report: the reports
//! are measurements, not input.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Serialize;

use super::PAGE;
use super::maps::{MapsReport, MapsRow, ObjectMaps, mapped_by, resident_by_row};
use super::proc::Smaps;
use super::share::{ShareReport, ShareRow, WorkerFigures};
use super::share_report::ShareTotals;

/// `mmld maps --json`: each object's maps lines, annotated.
#[derive(Debug, Serialize)]
pub struct MapsJson<'a> {
    pid: i32,
    privileged: bool,
    objects: Vec<ObjectMapsJson<'a>>,
    skipped: &'a [String],
}

/// One object of [`MapsJson`].
#[derive(Debug, Serialize)]
struct ObjectMapsJson<'a> {
    name: &'a str,
    path: Cow<'a, str>,
    start: u64,
    end: u64,
    bias: u64,
    mapped_by: &'static str,
    warning: Option<&'a str>,
    pages: u64,
    resident_pages: u64,
    rows: Vec<MapsRowJson<'a>>,
}

/// One row of [`ObjectMapsJson`].
#[derive(Debug, Serialize)]
struct MapsRowJson<'a> {
    start: u64,
    end: u64,
    vma: [u64; 2],
    perms: &'a str,
    offset: Option<u64>,
    file_backed: bool,
    role: &'static str,
    sections: &'a [String],
    pages: u64,
    resident: u64,
    zero_pages: u64,
    cached: Option<u64>,
    /// Only with an earlier report: its resident count for the same range
    /// (`null` when it had no such row).
    #[serde(skip_serializing_if = "Option::is_none")]
    resident_after_load: Option<Option<u64>>,
}

impl MapsReport {
    /// The report's JSON form. With `earlier` (the same objects measured
    /// before a call), each row also carries `resident_after_load`, its
    /// resident count then.
    pub fn json<'a>(&'a self, earlier: Option<&MapsReport>) -> MapsJson<'a> {
        let before = earlier.map(|_| resident_by_row(earlier));
        MapsJson {
            pid: self.pid,
            privileged: self.privilege.physical(),
            objects: self
                .objects
                .iter()
                .map(|o| object_maps(o, before.as_ref()))
                .collect(),
            skipped: &self.skipped,
        }
    }
}

fn object_maps<'a>(
    o: &'a ObjectMaps,
    before: Option<&HashMap<(u64, u64), u64>>,
) -> ObjectMapsJson<'a> {
    ObjectMapsJson {
        name: &o.layout.name,
        path: o.layout.path.to_string_lossy(),
        start: o.layout.start,
        end: o.layout.end,
        bias: o.layout.bias,
        mapped_by: mapped_by(o.layout.mapped_by),
        warning: o.warning.as_deref(),
        pages: o.pages(),
        resident_pages: o.resident(),
        rows: o.rows.iter().map(|r| maps_row(r, before)).collect(),
    }
}

fn maps_row<'a>(r: &'a MapsRow, before: Option<&HashMap<(u64, u64), u64>>) -> MapsRowJson<'a> {
    MapsRowJson {
        start: r.start,
        end: r.end,
        vma: [r.vma.start, r.vma.end],
        perms: &r.vma.perms,
        offset: r.file_offset(),
        file_backed: r.vma.is_file(),
        role: r.role.label(),
        sections: &r.sections,
        pages: r.pages,
        resident: r.resident,
        zero_pages: r.zero,
        cached: r.cached,
        resident_after_load: before.map(|b| b.get(&(r.start, r.end)).copied()),
    }
}

/// smaps figures in KiB, one per worker (or summed over rows, per worker).
#[derive(Debug, Serialize)]
struct SmapsKib {
    rss_kib: Vec<u64>,
    pss_kib: Vec<u64>,
    uss_kib: Vec<u64>,
    shared_clean_kib: Vec<u64>,
    shared_dirty_kib: Vec<u64>,
    private_clean_kib: Vec<u64>,
    private_dirty_kib: Vec<u64>,
}

impl SmapsKib {
    fn of<'a>(smaps: impl Iterator<Item = &'a Smaps> + Clone) -> SmapsKib {
        let col = |f: fn(&Smaps) -> u64| smaps.clone().map(f).collect();
        SmapsKib {
            rss_kib: col(|s| s.rss),
            pss_kib: col(|s| s.pss),
            uss_kib: col(Smaps::uss),
            shared_clean_kib: col(|s| s.shared_clean),
            shared_dirty_kib: col(|s| s.shared_dirty),
            private_clean_kib: col(|s| s.private_clean),
            private_dirty_kib: col(|s| s.private_dirty),
        }
    }
}

/// `mmld share --json`: each object segment across the worker processes.
#[derive(Debug, Serialize)]
pub struct ShareJson<'a> {
    library: &'a str,
    strategy: &'a str,
    processes: usize,
    privileged: bool,
    pids: &'a [i32],
    call: Option<&'a str>,
    page_size: u64,
    segments: Vec<ShareRowJson<'a>>,
    totals: TotalsJson,
    notes: &'a [String],
}

/// One row of [`ShareJson`].
#[derive(Debug, Serialize)]
struct ShareRowJson<'a> {
    object: &'a str,
    role: String,
    roles: Vec<&'static str>,
    perms: &'a str,
    vaddr: [u64; 2],
    file_offset: Option<u64>,
    sections: &'a [String],
    pages: u64,
    resident_pages: Vec<u64>,
    zero_pages: Vec<u64>,
    physical_pages: Option<u64>,
    resident_in_any: Option<u64>,
    resident_in_all: Option<u64>,
    frames_in_all: Option<u64>,
    max_sharers: Option<u64>,
    min_kpagecount_in_all: Option<u64>,
    #[serde(flatten)]
    smaps: SmapsKib,
    smaps_exact: Vec<bool>,
    addresses: Vec<[u64; 2]>,
    vmas: Vec<Vec<[u64; 2]>>,
    conclusion: String,
}

/// The `totals` of [`ShareJson`]: [`ShareTotals`] as JSON.
#[derive(Debug, Serialize)]
pub struct TotalsJson {
    pages: u64,
    resident_pages: Vec<u64>,
    zero_pages: Vec<u64>,
    physical_pages: Option<u64>,
    #[serde(flatten)]
    smaps: SmapsKib,
    smaps_exact: bool,
}

impl ShareTotals {
    /// The totals' JSON form.
    pub fn json(&self) -> TotalsJson {
        TotalsJson {
            pages: self.pages,
            resident_pages: self.resident.clone(),
            zero_pages: self.zero.clone(),
            physical_pages: self.physical,
            smaps: SmapsKib::of(self.smaps.iter()),
            smaps_exact: self.smaps_exact,
        }
    }
}

impl ShareReport {
    /// The report's JSON form.
    pub fn json(&self) -> ShareJson<'_> {
        ShareJson {
            library: &self.library,
            strategy: &self.strategy,
            processes: self.pids.len(),
            privileged: self.privilege.physical(),
            pids: &self.pids,
            call: self.call.as_deref(),
            page_size: PAGE,
            segments: self.rows.iter().map(|r| self.share_row(r)).collect(),
            totals: self.totals().json(),
            notes: &self.notes,
        }
    }

    fn share_row<'a>(&self, r: &'a ShareRow) -> ShareRowJson<'a> {
        let per = |f: fn(&WorkerFigures) -> u64| r.workers.iter().map(f).collect();
        let phys = |f: fn(&super::share::Physical) -> u64| r.physical.as_ref().map(f);
        ShareRowJson {
            object: &r.object,
            role: r.label(),
            roles: r.roles.iter().map(|x| x.label()).collect(),
            perms: &r.perms,
            vaddr: [r.vaddr.0, r.vaddr.1],
            file_offset: r.file_offset,
            sections: &r.sections,
            pages: r.pages,
            resident_pages: per(|f| f.resident),
            zero_pages: per(|f| f.zero),
            physical_pages: phys(|p| p.physical_pages),
            resident_in_any: phys(|p| p.resident_in_any),
            resident_in_all: phys(|p| p.resident_in_all),
            frames_in_all: phys(|p| p.frames_in_all),
            max_sharers: phys(|p| p.max_sharers),
            min_kpagecount_in_all: r.physical.as_ref().and_then(|p| p.min_mapcount_in_all),
            smaps: SmapsKib::of(r.workers.iter().map(|f| &f.smaps)),
            smaps_exact: r.workers.iter().map(|f| f.smaps_exact).collect(),
            addresses: r.workers.iter().map(|f| [f.start, f.end]).collect(),
            vmas: r
                .workers
                .iter()
                .map(|f| f.vmas.iter().map(|&(s, e)| [s, e]).collect())
                .collect(),
            conclusion: self.conclusion(r),
        }
    }
}
