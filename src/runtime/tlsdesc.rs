//! TLS descriptors (`R_X86_64_TLSDESC`, code built with
//! `-mtls-dialect=gnu2`).
//!
//! Owns: the two resolver functions a descriptor can point to, and the
//! records dynamic descriptors point to. A descriptor is two words
//! `[function, argument]`; compiled code calls `function` with `%rax` =
//! the descriptor's address and expects the variable's offset from the
//! thread pointer back in `%rax`, every other register preserved (the
//! psABI's TLSDESC calling convention).
//! - static: the argument is that offset; the function returns it.
//! - dynamic: the argument points to a [`Record`] {fast-table slot, offset,
//!   module}. The fast path reads this thread's block from the fast table
//!   `runtime::tls` keeps (two loads through `%fs`); the slow path saves
//!   every register the ABI lets a callee clobber, general and vector
//!   (XSAVE of x87/SSE/AVX/AVX-512 state, FXSAVE where the OS has no
//!   XSAVE), calls mmld's dynamic-TLS code, and restores them.
//!
//! Must never: let a record move or die while a descriptor points to it
//! ([`Descriptors`] lives as long as the object whose descriptors use it),
//! or clobber any register but `%rax` and the flags.

use crate::fixedhash::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use super::tls;

/// What a dynamic descriptor's argument points to. The assembly reads the
/// first two fields by offset: keep the layout.
#[repr(C)]
#[derive(Debug)]
pub struct Record {
    /// Index in the fast tables, `u64::MAX` for modules that have none
    /// (glibc's): those always take the slow path.
    slot: u64,
    /// The variable's offset in its module's block (symbol value + addend).
    offset: u64,
    module: u64,
}

/// Slow-path calls so far (tests check the fast path is taken).
static SLOW_CALLS: AtomicU64 = AtomicU64::new(0);

/// How many times a dynamic descriptor took the slow path.
pub fn slow_calls() -> u64 {
    SLOW_CALLS.load(Ordering::Relaxed)
}

/// Bytes the slow path reserves for XSAVE, or 0 to use FXSAVE.
static XSAVE_SIZE: AtomicU64 = AtomicU64::new(0);

/// XSAVE components the slow path saves: x87, SSE, AVX, AVX-512 opmask and
/// upper halves. XSAVE intersects this with XCR0, so absent features cost
/// nothing. AMX tile data is left out: no compiled code clobbers it behind
/// a call.
const XSAVE_MASK: u32 = 0b1110_0111;

/// The machine facts the resolvers rely on, found once before the first
/// dynamic descriptor is installed; also gives threads their fast tables.
pub fn prepare() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        XSAVE_SIZE.store(xsave_area_size(), Ordering::Release);
        tls::enable_fast_tables();
    });
}

fn xsave_area_size() -> u64 {
    use std::arch::x86_64::__cpuid_count;
    // CPUID.1:ECX bit 27 is OSXSAVE: the OS enabled XSAVE and XCR0. Leaf
    // 0xD sub-leaf 0 EBX is the area size for the features XCR0 enables.
    let leaf1 = __cpuid_count(1, 0);
    if leaf1.ecx & (1 << 27) == 0 {
        return 0;
    }
    let size = u64::from(__cpuid_count(0xd, 0).ebx);
    // The legacy area and the XSAVE header are 576 bytes: anything smaller
    // is a broken CPUID, and FXSAVE is the safe answer.
    if size < 576 { 0 } else { size }
}

/// The slow path's body: this thread's address of the variable, minus the
/// thread pointer. Runs with every caller register saved by the assembly.
extern "C" fn dynamic_slow(record: *const Record) -> u64 {
    // SAFETY: the assembly passes the descriptor's argument, a Record that
    // lives as long as the object whose code called it.
    let (module, offset) = unsafe { ((*record).module, (*record).offset) };
    SLOW_CALLS.fetch_add(1, Ordering::Relaxed);
    let addr = tls::address_in_this_thread(module, offset);
    if addr == 0 {
        // No block (out of memory, or the module is gone): the access would
        // hit address 0 minus the thread pointer. Stop clearly instead.
        let msg = b"mmld: cannot get a thread-local block for a TLS descriptor\n";
        // SAFETY: writing a static buffer to stderr, then aborting.
        unsafe {
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::abort();
        }
    }
    addr.wrapping_sub(tls::thread_pointer())
}

std::arch::global_asm!(
    ".pushsection .text.mmld_tlsdesc,\"ax\",@progbits",
    ".globl mmld_tlsdesc_static",
    ".hidden mmld_tlsdesc_static",
    ".type mmld_tlsdesc_static,@function",
    "mmld_tlsdesc_static:",
    ".cfi_startproc",
    "mov rax, qword ptr [rax + 8]",
    "ret",
    ".cfi_endproc",
    ".size mmld_tlsdesc_static, .-mmld_tlsdesc_static",
    "",
    // An unresolved weak reference: its address is the addend (glibc's
    // `_dl_tlsdesc_undefweak`), so the offset is the addend minus the
    // thread pointer.
    ".globl mmld_tlsdesc_undefweak",
    ".hidden mmld_tlsdesc_undefweak",
    ".type mmld_tlsdesc_undefweak,@function",
    "mmld_tlsdesc_undefweak:",
    ".cfi_startproc",
    "mov rax, qword ptr [rax + 8]",
    "sub rax, qword ptr fs:0",
    "ret",
    ".cfi_endproc",
    ".size mmld_tlsdesc_undefweak, .-mmld_tlsdesc_undefweak",
    "",
    ".globl mmld_tlsdesc_dynamic",
    ".hidden mmld_tlsdesc_dynamic",
    ".type mmld_tlsdesc_dynamic,@function",
    "mmld_tlsdesc_dynamic:",
    ".cfi_startproc",
    "push rdx",
    ".cfi_adjust_cfa_offset 8",
    "push rcx",
    ".cfi_adjust_cfa_offset 8",
    "mov rax, qword ptr [rax + 8]",
    // Fast path: this thread's table, its entry for the record's slot.
    "mov rdx, qword ptr [rip + {table_tpoff}@GOTPCREL]",
    "mov rdx, qword ptr [rdx]",
    "test rdx, rdx",
    "jz 2f",
    "mov rdx, qword ptr fs:[rdx]",
    "test rdx, rdx",
    "jz 2f",
    "mov rcx, qword ptr [rax]",
    "cmp rcx, qword ptr [rdx]",
    "jae 2f",
    "mov rdx, qword ptr [rdx + rcx * 8 + 8]",
    "test rdx, rdx",
    "jz 2f",
    "add rdx, qword ptr [rax + 8]",
    "sub rdx, qword ptr fs:0",
    "mov rax, rdx",
    ".cfi_remember_state",
    "pop rcx",
    ".cfi_adjust_cfa_offset -8",
    "pop rdx",
    ".cfi_adjust_cfa_offset -8",
    "ret",
    // Slow path: save everything a call may clobber, call Rust.
    "2:",
    ".cfi_restore_state",
    "push rsi",
    ".cfi_adjust_cfa_offset 8",
    "push rdi",
    ".cfi_adjust_cfa_offset 8",
    "push r8",
    ".cfi_adjust_cfa_offset 8",
    "push r9",
    ".cfi_adjust_cfa_offset 8",
    "push r10",
    ".cfi_adjust_cfa_offset 8",
    "push r11",
    ".cfi_adjust_cfa_offset 8",
    "push rbp",
    ".cfi_adjust_cfa_offset 8",
    ".cfi_offset rbp, -80",
    "mov rbp, rsp",
    ".cfi_def_cfa_register rbp",
    "mov rdi, rax",
    "mov rsi, qword ptr [rip + {xsave_size}@GOTPCREL]",
    "mov rsi, qword ptr [rsi]",
    "test rsi, rsi",
    "jz 3f",
    "sub rsp, rsi",
    "and rsp, -64",
    // XRSTOR faults unless the header's reserved bytes are zero, and
    // XSAVE writes only XSTATE_BV: clear the whole 64-byte header.
    "mov qword ptr [rsp + 512], 0",
    "mov qword ptr [rsp + 520], 0",
    "mov qword ptr [rsp + 528], 0",
    "mov qword ptr [rsp + 536], 0",
    "mov qword ptr [rsp + 544], 0",
    "mov qword ptr [rsp + 552], 0",
    "mov qword ptr [rsp + 560], 0",
    "mov qword ptr [rsp + 568], 0",
    "mov eax, {mask}",
    "xor edx, edx",
    "xsave64 [rsp]",
    "call {slow}",
    "mov rdi, rax",
    "mov eax, {mask}",
    "xor edx, edx",
    "xrstor64 [rsp]",
    "mov rax, rdi",
    "jmp 4f",
    "3:",
    "sub rsp, 512",
    "and rsp, -16",
    "fxsave64 [rsp]",
    "call {slow}",
    "fxrstor64 [rsp]",
    "4:",
    "mov rsp, rbp",
    ".cfi_def_cfa_register rsp",
    "pop rbp",
    ".cfi_adjust_cfa_offset -8",
    ".cfi_restore rbp",
    "pop r11",
    ".cfi_adjust_cfa_offset -8",
    "pop r10",
    ".cfi_adjust_cfa_offset -8",
    "pop r9",
    ".cfi_adjust_cfa_offset -8",
    "pop r8",
    ".cfi_adjust_cfa_offset -8",
    "pop rdi",
    ".cfi_adjust_cfa_offset -8",
    "pop rsi",
    ".cfi_adjust_cfa_offset -8",
    "pop rcx",
    ".cfi_adjust_cfa_offset -8",
    "pop rdx",
    ".cfi_adjust_cfa_offset -8",
    "ret",
    ".cfi_endproc",
    ".size mmld_tlsdesc_dynamic, .-mmld_tlsdesc_dynamic",
    ".popsection",
    table_tpoff = sym tls::FAST_TABLE_TPOFF,
    xsave_size = sym XSAVE_SIZE,
    slow = sym dynamic_slow,
    mask = const XSAVE_MASK,
);

unsafe extern "C" {
    fn mmld_tlsdesc_static();
    fn mmld_tlsdesc_undefweak();
    fn mmld_tlsdesc_dynamic();
}

/// The two words of one descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    pub function: u64,
    pub argument: u64,
}

/// A descriptor for a variable at a fixed offset from the thread pointer
/// (a static block: mmld's or the host's).
pub fn static_descriptor(tp_offset: i64) -> Descriptor {
    Descriptor {
        function: mmld_tlsdesc_static as *const () as u64,
        argument: tp_offset as u64,
    }
}

/// A descriptor for an unresolved weak thread-local reference: the
/// variable's address is `addend` in every thread.
pub fn undefined_weak_descriptor(addend: u64) -> Descriptor {
    Descriptor {
        function: mmld_tlsdesc_undefweak as *const () as u64,
        argument: addend,
    }
}

/// The records of one object's dynamic descriptors. Dropped with the
/// object, after its code can no longer run.
#[derive(Debug, Default)]
pub struct Descriptors {
    /// Pinned: descriptors hold their addresses.
    records: Vec<std::pin::Pin<Box<Record>>>,
    /// (module, offset) to index in `records`: one record per variable.
    index: HashMap<(u64, u64), usize>,
}

impl Descriptors {
    /// A descriptor for the variable at `offset` in TLS module `module`
    /// (an mmld id, or glibc's id for a host module), computed per thread.
    /// `slot` is the module's fast-table slot when the caller knows it (a
    /// module still being linked has no published template yet).
    pub fn dynamic(&mut self, module: u64, offset: u64, slot: Option<usize>) -> Descriptor {
        prepare();
        let i = *self.index.entry((module, offset)).or_insert_with(|| {
            let slot = slot
                .or_else(|| tls::fast_slot(module))
                .map_or(u64::MAX, |s| s as u64);
            self.records.push(Box::pin(Record {
                slot,
                offset,
                module,
            }));
            self.records.len() - 1
        });
        let argument = self
            .records
            .get(i)
            .map_or(0, |r| std::ptr::from_ref::<Record>(&**r) as u64);
        Descriptor {
            function: mmld_tlsdesc_dynamic as *const () as u64,
            argument,
        }
    }

    /// Number of distinct variables with a dynamic descriptor.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::arch::x86_64::{__m512i, _mm512_set1_epi64};

    /// Calls the descriptor the way compiled code does, with distinct
    /// values in every register the convention says survives (general,
    /// and the full ZMM/opmask state when the CPU has AVX-512), and
    /// returns the result and whether every such register survived.
    #[target_feature(enable = "avx512f")]
    unsafe fn call_checked(desc: &[u64; 2]) -> (u64, bool) {
        let g: [u64; 8] = std::array::from_fn(|i| 0x1111_0000_0000_0001 * (i as u64 + 1));
        let z: [__m512i; 32] = std::array::from_fn(|i| _mm512_set1_epi64(0x0101 * (i as i64 + 7)));
        let mut go = [0u64; 8];
        let mut zo: [__m512i; 32] = z;
        let (k_in, mut k_out) = (0x5a5au64, 0u64);
        let result: u64;
        // SAFETY: the descriptor's function follows the TLSDESC convention
        // (rax in and out, nothing else changed); every register it could
        // wrongly clobber is an operand here, so a bug shows as a mismatch.
        unsafe {
            std::arch::asm!(
                "kmovq k3, {k}",
                "call qword ptr [rax]",
                "kmovq {k}, k3",
                k = inout(reg) k_in => k_out,
                inout("rax") desc.as_ptr() => result,
                inout("rcx") g[0] => go[0], inout("rdx") g[1] => go[1],
                inout("rsi") g[2] => go[2], inout("rdi") g[3] => go[3],
                inout("r8") g[4] => go[4], inout("r9") g[5] => go[5],
                inout("r10") g[6] => go[6], inout("r11") g[7] => go[7],
                inout("zmm0") z[0] => zo[0], inout("zmm1") z[1] => zo[1],
                inout("zmm2") z[2] => zo[2], inout("zmm3") z[3] => zo[3],
                inout("zmm4") z[4] => zo[4], inout("zmm5") z[5] => zo[5],
                inout("zmm6") z[6] => zo[6], inout("zmm7") z[7] => zo[7],
                inout("zmm8") z[8] => zo[8], inout("zmm9") z[9] => zo[9],
                inout("zmm10") z[10] => zo[10], inout("zmm11") z[11] => zo[11],
                inout("zmm12") z[12] => zo[12], inout("zmm13") z[13] => zo[13],
                inout("zmm14") z[14] => zo[14], inout("zmm15") z[15] => zo[15],
                inout("zmm16") z[16] => zo[16], inout("zmm17") z[17] => zo[17],
                inout("zmm18") z[18] => zo[18], inout("zmm19") z[19] => zo[19],
                inout("zmm20") z[20] => zo[20], inout("zmm21") z[21] => zo[21],
                inout("zmm22") z[22] => zo[22], inout("zmm23") z[23] => zo[23],
                inout("zmm24") z[24] => zo[24], inout("zmm25") z[25] => zo[25],
                inout("zmm26") z[26] => zo[26], inout("zmm27") z[27] => zo[27],
                inout("zmm28") z[28] => zo[28], inout("zmm29") z[29] => zo[29],
                inout("zmm30") z[30] => zo[30], inout("zmm31") z[31] => zo[31],
                out("k3") _,
            );
        }
        let same_z = z.iter().zip(&zo).all(|(a, b)| {
            // SAFETY: plain reinterpretation of 64-byte vectors.
            let (a, b): ([u64; 8], [u64; 8]) = unsafe {
                (
                    std::mem::transmute::<__m512i, [u64; 8]>(*a),
                    std::mem::transmute::<__m512i, [u64; 8]>(*b),
                )
            };
            a == b
        });
        (result, g == go && same_z && k_in == k_out)
    }

    fn call(desc: &[u64; 2]) -> (u64, bool) {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512.
            unsafe { call_checked(desc) }
        } else {
            let result: u64;
            // SAFETY: as in `call_checked`, checking rax only.
            unsafe {
                std::arch::asm!("call qword ptr [rax]", inout("rax") desc.as_ptr() => result,
                    clobber_abi("C"))
            };
            (result, true)
        }
    }

    #[test]
    fn static_descriptor_returns_its_offset() {
        let d = static_descriptor(-0x1234);
        let (r, kept) = call(&[d.function, d.argument]);
        assert_eq!(r as i64, -0x1234);
        assert!(kept);
        let d = undefined_weak_descriptor(16);
        let (r, kept) = call(&[d.function, d.argument]);
        assert_eq!(r.wrapping_add(tls::thread_pointer()), 16);
        assert!(kept);
    }

    #[test]
    fn dynamic_descriptor_gives_each_thread_its_block_and_preserves_registers() {
        let module = tls::TlsModule::reserve();
        let id = module.id;
        let image: Vec<u8> = (1..=24).collect();
        module.publish(image.clone(), 64, 16).unwrap();
        let mut descs = Descriptors::default();
        let d = descs.dynamic(module.id, 8, None);
        let desc = [d.function, d.argument];
        let read = |off: u64| {
            let p = tls::thread_pointer().wrapping_add(off) as *const u8;
            // SAFETY: the resolver gave this thread's address of a live
            // block with at least 16 bytes after offset 8.
            unsafe { std::slice::from_raw_parts(p, 16) }.to_vec()
        };
        let check = || {
            let before = slow_calls();
            let (first, kept_slow) = call(&desc);
            let after_slow = slow_calls();
            let (second, kept_fast) = call(&desc);
            assert!(kept_slow && kept_fast, "a register changed");
            assert_eq!(first, second);
            assert_eq!(read(first), image[8..24].to_vec());
            assert_eq!(
                first.wrapping_add(tls::thread_pointer()),
                tls::address_in_this_thread(id, 8)
            );
            assert!(after_slow > before, "first call must build the block");
            (
                after_slow,
                slow_calls(),
                first.wrapping_add(tls::thread_pointer()),
            )
        };
        let here = check();
        let there = std::thread::scope(|s| s.spawn(check).join().unwrap());
        assert_ne!(here.2, there.2, "each thread has its own block");
        if tls::fast_tables_enabled() {
            assert_eq!(there.0, there.1, "second call takes the fast path");
        }
        // The FXSAVE slow path (machines whose OS has no XSAVE): a new
        // thread takes the slow path once; checked here, not in a test of
        // its own, because the switch is process-wide.
        let saved = XSAVE_SIZE.swap(0, Ordering::AcqRel);
        let fx = std::thread::scope(|s| {
            s.spawn(|| {
                let before = slow_calls();
                let result: u64;
                let kept: u64;
                // SAFETY: as in `call_checked`; with FXSAVE only the SSE
                // registers are promised, so one of them is checked.
                unsafe {
                    std::arch::asm!(
                        "movq xmm9, r12",
                        "call qword ptr [rax]",
                        "movq r12, xmm9",
                        inout("r12") 0x0123_4567_89ab_cdefu64 => kept,
                        inout("rax") desc.as_ptr() => result,
                        clobber_abi("C"),
                    )
                };
                assert_eq!(kept, 0x0123_4567_89ab_cdef, "xmm9 kept");
                assert!(slow_calls() > before, "the slow path ran");
                (result, read(result))
            })
            .join()
            .unwrap()
        });
        XSAVE_SIZE.store(saved, Ordering::Release);
        assert_eq!(fx.1, image[8..24].to_vec());
        drop(descs);
    }
}
