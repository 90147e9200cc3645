//! Errors of the lock library. Every variant names the lock path and says what to do about it.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while locking, inspecting or breaking a lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The lock is held by someone else and the wait (or the single try) ran out.
    #[error("{path}: lock is held by {holder}; gave up after {waited:.1?}")]
    WouldBlock {
        path: PathBuf,
        /// A short description of the current holder.
        holder: String,
        waited: Duration,
    },

    /// The caller's cancel hook asked the wait to stop.
    #[error("{path}: waiting for the lock was cancelled")]
    Cancelled { path: PathBuf },

    /// This thread already holds the lock and would wait for itself forever.
    #[error(
        "{path}: this thread already holds this lock and asked for it again without a timeout, \
         which would wait forever; enable reentrancy (LockOptions::reentrant) or release the first guard"
    )]
    WouldDeadlock { path: PathBuf },

    /// The directory that should contain the lock file does not exist.
    #[error(
        "{path}: the parent directory does not exist; create it first (for example `mkdir -p {parent}`)"
    )]
    MissingParent { path: PathBuf, parent: PathBuf },

    /// Something other than a regular file is at the lock path.
    #[error(
        "{path}: is a {kind}, not a regular file; refusing to use it as a lock (choose another path or remove it)"
    )]
    NotRegularFile { path: PathBuf, kind: &'static str },

    /// A symbolic link is at the lock path. It is never followed (symlink attacks on lock files are real CVEs).
    #[error(
        "{path}: is a symbolic link; lock files are never followed through symlinks (remove the link or lock its target directly)"
    )]
    Symlink { path: PathBuf },

    /// The file at the lock path holds data that is not a racefree holder record.
    #[error(
        "{path}: contains {len} bytes that are not a racefree lock record; refusing to overwrite it (choose a dedicated lock path)"
    )]
    ForeignContent { path: PathBuf, len: u64 },

    /// The record at the lock path is larger than any record racefree writes.
    #[error(
        "{path}: lock record is {len} bytes, over the {max}-byte limit; refusing to read it (remove the file if nothing holds it)"
    )]
    OversizedRecord { path: PathBuf, len: u64, max: u64 },

    /// The path is locked by the other lock mode (kernel vs soft), which cannot exclude this one.
    #[error(
        "{path}: is held in {held} mode by {holder}, but this process asked for {wanted} mode; all users of a lock path must use the same mode"
    )]
    ModeMismatch {
        path: PathBuf,
        held: &'static str,
        wanted: &'static str,
        holder: String,
    },

    /// The filesystem does not give the chosen mode trustworthy semantics.
    #[error(
        "{path}: {reason}; pass an explicit mode to opt in (for example `--mode soft --lease 30`)"
    )]
    UntrustedFilesystem { path: PathBuf, reason: String },

    /// The requested combination is not supported by the chosen mode.
    #[error("{path}: {what}")]
    Unsupported { path: PathBuf, what: String },

    /// `break_stale` found a holder that is not provably dead.
    #[error("{path}: not breaking the lock: {reason}")]
    NotStale { path: PathBuf, reason: String },

    /// An operating-system call failed.
    #[error("{path}: {op} failed: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

impl LockError {
    pub(crate) fn io(
        path: &std::path::Path,
        op: &'static str,
        source: impl Into<io::Error>,
    ) -> Self {
        LockError::Io {
            path: path.to_path_buf(),
            op,
            source: source.into(),
        }
    }

    /// True when the lock was simply busy (timeout or single try failed).
    pub fn is_would_block(&self) -> bool {
        matches!(self, LockError::WouldBlock { .. })
    }
}

/// Result alias for the lock library.
pub type Result<T, E = LockError> = std::result::Result<T, E>;
