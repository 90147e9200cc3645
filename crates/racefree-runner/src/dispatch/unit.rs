//! The dispatcher's view of units: a `Job` is a pytest process to start (planned, or
//! re-queued by the recovery rules), `Running` what is known of one while it runs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::events::PhaseReport;
use crate::executor::UnitHandle;
use crate::plan::{Chunk, UnitPlan};
use crate::procs;
use crate::unix;

/// Why a unit runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reason {
    Planned,
    /// The tests a crashed or timed-out process never reached.
    Resume,
    /// A failed test, again.
    Retry,
    /// The same unit again after pytest exited 3 or 4 before reporting any test.
    Infra,
}

impl Reason {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Reason::Planned => "planned",
            Reason::Resume => "resume",
            Reason::Retry => "retry",
            Reason::Infra => "infra_retry",
        }
    }
}

/// One pytest process to start: a planned unit, or work the recovery rules re-queued.
#[derive(Debug, Clone)]
pub(super) struct Job {
    pub(super) id: usize,
    pub(super) files: Vec<usize>,
    /// rootdir-relative file -> node ids; `None` means each file's own selection.
    pub(super) selection: Option<BTreeMap<String, Vec<String>>>,
    pub(super) attempt: u32,
    pub(super) predicted: f64,
    pub(super) reason: Reason,
    pub(super) not_before: Option<Instant>,
    /// Infrastructure retries already made for this unit.
    pub(super) infra_retries: u32,
    /// The part of a split file this unit runs (its only file); used when `selection` is
    /// None.
    pub(super) chunk: Option<Chunk>,
}

impl Job {
    pub(super) fn planned(plan: UnitPlan) -> Job {
        Job {
            id: plan.id,
            files: plan.files,
            selection: None,
            attempt: 1,
            predicted: plan.predicted,
            reason: Reason::Planned,
            not_before: None,
            infra_retries: 0,
            chunk: plan.chunk,
        }
    }

    pub(super) fn ready(&self, now: Instant) -> bool {
        self.not_before.is_none_or(|t| t <= now)
    }
}

pub(super) struct Running {
    pub(super) job: Job,
    pub(super) slot: usize,
    pub(super) handle: UnitHandle,
    pub(super) tag: procs::UnitTag,
    pub(super) collected: Option<Vec<String>>,
    pub(super) phases: HashMap<String, Vec<PhaseReport>>,
    pub(super) failed_subtests: HashMap<String, Vec<PhaseReport>>,
    /// Per test, its current attempt's subtest reports by category.
    pub(super) subtest_counts: HashMap<String, std::collections::BTreeMap<String, u64>>,
    pub(super) started_at: HashMap<String, Instant>,
    pub(super) finished: HashSet<String>,
    pub(super) current: Option<String>,
    /// The running test's limit in seconds, if any.
    pub(super) current_limit: Option<f64>,
    /// Set when the running test's time ran out (its limit).
    pub(super) timed_out: Option<f64>,
    /// After SIGTERM: when SIGKILL follows.
    pub(super) kill_at: Option<Instant>,
    /// Processes outside the unit's group found when it was stopped (reported as leaks).
    pub(super) escaped: Vec<procs::Found>,
    /// Pids of the leaks the unit's init reported on the event pipe.
    pub(super) leaks_reported: HashSet<u32>,
    pub(super) pytest_exitstatus: Option<i32>,
    pub(super) cancelled: bool,
    pub(super) started: Instant,
    pub(super) bad_lines: Vec<String>,
    /// It reported a collection error or a module-level skip (so it is not an
    /// infrastructure failure, and running it again would report them twice).
    pub(super) reported_collect: bool,
    /// One of those was a collection error (a test module or conftest file that failed to
    /// import).
    pub(super) collect_failed: bool,
    /// Its session ended by `pytest.exit()`: a test it stopped in the middle has not
    /// crashed, and one that already reported its call keeps that result.
    pub(super) exited_by_request: bool,
}

impl Running {
    /// The unit's `UnitFinished` event, ending at `at`.
    pub(super) fn finished_event(
        &self,
        exit: crate::events::ExitInfo,
        at: Instant,
        unreported: usize,
        error: Option<String>,
        cancelled: bool,
    ) -> crate::events::Event {
        crate::events::Event::UnitFinished {
            unit: self.job.id,
            slot: self.slot,
            exit,
            pytest_exitstatus: self.pytest_exitstatus,
            duration: at.duration_since(self.started).as_secs_f64(),
            unreported,
            error,
            cancelled,
        }
    }
}

impl Running {
    pub(super) fn new(job: Job, slot: usize, handle: UnitHandle, token: String) -> Running {
        let tag = procs::UnitTag::new(token, handle.pid);
        Running {
            job,
            slot,
            handle,
            tag,
            collected: None,
            phases: HashMap::new(),
            failed_subtests: HashMap::new(),
            subtest_counts: HashMap::new(),
            started_at: HashMap::new(),
            finished: HashSet::new(),
            current: None,
            current_limit: None,
            timed_out: None,
            kill_at: None,
            escaped: Vec::new(),
            leaks_reported: HashSet::new(),
            pytest_exitstatus: None,
            cancelled: false,
            started: Instant::now(),
            bad_lines: Vec::new(),
            reported_collect: false,
            collect_failed: false,
            exited_by_request: false,
        }
    }

    /// Signals the unit's group and (Linux) every process carrying its token.
    pub(super) fn signal(&self, sig: unix::Sig) -> Vec<procs::Found> {
        self.handle.signal(sig);
        procs::signal_tagged(&self.tag, sig, self.handle.pid)
    }

    /// SIGTERM now, SIGKILL after the grace period (see `on_tick`). Processes that had left
    /// the unit's process group (setsid daemons of earlier tests) are remembered: they are
    /// leaks even though stopping the unit kills them.
    pub(super) fn terminate(&mut self, grace: Duration) {
        if self.kill_at.is_none() {
            let pgid = self.handle.pid;
            self.escaped = self
                .signal(unix::Sig::TERM)
                .into_iter()
                .filter(|p| p.pgid != Some(pgid))
                .collect();
            self.kill_at = Some(Instant::now() + grace);
        }
    }
}
