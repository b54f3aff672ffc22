//! Values of the TLS relocation kinds: module id, offset in the module's
//! block, offset from the thread pointer.
//!
//! Owns: which module a thread-local symbol belongs to (an mmld module id
//! from `runtime::tls`, or glibc's id for a host object) and the offsets
//! written for it. Must never: allocate TLS (that is `runtime::tls`), or
//! give an mmld object's variable a thread-pointer offset: mmld objects use
//! dynamic TLS only.

use super::reloc::{Rela, Site};
use super::{Binding, LinkTarget};
use crate::arch::{RelocKind, current as arch};
use crate::error::{ErrorKind, KindResult};

/// The value of a TLS relocation of kind `kind` bound to `b`.
pub(super) fn value(
    target: &LinkTarget<'_>,
    site: Site,
    r: &Rela,
    kind: RelocKind,
    b: &Binding,
    from_host: bool,
) -> KindResult<u64> {
    let Site { table, index } = site;
    let addend = r.addend as u64;
    let own = r.sym == 0 || b.provider == usize::MAX;
    let host_block = || {
        crate::runtime::tls::host_module_of(b.addr).ok_or_else(|| ErrorKind::TlsUnsupported {
            detail: format!(
                "relocation {index} in {table} refers to a host thread-local variable at {:#x} that is in no host TLS block",
                b.addr
            ),
        })
    };
    let no_module = || ErrorKind::TlsUnsupported {
        detail: format!(
            "relocation {index} in {table} ({}) refers to an object without PT_TLS",
            arch::relocation_name(r.rtype)
        ),
    };
    match kind {
        RelocKind::TlsModule => {
            if own {
                target.tls_module.ok_or_else(no_module)
            } else if let Some(m) = b.tls_module {
                Ok(m)
            } else if from_host {
                Ok(host_block()?.0)
            } else {
                Err(no_module())
            }
        }
        RelocKind::TlsOffset => {
            if from_host && !own {
                Ok(b.addr.wrapping_sub(host_block()?.1).wrapping_add(addend))
            } else {
                Ok(b.value.wrapping_add(addend))
            }
        }
        _ => {
            if from_host && !own {
                Ok(crate::runtime::tls::host_tp_offset(b.addr).wrapping_add(addend))
            } else {
                Err(static_tls_refused(target, site, r))
            }
        }
    }
}

fn static_tls_refused(target: &LinkTarget<'_>, site: Site, r: &Rela) -> ErrorKind {
    ErrorKind::TlsUnsupported {
        detail: format!(
            "relocation {} in {} is {} against a variable of an mmld-loaded object: it needs the static TLS block (initial-exec model{}), which cannot grow after start-up; rebuild it with -ftls-model=global-dynamic",
            site.index,
            site.table,
            arch::relocation_name(r.rtype),
            if target.dynamic.flags & crate::elf::DF_STATIC_TLS != 0 {
                ", DF_STATIC_TLS"
            } else {
                ""
            }
        ),
    }
}
