//! Idle lock-file descriptors kept for reuse.
//!
//! Opening the lock file (a path walk) and closing it cost as much as the rest of an
//! uncontended acquisition together. After an exclusive or shared lock is released, its
//! descriptor is unlocked and parked here instead of closed; the next acquisition of the same
//! path in this process takes it back. Reuse is safe because every acquisition re-checks, after
//! locking, that the path still names the descriptor's inode, exactly as with a fresh open; an
//! idle descriptor holds no lock. Few descriptors are kept per path and few paths overall, so the
//! pool cannot exhaust descriptors.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::fsutil::FileId;

const MAX_IDLE_PER_PATH: usize = 4;
const MAX_PATHS: usize = 64;

type Pool = HashMap<PathBuf, Vec<(File, FileId)>>;

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

/// An idle descriptor for `path`, if one was parked by this process (not by a parent we were
/// forked from: the caller's pid must match the parker's).
pub(crate) fn take(path: &Path, pid: u32) -> Option<(File, FileId)> {
    let mut pool = POOL.lock().ok()?;
    let map = pool_for(&mut pool, pid);
    let idle = map.get_mut(path)?;
    let found = idle.pop();
    if idle.is_empty() {
        map.remove(path);
    }
    found
}

/// Parks an unlocked descriptor for reuse (or closes it when the pool is full).
pub(crate) fn put(path: &Path, pid: u32, file: File, id: FileId) {
    let Ok(mut pool) = POOL.lock() else {
        return;
    };
    let map = pool_for(&mut pool, pid);
    if !map.contains_key(path) && map.len() >= MAX_PATHS {
        return;
    }
    let idle = map.entry(path.to_path_buf()).or_default();
    if idle.len() < MAX_IDLE_PER_PATH {
        idle.push((file, id));
    }
}

/// The pool of this process: a pool inherited across fork() is dropped, so parent and child
/// never share parked descriptors.
fn pool_for(pool: &mut Option<Pool>, pid: u32) -> &mut Pool {
    static OWNER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    if OWNER.swap(pid, std::sync::atomic::Ordering::Relaxed) != pid {
        *pool = None;
    }
    pool.get_or_insert_with(HashMap::new)
}
