//! Events: the messages the pytest plugin sends (`Wire`), and the facts racefree publishes
//! to its consumers (`Event`: progress, summary, JUnit, NDJSON log, history). Every
//! observable fact of a run is one `Event`; consumers see nothing else.

use serde::{Deserialize, Serialize};

/// One line from the plugin (python/racefree_pytest). Unknown kinds are rejected so a
/// protocol mismatch is loud.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "e", rename_all = "snake_case")]
pub enum Wire {
    Hello {
        pid: u32,
        pytest: String,
    },
    Collected {
        ids: Vec<String>,
        #[serde(default)]
        deselected: u64,
        /// Ids of the unit's node-id selection that selected nothing it collected.
        #[serde(default)]
        unmatched: Vec<String>,
    },
    Collect {
        id: String,
        outcome: String,
        #[serde(default)]
        longrepr: String,
        #[serde(default)]
        message: String,
        /// For a skipped collector: where, as pytest's summary names it (see `PhaseReport`).
        #[serde(default)]
        skip_where: Option<SkipWhere>,
        /// For a skipped collector, when racefree writes JUnit XML: pytest's element text.
        #[serde(default)]
        skip_details: Option<String>,
    },
    Start {
        id: String,
        /// The test's own limit in seconds, from a `timeout` marker.
        #[serde(default)]
        timeout: Option<f64>,
    },
    Report(Box<PhaseReport>),
    Finish {
        id: String,
        /// Seconds from the test's start to its end, as the plugin measured them.
        #[serde(default)]
        duration: Option<f64>,
        /// The test's place in its file's whole collection, when the unit ran part of the
        /// file (a chunk of a split file, a resumption).
        #[serde(default)]
        position: Option<u64>,
    },
    /// Every `record_testsuite_property` the process recorded so far (name, value as text).
    SuiteProperties {
        properties: Vec<(String, String)>,
    },
    /// `pytest.exit()`, or a KeyboardInterrupt the unit raised itself, ended the unit's
    /// session: the run ends so (see the dispatcher).
    Exit {
        reason: String,
        #[serde(default)]
        returncode: Option<i32>,
        /// A KeyboardInterrupt, not `pytest.exit()`.
        #[serde(default)]
        interrupt: bool,
    },
    Done {
        exitstatus: i32,
        /// Warnings of the unit's tests and files (those pytest recorded while configuring
        /// itself come as `Warning` messages with `config`, counted once for the run).
        #[serde(default)]
        warnings: u64,
        /// The status a `pytest_sessionfinish` hook (a conftest's, say) set in place of
        /// `exitstatus`, which pytest then exits with; absent if none changed it.
        #[serde(default, rename = "final")]
        final_status: Option<i32>,
    },
    /// pytest-cov measures the unit: the options of its report (source, report, config,
    /// append, branch, precision, fail_under, no_cov_on_fail), which racefree applies once
    /// for the run (see `coverage`).
    Coverage {
        #[serde(flatten)]
        options: serde_json::Map<String, serde_json::Value>,
    },
    /// What other plugins' and conftests' `pytest_terminal_summary` wrote in the unit (a
    /// section of Hypothesis's statistics, a conftest's lines), sent after `Done`.
    PluginSummary {
        text: String,
        /// One of them raised (its traceback ends `text`): pytest's process dies of it,
        /// with exit 1, after its session finished.
        #[serde(default)]
        raised: bool,
    },
    /// Modules the unit imported that a fork server could preload (see `forkserver`).
    Imports {
        modules: Vec<String>,
    },
    /// A process the unit left behind, found by whoever watches the unit's processes (a PID
    /// namespace init reports these on the event pipe, and has killed them). `pid` is for
    /// the report only: racefree never signals it (an init that cannot tell the host's pid
    /// reports its own view).
    Leak {
        pid: u32,
        cmdline: String,
        /// The test that was running when it was started (its RACEFREE_TEST), when known.
        #[serde(default)]
        test: Option<String>,
    },
    /// A warning pytest recorded: where (the test's node id, or `path:line`) and pytest's
    /// text for it; `config` when pytest recorded it while configuring itself (every unit
    /// has those: the run shows each once).
    Warning {
        #[serde(default)]
        location: String,
        message: String,
        #[serde(default)]
        config: bool,
    },
}

/// One phase (setup, call, teardown) of one test, as pytest reported it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseReport {
    pub id: String,
    pub when: String,
    pub outcome: String,
    #[serde(default)]
    pub longrepr: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub head_line: String,
    #[serde(default)]
    pub sections: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasxfail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
    /// Where a skip happened, as pytest's folded summary line names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_where: Option<SkipWhere>,
    /// How pytest's terminal counts this report ("passed", "subtests passed", "" ...).
    #[serde(default)]
    pub category: String,
    /// pytest's word for it in summaries (e.g. "SUBFAILED[msg] (i=2)").
    #[serde(default)]
    pub word: String,
    /// A pytest 9 subtest's report (several per test, all with `when == "call"`).
    #[serde(default)]
    pub subtest: bool,
    /// What the test recorded with `record_property` so far: (name, value as text).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<(String, String)>,
    /// Under pytest's `--tb=line`: the failure's one line (`path:line: message`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_line: Option<String>,
    /// When racefree writes JUnit XML: pytest's text for a skip's `<skipped>` element.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_details: Option<String>,
    /// When racefree writes JUnit XML: the testcase's attributes as pytest's junitxml sets
    /// them (with `record_xml_attribute`'s), when they may differ from racefree's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xml_attributes: Vec<(String, String)>,
    /// When racefree writes JUnit XML: the `<system-out>`/`<system-err>` elements pytest's
    /// junitxml appends for this report under `junit_logging`: (tag, text).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub junit_output: Vec<(String, String)>,
}

/// Where a test or module was skipped: the path relative to where pytest was started, and
/// the line (none for a test skipped by its own `skip` marker), as pytest's folded
/// `SKIPPED [N] path:line: reason` lines say it.
pub type SkipWhere = (String, Option<u64>);

impl Wire {
    pub fn parse(line: &str) -> Result<Wire, serde_json::Error> {
        serde_json::from_str(line)
    }
}

/// A test's result, in pytest's terms plus racefree's two: `crashed` (its process died
/// before reporting it) and `not_run` (the run stopped before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Passed,
    Failed,
    Error,
    Skipped,
    Xfailed,
    Xpassed,
    Crashed,
    NotRun,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
            Outcome::Error => "error",
            Outcome::Skipped => "skipped",
            Outcome::Xfailed => "xfailed",
            Outcome::Xpassed => "xpassed",
            Outcome::Crashed => "crashed",
            Outcome::NotRun => "not_run",
        }
    }

    /// Whether this outcome makes the run fail (exit 1).
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::Error | Outcome::Crashed)
    }
}

/// The final word on one test.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestResult {
    pub nodeid: String,
    /// The file part of the node id (rootdir-relative).
    pub file: String,
    pub unit: usize,
    pub slot: usize,
    pub attempt: u32,
    pub outcome: Outcome,
    /// A teardown that failed after the test's own outcome was known: pytest counts it as
    /// an extra error beside that outcome ("1 passed, 1 error").
    pub teardown_error: bool,
    /// Seconds from the test's start to its end, as racefree's plugin measured them in the
    /// test's process (the arrival of its messages, if the plugin did not say).
    pub duration: f64,
    /// One-line reason: the crash message, skip reason or xfail reason.
    pub message: String,
    /// Full failure text (traceback) of the phase that decided the outcome.
    pub longrepr: String,
    /// Teardown failure text and its one-line message when `teardown_error`.
    pub teardown_longrepr: String,
    pub teardown_message: String,
    /// The phase that failed or skipped, if any.
    pub when: Option<String>,
    pub head_line: String,
    /// Captured output of failing phases: (title, text).
    pub sections: Vec<(String, String)>,
    /// Under pytest's `--tb=line`: the failure's one line (`path:line: message`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crash_line: Option<String>,
    /// Its place in its file's collection, when its unit ran part of the file (see
    /// `Wire::Finish`): the report puts a split file's tests back in pytest's order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// Captured output as the failed teardown's report holds it (every phase's), when
    /// `teardown_error`; under pytest's `-rP`/`-rX`, the passing teardown's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub teardown_sections: Vec<(String, String)>,
    /// What the test recorded with `record_property`: (name, value), for JUnit.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<(String, String)>,
    /// The rest of what pytest's junitxml takes from the test, when racefree writes JUnit.
    #[serde(skip_serializing_if = "JunitExtras::is_empty")]
    pub junit: Box<JunitExtras>,
    /// Where it was skipped, when it was (see `SkipWhere`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_where: Option<SkipWhere>,
    /// Reports of the test's subtests that failed (pytest 9's `subtests` fixture).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed_subtests: Vec<PhaseReport>,
    /// This attempt's subtest reports by pytest's category for them: counted in the run's
    /// totals only if the attempt is the test's last (an earlier one's are superseded, as
    /// pytest-rerunfailures drops them from pytest's own counts).
    #[serde(skip)]
    pub subtest_counts: std::collections::BTreeMap<String, u64>,
    /// It failed first and passed on a retry.
    pub flaky: bool,
    /// The earlier attempts that failed, oldest first (their output is kept).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reruns: Vec<Rerun>,
}

#[cfg(test)]
impl TestResult {
    /// For tests: a result of `nodeid` decided in its call phase, with nothing else to say.
    pub fn sample(nodeid: &str, outcome: Outcome, duration: f64) -> TestResult {
        TestResult {
            nodeid: nodeid.into(),
            file: crate::durations::file_of(nodeid).into(),
            unit: 0,
            slot: 0,
            attempt: 1,
            outcome,
            teardown_error: false,
            duration,
            message: String::new(),
            longrepr: String::new(),
            teardown_longrepr: String::new(),
            teardown_message: String::new(),
            teardown_sections: Vec::new(),
            properties: Vec::new(),
            junit: Box::default(),
            skip_where: None,
            when: Some("call".into()),
            head_line: String::new(),
            sections: vec![],
            crash_line: None,
            position: None,
            failed_subtests: vec![],
            subtest_counts: Default::default(),
            flaky: false,
            reruns: vec![],
        }
    }
}

impl TestResult {
    /// Whether pytest's summary counts this result: a test whose setup and teardown passed
    /// and that had no call (`--setup-only`) is in pytest's JUnit report as passed, but not
    /// in its summary line.
    pub fn counted(&self) -> bool {
        !(self.outcome == Outcome::Passed && self.when.is_none())
    }

    /// A test that passed itself but has failed subtests (unittest's `subTest`, whose
    /// failures pytest reports apart from the test): pytest fails the run for them, lists
    /// the test as failed in JUnit and in `--lf`'s last failures.
    pub fn fails_by_subtests(&self) -> bool {
        matches!(self.outcome, Outcome::Passed | Outcome::Xpassed)
            && !self.failed_subtests.is_empty()
    }
}

/// What pytest's junitxml takes from a test beyond its outcome, sent by the plugin only when
/// racefree writes JUnit XML (see `PhaseReport`'s fields of the same names).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JunitExtras {
    /// A skip's (or a skipped module's) `<skipped>` element text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_details: Option<String>,
    /// The testcase's attributes, as pytest sets them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub xml_attributes: Vec<(String, String)>,
    /// `<system-out>`/`<system-err>` elements: (tag, text), in pytest's order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub output: Vec<(String, String)>,
    /// Those of a failed teardown, which pytest writes in a testcase of their own after a
    /// failed call (see `TestResult::teardown_error`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub teardown_output: Vec<(String, String)>,
}

impl JunitExtras {
    pub fn is_empty(&self) -> bool {
        *self == JunitExtras::default()
    }
}

/// One failed attempt of a test that was then tried again.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rerun {
    pub attempt: u32,
    pub outcome: Outcome,
    pub message: String,
    pub longrepr: String,
    pub sections: Vec<(String, String)>,
    pub duration: f64,
}

impl From<&TestResult> for Rerun {
    fn from(r: &TestResult) -> Rerun {
        Rerun {
            attempt: r.attempt,
            outcome: r.outcome,
            message: if r.message.is_empty() {
                r.teardown_message.clone()
            } else {
                r.message.clone()
            },
            longrepr: if r.longrepr.is_empty() {
                r.teardown_longrepr.clone()
            } else {
                r.longrepr.clone()
            },
            sections: r.sections.clone(),
            duration: r.duration,
        }
    }
}

/// The outcome pytest-rerunfailures gives the report of an attempt it runs again: a failure
/// of that attempt (in its call, or an error in setup or teardown).
pub const RERUN: &str = "rerun";

/// Derives a test's outcome from its phase reports the way pytest's terminal counts them.
pub fn derive_outcome(phases: &[PhaseReport]) -> (Outcome, bool, Option<&PhaseReport>) {
    let mut outcome: Option<(Outcome, Option<&PhaseReport>)> = None;
    let mut teardown_error = false;
    for phase in phases {
        let xfail = phase.wasxfail.is_some();
        let this = match (phase.when.as_str(), phase.outcome.as_str()) {
            ("call", "passed") if xfail => Some(Outcome::Xpassed),
            ("call", "passed") => Some(Outcome::Passed),
            ("call", "failed" | RERUN) => Some(Outcome::Failed),
            (_, RERUN) => Some(Outcome::Error),
            (_, "skipped") if xfail => Some(Outcome::Xfailed),
            (_, "skipped") => Some(Outcome::Skipped),
            (_, "failed") => Some(Outcome::Error),
            _ => None,
        };
        let Some(this) = this else { continue };
        if outcome.is_none() {
            outcome = Some((this, Some(phase)));
        } else if phase.when == "teardown" && this == Outcome::Error {
            teardown_error = true;
        }
    }
    match outcome {
        Some((o, p)) => (o, teardown_error, p),
        // Reports exist but none decided (e.g. setup and teardown passed without a call):
        // pytest shows nothing; treat as passed only if every phase passed.
        None if !phases.is_empty() && phases.iter().all(|p| p.outcome == "passed") => {
            (Outcome::Passed, false, None)
        }
        None => (Outcome::Crashed, false, None),
    }
}

/// How a unit's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (_, Some(sig)) => write!(f, "killed by signal {sig} ({})", signal_name(sig)),
            (Some(code), None) => write!(f, "exit status {code}"),
            (None, None) => write!(f, "unknown exit status"),
        }
    }
}

pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => "signal",
    }
}

/// Totals of a run, in pytest's categories.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub passed: u64,
    pub failed: u64,
    pub errors: u64,
    pub skipped: u64,
    pub xfailed: u64,
    pub xpassed: u64,
    pub crashed: u64,
    pub not_run: u64,
    /// Tests that passed only on a retry (also counted as passed).
    pub flaky: u64,
    pub deselected: u64,
    pub warnings: u64,
    /// Subtest reports by pytest's category for them ("subtests passed", "failed", ...).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub subtests: std::collections::BTreeMap<String, u64>,
}

impl Totals {
    pub fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Passed => self.passed += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Error => self.errors += 1,
            Outcome::Skipped => self.skipped += 1,
            Outcome::Xfailed => self.xfailed += 1,
            Outcome::Xpassed => self.xpassed += 1,
            Outcome::Crashed => self.crashed += 1,
            Outcome::NotRun => self.not_run += 1,
        }
    }
    pub fn add_result(&mut self, r: &TestResult) {
        if r.counted() {
            self.add(r.outcome);
        }
        if r.flaky {
            self.flaky += 1;
        }
        if r.teardown_error {
            self.errors += 1;
        }
        for (category, count) in &r.subtest_counts {
            *self.subtests.entry(category.clone()).or_default() += count;
        }
    }
    pub fn failures(&self) -> u64 {
        self.failed + self.errors + self.crashed
    }

    /// Failed subtests, as pytest's summary counts them (category "failed").
    pub fn subtest_failures(&self) -> u64 {
        self.subtests.get("failed").copied().unwrap_or(0)
    }

    /// The counts of the summary line: tests plus subtests, merged by pytest's category
    /// names (a failed subtest counts as "failed", as pytest counts it).
    pub fn categories(&self, collect_errors: u64) -> Vec<(String, u64)> {
        let sub = |k: &str| self.subtests.get(k).copied().unwrap_or(0);
        let mut out = vec![
            ("failed".to_string(), self.failed + sub("failed")),
            ("passed".to_string(), self.passed + sub("passed")),
            ("skipped".to_string(), self.skipped + sub("skipped")),
            ("deselected".to_string(), self.deselected),
            ("xfailed".to_string(), self.xfailed + sub("xfailed")),
            ("xpassed".to_string(), self.xpassed + sub("xpassed")),
            ("warnings".to_string(), self.warnings),
            (
                "error".to_string(),
                self.errors + collect_errors + sub("error"),
            ),
        ];
        let known = ["failed", "passed", "skipped", "xfailed", "xpassed", "error"];
        for (k, v) in &self.subtests {
            if !known.contains(&k.as_str()) {
                out.push((k.clone(), *v));
            }
        }
        out.push(("flaky".to_string(), self.flaky));
        out.push(("crashed".to_string(), self.crashed));
        out.push(("not run".to_string(), self.not_run));
        out
    }
}

/// The part of a split file a unit runs: chunk `index` (1-based) of `of`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ChunkOf {
    pub index: usize,
    pub of: usize,
}

impl std::fmt::Display for ChunkOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}/{}]", self.index, self.of)
    }
}

/// Which of a unit's streams an `Output` event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// Everything that happens in a run, in order. Serialized as one NDJSON line each
/// (`{"v":1,"event":"...",...}`), documented in docs/events.md.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run_id: String,
        rootdir: String,
        python: String,
        workers: usize,
        files: usize,
        units: usize,
        estimated_tests: u64,
        predicted_secs: f64,
    },
    UnitStarted {
        unit: usize,
        slot: usize,
        pid: u32,
        /// 1 for a planned unit; more for a resumption or an infrastructure retry.
        attempt: u32,
        /// Why it runs: `planned`, `resume` (after a crash or timeout), `retry` (a failed
        /// test again) or `infra_retry`.
        reason: &'static str,
        files: Vec<String>,
        /// Which part of a split file this unit runs (`{"index": 1, "of": 2}`), or null.
        chunk: Option<ChunkOf>,
        estimated_tests: u64,
        predicted_secs: f64,
    },
    UnitCollected {
        unit: usize,
        count: usize,
        deselected: u64,
    },
    CollectError {
        unit: usize,
        nodeid: String,
        /// "failed" (an error collecting) or "skipped" (a module-level skip).
        outcome: String,
        message: String,
        longrepr: String,
    },
    TestStarted {
        unit: usize,
        slot: usize,
        nodeid: String,
    },
    TestFinished(Box<TestResult>),
    UnitFinished {
        unit: usize,
        slot: usize,
        exit: ExitInfo,
        /// pytest's own exit status as the plugin saw it, if it got that far.
        pytest_exitstatus: Option<i32>,
        duration: f64,
        /// Tests collected but never reported (now crashed or not run).
        unreported: usize,
        /// Set when the unit failed before collecting anything (the child's stderr tail).
        error: Option<String>,
        cancelled: bool,
    },
    /// A failed attempt that will be tried again in a fresh process after `delay` seconds.
    TestRetry {
        unit: usize,
        slot: usize,
        nodeid: String,
        attempt: u32,
        outcome: Outcome,
        message: String,
        /// Seconds the failed attempt took (spent in its unit, as a final attempt's are).
        duration: f64,
        delay: f64,
    },
    /// Lines a unit wrote to its standard output or error while pytest's capturing was off
    /// (`-s`, `--capture=no` or `--capture=tee-sys` for pytest): shown as they come.
    Output {
        unit: usize,
        slot: usize,
        stream: OutputStream,
        /// Whole lines, each ending in a newline (the last maybe not, at the unit's end).
        text: String,
    },
    /// A warning pytest recorded in a unit, for the report's "warnings summary".
    Warning {
        unit: usize,
        /// The test's node id, or `path:line` for a warning of no test.
        location: String,
        /// pytest's text for it (`path:line: Category: message` and the source line).
        message: String,
        /// Recorded while pytest configured itself (the configuration's, an initial
        /// conftest's): every unit has it, and it is shown once.
        config: bool,
    },
    /// What a unit's process recorded with `record_testsuite_property` so far (every one,
    /// each time more come), for the JUnit testsuite's properties.
    SuiteProperties {
        unit: usize,
        properties: Vec<(String, String)>,
    },
    /// A process left behind by a unit, killed by racefree.
    Leak {
        unit: usize,
        slot: usize,
        /// The test that was running when it was started, when known.
        nodeid: Option<String>,
        pid: u32,
        cmdline: String,
    },
    /// A unit whose pytest exited 3 or 4 before reporting any test, started again.
    InfraRetry {
        unit: usize,
        slot: usize,
        exit: ExitInfo,
        /// Its files and whether each exists now.
        files: Vec<(String, bool)>,
        stderr_tail: String,
        /// Which infrastructure retry this is (1-based) and the pause before it.
        retry: u32,
        delay: f64,
    },
    /// pytest-cov's report for the whole run, made once every unit has ended (see
    /// `coverage`): its terminal section, and whether the total is below its minimum.
    Coverage {
        text: String,
        below_minimum: bool,
    },
    /// What other plugins' and conftests' `pytest_terminal_summary` wrote in one unit's
    /// pytest process, as its terminal would have shown it; the summary shows every unit's,
    /// sections of one title merged (see `report::plugin_sections`).
    PluginSummary {
        unit: usize,
        text: String,
        /// One of them raised (its traceback ends `text`): the run fails, as pytest's.
        raised: bool,
    },
    RunFinished {
        totals: Totals,
        collect_errors: u64,
        exit_code: u8,
        duration: f64,
        interrupted: Option<String>,
        /// Files whose units never started because the run stopped (their tests were never
        /// collected, so only the files can be named).
        not_started: Vec<String>,
        /// Why the tests that did not run did not ("not run: interrupted", ...); empty when
        /// the run was not stopped.
        not_run_message: String,
        /// Node ids from the command line that selected no collected test (pytest's "not
        /// found", a usage error).
        not_found: Vec<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(when: &str, outcome: &str, xfail: bool) -> PhaseReport {
        PhaseReport {
            id: "t.py::x".into(),
            when: when.into(),
            outcome: outcome.into(),
            longrepr: String::new(),
            message: String::new(),
            head_line: String::new(),
            sections: vec![],
            crash_line: None,
            wasxfail: xfail.then(String::new),
            skip_reason: None,
            skip_where: None,
            category: String::new(),
            word: String::new(),
            properties: Vec::new(),
            skip_details: None,
            xml_attributes: Vec::new(),
            junit_output: Vec::new(),
            subtest: false,
        }
    }

    #[test]
    fn parses_wire_lines() {
        let w = Wire::parse(r#"{"e":"collected","ids":["a.py::b[x::y]"],"deselected":2}"#).unwrap();
        assert_eq!(
            w,
            Wire::Collected {
                ids: vec!["a.py::b[x::y]".into()],
                deselected: 2,
                unmatched: vec![],
            }
        );
        let w = Wire::parse(r#"{"e":"report","id":"a","when":"call","outcome":"failed","sections":[["Captured stdout call","hi"]]}"#)
            .unwrap();
        let Wire::Report(r) = w else { panic!() };
        assert_eq!(
            r.sections,
            vec![("Captured stdout call".to_string(), "hi".to_string())]
        );
        assert!(Wire::parse(r#"{"e":"bogus"}"#).is_err());
        assert_eq!(
            Wire::parse(r#"{"e":"start","id":"a.py::t","timeout":2.5}"#).unwrap(),
            Wire::Start {
                id: "a.py::t".into(),
                timeout: Some(2.5)
            }
        );
        assert_eq!(
            Wire::parse(r#"{"e":"start","id":"a.py::t"}"#).unwrap(),
            Wire::Start {
                id: "a.py::t".into(),
                timeout: None
            }
        );
        assert!(Wire::parse("not json").is_err());
    }

    /// The decision table of pytest's terminal counting.
    #[test]
    fn outcome_table() {
        let cases: Vec<(Vec<PhaseReport>, Outcome, bool)> = vec![
            (
                vec![
                    phase("setup", "passed", false),
                    phase("call", "passed", false),
                    phase("teardown", "passed", false),
                ],
                Outcome::Passed,
                false,
            ),
            (
                vec![
                    phase("setup", "passed", false),
                    phase("call", "failed", false),
                    phase("teardown", "passed", false),
                ],
                Outcome::Failed,
                false,
            ),
            (
                vec![
                    phase("setup", "failed", false),
                    phase("teardown", "passed", false),
                ],
                Outcome::Error,
                false,
            ),
            (
                vec![
                    phase("setup", "passed", false),
                    phase("call", "passed", false),
                    phase("teardown", "failed", false),
                ],
                Outcome::Passed,
                true,
            ),
            (
                vec![
                    phase("setup", "passed", false),
                    phase("call", "failed", false),
                    phase("teardown", "failed", false),
                ],
                Outcome::Failed,
                true,
            ),
            (
                vec![
                    phase("setup", "skipped", false),
                    phase("teardown", "passed", false),
                ],
                Outcome::Skipped,
                false,
            ),
            (
                vec![
                    phase("setup", "passed", false),
                    phase("call", "skipped", true),
                    phase("teardown", "passed", false),
                ],
                Outcome::Xfailed,
                false,
            ),
            (
                vec![
                    phase("setup", "passed", false),
                    phase("call", "passed", true),
                    phase("teardown", "passed", false),
                ],
                Outcome::Xpassed,
                false,
            ),
            (
                vec![phase("setup", "skipped", true)],
                Outcome::Xfailed,
                false,
            ),
            (vec![], Outcome::Crashed, false),
            // An attempt pytest-rerunfailures runs again: a failure of that attempt.
            (
                vec![phase("setup", "passed", false), phase("call", RERUN, false)],
                Outcome::Failed,
                false,
            ),
            (vec![phase("setup", RERUN, false)], Outcome::Error, false),
        ];
        for (phases, want, td) in cases {
            let (got, got_td, _) = derive_outcome(&phases);
            assert_eq!((got, got_td), (want, td), "{phases:?}");
        }
    }

    /// The line a PID-namespace init writes for a process it found left behind.
    #[test]
    fn parses_leak_lines() {
        assert_eq!(
            Wire::parse(r#"{"e":"leak","pid":4242,"cmdline":"sleep 1000"}"#).unwrap(),
            Wire::Leak {
                pid: 4242,
                cmdline: "sleep 1000".into(),
                test: None,
            }
        );
        assert_eq!(
            Wire::parse(r#"{"e":"leak","pid":7,"cmdline":"x","test":"t.py::test_a"}"#).unwrap(),
            Wire::Leak {
                pid: 7,
                cmdline: "x".into(),
                test: Some("t.py::test_a".into()),
            }
        );
        assert!(Wire::parse(r#"{"e":"leak","pid":-1,"cmdline":"x"}"#).is_err());
        assert!(Wire::parse(r#"{"e":"leak","cmdline":"x"}"#).is_err());
        let e = Event::Leak {
            unit: 3,
            slot: 1,
            nodeid: None,
            pid: 4242,
            cmdline: "sleep 1000".into(),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event"], "leak");
        assert_eq!(v["pid"], 4242);
        assert!(v["nodeid"].is_null());
    }

    #[test]
    fn ndjson_shape() {
        let e = Event::UnitCollected {
            unit: 1,
            count: 3,
            deselected: 0,
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event"], "unit_collected");
        assert_eq!(v["count"], 3);
    }
}
