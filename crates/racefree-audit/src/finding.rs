//! What an audit produces: findings with a rule, a severity, a location and a fix.

use serde::{Deserialize, Serialize};

use crate::rules::RuleId;

/// How bad a finding is. Ordered so that `a >= b` means "a is at least as severe as b".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub const ALL: [Severity; 3] = [Severity::Error, Severity::Warning, Severity::Info];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }

    /// Parses the lower-case name used on the command line and in the config.
    pub fn parse(name: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A 1-based line and column (columns count Unicode scalar values, as editors do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// One problem found in one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule: RuleId,
    pub severity: Severity,
    pub start: Position,
    pub end: Position,
    /// What is wrong here, naming the path, port or state concerned.
    pub message: String,
    /// A concrete change that removes the problem.
    pub fix: String,
    /// The source line the finding starts on, without its line break.
    pub snippet: String,
}

/// A file that could not be audited (unreadable or not valid Python for the parser).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileError {
    pub path: String,
    pub message: String,
    pub position: Option<Position>,
}

/// The findings in one file, sorted by position.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FileReport {
    pub path: String,
    pub lines: usize,
    pub findings: Vec<Finding>,
    /// How many findings an inline `# racefree: ignore` comment suppressed.
    pub suppressed: usize,
}

/// The result of auditing a set of files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// Files with at least one finding, plus clean ones (so counts are exact), sorted by path.
    pub files: Vec<FileReport>,
    pub errors: Vec<FileError>,
}

impl AuditReport {
    pub fn findings(&self) -> impl Iterator<Item = (&FileReport, &Finding)> {
        self.files
            .iter()
            .flat_map(|f| f.findings.iter().map(move |x| (f, x)))
    }

    pub fn count(&self, severity: Severity) -> usize {
        self.findings()
            .filter(|(_, f)| f.severity == severity)
            .count()
    }

    pub fn total_findings(&self) -> usize {
        self.files.iter().map(|f| f.findings.len()).sum()
    }

    pub fn total_lines(&self) -> usize {
        self.files.iter().map(|f| f.lines).sum()
    }

    pub fn total_suppressed(&self) -> usize {
        self.files.iter().map(|f| f.suppressed).sum()
    }

    /// The most severe finding, if any.
    pub fn worst(&self) -> Option<Severity> {
        self.findings().map(|(_, f)| f.severity).max()
    }
}
