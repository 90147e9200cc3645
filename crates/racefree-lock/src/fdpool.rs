//! Idle lock-file descriptors kept for reuse by one [`crate::LockOptions`] (and its clones).
//!
//! Opening the lock file (a path walk) and closing it cost as much as the rest of an
//! uncontended acquisition together. After a kernel lock is released, its descriptor is unlocked
//! and parked here instead of closed; the next acquisition through the same options takes it
//! back. Reuse is safe because every acquisition re-checks, after locking, that the path still
//! names the descriptor's inode, exactly as with a fresh open, and an idle descriptor holds no
//! lock. Entries remember the pid that parked them: after a fork the child never reuses its
//! parent's descriptors (a shared open file description would share the lock).

use std::fs::File;
use std::sync::Mutex;

use crate::fsutil::FileId;

const MAX_IDLE: usize = 4;

#[derive(Debug, Default)]
pub(crate) struct IdlePool {
    idle: Mutex<Vec<Idle>>,
}

#[derive(Debug)]
struct Idle {
    file: File,
    id: FileId,
    pid: u32,
}

impl IdlePool {
    /// An idle descriptor parked by this process, if any.
    pub(crate) fn take(&self, pid: u32) -> Option<(File, FileId)> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(entry) = idle.pop() {
            if entry.pid == pid {
                return Some((entry.file, entry.id));
            }
            // A parent's descriptor seen in a forked child: drop our copy, never lock it.
        }
        None
    }

    /// Parks an unlocked descriptor for reuse (or closes it when the pool is full).
    pub(crate) fn put(&self, pid: u32, file: File, id: FileId) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(Idle { file, id, pid });
        }
    }
}
