//! Symbol names as users write them.
//!
//! Owns: the types a name may be given as, and turning one into the bytes
//! a lookup matches. Must never: allocate for a name that is already bytes.

use std::ffi::{CStr, CString};

use crate::error::ErrorKind;

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

pub(super) fn clean_name(raw: &[u8]) -> std::result::Result<&[u8], ErrorKind> {
    let name = raw.strip_suffix(&[0]).unwrap_or(raw);
    if crate::bytes::has_nul(name) {
        return Err(ErrorKind::InvalidSymbolName {
            name: String::from_utf8_lossy(raw).into_owned(),
        });
    }
    Ok(name)
}
