//! `--junit-xml PATH` with pytest's conventions: one `<testsuite name="pytest">`,
//! `classname` the dotted module path plus classes, `name` the test name with parameters;
//! failures carry the crash message, errors say in which phase, skips carry the reason.

use std::path::{Path, PathBuf};
use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestRerun, TestSuite};

use crate::dispatch::Reporter;
use crate::error::{Error, Result};
use crate::events::{Event, Outcome, Rerun, TestResult};

/// pytest's `mangle_test_address`: split the node id on `::` outside the parameter part,
/// turn the path into a dotted module name.
pub fn classname_and_name(nodeid: &str) -> (String, String) {
    let (path, params) = match nodeid.find('[') {
        Some(i) => (&nodeid[..i], &nodeid[i..]),
        None => (nodeid, ""),
    };
    let mut names: Vec<String> = path.split("::").map(str::to_string).collect();
    if let Some(first) = names.first_mut() {
        let dotted = first.replace('/', ".");
        *first = dotted
            .strip_suffix(".py")
            .map(str::to_string)
            .unwrap_or(dotted);
    }
    if let Some(last) = names.last_mut() {
        last.push_str(params);
    }
    let name = names.pop().unwrap_or_default();
    (names.join("."), name)
}

pub struct Junit {
    path: PathBuf,
    cases: Vec<TestCase>,
    time: f64,
    /// Infrastructure retries: a suite property each, forensics in the suite's system-err
    /// (never retry silently, not even in the XML).
    infra: Vec<(String, String)>,
    /// What pytest's testsuite counts beyond what the testcases say (see `CountAdjustment`).
    adjust: CountAdjustment,
    /// The testsuite's name: pytest's `junit_suite_name` ini option, "pytest" by default.
    suite_name: String,
    /// When the run started, for the testsuite's `timestamp`, as pytest writes it.
    started: chrono::DateTime<chrono::FixedOffset>,
    /// What tests recorded with `record_testsuite_property` (see `SuiteProperties`).
    suite_properties: SuiteProperties,
}

/// The testsuite's properties from every pytest process of the run. Each process runs the
/// session fixtures that record them (pytest runs them once): a property is written as many
/// times as any one process recorded it, in the order recorded, so a suite run as one
/// process gets pytest's list, and a conftest's fixture run in every unit gets it once.
#[derive(Debug, Default)]
struct SuiteProperties {
    merged: Vec<(String, String)>,
}

impl SuiteProperties {
    /// Takes every property one process recorded so far (it sends them all each time).
    fn add(&mut self, recorded: &[(String, String)]) {
        let mut seen: Vec<&(String, String)> = Vec::new();
        for property in recorded {
            seen.push(property);
            let times = seen.iter().filter(|p| **p == property).count();
            if self.merged.iter().filter(|p| *p == property).count() < times {
                self.merged.push(property.clone());
            }
        }
    }
}

/// pytest's testsuite attributes count a test's reports: a teardown error beside a setup
/// error is one more error, beside a skip one more skip, than the testcases hold. Its
/// `tests` is the number of testcases (pytest 9.1 and later, pytest#3850: a pass with a
/// teardown error is one testcase and one test, a failure with one two of each).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct CountAdjustment {
    errors: usize,
    skipped: usize,
}

impl CountAdjustment {
    /// How the test's testcases undercount (or, for the double testcase, overcount) pytest's.
    fn of(r: &TestResult) -> CountAdjustment {
        let mut adjust = CountAdjustment::default();
        if !r.teardown_error {
            return adjust;
        }
        match r.outcome {
            Outcome::Error => adjust.errors = 1,
            Outcome::Skipped | Outcome::Xfailed => adjust.skipped = 1,
            Outcome::Failed
            | Outcome::Passed
            | Outcome::Xpassed
            | Outcome::Crashed
            | Outcome::NotRun => {}
        }
        adjust
    }

    fn add(&mut self, other: CountAdjustment) {
        self.errors += other.errors;
        self.skipped += other.skipped;
    }

    fn apply(self, suite: &mut TestSuite) {
        suite.errors += self.errors;
        suite.skipped += self.skipped;
    }
}

impl Junit {
    pub fn new(path: &Path) -> Junit {
        Junit {
            path: path.to_path_buf(),
            cases: Vec::new(),
            time: 0.0,
            infra: Vec::new(),
            adjust: CountAdjustment::default(),
            suite_name: "pytest".to_string(),
            started: now_utc(),
            suite_properties: SuiteProperties::default(),
        }
    }

    /// The testsuite's name (pytest's `junit_suite_name`).
    pub fn with_suite_name(mut self, name: &str) -> Junit {
        self.suite_name = name.to_string();
        self
    }

    fn case(nodeid: &str, status: TestCaseStatus, secs: f64) -> TestCase {
        let (classname, name) = classname_and_name(nodeid);
        let mut case = TestCase::new(name, status);
        case.set_classname(classname);
        case.set_time(Duration::from_secs_f64(secs.max(0.0)));
        case
    }

    /// One earlier attempt, as Maven Surefire writes it: `<flakyFailure>` when the test then
    /// passed, `<rerunFailure>` when it kept failing; with its message, traceback and output.
    fn rerun(x: &Rerun) -> TestRerun {
        let kind = if x.outcome == Outcome::Error {
            NonSuccessKind::Error
        } else {
            NonSuccessKind::Failure
        };
        let mut run = TestRerun::new(kind);
        run.set_message(format!("attempt {}: {}", x.attempt, x.message));
        run.set_time(Duration::from_secs_f64(x.duration.max(0.0)));
        run.set_stack_trace(x.longrepr.clone());
        let output = |word: &str| -> String {
            x.sections
                .iter()
                .filter(|(title, _)| title.contains(word))
                .map(|(title, text)| format!("{title}\n{text}"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let (out, err) = (output("stdout"), output("stderr"));
        if !out.is_empty() {
            run.set_system_out(out);
        }
        if !err.is_empty() {
            run.set_system_err(err);
        }
        run
    }

    /// The testcases one finished test becomes. One, except for a test that failed in call
    /// and then errored in teardown: pytest closes the failed testcase and opens a second one
    /// for the teardown error, since a JUnit testcase has one outcome.
    fn cases(r: &TestResult) -> Vec<TestCase> {
        let r = as_pytest_writes(r);
        let r = r.as_ref();
        let mut status = Self::final_status(r);
        status.add_reruns(r.reruns.iter().map(Self::rerun));
        let mut first = Self::case(&r.nodeid, status, r.duration);
        Self::set_attributes(&mut first, &r.junit.xml_attributes);
        set_output(&mut first, &r.junit.output);
        let mut cases = vec![first];
        if r.teardown_error && r.outcome == Outcome::Failed {
            let mut second = Self::case(&r.nodeid, Self::teardown_status(r), 0.0);
            Self::set_attributes(&mut second, &r.junit.xml_attributes);
            set_output(&mut second, &r.junit.teardown_output);
            cases.push(second);
        }
        // What the test recorded with `record_property`, on each of its testcases as pytest
        // writes it.
        for case in &mut cases {
            for (name, value) in &r.properties {
                case.add_property((name.as_str(), value.as_str()));
            }
        }
        cases
    }

    /// The testcase's attributes as pytest's junitxml set them (`record_xml_attribute`'s, and
    /// under junit_family xunit1 `file` and `line`); `time` is the testcase's own.
    fn set_attributes(case: &mut TestCase, attributes: &[(String, String)]) {
        for (name, value) in attributes {
            match name.as_str() {
                "name" => case.name = value.as_str().into(),
                "classname" => {
                    case.set_classname(value.as_str());
                }
                "time" => {}
                _ => {
                    case.extra
                        .insert(name.as_str().into(), value.as_str().into());
                }
            }
        }
    }

    fn teardown_status(r: &TestResult) -> TestCaseStatus {
        let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
        s.set_message(format!(
            "failed on teardown with \"{}\"",
            r.teardown_message
        ));
        s.set_description(r.teardown_longrepr.clone());
        s
    }

    fn final_status(r: &TestResult) -> TestCaseStatus {
        match r.outcome {
            // pytest's testcase holds an <error> beside the pass (which writes nothing), the
            // skip or the setup error. A quick-junit testcase holds one status, so the error,
            // which CI tools rank above the others, carries what the other said.
            Outcome::Passed | Outcome::Xpassed if r.teardown_error => Self::teardown_status(r),
            Outcome::Skipped | Outcome::Xfailed if r.teardown_error => {
                let mut s = Self::teardown_status(r);
                let what = if r.outcome == Outcome::Xfailed {
                    "xfailed"
                } else {
                    "skipped"
                };
                s.set_description(format!(
                    "{}\n\n({what} before the teardown: {})",
                    r.teardown_longrepr, r.message
                ));
                s
            }
            // pytest lists a test whose subtests failed as failed, whatever its own outcome.
            Outcome::Passed | Outcome::Xpassed if r.fails_by_subtests() => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(r.failed_subtests[0].message.clone());
                s.set_description(subtest_failures_text(r));
                s
            }
            Outcome::Passed | Outcome::Xpassed => TestCaseStatus::success(),
            Outcome::Failed => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(shorten_message(&junit_message(r)));
                // pytest writes one <failure> per failed subtest; one status holds them all here.
                let mut text = subtest_failures_text(r);
                text.push_str(&r.longrepr);
                s.set_description(text);
                s
            }
            Outcome::Crashed => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(r.message.clone());
                s.set_type("crashed");
                s.set_description(r.longrepr.clone());
                s
            }
            Outcome::Error => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
                let when = r.when.as_deref().unwrap_or("setup");
                s.set_message(shorten_message(&format!(
                    "failed on {when} with \"{}\"",
                    junit_message(r)
                )));
                if r.teardown_error {
                    s.set_description(format!(
                        "{}\n\nthen failed on teardown with \"{}\":\n{}",
                        r.longrepr, r.teardown_message, r.teardown_longrepr
                    ));
                } else {
                    s.set_description(r.longrepr.clone());
                }
                s
            }
            Outcome::Skipped if r.when.as_deref() == Some("collect") => {
                let mut s = TestCaseStatus::skipped();
                s.set_message("collection skipped");
                // pytest's text is its report's (a tuple's repr); the reason if not known.
                s.set_description(r.junit.skip_details.as_ref().unwrap_or(&r.message).clone());
                s
            }
            Outcome::Skipped => {
                let mut s = TestCaseStatus::skipped();
                s.set_type("pytest.skip");
                s.set_message(r.message.clone());
                // pytest's text says where: `path:line: reason`.
                if let Some(details) = &r.junit.skip_details {
                    s.set_description(details.clone());
                }
                s
            }
            Outcome::Xfailed => {
                let mut s = TestCaseStatus::skipped();
                s.set_type("pytest.xfail");
                // As pytest's junitxml, without the "reason: " older pytests put before it.
                let reason = r.message.strip_prefix("reason: ").unwrap_or(&r.message);
                s.set_message(reason);
                s
            }
            Outcome::NotRun => {
                let mut s = TestCaseStatus::skipped();
                s.set_type("racefree.not_run");
                s.set_message(r.message.clone());
                s
            }
        }
    }
}

impl Reporter for Junit {
    fn on_event(&mut self, event: &Event) {
        match event {
            Event::TestFinished(r) => {
                self.cases.extend(Self::cases(r));
                self.adjust.add(CountAdjustment::of(r));
            }
            Event::CollectError {
                nodeid,
                outcome,
                longrepr,
                ..
            } if outcome == "failed" => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
                s.set_message("collection failure");
                s.set_description(longrepr.trim());
                self.cases.push(Self::case(nodeid, s, 0.0));
            }
            Event::SuiteProperties { properties, .. } => self.suite_properties.add(properties),
            Event::InfraRetry {
                unit,
                exit,
                files,
                stderr_tail,
                retry,
                ..
            } => {
                let listed: Vec<String> = files
                    .iter()
                    .map(|(f, exists)| {
                        format!("{f} ({})", if *exists { "exists" } else { "missing" })
                    })
                    .collect();
                let summary = format!(
                    "unit {unit} retry {retry}: the pytest process ended ({exit}) before any test; files: {}",
                    listed.join(", ")
                );
                self.infra
                    .push((summary.clone(), format!("{summary}\n{stderr_tail}")));
            }
            Event::RunFinished {
                duration,
                not_started,
                not_run_message,
                ..
            } => {
                self.time = *duration;
                // A file that never started stands for its tests, as a collection error does.
                for file in not_started {
                    let mut s = TestCaseStatus::skipped();
                    s.set_type("racefree.not_run");
                    s.set_message(format!("{not_run_message} (file not started)"));
                    self.cases.push(Self::case(file, s, 0.0));
                }
            }
            _ => {}
        }
    }

    fn finish(&mut self) -> Result<()> {
        let mut suite = TestSuite::new(self.suite_name.as_str());
        // As pytest's testsuite: when the run started, and on which machine.
        suite.set_timestamp(self.started);
        if let Ok(host) = rustix::system::uname().nodename().to_str() {
            suite.extra.insert("hostname".into(), host.into());
        }
        suite.set_time(Duration::from_secs_f64(self.time.max(0.0)));
        suite.add_test_cases(std::mem::take(&mut self.cases));
        self.adjust.apply(&mut suite);
        for (name, value) in &self.suite_properties.merged {
            suite.add_property((name.as_str(), value.as_str()));
        }
        for (summary, _) in &self.infra {
            suite.add_property(("racefree.infra_retry", summary.as_str()));
        }
        if !self.infra.is_empty() {
            let text: Vec<&str> = self.infra.iter().map(|(_, t)| t.as_str()).collect();
            suite.set_system_err(text.join("\n\n"));
        }
        // pytest names its <testsuites> "pytest tests".
        let mut report = Report::new("pytest tests");
        report.add_test_suite(suite);
        let ctx = || format!("writing --junit-xml {}", self.path.display());
        // As pytest's --junit-xml: a missing directory is created, not an error after the run.
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(ctx(), e))?;
        }
        let mut xml = Vec::new();
        report
            .serialize(&mut xml)
            .map_err(|e| Error::io(ctx(), std::io::Error::other(e.to_string())))?;
        std::fs::write(&self.path, keep_line_breaks_in_attributes(&xml))
            .map_err(|e| Error::io(ctx(), e))
    }
}

/// A testcase's `<system-out>` and `<system-err>` under pytest's `junit_logging`. A testcase
/// holds one of each here; pytest writes a skipped test's twice (at the skip, then at
/// teardown with every phase's output), and the last of each is kept, which has it all.
fn set_output(case: &mut TestCase, output: &[(String, String)]) {
    for (tag, text) in output {
        match tag.as_str() {
            "system-out" => case.set_system_out(text.as_str()),
            "system-err" => case.set_system_err(text.as_str()),
            _ => continue,
        };
    }
}

/// Now, in UTC (pytest writes local time with its offset; the same instant).
fn now_utc() -> chrono::DateTime<chrono::FixedOffset> {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    chrono::DateTime::from_timestamp(since.as_secs() as i64, since.subsec_nanos())
        .unwrap_or_default()
        .fixed_offset()
}

/// XML parsers turn a line break or tab written as itself in an attribute value into a space
/// (XML 1.0, 3.3.3), so a multi-line failure message would reach CI tools as one line.
/// pytest writes them as character references, and so does this, to quick-junit's output:
/// inside a tag, between the double quotes quick-junit puts around every value (it escapes
/// `"`, `<` and `>` within them, and writes no CDATA).
fn keep_line_breaks_in_attributes(xml: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(xml.len());
    let (mut in_tag, mut in_value) = (false, false);
    for &b in xml {
        match b {
            b'<' if !in_tag => in_tag = true,
            b'>' if in_tag && !in_value => in_tag = false,
            b'"' if in_tag => in_value = !in_value,
            b'\n' if in_value => {
                out.extend_from_slice(b"&#10;");
                continue;
            }
            b'\r' if in_value => {
                out.extend_from_slice(b"&#13;");
                continue;
            }
            b'\t' if in_value => {
                out.extend_from_slice(b"&#9;");
                continue;
            }
            _ => {}
        }
        out.push(b);
    }
    out
}

/// At most this many characters of a message go in JUnit's `message` attribute (pytest's
/// `MESSAGE_ATTR_BUDGET`); the element's text holds the whole report.
const MESSAGE_BUDGET: usize = 500;

/// A message shortened as pytest 9's junitxml shortens it: whole lines while they fit the
/// budget (a first line longer than it is cut), then a line saying what was left out.
fn shorten_message(message: &str) -> String {
    let lines: Vec<&str> = message.lines().collect();
    let lines = if lines.is_empty() { vec![""] } else { lines };
    let (mut kept, mut size) = (0, 0);
    for line in &lines {
        let len = line.chars().count();
        if kept > 0 && size + len + 1 > MESSAGE_BUDGET {
            break;
        }
        kept += 1;
        size += len + 1;
    }
    let mut shortened = lines[..kept].join("\n");
    let first_line_cut = shortened.chars().count() > MESSAGE_BUDGET;
    if first_line_cut {
        shortened = shortened.chars().take(MESSAGE_BUDGET).collect::<String>() + "...";
    }
    let remaining = lines.len() - kept;
    let note = if remaining > 0 {
        format!(
            "+{remaining} more line{}",
            if remaining > 1 { "s" } else { "" }
        )
    } else if first_line_cut {
        "truncated".to_string()
    } else {
        return message.to_string();
    };
    format!("{shortened}\n[{note}; full report in element text]")
}

/// The result with its failure texts as pytest's JUnit writes them (`str(longrepr)`): the
/// terminal's text (which the plugin sends, for racefree's own report), stripped.
fn as_pytest_writes(r: &TestResult) -> std::borrow::Cow<'_, TestResult> {
    let plain = |text: &str| text.trim().len() == text.len();
    if plain(&r.longrepr)
        && plain(&r.teardown_longrepr)
        && r.reruns.is_empty()
        && r.failed_subtests.is_empty()
    {
        // A passing test's, nearly always: nothing to copy.
        return std::borrow::Cow::Borrowed(r);
    }
    let mut r = r.clone();
    r.longrepr = r.longrepr.trim().to_string();
    r.teardown_longrepr = r.teardown_longrepr.trim().to_string();
    for x in &mut r.reruns {
        x.longrepr = x.longrepr.trim().to_string();
    }
    for sub in &mut r.failed_subtests {
        sub.longrepr = sub.longrepr.trim().to_string();
    }
    std::borrow::Cow::Owned(r)
}

/// pytest's JUnit message for a failure or error: the crash line, or for a report without one
/// (a doctest's) the whole report, as pytest's junitxml writes it.
fn junit_message(r: &TestResult) -> String {
    if r.message.is_empty() {
        r.longrepr.clone()
    } else {
        r.message.clone()
    }
}

/// Each failed subtest's heading and traceback, as pytest writes them in JUnit.
fn subtest_failures_text(r: &TestResult) -> String {
    let mut text = String::new();
    for sub in &r.failed_subtests {
        text.push_str(&format!("{}\n{}\n\n", sub.head_line, sub.longrepr));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::{
        CountAdjustment, Junit, SuiteProperties, TestResult, classname_and_name,
        keep_line_breaks_in_attributes, shorten_message,
    };
    use crate::events::Outcome;

    fn with_teardown_error(outcome: Outcome) -> TestResult {
        TestResult {
            teardown_error: true,
            message: "why".into(),
            longrepr: "first".into(),
            teardown_longrepr: "teardown traceback".into(),
            teardown_message: "boom".into(),
            teardown_sections: Vec::new(),
            properties: Vec::new(),
            when: Some("setup".into()),
            ..TestResult::sample("t.py::test_x", outcome, 0.5)
        }
    }

    #[test]
    fn long_messages_are_shortened_as_pytests_junitxml_does() {
        assert_eq!(shorten_message("short\ntwo"), "short\ntwo");
        let lines: Vec<String> = (0..100)
            .map(|i| format!("line {i:03} {}", "x".repeat(40)))
            .collect();
        let short = shorten_message(&lines.join("\n"));
        // 49-character lines, 50 with their newline: ten fit in 500.
        assert!(short.starts_with("line 000"), "{short}");
        assert!(short.ends_with("line 009 xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n[+90 more lines; full report in element text]"), "{short}");
        let long = "y".repeat(600);
        assert_eq!(
            shorten_message(&long),
            format!(
                "{}...\n[truncated; full report in element text]",
                "y".repeat(500)
            )
        );
    }

    #[test]
    fn line_breaks_in_attribute_values_survive_parsing_as_in_pytests_junit() {
        let xml = b"<?xml version=\"1.0\"?>\n<a m=\"x\ny\tz&quot;>\" n=\"1\">text\nmore<b/></a>\n";
        let kept = keep_line_breaks_in_attributes(xml);
        assert_eq!(
            String::from_utf8(kept.clone()).unwrap(),
            "<?xml version=\"1.0\"?>\n<a m=\"x&#10;y&#9;z&quot;>\" n=\"1\">text\nmore<b/></a>\n"
        );
        let text = String::from_utf8(kept).unwrap();
        let doc = roxmltree::Document::parse(&text).unwrap();
        assert_eq!(doc.root_element().attribute("m"), Some("x\ny\tz\">"));
    }

    #[test]
    fn a_teardown_error_is_counted_as_pytest_counts_it() {
        // (outcome, testcases written, errors and skipped that pytest counts beyond them;
        // its `tests` is the number of testcases)
        let table = [
            (Outcome::Passed, 1, 0, 0),
            (Outcome::Xpassed, 1, 0, 0),
            (Outcome::Failed, 2, 0, 0),
            (Outcome::Error, 1, 1, 0),
            (Outcome::Skipped, 1, 0, 1),
            (Outcome::Xfailed, 1, 0, 1),
        ];
        for (outcome, cases, errors, skipped) in table {
            let r = with_teardown_error(outcome);
            assert_eq!(Junit::cases(&r).len(), cases, "{outcome:?}");
            let want = CountAdjustment { errors, skipped };
            assert_eq!(CountAdjustment::of(&r), want, "{outcome:?}");
            let clean = TestResult {
                teardown_error: false,
                ..r
            };
            assert_eq!(Junit::cases(&clean).len(), 1, "{outcome:?}");
            assert_eq!(CountAdjustment::of(&clean), CountAdjustment::default());
        }
    }

    #[test]
    fn suite_properties_are_kept_as_often_as_one_process_recorded_them() {
        let p = |n: &str| (n.to_string(), "v".to_string());
        let mut merged = SuiteProperties::default();
        // One process, sent twice as it grows: its list.
        merged.add(&[p("a")]);
        merged.add(&[p("a"), p("b"), p("a")]);
        assert_eq!(merged.merged, vec![p("a"), p("b"), p("a")]);
        // Another process running the same session fixture adds nothing; a new one does.
        merged.add(&[p("a"), p("b"), p("c")]);
        assert_eq!(merged.merged, vec![p("a"), p("b"), p("a"), p("c")]);
    }

    #[test]
    fn mangles_like_pytest() {
        let c = |s| classname_and_name(s);
        assert_eq!(
            c("tests/test_a.py::test_x"),
            ("tests.test_a".into(), "test_x".into())
        );
        assert_eq!(
            c("tests/test_a.py::TestK::test_m[1]"),
            ("tests.test_a.TestK".into(), "test_m[1]".into())
        );
        assert_eq!(
            c("t.py::test_p[a::b c]"),
            ("t".into(), "test_p[a::b c]".into())
        );
        assert_eq!(c("pkg/test_bad.py"), ("".into(), "pkg.test_bad".into()));
    }
}
