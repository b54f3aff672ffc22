//! A plugin host: loads a Rust `cdylib` plugin with mmld and calls into it.
//!
//! Build the plugin, then run the host:
//!
//! ```sh
//! cargo build --release -p mmld-rust-plugin
//! cargo run --release --example plugin_host -- target/release/libmmld_rust_plugin.so
//! ```
//!
//! Each line it prints is `name = value`, checked by `tests/runtime.rs`.

use std::ffi::{CStr, c_char};

use anyhow::{Context, Result, ensure};

fn main() -> Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/release/libmmld_rust_plugin.so".into());
    // SAFETY: the plugin is our own test plugin; loading it runs its code.
    let plugin = unsafe { mmld::Library::open(&path) }.with_context(|| {
        format!("loading {path} (build it with: cargo build --release -p mmld-rust-plugin)")
    })?;

    // SAFETY: the signatures match the plugin's `extern "C"` functions.
    unsafe {
        let count = plugin.get::<extern "C" fn() -> u64>("plugin_count_call")?;
        let thread_sum = plugin.get::<extern "C" fn(u32, u32) -> u64>("plugin_thread_sum")?;
        let catch_panic = plugin.get::<extern "C" fn(i32) -> i32>("plugin_catch_panic")?;
        let heap_sum = plugin.get::<extern "C" fn(u64) -> u64>("plugin_heap_sum")?;
        let greet =
            plugin.get::<unsafe extern "C" fn(*const c_char) -> *mut c_char>("plugin_greet")?;
        let free = plugin.get::<unsafe extern "C" fn(*mut c_char)>("plugin_free_string")?;

        println!("first_call = {}", count());
        println!("second_call = {}", count());
        println!("thread_sum = {}", thread_sum(8, 1000));
        println!("caught_panic = {}", catch_panic(-5));
        println!("no_panic = {}", catch_panic(21));
        println!("heap_sum = {}", heap_sum(1_000_000));
        let s = greet(c"mmld".as_ptr());
        ensure!(!s.is_null(), "plugin_greet returned NULL");
        println!("greeting = {}", CStr::from_ptr(s).to_string_lossy());
        free(s);
    }
    Ok(())
}
