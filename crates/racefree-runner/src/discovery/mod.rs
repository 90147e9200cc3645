//! Discovery: which files pytest would collect for these arguments and this configuration,
//! found by walking the file system with pytest's rules, never by importing user code.
//! Each file gets a parsed estimate of its test count for the scheduler.

pub mod estimate;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use crate::config::{PytestConfig, absolute, arg_path};
use crate::error::{Error, Result};
use crate::fnmatch::{fnmatch, has_magic};
use estimate::{Naming, estimate_tests};

/// One file pytest will collect.
#[derive(Debug, Clone, PartialEq)]
pub struct TestFile {
    /// Absolute path, what racefree passes to pytest.
    pub path: PathBuf,
    /// Path relative to the rootdir with `/` separators: the node id prefix, and the key
    /// history uses.
    pub rel: String,
    /// Parsed estimate of the number of tests (0 if none found, 1 if it did not parse).
    pub estimate: u64,
    /// Node ids chosen on the command line; None means the whole file.
    pub selection: Option<Vec<String>>,
    /// The directory whose walk found this file; None if the file was named explicitly.
    /// pytest applies `collect_ignore` only to files it finds by walking.
    pub walk_root: Option<PathBuf>,
    /// Not a test file but a directory pytest walks itself, for what racefree's discovery
    /// cannot see (see `Discovery::custom_collectors`); every test file racefree found is
    /// left out of it.
    pub remainder: bool,
}

/// What discovery found.
#[derive(Debug, Default)]
pub struct Discovery {
    pub files: Vec<TestFile>,
    /// conftest.py files (under the collection roots, or above them up to the rootdir) that
    /// define `pytest_collect_file`: they may collect tests from files racefree's rules do
    /// not know (YAML specs, notebooks), which only pytest's own walk finds.
    pub custom_collectors: Vec<PathBuf>,
    /// The directories pytest starts collecting from (see `collection_roots`).
    pub walked_roots: Vec<PathBuf>,
}

/// What decides discovery beyond the config file.
#[derive(Debug, Clone, Default)]
pub struct DiscoverOptions {
    /// `--doctest-modules` is on (in addopts or the passthrough arguments).
    pub doctest_modules: bool,
    /// `--doctest-glob` patterns; pytest's default is `test*.txt`.
    pub doctest_globs: Vec<String>,
    /// `--ignore` paths (absolute).
    pub ignore: Vec<PathBuf>,
    /// `--collect-in-virtualenv`: walk into virtualenvs too.
    pub collect_in_virtualenv: bool,
}

impl DiscoverOptions {
    /// Reads the discovery-relevant flags from pytest arguments (addopts + passthrough).
    pub fn from_pytest_args(invocation_dir: &Path, args: &[String]) -> Self {
        let mut opts = DiscoverOptions::default();
        let mut iter = args.iter().peekable();
        while let Some(arg) = iter.next() {
            let mut take = |name: &str| -> Option<String> {
                if arg == name {
                    iter.peek().map(|s| s.to_string())
                } else {
                    arg.strip_prefix(&format!("{name}=")).map(str::to_string)
                }
            };
            if arg == "--doctest-modules" {
                opts.doctest_modules = true;
            } else if arg == "--collect-in-virtualenv" {
                opts.collect_in_virtualenv = true;
            } else if let Some(glob) = take("--doctest-glob") {
                opts.doctest_globs.push(glob);
            } else if let Some(path) = take("--ignore") {
                opts.ignore.push(absolute(invocation_dir, Path::new(&path)));
            }
        }
        if opts.doctest_globs.is_empty() {
            opts.doctest_globs.push("test*.txt".into());
        }
        opts
    }
}

struct Rules {
    python_files: Vec<String>,
    norecursedirs: Vec<String>,
    naming: Naming,
    opts: DiscoverOptions,
}

impl Rules {
    fn is_python_test_file(&self, path: &Path) -> bool {
        let name = file_name(path);
        let full = path.to_string_lossy();
        self.python_files.iter().any(|p| {
            if p.contains('/') {
                fnmatch(&format!("*{p}"), &full)
            } else {
                fnmatch(p, name)
            }
        })
    }

    fn is_collected_file(&self, path: &Path) -> bool {
        let name = file_name(path);
        if name.ends_with(".py") {
            if self.opts.doctest_modules && name != "setup.py" && name != "__main__.py" {
                return true;
            }
            return self.is_python_test_file(path);
        }
        self.opts.doctest_globs.iter().any(|g| fnmatch(g, name))
    }

    fn recurse_into(&self, dir: &Path) -> bool {
        let name = file_name(dir);
        if name == "__pycache__" || self.norecursedirs.iter().any(|p| fnmatch(p, name)) {
            return false;
        }
        // pytest skips virtualenvs (a pyvenv.cfg marks them) unless given explicitly, or
        // told --collect-in-virtualenv.
        self.opts.collect_in_virtualenv || !dir.join("pyvenv.cfg").is_file()
    }
}

fn file_name(path: &Path) -> &str {
    path.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
}

/// Path relative to `root`, `/`-separated; pytest's node id prefix.
pub fn rel_path(root: &Path, path: &Path) -> String {
    match path.strip_prefix(root) {
        Ok(rel) => rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/"),
        Err(_) => path.to_string_lossy().into_owned(),
    }
}

/// Finds the files to run. `args` are the command-line paths and node ids (no options).
pub fn discover(
    cfg: &PytestConfig,
    invocation_dir: &Path,
    args: &[String],
    opts: DiscoverOptions,
) -> Result<Vec<TestFile>> {
    Ok(discover_all(cfg, invocation_dir, args, opts)?.files)
}

/// Finds the files to run, and what else pytest might collect (see `Discovery`).
pub fn discover_all(
    cfg: &PytestConfig,
    invocation_dir: &Path,
    args: &[String],
    opts: DiscoverOptions,
) -> Result<Discovery> {
    let rules = Rules {
        python_files: cfg.python_files()?,
        norecursedirs: cfg.norecursedirs()?,
        naming: Naming {
            classes: cfg.python_classes()?,
            functions: cfg.python_functions()?,
        },
        opts,
    };
    // file -> (selection (None = whole file), walk root); BTreeMap keeps a stable order.
    let mut chosen: BTreeMap<PathBuf, (Option<Vec<String>>, Option<PathBuf>)> = BTreeMap::new();
    let roots = collection_roots(cfg, invocation_dir, args)?;
    let mut visited = HashSet::new();
    let mut conftests: Vec<PathBuf> = Vec::new();
    let mut walked_roots = Vec::new();
    for (path, rest) in roots {
        // conftest.py files above where collection starts, up to the rootdir, apply too.
        let dir = if path.is_dir() {
            path.clone()
        } else {
            path.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        for above in dir.ancestors().take_while(|d| d.starts_with(&cfg.rootdir)) {
            conftests.push(above.join("conftest.py"));
        }
        if path.is_dir() {
            walked_roots.push(path.clone());
            walk(&path, &rules, &mut visited, &mut |file| {
                let conftest = file_name(&file) == "conftest.py";
                // A conftest is a test file too where pytest's rules collect it
                // (`--doctest-modules`, `python_files = *.py`).
                if !conftest || rules.is_collected_file(&file) {
                    chosen
                        .entry(file.clone())
                        .or_insert((None, Some(path.clone())));
                }
                if conftest {
                    conftests.push(file);
                }
            })?;
        } else if let Some(rest) = rest {
            let id = format!("{}{}", rel_path(&cfg.rootdir, &path), rest);
            match chosen.entry(path) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert((Some(vec![id]), None));
                }
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    if let Some(sel) = &mut o.get_mut().0 {
                        sel.push(id);
                    }
                }
            }
        } else {
            // A file named explicitly is collected whatever python_files says.
            chosen.insert(path, (None, None));
        }
    }
    let files: Vec<(PathBuf, Option<Vec<String>>, Option<PathBuf>)> = chosen
        .into_iter()
        .map(|(p, (sel, root))| (p, sel, root))
        .collect();
    conftests.sort();
    conftests.dedup();
    let custom_collectors = conftests
        .into_iter()
        // The hook's name anywhere (`def pytest_collect_file`, or Sybil's
        // `pytest_collect_file = Sybil(...).pytest()`).
        .filter(|c| {
            std::fs::read_to_string(c).is_ok_and(|text| text.contains("pytest_collect_file"))
        })
        .collect();
    Ok(Discovery {
        files: estimate_all(cfg, &rules, files),
        custom_collectors,
        walked_roots,
    })
}

fn walk(
    dir: &Path,
    rules: &Rules,
    visited: &mut HashSet<PathBuf>,
    found: &mut dyn FnMut(PathBuf),
) -> Result<()> {
    // Symlinked directories are followed, as pytest does, but each real directory once.
    let real = std::fs::canonicalize(dir)
        .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
    if !visited.insert(real) {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        if rules.opts.ignore.iter().any(|i| i == &path) {
            continue;
        }
        if path.is_dir() {
            if rules.recurse_into(&path) {
                walk(&path, rules, visited, found)?;
            }
        } else if path.is_file()
            && (rules.is_collected_file(&path) || file_name(&path) == "conftest.py")
        {
            found(path);
        }
    }
    Ok(())
}

/// Where pytest starts collecting, as it decides: the paths given (each with the node-id
/// part after it, if any), else `testpaths` when run from the rootdir, else the directory
/// it was started in.
pub fn collection_roots(
    cfg: &PytestConfig,
    invocation_dir: &Path,
    args: &[String],
) -> Result<Vec<(PathBuf, Option<String>)>> {
    let mut roots: Vec<(PathBuf, Option<String>)> = Vec::new();
    if args.is_empty() {
        let testpaths = cfg.testpaths()?;
        if invocation_dir == cfg.rootdir && !testpaths.is_empty() {
            for tp in &testpaths {
                let matched = expand_glob(&cfg.rootdir, tp);
                roots.extend(matched.into_iter().map(|p| (p, None)));
            }
        }
        if roots.is_empty() {
            roots.push((invocation_dir.to_path_buf(), None));
        }
    } else {
        for arg in args {
            let path = absolute(invocation_dir, Path::new(arg_path(arg)));
            if !path.exists() {
                return Err(Error::PathNotFound {
                    path: PathBuf::from(arg_path(arg)),
                    cwd: invocation_dir.to_path_buf(),
                });
            }
            let rest = arg
                .strip_prefix(arg_path(arg))
                .filter(|r| !r.is_empty())
                .map(str::to_string);
            roots.push((path, rest));
        }
    }
    Ok(roots)
}

/// Expands one `testpaths` entry (which may be a glob) relative to the rootdir.
fn expand_glob(root: &Path, pattern: &str) -> Vec<PathBuf> {
    if !has_magic(pattern) {
        let p = absolute(root, Path::new(pattern));
        return if p.exists() { vec![p] } else { Vec::new() };
    }
    let mut current = vec![if Path::new(pattern).is_absolute() {
        PathBuf::from("/")
    } else {
        root.to_path_buf()
    }];
    for segment in pattern.split('/').filter(|s| !s.is_empty()) {
        let mut next = Vec::new();
        for base in &current {
            if has_magic(segment) {
                if let Ok(rd) = std::fs::read_dir(base) {
                    let mut names: Vec<PathBuf> = rd
                        .filter_map(|e| e.ok())
                        .filter(|e| fnmatch(segment, &e.file_name().to_string_lossy()))
                        .map(|e| e.path())
                        .collect();
                    names.sort();
                    next.extend(names);
                }
            } else {
                let p = base.join(segment);
                if p.exists() {
                    next.push(p);
                }
            }
        }
        current = next;
    }
    current
}

fn estimate_one(rules: &Rules, path: &Path) -> u64 {
    let Ok(source) = std::fs::read_to_string(path) else {
        return 1;
    };
    let name = file_name(path);
    if !name.ends_with(".py") {
        // A doctest text file: one test.
        return 1;
    }
    let mut n = 0;
    if rules.is_python_test_file(path) {
        n += estimate_tests(&source, &path.to_string_lossy(), &rules.naming).unwrap_or(1);
    }
    if rules.opts.doctest_modules {
        // One doctest item per docstring with examples; a rough count of example blocks.
        n += source
            .lines()
            .filter(|l| l.trim_start().starts_with(">>>"))
            .count()
            .div_ceil(3) as u64;
    }
    n
}

fn estimate_all(
    cfg: &PytestConfig,
    rules: &Rules,
    files: Vec<(PathBuf, Option<Vec<String>>, Option<PathBuf>)>,
) -> Vec<TestFile> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    let chunk = files.len().div_ceil(threads).max(1);
    let estimates: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|(p, _, _)| estimate_one(rules, p))
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        // A panicking parser thread must not lose files: fall back to 1 test each.
        handles
            .into_iter()
            .zip(files.chunks(chunk))
            .flat_map(|(h, part)| h.join().unwrap_or_else(|_| vec![1; part.len()]))
            .collect()
    });
    files
        .into_iter()
        .zip(estimates)
        .map(|((path, selection, walk_root), estimate)| {
            let estimate = match &selection {
                Some(ids) => (ids.len() as u64).min(estimate.max(1)),
                None => estimate,
            };
            TestFile {
                rel: rel_path(&cfg.rootdir, &path),
                path,
                estimate,
                selection,
                walk_root,
                remainder: false,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::determine_setup;
    use std::fs;

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn rels(files: &[TestFile]) -> Vec<&str> {
        files.iter().map(|f| f.rel.as_str()).collect()
    }

    #[test]
    fn walks_with_pytest_rules() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write(
            r,
            "pytest.ini",
            "[pytest]\ntestpaths = tests\nnorecursedirs = skipme .*\n",
        );
        write(
            r,
            "tests/test_a.py",
            "def test_x(): pass\ndef test_y(): pass\n",
        );
        write(r, "tests/b_test.py", "def test_z(): pass\n");
        write(r, "tests/helper.py", "def test_not_collected(): pass\n");
        write(r, "tests/conftest.py", "");
        write(r, "tests/skipme/test_hidden.py", "def test_h(): pass\n");
        write(r, "tests/.hidden/test_dot.py", "def test_d(): pass\n");
        write(r, "tests/sub/test_c.py", "def test_c(:\n");
        write(r, "tests/env/pyvenv.cfg", "");
        write(r, "tests/env/test_venv.py", "");
        write(r, "other/test_other.py", "def test_o(): pass\n");
        let cfg = determine_setup(r, &[]).unwrap();
        let files = discover(&cfg, r, &[], DiscoverOptions::from_pytest_args(r, &[])).unwrap();
        assert_eq!(
            rels(&files),
            vec!["tests/b_test.py", "tests/sub/test_c.py", "tests/test_a.py"]
        );
        let est: Vec<u64> = files.iter().map(|f| f.estimate).collect();
        assert_eq!(est, vec![1, 1, 2]);
        // --collect-in-virtualenv walks into the virtualenv too, as pytest does.
        let opts = DiscoverOptions::from_pytest_args(r, &["--collect-in-virtualenv".into()]);
        let files = discover(&cfg, r, &[], opts).unwrap();
        assert!(rels(&files).contains(&"tests/env/test_venv.py"));
        // Explicit paths bypass testpaths; an explicit file bypasses python_files.
        let args = vec!["other".to_string(), "tests/helper.py".to_string()];
        let files = discover(&cfg, r, &args, DiscoverOptions::default()).unwrap();
        assert_eq!(rels(&files), vec!["other/test_other.py", "tests/helper.py"]);
        // From a subdirectory testpaths does not apply.
        let files = discover(&cfg, &r.join("tests/sub"), &[], DiscoverOptions::default()).unwrap();
        assert_eq!(rels(&files), vec!["tests/sub/test_c.py"]);
    }

    #[test]
    fn node_ids_select_within_a_file() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write(r, "pytest.ini", "[pytest]\n");
        write(r, "t/test_a.py", "def test_x(): pass\ndef test_y(): pass\n");
        let cfg = determine_setup(r, &[]).unwrap();
        let args = vec![
            "t/test_a.py::test_x".to_string(),
            "t/test_a.py::test_y[a b]".to_string(),
        ];
        let files = discover(&cfg, r, &args, DiscoverOptions::default()).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(
            files[0].selection.as_deref().unwrap(),
            ["t/test_a.py::test_x", "t/test_a.py::test_y[a b]"]
        );
        // The whole file given too: the whole file wins.
        let args = vec!["t/test_a.py".to_string(), "t/test_a.py::test_x".to_string()];
        let files = discover(&cfg, r, &args, DiscoverOptions::default()).unwrap();
        assert_eq!(files[0].selection, None);
    }

    #[test]
    fn missing_path_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let cfg = determine_setup(t.path(), &[]).unwrap();
        let err = discover(
            &cfg,
            t.path(),
            &["nope.py".into()],
            DiscoverOptions::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("nope.py"), "{err}");
    }

    #[test]
    fn doctest_modules_and_globs() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write(r, "pytest.ini", "[pytest]\n");
        write(
            r,
            "pkg/mod.py",
            "def f():\n    '''\n    >>> 1\n    1\n    '''\n",
        );
        write(r, "pkg/testdoc.txt", ">>> 1\n1\n");
        write(r, "setup.py", "");
        let cfg = determine_setup(r, &[]).unwrap();
        let opts = DiscoverOptions::from_pytest_args(r, &["--doctest-modules".into()]);
        let files = discover(&cfg, r, &[], opts).unwrap();
        assert_eq!(rels(&files), vec!["pkg/mod.py", "pkg/testdoc.txt"]);
    }

    #[test]
    fn testpaths_globs() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write(
            r,
            "pyproject.toml",
            "[tool.pytest.ini_options]\ntestpaths = [\"pkg*/tests\"]\n",
        );
        write(r, "pkg1/tests/test_a.py", "");
        write(r, "pkg2/tests/test_b.py", "");
        write(r, "test_top.py", "");
        let cfg = determine_setup(r, &[]).unwrap();
        let files = discover(&cfg, r, &[], DiscoverOptions::default()).unwrap();
        assert_eq!(
            rels(&files),
            vec!["pkg1/tests/test_a.py", "pkg2/tests/test_b.py"]
        );
    }
}
