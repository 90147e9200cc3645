use super::findings;
use crate::{RuleId, Settings, audit_source};

#[test]
fn suppression_comments_silence_named_rules_only() {
    let src = "import os\ndef test_x():\n    open('/tmp/a', 'w')  # racefree: ignore[RF001]\n    open('/tmp/b', 'w')  # racefree: ignore[RF004]\n    os.environ['X'] = '1'  # racefree: ignore\n";
    let report = audit_source("t.py", src, &Settings::default()).unwrap();
    assert_eq!(report.findings.len(), 1);
    assert_eq!(report.findings[0].start.line, 4);
    assert_eq!(report.suppressed, 2);
}

#[test]
fn disabled_rules_and_severity_overrides_apply() {
    let src = "import os\ndef test_x():\n    os.environ['X'] = '1'\n    open('/tmp/a', 'w')\n";
    let mut settings = Settings::default();
    settings.disabled.insert(RuleId::SharedLocation);
    settings
        .severities
        .insert(RuleId::GlobalState, crate::Severity::Error);
    let report = audit_source("t.py", src, &settings).unwrap();
    assert_eq!(report.findings.len(), 1);
    assert_eq!(report.findings[0].rule, RuleId::GlobalState);
    assert_eq!(report.findings[0].severity, crate::Severity::Error);
    assert_eq!(report.findings[0].snippet, "    os.environ['X'] = '1'");
}

#[test]
fn syntax_errors_are_reported_with_a_position() {
    let err = audit_source("t.py", "def f(:\n", &Settings::default()).unwrap_err();
    assert_eq!(err.path, "t.py");
    assert_eq!(err.position.map(|p| p.line), Some(1));
}

#[test]
fn main_guard_and_pyfakefs_are_skipped() {
    assert!(findings("if __name__ == '__main__':\n    open('/tmp/x', 'w')\n").is_empty());
    assert!(findings("import pyfakefs\ndef test_x(fs):\n    open('/tmp/x', 'w')\n").is_empty());
    assert!(findings("from unittest import mock\n@mock.patch('builtins.open')\ndef test_x(m):\n    open('/tmp/x', 'w')\n").is_empty());
}

#[test]
fn positions_point_at_the_call() {
    let report = audit_source(
        "t.py",
        "def test_x():\n    x = open('/tmp/x', 'w')\n",
        &Settings::default(),
    )
    .unwrap();
    let f = &report.findings[0];
    assert_eq!((f.start.line, f.start.column), (2, 9));
}

#[test]
fn class_decorators_apply_to_every_method() {
    let src = "import os\nfrom unittest import mock\nimport unittest\n@mock.patch.dict(os.environ, {'A': '1'})\n@mock.patch('builtins.open')\nclass T(unittest.TestCase):\n    def test_x(self, m):\n        os.environ['B'] = '2'\n        open('/tmp/x', 'w')\n";
    assert!(findings(src).is_empty(), "{:?}", findings(src));
    let undecorated = "import os\nimport unittest\nclass T(unittest.TestCase):\n    def test_x(self):\n        os.environ['B'] = '2'\n        open('/tmp/x', 'w')\n";
    assert_eq!(findings(undecorated).len(), 2);
}
