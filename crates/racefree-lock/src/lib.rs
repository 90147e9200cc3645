//! racefree-lock: a crash-safe, symlink-safe cross-process lock with holder records,
//! stale-holder recovery only on proof of death, leases and fencing tokens.
//!
//! Two modes share one API ([`LockOptions`]):
//!
//! - **Kernel mode** (default on local filesystems): `flock(2)` on a lock file that is never
//!   unlinked. The kernel releases the lock when its holder dies, however it dies. The holder
//!   writes a [`HolderRecord`] into the file under the lock, with a strictly increasing fencing
//!   generation ([`LockGuard::token`]).
//! - **Soft mode** (network and FUSE filesystems, or on request): the lock is an atomically
//!   published record file. A holder is stale only on proof of death (same host and boot, pid
//!   gone or reused); holders on other hosts are broken only when their lease expired.
//!
//! Paths are never followed through symlinks, never truncated, and never anything but regular
//! files. Two threads of one process exclude each other; a thread asking for a lock it already
//! holds gets it again only with [`LockOptions::reentrant`], and otherwise an error rather than
//! a hang. A guard that crosses a `fork()` is not held by the child.
//!
//! Unix only (Linux first-class, macOS without pidfd wake-ups).

#![cfg(unix)]

mod error;
mod fdpool;
mod fsutil;
mod guard;
mod identity;
mod inspect;
mod kernel;
mod options;
mod record;
mod registry;
mod soft;
mod sys;
mod wait;

#[cfg(feature = "tokio")]
mod asynch;

pub use error::{LockError, Result};
pub use guard::LockGuard;
pub use identity::{HostIdentity, Liveness};
pub use inspect::{
    BreakOutcome, HoldState, HolderStatus, LivenessView, break_stale, force_break, holder,
};
pub use options::{DEFAULT_LEASE, LockOptions, MALFORMED_GRACE, Mode};
pub use record::{
    Contents, HolderRecord, MAX_RECORD_BYTES, RECORD_VERSION, RecordMode, next_generation,
    parse as parse_record,
};
pub use sys::FsKind;

/// The Rust examples of the user guide's docs/lock.md, compiled as doctests so they cannot rot.
/// (Its other blocks are marked for crates/racefree/tests/docs_examples.rs, in info strings such
/// as `console test exit=3`, which rustdoc would warn about.)
#[cfg(doctest)]
#[allow(rustdoc::invalid_codeblock_attributes)]
#[doc = include_str!("../../../docs/lock.md")]
pub struct LockGuideExamples;
