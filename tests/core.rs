//! Integration tests for the core loader (READ → MAP → LINK → RUN) through
//! the public library API: every test library, every relocation type,
//! symbol versions, IFUNCs, constructor/destructor order, reference-counted
//! reuse, the memory layout in `/proc/self/maps`, and each READ rejection.
//!
//! Tests that depend on a library's mutable state load a private copy
//! (`common::fresh_copy`), because mmld shares one object per file and
//! libtest runs tests in parallel threads. Tests that must see the whole
//! address space unchanged by anyone else (the span is gone after drop)
//! run in a child process of this binary (`common::run_in_child`).

mod common;

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, c_char};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;
use goblin::elf::program_header::{PF_R, PF_W, PF_X, PT_GNU_RELRO, PT_LOAD};
use mmld::{ErrorKind, Library, Stage, SymbolKind};

type FnI64I64 = extern "C" fn(i64, i64) -> i64;
type FnVoidI64 = extern "C" fn() -> i64;
type FnVoidI32 = extern "C" fn() -> i32;
type FnVoidStr = extern "C" fn() -> *const c_char;
type FnI64Str = extern "C" fn(i64) -> *const c_char;
type Mix =
    extern "C" fn(i64, f64, i64, f64, i64, f64, i64, f64, i64, f64, i64, f64, f64, f64) -> f64;

const DEMO_VARIANTS: [&str; 3] = ["libdemo.so", "libdemo_relr.so", "libdemo_sysv.so"];

fn open(path: &Path) -> Library {
    // SAFETY: the test libraries are our own fixtures.
    unsafe { Library::open(path) }.unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

/// The value of symbol `name` as `T`, detached from the library's lifetime:
/// callers keep the library alive while they use it.
fn sym<T: Copy>(lib: &Library, name: &str) -> T {
    // SAFETY: each caller names the symbol's true C type.
    let s = unsafe { lib.get::<T>(name) }.unwrap_or_else(|e| panic!("get({name}): {e}"));
    *s
}

fn cstr(p: *const c_char) -> String {
    assert!(!p.is_null(), "expected a C string, got NULL");
    // SAFETY: the fixtures return NUL-terminated strings that live as long
    // as the library.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn reloc_map(lib: &Library) -> BTreeMap<String, usize> {
    lib.objects()[0].relocations.iter().cloned().collect()
}

fn mix_reference(i: [i64; 6], d: [f64; 8]) -> f64 {
    // The C definition's weights, argument by argument in declaration order:
    // a(i0) b(d0) c(i1) d(d1) e(i2) f(d2) g(i3) h(d3) i(i4) j(d4) k(i5) l(d5) m(d6) n(d7).
    i[0] as f64
        + 2.0 * d[0]
        + 3.0 * i[1] as f64
        + 4.0 * d[1]
        + 5.0 * i[2] as f64
        + 6.0 * d[2]
        + 7.0 * i[3] as f64
        + 8.0 * d[3]
        + 9.0 * i[4] as f64
        + 10.0 * d[4]
        + 11.0 * i[5] as f64
        + 12.0 * d[5]
        + 13.0 * d[6]
        + 14.0 * d[7]
}

// ---------------------------------------------------------------------------
// Every export of the three libdemo variants.

/// Everything testlibs/README.md promises for a libdemo variant, on a
/// freshly loaded private copy.
fn exercise_demo(variant: &str) {
    let (_dir, path) = fresh_copy(variant);
    let lib = open(&path);
    assert_eq!(lib.soname(), Some(variant));
    let base = lib.base_address();
    let span = lib.objects()[0].size;
    let inside = |addr: u64| addr >= base && addr < base + span;

    // Plain calls: integer, double, float, i32 and u32 returns.
    let add: FnI64I64 = sym(&lib, "add");
    assert_eq!(add(2, 3), 5);
    assert_eq!(add(-7, 3), -4);
    let scale: extern "C" fn(f64, f64) -> f64 = sym(&lib, "scale");
    assert_eq!(scale(1.5, 4.0), 6.0);
    let half: extern "C" fn(f32) -> f32 = sym(&lib, "half");
    assert_eq!(half(3.0), 1.5);
    let negate: extern "C" fn(i32) -> i32 = sym(&lib, "negate_i32");
    assert_eq!(negate(5), -5);
    let u32_max: extern "C" fn() -> u32 = sym(&lib, "u32_max");
    assert_eq!(u32_max(), u32::MAX);
    let greeting: FnVoidStr = sym(&lib, "greeting");
    assert_eq!(cstr(greeting()), "hello from libdemo");
    assert!(
        inside(greeting() as u64),
        "greeting's string lies in the library"
    );

    // 6 integer + 8 double arguments, interleaved: 1..14 gives the sum of
    // squares, 1015; distinct awkward values make any misplaced register show.
    let mix: Mix = sym(&lib, "mix");
    assert_eq!(
        mix(
            1, 2.0, 3, 4.0, 5, 6.0, 7, 8.0, 9, 10.0, 11, 12.0, 13.0, 14.0
        ),
        1015.0
    );
    let ints = [3, -7, 11, 13, -17, 19];
    let dbls = [0.5, 1.25, -2.5, 0.125, 3.5, -0.75, 2.25, -1.5];
    assert_eq!(
        mix(
            ints[0], dbls[0], ints[1], dbls[1], ints[2], dbls[2], ints[3], dbls[3], ints[4],
            dbls[4], ints[5], dbls[5], dbls[6], dbls[7]
        ),
        mix_reference(ints, dbls)
    );

    // .data: initialised to 41, written by the library.
    let bump: FnVoidI64 = sym(&lib, "counter_bump");
    assert_eq!(bump(), 42);
    assert_eq!(bump(), 43);

    // Pointer tables in .data.rel.ro (RELATIVE or DT_RELR; R_X86_64_64 for add).
    let word: FnI64Str = sym(&lib, "demo_word");
    for (i, w) in ["alpha", "beta", "gamma", "delta"].iter().enumerate() {
        let p = word(i as i64);
        assert!(
            inside(p as u64),
            "demo_word({i}) was relocated by the load bias"
        );
        assert_eq!(cstr(p), *w);
    }
    assert!(word(4).is_null());
    let apply: extern "C" fn(i64, i64, i64) -> i64 = sym(&lib, "demo_apply");
    assert_eq!(apply(0, 7, 5), 12, "demo_ops[0] = add (R_X86_64_64)");
    assert_eq!(apply(1, 7, 5), 2, "demo_ops[1] = sub_fn (relative)");
    assert_eq!(apply(2, 7, 5), 35, "demo_ops[2] = mul_fn (relative)");
    assert_eq!(apply(3, 7, 5), 0);
    let ops: *const u64 = sym(&lib, "demo_ops");
    let add_addr: u64 = sym::<usize>(&lib, "add") as u64;
    // SAFETY: demo_ops is an array of three function pointers in RELRO.
    let ops0 = unsafe { ops.read() };
    assert_eq!(ops0, add_addr, "the R_X86_64_64 slot holds add's address");

    // .bss: zero after load (including the tail of the last file page), and
    // writable on both sides of the file/anonymous boundary.
    let bss_sum: FnVoidI64 = sym(&lib, "bss_sum");
    assert_eq!(bss_sum(), 0, ".bss must be zero after load");
    let poke: extern "C" fn(i64, u8) = sym(&lib, "bss_poke");
    poke(0, 5);
    poke(12345, 7);
    poke((1 << 20) - 1, 200);
    assert_eq!(bss_sum(), 212);
    let bss: *const u8 = sym(&lib, "demo_big_bss");
    // SAFETY: demo_big_bss is a 1 MiB array.
    assert_eq!(unsafe { bss.add(12345).read() }, 7);

    // Bound from the host libc: snprintf (JUMP_SLOT), strlen (an IFUNC in
    // glibc, bound through the host).
    let format: FnI64Str = sym(&lib, "demo_format");
    assert_eq!(cstr(format(-42)), "n=-42");
    let strlen: extern "C" fn(*const c_char) -> usize = sym(&lib, "demo_strlen");
    let s = CString::new("hello, mmld").unwrap();
    assert_eq!(strlen(s.as_ptr()), 11);

    // Weak undefined reference resolves to 0 instead of failing the load.
    let has_weak: FnVoidI32 = sym(&lib, "demo_has_weak");
    assert_eq!(has_weak(), 0);

    // A data object, read through its address.
    let data: *const i64 = sym(&lib, "demo_data_value");
    // SAFETY: demo_data_value is a long.
    assert_eq!(unsafe { data.read() }, 7);
    let info = lib.symbol_info("demo_data_value").unwrap();
    assert_eq!(info.kind, SymbolKind::Object);
    assert!(!info.in_code);
    let info = lib.symbol_info("add").unwrap();
    assert_eq!(info.kind, SymbolKind::Function);
    assert!(info.in_code);
    assert_eq!(info.address, add_addr);
}

#[test]
fn demo_default_variant_exports_behave() {
    exercise_demo("libdemo.so");
}

#[test]
fn demo_relr_variant_exports_behave() {
    // The fixture really has DT_RELR and no RELATIVE entries left.
    let dynamic = readelf(&["-dW"], &testlib("libdemo_relr.so"));
    assert!(dynamic.contains("(RELR)"), "{dynamic}");
    exercise_demo("libdemo_relr.so");
}

#[test]
fn demo_sysv_variant_exports_behave() {
    // The fixture really has only DT_HASH, so lookups use the SysV table.
    let dynamic = readelf(&["-dW"], &testlib("libdemo_sysv.so"));
    assert!(dynamic.contains("(HASH)"), "{dynamic}");
    assert!(!dynamic.contains("GNU_HASH"), "{dynamic}");
    exercise_demo("libdemo_sysv.so");
}

#[test]
fn missing_symbols_are_not_found_in_every_hash_flavour() {
    for variant in DEMO_VARIANTS {
        let lib = open(&testlib(variant));
        for name in ["no_such_symbol", "ad", "addd", "sub_fn", "demo_legacy_init"] {
            // SAFETY: never called.
            let err = unsafe { lib.get::<FnVoidI64>(name) }.unwrap_err();
            assert!(
                matches!(err.kind(), ErrorKind::SymbolNotFound { name: n, .. } if n == name),
                "{variant}: {name}: {err}"
            );
            assert_eq!(err.stage(), Stage::Lookup);
            assert!(err.to_string().contains(name), "{err}");
        }
    }
}

// ---------------------------------------------------------------------------
// Relocation types: behaviour, and what the loader reports it processed.

#[test]
fn relocation_counts_match_readelf_for_every_test_library() {
    for name in [
        "libdemo.so",
        "libdemo_relr.so",
        "libdemo_sysv.so",
        "libversioned.so",
        "libifunc.so",
    ] {
        let path = testlib(name);
        let lib = open(&path);
        let obj = &lib.objects()[0];
        assert_eq!(
            reloc_map(&lib),
            readelf_reloc_counts(&path),
            "{name}: relocations processed vs readelf -rW"
        );
        assert_eq!(
            obj.relr_addresses,
            readelf_relr_count(&path),
            "{name}: DT_RELR addresses"
        );
    }
}

#[test]
fn relative_64_glob_dat_and_jump_slot_are_processed_and_correct() {
    let path = testlib("libdemo.so");
    let lib = open(&path);
    let counts = reloc_map(&lib);
    for t in [
        "R_X86_64_RELATIVE",
        "R_X86_64_64",
        "R_X86_64_GLOB_DAT",
        "R_X86_64_JUMP_SLOT",
    ] {
        assert!(
            counts.get(t).copied().unwrap_or(0) > 0,
            "{t} not processed: {counts:?}"
        );
    }
    let bias = lib.load_bias();
    // SAFETY: reads of 8-byte slots the loader has written (GOT, RELRO).
    let slot = |offset: u64| unsafe { ((bias + offset) as *const u64).read_unaligned() };
    let add_addr = sym::<usize>(&lib, "add") as u64;
    // Slots whose value was checked, by type: none of the four may be skipped.
    let mut checked: BTreeMap<String, usize> = BTreeMap::new();
    for row in readelf_relocations(&path) {
        let value = slot(row.offset);
        let symbol = row.symbol.as_deref().unwrap_or("");
        *checked.entry(row.rtype.clone()).or_default() += 1;
        match row.rtype.as_str() {
            "R_X86_64_64" | "R_X86_64_GLOB_DAT" if symbol == "add" => {
                assert_eq!(value, add_addr)
            }
            "R_X86_64_GLOB_DAT" if symbol.starts_with("demo_") && symbol != "demo_missing_weak" => {
                let want = sym::<usize>(&lib, symbol) as u64;
                assert_eq!(value, want, "GLOB_DAT {symbol}");
            }
            "R_X86_64_GLOB_DAT" if symbol == "demo_missing_weak" => {
                assert_eq!(value, 0, "a weak undefined reference binds to 0")
            }
            "R_X86_64_JUMP_SLOT" => {
                // Host libc functions: the slot holds what glibc's dlsym gives.
                let c = CString::new(symbol).unwrap();
                // SAFETY: plain dlsym in the global scope.
                let host = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) } as u64;
                assert_ne!(host, 0, "host has {symbol}");
                assert_eq!(
                    value, host,
                    "JUMP_SLOT {symbol} bound eagerly to the host's"
                );
            }
            "R_X86_64_RELATIVE" => {
                assert_eq!(
                    value,
                    bias.wrapping_add(row.addend as u64),
                    "RELATIVE at {:#x}",
                    row.offset
                );
            }
            _ => {
                // Toolchain leftovers (_ITM_*, __gmon_start__, __cxa_finalize).
                *checked.entry(row.rtype.clone()).or_default() -= 1;
            }
        }
    }
    for t in [
        "R_X86_64_RELATIVE",
        "R_X86_64_64",
        "R_X86_64_GLOB_DAT",
        "R_X86_64_JUMP_SLOT",
    ] {
        assert!(
            checked.get(t).copied().unwrap_or(0) > 0,
            "no {t} slot checked"
        );
    }
    // Behaviour that needs each type.
    let word: FnI64Str = sym(&lib, "demo_word");
    assert_eq!(cstr(word(2)), "gamma");
    let apply: extern "C" fn(i64, i64, i64) -> i64 = sym(&lib, "demo_apply");
    assert_eq!(apply(0, 40, 2), 42);
    let format: FnI64Str = sym(&lib, "demo_format");
    assert_eq!(cstr(format(7)), "n=7");
}

#[test]
fn dt_relr_replaces_relative_relocations() {
    let relr = testlib("libdemo_relr.so");
    let plain = testlib("libdemo.so");
    let relative_in_plain = readelf_reloc_counts(&plain)["R_X86_64_RELATIVE"];
    let lib = open(&relr);
    let obj = &lib.objects()[0];
    assert!(obj.relr_addresses > 0);
    assert_eq!(
        obj.relr_addresses, relative_in_plain,
        "the same code has as many packed relative relocations as RELATIVE entries"
    );
    assert!(!reloc_map(&lib).contains_key("R_X86_64_RELATIVE"));
    // Every address readelf decodes holds bias + its link-time value.
    let text = readelf(&["-rW"], &relr);
    let addrs: Vec<u64> = text
        .lines()
        .skip_while(|l| !l.contains(".relr.dyn"))
        .skip(2)
        .map_while(|l| u64::from_str_radix(l.trim(), 16).ok())
        .collect();
    assert_eq!(addrs.len(), obj.relr_addresses);
    let bytes = std::fs::read(&relr).unwrap();
    let elf = goblin::elf::Elf::parse(&bytes).unwrap();
    let bias = lib.load_bias();
    for a in addrs {
        let ph = elf
            .program_headers
            .iter()
            .find(|p| p.p_type == PT_LOAD && a >= p.p_vaddr && a + 8 <= p.p_vaddr + p.p_filesz)
            .unwrap();
        let off = (a - ph.p_vaddr + ph.p_offset) as usize;
        let link_time = u64::from_le_bytes(bytes[off..off + 8].try_into().unwrap());
        // SAFETY: the address lies in the library's RELRO, which is readable.
        let now = unsafe { ((bias + a) as *const u64).read_unaligned() };
        assert_eq!(now, bias + link_time, "DT_RELR slot {a:#x}");
    }
    let word: FnI64Str = sym(&lib, "demo_word");
    assert_eq!(cstr(word(3)), "delta");
}

#[test]
fn ifunc_through_jump_slot_r64_and_irelative() {
    let (_dir, path) = fresh_copy("libifunc.so");
    let lib = open(&path);
    let obj = lib.objects()[0].clone();
    let counts = reloc_map(&lib);
    assert_eq!(counts.get("R_X86_64_IRELATIVE"), Some(&1), "{counts:?}");
    assert!(counts.contains_key("R_X86_64_JUMP_SLOT"), "{counts:?}");
    // Relocations whose value comes from a resolver: IRELATIVE, and those
    // against an IFUNC symbol (readelf prints its value as `name()`).
    let rows = readelf_relocations(&path);
    let ifunc_rows = rows
        .iter()
        .filter(|r| {
            r.rtype == "R_X86_64_IRELATIVE" || r.value.as_deref().is_some_and(|v| v.ends_with("()"))
        })
        .count();
    assert!(ifunc_rows >= 3, "fixture: JUMP_SLOT, R_64 and IRELATIVE");
    assert_eq!(
        obj.ifunc_calls, ifunc_rows,
        "one resolver call per IFUNC relocation"
    );
    // The library counted its resolver runs: exactly the loader's calls so
    // far (no lookup of an IFUNC symbol has happened yet).
    let resolver_calls: FnVoidI64 = sym(&lib, "ifunc_resolver_calls");
    assert_eq!(resolver_calls(), obj.ifunc_calls as i64);

    let call_value: FnVoidI64 = sym(&lib, "call_ifunc_value");
    assert_eq!(call_value(), 42, "JUMP_SLOT against an IFUNC");
    let call_ptr: FnVoidI64 = sym(&lib, "call_ifunc_ptr");
    assert_eq!(call_ptr(), 42, "R_X86_64_64 against an IFUNC");
    let call_local: FnVoidI64 = sym(&lib, "call_local_ifunc");
    assert_eq!(call_local(), 42, "R_X86_64_IRELATIVE");

    // get() returns the implementation, not the resolver.
    let value: FnVoidI64 = sym(&lib, "ifunc_value");
    assert_eq!(value(), 42);
    let info = lib.symbol_info("ifunc_value").unwrap();
    assert_eq!(info.kind, SymbolKind::IndirectFunction);
    assert_eq!(info.address, value as usize as u64);
    // The JUMP_SLOT and the R_64 slot hold that same implementation, not
    // the resolver's address (the symbol's st_value).
    let bytes = std::fs::read(&path).unwrap();
    let elf = goblin::elf::Elf::parse(&bytes).unwrap();
    let st_value = elf
        .dynsyms
        .iter()
        .find(|s| elf.dynstrtab.get_at(s.st_name) == Some("ifunc_value"))
        .unwrap()
        .st_value;
    let resolver = lib.load_bias() + st_value;
    assert_ne!(info.address, resolver);
    for r in rows
        .iter()
        .filter(|r| r.symbol.as_deref() == Some("ifunc_value"))
    {
        // SAFETY: GOT / .data slots the loader wrote.
        let slot = unsafe { ((lib.load_bias() + r.offset) as *const u64).read_unaligned() };
        assert_eq!(slot, info.address, "{} slot", r.rtype);
    }
    let ptr: *const u64 = sym(&lib, "ifunc_ptr");
    // SAFETY: ifunc_ptr is a function pointer variable.
    assert_eq!(unsafe { ptr.read() }, info.address);
}

/// An IFUNC reached through `R_X86_64_GLOB_DAT` (taking its address) and
/// `R_X86_64_JUMP_SLOT` (calling it): none of the fixtures has a GLOB_DAT
/// against an IFUNC of its own, so build one.
#[test]
fn ifunc_through_glob_dat() {
    let dir = tempfile::tempdir().unwrap();
    let src = r#"
static long impl_42(void) { return 42; }
static long impl_wrong(void) { return -1; }
static volatile int pick_wrong;
static long (*resolve_ifn(void))(void) { return pick_wrong ? impl_wrong : impl_42; }
long ifn(void) __attribute__((ifunc("resolve_ifn")));
long (*ifn_address(void))(void) { return ifn; }
long call_ifn(void) { return ifn(); }
"#;
    let path = build_c_library(dir.path(), "libglobdat_ifunc.so", src, &[]);
    let rows = readelf_relocations(&path);
    for t in ["R_X86_64_GLOB_DAT", "R_X86_64_JUMP_SLOT"] {
        assert!(
            rows.iter()
                .any(|r| r.rtype == t && r.value.as_deref() == Some("ifn()")),
            "fixture must have {t} against the IFUNC: {rows:?}"
        );
    }
    let lib = open(&path);
    assert_eq!(lib.objects()[0].ifunc_calls, 2);
    let address: extern "C" fn() -> FnVoidI64 = sym(&lib, "ifn_address");
    let f = address();
    assert_eq!(f(), 42, "GLOB_DAT holds the resolved implementation");
    let call: FnVoidI64 = sym(&lib, "call_ifn");
    assert_eq!(call(), 42);
    let direct: FnVoidI64 = sym(&lib, "ifn");
    assert_eq!(f as usize, direct as usize);
}

// ---------------------------------------------------------------------------
// Symbol versions.

#[test]
fn versioned_lookups() {
    let lib = open(&testlib("libversioned.so"));
    let default: FnVoidI32 = sym(&lib, "vfunc");
    assert_eq!(
        default(),
        2,
        "unversioned lookup takes the default VERS_2.0"
    );
    // SAFETY: the fixture's functions are `int f(void)`.
    unsafe {
        let v1 = lib.get_versioned::<FnVoidI32>("vfunc", "VERS_1.0").unwrap();
        assert_eq!(v1(), 1);
        let v2 = lib.get_versioned::<FnVoidI32>("vfunc", "VERS_2.0").unwrap();
        assert_eq!(v2(), 2);
        assert_ne!(*v1 as usize, *v2 as usize);

        let err = lib.get_versioned::<FnVoidI32>("vfunc", "NOPE").unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::SymbolNotFound { name, version: Some(v) } if name == "vfunc" && v == "NOPE"),
            "{err:?}"
        );
        assert!(err.to_string().contains("vfunc@NOPE"), "{err}");

        let err = lib.get::<FnVoidI32>("vfunc_v1").unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::SymbolNotFound { .. }),
            "{err:?}"
        );

        let only = lib.get::<FnVoidI32>("only_v1").unwrap();
        assert_eq!(only(), 10);
        let only = lib
            .get_versioned::<FnVoidI32>("only_v1", "VERS_1.0")
            .unwrap();
        assert_eq!(only(), 10);
        let err = lib
            .get_versioned::<FnVoidI32>("only_v1", "VERS_2.0")
            .unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::SymbolNotFound { .. }),
            "{err:?}"
        );
    }
    assert_eq!(
        lib.symbol_info("vfunc").unwrap().version.as_deref(),
        Some("VERS_2.0")
    );
    let call: FnVoidI32 = sym(&lib, "call_vfunc");
    assert_eq!(
        call(),
        2,
        "the JUMP_SLOT tagged VERS_2.0 binds to vfunc@@VERS_2.0"
    );
    let parse: extern "C" fn(*const c_char) -> i64 = sym(&lib, "parse_num");
    let s = CString::new("0x1f").unwrap();
    assert_eq!(parse(s.as_ptr()), 31, "strtol@GLIBC_2.2.5 from the host");
}

/// A reference to the non-default `vfunc@VERS_1.0` from another library
/// must bind to that version (returns 1), an unversioned-looking call to
/// the default (returns 2). Within libversioned itself both lookups would
/// give 2 even to a loader that ignores versions on references.
#[test]
fn versioned_reference_from_a_dependent_binds_to_its_exact_version() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        testlib("libversioned.so"),
        dir.path().join("libversioned.so"),
    )
    .unwrap();
    let src = r#"
extern int vfunc_old(void);
__asm__(".symver vfunc_old, vfunc@VERS_1.0");
extern int vfunc(void);
int call_old(void) { return vfunc_old(); }
int call_default(void) { return vfunc(); }
"#;
    let link_dir = format!("-L{}", dir.path().display());
    let path = build_c_library(
        dir.path(),
        "libvconsumer.so",
        src,
        &[&link_dir, "-lversioned", "-Wl,-rpath,$ORIGIN"],
    );
    let rows = readelf_relocations(&path);
    assert!(
        rows.iter()
            .any(|r| r.rtype == "R_X86_64_JUMP_SLOT" && r.value.is_some()),
        "{rows:?}"
    );
    let versions = readelf(&["-rW"], &path);
    assert!(versions.contains("vfunc@VERS_1.0"), "{versions}");
    assert!(versions.contains("vfunc@VERS_2.0"), "{versions}");

    let lib = open(&path);
    let names: Vec<String> = lib.objects().iter().map(|o| o.name.clone()).collect();
    assert_eq!(names, ["libvconsumer.so", "libversioned.so"]);
    let old: FnVoidI32 = sym(&lib, "call_old");
    assert_eq!(
        old(),
        1,
        "vfunc@VERS_1.0 (hidden, non-default) bound by version"
    );
    let new: FnVoidI32 = sym(&lib, "call_default");
    assert_eq!(new(), 2, "vfunc@VERS_2.0");
}

// ---------------------------------------------------------------------------
// Constructors, destructors, reuse and reference counts.

#[test]
fn constructors_and_destructors_run_in_glibc_order_once() {
    let (dir, path) = fresh_copy("libdemo.so");
    let log = dir.path().join("fini.log");
    let symlink = dir.path().join("via-symlink.so");
    std::os::unix::fs::symlink(&path, &symlink).unwrap();

    let first = open(&path);
    let order: FnVoidStr = sym(&first, "demo_order_log");
    let init_calls: FnVoidI32 = sym(&first, "demo_init_calls");
    assert_eq!(cstr(order()), "init,ctor1,ctor2");
    assert_eq!(init_calls(), 1);

    // The same file again (by path, and through a symlink): one object.
    let second = open(&path);
    let third = open(&symlink);
    assert_eq!(second.base_address(), first.base_address());
    assert_eq!(third.base_address(), first.base_address());
    let order2: FnVoidStr = sym(&second, "demo_order_log");
    assert_eq!(order2 as usize, order as usize);
    assert_eq!(cstr(order()), "init,ctor1,ctor2", "constructors ran once");
    assert_eq!(init_calls(), 1);
    let bump: FnVoidI64 = sym(&first, "counter_bump");
    assert_eq!(bump(), 42);
    let bump2: FnVoidI64 = sym(&third, "counter_bump");
    assert_eq!(bump2(), 43, "shared state: one object");

    let set_log: extern "C" fn(*const c_char) = sym(&second, "demo_set_fini_log");
    let c_log = CString::new(log.to_str().unwrap()).unwrap();
    set_log(c_log.as_ptr());

    drop(first);
    assert!(!log.exists(), "destructors ran while handles remain");
    drop(third);
    assert!(!log.exists(), "destructors ran while a handle remains");
    drop(second);
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "dtor2\ndtor1\ndemo fini\nfini\n",
        "DT_FINI_ARRAY in reverse, then DT_FINI, once"
    );

    // A new open after the last close is a fresh load: constructors again,
    // .data back to its file contents.
    let again = open(&path);
    let order: FnVoidStr = sym(&again, "demo_order_log");
    assert_eq!(cstr(order()), "init,ctor1,ctor2");
    let bump: FnVoidI64 = sym(&again, "counter_bump");
    assert_eq!(bump(), 42);
}

#[test]
fn data_writes_are_private_to_the_process() {
    let (_dir, path) = fresh_copy("libdemo.so");
    let before = std::fs::read(&path).unwrap();
    {
        let lib = open(&path);
        let bump: FnVoidI64 = sym(&lib, "counter_bump");
        assert_eq!(bump(), 42);
        assert_eq!(bump(), 43);
        let poke: extern "C" fn(i64, u8) = sym(&lib, "bss_poke");
        poke(0, 1);
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "MAP_PRIVATE: writes never reach the file"
    );
}

#[test]
fn separate_files_are_separate_objects() {
    let (_d1, a) = fresh_copy("libdemo.so");
    let (_d2, b) = fresh_copy("libdemo.so");
    let la = open(&a);
    let lb = open(&b);
    assert_ne!(la.base_address(), lb.base_address());
    let bump_a: FnVoidI64 = sym(&la, "counter_bump");
    let bump_b: FnVoidI64 = sym(&lb, "counter_bump");
    assert_eq!(bump_a(), 42);
    assert_eq!(bump_a(), 43);
    assert_eq!(bump_b(), 42, "each copy has its own .data");
}

#[test]
fn concurrent_opens_of_one_file_share_one_object() {
    let (_dir, path) = fresh_copy("libdemo.so");
    const THREADS: usize = 4;
    let all_open = std::sync::Barrier::new(THREADS);
    let results: Vec<(u64, i64, String, i32)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let (path, all_open) = (&path, &all_open);
                s.spawn(move || {
                    let lib = open(path);
                    // Every thread holds its handle until all have opened.
                    all_open.wait();
                    let add: FnI64I64 = sym(&lib, "add");
                    let order: FnVoidStr = sym(&lib, "demo_order_log");
                    let init_calls: FnVoidI32 = sym(&lib, "demo_init_calls");
                    let out = (lib.base_address(), add(20, 22), cstr(order()), init_calls());
                    all_open.wait();
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (base, sum, order, init_calls) in &results {
        assert_eq!(*base, results[0].0, "one object for one file");
        assert_eq!(*sum, 42);
        assert_eq!(order, "init,ctor1,ctor2", "constructors ran once");
        assert_eq!(*init_calls, 1);
    }
}

// ---------------------------------------------------------------------------
// libz: a real distribution library, mapped by mmld.

#[test]
fn libz_round_trip_through_compress_and_uncompress() {
    let path = Path::new(LIBZ);
    let lib = open(path);
    let obj = lib.objects()[0].clone();
    assert_eq!(obj.name, "libz.so.1");
    assert_eq!(obj.base, lib.base_address());
    assert!(lib.host_dependencies().iter().any(|h| h == "libc.so.6"));

    // Whether or not the host process has its own libz, the library opened
    // by path is mmld's: its functions lie in mmld's span, and
    // /proc/self/maps shows libz's text mapped there.
    // SAFETY: RTLD_NOLOAD only asks whether the host has it.
    let host_handle =
        unsafe { libc::dlopen(c"libz.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    let compress: extern "C" fn(*mut u8, *mut u64, *const u8, u64) -> i32 = sym(&lib, "compress");
    let uncompress: extern "C" fn(*mut u8, *mut u64, *const u8, u64) -> i32 =
        sym(&lib, "uncompress");
    let bound: extern "C" fn(u64) -> u64 = sym(&lib, "compressBound");
    for f in [compress as usize, uncompress as usize, bound as usize] {
        let f = f as u64;
        assert!(
            f >= obj.base && f < obj.base + obj.size,
            "{f:#x} in mmld's libz"
        );
    }
    if !host_handle.is_null() {
        // SAFETY: the host's own libz; we only compare addresses.
        let host_compress = unsafe { libc::dlsym(host_handle, c"compress".as_ptr()) } as usize;
        assert_ne!(host_compress, compress as usize, "not the host's copy");
        // SAFETY: balances the RTLD_NOLOAD dlopen.
        unsafe { libc::dlclose(host_handle) };
    }
    let real = std::fs::canonicalize(path).unwrap();
    let maps = read_maps();
    let text = maps_overlapping(&maps, obj.base, obj.base + obj.size);
    assert!(
        text.iter()
            .any(|m| m.perms == "r-xp" && Path::new(&m.path) == real),
        "libz text mapped by mmld: {text:?}"
    );

    let input: Vec<u8> = (0..20_000u32)
        .flat_map(|i| format!("line {} of mmld's zlib test\n", i % 97).into_bytes())
        .collect();
    let mut packed = vec![0u8; bound(input.len() as u64) as usize];
    let mut packed_len = packed.len() as u64;
    assert_eq!(
        compress(
            packed.as_mut_ptr(),
            &mut packed_len,
            input.as_ptr(),
            input.len() as u64
        ),
        0
    );
    assert!(
        (packed_len as usize) < input.len() / 10,
        "repetitive text compresses"
    );
    let mut output = vec![0u8; input.len()];
    let mut out_len = output.len() as u64;
    assert_eq!(
        uncompress(
            output.as_mut_ptr(),
            &mut out_len,
            packed.as_ptr(),
            packed_len
        ),
        0
    );
    assert_eq!(out_len as usize, input.len());
    assert_eq!(output, input);

    let version: FnVoidStr = sym(&lib, "zlibVersion");
    assert_eq!(cstr(version()), zlib_version_from_file_name());
}

// ---------------------------------------------------------------------------
// Memory layout in /proc/self/maps.

#[derive(Debug, Default)]
struct LayoutSummary {
    text_pages: usize,
    readonly_file_pages: usize,
    relro_pages: usize,
    data_file_pages: usize,
    bss_anon_pages: usize,
    gap_pages: usize,
}

/// Check every page of `lib`'s span against what the ELF program headers of
/// `file` (parsed by goblin, not by mmld) say it must be.
fn check_layout(file: &Path, lib: &Library) -> LayoutSummary {
    let bytes = std::fs::read(file).unwrap();
    let elf = goblin::elf::Elf::parse(&bytes).unwrap();
    let loads: Vec<_> = elf
        .program_headers
        .iter()
        .filter(|p| p.p_type == PT_LOAD && p.p_memsz > 0)
        .collect();
    let relro = elf
        .program_headers
        .iter()
        .find(|p| p.p_type == PT_GNU_RELRO)
        .map(|p| (page_down(p.p_vaddr), page_down(p.p_vaddr + p.p_memsz)));
    let min = page_down(loads[0].p_vaddr);
    let max = page_up(loads.last().unwrap().p_vaddr + loads.last().unwrap().p_memsz);
    let max_align = loads.iter().map(|p| p.p_align).max().unwrap().max(PAGE);

    let bias = lib.load_bias();
    let base = lib.base_address();
    let obj = &lib.objects()[0];
    assert_eq!(base, bias.wrapping_add(min));
    assert_eq!(obj.base, base);
    assert_eq!(obj.size, max - min, "span from the program headers");
    assert_eq!(base % max_align, 0, "base honours the largest p_align");
    assert_eq!(
        obj.relro,
        relro.map(|(s, e)| (bias + s, bias + e)),
        "sealed RELRO pages"
    );

    let real = std::fs::canonicalize(file).unwrap();
    let inode = std::fs::metadata(&real).unwrap().ino();
    let maps = read_maps();
    let mut summary = LayoutSummary::default();
    let mut problems = Vec::new();
    for page in (min..max).step_by(PAGE as usize) {
        let addr = bias + page;
        let Some(line) = maps.iter().find(|m| m.start <= addr && addr < m.end) else {
            problems.push(format!("{page:#x}: not mapped"));
            continue;
        };
        let seg = loads
            .iter()
            .find(|p| page_down(p.p_vaddr) <= page && page < page_up(p.p_vaddr + p.p_memsz));
        // (perms, Some(file offset) for file-backed pages)
        let (perms, file_offset) = match seg {
            None => {
                summary.gap_pages += 1;
                ("---p".to_string(), None)
            }
            Some(p) => {
                let in_relro = relro.is_some_and(|(s, e)| s <= page && page < e);
                let file_end = if p.p_filesz > 0 {
                    page_up(p.p_vaddr + p.p_filesz)
                } else {
                    page_down(p.p_vaddr)
                };
                let flags = if in_relro { PF_R } else { p.p_flags };
                let perms = format!(
                    "{}{}{}p",
                    if flags & PF_R != 0 { 'r' } else { '-' },
                    if flags & PF_W != 0 { 'w' } else { '-' },
                    if flags & PF_X != 0 { 'x' } else { '-' },
                );
                let file_backed = page < file_end;
                match (file_backed, in_relro, perms.as_str()) {
                    (true, true, _) => summary.relro_pages += 1,
                    (true, false, "r-xp") => summary.text_pages += 1,
                    (true, false, "r--p") => summary.readonly_file_pages += 1,
                    (true, false, "rw-p") => summary.data_file_pages += 1,
                    (false, false, "rw-p") => summary.bss_anon_pages += 1,
                    _ => {}
                }
                let off = page_down(p.p_offset) + (page - page_down(p.p_vaddr));
                (perms, file_backed.then_some(off))
            }
        };
        if line.perms != perms {
            problems.push(format!("{page:#x}: perms {} expected {perms}", line.perms));
        }
        match file_offset {
            Some(off) => {
                let actual = line.offset + (addr - line.start);
                if Path::new(&line.path) != real || line.inode != inode || actual != off {
                    problems.push(format!(
                        "{page:#x}: expected {} at offset {off:#x}, found {:?} inode {} offset {actual:#x}",
                        real.display(),
                        line.path,
                        line.inode
                    ));
                }
            }
            None => {
                if line.inode != 0 || !line.path.is_empty() {
                    problems.push(format!(
                        "{page:#x}: expected anonymous, found {:?}",
                        line.path
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} pages differ from the program headers:\n{}",
        problems.len(),
        problems.join("\n")
    );
    summary
}

/// Drop `lib` and assert nothing at all is mapped in its former span.
/// Must run in a child process: there, no other thread can map memory
/// into the freed range.
fn drop_and_check_span_gone(lib: Library) {
    let (lo, hi) = (
        lib.base_address(),
        lib.base_address() + lib.objects()[0].size,
    );
    // Allocate before dropping, so reading the maps file cannot put a new
    // heap mapping into the range just freed.
    let mut text = String::with_capacity(1 << 22);
    drop(lib);
    std::fs::File::open("/proc/self/maps")
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let left = maps_overlapping(&parse_maps(&text), lo, hi);
    assert!(left.is_empty(), "still mapped after drop: {left:?}");
}

#[test]
fn maps_layout_of_libdemo() {
    if !run_in_child("maps_layout_of_libdemo") {
        return;
    }
    let path = testlib("libdemo.so");
    let lib = open(&path);
    let bump: FnVoidI64 = sym(&lib, "counter_bump");
    assert_eq!(
        bump(),
        42,
        "a written data page stays private and file-backed"
    );
    let s = check_layout(&path, &lib);
    println!("{s:?}");
    // The fixture has each kind of page, so none of the checks is vacuous.
    assert!(s.text_pages > 0, "{s:?}");
    assert!(s.readonly_file_pages > 0, "{s:?}");
    assert!(s.relro_pages > 0, "{s:?}");
    assert!(s.data_file_pages > 0, "{s:?}");
    assert!(
        s.bss_anon_pages >= 256,
        "1 MiB of .bss beyond the file: {s:?}"
    );
    drop_and_check_span_gone(lib);
}

#[test]
fn maps_layout_with_gaps_between_segments() {
    if !run_in_child("maps_layout_with_gaps_between_segments") {
        return;
    }
    // libdemo's segments are page-contiguous; linked for 64 KiB pages, the
    // same code has gaps between segments that must stay PROT_NONE, and a
    // p_align the base address must honour.
    let dir = tempfile::tempdir().unwrap();
    let path = build_c_files(
        dir.path(),
        "libdemo_64k.so",
        &[testlib("demo.c")],
        &[
            "-Wl,-init,demo_legacy_init",
            "-Wl,-fini,demo_legacy_fini",
            "-Wl,-z,max-page-size=0x10000",
        ],
    );
    let lib = open(&path);
    let s = check_layout(&path, &lib);
    println!("{s:?}");
    assert!(s.gap_pages > 0, "fixture must have gaps: {s:?}");
    assert!(
        s.text_pages > 0 && s.relro_pages > 0 && s.bss_anon_pages > 0,
        "{s:?}"
    );
    let add: FnI64I64 = sym(&lib, "add");
    assert_eq!(add(40, 2), 42);
    let bss_sum: FnVoidI64 = sym(&lib, "bss_sum");
    assert_eq!(bss_sum(), 0);
    drop_and_check_span_gone(lib);
}

#[test]
fn copy_strategy_maps_anonymous_memory_with_the_same_protections() {
    // OpenOptions::copy_segments reads segments into anonymous memory; the
    // library must behave the same, and no page may be a file mapping.
    let (_dir, path) = fresh_copy("libdemo.so");
    // SAFETY: our own fixture.
    let lib = unsafe { mmld::OpenOptions::new().copy_segments(true).open(&path) }.unwrap();
    let add: FnI64I64 = sym(&lib, "add");
    assert_eq!(add(1, 2), 3);
    let bss_sum: FnVoidI64 = sym(&lib, "bss_sum");
    assert_eq!(bss_sum(), 0);
    let obj = &lib.objects()[0];
    let maps = read_maps();
    let lines = maps_overlapping(&maps, obj.base, obj.base + obj.size);
    assert!(!lines.is_empty());
    for l in &lines {
        assert_eq!(l.inode, 0, "copied, not file-mapped: {l:?}");
    }
    assert!(lines.iter().any(|l| l.perms == "r-xp"), "{lines:?}");
}

// ---------------------------------------------------------------------------
// Load failures.

#[test]
fn unresolved_symbol_fails_the_load_and_leaves_nothing_mapped() {
    let (_dir, path) = fresh_copy("libmissing.so");
    for _ in 0..2 {
        // SAFETY: the load must fail before any code runs.
        let err = unsafe { Library::open(&path) }.unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::UnresolvedSymbol { name, .. } if name == "mmld_no_such_function"),
            "{err:?}"
        );
        assert_eq!(err.stage(), Stage::Link);
        let msg = err.to_string();
        assert!(msg.contains("mmld_no_such_function"), "{msg}");
        assert!(msg.contains("libmissing.so"), "{msg}");
        let real = std::fs::canonicalize(&path).unwrap();
        let left: Vec<_> = read_maps()
            .into_iter()
            .filter(|m| Path::new(&m.path) == real)
            .collect();
        assert!(left.is_empty(), "failed load left mappings: {left:?}");
    }
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let path = testlib("does_not_exist.so");
    // SAFETY: nothing is loaded.
    let err = unsafe { Library::open(&path) }.unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("does_not_exist.so"), "{err}");
    assert_eq!(err.file(), path);
}

// ---------------------------------------------------------------------------
// READ rejections, on patched copies of libdemo.so.

fn rd16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn rd32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn rd64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
fn wr16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn wr32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn wr64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

// Program header field offsets (ELF64).
const P_TYPE: usize = 0;
const P_OFFSET: usize = 8;
const P_VADDR: usize = 16;
const P_FILESZ: usize = 32;
const P_MEMSZ: usize = 40;

/// File offset of program header `i`.
fn phdr(b: &[u8], i: usize) -> usize {
    assert_eq!(rd16(b, 0x36), 56, "e_phentsize");
    rd64(b, 0x20) as usize + 56 * i
}

/// File offsets of the PT_LOAD program headers, in table order.
fn loads(b: &[u8]) -> Vec<usize> {
    (0..rd16(b, 0x38) as usize)
        .map(|i| phdr(b, i))
        .filter(|&at| rd32(b, at + P_TYPE) == PT_LOAD)
        .collect()
}

/// File offset of the value of the dynamic entry `tag`.
fn dyn_value(b: &[u8], tag: u64) -> usize {
    let dynamic = (0..rd16(b, 0x38) as usize)
        .map(|i| phdr(b, i))
        .find(|&at| rd32(b, at + P_TYPE) == goblin::elf::program_header::PT_DYNAMIC)
        .unwrap();
    let (off, size) = (
        rd64(b, dynamic + P_OFFSET) as usize,
        rd64(b, dynamic + P_FILESZ) as usize,
    );
    (off..off + size)
        .step_by(16)
        .find(|&e| rd64(b, e) == tag)
        .map(|e| e + 8)
        .unwrap_or_else(|| panic!("no dynamic tag {tag}"))
}

type Patch = fn(&mut Vec<u8>);
type Expect = fn(&ErrorKind) -> bool;

fn read_rejections() -> Vec<(&'static str, Patch, Expect, &'static str)> {
    vec![
        (
            "not_elf",
            |b| b[..4].copy_from_slice(b"MZ\x90\0"),
            |k| matches!(k, ErrorKind::NotElf { magic } if magic == b"MZ\x90\0"),
            "not an ELF file",
        ),
        (
            "elf32",
            |b| b[4] = 1,
            |k| matches!(k, ErrorKind::Not64Bit { class: 1 }),
            "not ELF64",
        ),
        (
            "big_endian",
            |b| b[5] = 2,
            |k| matches!(k, ErrorKind::NotLittleEndian { data: 2 }),
            "not little-endian",
        ),
        (
            "wrong_machine",
            |b| wr16(b, 0x12, 3),
            |k| matches!(k, ErrorKind::WrongMachine { machine: 3, .. }),
            "is not x86_64",
        ),
        (
            "et_exec",
            |b| wr16(b, 0x10, 2),
            |k| matches!(k, ErrorKind::NotSharedObject { e_type: 2, .. }),
            "is not ET_DYN",
        ),
        (
            "et_rel",
            |b| wr16(b, 0x10, 1),
            |k| matches!(k, ErrorKind::NotSharedObject { e_type: 1, .. }),
            "is not ET_DYN",
        ),
        (
            "no_load",
            |b| {
                for at in loads(b) {
                    wr32(b, at + P_TYPE, 0); // PT_NULL
                }
            },
            |k| matches!(k, ErrorKind::NoLoadSegments),
            "no PT_LOAD",
        ),
        (
            "segment_out_of_file",
            |b| {
                let at = *loads(b).last().unwrap();
                let len = b.len() as u64;
                wr64(b, at + P_FILESZ, len);
                let memsz = rd64(b, at + P_MEMSZ).max(len);
                wr64(b, at + P_MEMSZ, memsz);
            },
            |k| matches!(k, ErrorKind::SegmentOutOfFile { .. }),
            "lies outside the file",
        ),
        (
            "overlapping_loads",
            |b| {
                let l = loads(b);
                // Grow the first segment into the second.
                let reach = rd64(b, l[1] + P_VADDR) - rd64(b, l[0] + P_VADDR) + 0x800;
                wr64(b, l[0] + P_MEMSZ, reach);
            },
            |k| matches!(k, ErrorKind::SegmentsOverlap { .. }),
            "overlaps or precedes",
        ),
        (
            "unsorted_loads",
            |b| {
                let l = loads(b);
                let (x, y) = (l[1], l[2]);
                let hx: Vec<u8> = b[x..x + 56].to_vec();
                b.copy_within(y..y + 56, x);
                b[y..y + 56].copy_from_slice(&hx);
            },
            |k| matches!(k, ErrorKind::SegmentsOverlap { .. }),
            "must be sorted",
        ),
        (
            "filesz_exceeds_memsz",
            |b| {
                let at = loads(b)[1];
                let memsz = rd64(b, at + P_MEMSZ);
                wr64(b, at + P_FILESZ, memsz + 1);
            },
            |k| matches!(k, ErrorKind::FileSizeExceedsMemSize { .. }),
            "is larger than p_memsz",
        ),
        (
            "misaligned_offset",
            |b| {
                let at = loads(b)[1];
                let off = rd64(b, at + P_OFFSET);
                wr64(b, at + P_OFFSET, off + 8);
            },
            |k| matches!(k, ErrorKind::MisalignedSegment { .. }),
            "differ modulo the page size",
        ),
        (
            "strtab_outside_image",
            |b| {
                let at = dyn_value(b, goblin::elf::dynamic::DT_STRTAB);
                wr64(b, at, 0x4000_0000);
            },
            |k| {
                matches!(
                    k,
                    ErrorKind::TableOutsideImage {
                        tag: "DT_STRTAB",
                        ..
                    }
                )
            },
            "DT_STRTAB points to",
        ),
        (
            "symtab_outside_image",
            |b| {
                let at = dyn_value(b, goblin::elf::dynamic::DT_SYMTAB);
                wr64(b, at, 0x4000_0000);
            },
            |k| {
                matches!(
                    k,
                    ErrorKind::TableOutsideImage {
                        tag: "DT_SYMTAB",
                        ..
                    }
                )
            },
            "DT_SYMTAB points to",
        ),
    ]
}

#[test]
fn read_rejects_each_malformed_file_with_its_own_error() {
    let original = std::fs::read(testlib("libdemo.so")).unwrap();
    // Control: the unpatched bytes are accepted, so each failure below is
    // caused by its patch alone.
    mmld::check_image(&original).expect("libdemo.so passes");
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (name, patch, expect, cause) in read_rejections() {
        let mut bytes = original.clone();
        patch(&mut bytes);
        assert_ne!(bytes, original, "{name}: patch changed nothing");

        // On bytes: READ refuses it before anything is mapped.
        match mmld::check_image(&bytes) {
            Ok(_) => failures.push(format!("{name}: check_image accepted it")),
            Err(e) if !expect(e.kind()) || e.stage() != Stage::Read => {
                failures.push(format!("{name}: check_image gave {e:?}"))
            }
            Err(_) => {}
        }

        // Through the public API, on a file.
        let file = dir.path().join(format!("{name}.so"));
        std::fs::write(&file, &bytes).unwrap();
        // SAFETY: every case must be refused before anything is mapped.
        match unsafe { Library::open(&file) } {
            Ok(_) => failures.push(format!("{name}: Library::open accepted it")),
            Err(err) => {
                let msg = err.to_string();
                if !expect(err.kind()) {
                    failures.push(format!("{name}: open gave {:?}", err.kind()));
                }
                if err.stage() != Stage::Read {
                    failures.push(format!("{name}: stage {:?}, not Read", err.stage()));
                }
                if !msg.contains(&format!("{name}.so")) || !msg.contains(cause) {
                    failures.push(format!(
                        "{name}: message {msg:?} must name the file and say {cause:?}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn truncated_and_empty_files_are_rejected() {
    let original = std::fs::read(testlib("libdemo.so")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, len) in [("empty", 0), ("short_header", 40), ("headers_only", 0x200)] {
        let file = dir.path().join(format!("{name}.so"));
        std::fs::write(&file, &original[..len]).unwrap();
        // SAFETY: must be refused.
        let err = unsafe { Library::open(&file) }.unwrap_err();
        assert_eq!(err.stage(), Stage::Read, "{name}: {err}");
        assert!(err.to_string().contains(&format!("{name}.so")), "{err}");
    }
}

// ---------------------------------------------------------------------------
// Symbol names and types.

#[test]
fn symbol_names_of_every_accepted_type() {
    let lib = open(&testlib("libdemo.so"));
    let expected = sym::<usize>(&lib, "add");
    let owned = String::from("add");
    let cowned = CString::new("add").unwrap();
    // SAFETY: all of these name `long add(long, long)`.
    let found: Vec<usize> = unsafe {
        vec![
            *lib.get::<usize>("add").unwrap(),
            *lib.get::<usize>(&b"add"[..]).unwrap(),
            *lib.get::<usize>(b"add").unwrap(),
            *lib.get::<usize>(c"add").unwrap(),
            *lib.get::<usize>("add\0").unwrap(),
            *lib.get::<usize>(&b"add\0"[..]).unwrap(),
            *lib.get::<usize>(&owned).unwrap(),
            *lib.get::<usize>(&cowned).unwrap(),
            *lib.get::<usize>(cowned.as_c_str()).unwrap(),
        ]
    };
    for f in found {
        assert_eq!(f, expected);
    }
    // SAFETY: must fail before any conversion.
    let err = unsafe { lib.get::<usize>("a\0dd") }.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::InvalidSymbolName { .. }),
        "{err:?}"
    );
    // SAFETY: as above.
    let err = unsafe { lib.get::<usize>(&b"add\0\0"[..]) }.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::InvalidSymbolName { .. }),
        "{err:?}"
    );
}

#[test]
fn wrong_size_type_is_a_size_mismatch() {
    let lib = open(&testlib("libdemo.so"));
    // SAFETY: the conversion must be refused.
    unsafe {
        let err = lib.get::<u32>("add").unwrap_err();
        assert!(
            matches!(
                err.kind(),
                ErrorKind::SymbolSizeMismatch {
                    requested: 4,
                    pointer: 8
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.stage(), Stage::Lookup);
        assert!(err.to_string().contains("libdemo.so"), "{err}");
        let err = lib.get::<[u64; 2]>("add").unwrap_err();
        assert!(
            matches!(
                err.kind(),
                ErrorKind::SymbolSizeMismatch { requested: 16, .. }
            ),
            "{err:?}"
        );
        let err = lib.get::<()>("demo_data_value").unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::SymbolSizeMismatch { .. }),
            "{err:?}"
        );
        // Pointer-sized types are fine.
        assert!(lib.get::<*const i64>("demo_data_value").is_ok());
        assert!(lib.get::<FnI64I64>("add").is_ok());
    }
}
