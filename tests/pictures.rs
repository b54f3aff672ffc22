//! `--svg` and `--html` of `mmld maps` and `mmld share`: the picture shows
//! exactly what the report of the same run says.
//!
//! Each test runs mmld once with `--json` (the report) and `--svg`/`--html`
//! (the pictures), parses the SVG as XML (roxmltree) and checks that every
//! page of every segment is drawn once per strip, that each cell's class
//! gives the counts the report gives (resident and zero pages from pagemap,
//! and the kernel's own smaps split into shared / private clean / private
//! dirty where the figures are exact), that equal frame marks mean equal
//! physical copies, and that the totals are the report's. One test renders
//! the HTML page in headless Chromium and decodes the PNG (png crate).
//!
//! Libraries whose page-cache pages only the test maps are fresh copies in
//! a temporary directory: libtest runs these tests in parallel, and another
//! process mapping the same file between the kernel's smaps and pagemap
//! reads would turn a private clean page shared.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod picture_support;

use picture_support::{Drawn, chromium, list, parse, u64s};

const PAGE: u64 = 4096;
const SQLITE: &str = "/usr/lib/x86_64-linux-gnu/libsqlite3.so.0";
const LLVM: &str = "/usr/lib/x86_64-linux-gnu/libLLVM-15.so.1";

fn mmld() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mmld"))
}

/// A private copy of `src` named `name` in a fresh temporary directory
/// (see the top comment), written back to disk before it is used: smaps
/// counts a page-cache page with unwritten changes as dirty, and the
/// pictures draw a page-cache page as clean.
fn fresh_copy(src: &Path, name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let dst = dir.path().join(name);
    std::fs::copy(src, &dst).expect("copy a library");
    std::fs::File::open(&dst)
        .and_then(|f| f.sync_all())
        .expect("write the copy back");
    (dir, dst)
}

fn fresh_libdemo() -> (tempfile::TempDir, PathBuf) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("testlibs/libdemo.so");
    fresh_copy(&src, "libdemo.so")
}

fn privileged() -> bool {
    procfs::process::Process::myself()
        .and_then(|p| p.status())
        .is_ok_and(|s| s.capeff & (1 << 21) != 0)
        && std::fs::File::open("/proc/kpagecount").is_ok()
}

fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install it with `apt-get install -y {package}` (.ci/run does)"
    );
}

/// Run mmld with `args` plus `--json --svg DIR/p.svg --html DIR/p.html`;
/// return the JSON report, the SVG and the HTML.
fn run(dir: &Path, args: &[&str]) -> (Value, String, String) {
    run_with(mmld(), dir, args)
}

/// [`run`] with the command that starts mmld given.
fn run_with(mut cmd: Command, dir: &Path, args: &[&str]) -> (Value, String, String) {
    let (svg, html) = (dir.join("p.svg"), dir.join("p.html"));
    let out = cmd
        .args(args)
        .arg("--json")
        .arg("--svg")
        .arg(&svg)
        .arg("--html")
        .arg(&html)
        .output()
        .expect("run mmld");
    assert!(
        out.status.success(),
        "mmld {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report = serde_json::from_slice(&out.stdout).expect("mmld printed JSON");
    let read = |p: &Path| std::fs::read_to_string(p).expect("mmld wrote the picture");
    (report, read(&svg), read(&html))
}

/// The checks every `share` picture passes against its JSON report.
/// `smaps_classes`: compare the drawn classes with the kernel's smaps split
/// (only where no other process maps the file; see the top comment).
fn check_share(report: &Value, drawn: &Drawn, smaps_classes: bool) {
    let n = report["processes"].as_u64().unwrap() as usize;
    let physical_known = report["privileged"].as_bool().unwrap();
    assert_eq!(drawn.strips, n, "one strip per worker");
    let segments = report["segments"].as_array().unwrap();
    assert_eq!(
        segments.len(),
        drawn.segments.len(),
        "one drawn segment per row"
    );
    let (mut pages, mut resident, mut zero) = (0, vec![0; n], vec![0; n]);
    let mut physical = 0;
    for seg in segments {
        let v = u64s(&seg["vaddr"]);
        let key = (seg["object"].as_str().unwrap().to_string(), v[0], v[1]);
        let d = drawn
            .segments
            .get(&key)
            .unwrap_or_else(|| panic!("{key:?} is not drawn"));
        assert_eq!(d.role, seg["role"].as_str().unwrap());
        assert_eq!(d.pages, seg["pages"].as_u64().unwrap());
        if d.role != "gap" {
            pages += d.pages;
        }
        physical += seg["physical_pages"].as_u64().unwrap_or(0);
        let exact: Vec<bool> = seg["smaps_exact"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_bool().unwrap())
            .collect();
        for w in 0..n {
            assert_eq!(
                d.resident(w),
                u64s(&seg["resident_pages"])[w],
                "{key:?} w{w}"
            );
            assert_eq!(
                d.count(w, "zero"),
                u64s(&seg["zero_pages"])[w],
                "{key:?} w{w}"
            );
            resident[w] += d.resident(w);
            zero[w] += d.count(w, "zero");
            if smaps_classes && exact[w] {
                let kib = |k: &str| u64s(&seg[k])[w];
                let why = format!("{key:?} worker {w}: picture against smaps");
                assert_eq!(
                    d.count(w, "dirty") * PAGE / 1024,
                    kib("private_dirty_kib"),
                    "{why}"
                );
                assert_eq!(
                    d.count(w, "clean") * PAGE / 1024,
                    kib("private_clean_kib"),
                    "{why}"
                );
                assert_eq!(
                    d.count(w, "shared") * PAGE / 1024,
                    kib("shared_clean_kib") + kib("shared_dirty_kib"),
                    "{why}"
                );
            }
        }
        if physical_known && d.cells.iter().all(|c| c.pages == 1) {
            // Drawn page by page: distinct marks are distinct frames.
            let marks: BTreeSet<&String> = d.cells.iter().filter_map(|c| c.mark.as_ref()).collect();
            assert_eq!(
                marks.len() as u64,
                seg["physical_pages"].as_u64().unwrap(),
                "{key:?}: distinct frame marks against physical pages"
            );
        }
    }
    // The picture's totals are the report's, and the sums of its rows.
    let t = &report["totals"];
    assert_eq!(t["pages"].as_u64().unwrap(), pages);
    assert_eq!(u64s(&t["resident_pages"]), resident);
    assert_eq!(u64s(&t["zero_pages"]), zero);
    assert_eq!(drawn.totals["data-pages"], pages.to_string());
    assert_eq!(list(&drawn.totals["data-resident"]), resident);
    assert_eq!(list(&drawn.totals["data-zero"]), zero);
    if physical_known {
        assert_eq!(t["physical_pages"].as_u64().unwrap(), physical);
        assert_eq!(drawn.totals["data-physical"], physical.to_string());
    }
}

/// The "total" line of the text report inside the HTML page, as
/// (pages, resident column, physical column).
fn text_total(html: &str) -> (String, String, String) {
    let pre = html
        .split_once("<pre>")
        .and_then(|(_, rest)| rest.split_once("</pre>"))
        .expect("the HTML page holds the text report")
        .0;
    let line = pre
        .lines()
        .find(|l| l.starts_with("total "))
        .expect("the text report has a total line");
    // total  PAGES  RESIDENT  PHYSICAL  Rss...; RESIDENT may be "7 each".
    let words: Vec<&str> = line.split_whitespace().collect();
    let (resident, rest) = if words.get(3) == Some(&"each") {
        (format!("{} each", words[2]), &words[4..])
    } else {
        (words[2].to_string(), &words[3..])
    };
    (words[1].to_string(), resident, rest[0].to_string())
}

/// The text report's spelling of a per-worker list.
fn spread(v: &[u64]) -> String {
    if v.iter().all(|x| *x == v[0]) && v.len() > 1 {
        format!("{} each", v[0])
    } else {
        v.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
    }
}

/// Strip `s` and strip `t` show the same frames in segment `role` wherever
/// both are resident (`same`), or different frames everywhere (`!same`).
fn marks_agree(drawn: &Drawn, object: &str, role: &str, same: bool) {
    let (_, seg) = drawn
        .segments
        .iter()
        .find(|((o, _, _), s)| o == object && s.role == role)
        .unwrap_or_else(|| panic!("{object} {role} not drawn"));
    let mut compared = 0;
    for c in seg
        .cells
        .iter()
        .filter(|c| c.strip == 0 && c.mark.is_some())
    {
        for t in 1..drawn.strips {
            let Some(other) = seg.at(t, c.first).and_then(|o| o.mark.as_ref()) else {
                continue;
            };
            compared += 1;
            assert_eq!(
                c.mark.as_ref() == Some(other),
                same,
                "{object} {role} page {}: strips 0 and {t}",
                c.first
            );
        }
    }
    assert!(
        compared > 0,
        "{object} {role}: no resident page in two strips"
    );
}

#[test]
fn share_libdemo_mmap_picture_is_the_report() {
    let (dir, lib) = fresh_libdemo();
    let lib = lib.to_str().unwrap();
    let args = [
        "share",
        lib,
        "--procs",
        "4",
        "--strategy",
        "mmap",
        "--call",
        "counter_bump",
    ];
    let (report, svg, html) = run(dir.path(), &args);
    let drawn = parse(&svg);
    check_share(&report, &drawn, true);
    let (pages, resident, physical) = text_total(&html);
    assert_eq!(pages, drawn.totals["data-pages"]);
    assert_eq!(resident, spread(&list(&drawn.totals["data-resident"])));
    if privileged() {
        assert_eq!(physical, drawn.totals["data-physical"]);
        // One physical copy of text in every strip; a copy of the written
        // data per worker.
        marks_agree(&drawn, "libdemo.so", "text", true);
        marks_agree(&drawn, "libdemo.so", "data", false);
        let text = drawn.segments.values().find(|s| s.role == "text").unwrap();
        assert!((0..4).all(|w| text.count(w, "shared") > 0 && text.count(w, "dirty") == 0));
    }
}

#[test]
fn share_libdemo_read_picture_is_the_report() {
    let (dir, lib) = fresh_libdemo();
    let lib = lib.to_str().unwrap();
    let args = ["share", lib, "--procs", "4", "--strategy", "read"];
    let (report, svg, html) = run(dir.path(), &args);
    assert_eq!(report["strategy"], "read");
    let drawn = parse(&svg);
    check_share(&report, &drawn, true);
    let (pages, resident, _) = text_total(&html);
    assert_eq!(pages, drawn.totals["data-pages"]);
    assert_eq!(resident, spread(&list(&drawn.totals["data-resident"])));
    // The read strategy copies text into anonymous memory: every resident
    // text page is private dirty, a copy per worker.
    let text = drawn.segments.values().find(|s| s.role == "text").unwrap();
    for w in 0..4 {
        assert!(text.count(w, "dirty") > 0);
        assert_eq!(text.count(w, "shared") + text.count(w, "clean"), 0);
    }
    if privileged() {
        marks_agree(&drawn, "libdemo.so", "text", false);
    }
}

#[test]
fn share_libsqlite3_after_initialize_picture_is_the_report() {
    require(SQLITE, "libsqlite3-0");
    // A private copy of the system's library (see the top comment), so the
    // drawn shared/private split can be held against smaps.
    let (dir, lib) = fresh_copy(Path::new(SQLITE), "libsqlite3.so.0");
    let args = [
        "share",
        lib.to_str().unwrap(),
        "--procs",
        "3",
        "--call",
        "sqlite3_initialize",
    ];
    let (report, svg, html) = run(dir.path(), &args);
    assert_eq!(report["call"], "sqlite3_initialize() = 0");
    let drawn = parse(&svg);
    check_share(&report, &drawn, true);
    let (pages, resident, _) = text_total(&html);
    assert_eq!(pages, drawn.totals["data-pages"]);
    assert_eq!(resident, spread(&list(&drawn.totals["data-resident"])));
    if privileged() {
        marks_agree(&drawn, "libsqlite3.so.0", "text", true);
        marks_agree(&drawn, "libsqlite3.so.0", "RELRO", false);
    }
}

/// Without CAP_SYS_ADMIN (as user nobody) the classes come from pagemap's
/// exclusive bit alone, and still split resident pages as smaps does; no
/// frame marks are drawn, since no frames are known.
#[test]
fn share_picture_without_privilege_uses_pagemap_alone() {
    if !privileged() || !Path::new("/usr/bin/setpriv").exists() {
        eprintln!("skipped: needs root to drop privilege with setpriv");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let (dir, lib) = fresh_libdemo();
    let open = std::fs::Permissions::from_mode(0o777);
    std::fs::set_permissions(dir.path(), open).unwrap();
    let exe = Path::new(env!("CARGO_BIN_EXE_mmld"));
    let nobody = [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ];
    let reachable = Command::new("setpriv")
        .args(nobody)
        .args(["test", "-x"])
        .arg(exe)
        .status()
        .is_ok_and(|s| s.success());
    if !reachable {
        eprintln!("skipped: user nobody cannot reach the mmld binary");
        return;
    }
    let mut cmd = Command::new("setpriv");
    cmd.args(nobody).arg(exe);
    let lib = lib.to_str().unwrap();
    let args = ["share", lib, "--procs", "2", "--call", "counter_bump"];
    let (report, svg, _) = run_with(cmd, dir.path(), &args);
    assert_eq!(report["privileged"], false);
    let drawn = parse(&svg);
    check_share(&report, &drawn, true);
    assert!(
        drawn
            .segments
            .values()
            .all(|s| s.cells.iter().all(|c| c.mark.is_none()))
    );
    assert!(svg.contains("physical frames are hidden without CAP_SYS_ADMIN"));
    let text = drawn.segments.values().find(|s| s.role == "text").unwrap();
    assert!((0..2).all(|w| text.count(w, "shared") > 0));
}

/// `maps --call`: two strips, after load and after the call, each the
/// report's own counts.
#[test]
fn maps_libsqlite3_call_draws_after_load_and_after_the_call() {
    require(SQLITE, "libsqlite3-0");
    let dir = tempfile::tempdir().unwrap();
    let (report, svg, _) = run(
        dir.path(),
        &["maps", SQLITE, "--call", "sqlite3_initialize"],
    );
    let drawn = parse(&svg);
    assert_eq!(drawn.strips, 2);
    let mut totals = [0, 0];
    for o in report["objects"].as_array().unwrap() {
        let name = o["name"].as_str().unwrap();
        let bias = o["bias"].as_u64().unwrap();
        let mut sums = [0, 0];
        for r in o["rows"].as_array().unwrap() {
            let key = (
                name.to_string(),
                r["start"].as_u64().unwrap() - bias,
                r["end"].as_u64().unwrap() - bias,
            );
            let d = &drawn.segments[&key];
            let before = r["resident_after_load"].as_u64().unwrap();
            let after = r["resident"].as_u64().unwrap();
            assert_eq!((d.resident(0), d.resident(1)), (before, after), "{key:?}");
            assert_eq!(d.count(1, "zero"), r["zero_pages"].as_u64().unwrap());
            sums[0] += before;
            sums[1] += after;
        }
        let drawn_object = &drawn.objects[name];
        assert_eq!(list(&drawn_object["data-resident"]), sums);
        assert_eq!(
            drawn_object["data-resident"],
            format!("{},{}", sums[0], sums[1])
        );
        assert_eq!(
            list(&drawn_object["data-resident"])[1],
            o["resident_pages"].as_u64().unwrap()
        );
        assert_eq!(drawn_object["data-pages"], o["pages"].to_string());
        totals[0] += sums[0];
        totals[1] += sums[1];
    }
    assert_eq!(list(&drawn.totals["data-resident"]), totals);
    assert!(totals[1] >= totals[0], "a call only adds resident pages");
}

/// Names are escaped: a path full of markup still gives well-formed XML
/// holding the name as it is.
#[test]
fn names_with_markup_are_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let odd = dir.path().join("a&b <c> \"d\" 'e'");
    std::fs::create_dir(&odd).unwrap();
    let lib = odd.join("lib<&>.so");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testlibs/libdemo.so"),
        &lib,
    )
    .unwrap();
    let (report, svg, html) = run(dir.path(), &["maps", lib.to_str().unwrap()]);
    let drawn = parse(&svg);
    assert_eq!(drawn.strips, 1);
    let o = &report["objects"][0];
    let name = o["name"].as_str().unwrap();
    assert_eq!(
        drawn.objects[name]["data-resident"],
        o["resident_pages"].to_string()
    );
    // The path, markup and all, is text in the SVG, read back unchanged.
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let path = lib.to_str().unwrap();
    assert!(
        doc.descendants()
            .filter_map(|n| n.text())
            .any(|t| t.contains(path)),
        "the SVG does not name {path}"
    );
    assert!(!svg.contains("<c>") && !html.contains("<c>") && html.contains("&lt;c&gt;"));
}

/// libLLVM: tens of thousands of pages stay one fixed width, drawn as runs
/// whose titles carry the counts, every role still labelled.
#[test]
fn share_libllvm_aggregates_runs_at_a_fixed_width() {
    require(LLVM, "libllvm15");
    let dir = tempfile::tempdir().unwrap();
    let (report, svg, _) = run(dir.path(), &["share", LLVM, "--procs", "2"]);
    let drawn = parse(&svg);
    check_share(&report, &drawn, false);
    let (_, text) = drawn
        .segments
        .iter()
        .find(|((o, _, _), s)| o == "libLLVM-15.so.1" && s.role == "text")
        .expect("libLLVM text is drawn");
    assert!(text.pages > 10_000);
    let cells = text.cells.iter().filter(|c| c.strip == 0).count() as u64;
    assert!(cells < text.pages, "runs, not pages: {cells} cells");
    assert!(text.cells.iter().any(|c| c.pages > 1));
    for role in ["text", "RELRO", "data", ".bss"] {
        assert!(
            svg.contains(&format!(">{role}</text>")) && svg.contains(&format!(">{role} · ")),
            "the {role} segment has a readable label and key line"
        );
    }
}

#[test]
fn html_page_renders_in_chromium_with_the_legend_colours() {
    let (dir, lib) = fresh_libdemo();
    let args = [
        "share",
        lib.to_str().unwrap(),
        "--procs",
        "4",
        "--call",
        "counter_bump",
    ];
    let (_, _, html) = run(dir.path(), &args);
    // Self-contained: no script, nothing fetched.
    for needle in ["<script", "src=", "href=", "url(", "@import"] {
        assert!(!html.contains(needle), "the page contains {needle}");
    }
    let png_path = dir.path().join("p.png");
    chromium::render(&dir.path().join("p.html"), &png_path);

    let pixels = chromium::pixels(&png_path);
    let white = pixels.iter().filter(|p| **p == [255, 255, 255]).count();
    let distinct: BTreeSet<[u8; 3]> = pixels.iter().copied().collect();
    assert!(
        white < pixels.len() * 9 / 10 && distinct.len() > 16,
        "the render looks blank: {white} of {} pixels white, {} colours",
        pixels.len(),
        distinct.len()
    );
    for (class, rgb) in chromium::legend_colours(&html) {
        assert!(
            distinct.contains(&rgb),
            "the legend colour of {class} ({rgb:?}) is not in the render"
        );
    }
}
