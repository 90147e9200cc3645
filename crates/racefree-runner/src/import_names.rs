//! The module names pytest imports test files under, to find the files that cannot share
//! one pytest process. Under pytest's default import modes (`prepend`, `append`) a test
//! file is imported under its name inside its package (`pkg.sub.test_x`), or as its bare
//! file name outside any package, with the directory above its package put on `sys.path`.
//! So `a/test_same.py` and `b/test_same.py` are both `test_same`, and `p1/tests/test_a.py`
//! and `p2/tests/test_b.py` both live in a package `tests`: whichever pytest collects
//! second fails to import ("import file mismatch", "No module named 'tests.test_b'"). In a
//! process per file racefree would hide that; such files run together in one unit, in
//! collection order, so pytest says what it says at the top.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Groups (indices into `paths`, in their order) of test files that pytest's `prepend`
/// and `append` import modes cannot import side by side: files whose top-level module
/// (the bare name, or the outermost package) has one name but lies in two or more
/// directories.
pub fn colliding(paths: &[&Path]) -> Vec<Vec<usize>> {
    let mut packages = PackageDirs::default();
    // Top-level module name -> (the directories it is imported from, the files under it).
    let mut by_top: BTreeMap<String, (BTreeSet<PathBuf>, Vec<usize>)> = BTreeMap::new();
    for (i, path) in paths.iter().enumerate() {
        // pytest imports a conftest.py anew wherever it lies (it drops the last one from
        // `sys.modules` first): one collected as a test module too (`python_files = *.py`)
        // clashes with nothing.
        if path.file_name().is_some_and(|n| n == "conftest.py") {
            continue;
        }
        if let Some((root, top)) = packages.import_root(path) {
            let entry = by_top.entry(top).or_default();
            entry.0.insert(root);
            entry.1.push(i);
        }
    }
    let mut groups: Vec<Vec<usize>> = by_top
        .into_values()
        .filter(|(roots, _)| roots.len() > 1)
        .map(|(_, files)| files)
        .collect();
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

    /// Where pytest imports a test file from and under which top-level name: the directory
    /// above its outermost package and that package's name (every directory upwards that
    /// holds `__init__.py` and is named as a Python identifier, as pytest's
    /// `resolve_package_path` walks), or the file's own directory and stem outside any
    /// package. None for a path with no name.
    fn import_root(&mut self, path: &Path) -> Option<(PathBuf, String)> {
        let mut top = path.file_stem()?.to_str()?.to_string();
        let mut dir = path.parent()?;
        while self.is_package(dir) {
            let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
                break;
            };
            if !is_identifier(name) {
                break;
            }
            top = name.to_string();
            match dir.parent() {
                Some(parent) => dir = parent,
                None => break,
            }
        }
        Some((dir.to_path_buf(), top))
    }
}

/// Python's `str.isidentifier` for the names directories have (ASCII letters, digits and
/// `_`, not starting with a digit; other letters Python allows are taken as allowed).
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
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
    fn files_collide_by_their_top_level_module_from_different_directories() {
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
            "s/sub/test_y.py",
            "t/test_other.py",
            "t/test_more.py",
            "u-1/__init__.py",
            "u-1/test_dash.py",
            "v-1/__init__.py",
            "v-1/test_dash.py",
            "w/tests/__init__.py",
            "w/tests/test_a.py",
            "w/tests/test_b.py",
            "x/conftest.py",
            "y/conftest.py",
        ]);
        let d = dir.path();
        let rel = [
            "a/test_same.py",
            "t/test_other.py",
            "b/test_same.py",
            "p/test_same.py",
            "q/sub/test_same.py",
            "r/sub/test_x.py",
            "s/sub/test_y.py",
            "c/test_same.py",
            "t/test_more.py",
            "u-1/test_dash.py",
            "v-1/test_dash.py",
            "w/tests/test_a.py",
            "w/tests/test_b.py",
            "x/conftest.py",
            "y/conftest.py",
        ];
        let paths: Vec<PathBuf> = rel.iter().map(|r| d.join(r)).collect();
        let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        // `test_same` three times outside packages; r/sub and s/sub are both the top-level
        // package `sub`; u-1 and v-1 are no packages to pytest (not identifiers), so their
        // files are both `test_dash`. p.test_same and q.sub.test_same are their packages'
        // own, and w/tests's two files share one package from one directory.
        assert_eq!(
            colliding(&refs),
            vec![vec![0, 2, 7], vec![5, 6], vec![9, 10]]
        );
    }

    #[test]
    fn identifiers_as_python_reads_them() {
        for yes in ["tests", "_x", "a1", "été"] {
            assert!(is_identifier(yes), "{yes}");
        }
        for no in ["", "1a", "a-1", "a.b", "a b"] {
            assert!(!is_identifier(no), "{no}");
        }
    }

    #[test]
    fn only_importlib_names_files_apart() {
        assert!(mode_names_files_apart(Some("importlib")));
        assert!(!mode_names_files_apart(Some("prepend")));
        assert!(!mode_names_files_apart(Some("append")));
        assert!(!mode_names_files_apart(None));
    }
}
