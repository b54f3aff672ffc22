//! `--trace`, `--trace-file` and `MMLD_TRACE`: which of the loader's
//! `tracing` events are printed, and where.
//!
//! Owns: the subscriber and its filter. Must never: fail a command because
//! tracing could not be set up (a warning is printed instead).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// The categories the loader reports under (`mmld::<category>` targets).
pub const CATEGORIES: &[&str] = &["libs", "bindings", "share"];

/// What to trace, from the command line and the environment.
#[derive(Debug, Clone, Default)]
pub struct TraceArgs {
    /// `--trace`.
    pub flag: bool,
    /// `--trace-file`.
    pub file: Option<PathBuf>,
}

impl TraceArgs {
    /// The same settings for a child `mmld` process (share's workers).
    pub fn child_args(&self) -> Vec<std::ffi::OsString> {
        let mut out = Vec::new();
        if self.flag {
            out.push("--trace".into());
        }
        if let Some(f) = &self.file {
            out.push("--trace-file".into());
            out.push(f.as_os_str().to_owned());
        }
        out
    }
}

/// The filter for `MMLD_TRACE`'s value (and the flag), and the
/// categories it names that mmld does not know.
pub fn filter(flag: bool, spec: Option<&str>) -> (Option<String>, Vec<String>) {
    match spec.map(str::trim) {
        Some("all" | "1") => (Some("mmld=debug".into()), Vec::new()),
        Some(list) if !list.is_empty() => {
            let (known, unknown): (Vec<&str>, Vec<&str>) = list
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .partition(|t| CATEGORIES.contains(t));
            let unknown = unknown.into_iter().map(String::from).collect();
            if known.is_empty() {
                return (flag.then(|| "mmld=debug".into()), unknown);
            }
            let f = known
                .iter()
                .map(|t| format!("mmld::{t}=debug"))
                .collect::<Vec<_>>()
                .join(",");
            (Some(f), unknown)
        }
        _ => (flag.then(|| "mmld=debug".into()), Vec::new()),
    }
}

/// Whether escape sequences may colour what goes to standard error: only
/// a terminal, and never with `NO_COLOR` set to anything non-empty
/// (<https://no-color.org>).
pub fn colour_stderr() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

/// Install the subscriber `args` and `MMLD_TRACE` ask for, if any.
pub fn init(args: &TraceArgs) {
    // Nothing from the environment in a setuid or setgid process.
    let spec =
        mmld::search::secure::env_var_os("MMLD_TRACE").map(|v| v.to_string_lossy().into_owned());
    let (filter, unknown) = filter(args.flag || args.file.is_some(), spec.as_deref());
    if !unknown.is_empty() {
        eprintln!(
            "mmld: warning: MMLD_TRACE: unknown {} {} (known: {}, or all)",
            if unknown.len() == 1 {
                "category"
            } else {
                "categories"
            },
            unknown.join(", "),
            CATEGORIES.join(", ")
        );
    }
    let Some(filter) = filter else { return };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_target(true)
        .without_time();
    let _ = match &args.file {
        Some(path) => match open_append(path) {
            Ok(file) => builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .try_init(),
            Err(e) => {
                eprintln!("mmld: warning: --trace-file {}: {e}", path.display());
                return;
            }
        },
        None => builder
            .with_ansi(colour_stderr())
            .with_writer(std::io::stderr)
            .try_init(),
    };
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    // Appending: share's workers write to the same file as the parent.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_checked() {
        assert_eq!(filter(false, None), (None, vec![]));
        assert_eq!(filter(true, None).0.as_deref(), Some("mmld=debug"));
        let (f, unknown) = filter(false, Some("libs,bogus"));
        assert_eq!(f.as_deref(), Some("mmld::libs=debug"));
        assert_eq!(unknown, vec!["bogus".to_string()]);
        assert_eq!(filter(false, Some("all")).0.as_deref(), Some("mmld=debug"));
    }
}
