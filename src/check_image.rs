//! Check an ELF image held in memory: READ → MAP (inert) → LINK (dry run).
//!
//! Owns: the one entry point that runs every validation mmld applies to a
//! file's contents on bytes alone: the fuzz target and the mutation tests
//! call it. Must never: run any code of the image (segments are mapped
//! non-executable and relocation is a dry run: no IFUNC resolver, no
//! constructor), open or search files, load dependencies, or touch the
//! registry. Symbols are bound against the host's global scope and the
//! image itself only; what neither provides is reported, not an error.

use std::path::Path;

use crate::elf::{self, DynamicInfo};
use crate::error::{AttachContext, Result, Stage};
use crate::link::symbols::SymbolTable;
use crate::link::{self, LinkMode, LinkTarget, Provider};
use crate::map::{Mapping, Protection};

/// The name errors carry: the image has no path.
const IMAGE_NAME: &str = "<memory image>";

/// Stand-in TLS module id for an image with `PT_TLS`. A dry run writes it
/// into the inert copy and nothing ever reads it; no real id is reserved.
const DRY_RUN_TLS_MODULE: u64 = u64::MAX;

/// What a successful [`check_image`] learned about the image.
#[derive(Debug, Clone, Default)]
pub struct CheckSummary {
    /// `DT_SONAME`.
    pub soname: Option<String>,
    /// `DT_NEEDED` names, in order (not resolved: no file is opened).
    pub needed: Vec<String>,
    /// `PT_LOAD` segments mapped.
    pub segments: usize,
    /// Bytes of address space the image spans.
    pub span: u64,
    /// Entries in `.dynsym`.
    pub symbols: u32,
    /// `DT_RELA` and `DT_JMPREL` entries applied.
    pub relocations: usize,
    /// Addresses relocated through `DT_RELR`.
    pub relr_addresses: usize,
    /// References neither the host nor the image defines (`name@version`).
    pub unresolved: Vec<String>,
    /// Validated constructors and destructors.
    pub initializers: usize,
    /// Validated destructors.
    pub finalizers: usize,
}

/// Validate, map (never executable), and relocate in a dry run the ELF
/// shared object in `bytes`, exactly as loading it would, without running
/// or loading anything. An `Err` is the error loading would report for the
/// same bytes (dependencies aside).
///
/// ```
/// # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testlibs/libdemo.so");
/// use mmld::{ErrorKind, Stage};
///
/// let bytes = std::fs::read(path).expect("read libdemo.so");
/// let summary = mmld::check_image(&bytes)?;
/// assert_eq!(summary.soname.as_deref(), Some("libdemo.so"));
///
/// // Cut off inside the program headers: refused while reading, with the
/// // offsets that prove it.
/// let err = mmld::check_image(&bytes[..100]).unwrap_err();
/// assert_eq!(err.stage(), Stage::Read);
/// assert!(matches!(err.kind(), ErrorKind::ProgramHeadersOutOfFile { .. }));
/// # Ok::<(), mmld::Error>(())
/// ```
pub fn check_image(bytes: &[u8]) -> Result<CheckSummary> {
    let name = Path::new(IMAGE_NAME);
    let (plan, dynamic) = elf::parse_bytes(bytes).at(name, Stage::Read)?;
    let mut mapping = Mapping::from_bytes(bytes, &plan, Protection::Inert).at(name, Stage::Map)?;
    let symbols = SymbolTable::new(&mapping, &dynamic).at(name, Stage::Link)?;
    let mut summary = CheckSummary {
        segments: plan.segments.len(),
        span: plan.span(),
        symbols: symbols.len(),
        ..CheckSummary::default()
    };
    read_names(&symbols, &dynamic, &mut summary).at(name, Stage::Read)?;

    let code = mapping.code_ranges();
    let tls_module = plan.tls.map(|_| DRY_RUN_TLS_MODULE);
    let scope = [
        Provider::HostGlobal,
        Provider::Object {
            name: IMAGE_NAME,
            symbols: &symbols,
            bias: mapping.bias(),
            tls_module,
            code: &code,
        },
    ];
    let mut descriptors = crate::runtime::tlsdesc::Descriptors::default();
    let mut target = LinkTarget {
        name: IMAGE_NAME,
        mapping: &mut mapping,
        dynamic: &dynamic,
        symbols: &symbols,
        tls_module,
        lazy: None,
        tls: crate::link::tls::TlsLink::new(None, plan.tls, &mut descriptors),
        share: None,
    };
    let host = crate::link::hostscope::host_scope();
    let report = link::relocate(&mut target, &scope, &host, LinkMode::DryRun, |_, _, _| {})
        .at(name, Stage::Link)?;
    if let Some(relro) = plan.relro {
        mapping.seal_relro(relro).at(name, Stage::Map)?;
    }
    // The loader validates these before publishing an object.
    summary.initializers = crate::runtime::initializers(&mapping, &dynamic)
        .at(name, Stage::Run)?
        .len();
    summary.finalizers = crate::runtime::finalizers(&mapping, &dynamic)
        .at(name, Stage::Run)?
        .len();
    summary.relocations = report.by_type.total();
    summary.relr_addresses = report.relr_addresses;
    summary.unresolved = report.unresolved;
    Ok(summary)
}

/// The strings the loader reads before linking: soname, needed names and
/// search paths.
fn read_names(
    symbols: &SymbolTable,
    dynamic: &DynamicInfo,
    summary: &mut CheckSummary,
) -> crate::error::KindResult<()> {
    let string = |off: u64| {
        symbols
            .string(off)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };
    summary.soname = dynamic.soname.map(string).transpose()?;
    summary.needed = dynamic
        .needed
        .iter()
        .map(|&o| string(o))
        .collect::<crate::error::KindResult<_>>()?;
    for off in [dynamic.rpath, dynamic.runpath].into_iter().flatten() {
        string(off)?;
    }
    Ok(())
}
