//! Files that lie or change: mmld refuses them or copes, and never crashes.
//!
//! * A sparse file: a 4 GiB segment that takes 12 KiB on disk, with a GNU
//!   hash chain that never ends. `check`, `info` and the API refuse it with
//!   a clear error instead of walking gigabytes of holes.
//! * Non-writable segments whose `.bss` tail must be zeroed (a crafted
//!   libz): every page ends up with exactly the permission its segment's
//!   flags grant (glibc's `r--p`/`r-xp`), never writable.
//! * A definition whose address lies outside every segment: `get` refuses
//!   it; an absolute (`SHN_ABS`) symbol is a value and is returned.
//! * A file truncated at a random moment while `mmld check` and `mmld info`
//!   read it: each run ends with a status, never a signal
//!   (`MMLD_TRUNCATION_RUNS` runs, a few in CI).
//! * Secure mode for real: a setuid copy of mmld run as `nobody` ignores
//!   `MMLD_TRACE` and restricts `$ORIGIN` (when the test runs as root).
//!
//! Nothing binary is committed: every file is generated here.

mod common;

use std::ffi::CStr;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use mmld::{ErrorKind, Library, OpenOptions};

const LIBZ: &str = "/usr/lib/x86_64-linux-gnu/libz.so.1";
const LIBSQLITE: &str = "/usr/lib/x86_64-linux-gnu/libsqlite3.so.0";

fn mmld_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mmld")
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

// ---------------------------------------------------------------------------
// Item 4: a sparse file.

const SPARSE_SEGMENT: u64 = 4 << 30;

/// A shared object whose only `PT_LOAD` spans 4 GiB of file, all holes but
/// its first three pages: headers, dynamic section, string and symbol
/// tables, and a GNU hash table whose one chain has no end marker (the
/// holes read as zeros, and a zero chain word means "go on").
fn write_sparse_object(path: &Path) {
    use goblin::elf::dynamic::{DT_GNU_HASH, DT_STRSZ, DT_STRTAB, DT_SYMENT, DT_SYMTAB};
    use goblin::elf::header as eh;
    use goblin::elf::program_header::{PF_R, PT_DYNAMIC, PT_LOAD};
    const EHDR: usize = eh::header64::SIZEOF_EHDR;
    const PHDR: usize = goblin::elf::program_header::program_header64::SIZEOF_PHDR;
    let mut b = vec![0u8; 0x3000];
    b[..eh::SELFMAG].copy_from_slice(eh::ELFMAG);
    b[eh::EI_CLASS] = eh::ELFCLASS64;
    b[eh::EI_DATA] = eh::ELFDATA2LSB;
    b[eh::EI_VERSION] = eh::EV_CURRENT;
    put_u16(&mut b, 16, eh::ET_DYN);
    put_u16(&mut b, 18, eh::EM_X86_64);
    put_u32(&mut b, 20, u32::from(eh::EV_CURRENT));
    put_u64(&mut b, 32, EHDR as u64); // e_phoff
    put_u16(&mut b, 52, EHDR as u16); // e_ehsize
    put_u16(&mut b, 54, PHDR as u16); // e_phentsize
    put_u16(&mut b, 56, 2); // e_phnum
    // PT_LOAD, R, the whole 4 GiB from offset 0.
    let ph = EHDR;
    put_u32(&mut b, ph, PT_LOAD);
    put_u32(&mut b, ph + 4, PF_R);
    put_u64(&mut b, ph + 32, SPARSE_SEGMENT);
    put_u64(&mut b, ph + 40, SPARSE_SEGMENT);
    put_u64(&mut b, ph + 48, 0x1000);
    // PT_DYNAMIC at 0x1000.
    let ph = EHDR + PHDR;
    put_u32(&mut b, ph, PT_DYNAMIC);
    put_u32(&mut b, ph + 4, PF_R);
    for field in [8, 16, 24] {
        put_u64(&mut b, ph + field, 0x1000);
    }
    put_u64(&mut b, ph + 32, 0x100);
    put_u64(&mut b, ph + 40, 0x100);
    put_u64(&mut b, ph + 48, 8);
    let entries: [(u64, u64); 5] = [
        (DT_GNU_HASH, 0x2000),
        (DT_STRTAB, 0x1800),
        (DT_STRSZ, 16),
        (DT_SYMTAB, 0x1900),
        (DT_SYMENT, 24),
    ];
    for (i, (tag, val)) in entries.iter().enumerate() {
        put_u64(&mut b, 0x1000 + i * 16, *tag);
        put_u64(&mut b, 0x1000 + i * 16 + 8, *val);
    }
    // GNU hash: one bucket starting at symbol 1, a full Bloom word, and a
    // chain of zeros from 0x201c to the end of the segment.
    put_u32(&mut b, 0x2000, 1); // nbuckets
    put_u32(&mut b, 0x2004, 1); // symoffset
    put_u32(&mut b, 0x2008, 1); // bloom size
    put_u32(&mut b, 0x200c, 6); // bloom shift
    put_u64(&mut b, 0x2010, u64::MAX);
    put_u32(&mut b, 0x2018, 1); // bucket 0
    let mut f = std::fs::File::create(path).expect("create the sparse file");
    f.write_all(&b).expect("write its first pages");
    f.set_len(SPARSE_SEGMENT).expect("extend it sparsely");
}

#[test]
fn sparse_file_with_an_endless_chain_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("libsparse.so");
    write_sparse_object(&path);
    let meta = std::fs::metadata(&path).expect("stat");
    use std::os::unix::fs::MetadataExt;
    assert!(
        meta.blocks() * 512 < 1 << 20,
        "the file is sparse ({} bytes on disk)",
        meta.blocks() * 512
    );
    let endless = |k: &ErrorKind| matches!(k, ErrorKind::EndlessHashChain { .. });
    let e = OpenOptions::new()
        .check(&path)
        .expect_err("check refuses it");
    assert!(endless(e.kind()), "check: {e}");
    let e = mmld::describe(&path).expect_err("describe refuses it");
    assert!(endless(e.kind()), "describe: {e}");
    // SAFETY: the load fails before anything of the file could run.
    let e = unsafe { Library::open(&path) }.expect_err("open refuses it");
    assert!(endless(e.kind()), "open: {e}");
    for command in ["check", "info"] {
        let (status, stderr, max_rss_kib) =
            run_measured(Command::new(mmld_bin()).arg(command).arg(&path));
        assert_eq!(status, Some(1), "mmld {command}: {stderr}");
        assert!(stderr.contains("never ends"), "mmld {command}: {stderr}");
        // Walking the holes (or copying them) costs gigabytes; refusing
        // the file costs what starting mmld does.
        assert!(
            max_rss_kib < 50 * 1024,
            "mmld {command} peaked at {max_rss_kib} KiB"
        );
    }
}

/// Run `cmd` to its end; its exit code, its stderr and its peak resident
/// memory in KiB (from `wait4`, for this child alone).
fn run_measured(cmd: &mut Command) -> (Option<i32>, String, i64) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mmld");
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, which nothing else reaps.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32, "wait4");
    // Already reaped by wait4: this only tells `Child` so (it gets ECHILD).
    let _ = child.wait();
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    (code, stderr, usage.ru_maxrss)
}

// ---------------------------------------------------------------------------
// The span placed glibc's way: the first segment's mapping is the
// reservation, every other segment mapped over it.

/// libsqlite3 ends in file pages, libstdc++ in `.bss` pages (so a guard page
/// follows its span): after a load, every page of the span has exactly the
/// permission its segment's flags grant (RELRO read-only), pages outside
/// every segment have none, the span is one file's mappings and `.bss`, and
/// the page after a span that ends in anonymous memory is inaccessible.
#[test]
fn span_placed_by_the_first_segment_grants_each_page_its_own_permission() {
    for path in [LIBSQLITE, "/usr/lib/x86_64-linux-gnu/libstdc++.so.6"] {
        let file = std::fs::read(path).expect("read the library");
        // SAFETY: system libraries whose constructors are safe to run.
        let lib = unsafe { Library::open(path) }.expect("loads");
        let bias = lib.load_bias();
        let segments = loads(&file);
        let (lo, hi) = (
            lib.base_address(),
            lib.base_address() + lib.objects()[0].size,
        );
        let real = std::fs::canonicalize(path).expect("canonical path");
        let real = real.to_string_lossy();
        let maps = common::read_maps();
        let mut pages = 0;
        for page in (lo..hi).step_by(4096) {
            let m = maps
                .iter()
                .find(|m| m.start <= page && page < m.end)
                .unwrap_or_else(|| panic!("{path}: page {page:#x} of the span is unmapped"));
            let perms = &m.perms.as_bytes()[..3];
            let segment = segments.iter().find(|s| {
                page >= bias + (s.1 & !4095) && page < (bias + s.1 + s.3).next_multiple_of(4096)
            });
            let Some(&(flags, ..)) = segment else {
                assert_eq!(perms, b"---", "{path}: hole page {page:#x}: {m:?}");
                continue;
            };
            assert_eq!(perms[0], b'r', "{path}: page {page:#x}: {m:?}");
            assert!(
                perms[1] != b'w' || flags & 2 != 0,
                "{path}: {page:#x} {m:?}"
            );
            assert_eq!(perms[2] == b'x', flags & 1 != 0, "{path}: {page:#x} {m:?}");
            assert!(
                m.path.is_empty() || m.path == real,
                "{path}: page {page:#x} maps another file: {m:?}"
            );
            pages += 1;
        }
        assert!(pages > 100, "{path}: pages checked: {pages}");
        let last = segments.last().expect("a PT_LOAD");
        let ends_in_bss = (last.1 + last.3).div_ceil(4096) > (last.1 + last.2).div_ceil(4096);
        if ends_in_bss {
            let guard = maps
                .iter()
                .find(|m| m.start <= hi && hi < m.end)
                .unwrap_or_else(|| panic!("{path}: no guard page after the span"));
            assert_eq!(&guard.perms[..3], "---", "{path}: guard {guard:?}");
        }
        drop(lib);
    }
}

// ---------------------------------------------------------------------------
// Item 2: non-writable segments whose last page holds a `.bss` tail.

/// `(p_flags, vaddr, filesz, memsz)` of each `PT_LOAD`.
fn loads(b: &[u8]) -> Vec<(u32, u64, u64, u64, u64)> {
    let phoff = get_u64(b, 32) as usize;
    (0..usize::from(get_u16(b, 56)))
        .map(|i| phoff + i * 56)
        .filter(|&at| get_u32(b, at) == 1)
        .map(|at| {
            (
                get_u32(b, at + 4),
                get_u64(b, at + 16),
                get_u64(b, at + 32),
                get_u64(b, at + 40),
                get_u64(b, at + 8),
            )
        })
        .collect()
}

/// libz with every non-writable `PT_LOAD` 16 bytes longer in memory than
/// in the file: each then ends in a `.bss` tail inside its last page.
fn write_libz_with_bss_tails(path: &Path) {
    let mut b = std::fs::read(LIBZ).expect("read libz");
    let phoff = get_u64(&b, 32) as usize;
    let mut patched = 0;
    for i in 0..usize::from(get_u16(&b, 56)) {
        let at = phoff + i * 56;
        if get_u32(&b, at) == 1 && get_u32(&b, at + 4) & 2 == 0 {
            let filesz = get_u64(&b, at + 32);
            assert_ne!(filesz % 4096, 0, "the file part ends inside a page");
            put_u64(&mut b, at + 40, filesz + 16);
            patched += 1;
        }
    }
    assert!(
        patched >= 2,
        "libz has a read-only and an executable segment"
    );
    std::fs::write(path, &b).expect("write the crafted libz");
}

#[test]
fn bss_tails_of_read_only_segments_never_make_them_writable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("libz_bss.so");
    write_libz_with_bss_tails(&path);
    let file = std::fs::read(&path).expect("read back");
    // SAFETY: libz, with larger p_memsz only.
    let lib = unsafe { Library::open(&path) }.expect("the crafted libz loads");
    // SAFETY: uLong crc32(uLong, const Bytef *, uInt).
    let crc =
        unsafe { lib.get::<extern "C" fn(u64, *const u8, u32) -> u64>("crc32") }.expect("crc32");
    assert_eq!(crc(0, b"hello".as_ptr(), 5), 0x3610_a686);
    let bias = lib.load_bias();
    let segments = loads(&file);
    let maps = common::read_maps();
    let span = (
        lib.base_address(),
        lib.base_address() + lib.objects()[0].size,
    );
    let mut checked = 0;
    for m in common::maps_overlapping(&maps, span.0, span.1) {
        // The permission every page of this line must have: the one its
        // segment's flags grant (RELRO pages: read-only after relocation).
        for page in (m.start..m.end).step_by(4096) {
            let Some(&(flags, ..)) = segments.iter().find(|s| {
                let start = bias + (s.1 & !4095);
                let end = bias + s.1 + s.3;
                page >= start && page < end
            }) else {
                continue;
            };
            let perms = m.perms.as_bytes();
            assert!(
                perms[1] != b'w' || flags & 2 != 0,
                "writable page {page:#x} of a non-writable segment: {m:?}"
            );
            assert!(
                perms[2] != b'x' || flags & 1 != 0,
                "executable page {page:#x} of a non-executable segment: {m:?}"
            );
            assert_eq!(perms[0], b'r', "{m:?}");
            if flags & 1 != 0 {
                assert_eq!(&perms[..3], b"r-x", "text page {page:#x}: {m:?}");
            }
            checked += 1;
        }
    }
    assert!(checked > 20, "pages checked: {checked}");
    // The last page of each non-writable segment: the file's bytes up to
    // p_filesz, zeros in the 16-byte tail.
    for &(flags, vaddr, filesz, _, offset) in segments.iter().filter(|s| s.0 & 2 == 0) {
        let end = (bias + vaddr + filesz) as *const u8;
        let from_file = &file[(offset + filesz - 16) as usize..(offset + filesz) as usize];
        // SAFETY: both ranges lie inside the loaded object's segment
        // (p_memsz is p_filesz + 16), readable, and the library is alive.
        let (before, tail) = unsafe {
            (
                std::slice::from_raw_parts(end.sub(16), 16),
                std::slice::from_raw_parts(end, 16),
            )
        };
        assert_eq!(before, from_file, "segment {flags:#x}: file bytes");
        assert_eq!(tail, [0u8; 16], "segment {flags:#x}: zeroed tail");
    }
}

// ---------------------------------------------------------------------------
// Item 6: definitions outside their object.

/// libdemo with `greeting` defined far outside every segment and `half`
/// turned into an absolute symbol with the value 0x1234.
fn write_demo_with_lying_symbols(path: &Path) {
    let mut b = std::fs::read(common::testlib("libdemo.so")).expect("read libdemo");
    let shoff = get_u64(&b, 40) as usize;
    let shnum = usize::from(get_u16(&b, 60));
    let section = |_: &[u8], i: usize| shoff + i * 64;
    let dynsym = (0..shnum)
        .map(|i| section(&b, i))
        .find(|&at| get_u32(&b, at + 4) == 11)
        .expect(".dynsym");
    let dynstr = section(&b, get_u32(&b, dynsym + 40) as usize);
    let (sym_off, sym_size) = (get_u64(&b, dynsym + 24), get_u64(&b, dynsym + 32));
    let str_off = get_u64(&b, dynstr + 24) as usize;
    let mut seen = 0;
    for at in (sym_off..sym_off + sym_size)
        .step_by(24)
        .map(|a| a as usize)
    {
        let name_at = str_off + get_u32(&b, at) as usize;
        let end = b[name_at..].iter().position(|&c| c == 0).unwrap();
        match &b[name_at..name_at + end] {
            b"greeting" => {
                put_u64(&mut b, at + 8, 0x7000_0000_0000);
                seen += 1;
            }
            b"half" => {
                put_u16(&mut b, at + 6, 0xfff1);
                put_u64(&mut b, at + 8, 0x1234);
                seen += 1;
            }
            _ => {}
        }
    }
    assert_eq!(seen, 2, "both symbols patched");
    std::fs::write(path, &b).expect("write");
}

#[test]
fn symbols_outside_their_object_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("libdemo_lying.so");
    write_demo_with_lying_symbols(&path);
    // SAFETY: libdemo with two symbol values changed; neither is used by
    // its own code.
    let lib = unsafe { Library::open(&path) }.expect("loads");
    let outside = |lib: &Library| {
        // SAFETY: the lookup fails before anything is called.
        let e = unsafe { lib.get::<extern "C" fn() -> *const i8>("greeting") }
            .expect_err("greeting lies outside");
        assert!(
            matches!(e.kind(), ErrorKind::SymbolOutsideObject { name, value: 0x7000_0000_0000 } if name == "greeting"),
            "{e}"
        );
    };
    outside(&lib);
    assert!(lib.symbol_info("greeting").is_err());
    // SAFETY: only the address is compared.
    let half = unsafe { lib.get::<*const u8>("half") }.expect("absolute symbols are values");
    assert_eq!(*half as usize, 0x1234);
    // Enough lookups to build the scope index: it must not answer for it.
    for _ in 0..2000 {
        // SAFETY: long add(long, long).
        let add = unsafe { lib.get::<extern "C" fn(i64, i64) -> i64>("add") }.expect("add");
        assert_eq!(add(2, 3), 5);
    }
    assert!(lib.indexed_names().is_some(), "the index is built");
    outside(&lib);
}

// ---------------------------------------------------------------------------
// Item 3: a file truncated while `check` and `info` read it.

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn truncation_while_checking_ends_without_a_signal() {
    let runs: usize = std::env::var("MMLD_TRUNCATION_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let original = std::fs::read(LIBSQLITE).expect("read libsqlite3");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut outcomes = std::collections::BTreeMap::new();
    // How long one run takes here, so the cuts fall while mmld reads (a
    // calibration, not a threshold: any outcome but a signal passes).
    let started = std::time::Instant::now();
    let status = Command::new(mmld_bin())
        .args(["check", LIBSQLITE])
        .stdout(Stdio::null())
        .status()
        .expect("run mmld");
    assert!(status.success(), "mmld check libsqlite3: {status}");
    let window = started.elapsed().as_micros().max(1000) as u64;
    for run in 0..runs {
        // A new inode each run: truncation then hits a file nobody else maps.
        let path = dir.path().join(format!("libsqlite3_{run}.so"));
        std::fs::write(&path, &original).expect("copy libsqlite3");
        let command = if run % 2 == 0 { "check" } else { "info" };
        let mut child = Command::new(mmld_bin())
            .arg(command)
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run mmld");
        let cut = match rng.next() % 5 {
            0 => 0,
            1 => 64,
            2 => 4096,
            3 => 8192,
            _ => original.len() as u64 / 2,
        };
        std::thread::sleep(Duration::from_micros(rng.next() % window));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(cut))
            .expect("truncate");
        let status = child.wait().expect("wait for mmld");
        assert!(
            status.signal().is_none() && matches!(status.code(), Some(0 | 1)),
            "run {run}: mmld {command} on a file cut to {cut} bytes ended with {status}"
        );
        *outcomes
            .entry((command, status.code().unwrap_or(-1)))
            .or_insert(0) += 1;
        std::fs::remove_file(&path).expect("remove");
    }
    println!("{runs} truncation races (cut within {window} µs): {outcomes:?}");
}

// ---------------------------------------------------------------------------
// Item 5: secure mode, for real.

/// Run `bin` as `nobody` with `MMLD_TRACE=all`; `(stdout, stderr)`.
fn run_as_nobody(bin: &Path, args: &[&str]) -> (String, String) {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin)
        .args(args)
        .env("MMLD_TRACE", "all")
        .output()
        .expect("run setpriv");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn setuid_mmld_ignores_the_environment_and_restricts_origin() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || Command::new("setpriv").arg("--help").output().is_err() {
        println!("skipped: making a setuid binary needs root and setpriv");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("mmld-setuid")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let plain = dir.path().join("mmld");
    std::fs::copy(mmld_bin(), &plain).expect("copy mmld");
    let setuid = dir.path().join("mmld-setuid");
    std::fs::copy(mmld_bin(), &setuid).expect("copy mmld");
    std::fs::set_permissions(&setuid, std::fs::Permissions::from_mode(0o4755)).expect("setuid");
    let lib = common::testlib("rpath/libchaintop.so");
    let lib = lib.to_str().expect("UTF-8 path");

    // Not secure: the trace is on, and $ORIGIN/lib finds libchainmid.
    let (out, err) = run_as_nobody(&plain, &["deps", lib]);
    assert!(err.contains("mmld::libs"), "trace without setuid:\n{err}");
    assert!(
        out.contains("testlibs/rpath/lib/libchainmid.so"),
        "found through $ORIGIN:\n{out}\n{err}"
    );
    // Secure: no trace whatever MMLD_TRACE says, and $ORIGIN/lib (not a
    // system directory) is not searched.
    let (out, err) = run_as_nobody(&setuid, &["deps", lib]);
    assert!(!err.contains("mmld::libs"), "trace in secure mode:\n{err}");
    assert!(
        !out.contains("testlibs/rpath/lib/libchainmid.so"),
        "$ORIGIN used in secure mode:\n{out}\n{err}"
    );
    assert!(
        out.contains("libchainmid.so"),
        "listed as missing:\n{out}\n{err}"
    );
}

// ---------------------------------------------------------------------------
// Item 1: a binding into a host object keeps it loaded.

const LIBYAML: &CStr = c"/usr/lib/x86_64-linux-gnu/libyaml-0.so.2";

fn yaml_mapped() -> bool {
    common::maps_snapshot()
        .iter()
        .any(|l| l.contains("libyaml-0.so"))
}

#[test]
fn binding_into_a_host_library_keeps_it_loaded() {
    if !common::run_in_child("binding_into_a_host_library_keeps_it_loaded") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // Refers to libyaml without naming it in DT_NEEDED: the reference can
    // only bind through the host's global scope.
    let binder = common::build_c_library(
        dir.path(),
        "libyamluser.so",
        "const char *yaml_get_version_string(void);\n\
         const char *yaml_user_version(void) { return yaml_get_version_string(); }\n",
        &[],
    );
    let open_global = || {
        // SAFETY: a system library loaded by the system loader.
        let h = unsafe { libc::dlopen(LIBYAML.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        assert!(!h.is_null(), "glibc dlopen libyaml");
        h
    };
    // The oracle: glibc alone unloads libyaml at its dlclose.
    let h = open_global();
    assert!(yaml_mapped());
    // SAFETY: the handle from dlopen above, closed once.
    assert_eq!(unsafe { libc::dlclose(h) }, 0);
    assert!(!yaml_mapped(), "glibc unloads libyaml at its last dlclose");

    let h = open_global();
    // SAFETY: a test library with one function.
    let lib = unsafe { Library::open(&binder) }.expect("the binder loads");
    assert!(lib.objects()[0].host_objects_held >= 1, "it holds libyaml");
    // SAFETY: the handle from dlopen above, closed once.
    assert_eq!(unsafe { libc::dlclose(h) }, 0);
    assert!(yaml_mapped(), "libyaml stays while the binder is loaded");
    // SAFETY: const char *yaml_user_version(void).
    let version = unsafe { lib.get::<extern "C" fn() -> *const i8>("yaml_user_version") }
        .expect("yaml_user_version");
    // SAFETY: libyaml returns a static NUL-terminated string.
    let text = unsafe { CStr::from_ptr(version()) }
        .to_string_lossy()
        .into_owned();
    assert!(text.starts_with("0."), "libyaml version {text}");
    drop(lib);
    assert!(!yaml_mapped(), "libyaml goes with the binder");
}
