//! Compiles the C test libraries in `testlibs/` into `testlibs/<name>.so`.
//!
//! The libraries are fixtures for the loader's tests, not part of the loader,
//! so they are built next to their sources (where tests can find them by a
//! stable path) rather than in OUT_DIR. See testlibs/README.md for what each
//! one exercises.

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
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");

    let manifest_dir = PathBuf::from(
        env::var_os("CARGO_MANIFEST_DIR").expect("cargo did not set CARGO_MANIFEST_DIR"),
    );
    let testlibs = manifest_dir.join("testlibs");
    // Absent when the crate is used as a dependency or from a published
    // package: the test libraries are only needed by this crate's own tests.
    if !testlibs.is_dir() {
        return;
    }
    println!("cargo:rerun-if-changed=testlibs");

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

    // Run in testlibs/ so relative paths in flags (e.g. version scripts)
    // resolve, and so the paths recorded in debug info stay short.
    let result = Command::new("gcc")
        .current_dir(dir)
        .args(COMMON_FLAGS)
        .args(lib.extra_flags)
        // Without a soname, ld names the base version definition after the
        // output file, which here is the temporary name.
        .arg(format!("-Wl,-soname,{}", lib.output))
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
    let final_path = dir.join(lib.output);
    fs::rename(&tmp_path, &final_path).unwrap_or_else(|e| {
        panic!(
            "cannot rename {} to {}: {e}",
            tmp_path.display(),
            final_path.display()
        )
    });
}
