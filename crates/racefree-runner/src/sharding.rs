//! Sharding inside `racefree run` and `racefree plan`: which durations plan the partition,
//! reading `--durations-file` and `--files-from`, and the one line a shard prints. The pure
//! partition is `shard`; the file formats are `durations`.
//!
//! Which durations plan what:
//! - The partition must come out equal on every machine, and machines' local histories differ
//!   (a fresh runner has none, a cached one has last week's). So with `--durations-file` the
//!   partition is planned from that file alone; without it, from local history (which is then
//!   the user's job to keep equal, for example a restored CI cache).
//! - Scheduling inside one run only needs good guesses: local history first, the file filling
//!   the gaps ("plan from a committed file when there is no local history").

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::config;
use crate::discovery::{self, DiscoverOptions, TestFile};
use crate::durations::Durations;
use crate::error::{Error, Result};
use crate::history::History;
use crate::plan::Predictions;
use crate::pytest_argv::Resolved;
use crate::shard::{self, Shard, ShardSpec};

/// The sharding part of a run's request.
#[derive(Debug, Clone, Default)]
pub struct ShardOptions {
    /// This machine's shard (already resolved from the flag or the CI environment).
    pub shard: Option<ShardSpec>,
    /// `--durations-file`: durations to plan from, in either format.
    pub durations_file: Option<PathBuf>,
    /// `--durations-file-optional`: a missing or corrupt durations file is a warning, not an
    /// error (for the first CI run, before any file was committed).
    pub durations_file_optional: bool,
}

/// Reads `--durations-file`, or None if none was given (or it was optional and unusable, in
/// which case the warning says so).
pub fn load_durations_file(opts: &ShardOptions, cwd: &Path) -> Result<Option<Durations>> {
    let Some(path) = &opts.durations_file else {
        return Ok(None);
    };
    match Durations::read(&config::absolute(cwd, path)) {
        Ok(d) => Ok(Some(d)),
        Err(e) if opts.durations_file_optional => {
            eprintln!("racefree: warning: {e}\n  (ignored: --durations-file-optional)");
            Ok(None)
        }
        Err(e) => Err(Error::Usage(format!(
            "--durations-file: {e}\n  fix: point --durations-file at a file written by `racefree durations export` (or pytest-split), or add --durations-file-optional to plan without it"
        ))),
    }
}

/// `base`, with everything it lacks taken from `extra`.
fn fill_gaps(mut base: Predictions, extra: &Predictions) -> Predictions {
    for (k, v) in &extra.files {
        base.files.entry(k.clone()).or_insert(*v);
    }
    for (k, v) in &extra.tests {
        base.tests.entry(k.clone()).or_insert(*v);
    }
    base.per_test = base.per_test.or(extra.per_test);
    base.startup = base.startup.or(extra.startup);
    base.fork_startup = base.fork_startup.or(extra.fork_startup);
    base
}

/// Each file with the seconds the partition assumes for it.
fn weights(files: &[TestFile], predictions: &Predictions) -> Vec<(String, f64)> {
    files
        .iter()
        .map(|f| {
            (
                f.rel.clone(),
                predictions.file(&f.rel, f.estimate, f.selection.as_deref()),
            )
        })
        .collect()
}

/// The run's hook: keeps in `files` what this machine runs (all of them without `--shard`,
/// after printing the shard line with it) and returns the predictions to schedule with.
pub fn prepare(
    opts: &ShardOptions,
    cwd: &Path,
    history: Predictions,
    files: &mut Vec<TestFile>,
) -> Result<Predictions> {
    let from_file = load_durations_file(opts, cwd)?.map(|d| d.predictions());
    if let Some(spec) = opts.shard {
        let pick = shard::pick(
            &weights(files, from_file.as_ref().unwrap_or(&history)),
            spec,
        );
        println!("racefree: {pick}");
        let keep: HashSet<&str> = pick.files.iter().map(String::as_str).collect();
        files.retain(|f| keep.contains(f.rel.as_str()));
    }
    Ok(match &from_file {
        Some(p) => fill_gaps(history, p),
        None => history,
    })
}

/// What `racefree plan` is asked.
#[derive(Debug, Clone, Default)]
pub struct PlanRequest {
    pub invocation_dir: PathBuf,
    /// Paths and node ids, as for `racefree run`.
    pub args: Vec<String>,
    /// Arguments after `--` (they can change discovery: `--ignore`, `--doctest-modules`).
    pub pytest_args: Vec<String>,
    pub shards: usize,
    pub durations: ShardOptions,
    pub no_history: bool,
}

/// The whole partition, as `racefree plan` prints it.
#[derive(Debug, Clone, PartialEq)]
pub struct Partition {
    pub shards: Vec<Shard>,
    pub total_predicted: f64,
}

/// Discovers the files as `racefree run` would and partitions them over `req.shards`, with
/// the same durations `racefree run --shard K/N` plans from.
pub fn plan(req: &PlanRequest) -> Result<Partition> {
    if req.shards == 0 {
        return Err(Error::Usage(
            "--shards: 0 is not a number of shards (use 1 or more)".into(),
        ));
    }
    let cwd = &req.invocation_dir;
    // As `racefree run` reads them: paths after `--` are paths to test, and pytest's own
    // arguments may name its configuration.
    let resolved = Resolved::new(cwd, &req.args, &req.pytest_args)?;
    let files = discover(&resolved, cwd)?;
    crate::pytest_argv::refuse_files_outside_rootdir(
        &resolved.pytest.rootdir,
        files.iter().map(|f| f.path.as_path()),
    )?;
    let predictions = match load_durations_file(&req.durations, cwd)? {
        Some(d) => d.predictions(),
        None if req.no_history => Predictions::default(),
        None => local_predictions(&resolved.project_dir)?,
    };
    let w = weights(&files, &predictions);
    Ok(Partition {
        // A fold from +0.0: f64's `sum()` of nothing is -0.0 (`"predicted_secs": -0.0`).
        total_predicted: w.iter().map(|(_, s)| s.max(0.0)).fold(0.0, |a, s| a + s),
        shards: shard::partition(&w, req.shards),
    })
}

/// Discovery exactly as `racefree run` does it: addopts, `$PYTEST_ADDOPTS` and the options
/// after `--` decide `--ignore` and doctest collection.
fn discover(resolved: &Resolved, cwd: &Path) -> Result<Vec<TestFile>> {
    discovery::discover(
        &resolved.pytest,
        cwd,
        &resolved.args,
        DiscoverOptions::from_pytest_args(cwd, &resolved.pytest_flags()),
    )
}

/// Local history's predictions, without creating a store where there is none.
fn local_predictions(rootdir: &Path) -> Result<Predictions> {
    if !History::path_for(rootdir).exists() {
        return Ok(Predictions::default());
    }
    History::open(rootdir)?.predictions()
}

/// Reads `--files-from`: one path or node id per line, relative to the rootdir (as `racefree
/// plan` prints them) or absolute; blank lines and `#` comments are skipped. Every listed file
/// must exist: a plan made for another checkout should fail loudly, not run less.
pub fn read_files_from(list: &Path, cwd: &Path) -> Result<Vec<String>> {
    let list_path = config::absolute(cwd, list);
    let text = std::fs::read_to_string(&list_path).map_err(|e| {
        Error::Usage(format!(
            "--files-from {}: cannot read it: {e}\n  fix: write it with `racefree plan --shards N --format lines` (one test file per line)",
            list.display()
        ))
    })?;
    let rootdir = config::determine_setup(cwd, &[])?.rootdir;
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let file = config::arg_path(line);
        let path = rootdir.join(file);
        if !path.exists() {
            missing.push(line.to_string());
            continue;
        }
        // Keep a node id's `::...` part after the now absolute path.
        let rest = line.strip_prefix(file).unwrap_or_default();
        out.push(format!("{}{rest}", path.display()));
    }
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(5).map(String::as_str).collect();
        return Err(Error::Usage(format!(
            "--files-from {}: {} listed file{} do{} not exist under the rootdir {}: {}{}\n  fix: make the list from this checkout (`racefree plan`)",
            list.display(),
            missing.len(),
            if missing.len() == 1 { "" } else { "s" },
            if missing.len() == 1 { "es" } else { "" },
            rootdir.display(),
            shown.join(", "),
            if missing.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(rel: &str, estimate: u64) -> TestFile {
        TestFile {
            path: PathBuf::from("/r").join(rel),
            rel: rel.into(),
            estimate,
            selection: None,
            walk_root: None,
            remainder: false,
        }
    }

    #[test]
    fn the_durations_file_alone_plans_the_partition() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("d.json");
        std::fs::write(&d, r#"{"a.py::x": 10.0, "b.py::y": 1.0, "c.py::z": 1.0}"#).unwrap();
        let opts = ShardOptions {
            shard: Some(ShardSpec { index: 1, total: 2 }),
            durations_file: Some(d),
            durations_file_optional: false,
        };
        // Local history says otherwise; the file decides the partition, history still
        // schedules.
        let mut history = Predictions::default();
        history.files.insert("b.py".into(), 100.0);
        let mut mine = vec![file("a.py", 1), file("b.py", 1), file("c.py", 1)];
        let p = prepare(&opts, t.path(), history, &mut mine).unwrap();
        assert_eq!(
            mine.iter().map(|f| f.rel.as_str()).collect::<Vec<_>>(),
            ["a.py"]
        );
        assert_eq!(p.files["b.py"], 100.0);
        assert_eq!(p.files["a.py"], 10.0);
    }

    #[test]
    fn bad_durations_files_are_errors_unless_optional() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("d.json");
        std::fs::write(&d, "{not json").unwrap();
        let mut opts = ShardOptions {
            shard: None,
            durations_file: Some(d),
            durations_file_optional: false,
        };
        let e = load_durations_file(&opts, t.path()).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::USAGE);
        assert!(e.to_string().contains("d.json"), "{e}");
        assert!(e.to_string().contains("--durations-file-optional"), "{e}");
        opts.durations_file_optional = true;
        assert!(load_durations_file(&opts, t.path()).unwrap().is_none());
        opts.durations_file = Some(t.path().join("missing.json"));
        assert!(load_durations_file(&opts, t.path()).unwrap().is_none());
        opts.durations_file_optional = false;
        let e = load_durations_file(&opts, t.path()).unwrap_err();
        assert!(e.to_string().contains("missing.json"), "{e}");
    }

    #[test]
    fn files_from_resolves_against_the_rootdir_and_refuses_missing_files() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::write(root.join("pytest.ini"), "[pytest]\n").unwrap();
        std::fs::create_dir_all(root.join("tests/sub")).unwrap();
        std::fs::write(root.join("tests/test_a.py"), "").unwrap();
        std::fs::write(
            root.join("list.txt"),
            "# shard 1\ntests/test_a.py\n\ntests/test_a.py::test_x\n",
        )
        .unwrap();
        let got = read_files_from(Path::new("list.txt"), root).unwrap();
        let a = root.join("tests/test_a.py").display().to_string();
        assert_eq!(got, vec![a.clone(), format!("{a}::test_x")]);
        // From a subdirectory the list still means rootdir-relative paths.
        std::fs::rename(root.join("list.txt"), root.join("tests/sub/list.txt")).unwrap();
        let got = read_files_from(Path::new("list.txt"), &root.join("tests/sub")).unwrap();
        assert_eq!(got[0], a);

        std::fs::write(root.join("bad.txt"), "tests/test_a.py\ntests/gone.py\n").unwrap();
        let e = read_files_from(Path::new("bad.txt"), root).unwrap_err();
        assert!(e.to_string().contains("bad.txt"), "{e}");
        assert!(e.to_string().contains("tests/gone.py"), "{e}");
        let e = read_files_from(Path::new("nope.txt"), root).unwrap_err();
        assert!(e.to_string().contains("--files-from nope.txt"), "{e}");
    }
}
