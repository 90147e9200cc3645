//! Linux: tie a child's life to ours with `PR_SET_PDEATHSIG`.

use std::os::unix::process::CommandExt;
use std::process::Command;

use rustix::process::{Signal, getppid, set_parent_process_death_signal};

/// Arranges for the child spawned by `cmd` to be SIGKILLed if racefree dies, even by SIGKILL.
/// The death signal fires when the spawning *thread* exits, so spawn from the thread that lives
/// as long as the supervision does (the main thread). Returns true (supported here).
pub fn kill_child_when_parent_dies(cmd: &mut Command) -> bool {
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed; prctl and getppid are plain syscalls, and the error path only builds an
    // io::Error from a raw errno, which allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            set_parent_process_death_signal(Some(Signal::KILL))?;
            // The parent may have died between fork and prctl; then no signal will ever come,
            // so do not start the command at all.
            if getppid() != Some(parent) {
                return Err(std::io::Error::from_raw_os_error(
                    rustix::io::Errno::SRCH.raw_os_error(),
                ));
            }
            Ok(())
        });
    }
    true
}
