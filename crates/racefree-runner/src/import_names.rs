//! The module names pytest imports test files under, to find the files that cannot share
//! one pytest process. Under pytest's default import modes (`prepend`, `append`) a test
//! file outside any package is imported as its bare file name: `a/test_same.py` and
//! `b/test_same.py` are both `test_same`, and the second one pytest collects fails with
//! "import file mismatch". In one process per file racefree would hide that; such files
//! run together in one unit, in collection order, so pytest says what it says at the top.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Groups (indices into `paths`, in their order) of two or more test files that pytest's
/// `prepend` and `append` import modes import under one module name.
pub fn colliding(paths: &[&Path]) -> Vec<Vec<usize>> {
    let mut packages = PackageDirs::default();
    let mut by_name: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, path) in paths.iter().enumerate() {
        if let Some(name) = packages.module_name(path) {
            by_name.entry(name).or_default().push(i);
        }
    }
    let mut groups: Vec<Vec<usize>> = by_name.into_values().filter(|g| g.len() > 1).collect();
    groups.sort();
    groups
}

/// Whether pytest's import mode (`--import-mode`, the last given) imports test files under
/// names of their own place (`importlib`), where no two files collide.
pub fn mode_names_files_apart(import_mode: Option<&str>) -> bool {
    import_mode == Some("importlib")
}

/// Which directories are packages (hold `__init__.py`), each looked up once.
#[derive(Default)]
struct PackageDirs {
    known: HashMap<PathBuf, bool>,
}

impl PackageDirs {
    fn is_package(&mut self, dir: &Path) -> bool {
        if let Some(&known) = self.known.get(dir) {
            return known;
        }
        let package = dir.join("__init__.py").is_file();
        self.known.insert(dir.to_path_buf(), package);
        package
    }

    /// pytest's name for a test file: its stem, after the dotted names of the packages it
    /// lies in (every directory upwards that holds `__init__.py`, up to the first that does
    /// not). None for a path with no file stem.
    fn module_name(&mut self, path: &Path) -> Option<String> {
        let stem = path.file_stem()?.to_str()?.to_string();
        let mut parts = vec![stem];
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| self.is_package(d)) {
            parts.push(d.file_name()?.to_str()?.to_string());
            dir = d.parent();
        }
        parts.reverse();
        Some(parts.join("."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let path = dir.path().join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "").unwrap();
        }
        dir
    }

    #[test]
    fn files_outside_packages_collide_by_file_name_only() {
        let dir = tree(&[
            "a/test_same.py",
            "b/test_same.py",
            "c/test_same.py",
            "p/__init__.py",
            "p/test_same.py",
            "q/__init__.py",
            "q/sub/__init__.py",
            "q/sub/test_same.py",
            "r/sub/__init__.py",
            "r/sub/test_x.py",
            "s/sub/__init__.py",
            "s/sub/test_x.py",
            "t/test_other.py",
        ]);
        let d = dir.path();
        let rel = [
            "a/test_same.py",
            "t/test_other.py",
            "b/test_same.py",
            "p/test_same.py",
            "q/sub/test_same.py",
            "r/sub/test_x.py",
            "s/sub/test_x.py",
            "c/test_same.py",
        ];
        let paths: Vec<PathBuf> = rel.iter().map(|r| d.join(r)).collect();
        let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        // p.test_same and q.sub.test_same are packages' own; r/sub and s/sub are both the
        // top-level package `sub`.
        assert_eq!(colliding(&refs), vec![vec![0, 2, 7], vec![5, 6]]);
    }

    #[test]
    fn only_importlib_names_files_apart() {
        assert!(mode_names_files_apart(Some("importlib")));
        assert!(!mode_names_files_apart(Some("prepend")));
        assert!(!mode_names_files_apart(Some("append")));
        assert!(!mode_names_files_apart(None));
    }
}
