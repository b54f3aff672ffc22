//! A program for debugger tests: loads `testlibs/libdemo.so` with mmld,
//! then lets glibc load a library of its own (so the debugger must keep
//! seeing mmld's objects after the host's `dlopen`), then calls `add`.
//!
//! ```sh
//! gdb -x gdb/mmld.py -ex 'break add' -ex run -ex bt --args target/release/examples/debug_target
//! ```

use anyhow::Result;

fn main() -> Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "testlibs/libdemo.so".into());
    // SAFETY: our own test library.
    let lib = unsafe { mmld::Library::open(&path) }?;
    // The host now loads a library through glibc.
    // SAFETY: dlopen of a system library with a valid C string.
    let host = unsafe { libc::dlopen(c"libz.so.1".as_ptr(), libc::RTLD_NOW) };
    // SAFETY: `add` is `long add(long, long)` in libdemo.
    let add = unsafe { lib.get::<extern "C" fn(i64, i64) -> i64>("add") }?;
    println!("add(2, 3) = {}", add(2, 3));
    if !host.is_null() {
        // SAFETY: balances the dlopen above.
        unsafe { libc::dlclose(host) };
    }
    Ok(())
}
