//! Static TLS (initial-exec, `DF_STATIC_TLS`), TLS descriptors and OpenMP,
//! checked against glibc.
//!
//! Each test is a script in the step language of `testlibs/glibc_oracle.c`
//! replayed in two fresh processes: by the oracle with glibc's `dlopen`, and
//! by this test binary (the hidden `replay_child` test) with mmld. Fresh
//! processes matter here: static TLS comes from glibc's surplus, a
//! per-process budget, and "a thread that existed before the load" needs a
//! process whose threads the script controls. `spawn` starts that thread;
//! `tstr` calls a function in it, `nstr` in a thread created on the spot.

use std::ffi::{CStr, c_char, c_int};
use std::process::Command;
use std::sync::mpsc;

#[path = "common/oracle.rs"]
mod oracle;

use mmld::Library;
use oracle::{clean, replay_glibc, replay_mmld, same_as_glibc, say};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

// ---------------------------------------------------------------------------
// The mmld side of a replay.

type StrFn = unsafe extern "C" fn() -> *const c_char;
type IntFn = unsafe extern "C" fn() -> c_int;

/// Calls a `const char *f(void)` and copies the result.
fn call_str(f: StrFn) -> String {
    // SAFETY: the scripts name functions of this type returning strings
    // valid until the next call in the same thread.
    unsafe { CStr::from_ptr(f()) }
        .to_string_lossy()
        .into_owned()
}

/// Not a test of its own: the mmld side of a replay, run as a child with
/// the script in `MMLD_REPLAY`. Without it, it does nothing.
#[test]
fn replay_child() {
    let Ok(script) = std::env::var("MMLD_REPLAY") else {
        return;
    };
    let mut handles: Vec<Option<Library>> = Vec::new();
    // The worker thread that existed before the load, fed functions.
    let mut worker: Option<(mpsc::Sender<StrFn>, mpsc::Receiver<String>)> = None;
    for step in script.lines() {
        let parts: Vec<&str> = step.split(':').collect();
        let arg = |i: usize| parts.get(i).copied().unwrap_or("");
        let lib = |i: usize| -> &Library {
            let n: usize = arg(i).parse().expect("a handle number");
            handles
                .get(n)
                .and_then(Option::as_ref)
                .unwrap_or_else(|| panic!("step {step}: no open handle {n}"))
        };
        match parts[0] {
            "spawn" => {
                let (jobs, job_rx) = mpsc::channel::<StrFn>();
                let (done_tx, done) = mpsc::channel();
                std::thread::spawn(move || {
                    for f in job_rx {
                        let _ = done_tx.send(call_str(f));
                    }
                });
                worker = Some((jobs, done));
            }
            // SAFETY: the test libraries' constructors have no
            // preconditions; the real libraries' only initialise.
            "open" => match unsafe { Library::open(arg(1)) } {
                Ok(l) => handles.push(Some(l)),
                Err(e) => {
                    say(format!("error:open:{e}"));
                    handles.push(None);
                }
            },
            "close" => {
                let n: usize = arg(1).parse().expect("a handle number");
                drop(handles.get_mut(n).and_then(Option::take));
            }
            "str" | "tstr" | "nstr" => {
                // SAFETY: the script names a `const char *f(void)`.
                let f = *unsafe { lib(1).get::<StrFn>(arg(2)) }.expect("lookup");
                let (prefix, value) = match parts[0] {
                    "str" => ("", call_str(f)),
                    "tstr" => {
                        let (jobs, done) = worker.as_ref().expect("tstr after spawn");
                        jobs.send(f).expect("worker alive");
                        ("old:", done.recv().expect("worker answers"))
                    }
                    _ => (
                        "new:",
                        std::thread::spawn(move || call_str(f))
                            .join()
                            .expect("thread"),
                    ),
                };
                say(format!("{prefix}{}={value}", arg(2)));
            }
            "int" => {
                // SAFETY: the script names an `int f(void)`.
                let f = unsafe { lib(1).get::<IntFn>(arg(2)) }.expect("lookup");
                // SAFETY: as above.
                say(format!("{}={}", arg(2), unsafe { f() }));
            }
            other => panic!("unknown step {other}"),
        }
    }
    // Like the oracle, exit with the libraries still open: unloading
    // libgomp while its idle pool threads are still running crashes the
    // process under glibc too (a dlopen/dlclose loop of libomp_sum.so dies
    // with SIGSEGV or SIGBUS within 200 cycles).
    std::mem::forget(handles);
}

// ---------------------------------------------------------------------------
// Fixtures.

#[test]
fn fixtures_carry_the_relocations_they_test() {
    let has = |lib: &str, rtype: &str| {
        let out = Command::new("readelf")
            .args(["-rW", &format!("{ROOT}/testlibs/{lib}")])
            .output()
            .expect("readelf");
        String::from_utf8_lossy(&out.stdout).contains(rtype)
    };
    let static_flag = |lib: &str| {
        let out = Command::new("readelf")
            .args(["-dW", &format!("{ROOT}/testlibs/{lib}")])
            .output()
            .expect("readelf");
        String::from_utf8_lossy(&out.stdout).contains("STATIC_TLS")
    };
    assert!(has("libtls_static.so", "R_X86_64_TPOFF64"));
    assert!(static_flag("libtls_static.so"));
    assert!(has("libtls_desc.so", "R_X86_64_TLSDESC"));
    assert!(!has("libtls_desc.so", "R_X86_64_TPOFF64"));
    assert!(!static_flag("libtls_desc.so"));
    assert!(has("libtls_desc_static.so", "R_X86_64_TLSDESC"));
    assert!(has("libtls_desc_user.so", "R_X86_64_TLSDESC"));
    assert!(has("libtls_desc_user_static.so", "R_X86_64_TLSDESC"));
    assert!(has("libtlsuser_desc.so", "R_X86_64_TLSDESC"));
    assert!(has("libtls_desc_static.so", "R_X86_64_TPOFF64"));
    assert!(static_flag("libtls_desc_static.so"));
    assert!(static_flag("libtls_big.so"));
    assert!(has("libtls_ie_user.so", "R_X86_64_TPOFF64"));
    assert!(!static_flag("libtls_dyn_provider.so"));
}

// ---------------------------------------------------------------------------
// Initial values in threads created before and after the load.

/// Each thread's first report shows the initial values (the `.tdata`
/// pointers relocated); the old thread's second shows its own changes.
fn threads_script(lib: &str, func: &str) -> Vec<String> {
    let open = format!("open:testlibs/{lib}");
    let old = format!("tstr:0:{func}");
    let here = format!("str:0:{func}");
    let new = format!("nstr:0:{func}");
    vec![
        "spawn".into(),
        open,
        old.clone(),
        here,
        old,
        new.clone(),
        new,
    ]
}

fn run_threads_script(lib: &str, func: &str, first: &str, second: &str) {
    let script = threads_script(lib, func);
    let steps: Vec<&str> = script.iter().map(String::as_str).collect();
    let old1 = format!("old:{func}={first}");
    let here = format!("{func}={first}");
    let old2 = format!("old:{func}={second}");
    let new = format!("new:{func}={first}");
    same_as_glibc(&steps, &[], &[&old1, &here, &old2, &new, &new]);
}

#[test]
fn initial_exec_variables_start_from_their_image_in_old_and_new_threads() {
    run_threads_script(
        "libtls_static.so",
        "ie_report",
        "counter=101 ptr=42 text=ie-hello zero=0 aligned=9/0",
        "counter=102 ptr=42 text=ie-hello zero=5 aligned=18/0",
    );
}

#[test]
fn dynamic_tls_descriptors_start_from_their_image_in_old_and_new_threads() {
    run_threads_script(
        "libtls_desc.so",
        "desc_report",
        "var=7 local=70 text=desc-hello zero=0 ie=0",
        "var=8 local=80 text=desc-hello zero=3 ie=0",
    );
}

#[test]
fn static_tls_descriptors_start_from_their_image_in_old_and_new_threads() {
    run_threads_script(
        "libtls_desc_static.so",
        "desc_report",
        "var=7 local=70 text=desc-hello zero=0 ie=600",
        "var=8 local=80 text=desc-hello zero=3 ie=601",
    );
}

#[test]
fn descriptors_against_a_dependency_reach_its_variable_dynamic_or_static() {
    for lib in ["libtls_desc_user.so", "libtls_desc_user_static.so"] {
        run_threads_script(
            lib,
            "desc_user_report",
            "user=106 owner=106",
            "user=206 owner=206",
        );
    }
}

#[test]
fn descriptor_against_a_host_library_variable_goes_through_glibc() {
    // The host (glibc) loads the library that owns the variable; mmld's
    // descriptor carries glibc's module id and calls glibc's
    // __tls_get_addr on each thread's first access.
    let host = std::ffi::CString::new(format!("{ROOT}/testlibs/libtlshost.so")).unwrap();
    // SAFETY: a plain test library; its variable is all it has.
    let handle = unsafe { libc::dlopen(host.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    assert!(!handle.is_null(), "glibc could not load libtlshost.so");
    // SAFETY: as above.
    let user = unsafe { Library::open(format!("{ROOT}/testlibs/libtlsuser_desc.so")) }
        .expect("mmld loads the gnu2 user of a host TLS variable");
    // SAFETY: the fixture's `int tls_user_read(void)` / `void tls_user_write(int)`.
    let read = *unsafe { user.get::<extern "C" fn() -> c_int>("tls_user_read") }.unwrap();
    // SAFETY: as above.
    let write = *unsafe { user.get::<extern "C" fn(c_int)>("tls_user_write") }.unwrap();
    // SAFETY: libtlshost's `int host_tls_read(void)`.
    let host_read: extern "C" fn() -> c_int = unsafe {
        let p = libc::dlsym(handle, c"host_tls_read".as_ptr());
        assert!(!p.is_null());
        std::mem::transmute(p)
    };
    let probe = move || {
        let first = read();
        write(first + 30);
        (first, host_read())
    };
    let here = probe();
    let there = std::thread::spawn(probe).join().unwrap();
    assert_eq!(here.0, there.0, "each thread starts from the host's image");
    assert_eq!(
        (here.1, there.1),
        (here.0 + 30, there.0 + 30),
        "one variable"
    );
    drop(user);
    // SAFETY: the handle from dlopen above; nothing of it is used after.
    unsafe { libc::dlclose(handle) };
}

#[test]
fn initial_exec_access_moves_a_dynamic_provider_into_static_tls() {
    // libtls_ie_user.so's TPOFF64 names a variable of libtls_dyn_provider.so,
    // which has no DF_STATIC_TLS: both loaders give the provider a static
    // block while linking the user, and its own (dynamic-model) code then
    // reaches the same variable.
    run_threads_script(
        "libtls_ie_user.so",
        "ie_user_report",
        "user=15 provider=15",
        "user=25 provider=25",
    );
    // Loaded first but not used yet: it can still move.
    same_as_glibc(
        &[
            "open:testlibs/libtls_dyn_provider.so",
            "open:testlibs/libtls_ie_user.so",
            "str:1:ie_user_report",
        ],
        &[],
        &["ie_user_report=user=15 provider=15"],
    );
    // Once a thread used its dynamic block, it cannot (glibc: "cannot
    // allocate memory in static TLS block").
    let mmld = same_as_glibc(
        &[
            "open:testlibs/libtls_dyn_provider.so",
            "int:0:prov_get",
            "open:testlibs/libtls_ie_user.so",
        ],
        &[],
        &["prov_get=5", "error:open"],
    );
    assert!(
        mmld[1].contains("already uses its dynamic TLS block"),
        "{mmld:?}"
    );
}

#[test]
fn openmp_reduction_over_eight_threads_in_a_plugin() {
    same_as_glibc(
        &[
            "open:testlibs/libomp_sum.so",
            "str:0:omp_report",
            "str:0:omp_report",
        ],
        &[],
        &[
            "omp_report=sum=500000500000 threads=8 team=8",
            "omp_report=sum=500000500000 threads=8 team=8",
        ],
    );
}

// ---------------------------------------------------------------------------
// The surplus: exhaustion, the tunable, and load/unload cycles.

#[test]
fn exhausted_surplus_is_an_error_naming_the_tunable() {
    // The failed load gives back what it took: a smaller block still fits.
    let steps = [
        "open:testlibs/libtls_big.so",
        "open:testlibs/libtls_static.so",
        "str:1:ie_report",
    ];
    let mmld = same_as_glibc(
        &steps,
        &[],
        &[
            "error:open",
            "ie_report=counter=101 ptr=42 text=ie-hello zero=0 aligned=9/0",
        ],
    );
    let msg = &mmld[0];
    assert!(
        msg.contains("libtls_big.so")
            && msg.contains("cannot allocate memory in static TLS block")
            && msg.contains("GLIBC_TUNABLES=glibc.rtld.optional_static_tls="),
        "{msg}"
    );
    // The N the message suggests is enough.
    let n = msg
        .split("N=")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .expect("a suggested N");
    let tunable = format!("glibc.rtld.optional_static_tls={n}");
    same_as_glibc(
        &["open:testlibs/libtls_big.so", "int:0:big_first"],
        &[("GLIBC_TUNABLES", &tunable)],
        &["big_first=7"],
    );
}

#[test]
fn load_unload_cycles_do_not_use_up_the_surplus() {
    // 40 cycles of a 200-byte block: far more than the 1,664-byte surplus
    // unless each unload gives its block back.
    let mut script = Vec::new();
    for i in 0..40 {
        script.push("open:testlibs/libtls_static.so".to_string());
        script.push(format!("str:{i}:ie_report"));
        script.push(format!("close:{i}"));
    }
    let steps: Vec<&str> = script.iter().map(String::as_str).collect();
    let expected = vec!["ie_report=counter=101 ptr=42 text=ie-hello zero=0 aligned=9/0"; 40];
    same_as_glibc(&steps, &[], &expected);
}

#[test]
fn unloading_in_load_order_does_not_leak_the_surplus() {
    // glibc gives a block back only from the end of the used space, and
    // never the padding it put under one; mmld releases its blocks
    // youngest first, whatever order the libraries are closed in, and
    // sizes them so glibc never pads. glibc's own dlopen runs out of
    // surplus in the sixth cycle of this script (measured on 2.36).
    let mut script = Vec::new();
    for i in 0..20 {
        script.push("open:testlibs/libtls_static.so".to_string());
        script.push("open:testlibs/libtls_desc_static.so".to_string());
        script.push(format!("close:{}", 2 * i));
        script.push(format!("str:{}:desc_report", 2 * i + 1));
        script.push(format!("close:{}", 2 * i + 1));
    }
    let steps: Vec<&str> = script.iter().map(String::as_str).collect();
    let mmld = replay_mmld(&steps, &[]);
    assert_eq!(
        mmld,
        vec!["desc_report=var=7 local=70 text=desc-hello zero=0 ie=600"; 20]
    );
}

// ---------------------------------------------------------------------------
// Real libraries.

const LIBDIR: &str = "/usr/lib/x86_64-linux-gnu";

fn magick_coder() -> String {
    let dir = std::fs::read_dir(LIBDIR)
        .expect("read the library directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("ImageMagick-6"))
        })
        .expect("ImageMagick 6 is installed (libmagickcore-6.q16-6)");
    let png = dir.join("modules-Q16/coders/png.so");
    assert!(png.exists(), "{} exists", png.display());
    png.to_string_lossy().into_owned()
}

#[test]
fn libgomp_and_libgldispatch_answer_as_under_glibc() {
    let gomp = format!("open:{LIBDIR}/libgomp.so.1");
    let gld = format!("open:{LIBDIR}/libGLdispatch.so.0");
    let glibc = replay_glibc(
        &[
            &gomp,
            "int:0:omp_get_num_procs",
            &gld,
            "int:1:__glDispatchGetABIVersion",
        ],
        &[],
    );
    assert_eq!(glibc.len(), 2, "{glibc:?}");
    same_as_glibc(
        &[
            &gomp,
            "int:0:omp_get_num_procs",
            &gld,
            "int:1:__glDispatchGetABIVersion",
        ],
        &[],
        &[&glibc[0], &glibc[1]],
    );
}

#[test]
fn libgl_reads_libgldispatch_static_tls_through_its_own_tpoff64() {
    // libGL's dispatch stubs read libGLdispatch's _glapi_tls_Current with
    // an R_X86_64_TPOFF64 of libGL against libGLdispatch's variable: one
    // object's initial-exec access into another's static block.
    let gl = format!("open:{LIBDIR}/libGL.so.1");
    same_as_glibc(&[&gl, "int:0:glGetError"], &[], &["glGetError=0"]);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mmld"));
    clean(&mut cmd, &[]);
    let out = cmd
        .args(["check", &format!("{LIBDIR}/libGL.so.1")])
        .output()
        .expect("run mmld check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn real_libraries_with_static_tls_load_and_answer_as_under_glibc() {
    let coder = format!("open:{}", magick_coder());
    let qt = format!("open:{LIBDIR}/libQt5Gui.so.5");
    let av = format!("open:{LIBDIR}/libavcodec.so.59");
    let steps = [
        coder.as_str(),
        "str:0:GetMagickReleaseDate",
        qt.as_str(),
        "str:1:qVersion",
        av.as_str(),
        "str:2:avcodec_configuration",
    ];
    let glibc = replay_glibc(&steps, &[]);
    assert_eq!(glibc.len(), 3, "{glibc:?}");
    let expected: Vec<&str> = glibc.iter().map(String::as_str).collect();
    same_as_glibc(&steps, &[], &expected);
}

fn mmld_run(args: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mmld"));
    clean(&mut cmd, &[]);
    let out = cmd.arg("run").args(args).output().expect("run mmld");
    assert!(
        out.status.success(),
        "mmld run {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
}

#[test]
fn mmld_run_works_on_a_magick_coder_qt5gui_and_libavcodec() {
    let coder = magick_coder();
    let glibc = replay_glibc(
        &[
            &format!("open:{coder}"),
            "str:0:GetMagickReleaseDate",
            &format!("open:{LIBDIR}/libQt5Gui.so.5"),
            "str:1:qVersion",
            &format!("open:{LIBDIR}/libavcodec.so.59"),
            "int:2:avcodec_version",
        ],
        &[],
    );
    let want = |i: usize| {
        glibc
            .get(i)
            .and_then(|l| l.split_once('='))
            .map(|(_, v)| v.to_owned())
            .unwrap_or_else(|| panic!("glibc line {i} in {glibc:?}"))
    };
    assert_eq!(
        mmld_run(&[&coder, "GetMagickReleaseDate", "--ret", "str"]),
        want(0)
    );
    assert_eq!(
        mmld_run(&[
            &format!("{LIBDIR}/libQt5Gui.so.5"),
            "qVersion",
            "--ret",
            "str"
        ]),
        want(1)
    );
    assert_eq!(
        mmld_run(&[
            &format!("{LIBDIR}/libavcodec.so.59"),
            "avcodec_version",
            "--ret",
            "i32"
        ]),
        want(2)
    );
}

#[test]
fn mmld_maps_never_shows_the_static_tls_object() {
    // The block's memfd object is glibc's, not the library's: `mmld maps`
    // lists the library's own mappings and the host objects it bound to,
    // and the memfd object is neither.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mmld"));
    clean(&mut cmd, &[]);
    let out = cmd
        .args(["maps", "testlibs/libtls_static.so", "--call", "ie_report"])
        .output()
        .expect("run mmld maps");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("libtls_static.so"), "{text}");
    assert!(
        !text.contains("memfd") && !text.contains("/fd/") && !text.contains("mmld-static-tls"),
        "{text}"
    );
}

#[test]
fn dynamic_lookups_of_a_static_block_variable_agree_with_initial_exec_code() {
    // `get` of a thread-local symbol answers as dlsym does (the calling
    // thread's address, through mmld's __tls_get_addr); for a module with
    // a static block it must be the address the initial-exec code uses.
    // SAFETY: the fixture only defines TLS variables and readers.
    let lib = unsafe { Library::open(format!("{ROOT}/testlibs/libtls_desc_static.so")) }
        .expect("mmld loads libtls_desc_static.so");
    // SAFETY: `uintptr_t desc_tls_addr(void)`, through a static descriptor.
    let via_code = *unsafe { lib.get::<extern "C" fn() -> usize>("desc_tls_addr") }.unwrap();
    let via_get = |lib: &Library| {
        // SAFETY: the symbol is a thread-local `long`; only its address is
        // taken.
        unsafe { lib.get::<*mut i64>("desc_tls_var") }
            .map(|s| *s as usize)
            .unwrap()
    };
    assert_eq!(via_get(&lib), via_code());
    let lib = &lib;
    let (code, get) =
        std::thread::scope(|s| s.spawn(|| (via_code(), via_get(lib))).join().unwrap());
    assert_eq!(code, get, "the same in a new thread");
    assert_ne!(code, via_code(), "and that thread's own copy");
}
