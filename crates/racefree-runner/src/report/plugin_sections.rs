//! Other plugins' terminal summaries (a conftest's `pytest_terminal_summary`, Hypothesis's
//! statistics), as one pytest process would show them for the whole run. Each unit's pytest
//! wrote its own: racefree shows them in the order of the units' files, with the sections of
//! one title (`=== Hypothesis Statistics ===`) merged under one heading, and a text that
//! several units wrote alike (a plugin's constant legend) once.

use super::summary::sep;

/// One unit's text, split at the headings pytest's `TerminalWriter.sep` wrote.
#[derive(Debug, PartialEq, Eq)]
struct Section<'a> {
    /// The heading's fill character and title; None for lines before any heading.
    heading: Option<(char, &'a str)>,
    body: Vec<&'a str>,
}

/// The units' texts, in the order to show them, merged into the summary's lines at `width`.
pub fn merged<'a>(texts: impl IntoIterator<Item = &'a str>, width: usize) -> String {
    // Per heading, in the order they first come: the bodies, each with its text trimmed
    // (to know a repeated one) and its lines as written (blank lines included, as pytest
    // would show them one after the other).
    type Bodies<'a> = Vec<(String, Vec<&'a str>)>;
    let mut merged: Vec<(Option<(char, &str)>, Bodies)> = Vec::new();
    for text in texts {
        for section in sections(text) {
            let key = trimmed(&section.body);
            if section.heading.is_none() && key.is_empty() {
                continue;
            }
            let at = match merged.iter().position(|(h, _)| *h == section.heading) {
                Some(at) => at,
                None => {
                    merged.push((section.heading, Vec::new()));
                    merged.len() - 1
                }
            };
            let bodies = &mut merged[at].1;
            if !key.is_empty() && !bodies.iter().any(|(k, _)| *k == key) {
                bodies.push((key, section.body));
            }
        }
    }
    let mut out = String::new();
    for (heading, bodies) in merged {
        if let Some((fill, title)) = heading {
            out.push_str(&sep(fill, title, width));
            out.push('\n');
        }
        for line in bodies.iter().flat_map(|(_, lines)| lines) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The lines of a body without the blank lines around them.
fn trimmed(lines: &[&str]) -> String {
    let first = lines.iter().position(|l| !l.trim().is_empty());
    let last = lines.iter().rposition(|l| !l.trim().is_empty());
    match (first, last) {
        (Some(first), Some(last)) => lines[first..=last].join("\n"),
        _ => String::new(),
    }
}

fn sections(text: &str) -> Vec<Section<'_>> {
    let mut out = vec![Section {
        heading: None,
        body: Vec::new(),
    }];
    for line in text.lines() {
        match heading(line) {
            Some(h) => out.push(Section {
                heading: Some(h),
                body: Vec::new(),
            }),
            None => {
                if let Some(last) = out.last_mut() {
                    // The newline a plugin's first write ensures is not part of its text.
                    if !(last.heading.is_none() && last.body.is_empty() && line.trim().is_empty()) {
                        last.body.push(line);
                    }
                }
            }
        }
    }
    out
}

/// A heading as pytest's `sep` writes it: `=== title ===` (a run of one punctuation
/// character, at least three, on each side; the right one may be a character longer), or a
/// whole line of one such character.
fn heading(line: &str) -> Option<(char, &str)> {
    let fill = line.chars().next()?;
    if !fill.is_ascii_punctuation() {
        return None;
    }
    let lead = line.len() - line.trim_start_matches(fill).len();
    if lead < 3 {
        return None;
    }
    let rest = &line[lead..];
    if rest.is_empty() {
        return Some((fill, ""));
    }
    let inner = rest.strip_prefix(' ')?;
    let trail = inner.len() - inner.trim_end_matches(fill).len();
    if trail < 3 {
        return None;
    }
    let title = inner[..inner.len() - trail].strip_suffix(' ')?;
    (!title.trim().is_empty()).then_some((fill, title))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_are_read_as_pytest_writes_them() {
        assert_eq!(
            heading(&sep('=', "my plugin", 80)),
            Some(('=', "my plugin"))
        );
        assert_eq!(heading(&sep('-', "a b", 41)), Some(('-', "a b")));
        assert_eq!(heading("=================="), Some(('=', "")));
        assert_eq!(heading("== short =="), None);
        assert_eq!(heading("ran 2 tests"), None);
        assert_eq!(heading("=== a ==="), Some(('=', "a")));
        assert_eq!(heading("===  ==="), None);
        assert_eq!(heading("=== x === y"), None);
    }

    #[test]
    fn sections_of_one_title_merge_and_equal_text_is_shown_once() {
        let a = format!(
            "{}\ntest_a.py::test_x:\n  - 100 passing examples\n\n{}\nLegend: min\n",
            sep('=', "Hypothesis Statistics", 60),
            sep('-', "benchmark", 60)
        );
        let b = format!(
            "\n{}\ntest_b.py::test_y:\n  - 3 passing examples\n{}\nLegend: min\n",
            sep('=', "Hypothesis Statistics", 60),
            sep('-', "benchmark", 60)
        );
        let got = merged([a.as_str(), b.as_str(), "loose line\n"], 60);
        let want = format!(
            "{}\ntest_a.py::test_x:\n  - 100 passing examples\n\ntest_b.py::test_y:\n  - 3 passing examples\n{}\nLegend: min\nloose line\n",
            sep('=', "Hypothesis Statistics", 60),
            sep('-', "benchmark", 60)
        );
        assert_eq!(got, want);
    }

    #[test]
    fn nothing_written_is_nothing_shown() {
        assert_eq!(merged(["", "\n\n"], 80), "");
        // A heading alone stays: the plugin wrote it.
        let only = sep('=', "empty", 40);
        assert_eq!(merged([only.as_str()], 40), format!("{only}\n"));
    }
}
