//! `--format json`: one JSON document, versioned, with flat findings for easy `jq` use.

use serde::Serialize;

use crate::finding::{AuditReport, Severity};

/// Bumped on any incompatible change to this document's shape.
pub const JSON_VERSION: u32 = 1;

#[derive(Serialize)]
struct Doc<'a> {
    version: u32,
    tool: &'static str,
    files_audited: usize,
    lines_audited: usize,
    findings: Vec<JsonFinding<'a>>,
    errors: Vec<JsonError<'a>>,
    summary: Summary,
}

#[derive(Serialize)]
struct JsonFinding<'a> {
    rule: &'static str,
    name: &'static str,
    severity: Severity,
    path: &'a str,
    line: usize,
    column: usize,
    end_line: usize,
    end_column: usize,
    message: &'a str,
    fix: &'a str,
    snippet: &'a str,
}

#[derive(Serialize)]
struct JsonError<'a> {
    path: &'a str,
    message: &'a str,
    line: Option<usize>,
    column: Option<usize>,
}

#[derive(Serialize)]
struct Summary {
    findings: usize,
    error: usize,
    warning: usize,
    info: usize,
    suppressed: usize,
}

pub fn render(report: &AuditReport) -> serde_json::Result<String> {
    let doc = Doc {
        version: JSON_VERSION,
        tool: "racefree audit",
        files_audited: report.files.len(),
        lines_audited: report.total_lines(),
        findings: report
            .findings()
            .map(|(file, f)| JsonFinding {
                rule: f.rule.code(),
                name: f.rule.info().name,
                severity: f.severity,
                path: &file.path,
                line: f.start.line,
                column: f.start.column,
                end_line: f.end.line,
                end_column: f.end.column,
                message: &f.message,
                fix: &f.fix,
                snippet: &f.snippet,
            })
            .collect(),
        errors: report
            .errors
            .iter()
            .map(|e| JsonError {
                path: &e.path,
                message: &e.message,
                line: e.position.map(|p| p.line),
                column: e.position.map(|p| p.column),
            })
            .collect(),
        summary: Summary {
            findings: report.total_findings(),
            error: report.count(Severity::Error),
            warning: report.count(Severity::Warning),
            info: report.count(Severity::Info),
            suppressed: report.total_suppressed(),
        },
    };
    serde_json::to_string_pretty(&doc)
}
