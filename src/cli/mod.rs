//! The `mmld` command line: a clap front end over the public API.
//!
//! Owns: argument syntax, output formats and exit codes. Must never: reach
//! into the loader's internals; everything here goes through `mmld::*`.

pub mod call;
pub mod exec;
pub mod info;
pub mod maps;
mod peek;
pub mod pictures;
pub mod share;
pub mod share_relocations;
pub mod tools;
pub mod trace;

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
    /// mappings and every symbol binding. Same as MMLD_TRACE=all;
    /// --trace=CATEGORIES picks some (libs, bindings, share).
    #[arg(
        long,
        global = true,
        value_name = "CATEGORIES",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "all"
    )]
    pub trace: Option<String>,
    /// Write the trace to FILE (appending) instead of standard error;
    /// implies --trace unless MMLD_TRACE picks categories.
    #[arg(long, global = true, value_name = "FILE")]
    pub trace_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Load a library, call one of its functions and print the result.
    #[command(
        after_help = "ARGS: an integer (decimal, negative or 0x hex) is passed as a 64-bit integer, a number like 1.5 or 2e3 as a double, anything else as a string. Prefixes force a type: i64: u64: i32: u32: f64: f32: str: ptr:. A string that starts with '-' needs str: (str:-v).\nExample: mmld run testlibs/libdemo.so add 2 3"
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
        #[command(flatten)]
        relocs: share_relocations::ShareRelocArgs,
    },
    /// Describe a library like `readelf -d -l`, without running it.
    Info {
        /// The shared object to describe.
        library: PathBuf,
        /// Print JSON instead of text (with every dynamic entry and symbol).
        #[arg(long, conflicts_with_all = ["dyn_syms", "dynamic"])]
        json: bool,
        /// Print the dynamic symbol table, like `readelf --dyn-syms`.
        #[arg(long)]
        dyn_syms: bool,
        /// Print the dynamic section, like `readelf -d`.
        #[arg(long)]
        dynamic: bool,
    },
    /// Show the resolved dependency tree, like `ldd`, with how each library was found.
    Deps {
        /// The shared object whose dependencies to resolve.
        library: PathBuf,
        /// Print JSON instead of text.
        #[arg(long, conflicts_with = "flat")]
        json: bool,
        /// Print each library once, in ldd's own format, with the address
        /// it would be loaded at (links without running, like `check`).
        #[arg(long)]
        flat: bool,
    },
    /// Load and link the whole tree without running any of its code (like
    /// `ldd -r`); exit 0 only if it would load.
    Check {
        /// The shared object to check.
        library: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a completion script for SHELL on standard output.
    #[command(
        after_help = "Examples:\n  mmld completions bash > ~/.local/share/bash-completion/completions/mmld\n  mmld completions zsh > ~/.zfunc/_mmld\n  mmld completions fish > ~/.config/fish/completions/mmld.fish"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) on standard output.
    #[command(after_help = "Example: mmld man > mmld.1 && man ./mmld.1")]
    Man,
    /// Show the /proc/PID/maps lines of a loaded library, annotated: role
    /// (text, rodata, RELRO, data, .bss, gap), sections, resident pages.
    #[command(
        after_help = "resident: pages present in the process's page tables (/proc/PID/pagemap, what smaps calls Rss).\ncached: pages of the file in the page cache (mincore), whoever read them.\nWith --call, resident counts show as 'after load → after the call'.\nExamples:\n  mmld maps testlibs/libdemo.so --call add 2 3\n  mmld maps testlibs/libdemo.so --svg libdemo.svg\n  mmld maps --pid $$"
    )]
    Maps {
        /// The shared object to load (not with --pid). It may follow
        /// --call's arguments: `maps --call add 2 3 LIBRARY`.
        #[arg(conflicts_with = "pid")]
        library: Option<PathBuf>,
        /// Annotate every mapped ELF file of this process instead.
        #[arg(long)]
        pid: Option<i32>,
        /// Load with the read strategy (segments copied into anonymous memory).
        #[arg(long, conflicts_with = "pid")]
        copy: bool,
        /// After loading, call SYMBOL with ARGS (as `mmld run` does). Without
        /// a LIBRARY before it, its last value is the LIBRARY.
        #[arg(long, num_args = 1.., value_name = "SYMBOL [ARGS]", allow_negative_numbers = true, conflicts_with = "pid")]
        call: Option<Vec<String>>,
        /// How to read the called function's return value.
        #[arg(long, value_enum, default_value = "i64")]
        ret: call::Ret,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pictures: pictures::PictureArgs,
        /// With --pid, DIR marks the mappings from its cache files; otherwise
        /// the library is loaded with the relocation cache in DIR.
        #[command(flatten)]
        relocs: share_relocations::ShareRelocArgs,
    },
    /// Load a library in N worker processes and measure how its pages are
    /// shared: smaps per segment, and physical pages when privileged.
    #[command(
        after_help = "With --svg/--html, one strip per worker; the same physical frame carries the same coloured mark in every strip.\nExample: mmld share testlibs/libdemo.so --procs 4 --call counter_bump --html share.html"
    )]
    Share {
        /// The shared object to load. It may follow --call's arguments:
        /// `share --call counter_bump LIBRARY`.
        library: Option<PathBuf>,
        /// How many worker processes.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
        procs: u32,
        /// Measure these running processes instead of starting workers
        /// (`--pid 1234,5678` or `--pid 1234 --pid 5678`): LIBRARY as each
        /// has it mapped, whoever loaded it.
        #[arg(long = "pid", value_name = "PID", value_delimiter = ',', conflicts_with_all = ["procs", "call", "hold", "strategy", "share_relocations"])]
        pids: Vec<i32>,
        /// mmap: map segments from the file (shared page cache); read: copy
        /// them into anonymous memory.
        #[arg(long, value_enum, default_value = "mmap")]
        strategy: share::StrategyArg,
        /// Each worker calls SYMBOL with ARGS after loading. Without a
        /// LIBRARY before it, its last value is the LIBRARY.
        #[arg(long, num_args = 1.., value_name = "SYMBOL [ARGS]", allow_negative_numbers = true)]
        call: Option<Vec<String>>,
        /// How to read the called function's return value.
        #[arg(long, value_enum, default_value = "i64")]
        ret: call::Ret,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Keep the workers alive after the report until standard input
        /// closes (or Ctrl-C), to look at them with other tools.
        #[arg(long)]
        hold: bool,
        /// Seconds to wait for the workers to load the library.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        #[command(flatten)]
        pictures: pictures::PictureArgs,
        /// The workers load with the relocation cache in DIR (one warm-up
        /// worker writes it first), and as many load normally for comparison.
        #[command(flatten)]
        relocs: share_relocations::ShareRelocArgs,
    },
    /// Run a program with libmmld.so preloaded: every dlopen it makes is
    /// served by mmld (the C ABI drop-in); --trace logs what mmld does.
    #[command(after_help = "Example: mmld exec --report libs.txt -- python3 -c 'import sqlite3'")]
    Exec {
        /// At exit, write the libraries mmld loaded (address, path, how found).
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// The program and its arguments.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            required = true,
            value_name = "PROGRAM [ARGS]"
        )]
        command: Vec<std::ffi::OsString>,
    },
    /// Internal: one worker of `mmld share`.
    #[command(name = "__share-worker", hide = true)]
    ShareWorker {
        library: PathBuf,
        #[arg(long)]
        parent: i32,
        #[arg(long, value_enum)]
        strategy: share::StrategyArg,
        #[arg(long, num_args = 1.., allow_negative_numbers = true)]
        call: Option<Vec<String>>,
        #[arg(long, value_enum, default_value = "i64")]
        ret: call::Ret,
        #[command(flatten)]
        relocs: share_relocations::ShareRelocArgs,
    },
}

/// The LIBRARY of `maps` and `share`: given as itself, or as the last value
/// of a `--call` that swallowed it (clap's usage line puts LIBRARY after
/// the options, and `--call` takes every value that follows it).
pub fn library_after_call(
    library: Option<PathBuf>,
    call: &mut Option<Vec<String>>,
) -> anyhow::Result<Option<PathBuf>> {
    if library.is_some() {
        return Ok(library);
    }
    match call {
        Some(words) if words.len() >= 2 => Ok(words.pop().map(PathBuf::from)),
        Some(_) => anyhow::bail!(
            "--call SYMBOL needs a LIBRARY: mmld maps --call SYMBOL [ARGS]... LIBRARY"
        ),
        None => Ok(None),
    }
}

/// The command line as clap sees it, for completions and the manual.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
