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
use crate::loader::{self, HostRoot};
use crate::object::{LoadedObject, ScopeItem};

mod global;
mod names;
mod options;
mod view;

pub use global::lookup_default;
pub use names::SymbolName;
use names::clean_name;
pub use options::OpenOptions;
pub use view::{ObjectView, SegmentView};

/// The kind of a symbol, from its ELF type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymbolKind {
    /// An `STT_FUNC`.
    Function,
    /// An `STT_GNU_IFUNC`: the address is the implementation its resolver chose.
    IndirectFunction,
    /// An `STT_OBJECT` or `STT_COMMON`: data.
    Object,
    /// An `STT_TLS`: the address is this thread's copy.
    ThreadLocal,
    /// Any other type (`STT_NOTYPE`, ...), or a symbol of an object mmld did not map.
    Other,
}

/// What a lookup found.
#[derive(Debug, Clone)]
pub struct SymbolInfo {
    /// The address in this process (for a thread-local symbol, this thread's copy).
    pub address: u64,
    /// `st_size`.
    pub size: u64,
    /// What the symbol is.
    pub kind: SymbolKind,
    /// The object that defines it (soname or file name).
    pub object: String,
    /// `true` when the symbol lies in an executable segment.
    pub in_code: bool,
    /// The version of the definition found, if it has one.
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
    /// What shared relocations did for each object this load mapped.
    sharing: Vec<crate::relshare::SharedRelocations>,
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
    /// What shared relocations ([`OpenOptions::share_relocations`]) did for
    /// each object this load mapped, in load order (the root first). Every
    /// outcome is [`SharingOutcome::Off`](crate::SharingOutcome::Off) when
    /// the feature was off; empty when this handle mapped nothing (a
    /// library already loaded, or the host's copy).
    pub fn relocation_sharing(&self) -> Vec<crate::relshare::SharedRelocations> {
        self.sharing.clone()
    }

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
    /// ```
    /// # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testlibs/libdemo.so");
    /// use std::ffi::{CStr, c_char};
    ///
    /// // SAFETY: libdemo's constructors are sound.
    /// let lib = unsafe { mmld::Library::open(path) }?;
    /// // SAFETY: `greeting` is `const char *greeting(void)`, returning a
    /// // string in the library's read-only data.
    /// let greeting = unsafe { lib.get::<extern "C" fn() -> *const c_char>(c"greeting") }?;
    /// let text = unsafe { CStr::from_ptr(greeting()) };
    /// assert!(!text.to_bytes().is_empty());
    ///
    /// // A name the library does not define is an error, not a null pointer.
    /// let missing = unsafe { lib.get::<extern "C" fn()>("no_such_function") };
    /// assert!(matches!(
    ///     missing.unwrap_err().kind(),
    ///     mmld::ErrorKind::SymbolNotFound { .. }
    /// ));
    /// # Ok::<(), mmld::Error>(())
    /// ```
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
    ///
    /// ```
    /// # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testlibs/libdemo.so");
    /// use mmld::SymbolKind;
    ///
    /// // SAFETY: libdemo's constructors are sound.
    /// let lib = unsafe { mmld::Library::open(path) }?;
    /// let add = lib.symbol_info("add")?;
    /// assert_eq!(add.kind, SymbolKind::Function);
    /// assert!(add.in_code);
    /// assert_eq!(add.object, "libdemo.so");
    /// # Ok::<(), mmld::Error>(())
    /// ```
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
            .map(|k| self.table(k).map_or(0, |t| t.count_estimate() as usize))
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
