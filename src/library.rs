//! The public, `libloading`-shaped API: `Library`, `Symbol`, `OpenOptions`.
//!
//! Owns: handles users hold, their lifetimes, and the translation of user
//! names into lookups. Must never: expose a raw pointer into an object that
//! can outlive the `Library` it came from (except what `get` returns, which
//! is the caller's `unsafe` promise, as in `libloading`).

use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::error::{Error, ErrorKind, Result, Stage};
use crate::host::HostLibrary;
use crate::link::hostscope::HostScope;
use crate::link::index::{Answer, ScopeIndex};
use crate::link::symbols::{self, Request};
use crate::loader::{self, Loaded, Settings};
use crate::map::Strategy;
use crate::object::{LoadedObject, ScopeItem};

/// A name for a symbol: `&str`, `&[u8]`, `&CStr`, `String`, `CString`. A
/// trailing NUL is accepted and ignored; an inner NUL is an error.
pub trait SymbolName {
    fn symbol_bytes(&self) -> &[u8];
}

impl SymbolName for str {
    fn symbol_bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}
impl SymbolName for [u8] {
    fn symbol_bytes(&self) -> &[u8] {
        self
    }
}
impl SymbolName for CStr {
    fn symbol_bytes(&self) -> &[u8] {
        self.to_bytes()
    }
}
impl SymbolName for String {
    fn symbol_bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}
impl SymbolName for CString {
    fn symbol_bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}
impl<const N: usize> SymbolName for [u8; N] {
    fn symbol_bytes(&self) -> &[u8] {
        self
    }
}
impl<T: SymbolName + ?Sized> SymbolName for &T {
    fn symbol_bytes(&self) -> &[u8] {
        (**self).symbol_bytes()
    }
}

fn clean_name(raw: &[u8]) -> std::result::Result<&[u8], ErrorKind> {
    let name = raw.strip_suffix(&[0]).unwrap_or(raw);
    if crate::bytes::has_nul(name) {
        return Err(ErrorKind::InvalidSymbolName {
            name: String::from_utf8_lossy(raw).into_owned(),
        });
    }
    Ok(name)
}

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

    /// Load `path` and its dependencies, and run their constructors.
    ///
    /// # Safety
    /// Loading a library runs its code (constructors, IFUNC resolvers),
    /// which can do anything.
    pub unsafe fn open(&self, path: impl AsRef<Path>) -> Result<Library> {
        let Loaded { root, scope, host } = loader::open(path.as_ref(), self.settings)?;
        let root_path = root.path.clone();
        let host_tables = scope
            .iter()
            .map(|item| match item {
                ScopeItem::Host(h) => h.path_str().and_then(|p| host.index_of(p)),
                ScopeItem::Mapped(_) => None,
            })
            .collect();
        let mut library = Library {
            root,
            scope,
            host,
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
    root: Arc<LoadedObject>,
    scope: Vec<ScopeItem>,
    /// The host's objects as of the load, for lookups in host dependencies.
    host: Arc<HostScope>,
    /// For each scope entry provided by the host, its index in `host`.
    host_tables: Vec<Option<usize>>,
    /// The scope's names hashed once (`None`: some host object's tables
    /// could not be read), built after `index_after` lookups.
    index: OnceLock<Option<ScopeIndex>>,
    lookups: AtomicUsize,
    index_after: usize,
    /// `root.path`, interned so that a failed lookup need not allocate.
    file: &'static Path,
}

/// Where a lookup found its symbol.
enum Found<'a> {
    Mapped(&'a LoadedObject, u32, symbols::Sym),
    Host(&'a HostLibrary, u64),
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Library")
            .field("path", &self.root.path)
            .field("base", &format_args!("{:#x}", self.root.mapping.base()))
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
        let found = self.find(name.symbol_bytes(), Some(version.as_bytes()))?;
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
        Error::new(&self.root.path, stage, kind)
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
                let at = self.host_tables.get(k).copied().flatten()?;
                self.host.objects.get(at).map(|o| &*o.symbols)
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
                ScopeItem::Mapped(obj) => Some(obj.mapping.address_of(sym.value)),
                ScopeItem::Host(_) => {
                    let at = self.host_tables.get(k).copied().flatten()?;
                    let bias = self.host.objects.get(at)?.bias;
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
                    let table = self
                        .host_tables
                        .get(position)
                        .copied()
                        .flatten()
                        .and_then(|k| self.host.objects.get(k));
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
            Found::Mapped(obj, _, sym) => match sym.kind() {
                symbols::STT_GNU_IFUNC
                    if obj.mapping.executable_at(sym.value) && obj.is_initialized() =>
                {
                    // SAFETY: the resolver is in an executable segment of a
                    // loaded, relocated object that `self` keeps alive.
                    unsafe {
                        crate::runtime::call::ifunc_resolver(obj.mapping.address_of(sym.value))
                    }
                }
                symbols::STT_TLS => obj.tls.as_ref().map_or(0, |t| {
                    crate::runtime::tls::address_in_this_thread(t.id, sym.value)
                }),
                _ if sym.shndx == symbols::SHN_ABS => sym.value,
                _ => obj.mapping.address_of(sym.value),
            },
        }
    }

    fn lookup(&self, raw: &[u8], version: Option<&[u8]>) -> Result<SymbolInfo> {
        let found = self.find(raw, version)?;
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
        &self.root.path
    }

    /// `DT_SONAME`, if any.
    pub fn soname(&self) -> Option<&str> {
        self.root.soname.as_deref()
    }

    /// Lowest address of the library's span.
    pub fn base_address(&self) -> u64 {
        self.root.mapping.base()
    }

    /// Difference between process addresses and the file's virtual addresses.
    pub fn load_bias(&self) -> u64 {
        self.root.mapping.bias()
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

    /// Names of dependencies the host provides.
    pub fn host_dependencies(&self) -> Vec<String> {
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
        loader::close(&self.root);
    }
}

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
    fn of(o: &LoadedObject) -> ObjectView {
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
            found_by: o.provenance.to_string(),
        }
    }
}
