//! Which files to audit: the paths given, recursing into directories for pytest's default test
//! file patterns, and skipping directories pytest itself would not recurse into.

use std::path::{Path, PathBuf};

use crate::error::AuditError;

/// Directory names never recursed into (pytest's default `norecursedirs` plus common tool dirs).
const IGNORED_DIRS: &[&str] = &[
    "__pycache__",
    "node_modules",
    "build",
    "dist",
    "venv",
    "site-packages",
    "_darcs",
    "CVS",
    "{arch}",
];

pub fn is_test_file(name: &str) -> bool {
    name == "conftest.py"
        || (name.ends_with(".py") && (name.starts_with("test_") || name.ends_with("_test.py")))
}

fn skip_dir(dir: &Path, name: &str) -> bool {
    name.starts_with('.')
        || IGNORED_DIRS.contains(&name)
        || name.ends_with(".egg")
        || name.ends_with(".egg-info")
        // A virtual environment, whatever its name.
        || dir.join("pyvenv.cfg").is_file()
}

/// Expands `paths` into a sorted, de-duplicated list of files. A file given explicitly is always
/// audited; inside directories only `test_*.py`, `*_test.py` and `conftest.py` are.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, AuditError> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => AuditError::NotFound { path: path.clone() },
            _ => AuditError::Io {
                path: path.clone(),
                source: e,
            },
        })?;
        if meta.is_dir() {
            walk(path, &mut files)?;
        } else {
            files.push(path.clone());
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), AuditError> {
    let io = |e| AuditError::Io {
        path: dir.to_path_buf(),
        source: e,
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // file_type() does not follow symlinks: a symlinked directory is not recursed into (no loops).
        let ft = entry.file_type().map_err(io)?;
        if ft.is_dir() {
            if !skip_dir(&path, &name) {
                walk(&path, files)?;
            }
        } else if is_test_file(&name) && (ft.is_file() || path.is_file()) {
            files.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_file_patterns() {
        assert!(is_test_file("test_x.py"));
        assert!(is_test_file("x_test.py"));
        assert!(is_test_file("conftest.py"));
        assert!(!is_test_file("helpers.py"));
        assert!(!is_test_file("test_x.pyc"));
        assert!(!is_test_file("testing.py"));
    }

    #[test]
    fn walks_and_skips_ignored_dirs() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path();
        for f in [
            "tests/test_a.py",
            "tests/sub/conftest.py",
            "tests/helpers.py",
            ".venv/test_v.py",
            "build/test_b.py",
            "env/pyvenv.cfg",
            "env/test_e.py",
            "node_modules/x_test.py",
        ] {
            let path = p.join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, "").unwrap();
        }
        let found = discover(&[p.to_path_buf()]).unwrap();
        let rel: Vec<_> = found
            .iter()
            .map(|f| f.strip_prefix(p).unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(rel, vec!["tests/sub/conftest.py", "tests/test_a.py"]);
        assert!(matches!(
            discover(&[p.join("missing")]),
            Err(AuditError::NotFound { .. })
        ));
    }
}
