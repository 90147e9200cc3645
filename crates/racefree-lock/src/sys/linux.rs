//! Linux: /proc for process start times and namespaces, statfs magic numbers, pidfd waits.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use super::{FsKind, ProcState};

/// Reads state and start time (field 22, clock ticks since boot) from /proc/PID/stat.
/// The command name (field 2) may contain spaces and parentheses, so fields are counted from
/// the last `)`.
pub(crate) fn proc_state(pid: u32) -> ProcState {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return if super::pid_exists(pid) {
            ProcState::Running { start_time: None }
        } else {
            ProcState::Gone
        };
    };
    parse_stat(&stat).unwrap_or(ProcState::Running { start_time: None })
}

fn parse_stat(stat: &str) -> Option<ProcState> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_ascii_whitespace();
    let state = fields.next()?;
    // A zombie has exited; it only waits to be reaped. It holds no lock.
    if state == "Z" || state == "X" {
        return Some(ProcState::Gone);
    }
    // Field 3 is the state; starttime is field 22, i.e. 19 fields after the state.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(ProcState::Running {
        start_time: Some(start_time),
    })
}

pub(crate) fn boot_id() -> Option<String> {
    let id = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(id.trim().to_owned())
}

pub(crate) fn machine_id() -> Option<String> {
    ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The pid namespace, as `pid:[inode]`: pids are only comparable inside one namespace.
pub(crate) fn pid_namespace() -> Option<String> {
    let link = fs::read_link("/proc/self/ns/pid").ok()?;
    Some(link.to_string_lossy().into_owned())
}

/// The command line of this process, NUL separators turned into spaces.
pub(crate) fn own_cmdline() -> String {
    match fs::read("/proc/self/cmdline") {
        Ok(raw) => String::from_utf8_lossy(&raw)
            .trim_end_matches('\0')
            .replace('\0', " "),
        Err(_) => std::env::args().collect::<Vec<_>>().join(" "),
    }
}

// Magic numbers from linux/magic.h and the filesystems' own headers.
const NFS_SUPER_MAGIC: i64 = 0x6969;
const SMB_SUPER_MAGIC: i64 = 0x517B;
const CIFS_MAGIC_NUMBER: i64 = 0xFF53_4D42;
const SMB2_MAGIC_NUMBER: i64 = 0xFE53_4D42;
const CEPH_SUPER_MAGIC: i64 = 0x00C3_6400;
const AFS_SUPER_MAGIC: i64 = 0x5346_414F;
const AFS_FS_MAGIC: i64 = 0x6B41_4653;
const V9FS_MAGIC: i64 = 0x0102_1997;
const CODA_SUPER_MAGIC: i64 = 0x7375_7245;
const GFS2_MAGIC: i64 = 0x0116_1970;
const OCFS2_SUPER_MAGIC: i64 = 0x7461_636F;
const LUSTRE_SUPER_MAGIC: i64 = 0x0BD0_0BD0;
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

pub(crate) fn fs_kind(dir: &Path) -> std::io::Result<FsKind> {
    let st = rustix::fs::statfs(dir)?;
    // f_type's integer type differs between architectures; widen it and compare the low 32 bits.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    let magic = (st.f_type as i64) & 0xFFFF_FFFF;
    let name = match magic {
        NFS_SUPER_MAGIC => "nfs",
        SMB_SUPER_MAGIC => "smb",
        CIFS_MAGIC_NUMBER => "cifs",
        SMB2_MAGIC_NUMBER => "smb2",
        CEPH_SUPER_MAGIC => "ceph",
        AFS_SUPER_MAGIC | AFS_FS_MAGIC => "afs",
        V9FS_MAGIC => "9p",
        CODA_SUPER_MAGIC => "coda",
        GFS2_MAGIC => "gfs2",
        OCFS2_SUPER_MAGIC => "ocfs2",
        LUSTRE_SUPER_MAGIC => "lustre",
        FUSE_SUPER_MAGIC => return Ok(FsKind::Fuse("fuse".to_owned())),
        _ => return Ok(FsKind::Local),
    };
    Ok(FsKind::Network(name.to_owned()))
}

/// A handle that becomes readable when the process exits, so a waiter wakes on the holder's
/// death instead of on its next poll. `None` when the kernel has no pidfd (before 5.3) or the
/// process is already gone.
pub(crate) fn process_watch(pid: u32) -> Option<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).ok()?)?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
}

/// Waits until the watched process exits or `timeout` passes. Returns true if it exited.
pub(crate) fn wait_process_exit(watch: &OwnedFd, timeout: Duration) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut fds = [PollFd::new(watch, PollFlags::IN)];
    let ts = Timespec {
        tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    matches!(poll(&mut fds, Some(&ts)), Ok(n) if n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_parens_in_comm() {
        let line = "1234 (a) b) (c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20 21";
        assert_eq!(
            parse_stat(line),
            Some(ProcState::Running {
                start_time: Some(987654)
            })
        );
    }

    #[test]
    fn zombie_is_gone() {
        let line = "1234 (x) Z 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20 21";
        assert_eq!(parse_stat(line), Some(ProcState::Gone));
    }

    #[test]
    fn own_process_has_a_start_time() {
        let me = std::process::id();
        assert!(matches!(
            proc_state(me),
            ProcState::Running {
                start_time: Some(_)
            }
        ));
    }
}
