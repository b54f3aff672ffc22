//! The host's objects as symbol tables mmld can search itself.
//!
//! Owns: finding the objects glibc loaded (`dl_iterate_phdr`), reading their
//! hash, symbol and version tables in place, and deciding which are in the
//! global scope. Asking glibc (`dlsym`) instead costs far more for a miss
//! than for a hit (glibc formats an error message for every miss), and most
//! lookups of a load miss the host: they are the library's own symbols.
//! Must never: write to a host object, or read one without holding a
//! reference on it: another thread of the host may `dlclose` it at any
//! moment. Every object of a snapshot is held (`hostref`) from before its
//! tables are first read until the last user of the snapshot drops it; the
//! process-wide cache keeps no reference of its own, so once mmld is done
//! with a snapshot the host is free to unload its libraries again.

use std::ffi::{CStr, CString};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::hostdynamic::read_dynamic;
use super::hostref::{self, HostRef};
use super::scopefilter::{self, ScopeFilter};
use super::startup;
use super::symbols::{self, Request, Sym, SymbolTable};
use crate::elf::Segment;
use crate::host;
use crate::map::Mapping;

/// One object the host loaded.
pub struct HostObject {
    /// `dlpi_name`: a path, or empty for the executable.
    pub name: String,
    pub bias: u64,
    /// Shared with later snapshots while the object stays loaded.
    pub symbols: Arc<SymbolTable>,
    /// Its program headers as `dl_iterate_phdr` gave them, to recognise
    /// the same object in a later snapshot.
    phdrs: Vec<libc::Elf64_Phdr>,
    /// In the global scope (what `dlsym(RTLD_DEFAULT)` searches).
    pub global: bool,
    /// `DT_SONAME`, if it has one.
    pub soname: Option<String>,
    /// `DT_RPATH` and `DT_RUNPATH` as written (for the executable, whose
    /// paths a `dlopen` by name searches).
    pub rpath: Option<String>,
    pub runpath: Option<String>,
    /// The file's device and inode, read once when first asked for.
    file: OnceLock<Option<(u64, u64)>>,
    /// Keeps the object loaded while this snapshot, or an mmld object that
    /// bound a symbol into it, lives.
    pub hold: Arc<HostRef>,
}

impl HostObject {
    /// Lowest address of its first segment.
    pub fn base(&self) -> u64 {
        let first = self
            .phdrs
            .iter()
            .filter(|p| p.p_type == libc::PT_LOAD)
            .map(|p| p.p_vaddr)
            .min()
            .unwrap_or(0);
        self.bias.wrapping_add(first & !0xfff)
    }

    /// Does the process address `addr` lie in one of its executable
    /// segments?
    pub fn in_code(&self, addr: u64) -> bool {
        self.phdrs.iter().any(|p| {
            let start = self.bias.wrapping_add(p.p_vaddr);
            p.p_type == libc::PT_LOAD
                && p.p_flags & libc::PF_X != 0
                && addr >= start
                && addr - start < p.p_memsz
        })
    }

    /// Are its loadable segments exactly `segments` (a file's, as `elf`
    /// plans them)? A file loaded by glibc has the program headers it has
    /// on disk.
    fn same_segments(&self, segments: &[Segment]) -> bool {
        let mine = self
            .phdrs
            .iter()
            .filter(|p| p.p_type == libc::PT_LOAD && p.p_memsz > 0);
        let theirs = segments.iter().filter(|s| s.memsz > 0);
        // As sets: the plan orders segments by address, glibc lists them
        // as the file does.
        mine.clone().count() == theirs.clone().count()
            && mine.into_iter().all(|p| {
                theirs.clone().any(|s| {
                    (p.p_vaddr, p.p_memsz, p.p_offset, p.p_filesz, p.p_flags)
                        == (s.vaddr, s.memsz, s.offset, s.filesz, s.flags)
                })
            })
    }

    /// The `(device, inode)` of the file it was loaded from: one file is
    /// one object, whatever path names it. `None` for the executable and
    /// the vDSO (never a library to reuse) or a file gone from its path.
    pub fn file_id(&self) -> Option<(u64, u64)> {
        *self.file.get_or_init(|| {
            use std::os::unix::fs::MetadataExt;
            if !self.name.starts_with('/') {
                return None;
            }
            let m = std::fs::metadata(&self.name).ok()?;
            Some((m.dev(), m.ino()))
        })
    }

    /// Look `req` up in this object only. `Some(addr)` when found; IFUNC
    /// and TLS definitions are resolved by glibc (for the calling thread).
    pub fn lookup(&self, req: &Request<'_>) -> Option<u64> {
        let (_, sym) = self.symbols.lookup(req)?;
        Some(self.address_of(req, &sym))
    }

    fn address_of(&self, req: &Request<'_>, sym: &Sym) -> u64 {
        match sym.kind() {
            symbols::STT_GNU_IFUNC if self.in_code(self.bias.wrapping_add(sym.value)) => {
                let resolver = self.bias.wrapping_add(sym.value);
                // SAFETY: `resolver` lies in an executable segment of this
                // object, which glibc loaded and relocated and which the
                // snapshot holds; glibc's `dlsym` calls it the same way
                // (x86-64 resolvers take no arguments).
                unsafe { crate::runtime::call::ifunc_resolver(resolver) }
            }
            symbols::STT_GNU_IFUNC | symbols::STT_TLS => {
                // glibc knows this thread's TLS block of the object.
                let version = req.version.map(|v| v.name);
                with_c_name(req.name, |n| match version {
                    Some(v) => with_c_name(v, |v| host::global_symbol(n, Some(v))).flatten(),
                    None => host::global_symbol(n, None),
                })
                .flatten()
                .unwrap_or_else(|| self.bias.wrapping_add(sym.value))
            }
            _ if sym.shndx == symbols::SHN_ABS => sym.value,
            _ => self.bias.wrapping_add(sym.value),
        }
    }
}

/// The host's objects in load order.
pub struct HostScope {
    /// Shared with the libraries that keep one for lookups in their host
    /// dependencies.
    pub objects: Vec<Arc<HostObject>>,
    /// Built once loads have made enough global probes to pay for it, and
    /// kept for later snapshots of the same global scope (`None` inside:
    /// some global object has no GNU hash table).
    filter: OnceLock<Option<Arc<ScopeFilter>>>,
    /// Some object could not be read: global lookups must ask glibc.
    pub incomplete: bool,
    generation: (u64, u64),
}

impl HostScope {
    fn global_tables(&self) -> impl Iterator<Item = &Arc<SymbolTable>> + Clone {
        self.objects.iter().filter(|o| o.global).map(|o| &o.symbols)
    }

    /// A load is about to make about `probes` global lookups.
    pub fn expect_global_probes(&self, probes: usize) {
        let filter = scopefilter::for_scope(self.global_tables(), probes);
        if let Some(f) = filter {
            let _ = self.filter.set(f);
        }
    }

    /// Search the global scope in order.
    pub fn lookup_global(&self, req: &Request<'_>) -> Option<u64> {
        if let Some(Some(f)) = self.filter.get()
            && !f.may_contain(req.gnu_hash)
        {
            return None;
        }
        self.objects
            .iter()
            .filter(|o| o.global && !o.symbols.bloom_excludes(req.gnu_hash))
            .find_map(|o| o.lookup(req))
    }

    /// The object loaded from `path` (as glibc names it).
    pub fn object_named(&self, path: &str) -> Option<&HostObject> {
        self.objects.iter().find(|o| o.name == path).map(|o| &**o)
    }

    /// The object the host loaded under the `DT_NEEDED` name `needed`
    /// (its soname, or its file name), found without touching the file
    /// system: glibc's `RTLD_NOLOAD` probe searches for and opens the file
    /// even when nothing is loaded under that name.
    pub fn loaded_as(&self, needed: &str) -> Option<&HostObject> {
        self.objects
            .iter()
            .find(|o| {
                o.name.starts_with('/')
                    && (o.soname.as_deref() == Some(needed)
                        || o.name.rsplit('/').next() == Some(needed))
            })
            .map(|o| &**o)
    }

    /// The object loaded from `elf`'s file (its device and inode). Only
    /// objects with the same loadable segments as `elf` can be that file,
    /// so only those are asked for their identity (a `statx` each, the
    /// first time): a load that reuses nothing of the host stats nothing.
    pub fn object_with_file(&self, elf: &crate::elf::ElfFile) -> Option<&HostObject> {
        self.objects
            .iter()
            .find(|o| {
                o.same_segments(&elf.plan.segments) && o.file_id() == Some((elf.dev, elf.ino))
            })
            .map(|o| &**o)
    }

    /// The object loaded from `path`, for callers that keep it.
    pub fn shared(&self, path: &str) -> Option<Arc<HostObject>> {
        self.objects.iter().find(|o| o.name == path).cloned()
    }

    /// The object holding process address `addr`, with the span of its
    /// segments: an mmld object that bound a symbol there keeps it loaded
    /// as long as it lives (glibc's relocation dependencies).
    fn holder_of(&self, addr: u64) -> Option<((u64, u64), Arc<HostRef>)> {
        self.objects.iter().find_map(|o| {
            let loads = o.phdrs.iter().filter(|p| p.p_type == libc::PT_LOAD);
            let start = loads.clone().map(|p| p.p_vaddr).min()?;
            let end = loads.map(|p| p.p_vaddr.saturating_add(p.p_memsz)).max()?;
            let span = (o.bias.wrapping_add(start), o.bias.wrapping_add(end));
            (addr >= span.0 && addr < span.1).then(|| (span, Arc::clone(&o.hold)))
        })
    }
}

struct Raw {
    /// `dlpi_name` as glibc spells it, to take a reference by (the one copy
    /// of the name a listing makes).
    c_name: CString,
    bias: u64,
    phdrs: Vec<libc::Elf64_Phdr>,
}

impl Raw {
    fn same_object(&self, other: &Raw) -> bool {
        self.c_name == other.c_name
            && self.bias == other.bias
            && same_phdrs(&self.phdrs, &other.phdrs)
    }
}

fn iterate() -> ((u64, u64), Vec<Raw>) {
    let mut generation = (0, 0);
    let mut raws = Vec::new();
    host::each_host_object(|o| {
        generation = o.generation;
        // Only copies: nothing here may call back into glibc's loader.
        raws.push(Raw {
            c_name: o.name.to_owned(),
            bias: o.bias,
            phdrs: o.phdrs.to_vec(),
        });
        false
    });
    (generation, raws)
}

/// glibc's load and unload counters, read from the first object only.
fn current_generation() -> (u64, u64) {
    let mut generation = (0, 0);
    host::each_host_object(|o| {
        generation = o.generation;
        true
    });
    generation
}

/// What the process-wide cache remembers between loads.
struct Cache {
    /// The snapshot some load or library still uses (and so still holds).
    live: Weak<HostScope>,
    /// Tables read before, for objects loaded again at the same address
    /// with the same program headers. Never read unless the object has
    /// been found loaded and held again.
    known: Vec<Known>,
}

struct Known {
    name: String,
    bias: u64,
    phdrs: Vec<libc::Elf64_Phdr>,
    symbols: Arc<SymbolTable>,
    soname: Option<String>,
    rpath: Option<String>,
    runpath: Option<String>,
    file: OnceLock<Option<(u64, u64)>>,
    global: bool,
}

/// The host scope, rebuilt when the host has loaded or unloaded anything
/// since it was last read (glibc's `dlpi_adds`/`dlpi_subs` counters) or
/// when nobody holds the last snapshot any more. Objects still loaded at
/// the same address with the same program headers keep the tables read
/// last time: a library whose host dependency (libm for libsqlite3) comes
/// and goes with each load then costs one table, not all of them.
pub fn host_scope() -> Arc<HostScope> {
    static CACHE: Mutex<Cache> = Mutex::new(Cache {
        live: Weak::new(),
        known: Vec::new(),
    });
    let lock = || CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let (live, known) = {
        let mut c = lock();
        (c.live.upgrade(), std::mem::take(&mut c.known))
    };
    // glibc's counters are read only when there is a snapshot to keep:
    // each `dl_iterate_phdr` costs about 1,400 instructions.
    if let Some(s) = live
        && s.generation == current_generation()
    {
        lock().known = known;
        return s;
    }
    // Built without holding the cache: taking references and reading the
    // tables ask glibc (`dlopen`, `dlsym`), which takes its loader lock,
    // and a constructor running under that lock may be loading with mmld.
    let scope = Arc::new(snapshot(&known));
    let mut c = lock();
    c.live = Arc::downgrade(&scope);
    c.known = scope
        .objects
        .iter()
        .map(|o| Known {
            name: o.name.clone(),
            bias: o.bias,
            phdrs: o.phdrs.clone(),
            symbols: Arc::clone(&o.symbols),
            soname: o.soname.clone(),
            rpath: o.rpath.clone(),
            runpath: o.runpath.clone(),
            file: o.file.clone(),
            global: o.global,
        })
        .collect();
    scope
}

/// List the host's objects and hold each before reading anything of it.
/// If glibc's counters did not move between the listing and the last
/// reference, every object listed is the one held. Otherwise an object may
/// have gone, or another may sit at its address: then only objects held
/// and listed again unchanged are kept.
fn snapshot(known: &[Known]) -> HostScope {
    let (generation, raws) = iterate();
    let mut raws = raws.into_iter().peekable();
    // Start-up objects need no reference: read the first time by the walk
    // that finds them, and counted from then on.
    let (startup, ready) = match startup::known_count() {
        Some(n) => (n, Vec::new()),
        None => walk_startup(&mut raws),
    };
    let first = ready.len();
    let raws: Vec<Raw> = raws.collect();
    let holds: Vec<Option<HostRef>> = raws
        .iter()
        .enumerate()
        .map(|(i, raw)| hold(raw, first + i, first + i < startup))
        .collect();
    // Only a reference taken on an object that may come and go needs the
    // counters read again: a start-up or permanent object stays put.
    let all_permanent = holds.iter().flatten().all(HostRef::is_permanent);
    let entries: Vec<(Raw, HostRef)> = if all_permanent || current_generation() == generation {
        raws.into_iter()
            .zip(holds)
            .filter_map(|(r, h)| Some((r, h?)))
            .collect()
    } else {
        let (_, again) = iterate();
        raws.into_iter()
            .zip(holds)
            .filter(|(r, _)| again.iter().any(|a| a.same_object(r)))
            .filter_map(|(r, h)| Some((r, h?)))
            .collect()
    };
    build(
        Built {
            generation,
            startup,
            ready,
        },
        entries,
        known,
    )
}

/// Read the start-up objects at the head of the listing (`startup`), and
/// remember how many there are for the rest of the process.
fn walk_startup(
    raws: &mut std::iter::Peekable<std::vec::IntoIter<Raw>>,
) -> (usize, Vec<HostObject>) {
    let mut walk = startup::Walk::default();
    let mut objects = Vec::new();
    while let Some(raw) = raws.peek() {
        let index = objects.len();
        let permanent = || hostref::is_permanent(raw.bias, &raw.phdrs);
        if !walk.admits(index, raw.c_name.to_bytes(), permanent) {
            break;
        }
        let Some(raw) = raws.next() else { break };
        let hold = Arc::new(HostRef::permanent());
        match read_object(raw, index, hold, Some(&mut walk)) {
            Some(o) => objects.push(o),
            // Unreadable: it and what follows go the careful way (and are
            // read no more successfully there).
            None => break,
        }
    }
    let count = startup::set_count(objects.len());
    objects.truncate(count);
    (count, objects)
}

/// A reference that keeps `raw` loaded, if it is still loaded.
fn hold(raw: &Raw, index: usize, startup: bool) -> Option<HostRef> {
    if index == 0 || startup || hostref::is_permanent(raw.bias, &raw.phdrs) {
        return Some(HostRef::permanent());
    }
    if raw.c_name.is_empty() {
        return None;
    }
    HostRef::take(&raw.c_name, raw.bias)
}

/// What `build` starts from besides the held objects.
struct Built {
    generation: (u64, u64),
    /// How many objects at the head of the listing were loaded at start-up.
    startup: usize,
    /// The first objects, already read.
    ready: Vec<HostObject>,
}

fn build(built: Built, entries: Vec<(Raw, HostRef)>, known: &[Known]) -> HostScope {
    let Built {
        generation,
        startup,
        ready,
    } = built;
    let first = ready.len();
    let mut objects = Vec::with_capacity(first + entries.len());
    objects.extend(ready.into_iter().map(Arc::new));
    let mut incomplete = false;
    for (i, (raw, held)) in entries.into_iter().enumerate() {
        let index = first + i;
        let previous = known.iter().find(|o| {
            o.name.as_bytes() == raw.c_name.to_bytes()
                && o.bias == raw.bias
                && same_phdrs(&o.phdrs, &raw.phdrs)
        });
        let hold = Arc::new(held);
        let object = match previous {
            // SAFETY (of the shared table's borrowed bytes): the object is
            // loaded and held now, at the same address with the same
            // segments, so every byte the table reads is mapped as before.
            Some(o) => Some(HostObject {
                name: o.name.clone(),
                bias: raw.bias,
                symbols: Arc::clone(&o.symbols),
                phdrs: raw.phdrs,
                // An object only ever joins the global scope while loaded
                // (a start-up object was found global when first read).
                global: o.global || probe_global(&o.symbols, raw.bias),
                soname: o.soname.clone(),
                rpath: o.rpath.clone(),
                runpath: o.runpath.clone(),
                file: o.file.clone(),
                hold,
            }),
            None if index < startup => {
                read_object(raw, index, hold, Some(&mut startup::Walk::default()))
            }
            None => read_object(raw, index, hold, None),
        };
        match object {
            Some(o) => objects.push(Arc::new(o)),
            None => incomplete = true,
        }
    }
    HostScope {
        objects,
        filter: OnceLock::new(),
        incomplete,
        generation,
    }
}

fn same_phdrs(a: &[libc::Elf64_Phdr], b: &[libc::Elf64_Phdr]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            (
                x.p_type, x.p_flags, x.p_offset, x.p_vaddr, x.p_filesz, x.p_memsz,
            ) == (
                y.p_type, y.p_flags, y.p_offset, y.p_vaddr, y.p_filesz, y.p_memsz,
            )
        })
}

/// Read one object's tables. `walk` is given for a start-up object (one
/// glibc never unloads, always global), and learns the names it needs.
fn read_object(
    raw: Raw,
    index: usize,
    hold: Arc<HostRef>,
    walk: Option<&mut startup::Walk>,
) -> Option<HostObject> {
    let segments: Vec<Segment> = raw
        .phdrs
        .iter()
        .enumerate()
        .filter(|(_, p)| p.p_type == libc::PT_LOAD && p.p_memsz > 0)
        .map(|(index, p)| Segment {
            index,
            vaddr: p.p_vaddr,
            memsz: p.p_memsz,
            offset: p.p_offset,
            filesz: p.p_filesz,
            flags: p.p_flags,
            align: p.p_align,
        })
        .collect();
    let dynamic_phdr = raw.phdrs.iter().find(|p| p.p_type == libc::PT_DYNAMIC)?;
    // SAFETY: glibc mapped this object with these segments, and `hold` keeps
    // it mapped for as long as this table is used: the table lives in the
    // snapshot that owns `hold` (or in the cache, which reads it again only
    // after holding the same object again).
    let mapping = unsafe { Mapping::borrow_host(raw.bias, &segments) }?;
    let dynamic = read_dynamic(
        &mapping,
        dynamic_phdr.p_vaddr,
        dynamic_phdr.p_memsz,
        raw.bias,
        walk.is_some(),
    )?;
    let names = (dynamic.soname, dynamic.rpath, dynamic.runpath);
    let needed = dynamic.needed.clone();
    // Located, not read through: a load reads only what its lookups touch.
    let symbols = SymbolTable::in_place(mapping, dynamic).ok()?;
    let string = |off: Option<u64>| {
        off.and_then(|o| symbols.string(o).ok())
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };
    let (soname, rpath, runpath) = (string(names.0), string(names.1), string(names.2));
    let startup = walk.is_some();
    if let Some(walk) = walk {
        if let Some(s) = &soname {
            walk.answer(s.as_bytes());
        }
        for name in needed.iter().filter_map(|&o| symbols.string(o).ok()) {
            walk.needs(name);
        }
    }
    // The executable, the C library and the dynamic linker are in the
    // global scope of every dynamically linked process, and so is every
    // start-up object but the vDSO: no need to ask.
    let global = index == 0
        || (startup && !hostref::is_vdso(raw.bias, &raw.phdrs))
        || hostref::is_libc_or_interpreter(raw.bias, &raw.phdrs)
        || probe_global(&symbols, raw.bias);
    Some(HostObject {
        name: raw.c_name.to_string_lossy().into_owned(),
        bias: raw.bias,
        symbols: Arc::new(symbols),
        phdrs: raw.phdrs,
        global,
        soname,
        rpath,
        runpath,
        file: OnceLock::new(),
        hold,
    })
}

/// Is this object in the global scope? glibc does not say, so ask it about
/// a few of the object's own symbols: if `dlsym(RTLD_DEFAULT)` returns this
/// object's definition, the object is searched; if it finds nothing, the
/// object is not. A symbol an earlier object interposes tells nothing.
fn probe_global(table: &SymbolTable, bias: u64) -> bool {
    let mut probes = 0;
    let mut answer = None;
    // Symbols the hash chains reach: no count of the table needed.
    table.visit_hashed(|_, sym| {
        if !matches!(sym.kind(), symbols::STT_FUNC | symbols::STT_OBJECT) || sym.value == 0 {
            return false;
        }
        let Ok(name) = table.symbol_name(sym) else {
            return false;
        };
        probes += 1;
        let found = with_c_name(name, |c| host::global_symbol(c, None)).flatten();
        match found {
            None => answer = Some(false),
            Some(addr) if addr == bias.wrapping_add(sym.value) => answer = Some(true),
            Some(_) => {}
        }
        answer.is_some() || probes >= 8
    });
    // Undecided (every probe interposed): searching it too is harmless for
    // those names.
    answer.unwrap_or(true)
}

/// Call `f` with `name` as a C string, built on the stack when it fits:
/// host lookups through glibc need one, and a heap `CString` per lookup
/// was most of their cost on our side. `None` if `name` holds a NUL.
fn with_c_name<R>(name: &[u8], f: impl FnOnce(&CStr) -> R) -> Option<R> {
    let mut buf = [0u8; 128];
    match buf.get_mut(..name.len()) {
        Some(head) => {
            head.copy_from_slice(name);
            let c = CStr::from_bytes_until_nul(&buf).ok()?;
            (c.to_bytes().len() == name.len()).then(|| f(c))
        }
        None => CString::new(name).ok().map(|c| f(&c)),
    }
}

/// The host objects one mmld object bound symbols into, each once.
#[derive(Default)]
pub struct HoldSet {
    /// Each held object with its span: most bindings of a load go to the
    /// same few objects (libc), found here without searching the scope.
    holds: Vec<((u64, u64), Arc<HostRef>)>,
}

impl HoldSet {
    /// Record a binding of `name` (at `version`) to process address `addr`
    /// in the host's global scope.
    pub fn add(&mut self, scope: &HostScope, addr: u64, name: &[u8], version: Option<&[u8]>) {
        if self.holds.iter().any(|((s, e), _)| addr >= *s && addr < *e) {
            return;
        }
        if let Some(found) = scope.holder_of(addr) {
            self.holds.push(found);
            return;
        }
        // A thread-local variable's address lies in a TLS block, not in
        // its object: hold the object whose table defines the name.
        let req = Request::new(name, version);
        if let Some(o) = scope
            .objects
            .iter()
            .filter(|o| o.global)
            .find(|o| o.symbols.lookup(&req).is_some())
            && !self.holds.iter().any(|(_, h)| Arc::ptr_eq(h, &o.hold))
        {
            self.holds.push(((0, 0), Arc::clone(&o.hold)));
        }
    }

    pub fn into_vec(self) -> Vec<Arc<HostRef>> {
        self.holds.into_iter().map(|(_, h)| h).collect()
    }
}
