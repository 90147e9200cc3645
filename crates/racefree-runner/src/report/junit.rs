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
}

impl Junit {
    pub fn new(path: &Path) -> Junit {
        Junit {
            path: path.to_path_buf(),
            cases: Vec::new(),
            time: 0.0,
            infra: Vec::new(),
        }
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

    fn status(r: &TestResult) -> TestCaseStatus {
        let mut status = Self::final_status(r);
        status.add_reruns(r.reruns.iter().map(Self::rerun));
        status
    }

    fn final_status(r: &TestResult) -> TestCaseStatus {
        match r.outcome {
            Outcome::Passed | Outcome::Xpassed if r.teardown_error => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
                s.set_message(format!(
                    "failed on teardown with \"{}\"",
                    r.teardown_message
                ));
                s.set_description(r.teardown_longrepr.clone());
                s
            }
            Outcome::Passed | Outcome::Xpassed => TestCaseStatus::success(),
            Outcome::Failed => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(r.message.clone());
                // pytest writes one <failure> per failed subtest; one status holds them all here.
                let mut text = String::new();
                for sub in &r.failed_subtests {
                    text.push_str(&format!("{}\n{}\n\n", sub.head_line, sub.longrepr));
                }
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
                s.set_message(format!("failed on {when} with \"{}\"", r.message));
                s.set_description(r.longrepr.clone());
                s
            }
            Outcome::Skipped if r.when.as_deref() == Some("collect") => {
                let mut s = TestCaseStatus::skipped();
                s.set_message("collection skipped");
                s.set_description(r.message.clone());
                s
            }
            Outcome::Skipped => {
                let mut s = TestCaseStatus::skipped();
                s.set_type("pytest.skip");
                s.set_message(r.message.clone());
                s
            }
            Outcome::Xfailed => {
                let mut s = TestCaseStatus::skipped();
                s.set_type("pytest.xfail");
                s.set_message(r.message.clone());
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
                self.cases
                    .push(Self::case(&r.nodeid, Self::status(r), r.duration))
            }
            Event::CollectError {
                nodeid,
                outcome,
                longrepr,
                ..
            } if outcome == "failed" => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
                s.set_message("collection failure");
                s.set_description(longrepr.clone());
                self.cases.push(Self::case(nodeid, s, 0.0));
            }
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
        let mut suite = TestSuite::new("pytest");
        suite.set_time(Duration::from_secs_f64(self.time.max(0.0)));
        suite.add_test_cases(std::mem::take(&mut self.cases));
        for (summary, _) in &self.infra {
            suite.add_property(("racefree.infra_retry", summary.as_str()));
        }
        if !self.infra.is_empty() {
            let text: Vec<&str> = self.infra.iter().map(|(_, t)| t.as_str()).collect();
            suite.set_system_err(text.join("\n\n"));
        }
        let mut report = Report::new("pytest");
        report.add_test_suite(suite);
        let ctx = || format!("writing --junit-xml {}", self.path.display());
        // As pytest's --junit-xml: a missing directory is created, not an error after the run.
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(ctx(), e))?;
        }
        let file = std::fs::File::create(&self.path).map_err(|e| Error::io(ctx(), e))?;
        report
            .serialize(std::io::BufWriter::new(file))
            .map_err(|e| Error::io(ctx(), std::io::Error::other(e.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::classname_and_name;

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
