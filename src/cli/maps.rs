//! `mmld maps`: a loaded library's mappings, annotated; or any process's.
//!
//! Owns: loading (and optionally calling into) the library for `maps`, and
//! the one "call SYMBOL with ARGS" helper `maps` and `share` workers use.
//! Must never: measure anything itself; the numbers come from
//! `mmld::inspect`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use mmld::inspect::picture::Picture;
use mmld::inspect::{self, ObjectLayout, Pid};

use super::call;
use super::pictures::PictureArgs;

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

/// What `mmld maps` was asked.
pub struct Options<'a> {
    pub library: Option<&'a Path>,
    pub pid: Option<i32>,
    pub copy: bool,
    pub call: Option<&'a [String]>,
    pub ret: call::Ret,
    pub json: bool,
    pub pictures: PictureArgs,
}

pub fn run(opts: Options<'_>) -> Result<ExitCode> {
    if let Some(pid) = opts.pid {
        let report = inspect::maps::maps_of_process(Pid::Other(pid))
            .with_context(|| format!("inspecting process {pid}"))?;
        let text = report.to_text(None);
        if opts.pictures.wanted() {
            let picture = Picture::of_maps(&report, None, &format!("mmld maps --pid {pid}"));
            opts.pictures.write(&picture, &text)?;
        }
        if opts.json {
            println!("{}", serde_json::to_string(&report.json(None))?);
        } else {
            print!("{text}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some(library) = opts.library else {
        bail!("give a library to load, or --pid");
    };
    let prepared = opts
        .call
        .map(|w| PreparedCall::parse(w, opts.ret))
        .transpose()?;
    let lib = open(library, opts.copy)?;
    let layouts = ObjectLayout::of_library(&lib, opts.copy);
    let after_load = inspect::maps::maps_of_objects(Pid::Myself, &layouts)?;
    let (report, earlier, called) = match &prepared {
        Some(p) => {
            let called = p.invoke(&lib, library)?;
            let after = inspect::maps::maps_of_objects(Pid::Myself, &layouts)?;
            (after, Some(after_load), Some(called))
        }
        None => (after_load, None, None),
    };
    let mut text = String::new();
    if let Some(c) = &called {
        text.push_str(&format!(
            "called {c}; resident counts are after load → after the call\n\n"
        ));
    }
    text.push_str(&report.to_text(earlier.as_ref()));
    let host = lib.host_dependencies();
    if !host.is_empty() {
        text.push_str(&format!(
            "bound from the host, not mapped by mmld: {} (mmld maps --pid PID annotates those in any process)\n",
            host.join(" ")
        ));
    }
    if opts.pictures.wanted() {
        let mut title = format!(
            "mmld maps {}{}",
            library.display(),
            if opts.copy { " --copy" } else { "" }
        );
        if let Some(c) = &called {
            title.push_str(&format!(", then {c}"));
        }
        let picture = Picture::of_maps(&report, earlier.as_ref(), &title);
        opts.pictures.write(&picture, &text)?;
    }
    if opts.json {
        /// The report with what the call returned (`null` without one).
        #[derive(serde::Serialize)]
        struct Called<'a> {
            #[serde(flatten)]
            report: inspect::json::MapsJson<'a>,
            called: Option<String>,
        }
        let v = Called {
            report: report.json(earlier.as_ref()),
            called,
        };
        println!("{}", serde_json::to_string(&v)?);
    } else {
        print!("{text}");
    }
    drop(lib);
    Ok(ExitCode::SUCCESS)
}
