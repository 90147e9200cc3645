//! The history store's consumer of the event stream: gathers a run's results and writes them
//! to the history database in one transaction when the run is over.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use crate::dispatch::Reporter;
use crate::durations::file_of;
use crate::error::Result;
use crate::events::{Event, Outcome};
use crate::history::{History, RunRecord};

pub struct HistoryRecorder {
    history: History,
    record: RunRecord,
    /// Whole files ran (no -k/-m/node-id selection), so per-file sums are true file times.
    whole_files: bool,
    /// Per running unit: the sum of its tests' durations so far.
    unit_tests: HashMap<usize, f64>,
    broken_files: Vec<String>,
    /// Units of one file, from their start: when their collection ends, that is the file's
    /// collection time (start-up included).
    single_file: HashMap<usize, (String, Instant)>,
    /// Units that run failed tests again (racefree's `--retries`): the failed attempt's time
    /// was the file's, in its own unit; the retry's is not the file's again.
    retry_units: HashSet<usize>,
}

impl HistoryRecorder {
    pub fn new(
        history: History,
        run_id: String,
        workers: usize,
        whole_files: bool,
    ) -> HistoryRecorder {
        HistoryRecorder {
            history,
            record: RunRecord {
                run_id,
                workers,
                ..RunRecord::default()
            },
            whole_files,
            unit_tests: HashMap::new(),
            broken_files: Vec::new(),
            single_file: HashMap::new(),
            retry_units: HashSet::new(),
        }
    }

    /// Units are forked from warm servers: learn their overhead apart from spawns'.
    pub fn forked(mut self, forked: bool) -> HistoryRecorder {
        self.record.forked = forked;
        self
    }
}

impl HistoryRecorder {
    /// Adds a test attempt's seconds to its unit's test time and, when whole files ran, to
    /// its file's time; `tests` counts it as one of the file's tests (a final attempt).
    fn add_test_time(&mut self, unit: usize, file: &str, secs: f64, tests: u64) {
        if let Some(sum) = self.unit_tests.get_mut(&unit) {
            *sum += secs;
        }
        if self.whole_files {
            let entry = self.record.files.entry(file.to_owned()).or_default();
            if !self.retry_units.contains(&unit) {
                entry.0 += secs;
            }
            entry.1 += tests;
        }
    }
}

impl Reporter for HistoryRecorder {
    fn on_event(&mut self, event: &Event) {
        match event {
            Event::UnitStarted {
                unit,
                files,
                reason,
                ..
            } => {
                self.unit_tests.insert(*unit, 0.0);
                if *reason == "retry" {
                    self.retry_units.insert(*unit);
                }
                // Resumptions and retries collect the whole file too, but start in a hurry
                // after a crash: only planned units measure a file's collection.
                if let ([file], "planned") = (files.as_slice(), *reason) {
                    self.single_file
                        .insert(*unit, (file.clone(), Instant::now()));
                }
            }
            Event::UnitCollected { unit, .. } => {
                if let Some((file, at)) = self.single_file.remove(unit) {
                    let secs = at.elapsed().as_secs_f64();
                    // Chunks of one file measure the same thing: keep the largest.
                    let entry = self.record.collect.entry(file).or_insert(secs);
                    *entry = entry.max(secs);
                }
            }
            Event::UnitFinished {
                unit,
                duration,
                error,
                cancelled,
                exit,
                ..
            } => {
                // A unit's overhead is everything but its tests: interpreter start-up,
                // imports and collection, and the exit (some suites' plugins take seconds
                // to shut down). The planner packs files so this is paid rarely.
                let tests = self.unit_tests.remove(unit).unwrap_or(0.0);
                self.single_file.remove(unit);
                // A process that exited 3 or 4 before any test (retried as an infrastructure
                // failure) says nothing about the suite's start-up.
                let infra = matches!(exit.code, Some(3) | Some(4));
                if error.is_none() && !cancelled && !infra {
                    self.record.startups.push((duration - tests).max(0.0));
                }
            }
            // A failed attempt (retried by racefree, or rerun in place by a plugin such as
            // pytest-rerunfailures) took its unit's time like a final one: a file whose
            // tests are rerun in place costs its reruns too, and they are not the unit's
            // start-up. (A retry in a unit of its own is that unit's time, not the file's.)
            Event::TestRetry {
                unit,
                nodeid,
                duration,
                ..
            } => {
                self.add_test_time(*unit, file_of(nodeid), *duration, 0);
            }
            // A file that failed to collect is one of the run's failures, as in pytest's
            // last-failed: `--lf` runs it again.
            Event::CollectError {
                nodeid, outcome, ..
            } if outcome == "failed" => {
                self.record.results.push(crate::history::TestRecord {
                    nodeid: nodeid.clone(),
                    file: nodeid.clone(),
                    outcome: Outcome::Error,
                    teardown_error: false,
                    duration: 0.0,
                    flaky: false,
                });
            }
            Event::TestFinished(r) => {
                self.add_test_time(r.unit, &r.file, r.duration, 1);
                if self.whole_files && matches!(r.outcome, Outcome::Crashed | Outcome::NotRun) {
                    self.broken_files.push(r.file.clone());
                }
                self.record.results.push(r.as_ref().into());
            }
            Event::RunFinished {
                exit_code,
                duration,
                ..
            } => {
                self.record.exit_code = *exit_code;
                self.record.duration = *duration;
            }
            _ => {}
        }
    }

    fn finish(&mut self) -> Result<()> {
        // A file whose unit crashed or was stopped did not run whole: its sum is not its time.
        for f in &self.broken_files {
            self.record.files.remove(f);
        }
        // The run's results are in its report, its JUnit and its events: a store that
        // cannot take them (read-only, damaged) is worth a line, not a failed run.
        if self.history.is_read_only() {
            eprintln!(
                "racefree: warning: this run was not added to history: {} is read-only (it was still read to plan the run)",
                self.history.path().display()
            );
        } else if let Err(e) = self.history.record(&self.record) {
            eprintln!("racefree: warning: this run was not added to history: {e}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{ExitInfo, TestResult, Totals};

    fn started(unit: usize, reason: &'static str) -> Event {
        Event::UnitStarted {
            unit,
            slot: 0,
            pid: 1,
            attempt: 1,
            reason,
            files: vec!["a.py".into()],
            chunk: None,
            estimated_tests: 1,
            predicted_secs: 1.0,
        }
    }

    fn finished(unit: usize) -> Event {
        Event::UnitFinished {
            unit,
            slot: 0,
            exit: ExitInfo::default(),
            pytest_exitstatus: Some(0),
            duration: 2.5,
            unreported: 0,
            error: None,
            cancelled: false,
        }
    }

    fn passed(unit: usize, duration: f64) -> TestResult {
        TestResult {
            unit,
            attempt: 2,
            flaky: true,
            ..TestResult::sample("a.py::t", Outcome::Passed, duration)
        }
    }

    fn retried(unit: usize, delay: f64) -> Event {
        Event::TestRetry {
            unit,
            slot: 0,
            nodeid: "a.py::t".into(),
            attempt: 1,
            outcome: Outcome::Failed,
            message: String::new(),
            duration: 2.0,
            delay,
        }
    }

    /// The file's time recorded for a run of `events`.
    fn file_time(events: Vec<Event>) -> f64 {
        let dir = tempfile::tempdir().unwrap();
        let history = History::open(dir.path()).unwrap();
        let mut recorder = HistoryRecorder::new(history, "r".into(), 1, true);
        for event in &events {
            recorder.on_event(event);
        }
        recorder.on_event(&Event::RunFinished {
            totals: Totals::default(),
            collect_errors: 0,
            exit_code: 0,
            duration: 5.0,
            interrupted: None,
            not_started: vec![],
            not_run_message: String::new(),
            not_found: vec![],
        });
        recorder.finish().unwrap();
        History::open(dir.path())
            .unwrap()
            .predictions()
            .unwrap()
            .files["a.py"]
    }

    #[test]
    fn a_file_costs_the_attempts_its_own_unit_ran() {
        // pytest-rerunfailures ran the failed attempt and the passing one in the file's unit.
        let in_place = vec![
            started(0, "planned"),
            retried(0, 0.0),
            Event::TestFinished(Box::new(passed(0, 2.0))),
            finished(0),
        ];
        assert_eq!(file_time(in_place), 4.0);
        // racefree ran the second attempt in a unit of its own: that is not the file's time.
        let retried_apart = vec![
            started(0, "planned"),
            retried(0, 0.1),
            finished(0),
            started(1, "retry"),
            Event::TestFinished(Box::new(passed(1, 2.0))),
            finished(1),
        ];
        assert_eq!(file_time(retried_apart), 2.0);
    }
}
