//! Byte offsets to line/column, source lines for snippets, and inline suppression comments.

use crate::finding::Position;
use crate::rules::RuleId;

/// Maps byte offsets (what the parser gives) to 1-based lines and character columns.
pub struct LineIndex<'a> {
    text: &'a str,
    /// Byte offset at which each line starts; always starts with 0.
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        let mut starts = Vec::with_capacity(text.len() / 32 + 1);
        starts.push(0);
        starts.extend(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i + 1),
        );
        LineIndex { text, starts }
    }

    /// Number of lines as `wc -l` would count them, plus a last line without a newline.
    pub fn line_count(&self) -> usize {
        let newlines = self.starts.len() - 1;
        if self.text.is_empty() || self.text.ends_with('\n') {
            newlines
        } else {
            newlines + 1
        }
    }

    pub fn position(&self, offset: usize) -> Position {
        let offset = offset.min(self.text.len());
        let line = self
            .starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1);
        let start = self.starts[line];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        Position {
            line: line + 1,
            column,
        }
    }

    /// The text of a 1-based line without its line break ("" past the end).
    pub fn line(&self, line: usize) -> &'a str {
        let Some(&start) = self.starts.get(line.wrapping_sub(1)) else {
            return "";
        };
        let end = self.starts.get(line).map_or(self.text.len(), |&e| e);
        self.text
            .get(start..end)
            .unwrap_or("")
            .trim_end_matches(['\n', '\r'])
    }
}

/// What a `# racefree: ignore` comment on a line suppresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Suppression {
    All,
    Rules(Vec<RuleId>),
}

impl Suppression {
    pub fn covers(&self, rule: RuleId) -> bool {
        match self {
            Suppression::All => true,
            Suppression::Rules(rules) => rules.contains(&rule),
        }
    }
}

const MARKER: &str = "racefree:";

/// Reads the suppression comment on one source line, if any: `# racefree: ignore` or
/// `# racefree: ignore[RF001, RF004]` (codes or rule names). Unknown rule ids in the brackets are
/// ignored rather than widening the suppression to every rule.
pub fn suppression(line: &str) -> Option<Suppression> {
    // A cheap scan: the marker must follow a `#`. Text inside a string literal that looks like
    // a suppression is rare enough not to justify tokenizing every line.
    let hash = line.find('#')?;
    let comment = &line[hash..];
    let at = comment.find(MARKER)?;
    let rest = comment[at + MARKER.len()..].trim_start();
    let rest = rest.strip_prefix("ignore")?;
    match rest.strip_prefix('[') {
        Some(list) => {
            let list = list.split(']').next().unwrap_or("");
            let rules = list.split(',').filter_map(RuleId::parse).collect();
            Some(Suppression::Rules(rules))
        }
        None if rest.is_empty()
            || rest.starts_with(char::is_whitespace)
            || rest.starts_with('#') =>
        {
            Some(Suppression::All)
        }
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let text = "ab\nçd = 1\n";
        let idx = LineIndex::new(text);
        assert_eq!(idx.position(0), Position { line: 1, column: 1 });
        assert_eq!(idx.position(3), Position { line: 2, column: 1 });
        // "ç" is two bytes; the "=" is the 4th character of line 2.
        assert_eq!(
            idx.position(text.find('=').unwrap()),
            Position { line: 2, column: 4 }
        );
        assert_eq!(idx.line(2), "çd = 1");
        assert_eq!(idx.line(3), "");
        assert_eq!(idx.line_count(), 2);
        assert_eq!(LineIndex::new("a\nb").line_count(), 2);
    }

    #[test]
    fn suppression_comments() {
        assert_eq!(
            suppression("x = 1  # racefree: ignore"),
            Some(Suppression::All)
        );
        assert_eq!(
            suppression("x  # racefree: ignore[RF001, fixed-port]"),
            Some(Suppression::Rules(vec![
                RuleId::SharedLocation,
                RuleId::FixedPort
            ]))
        );
        assert_eq!(suppression("x  # racefree: ignored"), None);
        assert_eq!(suppression("x = 'racefree: ignore'"), None);
        assert_eq!(suppression("x  # noqa"), None);
    }
}
