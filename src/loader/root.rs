//! Where the library a caller opens comes from.
//!
//! Owns: turning what `Library::open` was given into an object, as glibc's
//! `dlopen` does: a name without `/` is first matched against the objects
//! already loaded (mmld's by soname, the host's by soname or file name),
//! then searched (the executable's `DT_RPATH` when it has no `DT_RUNPATH`,
//! `LD_LIBRARY_PATH`, the executable's `DT_RUNPATH`, `/etc/ld.so.cache`,
//! the default directories); a name with `/` is a path. A file the host
//! already has (same device and inode), or any glibc-family library, is
//! the host's copy: opening it hands out a reference on that copy.
//! Must never: map a file the host has loaded, or ask glibc to load
//! anything but a glibc-family library.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Settings;
use super::resolve::open_first;
use super::transaction::{ld_library_path, reuse_root};
use crate::elf::ElfFile;
use crate::error::{AttachContext, Error, ErrorKind, Result, Stage};
use crate::host::{self, HostLibrary};
use crate::link::hostscope::{HostScope, host_scope};
use crate::registry;
use crate::search::{self, SearchRequest};

/// A library the host provides, opened through mmld: lookups go to the
/// host's copy (glibc's `dlsym` on it), and dropping it gives back the one
/// reference it holds; nothing of it was mapped by mmld.
pub struct HostRoot {
    pub lib: Arc<HostLibrary>,
    pub path: PathBuf,
    pub soname: Option<String>,
    pub bias: u64,
    pub base: u64,
}

/// What the name given to `open` denotes.
pub(super) enum Located {
    /// An object mmld already has: one more handle on it.
    Mapped(super::Loaded),
    /// An object of the host.
    Host(HostRoot),
    /// A file to map (not loaded by anyone yet).
    File(PathBuf, Box<ElfFile>),
}

/// Find what `name` denotes, without mapping anything.
pub(super) fn locate(name: &Path, settings: Settings) -> Result<Located> {
    let host = host_scope();
    let (path, elf) = match name.to_str().filter(|s| !s.contains('/')) {
        Some(bare) => {
            if let Some(found) = loaded_by_name(bare, &host, settings)? {
                return Ok(found);
            }
            search_by_name(bare, &host, settings)?
        }
        None => (
            name.to_path_buf(),
            ElfFile::open(name).at(name, Stage::Read)?,
        ),
    };
    if let Some(existing) = reuse_root(elf.dev, elf.ino, settings) {
        tracing::debug!(target: "mmld::libs", path = %path.display(), "already loaded: reusing");
        return Ok(Located::Mapped(existing));
    }
    if let Some(o) = host.object_with_file(&elf) {
        tracing::debug!(target: "mmld::libs", path = %path.display(), host = %o.name, "the host's copy of this file: reusing");
        let lib = HostLibrary::loaded_from(&display_name(&path), &o.name);
        return lib.map(|l| Located::Host(host_root(l))).ok_or_else(|| {
            Error::new(
                &path,
                Stage::Open,
                ErrorKind::Other("the host unloaded it".into()),
            )
        });
    }
    // Another file of the C library's family: still the host's copy (two
    // C libraries in one process corrupt each other's state).
    let base = display_name(&path);
    if host::is_glibc_family(&base) {
        return glibc_family(Path::new(&base), settings).map(Located::Host);
    }
    if settings.no_load {
        return Err(Error::new(&path, Stage::Open, ErrorKind::NotLoaded));
    }
    Ok(Located::File(path, Box::new(elf)))
}

/// The file a check or a tree starts from: a bare name searched as
/// [`locate`] searches it (no object is reused: nothing runs), else a path.
pub(super) fn file_for(name: &Path) -> Result<(PathBuf, ElfFile)> {
    match name.to_str().filter(|s| !s.contains('/')) {
        Some(bare) => search_by_name(bare, &host_scope(), Settings::default()),
        None => Ok((
            name.to_path_buf(),
            ElfFile::open(name).at(name, Stage::Read)?,
        )),
    }
}

/// glibc's first step for a bare name: an object already loaded under it.
fn loaded_by_name(name: &str, host: &HostScope, settings: Settings) -> Result<Option<Located>> {
    let known = registry::registry()
        .find_by_soname(name)
        .map(|e| (e.object.dev, e.object.ino));
    if let Some((dev, ino)) = known
        && let Some(existing) = reuse_root(dev, ino, settings)
    {
        return Ok(Some(Located::Mapped(existing)));
    }
    if let Some(o) = host.loaded_as(name)
        && let Some(lib) = HostLibrary::loaded_from(name, &o.name)
    {
        return Ok(Some(Located::Host(host_root(lib))));
    }
    if host::is_glibc_family(name) {
        return glibc_family(Path::new(name), settings).map(|h| Some(Located::Host(h)));
    }
    Ok(None)
}

/// The search `dlopen` makes for a bare name from the executable.
fn search_by_name(name: &str, host: &HostScope, settings: Settings) -> Result<(PathBuf, ElfFile)> {
    let exe = host.objects.iter().find(|o| o.name.is_empty());
    let origin_exe = std::env::current_exe().ok();
    let origin = origin_exe.as_deref().and_then(Path::parent);
    let runpath = exe
        .and_then(|e| e.runpath.as_deref())
        .map(|r| search::split_rpath(r, origin));
    let rpath = match exe.and_then(|e| e.rpath.as_deref()) {
        Some(r) if runpath.is_none() => search::split_rpath(r, origin),
        _ => Vec::new(),
    };
    let chain = [("the executable".to_string(), rpath)];
    let lib_path = ld_library_path();
    let req = SearchRequest {
        name,
        rpaths_of_chain: &chain,
        runpath: runpath.as_deref(),
        ld_library_path: &lib_path,
        nodeflib: false,
    };
    let candidates = search::candidates(&req, search::system_cache());
    let mut searched = Vec::new();
    match open_first(candidates, &mut searched)? {
        Some((path, _, elf)) => Ok((path, elf)),
        None => {
            let kind = if settings.no_load {
                ErrorKind::NotLoaded
            } else {
                ErrorKind::LibraryNotFound {
                    name: name.to_string(),
                    searched,
                }
            };
            Err(Error::new(Path::new(name), Stage::Open, kind))
        }
    }
}

/// A glibc-family library is always the host's: the one loaded, or (unless
/// only an already loaded one is wanted) one glibc loads now.
pub(super) fn glibc_family(path: &Path, settings: Settings) -> Result<HostRoot> {
    let name = path.to_string_lossy();
    let lib = if settings.no_load {
        HostLibrary::find_loaded(&name)
    } else {
        HostLibrary::load_system(&name)
    };
    let kind = if settings.no_load {
        ErrorKind::NotLoaded
    } else {
        ErrorKind::Other("glibc could not load this C-library component".into())
    };
    lib.map(host_root)
        .ok_or_else(|| Error::new(path, Stage::Open, kind))
}

/// Describe a host library from the host's current objects.
fn host_root(lib: HostLibrary) -> HostRoot {
    let path = lib.path().unwrap_or_else(|| PathBuf::from(&lib.name));
    let scope = host_scope();
    let object = scope.object_named(&path.to_string_lossy());
    HostRoot {
        soname: object.and_then(|o| o.soname.clone()),
        bias: object.map_or(0, |o| o.bias),
        base: object.map_or(0, |o| o.base()),
        path,
        lib: Arc::new(lib),
    }
}

fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
