//! A Rust plugin loaded by mmld in tests and `examples/plugin_host.rs`.
//!
//! It exercises what a real Rust plugin needs from its loader: its own copy
//! of std (with `thread_local!`, so dynamic TLS), threads, heap allocation,
//! a panic caught with `catch_unwind` (so unwinding through mmld-mapped
//! frames), and strings handed back to the host.

use std::cell::Cell;
use std::ffi::{CStr, CString, c_char};
use std::panic;

thread_local! {
    static CALLS: Cell<u64> = const { Cell::new(0) };
}

/// Count calls per thread: each thread sees its own counter.
#[unsafe(no_mangle)]
pub extern "C" fn plugin_count_call() -> u64 {
    CALLS.with(|c| {
        c.set(c.get() + 1);
        c.get()
    })
}

/// Start `threads` threads; each calls `plugin_count_call` `per_thread`
/// times and reports its final count. Returns the sum (threads * per_thread
/// when every thread has its own thread-local).
#[unsafe(no_mangle)]
pub extern "C" fn plugin_thread_sum(threads: u32, per_thread: u32) -> u64 {
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let mut last = 0;
                for _ in 0..per_thread {
                    last = plugin_count_call();
                }
                last
            })
        })
        .collect();
    handles.into_iter().filter_map(|h| h.join().ok()).sum()
}

/// Panic when `x` is negative and catch it; returns -1 for a caught panic.
#[unsafe(no_mangle)]
pub extern "C" fn plugin_catch_panic(x: i32) -> i32 {
    let previous = panic::take_hook();
    // Keep test output quiet: the panic is expected.
    panic::set_hook(Box::new(|_| {}));
    let result = panic::catch_unwind(|| {
        if x < 0 {
            panic!("negative input {x}");
        }
        x * 2
    });
    panic::set_hook(previous);
    result.unwrap_or(-1)
}

/// Sum of a heap-allocated vector 0..n.
#[unsafe(no_mangle)]
pub extern "C" fn plugin_heap_sum(n: u64) -> u64 {
    let v: Vec<u64> = (0..n).collect();
    v.iter().sum()
}

/// A greeting formatted by the plugin; free it with `plugin_free_string`.
///
/// # Safety
/// `name` must be a valid NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plugin_greet(name: *const c_char) -> *mut c_char {
    let name = if name.is_null() {
        "nobody".into()
    } else {
        // SAFETY: the caller passes a valid C string.
        unsafe { CStr::from_ptr(name) }.to_string_lossy()
    };
    let text = format!(
        "hello, {name}, from a Rust plugin on thread {:?}",
        std::thread::current().id()
    );
    CString::new(text)
        .map(CString::into_raw)
        .unwrap_or(std::ptr::null_mut())
}

/// Free a string returned by `plugin_greet`.
///
/// # Safety
/// `s` must come from `plugin_greet` and be freed once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plugin_free_string(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: per the contract, `s` came from CString::into_raw.
        drop(unsafe { CString::from_raw(s) });
    }
}

#[inline(never)]
fn panic_inner(depth: u32) -> u32 {
    if depth > 0 {
        panic!("plugin panic at depth {depth}");
    }
    depth
}

#[inline(never)]
fn panic_outer(depth: u32) -> u32 {
    // black_box: keeps both frames in the backtrace.
    std::hint::black_box(panic_inner(std::hint::black_box(depth + 1))) + 1
}

/// Panic through two frames with the default hook, which prints the
/// message and, under `RUST_BACKTRACE=1`, a backtrace naming these
/// functions; the panic is caught here. Returns -1 after a panic.
#[unsafe(no_mangle)]
pub extern "C" fn plugin_panic_with_backtrace() -> i32 {
    match panic::catch_unwind(|| panic_outer(1)) {
        Ok(v) => v as i32,
        Err(_) => -1,
    }
}
