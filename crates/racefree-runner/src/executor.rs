//! The executor: one per running unit. It spawns the pytest process with the environment
//! of DESIGN §2.2, drains its stdout, stderr and event pipe continuously (so a test that
//! prints megabytes never blocks), forwards every plugin message to the dispatcher with its
//! arrival time, and reports how the process ended. It decides nothing.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::error::{Error, Result};
use crate::events::{ExitInfo, OutputStream, Wire};
use crate::forkserver::{ForkPool, ForkServer, Invocation};
use crate::isolation::Isolation;
use crate::session::Session;
use crate::unix;

/// Bytes of a unit's own stdout/stderr kept for diagnosis (the tail).
const TAIL_BYTES: usize = 64 * 1024;
/// After the pytest process exits, how long to keep reading pipes held open by processes it
/// left behind before giving up on them.
const EXIT_GRACE: Duration = Duration::from_millis(1000);
/// After a read that brought less than `COALESCE_BELOW` bytes, the unit's reader waits
/// `COALESCE_FOR` before it looks again, so that it reads the messages of many tests at once
/// rather than waking up for each line. Every wake-up costs racefree (and, on a machine whose
/// cores all run units, the units) tens of microseconds: a unit of 20,000 trivial tests cost
/// racefree 83 us of CPU per test read line by line, 14 us read this way. Nothing waits
/// for racefree meanwhile (a test's duration is the plugin's own measurement, and the pipe
/// holds 64 KiB on Linux); a large read (a test's big output) is followed at once by the next.
const COALESCE_BELOW: usize = 16 * 1024;
const COALESCE_FOR: Duration = Duration::from_millis(2);
/// Only once a unit has sent this many messages: a unit of a few tests is read at once, so
/// its end (which racefree's next step for the slot waits for) is never read late.
const COALESCE_AFTER: usize = 64;

/// What every unit of a run shares.
#[derive(Debug)]
pub struct ExecContext {
    pub python: PathBuf,
    pub invocation_dir: PathBuf,
    pub rootdir: PathBuf,
    /// What every unit is told of pytest's configuration file (see `UnitConfig`).
    pub config: UnitConfig,
    pub workers: usize,
    pub run_id: String,
    /// Arguments for every pytest process (`-k`, `-m`, then the passthrough after `--`).
    pub pytest_args: Vec<String>,
    /// The paths and node ids the run was given (none: pytest's own default). A fork server
    /// loads the conftest files plain `pytest` would load first for them.
    pub anchors: Vec<String>,
    /// The slots' fork servers, when units are forked rather than spawned.
    pub fork: Option<Arc<ForkPool>>,
    /// Directories the interpreter needs (see `python::PythonInfo::paths`).
    pub python_paths: Vec<PathBuf>,
    /// How much of its own world each unit gets (`--isolate`).
    pub isolation: Isolation,
    /// pytest's capturing is off (`-s`): units' output is passed on as it comes.
    pub show_output: bool,
    /// pytest-cov measures the run: each unit into a data file of its own (see `coverage`).
    pub coverage: bool,
    /// racefree writes JUnit XML: the plugin sends what pytest's junitxml would take from
    /// each test (which costs messages otherwise spared).
    pub junit: bool,
}

/// One unit to start.
#[derive(Debug, Clone)]
pub struct UnitSpec {
    pub unit: usize,
    pub slot: usize,
    pub attempt: u32,
    pub files: Vec<PathBuf>,
    /// rootdir-relative file -> node ids to run; files not listed run whole.
    pub selection: BTreeMap<String, Vec<String>>,
    /// rootdir-relative file -> node ids not to run (the exclusion chunk of a split file).
    pub exclude: BTreeMap<String, Vec<String>>,
    /// Files found by walking a directory -> that directory (for pytest's collect_ignore).
    pub walked: BTreeMap<PathBuf, PathBuf>,
    /// Files pytest must not collect here: they run in other units (for a unit that walks
    /// directories itself, see `TestFile::remainder`).
    pub skip: Vec<PathBuf>,
    /// Random, in the unit's environment, so processes it leaves behind can be found.
    pub token: String,
}

/// Messages from executors to the dispatcher.
#[derive(Debug)]
pub enum ExecMsg {
    Wire {
        unit: usize,
        wire: Wire,
        at: Instant,
    },
    BadLine {
        unit: usize,
        line: String,
        error: String,
    },
    Exited {
        unit: usize,
        exit: ExitInfo,
        stdout_tail: String,
        stderr_tail: String,
        at: Instant,
    },
    /// Whole lines a unit wrote while pytest's capturing was off (see
    /// `ExecContext::show_output`).
    Output {
        unit: usize,
        stream: crate::events::OutputStream,
        text: String,
    },
    /// Several `Wire`/`BadLine` messages of one unit, in order, read at once.
    Batch(Vec<ExecMsg>),
}

/// The dispatcher's hold on a running unit: enough to signal its process group safely.
#[derive(Debug, Clone)]
pub struct UnitHandle {
    pub pid: u32,
    /// The unit was forked into a PID namespace of its own, whose init has killed (and
    /// reported on the event pipe) everything left in it by the time the server says the
    /// unit exited: nothing of it can be elsewhere, so no scan of /proc is needed.
    pub swept_by_init: bool,
    reaped: Arc<Mutex<bool>>,
}

impl UnitHandle {
    /// Signals the unit's whole process group, unless the unit has already been reaped (then
    /// its pid may belong to someone else).
    pub fn signal(&self, signal: unix::Sig) {
        let reaped = self.reaped.lock().map(|g| *g).unwrap_or(true);
        if !reaped {
            unix::kill_group(self.pid, signal);
        }
    }
}

/// The environment every pytest process of `slot` gets (DESIGN §2.2), per-unit parts aside.
fn slot_env(
    ctx: &ExecContext,
    session: &Session,
    slot: usize,
) -> Result<Vec<(OsString, OsString)>> {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    let mut set = |k: &str, v: &dyn AsRef<std::ffi::OsStr>| env.push((k.into(), v.as_ref().into()));
    // Created in every mode (`--isolate none` leaves it unused).
    let tmp = session.slot_tmp(slot)?;
    if ctx.isolation.private_tmp() {
        for var in ["TMPDIR", "TEMP", "TMP", "PYTEST_DEBUG_TEMPROOT"] {
            set(var, &tmp);
        }
    }
    set("PYTEST_XDIST_WORKER", &format!("gw{slot}"));
    set("PYTEST_XDIST_WORKER_COUNT", &ctx.workers.to_string());
    set("PYTEST_XDIST_TESTRUNUID", &ctx.run_id);
    set("RACEFREE_WORKER", &slot.to_string());
    set("RACEFREE_RUN_ID", &ctx.run_id);
    set("RACEFREE_SUITE_RERUNS_FILE", &session.suite_reruns_file());
    let mut pythonpath = OsString::from(session.plugin_dir());
    if let Some(old) = std::env::var_os("PYTHONPATH").filter(|p| !p.is_empty()) {
        pythonpath.push(":");
        pythonpath.push(old);
    }
    set("PYTHONPATH", &pythonpath);
    Ok(env)
}

/// What pytest is given as its configuration file for none at all.
const NO_CONFIGURATION: &str = "/dev/null";

/// pytest's configuration file for every unit. Given only its own files, pytest would take
/// the nearest configuration file above them: a subproject's pytest.ini or pyproject.toml
/// that plain `pytest` at the top never reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitConfig {
    /// The file plain `pytest` with the run's arguments picks (`-c FILE`).
    File(PathBuf),
    /// Plain `pytest` finds none: `-c /dev/null`, pytest's way to ask for no configuration,
    /// and (`cut_conftests`, unless the user names pytest's `--confcutdir`) the conftest
    /// cut-off pytest then takes: the rootdir, not /dev.
    Nothing { cut_conftests: bool },
    /// Left to pytest: the user names a file for it (`-c` after `--` or in
    /// `$PYTEST_ADDOPTS`, which pytest reads before racefree's arguments), or there is none
    /// and an `-o` is given that may be a path (`-o pythonpath=src`), which pytest would
    /// resolve against /dev under `-c /dev/null`.
    AsPytestFinds,
}

/// The arguments every pytest process of the run gets before its own (`-p` plugins,
/// rootdir, options), and after them (`-k`, `-m`, the passthrough after `--`).
fn shared_args(ctx: &ExecContext) -> (Vec<OsString>, Vec<OsString>) {
    // pytest's cache stays (the `cache` fixture, `config.cache`, as in xdist's workers); its
    // last-failed, new-first and stepwise plugins, which would rewrite `.pytest_cache` from
    // every unit's partial view, do not: racefree's history does their work.
    let mut before: Vec<OsString> = [
        "-p",
        "racefree_pytest",
        "-p",
        "no:lfplugin",
        "-p",
        "no:nfplugin",
        "-p",
        "no:stepwise",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    before.push(format!("--rootdir={}", ctx.rootdir.display()).into());
    match &ctx.config {
        UnitConfig::File(file) => {
            before.push("-c".into());
            before.push(file.into());
        }
        UnitConfig::Nothing { cut_conftests } => {
            before.push("-c".into());
            before.push(NO_CONFIGURATION.into());
            if *cut_conftests {
                before.push(format!("--confcutdir={}", ctx.rootdir.display()).into());
            }
        }
        UnitConfig::AsPytestFinds => {}
    }
    // One broken file must not stop the other files packed with it; racefree still
    // reports the collection error and exits 2, as pytest would.
    before.push("--continue-on-collection-errors".into());
    let after = ctx.pytest_args.iter().map(OsString::from).collect();
    (before, after)
}

/// What a fork server configures pytest with before any unit: every unit's arguments
/// without the unit's own.
fn server_args(ctx: &ExecContext) -> Vec<OsString> {
    let (mut args, after) = shared_args(ctx);
    args.extend(after);
    args
}

/// What one unit runs: `python -m pytest` with these arguments and environment.
fn unit_invocation(ctx: &ExecContext, session: &Session, spec: &UnitSpec) -> Result<Invocation> {
    let basetemp = session.basetemp(spec.slot, spec.unit, spec.attempt);
    let (mut args, after) = shared_args(ctx);
    let own_start = args.len();
    args.push(format!("--basetemp={}", basetemp.display()).into());
    args.extend(spec.files.iter().map(OsString::from));
    let unit_args = own_start..args.len();
    args.extend(after);
    let mut env = slot_env(ctx, session, spec.slot)?;
    let unit_file = session.unit_file(spec.unit, spec.attempt);
    let description = serde_json::json!({
        "select": spec.selection,
        "exclude": spec.exclude,
        "walked": spec.walked,
        "skip": spec.skip,
        "junit": ctx.junit,
    });
    let json = serde_json::to_vec(&description)
        .map_err(|e| Error::io("encoding a unit description", io::Error::other(e)))?;
    std::fs::write(&unit_file, json)
        .map_err(|e| Error::io(format!("writing {}", unit_file.display()), e))?;
    env.push(("RACEFREE_UNIT_FILE".into(), unit_file.into()));
    env.push((crate::procs::TOKEN_ENV.into(), spec.token.clone().into()));
    env.push((
        "RACEFREE_FAULT_FILE".into(),
        session.fault_file(spec.unit, spec.attempt).into(),
    ));
    if ctx.coverage {
        let data_file = session.coverage_file(spec.unit, spec.attempt);
        if let Some(dir) = data_file.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        env.push(("COVERAGE_FILE".into(), data_file.into()));
        // Tells the plugin that racefree makes the report (see `coverage`).
        env.push(("RACEFREE_COVERAGE".into(), "1".into()));
    }
    if ctx.fork.is_some() {
        // Units teach the fork servers of later runs what to preload.
        env.push(("RACEFREE_LEARN_IMPORTS".into(), "1".into()));
    }
    if ctx.fork.is_some() && matches!(ctx.isolation, Isolation::Namespace { .. }) {
        // A forked unit starts in its slot's namespaces, set up once by racefree's init, and
        // makes mount, PID and IPC namespaces of its own with an init as PID 1 (see
        // python/racefree_forkserver.py): fresh /tmp, /dev/shm and /var/tmp, with the same
        // paths bound back as racefree's init binds.
        let keep: Vec<String> = keep_paths(ctx, session)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let json = serde_json::json!({ "private": ["/tmp", "/dev/shm", "/var/tmp"], "keep": keep });
        env.push(("RACEFREE_PRIVATE_MOUNTS".into(), json.to_string().into()));
    }
    Ok(Invocation {
        args,
        unit_args,
        env,
        cwd: ctx.invocation_dir.clone(),
    })
}

/// In a namespace, /tmp, /dev/shm and /var/tmp are private: what lies there and a unit needs
/// (the session root, the project, the interpreter's environment) is bound back in.
fn keep_paths(ctx: &ExecContext, session: &Session) -> Vec<PathBuf> {
    let mut keep = vec![
        session.root.clone(),
        ctx.invocation_dir.clone(),
        ctx.rootdir.clone(),
    ];
    // The plugin's directory, when it is the one this build's runs share (see Session).
    let plugin_dir = session.plugin_dir();
    if !plugin_dir.starts_with(&session.root) {
        keep.push(plugin_dir);
    }
    // The directory of the interpreter as named (a virtualenv's bin/, or a wrapper script's
    // directory), then where the interpreter says it lives: its prefixes and sys.path, which
    // a wrapper or a symlink may put elsewhere under /tmp.
    keep.extend(ctx.python.parent().map(|dir| dir.to_path_buf()));
    keep.extend(ctx.python_paths.iter().cloned());
    keep
}

/// A command running `python -m <module> [args]` with the environment `env`, inside
/// racefree's namespace init when the run isolates with namespaces.
fn python_command(
    ctx: &ExecContext,
    session: &Session,
    module: &str,
    fork_server: bool,
    args: &[OsString],
    env: &[(OsString, OsString)],
) -> Command {
    let keep = keep_paths(ctx, session);
    let keep: Vec<&std::path::Path> = keep.iter().map(|p| p.as_path()).collect();
    let (program, wrapper_args) = ctx.isolation.wrap(&ctx.python, &keep, fork_server);
    let mut cmd = Command::new(program);
    cmd.args(wrapper_args)
        .arg("-m")
        .arg(module)
        .args(args)
        .current_dir(&ctx.invocation_dir);
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

/// The command of slot `slot`'s fork server.
pub fn fork_server_command(
    ctx: &ExecContext,
    session: &Session,
    slot: usize,
) -> io::Result<Command> {
    let mut env = slot_env(ctx, session, slot).map_err(io::Error::other)?;
    let argv: Vec<String> = server_args(ctx)
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let argv = serde_json::to_string(&argv).map_err(io::Error::other)?;
    env.push(("RACEFREE_FORKSERVER_ARGV".into(), argv.into()));
    let anchors = serde_json::to_string(&ctx.anchors).map_err(io::Error::other)?;
    env.push(("RACEFREE_FORKSERVER_ANCHORS".into(), anchors.into()));
    let copy_ahead = if copy_ahead_pays(ctx.workers) {
        "1"
    } else {
        "0"
    };
    env.push(("RACEFREE_FORKSERVER_COPY_AHEAD".into(), copy_ahead.into()));
    Ok(python_command(
        ctx,
        session,
        "racefree_forkserver",
        true,
        &[],
        &env,
    ))
}

/// Whether a fork server's spares should copy their unit's pages ahead (see
/// racefree_hotpages): that moves a unit's copy-on-write faults off its own time only onto a
/// core no slot is using. With a slot per core it takes CPU the other slots' units need, and
/// copies the pages a unit would not have touched too (attrs, `-n 2` on two cores: 8 runs
/// each way, median wall 4.68 s copying ahead, 4.49 s not).
fn copy_ahead_pays(workers: usize) -> bool {
    workers < crate::config::Workers::Auto.resolve()
}

/// How a unit's process came to be, and so how its end is learned.
enum Origin {
    Spawned(Child),
    Forked { server: ForkServer, slot: usize },
}

/// Starts a unit; its messages arrive on `tx` and end with exactly one `Exited`.
pub fn spawn(
    ctx: &ExecContext,
    session: &Session,
    spec: &UnitSpec,
    tx: Sender<ExecMsg>,
) -> Result<UnitHandle> {
    let inv = unit_invocation(ctx, session, spec)?;
    let (read_end, write_end) =
        unix::pipe_cloexec().map_err(|e| Error::io("creating the event pipe", e))?;
    let server = ctx.fork.as_ref().and_then(|pool| pool.take(spec.slot));
    let (pid, origin, streams) = match server {
        Some(server) => fork_unit(ctx, session, spec.slot, server, &inv, read_end, write_end)?,
        None => spawn_unit(ctx, session, &inv, read_end, write_end)?,
    };
    let reaped = Arc::new(Mutex::new(false));
    let handle = UnitHandle {
        pid,
        swept_by_init: matches!(origin, Origin::Forked { .. })
            && matches!(ctx.isolation, Isolation::Namespace { .. }),
        reaped: reaped.clone(),
    };
    let unit = spec.unit;
    let show_output = ctx.show_output;
    let fork = ctx.fork.clone();
    std::thread::Builder::new()
        .name(format!("unit-{unit}"))
        .spawn(move || io_loop(unit, pid, origin, fork, reaped, streams, show_output, tx))
        .map_err(|e| Error::io("starting an executor thread", e))?;
    Ok(handle)
}

type Started = (u32, Origin, [OwnedFd; 3]);

fn spawn_unit(
    ctx: &ExecContext,
    session: &Session,
    inv: &Invocation,
    read_end: OwnedFd,
    write_end: OwnedFd,
) -> Result<Started> {
    let mut cmd = python_command(ctx, session, "pytest", false, &inv.args, &inv.env);
    cmd.current_dir(&inv.cwd)
        .env("RACEFREE_EVENT_FD", write_end.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    unix::prepare_child(&mut cmd, write_end.as_raw_fd());
    let mut child = cmd.spawn().map_err(|e| {
        let program = std::path::Path::new(cmd.get_program())
            .display()
            .to_string();
        Error::io(
            format!("starting {program} (--isolate {})", ctx.isolation.name()),
            e,
        )
    })?;
    // Only the child may hold the write end, so that the pipe reaches EOF when it is done.
    drop(write_end);
    let pid = child.id();
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(Error::io(
            "starting pytest",
            io::Error::other("child has no stdout/stderr pipes"),
        ));
    };
    let streams = [read_end, OwnedFd::from(stdout), OwnedFd::from(stderr)];
    Ok((pid, Origin::Spawned(child), streams))
}

/// Starts the unit as a fork of the slot's warm server; on any failure the server is
/// dropped (its slot spawns from then on) and the unit is spawned instead.
fn fork_unit(
    ctx: &ExecContext,
    session: &Session,
    slot: usize,
    mut server: ForkServer,
    inv: &Invocation,
    read_end: OwnedFd,
    write_end: OwnedFd,
) -> Result<Started> {
    let pipes = (|| -> io::Result<_> { Ok((unix::pipe_cloexec()?, unix::pipe_cloexec()?)) })();
    let ((out_r, out_w), (err_r, err_w)) = match pipes {
        Ok(p) => p,
        Err(e) => {
            if let Some(pool) = &ctx.fork {
                pool.give_back(slot, Some(server));
            }
            return Err(Error::io("creating pipes for a unit", e));
        }
    };
    match server.fork(inv, [out_w.as_fd(), err_w.as_fd(), write_end.as_fd()]) {
        Ok(pid) => {
            // The child holds its own copies now; ours must go so the pipes reach EOF.
            drop((out_w, err_w, write_end));
            Ok((
                pid,
                Origin::Forked { server, slot },
                [read_end, out_r, err_r],
            ))
        }
        Err(e) => {
            eprintln!(
                "racefree: fork server of slot {slot} failed ({e}); spawning units there from now on"
            );
            drop(server);
            if let Some(pool) = &ctx.fork {
                pool.give_back(slot, None);
            }
            spawn_unit(ctx, session, inv, read_end, write_end)
        }
    }
}

/// The longest incomplete line a shown stream keeps before passing it on as it is.
const SHOWN_LINE_MAX: usize = 64 * 1024;

/// One stream of a unit passed on whole lines at a time (see `ExecContext::show_output`).
struct ShownLines {
    unit: usize,
    stream: OutputStream,
    partial: Vec<u8>,
}

impl ShownLines {
    fn new(unit: usize, stream: OutputStream) -> Self {
        ShownLines {
            unit,
            stream,
            partial: Vec::new(),
        }
    }

    /// Sends what `data` completes up to its last newline and keeps the rest; a line that
    /// grows past `SHOWN_LINE_MAX` without one is sent as it is (`print(".", end="")`
    /// shows as it comes, and a line of megabytes is not held whole).
    fn push(&mut self, data: &[u8], tx: &Sender<ExecMsg>) {
        let before = self.partial.len();
        self.partial.extend_from_slice(data);
        // Only the new bytes can hold the newline that ends what is kept.
        if let Some(end) = data.iter().rposition(|&b| b == b'\n') {
            let rest = self.partial.split_off(before + end + 1);
            let whole = std::mem::replace(&mut self.partial, rest);
            self.send(&whole, tx);
        }
        if self.partial.len() > SHOWN_LINE_MAX {
            // Cut where UTF-8 lets it, so that no character is sent in two halves.
            let cut = match std::str::from_utf8(&self.partial) {
                Ok(_) => self.partial.len(),
                Err(e) if e.error_len().is_none() => e.valid_up_to(),
                Err(_) => self.partial.len(),
            };
            let rest = self.partial.split_off(cut);
            let head = std::mem::replace(&mut self.partial, rest);
            self.send(&head, tx);
        }
    }

    /// At the stream's end: sends what is left, a line without its newline.
    fn finish(&mut self, tx: &Sender<ExecMsg>) {
        let rest = std::mem::take(&mut self.partial);
        if !rest.is_empty() {
            self.send(&rest, tx);
        }
    }

    fn send(&self, bytes: &[u8], tx: &Sender<ExecMsg>) {
        let _ = tx.send(ExecMsg::Output {
            unit: self.unit,
            stream: self.stream,
            text: String::from_utf8_lossy(bytes).into_owned(),
        });
    }
}

/// Keeps only the last `TAIL_BYTES` of a stream.
fn push_tail(buf: &mut Vec<u8>, data: &[u8]) {
    buf.extend_from_slice(data);
    if buf.len() > 2 * TAIL_BYTES {
        let cut = buf.len() - TAIL_BYTES;
        buf.drain(..cut);
    }
}

fn tail_string(buf: &[u8]) -> String {
    let start = buf.len().saturating_sub(TAIL_BYTES);
    String::from_utf8_lossy(&buf[start..]).into_owned()
}

#[allow(clippy::too_many_arguments)]
fn io_loop(
    unit: usize,
    pid: u32,
    origin: Origin,
    fork: Option<Arc<ForkPool>>,
    reaped: Arc<Mutex<bool>>,
    streams: [OwnedFd; 3],
    show_output: bool,
    tx: Sender<ExecMsg>,
) {
    let exited: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let waiter = {
        let exited = exited.clone();
        std::thread::spawn(move || {
            // Wait for the exit but leave the zombie, so kills stay safe until we mark it.
            let origin = match origin {
                Origin::Spawned(child) => {
                    let _ = unix::wait_exit_keep_zombie(pid);
                    (Origin::Spawned(child), None)
                }
                Origin::Forked { mut server, slot } => {
                    let exit = server.wait_exit();
                    (Origin::Forked { server, slot }, Some(exit))
                }
            };
            if let Ok(mut e) = exited.lock() {
                *e = Some(Instant::now());
            }
            origin
        })
    };
    let mut open = [true; 3];
    let mut line_buf: Vec<u8> = Vec::new();
    let mut tails: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    // With `show_output`: each stream's incomplete last line, until its end comes.
    let mut shown = [
        ShownLines::new(unit, OutputStream::Stdout),
        ShownLines::new(unit, OutputStream::Stderr),
    ];
    let mut chunk = vec![0u8; 64 * 1024];
    // Once the unit has said it is done, its end is read without delay: racefree's next
    // step for the slot waits for it.
    let mut ending = false;
    let mut messages = 0;
    loop {
        let live: Vec<usize> = (0..3).filter(|&i| open[i]).collect();
        if live.is_empty() {
            break;
        }
        if let Ok(e) = exited.lock()
            && let Some(at) = *e
            && at.elapsed() > EXIT_GRACE
        {
            // Something the unit left behind holds our pipes; stop listening to it.
            break;
        }
        let fds: Vec<_> = live.iter().map(|&i| streams[i].as_fd()).collect();
        let ready = match unix::poll_readable(&fds, 100) {
            Ok(r) => r,
            Err(_) => vec![true; fds.len()],
        };
        // Whether this pass read anything, and whether any read was large (a stream with
        // much to say is read again at once, whatever the others said).
        let (mut read_any, mut read_large) = (false, false);
        for (k, &i) in live.iter().enumerate() {
            if !ready[k] {
                continue;
            }
            match rustix::io::read(&streams[i], &mut chunk) {
                Ok(0) => {
                    open[i] = false;
                    ending = true;
                    if show_output && i > 0 {
                        shown[i - 1].finish(&tx);
                    }
                }
                Ok(n) => {
                    read_any = true;
                    read_large |= n >= COALESCE_BELOW;
                    if i == 0 {
                        line_buf.extend_from_slice(&chunk[..n]);
                        let (sent, done) = forward_lines(unit, &mut line_buf, &tx);
                        messages += sent;
                        ending |= done;
                    } else {
                        push_tail(&mut tails[i - 1], &chunk[..n]);
                        if show_output {
                            shown[i - 1].push(&chunk[..n], &tx);
                        }
                    }
                }
                Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => {}
                Err(_) => open[i] = false,
            }
        }
        if read_any && !read_large && !ending && messages >= COALESCE_AFTER {
            std::thread::sleep(COALESCE_FOR);
        }
    }
    // Streams still held open by something the unit left behind, or broken: what they
    // brought is shown all the same.
    if show_output {
        for stream in &mut shown {
            stream.finish(&tx);
        }
    }
    let exit = match waiter.join() {
        Ok((Origin::Spawned(mut child), _)) => {
            // Mark reaped before reaping: from here on no kill may target this pid.
            let mut guard = reaped.lock().unwrap_or_else(|p| p.into_inner());
            *guard = true;
            match child.wait() {
                Ok(s) => ExitInfo {
                    code: s.code(),
                    signal: s.signal(),
                },
                Err(_) => ExitInfo::default(),
            }
        }
        Ok((Origin::Forked { mut server, slot }, exit)) => {
            let mut guard = reaped.lock().unwrap_or_else(|p| p.into_inner());
            *guard = true;
            let exit = exit.unwrap_or_else(|| Err(io::Error::other("no exit status")));
            let healthy = exit.is_ok() && server.reap().is_ok();
            if let Some(pool) = &fork {
                pool.give_back(slot, healthy.then_some(server));
            }
            exit.unwrap_or_default()
        }
        Err(_) => ExitInfo::default(),
    };
    let _ = tx.send(ExecMsg::Exited {
        unit,
        exit,
        stdout_tail: tail_string(&tails[0]),
        stderr_tail: tail_string(&tails[1]),
        at: Instant::now(),
    });
}

/// Sends the complete lines in `buf` as one message (what one read brought: one wake-up of
/// the dispatcher, not one per line) and keeps the incomplete rest. Returns how many lines
/// (plugin messages) it forwarded, and whether the unit said it is done.
fn forward_lines(unit: usize, buf: &mut Vec<u8>, tx: &Sender<ExecMsg>) -> (usize, bool) {
    let mut done = false;
    let at = Instant::now();
    let mut batch = Vec::new();
    let mut start = 0;
    while let Some(len) = buf[start..].iter().position(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(&buf[start..start + len]);
        start += len + 1;
        if line.trim().is_empty() {
            continue;
        }
        batch.push(match Wire::parse(&line) {
            Ok(wire) => {
                done |= matches!(wire, Wire::Done { .. });
                ExecMsg::Wire { unit, wire, at }
            }
            Err(e) => ExecMsg::BadLine {
                unit,
                line: line.into_owned(),
                error: e.to_string(),
            },
        });
    }
    buf.drain(..start);
    let sent = batch.len();
    let msg = match sent {
        0 => return (0, done),
        1 => batch.pop(),
        _ => Some(ExecMsg::Batch(batch)),
    };
    if let Some(msg) = msg {
        let _ = tx.send(msg);
    }
    (sent, done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_go_as_one_batch_and_the_units_done_is_noticed() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut buf =
            b"{\"e\": \"start\", \"id\": \"t.py::a\"}\n{\"e\": \"finish\", \"id\": \"t.py::a\", \"duration\": 0.5}\n{\"e\": \"sta"
                .to_vec();
        assert_eq!(forward_lines(3, &mut buf, &tx), (2, false));
        match rx.try_recv() {
            Ok(ExecMsg::Batch(batch)) => {
                assert_eq!(batch.len(), 2);
                assert!(matches!(
                    &batch[1],
                    ExecMsg::Wire { unit: 3, wire: Wire::Finish { duration: Some(d), .. }, .. } if *d == 0.5
                ));
            }
            _ => panic!("expected one batch"),
        }
        // The incomplete line waits for the rest.
        assert_eq!(buf, b"{\"e\": \"sta");
        buf.extend_from_slice(
            b"rt\", \"id\": \"t.py::b\"}\n{\"e\": \"done\", \"exitstatus\": 0}\n",
        );
        assert_eq!(forward_lines(3, &mut buf, &tx), (2, true));
        assert!(buf.is_empty());
    }
}
