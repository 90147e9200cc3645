//! racefree's init: PID 1 of a unit's PID namespace. It mounts the unit's private file
//! systems, starts the command, reaps every process that ends up as its child, forwards
//! SIGTERM/SIGINT/SIGHUP/SIGQUIT to the command, and when the command exits reports every
//! process still alive in the namespace as a leak on the event pipe, kills them all and
//! exits with the command's status.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::process::Command;

use rustix::fs::{Mode, OFlags};
use rustix::process::{Pid, PidfdFlags, Signal, WaitOptions, WaitStatus};

use super::signals::{Blocked, FORWARDED};
use super::{InitOptions, SETUP_FAILED, mounts};

/// Exit status when the command cannot be started (as a shell reports it).
const NOT_STARTED: i32 = 127;
/// Longest command line written in a leak message: keeps each line one atomic pipe write.
const CMDLINE_MAX: usize = 1024;

pub fn run(opts: &InitOptions, alive: OwnedFd, report: OwnedFd, blocked: &Blocked) -> i32 {
    // Die with the outer process. It may already be gone (then no signal will ever come):
    // its end of `alive` is closed then, which poll reports as a hang-up.
    if rustix::process::set_parent_process_death_signal(Some(Signal::KILL)).is_err()
        || outer_is_gone(&alive)
    {
        return SETUP_FAILED;
    }
    let old_proc = match mounts::setup(&opts.keep, opts.private_network) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("racefree: namespace isolation: {e}");
            return SETUP_FAILED;
        }
    };
    if opts.probe {
        return 0;
    }
    let Some((program, args)) = opts.command.split_first() else {
        eprintln!("racefree: __unit-init: no command given");
        return SETUP_FAILED;
    };
    let mut cmd = Command::new(program);
    cmd.args(args);
    // A fork server gets two descriptors, kept open across exec (without FD_CLOEXEC: dup
    // and a plain open make such): the host's /proc, and this very executable, which it
    // starts as its init factory. The executable is opened through /proc/self/exe, which
    // reaches it even where the private tmpfs now covers its path.
    let _inherited = if opts.fork_server {
        let prepared = keep_admin_across_exec()
            .map_err(|e| format!("keeping CAP_SYS_ADMIN for the fork server: {e}"))
            .and_then(|()| {
                rustix::io::dup(&old_proc)
                    .map_err(|e| format!("duplicating /proc's descriptor: {e}"))
            })
            .and_then(|proc| {
                rustix::fs::open("/proc/self/exe", OFlags::RDONLY, Mode::empty())
                    .map(|exe| (proc, exe))
                    .map_err(|e| format!("opening racefree's executable: {e}"))
            });
        match prepared {
            Ok((proc, exe)) => {
                cmd.env("RACEFREE_HOST_PROC_FD", proc.as_raw_fd().to_string());
                cmd.env("RACEFREE_INIT_FACTORY_EXE_FD", exe.as_raw_fd().to_string());
                Some((proc, exe))
            }
            Err(e) => {
                eprintln!("racefree: namespace isolation: {e}");
                return SETUP_FAILED;
            }
        }
    } else {
        None
    };
    if let Err(e) = super::signals::unblock_in_child(&mut cmd) {
        eprintln!("racefree: namespace isolation: preparing the signal mask: {e}");
        return SETUP_FAILED;
    }
    let child = match cmd.spawn() {
        Ok(child) => child.id() as i32,
        Err(e) => {
            eprintln!("racefree: cannot start {}: {e}", program.to_string_lossy());
            return NOT_STARTED;
        }
    };
    let status = supervise(child, blocked);
    let leaks = stop_leftovers(&old_proc);
    report_leaks(&leaks);
    kill_all();
    match status {
        Some(status) => match (status.exit_status(), status.terminating_signal()) {
            (Some(code), _) => code,
            (None, Some(sig)) => {
                // PID 1 cannot die by a signal it sends itself; tell the outer process.
                let _ = rustix::io::write(&report, &[sig as u8]);
                128 + sig
            }
            (None, None) => SETUP_FAILED,
        },
        None => SETUP_FAILED,
    }
}

/// A fork server unshares and mounts for every unit, which needs CAP_SYS_ADMIN in the user
/// namespace. Root keeps its capabilities across exec; any other uid (ours, mapped to itself)
/// loses them unless they are ambient, which takes them being inheritable first. The server
/// drops them again in each unit's pytest process.
fn keep_admin_across_exec() -> rustix::io::Result<()> {
    use rustix::thread::CapabilitySet;
    if rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let mut sets = rustix::thread::capabilities(None)?;
    sets.inheritable |= CapabilitySet::SYS_ADMIN;
    rustix::thread::set_capabilities(None, sets)?;
    rustix::thread::configure_capability_in_ambient_set(CapabilitySet::SYS_ADMIN, true)
}

fn outer_is_gone(alive: &OwnedFd) -> bool {
    let Ok(ready) = crate::unix::poll_readable(&[alive.as_fd()], 0) else {
        return true;
    };
    ready.first().copied().unwrap_or(true)
}

/// Waits for `child`, reaping every other process that dies meanwhile (orphans are
/// reparented to PID 1) and forwarding signals. None if waiting itself failed.
fn supervise(child: i32, blocked: &Blocked) -> Option<WaitStatus> {
    let child_pid = Pid::from_raw(child)?;
    loop {
        let caught = blocked.wait().ok()?;
        if caught.signo == libc::SIGCHLD {
            if let Some(status) = reap(Some(child)) {
                return Some(status);
            }
        } else if FORWARDED.contains(&caught.signo)
            && (caught.queued || caught.sender != 0)
            && let Some(sig) = Signal::from_named_raw(caught.signo)
        {
            // Passed on by the outer supervisor, or sent from inside the namespace. A plain
            // signal from outside is racefree's to the unit's process group, which the child
            // got too: once is enough (a second SIGTERM cuts faulthandler's dump short).
            let _ = rustix::process::kill_process(child_pid, sig);
        }
    }
}

/// Reaps every exited child without blocking; returns `watched`'s status if it was one.
fn reap(watched: Option<i32>) -> Option<WaitStatus> {
    let mut found = None;
    loop {
        match rustix::process::waitpid(None, WaitOptions::NOHANG) {
            Ok(Some((pid, status))) => {
                if Some(pid.as_raw_nonzero().get()) == watched {
                    found = Some(status);
                }
            }
            Err(rustix::io::Errno::INTR) => continue,
            Ok(None) | Err(_) => return found,
        }
    }
}

/// One process left behind: its pid as the host sees it (if we can tell), command line, and
/// the test that started it (the plugin's RACEFREE_TEST in its environment), if known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    pub pid: i32,
    pub cmdline: String,
    pub test: Option<String>,
}

/// Freezes everything else in the namespace (SIGSTOP: nothing can fork while we look), then
/// lists what is alive. Zombies are not leaks: they are gone, only not yet reaped.
fn stop_leftovers(old_proc: &OwnedFd) -> Vec<Leak> {
    reap(None);
    // kill(-1) from a namespace's init reaches every process of the namespace but itself.
    // SAFETY: kill(-1, SIGSTOP) passes no pointers; it only sends signals.
    if unsafe { libc::kill(-1, libc::SIGSTOP) } != 0 {
        // ESRCH: nobody is left, the common case; no need to read /proc.
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != 1)
        .collect();
    pids.sort_unstable();
    pids.into_iter()
        .filter(|&pid| !is_zombie(pid))
        .map(|pid| Leak {
            pid: host_pid(old_proc, pid).unwrap_or(pid),
            cmdline: cmdline(pid),
            test: test_of(pid),
        })
        .collect()
}

/// The RACEFREE_TEST value in the process's environment, cut like a command line.
pub(super) fn test_of(pid: i32) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let value = env
        .split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(b"RACEFREE_TEST="))?;
    let value = &value[..value.len().min(CMDLINE_MAX)];
    let test = String::from_utf8_lossy(value).into_owned();
    (!test.is_empty()).then_some(test)
}

pub(super) fn is_zombie(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true; // already gone
    };
    // The state follows the parenthesised command name, which may itself contain ") ".
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
        .is_none_or(|state| state == 'Z' || state == 'X')
}

pub(super) fn cmdline(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let words: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    let mut line = words.join(" ");
    if line.len() > CMDLINE_MAX {
        let mut cut = CMDLINE_MAX;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
    }
    line
}

/// The pid the host sees for our `pid`: a pidfd's fdinfo lists the pid as seen from the PID
/// namespace of the /proc it is read through, and the old /proc is the host's.
pub(super) fn host_pid(old_proc: &OwnedFd, pid: i32) -> Option<i32> {
    let pidfd = rustix::process::pidfd_open(Pid::from_raw(pid)?, PidfdFlags::empty()).ok()?;
    let path = format!("self/fdinfo/{}", pidfd.as_raw_fd());
    let fd = rustix::fs::openat(
        old_proc,
        path.as_str(),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let text = std::io::read_to_string(std::fs::File::from(fd)).ok()?;
    parse_nspid(&text)
}

/// The first number of the `NSpid:` line of a /proc status or fdinfo text.
fn parse_nspid(text: &str) -> Option<i32> {
    text.lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .filter(|&n: &i32| n > 0)
}

/// The wire message for one leak: `{"e":"leak","pid":N,"cmdline":"..."}`, with
/// `"test":"..."` before the closing brace when known.
pub fn leak_line(leak: &Leak) -> String {
    let cmdline = serde_json::Value::String(leak.cmdline.clone());
    let test = leak
        .test
        .as_ref()
        .map(|t| format!(",\"test\":{}", serde_json::Value::String(t.clone())))
        .unwrap_or_default();
    let line = format!(
        "{{\"e\":\"leak\",\"pid\":{},\"cmdline\":{cmdline}{test}}}\n",
        leak.pid
    );
    // Only names full of escaped characters grow past one atomic write: the test goes,
    // then most of the command line.
    if line.len() > PIPE_BUF {
        if !test.is_empty() {
            return leak_line(&Leak {
                test: None,
                ..leak.clone()
            });
        }
        if leak.cmdline.chars().count() > SHORT_CMDLINE {
            return leak_line(&Leak {
                cmdline: leak.cmdline.chars().take(SHORT_CMDLINE).collect(),
                ..leak.clone()
            });
        }
    }
    line
}

/// The most a pipe write delivers in one piece (POSIX's minimum; Linux's value).
const PIPE_BUF: usize = 4096;
/// A command line cut to this many characters escapes to well under PIPE_BUF whatever they are.
const SHORT_CMDLINE: usize = 200;

/// Writes one line per leak to the event pipe (RACEFREE_EVENT_FD), if there is one.
fn report_leaks(leaks: &[Leak]) {
    let Some(fd) = std::env::var("RACEFREE_EVENT_FD")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|&fd| fd >= 0)
    else {
        return;
    };
    // SAFETY: the executor opened this descriptor for the unit and passed it down; nothing
    // in this process closes it. If it is not open after all, the write fails with EBADF.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    for leak in leaks {
        let line = leak_line(leak);
        // One write per line: below PIPE_BUF, so lines never interleave with other writers.
        let mut out = FdWriter(fd);
        let _ = out.write_all(line.as_bytes());
    }
}

struct FdWriter<'a>(BorrowedFd<'a>);

impl Write for FdWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        rustix::io::write(self.0, buf).map_err(std::io::Error::from)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// SIGKILLs everything else in the namespace and reaps it all.
pub(super) fn kill_all() {
    // SAFETY: kill(-1, SIGKILL) passes no pointers; from PID 1 it reaches the namespace only.
    unsafe { libc::kill(-1, libc::SIGKILL) };
    loop {
        match rustix::process::waitpid(None, WaitOptions::empty()) {
            Ok(Some(_)) => continue,
            Err(rustix::io::Errno::INTR) => continue,
            Ok(None) | Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leak_lines_have_the_wire_shape() {
        let line = leak_line(&Leak {
            pid: 4242,
            cmdline: "sleep 1000.5 \"quoted\"".into(),
            test: None,
        });
        assert_eq!(
            line,
            "{\"e\":\"leak\",\"pid\":4242,\"cmdline\":\"sleep 1000.5 \\\"quoted\\\"\"}\n"
        );
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["e"], "leak");
        assert_eq!(v["pid"], 4242);
        let line = leak_line(&Leak {
            pid: 7,
            cmdline: "sleep 1".into(),
            test: Some("t.py::test_a[\"x\"]".into()),
        });
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["test"], "t.py::test_a[\"x\"]");
        let line = leak_line(&Leak {
            pid: 7,
            cmdline: "sleep 1".into(),
            test: Some("\u{1}".repeat(CMDLINE_MAX)),
        });
        assert!(line.len() <= PIPE_BUF && !line.contains("test"), "{line}");
        let line = leak_line(&Leak {
            pid: 7,
            cmdline: "\u{1}".repeat(CMDLINE_MAX),
            test: Some("t.py::test_a".into()),
        });
        assert!(line.len() <= PIPE_BUF && !line.contains("test"), "{line}");
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(
            v["cmdline"].as_str().unwrap().chars().count(),
            SHORT_CMDLINE
        );
    }

    #[test]
    fn nspid_is_the_outermost_pid() {
        assert_eq!(parse_nspid("Pid:\t812\nNSpid:\t812\t7\n"), Some(812));
        assert_eq!(parse_nspid("Pid:\t0\nNSpid:\t0\n"), None);
        assert_eq!(parse_nspid("Pid:\t5\n"), None);
    }
}
