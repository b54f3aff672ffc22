//! Helpers shared by the core loader's integration tests (`core.rs`,
//! `cli.rs`): test library paths, private copies, `readelf` as an
//! independent oracle, `/proc/self/maps` parsing, building extra C fixtures
//! with gcc, and running one test in a child process.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use procfs::FromBufRead;
use procfs::process::{FDTarget, MMapPath, MemoryMap, MemoryMaps};

pub const PAGE: u64 = 4096;

/// Absolute path of `testlibs/<name>` (built by build.rs).
pub fn testlib(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testlibs")
        .join(name)
}

/// A private copy of `testlibs/<name>` in a fresh temporary directory.
///
/// mmld reuses an object loaded from the same device and inode, so tests
/// that depend on a library's mutable state (counters, `.bss`, the init
/// log, destructors) load their own copy: libtest runs tests in parallel
/// threads of one process, and a shared object would mix their effects.
pub fn fresh_copy(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let dst = dir.path().join(name);
    std::fs::copy(testlib(name), &dst).expect("copy a test library");
    (dir, dst)
}

pub fn page_down(v: u64) -> u64 {
    v & !(PAGE - 1)
}

pub fn page_up(v: u64) -> u64 {
    (v + PAGE - 1) & !(PAGE - 1)
}

/// Run `readelf` with `args` on `path` and return its stdout.
pub fn readelf(args: &[&str], path: &Path) -> String {
    let out = Command::new("readelf")
        .args(args)
        .arg(path)
        .output()
        .expect("run readelf (binutils)");
    assert!(
        out.status.success(),
        "readelf {args:?} {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("readelf prints UTF-8")
}

/// One row of a `readelf -rW` RELA table.
#[derive(Debug, Clone)]
pub struct RelocRow {
    pub section: String,
    /// `r_offset`: the object address the relocation writes.
    pub offset: u64,
    pub rtype: String,
    /// The "Symbol's Value" column; readelf prints `name()` for IFUNCs.
    pub value: Option<String>,
    /// Symbol name, when the relocation has one.
    pub symbol: Option<String>,
    /// `r_addend` (readelf prints it last, in hex).
    pub addend: i64,
}

/// Every RELA relocation `readelf -rW` lists (`.rela.dyn`, `.rela.plt`).
pub fn readelf_relocations(path: &Path) -> Vec<RelocRow> {
    let text = readelf(&["-rW"], path);
    let mut section = String::new();
    let mut rows = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Relocation section '") {
            section = rest.split('\'').next().unwrap_or_default().to_string();
            continue;
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() >= 3 && cols[2].starts_with("R_X86_64_") {
            let has_symbol = cols.len() >= 5 && !cols[3].starts_with('+');
            rows.push(RelocRow {
                section: section.clone(),
                offset: u64::from_str_radix(cols[0], 16).expect("hex r_offset"),
                rtype: cols[2].to_string(),
                value: has_symbol.then(|| cols[3].to_string()),
                addend: parse_addend(&cols[3..]),
                symbol: has_symbol
                    .then(|| cols[4].split('@').next().unwrap_or_default().to_string()),
            });
        }
    }
    rows
}

/// The addend readelf prints at the end of a row: `1100`, or `+ 0` / `- 8`
/// after a symbol name.
fn parse_addend(tail: &[&str]) -> i64 {
    let neg = tail.len() >= 2 && tail[tail.len() - 2] == "-";
    let v = i64::from_str_radix(tail.last().expect("addend column"), 16).expect("hex addend");
    if neg { -v } else { v }
}

/// Relocation counts by type name over `DT_RELA` and `DT_JMPREL`, as
/// `readelf -rW` lists them.
pub fn readelf_reloc_counts(path: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in readelf_relocations(path) {
        *counts.entry(r.rtype).or_insert(0) += 1;
    }
    counts
}

/// Number of addresses in `DT_RELR` (readelf prints "N offsets"), 0 if none.
pub fn readelf_relr_count(path: &Path) -> usize {
    readelf(&["-rW"], path)
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_suffix(" offsets")?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .sum()
}

/// One line of `/proc/self/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapLine {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub offset: u64,
    pub inode: u64,
    /// Empty for anonymous mappings.
    pub path: String,
}

/// The text the kernel shows in a maps line's path column for `p`.
pub fn path_text(p: &MMapPath) -> String {
    match p {
        MMapPath::Path(p) => p.display().to_string(),
        MMapPath::Heap => "[heap]".into(),
        MMapPath::Stack => "[stack]".into(),
        MMapPath::TStack(t) => format!("[stack:{t}]"),
        MMapPath::Vdso => "[vdso]".into(),
        MMapPath::Vvar => "[vvar]".into(),
        MMapPath::Vsyscall => "[vsyscall]".into(),
        MMapPath::Rollup => "[rollup]".into(),
        MMapPath::Anonymous => String::new(),
        MMapPath::Vsys(k) => format!("/SYSV{k:08x}"),
        MMapPath::Other(s) => format!("[{s}]"),
    }
}

impl MapLine {
    fn of(m: &MemoryMap) -> MapLine {
        MapLine {
            start: m.address.0,
            end: m.address.1,
            perms: m.perms.as_str(),
            offset: m.offset,
            inode: m.inode,
            path: path_text(&m.pathname),
        }
    }
}

/// Parse maps text (read earlier, e.g. into a buffer allocated before the
/// mappings it must not disturb) with procfs.
pub fn parse_maps(text: &str) -> Vec<MapLine> {
    MemoryMaps::from_buf_read(text.as_bytes())
        .expect("parse maps text")
        .iter()
        .map(MapLine::of)
        .collect()
}

/// This process's maps, through procfs.
pub fn read_maps() -> Vec<MapLine> {
    self_maps().iter().map(MapLine::of).collect()
}

/// `/proc/self/maps`, as procfs reads it.
pub fn self_maps() -> MemoryMaps {
    procfs::process::Process::myself()
        .and_then(|p| p.maps())
        .expect("read /proc/self/maps")
}

/// `/proc/PID/maps` of another process, `None` once it is gone.
pub fn maps_of(pid: u32) -> Option<MemoryMaps> {
    let pid = i32::try_from(pid).ok()?;
    procfs::process::Process::new(pid)
        .and_then(|p| p.maps())
        .ok()
}

/// Lines of `maps` that overlap `lo..hi`.
pub fn maps_overlapping(maps: &[MapLine], lo: u64, hi: u64) -> Vec<MapLine> {
    maps.iter()
        .filter(|m| m.start < hi && m.end > lo)
        .cloned()
        .collect()
}

/// Write `c_source` to `<dir>/<output>.c` and compile it into
/// `<dir>/<output>` with the flags build.rs uses for every test library,
/// plus `extra`.
pub fn build_c_library(dir: &Path, output: &str, c_source: &str, extra: &[&str]) -> PathBuf {
    let src = dir.join(format!("{output}.c"));
    std::fs::write(&src, c_source).expect("write C source");
    build_c_files(dir, output, &[src], extra)
}

/// Compile C files into `<dir>/<output>` (flags as in [`build_c_library`]).
pub fn build_c_files(dir: &Path, output: &str, sources: &[PathBuf], extra: &[&str]) -> PathBuf {
    let out_path = dir.join(output);
    let out = Command::new("gcc")
        .args([
            "-shared",
            "-fPIC",
            "-O2",
            "-g",
            "-Wall",
            "-Wl,-z,now",
            "-Wl,-z,relro",
            "-Wl,--build-id",
        ])
        .arg(format!("-Wl,-soname,{output}"))
        .args(sources)
        // After the sources, so `-l` options in `extra` resolve their symbols.
        .args(extra)
        .arg("-o")
        .arg(&out_path)
        .output()
        .expect("run gcc");
    assert!(
        out.status.success(),
        "gcc failed to build {output}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out_path
}

/// Environment variable naming the one test a child process should run.
const CHILD_VAR: &str = "MMLD_CORE_TEST_CHILD";

/// Run test `name` (the full libtest name, e.g. `maps_layout_of_libdemo`)
/// alone in a fresh process of this test binary, where no other test
/// thread can map or unmap memory, and assert it passed.
///
/// Returns `true` in the child, where the caller runs the test body, and
/// `false` in the parent once the child has passed.
pub fn run_in_child(name: &str) -> bool {
    if std::env::var(CHILD_VAR).as_deref() == Ok(name) {
        return true;
    }
    let exe = std::env::current_exe().expect("path of the test binary");
    let out = Command::new(exe)
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD_VAR, name)
        .output()
        .expect("re-run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "test {name} failed in its child process\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    // Guard against a filter that matched nothing: the body must have run.
    assert!(
        stdout.contains("1 passed"),
        "child process did not run {name}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    false
}

/// The system zlib, a real distribution library for load tests.
pub const LIBZ: &str = "/usr/lib/x86_64-linux-gnu/libz.so.1";

/// The zlib version, from the file libz.so.1 links to (libz.so.1.2.13 on
/// Debian 12), so the expectation follows the installed package.
pub fn zlib_version_from_file_name() -> String {
    let real = std::fs::canonicalize(LIBZ).expect("zlib is installed");
    real.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("libz.so."))
        .expect("libz.so.1 links to libz.so.<version>")
        .to_string()
}

// Leak checks (hostile.rs, stress.rs)

/// `/proc/self/maps` with the two regions that move by themselves (the brk
/// heap and the main stack) reduced to their names, one line per mapping.
pub fn maps_snapshot() -> Vec<String> {
    self_maps()
        .iter()
        .map(|m| match m.pathname {
            MMapPath::Heap | MMapPath::Stack => path_text(&m.pathname),
            _ => maps_line(m),
        })
        .collect()
}

/// A mapping as one maps line (single spaces).
pub fn maps_line(m: &MemoryMap) -> String {
    format!(
        "{:x}-{:x} {} {:08x} {:02x}:{:02x} {} {}",
        m.address.0,
        m.address.1,
        m.perms.as_str(),
        m.offset,
        m.dev.0,
        m.dev.1,
        m.inode,
        path_text(&m.pathname)
    )
}

/// Open descriptors and what they refer to (without the descriptor procfs
/// holds on `/proc/PID` and the `fd` directory it lists).
pub fn fds_snapshot() -> BTreeMap<String, String> {
    let me = procfs::process::Process::myself().expect("open /proc/self");
    let own = [
        PathBuf::from(format!("/proc/{}", me.pid)),
        PathBuf::from(format!("/proc/{}/fd", me.pid)),
    ];
    let mut out = BTreeMap::new();
    for fd in me.fd().expect("read /proc/self/fd").flatten() {
        let target = match &fd.target {
            FDTarget::Path(p) if own.contains(p) => continue,
            FDTarget::Path(p) => p.display().to_string(),
            other => format!("{other:?}"),
        };
        out.insert(fd.fd.to_string(), target);
    }
    out
}

pub fn diff(before: &[String], after: &[String]) -> String {
    let b: BTreeSet<&String> = before.iter().collect();
    let a: BTreeSet<&String> = after.iter().collect();
    let gone: Vec<_> = b.difference(&a).collect();
    let new: Vec<_> = a.difference(&b).collect();
    format!("gone: {gone:#?}\nnew: {new:#?}")
}
