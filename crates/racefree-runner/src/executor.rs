//! The executor: one per running unit. It spawns the pytest process with the environment
//! of DESIGN §2.2, drains its stdout, stderr and event pipe continuously (so a test that
//! prints megabytes never blocks), forwards every plugin message to the dispatcher with its
//! arrival time, and reports how the process ended. It decides nothing.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::error::{Error, Result};
use crate::events::{ExitInfo, Wire};
use crate::isolation::Isolation;
use crate::session::Session;
use crate::unix;

/// Bytes of a unit's own stdout/stderr kept for diagnosis (the tail).
const TAIL_BYTES: usize = 64 * 1024;
/// After the pytest process exits, how long to keep reading pipes held open by processes it
/// left behind before giving up on them.
const EXIT_GRACE: Duration = Duration::from_millis(1000);

/// What every unit of a run shares.
#[derive(Debug)]
pub struct ExecContext {
    pub python: PathBuf,
    pub invocation_dir: PathBuf,
    pub rootdir: PathBuf,
    pub workers: usize,
    pub run_id: String,
    /// Arguments for every pytest process (`-k`, `-m`, then the passthrough after `--`).
    pub pytest_args: Vec<String>,
    /// How much of its own world each unit gets (`--isolate`).
    pub isolation: Isolation,
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
    /// Files found by walking a directory -> that directory (for pytest's collect_ignore).
    pub walked: BTreeMap<PathBuf, PathBuf>,
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
}

/// The dispatcher's hold on a running unit: enough to signal its process group safely.
#[derive(Debug, Clone)]
pub struct UnitHandle {
    pub pid: u32,
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

fn build_command(
    ctx: &ExecContext,
    session: &Session,
    spec: &UnitSpec,
    event_fd: i32,
) -> Result<Command> {
    let basetemp = session.basetemp(spec.slot, spec.unit, spec.attempt);
    // In a namespace, /tmp, /dev/shm and /var/tmp are private: what lies there and the unit
    // needs (the session root, the project, the interpreter's environment) is bound back in.
    let venv = ctx.python.parent().and_then(|bin| bin.parent());
    let mut keep = vec![
        session.root.as_path(),
        ctx.invocation_dir.as_path(),
        ctx.rootdir.as_path(),
    ];
    keep.extend(venv);
    let (program, wrapper_args) = ctx.isolation.wrap(&ctx.python, &keep);
    let mut cmd = Command::new(program);
    cmd.args(wrapper_args);
    cmd.args([
        "-m",
        "pytest",
        "-p",
        "racefree_pytest",
        "-p",
        "no:cacheprovider",
    ])
    .arg(format!("--rootdir={}", ctx.rootdir.display()))
    .arg(format!("--basetemp={}", basetemp.display()))
    // One broken file must not stop the other files packed with it; racefree still
    // reports the collection error and exits 2, as pytest would.
    .arg("--continue-on-collection-errors")
    .args(&spec.files)
    .args(&ctx.pytest_args)
    .current_dir(&ctx.invocation_dir)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    // Created in every mode: the slot's directory also holds the unit's basetemp.
    let tmp = session.slot_tmp(spec.slot)?;
    if ctx.isolation.private_tmp() {
        for var in ["TMPDIR", "TEMP", "TMP", "PYTEST_DEBUG_TEMPROOT"] {
            cmd.env(var, &tmp);
        }
    }
    cmd.env("PYTEST_XDIST_WORKER", format!("gw{}", spec.slot))
        .env("PYTEST_XDIST_WORKER_COUNT", ctx.workers.to_string())
        .env("PYTEST_XDIST_TESTRUNUID", &ctx.run_id)
        .env("RACEFREE_WORKER", spec.slot.to_string())
        .env("RACEFREE_RUN_ID", &ctx.run_id)
        .env("RACEFREE_EVENT_FD", event_fd.to_string());
    let mut pythonpath = std::ffi::OsString::from(session.plugin_dir());
    if let Some(old) = std::env::var_os("PYTHONPATH").filter(|p| !p.is_empty()) {
        pythonpath.push(":");
        pythonpath.push(old);
    }
    cmd.env("PYTHONPATH", pythonpath);
    let unit_file = session.unit_file(spec.unit, spec.attempt);
    let description = serde_json::json!({ "select": spec.selection, "walked": spec.walked });
    let json = serde_json::to_vec(&description)
        .map_err(|e| Error::io("encoding a unit description", io::Error::other(e)))?;
    std::fs::write(&unit_file, json)
        .map_err(|e| Error::io(format!("writing {}", unit_file.display()), e))?;
    cmd.env("RACEFREE_UNIT_FILE", unit_file);
    Ok(cmd)
}

/// Starts a unit; its messages arrive on `tx` and end with exactly one `Exited`.
pub fn spawn(
    ctx: &ExecContext,
    session: &Session,
    spec: &UnitSpec,
    tx: Sender<ExecMsg>,
) -> Result<UnitHandle> {
    let (read_end, write_end) =
        unix::pipe_cloexec().map_err(|e| Error::io("creating the event pipe", e))?;
    let mut cmd = build_command(ctx, session, spec, write_end.as_raw_fd())?;
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
    let reaped = Arc::new(Mutex::new(false));
    let handle = UnitHandle {
        pid,
        reaped: reaped.clone(),
    };
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(Error::io(
            "starting pytest",
            io::Error::other("child has no stdout/stderr pipes"),
        ));
    };
    let unit = spec.unit;
    std::thread::Builder::new()
        .name(format!("unit-{unit}"))
        .spawn(move || {
            let streams = [read_end, OwnedFd::from(stdout), OwnedFd::from(stderr)];
            io_loop(unit, child, reaped, streams, tx);
        })
        .map_err(|e| Error::io("starting an executor thread", e))?;
    Ok(handle)
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

fn io_loop(
    unit: usize,
    mut child: Child,
    reaped: Arc<Mutex<bool>>,
    streams: [OwnedFd; 3],
    tx: Sender<ExecMsg>,
) {
    let exited: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let pid = child.id();
    let waiter = {
        let exited = exited.clone();
        std::thread::spawn(move || {
            // Wait for the exit but leave the zombie, so kills stay safe until we mark it.
            let _ = unix::wait_exit_keep_zombie(pid);
            if let Ok(mut e) = exited.lock() {
                *e = Some(Instant::now());
            }
        })
    };
    let mut open = [true; 3];
    let mut line_buf: Vec<u8> = Vec::new();
    let mut tails: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut chunk = vec![0u8; 64 * 1024];
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
        for (k, &i) in live.iter().enumerate() {
            if !ready[k] {
                continue;
            }
            match rustix::io::read(&streams[i], &mut chunk) {
                Ok(0) => open[i] = false,
                Ok(n) => {
                    if i == 0 {
                        line_buf.extend_from_slice(&chunk[..n]);
                        forward_lines(unit, &mut line_buf, &tx);
                    } else {
                        push_tail(&mut tails[i - 1], &chunk[..n]);
                    }
                }
                Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => {}
                Err(_) => open[i] = false,
            }
        }
    }
    let _ = waiter.join();
    let status = {
        // Mark reaped before reaping: from here on no kill may target this pid.
        let mut guard = reaped.lock().unwrap_or_else(|p| p.into_inner());
        *guard = true;
        child.wait()
    };
    let exit = match status {
        Ok(s) => ExitInfo {
            code: s.code(),
            signal: s.signal(),
        },
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

fn forward_lines(unit: usize, buf: &mut Vec<u8>, tx: &Sender<ExecMsg>) {
    while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = buf.drain(..=pos).collect();
        let at = Instant::now();
        let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
        if text.trim().is_empty() {
            continue;
        }
        let msg = match Wire::parse(&text) {
            Ok(wire) => ExecMsg::Wire { unit, wire, at },
            Err(e) => ExecMsg::BadLine {
                unit,
                line: text,
                error: e.to_string(),
            },
        };
        if tx.send(msg).is_err() {
            return;
        }
    }
}
