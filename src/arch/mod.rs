//! Architecture-specific facts: machine number, page size, and what each
//! relocation type means.
//!
//! Owns: every constant and formula that differs between architectures, so
//! a second architecture is one more file here and no change to `link`.
//! Each architecture classifies its relocation numbers into [`RelocKind`];
//! `link` applies the classification in one architecture-neutral loop.
//! Must never: touch memory or make syscalls; the LINK stage applies what
//! this module describes.

pub mod x86_64;

pub use x86_64 as current;

/// What a relocation type asks for, in the psABI's letters: B is the
/// object's load bias, S the bound symbol's address, A the addend, Z the
/// symbol's size. Every value is one address-sized word
/// ([`current::WORD_SIZE`] bytes) written at B + offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelocKind {
    /// Nothing to do.
    None,
    /// B + A, no symbol: most relocations of a large library, on a fast path.
    Relative,
    /// S + A (x86-64: `R_X86_64_64`).
    SymbolPlusAddend,
    /// S, the addend unused: a GOT slot (x86-64: `GLOB_DAT`).
    SymbolAddress,
    /// S, the addend unused: a PLT slot, reached only by calls, so it may
    /// be bound on first call when the library is opened lazily (x86-64:
    /// `JUMP_SLOT`).
    CallSlot,
    /// Z + A (x86-64: `SIZE64`).
    SymbolSize,
    /// The TLS module id of the symbol's object (x86-64: `DTPMOD64`).
    TlsModule,
    /// The symbol's offset in its module's TLS block, + A (x86-64:
    /// `DTPOFF64`).
    TlsOffset,
    /// The symbol's offset from the thread pointer, + A: static TLS, the
    /// initial-exec model (x86-64: `TPOFF64`).
    TlsStaticOffset,
    /// A TLS descriptor: a function and its argument (x86-64: `TLSDESC`).
    TlsDescriptor,
    /// What the IFUNC resolver at B + A returns (x86-64: `IRELATIVE`).
    IRelative,
    /// A type shared objects do not use or mmld does not apply.
    Unsupported,
}

impl RelocKind {
    /// Does this kind need the symbol it names bound first?
    pub fn needs_symbol(self) -> bool {
        matches!(
            self,
            RelocKind::SymbolPlusAddend
                | RelocKind::SymbolAddress
                | RelocKind::CallSlot
                | RelocKind::SymbolSize
                | RelocKind::TlsModule
                | RelocKind::TlsOffset
                | RelocKind::TlsStaticOffset
                | RelocKind::TlsDescriptor
        )
    }

    /// Is the value about a thread-local variable?
    pub fn is_tls(self) -> bool {
        matches!(
            self,
            RelocKind::TlsModule
                | RelocKind::TlsOffset
                | RelocKind::TlsStaticOffset
                | RelocKind::TlsDescriptor
        )
    }
}
