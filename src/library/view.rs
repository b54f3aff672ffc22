//! Read-only descriptions of loaded objects, for tools and tests.
//!
//! Owns: copying what a user may look at out of a loaded object. Must
//! never: hand out anything that points into the object.

use std::path::PathBuf;

use crate::object::LoadedObject;

/// A read-only description of one mapped object, for tools and tests.
#[derive(Debug, Clone)]
pub struct ObjectView {
    pub name: String,
    pub path: PathBuf,
    pub base: u64,
    pub size: u64,
    pub bias: u64,
    /// `(vaddr, memsz, filesz, offset, flags)` per `PT_LOAD`, file addresses.
    pub segments: Vec<SegmentView>,
    /// Process address range made read-only after relocation.
    pub relro: Option<(u64, u64)>,
    pub relocations: Vec<(String, usize)>,
    pub relr_addresses: usize,
    pub ifunc_calls: usize,
    /// Its `.eh_frame` is registered with the host's unwinder.
    pub unwind_registered: bool,
    /// Host objects it bound symbols into through the global scope, each
    /// kept loaded while this object lives.
    pub host_objects_held: usize,
    /// How the library search found it ("ld.so.cache", "DT_RUNPATH", ...).
    pub found_by: String,
}

#[derive(Debug, Clone, Copy)]
pub struct SegmentView {
    pub vaddr: u64,
    pub memsz: u64,
    pub filesz: u64,
    pub offset: u64,
    pub flags: u32,
}

impl ObjectView {
    pub(super) fn of(o: &LoadedObject) -> ObjectView {
        let mut relocations: Vec<(String, usize)> = o
            .link_report
            .by_type
            .iter()
            .map(|(t, n)| (crate::arch::current::relocation_name(t).to_string(), n))
            .collect();
        relocations.sort();
        ObjectView {
            name: o.name.clone(),
            path: o.path.clone(),
            base: o.mapping.base(),
            size: o.mapping.len() as u64,
            bias: o.mapping.bias(),
            segments: o
                .plan
                .segments
                .iter()
                .map(|s| SegmentView {
                    vaddr: s.vaddr,
                    memsz: s.memsz,
                    filesz: s.filesz,
                    offset: s.offset,
                    flags: s.flags,
                })
                .collect(),
            relro: o
                .mapping
                .sealed_range()
                .map(|(s, e)| (o.mapping.address_of(s), o.mapping.address_of(e))),
            relocations,
            relr_addresses: o.link_report.relr_addresses,
            ifunc_calls: o.link_report.ifunc_calls,
            unwind_registered: o.has_unwind_tables(),
            host_objects_held: o.host_holds.len(),
            found_by: o.provenance.to_string(),
        }
    }
}
