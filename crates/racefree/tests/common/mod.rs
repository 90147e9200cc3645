//! Helpers shared by the CLI's integration tests: the Python to run pytest with, and fixture
//! suites copied into fresh directories (so history and caches never land in the repository).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// How a finished command ended and what it printed.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to the end, capturing its output.
pub fn run(cmd: &mut std::process::Command) -> Ran {
    let out = cmd.output().unwrap();
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// `RACEFREE_TEST_PYTHON` (set by scripts/test.sh), else the workspace's `./.venv`.
pub fn python() -> PathBuf {
    match std::env::var_os("RACEFREE_TEST_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => workspace_root().join(".venv/bin/python"),
    }
}

/// The directory of fixture suite `name` under tests/fixtures.
pub fn fixture_source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Copies a directory tree, leaving out `__pycache__`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            if entry.file_name() != "__pycache__" {
                copy_dir(&entry.path(), &target);
            }
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `--flag` tokens in `text` (a token starts after a non-word character).
pub fn long_flags(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut flags = BTreeSet::new();
    let mut i = 0;
    while i + 2 < bytes.len() {
        let starts = bytes[i] == b'-'
            && bytes[i + 1] == b'-'
            && bytes[i + 2].is_ascii_lowercase()
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'-'));
        if starts {
            let mut j = i + 2;
            while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'-') {
                j += 1;
            }
            flags.insert(text[i..j].trim_end_matches('-').to_owned());
            i = j;
        } else {
            i += 1;
        }
    }
    flags
}

/// The long flags of a help text's `Options:` section, without --help and --version.
pub fn help_flags(help: &str) -> BTreeSet<String> {
    let mut section = String::new();
    let mut inside = false;
    for line in help.lines() {
        if line == "Options:" {
            inside = true;
            continue;
        }
        if inside {
            if !line.is_empty() && !line.starts_with(' ') {
                break;
            }
            section.push_str(line);
            section.push('\n');
        }
    }
    let mut flags = long_flags(&section);
    flags.remove("--help");
    flags.remove("--version");
    flags
}

/// A fresh suite: a `pytest.ini` with an empty `[pytest]` section, then `files` (path
/// relative to the suite, contents), their directories created as needed.
pub fn suite(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pytest.ini"), "[pytest]\n").unwrap();
    for (name, body) in files {
        let path = dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, body).unwrap();
    }
    dir
}

/// The directory scripts/setup-venv.sh installs python/requirements-plugins.txt into, beside
/// the test interpreter's site-packages; `holding` is a file or directory it must have.
pub fn plugins_dir(holding: &str) -> PathBuf {
    let dir = python()
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("plugins");
    assert!(
        dir.join(holding).exists(),
        "{} lacks {holding}: run scripts/setup-venv.sh",
        dir.display()
    );
    dir
}
