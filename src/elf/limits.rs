//! Limits no real library comes near, applied before any walk or
//! allocation whose size a file states.
//!
//! Owns: the numbers. A sparse file can back a huge segment with a few
//! kilobytes on disk, so "inside the file" alone bounds nothing: a table
//! of zeros gigabytes long is inside the file. These bound work and memory
//! by what libraries really have (libLLVM-15, the largest on a desktop
//! system: about 380,000 relocations and 40,000 dynamic symbols).

/// Entries of `.dynsym` (a hash chain walk to count them stops here).
pub const MAX_SYMBOLS: u32 = 1 << 22;
/// Entries of `DT_RELA` plus `DT_JMPREL`, and words of `DT_RELR`.
pub const MAX_RELOCATIONS: u64 = 1 << 24;
/// Entries of `DT_INIT_ARRAY` or `DT_FINI_ARRAY`.
pub const MAX_INIT_ENTRIES: u64 = 1 << 16;
