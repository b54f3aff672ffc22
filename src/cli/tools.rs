//! Output in the formats of the tools users know: `readelf -d` and
//! `readelf --dyn-syms` (`info --dynamic`, `info --dyn-syms`), `ldd`
//! (`deps --flat`), and the generated shell completions and manual page.
//!
//! Owns: presentation only. Must never: compute facts about a file (the
//! library does that) or run any of it.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use anyhow::Result;
use goblin::elf::dynamic as dt;
use goblin::elf::sym;
use mmld::{Description, TreeNode};

/// `readelf -d`.
pub fn dynamic_text(d: &Description) -> String {
    let mut s = String::new();
    let n = d.dynamic.len();
    let _ = writeln!(
        s,
        "Dynamic section contains {n} {}:",
        plural(n, "entry", "entries")
    );
    let _ = writeln!(s, "  {:<18} {:<28} Name/Value", "Tag", "Type");
    for e in &d.dynamic {
        let name = dt::tag_to_str(e.tag);
        let name = name.strip_prefix("DT_").unwrap_or(name);
        let ty = format!("({})", if name.is_empty() { "UNKNOWN" } else { name });
        let _ = writeln!(s, " {:#018x} {:<28} {}", e.tag, ty, dynamic_value(e));
    }
    s
}

fn dynamic_value(e: &mmld::DynamicEntry) -> String {
    let text = e.string.as_deref().unwrap_or("?");
    match e.tag {
        dt::DT_NEEDED => format!("Shared library: [{text}]"),
        dt::DT_SONAME => format!("Library soname: [{text}]"),
        dt::DT_RPATH => format!("Library rpath: [{text}]"),
        dt::DT_RUNPATH => format!("Library runpath: [{text}]"),
        dt::DT_PLTRELSZ
        | dt::DT_RELASZ
        | dt::DT_RELAENT
        | dt::DT_STRSZ
        | dt::DT_SYMENT
        | dt::DT_INIT_ARRAYSZ
        | dt::DT_FINI_ARRAYSZ
        | dt::DT_RELSZ
        | dt::DT_RELENT
        | 35  // DT_RELRSZ
        | 37 => format!("{} (bytes)", e.value), // DT_RELRENT
        dt::DT_RELACOUNT | dt::DT_RELCOUNT | dt::DT_VERDEFNUM | dt::DT_VERNEEDNUM => {
            e.value.to_string()
        }
        dt::DT_PLTREL => dt::tag_to_str(e.value)
            .trim_start_matches("DT_")
            .to_string(),
        dt::DT_FLAGS => bit_names(e.value, &[
            (dt::DF_ORIGIN, "ORIGIN"),
            (dt::DF_SYMBOLIC, "SYMBOLIC"),
            (dt::DF_TEXTREL, "TEXTREL"),
            (dt::DF_BIND_NOW, "BIND_NOW"),
            (dt::DF_STATIC_TLS, "STATIC_TLS"),
        ]),
        dt::DT_FLAGS_1 => format!(
            "Flags: {}",
            bit_names(e.value, &[
                (dt::DF_1_NOW, "NOW"),
                (dt::DF_1_GLOBAL, "GLOBAL"),
                (dt::DF_1_GROUP, "GROUP"),
                (dt::DF_1_NODELETE, "NODELETE"),
                (dt::DF_1_INITFIRST, "INITFIRST"),
                (dt::DF_1_NOOPEN, "NOOPEN"),
                (dt::DF_1_ORIGIN, "ORIGIN"),
                (dt::DF_1_INTERPOSE, "INTERPOSE"),
                (dt::DF_1_NODEFLIB, "NODEFLIB"),
                (dt::DF_1_PIE, "PIE"),
            ])
        ),
        // Flags without a value.
        dt::DT_BIND_NOW | dt::DT_TEXTREL | dt::DT_SYMBOLIC => String::new(),
        _ => format!("{:#x}", e.value),
    }
}

fn bit_names(value: u64, names: &[(u64, &str)]) -> String {
    let mut out: Vec<String> = names
        .iter()
        .filter(|(bit, _)| value & bit != 0)
        .map(|(_, n)| n.to_string())
        .collect();
    let rest = names.iter().fold(value, |v, (bit, _)| v & !bit);
    if rest != 0 {
        out.push(format!("{rest:#x}"));
    }
    out.join(" ")
}

/// `readelf --dyn-syms`.
pub fn dyn_syms_text(d: &Description) -> String {
    let mut s = String::new();
    let n = d.symbols.len();
    let _ = writeln!(
        s,
        "Symbol table '.dynsym' contains {n} {}:",
        plural(n, "entry", "entries")
    );
    let _ = writeln!(
        s,
        "   Num:    Value          Size Type    Bind   Vis      Ndx Name"
    );
    for y in &d.symbols {
        let kind = match y.kind {
            sym::STT_GNU_IFUNC => "IFUNC".to_string(),
            k => sym::type_to_str(k).to_string(),
        };
        let bind = match y.bind {
            sym::STB_GNU_UNIQUE => "UNIQUE".to_string(),
            b => sym::bind_to_str(b).to_string(),
        };
        let vis = sym::visibility_to_str(y.visibility);
        let ndx = match y.section {
            0 => "UND".to_string(),
            0xfff1 => "ABS".to_string(),
            0xfff2 => "COM".to_string(),
            n => n.to_string(),
        };
        let name = match (&y.version, y.section) {
            // A version's own definition symbol: readelf prints the name alone.
            (Some(v), _) if *v == y.name => y.name.clone(),
            (Some(v), 0) => format!("{}@{v}", y.name),
            (Some(v), _) if y.hidden => format!("{}@{v}", y.name),
            (Some(v), _) => format!("{}@@{v}", y.name),
            (None, _) => y.name.clone(),
        };
        // readelf switches to hex where decimal would not fit the column.
        let size = if y.size > 99_999 {
            format!("{:#x}", y.size)
        } else {
            y.size.to_string()
        };
        let _ = writeln!(
            s,
            "{:>6}: {:016x} {:>5} {:<7} {:<6} {:<8} {:>3} {name}",
            y.index, y.value, size, kind, bind, vis, ndx
        );
    }
    s
}

/// `ldd`: each library once, breadth-first (the order glibc loads them),
/// `name => path (address)`, and `name => not found` for the missing.
/// `host` gives the address of an object the host (glibc) loaded.
pub fn ldd_text(tree: &[TreeNode], host: &dyn Fn(&Path) -> Option<u64>) -> String {
    let mut s = String::new();
    let mut seen = std::collections::HashSet::new();
    let mut order: Vec<&TreeNode> = tree.iter().skip(1).collect();
    // Stable: within a level, the tree's (DT_NEEDED) order.
    order.sort_by_key(|n| n.depth);
    for n in order {
        if !seen.insert((n.name.clone(), n.path.clone())) {
            continue;
        }
        let _ = match &n.path {
            None => writeln!(s, "\t{} => not found", n.name),
            Some(p) => {
                let addr = n.load_address.or_else(|| host(p));
                match addr {
                    Some(a) => writeln!(s, "\t{} => {} ({a:#018x})", n.name, p.display()),
                    None => writeln!(s, "\t{} => {}", n.name, p.display()),
                }
            }
        };
    }
    s
}

/// "1 object", "2 objects".
pub fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        one.to_string()
    } else {
        many.to_string()
    }
}

/// `mmld completions SHELL`.
pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    let mut cmd = super::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut cmd, "mmld", &mut out);
    out.flush()?;
    Ok(())
}

/// `mmld man`.
pub fn man() -> Result<()> {
    let mut out = std::io::stdout().lock();
    clap_mangen::Man::new(super::command()).render(&mut out)?;
    out.flush()?;
    Ok(())
}
