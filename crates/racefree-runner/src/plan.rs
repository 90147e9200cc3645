//! The planner: predicts each file's duration and packs files into units.
//!
//! Predictions: a file's own recency-weighted history if it has one; otherwise its parsed
//! test count times the per-test time learned from history (or a conservative default).
//! Packing: files longer than the current target run alone; smaller ones are packed so
//! that each unit pays one interpreter start-up. The target shrinks as the remaining work
//! shrinks, so units come out large first and small at the end, and the dispatcher (which
//! always hands a free slot the longest remaining unit) can even out the finish.
//! Splitting: a file that alone would outlast the balanced finish is divided into chunks,
//! each a unit of its own (`split`).

use std::collections::{HashMap, HashSet};

use crate::config::UnitMode;

mod split;
pub use split::{Chunk, DEFAULT_COLLECT_PER_TEST_SECS, Part, SplitInput};

/// Per-test time assumed when history knows nothing at all: deliberately on the slow side
/// of typical unit tests, so an unknown suite is split finely enough to balance.
pub const DEFAULT_PER_TEST_SECS: f64 = 0.05;
/// Interpreter + pytest start-up assumed when history knows nothing (and no measurement).
pub const DEFAULT_STARTUP_SECS: f64 = 0.4;
/// A packed unit should hold at least this many start-ups' worth of tests: start-up is then
/// at most a fifth of its time.
pub const STARTUPS_PER_UNIT: f64 = 4.0;
/// Overhead of a unit forked from a warm server, before history knows better: pytest's own
/// configuration and session set-up, without an interpreter start-up.
pub const DEFAULT_FORK_STARTUP_SECS: f64 = 0.1;

/// What history knows, reduced to what the planner needs.
#[derive(Debug, Clone, Default)]
pub struct Predictions {
    /// Seconds per file (rootdir-relative path), recency-weighted.
    pub files: HashMap<String, f64>,
    /// Seconds per test node id.
    pub tests: HashMap<String, f64>,
    /// Learned mean seconds per test, if history has any.
    pub per_test: Option<f64>,
    /// Learned per-unit overhead (start-up, collection, exit), if known.
    pub startup: Option<f64>,
    /// Without history: a start-up estimated on this machine, now (see run.rs).
    pub measured_startup: Option<f64>,
    /// Learned per-unit overhead of units forked from a warm server, if known.
    pub fork_startup: Option<f64>,
    /// Seconds from a single-file unit's start to its collection's end, per file: what each
    /// extra process of a split file costs.
    pub collect: HashMap<String, f64>,
    /// Ids history still holds that their files no longer have (see `History::predictions`).
    pub stale: HashSet<String>,
}

impl Predictions {
    /// The node ids history knows in each file (stale ones aside), with their predicted
    /// seconds, sorted.
    pub fn tests_by_file(&self) -> HashMap<&str, Vec<(String, f64)>> {
        let mut out: HashMap<&str, Vec<(String, f64)>> = HashMap::new();
        for (id, secs) in self
            .tests
            .iter()
            .filter(|(id, _)| !self.stale.contains(*id))
        {
            let file = id.split("::").next().unwrap_or(id);
            out.entry(file).or_default().push((id.clone(), *secs));
        }
        for ids in out.values_mut() {
            ids.sort_by(|a, b| a.0.cmp(&b.0));
        }
        out
    }

    pub fn per_test(&self) -> f64 {
        self.per_test.unwrap_or(DEFAULT_PER_TEST_SECS)
    }
    pub fn startup(&self) -> f64 {
        self.startup
            .or(self.measured_startup)
            .unwrap_or(DEFAULT_STARTUP_SECS)
    }

    /// Predicted seconds for a file (or the selected tests of it).
    pub fn file(&self, rel: &str, estimate: u64, selection: Option<&[String]>) -> f64 {
        if let Some(ids) = selection {
            let known: Vec<f64> = ids
                .iter()
                .filter_map(|id| self.tests.get(id).copied())
                .collect();
            if known.len() == ids.len() && !known.is_empty() {
                return known.iter().sum();
            }
            return estimate.max(1) as f64 * self.per_test();
        }
        match self.files.get(rel) {
            Some(&secs) => secs,
            None => estimate.max(1) as f64 * self.per_test(),
        }
    }
}

/// One file with its predicted duration, as input to packing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FileWork {
    /// Index into the discovery's file list.
    pub index: usize,
    pub predicted: f64,
    /// Runs before everything else (`--ff`: files with failures last time).
    pub first: bool,
    /// Node ids history knows in the file, with their seconds: empty when the file must not
    /// be split (no history, or the user selected node ids in it).
    pub tests: Vec<(String, f64)>,
    /// Learned seconds from a unit's start to the end of this file's collection.
    pub collect: Option<f64>,
}

/// One planned pytest process.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitPlan {
    pub id: usize,
    pub files: Vec<usize>,
    /// Predicted seconds, start-up included.
    pub predicted: f64,
    pub first: bool,
    /// Part of a split file (then `files` holds that one file).
    pub chunk: Option<Chunk>,
}

#[derive(Debug, Clone, Copy)]
pub struct PlanParams {
    pub workers: usize,
    pub startup: f64,
    pub mode: UnitMode,
    /// Whether files may be split into chunks (`--no-split`, `split = false`).
    pub split: bool,
}

/// A file, or a chunk of one, to pack.
#[derive(Debug, Clone)]
struct Work {
    index: usize,
    predicted: f64,
    first: bool,
    chunk: Option<Chunk>,
}

/// Splits the files that would outlast the balanced finish (see `split`).
fn expand(files: &[FileWork], params: PlanParams) -> Vec<Work> {
    let total: f64 = files.iter().map(|f| f.predicted.max(0.0)).sum();
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let chunks = if params.split && !f.tests.is_empty() {
            // Each chunk is a process that starts and collects the whole file again.
            let overhead = f
                .collect
                .unwrap_or(f.tests.len() as f64 * DEFAULT_COLLECT_PER_TEST_SECS + params.startup)
                .max(params.startup);
            split::split(SplitInput {
                predicted: f.predicted,
                tests: &f.tests,
                overhead,
                total,
                workers: params.workers,
            })
            .map(|chunks| (chunks, overhead))
        } else {
            None
        };
        match chunks {
            Some((chunks, overhead)) => out.extend(chunks.into_iter().map(|c| Work {
                index: f.index,
                // Packing adds one start-up per unit; the rest of the overhead is collection.
                predicted: c.predicted + (overhead - params.startup),
                first: f.first,
                chunk: Some(c.chunk),
            })),
            None => out.push(Work {
                index: f.index,
                predicted: f.predicted,
                first: f.first,
                chunk: None,
            }),
        }
    }
    out
}

/// Packs files into units, returned in dispatch order (first-flagged, then longest first).
pub fn plan(files: &[FileWork], params: PlanParams) -> Vec<UnitPlan> {
    let work = expand(files, params);
    let mut sorted: Vec<&Work> = work.iter().collect();
    // Longest first; ties broken by index so plans are deterministic.
    sorted.sort_by(|a, b| {
        b.predicted
            .total_cmp(&a.predicted)
            .then(a.index.cmp(&b.index))
    });
    let mut units = Vec::new();
    for group in [true, false] {
        let group_files: Vec<&Work> = sorted
            .iter()
            .copied()
            .filter(|f| f.first == group)
            .collect();
        pack(&group_files, params, group, &mut units);
    }
    for (i, u) in units.iter_mut().enumerate() {
        u.id = i;
    }
    units
}

fn pack(sorted: &[&Work], params: PlanParams, first: bool, units: &mut Vec<UnitPlan>) {
    let workers = params.workers.max(1) as f64;
    let mut remaining: f64 = sorted.iter().map(|f| f.predicted).sum();
    let share = remaining / workers;
    let mut i = 0;
    while i < sorted.len() {
        // Aim for about two units per slot of what is left, so the tail can be balanced;
        // but make a unit worth several start-ups, so start-up does not dominate; and never
        // more than one slot's share of the whole, so every slot gets work.
        let target = (remaining / (2.0 * workers))
            .max(STARTUPS_PER_UNIT * params.startup)
            .min(share);
        let mut unit = UnitPlan {
            id: 0,
            files: vec![sorted[i].index],
            predicted: sorted[i].predicted,
            first,
            chunk: sorted[i].chunk.clone(),
        };
        remaining -= sorted[i].predicted;
        i += 1;
        // A chunk is a unit of its own: its selection is per file, and it is big anyway.
        if params.mode == UnitMode::Pack && unit.chunk.is_none() {
            while i < sorted.len()
                && sorted[i].chunk.is_none()
                && unit.predicted + sorted[i].predicted <= target
            {
                unit.files.push(sorted[i].index);
                unit.predicted += sorted[i].predicted;
                remaining -= sorted[i].predicted;
                i += 1;
            }
        }
        unit.predicted += params.startup;
        units.push(unit);
    }
    // Packing walks files longest first, so later packs can hold many small files and end
    // up larger than earlier ones: order by size so the dispatcher's queue is longest first.
    let start = units
        .iter()
        .position(|u| u.first == first)
        .unwrap_or(units.len());
    units[start..].sort_by(|a, b| b.predicted.total_cmp(&a.predicted));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn works(durations: &[f64]) -> Vec<FileWork> {
        durations
            .iter()
            .enumerate()
            .map(|(i, &d)| FileWork {
                index: i,
                predicted: d,
                ..FileWork::default()
            })
            .collect()
    }

    #[test]
    fn small_files_are_packed_big_ones_alone() {
        let mut d = vec![10.0, 8.0];
        d.extend(std::iter::repeat_n(0.01, 100));
        let units = plan(
            &works(&d),
            PlanParams {
                workers: 2,
                startup: 0.3,
                mode: UnitMode::Pack,
                split: true,
            },
        );
        assert_eq!(units[0].files, vec![0]);
        assert_eq!(units[1].files, vec![1]);
        // 100 tiny files do not become 100 processes.
        assert!(units.len() < 10, "{units:?}");
    }

    #[test]
    fn file_mode_is_one_file_per_unit() {
        let units = plan(
            &works(&[0.1, 0.1, 0.1]),
            PlanParams {
                workers: 2,
                startup: 0.3,
                mode: UnitMode::File,
                split: true,
            },
        );
        assert_eq!(units.len(), 3);
    }

    #[test]
    fn first_flag_goes_first() {
        let mut w = works(&[5.0, 0.5]);
        w[1].first = true;
        let units = plan(
            &w,
            PlanParams {
                workers: 2,
                startup: 0.1,
                mode: UnitMode::File,
                split: true,
            },
        );
        assert_eq!(units[0].files, vec![1]);
    }

    fn giant_and_small(ids: usize) -> Vec<FileWork> {
        let mut w = works(&[73.0, 10.0, 8.0, 5.0]);
        w[0].tests = (0..ids)
            .map(|i| (format!("t/test_version.py::test_v[{i}]"), 73.0 / ids as f64))
            .collect();
        w[0].collect = Some(2.0);
        w
    }

    #[test]
    fn a_giant_file_becomes_chunks_unless_splitting_is_off() {
        for mode in [UnitMode::File, UnitMode::Pack] {
            let params = PlanParams {
                workers: 2,
                startup: 0.1,
                mode,
                split: true,
            };
            let units = plan(&giant_and_small(1000), params);
            let chunks: Vec<&UnitPlan> = units.iter().filter(|u| u.chunk.is_some()).collect();
            assert_eq!(chunks.len(), 2, "{mode:?}");
            for c in &chunks {
                assert_eq!(c.files, vec![0]);
                // Each chunk pays the file's collection again.
                assert!(c.predicted > 73.0 / 2.0 + 1.9, "{}", c.predicted);
            }
            // The two chunks start first, on both slots.
            assert!(units[0].chunk.is_some() && units[1].chunk.is_some());
            let off = plan(
                &giant_and_small(1000),
                PlanParams {
                    split: false,
                    ..params
                },
            );
            assert!(off.iter().all(|u| u.chunk.is_none()));
            assert_eq!(off[0].files, vec![0]);
            // Without ids from history nothing is split.
            let unknown = plan(&giant_and_small(0), params);
            assert!(unknown.iter().all(|u| u.chunk.is_none()));
        }
    }

    #[test]
    fn predictions_prefer_history() {
        let mut p = Predictions::default();
        assert_eq!(p.file("a.py", 10, None), 10.0 * DEFAULT_PER_TEST_SECS);
        p.per_test = Some(0.2);
        assert!((p.file("a.py", 10, None) - 2.0).abs() < 1e-9);
        p.files.insert("a.py".into(), 7.0);
        assert_eq!(p.file("a.py", 10, None), 7.0);
        p.tests.insert("a.py::t".into(), 0.5);
        assert_eq!(p.file("a.py", 10, Some(&["a.py::t".to_string()])), 0.5);
    }

    proptest! {
        #[test]
        fn every_file_exactly_once(
            durations in proptest::collection::vec(0.0f64..30.0, 0..200),
            workers in 1usize..16,
            startup in 0.0f64..2.0,
            file_mode in any::<bool>(),
        ) {
            let mode = if file_mode { UnitMode::File } else { UnitMode::Pack };
            let units = plan(&works(&durations), PlanParams { workers, startup, mode, split: true });
            let mut seen: Vec<usize> = units.iter().flat_map(|u| u.files.clone()).collect();
            seen.sort();
            prop_assert_eq!(seen, (0..durations.len()).collect::<Vec<_>>());
            // Dispatch order is longest first.
            for pair in units.windows(2) {
                prop_assert!(pair[0].predicted >= pair[1].predicted);
            }
            for u in &units {
                let sum: f64 = u.files.iter().map(|&i| durations[i]).sum();
                prop_assert!((u.predicted - sum - startup).abs() < 1e-6);
                if mode == UnitMode::File { prop_assert_eq!(u.files.len(), 1); }
            }
            // Packing never makes more units than files, nor (with packing) a multi-file
            // unit longer than the whole work split in two per slot plus start-up.
            prop_assert!(units.len() <= durations.len());
        }

        #[test]
        fn every_file_runs_whole_or_in_all_its_chunks(
            sizes in proptest::collection::vec((0.0f64..0.5, 0usize..60), 1..20),
            workers in 1usize..8,
            file_mode in any::<bool>(),
            split in any::<bool>(),
        ) {
            let mode = if file_mode { UnitMode::File } else { UnitMode::Pack };
            let files: Vec<FileWork> = sizes.iter().enumerate().map(|(i, &(d, n))| FileWork {
                index: i,
                predicted: d * n as f64,
                tests: (0..n).map(|t| (format!("f{i}.py::t[{t}]"), d)).collect(),
                ..FileWork::default()
            }).collect();
            let units = plan(&files, PlanParams { workers, startup: 0.05, mode, split });
            for f in &files {
                let mine: Vec<&UnitPlan> = units.iter().filter(|u| u.files.contains(&f.index)).collect();
                prop_assert!(!mine.is_empty());
                if mine.len() == 1 {
                    prop_assert!(mine[0].chunk.is_none());
                    continue;
                }
                prop_assert!(split);
                let k = mine.len();
                prop_assert!(k <= workers);
                let mut seen: Vec<usize> = mine.iter().map(|u| {
                    let c = u.chunk.as_ref().unwrap();
                    assert_eq!(c.of, k);
                    assert_eq!(u.files, vec![f.index]);
                    c.index
                }).collect();
                seen.sort();
                prop_assert_eq!(seen, (1..=k).collect::<Vec<_>>());
            }
        }

        #[test]
        fn no_unit_longer_than_needed(
            durations in proptest::collection::vec(0.001f64..1.0, 1..300),
            workers in 1usize..8,
        ) {
            let startup = 0.3;
            let units = plan(&works(&durations), PlanParams { workers, startup, mode: UnitMode::Pack, split: true });
            let total: f64 = durations.iter().sum();
            let bound = (total / (2.0 * workers as f64)).max(STARTUPS_PER_UNIT * startup).min(total / workers as f64).max(0.0) + startup;
            for u in units.iter().filter(|u| u.files.len() > 1) {
                prop_assert!(u.predicted <= bound + 1e-9, "{} > {}", u.predicted, bound);
            }
        }
    }
}
