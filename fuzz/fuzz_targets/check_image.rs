//! Fuzz READ, MAP (inert) and LINK (dry run) on an in-memory image.
//!
//! Every input must either pass `mmld::check_image` or return an error: a
//! panic, a crash, a hang or an out-of-memory abort is a bug. No code of
//! the image ever runs (see `src/check_image.rs`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mmld::check_image(data);
});
