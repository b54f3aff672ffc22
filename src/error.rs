//! The library's one error type.
//!
//! Owns: how every failure is named. An [`Error`] always says which file, which
//! pipeline stage and what went wrong, with the offset or index that proves it.
//! Must never: carry a message that could only be understood by reading mmld's
//! source, or lose the underlying `io::Error`.

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The pipeline stage an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Opening the file or searching for it.
    Open,
    /// Parsing and validating headers and the dynamic section.
    Read,
    /// Reserving and mapping the address span.
    Map,
    /// Symbol resolution and relocation.
    Link,
    /// Constructors, destructors and runtime support.
    Run,
    /// Looking up a symbol in a loaded library.
    Lookup,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Open => "open",
            Stage::Read => "read",
            Stage::Map => "map",
            Stage::Link => "link",
            Stage::Run => "run",
            Stage::Lookup => "lookup",
        })
    }
}

/// An error from any stage of loading or using a library.
///
/// The details live behind one allocation, except for the one error on a
/// hot path: a symbol lookup that finds nothing (programs probe for
/// optional symbols). That one keeps the name inline and the file as an
/// interned path, and is spelled out only when someone reads it, so a miss
/// costs no allocation.
pub struct Error(Repr);

enum Repr {
    Full(Box<Details>),
    Missing {
        symbol: MissingSymbol,
        details: OnceLock<Box<Details>>,
    },
}

#[derive(Debug)]
struct Details {
    file: PathBuf,
    stage: Stage,
    kind: ErrorKind,
}

/// Names up to this long stay inline (nearly every C name; long C++ names
/// take one allocation).
const INLINE_NAME: usize = 38;

struct MissingSymbol {
    file: &'static Path,
    name: SymbolBytes,
}

enum SymbolBytes {
    Inline { len: u8, bytes: [u8; INLINE_NAME] },
    Long(Box<[u8]>),
}

impl SymbolBytes {
    fn new(name: &[u8]) -> Self {
        if name.len() > INLINE_NAME {
            return SymbolBytes::Long(name.into());
        }
        let mut bytes = [0; INLINE_NAME];
        crate::bytes::copy_name(&mut bytes, name);
        SymbolBytes::Inline {
            len: name.len() as u8,
            bytes,
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            SymbolBytes::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or(bytes),
            SymbolBytes::Long(b) => b,
        }
    }
}

impl MissingSymbol {
    fn spell_out(&self) -> Box<Details> {
        Box::new(Details {
            file: self.file.to_path_buf(),
            stage: Stage::Lookup,
            kind: ErrorKind::SymbolNotFound {
                name: String::from_utf8_lossy(self.name.as_slice()).into_owned(),
                version: None,
            },
        })
    }
}

/// `path` as a `&'static Path`: one leaked copy per distinct path for the
/// life of the process, so that an error can name its file without
/// allocating. Called once per opened library, never per lookup.
pub(crate) fn interned_path(path: &Path) -> &'static Path {
    static PATHS: Mutex<BTreeSet<&'static Path>> = Mutex::new(BTreeSet::new());
    let mut paths = PATHS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(known) = paths.get(path) {
        return known;
    }
    let leaked: &'static Path = Box::leak(path.to_path_buf().into_boxed_path());
    paths.insert(leaked);
    leaked
}

impl Error {
    pub(crate) fn new(file: impl Into<PathBuf>, stage: Stage, kind: ErrorKind) -> Self {
        Error(Repr::Full(Box::new(Details {
            file: file.into(),
            stage,
            kind,
        })))
    }

    /// An unversioned lookup of `name` (without its NUL, no inner NUL)
    /// found nothing in the library loaded from `file`.
    pub(crate) fn symbol_not_found(file: &'static Path, name: &[u8]) -> Self {
        Error(Repr::Missing {
            symbol: MissingSymbol {
                file,
                name: SymbolBytes::new(name),
            },
            details: OnceLock::new(),
        })
    }

    fn details(&self) -> &Details {
        match &self.0 {
            Repr::Full(d) => d,
            Repr::Missing { symbol, details } => details.get_or_init(|| symbol.spell_out()),
        }
    }

    /// The file the error is about.
    pub fn file(&self) -> &Path {
        &self.details().file
    }

    /// The stage that failed.
    pub fn stage(&self) -> Stage {
        self.details().stage
    }

    /// What went wrong, for matching.
    pub fn kind(&self) -> &ErrorKind {
        &self.details().kind
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("file", &self.file())
            .field("stage", &self.stage())
            .field("kind", self.kind())
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.details();
        write!(f, "{}: {}: {}", d.file.display(), d.stage, d.kind)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self.kind() {
            ErrorKind::Io { source, .. } | ErrorKind::Mmap { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Everything that can go wrong, without the file and stage (see [`Error`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    #[error("{op} failed: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("not a regular file ({what})")]
    NotRegularFile { what: &'static str },
    #[error("file is {len} bytes, too small for an ELF header (64 bytes)")]
    TooSmall { len: u64 },
    #[error("not an ELF file (magic bytes are {magic:02x?}, expected 7f 45 4c 46)")]
    NotElf { magic: [u8; 4] },
    #[error("ELF class {class} is not ELF64 (mmld loads 64-bit objects only)")]
    Not64Bit { class: u8 },
    #[error("ELF data encoding {data} is not little-endian")]
    NotLittleEndian { data: u8 },
    #[error("ELF version {version} is not EV_CURRENT (1)")]
    BadVersion { version: u32 },
    #[error("machine {machine} ({name}) is not x86_64 (62)")]
    WrongMachine { machine: u16, name: &'static str },
    #[error("ELF type {e_type} ({name}) is not ET_DYN: only shared objects can be loaded")]
    NotSharedObject { e_type: u16, name: &'static str },
    #[error("bad ELF header: {0}")]
    BadHeader(String),
    #[error(
        "program header table ({count} entries at offset {offset:#x}) lies outside the file ({file_len} bytes)"
    )]
    ProgramHeadersOutOfFile {
        offset: u64,
        count: u16,
        file_len: u64,
    },
    #[error("no PT_LOAD segment: nothing to map")]
    NoLoadSegments,
    #[error(
        "segment {index} (PT_LOAD) file range {offset:#x}..{end:#x} lies outside the file ({file_len} bytes)"
    )]
    SegmentOutOfFile {
        index: usize,
        offset: u64,
        end: u64,
        file_len: u64,
    },
    #[error("segment {index}: p_filesz {filesz:#x} is larger than p_memsz {memsz:#x}")]
    FileSizeExceedsMemSize {
        index: usize,
        filesz: u64,
        memsz: u64,
    },
    #[error(
        "segment {index}: p_offset {offset:#x} and p_vaddr {vaddr:#x} differ modulo the page size (4096)"
    )]
    MisalignedSegment {
        index: usize,
        offset: u64,
        vaddr: u64,
    },
    #[error("segment {index}: p_align {align:#x} is not zero or a power of two")]
    BadAlignment { index: usize, align: u64 },
    #[error(
        "segment {index} (PT_LOAD at {vaddr:#x}) overlaps or precedes the previous PT_LOAD (ending at {previous_end:#x}); PT_LOADs must be sorted and disjoint"
    )]
    SegmentsOverlap {
        index: usize,
        vaddr: u64,
        previous_end: u64,
    },
    #[error(
        "segment {index}: address range {vaddr:#x} + {memsz:#x} is too large (limit {limit:#x})"
    )]
    SegmentTooLarge {
        index: usize,
        vaddr: u64,
        memsz: u64,
        limit: u64,
    },
    #[error(
        "segment {index} is both writable and executable (refused by policy; allow with OpenOptions::allow_writable_executable)"
    )]
    WritableExecutable { index: usize },
    #[error(
        "object asks for an executable stack (PT_GNU_STACK has PF_X); refused by policy (allow with OpenOptions::allow_executable_stack)"
    )]
    ExecutableStack,
    #[error(
        "object has text relocations (DT_TEXTREL); refused by policy (allow with OpenOptions::allow_text_relocations)"
    )]
    TextRelocations,
    #[error(
        "segment {index} (PT_LOAD at {vaddr:#x}) shares the page at {page:#x} with segment {previous}; mmld maps whole pages, so PT_LOADs must not share one"
    )]
    SegmentsSharePage {
        index: usize,
        previous: usize,
        vaddr: u64,
        page: u64,
    },
    #[error("PT_GNU_RELRO ({vaddr:#x}..{end:#x}) does not lie inside one writable PT_LOAD")]
    RelroNotWritable { vaddr: u64, end: u64 },
    #[error("no PT_DYNAMIC segment: not a dynamically loadable object")]
    NoDynamic,
    #[error(
        "PT_DYNAMIC ({vaddr:#x}, {size:#x} bytes) does not lie inside the file part of a PT_LOAD"
    )]
    DynamicOutsideImage { vaddr: u64, size: u64 },
    #[error("dynamic entry {tag} points to {addr:#x}..{end:#x}, outside every PT_LOAD")]
    TableOutsideImage {
        tag: &'static str,
        addr: u64,
        end: u64,
    },
    #[error(
        "{tag} ({addr:#x}..{end:#x}) runs past the end of the file-backed part of its segment at {segment_end:#x}"
    )]
    TableOverrunsSegment {
        tag: &'static str,
        addr: u64,
        end: u64,
        segment_end: u64,
    },
    #[error(
        "dynamic entry {tag} at {addr:#x} lies in a writable segment; mmld requires it read-only"
    )]
    TableInWritableSegment { tag: &'static str, addr: u64 },
    #[error("{tag} is missing but {needed_by} needs it")]
    MissingDynamicEntry {
        tag: &'static str,
        needed_by: &'static str,
    },
    #[error("{what} has entry size {found}, expected {expected}")]
    BadEntrySize {
        what: &'static str,
        found: u64,
        expected: u64,
    },
    #[error("{what} size {size:#x} is not a multiple of {unit}")]
    BadTableSize {
        what: &'static str,
        size: u64,
        unit: u64,
    },
    #[error(
        "string at offset {offset:#x} is outside .dynstr ({size:#x} bytes) or has no NUL terminator"
    )]
    BadString { offset: u64, size: u64 },
    #[error("malformed {table}: {detail}")]
    MalformedTable { table: &'static str, detail: String },
    #[error("{table} has zero hash buckets")]
    EmptyHashTable { table: &'static str },
    #[error("{table}: the hash chain starting at symbol {start} never ends ({detail})")]
    EndlessHashChain {
        table: &'static str,
        start: u32,
        detail: String,
    },
    #[error("no symbol hash table (neither DT_GNU_HASH nor DT_HASH)")]
    NoHashTable,
    #[error("symbol {name} is defined at {value:#x}, outside every PT_LOAD segment of its object")]
    SymbolOutsideObject { name: String, value: u64 },
    #[error(
        "{what} has {count} entries, more than the {limit} mmld accepts (no real library comes near)"
    )]
    LimitExceeded {
        what: &'static str,
        count: u64,
        limit: u64,
    },
    #[error(
        "relocation {index} in {table} at offset {offset:#x} refers to symbol index {symbol}, but .dynsym has {count} entries"
    )]
    SymbolIndexOutOfRange {
        table: &'static str,
        index: usize,
        offset: u64,
        symbol: u32,
        count: u32,
    },
    #[error(
        "relocation {index} in {table} has unsupported type {rtype} ({name}) at offset {offset:#x}"
    )]
    UnsupportedRelocation {
        table: &'static str,
        index: usize,
        rtype: u32,
        name: &'static str,
        offset: u64,
    },
    #[error(
        "relocation {index} in {table} writes {width} bytes at {offset:#x}, outside every writable segment"
    )]
    RelocationOutOfBounds {
        table: &'static str,
        index: usize,
        offset: u64,
        width: u64,
    },
    #[error("undefined symbol {name}{}{}", version.as_deref().map(|v| format!("@{v}")).unwrap_or_default(), referenced_by.as_deref().map(|r| format!(" (referenced by {r})")).unwrap_or_default())]
    UnresolvedSymbol {
        name: String,
        version: Option<String>,
        referenced_by: Option<String>,
    },
    #[error("{count} undefined symbols: {}", names.join(", "))]
    UnresolvedSymbols { count: usize, names: Vec<String> },
    #[error("symbol {name}{} not found", version.as_deref().map(|v| format!("@{v}")).unwrap_or_default())]
    SymbolNotFound {
        name: String,
        version: Option<String>,
    },
    #[error("symbol name {name:?} contains a NUL byte before its end")]
    InvalidSymbolName { name: String },
    #[error("requested type is {requested} bytes, but a symbol is a {pointer}-byte address")]
    SymbolSizeMismatch { requested: usize, pointer: usize },
    #[error("{what} at {addr:#x} does not point into an executable segment of this object")]
    BadCodePointer { what: String, addr: u64 },
    #[error("unsupported thread-local storage: {detail}")]
    TlsUnsupported { detail: String },
    #[error(
        "cannot allocate memory in static TLS block: {size} bytes aligned to {align} do not fit in what is left of glibc's static TLS surplus (glibc: {glibc}); start the program with GLIBC_TUNABLES=glibc.rtld.optional_static_tls=N to reserve N bytes instead of the default 512 (for this block alone, N={})", (size + align + 1024).next_multiple_of(1024)
    )]
    StaticTlsExhausted {
        size: u64,
        align: u64,
        glibc: String,
    },
    #[error("{what}: {source}")]
    Mmap {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot find {name} (needed by {needed_by}); searched: {}",
        if searched.is_empty() { "nothing (no search directories)".to_string() } else { searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ") }
    )]
    MissingDependency {
        name: String,
        needed_by: String,
        searched: Vec<PathBuf>,
    },
    #[error(
        "cannot dynamically load position-independent executable (DF_1_PIE): an executable is started by the kernel, not loaded as a library"
    )]
    PositionIndependentExecutable,
    #[error(
        "not loaded (OpenOptions::no_load, like RTLD_NOLOAD, opens only a library already loaded)"
    )]
    NotLoaded,
    #[error(
        "cannot find {name}; searched: {}",
        if searched.is_empty() { "nothing (no search directories)".to_string() } else { searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ") }
    )]
    LibraryNotFound {
        name: String,
        searched: Vec<PathBuf>,
    },
    #[error("{0}")]
    Other(String),
}

/// Shorthand used inside the stages, before the file and stage are attached.
pub(crate) type KindResult<T> = std::result::Result<T, ErrorKind>;

/// The library's result type.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) trait AttachContext<T> {
    fn at(self, file: &Path, stage: Stage) -> Result<T>;
}

impl<T> AttachContext<T> for KindResult<T> {
    fn at(self, file: &Path, stage: Stage) -> Result<T> {
        self.map_err(|kind| Error::new(file, stage, kind))
    }
}
