//! Which of the host's objects were loaded at start-up.
//!
//! Owns: telling the executable's `DT_NEEDED` closure apart from objects
//! the host `dlopen`ed later, once per process. glibc never unloads a
//! start-up object and puts every one in the global scope, so mmld needs
//! no reference to keep one loaded and no `dlsym` probe to learn that it
//! is global. Start-up objects come first in namespace 0's chain, which is
//! the order `dl_iterate_phdr` reports, in breadth-first order of
//! `DT_NEEDED`: walking the listing from the executable, an object belongs
//! to start-up while its file name is a `DT_NEEDED` name of an earlier
//! start-up object that no earlier object already answered. The first
//! object that fails the test ends the prefix, and everything from there on
//! is treated as `dlopen`ed (held and probed): a misjudgement can only ever
//! be on the safe side, except for a host object whose file name differs
//! from the name that loaded it at start-up *and* a later `dlopen` of
//! another file with that name, which glibc itself would not tell apart
//! from a name match. Must never: read an object before it is known to be
//! one that cannot go away (the executable, a permanent object, or one
//! admitted by the walk), or be asked from inside a `dl_iterate_phdr`
//! callback.

use std::sync::OnceLock;

/// How many objects at the head of `dl_iterate_phdr`'s listing were loaded
/// at start-up, once the walk has run.
static COUNT: OnceLock<usize> = OnceLock::new();

/// The number found by an earlier walk in this process.
pub fn known_count() -> Option<usize> {
    COUNT.get().copied()
}

/// Remember the walk's answer for the rest of the process (start-up
/// objects never change).
pub fn set_count(count: usize) -> usize {
    *COUNT.get_or_init(|| count)
}

/// The state of one walk down the listing.
#[derive(Default)]
pub struct Walk {
    /// File names of `LD_PRELOAD` entries (never in secure mode, where
    /// glibc restricts them): glibc loads these right after the executable,
    /// before any `DT_NEEDED` object.
    preload: Option<Vec<Vec<u8>>>,
    /// Some object was admitted through a `DT_NEEDED` name: preloads are
    /// behind.
    past_preloads: bool,
    /// `DT_NEEDED` names of admitted objects that no admitted object has
    /// answered yet.
    wanted: Vec<Vec<u8>>,
    /// Names admitted objects answer to (file name and soname).
    answered: Vec<Vec<u8>>,
}

impl Walk {
    /// May the object listed as `path` (next in order) be a start-up
    /// object? The executable and objects that live as long as the
    /// process (`permanent`) always may; any other only under a name some
    /// earlier start-up object needs. An admitted object answers that name.
    pub fn admits(&mut self, index: usize, path: &[u8], permanent: impl FnOnce() -> bool) -> bool {
        let base = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
        let wanted = self.wanted.iter().position(|n| n.as_slice() == base);
        // Asked last: telling a permanent object costs two `getauxval`s.
        if index != 0 && wanted.is_none() && !self.preloaded(base) && !permanent() {
            return false;
        }
        if let Some(i) = wanted {
            self.wanted.swap_remove(i);
            self.past_preloads = true;
        }
        self.answer(base);
        true
    }

    /// Is `base` the file name of an `LD_PRELOAD` entry, at a place in the
    /// listing where preloads still come?
    fn preloaded(&mut self, base: &[u8]) -> bool {
        if self.past_preloads || base.is_empty() {
            return false;
        }
        let names = self.preload.get_or_insert_with(preload_names);
        match names.iter().position(|n| n.as_slice() == base) {
            Some(i) => {
                names.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// An admitted object also answers to its soname.
    pub fn answer(&mut self, name: &[u8]) {
        self.wanted.retain(|n| n.as_slice() != name);
        if !name.is_empty() && !self.answered.iter().any(|n| n.as_slice() == name) {
            self.answered.push(name.to_vec());
        }
    }

    /// An admitted object needs `name`.
    pub fn needs(&mut self, name: &[u8]) {
        let seen = |v: &Vec<Vec<u8>>| v.iter().any(|n| n.as_slice() == name);
        if !seen(&self.answered) && !seen(&self.wanted) {
            self.wanted.push(name.to_vec());
        }
    }
}

/// The file names `LD_PRELOAD` lists (glibc splits it at spaces and
/// colons). None in secure mode.
fn preload_names() -> Vec<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    if crate::search::secure::is_secure() {
        return Vec::new();
    }
    let Some(value) = std::env::var_os("LD_PRELOAD") else {
        return Vec::new();
    };
    value
        .as_bytes()
        .split(|&b| b == b' ' || b == b':')
        .filter(|e| !e.is_empty())
        .map(|e| e.rsplit(|&b| b == b'/').next().unwrap_or(e).to_vec())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_follows_needed_names() {
        let mut w = Walk::default();
        assert!(w.admits(0, b"", || false));
        w.needs(b"libm.so.6");
        w.needs(b"libc.so.6");
        assert!(w.admits(1, b"/lib/x/libm.so.6", || false));
        w.needs(b"libc.so.6");
        assert!(w.admits(2, b"/lib/x/libc.so.6", || true));
        // A second file under an answered name is a later dlopen.
        assert!(!w.admits(3, b"/opt/libm.so.6", || false));
        // Nothing needs it: a later dlopen.
        assert!(!w.admits(3, b"/opt/libfoo.so", || false));
    }
}
