//! Resolving a needed name: where `libfoo.so.1` is found.
//!
//! Owns: for each `DT_NEEDED` entry, in glibc's order: the glibc family and
//! libraries the host already has under that name (bound to the host's
//! copy), objects mmld already has (by soname), and otherwise the library
//! search (`DT_RPATH` chain, `LD_LIBRARY_PATH`, `DT_RUNPATH`, `ld.so.cache`,
//! default directories; see `search`), skipping files for another machine
//! as glibc does; the file found is again checked against what mmld, this
//! load and the host already have. Must never: map a file twice (one file,
//! by device and inode, is one object, the host's included), or map a
//! glibc-family library.

use std::path::PathBuf;
use std::sync::Arc;

use super::transaction::{Batch, Resolved};
use crate::elf::ElfFile;
use crate::error::{Error, ErrorKind, Result, Stage};
use crate::host::{self, HostLibrary};
use crate::registry;
use crate::search::{self, Provenance, SearchRequest};

impl Batch {
    /// Breadth-first over `DT_NEEDED`, mapping each new library once.
    pub(super) fn resolve_all(&mut self) -> Result<()> {
        let mut i = 0;
        while i < self.pending.len() {
            let needed = self
                .pending
                .get(i)
                .map(|p| p.needed.clone())
                .unwrap_or_default();
            let mut deps = Vec::with_capacity(needed.len());
            let mut missing_at = Vec::new();
            for (k, name) in needed.iter().enumerate() {
                match self.resolve_one(i, name) {
                    Ok(r) => deps.push(r),
                    Err(e) if self.keep_going => {
                        missing_at.push(k);
                        self.missing.push(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            if let Some(p) = self.pending.get_mut(i) {
                p.deps = deps;
                p.missing_at = missing_at;
            }
            i += 1;
        }
        Ok(())
    }

    pub(super) fn host_library(
        &mut self,
        name: &str,
        load_if_absent: bool,
    ) -> Option<Arc<HostLibrary>> {
        if let Some(h) = self.hosts.get(name) {
            return Some(Arc::clone(h));
        }
        // Ask the host-scope table, not glibc: an `RTLD_NOLOAD` probe by
        // bare name makes glibc search the file system for it.
        let found = self.host.loaded_as(name);
        let h = match found.and_then(|o| {
            if o.hold.is_permanent() {
                Some(HostLibrary::permanent(name, &o.name))
            } else {
                HostLibrary::loaded_from(name, &o.name)
            }
        }) {
            Some(h) => h,
            None if load_if_absent => HostLibrary::load_system(name)?,
            None => return None,
        };
        let h = Arc::new(h);
        self.hosts.insert(name.to_string(), Arc::clone(&h));
        Some(h)
    }

    pub(super) fn resolve_one(&mut self, from: usize, name: &str) -> Result<Resolved> {
        let requester = self
            .pending
            .get(from)
            .map(|p| (p.name.clone(), p.path.clone()))
            .unwrap_or_default();
        // The C library's own family belongs to the host: bind to its copy,
        // asking glibc to load it if the host has not yet.
        if host::is_glibc_family(name) {
            if let Some(h) = self.host_library(name, true) {
                tracing::debug!(target: "mmld::libs", name, needed_by = %requester.0, "provided by the host (glibc family)");
                return Ok(Resolved::Host(h));
            }
        } else if !name.contains('/')
            && let Some(h) = self.host_library(name, false)
        {
            tracing::debug!(target: "mmld::libs", name, needed_by = %requester.0, "already loaded by the host: reusing");
            return Ok(Resolved::Host(h));
        }
        if let Some(e) = registry::registry().find_by_soname(name) {
            tracing::debug!(target: "mmld::libs", name, needed_by = %requester.0, file = %e.object.path.display(), "already loaded by mmld: reusing");
            return Ok(Resolved::Existing(Arc::clone(&e.object)));
        }
        if let Some(j) = self
            .pending
            .iter()
            .position(|p| p.soname.as_deref() == Some(name))
        {
            return Ok(Resolved::Batch(j));
        }

        let chain = self.rpath_chain(from);
        let requester_runpath = self.pending.get(from).and_then(|p| p.runpath.clone());
        let nodeflib = self
            .pending
            .get(from)
            .is_some_and(|p| p.dynamic.flags_1 & 0x800 != 0);
        let req = SearchRequest {
            name,
            rpaths_of_chain: &chain,
            runpath: requester_runpath.as_deref(),
            ld_library_path: &self.ld_library_path,
            nodeflib,
        };
        let candidates = search::candidates(&req, search::system_cache());
        let mut searched = Vec::new();
        if let Some((candidate, provenance, elf)) = open_first(candidates, &mut searched)? {
            if let Some(found) = self.already_loaded(name, &elf) {
                return Ok(found);
            }
            tracing::debug!(target: "mmld::libs", name, file = %candidate.display(), how = %provenance, needed_by = %requester.0, "found");
            let j = self.map_object(&candidate, elf, Some(from), provenance)?;
            return Ok(Resolved::Batch(j));
        }
        Err(Error::new(
            &requester.1,
            Stage::Open,
            ErrorKind::MissingDependency {
                name: name.to_string(),
                needed_by: requester.0,
                searched,
            },
        ))
    }

    /// The object already loaded from `elf`'s file (same device and
    /// inode, whatever path reached it): mmld's, this load's, or the
    /// host's, which is never mapped a second time.
    pub(super) fn already_loaded(&mut self, name: &str, elf: &ElfFile) -> Option<Resolved> {
        if let Some(e) = registry::registry().find_by_file(elf.dev, elf.ino) {
            return Some(Resolved::Existing(Arc::clone(&e.object)));
        }
        if let Some(j) = self
            .pending
            .iter()
            .position(|p| p.dev == elf.dev && p.ino == elf.ino)
        {
            return Some(Resolved::Batch(j));
        }
        let path = self.host.object_with_file(elf)?.name.clone();
        let h = match self.hosts.get(&path) {
            Some(h) => Arc::clone(h),
            None => {
                let h = Arc::new(HostLibrary::loaded_from(name, &path)?);
                self.hosts.insert(path, Arc::clone(&h));
                h
            }
        };
        tracing::debug!(target: "mmld::libs", name, file = %elf_path(&h), "the host's copy of this file: reusing");
        Some(Resolved::Host(h))
    }

    /// `DT_RPATH`s of the requesting object and of each object that loaded
    /// it, up to the root (used only when the requester has no RUNPATH).
    pub(super) fn rpath_chain(&self, from: usize) -> Vec<(String, Vec<PathBuf>)> {
        let mut out = Vec::new();
        let mut at = Some(from);
        while let Some(i) = at {
            let Some(p) = self.pending.get(i) else { break };
            out.push((p.name.clone(), p.rpath.clone()));
            at = p.loader;
            if out.len() > self.pending.len() {
                break;
            }
        }
        out
    }
}

fn elf_path(h: &HostLibrary) -> String {
    h.path_str().unwrap_or(&h.name).to_string()
}

/// The first candidate that opens as an object for this machine, as glibc
/// takes it: a missing file, or one for another machine or class, is
/// skipped and the search goes on; any other failure ends it. Every path
/// tried is added to `searched`.
pub(super) fn open_first(
    candidates: Vec<(PathBuf, Provenance)>,
    searched: &mut Vec<PathBuf>,
) -> Result<Option<(PathBuf, Provenance, ElfFile)>> {
    for (candidate, provenance) in candidates {
        tracing::debug!(target: "mmld::libs", file = %candidate.display(), how = %provenance, "trying");
        searched.push(candidate.clone());
        match ElfFile::open(&candidate) {
            Ok(elf) => return Ok(Some((candidate, provenance, elf))),
            Err(
                ErrorKind::Io { .. }
                | ErrorKind::WrongMachine { .. }
                | ErrorKind::Not64Bit { .. }
                | ErrorKind::NotLittleEndian { .. }
                | ErrorKind::NotRegularFile { .. },
            ) => continue,
            Err(kind) => return Err(Error::new(&candidate, Stage::Read, kind)),
        }
    }
    Ok(None)
}
