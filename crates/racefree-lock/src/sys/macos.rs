//! macOS: the portable subset. Process start times come from `proc_pidinfo`; there is no boot
//! id file, machine id or pid namespace, and no pidfd, so waiters poll.

use std::path::Path;

use super::{FsKind, ProcState};

pub(crate) use super::portable::{
    boot_id, machine_id, own_cmdline, pid_namespace, process_watch, wait_process_exit,
};

pub(crate) fn proc_state(pid: u32) -> ProcState {
    if !super::pid_exists(pid) {
        return ProcState::Gone;
    }
    let Ok(raw) = libc::c_int::try_from(pid) else {
        return ProcState::Gone;
    };
    let mut info = std::mem::MaybeUninit::<libc::proc_bsdinfo>::zeroed();
    let size = libc::c_int::try_from(std::mem::size_of::<libc::proc_bsdinfo>()).unwrap_or(0);
    // SAFETY: `info` points to writable memory of exactly `size` bytes, as proc_pidinfo requires
    // for PROC_PIDTBSDINFO; the kernel writes at most that many bytes.
    let written = unsafe {
        libc::proc_pidinfo(
            raw,
            libc::PROC_PIDTBSDINFO,
            0,
            info.as_mut_ptr().cast(),
            size,
        )
    };
    if written != size {
        return ProcState::Running { start_time: None };
    }
    // SAFETY: proc_pidinfo filled the whole struct (checked above), and it is plain data.
    let info = unsafe { info.assume_init() };
    let start = info.pbi_start_tvsec * 1_000_000 + info.pbi_start_tvusec;
    ProcState::Running {
        start_time: Some(start),
    }
}

pub(crate) fn fs_kind(dir: &Path) -> std::io::Result<FsKind> {
    let st = rustix::fs::statfs(dir)?;
    let name: String = st
        .f_fstypename
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8 as char)
        .collect();
    Ok(match name.as_str() {
        "nfs" | "smbfs" | "afpfs" | "webdav" | "cifs" | "ftp" => FsKind::Network(name),
        n if n.contains("fuse") => FsKind::Fuse(name),
        _ => FsKind::Local,
    })
}
