//! Lazy calls: PLT slots bound on first call, for libraries opened with
//! the lazy option (`RTLD_LAZY`).
//!
//! Owns: the stubs an unbound `JUMP_SLOT` points to (one per slot, in
//! read-execute pages of their own, freed with their object), the entry
//! every stub jumps to (it saves the caller's argument registers and the
//! whole vector state, as glibc's `_dl_runtime_resolve_xsave` does, binds
//! the slot and jumps to the function), writing the bound address into the
//! slot, and ending the process with glibc's message when nothing defines
//! the function. Must never: look a symbol up itself (the loader, which
//! knows scopes, hands in a [`LazyResolver`]), leave a page writable and
//! executable, or return to the caller without the registers it called
//! with.

use std::ffi::c_void;
use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::arch::current as arch;
use crate::map::CodePages;

/// Binds the slots of one object: supplied by the loader once the object
/// is published.
pub trait LazyResolver: Send + Sync {
    /// The address symbol `symbol` of the object binds to now, or why
    /// nothing does.
    fn resolve(&self, symbol: u32) -> Result<u64, LazyMiss>;
}

/// A call that found no definition: what glibc's message names.
#[derive(Debug, Clone)]
pub struct LazyMiss {
    /// The calling object's file name, as glibc's `l_name`.
    pub object: String,
    pub name: String,
    pub version: Option<String>,
}

type Owner = OnceLock<Box<dyn LazyResolver>>;

/// What a stub hands the entry in `%r11`. The entry reads the first two
/// fields itself (their offsets are part of its code).
#[repr(C)]
struct Record {
    /// Bytes of stack for the vector state (64-byte aligned below).
    save_size: u64,
    /// `xsave` component mask, or 0 for `fxsave`.
    xsave_mask: u64,
    /// Process address of the PLT slot.
    got: u64,
    symbol: u64,
    owner: *const Owner,
}

/// One slot to bind lazily, before the stubs exist.
struct Wanted {
    /// The slot's address in the object's file (for the relocation write).
    offset: u64,
    /// The slot's process address.
    got: u64,
    symbol: u32,
}

/// The lazily bound slots of one object and their stubs.
#[derive(Default)]
pub struct LazyStubs {
    wanted: Vec<Wanted>,
    built: Option<Built>,
}

struct Built {
    /// Dropped first: no stub may outlive the records it points to.
    code: CodePages,
    _records: Box<[Record]>,
    owner: Box<Owner>,
}

// SAFETY: records are written once in `build` and only read afterwards;
// `owner` points into the `Box` kept next to them, and the resolver it
// holds is `Send + Sync`.
unsafe impl Send for LazyStubs {}
// SAFETY: as above; nothing is mutated through `&self` except the
// `OnceLock`, which is `Sync`.
unsafe impl Sync for LazyStubs {}

impl std::fmt::Debug for LazyStubs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyStubs")
            .field("slots", &self.len())
            .field("code", &self.built.as_ref().map(|b| b.code.address()))
            .finish()
    }
}

impl LazyStubs {
    /// Bind the slot at file address `offset` (process address `got`)
    /// to symbol index `symbol` on first call.
    pub fn want(&mut self, offset: u64, got: u64, symbol: u32) {
        self.wanted.push(Wanted {
            offset,
            got,
            symbol,
        });
    }

    /// Number of slots bound lazily.
    pub fn len(&self) -> usize {
        self.wanted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.wanted.is_empty()
    }

    /// Write the stubs into read-execute pages. Returns, for each slot,
    /// its file address and the stub address it must hold until bound.
    pub fn build(&mut self) -> io::Result<Vec<(u64, u64)>> {
        if self.wanted.is_empty() || self.built.is_some() {
            return Ok(Vec::new());
        }
        let state = vector_state();
        let owner: Box<Owner> = Box::new(OnceLock::new());
        let owner_ptr: *const Owner = &*owner;
        let records: Box<[Record]> = self
            .wanted
            .iter()
            .map(|w| Record {
                save_size: state.size,
                xsave_mask: state.mask,
                got: w.got,
                symbol: u64::from(w.symbol),
                owner: owner_ptr,
            })
            .collect();
        let entry = mmld_lazy_entry as *const () as u64;
        let mut code = Vec::with_capacity(records.len() * arch::LAZY_STUB_SIZE);
        for r in records.iter() {
            code.extend_from_slice(&arch::lazy_stub(r as *const Record as u64, entry));
        }
        let pages = CodePages::new(&code)?;
        let base = pages.address();
        let slots = self
            .wanted
            .iter()
            .enumerate()
            .map(|(i, w)| (w.offset, base + (i * arch::LAZY_STUB_SIZE) as u64))
            .collect();
        self.built = Some(Built {
            code: pages,
            _records: records,
            owner,
        });
        Ok(slots)
    }

    /// Hand in what binds the slots. Until then a call through one ends
    /// the process as an undefined symbol would.
    pub fn arm(&self, resolver: Box<dyn LazyResolver>) {
        if let Some(b) = &self.built {
            let _ = b.owner.set(resolver);
        }
    }
}

/// How the entry saves the vector state on this CPU.
#[derive(Clone, Copy)]
struct VectorState {
    size: u64,
    mask: u64,
}

fn vector_state() -> VectorState {
    static STATE: OnceLock<(u64, u64)> = OnceLock::new();
    let &(size, mask) = STATE.get_or_init(measure_vector_state);
    VectorState { size, mask }
}

/// `xsave` with the argument components the OS enabled, sized from CPUID
/// leaf 0xD; `fxsave` (512 bytes) on a CPU without `xsave`, which then has
/// no register wider than `%xmm`.
fn measure_vector_state() -> (u64, u64) {
    use std::arch::x86_64::__cpuid_count;
    // CPUID exists on every x86-64 CPU.
    let leaf1 = __cpuid_count(1, 0);
    let osxsave = leaf1.ecx & (1 << 27) != 0;
    if !osxsave {
        return (arch::FXSAVE_AREA, 0);
    }
    let (lo, hi): (u32, u32);
    // SAFETY: with CR4.OSXSAVE set (CPUID.1:ECX.OSXSAVE), XGETBV with
    // ECX = 0 reads XCR0 and has no other effect.
    unsafe {
        std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi,
            options(nomem, nostack, preserves_flags))
    };
    let xcr0 = (u64::from(hi) << 32) | u64::from(lo);
    let mask = xcr0 & arch::LAZY_XSAVE_COMPONENTS;
    let mut end = arch::XSAVE_HEADER_END;
    for component in 2..64u32 {
        if mask & (1 << component) == 0 {
            continue;
        }
        // Leaf 0xD exists wherever XSAVE does.
        let c = __cpuid_count(0xd, component);
        end = end.max(u64::from(c.ebx) + u64::from(c.eax));
    }
    (end.next_multiple_of(64), mask)
}

/// Called by the entry with the caller's registers saved: bind the slot
/// and return the function's address, or end the process.
extern "C" fn lazy_fixup(record: *const Record) -> u64 {
    // SAFETY: `record` is the address a stub of a live object embedded;
    // the records live as long as the stubs (see `Built`), and the object
    // is alive because its code is calling.
    let r = unsafe { &*record };
    // SAFETY: `owner` points into the same `Built`.
    let owner = unsafe { &*r.owner };
    let symbol = u32::try_from(r.symbol).unwrap_or(u32::MAX);
    let outcome = match owner.get() {
        Some(resolver) => resolver.resolve(symbol),
        None => Err(LazyMiss {
            object: String::from("<object not yet published>"),
            name: format!("symbol #{symbol}"),
            version: None,
        }),
    };
    match outcome {
        Ok(addr) => {
            // SAFETY: the slot was checked at load to be an aligned word in
            // a writable segment of the object (outside RELRO), which is
            // mapped while its code runs. Other threads may read or bind
            // the same slot at once: the store is atomic, and every thread
            // that binds it writes the same address.
            unsafe { AtomicU64::from_ptr(r.got as *mut u64) }.store(addr, Ordering::Release);
            addr
        }
        Err(miss) => undefined_symbol(&miss),
    }
}

/// glibc's fatal error for a lazy call nothing defines: the same text on
/// standard error, unbuffered, and exit status 127 without running exit
/// handlers (`_dl_signal_error` → `fatal_error` → `_exit(127)`).
fn undefined_symbol(miss: &LazyMiss) -> ! {
    let program = std::env::args_os()
        .next()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_else(|| "<program name unknown>".into());
    let version = miss
        .version
        .as_ref()
        .map(|v| format!(", version {v}"))
        .unwrap_or_default();
    let line = format!(
        "{program}: symbol lookup error: {}: undefined symbol: {}{version}\n",
        miss.object, miss.name
    );
    let mut rest = line.as_bytes();
    while !rest.is_empty() {
        // SAFETY: writing bytes we own to descriptor 2.
        let n = unsafe { libc::write(2, rest.as_ptr().cast::<c_void>(), rest.len()) };
        if n <= 0 {
            break;
        }
        rest = rest.get(n as usize..).unwrap_or(&[]);
    }
    // SAFETY: ends the process at once, as glibc does here.
    unsafe { libc::_exit(127) }
}

// The entry of every stub. On arrival the stack is the caller's, just
// after its `call` (return address on top), `%r11` holds the stub's record
// and every argument register is live: `%rdi %rsi %rdx %rcx %r8 %r9`, `%rax`
// (vector registers used by a variadic call), `%r10` (static chain) and the
// vector registers, which may be `%ymm`/`%zmm` in AVX code: the whole
// state of those is saved with `xsave` (mask and size from the record)
// below a 64-byte aligned stack pointer, after zeroing the header `xsave`
// leaves alone and `xrstor` checks. The binder's result goes to `%r11`,
// every register comes back, and the stack is exactly as the caller left
// it, so stack arguments and the return address reach the function.
std::arch::global_asm!(
    ".pushsection .text.mmld_lazy_entry,\"ax\",@progbits",
    ".globl mmld_lazy_entry",
    ".hidden mmld_lazy_entry",
    ".type mmld_lazy_entry,@function",
    "mmld_lazy_entry:",
    ".cfi_startproc",
    "endbr64",
    "push rbp",
    ".cfi_def_cfa_offset 16",
    ".cfi_offset rbp, -16",
    "mov rbp, rsp",
    ".cfi_def_cfa_register rbp",
    "push rax",
    "push rcx",
    "push rdx",
    "push rsi",
    "push rdi",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "sub rsp, qword ptr [r11]",
    "and rsp, -64",
    "mov r10, qword ptr [r11 + 8]",
    "test r10, r10",
    "jz 2f",
    "xor eax, eax",
    "mov qword ptr [rsp + 512], rax",
    "mov qword ptr [rsp + 520], rax",
    "mov qword ptr [rsp + 528], rax",
    "mov qword ptr [rsp + 536], rax",
    "mov qword ptr [rsp + 544], rax",
    "mov qword ptr [rsp + 552], rax",
    "mov qword ptr [rsp + 560], rax",
    "mov qword ptr [rsp + 568], rax",
    "mov eax, r10d",
    "xor edx, edx",
    "xsave64 [rsp]",
    "jmp 3f",
    "2:",
    "fxsave64 [rsp]",
    "3:",
    "mov rdi, r11",
    "call {fixup}",
    "mov r11, qword ptr [rbp - 72]",
    "mov qword ptr [rbp - 72], rax",
    "mov r10, qword ptr [r11 + 8]",
    "test r10, r10",
    "jz 5f",
    "mov eax, r10d",
    "xor edx, edx",
    "xrstor64 [rsp]",
    "jmp 6f",
    "5:",
    "fxrstor64 [rsp]",
    "6:",
    "lea rsp, [rbp - 72]",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rdi",
    "pop rsi",
    "pop rdx",
    "pop rcx",
    "pop rax",
    "pop rbp",
    ".cfi_def_cfa rsp, 8",
    "jmp r11",
    ".cfi_endproc",
    ".size mmld_lazy_entry, .-mmld_lazy_entry",
    ".popsection",
    fixup = sym lazy_fixup,
);

unsafe extern "C" {
    fn mmld_lazy_entry();
}
