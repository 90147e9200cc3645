//! Live progress. On a terminal: an indicatif bar (tests done of total, passed and failed so
//! far, elapsed, ETA from predictions) and one line per worker slot saying what it runs.
//! Elsewhere: plain lines, no escape codes: one per finished unit (or per test with -v).

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::dispatch::Reporter;
use crate::events::{Event, Outcome, OutputStream};

#[derive(Default)]
struct Counts {
    done: u64,
    passed: u64,
    failed: u64,
    skipped: u64,
}

pub struct Progress {
    mode: Mode,
    verbosity: i32,
    counts: Counts,
    /// Best known total: parsed estimates until units report what they collected.
    total: u64,
    estimate_by_unit: HashMap<usize, u64>,
    unit_files: HashMap<usize, Vec<String>>,
    unit_results: HashMap<usize, (u64, u64)>,
    units_total: usize,
    units_done: usize,
    predicted_left: f64,
    workers: usize,
    unit_predicted: HashMap<usize, (f64, Instant)>,
}

enum Mode {
    Plain(Box<dyn Write + Send>),
    Tty {
        _multi: MultiProgress,
        main: ProgressBar,
        slots: Vec<ProgressBar>,
    },
}

impl Progress {
    pub fn plain(out: Box<dyn Write + Send>, verbosity: i32) -> Progress {
        Self::with_mode(Mode::Plain(out), verbosity)
    }

    pub fn tty(verbosity: i32) -> Progress {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let main = multi.add(ProgressBar::new(0));
        main.set_style(
            ProgressStyle::with_template(
                "{elapsed:>4} [{bar:30.cyan/blue}] {pos}/{len} tests  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        main.enable_steady_tick(Duration::from_millis(200));
        Self::with_mode(
            Mode::Tty {
                _multi: multi,
                main,
                slots: Vec::new(),
            },
            verbosity,
        )
    }

    fn with_mode(mode: Mode, verbosity: i32) -> Progress {
        Progress {
            mode,
            verbosity,
            counts: Counts::default(),
            total: 0,
            estimate_by_unit: HashMap::new(),
            unit_files: HashMap::new(),
            unit_results: HashMap::new(),
            units_total: 0,
            units_done: 0,
            predicted_left: 0.0,
            workers: 1,
            unit_predicted: HashMap::new(),
        }
    }

    fn eta(&self) -> f64 {
        let running: f64 = self
            .unit_predicted
            .values()
            .map(|(p, started)| (p - started.elapsed().as_secs_f64()).max(0.0))
            .sum();
        (self.predicted_left + running) / self.workers.max(1) as f64
    }

    fn message(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped  ETA {:.0}s",
            self.counts.passed,
            self.counts.failed,
            self.counts.skipped,
            self.eta()
        )
    }

    /// What a unit wrote with pytest's capturing off, on the stream it wrote to, with any
    /// bars out of its way.
    fn pass_on(&mut self, stream: OutputStream, text: &str) {
        // A unit's last line may lack its newline: racefree's next line starts on its own.
        let newline = if text.ends_with('\n') { "" } else { "\n" };
        let write = |out: &mut dyn Write| {
            let _ = out.write_all(text.as_bytes());
            let _ = out.write_all(newline.as_bytes());
            let _ = out.flush();
        };
        match (&mut self.mode, stream) {
            (Mode::Plain(out), OutputStream::Stdout) => write(out.as_mut()),
            (Mode::Plain(_), OutputStream::Stderr) => write(&mut std::io::stderr().lock()),
            (Mode::Tty { main, .. }, _) => main.suspend(|| match stream {
                OutputStream::Stdout => write(&mut std::io::stdout().lock()),
                OutputStream::Stderr => write(&mut std::io::stderr().lock()),
            }),
        }
    }

    fn println(&mut self, line: &str) {
        match &mut self.mode {
            Mode::Plain(out) => {
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            Mode::Tty { main, .. } => main.println(line),
        }
    }
}

impl Reporter for Progress {
    fn on_event(&mut self, event: &Event) {
        match event {
            Event::RunStarted {
                workers,
                units,
                estimated_tests,
                predicted_secs,
                files,
                python,
                rootdir,
                ..
            } => {
                self.total = *estimated_tests;
                self.units_total = *units;
                self.workers = *workers;
                self.predicted_left = *predicted_secs;
                if self.verbosity >= 0 {
                    self.println(&format!(
                        "racefree: rootdir {rootdir}, {files} file(s) in {units} unit(s) on {workers} worker(s), python {python}"
                    ));
                }
                if let Mode::Tty {
                    _multi,
                    main,
                    slots,
                } = &mut self.mode
                {
                    main.set_length(self.total);
                    for i in 0..*workers {
                        let bar = _multi.add(ProgressBar::new_spinner());
                        bar.set_style(
                            ProgressStyle::with_template("  {prefix} {wide_msg}")
                                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                        );
                        bar.set_prefix(format!("gw{i}"));
                        bar.set_message("idle");
                        slots.push(bar);
                    }
                }
            }
            Event::UnitStarted {
                unit,
                slot,
                files,
                predicted_secs,
                estimated_tests,
                reason,
                chunk,
                ..
            } => {
                // A chunk of a split file shows as `tests/test_x.py [1/2]`.
                let files: Vec<String> = match (chunk, files.as_slice()) {
                    (Some(c), [file]) => vec![format!("{file} {c}")],
                    _ => files.clone(),
                };
                if *reason != "planned" {
                    // Resumptions and retries are units the plan did not count.
                    self.units_total += 1;
                }
                self.estimate_by_unit.insert(*unit, *estimated_tests);
                self.unit_files.insert(*unit, files.clone());
                self.predicted_left = (self.predicted_left - predicted_secs).max(0.0);
                self.unit_predicted
                    .insert(*unit, (*predicted_secs, Instant::now()));
                if let Mode::Tty { slots, .. } = &self.mode
                    && let Some(bar) = slots.get(*slot)
                {
                    bar.set_message(files.join(" "));
                }
            }
            Event::UnitCollected { unit, count, .. } => {
                // Replace this unit's share of the estimate by what it really collected.
                let est = self.estimate_by_unit.remove(unit).unwrap_or(0);
                self.total = self.total.saturating_sub(est) + *count as u64;
                if let Mode::Tty { main, .. } = &self.mode {
                    main.set_length(self.total.max(self.counts.done));
                }
            }
            Event::TestStarted { slot, nodeid, .. } => {
                if let Mode::Tty { slots, .. } = &self.mode
                    && let Some(bar) = slots.get(*slot)
                {
                    bar.set_message(nodeid.clone());
                }
            }
            Event::TestFinished(r) => {
                self.counts.done += 1;
                let entry = self.unit_results.entry(r.unit).or_default();
                match r.outcome {
                    // Not counted by pytest's summary either (see TestResult::counted).
                    Outcome::Passed if !r.counted() => {}
                    Outcome::Passed | Outcome::Xpassed => {
                        self.counts.passed += 1;
                        entry.0 += 1;
                        // As pytest counts them: the test passed, its subtests failed.
                        let failed_subtests = r.failed_subtests.len() as u64;
                        self.counts.failed += failed_subtests;
                        entry.1 += failed_subtests;
                    }
                    Outcome::Failed | Outcome::Error | Outcome::Crashed => {
                        // The test, and each of its failed subtests, as pytest counts them.
                        let failed = 1 + r.failed_subtests.len() as u64;
                        self.counts.failed += failed;
                        entry.1 += failed;
                    }
                    Outcome::Skipped | Outcome::Xfailed | Outcome::NotRun => {
                        self.counts.skipped += 1
                    }
                }
                let word = match r.outcome {
                    Outcome::NotRun => "NOT RUN".to_string(),
                    o => o.as_str().to_uppercase(),
                };
                if self.verbosity > 0 {
                    self.println(&format!("{word} {} ({:.2}s)", r.nodeid, r.duration));
                } else if r.outcome.is_failure() && self.verbosity >= 0 {
                    self.println(&format!("{word} {}", r.nodeid));
                }
                if let Mode::Tty { main, .. } = &self.mode {
                    main.set_position(self.counts.done);
                    main.set_message(self.message());
                }
            }
            Event::TestRetry {
                nodeid,
                attempt,
                outcome,
                ..
            } if self.verbosity >= 0 => {
                self.println(&format!(
                    "RETRY {nodeid} (attempt {attempt} {})",
                    outcome.as_str()
                ));
            }
            Event::Output { stream, text, .. } => self.pass_on(*stream, text),
            Event::Leak {
                nodeid,
                pid,
                cmdline,
                ..
            } if self.verbosity >= 0 => {
                let test = nodeid.as_deref().unwrap_or("unknown test");
                self.println(&format!("LEAK {test}: killed pid {pid}: {cmdline}"));
            }
            Event::InfraRetry {
                unit, exit, retry, ..
            } if self.verbosity >= 0 => {
                self.println(&format!(
                    "INFRA RETRY unit {unit} ({exit} before any test; retry {retry})"
                ));
            }
            Event::CollectError {
                nodeid, outcome, ..
            } if outcome == "failed" && self.verbosity >= 0 => {
                self.println(&format!("ERROR collecting {nodeid}"));
            }
            Event::UnitFinished {
                unit,
                slot,
                duration,
                ..
            } => {
                self.units_done += 1;
                self.unit_predicted.remove(unit);
                let files = self.unit_files.remove(unit).unwrap_or_default();
                let (p, f) = self.unit_results.remove(unit).unwrap_or_default();
                if matches!(self.mode, Mode::Plain(_)) && self.verbosity == 0 {
                    let shown = if files.len() > 3 {
                        format!("{} and {} more", files[..3].join(" "), files.len() - 3)
                    } else {
                        files.join(" ")
                    };
                    let line = format!(
                        "[{}/{} units, {}/{} tests] {shown}: {p} passed, {f} failed ({duration:.2}s)",
                        self.units_done, self.units_total, self.counts.done, self.total
                    );
                    self.println(&line);
                }
                if let Mode::Tty { slots, main, .. } = &self.mode {
                    if let Some(bar) = slots.get(*slot) {
                        bar.set_message("idle");
                    }
                    main.set_message(self.message());
                }
            }
            Event::RunFinished { .. } => {
                if let Mode::Tty { main, slots, .. } = &self.mode {
                    for s in slots {
                        s.finish_and_clear();
                    }
                    main.finish_and_clear();
                }
            }
            _ => {}
        }
    }
}
