//! Thread-local `dlerror` state with glibc's semantics.
//!
//! Owns: the calling thread's pending message for calls mmld served, and
//! the choice between it and glibc's own state (for calls handed to
//! glibc). Must never: keep a message past the `dlerror` that reported it
//! plus one (the returned string stays valid until the thread's next
//! `dlerror`, as glibc's does).

use std::cell::RefCell;
use std::ffi::{CString, c_char};

thread_local! {
    /// Set by a failed call mmld served, not yet reported.
    static PENDING: RefCell<Option<CString>> = const { RefCell::new(None) };
    /// The string the last `dlerror` returned, kept alive for the caller.
    static SHOWN: RefCell<Option<CString>> = const { RefCell::new(None) };
}

/// A call begins: an earlier unreported error is replaced, as in glibc.
/// `also_glibc`: the call is served by mmld, so glibc's state (left by an
/// earlier call handed to glibc) is cleared too.
pub fn begin(also_glibc: bool) {
    let _ = PENDING.try_with(|p| p.borrow_mut().take());
    if also_glibc {
        // SAFETY: glibc's dlerror has no preconditions.
        unsafe { (mmld_core::host::real().dlerror)() };
    }
}

/// Record the failure of a call mmld served.
pub fn set(message: String) {
    let message = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    let _ = PENDING.try_with(|p| *p.borrow_mut() = Some(message));
}

/// `dlerror()`: this thread's message, or NULL; reading clears it.
pub fn take() -> *mut c_char {
    let own = PENDING.try_with(|p| p.borrow_mut().take()).ok().flatten();
    match own {
        Some(message) => {
            // glibc's state is older than ours: drop it.
            // SAFETY: glibc's dlerror has no preconditions.
            unsafe { (mmld_core::host::real().dlerror)() };
            SHOWN
                .try_with(|s| {
                    let mut s = s.borrow_mut();
                    *s = Some(message);
                    s.as_ref()
                        .map_or(std::ptr::null_mut(), |m| m.as_ptr().cast_mut())
                })
                .unwrap_or(std::ptr::null_mut())
        }
        // SAFETY: as above; the string is glibc's, valid until its next
        // dlerror in this thread.
        None => unsafe { (mmld_core::host::real().dlerror)() },
    }
}
