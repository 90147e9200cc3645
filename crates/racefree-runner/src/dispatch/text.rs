//! Turning what a unit left behind into report text: results built from phase reports,
//! the faulthandler dump of a crash or timeout, the tail of a process's stderr.

use crate::events::{JunitExtras, Outcome, PhaseReport, RERUN, TestResult, derive_outcome};

/// At most this much of a faulthandler file is attached to a report.
const FAULT_BYTES: u64 = 64 * 1024;

pub(super) fn read_fault_file(path: &std::path::Path) -> String {
    use std::io::Read;
    let Ok(file) = std::fs::File::open(path) else {
        return String::new();
    };
    let mut buf = Vec::new();
    let _ = file.take(FAULT_BYTES).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

pub(super) fn traceback_section(fault: &str, title: &str) -> String {
    if fault.trim().is_empty() {
        String::new()
    } else {
        format!("{title}:\n{}\n\n", hide_runner_frames(fault.trim_end()))
    }
}

/// faulthandler dumps every frame down to `runpy`; the ~30 of pytest and pluggy say nothing
/// about the test, so they are counted instead of shown.
pub(super) fn hide_runner_frames(dump: &str) -> String {
    let internal = |line: &str| {
        let l = line.trim_start();
        l.starts_with("File ")
            && [
                "/_pytest/",
                "/pluggy/",
                "/pytest/__main__.py",
                "<frozen runpy>",
            ]
            .iter()
            .any(|m| l.contains(m))
    };
    let mut out = Vec::new();
    let mut hidden = 0;
    for line in dump.lines() {
        if internal(line) {
            hidden += 1;
            continue;
        }
        if hidden > 0 {
            out.push(format!("  ({hidden} frames of pytest and pluggy hidden)"));
            hidden = 0;
        }
        out.push(line.to_string());
    }
    if hidden > 0 {
        out.push(format!("  ({hidden} frames of pytest and pluggy hidden)"));
    }
    out.join("\n")
}

/// pytest's complaint about its arguments, from a process's stderr: the option parser's
/// `error: ...` line, or pytest's own `ERROR: ...` for a usage error. None for the usage
/// errors that are about files (a path pytest did not find, a conftest it could not
/// import), which the infrastructure rules judge by whether the files exist.
pub(super) fn usage_error(stderr: &str) -> Option<String> {
    let mut lines = stderr.lines().skip_while(|l| !l.starts_with("ERROR: "));
    let line = lines.next()?.strip_prefix("ERROR: ")?;
    if line.starts_with("usage:") {
        // The option parser's: its complaint is on the next line.
        return lines
            .next()?
            .split_once(": error: ")
            .map(|(_, m)| m.trim().to_string());
    }
    let about_files = [
        "file or directory not found",
        "not found:",
        "found no collectors",
    ];
    if about_files.iter().any(|p| line.starts_with(p)) {
        return None;
    }
    Some(line.trim().to_string())
}

pub(super) fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub(super) fn build_result(
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
        .find(|p| p.when == "teardown" && matches!(p.outcome.as_str(), "failed" | RERUN));
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
        // A failed teardown's; else a passing one's, which the plugin sends only for
        // pytest's PASSES and XPASSES sections (-rP, -rX).
        teardown_sections: match teardown.filter(|_| teardown_error) {
            Some(failed) => failed.sections.clone(),
            None => phases
                .iter()
                .rev()
                .find(|p| p.when == "teardown")
                .map(|p| p.sections.clone())
                .unwrap_or_default(),
        },
        skip_where: match (outcome, deciding) {
            (Outcome::Skipped, Some(p)) => p.skip_where.clone(),
            _ => None,
        },
        // The last phase's: the item's properties grow from phase to phase.
        properties: last_listed(phases, |p| &p.properties),
        junit: Box::new(junit_extras(phases, outcome, teardown_error, deciding)),
        when: deciding.map(|p| p.when.clone()),
        head_line: deciding.map(|p| p.head_line.clone()).unwrap_or_default(),
        sections: deciding.map(|p| p.sections.clone()).unwrap_or_default(),
        crash_line: deciding.and_then(|p| p.crash_line.clone()),
        position: None,
        failed_subtests: Vec::new(),
        subtest_counts: Default::default(),
        flaky: false,
        reruns: Vec::new(),
    }
}

/// The list the last phase that has one holds (`field` of it), empty if none has.
fn last_listed<T: Clone>(
    phases: &[PhaseReport],
    field: impl Fn(&PhaseReport) -> &Vec<T>,
) -> Vec<T> {
    phases
        .iter()
        .rev()
        .map(field)
        .find(|list| !list.is_empty())
        .cloned()
        .unwrap_or_default()
}

/// What pytest's junitxml takes from the phases beyond the outcome (see `JunitExtras`).
fn junit_extras(
    phases: &[PhaseReport],
    outcome: Outcome,
    teardown_error: bool,
    deciding: Option<&PhaseReport>,
) -> JunitExtras {
    let mut extras = JunitExtras {
        skip_details: match (outcome, deciding) {
            (Outcome::Skipped, Some(p)) => p.skip_details.clone(),
            _ => None,
        },
        // The last phase's, as with `properties`: pytest sets them anew from each report.
        xml_attributes: last_listed(phases, |p| &p.xml_attributes),
        ..JunitExtras::default()
    };
    for p in phases {
        // After a failed call, pytest writes a failed teardown in a testcase of its own, and
        // that teardown's output with it.
        let own_case = teardown_error
            && outcome == Outcome::Failed
            && p.when == "teardown"
            && matches!(p.outcome.as_str(), "failed" | RERUN);
        let into = if own_case {
            &mut extras.teardown_output
        } else {
            &mut extras.output
        };
        into.extend(p.junit_output.iter().cloned());
    }
    extras
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pytests_complaint_about_its_arguments_is_found_but_not_one_about_files() {
        let argparse = "ERROR: usage: python -m pytest [options] [file_or_dir]\n\
                        python -m pytest: error: unrecognized arguments: --nope\n  inifile: x\n";
        assert_eq!(
            usage_error(argparse).as_deref(),
            Some("unrecognized arguments: --nope")
        );
        assert_eq!(
            usage_error("ERROR: Wrong expression passed to '-k': bad((\n\n").as_deref(),
            Some("Wrong expression passed to '-k': bad((")
        );
        assert_eq!(
            usage_error("ERROR: file or directory not found: t.py\n"),
            None
        );
        assert_eq!(
            usage_error("ImportError while loading conftest '/x/conftest.py'.\n"),
            None
        );
        assert_eq!(usage_error("Traceback (most recent call last):\n"), None);
        // Only pytest's own lines count: a traceback's "error: " is not the parser's.
        assert_eq!(usage_error("E   ValueError: error: bad value\n"), None);
    }

    #[test]
    fn runner_frames_are_counted_not_shown() {
        let dump = "Fatal Python error: Segmentation fault\n\nCurrent thread 0x1 (most recent call first):\n  File \"/x/ctypes/__init__.py\", line 519 in string_at\n  File \"/t/test_segv.py\", line 9 in test_segfaults\n  File \"/v/_pytest/python.py\", line 187 in pytest_pyfunc_call\n  File \"/v/pluggy/_execution.py\", line 147 in _multicall\n  File \"<frozen runpy>\", line 88 in _run_code\n";
        let shown = hide_runner_frames(dump);
        assert!(shown.contains("line 9 in test_segfaults"), "{shown}");
        assert!(shown.contains("in string_at"), "{shown}");
        assert!(!shown.contains("pluggy/_execution.py"), "{shown}");
        assert!(
            shown.ends_with("  (3 frames of pytest and pluggy hidden)"),
            "{shown}"
        );
    }
}
