//! One load's shared relocations: placing each object, then, per object,
//! a cache hit (map the cache's pages, replay the per-process relocations)
//! or a normal relocation followed by writing the entry.
//!
//! Owns: the order of the steps and each object's outcome. Must never:
//! map cache pages before the entry passed every check against the live
//! process, or fail a load for a cache problem (it falls back), except in
//! verification mode, where a difference is the point.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::address::{self, Identity, Secret};
use super::cache_file::{
    self, Header, PAGE_PER_PROCESS, PAGE_RELRO, PAGE_SCOPE, PageEntry, ScopeKey,
};
use super::classify::{self, ScopeEntry};
use super::{SharedRelocations, SharingOutcome, trust};
use crate::arch::current::PAGE_SIZE;
use crate::elf::{DynamicInfo, ElfFile, VRange};
use crate::error::{Error, ErrorKind, KindResult, Stage};
use crate::link::hostscope::HostScope;
use crate::link::sharing::ShareHook;
use crate::map::{Mapping, Protection, Strategy};

/// Shared relocations for one load.
pub struct Session {
    dir: PathBuf,
    verify: bool,
    /// The secret, or why this load cannot use the cache at all.
    secret: Result<Secret, String>,
    objects: Vec<ObjectState>,
}

struct ObjectState {
    base: u64,
    id: Identity,
    /// The object's GNU build id (empty when it has none).
    build_id: Vec<u8>,
    report: SharedRelocations,
    /// Placed at its stable address.
    stable: bool,
    plan: Option<Plan>,
}

/// What `after_link` does for an object.
enum Plan {
    /// Cache pages are mapped; only per-process relocations were applied.
    Hit(Entry),
    /// Relocated fully; compare with the entry, then use it.
    Verify(Entry),
    /// Relocated fully; write an entry (replacing one that was unusable).
    Write {
        keys: Vec<ScopeKey>,
        stale: Option<String>,
    },
}

pub(super) struct Entry {
    file: File,
    pub(super) path: PathBuf,
    pub(super) header: Header,
    data: u64,
    /// The pages the entry's per-process relocations write (sorted; read
    /// from the object's tables once, on validation): they end private.
    private_pages: Vec<u64>,
}

/// What the loader knows about the object being linked.
pub struct ObjectLink<'a> {
    pub path: &'a Path,
    pub mapping: &'a mut Mapping,
    pub dynamic: &'a DynamicInfo,
    pub relro: Option<VRange>,
    pub scope: &'a [ScopeEntry],
    pub host: &'a HostScope,
    /// A lazy load leaves PLT slots to their first call: nothing to share.
    pub lazy: bool,
}

impl Session {
    /// The session of a load, when the feature is on for it.
    pub fn start(settings: super::ShareSettings) -> Option<Session> {
        let (dir, verify) = super::effective(settings)?;
        let secret = trust::check_dir(&dir).and_then(|()| address::secret(&dir));
        if let Err(why) = &secret {
            tracing::warn!(target: "mmld::share", "cache not used: {why}");
        }
        Some(Session {
            dir,
            verify,
            secret,
            objects: Vec::new(),
        })
    }

    /// Can this load's objects hit the cache at all (the directory passed
    /// the trust checks and the secret was read)?
    pub fn may_hit(&self) -> bool {
        self.secret.is_ok()
    }

    /// Map `elf` at its stable address, or, when that is not possible,
    /// where the kernel chooses (the object's outcome says why).
    pub fn map(
        &mut self,
        path: &Path,
        elf: &ElfFile,
        strategy: Strategy,
        protection: Protection,
    ) -> KindResult<Mapping> {
        let placed = self.place(elf, strategy, protection);
        let (mapping, id, why) = match placed {
            Ok((m, id)) => (m, id, None),
            Err((id, why)) => (
                Mapping::map(&elf.file, &elf.plan, strategy, protection)?,
                id,
                Some(why),
            ),
        };
        let mut report = SharedRelocations::off(path.to_path_buf(), mapping.base() as usize);
        if let Some(why) = &why {
            report.outcome = SharingOutcome::Fallback(why.clone());
        } else {
            classify::remember_stable(mapping.base(), id);
        }
        self.objects.push(ObjectState {
            base: mapping.base(),
            id,
            build_id: super::buildid::of(&elf.plan, &mapping),
            report,
            stable: why.is_none(),
            plan: None,
        });
        Ok(mapping)
    }

    fn place(
        &self,
        elf: &ElfFile,
        strategy: Strategy,
        protection: Protection,
    ) -> Result<(Mapping, Identity), (Identity, String)> {
        let id = Identity::of_metadata(&elf.meta);
        let secret = self.secret.as_ref().map_err(|why| (id, why.clone()))?;
        let span = elf.plan.span();
        let addr = address::stable_address(secret, trust::euid(), &id, span, elf.plan.max_align)
            .ok_or_else(|| {
                (
                    id,
                    format!("no stable address fits a span of {span:#x} bytes"),
                )
            })?;
        match Mapping::map_at(&elf.file, &elf.plan, strategy, protection, addr) {
            Ok(m) => Ok((m, id)),
            Err(ErrorKind::Mmap { source, .. }) if source.raw_os_error() == Some(libc::EEXIST) => {
                Err((
                    id,
                    format!("address {addr:#x} collides with an existing mapping"),
                ))
            }
            Err(e) => Err((id, format!("mapping at {addr:#x} failed: {e}"))),
        }
    }

    fn state(&mut self, base: u64) -> Option<&mut ObjectState> {
        self.objects.iter_mut().find(|o| o.base == base)
    }

    /// Before relocating an object: on a valid entry, map its pages and
    /// ask the relocation loop to replay only the per-process relocations;
    /// otherwise ask it to record them. `None`: relocate normally.
    pub fn before_link(&mut self, obj: ObjectLink<'_>) -> KindResult<Option<ShareHook>> {
        let (dir, verify) = (self.dir.clone(), self.verify);
        let base = obj.mapping.base();
        let Some(st) = self.state(base).filter(|s| s.stable) else {
            return Ok(None);
        };
        if obj.lazy {
            st.report.outcome = SharingOutcome::Fallback(
                "lazy binding: PLT slots bound on first call are per process".into(),
            );
            return Ok(None);
        }
        let (keys, stable) = classify::scope_keys(obj.scope, obj.host);
        let path = dir.join(entry_name(st));
        let mut hook = ShareHook {
            stable,
            ..ShareHook::default()
        };
        let found = trust::open_file(&path).and_then(|f| match f {
            None => Ok(None),
            Some((file, size)) => {
                let (header, data) = cache_file::read_header(&file, size)?;
                let words = validate(&header, st, &keys, &obj)?;
                Ok(Some(Entry {
                    file,
                    path: path.clone(),
                    header,
                    data,
                    private_pages: classify::pages_of_words(&words),
                }))
            }
        });
        st.plan = Some(match found {
            Ok(None) => Plan::Write { keys, stale: None },
            Err(why) => {
                tracing::warn!(target: "mmld::share", "{}: cache entry not used: {why}", obj.path.display());
                Plan::Write {
                    keys,
                    stale: Some(why),
                }
            }
            Ok(Some(entry)) if verify => Plan::Verify(entry),
            Ok(Some(entry)) => {
                overlay(&entry, obj.mapping, obj.relro)?;
                hook.replay = Some(entry.header.per_process.clone());
                Plan::Hit(entry)
            }
        });
        Ok(Some(hook))
    }

    /// After relocating an object: write its entry, or (verification)
    /// compare with it and then use it. `bound` gets the scope positions
    /// the skipped relocations bound to.
    pub fn after_link(
        &mut self,
        obj: ObjectLink<'_>,
        hook: Option<ShareHook>,
        bound: &mut [bool],
    ) -> crate::error::Result<()> {
        let dir = self.dir.clone();
        let base = obj.mapping.base();
        let (Some(st), Some(hook)) = (self.state(base), hook) else {
            return Ok(());
        };
        let Some(plan) = st.plan.take() else {
            return Ok(());
        };
        let offsets = match &plan {
            Plan::Hit(_) => Vec::new(),
            _ => classify::listed_offsets(obj.mapping, obj.dynamic, &hook.per_process)
                .unwrap_or_default(),
        };
        st.report.pages_private = match &plan {
            Plan::Hit(entry) => entry.private_pages.len(),
            _ => classify::pages_of_words(&offsets).len(),
        };
        match plan {
            Plan::Hit(entry) => {
                for k in &entry.header.bound {
                    if let Some(b) = bound.get_mut(*k as usize) {
                        *b = true;
                    }
                }
                st.report.outcome = SharingOutcome::Hit;
                st.report.pages_from_cache = entry.header.pages.len();
                st.report.cache_file = Some(entry.path);
            }
            Plan::Verify(entry) => {
                super::verify::compare(&entry, &obj, &hook.per_process, &offsets)
                    .map_err(|kind| Error::new(obj.path, Stage::Link, kind))?;
                let words: Vec<(u64, u64)> = offsets
                    .iter()
                    .flat_map(|&(o, w)| (0..w / 8).map(move |k| o.saturating_add(8 * k)))
                    .filter_map(|o| Some((o, obj.mapping.read_u64(o)?)))
                    .collect();
                overlay(&entry, obj.mapping, obj.relro).at_path(obj.path)?;
                for (o, v) in words {
                    obj.mapping.write_u64(o, v);
                }
                st.report.outcome = SharingOutcome::Hit;
                st.report.pages_from_cache = entry.header.pages.len();
                st.report.cache_file = Some(entry.path);
            }
            Plan::Write { keys, stale } => {
                let deps = PageDeps {
                    per_process: classify::pages_of_words(&offsets),
                    scope: classify::pages_of_words(
                        &hook.scope_bound.iter().map(|&o| (o, 8)).collect::<Vec<_>>(),
                    ),
                };
                let written = write_entry(&dir, st, &obj, (keys, deps), hook.per_process, bound);
                st.report.outcome = match (written, stale) {
                    (Ok(path), stale) => {
                        st.report.cache_file = Some(path);
                        match stale {
                            Some(why) => {
                                SharingOutcome::Fallback(format!("{why}; entry rewritten"))
                            }
                            None => SharingOutcome::Written,
                        }
                    }
                    (Err(e), Some(why)) => SharingOutcome::Fallback(format!("{why}; {e}")),
                    (Err(e), None) => SharingOutcome::Fallback(e),
                };
            }
        }
        Ok(())
    }

    /// One report per object, in the order given (the batch's), each
    /// traced under `mmld::share`.
    pub fn reports(&self, objects: impl Iterator<Item = (PathBuf, u64)>) -> Vec<SharedRelocations> {
        objects
            .map(|(path, base)| {
                let mut r = self
                    .objects
                    .iter()
                    .find(|o| o.base == base)
                    .map(|o| o.report.clone())
                    .unwrap_or_else(|| SharedRelocations::off(path.clone(), base as usize));
                r.path = path;
                trace(&r);
                r
            })
            .collect()
    }
}

fn trace(r: &SharedRelocations) {
    let file = r
        .cache_file
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let what = match &r.outcome {
        SharingOutcome::Off => "off".to_string(),
        SharingOutcome::Hit => format!(
            "hit: {} pages from {file}, {} private",
            r.pages_from_cache, r.pages_private
        ),
        SharingOutcome::Written => format!("written: {file} ({} pages private)", r.pages_private),
        SharingOutcome::Fallback(why) => format!("fallback: {why}"),
    };
    tracing::debug!(target: "mmld::share", "{} at {:#x}: {what}", r.path.display(), r.address);
}

/// The cache file's name: the file (device, inode), its build id and its
/// address. Size and times are in the header only, so that a file
/// rewritten in place with the same build id replaces its entry.
fn entry_name(st: &ObjectState) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // By hand: `format!` per byte costs about 700 instructions, and this
    // runs for every object of every load.
    let mut build_id = String::with_capacity(2 * st.build_id.len());
    for b in &st.build_id {
        build_id.push(char::from(HEX[usize::from(b >> 4)]));
        build_id.push(char::from(HEX[usize::from(b & 15)]));
    }
    if build_id.is_empty() {
        build_id.push('0');
    }
    format!(
        "{:x}-{:x}-{build_id}-{:x}.relcache",
        st.id.dev, st.id.ino, st.base
    )
}

trait AtPath<T> {
    fn at_path(self, path: &Path) -> crate::error::Result<T>;
}

impl<T> AtPath<T> for KindResult<T> {
    fn at_path(self, path: &Path) -> crate::error::Result<T> {
        self.map_err(|k| Error::new(path, Stage::Map, k))
    }
}

/// Does `h` describe this object, at this address, relocated in this
/// scope, in this process? The error is the fallback reason; on success,
/// the words the entry's per-process relocations write.
fn validate(
    h: &Header,
    st: &ObjectState,
    keys: &[ScopeKey],
    obj: &ObjectLink<'_>,
) -> Result<Vec<(u64, u64)>, String> {
    let name = obj
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if h.object != st.id {
        return Err(format!("cache entry stale: {name} changed"));
    }
    if h.build_id != st.build_id {
        return Err(format!("cache entry stale: {name} has another build id"));
    }
    if h.address != st.base || h.span != obj.mapping.len() as u64 {
        return Err(format!(
            "cache entry is for address {:#x}, not {:#x}",
            h.address, st.base
        ));
    }
    let (exe, hosts) = classify::host_set(obj.host);
    if h.executable != exe {
        return Err("cache entry was written for another executable".into());
    }
    if h.hosts != hosts {
        return Err("the host's global objects differ from the cache entry's".into());
    }
    if h.scope.as_slice() != keys {
        return Err("lookup scope differs (a dependency moved, changed or was added)".into());
    }
    check_pages(&h.pages, obj.mapping)?;
    let words = classify::listed_offsets(obj.mapping, obj.dynamic, &h.per_process)
        .ok_or("corrupt relocation list")?;
    if h.bound.iter().any(|&b| b as usize >= keys.len()) {
        return Err("corrupt list of bound scope entries".into());
    }
    Ok(words)
}

/// Are the entry's pages in increasing order, each a page of one writable
/// segment? Checked per run of adjacent pages (a run must lie in one
/// segment, as `overlay` maps it with one `mmap`): libLLVM-15 lists 2,086
/// pages in a few runs.
fn check_pages(pages: &[PageEntry], mapping: &Mapping) -> Result<(), String> {
    let mut k = 0;
    while let Some(first) = pages.get(k) {
        let mut n = 1;
        while pages
            .get(k + n)
            .is_some_and(|p| Some(p.vaddr) == first.vaddr.checked_add(n as u64 * PAGE_SIZE))
        {
            n += 1;
        }
        let ordered = k == 0 || pages.get(k - 1).is_some_and(|l| l.vaddr < first.vaddr);
        if !ordered || !mapping.writable_pages(first.vaddr, n as u64 * PAGE_SIZE) {
            return Err(format!("corrupt page table (page {:#x})", first.vaddr));
        }
        k += n;
    }
    Ok(())
}

/// Map every page of `entry` over the object: read-only where RELRO
/// will seal it anyway and no per-process relocation writes it,
/// writable (still private, copied on write) elsewhere.
fn overlay(entry: &Entry, mapping: &mut Mapping, relro: Option<VRange>) -> KindResult<()> {
    let private = &entry.private_pages;
    let writable = |p: &PageEntry| {
        !classify::in_relro(p.vaddr, relro) || private.binary_search(&p.vaddr).is_ok()
    };
    // Runs of adjacent pages with the same permission: one mmap each.
    let mut k = 0;
    let pages = &entry.header.pages;
    while let Some(first) = pages.get(k) {
        let w = writable(first);
        let mut n = 1;
        while let Some(next) = pages.get(k + n) {
            if next.vaddr != first.vaddr + n as u64 * PAGE_SIZE || writable(next) != w {
                break;
            }
            n += 1;
        }
        let offset = entry.data + k as u64 * PAGE_SIZE;
        mapping.overlay_pages(
            first.vaddr,
            n as u64 * PAGE_SIZE,
            entry.file.as_fd(),
            offset,
            w,
        )?;
        k += n;
    }
    Ok(())
}

/// Which pages hold per-process relocations, and which bindings through
/// the scope: what each cached page depends on.
struct PageDeps {
    per_process: Vec<u64>,
    scope: Vec<u64>,
}

/// Write the entry for an object just relocated normally.
fn write_entry(
    dir: &Path,
    st: &ObjectState,
    obj: &ObjectLink<'_>,
    (keys, deps): (Vec<ScopeKey>, PageDeps),
    per_process: Vec<u32>,
    bound: &[bool],
) -> Result<PathBuf, String> {
    let (executable, hosts) = classify::host_set(obj.host);
    let pages = classify::relocated_pages(obj.mapping, obj.dynamic);
    let mut images = Vec::with_capacity(pages.len() * PAGE_SIZE as usize);
    let mut entries = Vec::with_capacity(pages.len());
    for &vaddr in &pages {
        let page = obj
            .mapping
            .copy_pages(vaddr, PAGE_SIZE)
            .ok_or_else(|| format!("page {vaddr:#x} is not readable"))?;
        images.extend_from_slice(&page);
        let flag = |yes: bool, bit: u32| if yes { bit } else { 0 };
        let flags = flag(classify::in_relro(vaddr, obj.relro), PAGE_RELRO)
            | flag(
                deps.per_process.binary_search(&vaddr).is_ok(),
                PAGE_PER_PROCESS,
            )
            | flag(deps.scope.binary_search(&vaddr).is_ok(), PAGE_SCOPE);
        entries.push(PageEntry { vaddr, flags });
    }
    let header = Header {
        object: st.id,
        address: st.base,
        span: obj.mapping.len() as u64,
        executable,
        build_id: st.build_id.clone(),
        hosts,
        scope: keys,
        pages: entries,
        per_process,
        bound: bound
            .iter()
            .enumerate()
            .filter(|(_, b)| **b)
            .map(|(k, _)| k as u32)
            .collect(),
    };
    trust::write_atomically(
        dir,
        &entry_name(st),
        &cache_file::encode_file(&header, &images),
    )
}

/// Read page `k` of an entry (verification).
pub(super) fn read_page(entry: &Entry, k: usize) -> Option<Vec<u8>> {
    let mut page = vec![0u8; PAGE_SIZE as usize];
    let offset = entry.data.checked_add((k as u64).checked_mul(PAGE_SIZE)?)?;
    entry.file.read_exact_at(&mut page, offset).ok()?;
    Some(page)
}
