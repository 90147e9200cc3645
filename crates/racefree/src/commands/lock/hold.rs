//! `racefree lock PATH -- CMD`: acquire, run the command as a supervised child, release.
//!
//! Unlike flock(1), which execs the command, racefree stays as the child's supervisor:
//! - the lock is held until the child has exited (and only then released);
//! - SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to racefree are forwarded to the child (signals the
//!   terminal sent to the whole foreground process group already reached it, so those are not
//!   sent twice);
//! - on Linux the child is SIGKILLed if racefree itself dies, even by SIGKILL;
//! - the fencing token is exported to the child as `RACEFREE_LOCK_TOKEN`.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use racefree_lock::{LockError, LockOptions, Mode};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::SignalsInfo;
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::low_level::siginfo::Cause;

use super::inspect::{error_code, report};
use super::{HoldArgs, ModeArg, exit};
use crate::commands::EXIT_USAGE;
use crate::platform;

/// What the signal thread needs to know about the child.
#[derive(Default)]
struct ChildSlot {
    /// The running child's pid; `None` before spawn and once it has exited (before it is reaped,
    /// so a forwarded signal can never hit a recycled pid).
    pid: Option<i32>,
}

pub fn run(args: HoldArgs) -> miette::Result<ExitCode> {
    let Some(path) = args.path.clone() else {
        eprintln!(
            "racefree lock: missing the lock PATH; usage: racefree lock PATH -- COMMAND [ARGS...]"
        );
        return Ok(ExitCode::from(EXIT_USAGE));
    };
    let Some(mut command) = build_command(&args) else {
        eprintln!(
            "racefree lock: no command given for {}; add `-- COMMAND [ARGS...]` or `-c 'shell command'`",
            path.display()
        );
        return Ok(ExitCode::from(EXIT_USAGE));
    };

    // Signals are handled from before the wait starts: one that arrives while waiting cancels
    // the wait; one that arrives while the child runs is forwarded to it.
    let child = Arc::new(Mutex::new(ChildSlot::default()));
    let received = Arc::new(AtomicI32::new(0));
    let mut signals = SignalsInfo::<WithOrigin>::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT])
        .map_err(|e| miette::miette!("racefree lock: cannot install signal handlers: {e}"))?;
    let signal_handle = signals.handle();
    let signal_thread = {
        let child = Arc::clone(&child);
        let received = Arc::clone(&received);
        std::thread::Builder::new()
            .name("racefree-lock-signals".to_owned())
            .spawn(move || {
                for origin in signals.forever() {
                    received.store(origin.signal, Ordering::SeqCst);
                    let slot = match child.lock() {
                        Ok(s) => s,
                        Err(p) => p.into_inner(),
                    };
                    // A signal from the terminal went to the whole foreground group, child included.
                    if let Some(pid) = slot.pid
                        && origin.cause != Cause::Kernel
                    {
                        forward(pid, origin.signal);
                    }
                }
            })
            .map_err(|e| miette::miette!("racefree lock: cannot start the signal thread: {e}"))?
    };

    let cancel_flag = Arc::clone(&received);
    let options = LockOptions::new(&path)
        .mode(match args.mode {
            ModeArg::Auto => Mode::Auto,
            ModeArg::Kernel => Mode::Kernel,
            ModeArg::Soft => Mode::Soft,
        })
        .shared(args.shared)
        .timeout(if args.nonblock {
            Some(std::time::Duration::ZERO)
        } else {
            args.timeout
        })
        .lease(args.lease)
        .trust_filesystem(args.trust_filesystem)
        .cancel_when(move || cancel_flag.load(Ordering::SeqCst) != 0);

    let guard = match options.acquire() {
        Ok(g) => g,
        Err(LockError::Cancelled { .. }) => {
            let sig = received.load(Ordering::SeqCst);
            return Ok(ExitCode::from(128u8.wrapping_add(sig as u8)));
        }
        Err(e @ LockError::WouldBlock { .. }) => {
            eprintln!("racefree lock: {e}");
            return Ok(ExitCode::from(args.conflict_exit_code));
        }
        Err(e) => return Ok(report(&e)),
    };

    command.env("RACEFREE_LOCK_TOKEN", guard.token().to_string());
    command.env("RACEFREE_LOCK_PATH", guard.path());
    platform::kill_child_when_parent_dies(&mut command);

    let code = {
        // Hold the slot while spawning so a signal cannot slip between spawn and registration.
        let mut slot = match child.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        match command.spawn() {
            Ok(mut process) => {
                let pid = process.id() as i32;
                slot.pid = Some(pid);
                drop(slot);
                supervise(&mut process, pid, &child)
            }
            Err(e) => {
                let code = match e.kind() {
                    std::io::ErrorKind::NotFound => exit::NOT_FOUND,
                    std::io::ErrorKind::PermissionDenied => exit::CANNOT_EXECUTE,
                    _ => exit::OS_ERROR,
                };
                eprintln!("racefree lock: cannot run {:?}: {e}", command.get_program());
                code
            }
        }
    };

    // The child is gone: now, and only now, give the lock back.
    let release = guard.release();
    signal_handle.close();
    let _ = signal_thread.join();
    if let Err(e) = release {
        eprintln!("racefree lock: {e}");
        if code == 0 {
            return Ok(ExitCode::from(error_code(&e)));
        }
    }
    Ok(ExitCode::from(code))
}

fn build_command(args: &HoldArgs) -> Option<Command> {
    if let Some(script) = &args.shell_command {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(script);
        return Some(cmd);
    }
    let (program, rest) = args.argv.split_first()?;
    let mut cmd = Command::new(program);
    cmd.args(rest);
    Some(cmd)
}

/// Waits for the child to exit, marks it gone before reaping it, and maps its status to an exit
/// code: its own code, or 128 + the signal that killed it.
fn supervise(process: &mut std::process::Child, pid: i32, child: &Mutex<ChildSlot>) -> u8 {
    wait_without_reaping(pid);
    {
        let mut slot = match child.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        slot.pid = None;
    }
    match process.wait() {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => u8::try_from(code).unwrap_or(u8::MAX),
            (None, Some(sig)) => 128u8.wrapping_add(sig as u8),
            (None, None) => exit::OS_ERROR,
        },
        Err(e) => {
            eprintln!("racefree lock: waiting for the command failed: {e}");
            exit::OS_ERROR
        }
    }
}

/// Blocks until the child has exited, leaving it unreaped (its pid stays reserved).
fn wait_without_reaping(pid: i32) {
    let Some(pid) = rustix::process::Pid::from_raw(pid) else {
        return;
    };
    loop {
        match rustix::process::waitid(
            rustix::process::WaitId::Pid(pid),
            rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOWAIT,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            _ => return,
        }
    }
}

fn forward(pid: i32, signal: i32) {
    let (Some(pid), Some(sig)) = (
        rustix::process::Pid::from_raw(pid),
        rustix::process::Signal::from_named_raw(signal),
    ) else {
        return;
    };
    let _ = rustix::process::kill_process(pid, sig);
}
