//! Other Unix systems: only what POSIX gives. Start times are unknown, so a reused pid counts
//! as alive (the safe side), and waiters poll.

use std::path::Path;

use super::{FsKind, ProcState};

pub(crate) use super::portable::{
    boot_id, machine_id, own_cmdline, pid_namespace, process_watch, wait_process_exit,
};

pub(crate) fn proc_state(pid: u32) -> ProcState {
    if super::pid_exists(pid) {
        ProcState::Running { start_time: None }
    } else {
        ProcState::Gone
    }
}

pub(crate) fn fs_kind(_dir: &Path) -> std::io::Result<FsKind> {
    Ok(FsKind::Local)
}
