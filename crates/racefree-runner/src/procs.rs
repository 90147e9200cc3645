//! Finding what a unit left behind. A process group alone leaks (`setsid` escapes it), so on
//! Linux each unit carries a random token in its environment (`RACEFREE_UNIT_TOKEN`), which
//! every descendant inherits whatever group or session it moves to, and racefree is a child
//! subreaper, so orphans of a unit become racefree's children (and are reaped by it) instead
//! of init's. Elsewhere only the process group is known.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

/// The environment variable carrying a unit's token.
pub const TOKEN_ENV: &str = "RACEFREE_UNIT_TOKEN";
/// The environment variable the plugin sets to the running test's node id, so a process a
/// test started can be traced back to it.
pub const TEST_ENV: &str = "RACEFREE_TEST";

/// What marks a unit's processes: the token in their environment, and when the unit's first
/// process started. Every descendant is born no earlier than that, so a scan of /proc reads
/// the environment of new processes only, not of every process on the machine (a
/// scan after each unit must not cost more on a busy host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitTag {
    pub token: String,
    /// The unit process's start time in clock ticks since boot (/proc/<pid>/stat field 22),
    /// when it could be read.
    pub born: Option<u64>,
}

impl UnitTag {
    /// The tag of a unit whose first process is `pid` (alive now).
    pub fn new(token: String, pid: u32) -> UnitTag {
        UnitTag {
            token,
            born: platform::start_tick(pid),
        }
    }

    /// A tag that matches by token alone, whenever the process started.
    pub fn token_only(token: String) -> UnitTag {
        UnitTag { token, born: None }
    }
}

/// A live process that belongs to a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub pid: u32,
    pub cmdline: String,
    /// The test that was running when it (or its ancestor) was started, when known.
    pub nodeid: Option<String>,
    /// Its process group, when known.
    pub pgid: Option<u32>,
}

#[cfg(target_os = "linux")]
mod platform {
    use super::*;

    /// Makes racefree a child subreaper: orphaned descendants are re-parented to it, so
    /// they stay visible and are reaped by us rather than by init.
    pub fn become_subreaper() -> bool {
        rustix::process::set_child_subreaper(Some(rustix::process::getpid())).is_ok()
    }

    fn read(path: &str) -> Option<Vec<u8>> {
        std::fs::read(path).ok()
    }

    /// (state, process group, start time in ticks since boot) from /proc/<pid>/stat; the
    /// command name may hold spaces and parentheses, so fields are counted from the last ')'.
    pub(super) fn stat(pid: u32) -> Option<(char, u32, u64)> {
        // Read for every process on the machine after each unit: one buffer that holds the
        // whole file (some 300 bytes) takes open, two reads and close, where `fs::read`'s
        // growing reads took eight system calls.
        use std::io::Read;
        let mut file = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
        let mut buf = [0u8; 4096];
        let mut len = 0;
        while len < buf.len() {
            match file.read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        parse_stat(std::str::from_utf8(&buf[..len]).ok()?)
    }

    pub(super) fn parse_stat(text: &str) -> Option<(char, u32, u64)> {
        let rest = &text[text.rfind(')')? + 1..];
        let mut fields = rest.split_whitespace();
        let state = fields.next()?.chars().next()?;
        // Fields 3 (state), 4 (ppid, skipped), 5 (pgrp), then 6 to 21 skipped, 22 (start).
        let pgrp = fields.nth(1)?.parse().ok()?;
        let start = fields.nth(16)?.parse().ok()?;
        Some((state, pgrp, start))
    }

    pub fn start_tick(pid: u32) -> Option<u64> {
        stat(pid).map(|(_, _, start)| start)
    }

    fn environ_value(env: &[u8], key: &str) -> Option<String> {
        env.split(|&b| b == 0).find_map(|kv| {
            let kv = std::str::from_utf8(kv).ok()?;
            let (k, v) = kv.split_once('=')?;
            (k == key).then(|| v.to_string())
        })
    }

    fn cmdline(pid: u32) -> String {
        let raw = read(&format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let parts: Vec<String> = raw
            .split(|&b| b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        parts.join(" ")
    }

    pub fn unit_processes(tag: &UnitTag, pgid: Option<u32>) -> Vec<Found> {
        let me = std::process::id();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == me {
                continue;
            }
            let Some((state, pgrp, start)) = stat(pid) else {
                continue;
            };
            // A zombie is already dead; it is reaped, not killed.
            if state == 'Z' || state == 'X' {
                continue;
            }
            // Older than the unit: neither its descendant nor in its group.
            if tag.born.is_some_and(|born| start < born) {
                continue;
            }
            // Other users' environments are unreadable: they are not ours anyway.
            let env = read(&format!("/proc/{pid}/environ")).unwrap_or_default();
            let tagged = environ_value(&env, TOKEN_ENV).as_deref() == Some(tag.token.as_str());
            if tagged || Some(pgrp) == pgid {
                out.push(Found {
                    pid,
                    cmdline: cmdline(pid),
                    nodeid: environ_value(&env, TEST_ENV).filter(|s| !s.is_empty()),
                    pgid: Some(pgrp),
                });
            }
        }
        out
    }

    /// Our children that are zombies, other than `exclude` (the executors wait for those).
    pub fn zombie_children(exclude: &HashSet<u32>) -> Vec<u32> {
        let me = std::process::id();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{me}/task")) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for task in tasks.flatten() {
            let path = task.path().join("children");
            let Ok(text) = std::fs::read_to_string(path) else {
                continue;
            };
            for pid in text
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
            {
                if !exclude.contains(&pid) && matches!(stat(pid), Some(('Z', _, _))) {
                    out.push(pid);
                }
            }
        }
        out
    }
}

#[cfg(not(target_os = "linux"))]
mod platform {
    use super::*;

    pub fn become_subreaper() -> bool {
        false
    }

    /// Without /proc only the group is known: report it once if anything in it is alive.
    pub fn start_tick(_pid: u32) -> Option<u64> {
        None
    }

    pub fn unit_processes(_tag: &UnitTag, pgid: Option<u32>) -> Vec<Found> {
        let Some(pgid) = pgid else {
            return Vec::new();
        };
        let alive = Pid::from_raw(pgid as i32)
            .map(|p| rustix::process::test_kill_process_group(p).is_ok())
            .unwrap_or(false);
        if alive {
            vec![Found {
                pid: pgid,
                cmdline: format!("(processes of process group {pgid})"),
                nodeid: None,
                pgid: Some(pgid),
            }]
        } else {
            Vec::new()
        }
    }

    pub fn zombie_children(_exclude: &HashSet<u32>) -> Vec<u32> {
        Vec::new()
    }
}

pub use platform::{become_subreaper, unit_processes, zombie_children};

/// Signals the processes that carry a unit's token but are not in process group `group`,
/// which the caller signals as a whole (Linux), and returns all of them. One signal per
/// process: a second SIGTERM would cut short the traceback faulthandler writes on the first.
pub fn signal_tagged(tag: &UnitTag, signal: Signal, group: u32) -> Vec<Found> {
    let found = unit_processes(tag, None);
    for p in found.iter().filter(|p| p.pgid != Some(group)) {
        kill(p.pid, signal);
    }
    found
}

pub fn kill(pid: u32, signal: Signal) {
    if let Some(p) = Pid::from_raw(pid as i32) {
        // It may have exited meanwhile; nothing to do then.
        let _ = rustix::process::kill_process(p, signal);
    }
}

/// Reaps `pid` if it is our child (an orphan re-parented to us), waiting up to `within`.
/// Only that pid is waited for, never "any child", so the executors' waits are untouched.
pub fn reap(pid: u32, within: Duration) {
    let Some(p) = Pid::from_raw(pid as i32) else {
        return;
    };
    let start = Instant::now();
    loop {
        match rustix::process::waitpid(Some(p), rustix::process::WaitOptions::NOHANG) {
            Ok(Some(_)) => return,
            Ok(None) if start.elapsed() < within => std::thread::sleep(Duration::from_millis(10)),
            // Not our child (ECHILD), or still alive past the deadline.
            _ => return,
        }
    }
}

/// Kills whatever a finished unit left behind and reaps what became ours. Returns what was
/// found, for the leak report.
pub fn kill_leftovers(tag: &UnitTag, pgid: Option<u32>) -> Vec<Found> {
    // The unit's own process (the group's leader) is not its leftover: it has exited, or, a
    // forked unit that told its status just before exiting, is still being torn down.
    let found: Vec<Found> = unit_processes(tag, pgid)
        .into_iter()
        .filter(|p| Some(p.pid) != pgid)
        .collect();
    if found.is_empty() {
        return found;
    }
    if let Some(pgid) = pgid {
        crate::unix::kill_group(pgid, Signal::KILL);
    }
    for p in &found {
        kill(p.pid, Signal::KILL);
    }
    for p in &found {
        reap(p.pid, Duration::from_secs(1));
    }
    found
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "4242 (a (b) c) S 1 4240 4240 0 -1 4194560 90 0 0 0 1 2 0 0 20 0 1 0 \
                    777123 1000 100 18446744073709551615";
        assert_eq!(platform::parse_stat(line), Some(('S', 4240, 777123)));
        // Our own start time is before that of a child we start now.
        let mine = platform::start_tick(std::process::id()).unwrap();
        let mut child = Command::new("sleep").arg("5").spawn().unwrap();
        let theirs = platform::start_tick(child.id()).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(mine <= theirs, "{mine} > {theirs}");
    }

    /// A process that escapes the group with setsid is still found by its token, killed and
    /// reaped.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn finds_escaped_processes_by_token() {
        become_subreaper();
        let token = format!("test-{}", std::process::id());
        let mut child = Command::new("setsid")
            .args(["sleep", "1000"])
            .env(TOKEN_ENV, &token)
            .env(TEST_ENV, "t.py::test_x")
            .spawn()
            .unwrap();
        let pid = child.id();
        let tag = UnitTag::new(token.clone(), pid);
        assert!(tag.born.is_some());
        // setsid may fork when it is a group leader; wait until a sleep carries the token.
        let start = Instant::now();
        let found = loop {
            let f = unit_processes(&tag, None);
            if f.iter().any(|p| p.cmdline.starts_with("sleep")) || start.elapsed().as_secs() > 10 {
                break f;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            found
                .iter()
                .any(|p| p.cmdline == "sleep 1000" && p.nodeid.as_deref() == Some("t.py::test_x")),
            "{found:?}"
        );
        // A unit born after it cannot have started it: the scan skips it unread.
        let later = UnitTag {
            token: token.clone(),
            born: tag.born.map(|b| b + 1_000_000),
        };
        assert!(unit_processes(&later, None).is_empty());
        let killed = kill_leftovers(&tag, None);
        assert!(!killed.is_empty());
        let _ = child.wait();
        assert!(unit_processes(&UnitTag::token_only(token), None).is_empty());
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists() || {
                matches!(platform::stat(pid), Some(('Z', _, _)) | None)
            }
        );
    }
}
