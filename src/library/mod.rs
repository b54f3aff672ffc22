//! The public, `libloading`-shaped API: `Library`, `Symbol`, `OpenOptions`.
//!
//! Owns: handles users hold, their lifetimes, and the translation of user
//! names into lookups. Must never: expose a raw pointer into an object that
//! can outlive the `Library` it came from (except what `get` returns, which
//! is the caller's `unsafe` promise, as in `libloading`).

use std::ffi::CString;
use std::marker::PhantomData;
use std::ops::Deref;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::error::{Error, ErrorKind, Result, Stage};
use crate::host::HostLibrary;
use crate::link::hostscope::HostObject;
use crate::link::index::{Answer, ScopeIndex};
use crate::link::symbols::{self, Request};
use crate::loader::{self, HostRoot, Loaded, Opened, Settings};
use crate::map::Strategy;
use crate::object::{LoadedObject, ScopeItem};

mod global;
mod names;
mod view;

pub use global::lookup_default;
pub use names::SymbolName;
use names::clean_name;
pub use view::{ObjectView, SegmentView};

/// The kind of a symbol, from its ELF type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymbolKind {
    Function,
    /// An `STT_GNU_IFUNC`: the address is the implementation its resolver chose.
    IndirectFunction,
    Object,
    ThreadLocal,
    Other,
}

/// What a lookup found.
#[derive(Debug, Clone)]
pub struct SymbolInfo {
    pub address: u64,
    pub size: u64,
    pub kind: SymbolKind,
    /// The object that defines it (soname or file name).
    pub object: String,
    /// `true` when the symbol lies in an executable segment.
    pub in_code: bool,
    pub version: Option<String>,
}

/// A symbol borrowed from a [`Library`]; cannot outlive it.
pub struct Symbol<'lib, T> {
    value: T,
    _library: PhantomData<&'lib Library>,
}

impl<T> Deref for Symbol<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: Copy> Symbol<'_, T> {
    /// The value, detached from the library's lifetime: the caller must not
    /// use it after the library is dropped.
    ///
    /// # Safety
    /// The library must outlive every use of the returned value.
    pub unsafe fn into_raw(self) -> T {
        self.value
    }
}

impl<T> std::fmt::Debug for Symbol<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Symbol { .. }")
    }
}

/// Options for opening a library (like `dlopen`'s flags).
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    settings: Settings,
}

impl OpenOptions {
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
    /// [`ErrorKind::NotLoaded`]. The other options still apply to it, as
    /// `dlopen` applies `RTLD_GLOBAL` or `RTLD_NODELETE` with `RTLD_NOLOAD`.
    pub fn no_load(&mut self, yes: bool) -> &mut Self {
        self.settings.no_load = yes;
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
    /// # Safety
    /// Loading a library runs its code (constructors, IFUNC resolvers),
    /// which can do anything.
    pub unsafe fn open(&self, path: impl AsRef<Path>) -> Result<Library> {
        let Loaded { root, scope, host } = match loader::open(path.as_ref(), self.settings)? {
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
        };
        library.index_after = library.index_threshold();
        Ok(library)
    }

    /// Load and link `path` and its tree without running any of its code,
    /// with every segment mapped non-executable. Safe: nothing of the file
    /// runs.
    pub fn check(&self, path: impl AsRef<Path>) -> Result<loader::CheckReport> {
        loader::check(path.as_ref(), self.settings)
    }
}

/// A loaded library. Dropping it unloads the library and every dependency
/// no other library needs.
pub struct Library {
    root: Root,
    /// The local scope of a library mmld mapped (empty otherwise).
    scope: Vec<ScopeItem>,
    /// For each scope entry provided by the host, its tables as of the
    /// load (held loaded, as the entry's own handle also does).
    host_tables: Vec<Option<Arc<HostObject>>>,
    /// The scope's names hashed once (`None`: some host object's tables
    /// could not be read), built after `index_after` lookups.
    index: OnceLock<Option<ScopeIndex>>,
    lookups: AtomicUsize,
    index_after: usize,
    /// `root.path`, interned so that a failed lookup need not allocate.
    file: &'static Path,
}

/// What a [`Library`] stands for.
enum Root {
    /// An object mmld mapped.
    Mapped(Arc<LoadedObject>),
    /// A library the host already had: lookups are glibc's `dlsym` on it.
    Host(Box<HostRoot>),
    /// [`Library::this`]: the program and the global scope (its path is
    /// `Library::file`).
    Process(Box<(u64, u64)>),
}

/// Where a lookup found its symbol.
enum Found<'a> {
    Mapped(&'a LoadedObject, u32, symbols::Sym),
    Host(&'a HostLibrary, u64),
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Library")
            .field("path", &self.path())
            .field("base", &format_args!("{:#x}", self.base_address()))
            .finish()
    }
}

impl Library {
    /// Load `path` with default options.
    ///
    /// # Safety
    /// See [`OpenOptions::open`].
    pub unsafe fn open(path: impl AsRef<Path>) -> Result<Library> {
        // SAFETY: forwarded to the caller.
        unsafe { OpenOptions::new().open(path) }
    }

    /// Look up `name` (default version) in the library's local scope (the
    /// library, then its dependencies breadth-first), as `dlsym` on a
    /// handle does.
    ///
    /// # Safety
    /// `T` must be the symbol's true type (a function pointer type or a
    /// pointer to data), as with `libloading`.
    pub unsafe fn get<T: Copy>(&self, name: &(impl SymbolName + ?Sized)) -> Result<Symbol<'_, T>> {
        let raw = name.symbol_bytes();
        if !matches!(self.root, Root::Mapped(_)) {
            let found = self.lookup_outside(raw, None)?;
            // SAFETY: forwarded to the caller.
            return unsafe { self.make_symbol(found.address) };
        }
        if let Some(index) = self.index() {
            let bare = raw.strip_suffix(&[0]).unwrap_or(raw);
            match index.find(bare) {
                // SAFETY: forwarded to the caller.
                Answer::Address(address) => return unsafe { self.make_symbol(address) },
                // `find` reports the error (and an inner NUL as such).
                Answer::Absent => return Err(self.not_found(raw)),
                Answer::Walk => {}
            }
        }
        let found = self.find(raw, None)?;
        self.inside_object(&found)?;
        // SAFETY: forwarded to the caller.
        unsafe { self.make_symbol(self.address(&found)) }
    }

    /// Look up `name` at exactly `version` (like `dlvsym`).
    ///
    /// # Safety
    /// As for [`Library::get`].
    pub unsafe fn get_versioned<T: Copy>(
        &self,
        name: &(impl SymbolName + ?Sized),
        version: &str,
    ) -> Result<Symbol<'_, T>> {
        if !matches!(self.root, Root::Mapped(_)) {
            let found = self.lookup_outside(name.symbol_bytes(), Some(version.as_bytes()))?;
            // SAFETY: forwarded to the caller.
            return unsafe { self.make_symbol(found.address) };
        }
        let found = self.find(name.symbol_bytes(), Some(version.as_bytes()))?;
        self.inside_object(&found)?;
        // SAFETY: forwarded to the caller.
        unsafe { self.make_symbol(self.address(&found)) }
    }

    unsafe fn make_symbol<T: Copy>(&self, address: u64) -> Result<Symbol<'_, T>> {
        if std::mem::size_of::<T>() != std::mem::size_of::<usize>() {
            return Err(self.error(
                Stage::Lookup,
                ErrorKind::SymbolSizeMismatch {
                    requested: std::mem::size_of::<T>(),
                    pointer: std::mem::size_of::<usize>(),
                },
            ));
        }
        let raw = address as usize;
        // SAFETY: sizes are equal (checked above); the caller promises `T`
        // is a pointer type for which this address is valid.
        let value = unsafe { std::mem::transmute_copy::<usize, T>(&raw) };
        Ok(Symbol {
            value,
            _library: PhantomData,
        })
    }

    /// Describe `name` without converting it to a type.
    pub fn symbol_info(&self, name: &(impl SymbolName + ?Sized)) -> Result<SymbolInfo> {
        self.lookup(name.symbol_bytes(), None)
    }

    fn error(&self, stage: Stage, kind: ErrorKind) -> Error {
        Error::new(self.file, stage, kind)
    }

    /// The scope index, once this library has served enough lookups for
    /// building it to pay off. Building reads every exported symbol of the
    /// scope once (about as costly as that many lookups), so it waits until
    /// the lookups so far would have paid for it: a program that asks for
    /// a few symbols never builds it, one that asks for many pays at most
    /// twice what it would have with the best choice made in advance.
    fn index(&self) -> Option<&ScopeIndex> {
        if let Some(built) = self.index.get() {
            return built.as_ref();
        }
        if self.lookups.fetch_add(1, Ordering::Relaxed) < self.index_after {
            return None;
        }
        self.index.get_or_init(|| self.build_index()).as_ref()
    }

    /// Exported symbols in the scope, as the lookups before the index is
    /// built: their total is what building it costs.
    fn index_threshold(&self) -> usize {
        let symbols: usize = (0..self.scope.len())
            .map(|k| self.table(k).map_or(0, |t| t.count() as usize))
            .sum();
        symbols / 2
    }

    /// The symbol table of scope entry `k`.
    fn table(&self, k: usize) -> Option<&symbols::SymbolTable> {
        match self.scope.get(k)? {
            ScopeItem::Mapped(obj) => Some(&obj.symbols),
            ScopeItem::Host(_) => {
                let o = self.host_tables.get(k)?.as_ref()?;
                Some(&*o.symbols)
            }
        }
    }

    fn build_index(&self) -> Option<ScopeIndex> {
        let tables = (0..self.scope.len())
            .map(|k| self.table(k))
            .collect::<Option<Vec<_>>>()?;
        let address = |k: usize, sym: &symbols::Sym| -> Option<u64> {
            if matches!(sym.kind(), symbols::STT_GNU_IFUNC | symbols::STT_TLS) {
                return None;
            }
            if sym.shndx == symbols::SHN_ABS {
                return Some(sym.value);
            }
            match self.scope.get(k)? {
                // Outside its object: the walk reports the error.
                ScopeItem::Mapped(obj) => obj
                    .mapping
                    .segment_containing(sym.value, 1)
                    .map(|_| obj.mapping.address_of(sym.value)),
                ScopeItem::Host(_) => {
                    let bias = self.host_tables.get(k)?.as_ref()?.bias;
                    Some(bias.wrapping_add(sym.value))
                }
            }
        };
        Some(ScopeIndex::build(&tables, address))
    }

    fn not_found(&self, raw: &[u8]) -> Error {
        match clean_name(raw) {
            Err(kind) => self.error(Stage::Lookup, kind),
            Ok(name) => Error::symbol_not_found(self.file, name),
        }
    }

    /// Find `raw` in the local scope: the first object that defines it.
    fn find(&self, raw: &[u8], version: Option<&[u8]>) -> Result<Found<'_>> {
        let name = clean_name(raw).map_err(|k| self.error(Stage::Lookup, k))?;
        let mut req = Request::new(name, version);
        if let Some(v) = req.version.as_mut() {
            // An explicit version asks for that version only.
            v.exact_only = true;
        }
        for (position, item) in self.scope.iter().enumerate() {
            match item {
                ScopeItem::Mapped(obj) => {
                    if let Some((index, sym)) = obj.lookup(&req) {
                        return Ok(Found::Mapped(obj, index, sym));
                    }
                }
                ScopeItem::Host(h) => {
                    // The host object's own tables answer (a miss costs a
                    // Bloom test); glibc only when it could not be read.
                    let table = self.host_tables.get(position).and_then(Option::as_ref);
                    let addr = match table {
                        Some(t) => t.lookup(&req),
                        None => {
                            let cname = CString::new(name).ok();
                            let cver = version.and_then(|v| CString::new(v).ok());
                            cname.and_then(|n| h.symbol(&n, cver.as_deref()))
                        }
                    };
                    if let Some(addr) = addr {
                        return Ok(Found::Host(h, addr));
                    }
                }
            }
        }
        Err(match version {
            None => Error::symbol_not_found(self.file, name),
            Some(v) => self.error(
                Stage::Lookup,
                ErrorKind::SymbolNotFound {
                    name: String::from_utf8_lossy(name).into_owned(),
                    version: Some(String::from_utf8_lossy(v).into_owned()),
                },
            ),
        })
    }

    /// The address a lookup yields, as `dlsym` would return it: IFUNCs
    /// resolved, thread-local variables for the calling thread.
    fn address(&self, found: &Found<'_>) -> u64 {
        match found {
            Found::Host(_, addr) => *addr,
            Found::Mapped(obj, _, sym) => definition_address(obj, sym),
        }
    }

    /// A definition of an mmld object must lie in one of its segments (a
    /// crafted `st_value` could point anywhere in the process); absolute
    /// symbols are values, not addresses, and thread-local ones are offsets
    /// into a TLS block.
    fn inside_object(&self, found: &Found<'_>) -> Result<()> {
        let Found::Mapped(obj, index, sym) = found else {
            return Ok(());
        };
        if sym.shndx == symbols::SHN_ABS
            || sym.kind() == symbols::STT_TLS
            || obj.mapping.segment_containing(sym.value, 1).is_some()
        {
            return Ok(());
        }
        let name = obj
            .symbols
            .symbol_name(sym)
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_else(|_| format!("#{index}"));
        Err(Error::new(
            &obj.path,
            Stage::Lookup,
            ErrorKind::SymbolOutsideObject {
                name,
                value: sym.value,
            },
        ))
    }

    fn lookup(&self, raw: &[u8], version: Option<&[u8]>) -> Result<SymbolInfo> {
        if !matches!(self.root, Root::Mapped(_)) {
            return self.lookup_outside(raw, version);
        }
        let found = self.find(raw, version)?;
        self.inside_object(&found)?;
        Ok(match &found {
            Found::Mapped(obj, index, sym) => {
                self.describe(obj, *index, *sym, self.address(&found))
            }
            Found::Host(h, addr) => SymbolInfo {
                address: *addr,
                size: 0,
                kind: SymbolKind::Other,
                object: h.name.clone(),
                in_code: false,
                version: version.map(|v| String::from_utf8_lossy(v).into_owned()),
            },
        })
    }

    fn describe(
        &self,
        obj: &LoadedObject,
        index: u32,
        sym: symbols::Sym,
        address: u64,
    ) -> SymbolInfo {
        describe_definition(obj, index, sym, address)
    }

    /// How many names the scope index holds, once it is built (`None`
    /// before, or when some host object's tables could not be read). For
    /// tests and benchmarks that must know which path a lookup took.
    #[doc(hidden)]
    pub fn indexed_names(&self) -> Option<usize> {
        self.index
            .get()
            .and_then(|i| i.as_ref())
            .map(ScopeIndex::len)
    }

    /// The file the library was loaded from.
    pub fn path(&self) -> &Path {
        match &self.root {
            Root::Mapped(o) => &o.path,
            Root::Host(h) => &h.path,
            Root::Process(_) => self.file,
        }
    }

    /// `DT_SONAME`, if any.
    pub fn soname(&self) -> Option<&str> {
        match &self.root {
            Root::Mapped(o) => o.soname.as_deref(),
            Root::Host(h) => h.soname.as_deref(),
            Root::Process(_) => None,
        }
    }

    /// Lowest address of the library's span.
    pub fn base_address(&self) -> u64 {
        match &self.root {
            Root::Mapped(o) => o.mapping.base(),
            Root::Host(h) => h.base,
            Root::Process(program) => program.1,
        }
    }

    /// Difference between process addresses and the file's virtual addresses.
    pub fn load_bias(&self) -> u64 {
        match &self.root {
            Root::Mapped(o) => o.mapping.bias(),
            Root::Host(h) => h.bias,
            Root::Process(program) => program.0,
        }
    }

    /// The library and its dependencies that mmld mapped, in scope order.
    pub fn objects(&self) -> Vec<ObjectView> {
        self.scope
            .iter()
            .filter_map(|s| match s {
                ScopeItem::Mapped(o) => Some(ObjectView::of(o)),
                ScopeItem::Host(_) => None,
            })
            .collect()
    }

    /// Names of dependencies the host provides (for a library that is the
    /// host's own copy, that library).
    pub fn host_dependencies(&self) -> Vec<String> {
        if let Root::Host(h) = &self.root {
            return vec![h.lib.name.clone()];
        }
        self.scope
            .iter()
            .filter_map(|s| match s {
                ScopeItem::Host(h) => Some(h.name.clone()),
                ScopeItem::Mapped(_) => None,
            })
            .collect()
    }

    /// Unload explicitly (the same as dropping).
    pub fn close(self) {}
}

impl Drop for Library {
    fn drop(&mut self) {
        // A host library's reference goes with `root`; mmld mapped nothing.
        if let Root::Mapped(o) = &self.root {
            loader::close(o);
        }
    }
}

/// What a lookup that found `sym` (entry `index` of `obj`) reports.
fn describe_definition(
    obj: &LoadedObject,
    index: u32,
    sym: symbols::Sym,
    address: u64,
) -> SymbolInfo {
    let kind = match sym.kind() {
        symbols::STT_FUNC => SymbolKind::Function,
        symbols::STT_GNU_IFUNC => SymbolKind::IndirectFunction,
        symbols::STT_OBJECT | symbols::STT_COMMON => SymbolKind::Object,
        symbols::STT_TLS => SymbolKind::ThreadLocal,
        _ => SymbolKind::Other,
    };
    let in_code = obj.mapping.executable_at(sym.value);
    let version = obj
        .symbols
        .defined_version(index)
        .and_then(|(v, _)| obj.symbols.string(u64::from(v.name)).ok())
        .map(|b| String::from_utf8_lossy(b).into_owned());
    SymbolInfo {
        address,
        size: sym.size,
        kind,
        object: obj.name.clone(),
        in_code,
        version,
    }
}

/// The address a lookup of `sym` in `obj` yields, as `dlsym` would return
/// it: IFUNCs resolved, thread-local variables for the calling thread.
fn definition_address(obj: &LoadedObject, sym: &symbols::Sym) -> u64 {
    match sym.kind() {
        symbols::STT_GNU_IFUNC if obj.mapping.executable_at(sym.value) && obj.is_initialized() => {
            // SAFETY: the resolver is in an executable segment of a loaded,
            // relocated object that the caller keeps alive.
            unsafe { crate::runtime::call::ifunc_resolver(obj.mapping.address_of(sym.value)) }
        }
        symbols::STT_TLS => obj.tls.as_ref().map_or(0, |t| {
            crate::runtime::tls::address_in_this_thread(t.id, sym.value)
        }),
        _ if sym.shndx == symbols::SHN_ABS => sym.value,
        _ => obj.mapping.address_of(sym.value),
    }
}
