//! The dispatcher: owns the run's state. It hands each free worker slot the longest
//! predicted remaining unit, turns executor messages into events, reconciles each unit's
//! reported tests with how its process ended, and stops the run on `-x`/`--maxfail`.
//!
//! Seams for later issues: `on_tick` runs at least every `TICK` and is where per-test
//! timeouts belong; `finish_unit` is where crash resumption and retries re-queue work.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, unbounded};

use crate::discovery::TestFile;
use crate::error::{Result, exit};
use crate::events::{
    Event, ExitInfo, Outcome, PhaseReport, TestResult, Totals, Wire, derive_outcome,
};
use crate::executor::{self, ExecContext, ExecMsg, UnitHandle, UnitSpec};
use crate::plan::UnitPlan;
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

struct Running {
    plan: UnitPlan,
    slot: usize,
    handle: UnitHandle,
    collected: Option<Vec<String>>,
    phases: HashMap<String, Vec<PhaseReport>>,
    failed_subtests: HashMap<String, Vec<PhaseReport>>,
    started_at: HashMap<String, Instant>,
    finished: HashSet<String>,
    current: Option<String>,
    pytest_exitstatus: Option<i32>,
    cancelled: bool,
    started: Instant,
    bad_lines: Vec<String>,
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
}

#[derive(Default)]
struct State {
    totals: Totals,
    collect_errors: u64,
    failures_seen: u32,
    stop_reason: Option<String>,
    /// Tests that were collected and then never reported by a unit nobody cancelled.
    lost: u64,
    unit_error_codes: Vec<Option<i32>>,
    reported_any: bool,
    imports: BTreeSet<String>,
}

impl Dispatcher<'_> {
    pub fn run(&mut self, units: Vec<UnitPlan>, started: Instant) -> RunOutcome {
        let (tx, rx) = unbounded::<ExecMsg>();
        let mut queue: VecDeque<UnitPlan> = units.into();
        let mut free: BTreeSet<usize> = (0..self.ctx.workers).collect();
        let mut running: HashMap<usize, Running> = HashMap::new();
        let mut st = State::default();
        loop {
            while st.stop_reason.is_none() && !queue.is_empty() {
                let Some(slot) = free.pop_first() else { break };
                let Some(plan) = queue.pop_front() else { break };
                match self.start(&plan, slot, &tx) {
                    Ok(handle) => {
                        running.insert(
                            plan.id,
                            Running {
                                plan,
                                slot,
                                handle,
                                collected: None,
                                phases: HashMap::new(),
                                failed_subtests: HashMap::new(),
                                started_at: HashMap::new(),
                                finished: HashSet::new(),
                                current: None,
                                pytest_exitstatus: None,
                                cancelled: false,
                                started: Instant::now(),
                                bad_lines: Vec::new(),
                            },
                        );
                    }
                    Err(e) => {
                        free.insert(slot);
                        st.unit_error_codes.push(Some(exit::INTERNAL as i32));
                        self.bus.emit(Event::UnitFinished {
                            unit: plan.id,
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
            if running.is_empty() {
                break;
            }
            match rx.recv_timeout(TICK) {
                Ok(msg) => {
                    if let Some((unit, slot)) = self.handle(msg, &mut running, &mut st) {
                        running.remove(&unit);
                        free.insert(slot);
                    }
                }
                Err(RecvTimeoutError::Timeout) => self.on_tick(&mut running),
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if st.stop_reason.is_some() {
                for r in running.values_mut().filter(|r| !r.cancelled) {
                    r.cancelled = true;
                    r.handle.signal(unix::Sig::KILL);
                }
            }
        }
        let not_started: usize = queue.iter().map(|u| u.files.len()).sum();
        let interrupted = st.stop_reason.clone().map(|reason| {
            if not_started > 0 {
                format!("{reason}; {not_started} file(s) not started")
            } else {
                reason
            }
        });
        let exit_code = exit_code(&st);
        self.bus.emit(Event::RunFinished {
            totals: st.totals.clone(),
            collect_errors: st.collect_errors,
            exit_code,
            duration: started.elapsed().as_secs_f64(),
            interrupted,
        });
        RunOutcome {
            exit_code,
            totals: st.totals,
            imports: st.imports,
        }
    }

    fn start(
        &mut self,
        plan: &UnitPlan,
        slot: usize,
        tx: &crossbeam_channel::Sender<ExecMsg>,
    ) -> Result<UnitHandle> {
        let mut selection = BTreeMap::new();
        let mut walked = BTreeMap::new();
        let mut paths = Vec::new();
        for &i in &plan.files {
            let f = &self.files[i];
            paths.push(f.path.clone());
            if let Some(root) = &f.walk_root {
                walked.insert(f.path.clone(), root.clone());
            }
            if let Some(ids) = &f.selection {
                selection.insert(f.rel.clone(), ids.clone());
            }
        }
        let spec = UnitSpec {
            unit: plan.id,
            slot,
            attempt: 1,
            files: paths,
            selection,
            walked,
        };
        let handle = executor::spawn(self.ctx, self.session, &spec, tx.clone())?;
        self.bus.emit(Event::UnitStarted {
            unit: plan.id,
            slot,
            pid: handle.pid,
            files: plan
                .files
                .iter()
                .map(|&i| self.files[i].rel.clone())
                .collect(),
            estimated_tests: plan.files.iter().map(|&i| self.files[i].estimate).sum(),
            predicted_secs: plan.predicted,
        });
        Ok(handle)
    }

    /// Per-test timeouts (a later issue) hook in here.
    fn on_tick(&mut self, _running: &mut HashMap<usize, Running>) {}

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

    fn on_wire(&mut self, r: &mut Running, wire: Wire, at: Instant, st: &mut State) {
        let unit = r.plan.id;
        match wire {
            Wire::Hello { .. } => {}
            Wire::Collected { ids, deselected } => {
                st.totals.deselected += deselected;
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
            Wire::Start { id } => {
                r.started_at.insert(id.clone(), at);
                r.current = Some(id.clone());
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
                result.failed_subtests = r.failed_subtests.remove(&id).unwrap_or_default();
                r.finished.insert(id);
                r.current = None;
                st.totals.add_result(&result);
                st.reported_any = true;
                let failed = result.outcome.is_failure() || result.teardown_error;
                self.bus.emit(Event::TestFinished(result));
                if failed {
                    self.count_failure(st);
                }
            }
            Wire::Imports { modules } => st.imports.extend(modules),
            Wire::Done {
                exitstatus,
                warnings,
            } => {
                r.pytest_exitstatus = Some(exitstatus);
                st.totals.warnings += warnings;
            }
        }
    }

    fn count_failure(&self, st: &mut State) {
        st.failures_seen += 1;
        if let Some(max) = self.maxfail
            && st.failures_seen >= max
            && st.stop_reason.is_none()
        {
            st.stop_reason = Some(format!(
                "stopping after {} failure(s) (-x/--maxfail={max})",
                st.failures_seen
            ));
        }
    }

    /// Reconciles what a unit reported with how its process ended: a test collected and
    /// never reported has not passed.
    fn finish_unit(
        &mut self,
        r: Running,
        exit: ExitInfo,
        _stdout: &str,
        stderr: &str,
        at: Instant,
        st: &mut State,
    ) {
        let unit = r.plan.id;
        let mut unreported = 0;
        let collected = r.collected.clone().unwrap_or_default();
        for id in collected.iter().filter(|id| !r.finished.contains(*id)) {
            unreported += 1;
            let was_running = r.current.as_deref() == Some(id.as_str());
            let (outcome, message) = if r.cancelled {
                (
                    Outcome::NotRun,
                    "not run: the run was stopped (-x/--maxfail)".to_string(),
                )
            } else if was_running {
                (
                    Outcome::Crashed,
                    format!(
                        "crashed: the pytest process ended ({exit}) while this test was running"
                    ),
                )
            } else {
                st.lost += 1;
                (
                    Outcome::NotRun,
                    format!("not run: the pytest process ended ({exit}) before this test"),
                )
            };
            let duration = r
                .started_at
                .get(id)
                .map(|s| at.duration_since(*s).as_secs_f64())
                .unwrap_or(0.0);
            let phases = r.phases.get(id).cloned().unwrap_or_default();
            let mut result = build_result(id, unit, r.slot, &phases, duration);
            result.outcome = outcome;
            result.teardown_error = false;
            result.message = message.clone();
            if outcome == Outcome::Crashed {
                result.longrepr = format!(
                    "{message}\n\nlast output of the pytest process (stderr):\n{}",
                    last_lines(stderr, 40)
                );
            }
            st.totals.add_result(&result);
            self.bus.emit(Event::TestFinished(result));
            if outcome == Outcome::Crashed {
                self.count_failure(st);
            }
        }
        // pytest ends a unit with 0, 1 or 5 when it ran what it collected; anything else
        // (usage error, internal error, interrupted, a signal) must surface even when some
        // tests were collected and reported.
        let normal_exit = matches!(exit.code, Some(0) | Some(1) | Some(5));
        // A signal while a test ran is that test's crash, already reported as such.
        let attributed = exit.signal.is_some() && r.current.is_some();
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
    }
}

/// pytest's exit codes, decided from the run's state (DESIGN §2.1).
fn exit_code(st: &State) -> u8 {
    if st.unit_error_codes.contains(&Some(exit::USAGE as i32)) {
        return exit::USAGE;
    }
    if st.unit_error_codes.contains(&Some(exit::INTERNAL as i32)) {
        return exit::INTERNAL;
    }
    if st.collect_errors > 0 || !st.unit_error_codes.is_empty() {
        return exit::INTERRUPTED;
    }
    if st.totals.failures() > 0 || st.lost > 0 {
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
    fn exit_code_table() {
        let mut st = State::default();
        assert_eq!(exit_code(&st), exit::NO_TESTS);
        st.reported_any = true;
        assert_eq!(exit_code(&st), exit::OK);
        st.lost = 1;
        assert_eq!(exit_code(&st), exit::TESTS_FAILED);
        st.collect_errors = 1;
        assert_eq!(exit_code(&st), exit::INTERRUPTED);
        st.unit_error_codes.push(Some(3));
        assert_eq!(exit_code(&st), exit::INTERNAL);
        st.unit_error_codes.push(Some(4));
        assert_eq!(exit_code(&st), exit::USAGE);
    }
}
