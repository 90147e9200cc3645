//! This process's pid without a syscall per call.
//!
//! The lock checks "am I still the process that took this?" on every acquisition and release
//! (a forked child must never use or release its parent's locks). `getpid` is a real syscall,
//! and on a virtual machine it is a noticeable part of an uncontended acquisition, so the pid is
//! cached and forgotten in the child of every `fork()` by a `pthread_atfork` handler. A child
//! created by a raw `clone` that bypasses libc's `fork` would keep the stale value; only
//! `posix_spawn`/`vfork` children do that in practice, and they exec before running Rust code.

use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

static PID: AtomicU32 = AtomicU32::new(0);
static REGISTER: Once = Once::new();

extern "C" fn forget_pid_in_child() {
    // Runs in the child right after fork(): only async-signal-safe work, a plain atomic store.
    PID.store(0, Ordering::Relaxed);
}

pub(crate) fn current_pid() -> u32 {
    REGISTER.call_once(|| {
        // SAFETY: registering a handler has no preconditions; the handler is a plain function
        // that stays valid for the life of the process and only does an atomic store, which is
        // async-signal-safe as required in a fork child.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(forget_pid_in_child)) };
        if rc != 0 {
            // Without the handler we cannot trust a cached value: never cache.
            PID.store(u32::MAX, Ordering::Relaxed);
        }
    });
    match PID.load(Ordering::Relaxed) {
        0 => {
            let pid = std::process::id();
            PID.store(pid, Ordering::Relaxed);
            pid
        }
        u32::MAX => std::process::id(),
        pid => pid,
    }
}

#[cfg(test)]
mod tests {
    use super::current_pid;

    #[test]
    fn matches_getpid() {
        assert_eq!(current_pid(), std::process::id());
        assert_eq!(current_pid(), std::process::id());
    }

    /// A real fork: the child must see its own pid, not the parent's cached one.
    #[test]
    fn a_forked_child_sees_its_own_pid() {
        let parent = current_pid();
        let (read_end, write_end) = rustix::pipe::pipe().unwrap();
        // SAFETY: the child only does async-signal-safe work: an atomic load/store, getpid, a
        // write(2) to a pipe and _exit(2); it never returns into the test harness.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork failed");
        if child == 0 {
            let seen = current_pid();
            let ok = seen != parent && seen == std::process::id();
            let _ = rustix::io::write(&write_end, &[u8::from(ok)]);
            // SAFETY: _exit ends the child at once, without running the parent's destructors.
            unsafe { libc::_exit(0) };
        }
        drop(write_end);
        let mut byte = [0u8; 1];
        let n = rustix::io::read(&read_end, &mut byte).unwrap();
        let mut status = 0;
        // SAFETY: waiting for our own child with a valid out-pointer.
        unsafe { libc::waitpid(child, &mut status, 0) };
        assert_eq!((n, byte[0]), (1, 1), "the child saw the parent's pid");
        assert_eq!(current_pid(), parent);
    }
}
