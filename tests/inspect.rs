//! `mmld maps` and `mmld share` measured against independent oracles:
//! `readelf -lSW`, `readelf -rW` and `nm` for what each page is and who
//! writes it, `/proc/PID/smaps` read directly by the test for the kernel's
//! figures, and `/proc` for which processes are still alive.
//!
//! The physical-page checks need CAP_SYS_ADMIN (CI runs as root); without
//! it they check that the report says so and shows smaps only.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use procfs::process::{MMapPath, Process};
use serde_json::Value;

const PAGE: u64 = 4096;

fn mmld() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mmld"))
}

fn testlib(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testlibs")
        .join(name)
}

fn page_down(v: u64) -> u64 {
    v & !(PAGE - 1)
}

fn page_up(v: u64) -> u64 {
    (v + PAGE - 1) & !(PAGE - 1)
}

/// CAP_SYS_ADMIN in our effective set: pagemap shows frames, kpagecount is
/// readable. What mmld calls privileged.
fn privileged() -> bool {
    procfs::process::Process::myself()
        .and_then(|p| p.status())
        .is_ok_and(|s| s.capeff & (1 << 21) != 0)
        && std::fs::File::open("/proc/kpagecount").is_ok()
}

fn run_json(cmd: &mut Command) -> Value {
    let out = cmd.output().expect("run mmld");
    assert!(
        out.status.success(),
        "mmld failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "mmld printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_u64().unwrap_or_else(|| panic!("not a number: {x}")))
        .collect()
}

fn segment<'a>(report: &'a Value, role: &str) -> &'a Value {
    report["segments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["object"] == "libdemo.so" && s["role"] == role)
        .unwrap_or_else(|| panic!("no {role} segment in {report:#}"))
}

// ---------------------------------------------------------------------------
// readelf as the oracle for roles and sections

#[derive(Debug)]
struct Load {
    vaddr: u64,
    filesz: u64,
    memsz: u64,
    flags: String,
}

#[derive(Debug)]
struct Section {
    name: String,
    addr: u64,
    size: u64,
}

#[derive(Debug)]
struct Readelf {
    loads: Vec<Load>,
    relro: Option<(u64, u64)>,
    sections: Vec<Section>,
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .unwrap_or_else(|e| panic!("{s:?} is not hex: {e}"))
}

fn readelf(path: &Path) -> Readelf {
    let out = Command::new("readelf")
        .arg("-lSW")
        .arg(path)
        .output()
        .expect("run readelf (binutils)");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let mut r = Readelf {
        loads: Vec::new(),
        relro: None,
        sections: Vec::new(),
    };
    for line in text.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        match t.first().copied() {
            // Type Offset VirtAddr PhysAddr FileSiz MemSiz Flg... Align
            Some("LOAD") => r.loads.push(Load {
                vaddr: hex(t[2]),
                filesz: hex(t[4]),
                memsz: hex(t[5]),
                flags: t[6..t.len() - 1].concat(),
            }),
            Some("GNU_RELRO") => r.relro = Some((hex(t[2]), hex(t[5]))),
            _ => {}
        }
        // "  [14] .rodata  PROGBITS  0000000000002000 002000 0000d4 00   A  0   0  8"
        if let Some(rest) = line.trim_start().strip_prefix('[')
            && let Some((nr, body)) = rest.split_once(']')
            && nr.trim().parse::<u32>().is_ok_and(|n| n > 0)
        {
            let f: Vec<&str> = body.split_whitespace().collect();
            // With flags: name type addr off size es flg lk inf al (10).
            let flags = if f.len() == 10 { f[6] } else { "" };
            let tls_nobits = flags.contains('T') && f[1] == "NOBITS";
            if flags.contains('A') && !tls_nobits {
                r.sections.push(Section {
                    name: f[0].to_string(),
                    addr: hex(f[2]),
                    size: hex(f[4]),
                });
            }
        }
    }
    assert!(!r.loads.is_empty(), "readelf showed no LOAD:\n{text}");
    r
}

impl Readelf {
    /// The role of the page at file address `page`, from the program
    /// headers alone.
    fn role(&self, page: u64) -> &'static str {
        let mut role = "gap";
        for l in &self.loads {
            if page < page_down(l.vaddr) || page >= page_up(l.vaddr + l.memsz) {
                continue;
            }
            role = if l.flags.contains('E') {
                "text"
            } else if !l.flags.contains('W') {
                "rodata"
            } else if page < page_up(l.vaddr + l.filesz) {
                "data"
            } else {
                ".bss"
            };
        }
        if let Some((v, m)) = self.relro
            && page >= page_down(v)
            && page < page_down(v + m)
            && (role == "data" || role == ".bss")
        {
            role = "RELRO";
        }
        role
    }

    fn sections_in(&self, start: u64, end: u64) -> Vec<String> {
        let mut s: Vec<&Section> = self
            .sections
            .iter()
            .filter(|s| s.addr < end && s.addr + s.size.max(1) > start)
            .collect();
        s.sort_by_key(|s| (s.addr, s.size));
        s.iter().map(|s| s.name.clone()).collect()
    }
}

#[test]
fn maps_names_each_role_and_its_sections_as_readelf_does() {
    let lib = testlib("libdemo.so");
    let elf = readelf(&lib);
    let report = run_json(mmld().arg("maps").arg(&lib).arg("--json"));
    let obj = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "libdemo.so")
        .expect("libdemo.so in the report");
    let bias = obj["bias"].as_u64().unwrap();
    let mut seen = BTreeSet::new();
    let mut covered = 0;
    for row in obj["rows"].as_array().unwrap() {
        let role = row["role"].as_str().unwrap();
        let start = row["start"].as_u64().unwrap() - bias;
        let end = row["end"].as_u64().unwrap() - bias;
        for page in (start..end).step_by(PAGE as usize) {
            assert_eq!(
                role,
                elf.role(page),
                "page {page:#x} of libdemo.so: mmld says {role}, readelf's headers say {}",
                elf.role(page)
            );
        }
        let sections: Vec<String> = row["sections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        if role != "gap" {
            assert_eq!(
                sections,
                elf.sections_in(start, end),
                "sections of the {role} row {start:#x}-{end:#x}"
            );
        }
        // The permissions say the same as the role.
        let perms = row["perms"].as_str().unwrap();
        let want = match role {
            "text" => "r-xp",
            "rodata" | "RELRO" => "r--p",
            "data" | ".bss" => "rw-p",
            _ => "---p",
        };
        assert_eq!(perms, want, "{role} row");
        assert!(row["resident"].as_u64().unwrap() <= row["pages"].as_u64().unwrap());
        seen.insert(role.to_string());
        covered += end - start;
    }
    for role in ["text", "rodata", "RELRO", "data", ".bss"] {
        assert!(seen.contains(role), "no {role} row: {seen:?}");
    }
    let span = elf
        .loads
        .iter()
        .map(|l| page_up(l.vaddr + l.memsz))
        .max()
        .unwrap()
        - elf.loads.iter().map(|l| page_down(l.vaddr)).min().unwrap();
    assert_eq!(covered, span, "rows cover the whole object, once");

    // The text form names the same roles next to the kernel's maps lines.
    let out = mmld().arg("maps").arg(&lib).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for (role, section) in [
        ("text", ".text"),
        ("rodata", ".rodata"),
        ("RELRO", ".got"),
        ("data", ".data"),
        (".bss", ".bss"),
    ] {
        assert!(
            text.lines().any(|l| l.split_whitespace().any(|w| w == role)
                && l.split_whitespace().any(|w| w == section)),
            "no line naming {role} with {section}:\n{text}"
        );
    }
    assert!(text.contains(&lib.display().to_string()));
}

#[test]
fn maps_with_read_strategy_shows_anonymous_copies() {
    let report = run_json(
        mmld()
            .arg("maps")
            .arg(testlib("libdemo.so"))
            .arg("--copy")
            .arg("--json"),
    );
    let rows = report["objects"][0]["rows"].as_array().unwrap();
    assert!(!rows.is_empty());
    for row in rows {
        assert_eq!(row["file_backed"], false, "{row}");
        assert!(row["cached"].is_null());
    }
}

#[test]
fn maps_shows_text_becoming_resident_lazily() {
    let lib = Path::new("/usr/lib/x86_64-linux-gnu/libsqlite3.so.0");
    if !lib.exists() {
        eprintln!("skipped: {} is not installed", lib.display());
        return;
    }
    let report = run_json(
        mmld()
            .arg("maps")
            .arg(lib)
            .arg("--json")
            .arg("--call")
            .arg("sqlite3_initialize"),
    );
    assert_eq!(report["called"], "sqlite3_initialize() = 0");
    let rows = report["objects"][0]["rows"].as_array().unwrap();
    let text: Vec<&Value> = rows.iter().filter(|r| r["role"] == "text").collect();
    let pages: u64 = text.iter().map(|r| r["pages"].as_u64().unwrap()).sum();
    let loaded: u64 = text
        .iter()
        .map(|r| r["resident_after_load"].as_u64().unwrap())
        .sum();
    let called: u64 = text.iter().map(|r| r["resident"].as_u64().unwrap()).sum();
    assert!(
        loaded * 4 < pages,
        "after load only a small part of the text is resident: {loaded} of {pages}"
    );
    assert!(
        called > loaded,
        "calling a function maps more text: {loaded} -> {called}"
    );
}

#[test]
fn maps_of_another_process_annotates_its_libc() {
    let mut sleeper = Command::new("sleep").arg("60").spawn().expect("run sleep");
    // Wait until ld.so has mapped libc's text (it maps the span read-only
    // first, then each segment).
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let process = Process::new(sleeper.id() as i32);
        let started = process.as_ref().is_ok_and(|p| {
            p.maps().is_ok_and(|maps| {
                maps.iter().any(|m| {
                    m.perms.as_str() == "r-xp"
                        && matches!(&m.pathname, MMapPath::Path(f)
                            if f.to_string_lossy().contains("/libc.so"))
                })
            })
        });
        // And has finished relocating: the main program runs (sleep's
        // nanosleep), seen as the process being asleep.
        let asleep = process.is_ok_and(|p| p.stat().is_ok_and(|s| s.state == 'S'));
        if started && asleep {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let report = run_json(
        mmld()
            .arg("maps")
            .arg("--pid")
            .arg(sleeper.id().to_string())
            .arg("--json"),
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let libc = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"].as_str().is_some_and(|n| n.starts_with("libc.so")))
        .unwrap_or_else(|| panic!("no libc in {report:#}"));
    let elf = readelf(Path::new(libc["path"].as_str().unwrap()));
    let bias = libc["bias"].as_u64().unwrap();
    let text = libc["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["role"] == "text")
        .expect("libc has a text row");
    assert!(
        text["sections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == ".text")
    );
    assert_eq!(text["perms"], "r-xp");
    assert!(text["resident"].as_u64().unwrap() > 0);
    for row in libc["rows"].as_array().unwrap() {
        let start = row["start"].as_u64().unwrap() - bias;
        assert_eq!(row["role"].as_str().unwrap(), elf.role(start), "{row}");
    }
}

// ---------------------------------------------------------------------------
// share

/// File addresses (page-aligned) that loading libdemo and calling
/// `counter_bump` write: every relocation target (readelf -rW), the page
/// where the loader zeroes the .bss tail, what DT_INIT and the constructors
/// write (order_log, demo_initialised, demo_init_count: see demo.c) and
/// what counter_bump writes (counter).
fn libdemo_written_pages(lib: &Path, elf: &Readelf) -> BTreeSet<u64> {
    let mut pages = BTreeSet::new();
    let out = Command::new("readelf")
        .arg("-rW")
        .arg(lib)
        .output()
        .unwrap();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.len() >= 3 && t[2].starts_with("R_X86_64_") {
            pages.insert(page_down(hex(t[0])));
        }
    }
    for l in elf.loads.iter().filter(|l| l.flags.contains('W')) {
        let file_end = l.vaddr + l.filesz;
        if l.memsz > l.filesz && file_end % PAGE != 0 {
            pages.insert(page_down(file_end));
        }
    }
    let out = Command::new("nm").arg(lib).output().expect("run nm");
    let mut symbols = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.len() == 3 {
            symbols.insert(t[2].to_string(), hex(t[0]));
        }
    }
    for name in [
        "order_log",
        "demo_initialised",
        "demo_init_count",
        "counter",
    ] {
        let addr = symbols
            .get(name)
            .unwrap_or_else(|| panic!("nm shows no {name}"));
        pages.insert(page_down(*addr));
    }
    pages
}

#[test]
fn share_mmap_text_is_one_physical_copy_and_only_written_pages_are_private() {
    let lib = testlib("libdemo.so");
    let elf = readelf(&lib);
    let report = run_json(
        mmld()
            .args(["share", "--procs", "4", "--strategy", "mmap", "--json"])
            .arg(&lib)
            .args(["--call", "counter_bump"]),
    );
    assert_eq!(report["processes"], 4);
    assert_eq!(report["strategy"], "mmap");
    assert_eq!(report["call"], "counter_bump() = 42");
    let text = segment(&report, "text");
    let resident = u64s(&text["resident_pages"]);
    assert_eq!(resident.len(), 4);
    assert!(
        resident.iter().all(|&r| r > 0),
        "the constructors ran from text in every worker"
    );
    let pss: u64 = u64s(&text["pss_kib"]).iter().sum();

    if privileged() {
        assert_eq!(report["privileged"], true);
        let physical = text["physical_pages"].as_u64().unwrap();
        let any = text["resident_in_any"].as_u64().unwrap();
        assert_eq!(
            physical, any,
            "one physical copy of each text page across the workers"
        );
        assert!(text["resident_in_all"].as_u64().unwrap() > 0);
        let mapcount = text["min_kpagecount_in_all"].as_u64().unwrap();
        assert!(
            mapcount >= 4,
            "a text page every worker maps has kpagecount {mapcount} < 4"
        );
        assert!(
            pss <= any * PAGE / 1024,
            "text Pss over all workers ({pss} KiB) exceeds the distinct resident pages ({any} pages)"
        );
    } else {
        assert_eq!(report["privileged"], false);
        assert!(text["physical_pages"].is_null());
        let max_rss = u64s(&text["rss_kib"]).into_iter().max().unwrap();
        assert!(pss <= max_rss * 4);
    }

    let written = libdemo_written_pages(&lib, &elf);
    for seg in report["segments"].as_array().unwrap() {
        if seg["object"] != "libdemo.so" {
            continue;
        }
        let v = u64s(&seg["vaddr"]);
        let written_here = written.iter().filter(|&&p| p >= v[0] && p < v[1]).count() as u64;
        let exact: Vec<bool> = seg["smaps_exact"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_bool().unwrap())
            .collect();
        for (w, dirty) in u64s(&seg["private_dirty_kib"]).into_iter().enumerate() {
            if dirty == 0 {
                continue;
            }
            assert!(
                written_here > 0,
                "worker {w} has {dirty} KiB private dirty in {} {:x}-{:x}, which neither relocation nor the code that ran writes",
                seg["role"],
                v[0],
                v[1]
            );
            if exact[w] {
                assert!(
                    dirty <= written_here * PAGE / 1024,
                    "{} KiB private dirty in {} but only {written_here} pages are written there",
                    dirty,
                    seg["role"]
                );
            }
        }
        let role = seg["role"].as_str().unwrap();
        if role == "text" || role == "rodata" {
            assert!(u64s(&seg["private_dirty_kib"]).iter().all(|&d| d == 0));
        }
    }
    // And the pages that were written are private dirty in every worker.
    for role in ["RELRO", "data"] {
        let seg = segment(&report, role);
        assert!(
            u64s(&seg["private_dirty_kib"]).iter().all(|&d| d > 0),
            "{role}: {seg}"
        );
        if privileged() {
            assert_eq!(
                seg["physical_pages"].as_u64().unwrap(),
                u64s(&seg["resident_pages"]).iter().sum::<u64>(),
                "{role}: one private copy per worker"
            );
        }
    }
}

#[test]
fn share_read_strategy_gives_each_worker_its_own_text() {
    let report = run_json(
        mmld()
            .args(["share", "--procs", "4", "--strategy", "read", "--json"])
            .arg(testlib("libdemo.so")),
    );
    assert_eq!(report["strategy"], "read");
    let text = segment(&report, "text");
    let resident = u64s(&text["resident_pages"]);
    assert!(resident.iter().all(|&r| r > 0));
    if privileged() {
        assert_eq!(
            text["physical_pages"].as_u64().unwrap(),
            resident.iter().sum::<u64>(),
            "one private copy of text per worker"
        );
    }
    let rss = u64s(&text["rss_kib"]);
    let pss = u64s(&text["pss_kib"]);
    for w in 0..4 {
        assert!(rss[w] > 0);
        assert_eq!(pss[w], rss[w], "worker {w}: text is private, so Pss == Rss");
    }
    assert!(u64s(&text["private_dirty_kib"]).iter().all(|&d| d > 0));
}

/// smaps of one process, by VMA start: (end, field -> KiB).
fn smaps_of(pid: u64) -> BTreeMap<u64, (u64, BTreeMap<String, u64>)> {
    let smaps = Process::new(pid as i32)
        .and_then(|p| p.smaps())
        .expect("read smaps");
    smaps
        .iter()
        .map(|m| {
            // procfs gives the kB fields in bytes (and the few unit-less
            // ones as they are; none of those is read here).
            let fields = m
                .extension
                .map
                .iter()
                .map(|(k, v)| (k.clone(), v / 1024))
                .collect();
            (m.address.0, (m.address.1, fields))
        })
        .collect()
}

fn alive(pid: u64) -> bool {
    // Gone, or a zombie whose parent has not reaped it yet, is not alive.
    Process::new(pid as i32)
        .and_then(|p| p.stat())
        .is_ok_and(|s| s.state != 'Z' && s.state != 'X')
}

fn exists(pid: u64) -> bool {
    Process::new(pid as i32).is_ok()
}

fn wait_gone(pids: &[u64], check: fn(u64) -> bool) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<u64> = pids.iter().copied().filter(|&p| check(p)).collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Start `mmld share --hold --json` on `lib`, return it and the report it
/// printed.
fn held_share(lib: &Path, extra: &[&str]) -> (std::process::Child, Value) {
    let mut child = mmld()
        .args(["share", "--procs", "3", "--hold", "--json"])
        .arg(lib)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mmld share");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("read the report");
    let report: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
        let _ = child.kill();
        panic!("no report ({e}): {line:?}")
    });
    (child, report)
}

#[test]
fn share_reports_exactly_what_smaps_says_at_the_same_moment() {
    // A private copy: Pss depends on how many processes map a page
    // system-wide, and tests running in parallel map testlibs/libdemo.so.
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("libdemo.so");
    std::fs::copy(testlib("libdemo.so"), &lib).unwrap();
    let (mut child, report) = held_share(&lib, &["--call", "counter_bump"]);
    let pids = u64s(&report["pids"]);
    assert_eq!(pids.len(), 3);
    // Workers are blocked: their smaps cannot have changed since mmld read it.
    let smaps = smaps_of(pids[0]);
    for seg in report["segments"].as_array().unwrap() {
        let vmas = seg["vmas"][0].as_array().unwrap();
        assert!(!vmas.is_empty(), "{seg}");
        let mut sum: BTreeMap<&str, u64> = BTreeMap::new();
        for v in vmas {
            let (s, e) = (v[0].as_u64().unwrap(), v[1].as_u64().unwrap());
            let (end, fields) = smaps
                .get(&s)
                .unwrap_or_else(|| panic!("no VMA at {s:#x} in smaps of {}", pids[0]));
            assert_eq!(*end, e, "VMA {s:#x} ends where mmld says");
            for k in [
                "Rss",
                "Pss",
                "Shared_Clean",
                "Shared_Dirty",
                "Private_Clean",
                "Private_Dirty",
            ] {
                *sum.entry(k).or_default() += fields.get(k).copied().unwrap_or(0);
            }
        }
        for (key, field) in [
            ("Rss", "rss_kib"),
            ("Pss", "pss_kib"),
            ("Shared_Clean", "shared_clean_kib"),
            ("Shared_Dirty", "shared_dirty_kib"),
            ("Private_Clean", "private_clean_kib"),
            ("Private_Dirty", "private_dirty_kib"),
        ] {
            assert_eq!(
                seg[field][0].as_u64().unwrap(),
                sum[key],
                "{} {}: {field} disagrees with /proc/{}/smaps",
                seg["object"],
                seg["role"],
                pids[0]
            );
        }
    }
    // Release: closing stdin lets the workers go; all are reaped.
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "mmld share --hold exited with {status}");
    assert_eq!(
        wait_gone(&pids, exists),
        Vec::<u64>::new(),
        "workers left behind"
    );
}

#[test]
fn share_reaps_its_workers_on_ctrl_c() {
    let (mut child, report) = held_share(&testlib("libdemo.so"), &[]);
    let pids = u64s(&report["pids"]);
    assert!(pids.iter().all(|&p| alive(p)));
    // Keep mmld's stdin open (Child::wait would close it first): only the
    // signal may end it.
    let stdin = child.stdin.take();
    // SAFETY: sending SIGINT to the child we started.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(rc, 0);
    let status = child.wait().unwrap();
    drop(stdin);
    assert_eq!(status.code(), Some(130), "exit status after Ctrl-C");
    assert_eq!(
        wait_gone(&pids, exists),
        Vec::<u64>::new(),
        "mmld reaps its workers"
    );
}

#[test]
fn share_workers_die_with_a_killed_parent() {
    let (mut child, report) = held_share(&testlib("libdemo.so"), &[]);
    let pids = u64s(&report["pids"]);
    let stdin = child.stdin.take();
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    // Orphans are reaped by init, not by us: dead (or a zombie) is enough.
    assert_eq!(wait_gone(&pids, alive), Vec::<u64>::new());
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u64> {
    let mut found = Vec::new();
    for p in procfs::process::all_processes().unwrap().flatten() {
        let Ok(pid) = u64::try_from(p.pid) else {
            continue;
        };
        if let Ok(cmd) = p.cmdline()
            && cmd.iter().any(|arg| arg.contains(needle))
            && alive(pid)
        {
            found.push(pid);
        }
    }
    found
}

#[test]
fn share_reaps_its_workers_when_one_fails() {
    // A private copy with a unique path, to find our workers in /proc.
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("libshare_fail.so");
    std::fs::copy(testlib("libdemo.so"), &lib).unwrap();
    let out = mmld()
        .args(["share", "--procs", "3"])
        .arg(&lib)
        .args(["--call", "mmld_no_such_function"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mmld_no_such_function"),
        "the worker's error is shown: {stderr}"
    );
    let needle = lib.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_mentioning(&needle).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(processes_mentioning(&needle), Vec::<u64>::new());

    // A bad argument fails before any worker starts.
    let out = mmld()
        .args(["share", "--procs", "2"])
        .arg(&lib)
        .args(["--call", "add", "i32:99999999999"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(processes_mentioning(&needle).is_empty());
}

#[test]
fn share_text_output_concludes_per_segment() {
    let out = mmld()
        .args(["share", "--procs", "2"])
        .arg(testlib("libdemo.so"))
        .args(["--call", "add", "2", "3"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("each called add(2, 3) = 5"), "{text}");
    if privileged() {
        assert!(
            text.contains(
                "libdemo.so text: 1 page resident, 1 physical copy shared by all 2 processes"
            ),
            "{text}"
        );
        assert!(
            text.contains("libdemo.so RELRO: 2 private copies of 1 page (written by relocation"),
            "{text}"
        );
    } else {
        assert!(text.contains("not privileged"), "{text}");
    }
}

#[test]
fn share_without_privilege_says_so_and_shows_smaps() {
    if !privileged() || !Path::new("/usr/bin/setpriv").exists() {
        eprintln!("skipped: needs root to drop privilege with setpriv");
        return;
    }
    // The binary and test library must be reachable by nobody.
    let exe = Path::new(env!("CARGO_BIN_EXE_mmld"));
    let probe = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "test",
            "-x",
        ])
        .arg(exe)
        .status();
    let probe_lib = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "test",
            "-r",
        ])
        .arg(testlib("libdemo.so"))
        .status();
    if !probe.is_ok_and(|s| s.success()) || !probe_lib.is_ok_and(|s| s.success()) {
        eprintln!("skipped: user nobody cannot reach the mmld binary or libdemo.so");
        return;
    }
    let report = run_json(
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(exe)
            .args(["share", "--procs", "2", "--json"])
            .arg(testlib("libdemo.so")),
    );
    assert_eq!(report["privileged"], false);
    let text = segment(&report, "text");
    assert!(text["physical_pages"].is_null());
    assert!(u64s(&text["rss_kib"]).iter().all(|&r| r > 0));
    assert!(u64s(&text["resident_pages"]).iter().all(|&r| r > 0));
}

#[test]
fn worker_protocol_line_is_not_confused_by_library_output() {
    // libdemo prints nothing, but the worker is run here directly to check
    // its line format and that it waits for stdin to close.
    let mut w = mmld()
        .arg("__share-worker")
        .arg(testlib("libdemo.so"))
        .args([
            "--parent",
            &std::process::id().to_string(),
            "--strategy",
            "mmap",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(w.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let body = line
        .strip_prefix("MMLD-SHARE-WORKER ")
        .unwrap_or_else(|| panic!("bad ready line {line:?}"));
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["pid"].as_u64(), Some(u64::from(w.id())));
    assert!(v["objects"][0]["loads"].as_array().unwrap().len() >= 2);
    assert!(
        w.try_wait().unwrap().is_none(),
        "worker waits for its stdin"
    );
    let mut stdin = w.stdin.take().unwrap();
    let _ = stdin.write_all(b"ignored\n");
    drop(stdin);
    assert!(w.wait().unwrap().success());
}
