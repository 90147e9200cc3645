//! The dispatcher: owns the run's state. It hands each free worker slot the longest
//! predicted remaining unit, turns executor messages into events, reconciles each unit's
//! reported tests with how its process ended, and stops the run on `-x`/`--maxfail`.
//!
//! Faults: `on_tick` runs every `TICK` and enforces per-test timeouts and stops; what
//! happens when a test or a unit ends (retries, leaks, resumption, infrastructure retries)
//! is in `finish`; `unit` holds the jobs and running units, `text` the report texts.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, unbounded};

use crate::discovery::TestFile;
use crate::error::{Result, exit};
use crate::events::{
    ChunkOf, Event, ExitInfo, JunitExtras, Outcome, RERUN, TestResult, Totals, Wire,
};
use crate::executor::{self, ExecContext, ExecMsg, UnitHandle, UnitSpec};
use crate::plan::{Part, UnitPlan};
use crate::procs;
use crate::recovery::{self, FaultPolicy};
use crate::session::Session;
use crate::unix;

mod finish;
mod text;
mod unit;

use text::build_result;
use unit::{Job, Reason, Running};

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

/// What the run ended with.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub exit_code: u8,
    pub totals: Totals,
    /// Modules units imported that fork servers could preload next time.
    pub imports: BTreeSet<String>,
}

pub struct Dispatcher<'a> {
    pub ctx: &'a ExecContext,
    pub session: &'a Session,
    pub files: &'a [TestFile],
    pub maxfail: Option<u32>,
    pub bus: &'a mut Bus,
    pub policy: &'a FaultPolicy,
    /// The node ids the command line selected (rootdir-relative): one that selects no test
    /// its unit collected is pytest's "not found", a usage error (exit 4), not a silent
    /// "no tests ran" (a typo in CI would pass).
    pub given_ids: &'a HashSet<String>,
    /// Where plain `pytest` with the run's arguments starts collecting (the paths given,
    /// else `testpaths`, else the directory it was started in): the conftest files in
    /// these directories and above them are loaded before any collection, and one that
    /// fails to import stops pytest with exit 4; one below them is a collection error.
    pub initial_dirs: &'a [std::path::PathBuf],
    /// How many times SIGINT/SIGTERM reached racefree (the CLI's handler counts them): the
    /// first stops the run gracefully, the second kills at once.
    pub interrupts: Option<Arc<AtomicUsize>>,
    /// Every test file discovery found (before sharding or --lf chose among them): what a
    /// unit that walks directories itself must leave out (see `TestFile::remainder`).
    pub remainder_skip: &'a [std::path::PathBuf],
    /// pytest was given `--continue-on-collection-errors`: a collection error is then one
    /// more failure (exit 1), not the end of the session (exit 2).
    pub continue_on_collection_errors: bool,
    /// Under pytest-cov: how the run's one coverage report is made once the units end.
    pub coverage: Option<crate::coverage::Step<'a>>,
    /// Files (indices into `files`) that name an `xdist_group` under `--dist loadgroup`:
    /// planned into one unit, and no unit with any of them (a retry, say) starts while
    /// another runs.
    pub xdist_grouped: &'a HashSet<usize>,
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
    imports: BTreeSet<String>,
    queue: VecDeque<Job>,
    next_id: usize,
    /// Failed attempts of tests that are being tried again.
    reruns: HashMap<String, Vec<TestResult>>,
    /// The attempt number of a test's next run (absent: 1).
    attempts: HashMap<String, u32>,
    /// How many times racefree itself has run a test again (`--retries`), apart from the
    /// attempts a plugin ran again in the same process (absent: 0).
    own_retries: HashMap<String, u32>,
    /// Set once the run's loop has ended: a test concluded after it is not tried again.
    retries_closed: bool,
    /// Collection reports (id, outcome) of split files' chunks: every chunk collects the
    /// whole file, and a broken or skipped module is reported once, as pytest would.
    chunk_collects: HashSet<(String, String)>,
    /// Node ids from the command line that selected nothing (see Dispatcher::given_ids).
    not_found: BTreeSet<String>,
    /// For each unit whose pytest found no test to run (status 5): the status a hook set
    /// instead, if one did (see exit_code).
    no_tests_became: Vec<Option<i32>>,
    /// The status the first `pytest.exit()` asked for: the run's, as it is pytest's.
    exit_status: Option<i32>,
    /// Configure-time warnings already counted and shown (see `Wire::Warning`).
    config_warnings: HashSet<(String, String)>,
    /// pytest-cov's report options, from the first unit it measured (see `coverage`).
    coverage: Option<serde_json::Value>,
    /// The run's coverage is below pytest-cov's minimum: the run fails, as pytest's does.
    coverage_below_minimum: bool,
    /// A plugin's terminal summary raised in a unit: the run fails, as pytest's does.
    summary_raised: bool,
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
                let Some(pos) = st
                    .queue
                    .iter()
                    .position(|j| j.ready(now) && !self.waits_for_its_group(j, &running))
                else {
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
        // Nothing runs any more: what is concluded from here on is final.
        st.retries_closed = true;
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
        // Chunks of one split file are several units: name the file once.
        let mut named = HashSet::new();
        let not_started: Vec<String> = st
            .queue
            .iter()
            .filter(|j| matches!(j.reason, Reason::Planned | Reason::Infra))
            .flat_map(|j| j.files.iter().map(|&i| self.files[i].rel.clone()))
            .filter(|rel| named.insert(rel.clone()))
            .collect();
        let interrupted = st.stop_reason.clone().map(|reason| {
            if !not_started.is_empty() {
                format!("{reason}; {} file(s) not started", not_started.len())
            } else {
                reason
            }
        });
        // pytest counts a collection error as a failure when told to carry on past them, or
        // when they alone reach -x/--maxfail (it then stops after collecting: exit 1).
        let collect_errors_fail = self.continue_on_collection_errors
            || self
                .maxfail
                .is_some_and(|max| st.collect_errors >= u64::from(max));
        let collect_errors_end = st.collect_errors > 0 && !self.continue_on_collection_errors;
        self.report_coverage(&mut st, collect_errors_end);
        let exit_code = exit_code(&st, self.policy.flaky_fails, collect_errors_fail);
        self.bus.emit(Event::RunFinished {
            totals: st.totals.clone(),
            collect_errors: st.collect_errors,
            exit_code,
            duration: started.elapsed().as_secs_f64(),
            interrupted,
            not_started,
            not_run_message: st.not_run_message.clone(),
            not_found: st.not_found.iter().cloned().collect(),
        });
        RunOutcome {
            exit_code,
            totals: st.totals,
            imports: st.imports,
        }
    }

    /// Under pytest-cov: the run's coverage report, from every unit's data, as pytest-cov
    /// makes it when pytest's test loop ends. Not when the session was cut short: pytest
    /// stops its loop (and pytest-cov its report) at `-x`/`--maxfail`, on an interrupt, a
    /// `pytest.exit()`, a usage error, or collection errors it was not told to carry on
    /// past.
    fn report_coverage(&mut self, st: &mut State, collect_errors_end: bool) {
        let (Some(step), Some(options)) = (&self.coverage, &st.coverage) else {
            return;
        };
        if st.interrupted || st.stop_reason.is_some() || collect_errors_end {
            return;
        }
        // pytest-cov's --no-cov-on-fail asks pytest's count of failures, which counts
        // collection errors too.
        let failed = st.totals.failures() + st.totals.subtest_failures() + st.collect_errors > 0;
        match step.report(options, failed) {
            Ok(report) => {
                st.coverage_below_minimum = report.below_minimum;
                self.bus.emit(Event::Coverage {
                    text: report.text,
                    below_minimum: report.below_minimum,
                });
            }
            Err(why) => {
                // As pytest-cov when its report fails: said, and a minimum counts as missed.
                eprintln!("racefree: warning: the coverage report failed: {why}");
                st.coverage_below_minimum = options
                    .get("fail_under")
                    .and_then(serde_json::Value::as_f64)
                    .is_some_and(|min| min > 0.0);
            }
        }
    }

    /// Whether `job` holds a file of an `xdist_group` while a unit with one runs: pytest-xdist
    /// runs a group's tests one after another, so a retry of one waits for the group.
    fn waits_for_its_group(&self, job: &Job, running: &HashMap<usize, Running>) -> bool {
        let grouped = |files: &[usize]| files.iter().any(|i| self.xdist_grouped.contains(i));
        grouped(&job.files) && running.values().any(|r| grouped(&r.job.files))
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
        let mut exclude = BTreeMap::new();
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
            if job.selection.is_none()
                && let Some(chunk) = &job.chunk
            {
                // The planner never splits a file the user selected node ids in.
                match &chunk.part {
                    Part::Select(ids) => selection.insert(f.rel.clone(), ids.clone()),
                    Part::Exclude(ids) => exclude.insert(f.rel.clone(), ids.clone()),
                };
            }
        }
        if let Some(sel) = &job.selection {
            selection = sel.clone();
        }
        // A unit that walks directories for what racefree's discovery cannot see leaves out
        // every file that runs elsewhere.
        let skip = if job.files.iter().any(|&i| self.files[i].remainder) {
            self.remainder_skip.to_vec()
        } else {
            Vec::new()
        };
        let token = crate::session::random_id()?;
        let spec = UnitSpec {
            unit: job.id,
            slot,
            attempt: job.attempt,
            files: paths,
            selection,
            exclude,
            walked,
            skip,
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
            chunk: job.chunk.as_ref().map(|c| ChunkOf {
                index: c.index,
                of: c.of,
            }),
            estimated_tests: match (&job.selection, &job.chunk) {
                (Some(sel), _) => sel.values().map(|v| v.len() as u64).sum(),
                (None, Some(chunk)) => chunk.known_tests as u64,
                (None, None) => job.files.iter().map(|&i| self.files[i].estimate).sum(),
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
            ExecMsg::Batch(msgs) => {
                let mut over = None;
                for msg in msgs {
                    over = over.or(self.handle(msg, running, st));
                }
                over
            }
            ExecMsg::Wire { unit, wire, at } => {
                let r = running.get_mut(&unit)?;
                self.on_wire(r, wire, at, st);
                None
            }
            ExecMsg::Output { unit, stream, text } => {
                let slot = running.get(&unit)?.slot;
                self.bus.emit(Event::Output {
                    unit,
                    slot,
                    stream,
                    text,
                });
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
            Wire::Collected {
                ids,
                deselected,
                unmatched,
            } => {
                // A resumption or retry collects its files again; their deselections were
                // counted by the unit's first process.
                if matches!(r.job.reason, Reason::Planned | Reason::Infra) {
                    st.totals.deselected += deselected;
                    // Also where the file failed to import or skipped itself: pytest then
                    // finds no collector for the id either, and says so (exit 4).
                    st.not_found.extend(
                        unmatched
                            .into_iter()
                            .filter(|id| self.given_ids.contains(id)),
                    );
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
                skip_where,
                skip_details,
            } => {
                r.reported_collect = true;
                r.collect_failed |= outcome != "skipped";
                if r.job.chunk.is_some() && !st.chunk_collects.insert((id.clone(), outcome.clone()))
                {
                    return;
                }
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
                        teardown_sections: Vec::new(),
                        properties: Vec::new(),
                        junit: Box::new(JunitExtras {
                            skip_details,
                            ..JunitExtras::default()
                        }),
                        skip_where,
                        when: Some("collect".into()),
                        head_line: String::new(),
                        sections: Vec::new(),
                        crash_line: None,
                        position: None,
                        failed_subtests: Vec::new(),
                        subtest_counts: Default::default(),
                        flaky: false,
                        reruns: Vec::new(),
                    };
                    // Counted as skipped, but not as a collected test: a run whose every
                    // module skips itself collected nothing, and pytest exits 5.
                    st.totals.add_result(&result);
                    self.bus.emit(Event::TestFinished(Box::new(result)));
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
                // Subtests are counted as pytest counts them (with their test's final
                // attempt, see TestResult::subtest_counts), and their failures shown with
                // their test; they do not decide the test's own outcome (pytest already
                // turned a passing test with failed subtests into a failure).
                if !p.category.is_empty() {
                    *r.subtest_counts
                        .entry(p.id.clone())
                        .or_default()
                        .entry(p.category.clone())
                        .or_default() += 1;
                }
                if p.outcome == "failed" {
                    r.failed_subtests.entry(p.id.clone()).or_default().push(*p);
                }
            }
            Wire::Report(p) => r.phases.entry(p.id.clone()).or_default().push(*p),
            Wire::Finish {
                id,
                duration,
                position,
            } => {
                let arrived = r
                    .started_at
                    .remove(&id)
                    .map(|s| at.duration_since(s).as_secs_f64());
                let duration = test_duration(duration, arrived);
                let phases = r.phases.remove(&id).unwrap_or_default();
                let mut result = build_result(&id, unit, r.slot, &phases, duration);
                result.position = position;
                result.attempt = Self::attempt_of(st, &id);
                result.failed_subtests = r.failed_subtests.remove(&id).unwrap_or_default();
                result.subtest_counts = r.subtest_counts.remove(&id).unwrap_or_default();
                r.current = None;
                r.current_limit = None;
                if phases.iter().any(|p| p.outcome == RERUN) {
                    // Not finished: the plugin runs it again next, and if the process dies
                    // meanwhile, the test is the culprit (or not run) at its next attempt.
                    self.plugin_rerun(result, st);
                } else {
                    r.finished.insert(id);
                    self.conclude(result, st);
                }
            }
            Wire::Imports { modules } => st.imports.extend(modules),
            Wire::PluginSummary { text, raised } => {
                st.summary_raised |= raised;
                self.bus.emit(Event::PluginSummary { unit, text, raised })
            }
            Wire::Coverage { options } => {
                // Every unit parses the same options: the first to say them is heard.
                st.coverage
                    .get_or_insert(serde_json::Value::Object(options));
            }
            Wire::SuiteProperties { properties } => {
                self.bus.emit(Event::SuiteProperties { unit, properties })
            }
            Wire::Exit {
                reason,
                returncode,
                interrupt,
            } => {
                // As pytest ends its one session: the run stops, with pytest.exit's status
                // (2, interrupted, by default). The unit is ending by itself, not crashing:
                // the test that called it, and the tests after it, did not run (unless
                // the test had already reported its call: see finish_unit).
                // A unit racefree stopped itself (its time ran out) may turn the signal into a
                // KeyboardInterrupt: that is racefree's doing, not the test's.
                let stopped_already =
                    r.cancelled || st.stop_reason.is_some() || (interrupt && r.timed_out.is_some());
                r.cancelled = true;
                r.exited_by_request = true;
                if !stopped_already {
                    // Otherwise the run is stopping already (-x, Ctrl-C, --run-timeout): its
                    // own reason and status stand.
                    let test = r
                        .current
                        .clone()
                        .map(|t| format!(" in {t}"))
                        .unwrap_or_default();
                    if interrupt {
                        st.stop(
                            format!("KeyboardInterrupt{test}"),
                            "not run: the run was interrupted (KeyboardInterrupt)",
                        );
                    } else {
                        st.stop(
                            format!("pytest.exit(){test}: {reason}"),
                            "not run: the run was stopped by pytest.exit()",
                        );
                    }
                    st.exit_status
                        .get_or_insert(returncode.unwrap_or(i32::from(exit::INTERRUPTED)));
                }
            }
            Wire::Done {
                exitstatus,
                warnings,
                final_status,
            } => {
                r.pytest_exitstatus = Some(exitstatus);
                st.totals.warnings += warnings;
                if exitstatus == i32::from(exit::NO_TESTS) {
                    st.no_tests_became.push(final_status);
                }
            }
            Wire::Warning {
                location,
                message,
                config,
            } => {
                // A configure-time warning comes from every unit: counted and shown once (a
                // test's or a file's is counted in its unit's `Done`).
                let first = config
                    && st
                        .config_warnings
                        .insert((location.clone(), message.clone()));
                if first {
                    st.totals.warnings += 1;
                }
                if !config || first {
                    self.bus.emit(Event::Warning {
                        unit,
                        location,
                        message,
                        config,
                    });
                }
            }
            Wire::Leak { pid, cmdline, test } => {
                // The init has killed it already; racefree's own search at the unit's end
                // must not report it a second time.
                r.leaks_reported.insert(pid);
                self.bus.emit(Event::Leak {
                    unit,
                    slot: r.slot,
                    nodeid: test.or_else(|| r.current.clone()),
                    pid,
                    cmdline,
                })
            }
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
}

/// How far the plugin's measurement of a test may stray from racefree's own (the arrival
/// of its start and finish messages, which racefree reads in batches some milliseconds
/// apart, see executor::COALESCE_FOR), with room for a busy machine's scheduling.
const ARRIVAL_SLACK: f64 = 0.05;

/// A test's duration: the plugin's measurement (free of the time its messages waited to be
/// read), within `ARRIVAL_SLACK` of racefree's own observation, so that a test process
/// whose clock is faked below Python cannot put arbitrary figures into history; racefree's
/// own alone if the plugin said nothing.
fn test_duration(reported: Option<f64>, arrived: Option<f64>) -> f64 {
    let reported = reported.filter(|d| d.is_finite());
    match (reported, arrived) {
        (Some(r), Some(a)) => r.clamp((a - ARRIVAL_SLACK).max(0.0), a + ARRIVAL_SLACK),
        (Some(r), None) => r.max(0.0),
        (None, Some(a)) => a,
        (None, None) => 0.0,
    }
}

/// pytest's exit codes, decided from the run's state (DESIGN §2.1).
fn exit_code(st: &State, flaky_fails: bool, collect_errors_fail: bool) -> u8 {
    if let Some(code) = st.exit_status.and_then(|c| u8::try_from(c).ok()) {
        return code;
    }
    if !st.not_found.is_empty() || st.unit_error_codes.contains(&Some(exit::USAGE as i32)) {
        return exit::USAGE;
    }
    if st.unit_error_codes.contains(&Some(exit::INTERNAL as i32)) {
        return exit::INTERNAL;
    }
    let collect_errors_end = st.collect_errors > 0 && !collect_errors_fail;
    if st.interrupted || collect_errors_end || !st.unit_error_codes.is_empty() {
        return exit::INTERRUPTED;
    }
    // A failed subtest fails the run as pytest's session counts it, even where its test
    // itself passed (unittest's subTest).
    let failed = st.totals.failures() + st.totals.subtest_failures();
    if failed > 0
        || st.lost > 0
        || st.collect_errors > 0
        || (flaky_fails && st.totals.flaky > 0)
        || st.coverage_below_minimum
        || st.summary_raised
    {
        return exit::TESTS_FAILED;
    }
    if !st.reported_any {
        // A conftest that turns "no tests ran" into success (`if exitstatus == 5:
        // session.exitstatus = 0`, a common CI idiom) does it in every unit; its
        // status is the run's when every unit's hook said the same.
        if let [Some(first), rest @ ..] = st.no_tests_became.as_slice()
            && rest.iter().all(|s| *s == Some(*first))
            && let Ok(code) = u8::try_from(*first)
        {
            return code;
        }
        return exit::NO_TESTS;
    }
    exit::OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tests_duration_is_the_plugins_within_what_racefree_saw() {
        // Messages read in one batch: arrival says 0, the plugin knows better.
        assert_eq!(test_duration(Some(0.004), Some(0.0)), 0.004);
        assert_eq!(test_duration(Some(0.3), Some(0.302)), 0.3);
        // A clock faked below Python: frozen, or racing ahead.
        assert_eq!(test_duration(Some(0.0), Some(2.0)), 2.0 - ARRIVAL_SLACK);
        assert_eq!(test_duration(Some(3600.0), Some(1.0)), 1.0 + ARRIVAL_SLACK);
        assert_eq!(test_duration(Some(-5.0), Some(0.01)), 0.0);
        assert_eq!(test_duration(Some(f64::NAN), Some(0.5)), 0.5);
        assert_eq!(test_duration(None, Some(0.5)), 0.5);
        assert_eq!(test_duration(Some(0.2), None), 0.2);
    }

    #[test]
    fn exit_code_table() {
        let mut st = State::default();
        assert_eq!(exit_code(&st, false, false), exit::NO_TESTS);
        // pytest-cov's minimum missed fails the session, even one that ran no test.
        st.coverage_below_minimum = true;
        assert_eq!(exit_code(&st, false, false), exit::TESTS_FAILED);
        st.reported_any = true;
        assert_eq!(exit_code(&st, false, false), exit::TESTS_FAILED);
        st.coverage_below_minimum = false;
        assert_eq!(exit_code(&st, false, false), exit::OK);
        st.totals.flaky = 1;
        assert_eq!(exit_code(&st, false, false), exit::OK);
        assert_eq!(exit_code(&st, true, false), exit::TESTS_FAILED);
        st.lost = 1;
        assert_eq!(exit_code(&st, false, false), exit::TESTS_FAILED);
        st.interrupted = true;
        assert_eq!(exit_code(&st, false, false), exit::INTERRUPTED);
        st.interrupted = false;
        st.collect_errors = 1;
        assert_eq!(exit_code(&st, false, false), exit::INTERRUPTED);
        // Counted as failures (--continue-on-collection-errors, or -x reached by them).
        assert_eq!(exit_code(&st, false, true), exit::TESTS_FAILED);
        st.unit_error_codes.push(Some(3));
        assert_eq!(exit_code(&st, false, false), exit::INTERNAL);
        st.unit_error_codes.push(Some(4));
        assert_eq!(exit_code(&st, false, false), exit::USAGE);
        // No tests: a hook's replacement status counts when every unit's hook gave it.
        let mut st = State {
            no_tests_became: vec![Some(0), Some(0)],
            ..State::default()
        };
        assert_eq!(exit_code(&st, false, false), exit::OK);
        st.no_tests_became.push(None);
        assert_eq!(exit_code(&st, false, false), exit::NO_TESTS);
    }
}
