//! Trust: which cache directories and files a process may use.
//!
//! Owns: the checks a cache must pass before one byte of it is read: the
//! directory is a real directory (not a symbolic link), owned by the
//! effective user and writable by nobody else; a file is opened without
//! following a symbolic link and is a regular file owned by the effective
//! user, writable by nobody else. Must never: follow a symbolic link to a
//! cache file, or accept a file or directory another user can write.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Check (creating it, mode 0700, if it does not exist) the cache
/// directory `dir`. The error says what is wrong, for the fallback reason.
pub fn check_dir(dir: &Path) -> Result<(), String> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .or_else(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => Ok(()),
                    _ => Err(e),
                })
                .map_err(|e| format!("cannot create cache directory {}: {e}", dir.display()))?;
            std::fs::symlink_metadata(dir)
                .map_err(|e| format!("cache directory {}: {e}", dir.display()))?
        }
        Err(e) => return Err(format!("cache directory {}: {e}", dir.display())),
    };
    let shown = dir.display();
    if meta.file_type().is_symlink() {
        return Err(format!("cache directory {shown} is a symbolic link"));
    }
    if !meta.is_dir() {
        return Err(format!("cache directory {shown} is not a directory"));
    }
    check_owner_and_mode(&meta, &format!("cache directory {shown}"))
}

fn check_owner_and_mode(meta: &std::fs::Metadata, what: &str) -> Result<(), String> {
    let me = euid();
    if meta.uid() != me {
        return Err(format!("{what} is owned by uid {}, not {me}", meta.uid()));
    }
    if meta.mode() & 0o020 != 0 {
        return Err(format!("{what} is group-writable"));
    }
    if meta.mode() & 0o002 != 0 {
        return Err(format!("{what} is writable by others"));
    }
    Ok(())
}

/// Open the cache file `path` for reading: `Ok(None)` when it does not
/// exist, an error (the fallback reason) when it fails a check.
/// With the file, its size (from the same `fstat`).
pub fn open_file(path: &Path) -> Result<Option<(File, u64)>, String> {
    let shown = path.display();
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(format!("cache file {shown} is a symbolic link"));
        }
        Err(e) => return Err(format!("cache file {shown}: {e}")),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cache file {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("cache file {shown} is not a regular file"));
    }
    check_owner_and_mode(&meta, &format!("cache file {shown}"))?;
    Ok(Some((file, meta.len())))
}

/// A fresh name in `dir` for a file that will be renamed to `base`.
pub fn temp_name(dir: &Path, base: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{base}.tmp.{}.{n}", std::process::id()))
}

/// Write `bytes` to `dir/base` atomically: a new file (`O_EXCL`, mode
/// 0600, `O_NOFOLLOW`) renamed into place, so a reader sees the old entry
/// or the whole new one, never a partial one.
pub fn write_atomically(dir: &Path, base: &str, bytes: &[u8]) -> Result<PathBuf, String> {
    use std::io::Write;
    let tmp = temp_name(dir, base);
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes));
    let path = dir.join(base);
    let result = result.and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("writing {}: {e}", path.display()));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn private_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    #[test]
    fn an_owner_only_directory_is_accepted_and_a_missing_one_created() {
        let d = private_dir();
        assert_eq!(check_dir(d.path()), Ok(()));
        let sub = d.path().join("new");
        assert_eq!(check_dir(&sub), Ok(()));
        let mode = std::fs::metadata(&sub).unwrap().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn a_group_or_other_writable_directory_is_refused() {
        let d = private_dir();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o770)).unwrap();
        assert!(check_dir(d.path()).unwrap_err().contains("group-writable"));
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o707)).unwrap();
        assert!(
            check_dir(d.path())
                .unwrap_err()
                .contains("writable by others")
        );
    }

    #[test]
    fn a_symlinked_directory_is_refused() {
        let d = private_dir();
        let real = d.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(check_dir(&link).unwrap_err().contains("symbolic link"));
    }

    #[test]
    fn a_directory_of_another_owner_is_refused() {
        if euid() != 0 {
            return; // Only root can give a directory away.
        }
        let d = private_dir();
        std::os::unix::fs::chown(d.path(), Some(65534), None).unwrap();
        assert!(
            check_dir(d.path())
                .unwrap_err()
                .contains("owned by uid 65534")
        );
    }

    #[test]
    fn file_checks_refuse_symlinks_other_owners_and_writable_files() {
        let d = private_dir();
        let f = d.path().join("entry");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(open_file(&f).unwrap().is_some());
        assert!(open_file(&d.path().join("absent")).unwrap().is_none());
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert!(open_file(&link).unwrap_err().contains("symbolic link"));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o620)).unwrap();
        assert!(open_file(&f).unwrap_err().contains("group-writable"));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        if euid() == 0 {
            std::os::unix::fs::chown(&f, Some(65534), None).unwrap();
            assert!(open_file(&f).unwrap_err().contains("owned by uid 65534"));
        }
        let fifo = d.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(open_file(&fifo).unwrap_err().contains("not a regular file"));
    }

    #[test]
    fn atomic_writes_leave_no_temporary_file() {
        let d = private_dir();
        let p = write_atomically(d.path(), "e", b"one").unwrap();
        write_atomically(d.path(), "e", b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
