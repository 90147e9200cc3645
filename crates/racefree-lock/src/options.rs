//! The lock builder and the waiting loop shared by every mode.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{LockError, Result};
use crate::fsutil;
use crate::guard::LockGuard;
use crate::kernel::{KernelClaim, Step};
use crate::soft::SoftClaim;
use crate::sys::{self, FsKind};
use crate::wait::{Backoff, Deadline, HolderWatch, MAX_PAUSE};

/// How the lock is implemented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Kernel mode on local filesystems; soft mode with a lease on network and FUSE filesystems.
    #[default]
    Auto,
    /// `flock` on a lock file that is never unlinked.
    Kernel,
    /// An atomically published holder record (for filesystems without trustworthy kernel locks).
    Soft,
}

/// The default lease for soft locks chosen automatically on shared filesystems.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// How long a malformed or empty soft record may stay before it is evicted.
pub const MALFORMED_GRACE: Duration = Duration::from_secs(2);

type CancelHook = Arc<dyn Fn() -> bool + Send + Sync>;

/// Describes a lock to take. Cheap to clone; reusable for many acquisitions.
///
/// ```no_run
/// use std::time::Duration;
/// let guard = racefree_lock::LockOptions::new("/tmp/cache.lock")
///     .timeout(Some(Duration::from_secs(10)))
///     .acquire()?;
/// println!("fencing token {}", guard.token());
/// # Ok::<(), racefree_lock::LockError>(())
/// ```
#[derive(Clone)]
pub struct LockOptions {
    pub(crate) path: Arc<Path>,
    pub(crate) mode: Mode,
    pub(crate) shared: bool,
    pub(crate) timeout: Option<Duration>,
    pub(crate) lease: Option<Duration>,
    pub(crate) reentrant: bool,
    pub(crate) trust_filesystem: bool,
    pub(crate) malformed_grace: Duration,
    pub(crate) cancel: Option<CancelHook>,
    /// The filesystem kind of the lock's directory, looked up on first use and shared by clones.
    fs_kind: Arc<std::sync::OnceLock<FsKind>>,
    /// Unlocked descriptors of earlier acquisitions, reused to skip open and close.
    idle: Arc<crate::fdpool::IdlePool>,
}

impl std::fmt::Debug for LockOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockOptions")
            .field("path", &self.path)
            .field("mode", &self.mode)
            .field("shared", &self.shared)
            .field("timeout", &self.timeout)
            .field("lease", &self.lease)
            .field("reentrant", &self.reentrant)
            .field("trust_filesystem", &self.trust_filesystem)
            .finish_non_exhaustive()
    }
}

/// The mode actually used for one acquisition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolved {
    Kernel,
    Soft { lease: Option<Duration> },
}

impl LockOptions {
    /// An exclusive lock on `path` that waits forever, in [`Mode::Auto`].
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LockOptions {
            path: Arc::from(path.into()),
            mode: Mode::Auto,
            shared: false,
            timeout: None,
            lease: None,
            reentrant: false,
            trust_filesystem: false,
            malformed_grace: MALFORMED_GRACE,
            cancel: None,
            fs_kind: Arc::default(),
            idle: Arc::default(),
        }
    }

    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// A shared (read) lock: any number of shared holders, no exclusive one. Kernel mode only.
    pub fn shared(mut self, shared: bool) -> Self {
        self.shared = shared;
        self
    }

    /// How long `acquire` waits: `None` waits forever, `Some(ZERO)` tries once.
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Soft mode: keep the record fresh with a heartbeat so that holders on other hosts can be
    /// evicted once it stops for longer than `lease`.
    pub fn lease(mut self, lease: Option<Duration>) -> Self {
        self.lease = lease;
        self
    }

    /// Let a thread that holds the lock take it again (released when its last guard drops).
    pub fn reentrant(mut self, reentrant: bool) -> Self {
        self.reentrant = reentrant;
        self
    }

    /// Use the forced mode even on a filesystem where it cannot be trusted (kernel mode on NFS).
    pub fn trust_filesystem(mut self, trust: bool) -> Self {
        self.trust_filesystem = trust;
        self
    }

    /// How long a malformed or empty soft record may stay before it is evicted (default 2 s).
    pub fn malformed_grace(mut self, grace: Duration) -> Self {
        self.malformed_grace = grace;
        self
    }

    /// Stop waiting when `hook` returns true (checked between attempts, at least every 20 ms).
    pub fn cancel_when(mut self, hook: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        self.cancel = Some(Arc::new(hook));
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Acquires the lock, waiting as the timeout allows.
    pub fn acquire(&self) -> Result<LockGuard> {
        let mut attempt = self.start_attempt(self.timeout.is_none() && self.cancel.is_none())?;
        let deadline = Deadline::after(self.timeout);
        let mut backoff = Backoff::new(MAX_PAUSE);
        let mut watch = HolderWatch::default();
        loop {
            let holder = match attempt.step()? {
                Step::Acquired(guard) => return Ok(guard),
                Step::Retry => continue,
                Step::Busy(holder) => holder,
            };
            self.keep_waiting(holder.as_ref(), &deadline)?;
            watch.follow(holder.as_ref());
            watch.pause(deadline.clamp(backoff.next_pause()));
        }
    }

    /// One attempt: `Ok(None)` if someone else holds the lock.
    pub fn try_acquire(&self) -> Result<Option<LockGuard>> {
        match self.clone().timeout(Some(Duration::ZERO)).acquire() {
            Ok(g) => Ok(Some(g)),
            Err(LockError::WouldBlock { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Between attempts: an error once the deadline passed or the caller cancelled.
    pub(crate) fn keep_waiting(
        &self,
        holder: Option<&crate::HolderRecord>,
        deadline: &Deadline,
    ) -> Result<()> {
        if deadline.expired() {
            return Err(self.would_block(holder, deadline));
        }
        if self.cancel.as_ref().is_some_and(|c| c()) {
            return Err(LockError::Cancelled {
                path: self.path.to_path_buf(),
            });
        }
        Ok(())
    }

    pub(crate) fn would_block(
        &self,
        holder: Option<&crate::HolderRecord>,
        deadline: &Deadline,
    ) -> LockError {
        LockError::WouldBlock {
            path: self.path.to_path_buf(),
            holder: holder
                .map(|h| h.describe())
                .unwrap_or_else(|| "another process".to_owned()),
            waited: deadline.waited(),
        }
    }

    pub(crate) fn start_attempt(&self, waiting_forever: bool) -> Result<Attempt> {
        Ok(match self.resolve()? {
            Resolved::Kernel => Attempt::Kernel(KernelClaim::new(
                Arc::clone(&self.path),
                self.shared,
                self.reentrant,
                waiting_forever,
                Arc::clone(&self.idle),
            )),
            Resolved::Soft { lease } => {
                if self.shared {
                    return Err(LockError::Unsupported {
                        path: self.path.to_path_buf(),
                        what: "shared locks need kernel mode; soft mode is exclusive only"
                            .to_owned(),
                    });
                }
                Attempt::Soft(
                    SoftClaim::new(&self.path, self.reentrant, lease, self.malformed_grace)?,
                    waiting_forever,
                )
            }
        })
    }

    /// Chooses the mode from the filesystem that holds the lock, failing closed where the
    /// requested mode cannot be trusted.
    pub(crate) fn resolve(&self) -> Result<Resolved> {
        let kind = match self.fs_kind.get() {
            Some(kind) => kind.clone(),
            None => {
                let kind = fs_kind_cached(&self.path)?;
                let _ = self.fs_kind.set(kind.clone());
                kind
            }
        };
        match (self.mode, &kind) {
            (Mode::Soft, _) => Ok(Resolved::Soft { lease: self.lease }),
            (Mode::Auto, FsKind::Local) | (Mode::Kernel, FsKind::Local) => Ok(Resolved::Kernel),
            (Mode::Auto, FsKind::Network(_) | FsKind::Fuse(_)) => Ok(Resolved::Soft {
                lease: Some(self.lease.unwrap_or(DEFAULT_LEASE)),
            }),
            (Mode::Kernel, FsKind::Network(name) | FsKind::Fuse(name)) => {
                if self.trust_filesystem {
                    Ok(Resolved::Kernel)
                } else {
                    Err(LockError::UntrustedFilesystem {
                        path: self.path.to_path_buf(),
                        reason: format!(
                            "kernel locks on a {name} filesystem may be emulated or ignored by other clients"
                        ),
                    })
                }
            }
        }
    }
}

/// One acquisition in progress, in its mode.
pub(crate) enum Attempt {
    Kernel(KernelClaim),
    Soft(SoftClaim, bool),
}

impl Attempt {
    pub(crate) fn step(&mut self) -> Result<Step> {
        match self {
            Attempt::Kernel(k) => k.step(),
            Attempt::Soft(s, forever) => s.step(*forever),
        }
    }
}

/// The filesystem kind of the lock's directory, cached per directory: `statfs` on every
/// acquisition would cost as much as the lock itself, and mounts rarely change under a path.
fn fs_kind_cached(path: &Path) -> Result<FsKind> {
    static CACHE: Mutex<Option<HashMap<PathBuf, FsKind>>> = Mutex::new(None);
    let mut dir = fsutil::parent_of(path).unwrap_or_else(|| PathBuf::from("/"));
    if dir.is_relative() {
        let cwd = std::env::current_dir().map_err(|e| LockError::io(path, "getcwd", e))?;
        dir = cwd.join(dir);
    }
    if let Ok(cache) = CACHE.lock()
        && let Some(kind) = cache.as_ref().and_then(|c| c.get(&dir))
    {
        return Ok(kind.clone());
    }
    let kind = sys::fs_kind(&dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            LockError::MissingParent {
                path: path.to_path_buf(),
                parent: dir.clone(),
            }
        } else {
            LockError::io(path, "statfs", e)
        }
    })?;
    if let Ok(mut cache) = CACHE.lock() {
        cache
            .get_or_insert_with(HashMap::new)
            .insert(dir, kind.clone());
    }
    Ok(kind)
}
