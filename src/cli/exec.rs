//! `mmld exec`: run a program with the C ABI drop-in preloaded.
//!
//! Owns: finding `libmmld.so` (next to the `mmld` binary, where `cargo
//! build` puts it), the child's environment (`LD_PRELOAD`, `MMLD_TRACE`,
//! `MMLD_REPORT`) and replacing this process with the program, so its exit
//! status and signals are the program's own. Must never: load anything
//! into this process.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The drop-in: `libmmld.so` in the directory of the running `mmld`.
pub fn drop_in() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the mmld binary")?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let candidate = dir.join("libmmld.so");
    if candidate.is_file() {
        return Ok(candidate);
    }
    bail!(
        "{} not found (build it with `cargo build --release`, which builds the drop-in next to mmld)",
        candidate.display()
    )
}

/// Run `command` with the drop-in; returns only on failure to start it.
pub fn run(
    command: &[OsString],
    trace: Option<&str>,
    report: Option<&Path>,
) -> Result<std::process::ExitCode> {
    let Some((program, args)) = command.split_first() else {
        bail!("no program given (usage: mmld exec [--report FILE] -- PROGRAM [ARGS...])");
    };
    let lib = drop_in()?;
    let mut preload = OsString::from(&lib);
    if let Some(existing) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(":");
        preload.push(existing);
    }
    let mut child = std::process::Command::new(program);
    child.args(args).env("LD_PRELOAD", preload);
    if let Some(categories) = trace.filter(|_| std::env::var_os("MMLD_TRACE").is_none()) {
        child.env("MMLD_TRACE", categories);
    }
    if let Some(path) = report {
        // Each process of the run appends its block; start from empty.
        std::fs::write(path, b"")
            .with_context(|| format!("creating the report {}", path.display()))?;
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        child.env("MMLD_REPORT", absolute);
    }
    let err = child.exec();
    Err(err).with_context(|| format!("running {}", program.to_string_lossy()))
}
