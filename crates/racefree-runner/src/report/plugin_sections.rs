//! Other plugins' terminal summaries (a conftest's `pytest_terminal_summary`, Hypothesis's
//! statistics), as one pytest process would show them for the whole run. Each unit's pytest
//! wrote its own, headings included: racefree shows them in the order of the units' files,
//! under one heading per title (`=== Hypothesis Statistics ===`, written by every unit), and
//! shows a text every unit wrote alike (a plugin's constant legend) once. Texts that differ
//! are all shown, each as its unit wrote it: a plugin that counts what it saw counts per
//! process, and two units that counted alike are two counts.

use super::summary::sep;

/// One unit's text, split at the headings pytest's `TerminalWriter.sep` wrote.
#[derive(Debug, PartialEq, Eq)]
struct Section<'a> {
    /// The heading's fill character and title; None for lines before any heading.
    heading: Option<(char, &'a str)>,
    body: Vec<&'a str>,
}

/// A heading's sections: each unit's body as written, and that body without the blank
/// lines around it (to know text every unit wrote alike).
type Bodies<'a> = Vec<(String, Vec<&'a str>)>;

/// The units' texts, in the order to show them, merged into the summary's lines. `width`
/// is the terminal's, which the units' pytest filled too (they inherit `COLUMNS`).
pub fn merged<'a>(texts: impl IntoIterator<Item = &'a str>, width: usize) -> String {
    let mut merged: Vec<(Option<(char, &str)>, Bodies)> = Vec::new();
    for text in texts {
        for section in sections(text, width) {
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
            merged[at].1.push((key, section.body));
        }
    }
    let mut out = String::new();
    for (heading, bodies) in merged {
        if let Some((fill, title)) = heading {
            out.push_str(&sep(fill, title, width));
            out.push('\n');
        }
        let alike = bodies.windows(2).all(|pair| pair[0].0 == pair[1].0);
        let shown = if alike { &bodies[..1] } else { &bodies[..] };
        for line in shown.iter().flat_map(|(_, lines)| lines) {
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

fn sections(text: &str, width: usize) -> Vec<Section<'_>> {
    let mut out = vec![Section {
        heading: None,
        body: Vec::new(),
    }];
    for line in text.lines() {
        match heading(line, width) {
            Some(h) => out.push(Section {
                heading: Some(h),
                body: Vec::new(),
            }),
            None => {
                if let Some(last) = out.last_mut() {
                    last.body.push(line);
                }
            }
        }
    }
    out
}

/// A titled heading as pytest's `sep` writes it across the terminal: `=== title ===`, a
/// run of one punctuation character on each side (the right one may be a character
/// longer), as wide as the terminal (or one less). A plugin's own narrower title line or
/// a bare rule is text, not a heading.
fn heading(line: &str, width: usize) -> Option<(char, &str)> {
    if line.chars().count() + 1 < width {
        return None;
    }
    let fill = line.chars().next()?;
    if !fill.is_ascii_punctuation() {
        return None;
    }
    let rest = line.trim_start_matches(fill);
    let inner = rest.strip_prefix(' ')?;
    let title = inner.trim_end_matches(fill).strip_suffix(' ')?;
    (!title.trim().is_empty() && inner.len() > title.len() + 1).then_some((fill, title))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_are_read_as_pytest_writes_them() {
        assert_eq!(
            heading(&sep('=', "my plugin", 80), 80),
            Some(('=', "my plugin"))
        );
        assert_eq!(heading(&sep('-', "a b", 41), 41), Some(('-', "a b")));
        assert_eq!(heading(&sep('=', "odd", 40), 40), Some(('=', "odd")));
        // Narrower than the terminal: a plugin's own title line, or a table's rule.
        assert_eq!(heading(&sep('-', "table: 2 tests", 36), 80), None);
        assert_eq!(heading(&"-".repeat(80), 80), None);
        assert_eq!(heading("ran 2 tests", 80), None);
        assert_eq!(heading(&format!("=== x === y{}", " ".repeat(80)), 80), None);
    }

    #[test]
    fn sections_of_one_title_merge_and_text_every_unit_wrote_alike_is_shown_once() {
        let w = 60;
        let hypothesis = sep('=', "Hypothesis Statistics", w);
        let legend = sep('-', "benchmark", w);
        let a =
            format!("{hypothesis}\ntest_a.py::test_x:\n  - 100 passing\n\n{legend}\nLegend: min\n");
        let b =
            format!("\n{hypothesis}\ntest_b.py::test_y:\n  - 3 passing\n{legend}\nLegend: min\n");
        let got = merged([a.as_str(), b.as_str(), "loose line\n"], w);
        let want = format!(
            "{hypothesis}\ntest_a.py::test_x:\n  - 100 passing\n\ntest_b.py::test_y:\n  - 3 passing\n{legend}\nLegend: min\nloose line\n"
        );
        assert_eq!(got, want);
    }

    #[test]
    fn counts_that_differ_are_all_shown_even_where_two_units_counted_alike() {
        let got = merged(
            ["passed here: 2\n", "passed here: 1\n", "passed here: 2\n"],
            80,
        );
        assert_eq!(got, "passed here: 2\npassed here: 1\npassed here: 2\n");
    }

    #[test]
    fn a_table_keeps_its_own_rules_and_title() {
        let rule = "-".repeat(36);
        let table = |row: &str| {
            format!(
                "{}\nName    Result\n{rule}\n{row}    ok\n{rule}\n\nLegend: ok means passed\n",
                sep('-', "table: 1 tests", 36)
            )
        };
        let (a, b) = (table("test_1.py::test_a"), table("test_2.py::test_a"));
        assert_eq!(merged([a.as_str(), b.as_str()], 80), format!("{a}{b}"));
    }

    #[test]
    fn nothing_written_is_nothing_shown() {
        assert_eq!(merged(["", "\n\n"], 80), "");
        // A heading alone stays: the plugin wrote it.
        let only = sep('=', "empty", 40);
        assert_eq!(merged([only.as_str()], 40), format!("{only}\n"));
    }
}
