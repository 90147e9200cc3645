//! What to do when a unit or a test goes wrong: which unreported tests resume in a fresh
//! process, when a test's time is up, whether a failed test earns another attempt, and
//! whether a pytest process that died before running anything is an infrastructure failure
//! worth retrying. Pure decisions, so they are tested as tables; the dispatcher acts on them.

use std::collections::HashSet;
use std::time::Duration;

use crate::events::Outcome;

/// How the run treats faults (`--timeout`, `--retries`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct FaultPolicy {
    /// Default per-test limit in seconds; a `timeout` marker overrides it.
    pub timeout: Option<f64>,
    /// Between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// The whole run's limit.
    pub run_timeout: Option<Duration>,
    /// Extra attempts for a failed test.
    pub retries: u32,
    /// Whether a test that passed only on a retry fails the run.
    pub flaky_fails: bool,
    /// Extra attempts for a unit whose pytest exited 3 or 4 before reporting any test.
    pub infra_retries: u32,
    /// pytest-rerunfailures's `--fail-on-flaky` is on: a unit whose tests passed only on a
    /// rerun exits 7, which is its tests' result, not a failure of the unit.
    pub units_exit_7_on_flaky: bool,
}

impl Default for FaultPolicy {
    fn default() -> Self {
        FaultPolicy {
            timeout: None,
            kill_grace: Duration::from_secs(2),
            run_timeout: None,
            retries: 0,
            flaky_fails: false,
            infra_retries: 2,
            units_exit_7_on_flaky: false,
        }
    }
}

/// What becomes of a unit's collected tests once its process is gone.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reconciled {
    /// The test that was running when the process ended (crashed or timed out).
    pub culprit: Option<String>,
    /// Tests to run again in a fresh process, in collection order.
    pub resume: Vec<String>,
    /// Tests that will not run (the run is stopping, or the process made no progress).
    pub not_run: Vec<String>,
}

/// Splits a dead unit's unreported tests. `current` is the test that had started and not
/// finished. Resuming needs progress (a test finished or a culprit was found): a process that
/// dies again before running anything would otherwise be restarted forever. With progress,
/// every resumption runs strictly fewer tests, so the chain ends.
pub fn reconcile(
    collected: &[String],
    finished: &HashSet<String>,
    current: Option<&str>,
    stopping: bool,
) -> Reconciled {
    let mut out = Reconciled::default();
    let unreported: Vec<&String> = collected
        .iter()
        .filter(|id| !finished.contains(*id))
        .collect();
    let culprit = current.filter(|c| unreported.iter().any(|id| id.as_str() == *c));
    let progressed = culprit.is_some() || unreported.len() < collected.len();
    for id in unreported {
        if Some(id.as_str()) == culprit {
            if stopping {
                out.not_run.push(id.clone());
            } else {
                out.culprit = Some(id.clone());
            }
        } else if stopping || !progressed {
            out.not_run.push(id.clone());
        } else {
            out.resume.push(id.clone());
        }
    }
    out
}

/// Whether a test's time is up.
pub fn timed_out(elapsed: Duration, limit: Option<f64>) -> bool {
    match limit {
        Some(secs) if secs > 0.0 => elapsed.as_secs_f64() > secs,
        _ => false,
    }
}

/// The limit of one test: its marker wins over the run's default; 0 means none.
pub fn effective_timeout(marker: Option<f64>, default: Option<f64>) -> Option<f64> {
    marker.or(default).filter(|s| *s > 0.0)
}

/// Whether a test that ended with `outcome` on attempt `attempt` (1-based) is tried again.
pub fn should_retry(outcome: Outcome, teardown_error: bool, attempt: u32, retries: u32) -> bool {
    (outcome.is_failure() || teardown_error) && attempt <= retries
}

/// The pause before retry number `k` (1-based): 0.1 s doubling, capped at 5 s.
pub fn retry_delay(k: u32) -> Duration {
    let ms = 100u64.saturating_mul(1u64 << k.saturating_sub(1).min(16));
    Duration::from_millis(ms.min(5_000))
}

/// The pause before infrastructure retry number `k` (1-based): 0.5 s doubling, capped at 10 s.
pub fn infra_delay(k: u32) -> Duration {
    let ms = 500u64.saturating_mul(1u64 << k.saturating_sub(1).min(16));
    Duration::from_millis(ms.min(10_000))
}

/// What to do with a unit whose pytest process ended with `code` having reported nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Infra {
    /// Not an infrastructure failure: report it as it is.
    NotInfra,
    /// Every file is still there: start the unit again after the delay (retry number k).
    Retry { k: u32, delay: Duration },
    /// A file is really gone: fail now, naming it.
    FilesGone(Vec<String>),
    /// Retried as often as allowed: report it as it is.
    GiveUp,
}

/// pytest exits 3 (internal error) and 4 (usage error, e.g. "file not found") are what a
/// flaky environment produces before any test runs. `missing` lists the unit's files that
/// were absent on both checks; `done` counts the infrastructure retries already made.
pub fn infra_decision(
    code: Option<i32>,
    reported_any: bool,
    missing: Vec<String>,
    done: u32,
    max: u32,
) -> Infra {
    if reported_any || !matches!(code, Some(3) | Some(4)) {
        return Infra::NotInfra;
    }
    if !missing.is_empty() {
        return Infra::FilesGone(missing);
    }
    if done >= max {
        return Infra::GiveUp;
    }
    Infra::Retry {
        k: done + 1,
        delay: infra_delay(done + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("t.py::test_{i}")).collect()
    }

    #[test]
    fn crash_in_the_middle_resumes_the_rest() {
        let c = ids(4);
        let finished: HashSet<String> = [c[0].clone()].into();
        let r = reconcile(&c, &finished, Some(&c[1]), false);
        assert_eq!(r.culprit.as_deref(), Some(c[1].as_str()));
        assert_eq!(r.resume, vec![c[2].clone(), c[3].clone()]);
        assert!(r.not_run.is_empty());
    }

    #[test]
    fn no_progress_does_not_loop() {
        let c = ids(3);
        let r = reconcile(&c, &HashSet::new(), None, false);
        assert_eq!(r.not_run, c);
        assert!(r.resume.is_empty() && r.culprit.is_none());
    }

    #[test]
    fn death_between_tests_resumes_after_progress() {
        let c = ids(3);
        let finished: HashSet<String> = [c[0].clone()].into();
        let r = reconcile(&c, &finished, None, false);
        assert_eq!(r.resume, vec![c[1].clone(), c[2].clone()]);
    }

    #[test]
    fn stopping_runs_nothing_more() {
        let c = ids(3);
        let r = reconcile(&c, &HashSet::new(), Some(&c[0]), true);
        assert_eq!(r.not_run, c);
        assert!(r.culprit.is_none() && r.resume.is_empty());
    }

    #[test]
    fn retry_table() {
        assert!(should_retry(Outcome::Failed, false, 1, 1));
        assert!(!should_retry(Outcome::Failed, false, 2, 1));
        assert!(should_retry(Outcome::Crashed, false, 1, 2));
        assert!(should_retry(Outcome::Passed, true, 1, 1));
        assert!(!should_retry(Outcome::Passed, false, 1, 3));
        assert!(!should_retry(Outcome::Skipped, false, 1, 3));
        assert!(!should_retry(Outcome::Failed, false, 1, 0));
        assert_eq!(retry_delay(1), Duration::from_millis(100));
        assert_eq!(retry_delay(3), Duration::from_millis(400));
        assert_eq!(retry_delay(40), Duration::from_secs(5));
    }

    #[test]
    fn timeouts() {
        assert_eq!(effective_timeout(Some(5.0), Some(2.0)), Some(5.0));
        assert_eq!(effective_timeout(None, Some(2.0)), Some(2.0));
        assert_eq!(effective_timeout(Some(0.0), Some(2.0)), None);
        assert!(timed_out(Duration::from_secs(3), Some(2.0)));
        assert!(!timed_out(Duration::from_secs(1), Some(2.0)));
        assert!(!timed_out(Duration::from_secs(100), None));
    }

    #[test]
    fn infra_table() {
        let none = Vec::new;
        assert_eq!(
            infra_decision(Some(1), false, none(), 0, 2),
            Infra::NotInfra
        );
        assert_eq!(infra_decision(Some(4), true, none(), 0, 2), Infra::NotInfra);
        assert_eq!(
            infra_decision(Some(4), false, none(), 0, 2),
            Infra::Retry {
                k: 1,
                delay: Duration::from_millis(500)
            }
        );
        assert_eq!(
            infra_decision(Some(3), false, none(), 1, 2),
            Infra::Retry {
                k: 2,
                delay: Duration::from_secs(1)
            }
        );
        assert_eq!(infra_decision(Some(4), false, none(), 2, 2), Infra::GiveUp);
        assert_eq!(
            infra_decision(Some(4), false, vec!["a.py".into()], 0, 2),
            Infra::FilesGone(vec!["a.py".into()])
        );
        assert_eq!(infra_decision(None, false, none(), 0, 2), Infra::NotInfra);
    }

    proptest! {
        /// Every unreported test lands in exactly one place, order is kept, and resuming
        /// always runs fewer tests than the unit had (so resumption terminates).
        #[test]
        fn reconcile_partitions(n in 0usize..12, done in proptest::collection::vec(any::<bool>(), 12),
                                cur in proptest::option::of(0usize..12), stopping in any::<bool>()) {
            let c = ids(n);
            let finished: HashSet<String> = c.iter().zip(&done).filter(|(_, d)| **d).map(|(i, _)| i.clone()).collect();
            let current = cur.filter(|&i| i < n).map(|i| c[i].clone());
            let r = reconcile(&c, &finished, current.as_deref(), stopping);
            let mut all: Vec<String> = r.resume.iter().chain(&r.not_run).cloned().collect();
            all.extend(r.culprit.clone());
            let unreported: Vec<String> = c.iter().filter(|i| !finished.contains(*i)).cloned().collect();
            prop_assert_eq!(all.len(), unreported.len());
            for id in &unreported { prop_assert!(all.contains(id)); }
            prop_assert!(r.resume.len() < n.max(1));
            if stopping { prop_assert!(r.resume.is_empty() && r.culprit.is_none()); }
            let order: Vec<&String> = c.iter().filter(|i| r.resume.contains(i)).collect();
            prop_assert_eq!(order, r.resume.iter().collect::<Vec<_>>());
        }
    }
}
