//! Looking at a lock without taking it, and breaking provably stale ones.

use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};
use rustix::io::Errno;
use serde::Serialize;

use crate::error::{LockError, Result};
use crate::fsutil;
use crate::identity::Liveness;
use crate::options::MALFORMED_GRACE;
use crate::record::{Contents, HolderRecord, RecordMode};
use crate::soft::{self, Expect};

/// Whether anyone holds a lock right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldState {
    Free,
    Exclusive,
    Shared,
}

/// What [`holder`] found at a lock path.
#[derive(Debug, Clone, Serialize)]
pub struct HolderStatus {
    pub path: PathBuf,
    /// The mode the lock is in (from the record; kernel for a lock file without one).
    pub mode: Option<RecordMode>,
    pub state: HoldState,
    /// The current holder's record, or in kernel mode the last exclusive holder's.
    pub record: Option<HolderRecord>,
    /// The holder's liveness as judged from here, when the lock is held and has a record.
    pub liveness: Option<LivenessView>,
    /// The file holds a torn or empty soft record.
    pub malformed: bool,
}

/// [`Liveness`] in a serializable shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum LivenessView {
    Alive,
    Dead(String),
    Unknown(String),
}

impl From<Liveness> for LivenessView {
    fn from(l: Liveness) -> Self {
        match l {
            Liveness::Alive => LivenessView::Alive,
            Liveness::Dead(r) => LivenessView::Dead(r),
            Liveness::Unknown(r) => LivenessView::Unknown(r),
        }
    }
}

/// Inspects a lock without acquiring it.
///
/// For a kernel lock this briefly tests the `flock` without blocking (and gives it straight
/// back), so a concurrent non-blocking attempt by someone else may see it busy for that instant.
pub fn holder(path: &Path) -> Result<HolderStatus> {
    let Some((fd, st)) = fsutil::open_existing_readonly(path)? else {
        return Ok(HolderStatus {
            path: path.to_path_buf(),
            mode: None,
            state: HoldState::Free,
            record: None,
            liveness: None,
            malformed: false,
        });
    };
    let contents = fsutil::read_contents(path, &fd, st.st_size as u64)?;
    let (record, malformed) = match contents {
        Contents::Record(r) => (Some(r), false),
        Contents::Malformed => (None, true),
        Contents::Empty | Contents::Foreign => (None, false),
    };
    if let Some(r) = record.as_ref().filter(|r| r.mode == RecordMode::Soft) {
        // A soft lock is held exactly while its record exists.
        return Ok(HolderStatus {
            path: path.to_path_buf(),
            mode: Some(RecordMode::Soft),
            state: HoldState::Exclusive,
            liveness: Some(r.liveness().into()),
            record,
            malformed: false,
        });
    }
    if malformed {
        return Ok(HolderStatus {
            path: path.to_path_buf(),
            mode: Some(RecordMode::Soft),
            state: HoldState::Exclusive,
            record: None,
            liveness: None,
            malformed: true,
        });
    }
    let state = probe_kernel(path, &fd)?;
    let liveness = match state {
        HoldState::Exclusive => record.as_ref().map(|r| r.liveness().into()),
        _ => None,
    };
    Ok(HolderStatus {
        path: path.to_path_buf(),
        mode: Some(RecordMode::Kernel),
        state,
        record,
        liveness,
        malformed: false,
    })
}

fn probe_kernel(path: &Path, fd: &std::os::fd::OwnedFd) -> Result<HoldState> {
    let try_op = |op| match flock(fd, op) {
        Ok(()) => {
            let _ = flock(fd, FlockOperation::Unlock);
            Ok(true)
        }
        Err(Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(LockError::io(path, "flock", e)),
    };
    if try_op(FlockOperation::NonBlockingLockExclusive)? {
        Ok(HoldState::Free)
    } else if try_op(FlockOperation::NonBlockingLockShared)? {
        Ok(HoldState::Shared)
    } else {
        Ok(HoldState::Exclusive)
    }
}

/// What a break did.
#[allow(clippy::large_enum_variant)] // rare, short-lived values
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreakOutcome {
    /// Nothing held the lock.
    NotHeld,
    /// The stale record was removed; the proof is given.
    Broken {
        record: Option<HolderRecord>,
        reason: String,
    },
}

/// Breaks a soft lock whose holder is provably dead (or whose lease expired, or whose record has
/// been malformed for longer than the grace). Refuses anything else with [`LockError::NotStale`].
/// Kernel locks never need breaking: the kernel releases them when their holder dies.
pub fn break_stale(path: &Path) -> Result<BreakOutcome> {
    let status = holder(path)?;
    let ctl = soft::ctl_path(path);
    match (status.mode, status.state) {
        (_, HoldState::Free) => Ok(BreakOutcome::NotHeld),
        (Some(RecordMode::Kernel) | None, _) => Err(LockError::NotStale {
            path: path.to_path_buf(),
            reason: format!(
                "it is a kernel lock, held by a live process{}; the kernel releases it when that process exits",
                status
                    .record
                    .as_ref()
                    .map(|r| format!(" (last exclusive holder: {})", r.describe()))
                    .unwrap_or_default()
            ),
        }),
        (Some(RecordMode::Soft), _) if status.malformed => {
            let st = rustix::fs::lstat(path).map_err(|e| LockError::io(path, "lstat", e))?;
            let touched = fsutil::mtime_nanos(&st);
            let age = soft::directory_now(path)? - touched;
            if age < MALFORMED_GRACE.as_nanos() as i128 {
                return Err(LockError::NotStale {
                    path: path.to_path_buf(),
                    reason: "the record is malformed but was written less than 2 s ago (it may still be being written)".to_owned(),
                });
            }
            let removed = soft::break_if(path, &ctl, &Expect::Inode(fsutil::file_id(&st)))?;
            Ok(outcome(
                removed,
                "the record was malformed for longer than the grace",
            ))
        }
        (Some(RecordMode::Soft), _) => {
            let Some(record) = status.record else {
                return Ok(BreakOutcome::NotHeld);
            };
            let reason = match record.liveness() {
                Liveness::Dead(proof) => proof,
                Liveness::Alive => {
                    return Err(LockError::NotStale {
                        path: path.to_path_buf(),
                        reason: format!("its holder is alive: {}", record.describe()),
                    });
                }
                Liveness::Unknown(why) => {
                    let expired = record.lease_ms.is_some() && {
                        let st =
                            rustix::fs::lstat(path).map_err(|e| LockError::io(path, "lstat", e))?;
                        let touched = fsutil::mtime_nanos(&st);
                        let age_ms = (soft::directory_now(path)? - touched) / 1_000_000;
                        age_ms > i128::from(record.lease_ms.unwrap_or(u64::MAX))
                    };
                    if !expired {
                        return Err(LockError::NotStale {
                            path: path.to_path_buf(),
                            reason: format!(
                                "{why}, which cannot be proved dead from here and has no expired lease; use --force if you know it is gone"
                            ),
                        });
                    }
                    "its lease expired".to_owned()
                }
            };
            let removed = soft::break_if(path, &ctl, &Expect::Token(record.token.clone()))?;
            Ok(outcome(removed, &reason))
        }
    }
}

/// Removes a soft lock's record whatever its holder's state. For people who know better than
/// the proof rules; kernel locks cannot be forced (kill the holder instead).
pub fn force_break(path: &Path) -> Result<BreakOutcome> {
    let status = holder(path)?;
    if status.state == HoldState::Free {
        return Ok(BreakOutcome::NotHeld);
    }
    if status.mode != Some(RecordMode::Soft) {
        return Err(LockError::Unsupported {
            path: path.to_path_buf(),
            what: format!(
                "a kernel lock cannot be broken, only released by its holder{}; stop that process instead",
                status
                    .record
                    .as_ref()
                    .map(|r| format!(" ({})", r.describe()))
                    .unwrap_or_default()
            ),
        });
    }
    let removed = soft::break_if(path, &soft::ctl_path(path), &Expect::Anything)?;
    Ok(outcome(removed, "forced"))
}

fn outcome(removed: Option<Contents>, reason: &str) -> BreakOutcome {
    match removed {
        None => BreakOutcome::NotHeld,
        Some(contents) => BreakOutcome::Broken {
            record: match contents {
                Contents::Record(r) => Some(r),
                _ => None,
            },
            reason: reason.to_owned(),
        },
    }
}
