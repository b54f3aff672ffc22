//! `--svg FILE` and `--html FILE` for `maps` and `share`.
//!
//! Owns: writing the picture files. Must never: draw or measure; the
//! picture comes from `mmld::inspect::picture`, drawn from the very report
//! the command prints.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use mmld::inspect::picture::Picture;
use mmld::inspect::svg;

/// Where to write the pictures, if anywhere.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PictureArgs {
    /// Also draw the mapping as an SVG picture into FILE: one cell per page
    /// (or per run of pages in large segments), coloured by state.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Also write a self-contained HTML page (the picture and the text
    /// report) into FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

impl PictureArgs {
    pub fn wanted(&self) -> bool {
        self.svg.is_some() || self.html.is_some()
    }

    /// Write what was asked. `text` is the text report, for the HTML page.
    pub fn write(&self, picture: &Picture, text: &str) -> Result<()> {
        if let Some(path) = &self.svg {
            write(path, &svg::svg(picture))?;
        }
        if let Some(path) = &self.html {
            write(path, &svg::html(picture, text))?;
        }
        Ok(())
    }
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents)
        .with_context(|| format!("{}: writing the picture", path.display()))
}
