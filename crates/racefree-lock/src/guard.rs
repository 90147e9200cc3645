//! The guard returned by a successful acquisition, and what releasing means in each mode.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{LockError, Result};
use crate::record::HolderRecord;
use crate::registry::{self, Key};
use crate::soft;

/// A held lock. Released when the last guard for it is dropped (or by [`LockGuard::release`],
/// which reports errors that a drop must swallow).
///
/// A guard that crossed a `fork()` belongs to the parent: in the child, dropping it closes the
/// child's copy of the descriptor and touches nothing else, so the parent keeps its lock.
#[derive(Debug, Clone)]
pub struct LockGuard {
    pub(crate) inner: Arc<Held>,
}

#[derive(Debug)]
pub(crate) enum Backing {
    /// The open file description that carries the `flock`, and its (device, inode).
    Kernel {
        file: File,
        id: crate::fsutil::FileId,
        /// Where the descriptor goes back to, unlocked, on release.
        pool: Arc<crate::fdpool::IdlePool>,
    },
    /// The published record; released by unlinking it if it is still ours.
    Soft {
        ctl: PathBuf,
        heartbeat: Option<soft::Heartbeat>,
    },
    Released,
}

#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) path: Arc<Path>,
    pub(crate) key: Key,
    pub(crate) owner_pid: u32,
    pub(crate) generation: u64,
    pub(crate) shared: bool,
    /// The record line we wrote, parsed into `record` only when asked for (the hot path never is).
    pub(crate) record_line: Option<Vec<u8>>,
    pub(crate) record: std::sync::OnceLock<Option<HolderRecord>>,
    pub(crate) backing: Backing,
}

impl Held {
    pub(crate) fn record(&self) -> Option<&HolderRecord> {
        self.record
            .get_or_init(
                || match crate::record::parse(self.record_line.as_deref()?) {
                    crate::record::Contents::Record(r) => Some(r),
                    _ => None,
                },
            )
            .as_ref()
    }

    fn release_now(&mut self) -> Result<()> {
        let backing = std::mem::replace(&mut self.backing, Backing::Released);
        let mine = crate::sys::current_pid() == self.owner_pid;
        let result = match backing {
            Backing::Kernel { file, id, pool } => {
                // Unlock explicitly rather than only closing: a child forked while we held the lock
                // shares the open file description, and close() alone would leave the lock held
                // until that child exits. In the child itself (not `mine`) we only close.
                if mine {
                    let r = rustix::fs::flock(&file, rustix::fs::FlockOperation::Unlock)
                        .map_err(|e| LockError::io(&self.path, "unlock", e));
                    if r.is_ok() {
                        pool.put(self.owner_pid, file, id);
                    }
                    r
                } else {
                    drop(file);
                    Ok(())
                }
            }
            Backing::Soft { ctl, heartbeat } => {
                drop(heartbeat);
                match (self.record(), mine) {
                    (Some(record), true) => soft::release(&self.path, &ctl, &record.token),
                    _ => Ok(()),
                }
            }
            Backing::Released => Ok(()),
        };
        registry::remove(&self.key, self as *const Held);
        result
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.release_now();
    }
}

impl LockGuard {
    pub(crate) fn new(held: Held, pid: u32) -> Self {
        let key = held.key.clone();
        let inner = Arc::new(held);
        registry::insert(key, &inner, pid);
        LockGuard { inner }
    }

    /// The fencing token: strictly increasing across successive exclusive holders of this path.
    /// Hand it to the protected resource with every write so it can reject a stale writer.
    /// A shared guard reports the generation of the last exclusive holder.
    pub fn token(&self) -> u64 {
        self.inner.generation
    }

    /// The holder record this guard wrote (exclusive kernel locks and soft locks).
    pub fn record(&self) -> Option<&HolderRecord> {
        self.inner.record()
    }

    /// The lock path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether this is a shared (read) lock.
    pub fn is_shared(&self) -> bool {
        self.inner.shared
    }

    /// Releases the lock now and reports any error. With reentrant guards still alive, this only
    /// gives up this guard's share.
    pub fn release(self) -> Result<()> {
        match Arc::try_unwrap(self.inner) {
            Ok(mut held) => held.release_now(),
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LockOptions, Mode};

    /// Drops the registry's weak reference so the test may mutate the guard.
    fn forget_registration(guard: &LockGuard) {
        registry::remove(&guard.inner.key, Arc::as_ptr(&guard.inner));
    }

    /// After fork(), the child has a copy of the guard and of its descriptor. Simulate exactly
    /// that: keep a duplicate of the descriptor (the parent's copy), make the guard believe it
    /// belongs to another process (the child's view), and drop it: the lock must stay held.
    #[test]
    fn a_forked_child_dropping_the_guard_does_not_release_the_parents_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        let mut guard = LockOptions::new(&path)
            .mode(Mode::Kernel)
            .acquire()
            .unwrap();
        forget_registration(&guard);
        let held = Arc::get_mut(&mut guard.inner).unwrap();
        let Backing::Kernel { file, .. } = &held.backing else {
            panic!("kernel mode")
        };
        let parents_copy = rustix::io::dup(file).unwrap();
        held.owner_pid = held.owner_pid.wrapping_add(1);
        drop(guard);
        let p = path.clone();
        let busy = std::thread::spawn(move || {
            LockOptions::new(&p)
                .mode(Mode::Kernel)
                .try_acquire()
                .unwrap()
                .is_none()
        });
        assert!(
            busy.join().unwrap(),
            "the child's drop released the parent's lock"
        );
        drop(parents_copy);
        assert!(LockOptions::new(&path).try_acquire().unwrap().is_some());
    }

    #[test]
    fn a_forked_child_dropping_a_soft_guard_leaves_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        let mut guard = LockOptions::new(&path).mode(Mode::Soft).acquire().unwrap();
        forget_registration(&guard);
        Arc::get_mut(&mut guard.inner).unwrap().owner_pid ^= 1;
        drop(guard);
        assert!(
            path.exists(),
            "the child's drop removed the parent's record"
        );
    }

    #[test]
    fn auto_mode_is_kernel_on_a_local_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let guard = LockOptions::new(dir.path().join("l")).acquire().unwrap();
        assert_eq!(guard.record().unwrap().mode, crate::RecordMode::Kernel);
    }
}
