//! Soft mode: the lock *is* the holder record file, for filesystems whose kernel locks cannot be
//! trusted (NFS, SMB, some FUSE).
//!
//! - **Claim**: the record is written to a private temp file, fsynced, and published with
//!   `link(2)`, which fails if the lock path exists; so the record is never visible half-written.
//!   Where the filesystem has no hard links, `O_CREAT|O_EXCL` is the fallback (a crash there can
//!   leave an empty or torn record, which the malformed-record grace below handles).
//! - **Staleness is proof of death**: same host identity and boot id, and the pid is gone or now
//!   names a process that started at another time. A record from another host is never broken,
//!   unless it carries a lease that has expired, judged by the lock directory's own clock (the
//!   mtime of a probe file we create there) against the record's mtime, never the local clock.
//! - **Malformed or empty records** are evicted once they have stayed unchanged for a grace
//!   period, so a torn write can never wedge waiters forever.
//! - **Breaking and releasing** happen under a kernel lock on a sibling control file
//!   (`.<name>.rfctl`, never unlinked), and re-verify the record (token, or inode for malformed
//!   ones) just before unlinking: a breaker never removes a successor's fresh record, and a
//!   releaser only ever removes its own. The control file also keeps the last fencing generation,
//!   since the record itself disappears on release.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::fs::{FlockOperation, Mode, OFlags, Timestamps, flock};
use rustix::io::Errno;

use crate::error::{LockError, Result};
use crate::fsutil::{self, FileId};
use crate::guard::{Backing, Held, LockGuard};
use crate::identity::Liveness;
use crate::kernel::Step;
use crate::record::{self, Contents, HolderRecord, RecordMode};
use crate::registry::{self, Key};

/// The control file beside a soft lock: kernel lock for breakers and releasers, last generation.
pub(crate) fn ctl_path(path: &Path) -> PathBuf {
    fsutil::sibling(path, ".", ".rfctl")
}

pub(crate) struct SoftClaim {
    path: PathBuf,
    ctl: PathBuf,
    key: Key,
    reentrant: bool,
    lease: Option<Duration>,
    malformed_grace: Duration,
    /// A malformed record we are waiting out: its identity (inode, size, mtime) and when first seen.
    malformed_since: Option<((FileId, u64, i128), Instant)>,
}

impl SoftClaim {
    pub(crate) fn new(
        path: &Path,
        reentrant: bool,
        lease: Option<Duration>,
        malformed_grace: Duration,
    ) -> Result<Self> {
        let parent = fsutil::parent_of(path).ok_or_else(|| LockError::NotRegularFile {
            path: path.to_path_buf(),
            kind: "root directory",
        })?;
        let canonical = parent
            .canonicalize()
            .map_err(|_| LockError::MissingParent {
                path: path.to_path_buf(),
                parent: parent.clone(),
            })?;
        let name = path.file_name().unwrap_or_default();
        Ok(SoftClaim {
            path: path.to_path_buf(),
            ctl: ctl_path(path),
            key: Key::Path(canonical.join(name)),
            reentrant,
            lease,
            malformed_grace,
            malformed_since: None,
        })
    }

    pub(crate) fn step(&mut self, waiting_forever: bool) -> Result<Step> {
        if let Some(held) = registry::held_by_current_thread(&self.key) {
            if self.reentrant {
                return Ok(Step::Acquired(LockGuard { inner: held }));
            }
            if waiting_forever {
                return Err(LockError::WouldDeadlock {
                    path: self.path.clone(),
                });
            }
            return Ok(Step::Busy(held.record().cloned()));
        }
        match read_record(&self.path)? {
            None => self.try_claim(),
            Some((Contents::Record(r), st)) => self.judge_holder(r, &st),
            Some((_, st)) => self.judge_malformed(&st),
        }
    }

    fn try_claim(&mut self) -> Result<Step> {
        let previous = read_generation(&self.ctl)?;
        let lease_ms = self
            .lease
            .map(|l| u64::try_from(l.as_millis()).unwrap_or(u64::MAX));
        let pid = crate::sys::current_pid();
        let (mut rec, _) = record::for_current_process(
            pid,
            RecordMode::Soft,
            false,
            record::next_generation(previous),
            lease_ms,
        );
        if !publish(&self.path, &rec)? {
            return Ok(Step::Busy(None));
        }
        // We hold the lock. A holder that came and went between our read of the generation and
        // our publish may have used a higher one: re-read it under the lock and republish if so.
        let current = read_generation(&self.ctl)?;
        if current.is_some_and(|c| c >= rec.generation) {
            rec.generation = record::next_generation(current);
            replace_own_record(&self.path, &rec)?;
        }
        write_generation(&self.ctl, rec.generation)?;
        let heartbeat = self
            .lease
            .map(|lease| Heartbeat::start(self.path.clone(), rec.token.clone(), lease));
        Ok(Step::Acquired(LockGuard::new(
            Held {
                path: std::sync::Arc::from(self.path.as_path()),
                key: self.key.clone(),
                owner_pid: pid,
                generation: rec.generation,
                shared: false,
                record_line: Some(rec.to_line()),
                record: Some(rec).into(),
                backing: Backing::Soft {
                    ctl: self.ctl.clone(),
                    heartbeat,
                },
            },
            pid,
        )))
    }

    fn judge_holder(&mut self, holder: HolderRecord, st: &rustix::fs::Stat) -> Result<Step> {
        self.malformed_since = None;
        let stale = match holder.liveness() {
            Liveness::Dead(_) => true,
            Liveness::Alive => false,
            Liveness::Unknown(_) => lease_expired(&self.path, &holder, st)?,
        };
        if stale {
            break_if(&self.path, &self.ctl, &Expect::Token(holder.token.clone()))?;
            return Ok(Step::Retry);
        }
        Ok(Step::Busy(Some(holder)))
    }

    fn judge_malformed(&mut self, st: &rustix::fs::Stat) -> Result<Step> {
        let ident = (
            fsutil::file_id(st),
            st.st_size as u64,
            fsutil::mtime_nanos(st),
        );
        let since = match self.malformed_since {
            Some((seen, since)) if seen == ident => since,
            _ => {
                let now = Instant::now();
                self.malformed_since = Some((ident, now));
                now
            }
        };
        if since.elapsed() >= self.malformed_grace {
            self.malformed_since = None;
            break_if(&self.path, &self.ctl, &Expect::Inode(ident.0))?;
            return Ok(Step::Retry);
        }
        Ok(Step::Busy(None))
    }
}

/// Reads the record at `path`: `None` if there is none.
pub(crate) fn read_record(path: &Path) -> Result<Option<(Contents, rustix::fs::Stat)>> {
    let Some((fd, st)) = fsutil::open_existing_readonly(path)? else {
        return Ok(None);
    };
    let contents = fsutil::read_contents(path, &fd, st.st_size as u64)?;
    Ok(Some((contents, st)))
}

/// Publishes `rec` at `path` if nothing is there. Returns false if the lock is held.
fn publish(path: &Path, rec: &HolderRecord) -> Result<bool> {
    let tmp = fsutil::sibling(path, ".", &format!(".{}.tmp", rec.token));
    write_private_file(&tmp, &rec.to_line())?;
    let linked = rustix::fs::link(&tmp, path);
    let _ = rustix::fs::unlink(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(Errno::EXIST) => Ok(false),
        // No hard links here (some FUSE and SMB mounts): fall back to an exclusive create.
        Err(Errno::PERM) | Err(Errno::OPNOTSUPP) | Err(Errno::MLINK) | Err(Errno::NOSYS) => {
            let flags =
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            match rustix::fs::open(path, flags, Mode::from_raw_mode(0o644)) {
                Ok(fd) => {
                    let mut file = std::fs::File::from(fd);
                    file.write_all(&rec.to_line())
                        .and_then(|()| file.sync_all())
                        .map_err(|e| LockError::io(path, "write", e))?;
                    Ok(true)
                }
                Err(Errno::EXIST) => Ok(false),
                Err(e) => Err(fsutil::open_error(path, "create", e)),
            }
        }
        Err(e) => Err(fsutil::open_error(path, "link", e)),
    }
}

/// Creates `path` exclusively (never following a symlink), writes `bytes` and fsyncs.
fn write_private_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::open(path, flags, Mode::from_raw_mode(0o644))
        .map_err(|e| fsutil::open_error(path, "create", e))?;
    let mut file = std::fs::File::from(fd);
    let result = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(e) = result {
        let _ = rustix::fs::unlink(path);
        return Err(LockError::io(path, "write", e));
    }
    Ok(())
}

/// Atomically replaces our own record (we hold the lock) via a temp file and rename.
fn replace_own_record(path: &Path, rec: &HolderRecord) -> Result<()> {
    let tmp = fsutil::sibling(path, ".", &format!(".{}.tmp", rec.token));
    write_private_file(&tmp, &rec.to_line())?;
    rustix::fs::rename(&tmp, path).map_err(|e| {
        let _ = rustix::fs::unlink(&tmp);
        LockError::io(path, "rename", e)
    })
}

/// Which record a breaker or releaser expects to find before it unlinks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expect {
    Token(String),
    Inode(FileId),
    /// `--force`: whatever is there.
    Anything,
}

/// Opens the control file and takes its kernel lock (blocking: holders of it only ever do a
/// read and an unlink).
fn lock_ctl(ctl: &Path) -> Result<std::fs::File> {
    let (file, _) = fsutil::open_lock_file(ctl)?;
    loop {
        match flock(&file, FlockOperation::LockExclusive) {
            Ok(()) => return Ok(file),
            Err(Errno::INTR) => continue,
            // No kernel locks at all on this filesystem: proceed without arbitration; the
            // re-verification below still prevents removing a record we did not judge.
            Err(Errno::NOLCK) | Err(Errno::NOSYS) | Err(Errno::OPNOTSUPP) => return Ok(file),
            Err(e) => return Err(LockError::io(ctl, "flock", e)),
        }
    }
}

/// Unlinks the record at `path` if it is still the one expected. Returns the removed record.
pub(crate) fn break_if(path: &Path, ctl: &Path, expect: &Expect) -> Result<Option<Contents>> {
    let _ctl = lock_ctl(ctl)?;
    let Some((contents, st)) = (match read_record(path) {
        Ok(found) => found,
        // A malformed or oversized file is still removable when forced or matched by inode.
        Err(LockError::OversizedRecord { .. }) | Err(LockError::ForeignContent { .. })
            if *expect == Expect::Anything =>
        {
            rustix::fs::unlink(path).map_err(|e| LockError::io(path, "unlink", e))?;
            return Ok(Some(Contents::Malformed));
        }
        Err(e) => return Err(e),
    }) else {
        return Ok(None);
    };
    let matches = match (expect, &contents) {
        (Expect::Anything, _) => true,
        (Expect::Token(t), Contents::Record(r)) => &r.token == t,
        (Expect::Inode(id), Contents::Empty | Contents::Malformed) => fsutil::file_id(&st) == *id,
        _ => false,
    };
    if !matches {
        return Ok(None);
    }
    match rustix::fs::unlink(path) {
        Ok(()) | Err(Errno::NOENT) => Ok(Some(contents)),
        Err(e) => Err(LockError::io(path, "unlink", e)),
    }
}

/// Releases a soft lock: removes the record only if it still carries our token.
pub(crate) fn release(path: &Path, ctl: &Path, token: &str) -> Result<()> {
    break_if(path, ctl, &Expect::Token(token.to_owned())).map(|_| ())
}

/// Whether a foreign holder's lease ran out, by the lock directory's clock.
fn lease_expired(path: &Path, holder: &HolderRecord, st: &rustix::fs::Stat) -> Result<bool> {
    let Some(lease_ms) = holder.lease_ms else {
        return Ok(false);
    };
    let now = directory_now(path)?;
    let touched = fsutil::mtime_nanos(st);
    let age_ms = (now - touched) / 1_000_000;
    Ok(age_ms > i128::from(lease_ms))
}

/// "Now" by the clock of the filesystem that holds `path`: the mtime of a probe file we create
/// and remove. On a network filesystem this is the server's clock, the same clock that stamped
/// the holder's heartbeats, so client clock skew cannot expire a live lease.
pub(crate) fn directory_now(path: &Path) -> Result<i128> {
    let probe = fsutil::sibling(path, ".", &format!(".{}.clock", record::new_token()));
    write_private_file(&probe, b"")?;
    let st = rustix::fs::lstat(&probe);
    let _ = rustix::fs::unlink(&probe);
    let st = st.map_err(|e| LockError::io(&probe, "lstat", e))?;
    Ok(fsutil::mtime_nanos(&st))
}

/// The last fencing generation kept in the control file (`None` if there is none yet).
fn read_generation(ctl: &Path) -> Result<Option<u64>> {
    let Some((fd, st)) = fsutil::open_existing_readonly(ctl)? else {
        return Ok(None);
    };
    if st.st_size == 0 || st.st_size > 64 {
        return Ok(None);
    }
    let mut buf = [0u8; 64];
    let n = rustix::io::pread(&fd, &mut buf, 0).map_err(|e| LockError::io(ctl, "read", e))?;
    Ok(std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|s| s.trim().parse().ok()))
}

/// Stores the generation as fixed-width decimal, so an overwrite never leaves a longer tail.
fn write_generation(ctl: &Path, generation: u64) -> Result<()> {
    let (file, _) = fsutil::open_lock_file(ctl)?;
    let line = format!("{generation:020}\n");
    fsutil::write_at_start(ctl, file.as_fd(), line.as_bytes())
}

/// Refreshes a leased record's mtime every third of the lease while it is still ours.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeat {
    fn start(path: PathBuf, token: String, lease: Duration) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let period = (lease / 3).max(Duration::from_millis(10));
        let thread = std::thread::Builder::new()
            .name("racefree-lock-lease".to_owned())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                    if !touch_if_ours(&path, &token) {
                        break;
                    }
                }
            })
            .ok();
        Heartbeat {
            stop: Some(stop),
            thread,
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn touch_if_ours(path: &Path, token: &str) -> bool {
    let Ok(Some((fd, st))) = fsutil::open_existing_readonly(path) else {
        return false;
    };
    match fsutil::read_contents(path, &fd, st.st_size as u64) {
        Ok(Contents::Record(r)) if r.token == token => {}
        _ => return false,
    }
    let now = Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
    };
    rustix::fs::futimens(&fd, &now).is_ok()
}
