//! Compiles the C and C++ test libraries in `testlibs/` into
//! `testlibs/<name>.so`, for this repository's own tests, benches, examples
//! and the README's first command, and for nothing else.
//!
//! The libraries are fixtures for the loader's tests, not part of the loader,
//! so they are built next to their sources (where tests can find them by a
//! stable path) rather than in OUT_DIR. See testlibs/README.md for what each
//! one exercises.
//!
//! Must never: compile anything when mmld is built as somebody else's
//! dependency. A build script cannot ask cargo whether it is building the
//! primary package, so the switch is the environment variable
//! `MMLD_BUILD_TESTLIBS`, which the repository's `.cargo/config.toml` sets.
//! Cargo reads that file only when it runs inside this checkout (config is
//! discovered from the working directory up), never for a crate elsewhere
//! that depends on mmld by path, git or registry. `cargo install --path .`
//! run in the checkout does read it (cargo's rule for `--path`), so it
//! builds them too unless the environment says otherwise. Setting
//! `MMLD_BUILD_TESTLIBS=0` in the environment (which wins over `[env]`)
//! builds the crate here without a C compiler.

use std::env;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{self, Command};
use std::time::SystemTime;

/// Flags for every library. `-z now` and `-z relro` match what distributions
/// ship, so the loader is tested against the common case: full RELRO, no lazy
/// binding. `-g` keeps debug info after `.data`, which makes a loader that
/// forgets to zero the partial `.bss` page fail visibly.
const COMMON_FLAGS: &[&str] = &[
    "-shared",
    "-fPIC",
    "-O2",
    "-g",
    "-Wall",
    "-Wl,-z,now",
    "-Wl,-z,relro",
    "-Wl,--build-id",
];

struct TestLib {
    /// File name of the result, created in `testlibs/`.
    output: &'static str,
    /// Files passed to gcc as compilation inputs.
    sources: &'static [&'static str],
    /// Files that affect the result without being compilation inputs
    /// (version scripts, headers); they only count for staleness.
    extra_inputs: &'static [&'static str],
    /// Flags appended after `COMMON_FLAGS`; later flags win, which is what
    /// lets the variants override defaults such as the hash style.
    extra_flags: &'static [&'static str],
}

const TEST_LIBS: &[TestLib] = &[
    // -init/-fini point DT_INIT/DT_FINI at demo.c's own functions; by default
    // ld would use crti's `_init`/`_fini`, and the order log could not show
    // where DT_INIT/DT_FINI run relative to the init/fini arrays.
    TestLib {
        output: "libdemo.so",
        sources: &["demo.c"],
        extra_inputs: &[],
        extra_flags: &["-Wl,-init,demo_legacy_init", "-Wl,-fini,demo_legacy_fini"],
    },
    // Same code, relative relocations packed into DT_RELR instead of
    // R_X86_64_RELATIVE entries in DT_RELA.
    TestLib {
        output: "libdemo_relr.so",
        sources: &["demo.c"],
        extra_inputs: &[],
        extra_flags: &[
            "-Wl,-init,demo_legacy_init",
            "-Wl,-fini,demo_legacy_fini",
            "-Wl,-z,pack-relative-relocs",
        ],
    },
    // Same code with only the classic DT_HASH table, so the SysV hash lookup
    // path is tested (the toolchain default emits only DT_GNU_HASH).
    TestLib {
        output: "libdemo_sysv.so",
        sources: &["demo.c"],
        extra_inputs: &[],
        extra_flags: &[
            "-Wl,-init,demo_legacy_init",
            "-Wl,-fini,demo_legacy_fini",
            "-Wl,--hash-style=sysv",
        ],
    },
    TestLib {
        output: "libversioned.so",
        sources: &["versioned.c"],
        extra_inputs: &["versioned.map"],
        extra_flags: &["-Wl,--version-script=versioned.map"],
    },
    TestLib {
        output: "libifunc.so",
        sources: &["ifunc.c"],
        extra_inputs: &[],
        extra_flags: &[],
    },
    // Shared objects may already contain undefined references by default;
    // -z undefs guards against a toolchain configured with -z defs, which
    // would refuse to link this deliberately broken library.
    TestLib {
        output: "libmissing.so",
        sources: &["missing.c"],
        extra_inputs: &[],
        extra_flags: &["-Wl,-z,undefs"],
    },
    // Lazy calls (testlibs/README.md): -z lazy (after COMMON_FLAGS' -z now)
    // leaves DF_BIND_NOW out, so RTLD_LAZY applies to them.
    TestLib {
        output: "lazy/liblazy.so",
        sources: &["lazy/lazy.c"],
        extra_inputs: &[],
        extra_flags: &["-Wl,-z,lazy", "-Wl,-z,undefs"],
    },
    TestLib {
        output: "lazy/liblazydef.so",
        sources: &["lazy/lazydef.c"],
        extra_inputs: &[],
        extra_flags: &["-Wl,-z,lazy"],
    },
    TestLib {
        output: "lazy/liblazydata.so",
        sources: &["lazy/lazydata.c"],
        extra_inputs: &[],
        extra_flags: &["-Wl,-z,lazy", "-Wl,-z,undefs"],
    },
    // Exit order and the exit race (tests/exit.rs).
    TestLib {
        output: "exit/libexitplugin.so",
        sources: &["exit/exitplugin.c"],
        extra_inputs: &[],
        extra_flags: &[],
    },
    // Hostile-input issue: a constructor that calls back into the host
    // (address in MMLD_REENTRANT_CALLBACK), which loads another library.
    TestLib {
        output: "libreentrant.so",
        sources: &["reentrant.c"],
        extra_inputs: &[],
        extra_flags: &[],
    },
    // Dependency trees (tests/deps.rs, testlibs/README.md). A built library
    // listed in `sources` is a linker input: gcc records its soname as
    // DT_NEEDED, in the order given, and its mtime counts for staleness.
    // Each table entry must come after the libraries it links against.
    TestLib {
        output: "liborderlog.so",
        sources: &["orderlog.c"],
        extra_inputs: &["orderlog.h"],
        extra_flags: &[],
    },
    // The diamond: libdtop in diamond/, the rest in diamond/lib/, every
    // DT_NEEDED found through a $ORIGIN-relative DT_RUNPATH (new dtags).
    TestLib {
        output: "diamond/lib/libdbase.so",
        sources: &["diamond/lib/base.c", "liborderlog.so"],
        extra_inputs: &["orderlog.h"],
        extra_flags: &["-Wl,--enable-new-dtags", "-Wl,-rpath,$ORIGIN/../.."],
    },
    TestLib {
        output: "diamond/lib/libdleft.so",
        sources: &[
            "diamond/lib/left.c",
            "diamond/lib/libdbase.so",
            "liborderlog.so",
        ],
        extra_inputs: &["orderlog.h"],
        extra_flags: &["-Wl,--enable-new-dtags", "-Wl,-rpath,$ORIGIN:$ORIGIN/../.."],
    },
    // The braced spelling of the token, on purpose.
    TestLib {
        output: "diamond/lib/libdright.so",
        sources: &[
            "diamond/lib/right.c",
            "diamond/lib/libdbase.so",
            "liborderlog.so",
        ],
        extra_inputs: &["orderlog.h"],
        extra_flags: &[
            "-Wl,--enable-new-dtags",
            "-Wl,-rpath,${ORIGIN}:${ORIGIN}/../..",
        ],
    },
    TestLib {
        output: "diamond/libdtop.so",
        sources: &[
            "diamond/top.c",
            "diamond/lib/libdleft.so",
            "diamond/lib/libdright.so",
            "liborderlog.so",
        ],
        extra_inputs: &["orderlog.h"],
        extra_flags: &[
            "-Wl,--enable-new-dtags",
            "-Wl,-rpath,$ORIGIN/lib:$ORIGIN/..",
            "-Wl,-rpath-link,diamond/lib",
        ],
    },
    // Same soname as diamond/lib/libdbase.so, says "alt": what
    // LD_LIBRARY_PATH=testlibs/alt must find first.
    TestLib {
        output: "alt/libdbase.so",
        sources: &["diamond/lib/base.c", "liborderlog.so"],
        extra_inputs: &["orderlog.h"],
        extra_flags: &[
            "-DBASE_NAME=\"alt\"",
            "-Wl,--enable-new-dtags",
            "-Wl,-rpath,$ORIGIN/..",
        ],
    },
    // DT_RPATH inheritance: libchainmid has no search path of its own.
    TestLib {
        output: "rpath/lib/libchainleaf.so",
        sources: &["rpath/lib/leaf.c"],
        extra_inputs: &[],
        extra_flags: &[],
    },
    TestLib {
        output: "alt/libchainleaf.so",
        sources: &["rpath/lib/leaf.c"],
        extra_inputs: &[],
        extra_flags: &["-DLEAF_NAME=\"alt\""],
    },
    TestLib {
        output: "rpath/lib/libchainmid.so",
        sources: &[
            "rpath/lib/mid.c",
            "rpath/lib/libchainleaf.so",
            "liborderlog.so",
        ],
        extra_inputs: &["orderlog.h"],
        extra_flags: &[],
    },
    TestLib {
        output: "rpath/libchaintop.so",
        sources: &["rpath/top.c", "rpath/lib/libchainmid.so", "liborderlog.so"],
        extra_inputs: &["orderlog.h"],
        extra_flags: &[
            "-Wl,--disable-new-dtags",
            "-Wl,-rpath,$ORIGIN/lib:$ORIGIN/..",
            "-Wl,-rpath-link,rpath/lib",
        ],
    },
    TestLib {
        output: "rpath/libchaintop_runpath.so",
        sources: &["rpath/top.c", "rpath/lib/libchainmid.so", "liborderlog.so"],
        extra_inputs: &["orderlog.h"],
        extra_flags: &[
            "-Wl,--enable-new-dtags",
            "-Wl,-rpath,$ORIGIN/lib:$ORIGIN/..",
            "-Wl,-rpath-link,rpath/lib",
        ],
    },
    // Interposition: libitop -> libimid -> libibottom, plus a library for
    // the global scope and a DF_SYMBOLIC one (see DF_SYMBOLIC_OUTPUTS).
    TestLib {
        output: "interpose/libibottom.so",
        sources: &["interpose/bottom.c"],
        extra_inputs: &[],
        extra_flags: &[],
    },
    TestLib {
        output: "interpose/libimid.so",
        sources: &["interpose/mid.c", "interpose/libibottom.so"],
        extra_inputs: &[],
        // libimid uses nothing of libibottom: keep the DT_NEEDED anyway.
        extra_flags: &[
            "-Wl,--no-as-needed",
            "-Wl,--enable-new-dtags",
            "-Wl,-rpath,$ORIGIN",
        ],
    },
    TestLib {
        output: "interpose/libitop.so",
        sources: &["interpose/top.c", "interpose/libimid.so"],
        extra_inputs: &[],
        extra_flags: &[
            "-Wl,--enable-new-dtags",
            "-Wl,-rpath,$ORIGIN",
            "-Wl,-rpath-link,interpose",
        ],
    },
    TestLib {
        output: "interpose/libiother.so",
        sources: &["interpose/other.c"],
        extra_inputs: &[],
        extra_flags: &[],
    },
    TestLib {
        output: "interpose/libiscope.so",
        sources: &[
            "interpose/scope.c",
            "interpose/libitop.so",
            "interpose/libiother.so",
        ],
        extra_inputs: &[],
        extra_flags: &[
            "-Wl,--no-as-needed",
            "-Wl,--enable-new-dtags",
            "-Wl,-rpath,$ORIGIN",
            "-Wl,-rpath-link,interpose",
        ],
    },
    TestLib {
        output: "interpose/libiglobal.so",
        sources: &["interpose/global.c"],
        extra_inputs: &[],
        extra_flags: &[],
    },
    TestLib {
        output: "interpose/libisymbolic.so",
        sources: &["interpose/symbolic.c"],
        extra_inputs: &[],
        extra_flags: &[],
    },
    TestLib {
        output: "interpose/libinosymbolic.so",
        sources: &["interpose/symbolic.c"],
        extra_inputs: &[],
        extra_flags: &["-DNAME=\"nosymbolic\""],
    },
    // A DT_NEEDED cycle, linked in two passes: libcyca against a stub
    // libcycb (same soname, undefined references allowed), then the real
    // libcycb against libcyca.
    TestLib {
        output: "cycle/stub/libcycb.so",
        sources: &["cycle/cycb.c", "liborderlog.so"],
        extra_inputs: &["orderlog.h"],
        extra_flags: &["-Wl,-z,undefs"],
    },
    TestLib {
        output: "cycle/libcyca.so",
        sources: &["cycle/cyca.c", "cycle/stub/libcycb.so", "liborderlog.so"],
        extra_inputs: &["orderlog.h"],
        extra_flags: &["-Wl,--enable-new-dtags", "-Wl,-rpath,$ORIGIN:$ORIGIN/.."],
    },
    TestLib {
        output: "cycle/libcycb.so",
        sources: &["cycle/cycb.c", "cycle/libcyca.so", "liborderlog.so"],
        extra_inputs: &["orderlog.h"],
        extra_flags: &[
            "-Wl,--enable-new-dtags",
            "-Wl,-rpath,$ORIGIN:$ORIGIN/..",
            "-Wl,-rpath-link,cycle/stub",
        ],
    },
    // Unloading: DF_1_NODELETE (with a dependency), and a plain library
    // for OpenOptions::nodelete.
    TestLib {
        output: "nodelete/libnodeldep.so",
        sources: &["nodelete/nodeldep.c"],
        extra_inputs: &[],
        extra_flags: &[],
    },
    TestLib {
        output: "nodelete/libnodel.so",
        sources: &["nodelete/nodel.c", "nodelete/libnodeldep.so"],
        extra_inputs: &[],
        extra_flags: &[
            "-Wl,-z,nodelete",
            "-Wl,--enable-new-dtags",
            "-Wl,-rpath,$ORIGIN",
        ],
    },
    TestLib {
        output: "nodelete/libkeep.so",
        sources: &["nodelete/keep.c"],
        extra_inputs: &[],
        extra_flags: &[],
    },
    // `mmld check`: two unresolved symbols in two objects of one tree.
    TestLib {
        output: "libcheckbad.so",
        sources: &["checkbad.c", "libmissing.so"],
        extra_inputs: &[],
        extra_flags: &[
            "-Wl,-z,undefs",
            "-Wl,--enable-new-dtags",
            "-Wl,-rpath,$ORIGIN",
        ],
    },
    // Runtime issue: thread-local storage in its supported and refused forms.
    TestLib {
        output: "libtls.so",
        sources: &["tls.c"],
        extra_inputs: &[],
        extra_flags: &[],
    },
    TestLib {
        output: "libtls_static.so",
        sources: &["tls_static.c"],
        extra_inputs: &[],
        extra_flags: &["-ftls-model=initial-exec"],
    },
    TestLib {
        output: "libtls_desc.so",
        sources: &["tls_desc.c"],
        extra_inputs: &[],
        extra_flags: &["-mtls-dialect=gnu2"],
    },
    // The same with one initial-exec variable: DF_STATIC_TLS, so the
    // descriptors resolve into a static block.
    TestLib {
        output: "libtls_desc_static.so",
        sources: &["tls_desc.c"],
        extra_inputs: &[],
        extra_flags: &["-mtls-dialect=gnu2", "-DDESC_STATIC"],
    },
    // Descriptors against another library's variable, dynamic and static.
    TestLib {
        output: "libtls_desc_user.so",
        sources: &["tls_desc_user.c", "libtls_desc.so"],
        extra_inputs: &[],
        extra_flags: &[
            "-mtls-dialect=gnu2",
            "-Wl,--enable-new-dtags",
            "-Wl,-rpath,$ORIGIN",
        ],
    },
    TestLib {
        output: "libtls_desc_user_static.so",
        sources: &["tls_desc_user.c", "libtls_desc_static.so"],
        extra_inputs: &[],
        extra_flags: &[
            "-mtls-dialect=gnu2",
            "-Wl,--enable-new-dtags",
            "-Wl,-rpath,$ORIGIN",
        ],
    },
    // Built before the two libraries that link against it.
    TestLib {
        output: "libtlshost.so",
        sources: &["tlshost.c"],
        extra_inputs: &[],
        extra_flags: &[],
    },
    // A descriptor against a variable of a library glibc loaded.
    TestLib {
        output: "libtlsuser_desc.so",
        sources: &["tlsuser.c"],
        extra_inputs: &["libtlshost.so"],
        extra_flags: &[
            "-mtls-dialect=gnu2",
            "-L.",
            "-Wl,--no-as-needed",
            "-ltlshost",
        ],
    },
    // Initial-exec access into a library whose TLS is dynamic: the
    // provider must move to static TLS when the user is linked.
    TestLib {
        output: "libtls_dyn_provider.so",
        sources: &["tls_dyn_provider.c"],
        extra_inputs: &[],
        extra_flags: &[],
    },
    TestLib {
        output: "libtls_ie_user.so",
        sources: &["tls_ie_user.c", "libtls_dyn_provider.so"],
        extra_inputs: &[],
        extra_flags: &["-Wl,--enable-new-dtags", "-Wl,-rpath,$ORIGIN"],
    },
    // Static TLS larger than glibc's default surplus.
    TestLib {
        output: "libtls_big.so",
        sources: &["tls_big.c"],
        extra_inputs: &[],
        extra_flags: &[],
    },
    // OpenMP through libgomp (itself DF_STATIC_TLS).
    TestLib {
        output: "libomp_sum.so",
        sources: &["omp.c"],
        extra_inputs: &[],
        extra_flags: &["-fopenmp"],
    },
    // Needs libtlshost.so, which the tests load with glibc first.
    TestLib {
        output: "libtlsuser.so",
        sources: &["tlsuser.c"],
        extra_inputs: &["libtlshost.so"],
        extra_flags: &["-L.", "-Wl,--no-as-needed", "-ltlshost"],
    },
    // C++: exceptions, static destructors, thread_local, unique symbols.
    TestLib {
        output: "libcxx.so",
        sources: &["cxx.cpp"],
        extra_inputs: &[],
        extra_flags: &["-Wl,--no-as-needed", "-lstdc++"],
    },
    // The C ABI drop-in's backtrace test (tests/capi.rs).
    TestLib {
        output: "libthrower.so",
        sources: &["capi/thrower.cpp"],
        extra_inputs: &[],
        extra_flags: &["-Wl,--no-as-needed", "-lstdc++"],
    },
    TestLib {
        output: "libcxx_static.so",
        sources: &["cxx_static.cpp"],
        extra_inputs: &[],
        extra_flags: &["-Wl,--no-as-needed", "-lstdc++"],
    },
    TestLib {
        output: "libcxx_a.so",
        sources: &["cxx_a.cpp"],
        extra_inputs: &["cxx_shared.h"],
        extra_flags: &["-Wl,--no-as-needed", "-lstdc++"],
    },
    TestLib {
        output: "libcxx_b.so",
        sources: &["cxx_b.cpp"],
        extra_inputs: &["cxx_shared.h"],
        extra_flags: &["-Wl,--no-as-needed", "-lstdc++"],
    },
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=MMLD_BUILD_TESTLIBS");
    if !matches!(env::var("MMLD_BUILD_TESTLIBS").as_deref(), Ok("1")) {
        return;
    }

    let manifest_dir = PathBuf::from(
        env::var_os("CARGO_MANIFEST_DIR").expect("cargo did not set CARGO_MANIFEST_DIR"),
    );
    let testlibs = manifest_dir.join("testlibs");
    // Absent from a published package, which ships no fixtures.
    if !testlibs.is_dir() {
        return;
    }
    println!("cargo:rerun-if-changed=testlibs");
    // Test binaries export the `mmld_exe_*` functions they define, as the
    // glibc oracle does: an executable's definitions are in the global
    // scope, where they interpose on libraries' default-visibility symbols
    // (and must not on protected ones).
    println!("cargo:rustc-link-arg-tests=-Wl,--export-dynamic-symbol=mmld_exe_*");

    // Compiler flags live in this file, so editing it must rebuild every
    // library even though no C source changed.
    let build_script_mtime =
        mtime(&manifest_dir.join("build.rs")).expect("build.rs must exist while it is running");

    for lib in TEST_LIBS {
        for input in lib.sources.iter().chain(lib.extra_inputs) {
            println!("cargo:rerun-if-changed=testlibs/{input}");
        }
        if needs_rebuild(&testlibs, lib, build_script_mtime) {
            compile(&testlibs, lib);
        }
    }
}

fn mtime(path: &Path) -> Option<SystemTime> {
    match fs::metadata(path) {
        Ok(meta) => Some(meta.modified().unwrap_or_else(|e| {
            panic!("cannot read modification time of {}: {e}", path.display())
        })),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => panic!("cannot stat {}: {e}", path.display()),
    }
}

fn needs_rebuild(dir: &Path, lib: &TestLib, build_script_mtime: SystemTime) -> bool {
    let Some(output_mtime) = mtime(&dir.join(lib.output)) else {
        return true;
    };
    let newest_input = lib
        .sources
        .iter()
        .chain(lib.extra_inputs)
        .map(|input| {
            let path = dir.join(input);
            mtime(&path).unwrap_or_else(|| {
                panic!(
                    "{} is listed as an input of {} in build.rs but does not exist",
                    path.display(),
                    lib.output
                )
            })
        })
        .fold(build_script_mtime, SystemTime::max);
    output_mtime < newest_input
}

fn compile(dir: &Path, lib: &TestLib) {
    // Link to a temporary name and rename, so an interrupted or failed build
    // never leaves a truncated library whose fresh mtime would make it look
    // up to date. The pid keeps concurrent cargo invocations (e.g. an IDE
    // and a terminal) from writing the same file.
    let tmp_name = format!("{}.{}.tmp", lib.output, process::id());
    // Outputs in subdirectories with no sources of their own (cycle/stub/)
    // need their directory created.
    if let Some(parent) = Path::new(lib.output).parent() {
        fs::create_dir_all(dir.join(parent))
            .unwrap_or_else(|e| panic!("cannot create testlibs/{}: {e}", parent.display()));
    }
    // The soname is the file name, also for outputs in subdirectories.
    let soname = Path::new(lib.output)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(lib.output);

    // Run in testlibs/ so relative paths in flags (e.g. version scripts)
    // resolve, and so the paths recorded in debug info stay short.
    let result = Command::new("gcc")
        .current_dir(dir)
        .args(COMMON_FLAGS)
        .args(lib.extra_flags)
        // Without a soname, ld names the base version definition after the
        // output file, which here is the temporary name.
        .arg(format!("-Wl,-soname,{soname}"))
        .args(lib.sources)
        .arg("-o")
        .arg(&tmp_name)
        .output();
    let output = match result {
        Ok(output) => output,
        Err(e) => {
            let msg = format!("cannot run gcc to build testlibs/{}: {e}", lib.output);
            println!("cargo:warning={msg}");
            panic!("{msg}");
        }
    };

    let stderr = String::from_utf8_lossy(&output.stderr);
    // Cargo only shows build script output on failure, except for these.
    for line in stderr.lines() {
        println!("cargo:warning=testlibs/{}: {line}", lib.output);
    }

    let tmp_path = dir.join(&tmp_name);
    if !output.status.success() {
        let _ = fs::remove_file(&tmp_path);
        panic!(
            "gcc failed to build testlibs/{} ({}):\n{stderr}",
            lib.output, output.status
        );
    }
    if DF_SYMBOLIC_OUTPUTS.contains(&lib.output) {
        set_df_symbolic(&tmp_path);
    }
    let final_path = dir.join(lib.output);
    fs::rename(&tmp_path, &final_path).unwrap_or_else(|e| {
        panic!(
            "cannot rename {} to {}: {e}",
            tmp_path.display(),
            final_path.display()
        )
    });
}

/// Outputs that get `DF_SYMBOLIC` set in their `DT_FLAGS` after linking.
/// `-Bsymbolic` would set it too, but it also makes ld bind the library's
/// references to its own definitions at link time, leaving nothing for the
/// loader to decide; patching the flag keeps the references as symbol
/// relocations, so the test shows whether the loader honours the flag
/// (glibc treats `DF_SYMBOLIC` exactly like a `DT_SYMBOLIC` entry).
const DF_SYMBOLIC_OUTPUTS: &[&str] = &["interpose/libisymbolic.so"];

/// Sets `DF_SYMBOLIC` in the `DT_FLAGS` entry of a freshly linked ELF64
/// little-endian shared object (every library here has one: `-z now` puts
/// `DF_BIND_NOW` there).
fn set_df_symbolic(path: &Path) {
    const PT_DYNAMIC: u32 = 2;
    const DT_NULL: u64 = 0;
    const DT_FLAGS: u64 = 30;
    const DF_SYMBOLIC: u64 = 0x2;
    let mut elf = fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]) as usize;
    let u32_at =
        |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
    let u64_at =
        |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    let phoff = u64_at(&elf, 0x20) as usize;
    let phentsize = u16_at(&elf, 0x36);
    let phnum = u16_at(&elf, 0x38);
    let dynamic = (0..phnum)
        .map(|i| phoff + i * phentsize)
        .find(|&ph| u32_at(&elf, ph) == PT_DYNAMIC)
        .unwrap_or_else(|| panic!("{} has no PT_DYNAMIC", path.display()));
    let (offset, size) = (
        u64_at(&elf, dynamic + 8) as usize,
        u64_at(&elf, dynamic + 0x20) as usize,
    );
    for entry in (offset..offset + size).step_by(16) {
        match u64_at(&elf, entry) {
            DT_NULL => break,
            DT_FLAGS => {
                let value = u64_at(&elf, entry + 8) | DF_SYMBOLIC;
                elf[entry + 8..entry + 16].copy_from_slice(&value.to_le_bytes());
                fs::write(path, &elf)
                    .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
                return;
            }
            _ => {}
        }
    }
    panic!(
        "{} has no DT_FLAGS entry to set DF_SYMBOLIC in",
        path.display()
    );
}
