//! `OpenOptions`: how a library is opened (`dlopen`'s flags), and the
//! two ways to use them: opening (which runs the library's code) and
//! checking (which runs none).
//!
//! Owns: turning options into the loader's settings and a finished load
//! into a [`Library`]. Must never: open anything itself; the loader does.

use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::AtomicUsize;

use super::{Library, Root};
use crate::error::Result;
use crate::loader::{self, Loaded, Opened, Settings};
use crate::map::Strategy;
use crate::object::ScopeItem;

/// Options for opening a library (like `dlopen`'s flags).
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    settings: Settings,
}

impl OpenOptions {
    /// The defaults: local scope, eager binding, unloaded when the last
    /// handle is dropped (`dlopen(RTLD_NOW | RTLD_LOCAL)`).
    pub fn new() -> Self {
        Self::default()
    }
    /// Make the library's symbols available to libraries loaded later
    /// (like `RTLD_GLOBAL`).
    pub fn global(&mut self, yes: bool) -> &mut Self {
        self.settings.global = yes;
        self
    }
    /// Resolve the library's references in its own scope before the global
    /// scope (like `RTLD_DEEPBIND`).
    pub fn deep_bind(&mut self, yes: bool) -> &mut Self {
        self.settings.deep_bind = yes;
        self
    }
    /// Keep the library mapped for the life of the process (like
    /// `RTLD_NODELETE`).
    pub fn nodelete(&mut self, yes: bool) -> &mut Self {
        self.settings.nodelete = yes;
        self
    }
    /// Let a call through the PLT to a function that has no definition yet
    /// bind on its first call instead of failing the load (like
    /// `RTLD_LAZY`; eager binding stays the default). The call is looked
    /// up in the library's scope as it is then, so a definition loaded
    /// later with [`global`](Self::global) is found; if nothing defines
    /// it, the process ends as under glibc, with `PROGRAM: symbol lookup
    /// error: LIB: undefined symbol: NAME` on standard error and exit
    /// status 127. Data references and objects linked with `-z now`
    /// (`DF_BIND_NOW`) are still bound at load, as is everything when
    /// `LD_BIND_NOW` is set.
    pub fn lazy(&mut self, yes: bool) -> &mut Self {
        self.settings.lazy = yes;
        self
    }
    /// Copy segments into anonymous memory instead of mapping the file
    /// (`read`), to compare with the normal `mmap` strategy.
    pub fn copy_segments(&mut self, yes: bool) -> &mut Self {
        self.settings.strategy = if yes { Strategy::Read } else { Strategy::Mmap };
        self
    }
    /// Accept segments that are both writable and executable.
    pub fn allow_writable_executable(&mut self, yes: bool) -> &mut Self {
        self.settings.allow_writable_executable = yes;
        self
    }
    /// Accept `DT_TEXTREL` objects (mmld still refuses to apply them).
    pub fn allow_text_relocations(&mut self, yes: bool) -> &mut Self {
        self.settings.allow_text_relocations = yes;
        self
    }
    /// Accept objects whose `PT_GNU_STACK` asks for an executable stack.
    /// mmld never changes the stack's protection either way.
    pub fn allow_executable_stack(&mut self, yes: bool) -> &mut Self {
        self.settings.allow_executable_stack = yes;
        self
    }

    /// Fault in each object's RELRO pages for writing with one
    /// `madvise(MADV_POPULATE_WRITE)` before relocating, instead of one page
    /// fault per page. About 10% faster for relocation-heavy libraries
    /// (libLLVM: 16.5 ms instead of 18.3 ms), but RELRO pages that hold no
    /// relocation become private too (20 KiB of libLLVM's 8.3 MiB), so it is
    /// off by default: by default mmld dirties exactly the pages glibc does.
    pub fn prefault_relocations(&mut self, yes: bool) -> &mut Self {
        self.settings.prefault_relro = yes;
        self
    }

    /// Open the library only if it is already loaded, by mmld or by the
    /// host (like `RTLD_NOLOAD`); otherwise fail with
    /// [`ErrorKind::NotLoaded`](crate::ErrorKind::NotLoaded). The other options still apply to it, as
    /// `dlopen` applies `RTLD_GLOBAL` or `RTLD_NODELETE` with `RTLD_NOLOAD`.
    pub fn no_load(&mut self, yes: bool) -> &mut Self {
        self.settings.no_load = yes;
        self
    }

    /// Share relocated pages between processes through a cache in `dir`
    /// (see docs/SHARED-RELOCATIONS.md). Each object this load maps is
    /// placed at an address derived from its file's identity and a secret
    /// kept in `dir` (the same for every process of this user on this
    /// boot); the first load writes its relocated pages to a cache file,
    /// later loads map them from it and apply only the relocations whose
    /// values differ between processes. Any problem (an address already in
    /// use, a stale or untrusted cache) falls back to a normal load of that
    /// object; [`Library::relocation_sharing`] says what happened.
    ///
    /// `dir` must be a directory owned by the effective user and writable
    /// by nobody else. The environment variable `MMLD_SHARE_RELOCATIONS`
    /// sets a directory for loads that set none here. Never used in a
    /// secure-mode (setuid) process.
    pub fn share_relocations(&mut self, dir: impl Into<std::path::PathBuf>) -> &mut Self {
        let dir = dir.into();
        self.settings.share.dir = Some(crate::error::interned_path(&dir));
        self
    }

    /// With shared relocations on, also relocate each object fully and
    /// compare every page that came from the cache with the result: any
    /// difference fails the load with
    /// [`ErrorKind::SharedRelocationsDiffer`](crate::ErrorKind::SharedRelocationsDiffer)
    /// (object, page, first differing byte). For tests and doubt, not
    /// speed. `MMLD_SHARE_RELOCATIONS_VERIFY=1` turns it on too.
    pub fn verify_shared_relocations(&mut self, yes: bool) -> &mut Self {
        self.settings.share.verify = yes;
        self
    }

    /// Load `path` and its dependencies, and run their constructors.
    ///
    /// A name without `/` is searched as `dlopen` searches it (objects
    /// already loaded under that name, then the executable's `DT_RPATH`,
    /// `LD_LIBRARY_PATH`, the executable's `DT_RUNPATH`, `/etc/ld.so.cache`
    /// and the default directories); a name with `/` is a path. A file the
    /// host already has loaded (same device and inode), and every library
    /// of the C library's family, is the host's copy: nothing is mapped,
    /// lookups go to that copy, and dropping the `Library` unmaps nothing.
    ///
    /// ```
    /// # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testlibs/libdemo.so");
    /// use mmld::OpenOptions;
    ///
    /// // Like dlopen(path, RTLD_NOW | RTLD_GLOBAL | RTLD_NODELETE).
    /// // SAFETY: libdemo's constructors are sound.
    /// let lib = unsafe { OpenOptions::new().global(true).nodelete(true).open(path) }?;
    /// // SAFETY: `scale` is `double scale(double, double)`.
    /// let scale = unsafe { lib.get::<extern "C" fn(f64, f64) -> f64>("scale") }?;
    /// assert_eq!(scale(1.5, 2.0), 3.0);
    /// # Ok::<(), mmld::Error>(())
    /// ```
    ///
    /// # Safety
    /// Loading a library runs its code (constructors, IFUNC resolvers),
    /// which can do anything.
    pub unsafe fn open(&self, path: impl AsRef<Path>) -> Result<Library> {
        let Loaded {
            root,
            scope,
            host,
            sharing,
        } = match loader::open(path.as_ref(), self.settings)? {
            Opened::Mapped(loaded) => loaded,
            Opened::Host(h) => {
                let path = h.path.clone();
                return Ok(Library::outside(Root::Host(Box::new(h)), &path));
            }
        };
        let root_path = root.path.clone();
        let host_tables = scope
            .iter()
            .map(|item| match item {
                ScopeItem::Host(h) => h.path_str().and_then(|p| host.shared(p)),
                ScopeItem::Mapped(_) => None,
            })
            .collect();
        // Only the host objects of its own scope stay held (the snapshot,
        // which holds every host object, goes when the load is done): the
        // host stays free to unload the rest.
        drop(host);
        let mut library = Library {
            root: Root::Mapped(root),
            scope,
            host_tables,
            index: OnceLock::new(),
            lookups: AtomicUsize::new(0),
            index_after: usize::MAX,
            file: crate::error::interned_path(&root_path),
            sharing,
        };
        library.index_after = library.index_threshold();
        Ok(library)
    }

    /// Load and link `path` and its tree without running any of its code,
    /// with every segment mapped non-executable. Safe: nothing of the file
    /// runs.
    ///
    /// ```
    /// # let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/testlibs");
    /// use mmld::OpenOptions;
    ///
    /// let ok = OpenOptions::new().check(format!("{dir}/libdemo.so"))?;
    /// assert!(ok.unresolved.is_empty());
    ///
    /// // libcheckbad.so and its dependency libmissing.so each refer to a
    /// // symbol nothing defines: `ldd -r` would list both.
    /// let bad = OpenOptions::new().check(format!("{dir}/libcheckbad.so"))?;
    /// assert_eq!(bad.unresolved.len(), 2);
    /// # Ok::<(), mmld::Error>(())
    /// ```
    pub fn check(&self, path: impl AsRef<Path>) -> Result<loader::CheckReport> {
        loader::check(path.as_ref(), self.settings)
    }
}
