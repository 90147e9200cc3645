//! The facts POSIX cannot give, for Unix systems other than Linux: no boot id file, machine
//! id or pid namespace (so identity rests on hostname, pid and start time), and no pidfd
//! (so waiters sleep for their backoff instead of waking on the holder's death).

use std::os::fd::OwnedFd;
use std::time::Duration;

pub(crate) fn boot_id() -> Option<String> {
    None
}

pub(crate) fn machine_id() -> Option<String> {
    None
}

pub(crate) fn pid_namespace() -> Option<String> {
    None
}

pub(crate) fn own_cmdline() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

pub(crate) fn process_watch(_pid: u32) -> Option<OwnedFd> {
    None
}

pub(crate) fn wait_process_exit(_watch: &OwnedFd, timeout: Duration) -> bool {
    std::thread::sleep(timeout);
    false
}
