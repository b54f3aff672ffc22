//! Runtime support: thread-local storage, C++ exceptions and destructors,
//! unique symbols, real C++-heavy libraries, a Rust plugin, and debugger
//! visibility.

use std::ffi::{CStr, CString, c_char, c_void};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};

use mmld::Library;

fn testlib(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testlibs")
        .join(name)
}

fn open(name: &str) -> Library {
    // SAFETY: our own test libraries.
    unsafe { Library::open(testlib(name)) }.unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

fn target_dir() -> PathBuf {
    // tests run from target/<profile>/deps/<test>
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

#[test]
fn tls_values_are_per_thread_from_eight_threads_at_once() {
    let lib = Arc::new(open("libtls.so"));
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8i64)
        .map(|t| {
            let lib = Arc::clone(&lib);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || unsafe {
                let bump = lib.get::<extern "C" fn(i64) -> i64>("tls_bump").unwrap();
                let get_zero = lib.get::<extern "C" fn() -> i64>("tls_get_zero").unwrap();
                let set_zero = lib.get::<extern "C" fn(i64)>("tls_set_zero").unwrap();
                let aligned = lib
                    .get::<extern "C" fn() -> usize>("tls_aligned_addr")
                    .unwrap();
                let aset = lib.get::<extern "C" fn(i64)>("tls_aligned_set").unwrap();
                let aget = lib
                    .get::<extern "C" fn() -> i64>("tls_aligned_get")
                    .unwrap();
                let text = lib
                    .get::<extern "C" fn() -> *const c_char>("tls_get_text")
                    .unwrap();
                barrier.wait();
                // .tbss starts at zero in every thread.
                assert_eq!(get_zero(), 0);
                set_zero(t * 1000);
                let mut last = 0;
                for _ in 0..1000 {
                    last = bump(t);
                }
                aset(t + 7);
                barrier.wait();
                // .tdata started at 100 in every thread; nobody else's
                // writes are visible.
                assert_eq!(last, 100 + 1000 * t);
                assert_eq!(get_zero(), t * 1000);
                assert_eq!(aget(), t + 7);
                assert_eq!(aligned() % 64, 0, "over-aligned TLS variable misaligned");
                // A pointer in .tdata that needed a relocation.
                assert_eq!(CStr::from_ptr(text()).to_str().unwrap(), "tls-hello");
                aligned()
            })
        })
        .collect();
    let mut addrs: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 8, "each thread must have its own block");
}

#[test]
fn threads_created_before_the_load_get_tls_too() {
    let gate = Arc::new(Barrier::new(2));
    let slot: Arc<std::sync::Mutex<Option<Arc<Library>>>> = Arc::default();
    let (g, s) = (Arc::clone(&gate), Arc::clone(&slot));
    let early = std::thread::spawn(move || {
        g.wait();
        let lib = s.lock().unwrap().clone().unwrap();
        let bump = unsafe { lib.get::<extern "C" fn(i64) -> i64>("tls_bump") }.unwrap();
        (bump(1), bump(1))
    });
    let lib = Arc::new(open("libtls.so"));
    let bump = unsafe { lib.get::<extern "C" fn(i64) -> i64>("tls_bump") }.unwrap();
    assert_eq!(bump(5), 105);
    *slot.lock().unwrap() = Some(Arc::clone(&lib));
    gate.wait();
    assert_eq!(early.join().unwrap(), (101, 102));
    assert_eq!(bump(0), 105);
}

#[test]
fn tls_of_a_host_library_is_reached_through_glibc() {
    let host_path = CString::new(testlib("libtlshost.so").to_str().unwrap()).unwrap();
    // The host (glibc) loads the library that owns the variable.
    let handle = unsafe { libc::dlopen(host_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    assert!(!handle.is_null(), "glibc could not load libtlshost.so");
    let user = open("libtlsuser.so");
    let read = unsafe { user.get::<extern "C" fn() -> i32>("tls_user_read") }.unwrap();
    let write = unsafe { user.get::<extern "C" fn(i32)>("tls_user_write") }.unwrap();
    let host_read: extern "C" fn() -> i32 = unsafe {
        let p = libc::dlsym(handle, c"host_tls_read".as_ptr());
        assert!(!p.is_null());
        std::mem::transmute(p)
    };
    assert_eq!(read(), 7);
    write(9);
    assert_eq!(
        host_read(),
        9,
        "mmld code and host code must see one variable"
    );
    let (r2, w2) = (*read, *write);
    let other = std::thread::spawn(move || {
        let first = r2();
        w2(11);
        (first, r2())
    })
    .join()
    .unwrap();
    assert_eq!(
        other,
        (7, 11),
        "a new thread starts from the host's TLS image"
    );
    assert_eq!(read(), 9);
    drop(user);
    unsafe { libc::dlclose(handle) };
}

#[test]
fn cxx_exception_is_thrown_and_caught_through_two_frames() {
    let lib = open("libcxx.so");
    let catch = unsafe { lib.get::<extern "C" fn(i32) -> i32>("cxx_catch") }.unwrap();
    // "boom 7" is 6 characters: caught after unwinding thrower and middle.
    assert_eq!(catch(7), 1006);
    assert_eq!(catch(12345), 1010);
    assert_eq!(catch(0), 1, "no exception: middle returns thrower(0) + 1");
    let name = unsafe { lib.get::<extern "C" fn() -> *const c_char>("cxx_global_name") }.unwrap();
    assert_eq!(
        unsafe { CStr::from_ptr(name()) }.to_str().unwrap(),
        "cxx-global"
    );
}

#[test]
fn libstdcxx_is_mapped_by_mmld_when_the_host_has_none() {
    let lib = open("libcxx.so");
    let host_has_it = unsafe {
        let h = libc::dlopen(
            c"libstdc++.so.6".as_ptr(),
            libc::RTLD_NOW | libc::RTLD_NOLOAD,
        );
        if !h.is_null() {
            libc::dlclose(h);
        }
        !h.is_null()
    };
    let mapped: Vec<String> = lib.objects().iter().map(|o| o.name.clone()).collect();
    if host_has_it {
        assert!(
            lib.host_dependencies()
                .iter()
                .any(|n| n == "libstdc++.so.6")
        );
    } else {
        assert!(mapped.iter().any(|n| n == "libstdc++.so.6"), "{mapped:?}");
    }
}

#[test]
fn cxx_static_destructors_run_at_unload() {
    // Only this test opens libcxx_static.so, so dropping the handle unloads it.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("cxx.log");
    let lib = open("libcxx_static.so");
    let constructed =
        unsafe { lib.get::<extern "C" fn() -> i32>("cxx_static_constructed") }.unwrap();
    assert_eq!(constructed(), 1, "static constructor did not run");
    let set_log = unsafe { lib.get::<extern "C" fn(*const c_char)>("cxx_static_set_log") }.unwrap();
    let c = CString::new(log.to_str().unwrap()).unwrap();
    set_log(c.as_ptr());
    assert!(!log.exists(), "destructor ran too early");
    drop(lib);
    let text = std::fs::read_to_string(&log).expect("static destructor did not run at unload");
    assert_eq!(text, "static dtor\n");
}

#[test]
fn cxx_thread_local_destructors_survive_unload() {
    // The thread_local std::string's destructor is registered with
    // __cxa_thread_atexit; the library (and libstdc++) must stay mapped
    // until it has run at thread exit, even though the handle is dropped.
    let lib = Arc::new(open("libcxx.so"));
    let l2 = Arc::clone(&lib);
    let t = std::thread::spawn(move || {
        let append = unsafe { l2.get::<extern "C" fn(i32) -> i32>("cxx_thread_append") }.unwrap();
        assert_eq!(append(3), 3);
        assert_eq!(append(4), 7);
        drop(l2);
    });
    t.join().unwrap();
    let append = unsafe { lib.get::<extern "C" fn(i32) -> i32>("cxx_thread_append") }.unwrap();
    assert_eq!(
        append(2),
        2,
        "the main thread has its own thread_local string"
    );
}

#[test]
fn unique_symbols_bind_to_one_definition_process_wide() {
    let a = open("libcxx_a.so");
    let b = open("libcxx_b.so");
    let bump_a = unsafe { a.get::<extern "C" fn() -> i32>("cxx_a_unique_bump") }.unwrap();
    let bump_b = unsafe { b.get::<extern "C" fn() -> i32>("cxx_b_unique_bump") }.unwrap();
    let first = bump_a();
    assert_eq!(
        bump_b(),
        first + 1,
        "both libraries must share UniqueCounter<int>::value"
    );
    assert_eq!(bump_a(), first + 2);
}

#[test]
fn libxml2_with_icu_and_libstdcxx_mapped_by_mmld_parses_a_document() {
    let out = Command::new(env!("CARGO_BIN_EXE_mmld"))
        .args([
            "run",
            "/usr/lib/x86_64-linux-gnu/libxml2.so.2",
            "xmlCheckVersion",
            "i32:20914",
            "--ret",
            "void",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());

    let lib = unsafe { Library::open("/usr/lib/x86_64-linux-gnu/libxml2.so.2") }.unwrap();
    let names: Vec<String> = lib.objects().iter().map(|o| o.name.clone()).collect();
    assert!(names.iter().any(|n| n.starts_with("libicuuc")), "{names:?}");
    unsafe {
        type ReadMemory =
            extern "C" fn(*const c_char, i32, *const c_char, *const c_char, i32) -> *mut c_void;
        let read = lib.get::<ReadMemory>("xmlReadMemory").unwrap();
        let root = lib
            .get::<extern "C" fn(*mut c_void) -> *mut c_void>("xmlDocGetRootElement")
            .unwrap();
        let get_prop = lib
            .get::<extern "C" fn(*mut c_void, *const c_char) -> *mut c_char>("xmlGetProp")
            .unwrap();
        let free_doc = lib.get::<extern "C" fn(*mut c_void)>("xmlFreeDoc").unwrap();
        let xml_free = lib
            .get::<*const Option<extern "C" fn(*mut c_void)>>("xmlFree")
            .unwrap();
        let doc_text = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><plugin name=\"mmld\" version=\"2\"><child/></plugin>";
        let doc = read(
            doc_text.as_ptr().cast(),
            doc_text.len() as i32,
            c"doc.xml".as_ptr(),
            std::ptr::null(),
            0,
        );
        assert!(!doc.is_null(), "libxml2 failed to parse");
        let node = root(doc);
        assert!(!node.is_null());
        let value = get_prop(node, c"name".as_ptr());
        assert!(!value.is_null());
        assert_eq!(CStr::from_ptr(value).to_str().unwrap(), "mmld");
        if let Some(f) = **xml_free {
            f(value.cast());
        }
        free_doc(doc);
    }
}

#[test]
fn rust_plugin_example_runs_and_reports_its_results() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let plugin_target = target_dir().join("rust-plugin");
    let status = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build",
            "--release",
            "-q",
            "-p",
            "mmld-rust-plugin",
            "--target-dir",
        ])
        .arg(&plugin_target)
        .status()
        .expect("running cargo");
    assert!(status.success(), "building the Rust plugin failed");
    let plugin = plugin_target.join("release/libmmld_rust_plugin.so");
    let host = target_dir().join("examples/plugin_host");
    let out = Command::new(&host)
        .arg(&plugin)
        .output()
        .expect("running plugin_host");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "plugin_host failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no {key} in:\n{stdout}"))
            .to_string()
    };
    assert_eq!(value("first_call"), "1");
    assert_eq!(value("second_call"), "2");
    assert_eq!(
        value("thread_sum"),
        "8000",
        "each thread needs its own thread_local"
    );
    assert_eq!(value("caught_panic"), "-1");
    assert_eq!(value("no_panic"), "42");
    assert_eq!(value("heap_sum"), "499999500000");
    assert!(value("greeting").starts_with("hello, mmld, from a Rust plugin"));
}

#[test]
fn gdb_shows_mmld_loaded_functions_in_a_backtrace() {
    if Command::new("gdb").arg("--version").output().is_err() {
        panic!("gdb is required (installed by .ci/run)");
    }
    let target = target_dir().join("examples/debug_target");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("gdb/mmld.py");
    let out = Command::new("gdb")
        .args(["-batch", "-nx", "-x"])
        .arg(&script)
        .args([
            "-ex",
            "break add",
            "-ex",
            "run",
            "-ex",
            "bt",
            "-ex",
            "info symbol $pc",
            "--args",
        ])
        .arg(&target)
        .arg(testlib("libdemo.so"))
        .output()
        .expect("running gdb");
    let text = String::from_utf8_lossy(&out.stdout);
    // The breakpoint in libdemo was resolved from the symbols the script
    // added, after the host's own dlopen.
    assert!(
        text.contains("Breakpoint 1, ") || text.contains("Breakpoint 1,"),
        "{text}"
    );
    assert!(text.contains("#0  add"), "{text}");
    assert!(
        text.contains("in section .text of") && text.contains("libdemo.so"),
        "{text}"
    );
}

#[test]
fn get_on_a_thread_local_symbol_returns_this_threads_variable() {
    // dlsym semantics: the address of the calling thread's instance.
    let lib = Arc::new(open("libtls.so"));
    let here = *unsafe { lib.get::<*mut i64>("tls_counter") }.unwrap() as usize;
    let own = unsafe { lib.get::<extern "C" fn() -> usize>("tls_counter_addr") }.unwrap();
    assert_eq!(
        here,
        own(),
        "get must agree with the library's own TLS access"
    );
    assert_eq!(unsafe { *(here as *const i64) }, 100);
    let l2 = Arc::clone(&lib);
    let there = std::thread::spawn(move || {
        let p = *unsafe { l2.get::<*mut i64>("tls_counter") }.unwrap() as usize;
        let own = unsafe { l2.get::<extern "C" fn() -> usize>("tls_counter_addr") }.unwrap();
        assert_eq!(p, own());
        p
    })
    .join()
    .unwrap();
    assert_ne!(here, there, "each thread has its own instance");
}
