//! The dlopen-rs worker of the three-loader benchmarks: the same protocol
//! and measuring code as the mmld and glibc workers (`benches/common/
//! proto.rs`, included by path), driving dlopen-rs 0.8's Rust API.
//!
//! ```sh
//! dlopen_rs_runner --worker dlopen-rs first PATH SYM
//! dlopen_rs_runner --worker dlopen-rs cycle N PATH SYM
//! dlopen_rs_runner --worker dlopen-rs lookup ROUNDS PATH HIT MISS
//! ```
//!
//! Opens with `RTLD_NOW | RTLD_LOCAL`, as the glibc worker does. dlopen-rs
//! searches `LD_LIBRARY_PATH`, `/etc/ld.so.cache` and `/lib`, `/usr/lib`,
//! `/lib64`, `/usr/lib64`, but not Debian's multiarch directory
//! (`/usr/lib/x86_64-linux-gnu`); the benches set `LD_LIBRARY_PATH` for
//! libLLVM-15, whose dependencies it otherwise does not find.

#[path = "../../../common/proto.rs"]
mod proto;

use std::ffi::c_void;

use dlopen_rs::{ElfLibrary, OpenFlags};
use proto::{Loader, Name};

struct DlopenRs;

impl Loader for DlopenRs {
    type Lib = ElfLibrary;

    fn name(&self) -> &'static str {
        "dlopen-rs"
    }

    fn open(&self, path: &Name) -> Result<ElfLibrary, String> {
        ElfLibrary::dlopen(path.s.as_str(), OpenFlags::RTLD_NOW | OpenFlags::RTLD_LOCAL)
            .map_err(|e| e.to_string())
    }

    fn get(&self, lib: &ElfLibrary, sym: &Name) -> Option<*const c_void> {
        // SAFETY: the symbol's address is only compared and passed to
        // black_box, never called or dereferenced.
        unsafe { lib.get::<*const c_void>(&sym.s) }
            .ok()
            .map(|s| s.into_raw().cast())
    }

    fn close(&self, lib: ElfLibrary) {
        drop(lib);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1..3) {
        Some([flag, loader]) if flag == "--worker" && loader == "dlopen-rs" => {
            proto::worker_main(&DlopenRs, &args[3..])
        }
        // This binary loading nothing: the baseline of whole-process counts
        // (dlopen-rs's start-up work, done before `main`, is in it).
        Some([flag, loader]) if flag == "--worker" && loader == "none" => {
            proto::worker_main(&proto::Nothing, &args[3..])
        }
        _ => {
            eprintln!("usage: dlopen_rs_runner --worker <dlopen-rs|none> <first|cycle|lookup> ...");
            std::process::exit(2)
        }
    }
}
