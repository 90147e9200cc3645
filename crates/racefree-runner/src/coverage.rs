//! pytest-cov under racefree: one coverage report for the run, from every unit's data.
//!
//! pytest-cov in a single pytest process erases the data file (`.coverage`) when it starts,
//! measures, combines and saves it when it ends, and reports. Run once per unit, that is a
//! race: each unit erases what the others saved, and the file ends with one unit's share (a
//! suite at 90 % reads 60 %), with no report shown. So, when pytest-cov measures the run:
//! - every unit measures into a data file of its own (`COVERAGE_FILE`, under the session
//!   root), and its pytest-cov reports nothing and checks no minimum (the plugin takes its
//!   report options and sends them: `Wire::Coverage`);
//! - once the units have ended, `python/racefree_coverage.py` combines their data into the
//!   data file pytest-cov would have written and makes its reports, with its wording;
//! - a total below `--cov-fail-under` fails the run, as it fails pytest's session.
//!
//! Modules a fork server imported before a unit forked are not imported again in the unit,
//! so coverage would miss their module-level lines: under pytest-cov the servers preload
//! nothing (see `run::launch`), as a unit of its own imports everything itself.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The directory of the units' data files, in the session root.
pub const DATA_DIR: &str = "coverage";

/// Exit status of `racefree_coverage` when the total is below the minimum.
const BELOW_MINIMUM: i32 = 3;

/// Whether pytest-cov measures the run: `--cov` (with a source or without) among pytest's
/// options, and no `--no-cov`, which turns it off wherever it comes.
pub fn requested(pytest_flags: &[String]) -> bool {
    let named = |name: &str| {
        pytest_flags
            .iter()
            .any(|f| crate::passthrough::option_name(f) == name)
    };
    named("--cov") && !named("--no-cov")
}

/// What the report step made.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// pytest-cov's terminal section (empty when it asks for no terminal output).
    pub text: String,
    /// The total is below `--cov-fail-under` (or the configuration's `fail_under`).
    pub below_minimum: bool,
}

/// Everything the step needs besides the units' options.
pub struct Step<'a> {
    pub python: &'a Path,
    /// Where the embedded Python modules are (on PYTHONPATH for `-m racefree_coverage`).
    pub python_dir: &'a Path,
    /// Where the units ran: pytest-cov's paths and configuration are relative to it.
    pub cwd: &'a Path,
    pub session_root: &'a Path,
    pub width: usize,
}

impl Step<'_> {
    /// Combines every unit's data and makes pytest-cov's reports, as `options` (a unit's
    /// pytest-cov options) ask; `failed`: some test failed (for `--no-cov-on-fail`).
    pub fn report(&self, options: &serde_json::Value, failed: bool) -> Result<Report, String> {
        let data_files = data_files(&self.session_root.join(DATA_DIR));
        let spec = serde_json::json!({
            "data_files": data_files,
            "omit_dirs": [self.python_dir],
            "options": options,
            "failed": failed,
            "width": self.width,
        });
        let mut python_path = std::ffi::OsString::from(self.python_dir);
        if let Some(theirs) = std::env::var_os("PYTHONPATH").filter(|p| !p.is_empty()) {
            python_path.push(":");
            python_path.push(theirs);
        }
        let mut child = Command::new(self.python)
            .args(["-m", "racefree_coverage"])
            .current_dir(self.cwd)
            .env("PYTHONPATH", python_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.python.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A script that died at once closed its end: its stderr says why.
            let _ = stdin.write_all(spec.to_string().as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("waiting for the coverage report: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        match out.status.code() {
            Some(0) => Ok(Report {
                text,
                below_minimum: false,
            }),
            Some(BELOW_MINIMUM) => Ok(Report {
                text,
                below_minimum: true,
            }),
            _ => {
                let why = crate::python::last_line(&out.stderr)
                    .unwrap_or_else(|| "no message".to_string());
                Err(format!("{}{why} ({})", text.trim_end(), out.status))
            }
        }
    }
}

/// Every file in the units' data directories (a unit's combined data, and whatever a
/// process it started left beside it), in a stable order.
fn data_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(units) = std::fs::read_dir(dir) else {
        return found;
    };
    for unit in units.flatten() {
        if let Ok(entries) = std::fs::read_dir(unit.path()) {
            found.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn cov_with_or_without_a_source_measures_unless_no_cov_is_given() {
        assert!(requested(&flags(&["--cov"])));
        assert!(requested(&flags(&["-q", "--cov=src"])));
        assert!(requested(&flags(&["--cov", "src", "--cov-report=xml"])));
        assert!(!requested(&flags(&["--cov-report=xml"])));
        assert!(!requested(&flags(&["--cov-branch", "--covfoo"])));
        assert!(!requested(&flags(&["--cov=src", "--no-cov"])));
        assert!(!requested(&flags(&["--no-cov", "--cov=src"])));
        assert!(!requested(&[]));
    }
}
