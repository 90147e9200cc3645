//! racefree audit: static analysis of Python test code for things that break when tests run in
//! parallel: writes to shared locations, fixed ports, unrestored process-global state.
//!
//! The pipeline per file: parse (rustpython-parser) -> [`analysis`] extracts facts with their
//! context and a small data flow -> [`rules`] turn facts into findings -> suppressions and the
//! configured severities are applied here -> [`report`] renders. Nothing is imported or executed.

pub mod analysis;
pub mod config;
pub mod discover;
pub mod error;
pub mod finding;
pub mod parse;
pub mod project;
pub mod report;
pub mod rules;
pub mod source;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use config::{AuditConfig, ConfigError, FailOn, Settings};
pub use error::AuditError;
pub use finding::{AuditReport, FileError, FileReport, Finding, Position, Severity};
pub use rules::{RULES, RuleId, RuleInfo};

use source::LineIndex;

/// Audits one file's source text. `path` is only used for messages and to recognise conftest.py.
pub fn audit_source(
    path: &str,
    source: &str,
    settings: &Settings,
) -> Result<FileReport, FileError> {
    let index = LineIndex::new(source);
    let body = parse::parse_module(source, path).map_err(|e| FileError {
        path: path.to_owned(),
        message: format!("not valid Python for racefree's parser: {}", e.message),
        position: Some(index.position(e.offset)),
    })?;
    let is_conftest = Path::new(path)
        .file_name()
        .is_some_and(|n| n == "conftest.py");
    let facts = analysis::analyze(&body, source, &settings.shared_roots, is_conftest);
    let mut report = FileReport {
        path: path.to_owned(),
        lines: index.line_count(),
        ..FileReport::default()
    };
    for raw in rules::check_all(&facts) {
        if !settings.enabled(raw.rule) {
            continue;
        }
        let start = index.position(raw.span.start);
        let end = index.position(raw.span.end);
        // A suppression comment may sit on any line of a multi-line statement.
        let suppressed = (start.line..=end.line)
            .filter_map(|l| source::suppression(index.line(l)))
            .any(|s| s.covers(raw.rule));
        if suppressed {
            report.suppressed += 1;
            continue;
        }
        report.findings.push(Finding {
            rule: raw.rule,
            severity: settings.severity(raw.rule),
            start,
            end,
            message: raw.message,
            fix: raw.fix,
            snippet: index.line(start.line).to_owned(),
        });
    }
    report.findings.sort_by_key(|f| (f.start, f.rule));
    // One finding per rule per node: `shutil.move(src, dst)` with two shared paths is one problem.
    report
        .findings
        .dedup_by(|a, b| a.start == b.start && a.rule == b.rule);
    Ok(report)
}

/// How a path is shown in reports: as given, without a leading `./`.
pub fn display_path(path: &Path) -> String {
    let s = path.to_string_lossy();
    s.strip_prefix("./").unwrap_or(&s).to_owned()
}

fn audit_file(path: &Path, settings: &Settings) -> Result<FileReport, FileError> {
    let shown = display_path(path);
    let bytes = std::fs::read(path).map_err(|e| FileError {
        path: shown.clone(),
        message: format!("cannot read: {e}"),
        position: None,
    })?;
    // Python source is UTF-8 by default; a rare legacy encoding is decoded lossily rather than skipped.
    let text = String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    audit_source(&shown, &text, settings)
}

/// Audits files, on `jobs` threads (1 = on this thread). Results do not depend on `jobs`.
pub fn audit_files(files: &[PathBuf], settings: &Settings, jobs: usize) -> AuditReport {
    let results: Vec<Result<FileReport, FileError>> = if jobs <= 1 || files.len() < 2 {
        files.iter().map(|f| audit_file(f, settings)).collect()
    } else {
        // Work stealing by index: files differ a lot in size, so fixed chunks would balance badly.
        let next = AtomicUsize::new(0);
        let slots: Mutex<Vec<Option<Result<FileReport, FileError>>>> =
            Mutex::new(vec![None; files.len()]);
        std::thread::scope(|s| {
            for _ in 0..jobs.min(files.len()) {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(f) = files.get(i) else { break };
                        let r = audit_file(f, settings);
                        if let Ok(mut slots) = slots.lock() {
                            slots[i] = Some(r);
                        }
                    }
                });
            }
        });
        slots
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .into_iter()
            .flatten()
            .collect()
    };
    let mut report = AuditReport::default();
    for r in results {
        match r {
            Ok(f) => report.files.push(f),
            Err(e) => report.errors.push(e),
        }
    }
    report
}

#[cfg(test)]
mod tests;
