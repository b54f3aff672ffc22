//! The library's one error type.
//!
//! Owns: how every failure is named. An [`Error`] always says which file, which
//! pipeline stage and what went wrong, with the offset or index that proves it.
//! Must never: carry a message that could only be understood by reading mmld's
//! source, or lose the underlying `io::Error`.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

mod kind;

pub use kind::ErrorKind;

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
/// ```
/// use mmld::ErrorKind;
///
/// // SAFETY: nothing is loaded: the file does not exist.
/// let err = unsafe { mmld::Library::open("/nonexistent/libnothing.so") }.unwrap_err();
/// assert_eq!(err.file(), std::path::Path::new("/nonexistent/libnothing.so"));
/// match err.kind() {
///     ErrorKind::Io { source, .. } => {
///         assert_eq!(source.kind(), std::io::ErrorKind::NotFound)
///     }
///     other => panic!("unexpected: {other}"),
/// }
/// // One line, naming the file, the stage and the OS cause once.
/// let text = err.to_string();
/// assert_eq!(text.matches("No such file or directory").count(), 1, "{text}");
/// ```
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

/// The message already names the OS cause (`open failed: No such file or
/// directory`), so `source()` is `None`: error reporters that print the
/// chain (anyhow's `{:#}`, eyre) would otherwise name it twice. The
/// `io::Error` itself is in [`ErrorKind::Io`] and [`ErrorKind::Mmap`].
impl std::error::Error for Error {}

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
