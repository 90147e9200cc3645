//! Kernel mode: `flock(2)` on a lock file that is never unlinked while others may use it.
//!
//! Protocol of one attempt:
//! 1. open the path with `O_RDWR|O_CREAT|O_NOFOLLOW|O_CLOEXEC|O_NONBLOCK` (never `O_TRUNC`);
//! 2. `flock` without blocking (or, when the caller waits forever and cannot cancel, blocking,
//!    so the kernel wakes us the instant the lock is free);
//! 3. `fstat` the descriptor: refuse anything but a regular file; then `lstat` the path and check
//!    it still names the inode we locked: if someone unlinked or replaced it in between, our lock
//!    protects nothing, so drop it and start over;
//! 4. read the previous record (refusing oversized or foreign content), and for an exclusive lock
//!    write ours with the next fencing generation, with plain writes (no fsync: the lock only has
//!    to survive process crashes, and the generation has a clock floor, see
//!    [`crate::record::next_generation`]).
//!
//! The uncontended path is open, flock, fstat, lstat, pread, pwrite (and unlock, close on
//! release); the thread registry is only consulted when the lock is busy, because a successful
//! non-blocking `flock` already proves this thread did not hold it through another descriptor.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use rustix::fs::{FlockOperation, flock};
use rustix::io::Errno;

use crate::error::{LockError, Result};
use crate::fdpool::IdlePool;
use crate::fsutil::{self, FileId};
use crate::guard::{Backing, Held, LockGuard};
use crate::identity::Liveness;
use crate::record::{self, Contents, HolderRecord, RecordMode};
use crate::registry::{self, Key};

/// What one attempt produced.
pub(crate) enum Step {
    Acquired(LockGuard),
    /// Held by someone else; the record, when readable, names them.
    Busy(Option<HolderRecord>),
    /// Something moved under us (the file was replaced): try again at once.
    Retry,
}

pub(crate) struct KernelClaim {
    path: Arc<Path>,
    shared: bool,
    reentrant: bool,
    /// Block in `flock` itself once a non-blocking try failed.
    blocking: bool,
    /// The descriptor being tried, with its identity when known (a reused idle descriptor).
    file: Option<(File, Option<FileId>)>,
    /// Our pid, read once per acquisition.
    pid: u32,
    /// Idle descriptors of the options this claim came from.
    pool: Arc<IdlePool>,
}

impl KernelClaim {
    pub(crate) fn new(
        path: Arc<Path>,
        shared: bool,
        reentrant: bool,
        blocking: bool,
        pool: Arc<IdlePool>,
    ) -> Self {
        KernelClaim {
            path,
            shared,
            reentrant,
            blocking,
            file: None,
            pid: crate::sys::current_pid(),
            pool,
        }
    }

    pub(crate) fn step(&mut self) -> Result<Step> {
        let (file, known_id) = match self.file.take() {
            Some(f) => f,
            None => match self.pool.take(self.pid) {
                Some((file, id)) => (file, Some(id)),
                None => (fsutil::open_lock_file_unchecked(&self.path)?, None),
            },
        };
        let try_op = if self.shared {
            FlockOperation::NonBlockingLockShared
        } else {
            FlockOperation::NonBlockingLockExclusive
        };
        match flock(&file, try_op) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => return self.busy(file),
            Err(Errno::INTR) => {
                self.file = Some((file, known_id));
                return Ok(Step::Retry);
            }
            Err(e) => return Err(self.flock_error(e)),
        }
        self.locked(file, known_id)
    }

    /// The lock is busy: maybe it is this very thread's (reentrancy, or a wait that would never
    /// end); else block in the kernel if allowed, or report who holds it.
    fn busy(&mut self, file: File) -> Result<Step> {
        let st = rustix::fs::fstat(&file).map_err(|e| LockError::io(&self.path, "fstat", e))?;
        fsutil::require_regular(&self.path, &st)?;
        let id = fsutil::file_id(&st);
        if let Some(held) = registry::held_by_current_thread(&Key::Inode(id.0, id.1)) {
            if self.reentrant {
                return Ok(Step::Acquired(LockGuard { inner: held }));
            }
            if self.blocking {
                return Err(LockError::WouldDeadlock {
                    path: self.path.to_path_buf(),
                });
            }
        }
        if self.blocking {
            let op = if self.shared {
                FlockOperation::LockShared
            } else {
                FlockOperation::LockExclusive
            };
            return match flock(&file, op) {
                Ok(()) => self.locked(file, Some(id)),
                Err(Errno::INTR) => {
                    self.file = Some((file, Some(id)));
                    Ok(Step::Retry)
                }
                Err(e) => Err(self.flock_error(e)),
            };
        }
        let holder = peek_record(&self.path, &file, &st);
        self.file = Some((file, Some(id)));
        Ok(Step::Busy(holder))
    }

    fn flock_error(&self, e: Errno) -> LockError {
        match e {
            Errno::NOLCK | Errno::NOSYS | Errno::OPNOTSUPP => LockError::UntrustedFilesystem {
                path: self.path.to_path_buf(),
                reason: "this filesystem does not support flock".to_owned(),
            },
            e => LockError::io(&self.path, "flock", e),
        }
    }

    /// We hold a kernel lock on the file we opened: verify it, then record ourselves.
    /// `known_id` is the identity of a reused descriptor, already checked to be a regular file
    /// when it was first opened; a fresh descriptor is checked here.
    fn locked(&mut self, file: File, known_id: Option<FileId>) -> Result<Step> {
        let unlock_with = |e: LockError| {
            let _ = flock(&file, FlockOperation::Unlock);
            Err(e)
        };
        let id: FileId = match known_id {
            Some(id) => id,
            None => {
                let st = match rustix::fs::fstat(&file) {
                    Ok(st) => st,
                    Err(e) => return unlock_with(LockError::io(&self.path, "fstat", e)),
                };
                if let Err(e) = fsutil::require_regular(&self.path, &st) {
                    return unlock_with(e);
                }
                fsutil::file_id(&st)
            }
        };
        // The path must still name the inode we locked (and, being named, it has a link).
        let st = match rustix::fs::lstat(&*self.path) {
            Ok(now) if fsutil::file_id(&now) == id => now,
            // Replaced or unlinked in between: locking this inode protects nothing.
            Ok(_) | Err(Errno::NOENT) => return Ok(Step::Retry),
            Err(e) => return unlock_with(fsutil::open_error(&self.path, "lstat", e)),
        };
        let bytes = match fsutil::read_bounded(&self.path, &file, st.st_size as u64) {
            Ok(b) => b,
            Err(e) => return unlock_with(e),
        };
        let previous = match record::peek_generation_and_mode(&bytes) {
            Some(found) => Some(found),
            None => match record::parse(&bytes) {
                Contents::Foreign => {
                    return unlock_with(LockError::ForeignContent {
                        path: self.path.to_path_buf(),
                        len: st.st_size as u64,
                    });
                }
                _ => None,
            },
        };
        if let Some((_, RecordMode::Soft)) = previous
            && let Contents::Record(prev) = record::parse(&bytes)
            && prev.liveness() == Liveness::Alive
        {
            return unlock_with(LockError::ModeMismatch {
                path: self.path.to_path_buf(),
                held: "soft",
                wanted: "kernel",
                holder: prev.describe(),
            });
        }
        let previous_generation = previous.map(|(g, _)| g);
        let pid = self.pid;
        let (generation, record_line) = if self.shared {
            (previous_generation.unwrap_or(0), None)
        } else {
            let generation = record::next_generation(previous_generation);
            let line = record::kernel_line(pid, generation);
            if let Err(e) = fsutil::write_at_start(&self.path, &file, &line) {
                return unlock_with(e);
            }
            (generation, Some(line))
        };
        Ok(Step::Acquired(LockGuard::new(
            Held {
                path: Arc::clone(&self.path),
                key: Key::Inode(id.0, id.1),
                owner_pid: pid,
                generation,
                shared: self.shared,
                record_line,
                record: std::sync::OnceLock::new(),
                backing: Backing::Kernel {
                    file,
                    id,
                    pool: Arc::clone(&self.pool),
                },
            },
            pid,
        )))
    }
}

/// Reads the current holder's record without the lock, for messages and death watching.
/// A torn read is simply no information.
fn peek_record(path: &Path, file: &File, st: &rustix::fs::Stat) -> Option<HolderRecord> {
    match fsutil::read_contents(path, file, st.st_size as u64) {
        Ok(Contents::Record(r)) if !r.shared => Some(r),
        _ => None,
    }
}
