//! The history store's consumer of the event stream: gathers a run's results and writes them
//! to the history database in one transaction when the run is over.

use std::collections::HashMap;
use std::time::Instant;

use crate::dispatch::Reporter;
use crate::error::Result;
use crate::events::{Event, Outcome};
use crate::history::{History, RunRecord};

pub struct HistoryRecorder {
    history: History,
    record: RunRecord,
    /// Whole files ran (no -k/-m/node-id selection), so per-file sums are true file times.
    whole_files: bool,
    unit_started: HashMap<usize, Instant>,
    broken_files: Vec<String>,
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
            unit_started: HashMap::new(),
            broken_files: Vec::new(),
        }
    }
}

impl Reporter for HistoryRecorder {
    fn on_event(&mut self, event: &Event) {
        match event {
            Event::UnitStarted { unit, .. } => {
                self.unit_started.insert(*unit, Instant::now());
            }
            Event::UnitCollected { unit, .. } => {
                if let Some(start) = self.unit_started.remove(unit) {
                    self.record.startups.push(start.elapsed().as_secs_f64());
                }
            }
            Event::TestFinished(r) => {
                if self.whole_files {
                    let entry = self.record.files.entry(r.file.clone()).or_default();
                    entry.0 += r.duration;
                    entry.1 += 1;
                    if matches!(r.outcome, Outcome::Crashed | Outcome::NotRun) {
                        self.broken_files.push(r.file.clone());
                    }
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
