//! `mmld maps`: a loaded library's mappings, annotated; or any process's.
//!
//! Owns: loading (and optionally calling into) the library for `maps`, and
//! the one "call SYMBOL with ARGS" helper `maps` and `share` workers use.
//! Must never: measure anything itself; the numbers come from
//! `mmld::inspect`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use mmld::inspect::{self, ObjectLayout, Pid};

use super::call;

/// `SYMBOL [ARGS]...` from the command line, parsed before loading so a bad
/// argument fails before any library code runs.
pub struct PreparedCall {
    symbol: String,
    words: Vec<String>,
    args: Vec<call::Arg>,
    regs: call::Registers,
    ret: call::Ret,
}

impl PreparedCall {
    pub fn parse(words: &[String], ret: call::Ret) -> Result<PreparedCall> {
        let Some((symbol, rest)) = words.split_first() else {
            bail!("--call needs a symbol name");
        };
        let args = rest
            .iter()
            .map(|a| call::parse_arg(a))
            .collect::<Result<Vec<_>>>()?;
        let regs = call::assign(&args)?;
        Ok(PreparedCall {
            symbol: symbol.clone(),
            words: rest.to_vec(),
            args,
            regs,
            ret,
        })
    }

    /// Call the function in `lib`; returns `symbol(args) = result`.
    pub fn invoke(&self, lib: &mmld::Library, path: &Path) -> Result<String> {
        let info = lib.symbol_info(self.symbol.as_str())?;
        match info.kind {
            mmld::SymbolKind::Function | mmld::SymbolKind::IndirectFunction if info.in_code => {}
            _ => bail!(
                "{}: {} is not a function of an mmld-loaded object (defined in {})",
                path.display(),
                self.symbol,
                info.object
            ),
        }
        // The registers hold pointers into `self.args`' strings, which live
        // as long as `self`.
        let _keep = &self.args;
        // SAFETY: the symbol is a function in an executable segment of a
        // library the caller keeps loaded; its prototype is the user's claim,
        // as for `mmld run`.
        let out = unsafe { call::call(info.address, &self.regs, self.ret) }?;
        let shown = format!("{}({})", self.symbol, self.words.join(", "));
        Ok(match out {
            Some(v) => format!("{shown} = {v}"),
            None => shown,
        })
    }
}

/// Open `library` with the chosen strategy.
pub fn open(library: &Path, copy: bool) -> Result<mmld::Library> {
    // SAFETY: loading runs the library's constructors, which is what the
    // user asked for.
    let lib = unsafe { mmld::OpenOptions::new().copy_segments(copy).open(library) }?;
    Ok(lib)
}

pub fn run(
    library: Option<&Path>,
    pid: Option<i32>,
    copy: bool,
    call_words: Option<&[String]>,
    ret: call::Ret,
    json: bool,
) -> Result<ExitCode> {
    if let Some(pid) = pid {
        let report = inspect::maps::maps_of_process(Pid::Other(pid))
            .with_context(|| format!("inspecting process {pid}"))?;
        if json {
            println!("{}", report.to_json(None));
        } else {
            print!("{}", report.to_text(None));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some(library) = library else {
        bail!("give a library to load, or --pid");
    };
    let prepared = call_words
        .map(|w| PreparedCall::parse(w, ret))
        .transpose()?;
    let lib = open(library, copy)?;
    let layouts = ObjectLayout::of_library(&lib, copy);
    let after_load = inspect::maps::maps_of_objects(Pid::Myself, &layouts)?;
    let (report, earlier, called) = match &prepared {
        Some(p) => {
            let called = p.invoke(&lib, library)?;
            let after = inspect::maps::maps_of_objects(Pid::Myself, &layouts)?;
            (after, Some(after_load), Some(called))
        }
        None => (after_load, None, None),
    };
    if json {
        let mut v = report.to_json(earlier.as_ref());
        v["called"] = serde_json::json!(called);
        println!("{v}");
    } else {
        if let Some(c) = &called {
            println!("called {c}; resident counts are after load → after the call\n");
        }
        print!("{}", report.to_text(earlier.as_ref()));
        let host = lib.host_dependencies();
        if !host.is_empty() {
            println!(
                "bound from the host, not mapped by mmld: {} (mmld maps --pid PID annotates those in any process)",
                host.join(" ")
            );
        }
    }
    drop(lib);
    Ok(ExitCode::SUCCESS)
}
