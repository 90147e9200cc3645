//! `racefree __init-factory`: the fork server's maker of unit inits, one PID namespace and
//! its PID 1 per forked unit (python/racefree_unitns.py is the server's side).
//!
//! The server (a warm Python process) starts this as its child before it imports pytest,
//! over a SOCK_SEQPACKET socket. For each unit the server sends `new`; the factory answers
//! with the pid of an init it forked into a new PID namespace, plus (SCM_RIGHTS) its end of
//! a stream socket to that init, or with a line saying why it could not. It keeps one init
//! made ahead, so a unit never waits for the fork. The server enters the init's namespace
//! for one fork (pytest's process becomes PID 2) and, when pytest's process has exited,
//! writes `sweep` (or `sweep-exiting`) to the init, which stops, lists, kills and reaps
//! whatever the unit left behind, writes one leak line per process and exits, ending the
//! namespace.
//!
//! Why native code: every unit pays a fork of this process and of its init, and the
//! init's run. A Python init was a fork of a ~10 MB interpreter whose every touched page
//! then had to be copied (reference counts are writes), some 2 ms of CPU per unit. This
//! process maps little and writes less.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags,
    SocketType,
};
use rustix::process::Signal;
use rustix::thread::{LinkNameSpaceType, UnshareFlags};

use super::init::{Leak, cmdline, host_pid, is_zombie, kill_all, leak_line, test_of};

/// pytest's process, as the unit's namespace numbers it: the first the server forks into
/// it after the init (PID 1).
const UNIT_PID: i32 = 2;

/// Runs the factory until the server closes its socket (or dies: the parent-death signal).
/// `socket` and `host_proc` are descriptor numbers the server passed across exec; `parent`
/// is the server's pid.
pub fn run(socket: i32, host_proc: Option<i32>, parent: i32) -> Result<(), String> {
    let socket = adopt(socket).map_err(|e| format!("--socket {socket}: {e}"))?;
    let host_proc = match host_proc {
        Some(fd) => Some(adopt(fd).map_err(|e| format!("--host-proc {fd}: {e}"))?),
        None => None,
    };
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
        .map_err(|e| format!("setting the parent-death signal: {e}"))?;
    if rustix::process::getppid().map(|p| p.as_raw_nonzero().get()) != Some(parent) {
        return Ok(()); // the server was gone before the signal was armed
    }
    let own = rustix::fs::open(
        "/proc/self/ns/pid",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("opening /proc/self/ns/pid: {e}"))?;
    ignore_sigchld().map_err(|e| format!("ignoring SIGCHLD: {e}"))?;
    let mut ready = make_init(&socket, &own, host_proc.as_ref());
    let mut request = [0u8; 16];
    loop {
        match rustix::net::recv(&socket, &mut request, RecvFlags::empty()) {
            Ok((0, _)) => return Ok(()), // the server is done
            Ok(_) => {}
            Err(Errno::INTR) => continue,
            Err(e) => return Err(format!("reading the server's request: {e}")),
        }
        let sent = match &ready {
            Ok((pid, mine)) => send_init(&socket, *pid, mine.as_fd()),
            Err(why) => send_all(&socket, why.as_bytes()),
        };
        if let Err(e) = sent {
            return Err(format!("answering the server: {e}"));
        }
        // Our end of the init just handed over goes before the next fork: the next init
        // must not hold it, or the server closing its end would not end that init.
        drop(std::mem::replace(&mut ready, Err(String::new())));
        ready = make_init(&socket, &own, host_proc.as_ref());
    }
}

/// Takes ownership of a descriptor inherited across exec, after checking it is open.
fn adopt(fd: i32) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::other("not a descriptor"));
    }
    // SAFETY: the server passed this number on our command line for us to own; fcntl only
    // asks whether it is open, and nothing else in this fresh process holds it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let flags = rustix::io::fcntl_getfd(borrowed)?;
    rustix::io::fcntl_setfd(borrowed, flags | rustix::io::FdFlags::CLOEXEC)?;
    // SAFETY: open (checked above) and handed to us alone; nothing closes it elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Children that exit are reaped by the kernel, here and (inherited) in every init: the
/// inits' orphans vanish as they die, as under any init, at no cost per process.
fn ignore_sigchld() -> io::Result<()> {
    // SAFETY: SIG_IGN is not a handler, so no code runs in signal context.
    let previous = unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    if previous == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Forks an init into a new PID namespace: its pid and the factory's end of its socket, or
/// why not.
fn make_init(
    socket: &OwnedFd,
    own: &OwnedFd,
    host_proc: Option<&OwnedFd>,
) -> Result<(i32, OwnedFd), String> {
    let (mine, theirs) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| format!("making the unit init's socket: {e}"))?;
    // SAFETY: CLONE_NEWPID only changes the namespace of this process's next children; no
    // descriptor table is unshared, and this process has a single thread.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWPID) }
        .map_err(|e| format!("making the unit's PID namespace: unshare(CLONE_NEWPID): {e}"))?;
    // SAFETY: this process is single-threaded (started by exec, it starts no thread), so
    // the child may do anything the parent could, including allocate.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // The init holds no end of the server's socket (else the server would never see
        // the factory's end of file) and none of its own socket's factory end.
        drop(mine);
        // SAFETY: the child owns its copy of the socket's descriptor; it never returns to
        // the loop that owns the parent's, and exits below without touching it again.
        unsafe { libc::close(socket.as_raw_fd()) };
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            unit_init(theirs, host_proc)
        }))
        .unwrap_or(70);
        // SAFETY: _exit ends the process at once; it takes no pointer.
        unsafe { libc::_exit(code) };
    }
    let forked = if pid < 0 {
        Err(format!(
            "making the unit's init: fork: {}",
            io::Error::last_os_error()
        ))
    } else {
        Ok(pid)
    };
    // Back in our own namespace: the next unshare makes a sibling, not a child, of this one.
    rustix::thread::move_into_link_name_space(own.as_fd(), Some(LinkNameSpaceType::ProcessID))
        .map_err(|e| format!("setns(CLONE_NEWPID) back: {e}"))?;
    drop(theirs);
    Ok((forked?, mine))
}

/// One message: the init's pid in our namespace, with the server's end of its socket.
fn send_init(socket: &OwnedFd, pid: i32, init_socket: BorrowedFd<'_>) -> io::Result<()> {
    let text = pid.to_string();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [init_socket];
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("no room for the init's descriptor"));
    }
    loop {
        match rustix::net::sendmsg(
            socket,
            &[io::IoSlice::new(text.as_bytes())],
            &mut control,
            SendFlags::empty(),
        ) {
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn send_all(fd: &OwnedFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match rustix::net::send(fd, data, SendFlags::NOSIGNAL) {
            Ok(n) => data = &data[n..],
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

// The unit's init: PID 1 of the unit's namespace. It waits for the server's word that
// pytest's process has exited; meanwhile everything orphaned in the namespace becomes its
// child, reaped as it dies (SIGCHLD is ignored). Then it stops what is left, names it (by
// the pid racefree sees, which racefree reports but never signals), kills it and exits. No
// parent-death signal is needed: it ends when the other end of its socket closes, held by
// the server (for the unit's init) or the factory (for the one made ahead).

fn unit_init(ctl: OwnedFd, host_proc: Option<&OwnedFd>) -> i32 {
    let mut word = [0u8; 16];
    // "sweep", "sweep-exiting", or end of file if the server is gone: sweep all the same.
    let read = loop {
        match rustix::io::read(&ctl, &mut word) {
            Ok(n) => break n,
            Err(Errno::INTR) => continue,
            Err(_) => break 0,
        }
    };
    // pytest's process has exited, so all it left running is ours, or our children's. If
    // it is still exiting, what it started is still its children: look at every process.
    let mut lines = String::new();
    if &word[..read] == b"sweep-exiting" || has_children() {
        for leak in stop_leftovers(host_proc) {
            lines.push_str(&leak_line(&leak));
        }
        kill_all();
    }
    // The server reads to the end: give it now, not after this process's teardown.
    let _ = send_all(&ctl, lines.as_bytes());
    let _ = rustix::net::shutdown(&ctl, rustix::net::Shutdown::Write);
    0
}

/// False if this process has no child, which after pytest's exit means the namespace has
/// nothing left but pytest's process, a zombie the server reaps: the common case, one read.
fn has_children() -> bool {
    match std::fs::read_to_string("/proc/thread-self/children") {
        Ok(text) => !text.trim().is_empty(),
        Err(_) => true, // no way to tell: look
    }
}

/// Freezes everything else in the namespace (SIGSTOP: nothing can fork while we look) and
/// lists what is alive. Zombies are gone, only not yet reaped: not leaks. PID 2 is pytest's
/// process: by now a zombie, or (when it told the server its status before exiting) still
/// in the kernel's teardown; either way not left behind.
fn stop_leftovers(host_proc: Option<&OwnedFd>) -> Vec<Leak> {
    // SAFETY: kill(-1, SIGSTOP) passes no pointers; from a namespace's init it reaches
    // every process of the namespace but itself.
    if unsafe { libc::kill(-1, libc::SIGSTOP) } != 0 {
        return Vec::new(); // ESRCH: nobody is left
    }
    let mut members = members();
    members.sort_unstable_by_key(|&(_, pid)| pid);
    members
        .into_iter()
        .filter(|&(name, pid)| pid != UNIT_PID && !is_zombie(name))
        .map(|(name, pid)| Leak {
            pid: host_proc.and_then(|p| host_pid(p, pid)).unwrap_or(pid),
            cmdline: cmdline(name),
            test: test_of(name),
        })
        .collect()
}

/// (pid in the mounted /proc, pid here) for every other process of this PID namespace.
/// /proc is the server's (the init never mounts its own: that would cost each unit a mount
/// namespace), which shows the slot's namespace, a parent of this one.
fn members() -> Vec<(i32, i32)> {
    let (Ok(own), Ok(me), Ok(entries)) = (
        std::fs::metadata("/proc/self/ns/pid"),
        std::fs::read_link("/proc/self"),
        std::fs::read_dir("/proc"),
    ) else {
        return Vec::new();
    };
    let me: Option<i32> = me.to_str().and_then(|s| s.parse().ok());
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&name| Some(name) != me)
        .filter(|name| {
            std::fs::metadata(format!("/proc/{name}/ns/pid"))
                .is_ok_and(|ns| (ns.dev(), ns.ino()) == (own.dev(), own.ino()))
        })
        .filter_map(|name| {
            let status = std::fs::read_to_string(format!("/proc/{name}/status")).ok()?;
            Some((name, innermost_nspid(&status)?))
        })
        .collect()
}

/// The last number of the `NSpid:` line: the pid in the innermost namespace, ours.
fn innermost_nspid(status: &str) -> Option<i32> {
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    let last = line.split_whitespace().next_back()?;
    last.parse().ok().filter(|&pid: &i32| pid > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pid_here_is_the_innermost() {
        assert_eq!(
            innermost_nspid("Name:\tsleep\nNSpid:\t812\t40\t2\n"),
            Some(2)
        );
        assert_eq!(innermost_nspid("NSpid:\t812\n"), Some(812));
        assert_eq!(innermost_nspid("Pid:\t5\n"), None);
    }
}
