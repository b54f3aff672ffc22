//! A Rust program that loads a plugin with the C library's `dlopen` (so
//! the C ABI drop-in serves it when preloaded) and calls a function that
//! panics with a backtrace. Used by tests/capi.rs.
//!
//! cargo build --release -p mmld-rust-plugin
//! RUST_BACKTRACE=1 cargo run --release --example panic_host -- target/release/libmmld_rust_plugin.so

use std::ffi::CString;

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: panic_host PLUGIN");
        std::process::exit(2);
    };
    let Ok(c) = CString::new(path) else {
        std::process::exit(2);
    };
    // SAFETY: dlopen/dlsym with valid C strings; the symbol is the
    // plugin's `extern "C" fn() -> i32`.
    unsafe {
        let h = libc::dlopen(c.as_ptr(), libc::RTLD_NOW);
        if h.is_null() {
            eprintln!("dlopen failed");
            std::process::exit(1);
        }
        let f = libc::dlsym(h, c"plugin_panic_with_backtrace".as_ptr());
        if f.is_null() {
            eprintln!("dlsym failed");
            std::process::exit(1);
        }
        let f: extern "C" fn() -> i32 = std::mem::transmute(f);
        println!("plugin returned {}", f());
    }
}
