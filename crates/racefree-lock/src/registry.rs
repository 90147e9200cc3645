//! The process-wide registry of held locks.
//!
//! Kernel locks already exclude two threads of one process (each acquisition opens its own file
//! description), and soft locks do too (the record names a live pid). The registry adds what the
//! kernel cannot know: which *thread* holds a lock, so that a thread asking again for a lock it
//! holds either gets it again (opt-in reentrancy) or an error instead of waiting forever for
//! itself. Entries carry the pid, so a forked child never mistakes its parent's locks for its own.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::ThreadId;

use crate::guard::Held;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    /// Kernel mode: the lock file's (device, inode).
    Inode(u64, u64),
    /// Soft mode: the record's path with its directory canonicalized.
    Path(PathBuf),
}

struct Entry {
    key: Key,
    pid: u32,
    thread: ThreadId,
    held: Weak<Held>,
}

/// A plain vector: a process holds few locks at once, and a linear scan over them is cheaper than
/// hashing a key on every acquisition.
static REGISTRY: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

fn registry() -> MutexGuard<'static, Vec<Entry>> {
    // A panic while holding this mutex cannot leave the map inconsistent (every update is one
    // push or retain), so a poisoned lock is still usable.
    match REGISTRY.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The lock this thread of this process holds under `key`, if any.
pub(crate) fn held_by_current_thread(key: &Key) -> Option<Arc<Held>> {
    let pid = crate::sys::current_pid();
    let me = std::thread::current().id();
    registry()
        .iter()
        .filter(|e| e.key == *key && e.pid == pid && e.thread == me)
        .find_map(|e| e.held.upgrade())
}

pub(crate) fn insert(key: Key, held: &Arc<Held>, pid: u32) {
    registry().push(Entry {
        key,
        pid,
        thread: std::thread::current().id(),
        held: Arc::downgrade(held),
    });
}

/// Forgets a released lock (and any dead entries under the same key).
pub(crate) fn remove(key: &Key, held: *const Held) {
    registry().retain(|e| e.key != *key || (e.held.as_ptr() != held && e.held.strong_count() > 0));
}
