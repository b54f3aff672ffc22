//! Load a plugin with mmld, call into it, and print what the kernel says
//! about its pages: which maps line is which segment, how much of it is
//! resident, and how its frames are shared with the rest of the system.
//!
//! ```sh
//! cargo run --release --example share_report                 # testlibs/libdemo.so
//! cargo run --release --example share_report -- /usr/lib/x86_64-linux-gnu/libz.so.1
//! ```

use mmld::inspect::{self, ObjectLayout, Pid};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/testlibs/libdemo.so").into());

    // SAFETY: loading runs the plugin's constructors; we trust our plugin.
    let lib = unsafe { mmld::Library::open(&path) }?;

    // Write to the plugin's .data if it has libdemo's counter, so one
    // segment shows a private (copy-on-write) page.
    let mut called = None;
    if lib.symbol_info("counter_bump").is_ok() {
        // SAFETY: libdemo's `long counter_bump(void)`.
        let bump = unsafe { lib.get::<extern "C" fn() -> i64>("counter_bump") }?;
        called = Some(format!("counter_bump() = {}", bump()));
    }

    let layouts = ObjectLayout::of_library(&lib, false);
    let maps = inspect::maps::maps_of_objects(Pid::Myself, &layouts)?;
    print!("{}", maps.to_text(None));
    println!();

    let me = inspect::share::Worker {
        pid: std::process::id() as i32,
        objects: layouts,
    };
    let report = inspect::share::measure(&path, "mmap", called, &[me])?;
    print!("{}", report.to_text());
    Ok(())
}
