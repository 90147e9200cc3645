//! The dispatcher: owns the run's state. It hands each free worker slot the longest
//! predicted remaining unit, turns executor messages into events, reconciles each unit's
//! reported tests with how its process ended, and stops the run on `-x`/`--maxfail`.
//!
//! Faults: `on_tick` runs every `TICK` and enforces per-test timeouts; `finish_unit` kills
//! what a unit left behind and, by the rules in `recovery`, resumes the tests a dead
//! process never reached and retries failed tests and infrastructure failures.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, unbounded};

use crate::discovery::TestFile;
use crate::error::{Result, exit};
use crate::events::{
    Event, ExitInfo, Outcome, PhaseReport, Rerun, TestResult, Totals, Wire, derive_outcome,
};
use crate::executor::{self, ExecContext, ExecMsg, UnitHandle, UnitSpec};
use crate::plan::UnitPlan;
use crate::procs;
use crate::recovery::{self, FaultPolicy};
use crate::session::Session;
use crate::unix;

const TICK: Duration = Duration::from_millis(200);

/// A consumer of the event stream.
pub trait Reporter {
    fn on_event(&mut self, event: &Event);
    /// Called once after the last event; writes files and reports their errors.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Fans every event out to every consumer, in order.
pub struct Bus {
    reporters: Vec<Box<dyn Reporter>>,
}

impl Bus {
    pub fn new(reporters: Vec<Box<dyn Reporter>>) -> Bus {
        Bus { reporters }
    }
    pub fn emit(&mut self, event: Event) {
        for r in &mut self.reporters {
            r.on_event(&event);
        }
    }
    pub fn finish(&mut self) -> Vec<crate::error::Error> {
        self.reporters
            .iter_mut()
            .filter_map(|r| r.finish().err())
            .collect()
    }
}

/// Why a unit runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Planned,
    /// The tests a crashed or timed-out process never reached.
    Resume,
    /// A failed test, again.
    Retry,
    /// The same unit again after pytest exited 3 or 4 before reporting any test.
    Infra,
}

impl Reason {
    fn as_str(self) -> &'static str {
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
struct Job {
    id: usize,
    files: Vec<usize>,
    /// rootdir-relative file -> node ids; `None` means each file's own selection.
    selection: Option<BTreeMap<String, Vec<String>>>,
    attempt: u32,
    predicted: f64,
    reason: Reason,
    not_before: Option<Instant>,
    /// Infrastructure retries already made for this unit.
    infra_retries: u32,
}

impl Job {
    fn planned(plan: UnitPlan) -> Job {
        Job {
            id: plan.id,
            files: plan.files,
            selection: None,
            attempt: 1,
            predicted: plan.predicted,
            reason: Reason::Planned,
            not_before: None,
            infra_retries: 0,
        }
    }

    fn ready(&self, now: Instant) -> bool {
        self.not_before.is_none_or(|t| t <= now)
    }
}

struct Running {
    job: Job,
    slot: usize,
    handle: UnitHandle,
    token: String,
    collected: Option<Vec<String>>,
    phases: HashMap<String, Vec<PhaseReport>>,
    failed_subtests: HashMap<String, Vec<PhaseReport>>,
    started_at: HashMap<String, Instant>,
    finished: HashSet<String>,
    current: Option<String>,
    /// The running test's limit in seconds, if any.
    current_limit: Option<f64>,
    /// Set when the running test's time ran out (its limit).
    timed_out: Option<f64>,
    /// After SIGTERM: when SIGKILL follows.
    kill_at: Option<Instant>,
    pytest_exitstatus: Option<i32>,
    cancelled: bool,
    started: Instant,
    bad_lines: Vec<String>,
    /// It reported a collection error or a module-level skip (so it is not an
    /// infrastructure failure, and running it again would report them twice).
    reported_collect: bool,
}

impl Running {
    fn new(job: Job, slot: usize, handle: UnitHandle, token: String) -> Running {
        Running {
            job,
            slot,
            handle,
            token,
            collected: None,
            phases: HashMap::new(),
            failed_subtests: HashMap::new(),
            started_at: HashMap::new(),
            finished: HashSet::new(),
            current: None,
            current_limit: None,
            timed_out: None,
            kill_at: None,
            pytest_exitstatus: None,
            cancelled: false,
            started: Instant::now(),
            bad_lines: Vec::new(),
            reported_collect: false,
        }
    }

    /// Signals the unit's group and (Linux) every process carrying its token.
    fn signal(&self, sig: unix::Sig) {
        self.handle.signal(sig);
        procs::signal_tagged(&self.token, sig);
    }

    /// SIGTERM now, SIGKILL after the grace period (see `on_tick`).
    fn terminate(&mut self, grace: Duration) {
        if self.kill_at.is_none() {
            self.signal(unix::Sig::TERM);
            self.kill_at = Some(Instant::now() + grace);
        }
    }
}

/// What the run ended with.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub exit_code: u8,
    pub totals: Totals,
}

pub struct Dispatcher<'a> {
    pub ctx: &'a ExecContext,
    pub session: &'a Session,
    pub files: &'a [TestFile],
    pub maxfail: Option<u32>,
    pub bus: &'a mut Bus,
    pub policy: &'a FaultPolicy,
    /// How many times SIGINT/SIGTERM reached racefree (the CLI's handler counts them): the
    /// first stops the run gracefully, the second kills at once.
    pub interrupts: Option<Arc<AtomicUsize>>,
}

#[derive(Default)]
struct State {
    totals: Totals,
    collect_errors: u64,
    failures_seen: u32,
    stop_reason: Option<String>,
    /// What tests that will not run now are told.
    not_run_message: String,
    /// Stopped by a signal or --run-timeout: exit 2.
    interrupted: bool,
    killed_hard: bool,
    /// Tests that were collected and then never reported by a unit nobody cancelled.
    lost: u64,
    unit_error_codes: Vec<Option<i32>>,
    reported_any: bool,
    queue: VecDeque<Job>,
    next_id: usize,
    /// Failed attempts of tests that are being tried again.
    reruns: HashMap<String, Vec<TestResult>>,
    /// The attempt number of a test's next run (absent: 1).
    attempts: HashMap<String, u32>,
}

impl State {
    fn stop(&mut self, reason: String, not_run: &str) {
        if self.stop_reason.is_none() {
            self.stop_reason = Some(reason);
            self.not_run_message = not_run.to_string();
        }
    }
}

impl Dispatcher<'_> {
    pub fn run(&mut self, units: Vec<UnitPlan>, started: Instant) -> RunOutcome {
        // Orphans of units (setsid daemons) become ours, so they can be found and reaped.
        procs::become_subreaper();
        let (tx, rx) = unbounded::<ExecMsg>();
        let mut st = State {
            next_id: units.iter().map(|u| u.id + 1).max().unwrap_or(0),
            queue: units.into_iter().map(Job::planned).collect(),
            ..State::default()
        };
        let mut free: BTreeSet<usize> = (0..self.ctx.workers).collect();
        let mut running: HashMap<usize, Running> = HashMap::new();
        let mut last_tick = Instant::now();
        loop {
            self.check_stop(&mut running, &mut st, started);
            while st.stop_reason.is_none() && !free.is_empty() {
                let now = Instant::now();
                let Some(pos) = st.queue.iter().position(|j| j.ready(now)) else {
                    break;
                };
                let (Some(slot), Some(job)) = (free.pop_first(), st.queue.remove(pos)) else {
                    break;
                };
                match self.start(&job, slot, &tx) {
                    Ok((handle, token)) => {
                        running.insert(job.id, Running::new(job, slot, handle, token));
                    }
                    Err(e) => {
                        free.insert(slot);
                        st.unit_error_codes.push(Some(exit::INTERNAL as i32));
                        self.bus.emit(Event::UnitFinished {
                            unit: job.id,
                            slot,
                            exit: ExitInfo::default(),
                            pytest_exitstatus: None,
                            duration: 0.0,
                            unreported: 0,
                            error: Some(e.to_string()),
                            cancelled: false,
                        });
                    }
                }
            }
            if running.is_empty() && (st.queue.is_empty() || st.stop_reason.is_some()) {
                break;
            }
            let now = Instant::now();
            let wait = st
                .queue
                .iter()
                .filter_map(|j| j.not_before)
                .map(|t| t.saturating_duration_since(now))
                .fold(TICK, Duration::min);
            match rx.recv_timeout(wait) {
                Ok(msg) => {
                    if let Some((unit, slot)) = self.handle(msg, &mut running, &mut st) {
                        running.remove(&unit);
                        free.insert(slot);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            // Ticks come from the clock, not from quiet: a chatty unit must not starve the
            // timeouts of the others.
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                self.on_tick(&mut running, &mut st);
            }
            if st.stop_reason.is_some() {
                for r in running.values_mut().filter(|r| !r.cancelled) {
                    r.cancelled = true;
                    r.terminate(self.policy.kill_grace);
                }
            }
        }
        // Resumptions that never started: their tests were collected, so they are listed.
        let resumes: Vec<Job> = st
            .queue
            .iter()
            .filter(|j| j.reason == Reason::Resume)
            .cloned()
            .collect();
        for job in resumes {
            for id in job.selection.iter().flat_map(|s| s.values().flatten()) {
                let mut result = build_result(id, job.id, 0, &[], 0.0);
                result.attempt = Self::attempt_of(&st, id);
                result.outcome = Outcome::NotRun;
                result.message = st.not_run_message.clone();
                self.conclude(result, &mut st);
            }
        }
        // Tests whose retry never started (the run stopped) end with their last attempt.
        let pending: Vec<String> = st.reruns.keys().cloned().collect();
        for id in pending {
            if let Some(last) = st.reruns.get_mut(&id).and_then(Vec::pop) {
                self.conclude(last, &mut st);
            }
        }
        let not_started: Vec<String> = st
            .queue
            .iter()
            .filter(|j| matches!(j.reason, Reason::Planned | Reason::Infra))
            .flat_map(|j| j.files.iter().map(|&i| self.files[i].rel.clone()))
            .collect();
        let interrupted = st.stop_reason.clone().map(|reason| {
            if !not_started.is_empty() {
                format!("{reason}; {} file(s) not started", not_started.len())
            } else {
                reason
            }
        });
        let exit_code = exit_code(&st, self.policy.flaky_fails);
        self.bus.emit(Event::RunFinished {
            totals: st.totals.clone(),
            collect_errors: st.collect_errors,
            exit_code,
            duration: started.elapsed().as_secs_f64(),
            interrupted,
            not_started,
            not_run_message: st.not_run_message.clone(),
        });
        RunOutcome {
            exit_code,
            totals: st.totals,
        }
    }

    /// Ctrl-C, SIGTERM and --run-timeout.
    fn check_stop(
        &mut self,
        running: &mut HashMap<usize, Running>,
        st: &mut State,
        started: Instant,
    ) {
        let signals = self
            .interrupts
            .as_ref()
            .map(|c| c.load(Ordering::SeqCst))
            .unwrap_or(0);
        if signals >= 1 && !st.interrupted {
            st.interrupted = true;
            st.stop("interrupted".into(), "not run: interrupted");
        }
        if signals >= 2 && !st.killed_hard {
            st.killed_hard = true;
            for r in running.values_mut() {
                r.cancelled = true;
                r.signal(unix::Sig::KILL);
            }
        }
        if let Some(limit) = self.policy.run_timeout
            && started.elapsed() > limit
            && st.stop_reason.is_none()
        {
            st.interrupted = true;
            let secs = limit.as_secs_f64();
            st.stop(
                format!("run timeout after {secs} s (--run-timeout)"),
                &format!("not run: the run timed out after {secs} s (--run-timeout)"),
            );
        }
    }

    fn start(
        &mut self,
        job: &Job,
        slot: usize,
        tx: &crossbeam_channel::Sender<ExecMsg>,
    ) -> Result<(UnitHandle, String)> {
        let mut selection = BTreeMap::new();
        let mut walked = BTreeMap::new();
        let mut paths = Vec::new();
        for &i in &job.files {
            let f = &self.files[i];
            paths.push(f.path.clone());
            if let Some(root) = &f.walk_root {
                walked.insert(f.path.clone(), root.clone());
            }
            if job.selection.is_none()
                && let Some(ids) = &f.selection
            {
                selection.insert(f.rel.clone(), ids.clone());
            }
        }
        if let Some(sel) = &job.selection {
            selection = sel.clone();
        }
        let token = crate::session::random_id()?;
        let spec = UnitSpec {
            unit: job.id,
            slot,
            attempt: job.attempt,
            files: paths,
            selection,
            walked,
            token: token.clone(),
        };
        let handle = executor::spawn(self.ctx, self.session, &spec, tx.clone())?;
        self.bus.emit(Event::UnitStarted {
            unit: job.id,
            slot,
            pid: handle.pid,
            attempt: job.attempt,
            reason: job.reason.as_str(),
            files: job
                .files
                .iter()
                .map(|&i| self.files[i].rel.clone())
                .collect(),
            estimated_tests: match &job.selection {
                Some(sel) => sel.values().map(|v| v.len() as u64).sum(),
                None => job.files.iter().map(|&i| self.files[i].estimate).sum(),
            },
            predicted_secs: job.predicted,
        });
        Ok((handle, token))
    }

    /// Runs every `TICK`: per-test timeouts (SIGTERM to the unit's processes, SIGKILL after
    /// the grace period) and reaping orphans that died on their own.
    fn on_tick(&mut self, running: &mut HashMap<usize, Running>, _st: &mut State) {
        let now = Instant::now();
        for r in running.values_mut() {
            if let Some(at) = r.kill_at
                && now >= at
            {
                r.signal(unix::Sig::KILL);
                // Keep signalling each tick until the executor reports the exit.
                r.kill_at = Some(now + TICK);
                continue;
            }
            if r.cancelled || r.timed_out.is_some() {
                continue;
            }
            let Some(id) = &r.current else { continue };
            let Some(started) = r.started_at.get(id) else {
                continue;
            };
            if recovery::timed_out(now.duration_since(*started), r.current_limit) {
                r.timed_out = r.current_limit;
                r.terminate(self.policy.kill_grace);
            }
        }
        let ours: HashSet<u32> = running.values().map(|r| r.handle.pid).collect();
        for pid in procs::zombie_children(&ours) {
            procs::reap(pid, Duration::ZERO);
        }
    }

    /// Handles one message; returns (unit, slot) when that unit is over.
    fn handle(
        &mut self,
        msg: ExecMsg,
        running: &mut HashMap<usize, Running>,
        st: &mut State,
    ) -> Option<(usize, usize)> {
        match msg {
            ExecMsg::Wire { unit, wire, at } => {
                let r = running.get_mut(&unit)?;
                self.on_wire(r, wire, at, st);
                None
            }
            ExecMsg::BadLine { unit, line, error } => {
                if let Some(r) = running.get_mut(&unit) {
                    r.bad_lines.push(format!("{error}: {line}"));
                }
                None
            }
            ExecMsg::Exited {
                unit,
                exit,
                stderr_tail,
                stdout_tail,
                at,
            } => {
                let r = running.remove(&unit)?;
                let slot = r.slot;
                self.finish_unit(r, exit, &stdout_tail, &stderr_tail, at, st);
                Some((unit, slot))
            }
        }
    }

    fn attempt_of(st: &State, id: &str) -> u32 {
        st.attempts.get(id).copied().unwrap_or(1)
    }

    fn on_wire(&mut self, r: &mut Running, wire: Wire, at: Instant, st: &mut State) {
        let unit = r.job.id;
        match wire {
            Wire::Hello { .. } => {}
            Wire::Collected { ids, deselected } => {
                // A resumption or retry collects its files again; their deselections were
                // counted by the unit's first process.
                if matches!(r.job.reason, Reason::Planned | Reason::Infra) {
                    st.totals.deselected += deselected;
                }
                self.bus.emit(Event::UnitCollected {
                    unit,
                    count: ids.len(),
                    deselected,
                });
                r.collected = Some(ids);
            }
            Wire::Collect {
                id,
                outcome,
                longrepr,
                message,
            } => {
                r.reported_collect = true;
                if outcome == "skipped" {
                    // A module-level skip: pytest counts it as one skipped test.
                    let result = TestResult {
                        file: id.split("::").next().unwrap_or(&id).to_string(),
                        nodeid: id,
                        unit,
                        slot: r.slot,
                        attempt: 1,
                        outcome: Outcome::Skipped,
                        teardown_error: false,
                        duration: 0.0,
                        message,
                        longrepr,
                        teardown_longrepr: String::new(),
                        teardown_message: String::new(),
                        when: Some("collect".into()),
                        head_line: String::new(),
                        sections: Vec::new(),
                        failed_subtests: Vec::new(),
                        flaky: false,
                        reruns: Vec::new(),
                    };
                    st.totals.add_result(&result);
                    st.reported_any = true;
                    self.bus.emit(Event::TestFinished(result));
                } else {
                    st.collect_errors += 1;
                    self.count_failure(st);
                    self.bus.emit(Event::CollectError {
                        unit,
                        nodeid: id,
                        outcome,
                        message,
                        longrepr,
                    });
                }
            }
            Wire::Start { id, timeout } => {
                r.started_at.insert(id.clone(), at);
                r.current = Some(id.clone());
                r.current_limit = recovery::effective_timeout(timeout, self.policy.timeout);
                self.bus.emit(Event::TestStarted {
                    unit,
                    slot: r.slot,
                    nodeid: id,
                });
            }
            Wire::Report(p) if p.subtest => {
                // Subtests are counted as pytest counts them, and their failures shown with
                // their test; they do not decide the test's own outcome (pytest already
                // turned a passing test with failed subtests into a failure).
                if !p.category.is_empty() {
                    *st.totals.subtests.entry(p.category.clone()).or_default() += 1;
                }
                if p.outcome == "failed" {
                    r.failed_subtests.entry(p.id.clone()).or_default().push(*p);
                }
            }
            Wire::Report(p) => r.phases.entry(p.id.clone()).or_default().push(*p),
            Wire::Finish { id } => {
                let duration = r
                    .started_at
                    .remove(&id)
                    .map(|s| at.duration_since(s).as_secs_f64())
                    .unwrap_or(0.0);
                let phases = r.phases.remove(&id).unwrap_or_default();
                let mut result = build_result(&id, unit, r.slot, &phases, duration);
                result.attempt = Self::attempt_of(st, &id);
                result.failed_subtests = r.failed_subtests.remove(&id).unwrap_or_default();
                r.finished.insert(id);
                r.current = None;
                r.current_limit = None;
                self.conclude(result, st);
            }
            Wire::Done {
                exitstatus,
                warnings,
            } => {
                r.pytest_exitstatus = Some(exitstatus);
                st.totals.warnings += warnings;
            }
            Wire::Leak { pid, cmdline } => self.bus.emit(Event::Leak {
                unit,
                slot: r.slot,
                nodeid: r.current.clone(),
                pid,
                cmdline,
            }),
        }
    }

    /// A test's attempt is over: try it again in a fresh process if the policy allows,
    /// otherwise publish it as final, with the failed attempts before it.
    fn conclude(&mut self, mut result: TestResult, st: &mut State) {
        let retry = st.stop_reason.is_none()
            && recovery::should_retry(
                result.outcome,
                result.teardown_error,
                result.attempt,
                self.policy.retries,
            );
        if retry && let Some(file) = self.files.iter().position(|f| f.rel == result.file) {
            let delay = recovery::retry_delay(result.attempt);
            let next = result.attempt + 1;
            self.bus.emit(Event::TestRetry {
                unit: result.unit,
                slot: result.slot,
                nodeid: result.nodeid.clone(),
                attempt: result.attempt,
                outcome: result.outcome,
                message: result.message.clone(),
                delay: delay.as_secs_f64(),
            });
            let id = st.next_id;
            st.next_id += 1;
            st.queue.push_back(Job {
                id,
                files: vec![file],
                selection: Some(BTreeMap::from([(
                    result.file.clone(),
                    vec![result.nodeid.clone()],
                )])),
                attempt: next,
                predicted: result.duration,
                reason: Reason::Retry,
                not_before: Some(Instant::now() + delay),
                infra_retries: 0,
            });
            st.attempts.insert(result.nodeid.clone(), next);
            st.reruns
                .entry(result.nodeid.clone())
                .or_default()
                .push(result);
            return;
        }
        if let Some(before) = st.reruns.remove(&result.nodeid) {
            result.reruns = before.iter().map(Rerun::from).collect();
        }
        let failed = result.outcome.is_failure() || result.teardown_error;
        result.flaky = !result.reruns.is_empty() && result.outcome == Outcome::Passed && !failed;
        st.totals.add_result(&result);
        st.reported_any = true;
        self.bus.emit(Event::TestFinished(result));
        if failed {
            self.count_failure(st);
        }
    }

    fn count_failure(&self, st: &mut State) {
        st.failures_seen += 1;
        if let Some(max) = self.maxfail
            && st.failures_seen >= max
        {
            let reason = format!(
                "stopping after {} failure(s) (-x/--maxfail={max})",
                st.failures_seen
            );
            st.stop(reason, "not run: the run was stopped (-x/--maxfail)");
        }
    }

    /// The unit's files that are gone, checked twice ~100 ms apart (a file being replaced
    /// by an editor or a checkout may be briefly absent).
    fn missing_files(&self, job: &Job) -> Vec<String> {
        let absent = || -> Vec<usize> {
            job.files
                .iter()
                .copied()
                .filter(|&i| !self.files[i].path.exists())
                .collect()
        };
        let first = absent();
        if first.is_empty() {
            return Vec::new();
        }
        std::thread::sleep(Duration::from_millis(100));
        let second = absent();
        first
            .into_iter()
            .filter(|i| second.contains(i))
            .map(|i| self.files[i].rel.clone())
            .collect()
    }

    /// Reconciles what a unit reported with how its process ended: a test collected and
    /// never reported has not passed. Kills and reports what the unit left behind, resumes
    /// the tests it never reached, and retries units that failed for infrastructure reasons.
    fn finish_unit(
        &mut self,
        r: Running,
        exit: ExitInfo,
        _stdout: &str,
        stderr: &str,
        at: Instant,
        st: &mut State,
    ) {
        let unit = r.job.id;
        for leak in procs::kill_leftovers(&r.token, Some(r.handle.pid)) {
            self.bus.emit(Event::Leak {
                unit,
                slot: r.slot,
                nodeid: leak.nodeid,
                pid: leak.pid,
                cmdline: leak.cmdline,
            });
        }
        let fault = read_fault_file(&self.session.fault_file(unit, r.job.attempt));
        let reported_here = !r.finished.is_empty() || r.current.is_some() || r.reported_collect;
        if !r.cancelled && !reported_here && matches!(exit.code, Some(3) | Some(4)) {
            let missing = self.missing_files(&r.job);
            match recovery::infra_decision(
                exit.code,
                false,
                missing,
                r.job.infra_retries,
                self.policy.infra_retries,
            ) {
                recovery::Infra::Retry { k, delay } => {
                    self.bus.emit(Event::InfraRetry {
                        unit,
                        slot: r.slot,
                        exit,
                        files: r
                            .job
                            .files
                            .iter()
                            .map(|&i| (self.files[i].rel.clone(), self.files[i].path.exists()))
                            .collect(),
                        stderr_tail: last_lines(stderr, 20),
                        retry: k,
                        delay: delay.as_secs_f64(),
                    });
                    let mut job = r.job.clone();
                    job.id = st.next_id;
                    st.next_id += 1;
                    job.attempt += 1;
                    job.infra_retries = k;
                    job.reason = Reason::Infra;
                    job.not_before = Some(Instant::now() + delay);
                    st.queue.push_front(job);
                    self.bus.emit(Event::UnitFinished {
                        unit,
                        slot: r.slot,
                        exit,
                        pytest_exitstatus: r.pytest_exitstatus,
                        duration: at.duration_since(r.started).as_secs_f64(),
                        unreported: 0,
                        error: None,
                        cancelled: false,
                    });
                    return;
                }
                recovery::Infra::FilesGone(files) => {
                    st.unit_error_codes.push(Some(exit::USAGE as i32));
                    self.bus.emit(Event::UnitFinished {
                        unit,
                        slot: r.slot,
                        exit,
                        pytest_exitstatus: r.pytest_exitstatus,
                        duration: at.duration_since(r.started).as_secs_f64(),
                        unreported: r.collected.as_ref().map_or(0, Vec::len),
                        error: Some(format!(
                            "file(s) gone since discovery, not retried: {}\n{}",
                            files.join(", "),
                            last_lines(stderr, 20)
                        )),
                        cancelled: false,
                    });
                    return;
                }
                recovery::Infra::NotInfra | recovery::Infra::GiveUp => {}
            }
        }
        let collected = r.collected.clone().unwrap_or_default();
        // A test whose time ran out is a timeout even if the run was stopped meanwhile; the
        // tests after it are then queued and, as the run is stopping, reported not run.
        let stopping = r.cancelled && r.timed_out.is_none();
        let rec = recovery::reconcile(&collected, &r.finished, r.current.as_deref(), stopping);
        // A resumption or retry that did not collect a test it was started for (it died
        // first, or the id changed) must not lose it silently.
        if let Some(sel) = r
            .job
            .selection
            .as_ref()
            .filter(|_| r.job.reason != Reason::Planned)
        {
            let got: HashSet<&String> = collected.iter().collect();
            for id in sel.values().flatten().filter(|id| !got.contains(id)) {
                let message = if r.cancelled {
                    st.not_run_message.clone()
                } else {
                    st.lost += 1;
                    format!(
                        "not run: the process started again for it ended ({exit}) without collecting it"
                    )
                };
                let mut result = build_result(id, unit, r.slot, &[], 0.0);
                result.attempt = Self::attempt_of(st, id);
                result.outcome = Outcome::NotRun;
                result.message = message;
                self.conclude(result, st);
            }
        }
        let unreported = rec.resume.len() + rec.not_run.len() + usize::from(rec.culprit.is_some());
        let duration_of = |id: &str| {
            r.started_at
                .get(id)
                .map(|s| at.duration_since(*s).as_secs_f64())
                .unwrap_or(0.0)
        };
        if let Some(id) = &rec.culprit {
            let phases = r.phases.get(id).cloned().unwrap_or_default();
            let mut result = build_result(id, unit, r.slot, &phases, duration_of(id));
            result.attempt = Self::attempt_of(st, id);
            result.teardown_error = false;
            result.when = Some("call".into());
            if let Some(limit) = r.timed_out {
                result.outcome = Outcome::Failed;
                result.message = format!("timeout after {limit} s");
                result.longrepr = format!(
                    "Failed: timeout after {limit} s: racefree stopped the test's processes \
                     (SIGTERM, then SIGKILL after {} s)\n\n{}",
                    self.policy.kill_grace.as_secs_f64(),
                    traceback_section(&fault, "where it was when it was stopped"),
                );
            } else {
                result.outcome = Outcome::Crashed;
                result.message = format!(
                    "crashed: the pytest process ended ({exit}) while this test was running"
                );
                result.longrepr = format!(
                    "{}\n\n{}{}",
                    result.message,
                    traceback_section(&fault, "faulthandler traceback"),
                    traceback_section(
                        &last_lines(stderr, 40),
                        "last output of the pytest process (stderr)"
                    )
                );
            }
            self.conclude(result, st);
        }
        for id in &rec.not_run {
            let message = if r.cancelled {
                st.not_run_message.clone()
            } else {
                st.lost += 1;
                format!("not run: the pytest process ended ({exit}) before this test")
            };
            let phases = r.phases.get(id).cloned().unwrap_or_default();
            let mut result = build_result(id, unit, r.slot, &phases, duration_of(id));
            result.attempt = Self::attempt_of(st, id);
            result.outcome = Outcome::NotRun;
            result.teardown_error = false;
            result.message = message;
            result.longrepr.clear();
            self.conclude(result, st);
        }
        if !rec.resume.is_empty() {
            self.resume(&r.job, rec.resume, st);
        }
        // pytest ends a unit with 0, 1 or 5 when it ran what it collected; anything else
        // (usage error, internal error, interrupted, a signal) must surface even when some
        // tests were collected and reported.
        let normal_exit = matches!(exit.code, Some(0) | Some(1) | Some(5));
        // A signal while a test ran is that test's crash (or timeout), already reported.
        let attributed = (exit.signal.is_some() || r.timed_out.is_some()) && rec.culprit.is_some();
        let error = if !r.cancelled && !normal_exit && !attributed {
            st.unit_error_codes.push(exit.code);
            let mut text = match &r.collected {
                None => format!("the pytest process ended ({exit}) before collecting any test"),
                Some(ids) => format!(
                    "the pytest process ended ({exit}) after collecting {} test(s)",
                    ids.len()
                ),
            };
            if !r.bad_lines.is_empty() {
                text.push_str(&format!(
                    "\nunreadable plugin messages: {}",
                    r.bad_lines.join("; ")
                ));
            }
            text.push_str(&format!("\n{}", last_lines(stderr, 40)));
            Some(text)
        } else {
            None
        };
        self.bus.emit(Event::UnitFinished {
            unit,
            slot: r.slot,
            exit,
            pytest_exitstatus: r.pytest_exitstatus,
            duration: at.duration_since(r.started).as_secs_f64(),
            unreported,
            error,
            cancelled: r.cancelled,
        });
    }

    /// Queues the tests a dead unit never reached as a new unit, ahead of other work, in a
    /// fresh process that runs exactly them (the plugin's per-file node-id selection).
    fn resume(&mut self, job: &Job, ids: Vec<String>, st: &mut State) {
        let mut selection: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut files = Vec::new();
        for id in ids {
            let rel = id.split("::").next().unwrap_or(&id).to_string();
            match job.files.iter().find(|&&i| self.files[i].rel == rel) {
                Some(&i) => {
                    if !files.contains(&i) {
                        files.push(i);
                    }
                    selection.entry(rel).or_default().push(id);
                }
                None => {
                    // An id whose file racefree did not start (a doctest in another file,
                    // say): it cannot be selected again, so it is lost, loudly.
                    st.lost += 1;
                    let mut result = build_result(&id, job.id, 0, &[], 0.0);
                    result.outcome = Outcome::NotRun;
                    result.message =
                        "not run: its process died before it and it could not be resumed".into();
                    self.conclude(result, st);
                }
            }
        }
        if files.is_empty() {
            return;
        }
        let id = st.next_id;
        st.next_id += 1;
        st.queue.push_front(Job {
            id,
            files,
            selection: Some(selection),
            attempt: job.attempt + 1,
            predicted: 0.0,
            reason: Reason::Resume,
            not_before: None,
            infra_retries: job.infra_retries,
        });
    }
}

/// At most this much of a faulthandler file is attached to a report.
const FAULT_BYTES: u64 = 64 * 1024;

fn read_fault_file(path: &std::path::Path) -> String {
    use std::io::Read;
    let Ok(file) = std::fs::File::open(path) else {
        return String::new();
    };
    let mut buf = Vec::new();
    let _ = file.take(FAULT_BYTES).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

fn traceback_section(fault: &str, title: &str) -> String {
    if fault.trim().is_empty() {
        String::new()
    } else {
        format!("{title}:\n{}\n\n", hide_runner_frames(fault.trim_end()))
    }
}

/// faulthandler dumps every frame down to `runpy`; the ~30 of pytest and pluggy say nothing
/// about the test, so they are counted instead of shown.
fn hide_runner_frames(dump: &str) -> String {
    let internal = |line: &str| {
        let l = line.trim_start();
        l.starts_with("File ")
            && [
                "/_pytest/",
                "/pluggy/",
                "/pytest/__main__.py",
                "<frozen runpy>",
            ]
            .iter()
            .any(|m| l.contains(m))
    };
    let mut out = Vec::new();
    let mut hidden = 0;
    for line in dump.lines() {
        if internal(line) {
            hidden += 1;
            continue;
        }
        if hidden > 0 {
            out.push(format!("  ({hidden} frames of pytest and pluggy hidden)"));
            hidden = 0;
        }
        out.push(line.to_string());
    }
    if hidden > 0 {
        out.push(format!("  ({hidden} frames of pytest and pluggy hidden)"));
    }
    out.join("\n")
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn build_result(
    id: &str,
    unit: usize,
    slot: usize,
    phases: &[PhaseReport],
    duration: f64,
) -> TestResult {
    let (outcome, teardown_error, deciding) = derive_outcome(phases);
    let teardown = phases
        .iter()
        .rev()
        .find(|p| p.when == "teardown" && p.outcome == "failed");
    let message = match (outcome, deciding) {
        (Outcome::Skipped, Some(p)) => p.skip_reason.clone().unwrap_or_default(),
        (Outcome::Xfailed | Outcome::Xpassed, Some(p)) => p.wasxfail.clone().unwrap_or_default(),
        (_, Some(p)) => p.message.clone(),
        (_, None) => String::new(),
    };
    TestResult {
        nodeid: id.to_string(),
        file: id.split("::").next().unwrap_or(id).to_string(),
        unit,
        slot,
        attempt: 1,
        outcome,
        teardown_error,
        duration,
        message,
        longrepr: deciding.map(|p| p.longrepr.clone()).unwrap_or_default(),
        teardown_longrepr: if teardown_error {
            teardown.map(|p| p.longrepr.clone()).unwrap_or_default()
        } else {
            String::new()
        },
        teardown_message: if teardown_error {
            teardown.map(|p| p.message.clone()).unwrap_or_default()
        } else {
            String::new()
        },
        when: deciding.map(|p| p.when.clone()),
        head_line: deciding.map(|p| p.head_line.clone()).unwrap_or_default(),
        sections: deciding.map(|p| p.sections.clone()).unwrap_or_default(),
        failed_subtests: Vec::new(),
        flaky: false,
        reruns: Vec::new(),
    }
}

/// pytest's exit codes, decided from the run's state (DESIGN §2.1).
fn exit_code(st: &State, flaky_fails: bool) -> u8 {
    if st.unit_error_codes.contains(&Some(exit::USAGE as i32)) {
        return exit::USAGE;
    }
    if st.unit_error_codes.contains(&Some(exit::INTERNAL as i32)) {
        return exit::INTERNAL;
    }
    if st.interrupted || st.collect_errors > 0 || !st.unit_error_codes.is_empty() {
        return exit::INTERRUPTED;
    }
    if st.totals.failures() > 0 || st.lost > 0 || (flaky_fails && st.totals.flaky > 0) {
        return exit::TESTS_FAILED;
    }
    if !st.reported_any {
        return exit::NO_TESTS;
    }
    exit::OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_frames_are_counted_not_shown() {
        let dump = "Fatal Python error: Segmentation fault\n\nCurrent thread 0x1 (most recent call first):\n  File \"/x/ctypes/__init__.py\", line 519 in string_at\n  File \"/t/test_segv.py\", line 9 in test_segfaults\n  File \"/v/_pytest/python.py\", line 187 in pytest_pyfunc_call\n  File \"/v/pluggy/_execution.py\", line 147 in _multicall\n  File \"<frozen runpy>\", line 88 in _run_code\n";
        let shown = hide_runner_frames(dump);
        assert!(shown.contains("line 9 in test_segfaults"), "{shown}");
        assert!(shown.contains("in string_at"), "{shown}");
        assert!(!shown.contains("pluggy/_execution.py"), "{shown}");
        assert!(
            shown.ends_with("  (3 frames of pytest and pluggy hidden)"),
            "{shown}"
        );
    }

    #[test]
    fn exit_code_table() {
        let mut st = State::default();
        assert_eq!(exit_code(&st, false), exit::NO_TESTS);
        st.reported_any = true;
        assert_eq!(exit_code(&st, false), exit::OK);
        st.totals.flaky = 1;
        assert_eq!(exit_code(&st, false), exit::OK);
        assert_eq!(exit_code(&st, true), exit::TESTS_FAILED);
        st.lost = 1;
        assert_eq!(exit_code(&st, false), exit::TESTS_FAILED);
        st.interrupted = true;
        assert_eq!(exit_code(&st, false), exit::INTERRUPTED);
        st.interrupted = false;
        st.collect_errors = 1;
        assert_eq!(exit_code(&st, false), exit::INTERRUPTED);
        st.unit_error_codes.push(Some(3));
        assert_eq!(exit_code(&st, false), exit::INTERNAL);
        st.unit_error_codes.push(Some(4));
        assert_eq!(exit_code(&st, false), exit::USAGE);
    }
}
