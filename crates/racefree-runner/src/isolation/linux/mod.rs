//! `racefree __unit-init` on Linux: run one command in fresh namespaces under racefree's own
//! init, and mirror how it ended.
//!
//! Three processes: the *outer* process (what the executor spawned, leader of the unit's
//! process group) enters the namespaces with unshare and forks the *init*, PID 1 of the new
//! PID namespace, which mounts the private file systems, starts the *command* and supervises
//! it (init.rs). The outer waits for init and exits as it did; if the command died by a
//! signal, init says so over a pipe and the outer dies by the same signal, so the executor
//! sees what it would have seen without isolation.
//!
//! Lifetimes are chained: racefree -> outer -> init by PR_SET_PDEATHSIG, init -> everything in
//! the namespace by the kernel (when a PID namespace's init dies, every process in it is
//! SIGKILLed). So killing the unit's process group, or racefree itself, kills the whole unit,
//! daemons included.

mod factory;
mod init;
mod mounts;
mod signals;

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::process::{Pid, Signal, WaitOptions};
use rustix::thread::UnshareFlags;

use super::{InitOptions, SETUP_FAILED};

/// A setup step that failed, named for the user.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct SetupError {
    step: String,
    #[source]
    source: io::Error,
}

fn step<E: Into<io::Error>>(step: impl Into<String>) -> impl FnOnce(E) -> SetupError {
    move |e| SetupError {
        step: step.into(),
        source: e.into(),
    }
}

pub use factory::run as init_factory;

pub fn unit_init(opts: &InitOptions) -> i32 {
    match outer(opts) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("racefree: namespace isolation: {e}");
            SETUP_FAILED
        }
    }
}

fn outer(opts: &InitOptions) -> Result<i32, SetupError> {
    ensure_single_threaded()?;
    enter_namespaces(opts.private_network)?;
    // unshare may change our credentials; make sure we still die with racefree.
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
        .map_err(step("setting the parent-death signal"))?;
    let blocked = signals::Blocked::block().map_err(step("blocking signals"))?;
    // `alive`: init learns that the outer process is gone (it holds the read end; the write
    // end closes when we die). `report`: init tells us the signal the command died of.
    let (alive_r, alive_w) = crate::unix::pipe_cloexec().map_err(step("creating a pipe"))?;
    let (report_r, report_w) = crate::unix::pipe_cloexec().map_err(step("creating a pipe"))?;
    // SAFETY: the process is single-threaded (checked above), so the child may do anything
    // the parent could, including allocate; no lock can be held by a thread that vanished.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(step("fork")(io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(alive_w);
        drop(report_r);
        // The child must never return into the outer process's code, not even by a panic.
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            init::run(opts, alive_r, report_w, &blocked)
        }))
        .unwrap_or(SETUP_FAILED);
        std::process::exit(code);
    }
    drop(alive_r);
    drop(report_w);
    let init = Pid::from_raw(pid).ok_or_else(|| step("fork")(io::Error::other("bad pid")))?;
    let parent = rustix::process::getppid().map(|p| p.as_raw_nonzero().get());
    let status = loop {
        let caught = blocked.wait().map_err(step("waiting for signals"))?;
        if caught.signo == libc::SIGCHLD {
            match rustix::process::waitpid(Some(init), WaitOptions::NOHANG) {
                Ok(Some((_, status))) => break status,
                Ok(None) => continue,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(step("waiting for the namespace's init")(e)),
            }
        } else if caught.sender != 0 && Some(caught.sender) != parent {
            // Whoever signalled this process alone meant the unit's command: init passes it
            // on. racefree (our parent) signals the unit's whole process group, which the
            // command is in: passing that on would deliver it twice, and a second SIGTERM
            // cuts short the traceback faulthandler writes on the first. The kernel shares
            // one siginfo among a group signal's receivers and zeroes its sender on the way
            // past one in a child PID namespace (the command), so a group signal's sender
            // may read as 0 here: never passed on either.
            signals::pass_on(init.as_raw_nonzero().get(), caught.signo);
        }
    };
    drop(alive_w);
    if let Some(sig) = status.terminating_signal() {
        signals::die_by(sig);
    }
    if let Some(sig) = reported_signal(&report_r) {
        signals::die_by(sig);
    }
    Ok(status.exit_status().unwrap_or(SETUP_FAILED))
}

/// The signal number init wrote before exiting, if the command died by one.
fn reported_signal(report: &OwnedFd) -> Option<i32> {
    let mut byte = [0u8; 1];
    match rustix::io::read(report.as_fd(), &mut byte) {
        Ok(1) if byte[0] != 0 => Some(i32::from(byte[0])),
        _ => None,
    }
}

/// Namespaces, fork and the signal mask need a process with one thread: unshare refuses a
/// user namespace to a threaded process, and a fork of a threaded process may only exec.
fn ensure_single_threaded() -> Result<(), SetupError> {
    let threads = std::fs::read_dir("/proc/self/task")
        .map_err(step("listing /proc/self/task"))?
        .count();
    if threads != 1 {
        return Err(step("starting")(io::Error::other(format!(
            "__unit-init must run single-threaded, found {threads} threads"
        ))));
    }
    Ok(())
}

/// unshare(2) into new mount, PID and IPC (and network) namespaces. Root can do that
/// directly; anyone else (and root without CAP_SYS_ADMIN, as in many containers) needs a
/// user namespace, where we map our own uid and gid to themselves so tests see their real
/// ids.
fn enter_namespaces(private_network: bool) -> Result<(), SetupError> {
    let mut flags = UnshareFlags::NEWNS | UnshareFlags::NEWPID | UnshareFlags::NEWIPC;
    if private_network {
        flags |= UnshareFlags::NEWNET;
    }
    let uid = rustix::process::geteuid();
    let gid = rustix::process::getegid();
    let unshare = |flags: UnshareFlags| {
        // SAFETY: the flags never include CLONE_FILES, the only one that can break fd
        // ownership across threads, and this process has a single thread anyway.
        unsafe { rustix::thread::unshare_unsafe(flags) }
    };
    let with_user = if uid.is_root() {
        match unshare(flags) {
            Ok(()) => false,
            Err(rustix::io::Errno::PERM) => {
                unshare(flags | UnshareFlags::NEWUSER)
                    .map_err(step(describe("unshare", flags | UnshareFlags::NEWUSER)))?;
                true
            }
            Err(e) => return Err(step(describe("unshare", flags))(e)),
        }
    } else {
        unshare(flags | UnshareFlags::NEWUSER)
            .map_err(step(describe("unshare", flags | UnshareFlags::NEWUSER)))?;
        true
    };
    if with_user {
        // setgroups must be denied before an unprivileged process may write gid_map.
        match std::fs::write("/proc/self/setgroups", "deny") {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(step("writing /proc/self/setgroups")(e)),
        }
        let uid = uid.as_raw();
        let gid = gid.as_raw();
        std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1\n"))
            .map_err(step("writing /proc/self/uid_map"))?;
        std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1\n"))
            .map_err(step("writing /proc/self/gid_map"))?;
    }
    Ok(())
}

fn describe(call: &str, flags: UnshareFlags) -> String {
    let names: Vec<&str> = [
        (UnshareFlags::NEWUSER, "user"),
        (UnshareFlags::NEWNS, "mount"),
        (UnshareFlags::NEWPID, "pid"),
        (UnshareFlags::NEWIPC, "ipc"),
        (UnshareFlags::NEWNET, "network"),
    ]
    .iter()
    .filter(|(f, _)| flags.contains(*f))
    .map(|(_, n)| *n)
    .collect();
    format!("{call}({})", names.join(", "))
}
