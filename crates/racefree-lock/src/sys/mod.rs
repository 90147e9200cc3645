//! Platform facts the lock needs: process liveness and start time, boot and host identity,
//! filesystem kind, and a way to wait for a process to die. Linux is first-class; other Unix
//! systems (macOS) get the portable subset, and `None` where a fact is unknown.

mod pid;
pub(crate) use pid::current_pid;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::*;

#[cfg(not(target_os = "linux"))]
mod portable;

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
pub(crate) use macos::*;

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
mod other;
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
pub(crate) use other::*;

/// What the kernel says about a process id right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProcState {
    /// No such process (or only a zombie that already exited).
    Gone,
    /// A live process; `start_time` identifies it across pid reuse when known.
    Running { start_time: Option<u64> },
}

/// Whether a pid names a live process. `kill(pid, 0)` answers for every Unix; EPERM means the
/// process exists but belongs to another user, which is alive all the same.
pub(crate) fn pid_exists(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    let Some(pid) = rustix::process::Pid::from_raw(raw) else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e != rustix::io::Errno::SRCH,
    }
}

/// The hostname (uname's nodename), which every Unix has.
pub(crate) fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Filesystem families that decide the lock mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsKind {
    /// A local filesystem whose `flock` is trustworthy.
    Local,
    /// A network filesystem (NFS, SMB/CIFS, Ceph, AFS, 9p, ...): kernel locks may be emulated or ignored.
    Network(String),
    /// A FUSE filesystem: lock semantics depend on the daemon.
    Fuse(String),
}
