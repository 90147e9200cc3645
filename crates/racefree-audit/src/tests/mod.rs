//! Rule tests: every rule has positive examples and similar-looking negative ones.
//! Sources are dedented so examples read like the Python they are.

mod fixed_port;
mod fixed_temp_name;
mod global_state;
mod misc;
mod session_fixture;
mod shared_location;
mod source_tree;

use crate::{RuleId, Settings, audit_source};

fn dedent(src: &str) -> String {
    let lines: Vec<&str> = src.lines().skip_while(|l| l.trim().is_empty()).collect();
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|l| l.get(indent..).unwrap_or("").to_owned() + "\n")
        .collect()
}

/// (rule, line) of every finding in `src`, audited as `test_example.py`.
pub fn findings_in(path: &str, src: &str) -> Vec<(RuleId, usize)> {
    let report = audit_source(path, &dedent(src), &Settings::default()).unwrap();
    report
        .findings
        .iter()
        .map(|f| (f.rule, f.start.line))
        .collect()
}

pub fn findings(src: &str) -> Vec<(RuleId, usize)> {
    findings_in("tests/test_example.py", src)
}

/// Asserts `src` has exactly one finding, of `rule`, on the line containing `# <-`.
#[track_caller]
pub fn assert_flags(rule: RuleId, src: &str) {
    let src = dedent(src);
    let line = src
        .lines()
        .position(|l| l.contains("# <-"))
        .map(|i| i + 1)
        .expect("example marks its line with # <-");
    let got = findings(&src);
    assert_eq!(
        got,
        vec![(rule, line)],
        "expected one {rule} on line {line} in:\n{src}"
    );
}

/// Asserts `src` has no finding of `rule`.
#[track_caller]
pub fn assert_clean(rule: RuleId, src: &str) {
    let got: Vec<_> = findings(src)
        .into_iter()
        .filter(|(r, _)| *r == rule)
        .collect();
    assert!(
        got.is_empty(),
        "expected no {rule}, got {got:?} in:\n{}",
        dedent(src)
    );
}
