//! Fork servers: one pre-warmed Python process per worker slot that forks a fresh pytest
//! process for every unit (python/racefree_forkserver.py is the other side).
//!
//! A unit started this way is watched, timed out and killed exactly like a spawned one: the
//! forked child leads its own process group, and the server reports its exit status while
//! keeping the zombie until racefree says it no longer needs the pid (so a late kill cannot
//! hit a reused pid). If a server cannot start, refuses to fork (a preloaded module started a
//! thread, say) or breaks, its slot falls back to spawning interpreters, with one line saying
//! why.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, IoSlice, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use serde::Deserialize;

use crate::events::ExitInfo;
use crate::unix;

/// Environment variable naming the server's end of the control socket.
const FD_ENV: &str = "RACEFREE_FORKSERVER_FD";
/// Environment variable naming the JSON list of modules to preload.
const PRELOAD_ENV: &str = "RACEFREE_FORKSERVER_PRELOAD";
/// How long a server may take to import pytest, and then to warm up, before its slot gives
/// up on it.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// What a forked unit runs: `python -m pytest <args>` with this environment, in `cwd`.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub args: Vec<OsString>,
    /// The part of `args` that is this unit's own (its basetemp and files); the rest is
    /// what every unit of the run passes, and what the fork servers configured pytest
    /// with ahead of time (`server_args`).
    pub unit_args: std::ops::Range<usize>,
    pub env: Vec<(OsString, OsString)>,
    pub cwd: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Reply {
    /// The server's first word: it imported pytest (this version).
    Imported {
        #[allow(dead_code)]
        pytest: String,
    },
    Ready {
        ready: bool,
        #[serde(default)]
        reason: String,
        #[serde(default)]
        module: Option<String>,
        #[serde(default)]
        modules: u64,
        #[serde(default)]
        secs: f64,
        /// Where units fork: "session" or "conftest" (python/racefree_forkserver.py).
        #[serde(default)]
        point: Option<String>,
        /// Why the session point was declined, when it was.
        #[serde(default)]
        declined: Option<String>,
    },
    Pid {
        pid: u32,
    },
    Exited {
        #[allow(dead_code)]
        exited: u32,
        #[serde(default)]
        code: Option<i32>,
        #[serde(default)]
        signal: Option<i32>,
    },
    Reaped {
        #[allow(dead_code)]
        reaped: u32,
    },
    Error {
        error: String,
    },
}

/// Why a server will not fork, and the preloaded module to blame if there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
    pub module: Option<String>,
}

impl Refusal {
    /// A refusal no module is to blame for.
    fn plain(reason: String) -> Refusal {
        Refusal {
            reason,
            module: None,
        }
    }
}

/// A server that is ready to fork.
#[derive(Debug, Clone, PartialEq)]
pub struct Readiness {
    /// How many modules it preloaded.
    pub modules: u64,
    /// How long its warm-up took, in seconds.
    pub secs: f64,
    /// Where in pytest's start-up its units begin ("session" or "conftest").
    pub point: Option<String>,
    /// Why it does not fork at the later point, if it could not.
    pub declined: Option<String>,
}

impl Readiness {
    /// One line for `-v`: where units fork and, if not at the session start, why.
    fn describe(&self, slot: usize) -> String {
        let point = self.point.as_deref().unwrap_or("conftest");
        let why = self
            .declined
            .as_deref()
            .map(|d| format!("; not at the session start: {d}"))
            .unwrap_or_default();
        format!(
            "racefree: fork server of slot {slot} ready in {:.2}s ({} module(s) preloaded, \
             units fork at the {point} point{why})",
            self.secs, self.modules
        )
    }
}

/// One running fork server.
pub struct ForkServer {
    process: Child,
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl ForkServer {
    /// Starts `python -m racefree_forkserver` from `cmd` (which carries the slot's
    /// environment); its output goes to `log`.
    pub fn start(mut cmd: Command, preload_file: &Path, log: &Path) -> io::Result<ForkServer> {
        let (ours, theirs) = UnixStream::pair()?;
        let log_out = std::fs::File::create(log)?;
        let log_err = log_out.try_clone()?;
        cmd.env(FD_ENV, theirs.as_raw_fd().to_string())
            .env(PRELOAD_ENV, preload_file)
            .stdin(Stdio::null())
            .stdout(log_out)
            .stderr(log_err);
        unix::prepare_child(&mut cmd, theirs.as_raw_fd());
        let process = cmd.spawn()?;
        drop(theirs);
        let reader = BufReader::new(ours.try_clone()?);
        Ok(ForkServer {
            process,
            stream: ours,
            reader,
        })
    }

    fn read_reply(&mut self) -> io::Result<Reply> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the fork server exited",
            ));
        }
        serde_json::from_str(&line)
            .map_err(|e| io::Error::other(format!("unreadable fork server message {line:?}: {e}")))
    }

    /// The server's next word during its warm-up, within `READY_TIMEOUT`.
    fn read_warm_up_reply(&mut self) -> Result<Reply, Refusal> {
        let reply = self
            .stream
            .set_read_timeout(Some(READY_TIMEOUT))
            .and_then(|()| self.read_reply())
            .map_err(|e| Refusal::plain(e.to_string()));
        let _ = self.stream.set_read_timeout(None);
        reply
    }

    /// Waits until the server has imported pytest (its first word). Err: why it did not.
    pub fn wait_pytest(&mut self) -> Result<(), Refusal> {
        match self.read_warm_up_reply()? {
            Reply::Imported { .. } => Ok(()),
            other => Err(Refusal::plain(format!(
                "unexpected first message {other:?}"
            ))),
        }
    }

    /// Then waits until the server has warmed up. Err: why it will not fork.
    pub fn wait_ready(&mut self) -> Result<Readiness, Refusal> {
        match self.read_warm_up_reply()? {
            Reply::Ready {
                ready: true,
                modules,
                secs,
                point,
                declined,
                ..
            } => Ok(Readiness {
                modules,
                secs,
                point,
                declined,
            }),
            Reply::Ready { reason, module, .. } => Err(Refusal { reason, module }),
            other => Err(Refusal::plain(format!("unexpected message {other:?}"))),
        }
    }

    /// Forks a child running `inv` with `fds` (stdout, stderr, event pipe); returns its pid
    /// as racefree sees it (the server may live in a PID namespace of its own).
    pub fn fork(&mut self, inv: &Invocation, fds: [BorrowedFd<'_>; 3]) -> io::Result<u32> {
        // Linux: the child says hello on a socket whose receiving end asks for credentials;
        // the kernel translates the sender's pid into racefree's PID namespace. That is the
        // pid racefree may signal, whatever namespace the server runs in.
        #[cfg(target_os = "linux")]
        let (cred_ours, cred_theirs) = {
            use rustix::net::{AddressFamily, SocketFlags, SocketType};
            let (ours, theirs) = rustix::net::socketpair(
                AddressFamily::UNIX,
                SocketType::DGRAM,
                SocketFlags::CLOEXEC,
                None,
            )?;
            rustix::net::sockopt::set_socket_passcred(&ours, true)?;
            (ours, theirs)
        };
        #[cfg(target_os = "linux")]
        let fds_to_send = [fds[0], fds[1], fds[2], cred_theirs.as_fd()];
        #[cfg(not(target_os = "linux"))]
        let fds_to_send = fds;
        let request = serde_json::json!({
            "op": "run",
            "argv": utf8_all(inv.args.iter())?,
            "unit_args": [inv.unit_args.start, inv.unit_args.end],
            "env": inv.env.iter().map(|(k, v)| Ok((utf8(k)?, utf8(v)?)))
                .collect::<io::Result<BTreeMap<String, String>>>()?,
            "cwd": utf8(inv.cwd.as_os_str())?,
        });
        let mut data = serde_json::to_vec(&request).map_err(io::Error::other)?;
        data.push(b'\n');
        // The descriptors travel with the first byte; the rest of the line follows plainly.
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(&fds_to_send)) {
            return Err(io::Error::other("no room for the unit's descriptors"));
        }
        let sent = loop {
            match rustix::net::sendmsg(
                &self.stream,
                &[IoSlice::new(&data)],
                &mut control,
                SendFlags::empty(),
            ) {
                Ok(n) => break n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        self.stream.write_all(&data[sent..])?;
        #[cfg(target_os = "linux")]
        drop(cred_theirs);
        // The pid in the server's own PID namespace: racefree's own unless namespaced.
        let server_view = match self.read_reply()? {
            Reply::Pid { pid } => pid,
            Reply::Error { error } => return Err(io::Error::other(error)),
            other => return Err(io::Error::other(format!("unexpected reply {other:?}"))),
        };
        #[cfg(target_os = "linux")]
        {
            let _ = server_view;
            sender_pid(&cred_ours)
        }
        #[cfg(not(target_os = "linux"))]
        Ok(server_view)
    }

    /// Blocks until the forked child exits; its zombie stays until `reap`.
    pub fn wait_exit(&mut self) -> io::Result<ExitInfo> {
        match self.read_reply()? {
            Reply::Exited { code, signal, .. } => Ok(ExitInfo { code, signal }),
            other => Err(io::Error::other(format!("unexpected reply {other:?}"))),
        }
    }

    /// Lets the server reap the child: racefree will not signal its pid again. Waits for
    /// the answer, so that the next request is alone on the wire (see the server's _Conn).
    pub fn reap(&mut self) -> io::Result<()> {
        self.stream.write_all(b"{\"op\":\"reap\"}\n")?;
        match self.read_reply()? {
            Reply::Reaped { .. } => Ok(()),
            other => Err(io::Error::other(format!("unexpected reply {other:?}"))),
        }
    }
}

impl Drop for ForkServer {
    fn drop(&mut self) {
        // Nothing of the server's is worth waiting for; its running child (if any) dies with
        // it through its parent-death signal.
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The pid, in racefree's PID namespace, of whoever sent the first datagram on `socket`
/// (which has SO_PASSCRED set).
#[cfg(target_os = "linux")]
fn sender_pid(socket: &std::os::fd::OwnedFd) -> io::Result<u32> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    // The child says hello before anything else; a child that cannot is broken.
    let timeout = Some(std::time::Duration::from_secs(30));
    rustix::net::sockopt::set_socket_timeout(socket, rustix::net::sockopt::Timeout::Recv, timeout)?;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmCredentials(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 16];
    loop {
        match rustix::net::recvmsg(
            socket,
            &mut [std::io::IoSliceMut::new(&mut byte)],
            &mut control,
            RecvFlags::empty(),
        ) {
            Ok(_) => break,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                return Err(io::Error::other(format!(
                    "no hello from the forked child: {e}"
                )));
            }
        }
    }
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmCredentials(cred) = message {
            return Ok(cred.pid.as_raw_nonzero().get() as u32);
        }
    }
    Err(io::Error::other(
        "the forked child's hello carried no credentials",
    ))
}

fn utf8(s: &std::ffi::OsStr) -> io::Result<String> {
    s.to_str()
        .map(str::to_string)
        .ok_or_else(|| io::Error::other(format!("{s:?} is not UTF-8")))
}

fn utf8_all<'a>(items: impl Iterator<Item = &'a OsString>) -> io::Result<Vec<String>> {
    items.map(|s| utf8(s)).collect()
}

enum SlotState {
    Starting,
    Idle(ForkServer),
    Busy,
    Off,
}

struct Slot {
    state: Mutex<SlotState>,
    changed: Condvar,
}

/// The run's fork servers, one per slot. Executors borrow a slot's server for one unit.
pub struct ForkPool {
    slots: Vec<Slot>,
    announced: AtomicBool,
    refusal: Mutex<Option<Refusal>>,
    /// The announcement `refuse` was asked to hold.
    held: Mutex<Option<String>>,
    pytest: Mutex<PytestImports>,
    pytest_known: Condvar,
}

/// How many servers imported pytest, and how many failed before they could.
#[derive(Default)]
struct PytestImports {
    imported: usize,
    failed: usize,
}

impl std::fmt::Debug for ForkPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForkPool")
            .field("slots", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl ForkPool {
    /// Starts one server per slot; `command(slot)` builds the slot's server command. Warm-up
    /// runs in the background, overlapping whatever racefree does next.
    pub fn start(
        workers: usize,
        command: impl Fn(usize) -> io::Result<Command>,
        preload_file: &Path,
        log_dir: &Path,
        verbose: bool,
    ) -> Arc<ForkPool> {
        let pool = Arc::new(ForkPool {
            slots: (0..workers)
                .map(|_| Slot {
                    state: Mutex::new(SlotState::Starting),
                    changed: Condvar::new(),
                })
                .collect(),
            announced: AtomicBool::new(false),
            refusal: Mutex::new(None),
            held: Mutex::new(None),
            pytest: Mutex::new(PytestImports::default()),
            pytest_known: Condvar::new(),
        });
        for slot in 0..workers {
            let log = log_dir.join(format!("forkserver-{slot}.log"));
            let started = command(slot).and_then(|cmd| ForkServer::start(cmd, preload_file, &log));
            let shared = pool.clone();
            let warm = move || {
                let pool = shared;
                let off = |refusal: Refusal, hold: bool| {
                    pool.refuse(refusal, &log, hold);
                    pool.set(slot, SlotState::Off);
                };
                let mut server = match started {
                    Ok(server) => server,
                    Err(e) => {
                        pool.tell_pytest(false);
                        return off(Refusal::plain(format!("it could not start: {e}")), true);
                    }
                };
                let imported = server.wait_pytest();
                pool.tell_pytest(imported.is_ok());
                let hold = imported.is_err();
                match imported.and_then(|()| server.wait_ready()) {
                    Ok(readiness) => {
                        if verbose {
                            eprintln!("{}", readiness.describe(slot));
                        }
                        pool.set(slot, SlotState::Idle(server))
                    }
                    Err(refusal) => off(refusal, hold),
                }
            };
            if std::thread::Builder::new()
                .name(format!("forkserver-{slot}"))
                .spawn(warm)
                .is_err()
            {
                pool.tell_pytest(false);
                pool.set(slot, SlotState::Off);
            }
        }
        pool
    }

    fn set(&self, slot: usize, state: SlotState) {
        let s = &self.slots[slot];
        if let Ok(mut guard) = s.state.lock() {
            *guard = state;
        }
        s.changed.notify_all();
    }

    /// Says once per run why units start without the fork server; `hold`: not yet (the
    /// server failed before it imported pytest, and the run may stop for that: see
    /// `say_held`).
    fn refuse(&self, refusal: Refusal, log: &Path, hold: bool) {
        if !self.announced.swap(true, Ordering::SeqCst) {
            let tail = std::fs::read_to_string(log)
                .ok()
                .and_then(|t| t.lines().last().map(str::to_string))
                .filter(|l| !l.trim().is_empty())
                .map(|l| format!(" ({l})"))
                .unwrap_or_default();
            let line = format!(
                "racefree: fork server off: {}{tail}; starting a fresh interpreter per unit",
                refusal.reason
            );
            match self.held.lock() {
                Ok(mut held) if hold => *held = Some(line),
                _ => eprintln!("{line}"),
            }
        }
        if let Ok(mut r) = self.refusal.lock()
            && r.is_none()
        {
            *r = Some(refusal);
        }
    }

    /// Says why a server that failed before importing pytest is off, once the run goes on
    /// (pytest imports in a fresh interpreter).
    pub fn say_held(&self) {
        if let Some(line) = self.held.lock().ok().and_then(|mut h| h.take()) {
            eprintln!("{line}");
        }
    }

    /// Each server says once whether it imported pytest.
    fn tell_pytest(&self, imported: bool) {
        if let Ok(mut counts) = self.pytest.lock() {
            if imported {
                counts.imported += 1;
            } else {
                counts.failed += 1;
            }
        }
        self.pytest_known.notify_all();
    }

    /// Waits until a server has imported pytest (true; the first few hundred milliseconds
    /// of its warm-up) or every one has failed before it could (false).
    pub fn wait_for_pytest_import(&self) -> bool {
        let Ok(mut counts) = self.pytest.lock() else {
            return false;
        };
        loop {
            if counts.imported > 0 {
                return true;
            }
            if counts.failed >= self.slots.len() {
                return false;
            }
            counts = match self.pytest_known.wait(counts) {
                Ok(c) => c,
                Err(_) => return false,
            };
        }
    }

    /// The first reason a server refused to fork, if any did.
    pub fn refusal(&self) -> Option<Refusal> {
        self.refusal.lock().ok().and_then(|r| r.clone())
    }

    /// Borrows the slot's server, waiting for its warm-up; None when the slot spawns.
    pub fn take(&self, slot: usize) -> Option<ForkServer> {
        let s = self.slots.get(slot)?;
        let mut guard = s.state.lock().ok()?;
        while matches!(*guard, SlotState::Starting) {
            guard = s.changed.wait(guard).ok()?;
        }
        match std::mem::replace(&mut *guard, SlotState::Busy) {
            SlotState::Idle(server) => Some(server),
            other => {
                *guard = other;
                None
            }
        }
    }

    /// Returns a borrowed server; None if it broke (the slot spawns from now on).
    pub fn give_back(&self, slot: usize, server: Option<ForkServer>) {
        match server {
            Some(server) => self.set(slot, SlotState::Idle(server)),
            None => self.set(slot, SlotState::Off),
        }
    }
}
