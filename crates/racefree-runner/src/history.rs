//! History: an embedded SQLite database at `<rootdir>/.racefree/history.db`.
//!
//! Concurrency: WAL mode plus a busy timeout, and every write of a run happens in one
//! `BEGIN IMMEDIATE` transaction whose updates are computed in SQL from the stored values
//! (`ewma = ewma * (1 - a) + new * a`), so two runs finishing at once serialize instead of
//! overwriting each other's numbers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::events::{Outcome, TestResult};
use crate::plan::Predictions;

/// Weight of the newest measurement in the recency-weighted averages.
const ALPHA: f64 = 0.3;
/// Runs whose per-test outcomes are kept.
const KEEP_RUNS: i64 = 50;
/// `meta` key set once the `results` table holds no plain passes (see `record`): stores
/// written by racefree before that held one row per test and run, 100 MB on a 60,000-test
/// suite after ten runs.
const RESULTS_WITHOUT_PASSES: &str = "results_without_passes";
/// Dropping more rows than this from an old store is worth giving the space back at once.
const VACUUM_AFTER_ROWS: usize = 100_000;
/// A measured duration is clamped into [old / CLAMP, old * CLAMP] before averaging, so one
/// outlier (a stalled machine) moves predictions but does not own them.
const CLAMP: f64 = 20.0;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    duration REAL NOT NULL,
    workers INTEGER NOT NULL,
    exit_code INTEGER NOT NULL,
    passed INTEGER NOT NULL,
    failed INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tests (
    nodeid TEXT PRIMARY KEY,
    file TEXT NOT NULL,
    duration REAL NOT NULL,
    samples INTEGER NOT NULL,
    last_outcome TEXT NOT NULL,
    last_run INTEGER NOT NULL,
    runs INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    flips INTEGER NOT NULL,
    flaky INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS files (
    file TEXT PRIMARY KEY,
    duration REAL NOT NULL,
    tests INTEGER NOT NULL,
    samples INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    run INTEGER NOT NULL,
    nodeid TEXT NOT NULL,
    outcome TEXT NOT NULL,
    duration REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS results_run ON results(run);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
CREATE TABLE IF NOT EXISTS collect (file TEXT PRIMARY KEY, secs REAL NOT NULL);
CREATE TABLE IF NOT EXISTS imports (
    module TEXT PRIMARY KEY,
    last_seen INTEGER NOT NULL,
    problem TEXT
);
";

/// Modules not imported by any unit for this long leave the fork servers' preload set.
const IMPORT_TTL_SECS: i64 = 30 * 24 * 3600;
/// At most this many modules are preloaded.
const MAX_PRELOAD: i64 = 5000;

pub struct History {
    conn: Connection,
    path: PathBuf,
    /// Opened read-only: the store is someone else's, or on a read-only mount.
    read_only: bool,
}

/// What history keeps of one test's result (not its output: a run may have 100k tests).
#[derive(Debug, Clone, PartialEq)]
pub struct TestRecord {
    pub nodeid: String,
    pub file: String,
    pub outcome: Outcome,
    pub teardown_error: bool,
    pub duration: f64,
    /// It passed only on a retry in this run.
    pub flaky: bool,
}

impl From<&TestResult> for TestRecord {
    fn from(r: &TestResult) -> TestRecord {
        TestRecord {
            nodeid: r.nodeid.clone(),
            file: r.file.clone(),
            // A test with failed subtests is one of the run's failures (`--lf` runs it).
            outcome: if r.fails_by_subtests() {
                Outcome::Failed
            } else {
                r.outcome
            },
            teardown_error: r.teardown_error,
            duration: r.duration,
            flaky: r.flaky,
        }
    }
}

/// What one finished run contributes to history.
#[derive(Debug, Default)]
pub struct RunRecord {
    pub run_id: String,
    pub duration: f64,
    pub workers: usize,
    pub exit_code: u8,
    pub results: Vec<TestRecord>,
    /// Files that ran whole in this run, with the summed durations of their tests.
    pub files: HashMap<String, (f64, u64)>,
    /// Observed per-unit overheads (unit wall time minus its tests' time), seconds.
    pub startups: Vec<f64>,
    /// Units were forked from warm servers: their overhead is learned apart from spawns'.
    pub forked: bool,
    /// Per file run alone in a unit: seconds from the unit's start to its collection's end
    /// (what each chunk of a split file pays again).
    pub collect: HashMap<String, f64>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct TestStat {
    pub nodeid: String,
    pub duration: f64,
    pub last_outcome: String,
    pub runs: i64,
    pub failures: i64,
    pub flips: i64,
    pub flaky: i64,
}

/// `path` for a `file:` URI: the characters a URI gives meaning to, escaped.
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' | '?' | '#' => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// SQLite's "attempt to write a readonly database" (or a read-only file system).
fn is_read_only(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::ReadOnly) | Some(rusqlite::ErrorCode::CannotOpen)
    )
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl History {
    /// The store's path for a rootdir.
    pub fn path_for(rootdir: &Path) -> PathBuf {
        rootdir.join(".racefree").join("history.db")
    }

    /// Opens (creating if needed) the store, with a `.gitignore` of `*` beside it.
    pub fn open(rootdir: &Path) -> Result<History> {
        let dir = rootdir.join(".racefree");
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let ignore = dir.join(".gitignore");
        if !ignore.exists() {
            std::fs::write(&ignore, "# created by racefree\n*\n")
                .map_err(|e| Error::io(format!("writing {}", ignore.display()), e))?;
        }
        Self::open_at(&dir.join("history.db"))
    }

    pub fn open_at(path: &Path) -> Result<History> {
        let err = |source| Error::History {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(err)?;
        // journal_mode returns a row; query it rather than execute.
        let writable = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0))
            .and_then(|_| conn.execute_batch("PRAGMA synchronous=NORMAL;"))
            .and_then(|()| conn.execute_batch(SCHEMA));
        match writable {
            Ok(()) => Ok(History {
                conn,
                path: path.to_path_buf(),
                read_only: false,
            }),
            // A store someone else's or on a read-only mount (a CI cache) is still read:
            // `racefree history`, and a run's plan (its own write then fails, with a line).
            Err(e) if is_read_only(&e) && path.is_file() => {
                drop(conn);
                // `immutable`: SQLite then needs no -shm file beside it, which a directory
                // nobody may write to cannot get (a WAL store cannot be read without one).
                let conn = Connection::open_with_flags(
                    format!("file:{}?immutable=1", uri_path(path)),
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                        | rusqlite::OpenFlags::SQLITE_OPEN_URI
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(err)?;
                conn.busy_timeout(Duration::from_secs(30)).map_err(err)?;
                Ok(History {
                    conn,
                    path: path.to_path_buf(),
                    read_only: true,
                })
            }
            Err(e) => Err(err(e)),
        }
    }

    /// Whether the store could only be opened for reading: writing to it fails.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Once per store written before `results` kept only what did not simply pass: drops
    /// those passes, and gives their space back if there were many. Part of writing a run
    /// (`record`), not of opening: a store only read (`racefree history`, a read-only
    /// cache) opens as before.
    fn drop_old_passes(&mut self) -> Result<()> {
        let path = self.path.clone();
        let err = |source| Error::History {
            path: path.clone(),
            source,
        };
        let done: Option<f64> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [RESULTS_WITHOUT_PASSES],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?;
        if done.is_some() {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let dropped = tx
            .execute("DELETE FROM results WHERE outcome = 'passed'", [])
            .map_err(err)?;
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, 1)",
            [RESULTS_WITHOUT_PASSES],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        if dropped > VACUUM_AFTER_ROWS {
            // Best effort, once: VACUUM waits (up to the busy timeout) for another run that
            // is writing; if it still fails, later writes reuse the freed pages instead.
            let _ = self.conn.execute_batch("VACUUM");
        }
        Ok(())
    }

    /// The connection and the store's path, for modules that read or write the store in
    /// bulk (`durations_store`: durations export and import).
    pub(crate) fn raw(&mut self) -> (&mut Connection, &Path) {
        (&mut self.conn, &self.path)
    }

    fn err(&self, source: rusqlite::Error) -> Error {
        Error::History {
            path: self.path.clone(),
            source,
        }
    }

    /// Everything the planner needs.
    pub fn predictions(&self) -> Result<Predictions> {
        let mut p = Predictions::default();
        let mut stmt = self
            .conn
            .prepare("SELECT file, duration FROM files")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)?)))
            .map_err(|e| self.err(e))?;
        for row in rows {
            let (f, d) = row.map_err(|e| self.err(e))?;
            p.files.insert(f, d);
        }
        let mut stmt = self
            .conn
            .prepare("SELECT nodeid, duration FROM tests")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)?)))
            .map_err(|e| self.err(e))?;
        for row in rows {
            let (t, d) = row.map_err(|e| self.err(e))?;
            // A file's own row (a collection error, a module that skipped itself) is no
            // test to plan.
            if t.contains("::") {
                p.tests.insert(t, d);
            }
        }
        let (secs, tests): (Option<f64>, Option<i64>) = self
            .conn
            .query_row("SELECT SUM(duration), SUM(tests) FROM files", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(|e| self.err(e))?;
        if let (Some(secs), Some(tests)) = (secs, tests)
            && tests > 0
        {
            p.per_test = Some(secs / tests as f64);
        }
        // Ids a file no longer has (deleted or renamed tests) stay in `tests`: those measured
        // before the file's N most recent ones, N being its last whole run's count. Splitting
        // leaves them out of its lists (balance only: a chunk list naming a gone test is
        // harmless, and a current test wrongly left out runs in the exclusion chunk).
        let mut stmt = self
            .conn
            .prepare(
                "SELECT t.nodeid FROM (
                   SELECT nodeid, file,
                          ROW_NUMBER() OVER (PARTITION BY file ORDER BY last_run DESC, nodeid) AS rn
                   FROM tests
                 ) t JOIN files f ON f.file = t.file WHERE t.rn > f.tests",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        for row in rows {
            p.stale.insert(row.map_err(|e| self.err(e))?);
        }
        let mut stmt = self
            .conn
            .prepare("SELECT file, secs FROM collect")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)?)))
            .map_err(|e| self.err(e))?;
        for row in rows {
            let (f, secs) = row.map_err(|e| self.err(e))?;
            p.collect.insert(f, secs);
        }
        p.startup = self.meta("startup")?;
        p.fork_startup = self.meta("fork_startup")?;
        Ok(p)
    }

    fn meta(&self, key: &str) -> Result<Option<f64>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Modules recent units imported that fork servers may preload: never one that once
    /// made a server refuse to fork.
    pub fn preload_modules(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT module FROM imports WHERE problem IS NULL AND last_seen >= ?1
                 ORDER BY module LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![now() - IMPORT_TTL_SECS, MAX_PRELOAD], |r| {
                r.get::<_, String>(0)
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// Remembers modules units imported, and the module (if any) that made a fork server
    /// refuse to fork, with why, so later runs leave it out.
    pub fn record_imports(
        &mut self,
        modules: &std::collections::BTreeSet<String>,
        refused: Option<(&str, &str)>,
    ) -> Result<()> {
        let path = self.path.clone();
        let err = |source| Error::History {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut seen = tx
                .prepare(
                    "INSERT INTO imports (module, last_seen) VALUES (?1, ?2)
                     ON CONFLICT(module) DO UPDATE SET last_seen = excluded.last_seen",
                )
                .map_err(err)?;
            let at = now();
            for m in modules {
                seen.execute(params![m, at]).map_err(err)?;
            }
            if let Some((module, why)) = refused {
                tx.execute(
                    "INSERT INTO imports (module, last_seen, problem) VALUES (?1, ?2, ?3)
                     ON CONFLICT(module) DO UPDATE SET problem = excluded.problem",
                    params![module, at, why],
                )
                .map_err(err)?;
            }
            tx.execute(
                "DELETE FROM imports WHERE problem IS NULL AND last_seen < ?1",
                params![at - IMPORT_TTL_SECS],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Node ids whose last recorded outcome was a failure.
    pub fn last_failed(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT nodeid FROM tests WHERE last_outcome IN ('failed','error','crashed') ORDER BY nodeid")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// Writes one run, atomically.
    pub fn record(&mut self, run: &RunRecord) -> Result<()> {
        self.drop_old_passes()?;
        let path = self.path.clone();
        let err = |source| Error::History {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let passed = run
            .results
            .iter()
            .filter(|r| r.outcome == Outcome::Passed)
            .count() as i64;
        let failed = run
            .results
            .iter()
            .filter(|r| r.outcome.is_failure())
            .count() as i64;
        tx.execute(
            "INSERT INTO runs (run_id, started_at, duration, workers, exit_code, passed, failed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![run.run_id, now(), run.duration, run.workers as i64, run.exit_code as i64, passed, failed],
        )
        .map_err(err)?;
        let run_row = tx.last_insert_rowid();
        {
            let mut upsert = tx
                .prepare(
                    "INSERT INTO tests (nodeid, file, duration, samples, last_outcome, last_run, runs, failures, flips, flaky)
                     VALUES (?1, ?2, ?3, 1, ?4, ?5, 1, ?6, 0, ?10)
                     ON CONFLICT(nodeid) DO UPDATE SET
                       duration = CASE WHEN ?7 THEN tests.duration * (1 - ?8)
                                  + MIN(MAX(excluded.duration, tests.duration / ?9), tests.duration * ?9) * ?8
                                  ELSE tests.duration END,
                       samples = tests.samples + 1,
                       flips = tests.flips + CASE WHEN (tests.last_outcome = 'passed') != (excluded.last_outcome = 'passed')
                                    AND tests.last_outcome IN ('passed','failed','error','crashed')
                                    AND excluded.last_outcome IN ('passed','failed','error','crashed') THEN 1 ELSE 0 END,
                       last_outcome = excluded.last_outcome,
                       last_run = excluded.last_run,
                       runs = tests.runs + 1,
                       failures = tests.failures + excluded.failures,
                       flaky = tests.flaky + excluded.flaky",
                )
                .map_err(err)?;
            let mut result = tx
                .prepare(
                    "INSERT INTO results (run, nodeid, outcome, duration) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(err)?;
            // A file whose tests ran collected this time: its earlier collection error (a
            // row of its own, see the recorder) is over.
            let collected: std::collections::BTreeSet<&str> = run
                .results
                .iter()
                .filter(|r| r.nodeid.contains("::"))
                .map(|r| r.file.as_str())
                .collect();
            for file in collected {
                tx.execute(
                    "UPDATE tests SET last_outcome = 'passed' WHERE nodeid = ?1 AND last_outcome = 'error'",
                    params![file],
                )
                .map_err(err)?;
            }
            for r in &run.results {
                if r.outcome == Outcome::NotRun {
                    continue;
                }
                // Durations of crashed tests say nothing about the test; keep the old.
                let measured = r.outcome != Outcome::Crashed;
                let outcome = if r.teardown_error && r.outcome == Outcome::Passed {
                    "error"
                } else {
                    r.outcome.as_str()
                };
                upsert
                    .execute(params![
                        r.nodeid,
                        r.file,
                        r.duration,
                        outcome,
                        run_row,
                        r.outcome.is_failure() as i64,
                        measured,
                        ALPHA,
                        CLAMP,
                        r.flaky as i64
                    ])
                    .map_err(err)?;
                // A plain pass is what a test's row in `tests` already says; per run, only
                // what someone may want to look back at is kept.
                if outcome != "passed" {
                    result
                        .execute(params![run_row, r.nodeid, outcome, r.duration])
                        .map_err(err)?;
                }
            }
            let mut file = tx
                .prepare(
                    "INSERT INTO files (file, duration, tests, samples) VALUES (?1, ?2, ?3, 1)
                     ON CONFLICT(file) DO UPDATE SET
                       duration = files.duration * (1 - ?4)
                                  + MIN(MAX(excluded.duration, files.duration / ?5), files.duration * ?5) * ?4,
                       tests = excluded.tests,
                       samples = files.samples + 1",
                )
                .map_err(err)?;
            for (name, (secs, tests)) in &run.files {
                file.execute(params![name, secs, *tests as i64, ALPHA, CLAMP])
                    .map_err(err)?;
            }
            let mut collect = tx
                .prepare(
                    "INSERT INTO collect (file, secs) VALUES (?1, ?2)
                     ON CONFLICT(file) DO UPDATE SET
                       secs = collect.secs * (1 - ?3)
                              + MIN(MAX(excluded.secs, collect.secs / ?4), collect.secs * ?4) * ?3",
                )
                .map_err(err)?;
            for (name, secs) in &run.collect {
                collect
                    .execute(params![name, secs, ALPHA, CLAMP])
                    .map_err(err)?;
            }
            let key = if run.forked {
                "fork_startup"
            } else {
                "startup"
            };
            // One figure per run, the median unit's: a unit's overhead also holds its files'
            // collection, which for one giant file is many seconds, and recency weighting
            // over units would let whichever unit ended last decide every prediction.
            if let Some(s) = median(&run.startups) {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES (?3, ?1)
                     ON CONFLICT(key) DO UPDATE SET value = meta.value * (1 - ?2) + excluded.value * ?2",
                    params![s, ALPHA, key],
                )
                .map_err(err)?;
            }
            tx.execute(
                "DELETE FROM results WHERE run <= ?1",
                params![run_row - KEEP_RUNS],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    fn stats(&self, sql: &str, limit: usize) -> Result<Vec<TestStat>> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![limit as i64], |r| {
                Ok(TestStat {
                    nodeid: r.get(0)?,
                    duration: r.get(1)?,
                    last_outcome: r.get(2)?,
                    runs: r.get(3)?,
                    failures: r.get(4)?,
                    flips: r.get(5)?,
                    flaky: r.get(6)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    const COLS: &'static str = "nodeid, duration, last_outcome, runs, failures, flips, flaky";

    pub fn slowest(&self, limit: usize) -> Result<Vec<TestStat>> {
        self.stats(
            &format!(
                "SELECT {} FROM tests ORDER BY duration DESC, nodeid LIMIT ?1",
                Self::COLS
            ),
            limit,
        )
    }

    /// Tests whose outcome changed between pass and fail across runs, or that passed only
    /// on a retry.
    pub fn flaky(&self, limit: usize) -> Result<Vec<TestStat>> {
        self.stats(
            &format!("SELECT {} FROM tests WHERE flips > 0 OR flaky > 0 ORDER BY flaky + flips DESC, nodeid LIMIT ?1", Self::COLS),
            limit,
        )
    }

    pub fn failed(&self, limit: usize) -> Result<Vec<TestStat>> {
        self.stats(
            &format!(
                "SELECT {} FROM tests WHERE last_outcome IN ('failed','error','crashed') ORDER BY nodeid LIMIT ?1",
                Self::COLS
            ),
            limit,
        )
    }
}

/// The middle value (the lower of the two middle ones for an even count); None if empty.
fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len().saturating_sub(1) / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn result(nodeid: &str, outcome: Outcome, duration: f64) -> TestResult {
        TestResult::sample(nodeid, outcome, duration)
    }

    fn record(results: Vec<TestResult>) -> RunRecord {
        let results: Vec<TestRecord> = results.iter().map(TestRecord::from).collect();
        let mut files: HashMap<String, (f64, u64)> = HashMap::new();
        for r in &results {
            let e = files.entry(r.file.clone()).or_default();
            e.0 += r.duration;
            e.1 += 1;
        }
        RunRecord {
            run_id: "r".into(),
            duration: 1.0,
            workers: 2,
            exit_code: 0,
            results,
            files,
            startups: vec![0.5],
            forked: false,
            collect: HashMap::from([("a.py".to_string(), 0.25)]),
        }
    }

    #[test]
    fn one_giant_unit_does_not_decide_the_startup_estimate() {
        let t = tempfile::tempdir().unwrap();
        let mut h = History::open(t.path()).unwrap();
        let mut run = record(vec![result("a.py::x", Outcome::Passed, 1.0)]);
        // Ten ordinary units, then one whose "overhead" is a 30 s collection, ending last.
        run.startups = vec![0.2; 10];
        run.startups.push(30.0);
        h.record(&run).unwrap();
        let p = h.predictions().unwrap();
        assert_eq!(p.startup, Some(0.2));
        assert_eq!(median(&[3.0, 1.0, 2.0, 100.0]), Some(2.0));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn fork_overhead_is_learned_apart_and_preload_set_skips_refused_modules() {
        let t = tempfile::tempdir().unwrap();
        let mut h = History::open(t.path()).unwrap();
        let mut forked = record(vec![result("a.py::x", Outcome::Passed, 1.0)]);
        forked.forked = true;
        forked.startups = vec![0.05];
        h.record(&forked).unwrap();
        let p = h.predictions().unwrap();
        assert_eq!(p.fork_startup, Some(0.05));
        assert_eq!(p.startup, None);

        let seen: std::collections::BTreeSet<String> = ["numpy", "attr", "threaded"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        h.record_imports(&seen, None).unwrap();
        assert_eq!(
            h.preload_modules().unwrap(),
            vec!["attr", "numpy", "threaded"]
        );
        h.record_imports(
            &Default::default(),
            Some(("threaded", "it started a thread")),
        )
        .unwrap();
        assert_eq!(h.preload_modules().unwrap(), vec!["attr", "numpy"]);
        // Seeing it again does not make a refused module preloadable.
        h.record_imports(&seen, None).unwrap();
        assert_eq!(h.preload_modules().unwrap(), vec!["attr", "numpy"]);
    }

    #[test]
    fn records_and_predicts() {
        let t = tempfile::tempdir().unwrap();
        let mut h = History::open(t.path()).unwrap();
        assert!(t.path().join(".racefree/.gitignore").exists());
        h.record(&record(vec![
            result("a.py::x", Outcome::Passed, 1.0),
            result("a.py::y", Outcome::Failed, 3.0),
        ]))
        .unwrap();
        let p = h.predictions().unwrap();
        assert_eq!(p.files["a.py"], 4.0);
        assert_eq!(p.per_test, Some(2.0));
        assert_eq!(p.startup, Some(0.5));
        assert_eq!(p.collect["a.py"], 0.25);
        assert!(p.stale.is_empty());
        assert_eq!(h.last_failed().unwrap(), vec!["a.py::y"]);
        h.record(&record(vec![
            result("a.py::x", Outcome::Passed, 2.0),
            result("a.py::y", Outcome::Passed, 3.0),
        ]))
        .unwrap();
        let p = h.predictions().unwrap();
        assert!(
            (p.tests["a.py::x"] - 1.3).abs() < 1e-9,
            "recency weighted: {}",
            p.tests["a.py::x"]
        );
        assert!(h.last_failed().unwrap().is_empty());
        let flaky = h.flaky(10).unwrap();
        assert_eq!(flaky.len(), 1);
        assert_eq!(flaky[0].nodeid, "a.py::y");
        assert_eq!(h.slowest(1).unwrap()[0].nodeid, "a.py::y");
        // A test that passed only on a retry counts as flaky without any flip.
        let mut retried = result("a.py::z", Outcome::Passed, 1.0);
        retried.flaky = true;
        h.record(&record(vec![retried])).unwrap();
        let flaky = h.flaky(10).unwrap();
        let z = flaky.iter().find(|s| s.nodeid == "a.py::z").unwrap();
        assert_eq!((z.flaky, z.flips), (1, 0));
    }

    fn results_rows(h: &History) -> Vec<(i64, String, String)> {
        let mut stmt = h
            .conn
            .prepare("SELECT run, nodeid, outcome FROM results ORDER BY run, nodeid")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<Vec<_>>>()
            .unwrap()
    }

    #[test]
    fn per_run_outcomes_keep_what_did_not_simply_pass() {
        let t = tempfile::tempdir().unwrap();
        let mut h = History::open(t.path()).unwrap();
        let mut torn = result("a.py::torn", Outcome::Passed, 1.0);
        torn.teardown_error = true;
        h.record(&record(vec![
            result("a.py::ok", Outcome::Passed, 1.0),
            result("a.py::bad", Outcome::Failed, 1.0),
            result("a.py::skip", Outcome::Skipped, 0.0),
            torn,
        ]))
        .unwrap();
        assert_eq!(
            results_rows(&h),
            [
                (1, "a.py::bad".to_string(), "failed".to_string()),
                (1, "a.py::skip".to_string(), "skipped".to_string()),
                (1, "a.py::torn".to_string(), "error".to_string()),
            ]
        );
        // The plain pass is still known where it counts.
        assert_eq!(h.predictions().unwrap().tests["a.py::ok"], 1.0);
    }

    #[test]
    fn a_store_that_kept_every_pass_drops_them_once() {
        let t = tempfile::tempdir().unwrap();
        let mut h = History::open(t.path()).unwrap();
        h.record(&record(vec![result("a.py::bad", Outcome::Failed, 1.0)]))
            .unwrap();
        // As racefree wrote it before: every pass of every run, and no marker.
        h.conn
            .execute_batch(
                "INSERT INTO results VALUES (1, 'a.py::ok', 'passed', 1.0);
                 DELETE FROM meta WHERE key = 'results_without_passes';",
            )
            .unwrap();
        drop(h);
        let mut h = History::open(t.path()).unwrap();
        // Opening alone changes nothing (a store may be only read); the next run's write does.
        assert_eq!(results_rows(&h).len(), 2);
        h.record(&record(vec![result("a.py::ok", Outcome::Passed, 1.0)]))
            .unwrap();
        assert_eq!(
            results_rows(&h),
            [(1, "a.py::bad".to_string(), "failed".to_string())]
        );
        let marked: f64 = h
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'results_without_passes'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(marked, 1.0);
    }

    #[test]
    fn tests_gone_from_a_file_are_stale() {
        let t = tempfile::tempdir().unwrap();
        let mut h = History::open(t.path()).unwrap();
        h.record(&record(vec![
            result("a.py::old", Outcome::Passed, 1.0),
            result("a.py::x", Outcome::Passed, 1.0),
        ]))
        .unwrap();
        // `old` was renamed: the file's next whole run has two tests, neither of them `old`.
        h.record(&record(vec![
            result("a.py::x", Outcome::Passed, 1.0),
            result("a.py::new", Outcome::Passed, 1.0),
        ]))
        .unwrap();
        let p = h.predictions().unwrap();
        assert_eq!(p.stale, HashSet::from(["a.py::old".to_string()]));
        let by_file = p.tests_by_file();
        let ids: Vec<&str> = by_file["a.py"].iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["a.py::new", "a.py::x"]);
    }

    #[test]
    fn outliers_are_clamped() {
        let t = tempfile::tempdir().unwrap();
        let mut h = History::open(t.path()).unwrap();
        h.record(&record(vec![result("a.py::x", Outcome::Passed, 1.0)]))
            .unwrap();
        h.record(&record(vec![result("a.py::x", Outcome::Passed, 1e9)]))
            .unwrap();
        let p = h.predictions().unwrap();
        assert!(p.tests["a.py::x"] <= 1.0 * 0.7 + 20.0 * 0.3 + 1e-9);
    }

    /// Two writers at once (two runs in one checkout) must both land.
    #[test]
    fn concurrent_runs_do_not_lose_data() {
        let t = tempfile::tempdir().unwrap();
        History::open(t.path()).unwrap();
        let root = t.path().to_path_buf();
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let root = root.clone();
                std::thread::spawn(move || {
                    let mut h = History::open(&root).unwrap();
                    for j in 0..10 {
                        h.record(&record(vec![result(
                            &format!("f{i}.py::t{j}"),
                            Outcome::Passed,
                            0.1,
                        )]))
                        .unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let h = History::open(&root).unwrap();
        assert_eq!(h.predictions().unwrap().tests.len(), 40);
        let runs: i64 = h
            .conn
            .query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(runs, 40);
    }
}
