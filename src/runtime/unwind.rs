//! Registering mapped objects' unwind tables with the host's unwinder.
//!
//! Owns: finding `.eh_frame` through `PT_GNU_EH_FRAME` and the
//! `__register_frame` / `__deregister_frame` pair. libgcc's unwinder looks
//! at registered frames before asking glibc's `_dl_find_object`, which knows
//! nothing of mmld's mappings; without this a C++ exception or Rust panic in
//! a loaded library aborts the process. Must never: deregister a table it
//! did not register, or leave one registered after the object is unmapped.

use std::sync::OnceLock;

use crate::elf::VRange;
use crate::map::Mapping;

type FrameFn = unsafe extern "C" fn(*const u8);

fn frame_functions() -> Option<(FrameFn, FrameFn)> {
    static F: OnceLock<(usize, usize)> = OnceLock::new();
    let (reg, dereg) = *F.get_or_init(|| {
        let find = |n: &std::ffi::CStr| crate::host::global_symbol(n, None).unwrap_or(0) as usize;
        (find(c"__register_frame"), find(c"__deregister_frame"))
    });
    if reg == 0 || dereg == 0 {
        return None;
    }
    // SAFETY: non-zero addresses from dlsym for these names are libgcc's
    // functions, which take a pointer to the start of an .eh_frame section.
    Some(unsafe {
        (
            std::mem::transmute::<usize, FrameFn>(reg),
            std::mem::transmute::<usize, FrameFn>(dereg),
        )
    })
}

const DW_EH_PE_OMIT: u8 = 0xff;

/// Decode the `eh_frame_ptr` field of `.eh_frame_hdr` into an object
/// address. Only the encodings linkers emit are accepted.
fn eh_frame_address(mapping: &Mapping, hdr: VRange) -> Option<u64> {
    let head = mapping.copy_out(hdr.vaddr, 4)?;
    let (version, enc) = (*head.first()?, *head.get(1)?);
    if version != 1 || enc == DW_EH_PE_OMIT {
        return None;
    }
    let field = hdr.vaddr + 4;
    let (value, size) = match enc & 0x0f {
        0x03 => (
            u64::from(u32::from_le_bytes(
                mapping.copy_out(field, 4)?.try_into().ok()?,
            )),
            4,
        ),
        0x0b => (
            i64::from(i32::from_le_bytes(
                mapping.copy_out(field, 4)?.try_into().ok()?,
            )) as u64,
            4,
        ),
        0x00 | 0x04 | 0x0c => (
            u64::from_le_bytes(mapping.copy_out(field, 8)?.try_into().ok()?),
            8,
        ),
        _ => return None,
    };
    let _ = size;
    match enc & 0x70 {
        // Absolute: an unrelocated object address.
        0x00 => Some(value),
        // PC-relative: relative to the field itself.
        0x10 => Some(field.wrapping_add(value)),
        // Relative to the start of .eh_frame_hdr.
        0x30 => Some(hdr.vaddr.wrapping_add(value)),
        _ => None,
    }
}

/// An `.eh_frame` registered with libgcc; deregistered on drop.
#[derive(Debug)]
pub struct FrameRegistration {
    eh_frame: u64,
}

impl FrameRegistration {
    /// Register the object's `.eh_frame`, if it has one and the host has
    /// libgcc's unwinder.
    pub fn register(mapping: &Mapping, eh_frame_hdr: Option<VRange>) -> Option<FrameRegistration> {
        let hdr = eh_frame_hdr?;
        let vaddr = eh_frame_address(mapping, hdr)?;
        // The table must be inside a readable segment of this object.
        mapping.copy_out(vaddr, 4)?;
        let (register, _) = frame_functions()?;
        let eh_frame = mapping.address_of(vaddr);
        // SAFETY: `eh_frame` is the start of the object's .eh_frame (found
        // through its own header and checked to be mapped); it stays mapped
        // until this registration is dropped, before the mapping.
        unsafe { register(eh_frame as usize as *const u8) };
        Some(FrameRegistration { eh_frame })
    }
}

impl Drop for FrameRegistration {
    fn drop(&mut self) {
        if let Some((_, deregister)) = frame_functions() {
            // SAFETY: exactly the pointer we registered, still mapped.
            unsafe { deregister(self.eh_frame as usize as *const u8) };
        }
    }
}
