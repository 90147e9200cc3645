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
//!   },
//!   "files": { "tests/test_a.py": { "tests": 1 } }
//! }
//! ```
//!
//! `measured_at` (Unix seconds, 0 when unknown) is what lets shards' exports merge: the newest
//! measurement of a test wins, whichever machine made it. `files` (optional) gives each file's
//! number of tests in the last run that ran it whole; it is how a test deleted or renamed
//! inside a file that still exists is recognised: only that many of the file's most recently
//! measured tests can still exist. pytest-split's format is a bare JSON object of node id to
//! seconds; it carries no times, so its entries count as oldest.

use std::collections::BTreeMap;
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
    /// File -> what its last whole run found. Sorted, as `tests`.
    pub files: BTreeMap<String, FileInfo>,
    /// Learned interpreter + pytest start-up per unit, seconds.
    pub startup: Option<f64>,
}

/// What the last run that ran a file whole found in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// How many tests it reported.
    pub tests: u64,
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
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    files: BTreeMap<String, FileInfo>,
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
                files: file.files,
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
                files: BTreeMap::new(),
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
                files: self.files.clone(),
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
    /// it says. A file's test count comes from the input that measured the file most recently.
    pub fn merge(inputs: impl IntoIterator<Item = Durations>) -> Durations {
        let mut out = Durations::default();
        // file -> newest measurement of the file in the input its count came from
        let mut count_from: BTreeMap<String, i64> = BTreeMap::new();
        for input in inputs {
            let newest = input.newest_per_file();
            for (file, info) in &input.files {
                let at = newest.get(file.as_str()).copied().unwrap_or(0);
                if count_from.get(file).is_none_or(|&old| at >= old) {
                    count_from.insert(file.clone(), at);
                    out.files.insert(file.clone(), *info);
                }
            }
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

    /// The newest measurement time of each file's tests.
    fn newest_per_file(&self) -> BTreeMap<&str, i64> {
        let mut newest: BTreeMap<&str, i64> = BTreeMap::new();
        for (id, m) in &self.tests {
            let e = newest.entry(file_of(id)).or_insert(m.measured_at);
            *e = (*e).max(m.measured_at);
        }
        newest
    }

    /// Drops the entries of tests that no longer exist: every test of a file that is gone
    /// (`exists` gets the rootdir-relative file), and, in a file whose last whole run found N
    /// tests, those measured before its N most recent ones (deleted or renamed since; tests
    /// measured at the same time as the N-th are kept). Returns how many tests were dropped.
    pub fn drop_vanished(&mut self, exists: impl Fn(&str) -> bool) -> usize {
        let before = self.tests.len();
        self.tests.retain(|id, _| exists(file_of(id)));
        self.files.retain(|file, _| exists(file));
        let mut times: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        for (id, m) in &self.tests {
            times.entry(file_of(id)).or_default().push(m.measured_at);
        }
        let mut oldest_kept: BTreeMap<String, i64> = BTreeMap::new();
        for (file, mut at) in times {
            let Some(info) = self.files.get(file) else {
                continue;
            };
            let n = info.tests as usize;
            if n == 0 || at.len() <= n {
                continue;
            }
            at.sort_unstable_by(|a, b| b.cmp(a));
            oldest_kept.insert(file.to_string(), at[n - 1]);
        }
        self.tests.retain(|id, m| {
            oldest_kept
                .get(file_of(id))
                .is_none_or(|&limit| m.measured_at >= limit)
        });
        before - self.tests.len()
    }

    /// What the planner makes of the file: per-test durations, per-file sums (a file's time is
    /// the sum of its tests', as history records it) and the mean time per test.
    pub fn predictions(&self) -> Predictions {
        // Filled field by field rather than with a struct literal, so fields the planner
        // adds later keep their defaults here.
        let mut p = Predictions::default();
        for (id, m) in &self.tests {
            *p.files.entry(file_of(id).to_string()).or_default() += m.duration;
            p.tests.insert(id.clone(), m.duration);
        }
        if !self.tests.is_empty() {
            p.per_test = Some(
                self.tests.values().map(|m| m.duration).sum::<f64>() / self.tests.len() as f64,
            );
        }
        p.startup = self.startup;
        p
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
            files: BTreeMap::new(),
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
        d.files.insert("t/a.py".into(), FileInfo { tests: 1 });
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
    fn tests_of_deleted_files_are_dropped() {
        let mut d = durations(&[
            ("a.py::x", 1.0, 1),
            ("gone.py::y", 2.0, 1),
            ("a.py::C::z", 1.0, 1),
        ]);
        d.files.insert("gone.py".into(), FileInfo { tests: 1 });
        assert_eq!(d.drop_vanished(|file| file == "a.py"), 1);
        assert_eq!(
            d.tests.keys().collect::<Vec<_>>(),
            ["a.py::C::z", "a.py::x"]
        );
        assert!(d.files.is_empty());
    }

    #[test]
    fn tests_renamed_inside_a_file_are_dropped() {
        // Last week a.py had x, y, z; today's whole run of a.py found 3 tests: x, y and w
        // (z was renamed to w). b.py has no count (a pytest-split file): nothing to judge by.
        let old = durations(&[
            ("a.py::x", 1.0, 100),
            ("a.py::y", 1.0, 100),
            ("a.py::z", 5.0, 100),
            ("b.py::q", 1.0, 0),
        ]);
        let mut new = durations(&[
            ("a.py::x", 1.0, 200),
            ("a.py::y", 1.0, 200),
            ("a.py::w", 5.0, 200),
        ]);
        new.files.insert("a.py".into(), FileInfo { tests: 3 });
        let mut merged = Durations::merge([old.clone(), new.clone()]);
        assert_eq!(merged.drop_vanished(|_| true), 1);
        assert_eq!(
            merged.tests.keys().collect::<Vec<_>>(),
            ["a.py::w", "a.py::x", "a.py::y", "b.py::q"]
        );
        assert_eq!(merged.predictions().files["a.py"], 7.0);
        // A -k run later refreshed only x: the count still protects y and w.
        let partial = durations(&[("a.py::x", 2.0, 300)]);
        let mut merged = Durations::merge([merged, partial]);
        assert_eq!(merged.drop_vanished(|_| true), 0);
        // The newest file count wins whatever the input order.
        let mut older_count = old;
        older_count
            .files
            .insert("a.py".into(), FileInfo { tests: 9 });
        let merged = Durations::merge([new, older_count]);
        assert_eq!(merged.files["a.py"].tests, 3);
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
