//! The host loads and unloads libraries between mmld loads: each mmld load
//! must see the host as it is then (mmld caches what it read of the host
//! across loads), compared with glibc doing the same sequence in a fresh
//! process of its own.
//!
//! The sequence: glibc opens provider A (global); a library loaded next
//! binds `prov_value` to A. glibc opens provider B (global): the next load
//! binds `provb_only`, which only B defines, and still `prov_value` to A
//! (the global scope is in load order). glibc closes its handle on A and
//! both consumers are closed: A's last reference goes, so A is unloaded.
//! The last load must bind `prov_value` to B; a stale view of the host
//! would still search A's tables, which are no longer mapped. Before all
//! that, mmld loads enough to build (and keep) its combined filter of the
//! host's global scope, which each change must replace.

mod common;

use std::ffi::{CString, c_int};
use std::path::{Path, PathBuf};
use std::process::Command;

use mmld::Library;

const PROVIDER_A: &str = "int prov_value(void) { return 1; }\n\
                          int prova_only(void) { return 10; }\n";
const PROVIDER_B: &str = "int prov_value(void) { return 2; }\n\
                          int provb_only(void) { return 20; }\n";
const CONSUMER_1: &str = "extern int prov_value(void);\n\
                          int consume(void) { return prov_value(); }\n";
const CONSUMER_2: &str = "extern int prov_value(void);\n\
                          extern int provb_only(void);\n\
                          int consume(void) { return prov_value() * 100 + provb_only(); }\n";
const CONSUMER_3: &str = CONSUMER_1;

/// The same sequence with glibc's `dlopen` for every library.
const ORACLE: &str = r#"
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

static char path[4096];
static const char *lib(const char *dir, const char *name) {
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}
static void *must(void *h, const char *what) {
    if (!h) { printf("%s failed: %s\n", what, dlerror()); }
    return h;
}
static int consume(void *h) {
    int (*f)(void) = (int (*)(void))dlsym(h, "consume");
    return f ? f() : -1;
}
int main(int argc, char **argv) {
    const char *dir = argv[1];
    void *a = must(dlopen(lib(dir, "libprova.so"), RTLD_NOW | RTLD_GLOBAL), "provider A");
    void *c1 = must(dlopen(lib(dir, "libcons1.so"), RTLD_NOW), "consumer 1");
    printf("consumer 1: %d\n", consume(c1));
    void *b = must(dlopen(lib(dir, "libprovb.so"), RTLD_NOW | RTLD_GLOBAL), "provider B");
    void *c2 = must(dlopen(lib(dir, "libcons2.so"), RTLD_NOW), "consumer 2");
    printf("consumer 2: %d\n", consume(c2));
    dlclose(a);
    dlclose(c1);
    dlclose(c2);
    printf("provider A loaded: %s\n",
           dlopen(lib(dir, "libprova.so"), RTLD_NOW | RTLD_NOLOAD) ? "yes" : "no");
    void *c3 = must(dlopen(lib(dir, "libcons3.so"), RTLD_NOW), "consumer 3");
    printf("consumer 3: %d\n", consume(c3));
    (void)b;
    return 0;
}
"#;

fn build_all(dir: &Path) {
    for (name, src) in [
        ("libprova.so", PROVIDER_A),
        ("libprovb.so", PROVIDER_B),
        ("libcons1.so", CONSUMER_1),
        ("libcons2.so", CONSUMER_2),
        ("libcons3.so", CONSUMER_3),
    ] {
        common::build_c_library(dir, name, src, &[]);
    }
}

fn glibc_dlopen(path: &Path, flags: c_int) -> *mut libc::c_void {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path; these test libraries have no
    // constructors.
    unsafe { libc::dlopen(c.as_ptr(), flags) }
}

fn consume(lib: &Library) -> c_int {
    // SAFETY: `consume` is `int consume(void)` in every consumer.
    let f = unsafe { lib.get::<extern "C" fn() -> c_int>("consume") }.expect("consume");
    f()
}

/// The sequence with glibc for the providers and mmld for the consumers.
fn with_mmld(dir: &Path) -> String {
    let mut out = String::new();
    let open = |name: &str| {
        // SAFETY: our own test libraries, without constructors.
        unsafe { Library::open(dir.join(name)) }.unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    // Enough lookups in the host's global scope that mmld builds its
    // combined filter of that scope and keeps it for later loads: the
    // changes below must replace it, not reuse it.
    for _ in 0..8 {
        // SAFETY: the system zlib has no constructor of consequence.
        drop(unsafe { Library::open(common::LIBZ) }.expect("load libz"));
    }
    let a = glibc_dlopen(&dir.join("libprova.so"), libc::RTLD_NOW | libc::RTLD_GLOBAL);
    assert!(!a.is_null(), "glibc refused provider A");
    let c1 = open("libcons1.so");
    out += &format!("consumer 1: {}\n", consume(&c1));
    let b = glibc_dlopen(&dir.join("libprovb.so"), libc::RTLD_NOW | libc::RTLD_GLOBAL);
    assert!(!b.is_null(), "glibc refused provider B");
    let c2 = open("libcons2.so");
    out += &format!("consumer 2: {}\n", consume(&c2));
    // SAFETY: a handle glibc gave us, closed once.
    unsafe { libc::dlclose(a) };
    drop(c1);
    drop(c2);
    let still = glibc_dlopen(&dir.join("libprova.so"), libc::RTLD_NOW | libc::RTLD_NOLOAD);
    out += &format!(
        "provider A loaded: {}\n",
        if still.is_null() { "no" } else { "yes" }
    );
    let c3 = open("libcons3.so");
    out += &format!("consumer 3: {}\n", consume(&c3));
    out
}

fn with_glibc(dir: &Path) -> String {
    let src = dir.join("oracle.c");
    std::fs::write(&src, ORACLE).expect("write the oracle");
    let exe: PathBuf = dir.join("oracle");
    let built = Command::new("gcc")
        .args(["-O1", "-Wall", "-o"])
        .arg(&exe)
        .arg(&src)
        .arg("-ldl")
        .status()
        .expect("run gcc");
    assert!(built.success(), "gcc failed to build the oracle");
    let out = Command::new(&exe)
        .arg(dir)
        .output()
        .expect("run the oracle");
    assert!(out.status.success(), "the oracle failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn loads_see_what_glibc_loaded_and_unloaded_in_between() {
    // A fresh process: no other test's libraries in the global scope.
    if !common::run_in_child("loads_see_what_glibc_loaded_and_unloaded_in_between") {
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    build_all(dir.path());
    let glibc = with_glibc(dir.path());
    assert_eq!(
        glibc, "consumer 1: 1\nconsumer 2: 120\nprovider A loaded: no\nconsumer 3: 2\n",
        "glibc's own behaviour changed: the expectations of this test no longer hold"
    );
    assert_eq!(with_mmld(dir.path()), glibc);
}

/// The host `dlopen`ed a library (local) before mmld's first look at the
/// host: it is not a start-up object, so it is neither in the global scope
/// nor kept without a reference. A library needing its symbol fails to
/// load with mmld as with glibc, and glibc can still unload it.
#[test]
fn a_library_the_host_opened_first_is_not_taken_for_a_start_up_one() {
    if !common::run_in_child("a_library_the_host_opened_first_is_not_taken_for_a_start_up_one") {
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    build_all(dir.path());
    let provider = dir.path().join("libprova.so");
    let a = glibc_dlopen(&provider, libc::RTLD_NOW | libc::RTLD_LOCAL);
    assert!(!a.is_null(), "glibc refused provider A");
    let consumer = dir.path().join("libcons1.so");
    // SAFETY: our own test library, without constructors.
    let mmld = unsafe { Library::open(&consumer) };
    let glibc = glibc_dlopen(&consumer, libc::RTLD_NOW);
    assert!(glibc.is_null(), "glibc bound to a local library");
    assert!(
        mmld.is_err(),
        "mmld bound to a library outside the global scope"
    );
    // SAFETY: a handle glibc gave us, closed once.
    unsafe { libc::dlclose(a) };
    let still = glibc_dlopen(&provider, libc::RTLD_NOW | libc::RTLD_NOLOAD);
    assert!(still.is_null(), "mmld kept the host's library loaded");
}
