//! The history store's consumer of the event stream: gathers a run's results and writes them
//! to the history database in one transaction when the run is over.

use std::collections::HashMap;
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
            entry.0 += secs;
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
            // tests are rerun costs its reruns too, and they are not the unit's start-up.
            Event::TestRetry {
                unit,
                nodeid,
                duration,
                ..
            } => {
                self.add_test_time(*unit, file_of(nodeid), *duration, 0);
            }
            Event::TestFinished(r) => {
                self.add_test_time(r.unit, &r.file, r.duration, 1);
                if self.whole_files && matches!(r.outcome, Outcome::Crashed | Outcome::NotRun) {
                    self.broken_files.push(r.file.clone());
                }
                self.record.results.push(r.into());
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
        self.history.record(&self.record)
    }
}
