//! The scope index that answers lookups once a library has served many
//! must answer exactly what walking the scope answers: the first object
//! in scope order that defines the name, the default version only, IFUNCs
//! resolved and TLS for the calling thread (those two through the walk),
//! and misses as `SymbolNotFound` naming the symbol.
//!
//! The walk is `Library::symbol_info`, which never uses the index.

mod common;

use std::collections::BTreeSet;
use std::ffi::c_void;
use std::path::{Path, PathBuf};

use mmld::{ErrorKind, Library};

use common::testlib;

/// Every dynamic symbol name `path` mentions (defined or not), read with
/// goblin: the names a program could ask for, and misses among them.
fn names_in(path: &Path, into: &mut BTreeSet<String>) {
    let bytes = std::fs::read(path).expect("read library");
    let elf = goblin::elf::Elf::parse(&bytes).expect("goblin parses it");
    for sym in elf.dynsyms.iter() {
        if let Some(name) = elf.dynstrtab.get_at(sym.st_name)
            && !name.is_empty()
        {
            into.insert(name.to_string());
        }
    }
}

fn system_lib(name: &str) -> Option<PathBuf> {
    ["/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

fn walk_address(lib: &Library, name: &str) -> Option<u64> {
    lib.symbol_info(name).ok().map(|i| i.address)
}

fn indexed_address(lib: &Library, name: &str) -> Option<u64> {
    // SAFETY: the address is only compared, never used.
    unsafe { lib.get::<*const c_void>(name) }
        .ok()
        .map(|s| *s as u64)
}

/// Look up names until the library has built its index (it waits until
/// the lookups would have paid for it), then compare index and walk for
/// every name of every object in the scope, plus libc's.
fn index_agrees_with_walk(path: &Path, at_least: usize) {
    // SAFETY: test libraries and system libraries with harmless constructors.
    let lib = unsafe { Library::open(path) }.expect("open");
    let mut names = BTreeSet::new();
    for o in lib.objects() {
        names_in(&o.path, &mut names);
    }
    names_in(&system_lib("libc.so.6").expect("libc"), &mut names);
    names.insert("mmld_no_such_symbol_anywhere".into());
    names.insert("x".into());
    assert!(
        lib.indexed_names().is_none(),
        "index built before any lookup"
    );

    let mut asked = 0usize;
    'warm: for _ in 0..1000 {
        for n in &names {
            indexed_address(&lib, n);
            asked += 1;
            if lib.indexed_names().is_some() {
                break 'warm;
            }
        }
    }
    let indexed = lib.indexed_names().expect("index built after many lookups");
    assert!(
        indexed >= at_least,
        "{}: only {indexed} names indexed",
        path.display()
    );
    // It waits until the lookups cost about what building does.
    assert!(
        asked * 2 >= indexed,
        "built after {asked} lookups for {indexed} names: too eagerly"
    );

    let mut found = 0;
    for n in &names {
        let walk = walk_address(&lib, n);
        assert_eq!(
            indexed_address(&lib, n),
            walk,
            "{}: `{n}`: index and scope walk disagree",
            path.display()
        );
        found += usize::from(walk.is_some());
    }
    assert!(
        found >= at_least,
        "{}: only {found} names found",
        path.display()
    );

    // A trailing NUL is accepted; misses and inner NULs are errors that
    // say what they are.
    if let Some(n) = names.iter().find(|n| walk_address(&lib, n).is_some()) {
        let with_nul = format!("{n}\0");
        assert_eq!(indexed_address(&lib, &with_nul), walk_address(&lib, n));
    }
    // SAFETY: never called.
    let miss =
        unsafe { lib.get::<*const c_void>("mmld_no_such_symbol_anywhere") }.expect_err("a miss");
    match miss.kind() {
        ErrorKind::SymbolNotFound { name, version } => {
            assert_eq!(name, "mmld_no_such_symbol_anywhere");
            assert!(version.is_none());
        }
        other => panic!("miss gave {other:?}"),
    }
    assert_eq!(miss.file(), lib.path());
    assert!(miss.to_string().contains("mmld_no_such_symbol_anywhere"));
    let long = "a_name_longer_than_the_inline_buffer_of_the_error_value_xyz";
    // SAFETY: never called.
    let long_miss = unsafe { lib.get::<*const c_void>(long) }.expect_err("a miss");
    assert!(long_miss.to_string().contains(long), "{long_miss}");
    // SAFETY: never called.
    let inner = unsafe { lib.get::<*const c_void>("printf\0x") }.expect_err("inner NUL");
    assert!(
        matches!(inner.kind(), ErrorKind::InvalidSymbolName { .. }),
        "{inner}"
    );
}

#[test]
fn index_agrees_with_walk_for_interposed_names() {
    // libitop's scope defines `interposed_name` in several objects.
    index_agrees_with_walk(&testlib("interpose/libitop.so"), 3);
}

#[test]
fn index_agrees_with_walk_for_versions_ifunc_and_tls() {
    // libifunc.so needs no libc (its scope is itself), libtls.so only ld.so.
    for (lib, at_least) in [
        ("libversioned.so", 1000),
        ("libifunc.so", 3),
        ("libtls.so", 20),
        ("libdemo.so", 1000),
    ] {
        index_agrees_with_walk(&testlib(lib), at_least);
    }
}

#[test]
fn index_agrees_with_walk_for_system_libraries() {
    for name in ["libsqlite3.so.0", "libxml2.so.2", "libz.so.1"] {
        match system_lib(name) {
            Some(p) => index_agrees_with_walk(&p, 1000),
            None => panic!("{name} is not installed (.ci/run installs it)"),
        }
    }
}
