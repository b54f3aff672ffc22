//! What `mmld exec --report FILE` writes: the libraries mmld loaded.
//!
//! Owns: remembering every object mmld mapped for a `dlopen` (path, how it
//! was found, address) and appending them to the file named by
//! `MMLD_REPORT` when the process exits, one block per process (children
//! inherit the variable). Must never: write anywhere in secure mode, or
//! write a partial line (each block is one `write`).

use std::io::Write;
use std::sync::Mutex;

use mmld_core::Library;

struct Line {
    path: String,
    found_by: String,
    base: u64,
    requested_as: String,
}

static LINES: Mutex<Vec<Line>> = Mutex::new(Vec::new());

fn lines() -> std::sync::MutexGuard<'static, Vec<Line>> {
    LINES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Remember what a `dlopen` of `requested` mapped (the root and the
/// dependencies mmld mapped with it). Each object is listed
/// once, the first time mmld mapped it.
pub fn record(lib: &Library, requested: &str) {
    let mut l = lines();
    for (i, o) in lib.objects().iter().enumerate() {
        let path = o.path.display().to_string();
        if l.iter().any(|x| x.path == path && x.base == o.base) {
            continue;
        }
        l.push(Line {
            path,
            found_by: o.found_by.clone(),
            base: o.base,
            requested_as: if i == 0 {
                requested.to_string()
            } else {
                format!("dependency of {}", lib.path().display())
            },
        });
    }
}

/// The file to write, when the user asked for a report.
pub fn target() -> Option<std::path::PathBuf> {
    crate::environment("MMLD_REPORT").map(std::path::PathBuf::from)
}

extern "C" fn write_at_exit() {
    let Some(path) = target() else { return };
    let program = std::env::args().next().unwrap_or_default();
    let mut text = format!(
        "# mmld report: pid {} ({program}): {} libraries loaded by mmld\n",
        std::process::id(),
        lines().len()
    );
    for l in lines().iter() {
        text.push_str(&format!(
            "mmld\t{:#x}\t{}\t{}\t({})\n",
            l.base, l.path, l.found_by, l.requested_as
        ));
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path);
    match file {
        Ok(mut f) => {
            if let Err(e) = f.write_all(text.as_bytes()) {
                eprintln!("mmld: writing the report {}: {e}", path.display());
            }
        }
        Err(e) => eprintln!("mmld: opening the report {}: {e}", path.display()),
    }
}

/// Write the report at exit (once per process).
pub fn install() {
    if target().is_some() {
        // SAFETY: registers a plain function with no arguments.
        unsafe { libc::atexit(write_at_exit) };
    }
}
