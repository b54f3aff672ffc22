//! `mmld` command-line entry point.

mod cli;

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;

use cli::{Cli, Command, call};

fn init_tracing(flag: bool) {
    // Nothing from the environment in a setuid or setgid process.
    let spec =
        mmld::search::secure::env_var_os("MMLD_TRACE").map(|v| v.to_string_lossy().into_owned());
    let filter = match (flag, spec.as_deref()) {
        (true, _) | (_, Some("all" | "1")) => "mmld=debug".to_string(),
        (false, Some(list)) if !list.is_empty() => list
            .split(',')
            .map(|t| format!("mmld::{}=debug", t.trim()))
            .collect::<Vec<_>>()
            .join(","),
        _ => return,
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(true)
        .without_time()
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Exec { report, command } = &cli.command {
        // The program, not mmld, does the loading: nothing to trace here.
        return report_error(cli::exec::run(command, cli.trace, report.as_deref()));
    }
    init_tracing(cli.trace);
    report_error(dispatch(cli.command))
}

fn report_error(result: Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mmld: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Run {
            library,
            symbol,
            args,
            ret,
        } => run(&library, &symbol, &args, ret),
        Command::Info { library, json } => {
            let d = mmld::describe::describe(&library)?;
            if json {
                println!("{}", cli::info::to_json(&library, &d));
            } else {
                print!("{}", cli::info::to_text(&library, &d));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Deps { library, json } => {
            let (tree, errors) = mmld::dependency_tree(&library)?;
            if json {
                println!("{}", cli::info::tree_json(&tree));
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
        Command::Maps {
            library,
            pid,
            copy,
            call,
            ret,
            json,
            pictures,
        } => cli::maps::run(cli::maps::Options {
            library: library.as_deref(),
            pid,
            copy,
            call: call.as_deref(),
            ret,
            json,
            pictures,
        }),
        Command::Share {
            library,
            procs,
            strategy,
            call,
            ret,
            json,
            hold,
            timeout,
            pictures,
        } => cli::share::run(cli::share::Options {
            library,
            procs,
            strategy,
            call,
            ret,
            json,
            hold,
            timeout: std::time::Duration::from_secs(timeout),
            pictures,
        }),
        Command::ShareWorker {
            library,
            parent,
            strategy,
            call,
            ret,
        } => cli::share::worker(&library, parent, strategy, call.as_deref(), ret),
        Command::Check { library } => check(&library),
        Command::Exec { report, command } => cli::exec::run(&command, false, report.as_deref()),
    }
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
fn check(library: &std::path::Path) -> Result<ExitCode> {
    let report = mmld::OpenOptions::new()
        .check(library)
        .with_context(|| format!("{} would not load", library.display()))?;
    let mut bad = 0;
    for (object, names) in &report.unresolved {
        for n in names {
            println!("undefined symbol: {n} (in {object})");
            bad += 1;
        }
    }
    if bad > 0 {
        eprintln!("mmld: {}: {bad} undefined symbols", library.display());
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "{}: ok ({} objects mapped by mmld, all references resolved)",
        library.display(),
        report.reports.len()
    );
    Ok(ExitCode::SUCCESS)
}
