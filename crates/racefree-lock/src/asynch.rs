//! `acquire_async`: the same protocol as [`LockOptions::acquire`], without blocking an executor
//! thread.
//!
//! Kernel-mode attempts are non-blocking syscalls on a local filesystem and run inline. Soft-mode
//! attempts may fsync over a network, so they run on tokio's blocking pool; if the future is
//! dropped meanwhile, the attempt's result (possibly a fresh guard) is dropped with the task, so
//! no claim outlives the future. Between attempts the task sleeps, or on Linux waits on a pidfd of
//! a same-host holder so that it wakes the moment that holder dies.

use std::os::fd::OwnedFd;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::error::{LockError, Result};
use crate::guard::LockGuard;
use crate::identity::Liveness;
use crate::kernel::Step;
use crate::options::{Attempt, LockOptions};
use crate::record::HolderRecord;
use crate::sys;
use crate::wait::{Backoff, Deadline, MAX_PAUSE};

impl LockOptions {
    /// Acquires the lock asynchronously, waiting as the timeout allows. Needs a tokio runtime
    /// with the time and I/O drivers enabled.
    pub async fn acquire_async(&self) -> Result<LockGuard> {
        let mut attempt = Some(self.start_attempt(false)?);
        let deadline = Deadline::after(self.timeout);
        let mut backoff = Backoff::new(MAX_PAUSE);
        let mut watch: Option<(String, Option<AsyncFd<OwnedFd>>)> = None;
        loop {
            let Some(mut current) = attempt.take() else {
                return Err(LockError::Cancelled {
                    path: self.path.to_path_buf(),
                });
            };
            let (back, step) = match current {
                Attempt::Kernel(_) => {
                    let step = current.step();
                    (current, step)
                }
                Attempt::Soft(..) => tokio::task::spawn_blocking(move || {
                    let step = current.step();
                    (current, step)
                })
                .await
                .map_err(|e| {
                    LockError::io(&self.path, "blocking task", std::io::Error::other(e))
                })?,
            };
            attempt = Some(back);
            let holder = match step? {
                Step::Acquired(guard) => return Ok(guard),
                Step::Retry => continue,
                Step::Busy(holder) => holder,
            };
            self.keep_waiting(holder.as_ref(), &deadline)?;
            follow(&mut watch, holder.as_ref());
            let pause = deadline.clamp(backoff.next_pause());
            match watch.as_ref().and_then(|(_, fd)| fd.as_ref()) {
                Some(fd) => {
                    let _ = tokio::time::timeout(pause, fd.readable()).await;
                }
                None => tokio::time::sleep(pause).await,
            }
        }
    }
}

fn follow(watch: &mut Option<(String, Option<AsyncFd<OwnedFd>>)>, holder: Option<&HolderRecord>) {
    let Some(holder) = holder else {
        *watch = None;
        return;
    };
    if watch.as_ref().is_some_and(|(t, _)| *t == holder.token) {
        return;
    }
    let fd = (holder.liveness() == Liveness::Alive)
        .then(|| sys::process_watch(holder.pid))
        .flatten()
        .and_then(|fd| {
            // SAFETY: `OwnedFd` owns the pidfd, keeps it open for as long as the `AsyncFd` owns
            // it, and always returns that same descriptor from `as_raw_fd`.
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.ok()
        });
    *watch = Some((holder.token.clone(), fd));
}
