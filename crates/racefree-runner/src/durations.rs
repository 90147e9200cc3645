//! Durations that travel between machines: racefree's versioned durations file and
//! pytest-split's `.test_durations`, how several of them merge, and what the planner makes of
//! one. Pure data and formats; reading and writing the history database is `durations_store`.
//!
//! The racefree format (docs/ci.md):
//!
//! ```json
//! {
//!   "racefree_durations": 1,
//!   "exported_at": 1763800000,
//!   "startup": 0.41,
//!   "tests": {
//!     "tests/test_a.py::test_x": { "duration": 0.12, "measured_at": 1763790000 }
//!   }
//! }
//! ```
//!
//! `measured_at` (Unix seconds, 0 when unknown) is what lets shards' exports merge: the newest
//! measurement of a test wins, whichever machine made it. pytest-split's format is a bare JSON
//! object of node id to seconds; it carries no times, so its entries count as oldest.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::plan::Predictions;

/// The version of the racefree format this build writes and reads.
pub const FORMAT_VERSION: u64 = 1;
/// The key that marks (and versions) a racefree durations file.
const VERSION_KEY: &str = "racefree_durations";

/// One test's measured duration and when it was measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub duration: f64,
    /// Unix seconds of the run that measured it; 0 when unknown (pytest-split files).
    #[serde(default)]
    pub measured_at: i64,
}

/// What a durations file holds, whichever format it came in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Durations {
    /// Node id -> measurement. Sorted, so written files are stable and diff well.
    pub tests: BTreeMap<String, Measurement>,
    /// Learned interpreter + pytest start-up per unit, seconds.
    pub startup: Option<f64>,
}

/// The two formats `racefree durations export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Racefree,
    /// pytest-split's `.test_durations`: `{"node id": seconds, ...}`.
    PytestSplit,
}

/// A durations file that cannot be used, naming the file and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum DurationsError {
    #[error("durations file {}: cannot read it: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("durations file {}: cannot write it: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "durations file {}: {why}\n  expected racefree's format ({{\"racefree_durations\": 1, \"tests\": {{...}}}}, from `racefree durations export`) or pytest-split's .test_durations ({{\"node id\": seconds, ...}})",
        path.display()
    )]
    Corrupt { path: PathBuf, why: String },
    #[error(
        "durations file {}: format version {found} is newer than this racefree reads ({FORMAT_VERSION}); upgrade racefree or export with --format pytest-split",
        path.display()
    )]
    Version { path: PathBuf, found: u64 },
}

impl From<DurationsError> for crate::Error {
    /// A durations file is the user's input: its problems are usage errors (exit 4).
    fn from(e: DurationsError) -> Self {
        crate::Error::Usage(e.to_string())
    }
}

/// The file part of a node id (`tests/test_a.py::T::t[1]` -> `tests/test_a.py`).
pub fn file_of(nodeid: &str) -> &str {
    nodeid.split("::").next().unwrap_or(nodeid)
}

#[derive(Serialize, Deserialize)]
struct RacefreeFile {
    racefree_durations: u64,
    #[serde(default)]
    exported_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    startup: Option<f64>,
    tests: BTreeMap<String, Measurement>,
}

impl Durations {
    /// Parses either format; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Durations, DurationsError> {
        let corrupt = |why: String| DurationsError::Corrupt {
            path: path.to_path_buf(),
            why,
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| corrupt(format!("not JSON: {e}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| corrupt("the top level is not a JSON object".into()))?;
        let durations = if let Some(version) = object.get(VERSION_KEY) {
            let found = version.as_u64().ok_or_else(|| {
                corrupt(format!(
                    "`{VERSION_KEY}` must be a version number, not {version}"
                ))
            })?;
            if found > FORMAT_VERSION || found == 0 {
                return Err(DurationsError::Version {
                    path: path.to_path_buf(),
                    found,
                });
            }
            let file: RacefreeFile =
                serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
            Durations {
                tests: file.tests,
                startup: file.startup,
            }
        } else {
            // pytest-split: every value a number of seconds.
            let mut tests = BTreeMap::new();
            for (id, secs) in object {
                let duration = secs.as_f64().ok_or_else(|| {
                    corrupt(format!(
                        "the value for `{id}` is {secs}, not a number of seconds"
                    ))
                })?;
                tests.insert(
                    id.clone(),
                    Measurement {
                        duration,
                        measured_at: 0,
                    },
                );
            }
            Durations {
                tests,
                startup: None,
            }
        };
        for (id, m) in &durations.tests {
            if !m.duration.is_finite() || m.duration < 0.0 {
                return Err(corrupt(format!(
                    "the duration of `{id}` is {}, not a number of seconds >= 0",
                    m.duration
                )));
            }
        }
        if let Some(s) = durations.startup
            && (!s.is_finite() || s < 0.0)
        {
            return Err(corrupt(format!("`startup` is {s}, not seconds >= 0")));
        }
        Ok(durations)
    }

    /// Reads and parses a file.
    pub fn read(path: &Path) -> Result<Durations, DurationsError> {
        let text = std::fs::read_to_string(path).map_err(|source| DurationsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// The file's text in `format`, pretty-printed with sorted keys, ending in a newline.
    pub fn render(&self, format: Format, exported_at: i64) -> String {
        let text = match format {
            Format::Racefree => serde_json::to_string_pretty(&RacefreeFile {
                racefree_durations: FORMAT_VERSION,
                exported_at,
                startup: self.startup,
                tests: self.tests.clone(),
            }),
            Format::PytestSplit => {
                let plain: BTreeMap<&str, f64> = self
                    .tests
                    .iter()
                    .map(|(id, m)| (id.as_str(), m.duration))
                    .collect();
                serde_json::to_string_pretty(&plain)
            }
        };
        // Serializing maps of strings and finite numbers cannot fail; keep the error visible
        // in the output rather than panicking if that ever changes.
        let mut text = text.unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
        text.push('\n');
        text
    }

    /// Writes the file in `format`.
    pub fn write(
        &self,
        path: &Path,
        format: Format,
        exported_at: i64,
    ) -> Result<(), DurationsError> {
        std::fs::write(path, self.render(format, exported_at)).map_err(|source| {
            DurationsError::Write {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    /// Merges several files: per test the newest measurement wins; on equal times (or none,
    /// as in pytest-split files) the later input wins, so `import old.json new.json` does what
    /// it says.
    pub fn merge(inputs: impl IntoIterator<Item = Durations>) -> Durations {
        let mut out = Durations::default();
        for input in inputs {
            for (id, m) in input.tests {
                match out.tests.get(&id) {
                    Some(old) if old.measured_at > m.measured_at => {}
                    _ => {
                        out.tests.insert(id, m);
                    }
                }
            }
            if input.startup.is_some() {
                out.startup = input.startup;
            }
        }
        out
    }

    /// Drops tests whose file no longer exists (`exists` gets the rootdir-relative file).
    /// Returns how many were dropped.
    pub fn retain_existing(&mut self, exists: impl Fn(&str) -> bool) -> usize {
        let before = self.tests.len();
        self.tests.retain(|id, _| exists(file_of(id)));
        before - self.tests.len()
    }

    /// What the planner makes of the file: per-test durations, per-file sums (a file's time is
    /// the sum of its tests', as history records it) and the mean time per test.
    pub fn predictions(&self) -> Predictions {
        let mut files: HashMap<String, f64> = HashMap::new();
        let mut tests = HashMap::new();
        for (id, m) in &self.tests {
            *files.entry(file_of(id).to_string()).or_default() += m.duration;
            tests.insert(id.clone(), m.duration);
        }
        let per_test = (!tests.is_empty())
            .then(|| self.tests.values().map(|m| m.duration).sum::<f64>() / tests.len() as f64);
        Predictions {
            files,
            tests,
            per_test,
            startup: self.startup,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(duration: f64, measured_at: i64) -> Measurement {
        Measurement {
            duration,
            measured_at,
        }
    }

    fn durations(entries: &[(&str, f64, i64)]) -> Durations {
        Durations {
            tests: entries
                .iter()
                .map(|(id, d, t)| (id.to_string(), m(*d, *t)))
                .collect(),
            startup: None,
        }
    }

    fn parse(text: &str) -> Result<Durations, DurationsError> {
        Durations::parse(text, Path::new("d.json"))
    }

    #[test]
    fn racefree_format_round_trips() {
        let mut d = durations(&[("t/a.py::x", 1.5, 100), ("t/b.py::C::y[1]", 0.25, 200)]);
        d.startup = Some(0.4);
        let text = d.render(Format::Racefree, 300);
        assert!(text.contains("\"racefree_durations\": 1"), "{text}");
        assert!(text.contains("\"exported_at\": 300"), "{text}");
        assert_eq!(parse(&text).unwrap(), d);
    }

    #[test]
    fn pytest_split_format_reads_and_writes() {
        let text = r#"{"t/a.py::x": 1.5, "t/b.py::y": 2}"#;
        let d = parse(text).unwrap();
        assert_eq!(d.tests["t/a.py::x"], m(1.5, 0));
        assert_eq!(d.tests["t/b.py::y"], m(2.0, 0));
        let written = d.render(Format::PytestSplit, 0);
        let back: BTreeMap<String, f64> = serde_json::from_str(&written).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back["t/a.py::x"], 1.5);
        // An empty pytest-split file is valid: nothing measured yet.
        assert!(parse("{}").unwrap().tests.is_empty());
    }

    #[test]
    fn corrupt_files_say_what_is_wrong_and_name_the_file() {
        for (text, says) in [
            ("not json", "not JSON"),
            ("[1, 2]", "not a JSON object"),
            (r#"{"t/a.py::x": "slow"}"#, "`t/a.py::x`"),
            (r#"{"t/a.py::x": -1}"#, "`t/a.py::x` is -1"),
            (
                r#"{"racefree_durations": "one", "tests": {}}"#,
                "version number",
            ),
            (r#"{"racefree_durations": 1}"#, "missing field `tests`"),
            (
                r#"{"racefree_durations": 1, "tests": {"a.py::x": {"duration": "x"}}}"#,
                "invalid type",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with("durations file d.json: "), "{e}");
            assert!(e.contains(says), "{text}: {e}");
        }
        let e = parse(r#"{"racefree_durations": 2, "tests": {}}"#).unwrap_err();
        assert!(matches!(e, DurationsError::Version { found: 2, .. }), "{e}");
        let e = Durations::read(Path::new("/nonexistent/durations.json")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/durations.json"), "{e}");
    }

    #[test]
    fn merge_keeps_the_newest_measurement_per_test() {
        let shard1 = durations(&[("a.py::x", 1.0, 100), ("a.py::y", 2.0, 300)]);
        let shard2 = durations(&[("a.py::x", 5.0, 200), ("a.py::y", 9.0, 250)]);
        let pytest_split = durations(&[("a.py::x", 7.0, 0), ("b.py::z", 3.0, 0)]);
        for order in [
            vec![shard1.clone(), shard2.clone(), pytest_split.clone()],
            vec![pytest_split.clone(), shard2.clone(), shard1.clone()],
        ] {
            let merged = Durations::merge(order);
            assert_eq!(merged.tests["a.py::x"], m(5.0, 200));
            assert_eq!(merged.tests["a.py::y"], m(2.0, 300));
            assert_eq!(merged.tests["b.py::z"], m(3.0, 0));
        }
        // Without times, the later input wins.
        let newer = durations(&[("b.py::z", 4.0, 0)]);
        let merged = Durations::merge([pytest_split, newer]);
        assert_eq!(merged.tests["b.py::z"].duration, 4.0);
    }

    #[test]
    fn vanished_tests_are_dropped() {
        let mut d = durations(&[
            ("a.py::x", 1.0, 1),
            ("gone.py::y", 2.0, 1),
            ("a.py::C::z", 1.0, 1),
        ]);
        assert_eq!(d.retain_existing(|file| file == "a.py"), 1);
        assert_eq!(
            d.tests.keys().collect::<Vec<_>>(),
            ["a.py::C::z", "a.py::x"]
        );
    }

    #[test]
    fn predictions_sum_tests_per_file() {
        let mut d = durations(&[
            ("a.py::x", 1.0, 1),
            ("a.py::y", 2.0, 1),
            ("b.py::z", 3.0, 1),
        ]);
        d.startup = Some(0.5);
        let p = d.predictions();
        assert_eq!(p.files["a.py"], 3.0);
        assert_eq!(p.files["b.py"], 3.0);
        assert_eq!(p.tests["a.py::y"], 2.0);
        assert_eq!(p.per_test, Some(2.0));
        assert_eq!(p.startup, Some(0.5));
        assert_eq!(Durations::default().predictions().per_test, None);
    }
}
