//! Signals for the two supervisors (the outer process and PID 1). Both block SIGCHLD and the
//! signals they forward, then take them synchronously with sigwaitinfo: no asynchronous
//! handler, and no window between "the child exited" and "start waiting" (a signal that
//! arrives early stays pending until it is waited for).
//!
//! Blocking also matters for PID 1: the kernel drops signals sent to a namespace's init for
//! which it has no handler, but never drops a signal the init has blocked.

use std::io;
use std::mem::MaybeUninit;
use std::ptr;

/// Signals passed on to the supervised child.
pub const FORWARDED: [i32; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

fn set_of(signals: &[i32]) -> io::Result<libc::sigset_t> {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set behind the pointer, which is valid for writes.
    if unsafe { libc::sigemptyset(set.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sigemptyset succeeded, so the set is initialised.
    let mut set = unsafe { set.assume_init() };
    for &sig in signals {
        // SAFETY: `set` is an initialised sigset_t owned by this frame.
        if unsafe { libc::sigaddset(&mut set, sig) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(set)
}

/// The blocked set; this process takes these signals only through `wait`.
pub struct Blocked {
    set: libc::sigset_t,
}

impl Blocked {
    /// Blocks SIGCHLD and the forwarded signals. Children inherit the mask (and exec keeps
    /// it): the supervised command must be started with `unblock_in_child`.
    pub fn block() -> io::Result<Blocked> {
        let mut all = FORWARDED.to_vec();
        all.push(libc::SIGCHLD);
        let set = set_of(&all)?;
        // SAFETY: `set` is initialised; a null old-set pointer is allowed.
        if unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Blocked { set })
    }

    /// Waits for the next blocked signal.
    pub fn wait(&self) -> io::Result<Caught> {
        let mut info = MaybeUninit::<libc::siginfo_t>::zeroed();
        loop {
            // SAFETY: `self.set` is initialised and `info` is valid for writes of a siginfo_t.
            let sig = unsafe { libc::sigwaitinfo(&self.set, info.as_mut_ptr()) };
            if sig >= 0 {
                // SAFETY: sigwaitinfo filled `info` (it was zeroed before, in any case).
                let info = unsafe { info.assume_init() };
                // SAFETY: si_pid is meaningful for the signals blocked here (sent by kill or
                // sigqueue, or SIGCHLD); for others it reads as the zeroed field's 0.
                let sender = unsafe { info.si_pid() };
                return Ok(Caught {
                    signo: sig,
                    sender,
                    queued: info.si_code == libc::SI_QUEUE,
                });
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

/// A signal taken by `Blocked::wait`.
#[derive(Debug, Clone, Copy)]
pub struct Caught {
    pub signo: i32,
    /// The sender's pid as this process sees it: 0 if the sender is outside our PID
    /// namespace (racefree, or the outer supervisor, as PID 1 sees them), and possibly 0
    /// for a process-group signal that also went to a member in a child namespace.
    pub sender: i32,
    /// Sent with sigqueue: the outer supervisor passing on a signal meant for the command.
    pub queued: bool,
}

/// Passes `sig` on to `pid` with sigqueue, so that an init can tell it from a signal sent to
/// the whole process group (see `init::supervise`).
pub fn pass_on(pid: i32, sig: i32) {
    // SAFETY: sigqueue only sends a signal; the value is a plain integer union.
    unsafe {
        libc::sigqueue(
            pid,
            sig,
            libc::sigval {
                sival_ptr: ptr::null_mut(),
            },
        )
    };
}

/// Makes the child `cmd` starts begin with no signal blocked, as if no supervisor stood
/// between it and its parent.
pub fn unblock_in_child(cmd: &mut std::process::Command) -> io::Result<()> {
    use std::os::unix::process::CommandExt;
    let empty = set_of(&[])?;
    // SAFETY: the closure runs between fork and exec; sigprocmask is async-signal-safe and
    // `empty` is an initialised set copied into the closure. It allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::sigprocmask(libc::SIG_SETMASK, &empty, ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

/// Ends this process by `sig`, so that whoever waits for it sees the same signal the
/// supervised command died of. Falls back to exit status 128+sig for signals whose default
/// action does not terminate.
pub fn die_by(sig: i32) -> ! {
    // SAFETY: resetting a disposition to SIG_DFL installs no handler code.
    unsafe { libc::signal(sig, libc::SIG_DFL) };
    if let Ok(set) = set_of(&[sig]) {
        // SAFETY: `set` is initialised; a null old-set pointer is allowed.
        unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &set, ptr::null_mut()) };
    }
    // SAFETY: raise only sends a signal to this thread; its default action ends the process.
    unsafe { libc::raise(sig) };
    std::process::exit(128 + sig)
}
