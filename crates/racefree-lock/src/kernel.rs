//! Kernel mode: `flock(2)` on a lock file that is never unlinked while others may use it.
//!
//! Protocol of one attempt:
//! 1. open the path with `O_RDWR|O_CREAT|O_NOFOLLOW|O_CLOEXEC|O_NONBLOCK` (never `O_TRUNC`), and
//!    refuse anything but a regular file;
//! 2. `flock` without blocking (or blocking, when the caller waits forever and cannot cancel);
//! 3. check the path still names the inode we locked (`lstat` vs `fstat`): if someone unlinked or
//!    replaced it in between, our lock protects nothing, so drop it and start over;
//! 4. read the previous record (refusing oversized or foreign content), and for an exclusive lock
//!    write ours with the next fencing generation, with plain writes (no fsync: the lock only has
//!    to survive process crashes, and the generation has a clock floor, see
//!    [`crate::record::next_generation`]).

use std::fs::File;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};
use rustix::io::Errno;

use crate::error::{LockError, Result};
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
    path: PathBuf,
    shared: bool,
    reentrant: bool,
    /// Block in `flock` itself: only when the caller waits forever with no cancel hook, so the
    /// kernel wakes us the instant the lock is free.
    blocking: bool,
    file: Option<(File, FileId)>,
}

impl KernelClaim {
    pub(crate) fn new(path: &Path, shared: bool, reentrant: bool, blocking: bool) -> Self {
        KernelClaim {
            path: path.to_path_buf(),
            shared,
            reentrant,
            blocking,
            file: None,
        }
    }

    pub(crate) fn step(&mut self) -> Result<Step> {
        if self.file.is_none() {
            let (file, st) = fsutil::open_lock_file(&self.path)?;
            self.file = Some((file, fsutil::file_id(&st)));
        }
        let Some((file, id)) = self.file.as_ref() else {
            return Ok(Step::Retry);
        };
        let key = Key::Inode(id.0, id.1);
        if let Some(held) = registry::held_by_current_thread(&key) {
            if self.reentrant {
                return Ok(Step::Acquired(LockGuard { inner: held }));
            }
            if self.blocking {
                return Err(LockError::WouldDeadlock {
                    path: self.path.clone(),
                });
            }
        }
        let op = match (self.shared, self.blocking) {
            (false, false) => FlockOperation::NonBlockingLockExclusive,
            (false, true) => FlockOperation::LockExclusive,
            (true, false) => FlockOperation::NonBlockingLockShared,
            (true, true) => FlockOperation::LockShared,
        };
        match flock(file, op) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => return Ok(Step::Busy(self.peek_record())),
            Err(Errno::INTR) => return Ok(Step::Retry),
            Err(Errno::NOLCK) | Err(Errno::NOSYS) | Err(Errno::OPNOTSUPP) => {
                return Err(LockError::UntrustedFilesystem {
                    path: self.path.clone(),
                    reason: "this filesystem does not support flock".to_owned(),
                });
            }
            Err(e) => return Err(LockError::io(&self.path, "flock", e)),
        }
        // We hold a lock on the inode we opened. Make sure the path still names it.
        let st = match rustix::fs::lstat(&self.path) {
            Ok(st) if fsutil::file_id(&st) == *id => st,
            Ok(_) | Err(Errno::NOENT) => {
                // Replaced or unlinked in between: locking this inode protects nothing.
                self.file = None;
                return Ok(Step::Retry);
            }
            Err(e) => return Err(fsutil::open_error(&self.path, "lstat", e)),
        };
        let previous = match fsutil::read_contents(&self.path, file, st.st_size as u64) {
            Ok(c) => c,
            Err(e) => {
                let _ = flock(file, FlockOperation::Unlock);
                return Err(e);
            }
        };
        let previous = match previous {
            Contents::Record(r) => Some(r),
            _ => None,
        };
        if let Some(prev) = &previous
            && prev.mode == RecordMode::Soft
            && prev.liveness() == Liveness::Alive
        {
            let _ = flock(file, FlockOperation::Unlock);
            return Err(LockError::ModeMismatch {
                path: self.path.clone(),
                held: "soft",
                wanted: "kernel",
                holder: prev.describe(),
            });
        }
        let previous_generation = previous.as_ref().map(|r| r.generation);
        let (generation, record) = if self.shared {
            (previous_generation.unwrap_or(0), None)
        } else {
            let generation = record::next_generation(previous_generation);
            let record = record::for_current_process(RecordMode::Kernel, false, generation, None);
            if let Err(e) = fsutil::write_at_start(&self.path, file, &record.to_line()) {
                let _ = flock(file, FlockOperation::Unlock);
                return Err(e);
            }
            (generation, Some(record))
        };
        let Some((file, _)) = self.file.take() else {
            return Ok(Step::Retry);
        };
        Ok(Step::Acquired(LockGuard::new(Held {
            path: self.path.clone(),
            key,
            owner_pid: std::process::id(),
            generation,
            shared: self.shared,
            record,
            backing: Backing::Kernel { file },
        })))
    }

    /// Reads the current holder's record without the lock, for messages and death watching.
    /// A torn read is simply no information.
    fn peek_record(&self) -> Option<HolderRecord> {
        let (file, _) = self.file.as_ref()?;
        let st = rustix::fs::fstat(file).ok()?;
        match fsutil::read_contents(&self.path, file, st.st_size as u64) {
            Ok(Contents::Record(r)) if !r.shared => Some(r),
            _ => None,
        }
    }
}
