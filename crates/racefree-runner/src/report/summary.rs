//! The end-of-run report in pytest's words: ERRORS and FAILURES sections with tracebacks
//! and captured output, slowest durations, the short test summary, and the summary line
//! (`3 failed, 120 passed, 2 skipped, 1 xfailed in 4.21s`).

use std::collections::HashMap;
use std::io::Write;

use crate::dispatch::Reporter;
use crate::events::{Event, Outcome, TestResult, Totals};
use crate::report::plugin_sections;

/// pytest's separator line: `===== title =====` filling `width`.
pub fn sep(ch: char, title: &str, width: usize) -> String {
    if title.is_empty() {
        return ch.to_string().repeat(width);
    }
    let n = (width.saturating_sub(title.chars().count() + 2) / 2).max(1);
    let fill = ch.to_string().repeat(n);
    let mut line = format!("{fill} {title} {fill}");
    if line.chars().count() < width {
        line.push(ch);
    }
    line
}

/// pytest's session duration format: `4.21s`, or `73.20s (0:01:13)` past a minute.
pub fn format_duration(secs: f64) -> String {
    if secs < 60.0 {
        return format!("{secs:.2}s");
    }
    let whole = secs as u64;
    format!(
        "{secs:.2}s ({}:{:02}:{:02})",
        whole / 3600,
        (whole % 3600) / 60,
        whole % 60
    )
}

/// The summary line's counts, in pytest's order and plural forms, plus racefree's own
/// `crashed` and `not run`.
pub fn summary_counts(t: &Totals, collect_errors: u64) -> String {
    let parts: Vec<String> = t
        .categories(collect_errors)
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| {
            let name = match (name.as_str(), n) {
                ("warnings", 1) => "warning".to_string(),
                ("error", n) if n != 1 => "errors".to_string(),
                _ => name,
            };
            format!("{n} {name}")
        })
        .collect();
    if parts.is_empty() {
        "no tests ran".to_string()
    } else {
        parts.join(", ")
    }
}

pub fn summary_line(t: &Totals, collect_errors: u64, secs: f64) -> String {
    format!(
        "{} in {}",
        summary_counts(t, collect_errors),
        format_duration(secs)
    )
}

/// The test's name as pytest titles its failure section (`TestK.test_m[1]`).
fn head_line(r: &TestResult) -> String {
    if !r.head_line.is_empty() {
        return r.head_line.clone();
    }
    r.nodeid
        .split_once("::")
        .map(|(_, rest)| rest.replace("::", "."))
        .unwrap_or_else(|| r.nodeid.clone())
}

/// One line of the short test summary.
struct ShortLine {
    /// The `-r` character that shows it; `!` for racefree's own lines, always shown.
    kind: char,
    /// Where pytest would have reported it, as near as racefree can tell: collection before
    /// tests, then by file (each file's tests in the order they ran, or by their place in
    /// it when their units ran parts of it).
    order: (bool, FileRank, Option<u64>),
    text: String,
}

pub struct Summary {
    out: Box<dyn Write + Send>,
    width: usize,
    /// pytest's `--tb` style: `no` prints no FAILURES and ERRORS sections; `line` a
    /// failure's text and output, then its crash line, with no title of its own.
    tb_style: String,
    durations: Option<usize>,
    /// pytest's `--durations-min`, if given (else 0.005 s, or 0 from `-vv` on).
    durations_min: Option<f64>,
    /// pytest's verbosity: below 0 (`-q`) the summary line goes without its rule.
    verbosity: i32,
    failures: Vec<TestResult>,
    /// pytest's PASSES and XPASSES sections (`-rP`, `-rX`): whether any test passed
    /// (xpassed), and those with captured output to show.
    passes: Shown,
    xpasses: Shown,
    /// The ERRORS section's entries: where it goes (see `error_order`), title, text.
    errors: Vec<(ErrorOrder, String, String)>,
    /// pytest's `--show-capture`: which captured output a failure shows (`all`, `no`, or a
    /// word its sections' titles hold: `stdout`, `stderr`, `log`).
    show_capture: String,
    /// Each file's place in the run's files, as pytest collects them (see `FileRank`).
    file_order: std::collections::HashMap<String, usize>,
    /// pytest's `--no-summary`: none of pytest's own sections, only the summary line (and
    /// what other plugins add, pytest-cov's report).
    no_summary: bool,
    /// The short test summary's lines, each with the `-r` character that shows it (`!`:
    /// racefree's own, always shown).
    short: Vec<ShortLine>,
    /// Skips, folded as pytest folds them: where (path, line), the reason, how many, and
    /// whether it was a module's at collection (pytest reports those first).
    skips: Vec<(crate::events::SkipWhere, String, usize, bool)>,
    /// pytest's `-r` characters as pytest expands them (`a`, `A`, `N`); default `fE`.
    report_chars: String,
    /// The warnings units recorded: (where, pytest's text, recorded while configuring).
    warnings: Vec<(String, String, bool)>,
    /// The "warnings summary" is shown (not with pytest's `--disable-warnings`).
    show_warnings: bool,
    timings: Vec<(f64, String)>,
    /// Infrastructure retries with their forensics: (title, text).
    infra: Vec<(String, String)>,
    /// pytest-cov's terminal section for the run (see `coverage`).
    coverage: String,
    /// Each unit's first file, for the order of the units' own texts.
    unit_files: HashMap<usize, String>,
    /// Other plugins' terminal summaries: (unit, text).
    plugin_texts: Vec<(usize, String)>,
}

impl Summary {
    pub fn new(
        out: Box<dyn Write + Send>,
        width: usize,
        verbosity: i32,
        durations: Option<usize>,
    ) -> Summary {
        Summary {
            out,
            width,
            tb_style: "auto".to_string(),
            durations,
            durations_min: None,
            verbosity,
            failures: Vec::new(),
            passes: Shown::default(),
            xpasses: Shown::default(),
            errors: Vec::new(),
            show_capture: "all".to_string(),
            file_order: Default::default(),
            no_summary: false,
            short: Vec::new(),
            skips: Vec::new(),
            report_chars: "fE".to_string(),
            warnings: Vec::new(),
            show_warnings: true,
            timings: Vec::new(),
            infra: Vec::new(),
            coverage: String::new(),
            unit_files: HashMap::new(),
            plugin_texts: Vec::new(),
        }
    }

    fn push_short(&mut self, kind: char, id: &str, text: String) {
        self.push_short_at(kind, id, None, text);
    }

    /// A test's line, with its place in its file when its unit ran part of the file.
    fn push_short_at(&mut self, kind: char, id: &str, position: Option<u64>, text: String) {
        let order = (id.contains("::"), self.file_rank(id), position);
        self.short.push(ShortLine { kind, order, text });
    }

    /// pytest's `-r` characters (`-rA`, `-ra`, `-rN`, `-rsx` ...): which lines the short test
    /// summary holds, in which order, as pytest expands them.
    pub fn with_report_chars(mut self, given: &str) -> Summary {
        let mut chars = String::new();
        for c in given.chars() {
            match c.to_ascii_lowercase() {
                _ if c == 'a' => chars = "sxXEf".to_string(),
                _ if c == 'A' => chars = "PpsxXEf".to_string(),
                _ if c == 'N' => chars.clear(),
                // pytest's old aliases.
                _ if c == 'F' || c == 'S' => {
                    let lower = c.to_ascii_lowercase();
                    if !chars.contains(lower) {
                        chars.push(lower);
                    }
                }
                _ if !chars.contains(c) => chars.push(c),
                _ => {}
            }
        }
        self.report_chars = chars;
        self
    }

    /// Whether the "warnings summary" is printed (pytest's `--disable-warnings` says not).
    pub fn with_warnings_summary(mut self, show: bool) -> Summary {
        self.show_warnings = show;
        self
    }

    /// pytest's `--show-capture`: which captured output failures and errors show.
    pub fn with_show_capture(mut self, which: &str) -> Summary {
        self.show_capture = which.to_string();
        self
    }

    /// The run's files (rootdir-relative) in pytest's collection order: results are
    /// reported in it, whichever unit ended first.
    pub fn with_file_order<'a>(mut self, files: impl IntoIterator<Item = &'a str>) -> Summary {
        for (i, file) in files.into_iter().enumerate() {
            self.file_order.entry(file.to_string()).or_insert(i);
        }
        self
    }

    fn file_rank(&self, nodeid: &str) -> FileRank {
        let file = file_of(nodeid);
        let at = self.file_order.get(file).copied().unwrap_or(usize::MAX);
        (at, file.to_string())
    }

    /// Other plugins' terminal summaries, each unit's in the order of their files.
    fn plugin_sections(&self) -> String {
        let mut texts: Vec<(FileRank, usize, &str)> = self
            .plugin_texts
            .iter()
            .map(|(unit, text)| {
                let file = self.unit_files.get(unit).map_or("", String::as_str);
                (self.file_rank(file), *unit, text.as_str())
            })
            .collect();
        texts.sort();
        plugin_sections::merged(texts.into_iter().map(|t| t.2), self.width)
    }

    fn error_order(&self, when: &str, nodeid: &str, position: Option<u64>) -> ErrorOrder {
        let phase = if when == "collect" {
            ErrorWhen::Collect
        } else {
            ErrorWhen::Test
        };
        (phase, self.file_rank(nodeid), position)
    }

    /// pytest's `--durations-min`: the shortest duration `--durations` names.
    pub fn with_durations_min(mut self, min: Option<f64>) -> Self {
        self.durations_min = min;
        self
    }

    /// pytest's `--no-summary`: none of pytest's own sections.
    pub fn with_no_summary(mut self, no_summary: bool) -> Summary {
        self.no_summary = no_summary;
        self
    }

    /// pytest's `--tb` style (`no`: no FAILURES and ERRORS sections; `line`: a line per
    /// failure).
    pub fn with_tb_style(mut self, style: Option<&str>) -> Summary {
        self.tb_style = style.unwrap_or("auto").to_string();
        self
    }

    fn short_line(word: &str, id: &str, message: &str) -> String {
        let first = message.lines().next().unwrap_or_default();
        if first.is_empty() {
            format!("{word} {id}")
        } else {
            format!("{word} {id} - {first}")
        }
    }

    fn render(
        &mut self,
        totals: &Totals,
        collect_errors: u64,
        secs: f64,
        interrupted: Option<&str>,
    ) -> std::io::Result<()> {
        let w = self.width;
        let show_capture = self.show_capture.clone();
        let shown = |longrepr: &str, sections: &[(String, String)]| {
            shown_sections(longrepr, sections, &show_capture, w)
        };
        if self.tb_style == "no" || self.no_summary {
            // pytest's tracebacks go; racefree's own word on a unit or a crash stays.
            self.errors
                .retain(|(_, title, _)| title.starts_with("ERROR in unit"));
            self.failures.retain(|r| r.outcome == Outcome::Crashed);
        }
        // Units end in any order; pytest reports in collection order: by file is as near
        // as racefree gets (stable sorts: a file's tests stay in the order they ran).
        self.errors.sort_by(|a, b| a.0.cmp(&b.0));
        let failures = std::mem::take(&mut self.failures);
        let mut ranked: Vec<((FileRank, Option<u64>), TestResult)> = failures
            .into_iter()
            .map(|r| ((self.file_rank(&r.nodeid), r.position), r))
            .collect();
        ranked.sort_by(|a, b| a.0.cmp(&b.0));
        self.failures = ranked.into_iter().map(|(_, r)| r).collect();
        let plugins = self.plugin_sections();
        let out = &mut self.out;
        if !self.errors.is_empty() {
            writeln!(out, "{}", sep('=', "ERRORS", w))?;
            for (_, title, body) in &self.errors {
                writeln!(out, "{}", sep('_', title, w))?;
                writeln!(out, "{}", body.trim_end())?;
            }
        }
        if !self.failures.is_empty() {
            writeln!(out, "{}", sep('=', "FAILURES", w))?;
            for r in &self.failures {
                let failed = r.failed_subtests.iter().map(|sub| {
                    (
                        sub.head_line.clone(),
                        &sub.longrepr,
                        &sub.sections,
                        &sub.crash_line,
                    )
                });
                let own = (head_line(r), &r.longrepr, &r.sections, &r.crash_line);
                for (title, longrepr, sections, crash_line) in failed.chain([own]) {
                    match crash_line {
                        // pytest's --tb=line: no title; the crash line after the output.
                        Some(line) if self.tb_style == "line" => {
                            let text = shown(longrepr, sections);
                            if !text.trim().is_empty() {
                                writeln!(out, "{text}")?;
                            }
                            writeln!(out, "{line}")?;
                        }
                        _ => {
                            writeln!(out, "{}", sep('_', &title, w))?;
                            writeln!(out, "{}", shown(longrepr, sections))?;
                        }
                    }
                }
                // What its teardown printed, as pytest adds after a failure (not by line).
                if self.tb_style != "line" {
                    write!(
                        out,
                        "{}",
                        section_lines(&r.teardown_sections, &show_capture, w, true)
                    )?;
                }
            }
        }
        if self.show_warnings && !self.no_summary && !self.warnings.is_empty() {
            writeln!(out, "{}", sep('=', "warnings summary", w))?;
            write!(out, "{}", warnings_summary(&mut self.warnings))?;
            writeln!(
                out,
                "-- Docs: https://docs.pytest.org/en/stable/how-to/capture-warnings.html"
            )?;
        }
        // pytest shows passing tests' output (-rP, -rX) after its warnings summary.
        let passes_shown = self.tb_style != "no" && !self.no_summary;
        for (shown, title, char) in [
            (&mut self.passes, "PASSES", 'P'),
            (&mut self.xpasses, "XPASSES", 'X'),
        ] {
            if !(passes_shown && shown.any && self.report_chars.contains(char)) {
                continue;
            }
            writeln!(out, "{}", sep('=', title, w))?;
            shown.tests.sort_by(|a, b| a.0.cmp(&b.0));
            for (_, title, sections, teardown) in &shown.tests {
                if !sections.is_empty() {
                    writeln!(out, "{}", sep('_', title, w))?;
                    write!(
                        out,
                        "{}",
                        section_lines(sections, &self.show_capture, w, false)
                    )?;
                }
                write!(
                    out,
                    "{}",
                    section_lines(teardown, &self.show_capture, w, true)
                )?;
            }
        }
        if !self.infra.is_empty() {
            writeln!(out, "{}", sep('=', "INFRASTRUCTURE RETRIES", w))?;
            for (title, body) in &self.infra {
                writeln!(out, "{}", sep('_', title, w))?;
                writeln!(out, "{}", body.trim_end())?;
            }
        }
        // Where pytest shows other plugins' terminal summaries (pytest-cov's report), before
        // its own durations plugin's: each unit's, in the order of their files.
        write!(out, "{plugins}")?;
        write!(out, "{}", self.coverage)?;
        if let Some(n) = self.durations {
            self.timings.sort_by(|a, b| b.0.total_cmp(&a.0));
            let title = if n == 0 {
                "slowest durations".to_string()
            } else {
                format!("slowest {n} durations")
            };
            writeln!(out, "{}", sep('=', &title, w))?;
            let take = if n == 0 { self.timings.len() } else { n };
            let listed = &self.timings[..take.min(self.timings.len())];
            // As pytest's durations plugin: the fastest go unnamed, counted in one line.
            let min = self
                .durations_min
                .unwrap_or(if self.verbosity < 2 { 0.005 } else { 0.0 });
            for (i, (d, id)) in listed.iter().enumerate() {
                if *d < min {
                    writeln!(out)?;
                    let hint = if self.durations_min.is_none() {
                        "  Use -vv to show these durations."
                    } else {
                        ""
                    };
                    writeln!(
                        out,
                        "({} durations < {min}s hidden.{hint})",
                        listed.len() - i
                    )?;
                    break;
                }
                writeln!(out, "{d:.2}s {id}")?;
            }
        }
        // In the order of pytest's `-r` characters, then racefree's own lines.
        let mut lines: Vec<String> = Vec::new();
        // Units end in any order; pytest reports in collection order. By file is as near as
        // racefree gets (stable: a file's tests stay in the order they ran).
        // racefree's own lines keep the order they came in (equal keys, a stable sort).
        self.short.sort_by_key(|l| {
            if l.kind == '!' {
                (false, (0, String::new()), None)
            } else {
                l.order.clone()
            }
        });
        self.skips
            .sort_by(|a, b| (!a.3, &a.0.0, a.0.1).cmp(&(!b.3, &b.0.0, b.0.1)));
        // With --no-summary pytest's own lines go; racefree's stay, to say what went wrong.
        let chars = if self.no_summary {
            String::new()
        } else {
            self.report_chars.clone()
        };
        for c in chars.chars().chain(['!']) {
            if c == 's' {
                for ((path, line), reason, n, _) in &self.skips {
                    lines.push(match line {
                        Some(line) => format!("SKIPPED [{n}] {path}:{line}: {reason}"),
                        None => format!("SKIPPED [{n}] {path}: {reason}"),
                    });
                }
            }
            lines.extend(
                self.short
                    .iter()
                    .filter(|l| l.kind == c)
                    .map(|l| l.text.clone()),
            );
        }
        if !lines.is_empty() {
            writeln!(out, "{}", sep('=', "short test summary info", w))?;
            for line in &lines {
                writeln!(out, "{line}")?;
            }
        }
        if let Some(reason) = interrupted {
            writeln!(out, "{}", sep('!', reason, w))?;
        }
        let line = summary_line(totals, collect_errors, secs);
        if self.verbosity < 0 {
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "{}", sep('=', &line, w))?;
        }
        out.flush()
    }
}

/// The body of pytest's "warnings summary": warnings grouped by their text, each group's
/// places first (the tests, or with ten or more, how many per file), then the text indented
/// by two spaces, then a blank line. Units end in any order: warnings are taken as pytest
/// records them, the configuration's first, then collection's, then the tests' by file
/// (each file's in the order they came).
fn warnings_summary(warnings: &mut [(String, String, bool)]) -> String {
    warnings.sort_by_key(|(at, _, config)| {
        let stage = if *config {
            0
        } else if at.contains("::") {
            2
        } else {
            1
        };
        let file = if stage == 2 {
            at.split("::").next().unwrap_or(at).to_string()
        } else {
            String::new()
        };
        (stage, file)
    });
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for (at, message, _) in warnings.iter() {
        match groups.iter_mut().find(|(m, _)| *m == message.as_str()) {
            Some((_, places)) => places.push(at),
            None => groups.push((message, vec![at])),
        }
    }
    let mut out = String::new();
    for (message, places) in groups {
        let places: Vec<&str> = places.into_iter().filter(|p| !p.is_empty()).collect();
        if places.is_empty() {
            out.push_str(message.trim_end());
        } else {
            if places.len() < 10 {
                out.push_str(&places.join("\n"));
            } else {
                let mut per_file: Vec<(&str, usize)> = Vec::new();
                for place in &places {
                    let file = place.split("::").next().unwrap_or(place);
                    match per_file.iter_mut().find(|(f, _)| *f == file) {
                        Some((_, n)) => *n += 1,
                        None => per_file.push((file, 1)),
                    }
                }
                let lines: Vec<String> = per_file
                    .iter()
                    .map(|(f, n)| format!("{f}: {n} warning{}", if *n > 1 { "s" } else { "" }))
                    .collect();
                out.push_str(&lines.join("\n"));
            }
            out.push('\n');
            let indented: Vec<String> = message.lines().map(|l| format!("  {l}")).collect();
            out.push_str(indented.join("\n").trim_end());
        }
        out.push_str("\n\n");
    }
    out
}

/// `line - reason`, or the line alone without a reason (pytest's XFAIL/XPASS lines).
fn with_reason(line: String, reason: &str) -> String {
    if reason.is_empty() {
        line
    } else {
        format!("{line} - {reason}")
    }
}

/// When an error came, for the order pytest shows them in: collection errors first (pytest
/// collects before it runs), then the tests' setup and teardown errors, then racefree's
/// own word on units, each group in the order of the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ErrorWhen {
    Collect,
    Test,
    Racefree,
}

/// Where a file's results go: its place in the run's files (pytest's collection order),
/// then its path for a file the run did not list.
type FileRank = (usize, String);

type ErrorOrder = (ErrorWhen, FileRank, Option<u64>);

fn file_of(nodeid: &str) -> &str {
    nodeid.split("::").next().unwrap_or(nodeid)
}

/// Whether pytest's `--show-capture` (`no`, `all`, `stdout`, `stderr`, `log`) shows the
/// captured output section titled `title`.
fn capture_shown(title: &str, show_capture: &str) -> bool {
    match show_capture {
        "no" => false,
        "all" => true,
        word => title.contains(word),
    }
}

/// A failure's or error's text with the captured output pytest's `--show-capture` lets
/// through: `all`, `no`, or the sections whose titles hold its word (`stdout`, `stderr`,
/// `log`).
fn shown_sections(
    longrepr: &str,
    sections: &[(String, String)],
    show_capture: &str,
    width: usize,
) -> String {
    let shown = sections
        .iter()
        .filter(|(title, _)| capture_shown(title, show_capture));
    // Each section under a `----- title -----` line, as pytest prints them.
    let mut text = longrepr.trim_end().to_string();
    for (title, captured) in shown {
        text.push('\n');
        text.push_str(&sep('-', title, width));
        text.push('\n');
        text.push_str(captured.trim_end());
    }
    text
}

/// Passing (or xpassing) tests for pytest's PASSES (XPASSES) section.
#[derive(Default)]
struct Shown {
    /// Some test passed: pytest shows the section's title even when none printed anything.
    any: bool,
    /// ((file rank, place in the file), title, captured output, the teardown report's).
    tests: Vec<PassShown>,
}

type PassShown = (
    (FileRank, Option<u64>),
    String,
    Vec<(String, String)>,
    Vec<(String, String)>,
);

impl Shown {
    fn add(&mut self, r: &TestResult, rank: FileRank) {
        self.any = true;
        let teardown_printed = r
            .teardown_sections
            .iter()
            .any(|(title, _)| title.contains("teardown"));
        if !r.sections.is_empty() || teardown_printed {
            self.tests.push((
                (rank, r.position),
                head_line(r),
                r.sections.clone(),
                r.teardown_sections.clone(),
            ));
        }
    }
}

/// Captured output under `----- title -----` lines, as pytest prints a passing test's
/// (`show_capture` chooses which, as pytest's --show-capture); `teardown_only` keeps the
/// teardown's own, as pytest adds them after the test's.
fn section_lines(
    sections: &[(String, String)],
    show_capture: &str,
    width: usize,
    teardown_only: bool,
) -> String {
    let mut text = String::new();
    for (title, captured) in sections {
        if !capture_shown(title, show_capture) || (teardown_only && !title.contains("teardown")) {
            continue;
        }
        text.push_str(&sep('-', title, width));
        text.push('\n');
        text.push_str(captured.strip_suffix('\n').unwrap_or(captured));
        text.push('\n');
    }
    text
}

impl Reporter for Summary {
    fn on_event(&mut self, event: &Event) {
        match event {
            Event::CollectError {
                nodeid,
                outcome,
                longrepr,
                message,
                ..
            } if outcome == "failed" => {
                self.errors.push((
                    self.error_order("collect", nodeid, None),
                    format!("ERROR collecting {nodeid}"),
                    longrepr.clone(),
                ));
                let line = Self::short_line("ERROR", nodeid, message);
                self.push_short('E', nodeid, line);
            }
            Event::UnitFinished {
                error: Some(text),
                unit,
                ..
            } => {
                self.errors.push((
                    (ErrorWhen::Racefree, (0, String::new()), None),
                    format!("ERROR in unit {unit}"),
                    text.clone(),
                ));
                let line = format!(
                    "ERROR unit {unit} - {}",
                    text.lines().next().unwrap_or_default()
                );
                self.push_short('!', "", line);
            }
            Event::Warning {
                location,
                message,
                config,
                ..
            } => self
                .warnings
                .push((location.clone(), message.clone(), *config)),
            Event::Leak {
                unit,
                nodeid,
                pid,
                cmdline,
                ..
            } => {
                let test = nodeid.as_deref().unwrap_or("test unknown");
                let line = format!(
                    "LEAK unit {unit} ({test}) - left pid {pid} running, killed: {cmdline}"
                );
                self.push_short('!', "", line);
            }
            Event::InfraRetry {
                unit,
                exit,
                files,
                stderr_tail,
                retry,
                delay,
                ..
            } => {
                let listed: Vec<String> = files
                    .iter()
                    .map(|(f, exists)| {
                        format!("  {f} ({})", if *exists { "exists" } else { "MISSING" })
                    })
                    .collect();
                self.infra.push((
                    format!("unit {unit}: retry {retry}"),
                    format!(
                        "the pytest process ended ({exit}) before reporting any test; its files \
                         are all still there, so it runs again in {delay:.1} s\nfiles:\n{}\n\
                         last output of the pytest process (stderr):\n{stderr_tail}",
                        listed.join("\n")
                    ),
                ));
                let line =
                    format!("INFRA RETRY unit {unit} - {exit} before any test; retry {retry}");
                self.push_short('!', "", line);
            }
            Event::TestFinished(r) if r.flaky => {
                self.timings.push((r.duration, r.nodeid.clone()));
                if self.report_chars.contains('P') {
                    self.passes.add(r, self.file_rank(&r.nodeid));
                }
                let first = r.reruns.first().map(|x| x.message.as_str()).unwrap_or("");
                let line = Self::short_line(
                    "FLAKY",
                    &r.nodeid,
                    &format!(
                        "passed on attempt {} after {} failed: {first}",
                        r.attempt,
                        r.reruns.len()
                    ),
                );
                self.push_short('!', "", line);
            }
            Event::TestFinished(r) => {
                self.timings.push((r.duration, r.nodeid.clone()));
                for sub in &r.failed_subtests {
                    let word = if sub.word.is_empty() {
                        "SUBFAILED"
                    } else {
                        &sub.word
                    };
                    let line = Self::short_line(word, &r.nodeid, &sub.message);
                    self.push_short_at('f', &r.nodeid, r.position, line);
                }
                match r.outcome {
                    Outcome::Failed | Outcome::Crashed => {
                        let line = Self::short_line("FAILED", &r.nodeid, &r.message);
                        self.push_short_at('f', &r.nodeid, r.position, line);
                        self.failures.push(r.as_ref().clone());
                    }
                    Outcome::Error => {
                        let when = r.when.as_deref().unwrap_or("setup");
                        self.errors.push((
                            self.error_order(when, &r.nodeid, r.position),
                            format!("ERROR at {when} of {}", head_line(r)),
                            shown_sections(
                                &r.longrepr,
                                &r.sections,
                                &self.show_capture,
                                self.width,
                            ),
                        ));
                        let line = Self::short_line("ERROR", &r.nodeid, &r.message);
                        self.push_short_at('E', &r.nodeid, r.position, line);
                    }
                    Outcome::NotRun if !r.message.contains("was stopped") => {
                        let line = Self::short_line("NOT RUN", &r.nodeid, &r.message);
                        self.push_short('!', "", line);
                    }
                    Outcome::Skipped => {
                        let file = r.nodeid.split("::").next().unwrap_or(&r.nodeid);
                        let at = r.skip_where.clone().unwrap_or((file.to_string(), None));
                        let at_collection = !r.nodeid.contains("::");
                        match self
                            .skips
                            .iter_mut()
                            .find(|(w, reason, _, _)| *w == at && *reason == r.message)
                        {
                            Some((_, _, n, _)) => *n += 1,
                            None => self.skips.push((at, r.message.clone(), 1, at_collection)),
                        }
                    }
                    Outcome::Xfailed => {
                        let when = r.when.as_deref().unwrap_or("call");
                        let what = if when == "call" {
                            format!("XFAIL {}", r.nodeid)
                        } else {
                            format!("XFAIL at {when} of {}", r.nodeid)
                        };
                        self.push_short_at(
                            'x',
                            &r.nodeid,
                            r.position,
                            with_reason(what, &r.message),
                        );
                    }
                    Outcome::Xpassed => {
                        if self.report_chars.contains('X') {
                            self.xpasses.add(r, self.file_rank(&r.nodeid));
                        }
                        let line = with_reason(format!("XPASS {}", r.nodeid), &r.message);
                        self.push_short_at('X', &r.nodeid, r.position, line);
                    }
                    Outcome::Passed => {
                        if self.report_chars.contains('P') {
                            self.passes.add(r, self.file_rank(&r.nodeid));
                        }
                        self.push_short_at(
                            'p',
                            &r.nodeid,
                            r.position,
                            format!("PASSED {}", r.nodeid),
                        );
                    }
                    _ => {}
                }
                if r.teardown_error {
                    self.errors.push((
                        self.error_order("teardown", &r.nodeid, r.position),
                        format!("ERROR at teardown of {}", head_line(r)),
                        shown_sections(
                            &r.teardown_longrepr,
                            &r.teardown_sections,
                            &self.show_capture,
                            self.width,
                        ),
                    ));
                    let line = Self::short_line("ERROR", &r.nodeid, &r.teardown_message);
                    self.push_short_at('E', &r.nodeid, r.position, line);
                }
            }
            Event::Coverage { text, .. } => self.coverage = text.clone(),
            Event::UnitStarted { unit, files, .. } => {
                if let Some(first) = files.first() {
                    self.unit_files.insert(*unit, first.clone());
                }
            }
            Event::PluginSummary { unit, text, .. } => {
                self.plugin_texts.push((*unit, text.clone()))
            }
            Event::RunFinished {
                totals,
                collect_errors,
                duration,
                interrupted,
                not_started,
                not_run_message,
                not_found,
                ..
            } => {
                // As pytest says it (its usage error, exit 4).
                for id in not_found {
                    let line = format!("ERROR not found: {id} - no test it selects was collected");
                    self.push_short('!', "", line);
                }
                // After -x/--maxfail the untouched files are expected; after an interrupt
                // or a run timeout they are named.
                if !not_run_message.contains("was stopped") {
                    for file in not_started {
                        let line = Self::short_line("NOT STARTED", file, not_run_message);
                        self.push_short('!', "", line);
                    }
                }
                // A closed stdout (`| head`) is not worth failing the run over.
                let _ = self.render(totals, *collect_errors, *duration, interrupted.as_deref());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pytest_wording() {
        let t = Totals {
            failed: 3,
            passed: 120,
            skipped: 2,
            xfailed: 1,
            ..Default::default()
        };
        assert_eq!(
            summary_line(&t, 0, 4.2112),
            "3 failed, 120 passed, 2 skipped, 1 xfailed in 4.21s"
        );
        let t = Totals {
            passed: 1,
            errors: 1,
            warnings: 1,
            ..Default::default()
        };
        assert_eq!(summary_counts(&t, 1), "1 passed, 1 warning, 2 errors");
        assert_eq!(summary_counts(&Totals::default(), 0), "no tests ran");
        let t = Totals {
            deselected: 2,
            xpassed: 1,
            crashed: 1,
            not_run: 3,
            ..Default::default()
        };
        assert_eq!(
            summary_counts(&t, 0),
            "2 deselected, 1 xpassed, 1 crashed, 3 not run"
        );
        assert_eq!(format_duration(73.2), "73.20s (0:01:13)");
    }

    #[test]
    fn separators_fill_the_width() {
        assert_eq!(sep('=', "FAILURES", 80).len(), 80);
        assert_eq!(sep('=', "x", 10), "=== x ====");
        assert_eq!(sep('-', "", 5), "-----");
    }

    proptest! {
        #[test]
        fn counts_appear_in_order(f in 0u64..5, p in 0u64..5, s in 0u64..5, e in 0u64..5) {
            let t = Totals { failed: f, passed: p, skipped: s, errors: e, ..Default::default() };
            let line = summary_counts(&t, 0);
            let mut last = 0;
            for (n, word) in [(f, "failed"), (p, "passed"), (s, "skipped"), (e, "error")] {
                if n > 0 {
                    let pos = line.find(&format!("{n} {word}")).unwrap();
                    prop_assert!(pos >= last);
                    last = pos;
                }
            }
            prop_assert_eq!(line == "no tests ran", f + p + s + e == 0);
        }
    }
}
