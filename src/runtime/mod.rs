//! RUN: constructors and destructors of mapped objects.
//!
//! Owns: the order glibc runs initialisers and finalisers in, for one object
//! (`DT_INIT` then `DT_INIT_ARRAY` in order; `DT_FINI_ARRAY` in reverse then
//! `DT_FINI`), and checking each pointer before calling it. Must never: run
//! a constructor of an object that has not finished linking.

pub mod call;
pub mod cxa;
pub mod debugger;
mod elf_writer;
pub mod exit_hook;
pub mod lazy;
pub mod static_tls;
pub mod tls;
pub mod tls_object;
pub mod tlsdesc;
pub mod unwind;

use crate::elf::DynamicInfo;
use crate::error::{ErrorKind, KindResult};
use crate::map::Mapping;

/// Entries that toolchains use as "no function" markers in init/fini arrays.
fn is_placeholder(addr: u64) -> bool {
    addr == 0 || addr == u64::MAX
}

/// Read the (relocated) entries of an init or fini array and check each
/// points into an executable segment of this object.
fn code_pointers(mapping: &Mapping, dynamic: &DynamicInfo, fini: bool) -> KindResult<Vec<u64>> {
    let (tag, range) = if fini {
        ("DT_FINI_ARRAY", dynamic.fini_array)
    } else {
        ("DT_INIT_ARRAY", dynamic.init_array)
    };
    let Some(range) = range else {
        return Ok(Vec::new());
    };
    let count = range.size / 8;
    let limit = crate::elf::limits::MAX_INIT_ENTRIES;
    if count > limit {
        return Err(ErrorKind::LimitExceeded {
            what: tag,
            count,
            limit,
        });
    }
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count {
        let at = range.vaddr + i * 8;
        let addr = mapping.read_u64(at).ok_or(ErrorKind::TableOutsideImage {
            tag,
            addr: at,
            end: at + 8,
        })?;
        if is_placeholder(addr) {
            continue;
        }
        out.push(checked_code(mapping, addr, || format!("{tag}[{i}]"))?);
    }
    Ok(out)
}

fn checked_code(mapping: &Mapping, addr: u64, what: impl FnOnce() -> String) -> KindResult<u64> {
    match mapping.vaddr_of(addr) {
        Some(v) if mapping.executable_at(v) => Ok(addr),
        _ => Err(ErrorKind::BadCodePointer { what: what(), addr }),
    }
}

/// The constructors of one object, in call order, validated.
pub fn initializers(mapping: &Mapping, dynamic: &DynamicInfo) -> KindResult<Vec<u64>> {
    let mut out = Vec::new();
    if let Some(init) = dynamic.init {
        out.push(checked_code(mapping, mapping.address_of(init), || {
            "DT_INIT".into()
        })?);
    }
    out.extend(code_pointers(mapping, dynamic, false)?);
    Ok(out)
}

/// The destructors of one object, in call order, validated.
pub fn finalizers(mapping: &Mapping, dynamic: &DynamicInfo) -> KindResult<Vec<u64>> {
    let mut out = code_pointers(mapping, dynamic, true)?;
    out.reverse();
    if let Some(fini) = dynamic.fini {
        out.push(checked_code(mapping, mapping.address_of(fini), || {
            "DT_FINI".into()
        })?);
    }
    Ok(out)
}

/// Run validated constructors.
///
/// # Safety
/// The object must be fully relocated and stay mapped during the calls, and
/// the addresses must come from [`initializers`] for that object.
pub unsafe fn run_initializers(addrs: &[u64]) {
    for &a in addrs {
        // SAFETY: guaranteed by the caller (see above).
        unsafe { call::constructor(a) };
    }
}

/// Run validated destructors.
///
/// # Safety
/// As for [`run_initializers`], with addresses from [`finalizers`].
pub unsafe fn run_finalizers(addrs: &[u64]) {
    for &a in addrs {
        // SAFETY: guaranteed by the caller.
        unsafe { call::destructor(a) };
    }
}
