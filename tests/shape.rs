//! The shape of `src/` that keeps mmld easy to change (see
//! docs/ARCHITECTURE.md): no import cycles between the top-level modules, no
//! file over 700 lines, no function over 100, no `too_many_arguments`
//! allowance, and no architecture's relocation names in `link/` or
//! `loader/` (they ask `arch/`).
//!
//! The checks read the source text: they are approximate (a `crate::`
//! path inside a string counts as an import), and err on the strict side.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        for entry in std::fs::read_dir(dir).expect("reading src/") {
            let path = entry.expect("reading src/").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("reading a source file");
                out.push((path, text));
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out.sort();
    out
}

/// The top-level module a file belongs to (`src/link/reloc.rs` → `link`).
/// The binary (`main.rs`, `cli/`) is its own crate and counts as one.
fn module_of(path: &Path) -> String {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let rel = path.strip_prefix(&src).unwrap_or(path);
    let first = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    if name == "main" || name == "cli" {
        "(binary)".into()
    } else {
        name
    }
}

fn strip_line_comments(text: &str) -> String {
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// First path segments after `crate::`, including every item of a
/// `crate::{a, b::c}` group.
fn crate_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => item_start = true,
                    c if c.is_whitespace() => {}
                    _ if item_start && depth == 1 => {
                        out.push(ident_at(&group[i..]).to_string());
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.push(ident_at(rest).to_string());
        }
    }
    out
}

/// Names the crate root re-exports, mapped to the module they come from.
fn root_reexports() -> BTreeMap<String, String> {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .expect("reading src/lib.rs");
    let mut out = BTreeMap::new();
    for item in lib.split("pub use ").skip(1) {
        let item = item.split(';').next().unwrap_or("");
        let Some((module, names)) = item.split_once("::") else {
            continue;
        };
        for name in names.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
            if !name.is_empty() {
                out.insert(name.to_string(), module.trim().to_string());
            }
        }
    }
    out
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let files = sources();
    let modules: BTreeSet<String> = files.iter().map(|(p, _)| module_of(p)).collect();
    let reexports = root_reexports();
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in &files {
        let from = module_of(path);
        for name in crate_paths(&strip_line_comments(text)) {
            let to = reexports.get(&name).cloned().unwrap_or(name);
            if to != from && modules.contains(&to) {
                deps.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    let reach = |start: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![start.to_string()];
        while let Some(m) = stack.pop() {
            for d in deps.get(&m).into_iter().flatten() {
                if seen.insert(d.clone()) {
                    stack.push(d.clone());
                }
            }
        }
        seen
    };
    let mut cycles = Vec::new();
    for a in &modules {
        for b in reach(a) {
            if a < &b && reach(&b).contains(a) {
                cycles.push(format!("{a} <-> {b}"));
            }
        }
    }
    assert!(cycles.is_empty(), "import cycles: {cycles:?}\n{deps:#?}");
    // The check sees the imports it must: LINK uses MAP, the loader uses
    // the registry.
    assert!(
        deps.get("link").is_some_and(|d| d.contains("map")),
        "{deps:#?}"
    );
    assert!(
        deps.get("loader").is_some_and(|d| d.contains("registry")),
        "{deps:#?}"
    );
}

/// Does this (trimmed) line start a function: `pub(crate) unsafe fn`, ...?
fn starts_fn(mut s: &str) -> bool {
    if let Some(rest) = s.strip_prefix("pub") {
        s = match rest.strip_prefix('(') {
            Some(r) => r.split_once(')').map_or("", |(_, r)| r),
            None => rest,
        }
        .trim_start();
    }
    for qualifier in ["const ", "async ", "unsafe ", "extern \"C\" "] {
        s = s.strip_prefix(qualifier).unwrap_or(s);
    }
    s.starts_with("fn ")
}

#[test]
fn files_and_functions_stay_short() {
    let mut long = Vec::new();
    for (path, text) in sources() {
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() > 700 {
            long.push(format!("{}: {} lines", path.display(), lines.len()));
        }
        if text.contains("too_many_arguments") {
            long.push(format!("{}: allows too_many_arguments", path.display()));
        }
        for (i, line) in lines.iter().enumerate() {
            let body = line.trim_start();
            let indent = line.len() - body.len();
            if !starts_fn(body) || line.trim_end().ends_with(';') {
                continue;
            }
            let close = format!("{}}}", " ".repeat(indent));
            let Some(len) = lines[i..].iter().position(|l| l.trim_end() == close) else {
                continue;
            };
            if len + 1 > 100 {
                long.push(format!(
                    "{}:{}: function of {} lines",
                    path.display(),
                    i + 1,
                    len + 1
                ));
            }
        }
    }
    assert!(long.is_empty(), "{long:#?}");
}

#[test]
fn link_and_loader_name_no_architecture_relocation() {
    let mut found = Vec::new();
    for (path, text) in sources() {
        let m = module_of(&path);
        if m != "link" && m != "loader" {
            continue;
        }
        for (i, line) in text.lines().enumerate() {
            if line.contains("R_X86_64_") || line.contains("arch::R_") {
                found.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "ask arch:: instead: {found:#?}");
}
