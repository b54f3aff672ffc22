//! The `mmld` command line: a clap front end over the public API.
//!
//! Owns: argument syntax, output formats and exit codes. Must never: reach
//! into the loader's internals; everything here goes through `mmld::*`.

pub mod call;
pub mod info;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "mmld",
    version,
    about = "A user-space dynamic loader for ELF shared objects, and a window onto mmap"
)]
pub struct Cli {
    /// Log what the loader does (like LD_DEBUG=libs,bindings): searches,
    /// mappings and every symbol binding. Same as MMLD_TRACE=all.
    #[arg(long, global = true)]
    pub trace: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Load a library, call one of its functions and print the result.
    #[command(
        after_help = "ARGS: an integer (decimal, negative or 0x hex) is passed as a 64-bit integer, a number like 1.5 or 2e3 as a double, anything else as a string. Prefixes force a type: i64: u64: i32: u32: f64: f32: str: ptr:.\nExample: mmld run testlibs/libdemo.so add 2 3"
    )]
    Run {
        /// The shared object to load.
        library: PathBuf,
        /// The function to call.
        symbol: String,
        /// Arguments (see below).
        #[arg(allow_negative_numbers = true)]
        args: Vec<String>,
        /// How to read the return value.
        #[arg(long, value_enum, default_value = "i64")]
        ret: call::Ret,
    },
    /// Describe a library like `readelf -d -l`, without running it.
    Info {
        library: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show the resolved dependency tree, like `ldd`, with how each library was found.
    Deps {
        library: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Load and link the whole tree without running any of its code (like
    /// `ldd -r`); exit 0 only if it would load.
    Check { library: PathBuf },
}
