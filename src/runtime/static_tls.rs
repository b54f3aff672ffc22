//! Static TLS blocks for objects mmld maps, taken from glibc's surplus.
//!
//! Owns: getting a block at one fixed offset from the thread pointer in
//! every thread, through glibc's public interface only: the object that
//! `tls_object` builds is written to a `memfd` and `dlopen`ed from
//! `/proc/PID/fd/N`. glibc then allocates the block in its static TLS
//! surplus, copies the image into every existing thread (and every thread
//! created later), and relocates the object's `TPOFF64` word, which gives
//! the offset. The objects are hidden from the host-scope code (see
//! `host::hide`). Must never: hand out a block whose image is not the final
//! relocated `.tdata` (glibc copies it into running threads at `dlopen`),
//! or `dlclose` a block anything can still reach.
//!
//! Lifetime: a block is released (`dlclose`) when its owner drops it, as
//! glibc releases a static-TLS object's block at `dlclose`. Measured on
//! glibc 2.36: the default surplus is 1,664 bytes (26 blocks of 64), and
//! glibc takes released space back only when it lies at the end of the
//! used part, never the padding it put under a block. So:
//! - blocks are sized and aligned in 64-byte granules (`tls_object`), so
//!   glibc never pads (200-byte blocks aligned to 16 ran out after 7
//!   cycles; granule-sized ones cycle 20,000 times in the same space);
//! - the `dlclose`s happen youngest first: a block dropped while a younger
//!   one is live waits, and goes back with it, so no unload order leaves
//!   holes (glibc's own `dlopen` runs out after 5 cycles of two static-TLS
//!   libraries closed in load order).
//!
//! Keeping blocks for reuse by a later load would be wrong: the image holds
//! relocated pointers that differ per load, and running threads would keep
//! the previous load's values.

use std::ffi::{CStr, CString, c_void};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Mutex, OnceLock};

use super::tls_object::{self, TlsShape};
use crate::error::{ErrorKind, KindResult};

/// glibc's message when the surplus cannot hold a block.
const GLIBC_EXHAUSTED: &str = "cannot allocate memory in static TLS block";

/// A block of static TLS, the same offset from the thread pointer in every
/// thread; released with `dlclose` on drop.
#[derive(Debug)]
pub struct StaticTlsBlock {
    /// Block start minus the thread pointer (negative on x86-64).
    tp_offset: i64,
    size: u64,
    /// Position in allocation order (see `release`).
    serial: u64,
    /// `None` only while being dropped.
    object: Option<Opened>,
}

/// The memfd object as glibc has it loaded.
#[derive(Debug)]
struct Opened {
    handle: Handle,
    name: CString,
    /// Held open so `/proc/PID/fd/N` names this object, and no other,
    /// for as long as glibc has it loaded: glibc matches a `dlopen` path
    /// against the names of loaded objects before it opens the file.
    _fd: OwnedFd,
}

#[derive(Debug)]
struct Handle(*mut c_void);

// SAFETY: a dlopen handle is an opaque token glibc accepts from any thread;
// mmld never dereferences it.
unsafe impl Send for Handle {}
// SAFETY: as above.
unsafe impl Sync for Handle {}

impl StaticTlsBlock {
    /// Ask glibc for a block shaped like `shape`, whose image is copied
    /// into every thread. `who` names the object for error messages.
    pub fn allocate(shape: &TlsShape<'_>) -> KindResult<StaticTlsBlock> {
        let bytes = tls_object::build(shape).map_err(|detail| ErrorKind::TlsUnsupported {
            detail: format!("static TLS block: {detail}"),
        })?;
        let fd = memfd_with(c"mmld-static-tls", &bytes)?;
        // The pid rather than `self`: debuggers read the objects glibc lists
        // by name, and in a debugger's process `/proc/self` is the debugger
        // (gdb would read its own descriptor N, and can block on it).
        let name = CString::new(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            fd.as_raw_fd()
        ))
        .map_err(|_| ErrorKind::Other("static TLS: memfd path contains a NUL byte".to_string()))?;
        // Named before glibc lists it, so no `dl_iterate_phdr` reader ever
        // takes it for a library.
        crate::host::hide(name.as_bytes());
        let handle = open(&name, shape).inspect_err(|_| crate::host::unhide(name.as_bytes()))?;
        let serial = {
            let mut order = allocation_order().lock().unwrap_or_else(|e| e.into_inner());
            order.0 += 1;
            let serial = order.0;
            order.1.push((serial, None));
            serial
        };
        let mut block = StaticTlsBlock {
            tp_offset: 0,
            size: shape.memsz.max(1),
            serial,
            object: Some(Opened {
                handle,
                name,
                _fd: fd,
            }),
        };
        block.tp_offset = block.read_offset()?;
        Ok(block)
    }

    /// Block start minus the thread pointer: what `R_X86_64_TPOFF64`
    /// against a variable at offset `v` of the block evaluates to, minus `v`.
    pub fn tp_offset(&self) -> i64 {
        self.tp_offset
    }

    /// Size of the block (`p_memsz`).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The block's start in the calling thread.
    pub fn address_in_this_thread(&self) -> u64 {
        super::tls::thread_pointer().wrapping_add(self.tp_offset as u64)
    }

    /// glibc wrote the offset into the object's exported word; the block's
    /// own TLS symbol, looked up through `dlsym`, must agree with it.
    fn read_offset(&self) -> KindResult<i64> {
        let word = self.symbol(tls_object::OFFSET_SYMBOL)?;
        // SAFETY: `word` is the address of the object's 8-byte data word,
        // inside its writable PT_LOAD, mapped while the handle is open.
        let offset = unsafe { word.cast::<i64>().read_unaligned() };
        let block = self.symbol(tls_object::BLOCK_SYMBOL)? as u64;
        let expected = super::tls::thread_pointer().wrapping_add(offset as u64);
        if offset >= 0 || block != expected {
            return Err(ErrorKind::TlsUnsupported {
                detail: format!(
                    "glibc placed the static TLS block at {block:#x} but relocated its offset to {offset:#x}"
                ),
            });
        }
        Ok(offset)
    }

    fn symbol(&self, name: &str) -> KindResult<*mut c_void> {
        let c = CString::new(name).map_err(|_| ErrorKind::Other(format!("bad name {name}")))?;
        let handle = self
            .object
            .as_ref()
            .map_or(std::ptr::null_mut(), |o| o.handle.0);
        if handle.is_null() {
            return Err(ErrorKind::Other("static TLS object already closed".into()));
        }
        // SAFETY: the handle is open; `c` is NUL-terminated.
        let p = unsafe { (crate::host::real().dlsym)(handle, c.as_ptr()) };
        if p.is_null() {
            return Err(ErrorKind::TlsUnsupported {
                detail: format!("static TLS object: dlsym({name}) failed: {}", dlerror()),
            });
        }
        Ok(p)
    }
}

impl Drop for StaticTlsBlock {
    fn drop(&mut self) {
        if let Some(object) = self.object.take() {
            release(self.serial, object);
        }
    }
}

/// Blocks in allocation order: (serial, the object once its block was
/// dropped), and the last serial given out.
type Order = (u64, Vec<(u64, Option<Opened>)>);

fn allocation_order() -> &'static Mutex<Order> {
    static O: OnceLock<Mutex<Order>> = OnceLock::new();
    O.get_or_init(|| Mutex::new((0, Vec::new())))
}

/// Mark block `serial` released and `dlclose` every released block that no
/// live block is younger than, youngest first, so glibc can take each one
/// back. No lock is held across `dlclose`: glibc's loader lock is taken
/// inside it, and `dl_iterate_phdr` callbacks take ours (`is_block_object`).
fn release(serial: u64, object: Opened) {
    let closable = {
        let mut order = allocation_order().lock().unwrap_or_else(|e| e.into_inner());
        let mut object = Some(object);
        if let Some(entry) = order.1.iter_mut().find(|(s, _)| *s == serial) {
            entry.1 = object.take();
        }
        let mut closable: Vec<Opened> = object.into_iter().collect();
        while let Some((_, Some(_))) = order.1.last() {
            if let Some((_, Some(o))) = order.1.pop() {
                closable.push(o);
            }
        }
        closable
    };
    for o in closable {
        // SAFETY: the handle came from our dlopen and is closed once; the
        // block's owner dropped it after the last code that used it.
        unsafe { (crate::host::real().dlclose)(o.handle.0) };
        crate::host::unhide(o.name.as_bytes());
    }
}

/// Blocks whose `dlclose` waits for a younger block (for tests).
pub fn pending_releases() -> usize {
    let order = allocation_order().lock().unwrap_or_else(|e| e.into_inner());
    order.1.iter().filter(|(_, o)| o.is_some()).count()
}

/// Is `name` (as `dl_iterate_phdr` reports it) one of mmld's static TLS
/// objects?
pub fn is_block_object(name: &[u8]) -> bool {
    crate::host::is_hidden(name)
}

/// A `memfd` named `name` holding `bytes` (also used by `exit_hook`).
pub(super) fn memfd_with(name: &CStr, bytes: &[u8]) -> KindResult<OwnedFd> {
    let io = |op, source| ErrorKind::Io { op, source };
    // SAFETY: `name` is NUL-terminated; MFD_CLOEXEC keeps the fd out of
    // exec'd children.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io("memfd_create", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = File::from(owned);
    file.write_all(bytes)
        .map_err(|e| io("writing an in-memory object to its memfd", e))?;
    Ok(OwnedFd::from(file))
}

pub(super) fn dlerror() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string valid until
    // the next dl* call on this thread; it is copied at once.
    let e = unsafe { (crate::host::real().dlerror)() };
    if e.is_null() {
        return "(no dlerror)".to_string();
    }
    // SAFETY: non-null, NUL-terminated (see above).
    unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
}

fn open(name: &CStr, shape: &TlsShape<'_>) -> KindResult<Handle> {
    // SAFETY: `name` is NUL-terminated; the object runs no code (it has no
    // constructors and no imports), glibc only maps and relocates it.
    let handle =
        unsafe { (crate::host::real().dlopen)(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if !handle.is_null() {
        return Ok(Handle(handle));
    }
    let message = dlerror();
    if message.contains(GLIBC_EXHAUSTED) && shape.align > tls_object::GRANULE {
        // glibc gives static blocks at most its own static TLS alignment
        // (64 on x86-64), whatever the surplus: no tunable helps.
        return Err(ErrorKind::TlsUnsupported {
            detail: format!(
                "the static TLS block asks for {}-byte alignment, more than glibc's static TLS alignment ({}); glibc says: {message}",
                shape.align,
                tls_object::GRANULE
            ),
        });
    }
    if message.contains(GLIBC_EXHAUSTED) {
        return Err(ErrorKind::StaticTlsExhausted {
            size: shape.memsz,
            align: shape.align.max(1),
            glibc: message,
        });
    }
    Err(ErrorKind::TlsUnsupported {
        detail: format!("glibc refused the static TLS object {name:?}: {message}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_has_its_image_in_this_and_new_threads() {
        let image = [7u8, 6, 5, 4, 3, 2, 1, 0];
        let block = StaticTlsBlock::allocate(&TlsShape {
            image: &image,
            memsz: 32,
            align: 16,
        })
        .unwrap();
        assert!(block.tp_offset() < 0);
        let read = |b: &StaticTlsBlock| {
            let p = b.address_in_this_thread() as *const u8;
            // SAFETY: the block is live and 32 bytes long in every thread.
            unsafe { std::slice::from_raw_parts(p, 32) }.to_vec()
        };
        let mut want = image.to_vec();
        want.resize(32, 0);
        assert_eq!(read(&block), want);
        assert_eq!(block.address_in_this_thread() % 16, 0);
        let from_thread = std::thread::scope(|s| s.spawn(|| read(&block)).join().unwrap());
        assert_eq!(from_thread, want);
        let name = block.object.as_ref().unwrap().name.clone();
        assert!(is_block_object(name.as_bytes()));
        drop(block);
        assert!(!is_block_object(name.as_bytes()));
    }
}
