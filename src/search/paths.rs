//! Library search order for a `DT_NEEDED` name, as glibc 2.36 on Debian
//! x86_64 computes it.
//!
//! Owns: splitting `DT_RPATH`/`DT_RUNPATH`/`LD_LIBRARY_PATH` lists into
//! directories, expanding dynamic string tokens in them, and ordering the
//! candidate files to try. Must never: touch the filesystem or decide which
//! candidate is acceptable (the loader opens each in turn, skips files that
//! are not ELF objects for this machine, and takes the first that works);
//! every function here is pure apart from reading the environment in
//! [`ld_library_path_from_env`].
//!
//! Rules taken from glibc (and checked with `LD_DEBUG=libs` on the host):
//! * A name containing `/` is used as is; no search happens.
//! * Order: `DT_RPATH` of the requesting object and then of each object that
//!   loaded it up to the executable (only when the requesting object has no
//!   `DT_RUNPATH`), `LD_LIBRARY_PATH`, the requesting object's `DT_RUNPATH`,
//!   `/etc/ld.so.cache`, then [`DEFAULT_DIRS`]. `DF_1_NODEFLIB` on the
//!   requesting object skips the last two.
//! * Lists are split on `:` (`LD_LIBRARY_PATH` also on `;`). An empty list
//!   contributes nothing; an empty element inside a non-empty list means the
//!   current directory, returned here as `.`. Trailing slashes are dropped.
//! * Tokens: `$ORIGIN`/`${ORIGIN}` -> directory of the object whose list it
//!   is (for `LD_LIBRARY_PATH`, the executable), `$LIB`/`${LIB}` ->
//!   `lib/x86_64-linux-gnu` (Debian's value). A bare token counts only when
//!   the next character cannot continue an identifier, so `$ORIGINX` is not
//!   a token and stays literal, while `$ORIGIN-x` expands; unknown `$NAME`s
//!   stay literal too.
//! * `$PLATFORM` is not supported: glibc's value comes from `AT_PLATFORM`
//!   but is overridden on some Intel CPUs ("haswell", "xeon_phi"), so any
//!   element using it is dropped rather than guessed. An element whose
//!   `$ORIGIN` is unknown is dropped as well, as glibc does.
//! * The same candidate file is listed once, at its first position: trying
//!   it again cannot give a different answer, and glibc likewise skips
//!   directories it has already tried.
//!
//! * Secure (setuid) mode: `LD_LIBRARY_PATH` is ignored and `$ORIGIN` is
//!   restricted (see [`super::secure`]).
//!
//! Not modelled: the glibc-hwcaps
//! (`x86-64-v2`..`v4`) and legacy hwcap (`tls`, `x86_64`) subdirectories
//! glibc 2.36 also probes inside every search directory, which only select
//! optimised builds of the same library; and `LD_LIBRARY_PATH` being
//! token-expanded before it is split (it only matters if `$ORIGIN` itself
//! contains `:`).

use crate::fixedhash::HashSet;
use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use super::ldcache::LdCache;

/// glibc's system search directories on Debian x86_64, in order (as
/// printed by `ld.so --help`).
pub const DEFAULT_DIRS: [&str; 4] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib",
    "/usr/lib",
];

/// What `$LIB` expands to in Debian's glibc (the multiarch directory, not
/// "lib64").
pub const LIB_EXPANSION: &str = "lib/x86_64-linux-gnu";

/// How a candidate path was produced, for diagnostics.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Provenance {
    /// The requested name contained a slash and was used as given.
    Path,
    /// A `DT_RPATH` directory of `owner` (the requesting object or one of
    /// the objects that loaded it).
    Rpath {
        owner: String,
    },
    LdLibraryPath,
    /// A `DT_RUNPATH` directory of the requesting object.
    Runpath,
    Cache,
    DefaultDir,
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Provenance::Path => f.write_str("path as given"),
            Provenance::Rpath { owner } => write!(f, "DT_RPATH of {owner}"),
            Provenance::LdLibraryPath => f.write_str("LD_LIBRARY_PATH"),
            Provenance::Runpath => f.write_str("DT_RUNPATH"),
            Provenance::Cache => f.write_str("ld.so.cache"),
            Provenance::DefaultDir => f.write_str("system directory"),
        }
    }
}

/// Everything the search needs to know about one `DT_NEEDED` request.
#[derive(Debug, Clone, Copy)]
pub struct SearchRequest<'a> {
    /// The needed name (a soname, or a path if it contains `/`).
    pub name: &'a str,
    /// `(owner, expanded DT_RPATH dirs)` for the requesting object, then the
    /// object that loaded it, and so on up to and including the executable.
    /// An object that has `DT_RUNPATH` contributes an empty list: glibc
    /// discards `DT_RPATH` when both are present. Used only when `runpath`
    /// is `None`.
    pub rpaths_of_chain: &'a [(String, Vec<PathBuf>)],
    /// The requesting object's expanded `DT_RUNPATH`, or `None` if it has no
    /// `DT_RUNPATH` entry. An entry that expands to nothing is `Some(&[])`:
    /// its presence alone still disables the `DT_RPATH` step.
    pub runpath: Option<&'a [PathBuf]>,
    /// Expanded `LD_LIBRARY_PATH` (see [`ld_library_path_from_env`]).
    pub ld_library_path: &'a [PathBuf],
    /// The requesting object has `DF_1_NODEFLIB`: skip the cache and the
    /// default directories.
    pub nodeflib: bool,
}

/// The ordered list of files to try for `req.name`.
///
/// An empty name yields no candidates.
pub fn candidates(req: &SearchRequest<'_>, cache: Option<&LdCache>) -> Vec<(PathBuf, Provenance)> {
    let mut out = Candidates::default();
    if req.name.is_empty() {
        return out.list;
    }
    if req.name.contains('/') {
        out.push(PathBuf::from(req.name), Provenance::Path);
        return out.list;
    }

    if req.runpath.is_none() {
        for (owner, dirs) in req.rpaths_of_chain {
            for dir in dirs {
                let provenance = Provenance::Rpath {
                    owner: owner.clone(),
                };
                out.push(dir.join(req.name), provenance);
            }
        }
    }
    for dir in req.ld_library_path {
        out.push(dir.join(req.name), Provenance::LdLibraryPath);
    }
    for dir in req.runpath.unwrap_or(&[]) {
        out.push(dir.join(req.name), Provenance::Runpath);
    }
    if req.nodeflib {
        return out.list;
    }
    if let Some(path) = cache.and_then(|c| c.lookup(req.name)) {
        out.push(path.to_path_buf(), Provenance::Cache);
    }
    for dir in DEFAULT_DIRS {
        out.push(Path::new(dir).join(req.name), Provenance::DefaultDir);
    }
    out.list
}

#[derive(Default)]
struct Candidates {
    list: Vec<(PathBuf, Provenance)>,
    seen: HashSet<PathBuf>,
}

impl Candidates {
    fn push(&mut self, path: PathBuf, provenance: Provenance) {
        if self.seen.insert(path.clone()) {
            self.list.push((path, provenance));
        }
    }
}

/// Expands one list element with `$ORIGIN` set to `origin_dir`.
///
/// `None` means glibc would drop the element (see the module comment).
pub fn expand_origin(entry: &str, origin_dir: &Path) -> Option<PathBuf> {
    expand_element(entry, Some(origin_dir))
}

/// Expands one list element; `origin` is `None` when the owning object's
/// directory is unknown, which drops elements that use `$ORIGIN`.
pub fn expand_element(element: &str, origin: Option<&Path>) -> Option<PathBuf> {
    expand_bytes(element.as_bytes(), origin)
}

/// Splits and expands a `DT_RPATH` or `DT_RUNPATH` string of an object
/// whose directory is `origin`.
pub fn split_rpath(value: &str, origin: Option<&Path>) -> Vec<PathBuf> {
    split_list(value.as_bytes(), b":", origin)
}

/// Splits and expands an `LD_LIBRARY_PATH` value; `main_origin` is the
/// executable's directory.
pub fn split_ld_library_path(value: &str, main_origin: Option<&Path>) -> Vec<PathBuf> {
    split_list(value.as_bytes(), b":;", main_origin)
}

/// `LD_LIBRARY_PATH` from this process's environment, split and expanded;
/// empty in secure mode, as glibc ignores it for setuid/setgid programs.
pub fn ld_library_path_from_env(main_origin: Option<&Path>) -> Vec<PathBuf> {
    match super::secure::env_var_os("LD_LIBRARY_PATH") {
        Some(value) => split_list(value.as_bytes(), b":;", main_origin),
        None => Vec::new(),
    }
}

fn split_list(value: &[u8], separators: &[u8], origin: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if value.is_empty() {
        return dirs;
    }
    for element in value.split(|b| separators.contains(b)) {
        if let Some(dir) = expand_bytes(element, origin)
            && !dirs.contains(&dir)
        {
            dirs.push(dir);
        }
    }
    dirs
}

fn expand_bytes(element: &[u8], origin: Option<&Path>) -> Option<PathBuf> {
    expand_bytes_in(element, origin, super::secure::is_secure())
}

/// [`expand_element`] as a process in secure mode (`secure`) or not
/// would expand it: tests give the flag; the loader gives the process's.
pub fn expand_element_in(element: &str, origin: Option<&Path>, secure: bool) -> Option<PathBuf> {
    expand_bytes_in(element.as_bytes(), origin, secure)
}

fn expand_bytes_in(element: &[u8], origin: Option<&Path>, secure: bool) -> Option<PathBuf> {
    if element.is_empty() {
        return Some(PathBuf::from("."));
    }
    let mut out: Vec<u8> = Vec::with_capacity(element.len());
    let mut rest = element;
    // Secure mode accepts `$ORIGIN` only opening the element, followed by
    // `/` or nothing, and only if the result is a trusted directory.
    let mut origin_used = false;
    let mut origin_at_start = false;
    loop {
        let mut parts = rest.splitn(2, |&b| b == b'$');
        out.extend_from_slice(parts.next().unwrap_or_default());
        let Some(after) = parts.next() else {
            break;
        };
        if let Some(tail) = match_token(after, b"ORIGIN") {
            if !origin_used {
                origin_at_start = out.is_empty() && (tail.is_empty() || tail.starts_with(b"/"));
            } else {
                origin_at_start = false;
            }
            origin_used = true;
            out.extend_from_slice(origin?.as_os_str().as_bytes());
            rest = tail;
        } else if let Some(tail) = match_token(after, b"LIB") {
            out.extend_from_slice(LIB_EXPANSION.as_bytes());
            rest = tail;
        } else if match_token(after, b"PLATFORM").is_some() {
            return None;
        } else {
            out.push(b'$');
            rest = after;
        }
    }

    // A trailing slash would make equal directories compare unequal in
    // diagnostics; "/" itself must survive.
    while out.len() > 1 && out.last() == Some(&b'/') {
        out.pop();
    }
    if out.is_empty() {
        return None;
    }
    let path = PathBuf::from(OsString::from_vec(out));
    if origin_used && !super::secure::origin_allowed(origin_at_start, &path, secure) {
        return None;
    }
    Some(path)
}

/// If `input` (the text after a `$`) starts with token `name`, bare or in
/// braces, returns the text after the token.
fn match_token<'a>(input: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    if let Some(inner) = input.strip_prefix(b"{") {
        return inner.strip_prefix(name)?.strip_prefix(b"}");
    }
    let tail = input.strip_prefix(name)?;
    let continues_identifier = tail
        .first()
        .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'_');
    (!continues_identifier).then_some(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    const ORIGIN: &str = "/opt/app/bin";

    #[test]
    fn origin_expansion() {
        let o = Path::new(ORIGIN);
        assert_eq!(
            expand_origin("$ORIGIN/../lib", o),
            Some(p("/opt/app/bin/../lib"))
        );
        assert_eq!(expand_origin("${ORIGIN}", o), Some(p(ORIGIN)));
        assert_eq!(
            expand_origin("${ORIGIN}/x:y", o),
            Some(p("/opt/app/bin/x:y"))
        );
        assert_eq!(expand_origin("$ORIGIN", o), Some(p(ORIGIN)));
        assert_eq!(expand_origin("$ORIGIN/", o), Some(p(ORIGIN)));
        // Anywhere in the element, more than once.
        assert_eq!(
            expand_origin("/x$ORIGIN/y/$ORIGIN", o),
            Some(p("/x/opt/app/bin/y//opt/app/bin"))
        );
        // Followed by a non-identifier character: still the token.
        assert_eq!(expand_origin("$ORIGIN-q", o), Some(p("/opt/app/bin-q")));
        // Followed by an identifier character: not a token, kept literally.
        assert_eq!(expand_origin("/z/$ORIGINX", o), Some(p("/z/$ORIGINX")));
        assert_eq!(expand_origin("$ORIGIN_1/a", o), Some(p("$ORIGIN_1/a")));
        // Braces must close right after the name.
        assert_eq!(expand_origin("${ORIGIN/a", o), Some(p("${ORIGIN/a")));
        assert_eq!(expand_origin("${ORIGINX}", o), Some(p("${ORIGINX}")));
        // Unknown tokens and a lone dollar stay literal.
        assert_eq!(expand_origin("/a/$FOO/b$", o), Some(p("/a/$FOO/b$")));
        // Unknown origin drops the element, but only if it uses $ORIGIN.
        assert_eq!(expand_element("$ORIGIN/lib", None), None);
        assert_eq!(expand_element("/usr/lib", None), Some(p("/usr/lib")));
    }

    #[test]
    fn lib_and_platform_tokens() {
        let o = Path::new(ORIGIN);
        assert_eq!(
            expand_origin("/x/$LIB", o),
            Some(p("/x/lib/x86_64-linux-gnu"))
        );
        assert_eq!(
            expand_origin("/x/${LIB}/y", o),
            Some(p("/x/lib/x86_64-linux-gnu/y"))
        );
        assert_eq!(expand_origin("/x/$LIBS", o), Some(p("/x/$LIBS")));
        assert_eq!(expand_origin("/y/$PLATFORM", o), None);
        assert_eq!(expand_origin("/y/${PLATFORM}/z", o), None);
        assert_eq!(expand_origin("/y/$PLATFORMS", o), Some(p("/y/$PLATFORMS")));
    }

    #[test]
    fn list_splitting() {
        let o = Some(Path::new(ORIGIN));
        assert_eq!(split_rpath("", o), Vec::<PathBuf>::new());
        assert_eq!(split_rpath(":", o), vec![p(".")]);
        assert_eq!(
            split_rpath("/a/:$ORIGIN/../lib::/a:/b;c", o),
            vec![p("/a"), p("/opt/app/bin/../lib"), p("."), p("/b;c")]
        );
        assert_eq!(
            split_ld_library_path("/v/;/u::$PLATFORM/x:/", o),
            vec![p("/v"), p("/u"), p("."), p("/")]
        );
        assert_eq!(split_ld_library_path("", o), Vec::<PathBuf>::new());
    }

    fn names(list: &[(PathBuf, Provenance)]) -> Vec<String> {
        list.iter()
            .map(|(path, prov)| format!("{} [{prov}]", path.display()))
            .collect()
    }

    #[test]
    fn slash_rule() {
        let chain = vec![("app".to_owned(), vec![p("/rp")])];
        let req = SearchRequest {
            name: "./libx.so",
            rpaths_of_chain: &chain,
            runpath: None,
            ld_library_path: &[],
            nodeflib: false,
        };
        assert_eq!(
            candidates(&req, None),
            vec![(p("./libx.so"), Provenance::Path)]
        );
        let req = SearchRequest {
            name: "sub/libx.so",
            ..req
        };
        assert_eq!(
            candidates(&req, None),
            vec![(p("sub/libx.so"), Provenance::Path)]
        );
        let req = SearchRequest { name: "", ..req };
        assert!(candidates(&req, None).is_empty());
    }

    #[test]
    fn order_without_runpath() {
        let chain = vec![
            ("libmid.so".to_owned(), vec![p("/mid"), p("/shared")]),
            ("app".to_owned(), vec![p("/shared"), p("/app/lib")]),
        ];
        let llp = [p("/llp"), p(".")];
        let req = SearchRequest {
            name: "libx.so.1",
            rpaths_of_chain: &chain,
            runpath: None,
            ld_library_path: &llp,
            nodeflib: false,
        };
        assert_eq!(
            names(&candidates(&req, None)),
            [
                "/mid/libx.so.1 [DT_RPATH of libmid.so]",
                "/shared/libx.so.1 [DT_RPATH of libmid.so]",
                "/app/lib/libx.so.1 [DT_RPATH of app]",
                "/llp/libx.so.1 [LD_LIBRARY_PATH]",
                "./libx.so.1 [LD_LIBRARY_PATH]",
                "/lib/x86_64-linux-gnu/libx.so.1 [system directory]",
                "/usr/lib/x86_64-linux-gnu/libx.so.1 [system directory]",
                "/lib/libx.so.1 [system directory]",
                "/usr/lib/libx.so.1 [system directory]",
            ]
        );
    }

    #[test]
    fn order_with_runpath_ignores_rpath_chain() {
        let chain = vec![("app".to_owned(), vec![p("/rp")])];
        let runpath = [p("/run"), p("/llp")];
        let llp = [p("/llp")];
        let req = SearchRequest {
            name: "libx.so.1",
            rpaths_of_chain: &chain,
            runpath: Some(&runpath),
            ld_library_path: &llp,
            nodeflib: false,
        };
        assert_eq!(
            names(&candidates(&req, None)),
            [
                "/llp/libx.so.1 [LD_LIBRARY_PATH]",
                "/run/libx.so.1 [DT_RUNPATH]",
                "/lib/x86_64-linux-gnu/libx.so.1 [system directory]",
                "/usr/lib/x86_64-linux-gnu/libx.so.1 [system directory]",
                "/lib/libx.so.1 [system directory]",
                "/usr/lib/libx.so.1 [system directory]",
            ]
        );
        // An empty DT_RUNPATH still suppresses DT_RPATH.
        let req = SearchRequest {
            runpath: Some(&[]),
            ld_library_path: &[],
            nodeflib: true,
            ..req
        };
        assert!(candidates(&req, None).is_empty());
    }

    #[test]
    fn cache_step_sits_between_runpath_and_default_dirs() -> Result<(), String> {
        let Some(cache) = super::super::ldcache::system_cache() else {
            return Ok(());
        };
        let Some(libz) = cache.lookup("libz.so.1") else {
            return Ok(());
        };
        let runpath = [p("/run")];
        let req = SearchRequest {
            name: "libz.so.1",
            rpaths_of_chain: &[],
            runpath: Some(&runpath),
            ld_library_path: &[],
            nodeflib: false,
        };
        let list = candidates(&req, Some(cache));
        let provenances: Vec<&Provenance> = list.iter().map(|(_, pr)| pr).collect();
        assert_eq!(
            provenances.get(..2),
            Some(&[&Provenance::Runpath, &Provenance::Cache][..])
        );
        let cached = list.get(1).ok_or("missing cache candidate")?;
        assert_eq!(cached.0, libz);
        // The cache path is not tried again as a default-dir candidate.
        assert_eq!(list.iter().filter(|(path, _)| path == libz).count(), 1);
        let req = SearchRequest {
            nodeflib: true,
            ..req
        };
        assert_eq!(candidates(&req, Some(cache)).len(), 1);
        Ok(())
    }
}
