//! Dynamic thread-local storage for objects mmld maps.
//!
//! Owns: TLS module ids for mmld objects (in a range glibc never uses), each
//! module's initialisation image, every thread's blocks for those modules,
//! and `__tls_get_addr` as seen by mmld-mapped code: mmld's own ids are
//! served here, any other id goes to glibc's `__tls_get_addr`. A module
//! with a static block (`static_tls`) answers from that block instead, so
//! its general-dynamic and initial-exec accesses reach the same variable.
//! Also owns each thread's fast table (module slot to block address) that
//! the TLS descriptor resolver in `tlsdesc` reads without a call. Must
//! never: hand out a block of a module that has been unregistered, or free
//! a block while its thread's lock is held elsewhere.

use crate::fixedhash::HashMap;
use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

/// mmld's module ids start here. glibc numbers its modules densely from 1,
/// so an id with these high bits set can never be one of glibc's.
pub const MODULE_BASE: u64 = 0x4d4d_4c44_0000_0000;

/// The `tls_index` argument of `__tls_get_addr` (x86-64 psABI).
#[repr(C)]
pub struct TlsIndex {
    pub module: u64,
    pub offset: u64,
}

struct Template {
    /// `.tdata` after relocation; the rest of the block is `.tbss` zeros.
    image: Vec<u8>,
    layout: Layout,
    /// The module's static block (start minus the thread pointer), when it
    /// has one: then no thread ever gets a heap block for it.
    static_offset: Option<i64>,
    /// Index in every thread's fast table.
    slot: usize,
}

/// Fast-table slots of unregistered modules, for reuse: slots stay dense
/// however many modules come and go.
fn free_slots() -> &'static Mutex<(Vec<usize>, usize)> {
    static S: OnceLock<Mutex<(Vec<usize>, usize)>> = OnceLock::new();
    S.get_or_init(|| Mutex::new((Vec::new(), 0)))
}

/// Offset from the thread pointer of the word that holds each thread's
/// fast-table pointer (0: no fast tables). Read by the descriptor
/// resolver's assembly, hence a plain integer at a fixed address.
pub(crate) static FAST_TABLE_TPOFF: AtomicI64 = AtomicI64::new(0);

static NEXT_MODULE: AtomicU64 = AtomicU64::new(MODULE_BASE + 1);

fn templates() -> &'static RwLock<HashMap<u64, Arc<Template>>> {
    static T: OnceLock<RwLock<HashMap<u64, Arc<Template>>>> = OnceLock::new();
    T.get_or_init(|| RwLock::new(HashMap::default()))
}

/// One thread's blocks, shared with the registry of threads so that a
/// module's blocks in every thread can be freed when it unloads.
#[derive(Default)]
struct Blocks {
    /// (module, block, layout, fast-table slot)
    live: Vec<(u64, NonNull<u8>, Layout, usize)>,
    /// `[slots, block of slot 0, block of slot 1, ...]`, 0 for no block:
    /// the layout `tlsdesc`'s assembly reads through this thread's
    /// `FAST_TABLE_TPOFF` word. Grown only by its own thread.
    fast: Vec<u64>,
}

// SAFETY: the pointers are heap blocks owned by this structure; access is
// serialised by the Mutex around it.
unsafe impl Send for Blocks {}

impl Blocks {
    /// Record `block` for `slot` in the fast table, and point this thread's
    /// fast-table word at the table if it moved. Call only on the calling
    /// thread's own blocks.
    fn remember(&mut self, slot: usize, block: u64) {
        let tpoff = FAST_TABLE_TPOFF.load(Ordering::Acquire);
        if tpoff == 0 {
            return;
        }
        let before = self.fast.as_ptr();
        if self.fast.len() < slot + 2 {
            self.fast.resize(slot + 2, 0);
        }
        let slots = (self.fast.len() - 1) as u64;
        if let Some(len) = self.fast.first_mut() {
            *len = slots;
        }
        if let Some(entry) = self.fast.get_mut(slot + 1) {
            *entry = block;
        }
        if self.fast.as_ptr() != before {
            // SAFETY: `tpoff` is the offset of an 8-byte static TLS word
            // mmld owns (allocated once, never released), and this is the
            // calling thread's table, so the word is the caller's own.
            unsafe { set_fast_table_word(tpoff, self.fast.as_ptr() as u64) };
        }
    }

    fn free_module(&mut self, module: u64, slot: usize) {
        if let Some(entry) = self.fast.get_mut(slot + 1) {
            *entry = 0;
        }
        self.live.retain(|&(m, ptr, layout, _)| {
            if m == module {
                // SAFETY: allocated with exactly this layout in `block_for`
                // and removed from the list here, so freed once.
                unsafe { dealloc(ptr.as_ptr(), layout) };
                BLOCKS_LIVE.fetch_sub(1, Ordering::Relaxed);
                false
            } else {
                true
            }
        });
    }
}

impl Drop for Blocks {
    fn drop(&mut self) {
        for &(_, ptr, layout, _) in &self.live {
            // SAFETY: as in `free_module`: each block is owned and listed once.
            unsafe { dealloc(ptr.as_ptr(), layout) };
            BLOCKS_LIVE.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Blocks currently allocated across all threads (for leak tests).
static BLOCKS_LIVE: AtomicUsize = AtomicUsize::new(0);

fn threads() -> &'static Mutex<Vec<Weak<Mutex<Blocks>>>> {
    static T: OnceLock<Mutex<Vec<Weak<Mutex<Blocks>>>>> = OnceLock::new();
    T.get_or_init(|| Mutex::new(Vec::new()))
}

/// The calling thread's blocks, reached through a pthread key rather than a
/// Rust `thread_local!`: at thread exit glibc runs `__cxa_thread_atexit`
/// destructors (where Rust thread-locals die) before pthread-key
/// destructors, and loaded code (a Rust plugin's own std, for one) still
/// reads its TLS from pthread-key destructors. Our key's destructor re-arms
/// itself until glibc's last destructor round, so the blocks outlive every
/// other destructor, as glibc's own dynamic TLS does.
struct ThreadBlocks {
    blocks: Arc<Mutex<Blocks>>,
    rounds: u32,
}

fn thread_key() -> Option<libc::pthread_key_t> {
    static KEY: OnceLock<Option<libc::pthread_key_t>> = OnceLock::new();
    *KEY.get_or_init(|| {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: creates a key with our destructor; `key` is a valid out
        // pointer.
        (unsafe { libc::pthread_key_create(&mut key, Some(thread_blocks_destructor)) } == 0)
            .then_some(key)
    })
}

/// glibc's PTHREAD_DESTRUCTOR_ITERATIONS: rounds of key destructors.
const DESTRUCTOR_ROUNDS: u32 = 4;

unsafe extern "C" fn thread_blocks_destructor(value: *mut c_void) {
    if value.is_null() {
        return;
    }
    let state = value.cast::<ThreadBlocks>();
    // SAFETY: `value` is the Box leaked in `current_thread_blocks`; glibc
    // hands it to us once per round, and we either re-arm or free it.
    unsafe {
        if (*state).rounds + 1 < DESTRUCTOR_ROUNDS {
            (*state).rounds += 1;
            if let Some(key) = thread_key()
                && libc::pthread_setspecific(key, value) == 0
            {
                return;
            }
        }
        // The table may outlive this thread (another thread can hold the
        // Arc for a moment), so the descriptor resolver must stop reading
        // it first; this runs on the exiting thread, whose word it is.
        let tpoff = FAST_TABLE_TPOFF.load(Ordering::Acquire);
        if tpoff != 0 {
            set_fast_table_word(tpoff, 0);
        }
        drop(Box::from_raw(state));
    }
}

/// Store this thread's fast-table pointer.
///
/// # Safety
/// `tpoff` must be `FAST_TABLE_TPOFF`'s non-zero value.
unsafe fn set_fast_table_word(tpoff: i64, value: u64) {
    let word = thread_pointer().wrapping_add(tpoff as u64) as *mut u64;
    // SAFETY: guaranteed by the caller: an aligned 8-byte word of static
    // TLS, at this offset in every thread.
    unsafe { word.write_volatile(value) };
}

fn current_thread_blocks() -> Option<Arc<Mutex<Blocks>>> {
    let key = thread_key()?;
    // SAFETY: reading this thread's value of our own key.
    let value = unsafe { libc::pthread_getspecific(key) }.cast::<ThreadBlocks>();
    if !value.is_null() {
        // SAFETY: a non-null value is our live Box (freed only by the
        // destructor, which clears the key first).
        return Some(Arc::clone(unsafe { &(*value).blocks }));
    }
    let blocks = Arc::new(Mutex::new(Blocks::default()));
    {
        let mut all = threads().lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&blocks));
    }
    let state = Box::into_raw(Box::new(ThreadBlocks {
        blocks: Arc::clone(&blocks),
        rounds: 0,
    }));
    // SAFETY: storing our Box in our key for this thread.
    if unsafe { libc::pthread_setspecific(key, state.cast()) } != 0 {
        // SAFETY: not stored; reclaim it.
        drop(unsafe { Box::from_raw(state) });
    }
    Some(blocks)
}

/// Number of TLS blocks alive in all threads.
pub fn live_blocks() -> usize {
    BLOCKS_LIVE.load(Ordering::Relaxed)
}

/// A module id reserved for an object being loaded; unregistered on drop,
/// and its static block (if any) released after that.
#[derive(Debug)]
pub struct TlsModule {
    pub id: u64,
    slot: usize,
    /// Set once, during linking, for objects that need static TLS.
    static_block: OnceLock<super::static_tls::StaticTlsBlock>,
}

impl TlsModule {
    /// Reserve an id. The image is supplied after relocation.
    pub fn reserve() -> TlsModule {
        let slot = {
            let mut s = free_slots().lock().unwrap_or_else(|e| e.into_inner());
            s.0.pop().unwrap_or_else(|| {
                s.1 += 1;
                s.1 - 1
            })
        };
        TlsModule {
            id: NEXT_MODULE.fetch_add(1, Ordering::Relaxed),
            slot,
            static_block: OnceLock::new(),
        }
    }

    /// The static block's offset from the thread pointer, once
    /// [`TlsModule::publish_static`] has given the module one.
    pub fn static_offset(&self) -> Option<i64> {
        self.static_block
            .get()
            .map(|b| b.tp_offset())
            .or_else(|| static_offset_of(self.id))
    }

    /// Index in every thread's fast table.
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// Give the module a static block (`.tdata` already relocated, copied
    /// by glibc into every thread), and serve its dynamic accesses from it.
    pub fn publish_static(
        &self,
        image: Vec<u8>,
        memsz: u64,
        align: u64,
    ) -> crate::error::KindResult<i64> {
        if self.static_block.get().is_some() {
            return Err(crate::error::ErrorKind::TlsUnsupported {
                detail: "static TLS block published twice".into(),
            });
        }
        let block = super::static_tls::StaticTlsBlock::allocate(&super::tls_object::TlsShape {
            image: &image,
            memsz,
            align,
        })?;
        let offset = block.tp_offset();
        let _ = self.static_block.set(block);
        self.install(image, memsz, align, Some(offset))
            .map_err(|detail| crate::error::ErrorKind::TlsUnsupported { detail })?;
        Ok(offset)
    }

    /// Publish the initialisation image (`image` is `.tdata`, already
    /// relocated) for a block of `memsz` bytes aligned to `align`.
    pub fn publish(&self, image: Vec<u8>, memsz: u64, align: u64) -> Result<(), String> {
        self.install(image, memsz, align, None)
    }

    fn install(
        &self,
        image: Vec<u8>,
        memsz: u64,
        align: u64,
        static_offset: Option<i64>,
    ) -> Result<(), String> {
        let size = usize::try_from(memsz.max(1)).map_err(|_| "TLS block too large".to_string())?;
        let align =
            usize::try_from(align.max(1)).map_err(|_| "TLS alignment too large".to_string())?;
        let layout = Layout::from_size_align(size, align)
            .map_err(|e| format!("TLS block of {size} bytes aligned to {align}: {e}"))?;
        if image.len() > size {
            return Err("PT_TLS p_filesz exceeds p_memsz".into());
        }
        templates()
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                self.id,
                Arc::new(Template {
                    image,
                    layout,
                    static_offset,
                    slot: self.slot,
                }),
            );
        Ok(())
    }
}

impl Drop for TlsModule {
    fn drop(&mut self) {
        templates()
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        let all = threads().lock().unwrap_or_else(|e| e.into_inner());
        for blocks in all.iter().filter_map(Weak::upgrade) {
            blocks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .free_module(self.id, self.slot);
        }
        drop(all);
        free_slots()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .push(self.slot);
        // A block given on demand, and `static_block`, are released after
        // this, with no thread able to reach them through mmld any more.
        drop(
            on_demand()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&self.id),
        );
    }
}

/// Static blocks given on demand (see [`make_static`]), by module id,
/// until the module unloads.
fn on_demand() -> &'static Mutex<HashMap<u64, super::static_tls::StaticTlsBlock>> {
    static B: OnceLock<Mutex<HashMap<u64, super::static_tls::StaticTlsBlock>>> = OnceLock::new();
    B.get_or_init(|| Mutex::new(HashMap::default()))
}

/// Move mmld module `module` into static TLS, as glibc does when another
/// object's initial-exec access names one of its variables: possible only
/// while no thread has a dynamic block of it (glibc refuses then too).
/// Returns the block's offset from the thread pointer.
pub fn make_static(module: u64) -> crate::error::KindResult<i64> {
    let refuse = |why: &str| crate::error::ErrorKind::TlsUnsupported {
        detail: format!(
            "an initial-exec access needs the TLS of another mmld-loaded object in static TLS, but {why}"
        ),
    };
    let template = templates()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&module)
        .cloned()
        .ok_or_else(|| refuse("that object is not linked yet"))?;
    if let Some(offset) = template.static_offset {
        return Ok(offset);
    }
    let in_use = threads()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .any(|b| {
            b.lock()
                .unwrap_or_else(|e| e.into_inner())
                .live
                .iter()
                .any(|(m, ..)| *m == module)
        });
    if in_use {
        return Err(refuse("a thread already uses its dynamic TLS block"));
    }
    let block = super::static_tls::StaticTlsBlock::allocate(&super::tls_object::TlsShape {
        image: &template.image,
        memsz: template.layout.size() as u64,
        align: template.layout.align() as u64,
    })?;
    let offset = block.tp_offset();
    on_demand()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(module, block);
    templates()
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            module,
            Arc::new(Template {
                image: template.image.clone(),
                layout: template.layout,
                static_offset: Some(offset),
                slot: template.slot,
            }),
        );
    Ok(offset)
}

/// The calling thread's block of `module`; `blocks` must be the calling
/// thread's own.
fn block_for(blocks: &Mutex<Blocks>, module: u64) -> Option<NonNull<u8>> {
    let mut b = blocks.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&(_, ptr, _, slot)) = b.live.iter().find(|(m, ..)| *m == module) {
        // Blocks made before the fast tables existed enter them here.
        b.remember(slot, ptr.as_ptr() as u64);
        return Some(ptr);
    }
    let template = templates()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&module)
        .cloned()?;
    if let Some(offset) = template.static_offset {
        let block = thread_pointer().wrapping_add(offset as u64);
        b.remember(template.slot, block);
        return NonNull::new(block as *mut u8);
    }
    // SAFETY: the layout has non-zero size (at least 1 byte, see publish).
    let ptr = NonNull::new(unsafe { alloc_zeroed(template.layout) })?;
    // SAFETY: the block has layout.size() >= image.len() bytes (checked in
    // publish) and is freshly allocated, so the ranges do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(template.image.as_ptr(), ptr.as_ptr(), template.image.len())
    };
    b.live.push((module, ptr, template.layout, template.slot));
    b.remember(template.slot, ptr.as_ptr() as u64);
    BLOCKS_LIVE.fetch_add(1, Ordering::Relaxed);
    Some(ptr)
}

/// The static block offset of mmld module `module`, if it has one.
pub fn static_offset_of(module: u64) -> Option<i64> {
    templates()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&module)
        .and_then(|t| t.static_offset)
}

/// Index of `module` in the fast tables, if it is one of mmld's.
pub fn fast_slot(module: u64) -> Option<usize> {
    templates()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&module)
        .map(|t| t.slot)
}

type GlibcTlsGetAddr = unsafe extern "C" fn(*const TlsIndex) -> *mut c_void;

fn glibc_tls_get_addr() -> Option<GlibcTlsGetAddr> {
    static F: OnceLock<usize> = OnceLock::new();
    let addr = *F.get_or_init(|| {
        let name = c"__tls_get_addr";
        crate::host::global_symbol(name, None).unwrap_or(0) as usize
    });
    // SAFETY: a non-zero address from dlsym for `__tls_get_addr` is glibc's
    // function of exactly this signature.
    (addr != 0).then(|| unsafe { std::mem::transmute::<usize, GlibcTlsGetAddr>(addr) })
}

/// The body of mmld's `__tls_get_addr` (called through the stack-aligning
/// entry point below).
extern "C" fn tls_get_addr_impl(index: *const TlsIndex) -> *mut c_void {
    if index.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: compiled TLS sequences pass a pointer to a `tls_index` in the
    // object's GOT, which relocation filled in.
    let (module, offset) = unsafe { ((*index).module, (*index).offset) };
    if module < MODULE_BASE {
        return match glibc_tls_get_addr() {
            // SAFETY: forwarding the caller's own argument to glibc.
            Some(f) => unsafe { f(index) },
            None => std::ptr::null_mut(),
        };
    }
    let block = current_thread_blocks().and_then(|b| block_for(&b, module));
    match block {
        Some(p) => p.as_ptr().wrapping_add(offset as usize).cast(),
        None => std::ptr::null_mut(),
    }
}

// Some compilers call `__tls_get_addr` with a stack that is not 16-byte
// aligned (glibc realigns for the same reason, BZ #27585); Rust code may use
// aligned SSE stores, so the entry point realigns before calling it.
std::arch::global_asm!(
    ".pushsection .text.mmld_tls_get_addr,\"ax\",@progbits",
    ".globl mmld_tls_get_addr",
    ".hidden mmld_tls_get_addr",
    ".type mmld_tls_get_addr,@function",
    "mmld_tls_get_addr:",
    ".cfi_startproc",
    "push rbp",
    ".cfi_def_cfa_offset 16",
    ".cfi_offset rbp, -16",
    "mov rbp, rsp",
    ".cfi_def_cfa_register rbp",
    "and rsp, -16",
    "call {body}",
    "mov rsp, rbp",
    "pop rbp",
    ".cfi_def_cfa rsp, 8",
    "ret",
    ".cfi_endproc",
    ".size mmld_tls_get_addr, .-mmld_tls_get_addr",
    ".popsection",
    body = sym tls_get_addr_impl,
);

unsafe extern "C" {
    fn mmld_tls_get_addr(index: *const TlsIndex) -> *mut c_void;
}

/// The calling thread's address of the variable at `offset` in mmld TLS
/// module `module` (what `dlsym` returns for a thread-local symbol).
pub fn address_in_this_thread(module: u64, offset: u64) -> u64 {
    let index = TlsIndex { module, offset };
    tls_get_addr_impl(&index) as u64
}

/// Address of mmld's `__tls_get_addr`, bound into mmld-mapped code.
pub fn tls_get_addr_entry() -> u64 {
    mmld_tls_get_addr as *const () as u64
}

/// The thread pointer (`%fs:0`), for static-TLS offsets of host modules.
pub fn thread_pointer() -> u64 {
    let tp: u64;
    // SAFETY: on x86-64 Linux `%fs:0` holds the thread pointer itself (the
    // TCB's self pointer), readable by every thread.
    unsafe {
        std::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly, preserves_flags))
    };
    tp
}

/// `R_X86_64_TPOFF64` against a host symbol whose address (for the calling
/// thread) is `addr`: the offset from the thread pointer, the same in every
/// thread for modules in the static TLS block.
pub fn host_tp_offset(addr: u64) -> u64 {
    addr.wrapping_sub(thread_pointer())
}

/// The glibc module id and block start of the host TLS block holding
/// `addr` (the calling thread's copy), found through `dl_iterate_phdr`.
pub fn host_module_of(addr: u64) -> Option<(u64, u64)> {
    let mut found = None;
    crate::host::each_host_object(|o| {
        let Some(tls) = o.phdrs.iter().find(|p| p.p_type == libc::PT_TLS) else {
            return false;
        };
        let start = o.tls_data;
        if start != 0 && addr >= start && addr < start.saturating_add(tls.p_memsz) {
            found = Some((o.tls_modid, start));
            return true;
        }
        false
    });
    found
}

/// Give every thread a fast-table word in static TLS, once. The block is
/// kept for the life of the process (descriptors may be called until
/// exit). Without surplus for 8 bytes, descriptors take the slow path.
pub fn enable_fast_tables() {
    static BLOCK: OnceLock<Option<super::static_tls::StaticTlsBlock>> = OnceLock::new();
    let block = BLOCK.get_or_init(|| {
        super::static_tls::StaticTlsBlock::allocate(&super::tls_object::TlsShape {
            image: &[],
            memsz: 8,
            align: 8,
        })
        .ok()
    });
    if let Some(b) = block {
        FAST_TABLE_TPOFF.store(b.tp_offset(), Ordering::Release);
    }
}

/// Whether descriptors can take the fast path (the word was allocated).
pub fn fast_tables_enabled() -> bool {
    FAST_TABLE_TPOFF.load(Ordering::Acquire) != 0
}
