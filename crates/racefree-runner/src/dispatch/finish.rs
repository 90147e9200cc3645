//! What happens when a test or a unit ends: a failed test is retried or published with its
//! earlier attempts; a dead unit's leftovers are killed and reported, its unreached tests
//! resumed, and an infrastructure failure retried, all by the rules in `recovery`.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use super::text::{build_result, last_lines, read_fault_file, traceback_section, usage_error};
use super::unit::{Job, Reason, Running};
use super::{Dispatcher, State};
use crate::error::exit;
use crate::events::{Event, ExitInfo, Outcome, Rerun, TestResult, Wire};
use crate::procs;
use crate::recovery;

impl Dispatcher<'_> {
    /// A test's attempt is over: try it again in a fresh process if the policy allows,
    /// otherwise publish it as final, with the failed attempts before it.
    pub(super) fn conclude(&mut self, mut result: TestResult, st: &mut State) {
        // racefree's own retries are counted apart from the attempts a plugin ran again in
        // the same process (see plugin_rerun): `--retries N` means N fresh processes.
        let own_retry = st.own_retries.get(&result.nodeid).copied().unwrap_or(0) + 1;
        let retry = st.stop_reason.is_none()
            && !st.retries_closed
            && recovery::should_retry(
                result.outcome,
                result.teardown_error,
                own_retry,
                self.policy.retries,
            );
        if retry && let Some(file) = self.files.iter().position(|f| f.rel == result.file) {
            let delay = recovery::retry_delay(own_retry);
            st.own_retries.insert(result.nodeid.clone(), own_retry);
            let id = st.next_id;
            st.next_id += 1;
            st.queue.push_back(Job {
                id,
                files: vec![file],
                selection: Some(BTreeMap::from([(
                    result.file.clone(),
                    vec![result.nodeid.clone()],
                )])),
                attempt: result.attempt + 1,
                predicted: result.duration,
                reason: Reason::Retry,
                not_before: Some(Instant::now() + delay),
                infra_retries: 0,
                chunk: None,
            });
            self.keep_failed_attempt(result, delay, st);
            return;
        }
        if let Some(before) = st.reruns.remove(&result.nodeid) {
            result.reruns = before.iter().map(Rerun::from).collect();
        }
        let failed =
            result.outcome.is_failure() || result.teardown_error || result.fails_by_subtests();
        result.flaky = !result.reruns.is_empty() && result.outcome == Outcome::Passed && !failed;
        // As pytest's -x/--maxfail counts failed reports: the test's own, and one per
        // failed subtest.
        let own = usize::from(result.outcome.is_failure() || result.teardown_error);
        let failures = own + result.failed_subtests.len();
        st.totals.add_result(&result);
        st.reported_any = true;
        self.bus.emit(Event::TestFinished(Box::new(result)));
        for _ in 0..failures {
            self.count_failure(st);
        }
    }

    /// An attempt of a test that a pytest plugin (pytest-rerunfailures) runs again in the
    /// same process, right away: kept as a failed attempt, as racefree's own retries keep
    /// theirs, so the test's result (from its last attempt) lists it and a pass after it is
    /// flaky. Its outcome is that of the report the plugin marked "rerun".
    pub(super) fn plugin_rerun(&mut self, mut result: TestResult, st: &mut State) {
        if result.teardown_error && !result.outcome.is_failure() {
            // The call passed and the teardown's error is what is run again.
            result.outcome = Outcome::Error;
            result.message = std::mem::take(&mut result.teardown_message);
            result.longrepr = std::mem::take(&mut result.teardown_longrepr);
            result.teardown_error = false;
        }
        self.keep_failed_attempt(result, Duration::ZERO, st);
    }

    /// Says that `result`, a failed attempt, runs again after `delay`, and keeps it for the
    /// test's final result; the next attempt is numbered after it.
    fn keep_failed_attempt(&mut self, result: TestResult, delay: Duration, st: &mut State) {
        self.bus.emit(Event::TestRetry {
            unit: result.unit,
            slot: result.slot,
            nodeid: result.nodeid.clone(),
            attempt: result.attempt,
            outcome: result.outcome,
            message: result.message.clone(),
            duration: result.duration,
            delay: delay.as_secs_f64(),
        });
        st.attempts
            .insert(result.nodeid.clone(), result.attempt + 1);
        st.reruns
            .entry(result.nodeid.clone())
            .or_default()
            .push(result);
    }

    /// The unit's files that are gone, checked twice ~100 ms apart (a file being replaced
    /// by an editor or a checkout may be briefly absent).
    pub(super) fn missing_files(&self, job: &Job) -> Vec<String> {
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
    pub(super) fn finish_unit(
        &mut self,
        mut r: Running,
        exit: ExitInfo,
        _stdout: &str,
        stderr: &str,
        at: Instant,
        st: &mut State,
    ) {
        let unit = r.job.id;
        let leftovers = if r.handle.swept_by_init {
            Vec::new()
        } else {
            procs::kill_leftovers(&r.tag, Some(r.handle.pid))
        };
        let escaped = r
            .escaped
            .iter()
            .filter(|e| !leftovers.iter().any(|l| l.pid == e.pid))
            .cloned();
        let unreported = escaped
            .collect::<Vec<_>>()
            .into_iter()
            .chain(leftovers)
            .filter(|l| !r.leaks_reported.contains(&l.pid));
        for leak in unreported.collect::<Vec<_>>() {
            self.bus.emit(Event::Leak {
                unit,
                slot: r.slot,
                nodeid: leak.nodeid,
                pid: leak.pid,
                cmdline: leak.cmdline,
            });
        }
        let fault = read_fault_file(&self.session.fault_file(unit, r.job.attempt));
        // A conftest file among the unit's first ones that fails to import stops pytest
        // before it collects (exit 4). Plain `pytest` at the top imports it while
        // collecting and reports that directory's collection error (exit 2): so does racefree.
        if !r.cancelled
            && exit.code == Some(4)
            && r.collected.is_none()
            && !r.reported_collect
            && let Some((dir, message)) = conftest_import_error(stderr, &self.ctx.rootdir)
            && !self
                .initial_dirs
                .iter()
                .any(|d| d.starts_with(self.ctx.rootdir.join(&dir)))
        {
            let wire = Wire::Collect {
                id: dir,
                outcome: "failed".into(),
                longrepr: last_lines(stderr, 40),
                message,
                skip_where: None,
                skip_details: None,
            };
            self.on_wire(&mut r, wire, at, st);
            r.collected = Some(Vec::new());
        }
        // pytest refused the arguments every unit shares (an unknown option, a bad -k, a
        // plugin that does not import): every unit would say the same. The run stops, and
        // pytest's message is said once, not retried as an infrastructure failure.
        if !r.cancelled
            && exit.code == Some(i32::from(exit::USAGE))
            && r.finished.is_empty()
            && r.current.is_none()
            // Not a collection error already reported (a conftest's, say). A bad -k is
            // refused after collecting.
            && !r.reported_collect
            && let Some(message) = usage_error(stderr)
        {
            st.stop(
                format!("pytest refused the run's arguments: {message}"),
                "not run: pytest refused the run's arguments",
            );
            st.unit_error_codes.push(Some(i32::from(exit::USAGE)));
            let error = Some(format!("pytest: {message}"));
            self.bus.emit(r.finished_event(exit, at, 0, error, false));
            return;
        }
        let reported_here = !r.finished.is_empty() || r.current.is_some() || r.reported_collect;
        if !r.cancelled
            && !reported_here
            && matches!(exit.code, Some(3) | Some(4))
            && self.infrastructure_failure(&r, exit, stderr, at, st)
        {
            return;
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
        // What the unit's process said of test `id`'s current attempt before it ended.
        let reported_so_far = |id: &str, st: &State| {
            let duration = r
                .started_at
                .get(id)
                .map(|s| at.duration_since(*s).as_secs_f64())
                .unwrap_or(0.0);
            let phases = r.phases.get(id).cloned().unwrap_or_default();
            let mut result = build_result(id, unit, r.slot, &phases, duration);
            result.attempt = Self::attempt_of(st, id);
            result.subtest_counts = r.subtest_counts.get(id).cloned().unwrap_or_default();
            result
        };
        if let Some(id) = &rec.culprit {
            let mut result = reported_so_far(id, st);
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
            let mut result = reported_so_far(id, st);
            if r.exited_by_request && result.when.as_deref() == Some("call") {
                // pytest.exit() in its teardown (or a finalizer): its call's result stands,
                // as pytest counts it.
                self.conclude(result, st);
                continue;
            }
            let message = if r.cancelled {
                st.not_run_message.clone()
            } else {
                st.lost += 1;
                format!("not run: the pytest process ended ({exit}) before this test")
            };
            result.outcome = Outcome::NotRun;
            result.teardown_error = false;
            result.message = message;
            result.longrepr.clear();
            self.conclude(result, st);
        }
        if !rec.resume.is_empty() {
            self.resume(&r.job, rec.resume, st);
        }
        // pytest ends a unit with 0, 1 or 5 when it ran what it collected (or 7, with
        // pytest-rerunfailures's --fail-on-flaky, when some passed only on a rerun); anything else
        // (usage error, internal error, interrupted, a signal) must surface even when some
        // tests were collected and reported. So must 1 from a process that collected nothing
        // and never said how its session ended: Python failed before pytest could (a pytest
        // that breaks on import, a conftest file that exits), and the tests of its files,
        // which racefree never saw collected, would be missing without a word.
        let died_early =
            exit.code == Some(1) && r.collected.is_none() && r.pytest_exitstatus.is_none();
        // Only where the session itself ended well (the plugin turns 0 into 7; the status
        // racefree's plugin reports is pytest's own): a conftest's pytest.exit(returncode=7)
        // is no flaky test.
        let flaky_exit = self.policy.units_exit_7_on_flaky
            && exit.code == Some(7)
            && r.pytest_exitstatus == Some(0);
        // A conftest file that fails to import leaves its directory's files without a
        // collector, and pytest then also says "found no collectors" and exits 4: the
        // collection error, already reported (exit 2), is the whole story.
        let collection_broke = exit.code == Some(4)
            && r.collect_failed
            && r.collected.as_ref().is_some_and(|ids| ids.is_empty());
        let normal_exit =
            (matches!(exit.code, Some(0) | Some(1) | Some(5)) || flaky_exit || collection_broke)
                && !died_early;
        // A process that ended while a test ran, by a signal or by exiting before pytest
        // could finish its session (`os._exit(4)` in the test), ended with that test: its
        // crash (or timeout) is already reported, and the status is the test's doing, not
        // pytest's (a usage error or an internal error would have come from pytest itself,
        // which says how its session ended).
        let attributed = rec.culprit.is_some()
            && (exit.signal.is_some() || r.timed_out.is_some() || r.pytest_exitstatus.is_none());
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
        self.bus
            .emit(r.finished_event(exit, at, unreported, error, r.cancelled));
    }

    /// Queues the tests a dead unit never reached as a new unit, ahead of other work, in a
    /// fresh process that runs exactly them (the plugin's per-file node-id selection).
    pub(super) fn resume(&mut self, job: &Job, ids: Vec<String>, st: &mut State) {
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
            // Explicit ids: what a chunk never reached, whichever chunk it was.
            chunk: None,
        });
    }

    /// A unit whose pytest exited 3 or 4 before reporting anything: retried (visibly, with
    /// backoff, a bounded number of times) while its files exist, failed at once when one is
    /// gone. Returns whether the unit was dealt with here.
    fn infrastructure_failure(
        &mut self,
        r: &Running,
        exit: ExitInfo,
        stderr: &str,
        at: Instant,
        st: &mut State,
    ) -> bool {
        let unit = r.job.id;
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
                self.bus.emit(r.finished_event(exit, at, 0, None, false));
                true
            }
            recovery::Infra::FilesGone(files) => {
                st.unit_error_codes.push(Some(exit::USAGE as i32));
                let unreported = r.collected.as_ref().map_or(0, Vec::len);
                let error = Some(format!(
                    "file(s) gone since discovery, not retried: {}\n{}",
                    files.join(", "),
                    last_lines(stderr, 20)
                ));
                self.bus
                    .emit(r.finished_event(exit, at, unreported, error, false));
                true
            }
            recovery::Infra::NotInfra | recovery::Infra::GiveUp => false,
        }
    }
}

/// The rootdir-relative directory of the conftest file whose import error stopped pytest
/// before collection (its stderr's "ImportError while loading conftest '<path>'."), with
/// the error's last line, or None.
fn conftest_import_error(stderr: &str, rootdir: &std::path::Path) -> Option<(String, String)> {
    const MARK: &str = "ImportError while loading conftest '";
    let start = stderr.find(MARK)? + MARK.len();
    let path = &stderr[start..start + stderr[start..].find('\'')?];
    let dir = std::path::Path::new(path).parent()?;
    let rel = dir.strip_prefix(rootdir).ok()?;
    let id = if rel.as_os_str().is_empty() {
        ".".to_string()
    } else {
        rel.to_string_lossy().into_owned()
    };
    let message = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("E   "))
        .unwrap_or("ImportError while loading conftest")
        .trim()
        .to_string();
    Some((id, message))
}
