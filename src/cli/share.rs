//! `mmld share`: load one library in N worker processes and measure how its
//! pages are shared.
//!
//! Owns: the workers' whole life. Each worker is this same binary run as
//! `mmld __share-worker`: it loads the library, optionally calls a function,
//! writes one line describing its mappings, then blocks reading its standard
//! input, which only the parent holds. The parent measures, then closes the
//! workers' standard input and reaps them. Workers are reaped on every path:
//! success, error (the [`Workers`] guard kills and waits on drop) and
//! Ctrl-C/SIGTERM/SIGHUP (caught, turned into an error, then the same
//! guard). If the parent is killed outright, each worker gets SIGKILL from
//! `PR_SET_PDEATHSIG`, and would see end-of-file on its standard input
//! anyway. Must never: leave a worker running or unreaped, or measure
//! anything itself (the numbers come from `mmld::inspect::share`).

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::ValueEnum;

use mmld::inspect::picture::Picture;
use mmld::inspect::{self, ObjectLayout};

use super::call;
use super::maps::{PreparedCall, open};
use super::pictures::PictureArgs;

/// How the workers load the library.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StrategyArg {
    /// `MAP_PRIVATE` file mappings: text shared through the page cache.
    Mmap,
    /// Segments copied into anonymous memory (`OpenOptions::copy_segments`).
    Read,
}

impl StrategyArg {
    fn name(self) -> &'static str {
        match self {
            StrategyArg::Mmap => "mmap",
            StrategyArg::Read => "read",
        }
    }
}

/// The line a worker writes when it is ready starts with this, so anything
/// the library itself prints to stdout is skipped.
const READY: &str = "MMLD-SHARE-WORKER ";

/// A worker that fails writes its error on a line starting with this
/// instead of on standard error, so that N workers failing the same way
/// are reported once, by the parent.
pub const FAILED: &str = "MMLD-SHARE-WORKER-ERROR ";

/// Exit status after Ctrl-C, as shells report it.
const INTERRUPTED_EXIT: u8 = 130;

#[derive(Debug)]
pub struct Options {
    pub trace: super::trace::TraceArgs,
    pub library: PathBuf,
    pub procs: u32,
    /// Measure these running processes instead of starting workers.
    pub pids: Vec<i32>,
    pub strategy: StrategyArg,
    pub call: Option<Vec<String>>,
    pub ret: call::Ret,
    pub json: bool,
    pub hold: bool,
    pub timeout: Duration,
    pub pictures: PictureArgs,
}

#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
struct Interrupted;

pub fn run(opts: Options) -> Result<ExitCode> {
    // Fail on bad arguments before starting anything.
    if let Some(words) = &opts.call {
        PreparedCall::parse(words, opts.ret)?;
    }
    // A missing file is one clear error, not one per worker.
    std::fs::File::open(&opts.library)
        .with_context(|| format!("{}: cannot open", opts.library.display()))?;
    if !opts.pids.is_empty() {
        return running(&opts);
    }
    sys::catch_termination_signals()?;
    match run_workers(&opts) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.is::<Interrupted>() => {
            eprintln!("mmld: interrupted; all workers stopped and reaped");
            Ok(ExitCode::from(INTERRUPTED_EXIT))
        }
        Err(e) => Err(e),
    }
}

fn run_workers(opts: &Options) -> Result<()> {
    let exe = std::env::current_exe().context("finding the mmld executable to start workers")?;
    let ret = opts
        .ret
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_else(|| "i64".into());
    let mut workers = Workers::default();
    for _ in 0..opts.procs {
        let mut cmd = Command::new(&exe);
        cmd.args(opts.trace.child_args())
            .arg("__share-worker")
            .arg(&opts.library)
            .arg("--parent")
            .arg(std::process::id().to_string())
            .arg("--strategy")
            .arg(opts.strategy.name())
            .arg("--ret")
            .arg(&ret);
        if let Some(words) = &opts.call {
            cmd.arg("--call").args(words);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting a worker ({})", exe.display()))?;
        workers.0.push(WorkerProc {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            child,
            buffer: Vec::new(),
            ready: None,
        });
        check_interrupt()?;
    }
    workers.wait_ready(Instant::now() + opts.timeout)?;

    let measured: Vec<inspect::share::Worker> = workers
        .0
        .iter()
        .map(|w| {
            let ready = w
                .ready
                .as_ref()
                .ok_or_else(|| anyhow!("worker not ready"))?;
            Ok(inspect::share::Worker {
                pid: w.child.id() as i32,
                objects: ready.objects.clone(),
            })
        })
        .collect::<Result<_>>()?;
    let called = workers
        .0
        .first()
        .and_then(|w| w.ready.as_ref())
        .and_then(|r| r.called.clone());
    check_interrupt()?;
    let report = inspect::share::measure(
        &opts.library.display().to_string(),
        opts.strategy.name(),
        called,
        &measured,
    )?;
    show(opts, &report)?;
    if opts.hold {
        eprintln!(
            "mmld: holding {} workers (pid {}); close standard input (Ctrl-D) to release them",
            report.pids.len(),
            report
                .pids
                .iter()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        );
        wait_for_stdin_eof()?;
    }
    workers.release()?;
    // A signal that came with the end of input still counts.
    check_interrupt()
}

/// `share --pid`: the library as other processes (whoever loaded it) have
/// it mapped, measured the same way as the workers.
fn running(opts: &Options) -> Result<ExitCode> {
    let target = std::fs::canonicalize(&opts.library)
        .with_context(|| format!("{}: cannot resolve", opts.library.display()))?;
    let mut measured = Vec::new();
    for &pid in &opts.pids {
        let p = inspect::Pid::Other(pid);
        let vmas = inspect::read_vmas(p, false)?;
        let (found, _) = inspect::objects_in_process(p, &vmas)?;
        let objects: Vec<ObjectLayout> = found
            .into_iter()
            .map(|f| f.layout)
            .filter(|l| std::fs::canonicalize(&l.path).ok().as_ref() == Some(&target))
            .collect();
        if objects.is_empty() {
            bail!("process {pid} has not mapped {}", opts.library.display());
        }
        measured.push(inspect::share::Worker { pid, objects });
    }
    let report = inspect::share::measure(
        &opts.library.display().to_string(),
        "as found",
        None,
        &measured,
    )?;
    show(opts, &report)?;
    Ok(ExitCode::SUCCESS)
}

/// Write the pictures asked for, then print the report.
fn show(opts: &Options, report: &inspect::share::ShareReport) -> Result<()> {
    let text = report.to_text();
    if opts.pictures.wanted() {
        opts.pictures.write(&Picture::of_share(report), &text)?;
    }
    let mut out = std::io::stdout().lock();
    if opts.json {
        writeln!(out, "{}", serde_json::to_string(&report.json())?)?;
    } else {
        write!(out, "{text}")?;
    }
    out.flush()?;
    Ok(())
}

fn check_interrupt() -> Result<()> {
    if sys::interrupted() {
        return Err(Interrupted.into());
    }
    Ok(())
}

fn wait_for_stdin_eof() -> Result<()> {
    let stdin = std::io::stdin();
    let fd = stdin.as_raw_fd();
    let mut buf = [0u8; 512];
    loop {
        check_interrupt()?;
        match sys::poll_readable(&[fd], 100)?.first() {
            Some(true) => {}
            _ => continue,
        }
        match stdin.lock().read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading standard input"),
        }
    }
}

struct WorkerProc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    buffer: Vec<u8>,
    ready: Option<Ready>,
}

/// What a worker's ready line carries after [`READY`]: the layouts of the
/// objects it mapped and what the call it made returned.
#[derive(serde::Serialize, serde::Deserialize)]
struct Ready {
    pid: u32,
    objects: Vec<ObjectLayout>,
    called: Option<String>,
}

/// Every worker started so far. Dropping it kills and reaps any still
/// running; [`Workers::release`] lets them finish normally instead.
#[derive(Default)]
struct Workers(Vec<WorkerProc>);

impl Workers {
    /// Read each worker's ready line, until all are ready, one fails, the
    /// deadline passes or a signal arrives.
    fn wait_ready(&mut self, deadline: Instant) -> Result<()> {
        let mut chunk = [0u8; 4096];
        loop {
            check_interrupt()?;
            let waiting: Vec<usize> = (0..self.0.len())
                .filter(|&i| self.0[i].ready.is_none())
                .collect();
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} of {} workers did not finish loading in time (see --timeout)",
                    waiting.len(),
                    self.0.len()
                );
            }
            let fds: Vec<i32> = waiting
                .iter()
                .filter_map(|&i| self.0[i].stdout.as_ref().map(|s| s.as_raw_fd()))
                .collect();
            if fds.len() != waiting.len() {
                bail!("a worker's output pipe is gone");
            }
            let readable = sys::poll_readable(&fds, 100)?;
            for (&i, &ok) in waiting.iter().zip(&readable) {
                if !ok {
                    continue;
                }
                let w = &mut self.0[i];
                let Some(stdout) = w.stdout.as_mut() else {
                    continue;
                };
                let n = match stdout.read(&mut chunk) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e).context("reading a worker's output"),
                };
                if n == 0 {
                    let pid = w.child.id();
                    let status = w.child.wait().context("waiting for a worker")?;
                    bail!("worker {pid} exited before it was ready ({status})");
                }
                w.buffer.extend_from_slice(&chunk[..n]);
                while let Some(pos) = w.buffer.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = w.buffer.drain(..=pos).collect();
                    let line = String::from_utf8_lossy(&line);
                    if let Some(error) = line.trim_end().strip_prefix(FAILED) {
                        // The first failure is the report; the guard stops the rest.
                        bail!("worker {}: {error}", w.child.id());
                    }
                    if let Some(body) = line.trim_end().strip_prefix(READY) {
                        let v: Ready = serde_json::from_str(body).with_context(|| {
                            format!("worker {} sent a bad ready line", w.child.id())
                        })?;
                        w.ready = Some(v);
                        break;
                    }
                }
            }
        }
    }

    /// Close every worker's standard input and wait for it to exit (a few
    /// seconds at most, then SIGKILL).
    fn release(mut self) -> Result<()> {
        for w in &mut self.0 {
            w.stdin = None;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut failures = Vec::new();
        for w in &mut self.0 {
            let pid = w.child.id();
            match wait_until(&mut w.child, deadline)? {
                Some(status) if status.success() => {}
                Some(status) => failures.push(format!("worker {pid}: {status}")),
                None => {
                    let _ = w.child.kill();
                    let _ = w.child.wait();
                    failures.push(format!("worker {pid} did not exit; killed"));
                }
            }
        }
        self.0.clear();
        if !failures.is_empty() {
            bail!("workers did not exit cleanly: {}", failures.join("; "));
        }
        Ok(())
    }
}

fn wait_until(child: &mut Child, deadline: Instant) -> Result<Option<std::process::ExitStatus>> {
    loop {
        if let Some(s) = child.try_wait().context("waiting for a worker")? {
            return Ok(Some(s));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &mut self.0 {
            w.stdin = None;
            // A worker that already exited has been or will be reaped by
            // wait; kill only fails for one that is gone.
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
    }
}

/// The worker side: load, call, report, block until the parent lets go.
pub fn worker(
    library: &Path,
    parent: i32,
    strategy: StrategyArg,
    call_words: Option<&[String]>,
    ret: call::Ret,
) -> Result<ExitCode> {
    sys::die_with_parent(parent)?;
    let prepared = call_words
        .map(|w| PreparedCall::parse(w, ret))
        .transpose()?;
    let copy = strategy == StrategyArg::Read;
    let lib = open(library, copy)?;
    let called = match &prepared {
        Some(p) => Some(p.invoke(&lib, library)?),
        None => None,
    };
    let line = serde_json::to_string(&Ready {
        pid: std::process::id(),
        objects: ObjectLayout::of_library(&lib, copy),
        called,
    })?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{READY}{line}")?;
        out.flush()?;
    }
    // Block until the parent closes our stdin (or dies).
    let mut sink = Vec::new();
    let _ = std::io::stdin().lock().read_to_end(&mut sink);
    drop(lib);
    Ok(ExitCode::SUCCESS)
}

/// The `unsafe` this command needs: signal handlers, `poll`, `prctl`.
mod sys {
    use std::sync::atomic::{AtomicBool, Ordering};

    use anyhow::{Result, bail};

    static INTERRUPTED: AtomicBool = AtomicBool::new(false);

    extern "C" fn on_signal(_: libc::c_int) {
        // Only an atomic store: async-signal-safe.
        INTERRUPTED.store(true, Ordering::SeqCst);
    }

    pub fn interrupted() -> bool {
        INTERRUPTED.load(Ordering::SeqCst)
    }

    /// SIGINT, SIGTERM and SIGHUP set a flag instead of killing mmld, so
    /// the workers can be reaped first. No SA_RESTART: a blocking call
    /// returns early, and every loop here polls with a timeout anyway.
    pub fn catch_termination_signals() -> Result<()> {
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: a zeroed sigaction is a valid "no flags, empty mask"
            // value; the handler only performs an atomic store, which is
            // async-signal-safe; `sigaction` reads `act` and writes nothing
            // else we pass (old action pointer is null).
            let rc = unsafe {
                let mut act: libc::sigaction = std::mem::zeroed();
                act.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                libc::sigemptyset(&mut act.sa_mask);
                act.sa_flags = 0;
                libc::sigaction(sig, &act, std::ptr::null_mut())
            };
            if rc != 0 {
                bail!(
                    "installing a handler for signal {sig}: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
        Ok(())
    }

    /// Which of `fds` are readable (or at end-of-file), waiting up to
    /// `timeout_ms`. A signal makes it return early with nothing readable.
    pub fn poll_readable(fds: &[i32], timeout_ms: i32) -> Result<Vec<bool>> {
        let mut pfds: Vec<libc::pollfd> = fds
            .iter()
            .map(|&fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `pfds` is a valid array of `pfds.len()` pollfd structures
        // that poll may write `revents` into; it outlives the call.
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(vec![false; fds.len()]);
            }
            bail!("poll: {e}");
        }
        Ok(pfds
            .iter()
            .map(|p| p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0)
            .collect())
    }

    /// Ask the kernel to SIGKILL this process when its parent dies, then
    /// check the parent has not died already (the race prctl leaves open).
    pub fn die_with_parent(parent: i32) -> Result<()> {
        // SAFETY: PR_SET_PDEATHSIG takes a signal number and touches no
        // memory of ours.
        let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
        if rc != 0 {
            bail!(
                "prctl(PR_SET_PDEATHSIG): {}",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: getppid has no preconditions and cannot fail.
        if unsafe { libc::getppid() } != parent {
            bail!("the mmld share process that started this worker is gone");
        }
        Ok(())
    }
}
