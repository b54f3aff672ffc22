//! Secure mode: a setuid or setgid process (`AT_SECURE`).
//!
//! Owns: whether the process is in secure mode, the one gate every
//! environment input of mmld goes through, and the rule for `$ORIGIN` in
//! secure mode. In such a process the environment belongs to a less
//! privileged user: `LD_LIBRARY_PATH` or an `MMLD_*` variable must not
//! choose which code runs or what is logged, and `$ORIGIN` (which a user
//! can steer with hard links) must not lead outside the system
//! directories. Must never: read the environment other than through
//! [`env_var_os`], or decide secure mode from the environment itself.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use super::paths::DEFAULT_DIRS;

/// Is this process in secure mode (the kernel's `AT_SECURE`: setuid or
/// setgid, or file capabilities)? The answer is fixed at exec time.
pub fn is_secure() -> bool {
    // SAFETY: getauxval only reads the auxiliary vector.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// The environment variable `name`, or `None` in secure mode whatever the
/// environment holds.
pub fn env_var_os(name: &str) -> Option<OsString> {
    if is_secure() {
        return None;
    }
    std::env::var_os(name)
}

/// May an element of a search path that uses `$ORIGIN` be used? `element`
/// is the element as written; `origin_at_start` says whether it begins with
/// the token (`$ORIGIN` or `${ORIGIN}`) followed by `/` or nothing, and
/// `expanded` is the directory it expands to.
///
/// Outside secure mode, always. In secure mode, glibc 2.36
/// (`_dl_dst_substitute`) drops an element unless `$ORIGIN` opens it that
/// way, and, for the executable's own paths, unless the normalised result
/// lies in a trusted system directory. mmld applies the trusted-directory
/// rule to every object's paths: a setuid program loads its plugins by
/// path, and their `$ORIGIN` is exactly what a user can move.
pub fn origin_allowed(origin_at_start: bool, expanded: &Path, secure: bool) -> bool {
    !secure || (origin_at_start && is_trusted_directory(expanded))
}

/// Is `dir`, with `.` and `..` resolved lexically (as glibc's
/// `is_trusted_path_normalize` does, without following links), one of the
/// system directories or below one?
pub fn is_trusted_directory(dir: &Path) -> bool {
    if !dir.is_absolute() {
        return false;
    }
    let mut normal = PathBuf::from("/");
    for c in dir.components() {
        match c {
            Component::Normal(part) => normal.push(part),
            Component::ParentDir => {
                normal.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    DEFAULT_DIRS
        .iter()
        .any(|trusted| normal.starts_with(trusted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_secure_mode_origin_is_always_allowed() {
        assert!(origin_allowed(false, Path::new("/home/u/x"), false));
        assert!(origin_allowed(true, Path::new("/tmp"), false));
    }

    #[test]
    fn secure_mode_needs_a_leading_origin_and_a_trusted_result() {
        let trusted = Path::new("/usr/lib/x86_64-linux-gnu/plugins");
        assert!(origin_allowed(true, trusted, true));
        assert!(!origin_allowed(false, trusted, true), "not at the start");
        assert!(!origin_allowed(true, Path::new("/tmp/evil"), true));
        assert!(!origin_allowed(true, Path::new("/usr/lib/../../tmp"), true));
        assert!(origin_allowed(
            true,
            Path::new("/usr/lib/x86_64-linux-gnu/../x86_64-linux-gnu/p"),
            true
        ));
    }

    #[test]
    fn trusted_directories_are_whole_components() {
        assert!(is_trusted_directory(Path::new("/lib")));
        assert!(is_trusted_directory(Path::new("/usr/lib/")));
        assert!(!is_trusted_directory(Path::new("/usr/libexec")));
        assert!(!is_trusted_directory(Path::new("/usr/lib2/x")));
        assert!(!is_trusted_directory(Path::new("usr/lib")));
        assert!(!is_trusted_directory(Path::new("/opt/../tmp")));
    }
}
