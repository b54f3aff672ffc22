//! Architecture-specific facts: machine number, page size, relocation types.
//!
//! Owns: every constant and formula that differs between architectures, so a
//! second architecture is one more file here. Must never: touch memory or make
//! syscalls; the LINK stage applies what this module describes.

pub mod x86_64;

pub use x86_64 as current;
