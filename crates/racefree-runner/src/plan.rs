//! The planner: predicts each file's duration and packs files into units.
//!
//! Predictions: a file's own recency-weighted history if it has one; otherwise its parsed
//! test count times the per-test time learned from history (or a conservative default).
//! Packing: files longer than the current target run alone; smaller ones are packed so
//! that each unit pays one interpreter start-up. The target shrinks as the remaining work
//! shrinks, so units come out large first and small at the end, and the dispatcher (which
//! always hands a free slot the longest remaining unit) can even out the finish.

use std::collections::HashMap;

use crate::config::UnitMode;

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
}

impl Predictions {
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
#[derive(Debug, Clone, PartialEq)]
pub struct FileWork {
    /// Index into the discovery's file list.
    pub index: usize,
    pub predicted: f64,
    /// Runs before everything else (`--ff`: files with failures last time).
    pub first: bool,
}

/// One planned pytest process.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitPlan {
    pub id: usize,
    pub files: Vec<usize>,
    /// Predicted seconds, start-up included.
    pub predicted: f64,
    pub first: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct PlanParams {
    pub workers: usize,
    pub startup: f64,
    pub mode: UnitMode,
}

/// Packs files into units, returned in dispatch order (first-flagged, then longest first).
pub fn plan(files: &[FileWork], params: PlanParams) -> Vec<UnitPlan> {
    let mut sorted: Vec<&FileWork> = files.iter().collect();
    // Longest first; ties broken by index so plans are deterministic.
    sorted.sort_by(|a, b| {
        b.predicted
            .total_cmp(&a.predicted)
            .then(a.index.cmp(&b.index))
    });
    let mut units = Vec::new();
    for group in [true, false] {
        let group_files: Vec<&FileWork> = sorted
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

fn pack(sorted: &[&FileWork], params: PlanParams, first: bool, units: &mut Vec<UnitPlan>) {
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
        };
        remaining -= sorted[i].predicted;
        i += 1;
        if params.mode == UnitMode::Pack {
            while i < sorted.len() && unit.predicted + sorted[i].predicted <= target {
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
                first: false,
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
            },
        );
        assert_eq!(units[0].files, vec![1]);
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
            let units = plan(&works(&durations), PlanParams { workers, startup, mode });
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
        fn no_unit_longer_than_needed(
            durations in proptest::collection::vec(0.001f64..1.0, 1..300),
            workers in 1usize..8,
        ) {
            let startup = 0.3;
            let units = plan(&works(&durations), PlanParams { workers, startup, mode: UnitMode::Pack });
            let total: f64 = durations.iter().sum();
            let bound = (total / (2.0 * workers as f64)).max(STARTUPS_PER_UNIT * startup).min(total / workers as f64).max(0.0) + startup;
            for u in units.iter().filter(|u| u.files.len() > 1) {
                prop_assert!(u.predicted <= bound + 1e-9, "{} > {}", u.predicted, bound);
            }
        }
    }
}
