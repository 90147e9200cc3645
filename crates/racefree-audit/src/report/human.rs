//! The report for people: findings grouped by file, the offending line with a marker under the
//! offending code, the fix, and a one-line summary. Colour only when asked (the CLI decides from
//! the TTY and NO_COLOR).

use std::io::{self, Write};

use crate::finding::{AuditReport, Finding, Severity};

#[derive(Debug, Clone, Copy, Default)]
pub struct HumanOptions {
    pub color: bool,
}

struct Paint(bool);

impl Paint {
    fn wrap(&self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
    fn severity(&self, s: Severity) -> String {
        let code = match s {
            Severity::Error => "1;31",
            Severity::Warning => "1;33",
            Severity::Info => "1;36",
        };
        self.wrap(code, s.as_str())
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn write_finding(out: &mut impl Write, f: &Finding, paint: &Paint) -> io::Result<()> {
    writeln!(
        out,
        "  {}:{}  {}{}  {}",
        f.start.line,
        f.start.column,
        paint.severity(f.severity),
        paint.wrap("2", &format!("[{}]", f.rule)),
        f.message
    )?;
    let gutter = f.start.line.to_string();
    let pad = " ".repeat(gutter.len());
    writeln!(
        out,
        "    {} {} {}",
        paint.wrap("34", &gutter),
        paint.wrap("34", "|"),
        f.snippet
    )?;
    // Underline from the start column to the end column, or to the end of the line when the
    // node spans several lines.
    let width = f.snippet.chars().count();
    let from = f.start.column.saturating_sub(1).min(width);
    let to = if f.end.line == f.start.line {
        f.end.column.saturating_sub(1)
    } else {
        width
    };
    let len = to.saturating_sub(from).max(1);
    let marker: String = " ".repeat(from) + &"^".repeat(len);
    writeln!(
        out,
        "    {pad} {} {}",
        paint.wrap("34", "|"),
        paint.wrap("1;31", &marker)
    )?;
    writeln!(
        out,
        "    {pad} {} {}",
        paint.wrap("34", "="),
        paint.wrap("32", &format!("fix: {}", f.fix))
    )
}

pub fn render(report: &AuditReport, options: HumanOptions, out: &mut impl Write) -> io::Result<()> {
    let paint = Paint(options.color);
    for file in report.files.iter().filter(|f| !f.findings.is_empty()) {
        writeln!(out, "{}", paint.wrap("1", &file.path))?;
        for f in &file.findings {
            write_finding(out, f, &paint)?;
        }
        writeln!(out)?;
    }
    for e in &report.errors {
        let at = e
            .position
            .map_or_else(String::new, |p| format!(":{}:{}", p.line, p.column));
        writeln!(
            out,
            "{}: could not audit {}{at}: {}",
            paint.wrap("1;33", "warning"),
            e.path,
            e.message
        )?;
    }
    let total = report.total_findings();
    let with_findings = report
        .files
        .iter()
        .filter(|f| !f.findings.is_empty())
        .count();
    let mut summary = if total == 0 {
        format!(
            "No findings in {} ({} lines).",
            plural(report.files.len(), "file"),
            report.total_lines()
        )
    } else {
        format!(
            "{} ({} {}, {} {}, {} info) in {} of {} ({} lines).",
            plural(total, "finding"),
            report.count(Severity::Error),
            if report.count(Severity::Error) == 1 {
                "error"
            } else {
                "errors"
            },
            report.count(Severity::Warning),
            if report.count(Severity::Warning) == 1 {
                "warning"
            } else {
                "warnings"
            },
            report.count(Severity::Info),
            with_findings,
            plural(report.files.len(), "file"),
            report.total_lines()
        )
    };
    if report.total_suppressed() > 0 {
        summary.push_str(&format!(
            " {} suppressed by `# racefree: ignore`.",
            report.total_suppressed()
        ));
    }
    if !report.errors.is_empty() {
        summary.push_str(&format!(
            " {} could not be audited.",
            plural(report.errors.len(), "file")
        ));
    }
    writeln!(out, "{}", paint.wrap("1", &summary))
}
