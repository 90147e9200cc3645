//! Waiting between attempts: jittered exponential backoff against one monotonic deadline, woken
//! early when a same-host holder dies (pidfd on Linux).

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use crate::identity::Liveness;
use crate::record::HolderRecord;
use crate::sys;

/// The first pause after a failed attempt.
const FIRST_PAUSE: Duration = Duration::from_micros(50);
/// The longest pause between attempts while the holder is alive and releases normally.
pub(crate) const MAX_PAUSE: Duration = Duration::from_millis(20);

/// Jittered exponential backoff: each pause is drawn from [d/2, d], with d doubling up to a cap.
/// Jitter keeps competing waiters from retrying in lock step.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
    cap: Duration,
    rng: u64,
}

impl Backoff {
    /// Free to create: the jitter source is seeded on the first pause, so an uncontended
    /// acquisition never pays for it.
    pub(crate) fn new(cap: Duration) -> Self {
        Backoff {
            next: FIRST_PAUSE,
            cap,
            rng: 0,
        }
    }

    pub(crate) fn next_pause(&mut self) -> Duration {
        if self.rng == 0 {
            let mut seed = [0u8; 8];
            let _ = getrandom::fill(&mut seed);
            self.rng = u64::from_le_bytes(seed) | 1;
        }
        // xorshift64: plenty for jitter.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let d = self.next;
        self.next = (self.next * 2).min(self.cap);
        let half = d / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
        half + Duration::from_nanos(self.rng % nanos)
    }
}

/// A monotonic deadline; `None` waits forever.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    start: Instant,
    end: Option<Instant>,
}

impl Deadline {
    pub(crate) fn after(timeout: Option<Duration>) -> Self {
        let start = Instant::now();
        Deadline {
            start,
            end: timeout.and_then(|t| start.checked_add(t)),
        }
    }

    pub(crate) fn remaining(&self) -> Option<Duration> {
        self.end
            .map(|e| e.saturating_duration_since(Instant::now()))
    }

    pub(crate) fn expired(&self) -> bool {
        self.remaining().is_some_and(|r| r.is_zero())
    }

    pub(crate) fn waited(&self) -> Duration {
        self.start.elapsed()
    }

    pub(crate) fn clamp(&self, pause: Duration) -> Duration {
        match self.remaining() {
            Some(r) => pause.min(r),
            None => pause,
        }
    }
}

/// Watches the current holder so the waiter wakes the moment it dies. Reused while the same
/// holder (by token) stays in place.
#[derive(Default)]
pub(crate) struct HolderWatch {
    token: Option<String>,
    fd: Option<OwnedFd>,
}

impl HolderWatch {
    /// Points the watch at `holder` if it is a live process on this host.
    pub(crate) fn follow(&mut self, holder: Option<&HolderRecord>) {
        let Some(holder) = holder else {
            self.token = None;
            self.fd = None;
            return;
        };
        if self.token.as_deref() == Some(holder.token.as_str()) {
            return;
        }
        self.token = Some(holder.token.clone());
        self.fd = None;
        // Only open a pidfd once the pid is proved to be the holder (same host, same start
        // time); otherwise it might watch an unrelated process that reused the pid.
        if holder.liveness() == Liveness::Alive {
            self.fd = sys::process_watch(holder.pid);
        }
    }

    /// Sleeps for `pause`, or less if the holder dies first.
    pub(crate) fn pause(&self, pause: Duration) {
        match &self.fd {
            Some(fd) => {
                sys::wait_process_exit(fd, pause);
            }
            None => std::thread::sleep(pause),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_cap_with_jitter() {
        let cap = Duration::from_millis(4);
        let mut b = Backoff::new(cap);
        let pauses: Vec<_> = (0..20).map(|_| b.next_pause()).collect();
        assert!(pauses[0] <= FIRST_PAUSE);
        assert!(pauses.iter().all(|p| *p <= cap));
        assert!(pauses[19] >= cap / 2);
    }

    #[test]
    fn deadline_clamps() {
        let d = Deadline::after(Some(Duration::from_millis(10)));
        assert!(d.clamp(Duration::from_secs(5)) <= Duration::from_millis(10));
        let forever = Deadline::after(None);
        assert!(!forever.expired());
        assert_eq!(
            forever.clamp(Duration::from_secs(5)),
            Duration::from_secs(5)
        );
    }
}
