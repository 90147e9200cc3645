//! Unix process and file-system plumbing. The only `unsafe` of the crate lives here and in
//! `isolation/linux` (namespaces, fork, signal masks).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use rustix::fs::{Mode, OFlags};
use rustix::io::FdFlags;
use rustix::process::{Pid, Signal};

use crate::error::{Error, Result};

pub fn uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// True if `path` is a tmpfs we may write to (Linux: statfs magic + access).
#[cfg(target_os = "linux")]
pub fn is_writable_tmpfs(path: &Path) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let Ok(st) = rustix::fs::statfs(path) else {
        return false;
    };
    #[allow(clippy::unnecessary_cast)]
    let is_tmpfs = st.f_type as i64 == TMPFS_MAGIC;
    is_tmpfs && rustix::fs::access(path, rustix::fs::Access::WRITE_OK).is_ok()
}

/// Creates a 0700 directory; fails if it exists.
pub fn mkdir_private(path: &Path) -> io::Result<()> {
    rustix::fs::mkdir(path, Mode::RWXU).map_err(io::Error::from)
}

/// Makes sure `path` is a directory of ours, not a symlink, closed to others: the per-user
/// parent of session roots sits in a world-writable directory.
pub fn ensure_private_dir(path: &Path) -> Result<()> {
    match rustix::fs::mkdir(path, Mode::RWXU) {
        Ok(()) => return Ok(()),
        Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(Error::io(format!("creating {}", path.display()), e.into())),
    }
    // Open without following a symlink and check what we opened.
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        Error::io(
            format!(
                "opening {} (it must be a directory, not a symlink)",
                path.display()
            ),
            e.into(),
        )
    })?;
    let st = rustix::fs::fstat(&fd)
        .map_err(|e| Error::io(format!("inspecting {}", path.display()), e.into()))?;
    if st.st_uid != uid() || (st.st_mode as u32) & 0o077 != 0 {
        return Err(Error::io(
            format!("refusing to use {}", path.display()),
            io::Error::other(
                "it belongs to another user or is open to others; remove it or set TMPDIR elsewhere",
            ),
        ));
    }
    Ok(())
}

/// A pipe whose both ends are close-on-exec: no unit inherits another unit's pipe.
pub fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(io::Error::from)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    {
        let (r, w) = rustix::pipe::pipe()?;
        rustix::io::fcntl_setfd(&r, FdFlags::CLOEXEC)?;
        rustix::io::fcntl_setfd(&w, FdFlags::CLOEXEC)?;
        Ok((r, w))
    }
}

/// Lets the child about to be spawned by `cmd` (and only it) inherit `fd`, and puts the
/// child in its own process group so the whole unit can be signalled at once.
pub fn prepare_child(cmd: &mut Command, fd: RawFd) {
    cmd.process_group(0);
    #[cfg(target_os = "linux")]
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs in the forked child before exec. It only calls fcntl(F_SETFD),
    // prctl(PR_SET_PDEATHSIG) and getppid, which are async-signal-safe syscalls; it allocates
    // nothing (an io::Error from a raw errno does not allocate) and takes no lock. `fd` is
    // open in the child because the parent keeps the OwnedFd alive until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            // SAFETY: see above; `fd` is a valid open descriptor for the call's duration.
            let borrowed = BorrowedFd::borrow_raw(fd);
            rustix::io::fcntl_setfd(borrowed, FdFlags::empty())?;
            // If racefree dies abruptly, its pytest children die with it instead of
            // running on unobserved (Linux; their own children are not covered: only a PID
            // namespace makes that exact).
            #[cfg(target_os = "linux")]
            {
                rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
                // racefree may have died between fork and prctl; then no signal will ever
                // come, so do not start pytest at all.
                if rustix::process::getppid() != Some(parent) {
                    return Err(io::Error::from_raw_os_error(
                        rustix::io::Errno::SRCH.raw_os_error(),
                    ));
                }
            }
            Ok(())
        });
    }
}

/// Sends `signal` to a whole process group.
pub fn kill_group(pgid: u32, signal: Signal) {
    if let Some(pid) = Pid::from_raw(pgid as i32) {
        // The group may be gone already; nothing to do then.
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

/// Blocks until the child exits, without reaping it: while the zombie exists its pid (and
/// process group id) cannot be reused, so a concurrent kill cannot hit a stranger.
pub fn wait_exit_keep_zombie(pid: u32) -> io::Result<()> {
    let Some(pid) = Pid::from_raw(pid as i32) else {
        return Ok(());
    };
    loop {
        match rustix::process::waitid(
            rustix::process::WaitId::Pid(pid),
            rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOWAIT,
        ) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Waits until one of `fds` is readable (or hung up), at most `timeout_ms`.
/// Returns, for each fd, whether it is ready.
pub fn poll_readable(fds: &[BorrowedFd<'_>], timeout_ms: i32) -> io::Result<Vec<bool>> {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::new(fd, PollFlags::IN))
        .collect();
    let timeout = Timespec {
        tv_sec: (timeout_ms / 1000) as _,
        tv_nsec: ((timeout_ms % 1000) as i64 * 1_000_000) as _,
    };
    match rustix::event::poll(&mut pfds, Some(&timeout)) {
        Ok(_) | Err(rustix::io::Errno::INTR) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(pfds.iter().map(|p| !p.revents().is_empty()).collect())
}

pub fn as_fd<T: AsFd>(t: &T) -> BorrowedFd<'_> {
    t.as_fd()
}

pub use rustix::process::Signal as Sig;
