//! Hostile input: mmld never crashes the process that uses it.
//!
//! * A corpus of broken files, each built at test time by patching bytes of
//!   a test library (or with gcc, or as a directory or FIFO), must fail with
//!   its own `ErrorKind` through `Library::open`, `OpenOptions::check`,
//!   `mmld::check_image`, `mmld run` and `mmld check` (exit status 1).
//! * The load policy (W+X segments, text relocations, executable stack) is
//!   on by default and each switch turns its check off.
//! * A deterministic mutation test feeds more than 10,000 mutants of real
//!   libraries to `check_image` (and some to `OpenOptions::check` through a
//!   file): each must load or return an error, never panic or crash.
//! * Thousands of failing and succeeding loads leave `/proc/self/maps` and
//!   `/proc/self/fd` as they were (in a child process, so other tests of
//!   this binary cannot disturb the comparison).
//!
//! Nothing binary is committed: every corpus file is generated here.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mmld::{ErrorKind, Library, OpenOptions, Stage};
use procfs::process::MMapPath;

// ---------------------------------------------------------------------------
// Paths and processes

fn testlib(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testlibs")
        .join(name)
}

fn mmld_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mmld")
}

const LIBZ: &str = "/usr/lib/x86_64-linux-gnu/libz.so.1";
const LIBPNG: &str = "/usr/lib/x86_64-linux-gnu/libpng16.so.16";

/// Run the test `name` of this binary alone in a child process (with one
/// malloc arena, so the heap does not add mappings of its own), and fail
/// if it fails. Returns `true` in the child, where the caller runs the body.
fn in_child(name: &str) -> bool {
    const VAR: &str = "MMLD_HOSTILE_CHILD";
    if std::env::var(VAR).as_deref() == Ok(name) {
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(VAR, name)
        .env("MALLOC_ARENA_MAX", "1")
        .output()
        .expect("run the test binary in a child process");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("1 passed"),
        "child process for {name} failed ({}):\n{text}",
        out.status
    );
    false
}

/// Compile C `source` into the shared object `dir/out` with gcc.
fn gcc(dir: &Path, out: &str, source: &str, extra: &[&str]) -> PathBuf {
    let src = dir.join(format!("{out}.c"));
    std::fs::write(&src, source).expect("write a C source");
    let output = Command::new("gcc")
        .current_dir(dir)
        .args(["-shared", "-fPIC", "-O2", "-Wl,-z,now"])
        .arg(format!("-Wl,-soname,{out}"))
        .arg(&src)
        .args(extra)
        .arg("-o")
        .arg(out)
        .output()
        .expect("run gcc");
    assert!(
        output.status.success(),
        "gcc {out} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    dir.join(out)
}

// ---------------------------------------------------------------------------
// A minimal ELF64 little-endian reader and patcher (independent of mmld).

// The numbers come from goblin; the reading and patching below do not.
use goblin::elf::dynamic::{
    DF_TEXTREL, DT_FLAGS, DT_GNU_HASH, DT_HASH, DT_INIT, DT_INIT_ARRAY, DT_INIT_ARRAYSZ, DT_JMPREL,
    DT_PLTREL, DT_PLTRELSZ, DT_REL, DT_RELA, DT_RELACOUNT, DT_RELAENT, DT_RELASZ, DT_SONAME,
    DT_STRSZ, DT_STRTAB, DT_SYMENT, DT_SYMTAB, DT_TEXTREL,
};
use goblin::elf::program_header::{PT_DYNAMIC, PT_GNU_RELRO, PT_GNU_STACK, PT_LOAD, PT_TLS};
// `r_info`'s type half, widened as it is read here.
const R_RELATIVE: u64 = goblin::elf::reloc::R_X86_64_RELATIVE as u64;
const R_IRELATIVE: u64 = goblin::elf::reloc::R_X86_64_IRELATIVE as u64;

#[derive(Clone)]
struct Elf(Vec<u8>);

#[derive(Clone, Copy, Debug)]
struct Phdr {
    /// File offset of this program header.
    at: usize,
    p_type: u32,
    vaddr: u64,
    offset: u64,
    filesz: u64,
    memsz: u64,
}

#[derive(Clone, Copy, Debug)]
struct Rela {
    /// File offset of this entry.
    at: usize,
    offset: u64,
    info: u64,
}

impl Elf {
    fn load(path: &Path) -> Elf {
        Elf(std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())))
    }

    fn u16(&self, at: usize) -> u16 {
        u16::from_le_bytes(self.0[at..at + 2].try_into().unwrap())
    }
    fn u32(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.0[at..at + 4].try_into().unwrap())
    }
    fn u64(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.0[at..at + 8].try_into().unwrap())
    }
    fn set_u16(&mut self, at: usize, v: u16) {
        self.0[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn set_u32(&mut self, at: usize, v: u32) {
        self.0[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn set_u64(&mut self, at: usize, v: u64) {
        self.0[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    fn phdrs(&self) -> Vec<Phdr> {
        let phoff = self.u64(32) as usize;
        (0..usize::from(self.u16(56)))
            .map(|i| {
                let at = phoff + i * 56;
                Phdr {
                    at,
                    p_type: self.u32(at),
                    offset: self.u64(at + 8),
                    vaddr: self.u64(at + 16),
                    filesz: self.u64(at + 32),
                    memsz: self.u64(at + 40),
                }
            })
            .collect()
    }

    fn phdr(&self, p_type: u32) -> Phdr {
        *self
            .phdrs()
            .iter()
            .find(|p| p.p_type == p_type)
            .expect("program header present")
    }

    fn loads(&self) -> Vec<Phdr> {
        self.phdrs()
            .into_iter()
            .filter(|p| p.p_type == PT_LOAD)
            .collect()
    }

    /// File offset of object address `vaddr`.
    fn offset_of(&self, vaddr: u64) -> usize {
        let seg = self
            .loads()
            .into_iter()
            .find(|p| vaddr >= p.vaddr && vaddr < p.vaddr + p.filesz)
            .expect("address in the file part of a PT_LOAD");
        (vaddr - seg.vaddr + seg.offset) as usize
    }

    /// `(file offset of the entry, tag, value)` up to `DT_NULL`.
    fn dynamic(&self) -> Vec<(usize, u64, u64)> {
        let d = self.phdr(PT_DYNAMIC);
        let mut out = Vec::new();
        for i in 0..(d.filesz / 16) as usize {
            let at = d.offset as usize + i * 16;
            let tag = self.u64(at);
            if tag == 0 {
                break;
            }
            out.push((at, tag, self.u64(at + 8)));
        }
        out
    }

    fn dyn_entry(&self, tag: u64) -> (usize, u64) {
        self.dynamic()
            .into_iter()
            .find(|e| e.1 == tag)
            .map(|e| (e.0, e.2))
            .unwrap_or_else(|| panic!("dynamic tag {tag:#x} present"))
    }

    fn dyn_val(&self, tag: u64) -> u64 {
        self.dyn_entry(tag).1
    }

    fn set_dyn(&mut self, tag: u64, val: u64) {
        let (at, _) = self.dyn_entry(tag);
        self.set_u64(at + 8, val);
    }

    /// Turn the entry `old` into `(new, val)`.
    fn retag_dyn(&mut self, old: u64, new: u64, val: u64) {
        let (at, _) = self.dyn_entry(old);
        self.set_u64(at, new);
        self.set_u64(at + 8, val);
    }

    /// Entries of the RELA table at `DT_RELA` or `DT_JMPREL`.
    fn relas(&self, table: u64) -> Vec<Rela> {
        let size = self.dyn_val(if table == DT_RELA {
            DT_RELASZ
        } else {
            DT_PLTRELSZ
        });
        let start = self.offset_of(self.dyn_val(table));
        (0..(size / 24) as usize)
            .map(|i| {
                let at = start + i * 24;
                Rela {
                    at,
                    offset: self.u64(at),
                    info: self.u64(at + 8),
                }
            })
            .collect()
    }

    /// File offset of the string `s` (with its NUL) inside `.dynstr`.
    fn dynstr_offset(&self, s: &str) -> usize {
        let start = self.offset_of(self.dyn_val(DT_STRTAB));
        let size = self.dyn_val(DT_STRSZ) as usize;
        let mut needle = s.as_bytes().to_vec();
        needle.push(0);
        let table = &self.0[start..start + size];
        let pos = table
            .windows(needle.len())
            .position(|w| w == needle.as_slice())
            .unwrap_or_else(|| panic!("{s:?} in .dynstr"));
        start + pos
    }
}

// ---------------------------------------------------------------------------
// The corpus

enum Input {
    Bytes(Vec<u8>),
    Directory,
    Fifo,
}

struct Case {
    name: &'static str,
    input: Input,
    stage: Stage,
    kind: fn(&ErrorKind) -> bool,
    /// `check_image` sees the same error (false where the error needs the
    /// file system, a dependency or the load policy).
    image_fails: bool,
}

/// `kind!(Pattern)`: a matcher for one `ErrorKind` variant (and fields).
macro_rules! kind {
    ($($pattern:tt)+) => {
        (|k: &ErrorKind| matches!(k, $($pattern)+)) as fn(&ErrorKind) -> bool
    };
}

fn demo() -> Elf {
    Elf::load(&testlib("libdemo.so"))
}

fn patched(base: Elf, f: impl FnOnce(&mut Elf)) -> Input {
    let mut e = base;
    f(&mut e);
    Input::Bytes(e.0)
}

fn case(name: &'static str, input: Input, stage: Stage, kind: fn(&ErrorKind) -> bool) -> Case {
    Case {
        name,
        input,
        stage,
        kind,
        image_fails: true,
    }
}

fn corpus() -> Vec<Case> {
    use Stage::{Link, Open, Read, Run};
    let d = demo();
    let file_len = d.0.len() as u64;
    let loads = d.loads();
    let (text, last) = (loads[1], loads[loads.len() - 1]);
    let mut cases = vec![
        case(
            "empty file",
            Input::Bytes(Vec::new()),
            Read,
            kind!(ErrorKind::TooSmall { len: 0 }),
        ),
        case(
            "3 bytes",
            Input::Bytes(b"\x7fEL".to_vec()),
            Read,
            kind!(ErrorKind::TooSmall { len: 3 }),
        ),
        case(
            "wrong magic",
            patched(d.clone(), |e| e.0[3] = b'G'),
            Read,
            kind!(ErrorKind::NotElf {
                magic: [0x7f, b'E', b'L', b'G']
            }),
        ),
        case(
            "32-bit",
            patched(d.clone(), |e| e.0[4] = 1),
            Read,
            kind!(ErrorKind::Not64Bit { class: 1 }),
        ),
        case(
            "big-endian",
            patched(d.clone(), |e| e.0[5] = 2),
            Read,
            kind!(ErrorKind::NotLittleEndian { data: 2 }),
        ),
        case(
            "wrong machine (AArch64)",
            patched(d.clone(), |e| e.set_u16(18, 183)),
            Read,
            kind!(ErrorKind::WrongMachine { machine: 183, .. }),
        ),
        case(
            "ET_EXEC",
            patched(d.clone(), |e| e.set_u16(16, 2)),
            Read,
            kind!(ErrorKind::NotSharedObject { e_type: 2, .. }),
        ),
        case(
            "ET_REL",
            patched(d.clone(), |e| e.set_u16(16, 1)),
            Read,
            kind!(ErrorKind::NotSharedObject { e_type: 1, .. }),
        ),
        case(
            "program header table outside the file",
            patched(d.clone(), |e| e.set_u64(32, file_len - 100)),
            Read,
            kind!(ErrorKind::ProgramHeadersOutOfFile { .. }),
        ),
        case(
            "program header offset overflows",
            patched(d.clone(), |e| e.set_u64(32, u64::MAX - 8)),
            Read,
            kind!(ErrorKind::ProgramHeadersOutOfFile { .. }),
        ),
        case(
            "e_phentsize wrong",
            patched(d.clone(), |e| e.set_u16(54, 32)),
            Read,
            kind!(ErrorKind::BadEntrySize {
                what: "e_phentsize",
                found: 32,
                expected: 56
            }),
        ),
        case(
            "zero PT_LOAD",
            patched(d.clone(), |e| {
                for p in e.loads() {
                    e.set_u32(p.at, 0);
                }
            }),
            Read,
            kind!(ErrorKind::NoLoadSegments),
        ),
        case(
            "overlapping PT_LOADs",
            patched(d.clone(), |e| e.set_u64(text.at + 16, loads[0].vaddr)),
            Read,
            kind!(ErrorKind::SegmentsOverlap { index: 1, .. }),
        ),
        case(
            "PT_LOADs sharing a page",
            // The RW segment moved down one page, onto the page where the
            // read-only segment before it ends (same page offset).
            patched(d.clone(), |e| e.set_u64(last.at + 16, last.vaddr - 0x1000)),
            Read,
            kind!(ErrorKind::SegmentsSharePage { .. }),
        ),
        case(
            "p_filesz > p_memsz",
            patched(d.clone(), |e| {
                e.set_u64(loads[0].at + 32, loads[0].memsz + 1)
            }),
            Read,
            kind!(ErrorKind::FileSizeExceedsMemSize { index: 0, .. }),
        ),
        case(
            "p_offset + p_filesz past the end",
            patched(d.clone(), |e| e.set_u64(last.at + 32, file_len)),
            Read,
            kind!(ErrorKind::SegmentOutOfFile { .. }),
        ),
        case(
            "2^60-byte segment",
            patched(d.clone(), |e| e.set_u64(last.at + 40, 1 << 60)),
            Read,
            kind!(ErrorKind::SegmentTooLarge {
                memsz: 0x1000_0000_0000_0000,
                ..
            }),
        ),
        case(
            "p_vaddr + p_memsz overflows",
            patched(d.clone(), |e| {
                e.set_u64(last.at + 16, !0xfff | (last.vaddr & 0xfff))
            }),
            Read,
            kind!(ErrorKind::SegmentTooLarge { .. }),
        ),
        case(
            "p_align not a power of two",
            patched(d.clone(), |e| e.set_u64(text.at + 48, 0x1001)),
            Read,
            kind!(ErrorKind::BadAlignment { align: 0x1001, .. }),
        ),
        case(
            "p_offset and p_vaddr differ modulo the page size",
            patched(d.clone(), |e| e.set_u64(text.at + 16, text.vaddr + 8)),
            Read,
            kind!(ErrorKind::MisalignedSegment { .. }),
        ),
        case(
            "PT_DYNAMIC outside every segment",
            patched(d.clone(), |e| {
                let p = e.phdr(PT_DYNAMIC);
                e.set_u64(p.at + 16, 0x7000_0000);
            }),
            Read,
            kind!(ErrorKind::DynamicOutsideImage {
                vaddr: 0x7000_0000,
                ..
            }),
        ),
        case(
            "PT_DYNAMIC file offset not where its address is",
            patched(d.clone(), |e| {
                let p = e.phdr(PT_DYNAMIC);
                e.set_u64(p.at + 8, p.offset - 16);
            }),
            Read,
            kind!(ErrorKind::DynamicOutsideImage { .. }),
        ),
        case(
            "PT_GNU_RELRO over code",
            patched(d.clone(), |e| {
                let p = e.phdr(PT_GNU_RELRO);
                e.set_u64(p.at + 16, text.vaddr);
            }),
            Read,
            kind!(ErrorKind::RelroNotWritable { .. }),
        ),
        case(
            "DT_STRTAB outside",
            patched(d.clone(), |e| e.set_dyn(DT_STRTAB, 0x10_0000_0000)),
            Read,
            kind!(ErrorKind::TableOutsideImage {
                tag: "DT_STRTAB",
                ..
            }),
        ),
        case(
            "DT_SYMTAB outside",
            patched(d.clone(), |e| e.set_dyn(DT_SYMTAB, 0x10_0000_0000)),
            Read,
            kind!(ErrorKind::TableOutsideImage {
                tag: "DT_SYMTAB",
                ..
            }),
        ),
        case(
            "DT_STRSZ too large",
            patched(d.clone(), |e| e.set_dyn(DT_STRSZ, 0x10_0000)),
            Read,
            kind!(ErrorKind::TableOverrunsSegment {
                tag: "DT_STRTAB",
                ..
            }),
        ),
        case(
            "DT_STRTAB in a writable segment",
            patched(d.clone(), |e| {
                e.set_dyn(DT_STRTAB, last.vaddr);
                e.set_dyn(DT_STRSZ, 16);
            }),
            Read,
            kind!(ErrorKind::TableInWritableSegment {
                tag: "DT_STRTAB",
                ..
            }),
        ),
        case(
            "a string without its NUL",
            // .dynstr ends in the middle of the soname.
            patched(d.clone(), |e| {
                let soname = e.dyn_val(DT_SONAME);
                e.set_dyn(DT_STRSZ, soname + 3);
            }),
            Read,
            kind!(ErrorKind::BadString { .. }),
        ),
        case(
            "DT_SYMENT wrong",
            patched(d.clone(), |e| e.set_dyn(DT_SYMENT, 16)),
            Read,
            kind!(ErrorKind::BadEntrySize {
                what: "DT_SYMENT",
                ..
            }),
        ),
        case(
            "DT_RELAENT wrong",
            patched(d.clone(), |e| e.set_dyn(DT_RELAENT, 16)),
            Read,
            kind!(ErrorKind::BadEntrySize {
                what: "DT_RELAENT",
                ..
            }),
        ),
        case(
            "DT_RELASZ not a multiple of 24",
            patched(d.clone(), |e| {
                let n = e.dyn_val(DT_RELASZ);
                e.set_dyn(DT_RELASZ, n - 1);
            }),
            Read,
            kind!(ErrorKind::BadTableSize {
                what: "DT_RELA",
                unit: 24,
                ..
            }),
        ),
        case(
            "DT_PLTREL says DT_REL",
            patched(d.clone(), |e| e.set_dyn(DT_PLTREL, DT_REL)),
            Read,
            kind!(ErrorKind::MalformedTable {
                table: "DT_PLTREL",
                ..
            }),
        ),
        case(
            "an INIT_ARRAY size not a multiple of 8",
            patched(d.clone(), |e| e.set_dyn(DT_INIT_ARRAYSZ, 20)),
            Read,
            kind!(ErrorKind::BadTableSize {
                what: "DT_INIT_ARRAY",
                size: 20,
                unit: 8
            }),
        ),
        case(
            "DT_INIT pointing at data",
            patched(d.clone(), |e| e.set_dyn(DT_INIT, last.vaddr)),
            Read,
            kind!(ErrorKind::BadCodePointer { .. }),
        ),
        case(
            "a relocation offset outside the object",
            patched(d.clone(), |e| {
                let r = e.relas(DT_RELA)[0];
                e.set_u64(r.at, 0x7fff_0000_0000);
            }),
            Link,
            kind!(ErrorKind::RelocationOutOfBounds {
                table: "DT_RELA",
                index: 0,
                offset: 0x7fff_0000_0000,
                ..
            }),
        ),
        case(
            "a relocation writing into code",
            patched(d.clone(), |e| {
                let r = e.relas(DT_RELA)[0];
                e.set_u64(r.at, text.vaddr);
            }),
            Link,
            kind!(ErrorKind::RelocationOutOfBounds {
                table: "DT_RELA",
                index: 0,
                ..
            }),
        ),
        case(
            "a relocation to a symbol index past .dynsym",
            patched(d.clone(), |e| {
                let r = *e
                    .relas(DT_RELA)
                    .iter()
                    .find(|r| r.info >> 32 != 0)
                    .expect("a symbolic relocation");
                e.set_u64(r.at + 8, (0x7fff << 32) | (r.info & 0xffff_ffff));
            }),
            Link,
            kind!(ErrorKind::SymbolIndexOutOfRange {
                table: "DT_RELA",
                symbol: 0x7fff,
                ..
            }),
        ),
        case(
            "an unknown relocation type",
            patched(d.clone(), |e| {
                let r = e.relas(DT_RELA)[0];
                e.set_u64(r.at + 8, (r.info & !0xffff_ffff) | 200);
            }),
            Link,
            kind!(ErrorKind::UnsupportedRelocation {
                rtype: 200,
                index: 0,
                ..
            }),
        ),
        case(
            "a GNU hash with zero buckets",
            patched(d.clone(), |e| {
                let at = e.offset_of(e.dyn_val(DT_GNU_HASH));
                e.set_u32(at, 0);
            }),
            Link,
            kind!(ErrorKind::EmptyHashTable {
                table: "DT_GNU_HASH"
            }),
        ),
        case(
            "a GNU hash chain that never ends",
            // No chain entry has its end bit: the walk runs into .dynsym.
            patched(d.clone(), |e| {
                let addr = e.dyn_val(DT_GNU_HASH);
                let at = e.offset_of(addr);
                let (nbuckets, bloom) = (e.u32(at) as usize, e.u32(at + 8) as usize);
                let chains = at + 16 + bloom * 8 + nbuckets * 4;
                let end = e.offset_of(e.dyn_val(DT_SYMTAB));
                for w in (chains..end).step_by(4) {
                    let v = e.u32(w);
                    e.set_u32(w, v & !1);
                }
            }),
            Link,
            kind!(ErrorKind::EndlessHashChain {
                table: "DT_GNU_HASH",
                ..
            }),
        ),
        case(
            "a GNU hash Bloom shift of 40",
            patched(d.clone(), |e| {
                let at = e.offset_of(e.dyn_val(DT_GNU_HASH));
                e.set_u32(at + 12, 40);
            }),
            Link,
            kind!(ErrorKind::MalformedTable {
                table: "DT_GNU_HASH",
                ..
            }),
        ),
        case(
            "a SysV hash with zero buckets",
            patched(Elf::load(&testlib("libdemo_sysv.so")), |e| {
                let at = e.offset_of(e.dyn_val(DT_HASH));
                e.set_u32(at, 0);
            }),
            Link,
            kind!(ErrorKind::EmptyHashTable { table: "DT_HASH" }),
        ),
        case(
            "a SysV hash chain that loops",
            patched(Elf::load(&testlib("libdemo_sysv.so")), |e| {
                let at = e.offset_of(e.dyn_val(DT_HASH));
                let nbucket = e.u32(at) as usize;
                let start = (0..nbucket)
                    .map(|b| e.u32(at + 8 + 4 * b))
                    .find(|&s| s != 0)
                    .expect("a non-empty bucket") as usize;
                // The chain entry of the first symbol points back to it.
                e.set_u32(at + 8 + 4 * nbucket + 4 * start, start as u32);
            }),
            Link,
            kind!(ErrorKind::EndlessHashChain {
                table: "DT_HASH",
                ..
            }),
        ),
        case(
            "an INIT_ARRAY entry pointing at data",
            patched(d.clone(), |e| {
                let init_array = e.dyn_val(DT_INIT_ARRAY);
                let r = *e
                    .relas(DT_RELA)
                    .iter()
                    .find(|r| r.offset == init_array && r.info & 0xffff_ffff == R_RELATIVE)
                    .expect("a RELATIVE relocation of INIT_ARRAY[0]");
                e.set_u64(r.at + 16, last.vaddr);
            }),
            Run,
            kind!(ErrorKind::BadCodePointer { .. }),
        ),
        case(
            "an IRELATIVE resolver outside code",
            patched(Elf::load(&testlib("libifunc.so")), |e| {
                let data = e.loads().last().expect("a PT_LOAD").vaddr;
                let r = *e
                    .relas(DT_RELA)
                    .iter()
                    .chain(e.relas(DT_JMPREL).iter())
                    .find(|r| r.info & 0xffff_ffff == R_IRELATIVE)
                    .expect("an IRELATIVE relocation");
                e.set_u64(r.at + 16, data);
            }),
            Link,
            kind!(ErrorKind::BadCodePointer { .. }),
        ),
        case(
            "a 2 MiB PT_DYNAMIC",
            patched(d.clone(), |e| {
                let p = e.phdr(PT_DYNAMIC);
                e.set_u64(p.at + 40, 2 << 20);
            }),
            Read,
            kind!(ErrorKind::SegmentTooLarge {
                limit: 0x10_0000,
                ..
            }),
        ),
        case(
            "a 2^40-byte PT_TLS",
            patched(Elf::load(&testlib("libtls.so")), |e| {
                let p = e.phdr(PT_TLS);
                e.set_u64(p.at + 40, 1 << 40);
            }),
            Read,
            kind!(ErrorKind::SegmentTooLarge {
                limit: 0x1000_0000,
                ..
            }),
        ),
        case(
            "DT_REL relocations",
            patched(d.clone(), |e| e.retag_dyn(DT_RELACOUNT, DT_REL, 0x828)),
            Read,
            kind!(ErrorKind::MalformedTable {
                table: "dynamic section",
                ..
            }),
        ),
    ];
    cases.push(Case {
        name: "a missing dependency",
        // libc.so.6 renamed in .dynstr: DT_NEEDED now names a file that
        // does not exist anywhere.
        input: patched(d.clone(), |e| {
            let at = e.dynstr_offset("libc.so.6");
            e.0[at + 3] = b'Z';
        }),
        stage: Open,
        kind: kind!(ErrorKind::MissingDependency { .. }),
        image_fails: false,
    });
    cases.push(Case {
        name: "a directory",
        input: Input::Directory,
        stage: Read,
        kind: kind!(ErrorKind::NotRegularFile {
            what: "a directory"
        }),
        image_fails: false,
    });
    cases.push(Case {
        name: "a FIFO",
        input: Input::Fifo,
        stage: Read,
        kind: kind!(ErrorKind::NotRegularFile { what: "a FIFO" }),
        image_fails: false,
    });
    cases
}

/// Materialise `case` under `dir`; returns its path.
fn materialise(case: &Case, dir: &Path, index: usize) -> PathBuf {
    let path = dir.join(format!("case{index}.so"));
    match &case.input {
        Input::Bytes(b) => std::fs::write(&path, b).expect("write a corpus file"),
        Input::Directory => std::fs::create_dir(&path).expect("create a directory"),
        Input::Fifo => {
            let c = CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL in a path");
            // SAFETY: `c` is a valid NUL-terminated path.
            let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
            assert_eq!(rc, 0, "mkfifo: {}", std::io::Error::last_os_error());
        }
    }
    path
}

fn assert_case(case: &Case, what: &str, result: Result<(), mmld::Error>) -> mmld::Error {
    let err = match result {
        Ok(()) => panic!("{}: {what} succeeded, expected an error", case.name),
        Err(e) => e,
    };
    assert!(
        (case.kind)(err.kind()),
        "{}: {what} gave the wrong error: {err} ({:?})",
        case.name,
        err.kind()
    );
    assert_eq!(
        err.stage(),
        case.stage,
        "{}: {what}: wrong stage in {err}",
        case.name
    );
    err
}

/// Call `f` on another thread and fail if it takes longer than `limit`
/// (opening a FIFO must not wait for a writer).
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
}

#[test]
fn corpus_errors_through_the_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, case) in corpus().iter().enumerate() {
        let path = materialise(case, dir.path(), i);
        let p = path.clone();
        // SAFETY: a corpus file must fail before any of its code runs.
        let open = within(Duration::from_secs(20), case.name, move || {
            unsafe { Library::open(&p) }.map(drop)
        });
        let err = assert_case(case, "Library::open", open);
        assert!(
            err.to_string().contains(&*path.to_string_lossy()),
            "{}: {err} names the file",
            case.name
        );
        let p = path.clone();
        let check = within(Duration::from_secs(20), case.name, move || {
            OpenOptions::new().check(&p).map(drop)
        });
        assert_case(case, "OpenOptions::check", check);
        if let Input::Bytes(bytes) = &case.input {
            let image = mmld::check_image(bytes);
            if case.image_fails {
                assert_case(case, "check_image", image.map(drop));
            } else {
                assert!(
                    image.is_ok(),
                    "{}: check_image: {:?}",
                    case.name,
                    image.err()
                );
            }
        }
    }
}

/// `text` with every hexadecimal number replaced by `0x_`: process
/// addresses differ between runs.
fn without_addresses(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("0x") {
        out.push_str(&rest[..i]);
        out.push_str("0x_");
        rest = rest[i + 2..].trim_start_matches(|c: char| c.is_ascii_hexdigit());
    }
    out.push_str(rest);
    out
}

#[test]
fn corpus_errors_through_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, case) in corpus().iter().enumerate() {
        let path = materialise(case, dir.path(), i);
        let expected = OpenOptions::new()
            .check(&path)
            .err()
            .unwrap_or_else(|| panic!("{}: check succeeded", case.name))
            .to_string();
        for args in [vec!["run", "--", "add", "2", "3"], vec!["check", "--"]] {
            let mut cmd = Command::new(mmld_bin());
            cmd.arg(args[0]).arg(&path).args(&args[2..]);
            let out = cmd.output().expect("run mmld");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{}: mmld {} exit status {} (stderr: {stderr})",
                case.name,
                args[0],
                out.status
            );
            assert!(
                without_addresses(&stderr).contains(&without_addresses(&expected)),
                "{}: mmld {} printed\n{stderr}\nexpected it to contain\n{expected}",
                case.name,
                args[0]
            );
            assert!(!stderr.contains("panicked"), "{}: {stderr}", case.name);
            assert!(
                out.stdout.is_empty(),
                "{}: mmld {} printed to stdout",
                case.name,
                args[0]
            );
        }
    }
}

#[test]
fn missing_symbol_fails_open_and_check() {
    let lib = testlib("libmissing.so");
    // SAFETY: the load fails while linking, before any constructor.
    let err = unsafe { Library::open(&lib) }.expect_err("libmissing.so must not load");
    assert!(
        matches!(err.kind(), ErrorKind::UnresolvedSymbol { name, .. } if name == "mmld_no_such_function"),
        "{err}"
    );
    assert_eq!(err.stage(), Stage::Link);
    // `check` collects every unresolved symbol instead of stopping.
    let report = OpenOptions::new()
        .check(&lib)
        .expect("check links in a dry run");
    let all: Vec<&String> = report.unresolved.iter().flat_map(|(_, n)| n).collect();
    assert!(all.iter().any(|n| *n == "mmld_no_such_function"), "{all:?}");
    let image = mmld::check_image(&std::fs::read(&lib).expect("read")).expect("check_image");
    assert!(
        image
            .unresolved
            .iter()
            .any(|n| n == "mmld_no_such_function")
    );
    for args in [&["run", "x", "call_missing"][..], &["check", "x"]] {
        let out = Command::new(mmld_bin())
            .arg(args[0])
            .arg(&lib)
            .args(&args[2..])
            .output()
            .expect("run mmld");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "mmld {}: {all}", args[0]);
        assert!(
            all.contains("mmld_no_such_function"),
            "mmld {}: {all}",
            args[0]
        );
    }
}

#[test]
fn opening_a_fifo_does_not_block() {
    let dir = tempfile::tempdir().expect("tempdir");
    let case = corpus()
        .into_iter()
        .find(|c| matches!(c.input, Input::Fifo))
        .expect("a FIFO case");
    let path = materialise(&case, dir.path(), 0);
    let started = Instant::now();
    let result = within(Duration::from_secs(5), "opening a FIFO", move || {
        // SAFETY: fails at open.
        unsafe { Library::open(&path) }.map(drop)
    });
    assert_case(&case, "Library::open", result);
    assert!(started.elapsed() < Duration::from_secs(5));
}

// ---------------------------------------------------------------------------
// Policy

fn policy_case(f: impl FnOnce(&mut Elf)) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut e = demo();
    f(&mut e);
    let path = dir.path().join("libpolicy.so");
    std::fs::write(&path, &e.0).expect("write");
    (dir, path)
}

/// `path` fails with `expected` by default through the API and the CLI,
/// and loads and runs with `allow` set.
fn assert_policy(
    path: &Path,
    expected: fn(&ErrorKind) -> bool,
    allow: impl Fn(&mut OpenOptions) -> &mut OpenOptions,
) {
    // SAFETY: refused before mapping; with the switch, it is libdemo.
    let err = unsafe { Library::open(path) }.expect_err("refused by default");
    assert!(expected(err.kind()), "{err}");
    let err = OpenOptions::new()
        .check(path)
        .expect_err("refused by check");
    assert!(expected(err.kind()), "{err}");
    for cmd in ["run", "check"] {
        let out = Command::new(mmld_bin())
            .arg(cmd)
            .arg(path)
            .args(if cmd == "run" {
                &["add", "2", "3"][..]
            } else {
                &[]
            })
            .output()
            .expect("run mmld");
        assert_eq!(out.status.code(), Some(1), "mmld {cmd}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(&err.kind().to_string()));
    }
    let mut options = OpenOptions::new();
    allow(&mut options);
    options.check(path).expect("allowed by the switch");
    // SAFETY: libdemo with one header flag changed.
    let lib = unsafe { options.open(path) }.expect("loads with the switch");
    // SAFETY: add is `long add(long, long)`.
    let add = unsafe { lib.get::<extern "C" fn(i64, i64) -> i64>("add") }.expect("add");
    assert_eq!(add(2, 3), 5);
}

#[test]
fn policy_refuses_writable_executable_segments() {
    let (_dir, path) = policy_case(|e| {
        let text = e.loads()[1];
        e.set_u32(text.at + 4, 7);
    });
    assert_policy(
        &path,
        kind!(ErrorKind::WritableExecutable { index: 1 }),
        |o| o.allow_writable_executable(true),
    );
}

#[test]
fn policy_refuses_an_executable_stack() {
    let (_dir, path) = policy_case(|e| {
        let stack = e.phdr(PT_GNU_STACK);
        e.set_u32(stack.at + 4, 7);
    });
    assert_policy(&path, kind!(ErrorKind::ExecutableStack), |o| {
        o.allow_executable_stack(true)
    });
}

#[test]
fn policy_refuses_text_relocations() {
    // Both spellings: a DT_TEXTREL entry, and DF_TEXTREL in DT_FLAGS.
    let (_d1, entry) = policy_case(|e| e.retag_dyn(DT_RELACOUNT, DT_TEXTREL, 0));
    let (_d2, flag) = policy_case(|e| {
        let flags = e.dyn_val(DT_FLAGS);
        e.set_dyn(DT_FLAGS, flags | DF_TEXTREL);
    });
    for path in [entry, flag] {
        // SAFETY: refused before mapping.
        let err = unsafe { Library::open(&path) }.expect_err("DT_TEXTREL refused");
        assert!(matches!(err.kind(), ErrorKind::TextRelocations), "{err}");
        assert_eq!(err.stage(), Stage::Read);
        let err = OpenOptions::new()
            .check(&path)
            .expect_err("refused by check");
        assert!(matches!(err.kind(), ErrorKind::TextRelocations), "{err}");
        let out = Command::new(mmld_bin())
            .arg("check")
            .arg(&path)
            .output()
            .expect("run mmld");
        assert_eq!(out.status.code(), Some(1));
        // The switch accepts the flag, but mmld never writes to text, so
        // the load still fails, with an error saying exactly that.
        let err = OpenOptions::new()
            .allow_text_relocations(true)
            .check(&path)
            .expect_err("text relocations are never applied");
        assert!(!matches!(err.kind(), ErrorKind::TextRelocations), "{err}");
        assert!(err.to_string().contains("DT_TEXTREL"), "{err}");
    }
}

// ---------------------------------------------------------------------------
// DT_NEEDED naming itself, and a cycle of three: glibc loads both, and so
// does mmld: the needed name matches an object of the same load by soname.

fn needed_self(dir: &Path) -> PathBuf {
    let src = "int self_value(void) { return 7; }\n";
    gcc(dir, "libself.so", src, &[]);
    // Relink with the first build as an input: DT_NEEDED is that file's
    // soname, which is also this library's own.
    let out = Command::new("gcc")
        .current_dir(dir)
        .args(["-shared", "-fPIC", "-Wl,-z,now", "-Wl,-soname,libself.so"])
        .args(["-o", "libself.so.new", "libself.so.c"])
        .args(["-Wl,--no-as-needed", "./libself.so"])
        .output()
        .expect("gcc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join("libself.so");
    std::fs::rename(dir.join("libself.so.new"), &path).expect("rename");
    path
}

fn needed_cycle(dir: &Path) -> PathBuf {
    let origin = ["-Wl,--no-as-needed", "-Wl,-rpath,$ORIGIN", "-L."];
    gcc(dir, "libcycc.so", "int c_value(void) { return 0; }\n", &[]);
    let b = "int c_value(void);\nint b_value(void) { return c_value() + 10; }\n";
    gcc(dir, "libcycb.so", b, &[&origin[..], &["-lcycc"]].concat());
    let a = "int b_value(void);\nint a_base(void) { return 1; }\nint a_value(void) { return b_value() + 100; }\n";
    gcc(dir, "libcyca.so", a, &[&origin[..], &["-lcycb"]].concat());
    let c = "int a_base(void);\nint c_value(void) { return a_base() + 1; }\n";
    gcc(dir, "libcycc.so", c, &[&origin[..], &["-lcyca"]].concat());
    dir.join("libcyca.so")
}

/// `/proc/self/maps` lines naming a file under `dir`.
fn mappings_under(dir: &Path) -> Vec<String> {
    let dir = std::fs::canonicalize(dir).expect("canonical dir");
    common::self_maps()
        .iter()
        .filter(|m| matches!(&m.pathname, MMapPath::Path(p) if p.starts_with(&dir)))
        .map(common::maps_line)
        .collect()
}

#[test]
fn needed_naming_itself_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = needed_self(dir.path());
    let needed = Command::new("readelf")
        .arg("-dW")
        .arg(&path)
        .output()
        .expect("readelf");
    assert!(String::from_utf8_lossy(&needed.stdout).contains("Shared library: [libself.so]"));
    OpenOptions::new().check(&path).expect("check");
    mmld::check_image(&std::fs::read(&path).expect("read")).expect("check_image");
    {
        // SAFETY: a tiny gcc-built library without constructors.
        let lib = within(Duration::from_secs(20), "loading libself", move || unsafe {
            Library::open(&path)
        })
        .expect("DT_NEEDED naming itself loads");
        assert_eq!(lib.objects().len(), 1, "one object, not two");
        // SAFETY: int self_value(void).
        let f = unsafe { lib.get::<extern "C" fn() -> i32>("self_value") }.expect("self_value");
        assert_eq!(f(), 7);
    }
    assert!(mappings_under(dir.path()).is_empty());
}

#[test]
fn needed_cycle_of_three_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = needed_cycle(dir.path());
    let report = OpenOptions::new().check(&path).expect("check");
    assert!(report.unresolved.is_empty(), "{:?}", report.unresolved);
    {
        let p = path.clone();
        // SAFETY: gcc-built libraries without constructors.
        let lib = within(
            Duration::from_secs(20),
            "loading the cycle",
            move || unsafe { Library::open(&p) },
        )
        .expect("a DT_NEEDED cycle of three loads");
        assert_eq!(lib.objects().len(), 3);
        // SAFETY: int a_value(void); a -> b -> c -> a_base in a.
        let f = unsafe { lib.get::<extern "C" fn() -> i32>("a_value") }.expect("a_value");
        assert_eq!(f(), 112);
    }
    assert!(
        mappings_under(dir.path()).is_empty(),
        "a cycle must not keep itself alive"
    );
    let out = Command::new(mmld_bin())
        .args(["run"])
        .arg(&path)
        .args(["a_value", "--ret", "i32"])
        .output()
        .expect("mmld run");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "112");
    let out = Command::new(mmld_bin())
        .arg("check")
        .arg(&path)
        .output()
        .expect("mmld check");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// `mmld check` exits 0 exactly when the library would load and link.

#[test]
fn check_exit_status_matches_loadability() {
    for good in [
        testlib("libdemo.so"),
        testlib("libdemo_relr.so"),
        testlib("libdemo_sysv.so"),
        testlib("libversioned.so"),
        testlib("libifunc.so"),
        PathBuf::from(LIBZ),
        PathBuf::from(LIBPNG),
    ] {
        let out = Command::new(mmld_bin())
            .arg("check")
            .arg(&good)
            .output()
            .expect("mmld check");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            good.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        OpenOptions::new().check(&good).expect("check");
    }
    // Each failing corpus entry was checked by `corpus_errors_through_the_cli`;
    // these two used to pass `check` while `open` failed.
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, case) in corpus().iter().enumerate().filter(|(_, c)| {
        c.name == "an INIT_ARRAY entry pointing at data"
            || c.name == "an IRELATIVE resolver outside code"
    }) {
        let path = materialise(case, dir.path(), i);
        let out = Command::new(mmld_bin())
            .arg("check")
            .arg(&path)
            .output()
            .expect("mmld check");
        assert_eq!(out.status.code(), Some(1), "{}", case.name);
    }
}

// ---------------------------------------------------------------------------
// Real libraries: validation must not reject what the system loads.

#[test]
fn system_libraries_pass_read_and_map() {
    let mut checked = 0;
    let mut failures = Vec::new();
    let started = Instant::now();
    let Ok(entries) = std::fs::read_dir("/usr/lib/x86_64-linux-gnu") else {
        return;
    };
    let host_maps: Vec<String> = common::self_maps()
        .iter()
        .map(|m| common::path_text(&m.pathname))
        .collect();
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.contains(".so") || path.is_symlink() || !path.is_file() {
            continue;
        }
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.len() > 16 << 20 || started.elapsed() > Duration::from_secs(30) {
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        if !bytes.starts_with(b"\x7fELF") || bytes.get(16) != Some(&3) {
            continue;
        }
        // check_image binds against the host first: a library the host
        // already has (libgcc_s in a Rust program) binds its constructors
        // to the host's copy, and mmld would reuse that copy anyway.
        if host_maps.iter().any(|p| p.contains(&format!("/{name}"))) {
            continue;
        }
        checked += 1;
        match mmld::check_image(&bytes) {
            Ok(_) => {}
            // Thread-local storage mmld cannot place (see the README's
            // limitations) is refused clearly; anything else is a false
            // alarm.
            Err(e) if matches!(e.kind(), ErrorKind::TlsUnsupported { .. }) => {}
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(checked >= 5, "too few system libraries found ({checked})");
    assert!(
        failures.is_empty(),
        "real libraries refused:\n{}",
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Mutation test

/// A deterministic xorshift generator: the same mutants on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Byte ranges worth mutating: the ELF header, the program headers, the
/// dynamic section, the relocation and hash tables.
fn regions(e: &Elf) -> Vec<(&'static str, std::ops::Range<usize>)> {
    let mut out = vec![("ELF header", 0..64)];
    let phoff = e.u64(32) as usize;
    out.push((
        "program headers",
        phoff..phoff + 56 * usize::from(e.u16(56)),
    ));
    let d = e.phdr(PT_DYNAMIC);
    out.push((
        "dynamic section",
        d.offset as usize..(d.offset + d.filesz) as usize,
    ));
    let dynamic = e.dynamic();
    let val = |tag| dynamic.iter().find(|x| x.1 == tag).map(|x| x.2);
    for (what, addr, size) in [
        ("DT_RELA", DT_RELA, DT_RELASZ),
        ("DT_JMPREL", DT_JMPREL, DT_PLTRELSZ),
        ("DT_RELR", 36, 35),
    ] {
        if let (Some(a), Some(s)) = (val(addr), val(size)) {
            let at = e.offset_of(a);
            out.push((what, at..at + s as usize));
        }
    }
    for (what, tag) in [("DT_GNU_HASH", DT_GNU_HASH), ("DT_HASH", DT_HASH)] {
        if let Some(a) = val(tag) {
            let at = e.offset_of(a);
            let end = e.offset_of(val(DT_SYMTAB).expect("DT_SYMTAB")).max(at + 64);
            out.push((what, at..end.min(at + 4096)));
        }
    }
    out
}

/// Truncation points: every field boundary of the headers and dynamic
/// entries, each table's start and end, each segment's file range.
fn truncations(e: &Elf) -> BTreeSet<usize> {
    let mut cuts: BTreeSet<usize> = [
        0, 1, 3, 4, 5, 6, 7, 16, 18, 20, 24, 32, 40, 48, 52, 54, 56, 58, 60, 62, 64,
    ]
    .into_iter()
    .collect();
    for p in e.phdrs() {
        for f in [0, 4, 8, 16, 24, 32, 40, 48, 56] {
            cuts.insert(p.at + f);
        }
        cuts.insert(p.offset as usize);
        cuts.insert((p.offset + p.filesz) as usize);
        cuts.insert(((p.offset + p.filesz) as usize).saturating_sub(1));
    }
    for (at, _, _) in e.dynamic() {
        cuts.extend([at, at + 8, at + 16]);
    }
    for (_, r) in regions(e) {
        cuts.extend([r.start, r.end, r.end.saturating_sub(1)]);
    }
    cuts.retain(|&c| c < e.0.len());
    cuts
}

/// Values that stress bounds checks when written over a field.
const INTERESTING: [u64; 10] = [
    0,
    1,
    7,
    0x1000,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 47,
    1 << 60,
    u64::MAX,
];

/// How thoroughly to mutate one library: bits flipped and fields
/// overwritten per region (a large library gets a sample, so it costs
/// about what a small one does).
#[derive(Clone, Copy)]
struct Effort {
    bits_per_region: usize,
    fields_per_region: usize,
}

const FULL: Effort = Effort {
    bits_per_region: 4096,
    fields_per_region: usize::MAX,
};
const SAMPLED: Effort = Effort {
    bits_per_region: 256,
    fields_per_region: 32,
};

/// Call `f` on each mutant of `e`, built in one reused buffer (mutants are
/// generated, never stored: there are tens of thousands).
fn for_each_mutant(e: &Elf, rng: &mut Rng, effort: Effort, mut f: impl FnMut(&[u8])) {
    for cut in truncations(e) {
        f(&e.0[..cut]);
    }
    let mut m = e.0.clone();
    for (_, r) in regions(e) {
        // Every bit of the headers and dynamic section; for big tables, a
        // deterministic sample of bits.
        let bits = r.len() * 8;
        let step = (bits / effort.bits_per_region).max(1);
        for bit in (0..bits).step_by(step) {
            m[r.start + bit / 8] ^= 1 << (bit % 8);
            f(&m);
            m[r.start + bit / 8] ^= 1 << (bit % 8);
        }
        // Interesting values over each aligned 4- and 8-byte field.
        let fields = r.len() / 8;
        let stride = 8 * (fields / effort.fields_per_region.min(fields.max(1))).max(1);
        for at in (r.start..r.end.saturating_sub(7)).step_by(stride) {
            for v in INTERESTING {
                m[at..at + 8].copy_from_slice(&v.to_le_bytes());
                f(&m);
                m[at..at + 8].copy_from_slice(&e.0[at..at + 8]);
                m[at..at + 4].copy_from_slice(&(v as u32).to_le_bytes());
                f(&m);
                m[at..at + 4].copy_from_slice(&e.0[at..at + 4]);
            }
        }
        // A few multi-byte random smashes.
        for _ in 0..64 {
            for _ in 0..(rng.next() % 8 + 2) {
                let at = r.start + (rng.next() as usize) % r.len().max(1);
                m[at] = rng.next() as u8;
            }
            f(&m);
            m[r.clone()].copy_from_slice(&e.0[r.clone()]);
        }
    }
}

#[test]
fn mutants_load_or_fail_never_panic() {
    let started = Instant::now();
    // Test libraries of every flavour (RELA, DT_RELR, SysV hash, symbol
    // versions, IFUNC, TLS), and a large real library, sampled.
    let bases = [
        (testlib("libdemo.so"), FULL),
        (testlib("libdemo_relr.so"), FULL),
        (testlib("libdemo_sysv.so"), FULL),
        (testlib("libversioned.so"), FULL),
        (testlib("libifunc.so"), FULL),
        (testlib("libtls.so"), FULL),
        (
            PathBuf::from("/usr/lib/x86_64-linux-gnu/libsqlite3.so.0"),
            SAMPLED,
        ),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = Rng(0x6d6d_6c64_5f66_757a);
    let mut total = 0usize;
    let mut through_files = 0usize;
    let mut panics = Vec::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for (path, effort) in &bases {
        let base = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        let e = Elf::load(path);
        let mut i = 0usize;
        for_each_mutant(&e, &mut rng, *effort, |m| {
            i += 1;
            total += 1;
            let result = catch_unwind(AssertUnwindSafe(|| mmld::check_image(m)));
            match result {
                Ok(Ok(_)) => *outcomes.entry("ok".into()).or_default() += 1,
                Ok(Err(err)) => {
                    let name = format!("{:?}", err.kind());
                    let variant = name.split([' ', '(', '{']).next().unwrap_or("").to_string();
                    *outcomes.entry(variant).or_default() += 1;
                }
                Err(_) => panics.push(format!("{base} mutant {i} (check_image)")),
            }
            // Every 16th mutant also goes through a file and the loader's
            // own check (inert mapping, dry-run link, dependency search).
            if i.is_multiple_of(16) {
                let path = dir.path().join(format!("m{total}.so"));
                std::fs::write(&path, m).expect("write a mutant");
                through_files += 1;
                let result = catch_unwind(AssertUnwindSafe(|| {
                    OpenOptions::new().check(&path).map(drop)
                }));
                if result.is_err() {
                    panics.push(format!("{base} mutant {i} (OpenOptions::check)"));
                }
                std::fs::remove_file(&path).ok();
            }
        });
    }
    let elapsed = started.elapsed();
    println!("{total} mutants ({through_files} also through files) in {elapsed:?}: {outcomes:?}");
    assert!(panics.is_empty(), "panics: {panics:?}");
    assert!(total >= 10_000, "only {total} mutants");
    if !cfg!(debug_assertions) {
        assert!(
            elapsed < Duration::from_secs(120),
            "{total} mutants took {elapsed:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Leaks

#[test]
fn failing_and_succeeding_loads_leak_nothing() {
    if !in_child("failing_and_succeeding_loads_leak_nothing") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = corpus();
    let paths: Vec<PathBuf> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| materialise(c, dir.path(), i))
        .collect();
    // A dependency that loads, under a root that then fails to link: the
    // dependency must be unmapped with the rest.
    let dep_then_fail = gcc(
        dir.path(),
        "libdepfail.so",
        "const char *zlibVersion(void);\nvoid mmld_leak_missing(void);\n\
         const char *f(void) { mmld_leak_missing(); return zlibVersion(); }\n",
        &["-Wl,--no-as-needed", LIBZ],
    );
    let demo_copy = dir.path().join("libdemo_copy.so");
    std::fs::copy(testlib("libdemo.so"), &demo_copy).expect("copy");
    let images: Vec<Vec<u8>> = cases
        .iter()
        .filter_map(|c| match &c.input {
            Input::Bytes(b) => Some(b.clone()),
            _ => None,
        })
        .collect();

    let mut loads = 0usize;
    let round = |loads: &mut usize| {
        for p in &paths {
            // SAFETY: every corpus file fails before running code.
            assert!(unsafe { Library::open(p) }.is_err());
            assert!(OpenOptions::new().check(p).is_err());
            *loads += 2;
        }
        for bytes in &images {
            let _ = mmld::check_image(bytes);
        }
        // SAFETY: fails while linking, after libz was mapped.
        let err = unsafe { Library::open(&dep_then_fail) }.expect_err("unresolved");
        assert!(
            matches!(err.kind(), ErrorKind::UnresolvedSymbol { .. }),
            "{err}"
        );
        for good in [
            demo_copy.as_path(),
            Path::new(LIBPNG),
            &testlib("libdemo_relr.so"),
        ] {
            // SAFETY: real libraries and the test library.
            let lib = unsafe { Library::open(good) }.expect("loads");
            drop(lib);
            OpenOptions::new().check(good).expect("checks");
        }
        *loads += 7;
    };
    // Warm up: first loads create lasting state that is not a leak (the
    // ld.so.cache view, glibc-family libraries the host dlopens, buffers).
    round(&mut loads);
    round(&mut loads);
    let maps_before = common::maps_snapshot();
    let fds_before = common::fds_snapshot();
    let started = Instant::now();
    let mut rounds = 0;
    while loads < 4000 || rounds < 20 {
        round(&mut loads);
        rounds += 1;
    }
    let maps_after = common::maps_snapshot();
    let fds_after = common::fds_snapshot();
    println!("{loads} loads in {rounds} rounds, {:?}", started.elapsed());
    assert_eq!(fds_before, fds_after, "file descriptors leaked");
    assert!(
        maps_before == maps_after,
        "mappings changed:\n{}",
        common::diff(&maps_before, &maps_after)
    );
    assert!(mappings_under(dir.path()).is_empty());
    assert!(
        !maps_after
            .iter()
            .any(|l| l.contains("libz.so") || l.contains("libpng16")),
        "libz or libpng left mapped"
    );
}
