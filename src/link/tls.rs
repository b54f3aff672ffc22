//! Values of the TLS relocation kinds (module id, offset in the module's
//! block, offset from the thread pointer, descriptor), and the static TLS
//! step between the relocation passes.
//!
//! Owns: what each TLS relocation's value is for mmld objects (dynamic
//! module ids from `runtime::tls`, static blocks from `runtime::static_tls`)
//! and for host objects (glibc's module ids and static offsets), and the
//! order the static case needs: relocations that do not depend on the
//! block's offset first (`.tdata` can hold relocated pointers), then the
//! relocated `.tdata` goes to glibc, then the offset-dependent relocations
//! (`TPOFF64`, static descriptors) are written. Must never: allocate a
//! static block in a dry run, or give an object a static block whose image
//! changes after glibc copied it into running threads.

use super::reloc::{Rela, Site, write};
use super::{Binding, LinkMode, LinkTarget};
use crate::arch::{RelocKind, current as arch};
use crate::elf::TlsTemplate;
use crate::error::{ErrorKind, KindResult};
use crate::runtime::tls::{self as rt, TlsModule};
use crate::runtime::tlsdesc::{self, Descriptor, Descriptors};

/// The TLS side of one object being linked.
pub struct TlsLink<'a> {
    /// The object's own module (`None` without `PT_TLS`, or in a dry run).
    pub module: Option<&'a TlsModule>,
    pub segment: Option<TlsTemplate>,
    /// Records of the object's dynamic descriptors; they must live as long
    /// as the object.
    pub descriptors: &'a mut Descriptors,
    /// Relocations waiting for the object's own static offset.
    pending: Vec<Pending>,
    /// `.tdata` as glibc received it, to check nothing changed it later.
    snapshot: Option<Vec<u8>>,
    /// No static block and no descriptor record is made in a dry run: the
    /// values are never used, and both would allocate from glibc.
    dry_run: bool,
}

impl<'a> TlsLink<'a> {
    pub fn new(
        module: Option<&'a TlsModule>,
        segment: Option<TlsTemplate>,
        descriptors: &'a mut Descriptors,
    ) -> Self {
        TlsLink {
            module,
            segment,
            descriptors,
            pending: Vec::new(),
            snapshot: None,
            dry_run: false,
        }
    }
}

/// Tell the TLS side which mode the relocation pass runs in.
pub(super) fn start(target: &mut LinkTarget<'_>, mode: LinkMode) {
    target.tls.dry_run = mode == LinkMode::DryRun;
}

/// A `TPOFF64` or `TLSDESC` against the object's own TLS.
struct Pending {
    site: Site,
    offset: u64,
    rtype: u32,
    kind: RelocKind,
    /// Offset of the variable in the object's block (value + addend).
    value: u64,
}

fn unsupported(detail: String) -> ErrorKind {
    ErrorKind::TlsUnsupported { detail }
}

/// Apply one TLS relocation bound to `b` (`from_host`: `b` is in a host
/// object), or keep it for [`finish`] if it needs the object's own static
/// offset.
pub(super) fn apply(
    target: &mut LinkTarget<'_>,
    site: Site,
    r: &Rela,
    kind: RelocKind,
    b: &Binding,
    from_host: bool,
) -> KindResult<()> {
    let Site { table, index } = site;
    if target.tls.dry_run && matches!(kind, RelocKind::TlsStaticOffset | RelocKind::TlsDescriptor) {
        return write(target.mapping, table, index, r.offset, 0);
    }
    let addend = r.addend as u64;
    let own = r.sym == 0
        || b.provider == usize::MAX
        || (b.tls_module.is_some() && b.tls_module == target.tls_module);
    let host_block = || {
        rt::host_module_of(b.addr).ok_or_else(|| {
            unsupported(format!(
                "relocation {index} in {table} refers to a host thread-local variable at {:#x} that is in no host TLS block",
                b.addr
            ))
        })
    };
    let no_module = || {
        unsupported(format!(
            "relocation {index} in {table} ({}) refers to an object without PT_TLS",
            arch::relocation_name(r.rtype)
        ))
    };
    let value = match kind {
        RelocKind::TlsModule if own => target.tls_module.ok_or_else(no_module)?,
        RelocKind::TlsModule if from_host => {
            b.tls_module.map_or_else(|| Ok(host_block()?.0), Ok)?
        }
        RelocKind::TlsModule => b.tls_module.ok_or_else(no_module)?,
        RelocKind::TlsOffset if from_host && !own => {
            b.addr.wrapping_sub(host_block()?.1).wrapping_add(addend)
        }
        RelocKind::TlsOffset => b.value.wrapping_add(addend),
        RelocKind::TlsStaticOffset | RelocKind::TlsDescriptor if own => {
            target.tls_module.ok_or_else(no_module)?;
            target.tls.pending.push(Pending {
                site,
                offset: r.offset,
                rtype: r.rtype,
                kind,
                value: b.value.wrapping_add(addend),
            });
            return Ok(());
        }
        RelocKind::TlsStaticOffset if from_host => rt::host_tp_offset(b.addr).wrapping_add(addend),
        RelocKind::TlsStaticOffset => {
            // The provider moves to static TLS if it is not there yet.
            let module = b.tls_module.ok_or_else(no_module)?;
            let block = rt::make_static(module).map_err(|e| match e {
                ErrorKind::TlsUnsupported { detail } => unsupported(format!(
                    "relocation {index} in {table} ({}): {detail}",
                    arch::relocation_name(r.rtype)
                )),
                other => other,
            })?;
            (block as u64).wrapping_add(b.value).wrapping_add(addend)
        }
        _ => {
            // TLSDESC against another object: a constant when its block is
            // static, else this thread's address, computed on each call.
            let d = if from_host {
                let (module, start) = host_block()?;
                let offset = b.addr.wrapping_sub(start).wrapping_add(addend);
                target.tls.descriptors.dynamic(module, offset, None)
            } else {
                let module = b.tls_module.ok_or_else(no_module)?;
                let offset = b.value.wrapping_add(addend);
                match rt::static_offset_of(module) {
                    Some(block) => tlsdesc::static_descriptor(block.wrapping_add(offset as i64)),
                    None => target.tls.descriptors.dynamic(module, offset, None),
                }
            };
            return write_descriptor(target, site, r.offset, d);
        }
    };
    write(target.mapping, table, index, r.offset, value)
}

/// `TLSDESC` against an undefined weak symbol: the variable's address is
/// the addend, as glibc does.
pub(super) fn undefined_weak(target: &mut LinkTarget<'_>, site: Site, r: &Rela) -> KindResult<()> {
    let d = tlsdesc::undefined_weak_descriptor(r.addend as u64);
    write_descriptor(target, site, r.offset, d)
}

/// A descriptor is two words: the function, then its argument.
fn write_descriptor(
    target: &mut LinkTarget<'_>,
    site: Site,
    at: u64,
    d: Descriptor,
) -> KindResult<()> {
    let Site { table, index } = site;
    write(target.mapping, table, index, at, d.function)?;
    let second = at.wrapping_add(arch::WORD_SIZE);
    write(target.mapping, table, index, second, d.argument)
}

/// Between the relocation pass and the IFUNC calls: give the object its
/// static block if it needs one (`DF_STATIC_TLS`, or a `TPOFF64` against
/// its own variables), then write what waited for the offset.
pub(super) fn finish(target: &mut LinkTarget<'_>, mode: LinkMode) -> KindResult<()> {
    if mode == LinkMode::DryRun {
        target.tls.pending.clear();
        return Ok(());
    }
    let Some(module) = target.tls.module else {
        return match target.tls.pending.first() {
            Some(p) => Err(unsupported(format!(
                "relocation {} in {} ({}) refers to the object's own TLS, but it has no PT_TLS",
                p.site.index,
                p.site.table,
                arch::relocation_name(p.rtype)
            ))),
            None => Ok(()),
        };
    };
    let wants_static = target.dynamic.flags & crate::elf::DF_STATIC_TLS != 0
        || target
            .tls
            .pending
            .iter()
            .any(|p| p.kind == RelocKind::TlsStaticOffset);
    let block = match (wants_static, target.tls.segment) {
        (true, Some(seg)) => {
            let image = target.mapping.copy_out(seg.vaddr, seg.filesz).ok_or(
                ErrorKind::TableOutsideImage {
                    tag: "PT_TLS",
                    addr: seg.vaddr,
                    end: seg.vaddr.saturating_add(seg.filesz),
                },
            )?;
            let offset = module.publish_static(image.clone(), seg.memsz, seg.align)?;
            target.tls.snapshot = Some(image);
            Some(offset)
        }
        _ => None,
    };
    for p in std::mem::take(&mut target.tls.pending) {
        let Site { table, index } = p.site;
        match (p.kind, block) {
            (RelocKind::TlsStaticOffset, Some(b)) => {
                let value = (b as u64).wrapping_add(p.value);
                write(target.mapping, table, index, p.offset, value)?;
            }
            (RelocKind::TlsDescriptor, Some(b)) => {
                let d = tlsdesc::static_descriptor(b.wrapping_add(p.value as i64));
                write_descriptor(target, p.site, p.offset, d)?;
            }
            (RelocKind::TlsDescriptor, None) => {
                let d = target
                    .tls
                    .descriptors
                    .dynamic(module.id, p.value, Some(module.slot()));
                write_descriptor(target, p.site, p.offset, d)?;
            }
            _ => {
                return Err(unsupported(format!(
                    "relocation {index} in {table} is {} against the object's own TLS, but it has no PT_TLS",
                    arch::relocation_name(p.rtype)
                )));
            }
        }
    }
    Ok(())
}

/// After the IFUNC calls: glibc copied `.tdata` into every thread before
/// they ran, so a resolver result written into it would be lost.
pub(super) fn check_image_unchanged(target: &LinkTarget<'_>) -> KindResult<()> {
    let (Some(before), Some(seg)) = (&target.tls.snapshot, target.tls.segment) else {
        return Ok(());
    };
    if target.mapping.copy_out(seg.vaddr, seg.filesz).as_ref() != Some(before) {
        return Err(unsupported(
            "an IFUNC relocation writes into .tdata of an object with static TLS, after its image was copied into every thread".into(),
        ));
    }
    Ok(())
}
