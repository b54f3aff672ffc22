//! `mmld` command-line entry point.

mod cli;

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;

use cli::{Cli, Command, call, tools};

fn main() -> ExitCode {
    restore_sigpipe();
    let cli = Cli::parse();
    if let Command::Exec { report, command } = &cli.command {
        // The program, not mmld, does the loading: nothing to trace here.
        return report_error(cli::exec::run(command, cli.trace, report.as_deref()), false);
    }
    let trace = cli::trace::TraceArgs {
        flag: cli.trace,
        file: cli.trace_file,
    };
    cli::trace::init(&trace);
    let worker = matches!(cli.command, Command::ShareWorker { .. });
    report_error(dispatch(cli.command, trace), worker)
}

/// Print a command's error (a share worker's goes to its parent) and turn
/// it into the exit status.
fn report_error(result: Result<ExitCode>, worker: bool) -> ExitCode {
    match result {
        Ok(code) => code,
        // A share worker's error goes to the parent, which reports the
        // first one once (see cli::share::FAILED).
        Err(e) if worker => {
            println!("{}{e:#}", cli::share::FAILED);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("mmld: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Rust ignores SIGPIPE, so a write to a closed pipe (`mmld info --json
/// LIB | head -c 10`) is an error that `println!` turns into a panic. A
/// Unix tool ends quietly instead: restore the default action, under which
/// the kernel ends the process as it would end `cat`.
fn restore_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_DFL installs no
    // handler and touches no memory; it happens before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn dispatch(command: Command, trace: cli::trace::TraceArgs) -> Result<ExitCode> {
    match command {
        Command::Run {
            library,
            symbol,
            args,
            ret,
        } => run(&library, &symbol, &args, ret),
        Command::Info {
            library,
            json,
            dyn_syms,
            dynamic,
        } => info(&library, json, dyn_syms, dynamic),
        Command::Deps {
            library,
            json,
            flat,
        } => deps(&library, json, flat),
        Command::Maps {
            library,
            pid,
            copy,
            mut call,
            ret,
            json,
            pictures,
        } => {
            let library = cli::library_after_call(library, &mut call)?;
            if library.is_none() && pid.is_none() {
                bail!("maps needs a LIBRARY or --pid PID");
            }
            cli::maps::run(cli::maps::Options {
                library: library.as_deref(),
                pid,
                copy,
                call: call.as_deref(),
                ret,
                json,
                pictures,
            })
        }
        Command::Share {
            library,
            procs,
            pids,
            strategy,
            mut call,
            ret,
            json,
            hold,
            timeout,
            pictures,
        } => {
            let Some(library) = cli::library_after_call(library, &mut call)? else {
                bail!("share needs a LIBRARY");
            };
            cli::share::run(cli::share::Options {
                trace,
                library,
                procs,
                pids,
                strategy,
                call,
                ret,
                json,
                hold,
                timeout: std::time::Duration::from_secs(timeout),
                pictures,
            })
        }
        Command::ShareWorker {
            library,
            parent,
            strategy,
            call,
            ret,
        } => cli::share::worker(&library, parent, strategy, call.as_deref(), ret),
        Command::Check { library, json } => check(&library, json),
        Command::Completions { shell } => tools::completions(shell).map(|()| ExitCode::SUCCESS),
        Command::Man => tools::man().map(|()| ExitCode::SUCCESS),
        Command::Exec { report, command } => {
            cli::exec::run(&command, trace.flag, report.as_deref())
        }
    }
}

/// `mmld info`: the summary, JSON, or readelf's tables.
fn info(library: &std::path::Path, json: bool, dyn_syms: bool, dynamic: bool) -> Result<ExitCode> {
    let d = mmld::describe(library)?;
    if json {
        println!("{}", cli::info::to_json(library, &d)?);
    } else if dyn_syms || dynamic {
        if dynamic {
            print!("{}", tools::dynamic_text(&d));
        }
        if dyn_syms {
            if dynamic {
                println!();
            }
            print!("{}", tools::dyn_syms_text(&d));
        }
    } else {
        print!("{}", cli::info::to_text(library, &d));
    }
    Ok(ExitCode::SUCCESS)
}

/// `mmld deps`: the tree (or ldd's flat list, which links in a dry run to
/// learn the addresses).
fn deps(library: &std::path::Path, json: bool, flat: bool) -> Result<ExitCode> {
    if flat {
        let report = mmld::OpenOptions::new()
            .check(library)
            .with_context(|| format!("{} would not load", library.display()))?;
        // A host object's address: where its file offset 0 is mapped here
        // (its first PT_LOAD, at address 0 in every shared object).
        let vmas = mmld::inspect::read_vmas(mmld::inspect::Pid::Myself, false)?;
        let host = |p: &std::path::Path| {
            let p = std::fs::canonicalize(p).ok()?;
            vmas.iter()
                .find(|v| v.offset == 0 && v.path.as_deref() == Some(p.as_path()))
                .map(|v| v.start)
        };
        print!("{}", tools::ldd_text(&report.tree, &host));
        return Ok(ExitCode::SUCCESS);
    }
    let (tree, errors) = mmld::dependency_tree(library)?;
    if json {
        println!("{}", cli::info::tree_json(&tree)?);
    } else {
        print!("{}", cli::info::tree_text(&tree));
    }
    for e in &errors {
        eprintln!("mmld: {e}");
    }
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `mmld run`: call one function of a library with the given arguments.
fn run(
    library: &std::path::Path,
    symbol: &str,
    args: &[String],
    ret: call::Ret,
) -> Result<ExitCode> {
    let parsed = args
        .iter()
        .map(|a| call::parse_arg(a))
        .collect::<Result<Vec<_>>>()?;
    let regs = call::assign(&parsed)?;
    // SAFETY: running a library is what the user asked for.
    let lib = unsafe { mmld::Library::open(library) }?;
    let info = lib.symbol_info(symbol)?;
    match info.kind {
        mmld::SymbolKind::Function | mmld::SymbolKind::IndirectFunction if info.in_code => {}
        kind => bail!(
            "{}: {symbol} is not a function (it is {}, defined in {})",
            library.display(),
            match kind {
                mmld::SymbolKind::Object => "a data object",
                mmld::SymbolKind::ThreadLocal => "a thread-local variable",
                mmld::SymbolKind::Other => "not a function symbol of an mmld-loaded object",
                _ => "outside every executable segment",
            },
            info.object
        ),
    }
    // SAFETY: the symbol is a function in an executable segment of a
    // library we keep loaded; its prototype is the user's claim.
    let out = unsafe { call::call(info.address, &regs, ret) }?;
    if let Some(line) = out {
        println!("{line}");
    }
    drop(parsed);
    drop(lib);
    Ok(ExitCode::SUCCESS)
}

/// `mmld check`: load and link without running, list undefined symbols.
fn check(library: &std::path::Path, json: bool) -> Result<ExitCode> {
    let report = mmld::OpenOptions::new()
        .check(library)
        .with_context(|| format!("{} would not load", library.display()))?;
    let bad: usize = report.unresolved.iter().map(|(_, n)| n.len()).sum();
    if json {
        println!("{}", cli::info::check_json(library, &report)?);
        return Ok(if bad == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    for (object, names) in &report.unresolved {
        for n in names {
            println!("undefined symbol: {n} (in {object})");
        }
    }
    if bad > 0 {
        eprintln!(
            "mmld: {}: {bad} undefined {}",
            library.display(),
            tools::plural(bad, "symbol", "symbols")
        );
        return Ok(ExitCode::FAILURE);
    }
    let n = report.mapped.len();
    println!(
        "{}: ok ({n} {} mapped by mmld, all references resolved)",
        library.display(),
        tools::plural(n, "object", "objects")
    );
    Ok(ExitCode::SUCCESS)
}
