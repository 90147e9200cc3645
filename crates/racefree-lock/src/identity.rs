//! Who holds a lock, and whether that holder is provably dead.
//!
//! A pid alone is no identity: pids are reused, differ between pid namespaces, and mean nothing
//! on another host. A holder is identified by (host identity, boot id, pid, process start time),
//! and a lock is only ever broken on *proof* of death: same host and namespace, and either the
//! machine rebooted since, or the pid is gone, or it now names a process that started at another
//! time. A holder on another host is unknown, never dead.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::sys::{self, ProcState};

/// The identity of a host, as far as pids are concerned: two records with equal host identities
/// name processes in one pid space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostIdentity {
    /// `/etc/machine-id`, when the system has one.
    pub machine_id: Option<String>,
    /// The hostname (uname nodename).
    pub hostname: String,
    /// The pid namespace (`pid:[inode]` on Linux), when known.
    pub pid_ns: Option<String>,
}

/// Facts about this host that do not change while it runs.
#[derive(Debug)]
pub(crate) struct HostFacts {
    pub host: HostIdentity,
    pub boot_id: Option<String>,
    pub uid: u32,
}

pub(crate) fn host_facts() -> &'static HostFacts {
    static FACTS: OnceLock<HostFacts> = OnceLock::new();
    FACTS.get_or_init(|| HostFacts {
        host: HostIdentity {
            machine_id: sys::machine_id(),
            hostname: sys::hostname(),
            pid_ns: sys::pid_namespace(),
        },
        boot_id: sys::boot_id(),
        uid: rustix::process::getuid().as_raw(),
    })
}

/// Facts about the current process. Recomputed after a fork, since the child is another process.
#[derive(Debug, Clone)]
pub(crate) struct ProcessFacts {
    pub pid: u32,
    pub start_time: Option<u64>,
    pub cmdline: String,
    /// The record fields that never change for this process, pre-serialized as a JSON fragment
    /// (`"pid":..,"start_time":..,...`), so the hot path formats only what changes.
    pub json_tail: std::sync::Arc<str>,
}

/// The longest command line kept in a record; longer ones are cut at a character boundary.
pub const MAX_CMDLINE_BYTES: usize = 1024;

/// Facts about the process whose pid the caller just read (one `getpid` per acquisition; a
/// different pid than the cached one means we are a forked child, and everything is recomputed).
pub(crate) fn process_facts(pid: u32) -> std::sync::Arc<ProcessFacts> {
    static CACHE: std::sync::Mutex<Option<std::sync::Arc<ProcessFacts>>> =
        std::sync::Mutex::new(None);
    let mut cache = match CACHE.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some(facts) = cache.as_ref().filter(|f| f.pid == pid) {
        return std::sync::Arc::clone(facts);
    }
    let start_time = match sys::proc_state(pid) {
        ProcState::Running { start_time } => start_time,
        ProcState::Gone => None,
    };
    let cmdline = truncate_utf8(sys::own_cmdline(), MAX_CMDLINE_BYTES);
    let host = host_facts();
    let tail = serde_json::json!({
        "pid": pid,
        "start_time": start_time,
        "boot_id": host.boot_id,
        "host": host.host,
        "uid": host.uid,
        "cmdline": cmdline,
    })
    .to_string();
    // Drop the braces: the fragment is spliced into the record line.
    let json_tail = tail[1..tail.len() - 1].into();
    let facts = ProcessFacts {
        pid,
        start_time,
        cmdline,
        json_tail,
    };
    let facts = std::sync::Arc::new(facts);
    *cache = Some(std::sync::Arc::clone(&facts));
    facts
}

pub(crate) fn truncate_utf8(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// What can be proved about a holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// The holder is running (or might be: same host, pid alive, start time matches or unknown).
    Alive,
    /// Provably dead, with the proof.
    Dead(String),
    /// Cannot be judged from here (another host or pid namespace): never broken without a lease.
    Unknown(String),
}

/// The identity fields of a holder that liveness is judged on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HolderIdentity<'a> {
    pub host: &'a HostIdentity,
    pub boot_id: Option<&'a str>,
    pub pid: u32,
    pub start_time: Option<u64>,
}

pub(crate) fn judge(holder: HolderIdentity<'_>) -> Liveness {
    let local = host_facts();
    if *holder.host != local.host {
        return Liveness::Unknown(format!(
            "held from another host or pid namespace ({})",
            holder.host.hostname
        ));
    }
    if let (Some(theirs), Some(ours)) = (holder.boot_id, local.boot_id.as_deref())
        && theirs != ours
    {
        return Liveness::Dead(format!(
            "the holder (pid {}) ran before this host last booted",
            holder.pid
        ));
    }
    match sys::proc_state(holder.pid) {
        ProcState::Gone => Liveness::Dead(format!("holder pid {} is gone", holder.pid)),
        ProcState::Running {
            start_time: Some(now),
        } if holder.start_time.is_some_and(|then| then != now) => Liveness::Dead(format!(
            "pid {} was reused: it now names a process started at another time",
            holder.pid
        )),
        ProcState::Running { .. } => Liveness::Alive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> (HostIdentity, Option<String>, ProcessFacts) {
        let facts = host_facts();
        (
            facts.host.clone(),
            facts.boot_id.clone(),
            (*process_facts(std::process::id())).clone(),
        )
    }

    #[test]
    fn live_process_with_matching_start_is_alive() {
        let (host, boot, p) = me();
        let id = HolderIdentity {
            host: &host,
            boot_id: boot.as_deref(),
            pid: p.pid,
            start_time: p.start_time,
        };
        assert_eq!(judge(id), Liveness::Alive);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reused_pid_is_dead() {
        let (host, boot, p) = me();
        let id = HolderIdentity {
            host: &host,
            boot_id: boot.as_deref(),
            pid: p.pid,
            start_time: p.start_time.map(|t| t + 1),
        };
        assert!(matches!(judge(id), Liveness::Dead(m) if m.contains("reused")));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn other_boot_is_dead() {
        let (host, _, p) = me();
        let id = HolderIdentity {
            host: &host,
            boot_id: Some("00000000-0000-0000-0000-000000000000"),
            pid: p.pid,
            start_time: p.start_time,
        };
        assert!(matches!(judge(id), Liveness::Dead(_)));
    }

    #[test]
    fn other_host_is_unknown_even_if_pid_is_gone() {
        let (mut host, boot, _) = me();
        host.hostname.push_str("-elsewhere");
        let id = HolderIdentity {
            host: &host,
            boot_id: boot.as_deref(),
            pid: u32::MAX - 7,
            start_time: None,
        };
        assert!(matches!(judge(id), Liveness::Unknown(_)));
    }

    #[test]
    fn truncation_keeps_utf8() {
        let s = "é".repeat(600);
        let t = truncate_utf8(s, MAX_CMDLINE_BYTES);
        assert!(t.len() <= MAX_CMDLINE_BYTES);
        assert!(t.chars().all(|c| c == 'é'));
    }
}
