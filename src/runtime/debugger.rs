//! Debugger visibility for objects mmld maps.
//!
//! Owns: an `r_debug`-shaped list of mmld's objects at the well-known symbol
//! `mmld_r_debug`, and the hook function `mmld_debug_state`, called after
//! every change, where a debugger can stop to re-read the list
//! (`gdb/mmld.py` does, and adds each object's symbols). mmld never links
//! its nodes into glibc's own `_r_debug` chain: glibc walks that chain as
//! its private list of `struct link_map`, and foreign nodes crash it. Must
//! never: free a node while it is linked into the list.

use std::ffi::{CString, c_char, c_int};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The public head of `struct link_map`: the part debuggers read.
#[repr(C)]
pub struct LinkMap {
    pub l_addr: u64,
    pub l_name: *const c_char,
    pub l_ld: u64,
    pub l_next: *mut LinkMap,
    pub l_prev: *mut LinkMap,
}

/// Same layout as glibc's `struct r_debug` (version 1).
#[repr(C)]
pub struct RDebug {
    pub r_version: c_int,
    pub r_map: *mut LinkMap,
    pub r_brk: u64,
    pub r_state: c_int,
    pub r_ldbase: u64,
}

const RT_CONSISTENT: c_int = 0;
const RT_ADD: c_int = 1;
const RT_DELETE: c_int = 2;

/// Read by debuggers (by symbol name) while the process is stopped.
#[unsafe(no_mangle)]
pub static mut mmld_r_debug: RDebug = RDebug {
    r_version: 1,
    r_map: std::ptr::null_mut(),
    r_brk: 0,
    r_state: RT_CONSISTENT,
    r_ldbase: 0,
};

/// Debuggers put a breakpoint here; it is called after each list change.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn mmld_debug_state() {
    // Keeps the function from being merged with another empty function.
    std::hint::black_box(0u8);
}

struct Node {
    id: u64,
    map: Box<LinkMap>,
    _name: CString,
}

// SAFETY: nodes are only touched under the NODES mutex; the raw pointers in
// them point to other boxed nodes owned by the same list.
unsafe impl Send for Node {}

static NODES: Mutex<Vec<Node>> = Mutex::new(Vec::new());

/// Objects added to and removed from the list so far.
static ADDS: AtomicU64 = AtomicU64::new(0);
static SUBS: AtomicU64 = AtomicU64::new(0);

/// `(added, removed)` since the process started: `dl_iterate_phdr`'s
/// `dlpi_adds`/`dlpi_subs` for mmld's objects.
pub fn changes() -> (u64, u64) {
    (ADDS.load(Ordering::Relaxed), SUBS.load(Ordering::Relaxed))
}

/// The node of object `id`. It stays valid until the object is removed,
/// which happens only when the object itself is dropped.
pub fn link_map_of(id: u64) -> Option<*mut LinkMap> {
    let mut nodes = NODES.lock().unwrap_or_else(|e| e.into_inner());
    nodes
        .iter_mut()
        .find(|n| n.id == id)
        .map(|n| &raw mut *n.map)
}

fn relink(nodes: &mut [Node], state: c_int) {
    let mut prev: *mut LinkMap = std::ptr::null_mut();
    let ptrs: Vec<*mut LinkMap> = nodes.iter_mut().map(|n| &raw mut *n.map).collect();
    for (i, &p) in ptrs.iter().enumerate() {
        // SAFETY: every pointer is to a live Box in `nodes`, which we hold
        // exclusively under the mutex.
        unsafe {
            (*p).l_prev = prev;
            (*p).l_next = ptrs.get(i + 1).copied().unwrap_or(std::ptr::null_mut());
        }
        prev = p;
    }
    let head = ptrs.first().copied().unwrap_or(std::ptr::null_mut());
    // SAFETY: `mmld_r_debug` is only written here, under the NODES mutex;
    // debuggers read it only while the process is stopped.
    unsafe {
        let rd = &raw mut mmld_r_debug;
        (*rd).r_state = state;
        (*rd).r_brk = mmld_debug_state as *const () as u64;
        (*rd).r_map = head;
    }
    mmld_debug_state();
    // SAFETY: as above.
    unsafe {
        let rd = &raw mut mmld_r_debug;
        (*rd).r_state = RT_CONSISTENT;
    }
    mmld_debug_state();
}

/// Announce a newly mapped object (before its constructors run).
pub fn add(id: u64, path: &Path, bias: u64, dynamic: u64) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(name) = CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    let map = Box::new(LinkMap {
        l_addr: bias,
        l_name: name.as_ptr(),
        l_ld: dynamic,
        l_next: std::ptr::null_mut(),
        l_prev: std::ptr::null_mut(),
    });
    let mut nodes = NODES.lock().unwrap_or_else(|e| e.into_inner());
    nodes.push(Node {
        id,
        map,
        _name: name,
    });
    relink(&mut nodes, RT_ADD);
    ADDS.fetch_add(1, Ordering::Relaxed);
}

/// Withdraw an object (before it is unmapped).
pub fn remove(id: u64) {
    let mut nodes = NODES.lock().unwrap_or_else(|e| e.into_inner());
    let Some(pos) = nodes.iter().position(|n| n.id == id) else {
        return;
    };
    // Unlink first, then free: the list never points at a freed node.
    let gone = nodes.remove(pos);
    relink(&mut nodes, RT_DELETE);
    SUBS.fetch_add(1, Ordering::Relaxed);
    drop(gone);
}
