//! [`ErrorKind`]: every way a load or a lookup can fail, each variant with
//! the message it prints and the fields that prove it.
//!
//! Owns: the list of failures and their wording. Must never: name a cause
//! without the offset, index or name that lets a reader check it.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong, without the file and stage (see [`Error`](super::Error)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A system call on the file failed (opening, reading, `fstat`, ...).
    #[error("{op} failed: {source}")]
    Io {
        /// The operation that failed.
        op: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The path names something other than a regular file (a directory, a device, a FIFO).
    #[error("not a regular file ({what})")]
    NotRegularFile {
        /// What the path names instead.
        what: &'static str,
    },
    /// The file is shorter than an ELF header.
    #[error("file is {len} bytes, too small for an ELF header (64 bytes)")]
    TooSmall {
        /// The file's length in bytes.
        len: u64,
    },
    /// The file does not start with the ELF magic bytes.
    #[error("not an ELF file (magic bytes are {magic:02x?}, expected 7f 45 4c 46)")]
    NotElf {
        /// The file's first four bytes.
        magic: [u8; 4],
    },
    /// The file is a 32-bit (or unknown class) ELF object; mmld loads ELF64 only.
    #[error("ELF class {class} is not ELF64 (mmld loads 64-bit objects only)")]
    Not64Bit {
        /// The `EI_CLASS` byte.
        class: u8,
    },
    /// The file is big-endian (or of unknown encoding); x86-64 is little-endian.
    #[error("ELF data encoding {data} is not little-endian")]
    NotLittleEndian {
        /// The `EI_DATA` byte.
        data: u8,
    },
    /// The ELF identification names a version other than `EV_CURRENT`.
    #[error("ELF version {version} is not EV_CURRENT (1)")]
    BadVersion {
        /// The version found.
        version: u32,
    },
    /// The object is built for another architecture than x86-64.
    #[error("machine {machine} ({name}) is not x86_64 (62)")]
    WrongMachine {
        /// The `e_machine` value.
        machine: u16,
        /// The machine's name, where known.
        name: &'static str,
    },
    /// The object is not `ET_DYN` (an executable, a relocatable `.o`, a core file), or is a position-independent executable, which `dlopen` refuses too.
    #[error("ELF type {e_type} ({name}) is not ET_DYN: only shared objects can be loaded")]
    NotSharedObject {
        /// The `e_type` value.
        e_type: u16,
        /// The type's name (`ET_EXEC`, `ET_REL`, ...).
        name: &'static str,
    },
    /// The ELF header is malformed in a way the other variants do not name.
    #[error("bad ELF header: {0}")]
    BadHeader(String),
    /// The program header table lies (partly) outside the file.
    #[error(
        "program header table ({count} entries at offset {offset:#x}) lies outside the file ({file_len} bytes)"
    )]
    ProgramHeadersOutOfFile {
        /// The table's file offset.
        offset: u64,
        /// Entries in the table.
        count: u16,
        /// The file's length in bytes.
        file_len: u64,
    },
    /// The object has no `PT_LOAD` segment.
    #[error("no PT_LOAD segment: nothing to map")]
    NoLoadSegments,
    /// A `PT_LOAD` segment's file bytes lie (partly) outside the file.
    #[error(
        "segment {index} (PT_LOAD) file range {offset:#x}..{end:#x} lies outside the file ({file_len} bytes)"
    )]
    SegmentOutOfFile {
        /// The segment's index among the program headers.
        index: usize,
        /// Start of the file range.
        offset: u64,
        /// End of the file range.
        end: u64,
        /// The file's length in bytes.
        file_len: u64,
    },
    /// A segment claims more file bytes than memory bytes.
    #[error("segment {index}: p_filesz {filesz:#x} is larger than p_memsz {memsz:#x}")]
    FileSizeExceedsMemSize {
        /// The segment's index among the program headers.
        index: usize,
        /// `p_filesz`.
        filesz: u64,
        /// `p_memsz`.
        memsz: u64,
    },
    /// A segment's file offset and address are not congruent modulo the page size, so it cannot be mapped.
    #[error(
        "segment {index}: p_offset {offset:#x} and p_vaddr {vaddr:#x} differ modulo the page size (4096)"
    )]
    MisalignedSegment {
        /// The segment's index among the program headers.
        index: usize,
        /// `p_offset`.
        offset: u64,
        /// `p_vaddr`.
        vaddr: u64,
    },
    /// A segment's `p_align` is not zero or a power of two.
    #[error("segment {index}: p_align {align:#x} is not zero or a power of two")]
    BadAlignment {
        /// The segment's index among the program headers.
        index: usize,
        /// `p_align`.
        align: u64,
    },
    /// `PT_LOAD` segments are not sorted by address, or overlap.
    #[error(
        "segment {index} (PT_LOAD at {vaddr:#x}) overlaps or precedes the previous PT_LOAD (ending at {previous_end:#x}); PT_LOADs must be sorted and disjoint"
    )]
    SegmentsOverlap {
        /// The segment's index among the program headers.
        index: usize,
        /// The segment's start address.
        vaddr: u64,
        /// Where the previous `PT_LOAD` ends.
        previous_end: u64,
    },
    /// A segment's address range is larger than mmld accepts (or overflows).
    #[error(
        "segment {index}: address range {vaddr:#x} + {memsz:#x} is too large (limit {limit:#x})"
    )]
    SegmentTooLarge {
        /// The segment's index among the program headers.
        index: usize,
        /// `p_vaddr`.
        vaddr: u64,
        /// `p_memsz`.
        memsz: u64,
        /// The largest end address accepted.
        limit: u64,
    },
    /// A segment asks to be writable and executable at once; refused unless `OpenOptions::allow_writable_executable`.
    #[error(
        "segment {index} is both writable and executable (refused by policy; allow with OpenOptions::allow_writable_executable)"
    )]
    WritableExecutable {
        /// The segment's index among the program headers.
        index: usize,
    },
    /// The object asks for an executable stack; refused unless `OpenOptions::allow_executable_stack`.
    #[error(
        "object asks for an executable stack (PT_GNU_STACK has PF_X); refused by policy (allow with OpenOptions::allow_executable_stack)"
    )]
    ExecutableStack,
    /// The object has text relocations; refused unless `OpenOptions::allow_text_relocations`.
    #[error(
        "object has text relocations (DT_TEXTREL); refused by policy (allow with OpenOptions::allow_text_relocations)"
    )]
    TextRelocations,
    /// Two `PT_LOAD` segments share a page, which mmld cannot map with each its own protection.
    #[error(
        "segment {index} (PT_LOAD at {vaddr:#x}) shares the page at {page:#x} with segment {previous}; mmld maps whole pages, so PT_LOADs must not share one"
    )]
    SegmentsSharePage {
        /// The later segment's index.
        index: usize,
        /// The earlier segment's index.
        previous: usize,
        /// The later segment's start address.
        vaddr: u64,
        /// The shared page.
        page: u64,
    },
    /// `PT_GNU_RELRO` does not lie inside one writable `PT_LOAD`.
    #[error("PT_GNU_RELRO ({vaddr:#x}..{end:#x}) does not lie inside one writable PT_LOAD")]
    RelroNotWritable {
        /// Start of the RELRO range.
        vaddr: u64,
        /// End of the RELRO range.
        end: u64,
    },
    /// The object has no `PT_DYNAMIC` segment.
    #[error("no PT_DYNAMIC segment: not a dynamically loadable object")]
    NoDynamic,
    /// `PT_DYNAMIC` does not lie inside the file-backed part of a `PT_LOAD`.
    #[error(
        "PT_DYNAMIC ({vaddr:#x}, {size:#x} bytes) does not lie inside the file part of a PT_LOAD"
    )]
    DynamicOutsideImage {
        /// `PT_DYNAMIC` address.
        vaddr: u64,
        /// `PT_DYNAMIC` size in bytes.
        size: u64,
    },
    /// A dynamic entry points outside every `PT_LOAD`.
    #[error("dynamic entry {tag} points to {addr:#x}..{end:#x}, outside every PT_LOAD")]
    TableOutsideImage {
        /// The dynamic tag (`DT_SYMTAB`, ...).
        tag: &'static str,
        /// Start of the table.
        addr: u64,
        /// End of the table.
        end: u64,
    },
    /// A table named by a dynamic entry runs past the file-backed end of its segment.
    #[error(
        "{tag} ({addr:#x}..{end:#x}) runs past the end of the file-backed part of its segment at {segment_end:#x}"
    )]
    TableOverrunsSegment {
        /// The dynamic tag.
        tag: &'static str,
        /// Start of the table.
        addr: u64,
        /// End of the table.
        end: u64,
        /// End of the segment's file-backed part.
        segment_end: u64,
    },
    /// A table mmld reads while loading lies in a writable segment, where a constructor could change it.
    #[error(
        "dynamic entry {tag} at {addr:#x} lies in a writable segment; mmld requires it read-only"
    )]
    TableInWritableSegment {
        /// The dynamic tag.
        tag: &'static str,
        /// The table's address.
        addr: u64,
    },
    /// A dynamic entry that another entry requires is absent.
    #[error("{tag} is missing but {needed_by} needs it")]
    MissingDynamicEntry {
        /// The missing tag.
        tag: &'static str,
        /// The tag that requires it.
        needed_by: &'static str,
    },
    /// A table's entry size (`DT_RELAENT`, `DT_SYMENT`, ...) is not the one the format defines.
    #[error("{what} has entry size {found}, expected {expected}")]
    BadEntrySize {
        /// The table.
        what: &'static str,
        /// The entry size the object declares.
        found: u64,
        /// The entry size of the format.
        expected: u64,
    },
    /// A table's size is not a whole number of entries.
    #[error("{what} size {size:#x} is not a multiple of {unit}")]
    BadTableSize {
        /// The table.
        what: &'static str,
        /// The table's size in bytes.
        size: u64,
        /// The entry size it must be a multiple of.
        unit: u64,
    },
    /// A string offset lies outside `.dynstr`, or the string has no terminating NUL.
    #[error(
        "string at offset {offset:#x} is outside .dynstr ({size:#x} bytes) or has no NUL terminator"
    )]
    BadString {
        /// The string offset.
        offset: u64,
        /// `.dynstr`'s size.
        size: u64,
    },
    /// A table (hash, version, relocation, ...) is malformed; `detail` says how.
    #[error("malformed {table}: {detail}")]
    MalformedTable {
        /// The table.
        table: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// A symbol hash table has no buckets.
    #[error("{table} has zero hash buckets")]
    EmptyHashTable {
        /// `DT_GNU_HASH` or `DT_HASH`.
        table: &'static str,
    },
    /// A hash chain never reaches its end marker.
    #[error("{table}: the hash chain starting at symbol {start} never ends ({detail})")]
    EndlessHashChain {
        /// `DT_GNU_HASH` or `DT_HASH`.
        table: &'static str,
        /// The symbol index the chain starts at.
        start: u32,
        /// Why the chain is taken to be endless.
        detail: String,
    },
    /// The object has neither `DT_GNU_HASH` nor `DT_HASH`, so its symbols cannot be looked up.
    #[error("no symbol hash table (neither DT_GNU_HASH nor DT_HASH)")]
    NoHashTable,
    /// A symbol's value lies outside every `PT_LOAD` of its object.
    #[error("symbol {name} is defined at {value:#x}, outside every PT_LOAD segment of its object")]
    SymbolOutsideObject {
        /// The symbol's name.
        name: String,
        /// Its `st_value`.
        value: u64,
    },
    /// A table has more entries than mmld accepts.
    #[error(
        "{what} has {count} entries, more than the {limit} mmld accepts (no real library comes near)"
    )]
    LimitExceeded {
        /// The table.
        what: &'static str,
        /// Its entries.
        count: u64,
        /// The most mmld accepts.
        limit: u64,
    },
    /// A relocation refers to a symbol index past the end of `.dynsym`.
    #[error(
        "relocation {index} in {table} at offset {offset:#x} refers to symbol index {symbol}, but .dynsym has {count} entries"
    )]
    SymbolIndexOutOfRange {
        /// The relocation table.
        table: &'static str,
        /// The relocation's index in its table.
        index: usize,
        /// The relocation's `r_offset`.
        offset: u64,
        /// The symbol index it names.
        symbol: u32,
        /// Entries in `.dynsym`.
        count: u32,
    },
    /// A relocation type mmld does not implement.
    #[error(
        "relocation {index} in {table} has unsupported type {rtype} ({name}) at offset {offset:#x}"
    )]
    UnsupportedRelocation {
        /// The relocation table.
        table: &'static str,
        /// The relocation's index in its table.
        index: usize,
        /// The relocation type number.
        rtype: u32,
        /// The type's name, where known.
        name: &'static str,
        /// The relocation's `r_offset`.
        offset: u64,
    },
    /// A relocation would write outside every writable segment.
    #[error(
        "relocation {index} in {table} writes {width} bytes at {offset:#x}, outside every writable segment"
    )]
    RelocationOutOfBounds {
        /// The relocation table.
        table: &'static str,
        /// The relocation's index in its table.
        index: usize,
        /// The relocation's `r_offset`.
        offset: u64,
        /// Bytes it would write.
        width: u64,
    },
    /// A reference no object in scope defines (what glibc reports as "undefined symbol").
    #[error("undefined symbol {name}{}{}", version.as_deref().map(|v| format!("@{v}")).unwrap_or_default(), referenced_by.as_deref().map(|r| format!(" (referenced by {r})")).unwrap_or_default())]
    UnresolvedSymbol {
        /// The symbol's name.
        name: String,
        /// The version the reference asks for, if any.
        version: Option<String>,
        /// The object that refers to it, where known.
        referenced_by: Option<String>,
    },
    /// Several unresolved references, reported together.
    #[error("{count} undefined symbols: {}", names.join(", "))]
    UnresolvedSymbols {
        /// How many references are unresolved.
        count: usize,
        /// Their names (`name@version` where versioned).
        names: Vec<String>,
    },
    /// A lookup (`Library::get` and friends) found no definition.
    #[error("symbol {name}{} not found", version.as_deref().map(|v| format!("@{v}")).unwrap_or_default())]
    SymbolNotFound {
        /// The name looked up.
        name: String,
        /// The version asked for, if any.
        version: Option<String>,
    },
    /// A symbol name passed to a lookup has a NUL byte before its end.
    #[error("symbol name {name:?} contains a NUL byte before its end")]
    InvalidSymbolName {
        /// The name, lossily decoded.
        name: String,
    },
    /// `Library::get` was asked for a type that is not the size of an address.
    #[error("requested type is {requested} bytes, but a symbol is a {pointer}-byte address")]
    SymbolSizeMismatch {
        /// Size of the requested type in bytes.
        requested: usize,
        /// Size of an address in bytes.
        pointer: usize,
    },
    /// A constructor, destructor or IFUNC resolver address does not lie in an executable segment of its object.
    #[error("{what} at {addr:#x} does not point into an executable segment of this object")]
    BadCodePointer {
        /// What the address was for.
        what: String,
        /// The address.
        addr: u64,
    },
    /// A thread-local storage form mmld cannot provide.
    #[error("unsupported thread-local storage: {detail}")]
    TlsUnsupported {
        /// What was asked for and why it cannot be given.
        detail: String,
    },
    /// glibc's static TLS surplus has no room for an object's
    /// initial-exec block; the message names the tunable that reserves more.
    #[error(
        "cannot allocate memory in static TLS block: {size} bytes aligned to {align} do not fit in what is left of glibc's static TLS surplus (glibc: {glibc}); start the program with GLIBC_TUNABLES=glibc.rtld.optional_static_tls=N to reserve N bytes instead of the default 512 (for this block alone, N={})", (size + align + 1024).next_multiple_of(1024)
    )]
    StaticTlsExhausted {
        /// Bytes of the block.
        size: u64,
        /// Its alignment.
        align: u64,
        /// What glibc said.
        glibc: String,
    },
    /// Mapping, protecting or unmapping memory failed.
    #[error("{what}: {source}")]
    Mmap {
        /// The operation that failed.
        what: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A `DT_NEEDED` library was not found; `searched` lists every place tried.
    #[error(
        "cannot find {name} (needed by {needed_by}); searched: {}",
        if searched.is_empty() { "nothing (no search directories)".to_string() } else { searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ") }
    )]
    MissingDependency {
        /// The `DT_NEEDED` name.
        name: String,
        /// The object that needs it.
        needed_by: String,
        /// Every path tried, in order.
        searched: Vec<PathBuf>,
    },
    /// The file is a position-independent executable, which `dlopen`
    /// refuses too.
    #[error(
        "cannot dynamically load position-independent executable (DF_1_PIE): an executable is started by the kernel, not loaded as a library"
    )]
    PositionIndependentExecutable,
    /// `OpenOptions::no_load` asked for a library that is not loaded.
    #[error(
        "not loaded (OpenOptions::no_load, like RTLD_NOLOAD, opens only a library already loaded)"
    )]
    NotLoaded,
    /// A name without `/` was not found anywhere `dlopen` would look.
    #[error(
        "cannot find {name}; searched: {}",
        if searched.is_empty() { "nothing (no search directories)".to_string() } else { searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ") }
    )]
    LibraryNotFound {
        /// The name asked for.
        name: String,
        /// Every path tried, in order.
        searched: Vec<PathBuf>,
    },
    /// Verification of shared relocations
    /// ([`OpenOptions::verify_shared_relocations`](crate::OpenOptions::verify_shared_relocations))
    /// found a page of the relocation cache that differs from what a full
    /// relocation of the object produces. The error's file is the object.
    #[error(
        "shared relocations differ from a full relocation: page at offset {page_offset:#x} of the object, first differing byte at offset {byte_offset:#x} (cache file {cache_file})"
    )]
    SharedRelocationsDiffer {
        /// Object address (`p_vaddr` space) of the page that differs.
        page_offset: u64,
        /// Object address of the first byte that differs.
        byte_offset: u64,
        /// The cache file the page came from.
        cache_file: PathBuf,
    },
    /// A failure no other variant describes.
    #[error("{0}")]
    Other(String),
}
