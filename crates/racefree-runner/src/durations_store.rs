//! Durations in and out of the history store: what `racefree durations export` writes and
//! `racefree durations import` merges back, so that N shards' measurements become one history.
//!
//! A test's measurement time is the start of the run that last recorded it. An imported
//! measurement replaces the local one only when it is newer; it gets a `runs` row of its own
//! (`run_id = 'imported'`) carrying that time, so a later export still knows how old it is.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use crate::durations::{Durations, FileInfo, Measurement, file_of};
use crate::error::{Error, Result};
use crate::history::History;

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Tests whose imported measurement was newer than the local one (or new).
    pub updated: usize,
    /// Imported tests whose local measurement was at least as new.
    pub kept: usize,
    /// Tests (local or imported) dropped because they no longer exist.
    pub dropped: usize,
}

fn history_err(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |source| Error::History {
        path: path.to_path_buf(),
        source,
    }
}

/// Everything the store knows about test durations, and each file's test count in its last
/// whole run.
fn read(conn: &Connection, path: &Path) -> Result<Durations> {
    let err = history_err(path);
    let mut out = Durations::default();
    let mut stmt = conn
        .prepare(
            "SELECT t.nodeid, t.duration, COALESCE(r.started_at, 0)
             FROM tests t LEFT JOIN runs r ON r.id = t.last_run",
        )
        .map_err(&err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Measurement {
                    duration: r.get(1)?,
                    measured_at: r.get(2)?,
                },
            ))
        })
        .map_err(&err)?;
    for row in rows {
        let (id, m) = row.map_err(&err)?;
        out.tests.insert(id, m);
    }
    let mut stmt = conn
        .prepare("SELECT file, tests FROM files")
        .map_err(&err)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .map_err(&err)?;
    for row in rows {
        let (file, tests) = row.map_err(&err)?;
        out.files.insert(
            file,
            FileInfo {
                tests: u64::try_from(tests).unwrap_or(0),
            },
        );
    }
    out.startup = conn
        .query_row("SELECT value FROM meta WHERE key = 'startup'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(&err)?;
    Ok(out)
}

/// Everything the store knows about test durations.
pub fn export(history: &mut History) -> Result<Durations> {
    let (conn, path) = history.raw();
    read(conn, path)
}

/// Merges `incoming` into the store: per test the newer measurement wins (local on a tie);
/// then every test that no longer exists (`Durations::drop_vanished`; `exists` gets the
/// rootdir-relative file) is dropped, local entries included. One transaction, so a
/// concurrent run never sees half, and a run finishing meanwhile is not overwritten.
pub fn import(
    history: &mut History,
    incoming: &Durations,
    exists: impl Fn(&str) -> bool,
) -> Result<ImportReport> {
    let (conn, path) = history.raw();
    let err = history_err(path);
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(&err)?;
    let local = read(&tx, path)?;
    // Local last: on equal times it wins.
    let mut merged = Durations::merge([incoming.clone(), local.clone()]);
    merged.drop_vanished(&exists);

    let mut report = ImportReport::default();
    let all: BTreeSet<&String> = local.tests.keys().chain(incoming.tests.keys()).collect();
    report.dropped = all
        .iter()
        .filter(|id| !merged.tests.contains_key(**id))
        .count();
    report.kept = incoming
        .tests
        .keys()
        .filter(|id| {
            merged.tests.contains_key(*id) && merged.tests.get(*id) == local.tests.get(*id)
        })
        .count();

    let mut touched: BTreeSet<&str> = BTreeSet::new();
    {
        let mut run_rows: HashMap<i64, i64> = HashMap::new();
        let mut upsert = tx
            .prepare(
                "INSERT INTO tests (nodeid, file, duration, samples, last_outcome, last_run, runs, failures, flips)
                 VALUES (?1, ?2, ?3, 1, 'imported', ?4, 0, 0, 0)
                 ON CONFLICT(nodeid) DO UPDATE SET duration = excluded.duration, last_run = excluded.last_run",
            )
            .map_err(&err)?;
        for (id, m) in &merged.tests {
            if local.tests.get(id) == Some(m) {
                continue;
            }
            let run = match run_rows.get(&m.measured_at) {
                Some(&row) => row,
                None => {
                    tx.execute(
                        "INSERT INTO runs (run_id, started_at, duration, workers, exit_code, passed, failed)
                         VALUES ('imported', ?1, 0, 0, 0, 0, 0)",
                        params![m.measured_at],
                    )
                    .map_err(&err)?;
                    let row = tx.last_insert_rowid();
                    run_rows.insert(m.measured_at, row);
                    row
                }
            };
            upsert
                .execute(params![id, file_of(id), m.duration, run])
                .map_err(&err)?;
            touched.insert(file_of(id));
            report.updated += 1;
        }
        for id in local
            .tests
            .keys()
            .filter(|id| !merged.tests.contains_key(*id))
        {
            tx.execute("DELETE FROM tests WHERE nodeid = ?1", params![id])
                .map_err(&err)?;
            touched.insert(file_of(id));
        }
        for (file, info) in &merged.files {
            if local.files.get(file) != Some(info) {
                touched.insert(file);
            }
        }
        for file in local.files.keys() {
            if !merged.files.contains_key(file) {
                touched.insert(file);
            }
        }

        // A file's time is the sum of its tests' (as a whole-file run records it); its count
        // is its last whole run's.
        let counts: BTreeMap<&str, i64> = merged
            .files
            .iter()
            .map(|(f, i)| (f.as_str(), i64::try_from(i.tests).unwrap_or(i64::MAX)))
            .collect();
        let mut file = tx
            .prepare(
                "INSERT INTO files (file, duration, tests, samples)
                 SELECT ?1, SUM(duration), COALESCE(?2, COUNT(*)), 1 FROM tests WHERE file = ?1
                 HAVING COUNT(*) > 0
                 ON CONFLICT(file) DO UPDATE SET duration = excluded.duration, tests = excluded.tests",
            )
            .map_err(&err)?;
        for f in &touched {
            let n = file.execute(params![f, counts.get(f)]).map_err(&err)?;
            if n == 0 {
                // No tests left: the file is gone, or was never measured whole.
                tx.execute("DELETE FROM files WHERE file = ?1", params![f])
                    .map_err(&err)?;
            }
        }

        if let Some(s) = incoming.startup {
            // Local start-up is this machine's own measurement: keep it if there is one.
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('startup', ?1) ON CONFLICT(key) DO NOTHING",
                params![s],
            )
            .map_err(&err)?;
        }
    }
    tx.commit().map_err(&err)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn durations(entries: &[(&str, f64, i64)]) -> Durations {
        Durations {
            tests: entries
                .iter()
                .map(|(id, d, t)| {
                    (
                        id.to_string(),
                        Measurement {
                            duration: *d,
                            measured_at: *t,
                        },
                    )
                })
                .collect(),
            files: Default::default(),
            startup: Some(0.3),
        }
    }

    #[test]
    fn import_then_export_keeps_the_newest_and_drops_vanished_files() {
        let t = tempfile::tempdir().unwrap();
        let mut h = History::open(t.path()).unwrap();
        let exists = |f: &str| f != "gone.py";
        let shard1 = durations(&[("a.py::x", 1.0, 100), ("gone.py::y", 2.0, 100)]);
        let shard2 = durations(&[("a.py::z", 3.0, 100), ("b.py::w", 4.0, 100)]);
        let r1 = import(&mut h, &shard1, exists).unwrap();
        assert_eq!(
            r1,
            ImportReport {
                updated: 1,
                kept: 0,
                dropped: 1
            }
        );
        import(&mut h, &shard2, exists).unwrap();
        // An older measurement does not replace a newer one; a newer one does.
        let older = durations(&[("a.py::x", 50.0, 50)]);
        let newer = durations(&[("b.py::w", 0.5, 200)]);
        assert_eq!(import(&mut h, &older, exists).unwrap().kept, 1);
        assert_eq!(import(&mut h, &newer, exists).unwrap().updated, 1);

        let out = export(&mut h).unwrap();
        assert_eq!(
            out.tests.keys().collect::<Vec<_>>(),
            ["a.py::x", "a.py::z", "b.py::w"]
        );
        assert_eq!(out.tests["a.py::x"].duration, 1.0);
        assert_eq!(out.tests["a.py::x"].measured_at, 100);
        assert_eq!(out.tests["b.py::w"].duration, 0.5);
        assert_eq!(out.tests["b.py::w"].measured_at, 200);
        assert_eq!(out.startup, Some(0.3));
        // The planner sees whole files as sums of their tests.
        let p = h.predictions().unwrap();
        assert_eq!(p.files["a.py"], 4.0);
        assert_eq!(p.files["b.py"], 0.5);
        assert!(!p.files.contains_key("gone.py"));
    }

    #[test]
    fn local_entries_of_deleted_files_are_dropped_too() {
        let t = tempfile::tempdir().unwrap();
        let mut h = History::open(t.path()).unwrap();
        import(&mut h, &durations(&[("old.py::x", 1.0, 10)]), |_| true).unwrap();
        let r = import(&mut h, &durations(&[("a.py::x", 1.0, 10)]), |f| {
            f != "old.py"
        })
        .unwrap();
        assert_eq!(r.dropped, 1);
        assert!(!export(&mut h).unwrap().tests.contains_key("old.py::x"));
        assert!(!h.predictions().unwrap().files.contains_key("old.py"));
    }

    #[test]
    fn a_test_renamed_inside_a_file_is_dropped_on_import() {
        let t = tempfile::tempdir().unwrap();
        let mut h = History::open(t.path()).unwrap();
        let mut last_week = durations(&[
            ("a.py::x", 1.0, 100),
            ("a.py::y", 1.0, 100),
            ("a.py::z", 5.0, 100),
        ]);
        last_week.files.insert("a.py".into(), FileInfo { tests: 3 });
        import(&mut h, &last_week, |_| true).unwrap();
        let mut today = durations(&[
            ("a.py::x", 1.0, 200),
            ("a.py::y", 1.0, 200),
            ("a.py::w", 2.0, 200),
        ]);
        today.files.insert("a.py".into(), FileInfo { tests: 3 });
        let r = import(&mut h, &today, |_| true).unwrap();
        assert_eq!(r.updated, 3);
        assert_eq!(r.dropped, 1);
        let out = export(&mut h).unwrap();
        assert_eq!(
            out.tests.keys().collect::<Vec<_>>(),
            ["a.py::w", "a.py::x", "a.py::y"]
        );
        assert_eq!(out.files["a.py"].tests, 3);
        assert_eq!(h.predictions().unwrap().files["a.py"], 4.0);
    }
}
