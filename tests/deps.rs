//! Dependency trees: search order, scopes, load and unload order, reference
//! counts, failures, and the `deps`/`check` commands, checked against glibc.
//!
//! Most tests are scripts of open/close/call steps (the step language of
//! `testlibs/glibc_oracle.c`) replayed twice, each in a fresh process: once
//! by `glibc_oracle`, a small C program that performs the steps with the
//! host's `dlopen`/`dlclose`/`dlsym`, and once by this test binary itself
//! with mmld (the hidden `replay_child` test, run as a child with the script
//! in `MMLD_REPLAY`). The two outputs must be equal; the expected lines are
//! also written out, so each test documents what glibc 2.36 does. Fresh
//! processes keep the scripts independent of each other and of parallel
//! tests (constructor logs, reference counts, `/proc/self/maps`,
//! `LD_LIBRARY_PATH`, `LD_PRELOAD`).
//!
//! The libraries are in `testlibs/` (see its README): the diamond
//! (`diamond/`), the `DT_RPATH` chain (`rpath/`), the interposition chain
//! (`interpose/`), the cycle (`cycle/`), `nodelete/`, and `liborderlog.so`,
//! which records constructor and destructor calls.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Mutex;

#[path = "common/oracle.rs"]
mod oracle;

use mmld::{Library, OpenOptions};
use oracle::{replay_glibc, replay_mmld, same_as_glibc, say};
use procfs::process::MMapPath;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

// ---------------------------------------------------------------------------
// The replay machinery.

/// Serialises the tests that load libraries into this process (the
/// scripts run in child processes and need no lock).
static IN_PROCESS: Mutex<()> = Mutex::new(());

fn in_process_lock() -> std::sync::MutexGuard<'static, ()> {
    IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Not a test of its own: the mmld side of a replay, run by `replay_mmld`
/// in a child process. Without `MMLD_REPLAY` it does nothing.
#[test]
fn replay_child() {
    let Ok(script) = std::env::var("MMLD_REPLAY") else {
        return;
    };
    let steps: Vec<&str> = script.lines().collect();
    replay(&steps);
}

/// `/proc/self/maps` without the `[heap]` line (malloc may grow the heap;
/// nothing else may change across a failed load).
fn maps_without_heap() -> String {
    self_maps()
        .iter()
        .filter(|m| m.pathname != MMapPath::Heap)
        .map(|m| {
            let (s, e) = m.address;
            let (major, minor) = m.dev;
            format!(
                "{s:x}-{e:x} {} {:08x} {major:02x}:{minor:02x} {} {:?}\n",
                m.perms.as_str(),
                m.offset,
                m.inode,
                m.pathname
            )
        })
        .collect()
}

/// `/proc/self/maps`, through procfs.
fn self_maps() -> procfs::process::MemoryMaps {
    procfs::process::Process::myself()
        .and_then(|p| p.maps())
        .expect("read /proc/self/maps")
}

/// Whether `/proc/self/maps` maps the file at `path` (by real path).
fn is_mapped(path: &str) -> bool {
    let Ok(real) = std::fs::canonicalize(path) else {
        return false;
    };
    self_maps()
        .iter()
        .any(|m| m.pathname == MMapPath::Path(real.clone()))
}

type StrFn = unsafe extern "C" fn() -> *const c_char;
type IntFn = unsafe extern "C" fn() -> c_int;

/// The mmld side of the step language (see `testlibs/glibc_oracle.c`),
/// plus two mmld-only steps: `base:N` prints the handle's base address and
/// `object:N:NAME` the base address of object NAME of its local scope.
fn replay(steps: &[&str]) {
    let mut handles: Vec<Option<Library>> = Vec::new();
    let mut snapshot: Option<String> = None;
    for step in steps {
        let parts: Vec<&str> = step.split(':').collect();
        let arg = |i: usize| parts.get(i).copied().unwrap_or("");
        let handle = |i: usize| -> &Library {
            let n: usize = arg(i).parse().expect("a handle number");
            handles
                .get(n)
                .and_then(Option::as_ref)
                .unwrap_or_else(|| panic!("step {step}: no open handle {n}"))
        };
        match parts.first().copied().unwrap_or("") {
            "open" => {
                let mut options = OpenOptions::new();
                for flag in parts.iter().skip(2) {
                    match *flag {
                        "global" => options.global(true),
                        "deepbind" => options.deep_bind(true),
                        "nodelete" => options.nodelete(true),
                        "noload" => options.no_load(true),
                        other => panic!("unknown open flag {other}"),
                    };
                }
                // SAFETY: the test libraries' constructors only log.
                match unsafe { options.open(arg(1)) } {
                    Ok(lib) => handles.push(Some(lib)),
                    Err(e) => {
                        say(format!("error:open:{e}"));
                        handles.push(None);
                    }
                }
            }
            "close" => {
                let n: usize = arg(1).parse().expect("a handle number");
                drop(handles.get_mut(n).and_then(Option::take));
            }
            "str" | "int" => {
                let lib = handle(1);
                let name = arg(2);
                let value = if parts[0] == "str" {
                    // SAFETY: the script names a `const char *f(void)`.
                    let f = unsafe { lib.get::<StrFn>(name) }.expect("lookup");
                    // SAFETY: the functions return static strings.
                    unsafe { CStr::from_ptr(f()) }
                        .to_string_lossy()
                        .into_owned()
                } else {
                    // SAFETY: the script names an `int f(void)`.
                    let f = unsafe { lib.get::<IntFn>(name) }.expect("lookup");
                    // SAFETY: as above.
                    unsafe { f() }.to_string()
                };
                say(format!("{name}={value}"));
            }
            "log" => {
                // SAFETY: liborderlog's `const char *orderlog_read(void)`.
                let f = unsafe { handle(1).get::<StrFn>("orderlog_read") }.expect("lookup");
                // SAFETY: returns its static buffer.
                let log = unsafe { CStr::from_ptr(f()) }
                    .to_string_lossy()
                    .into_owned();
                say(format!("log={log}"));
            }
            "clear" => {
                // SAFETY: liborderlog's `void orderlog_clear(void)`.
                let f = unsafe { handle(1).get::<unsafe extern "C" fn()>("orderlog_clear") }
                    .expect("lookup");
                // SAFETY: as above.
                unsafe { f() };
            }
            "mapped" => {
                let yes = if is_mapped(arg(1)) { "yes" } else { "no" };
                say(format!("mapped:{}={yes}", arg(1)));
            }
            "same" => {
                let same = handle(1).base_address() == handle(2).base_address();
                say(format!(
                    "same:{}:{}={}",
                    arg(1),
                    arg(2),
                    if same { "yes" } else { "no" }
                ));
            }
            "base" => say(format!("base:{}={:#x}", arg(1), handle(1).base_address())),
            "object" => {
                let objects = handle(1).objects();
                let base = objects
                    .iter()
                    .find(|o| o.name == arg(2))
                    .map(|o| format!("{:#x}", o.base))
                    .unwrap_or_else(|| "none".to_owned());
                say(format!("object:{}:{}={base}", arg(1), arg(2)));
            }
            "snapshot" => snapshot = Some(maps_without_heap()),
            // Every handle stays open: destructors run at exit.
            "exit" => std::process::exit(0),
            "unchanged" => {
                let now = maps_without_heap();
                if snapshot.as_deref() == Some(now.as_str()) {
                    say("unchanged=yes");
                } else {
                    say("unchanged=no");
                    for line in now.lines() {
                        say(line);
                    }
                }
            }
            "default" => {
                let found = mmld::lookup_default(arg(1)).is_ok();
                say(format!("default:{}={}", arg(1), found_or_none(found)));
            }
            "this" => {
                let this = Library::this();
                // SAFETY: only the address is looked at.
                let found = unsafe { this.get::<*const c_void>(arg(1)) }.is_ok();
                say(format!("this:{}={}", arg(1), found_or_none(found)));
            }
            "hostopen" => {
                let path = std::ffi::CString::new(arg(1)).expect("a path without NUL");
                // SAFETY: the host's own loader loads a system library; the
                // handle is kept for the life of the process.
                let h = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW) };
                assert!(!h.is_null(), "the host could not load {}", arg(1));
            }
            "env" => {
                let value = std::env::var(arg(1)).unwrap_or_else(|_| "unset".to_owned());
                say(format!("env:{}={value}", arg(1)));
            }
            other => panic!("unknown step {other}"),
        }
    }
}

fn found_or_none(found: bool) -> &'static str {
    if found { "found" } else { "none" }
}

const LOG: &str = "open:testlibs/liborderlog.so";

// ---------------------------------------------------------------------------
// Constructor and destructor order.

#[test]
fn destructors_at_exit_run_in_glibcs_order() {
    // Libraries still open when the process exits: glibc's _dl_fini sorts
    // every loaded object and finalises the executable first; mmld's block
    // must come out in the same order as glibc's dlopened libraries.
    // liborderlog, which everything needs, goes last and writes the log.
    let dir = tempfile::tempdir().expect("temporary directory");
    let steps = [
        LOG,
        "open:testlibs/diamond/libdtop.so",
        "open:testlibs/cycle/libcyca.so",
        "open:testlibs/rpath/libchaintop.so",
        "clear:0",
        "exit",
    ];
    let logged = |who: &str| {
        let path = dir.path().join(who);
        let env = [("MMLD_ORDERLOG_EXIT", path.to_str().expect("UTF-8 path"))];
        match who {
            "glibc" => replay_glibc(&steps, &env),
            _ => replay_mmld(&steps, &env),
        };
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{who} wrote no log: {e}"))
    };
    let glibc = logged("glibc");
    assert!(
        glibc.contains("fini:top") && glibc.contains("fini:cyca"),
        "{glibc}"
    );
    assert_eq!(logged("mmld"), glibc);
}

#[test]
fn diamond_runs_constructors_and_destructors_in_glibc_order() {
    // glibc sorts with _dl_sort_maps (DFS from the last object of the
    // breadth-first list backwards): right's constructor runs before
    // left's, not after as a post-order walk from top would have it.
    same_as_glibc(
        &[
            LOG,
            "open:testlibs/diamond/libdtop.so",
            "int:1:diamond_sum",
            "log:0",
            "clear:0",
            "close:1",
            "log:0",
            "mapped:testlibs/diamond/libdtop.so",
            "mapped:testlibs/diamond/lib/libdbase.so",
        ],
        &[],
        &[
            "diamond_sum=32",
            "log=init:base,init:right,init:left,init:top",
            "log=fini:top,fini:left,fini:right,fini:base",
            "mapped:testlibs/diamond/libdtop.so=no",
            "mapped:testlibs/diamond/lib/libdbase.so=no",
        ],
    );
}

#[test]
fn cycle_loads_and_unloads_in_glibc_order() {
    // The library opened runs last (glibc forces it to the front of the
    // sorted list); at unload the traversal from the later-loaded half
    // gives the same order again, not the reverse.
    same_as_glibc(
        &[
            LOG,
            "open:testlibs/cycle/libcyca.so",
            "int:1:cyca_sum",
            "int:1:cycb_sum",
            "log:0",
            "clear:0",
            "close:1",
            "log:0",
            "mapped:testlibs/cycle/libcyca.so",
            "mapped:testlibs/cycle/libcycb.so",
        ],
        &[],
        &[
            "cyca_sum=21",
            "cycb_sum=12",
            "log=init:cycb,init:cyca",
            "log=fini:cycb,fini:cyca",
            "mapped:testlibs/cycle/libcyca.so=no",
            "mapped:testlibs/cycle/libcycb.so=no",
        ],
    );
    same_as_glibc(
        &[
            LOG,
            "open:testlibs/cycle/libcycb.so",
            "log:0",
            "clear:0",
            "close:1",
            "log:0",
        ],
        &[],
        &["log=init:cyca,init:cycb", "log=fini:cyca,fini:cycb"],
    );
    // Both halves opened directly: the cycle stays until the last handle.
    same_as_glibc(
        &[
            LOG,
            "open:testlibs/cycle/libcycb.so",
            "open:testlibs/cycle/libcyca.so",
            "same:1:2",
            "log:0",
            "clear:0",
            "close:1",
            "log:0",
            "mapped:testlibs/cycle/libcycb.so",
            "close:2",
            "log:0",
            "mapped:testlibs/cycle/libcycb.so",
        ],
        &[],
        &[
            "same:1:2=no",
            "log=init:cyca,init:cycb",
            "log=",
            "mapped:testlibs/cycle/libcycb.so=yes",
            "log=fini:cyca,fini:cycb",
            "mapped:testlibs/cycle/libcycb.so=no",
        ],
    );
}

// ---------------------------------------------------------------------------
// Reference counts.

#[test]
fn shared_dependencies_unload_with_their_last_user() {
    // left opened on its own, then top: dropping top unloads top and right
    // only; dropping left then unloads left and base.
    same_as_glibc(
        &[
            LOG,
            "open:testlibs/diamond/lib/libdleft.so",
            "open:testlibs/diamond/libdtop.so",
            "log:0",
            "clear:0",
            "close:2",
            "log:0",
            "mapped:testlibs/diamond/libdtop.so",
            "mapped:testlibs/diamond/lib/libdright.so",
            "mapped:testlibs/diamond/lib/libdleft.so",
            "mapped:testlibs/diamond/lib/libdbase.so",
            "close:1",
            "log:0",
            "mapped:testlibs/diamond/lib/libdleft.so",
            "mapped:testlibs/diamond/lib/libdbase.so",
        ],
        &[],
        &[
            "log=init:base,init:left,init:right,init:top",
            "log=fini:top,fini:right",
            "mapped:testlibs/diamond/libdtop.so=no",
            "mapped:testlibs/diamond/lib/libdright.so=no",
            "mapped:testlibs/diamond/lib/libdleft.so=yes",
            "mapped:testlibs/diamond/lib/libdbase.so=yes",
            "log=fini:top,fini:right,fini:left,fini:base",
            "mapped:testlibs/diamond/lib/libdleft.so=no",
            "mapped:testlibs/diamond/lib/libdbase.so=no",
        ],
    );
    // The other way round: top first, then left (already loaded, only
    // counted); dropping top first still keeps left and base.
    same_as_glibc(
        &[
            LOG,
            "open:testlibs/diamond/libdtop.so",
            "open:testlibs/diamond/lib/libdleft.so",
            "log:0",
            "clear:0",
            "close:1",
            "log:0",
            "mapped:testlibs/diamond/lib/libdleft.so",
            "close:2",
            "log:0",
            "mapped:testlibs/diamond/lib/libdbase.so",
        ],
        &[],
        &[
            "log=init:base,init:right,init:left,init:top",
            "log=fini:top,fini:right",
            "mapped:testlibs/diamond/lib/libdleft.so=yes",
            "log=fini:top,fini:right,fini:left,fini:base",
            "mapped:testlibs/diamond/lib/libdbase.so=no",
        ],
    );
}

#[test]
fn nodelete_libraries_stay_mapped() {
    same_as_glibc(
        &[
            "open:testlibs/nodelete/libnodel.so",
            "int:0:nodel_value",
            "close:0",
            "mapped:testlibs/nodelete/libnodel.so",
            "mapped:testlibs/nodelete/libnodeldep.so",
            "open:testlibs/nodelete/libkeep.so:nodelete",
            "close:1",
            "mapped:testlibs/nodelete/libkeep.so",
        ],
        &[],
        &[
            "nodel_value=107",
            "mapped:testlibs/nodelete/libnodel.so=yes",
            "mapped:testlibs/nodelete/libnodeldep.so=yes",
            "mapped:testlibs/nodelete/libkeep.so=yes",
        ],
    );
}

// ---------------------------------------------------------------------------
// Symbol scopes.

#[test]
fn interposition_follows_the_scope_order() {
    // Local scope only: libimid's definition is first in libitop's
    // breadth-first scope, so it interposes libibottom's own.
    same_as_glibc(
        &[
            "open:testlibs/interpose/libitop.so",
            "str:0:top_calls",
            "str:0:top_calls_bottom",
            "str:0:interposed_name",
        ],
        &[],
        &[
            "top_calls=mid",
            "top_calls_bottom=mid",
            "interposed_name=mid",
        ],
    );
    // A library opened with the global option comes before every local
    // scope; a lookup on a handle still searches only its local scope.
    same_as_glibc(
        &[
            "open:testlibs/interpose/libiglobal.so:global",
            "open:testlibs/interpose/libitop.so",
            "str:1:top_calls",
            "str:1:top_calls_bottom",
            "str:1:interposed_name",
        ],
        &[],
        &[
            "top_calls=global",
            "top_calls_bottom=global",
            "interposed_name=mid",
        ],
    );
    // deep_bind puts the local scope first.
    same_as_glibc(
        &[
            "open:testlibs/interpose/libiglobal.so:global",
            "open:testlibs/interpose/libitop.so:deepbind",
            "str:1:top_calls",
            "str:1:top_calls_bottom",
        ],
        &[],
        &["top_calls=mid", "top_calls_bottom=mid"],
    );
    // Without the global option libiglobal is in nobody's scope.
    same_as_glibc(
        &[
            "open:testlibs/interpose/libiglobal.so",
            "open:testlibs/interpose/libitop.so",
            "str:1:top_calls_bottom",
        ],
        &[],
        &["top_calls_bottom=mid"],
    );
    // A library loaded before and opened on its own is not in the global
    // scope either.
    same_as_glibc(
        &[
            "open:testlibs/interpose/libibottom.so",
            "open:testlibs/interpose/libitop.so",
            "str:0:bottom_calls",
            "str:1:top_calls_bottom",
        ],
        &[],
        &["bottom_calls=bottom", "top_calls_bottom=bottom"],
    );
    // The local scope is one breadth-first walk, also through libraries
    // loaded before (libitop's tree here): libiscope -> libitop,
    // libiother -> libimid -> libibottom puts libiother before libimid.
    same_as_glibc(
        &[
            "open:testlibs/interpose/libiscope.so",
            "str:0:scope_calls",
            "open:testlibs/interpose/libitop.so",
            "open:testlibs/interpose/libiscope.so",
            "str:2:scope_calls",
        ],
        &[],
        &["scope_calls=other", "scope_calls=other"],
    );
    same_as_glibc(
        &[
            "open:testlibs/interpose/libitop.so",
            "open:testlibs/interpose/libiscope.so",
            "str:1:scope_calls",
        ],
        &[],
        &["scope_calls=other"],
    );
    // The global option puts the library's whole local scope in the global
    // scope: libimid's definition (libitop has none) wins for a library
    // loaded later.
    same_as_glibc(
        &[
            "open:testlibs/interpose/libitop.so:global",
            "open:testlibs/interpose/libinosymbolic.so",
            "str:1:self_calls",
        ],
        &[],
        &["self_calls=mid"],
    );
    // The global scope is in the order libraries joined it, not load
    // order: libitop's tree, loaded first but made global after libiglobal,
    // comes after it.
    same_as_glibc(
        &[
            "open:testlibs/interpose/libitop.so",
            "open:testlibs/interpose/libiglobal.so:global",
            "open:testlibs/interpose/libitop.so:global",
            "open:testlibs/interpose/libinosymbolic.so",
            "str:3:self_calls",
        ],
        &[],
        &["self_calls=global"],
    );
}

#[test]
fn dt_symbolic_binds_a_library_to_itself() {
    same_as_glibc(
        &[
            "open:testlibs/interpose/libiglobal.so:global",
            "open:testlibs/interpose/libisymbolic.so",
            "open:testlibs/interpose/libinosymbolic.so",
            "str:1:self_calls",
            "str:2:self_calls",
        ],
        &[],
        &["self_calls=symbolic", "self_calls=global"],
    );
}

#[test]
fn global_scope_includes_the_host_executable_and_preloads() {
    // LD_PRELOAD puts libiglobal in the host's own global scope, which
    // comes before any library mmld loads.
    let preload = format!("{ROOT}/testlibs/interpose/libiglobal.so");
    same_as_glibc(
        &[
            "open:testlibs/interpose/libitop.so",
            "str:0:top_calls_bottom",
        ],
        &[("LD_PRELOAD", &preload)],
        &["top_calls_bottom=global"],
    );
}

#[test]
fn bindings_keep_their_providers_loaded() {
    // libitop's tree bound interposed_name to libiglobal; closing
    // libiglobal's handle must not unmap it under them (glibc records a
    // relocation dependency, l_reldeps).
    same_as_glibc(
        &[
            "open:testlibs/interpose/libiglobal.so:global",
            "open:testlibs/interpose/libitop.so",
            "close:0",
            "mapped:testlibs/interpose/libiglobal.so",
            "str:1:top_calls_bottom",
            "close:1",
            "mapped:testlibs/interpose/libiglobal.so",
        ],
        &[],
        &[
            "mapped:testlibs/interpose/libiglobal.so=yes",
            "top_calls_bottom=global",
            "mapped:testlibs/interpose/libiglobal.so=no",
        ],
    );
    // libibottom's call bound to libimid, which libibottom does not need:
    // keeping libibottom open keeps libimid too.
    same_as_glibc(
        &[
            "open:testlibs/interpose/libitop.so",
            "open:testlibs/interpose/libibottom.so",
            "close:0",
            "mapped:testlibs/interpose/libitop.so",
            "mapped:testlibs/interpose/libimid.so",
            "str:1:bottom_calls",
            "close:1",
            "mapped:testlibs/interpose/libimid.so",
        ],
        &[],
        &[
            "mapped:testlibs/interpose/libitop.so=no",
            "mapped:testlibs/interpose/libimid.so=yes",
            "bottom_calls=mid",
            "mapped:testlibs/interpose/libimid.so=no",
        ],
    );
}

// ---------------------------------------------------------------------------
// Finding files.

#[test]
fn same_file_by_another_path_is_one_library() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let link = dir.path().join("base-link.so");
    std::os::unix::fs::symlink(format!("{ROOT}/testlibs/diamond/lib/libdbase.so"), &link)
        .expect("symlink");
    let link = link.to_string_lossy().into_owned();
    let open_link = format!("open:{link}");
    // A symlink and a path with `..` in it: the same object (glibc compares
    // device and inode too).
    same_as_glibc(
        &[
            LOG,
            "open:testlibs/diamond/lib/libdbase.so",
            &open_link,
            "open:testlibs/diamond/../diamond/lib/libdbase.so",
            "same:1:2",
            "same:1:3",
            "log:0",
        ],
        &[],
        &["same:1:2=yes", "same:1:3=yes", "log=init:base"],
    );
    // A dependency already loaded through the symlink is reused by soname:
    // the diamond's libdbase is the object at the same base address.
    // ($ORIGIN of the symlink is its own directory, as in glibc, so
    // liborderlog is loaded first.)
    let lines = replay_mmld(
        &[
            LOG,
            &open_link,
            "open:testlibs/diamond/libdtop.so",
            "base:1",
            "object:2:libdbase.so",
        ],
        &[],
    );
    let base = lines[0].strip_prefix("base:1=").expect("base line");
    assert_eq!(
        lines[1],
        format!("object:2:libdbase.so={base}"),
        "{lines:?}"
    );
}

#[test]
fn ld_library_path_comes_before_runpath_but_after_rpath() {
    // testlibs/alt holds other builds of libdbase.so and libchainleaf.so
    // (same sonames) that say "alt". The diamond finds its libdbase through
    // DT_RUNPATH, which LD_LIBRARY_PATH precedes; libchaintop's DT_RPATH
    // precedes LD_LIBRARY_PATH, also for libchainmid's needs; the RUNPATH
    // variant of libchaintop loads only thanks to LD_LIBRARY_PATH.
    let env = [("LD_LIBRARY_PATH", "testlibs/alt")];
    same_as_glibc(
        &[
            "open:testlibs/diamond/libdtop.so",
            "str:0:diamond_base_name",
            "open:testlibs/rpath/libchaintop.so",
            "str:1:chain_leaf_name",
        ],
        &env,
        &["diamond_base_name=alt", "chain_leaf_name=leaf"],
    );
    same_as_glibc(
        &[
            "open:testlibs/rpath/libchaintop_runpath.so",
            "str:0:chain_leaf_name",
        ],
        &env,
        &["chain_leaf_name=alt"],
    );
    // Without it, the RUNPATH variant fails: DT_RUNPATH applies to the
    // object's own DT_NEEDED entries only, unlike DT_RPATH.
    same_as_glibc(
        &[
            "open:testlibs/rpath/libchaintop_runpath.so",
            "open:testlibs/rpath/libchaintop.so",
            "str:1:chain_leaf_name",
        ],
        &[],
        &["error:open", "chain_leaf_name=leaf"],
    );
    // The CLI reads LD_LIBRARY_PATH per load, from its environment.
    let o = mmld_cli(
        &[
            "run",
            "testlibs/diamond/libdtop.so",
            "diamond_base_name",
            "--ret",
            "str",
        ],
        &env,
    );
    assert_eq!(stdout(&o), "alt\n", "{}", stderr(&o));
    // $ORIGIN in LD_LIBRARY_PATH is the executable's directory: mmld and
    // the oracle both sit two levels below the package root.
    let origin_env = [("LD_LIBRARY_PATH", "$ORIGIN/../../testlibs/alt")];
    let o = mmld_cli(
        &[
            "run",
            "testlibs/diamond/libdtop.so",
            "diamond_base_name",
            "--ret",
            "str",
        ],
        &origin_env,
    );
    assert_eq!(stdout(&o), "alt\n", "{}", stderr(&o));
    assert_eq!(
        replay_glibc(
            &[
                "open:testlibs/diamond/libdtop.so",
                "str:0:diamond_base_name"
            ],
            &origin_env
        ),
        ["diamond_base_name=alt"]
    );
    let o = mmld_cli(&["deps", "testlibs/diamond/libdtop.so"], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!(
            "        libdbase.so => {ROOT}/testlibs/alt/libdbase.so [mmld, LD_LIBRARY_PATH]\n"
        )),
        "{}",
        stdout(&o)
    );
}

#[test]
fn failed_load_leaves_nothing_behind() {
    // Warm up first (the host's libc handle, ld.so.cache, thread arenas),
    // then fail in two ways deep in a tree: a missing library two levels
    // down, and an unresolved symbol in a dependency. Every mapping of the
    // failed loads is gone and none of their constructors ran.
    same_as_glibc(
        &[
            LOG,
            "open:testlibs/diamond/libdtop.so",
            "close:1",
            "open:testlibs/libcheckbad.so",
            "clear:0",
            "snapshot",
            "open:testlibs/rpath/libchaintop_runpath.so",
            "unchanged",
            "open:testlibs/libcheckbad.so",
            "unchanged",
            "log:0",
        ],
        &[],
        &[
            "error:open",
            "error:open",
            "unchanged=yes",
            "error:open",
            "unchanged=yes",
            "log=",
        ],
    );
}

/// Run the `mmld` binary from the package root with `env` added.
fn mmld_cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmld"))
        .current_dir(ROOT)
        .env_remove("MMLD_TRACE")
        .env_remove("LD_LIBRARY_PATH")
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("run mmld")
}

fn stdout(o: &Output) -> String {
    text(&o.stdout)
}

fn stderr(o: &Output) -> String {
    text(&o.stderr)
}

#[test]
fn missing_dependency_names_it_its_needer_and_every_place_searched() {
    let o = mmld_cli(
        &[
            "run",
            "testlibs/rpath/libchaintop_runpath.so",
            "chain_leaf_name",
            "--ret",
            "str",
        ],
        &[("LD_LIBRARY_PATH", "/nonexistent/a:/nonexistent/b")],
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "");
    // libchainmid has no search path and libchaintop_runpath's DT_RUNPATH
    // does not apply to it: LD_LIBRARY_PATH, (no ld.so.cache entry), then
    // the default directories.
    let expected = "cannot find libchainleaf.so (needed by libchainmid.so); searched: \
                    /nonexistent/a/libchainleaf.so, /nonexistent/b/libchainleaf.so, \
                    /lib/x86_64-linux-gnu/libchainleaf.so, \
                    /usr/lib/x86_64-linux-gnu/libchainleaf.so, \
                    /lib/libchainleaf.so, /usr/lib/libchainleaf.so";
    assert!(stderr(&o).contains(expected), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("libchainmid.so: open: "),
        "{}",
        stderr(&o)
    );
}

/// Copy the diamond and liborderlog into a fresh directory with the same
/// layout (`diamond/libdtop.so`, `diamond/lib/*`, `liborderlog.so`).
fn diamond_copy(with_base: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    let lib = dir.path().join("diamond/lib");
    std::fs::create_dir_all(&lib).expect("mkdir");
    let mut files = vec![
        "liborderlog.so",
        "diamond/libdtop.so",
        "diamond/lib/libdleft.so",
        "diamond/lib/libdright.so",
    ];
    if with_base {
        files.push("diamond/lib/libdbase.so");
    }
    for f in files {
        std::fs::copy(format!("{ROOT}/testlibs/{f}"), dir.path().join(f)).expect("copy");
    }
    dir
}

#[test]
fn origin_is_the_directory_of_each_object() {
    let dir = diamond_copy(true);
    let top = dir.path().join("diamond/libdtop.so");
    let top = top.to_string_lossy();
    let o = mmld_cli(&["deps", &top], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let tree = stdout(&o);
    let prefix = dir.path().to_string_lossy().into_owned();
    let mmld_lines: Vec<&str> = tree.lines().filter(|l| l.contains("[mmld")).collect();
    assert_eq!(mmld_lines.len(), 9, "{tree}");
    for line in &mmld_lines {
        let path = line.split(" => ").nth(1).unwrap_or("");
        assert!(
            path.starts_with(&prefix),
            "{line} is outside the copy\n{tree}"
        );
    }
    // Both spellings of the token: libdright's DT_RUNPATH is ${ORIGIN}.
    assert!(
        tree.contains(&format!(
            "        libdbase.so => {prefix}/diamond/lib/libdbase.so [mmld, DT_RUNPATH]\n"
        )),
        "{tree}"
    );
    let o = mmld_cli(&["run", &top, "diamond_sum", "--ret", "i32"], &[]);
    assert_eq!(stdout(&o), "32\n", "{}", stderr(&o));

    // Without libdbase.so in the copy, the error lists libdleft's expanded
    // DT_RUNPATH ($ORIGIN:$ORIGIN/../..) after LD_LIBRARY_PATH and before
    // the default directories.
    let dir = diamond_copy(false);
    let prefix = dir.path().to_string_lossy().into_owned();
    let top = format!("{prefix}/diamond/libdtop.so");
    let o = mmld_cli(
        &["run", &top, "diamond_sum", "--ret", "i32"],
        &[("LD_LIBRARY_PATH", "/nonexistent")],
    );
    assert_eq!(o.status.code(), Some(1));
    let expected = format!(
        "cannot find libdbase.so (needed by libdleft.so); searched: \
         /nonexistent/libdbase.so, {prefix}/diamond/lib/libdbase.so, \
         {prefix}/diamond/lib/../../libdbase.so, /lib/x86_64-linux-gnu/libdbase.so, \
         /usr/lib/x86_64-linux-gnu/libdbase.so, /lib/libdbase.so, /usr/lib/libdbase.so"
    );
    assert!(stderr(&o).contains(&expected), "{}", stderr(&o));
}

// ---------------------------------------------------------------------------
// The CLI: deps, check, run, trace.

#[test]
fn deps_shows_the_tree_with_provenance() {
    let o = mmld_cli(&["deps", "testlibs/diamond/libdtop.so"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = format!("{ROOT}/testlibs");
    let expected = format!(
        "libdtop.so => {t}/diamond/libdtop.so [mmld, path as given]
    libdleft.so => {t}/diamond/lib/libdleft.so [mmld, DT_RUNPATH]
        libdbase.so => {t}/diamond/lib/libdbase.so [mmld, DT_RUNPATH]
            liborderlog.so => {t}/diamond/../liborderlog.so [mmld, DT_RUNPATH] (listed under libdtop.so)
        liborderlog.so => {t}/diamond/../liborderlog.so [mmld, DT_RUNPATH] (listed under libdtop.so)
    libdright.so => {t}/diamond/lib/libdright.so [mmld, DT_RUNPATH]
        libdbase.so => {t}/diamond/lib/libdbase.so [mmld, DT_RUNPATH] (listed under libdleft.so)
        liborderlog.so => {t}/diamond/../liborderlog.so [mmld, DT_RUNPATH] (listed under libdtop.so)
    liborderlog.so => {t}/diamond/../liborderlog.so [mmld, DT_RUNPATH]
        libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 [host]
"
    );
    assert_eq!(stdout(&o), expected);

    // DT_RPATH inherited down the chain says whose it was.
    let o = mmld_cli(&["deps", "testlibs/rpath/libchaintop.so"], &[]);
    assert!(
        stdout(&o).contains(&format!(
            "        libchainleaf.so => {t}/rpath/lib/libchainleaf.so [mmld, DT_RPATH of libchaintop.so]\n"
        )),
        "{}",
        stdout(&o)
    );

    // Unresolved entries are marked where they are needed; exit non-zero.
    let o = mmld_cli(&["deps", "testlibs/rpath/libchaintop_runpath.so"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("\n        libchainleaf.so => NOT FOUND (needed by libchainmid.so)\n"),
        "{}",
        stdout(&o)
    );
    assert!(
        stderr(&o).contains("cannot find libchainleaf.so"),
        "{}",
        stderr(&o)
    );

    // JSON: one object per line of the tree.
    let o = mmld_cli(&["deps", "--json", "testlibs/cycle/libcyca.so"], &[]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let nodes = v.as_array().expect("array");
    assert_eq!(nodes[1]["name"], "libcycb.so");
    assert_eq!(nodes[1]["found_by"], "DT_RUNPATH");
    assert_eq!(nodes[1]["provider"], "mmld");
    assert_eq!(nodes[2]["name"], "libcyca.so");
    assert_eq!(nodes[2]["repeat"], true, "the cycle ends: {v}");
}

#[test]
fn deps_on_system_libraries_shows_cache_and_host_provenance() {
    let o = mmld_cli(&["deps", "/usr/lib/x86_64-linux-gnu/libpng16.so.16"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let tree = stdout(&o);
    let line = |name: &str| -> String {
        tree.lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} => ")))
            .unwrap_or_else(|| panic!("no {name} in\n{tree}"))
            .to_owned()
    };
    assert!(
        line("libpng16.so.16").ends_with("[mmld, path as given]"),
        "{tree}"
    );
    assert!(line("libz.so.1").ends_with("[mmld, ld.so.cache]"), "{tree}");
    assert!(line("libm.so.6").ends_with("[host]"), "{tree}");
    assert!(line("libc.so.6").ends_with("[host]"), "{tree}");

    let o = mmld_cli(&["deps", "/usr/lib/x86_64-linux-gnu/libssh2.so.1"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let tree = stdout(&o);
    for name in ["libcrypto.so.3", "libz.so.1"] {
        let l = tree
            .lines()
            .find(|l| l.starts_with(&format!("    {name} => ")))
            .unwrap_or_else(|| panic!("no {name} in\n{tree}"));
        assert!(l.ends_with("[mmld, ld.so.cache]"), "{tree}");
    }
}

#[test]
fn deps_shows_a_library_the_host_already_has_as_the_hosts() {
    let preload = format!("{ROOT}/testlibs/diamond/lib/libdbase.so");
    let env = [("LD_PRELOAD", preload.as_str())];
    let o = mmld_cli(&["deps", "testlibs/diamond/libdtop.so"], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("        libdbase.so => {preload} [host]\n")),
        "{}",
        stdout(&o)
    );
    let o = mmld_cli(
        &[
            "run",
            "testlibs/diamond/libdtop.so",
            "diamond_sum",
            "--ret",
            "i32",
        ],
        &env,
    );
    assert_eq!(stdout(&o), "32\n", "{}", stderr(&o));
}

#[test]
fn dependency_tree_marks_libraries_already_loaded() {
    let _guard = in_process_lock();
    // SAFETY: the diamond's constructors only log.
    let lib = unsafe { Library::open(format!("{ROOT}/testlibs/diamond/lib/libdleft.so")) }
        .expect("open libdleft");
    let (tree, errors) =
        mmld::dependency_tree(format!("{ROOT}/testlibs/diamond/libdtop.so")).expect("tree");
    assert!(errors.is_empty(), "{errors:?}");
    let left = tree
        .iter()
        .find(|n| n.name == "libdleft.so")
        .expect("libdleft in the tree");
    assert!(left.reused && !left.repeat, "{left:?}");
    assert_eq!(left.path.as_deref(), Some(lib.path()));
    // Its own dependencies are listed from what was recorded when it loaded.
    let base = tree
        .iter()
        .find(|n| n.name == "libdbase.so")
        .expect("libdbase in the tree");
    assert!(base.reused, "{base:?}");
    assert_eq!(base.needed_by.as_deref(), Some("libdleft.so"));
    let right = tree
        .iter()
        .find(|n| n.name == "libdright.so")
        .expect("libdright in the tree");
    assert!(!right.reused, "{right:?}");
}

#[test]
fn check_reports_every_unresolved_symbol() {
    let o = mmld_cli(&["check", "testlibs/libcheckbad.so"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("undefined symbol: mmld_also_missing (in libcheckbad.so)"),
        "{out}"
    );
    assert!(
        out.contains("undefined symbol: mmld_no_such_function (in libmissing.so)"),
        "{out}"
    );
    assert!(stderr(&o).contains("2 undefined symbols"), "{}", stderr(&o));

    let o = mmld_cli(&["check", "testlibs/diamond/libdtop.so"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("ok (5 objects mapped by mmld"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn libssh2_runs_with_libcrypto_and_libz_mapped_by_mmld() {
    let o = mmld_cli(
        &[
            "run",
            "/usr/lib/x86_64-linux-gnu/libssh2.so.1",
            "libssh2_version",
            "i32:0",
            "--ret",
            "str",
        ],
        &[("MMLD_TRACE", "libs")],
    );
    assert_eq!(stdout(&o), "1.10.0\n", "{}", stderr(&o));
    let log = stderr(&o);
    for lib in ["libssh2.so.1", "libcrypto.so.3", "libz.so.1"] {
        assert!(
            log.lines()
                .any(|l| l.contains("mapped path=") && l.contains(&format!("/{lib} "))),
            "{lib} not mapped by mmld:\n{log}"
        );
    }

    let _guard = in_process_lock();
    // SAFETY: libssh2's constructors initialise its crypto backend.
    let lib = unsafe { Library::open("/usr/lib/x86_64-linux-gnu/libssh2.so.1") }.expect("open");
    let names: Vec<String> = lib.objects().into_iter().map(|o| o.name).collect();
    assert!(names.iter().any(|n| n == "libcrypto.so.3"), "{names:?}");
    assert!(names.iter().any(|n| n == "libz.so.1"), "{names:?}");
    // SAFETY: `const char *libssh2_version(int required)`.
    let version =
        unsafe { lib.get::<unsafe extern "C" fn(c_int) -> *const c_char>("libssh2_version") }
            .expect("libssh2_version");
    // SAFETY: returns a static string.
    let v = unsafe { CStr::from_ptr(version(0)) }
        .to_string_lossy()
        .into_owned();
    assert_eq!(v, "1.10.0");
}

#[test]
fn trace_logs_searches_mappings_and_bindings() {
    let o = Command::new(env!("CARGO_BIN_EXE_mmld"))
        .current_dir(ROOT)
        .env_remove("MMLD_TRACE")
        .args([
            "--trace",
            "run",
            "testlibs/diamond/libdtop.so",
            "diamond_sum",
            "--ret",
            "i32",
        ])
        .output()
        .expect("run mmld");
    assert_eq!(stdout(&o), "32\n");
    let log = stderr(&o);
    for needle in [
        "trying file=/",
        "/diamond/lib/libdleft.so how=DT_RUNPATH",
        "mapped path=",
        "libdleft.so: base_value -> libdbase.so at 0x",
        "libdtop.so: right_value -> libdright.so at 0x",
        "running constructors",
    ] {
        assert!(log.contains(needle), "no {needle:?} in\n{log}");
    }
}

// ---------------------------------------------------------------------------
// A real library tree in process: libpng with libz, both mapped by mmld.

/// libpng's `png_image` (png.h, PNG_IMAGE_VERSION 1).
#[repr(C)]
struct PngImage {
    opaque: *mut c_void,
    version: u32,
    width: u32,
    height: u32,
    format: u32,
    flags: u32,
    colormap_entries: u32,
    warning_or_error: u32,
    message: [c_char; 64],
}

impl PngImage {
    fn new() -> PngImage {
        PngImage {
            opaque: std::ptr::null_mut(),
            version: 1,
            width: 0,
            height: 0,
            format: 0,
            flags: 0,
            colormap_entries: 0,
            warning_or_error: 0,
            message: [0; 64],
        }
    }

    fn message(&self) -> String {
        // SAFETY: libpng keeps `message` NUL-terminated within its 64 bytes.
        unsafe { CStr::from_ptr(self.message.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    }
}

/// `PNG_FORMAT_RGBA`: colour and alpha, 8 bits per channel.
const PNG_FORMAT_RGBA: u32 = 3;

/// A 2x2 8-bit RGB PNG (red, green / blue, white), written by Python's
/// zlib and struct modules, not by libpng.
const TINY_PNG: [u8; 75] = [
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x08, 0x02, 0x00, 0x00, 0x00, 0xfd, 0xd4, 0x9a,
    0x73, 0x00, 0x00, 0x00, 0x12, 0x49, 0x44, 0x41, 0x54, 0x78, 0xda, 0x63, 0xf8, 0xcf, 0xc0, 0xc0,
    0x00, 0xc2, 0x0c, 0xff, 0x81, 0x00, 0x00, 0x1f, 0xee, 0x05, 0xfb, 0xf1, 0xab, 0xba, 0x77, 0x00,
    0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

type BeginRead = unsafe extern "C" fn(*mut PngImage, *const c_void, usize) -> c_int;
type FinishRead =
    unsafe extern "C" fn(*mut PngImage, *const c_void, *mut c_void, i32, *mut c_void) -> c_int;
type WriteToMemory = unsafe extern "C" fn(
    *mut PngImage,
    *mut c_void,
    *mut usize,
    c_int,
    *const c_void,
    i32,
    *const c_void,
) -> c_int;

/// Decode `png` to RGBA with libpng's simplified API.
fn decode(lib: &Library, png: &[u8]) -> (u32, u32, Vec<u8>) {
    // SAFETY: the prototypes from png.h.
    let (begin, finish) = unsafe {
        (
            lib.get::<BeginRead>("png_image_begin_read_from_memory")
                .expect("png_image_begin_read_from_memory"),
            lib.get::<FinishRead>("png_image_finish_read")
                .expect("png_image_finish_read"),
        )
    };
    let mut image = PngImage::new();
    // SAFETY: `image` is a zeroed png_image of version 1; `png` outlives
    // the read.
    let ok = unsafe { begin(&mut image, png.as_ptr().cast(), png.len()) };
    assert_eq!(ok, 1, "begin_read: {}", image.message());
    image.format = PNG_FORMAT_RGBA;
    let mut pixels = vec![0u8; (image.width * image.height * 4) as usize];
    // SAFETY: `pixels` holds height rows of width RGBA pixels; finish_read
    // frees libpng's state whether it succeeds or not.
    let ok = unsafe {
        finish(
            &mut image,
            std::ptr::null(),
            pixels.as_mut_ptr().cast(),
            0,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(ok, 1, "finish_read: {}", image.message());
    (image.width, image.height, pixels)
}

#[test]
fn libpng_decodes_with_libpng_and_libz_mapped_by_mmld() {
    let _guard = in_process_lock();
    // SAFETY: libpng and libz have no constructors of consequence.
    let lib = unsafe { Library::open("/usr/lib/x86_64-linux-gnu/libpng16.so.16") }.expect("open");
    let names: Vec<String> = lib.objects().into_iter().map(|o| o.name).collect();
    assert_eq!(names, ["libpng16.so.16", "libz.so.1"], "mapped by mmld");
    assert!(
        lib.host_dependencies().iter().any(|n| n == "libc.so.6"),
        "{:?}",
        lib.host_dependencies()
    );

    // A PNG from elsewhere.
    let (w, h, pixels) = decode(&lib, &TINY_PNG);
    assert_eq!((w, h), (2, 2));
    assert_eq!(
        pixels,
        [
            255, 0, 0, 255, 0, 255, 0, 255, 0, 0, 255, 255, 255, 255, 255, 255
        ]
    );

    // And one libpng writes (zlib's deflate under mmld), read back.
    let (width, height) = (5u32, 3u32);
    let source: Vec<u8> = (0..width * height * 4)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    // SAFETY: the prototype from png.h.
    let write = unsafe { lib.get::<WriteToMemory>("png_image_write_to_memory") }
        .expect("png_image_write_to_memory");
    let mut image = PngImage::new();
    image.width = width;
    image.height = height;
    image.format = PNG_FORMAT_RGBA;
    let mut size = 0usize;
    // SAFETY: a NULL buffer asks for the size only; `source` holds the
    // image; row stride 0 means width * 4.
    let ok = unsafe {
        write(
            &mut image,
            std::ptr::null_mut(),
            &mut size,
            0,
            source.as_ptr().cast(),
            0,
            std::ptr::null(),
        )
    };
    assert_eq!(ok, 1, "write (size): {}", image.message());
    let mut encoded = vec![0u8; size];
    // SAFETY: as above, with a buffer of the size libpng asked for.
    let ok = unsafe {
        write(
            &mut image,
            encoded.as_mut_ptr().cast(),
            &mut size,
            0,
            source.as_ptr().cast(),
            0,
            std::ptr::null(),
        )
    };
    assert_eq!(ok, 1, "write: {}", image.message());
    encoded.truncate(size);
    assert_eq!(&encoded[..8], b"\x89PNG\r\n\x1a\n");
    let (w, h, pixels) = decode(&lib, &encoded);
    assert_eq!((w, h), (width, height));
    assert_eq!(pixels, source);
}

// ---------------------------------------------------------------------------
// What glibc's dlopen does with exportless plugins, protected and unique
// symbols, the host's own objects, bare names, the global scope and
// executables (issue 12).

/// A fixture compiled now (by gcc, or g++ for `.cpp`) into `dir`, with the
/// flags build.rs uses for every test library plus `extra`.
fn build_fixture(dir: &Path, output: &str, file: &str, source: &str, extra: &[&str]) -> String {
    let src = dir.join(file);
    std::fs::write(&src, source).expect("write a fixture source");
    let compiler = if file.ends_with(".cpp") { "g++" } else { "gcc" };
    let out_path = dir.join(output);
    let out = Command::new(compiler)
        .current_dir(dir)
        .args(["-fPIC", "-O2", "-Wall", "-Wl,-z,now", "-Wl,-z,relro"])
        .arg(&src)
        .args(extra)
        .arg("-o")
        .arg(&out_path)
        .output()
        .expect("run the compiler");
    assert!(
        out.status.success(),
        "{compiler} failed to build {output}: {}",
        text(&out.stderr)
    );
    out_path.to_string_lossy().into_owned()
}

fn readelf_text(args: &[&str], path: &str) -> String {
    let out = Command::new("readelf")
        .args(args)
        .arg(path)
        .output()
        .expect("run readelf");
    text(&out.stdout)
}

#[test]
fn library_that_exports_nothing_loads_and_runs_its_constructor() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let lib = build_fixture(
        dir.path(),
        "libnoexport.so",
        "noexport.c",
        "#include <stdlib.h>\n\
         __attribute__((constructor)) static void init(void) { setenv(\"MMLD_NOEXPORT\", \"ran\", 1); }\n",
        &["-shared", "-fvisibility=hidden"],
    );
    // Every .dynsym entry is an import: the GNU hash table hashes nothing.
    let syms = readelf_text(&["-W", "--dyn-syms"], &lib);
    assert!(syms.contains("setenv"), "{syms}");
    assert!(
        syms.lines()
            .filter(|l| l
                .split_whitespace()
                .next()
                .is_some_and(|n| n.trim_end_matches(':').parse::<u32>().is_ok()))
            .all(|l| l.contains(" UND")),
        "the fixture must export nothing:\n{syms}"
    );
    same_as_glibc(
        &[&format!("open:{lib}"), "env:MMLD_NOEXPORT"],
        &[],
        &["env:MMLD_NOEXPORT=ran"],
    );
}

/// The mmld test binary's counterparts of the glibc oracle's `mmld_exe_*`
/// definitions (exported by build.rs's link argument).
#[unsafe(no_mangle)]
pub extern "C" fn mmld_exe_protected() -> c_int {
    1
}

#[unsafe(no_mangle)]
pub extern "C" fn mmld_exe_interposed() -> c_int {
    1
}

#[test]
fn protected_ifunc_binds_to_its_own_definition_not_the_executables() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let lib = build_fixture(
        dir.path(),
        "libprotected.so",
        "protected.c",
        "static int impl(void) { return 2; }\n\
         static void *resolve(void) { return (void *)impl; }\n\
         __attribute__((visibility(\"protected\"))) int mmld_exe_protected(void) __attribute__((ifunc(\"resolve\")));\n\
         int (*volatile protected_pointer)(void) = mmld_exe_protected;\n\
         int protected_call(void) { return mmld_exe_protected(); }\n\
         int protected_pointer_call(void) { return protected_pointer(); }\n\
         int mmld_exe_interposed(void) { return 2; }\n\
         int interposed_call(void) { return mmld_exe_interposed(); }\n",
        // The pointer is bound by name (R_X86_64_64), read through
        // `volatile` so the compiler cannot fold the call; -fno-plt
        // makes the default-visibility call a GOT slot bound by name too.
        &["-shared", "-fno-plt"],
    );
    let relocs = readelf_text(&["-rW"], &lib);
    assert!(
        relocs
            .lines()
            .any(|l| l.contains("R_X86_64_64") && l.contains("mmld_exe_protected")),
        "the fixture must refer to its protected IFUNC by name:\n{relocs}"
    );
    // Both executables define both names: the default-visibility one is
    // interposed on (1), the protected one never is (2). The direct call
    // goes through an IRELATIVE slot ld filled in; the pointer is the
    // loader's decision.
    same_as_glibc(
        &[
            &format!("open:{lib}"),
            "int:0:protected_call",
            "int:0:protected_pointer_call",
            "int:0:interposed_call",
        ],
        &[],
        &[
            "protected_call=2",
            "protected_pointer_call=2",
            "interposed_call=1",
        ],
    );
}

const SYSTEM_LIBGCC: &str = "/usr/lib/x86_64-linux-gnu/libgcc_s.so.1";

#[test]
fn host_objects_are_reused_and_never_mapped_again() {
    // The host has libgcc_s (every Rust program does; the oracle loads it
    // first), libm and libz (loaded by the program itself): opening them,
    // by path or by name, maps nothing, and closing them unmaps nothing.
    same_as_glibc(
        &[
            &format!("hostopen:{SYSTEM_LIBGCC}"),
            "hostopen:libm.so.6",
            "hostopen:libz.so.1",
            "snapshot",
            &format!("open:{SYSTEM_LIBGCC}"),
            "open:libgcc_s.so.1",
            "open:libm.so.6",
            "open:/usr/lib/x86_64-linux-gnu/libm.so.6",
            "open:/usr/lib/x86_64-linux-gnu/libz.so.1",
            "open:libz.so.1",
            "open:libc.so.6",
            "open:/usr/lib/x86_64-linux-gnu/libc.so.6",
            "same:0:1",
            "same:2:3",
            "same:4:5",
            "same:6:7",
            "str:4:zlibVersion",
            "unchanged",
            "close:0",
            "close:2",
            "close:4",
            "close:5",
            "close:6",
            "unchanged",
            "mapped:/usr/lib/x86_64-linux-gnu/libz.so.1",
        ],
        &[],
        &[
            "same:0:1=yes",
            "same:2:3=yes",
            "same:4:5=yes",
            "same:6:7=yes",
            "zlibVersion=1.2.13",
            "unchanged=yes",
            "unchanged=yes",
            "mapped:/usr/lib/x86_64-linux-gnu/libz.so.1=yes",
        ],
    );
}

#[test]
fn host_library_lookups_go_to_the_hosts_copy() {
    let _lock = in_process_lock();
    // File mappings only: other test threads come and go with their stacks.
    let files = || -> Vec<String> {
        maps_without_heap()
            .lines()
            .filter(|l| l.contains('/'))
            .map(str::to_owned)
            .collect()
    };
    let before = files();
    // SAFETY: libgcc_s is already loaded by the host; nothing runs.
    let lib = unsafe { Library::open(SYSTEM_LIBGCC) }.expect("open libgcc_s");
    assert!(lib.objects().is_empty(), "mmld mapped something");
    assert_eq!(lib.host_dependencies().len(), 1);
    // SAFETY: only the address is compared.
    let ours = *unsafe { lib.get::<*const c_void>("_Unwind_Backtrace") }.expect("lookup");
    // SAFETY: dlsym with a valid NUL-terminated name.
    let glibc = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"_Unwind_Backtrace".as_ptr()) };
    assert_eq!(ours, glibc.cast_const());
    drop(lib);
    assert_eq!(before, files(), "opening and closing changed the maps");
}

#[test]
fn bare_names_are_searched_as_dlopen_searches_them() {
    // ld.so.cache (and the default directories) for a system library.
    same_as_glibc(
        &["open:libz.so.1", "str:0:zlibVersion"],
        &[],
        &["zlibVersion=1.2.13"],
    );
    // LD_LIBRARY_PATH first; without it, the same name is not found (the
    // current directory is never searched).
    let alt = format!("{ROOT}/testlibs/alt");
    same_as_glibc(
        &["open:libchainleaf.so", "str:0:leaf_name"],
        &[("LD_LIBRARY_PATH", &alt)],
        &["leaf_name=alt"],
    );
    let mmld = same_as_glibc(&["open:libchainleaf.so"], &[], &["error:open"]);
    assert!(mmld[0].contains("cannot find libchainleaf.so"), "{mmld:?}");
}

#[test]
fn unique_symbols_keep_only_objects_whose_definition_was_bound() {
    let dir = tempfile::tempdir().expect("temporary directory");
    // A's own code binds its unique definition (a GOT slot): A stays
    // loaded. B defines one that nothing binds: B goes, even though the
    // same load bound A's.
    let a = build_fixture(
        dir.path(),
        "libuniqa.so",
        "uniqa.cpp",
        "template <typename T> struct Counter { static int value; };\n\
         template <typename T> int Counter<T>::value = 0;\n\
         extern \"C\" int uniq_bump() { return ++Counter<int>::value; }\n",
        &["-shared", "-Wl,-soname,libuniqa.so"],
    );
    let b = build_fixture(
        dir.path(),
        "libuniqb.so",
        "uniqb.cpp",
        "template <typename T> struct Holder { static int value; };\n\
         template <typename T> int Holder<T>::value = 7;\n\
         template struct Holder<long>;\n\
         extern \"C\" int uniq_b_loaded(void) { return 1; }\n",
        &[
            "-shared",
            "-L.",
            "-Wl,--no-as-needed",
            "-luniqa",
            "-Wl,-rpath,$ORIGIN",
        ],
    );
    assert!(readelf_text(&["-W", "--dyn-syms"], &b).contains("UNIQUE"));
    assert!(!readelf_text(&["-rW"], &b).contains("Holder"));
    same_as_glibc(
        &[
            &format!("open:{b}"),
            "int:0:uniq_b_loaded",
            "close:0",
            &format!("mapped:{b}"),
            &format!("mapped:{a}"),
            // Debian's libapt-private defines unique symbols nothing binds.
            "open:/usr/lib/x86_64-linux-gnu/libapt-private.so.0.0",
            "close:1",
            "mapped:/usr/lib/x86_64-linux-gnu/libapt-private.so.0.0",
        ],
        &[],
        &[
            "uniq_b_loaded=1",
            &format!("mapped:{b}=no"),
            &format!("mapped:{a}=yes"),
            "mapped:/usr/lib/x86_64-linux-gnu/libapt-private.so.0.0=no",
        ],
    );
}

#[test]
fn global_lookup_this_and_no_load_match_rtld_default_and_rtld_noload() {
    same_as_glibc(
        &[
            // Not loaded yet: no-load opens nothing.
            "open:testlibs/libdemo.so:noload",
            "open:testlibs/libdemo.so",
            "open:testlibs/libdemo.so:noload",
            "same:1:2",
            // Loaded locally: not in the global scope.
            "default:add",
            "this:add",
            // No-load with the global option promotes it, as RTLD_NOLOAD |
            // RTLD_GLOBAL does.
            "open:testlibs/libdemo.so:noload:global",
            "default:add",
            "this:add",
            "default:printf",
            "this:printf",
            "default:mmld_no_such_symbol",
            // The host's own libraries, by name.
            "open:libc.so.6:noload",
            "open:libz.so.1:noload",
        ],
        &[],
        &[
            "error:open",
            "same:1:2=yes",
            "default:add=none",
            "this:add=none",
            "default:add=found",
            "this:add=found",
            "default:printf=found",
            "this:printf=found",
            "default:mmld_no_such_symbol=none",
            "error:open",
        ],
    );
}

#[test]
fn position_independent_executables_are_refused_before_any_code_runs() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let pie = build_fixture(
        dir.path(),
        "pie",
        "pie.c",
        "#include <stdlib.h>\n\
         __attribute__((constructor)) static void init(void) { setenv(\"MMLD_PIE_RAN\", \"yes\", 1); }\n\
         int main(void) { return 0; }\n",
        &["-fPIE", "-pie"],
    );
    assert!(readelf_text(&["-d"], &pie).contains("PIE"));
    let mmld = same_as_glibc(
        &[&format!("open:{pie}"), "env:MMLD_PIE_RAN"],
        &[],
        &["error:open", "env:MMLD_PIE_RAN=unset"],
    );
    assert!(
        mmld[0].contains("cannot dynamically load position-independent executable"),
        "{mmld:?}"
    );
}
