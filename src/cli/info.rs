//! Text and JSON renderings for `mmld info` and `mmld deps`.
//!
//! Owns: presentation only. Must never: compute facts about the file
//! (`mmld::describe` and the loader do that).

use std::fmt::Write as _;
use std::path::Path;

use goblin::elf::dynamic as dt;
use goblin::elf::program_header::{PF_R, PF_W, PF_X};
use std::collections::BTreeMap;

use mmld::{CheckReport, Description, DynamicEntry, DynamicSymbol, TlsInfo, TreeNode};

pub fn perms(flags: u32) -> String {
    let mut s = String::new();
    s.push(if flags & PF_R != 0 { 'r' } else { '-' });
    s.push(if flags & PF_W != 0 { 'w' } else { '-' });
    s.push(if flags & PF_X != 0 { 'x' } else { '-' });
    s
}

/// `DT_FLAGS` and `DT_FLAGS_1` bits by name, each name once.
pub fn flag_names(d: &Description) -> Vec<&'static str> {
    let mut out = Vec::new();
    for (bit, name) in [
        (dt::DF_SYMBOLIC, "SYMBOLIC"),
        (dt::DF_TEXTREL, "TEXTREL"),
        (dt::DF_BIND_NOW, "BIND_NOW"),
        (dt::DF_STATIC_TLS, "STATIC_TLS"),
    ] {
        if d.flags & bit != 0 {
            out.push(name);
        }
    }
    for (bit, name) in [
        (dt::DF_1_NOW, "NOW"),
        (dt::DF_1_NODELETE, "NODELETE"),
        (dt::DF_1_NODEFLIB, "NODEFLIB"),
    ] {
        if d.flags_1 & bit != 0 && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

pub fn to_text(path: &Path, d: &Description) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}", path.display());
    layout_text(&mut s, d);
    linking_text(&mut s, d);
    s
}

/// What MAP will do: type, span, segments, RELRO, TLS, stack.
fn layout_text(s: &mut String, d: &Description) {
    let _ = writeln!(
        s,
        "  type:     ET_DYN (shared object), machine x86_64, ELF64 little-endian"
    );
    let _ = writeln!(s, "  soname:   {}", d.soname.as_deref().unwrap_or("(none)"));
    let _ = writeln!(
        s,
        "  span:     {:#x} bytes ({} pages), max alignment {:#x}",
        d.span,
        d.span / 4096,
        d.max_align
    );
    let _ = writeln!(s, "  segments:");
    let _ = writeln!(
        s,
        "    {:>3} {:<4} {:>18} {:>12} {:>12} {:>12}",
        "idx", "perm", "vaddr", "memsz", "offset", "filesz"
    );
    for g in &d.segments {
        let _ = writeln!(
            s,
            "    {:>3} {:<4} {:>#18x} {:>#12x} {:>#12x} {:>#12x}",
            g.index,
            perms(g.flags),
            g.vaddr,
            g.memsz,
            g.offset,
            g.filesz
        );
    }
    match &d.relro {
        Some(r) => {
            let _ = writeln!(s, "  relro:    {:#x}..{:#x}", r.start, r.end);
        }
        None => {
            let _ = writeln!(s, "  relro:    none");
        }
    }
    match d.tls {
        Some(t) => {
            let _ = writeln!(
                s,
                "  tls:      template at {:#x}, {:#x} bytes initialised of {:#x}, align {}",
                t.vaddr, t.filesz, t.memsz, t.align
            );
        }
        None => {
            let _ = writeln!(s, "  tls:      none");
        }
    }
    let _ = writeln!(
        s,
        "  stack:    {}",
        match d.stack_executable {
            Some(true) => "executable requested",
            Some(false) => "non-executable",
            None => "no PT_GNU_STACK",
        }
    );
}

/// What LINK will meet: dependencies, flags, relocations, symbols, versions.
fn linking_text(s: &mut String, d: &Description) {
    let _ = writeln!(
        s,
        "  needed:   {}",
        if d.needed.is_empty() {
            "(none)".to_string()
        } else {
            d.needed.join(", ")
        }
    );
    if let Some(r) = &d.rpath {
        let _ = writeln!(s, "  rpath:    {r}");
    }
    if let Some(r) = &d.runpath {
        let _ = writeln!(s, "  runpath:  {r}");
    }
    let flags = flag_names(d);
    let _ = writeln!(
        s,
        "  flags:    {}",
        if flags.is_empty() {
            "(none)".to_string()
        } else {
            flags.join(" ")
        }
    );
    let _ = writeln!(s, "  relocations:");
    for (name, n) in &d.relocations {
        let _ = writeln!(s, "    {name:<22} {n}");
    }
    if let Some(words) = d.relr_words {
        let _ = writeln!(
            s,
            "    {:<22} {} addresses in {} words",
            "DT_RELR", d.relr_addresses, words
        );
    }
    let c = SymbolCounts::of(d);
    let _ = writeln!(
        s,
        "  symbols:  {} in .dynsym ({} hash): {} defined ({} functions, {} objects, {} TLS, {} IFUNC), {} undefined",
        d.symbols.len(),
        d.hash,
        c.defined,
        c.functions,
        c.objects,
        c.tls,
        c.ifuncs,
        c.undefined
    );
    if !d.version_definitions.is_empty() {
        let _ = writeln!(
            s,
            "  versions defined:    {}",
            d.version_definitions.join(", ")
        );
    }
    if !d.version_references.is_empty() {
        let _ = writeln!(
            s,
            "  versions required:   {}",
            d.version_references.join(", ")
        );
    }
}

/// Defined symbols by type, for the summary line.
#[derive(Default, serde::Serialize)]
struct SymbolCounts {
    defined: usize,
    undefined: usize,
    functions: usize,
    objects: usize,
    tls: usize,
    #[serde(rename = "ifunc")]
    ifuncs: usize,
}

impl SymbolCounts {
    fn of(d: &Description) -> Self {
        use goblin::elf::sym::{STT_COMMON, STT_FUNC, STT_GNU_IFUNC, STT_OBJECT, STT_TLS};
        let mut c = SymbolCounts {
            undefined: d.undefined_symbols().count(),
            ..SymbolCounts::default()
        };
        for s in d.defined_symbols() {
            c.defined += 1;
            match s.kind {
                STT_FUNC => c.functions += 1,
                STT_OBJECT | STT_COMMON => c.objects += 1,
                STT_TLS => c.tls += 1,
                STT_GNU_IFUNC => c.ifuncs += 1,
                _ => {}
            }
        }
        c
    }
}

/// `mmld info --json`.
#[derive(serde::Serialize)]
struct InfoJson<'a> {
    path: String,
    soname: Option<&'a str>,
    span: u64,
    segments: Vec<SegmentJson>,
    relro: Option<RelroJson>,
    tls: Option<TlsInfo>,
    needed: &'a [String],
    rpath: Option<&'a str>,
    runpath: Option<&'a str>,
    flags: Vec<&'static str>,
    relocations: &'a BTreeMap<String, usize>,
    relr_addresses: usize,
    symbols: SymbolsJson,
    versions_defined: &'a [String],
    versions_required: &'a [String],
    dynamic: &'a [DynamicEntry],
    dyn_syms: &'a [DynamicSymbol],
}

/// A `PT_LOAD` with its flags as `rwx`.
#[derive(serde::Serialize)]
struct SegmentJson {
    index: usize,
    perms: String,
    vaddr: u64,
    memsz: u64,
    offset: u64,
    filesz: u64,
    align: u64,
}

#[derive(serde::Serialize)]
struct RelroJson {
    vaddr: u64,
    size: u64,
}

#[derive(serde::Serialize)]
struct SymbolsJson {
    total: usize,
    #[serde(flatten)]
    counts: SymbolCounts,
    hash: &'static str,
}

pub fn to_json(path: &Path, d: &Description) -> serde_json::Result<String> {
    serde_json::to_string(&InfoJson {
        path: path.display().to_string(),
        soname: d.soname.as_deref(),
        span: d.span,
        segments: d
            .segments
            .iter()
            .map(|g| SegmentJson {
                index: g.index,
                perms: perms(g.flags),
                vaddr: g.vaddr,
                memsz: g.memsz,
                offset: g.offset,
                filesz: g.filesz,
                align: g.align,
            })
            .collect(),
        relro: d.relro.as_ref().map(|r| RelroJson {
            vaddr: r.start,
            size: r.end - r.start,
        }),
        tls: d.tls,
        needed: &d.needed,
        rpath: d.rpath.as_deref(),
        runpath: d.runpath.as_deref(),
        flags: flag_names(d),
        relocations: &d.relocations,
        relr_addresses: d.relr_addresses,
        symbols: SymbolsJson {
            total: d.symbols.len(),
            counts: SymbolCounts::of(d),
            hash: d.hash,
        },
        versions_defined: &d.version_definitions,
        versions_required: &d.version_references,
        dynamic: &d.dynamic,
        dyn_syms: &d.symbols,
    })
}

/// `mmld deps`: one line per `DT_NEEDED` entry, indented under the library
/// that needs it, with where it resolved and how:
///
/// ```text
/// libdtop.so => /t/diamond/libdtop.so [mmld, path as given]
///     libdleft.so => /t/diamond/lib/libdleft.so [mmld, DT_RUNPATH]
///         libdbase.so => /t/diamond/lib/libdbase.so [mmld, DT_RUNPATH]
///     libdright.so => /t/diamond/lib/libdright.so [mmld, DT_RUNPATH]
///         libdbase.so => /t/diamond/lib/libdbase.so [mmld, DT_RUNPATH] (listed under libdleft.so)
///     libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 [host]
///     libgone.so => NOT FOUND (needed by libdtop.so)
/// ```
pub fn tree_text(tree: &[TreeNode]) -> String {
    let mut s = String::new();
    for n in tree {
        let indent = "    ".repeat(n.depth);
        let how = n
            .provenance
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let _ = match (&n.path, n.host) {
            (None, false) => writeln!(
                s,
                "{indent}{} => NOT FOUND (needed by {})",
                n.name,
                n.needed_by.as_deref().unwrap_or("?")
            ),
            (Some(p), true) => writeln!(s, "{indent}{} => {} [host]", n.name, p.display()),
            (None, true) => writeln!(s, "{indent}{} => [host]", n.name),
            (Some(p), false) => {
                let what = if n.reused {
                    format!("mmld, already loaded, {how}")
                } else {
                    format!("mmld, {how}")
                };
                let again = match (n.repeat, &n.loaded_for) {
                    (false, _) => String::new(),
                    (true, Some(l)) => format!(" (listed under {l})"),
                    (true, None) => " (see above)".to_string(),
                };
                writeln!(s, "{indent}{} => {} [{what}]{again}", n.name, p.display())
            }
        };
    }
    s
}

/// One line of `mmld deps --json`.
#[derive(serde::Serialize)]
struct TreeNodeJson<'a> {
    name: &'a str,
    path: Option<String>,
    found_by: Option<String>,
    /// `host`, `mmld` or `missing`.
    provider: &'static str,
    reused: bool,
    repeat: bool,
    loaded_for: Option<&'a str>,
    needed_by: Option<&'a str>,
    depth: usize,
}

pub fn tree_json(tree: &[TreeNode]) -> serde_json::Result<String> {
    let nodes: Vec<TreeNodeJson<'_>> = tree
        .iter()
        .map(|n| TreeNodeJson {
            name: &n.name,
            path: n.path.as_ref().map(|p| p.display().to_string()),
            found_by: n.provenance.as_ref().map(|p| p.to_string()),
            provider: if n.host {
                "host"
            } else if n.path.is_some() {
                "mmld"
            } else {
                "missing"
            },
            reused: n.reused,
            repeat: n.repeat,
            loaded_for: n.loaded_for.as_deref(),
            needed_by: n.needed_by.as_deref(),
            depth: n.depth,
        })
        .collect();
    serde_json::to_string(&nodes)
}

/// `mmld check --json`.
#[derive(serde::Serialize)]
struct CheckJson<'a> {
    library: String,
    ok: bool,
    mapped: &'a [String],
    unresolved: Vec<UnresolvedJson<'a>>,
}

/// One unresolved reference: the symbol (`name@version` where versioned)
/// and the object that refers to it.
#[derive(serde::Serialize)]
struct UnresolvedJson<'a> {
    symbol: &'a str,
    object: &'a str,
}

pub fn check_json(library: &Path, report: &CheckReport) -> serde_json::Result<String> {
    serde_json::to_string(&CheckJson {
        library: library.display().to_string(),
        ok: report.unresolved.iter().all(|(_, names)| names.is_empty()),
        mapped: &report.mapped,
        unresolved: report
            .unresolved
            .iter()
            .flat_map(|(object, names)| {
                names
                    .iter()
                    .map(move |n| UnresolvedJson { symbol: n, object })
            })
            .collect(),
    })
}
