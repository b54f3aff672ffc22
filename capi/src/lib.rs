//! `libmmld.so`: glibc's `dlopen` family, served by mmld.
//!
//! Preloaded (`LD_PRELOAD=libmmld.so`, or `mmld exec`), these definitions
//! interpose glibc's for the whole process: every `dlopen` a program makes
//! loads through mmld, while the libraries it linked at start-up stay
//! glibc's and mmld reuses them as host objects.
//!
//! Owns: the exported C entry points and the small assembly shims that give
//! the callers' return addresses to the Rust side. Must never: call a `dl*`
//! function by name (those are these very functions once preloaded); glibc
//! is reached through `mmld::host::real()`, and a call mmld does not serve
//! is handed to glibc by a tail jump from the shim, so glibc sees the
//! original caller (its search paths, its `RTLD_NEXT`).
//!
//! Modules: `handles` (what a handle is, opening, lookups), `errors`
//! (thread-local `dlerror`), `introspect` (`dladdr`, `dlinfo`,
//! `dl_iterate_phdr`, `_dl_find_object`), `report` (what `--report` writes).

mod errors;
mod handles;
mod introspect;
mod report;

use std::ffi::{c_char, c_int, c_void};

pub use introspect::{_dl_find_object, dl_iterate_phdr, dladdr, dladdr1, dlinfo};

/// What a shim's Rust half asks of it: `0` means "return my result", any
/// other value is the glibc function to jump to with the original
/// arguments and return address.
type Forward = usize;

/// A two-argument entry point: `impl(a0, a1, caller, &mut forward)`.
macro_rules! shim2 {
    ($name:ident, $imp:path, ($a0:ty, $a1:ty) -> $ret:ty) => {
        /// Exported with glibc's signature; see the module comment.
        ///
        /// # Safety
        /// As for glibc's function of the same name.
        #[unsafe(naked)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(a0: $a0, a1: $a1) -> $ret {
            // Frame: [rsp] forward slot, [rsp+8] a0, [rsp+16] a1, [rsp+24]
            // the caller's return address; 24 bytes keep the call aligned.
            core::arch::naked_asm!(
                "sub rsp, 24",
                "mov [rsp + 8], rdi",
                "mov [rsp + 16], rsi",
                "mov qword ptr [rsp], 0",
                "mov rdx, [rsp + 24]",
                "mov rcx, rsp",
                "call {imp}",
                "mov r11, [rsp]",
                "test r11, r11",
                "jnz 2f",
                "add rsp, 24",
                "ret",
                "2:",
                "mov rdi, [rsp + 8]",
                "mov rsi, [rsp + 16]",
                "add rsp, 24",
                "jmp r11",
                imp = sym $imp,
            )
        }
    };
}

/// A three-argument entry point: `impl(a0, a1, a2, caller, &mut forward)`.
macro_rules! shim3 {
    ($name:ident, $imp:path, ($a0:ty, $a1:ty, $a2:ty) -> $ret:ty) => {
        /// Exported with glibc's signature; see the module comment.
        ///
        /// # Safety
        /// As for glibc's function of the same name.
        #[unsafe(naked)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(a0: $a0, a1: $a1, a2: $a2) -> $ret {
            // Frame: [rsp] forward slot, [rsp+8..32] the arguments,
            // [rsp+40] the caller's return address.
            core::arch::naked_asm!(
                "sub rsp, 40",
                "mov [rsp + 8], rdi",
                "mov [rsp + 16], rsi",
                "mov [rsp + 24], rdx",
                "mov qword ptr [rsp], 0",
                "mov rcx, [rsp + 40]",
                "mov r8, rsp",
                "call {imp}",
                "mov r11, [rsp]",
                "test r11, r11",
                "jnz 2f",
                "add rsp, 40",
                "ret",
                "2:",
                "mov rdi, [rsp + 8]",
                "mov rsi, [rsp + 16]",
                "mov rdx, [rsp + 24]",
                "add rsp, 40",
                "jmp r11",
                imp = sym $imp,
            )
        }
    };
}

shim2!(dlopen, handles::dlopen_impl, (*const c_char, c_int) -> *mut c_void);
shim2!(dlsym, handles::dlsym_impl, (*mut c_void, *const c_char) -> *mut c_void);
shim3!(dlvsym, handles::dlvsym_impl, (*mut c_void, *const c_char, *const c_char) -> *mut c_void);
shim3!(dlmopen, handles::dlmopen_impl, (libc::Lmid_t, *const c_char, c_int) -> *mut c_void);

/// Close a handle from `dlopen`.
///
/// # Safety
/// `handle` came from `dlopen` and is closed once per open.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlclose(handle: *mut c_void) -> c_int {
    handles::dlclose_impl(handle)
}

/// The calling thread's last error, cleared by reading it.
///
/// # Safety
/// The string is valid until this thread's next `dlerror`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlerror() -> *mut c_char {
    errors::take()
}

/// An `MMLD_*` variable, unless the process runs in secure mode
/// (`AT_SECURE`), where the environment is not honoured.
fn environment(name: &str) -> Option<String> {
    // SAFETY: getauxval has no preconditions.
    if unsafe { libc::getauxval(libc::AT_SECURE) } != 0 {
        return None;
    }
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Once per process, at the first call: tracing (`MMLD_TRACE`, as the CLI
/// reads it) and the exit report.
fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Some(spec) = environment("MMLD_TRACE") {
            let filter = match spec.as_str() {
                "all" | "1" => "mmld=debug".to_string(),
                list => list
                    .split(',')
                    .map(|t| format!("mmld::{}=debug", t.trim()))
                    .collect::<Vec<_>>()
                    .join(","),
            };
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .with_target(true)
                .without_time()
                .try_init();
        }
        report::install();
    });
}
