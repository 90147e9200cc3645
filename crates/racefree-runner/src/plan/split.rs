//! Splitting one giant file over several units, so that it does not bound the run.
//!
//! A file is never divided by default: its tests may share module-scoped fixtures or depend on
//! each other's order. But one file holding most of a suite's time leaves every other slot
//! idle at the end. When history knows the file's test ids and their durations, and the file
//! alone would finish well after the balanced finish (total / workers), it is split into k
//! chunks, each its own pytest process: chunks 1..k-1 select explicit node ids, the last runs
//! every test of the file *not* listed in the others (an exclusion list), so a test that is
//! new since history still runs, exactly once. Every chunk collects the whole file again, so
//! each pays the file's collection time; the number of chunks is chosen with that cost in.

/// A file alone must predict at least this many times the balanced finish to be split.
pub const SPLIT_RATIO: f64 = 1.25;
/// Splitting must shorten the predicted run by at least this fraction to be worth the extra
/// collections (and the loss of sharing module-scoped fixtures).
pub const MIN_GAIN: f64 = 0.2;
/// Collection time per test assumed when history has not measured the file's collection:
/// pytest builds one item per parametrization (~0.1 ms each on a typical machine).
pub const DEFAULT_COLLECT_PER_TEST_SECS: f64 = 0.0001;

/// Which tests of its file a chunk runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// Exactly these node ids (and, as pytest's node-id arguments would, ids extending them
    /// with `::` or `[`).
    Select(Vec<String>),
    /// Every test of the file except these: the ids the other chunks select.
    Exclude(Vec<String>),
}

/// One of the k units a file is split into.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// 1-based; the last chunk (`index == of`) is the exclusion chunk.
    pub index: usize,
    pub of: usize,
    pub part: Part,
    /// How many of the file's known tests it runs (the exclusion list says nothing of that).
    pub known_tests: usize,
}

/// What the decision needs to know about one file and the run.
#[derive(Debug, Clone, Copy)]
pub struct SplitInput<'a> {
    /// The file's predicted test time (history's per-file figure).
    pub predicted: f64,
    /// Node ids history knows in the file, with their predicted seconds.
    pub tests: &'a [(String, f64)],
    /// What each extra process costs: start-up plus collecting the whole file.
    pub overhead: f64,
    /// Predicted test time of the whole run (this file included).
    pub total: f64,
    pub workers: usize,
}

/// A chunk with its predicted test time (overhead excluded).
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedChunk {
    pub chunk: Chunk,
    pub predicted: f64,
}

/// The file's chunks, or None if it should run whole.
pub fn split(input: SplitInput<'_>) -> Option<Vec<PlannedChunk>> {
    let ids = prefix_free(input.tests);
    let max_k = input.workers.min(ids.len());
    if max_k < 2 || input.predicted.is_nan() || input.predicted <= 0.0 || !input.total.is_finite() {
        return None;
    }
    let workers = input.workers as f64;
    let overhead = input.overhead.max(0.0);
    let balanced = input.total / workers;
    if input.predicted + overhead <= SPLIT_RATIO * balanced {
        return None;
    }
    // The run ends no sooner than its longest unit, nor than its total work (extra
    // collections included) spread over the slots; pick the k that minimizes that bound.
    let bound = |k: usize| {
        let k_f = k as f64;
        (input.predicted / k_f + overhead).max((input.total + (k_f - 1.0) * overhead) / workers)
    };
    let whole = bound(1);
    let k = (2..=max_k).min_by(|&a, &b| bound(a).total_cmp(&bound(b)).then(a.cmp(&b)))?;
    if bound(k) > (1.0 - MIN_GAIN) * whole {
        return None;
    }
    Some(chunks(&ids, k, input.predicted))
}

/// Longest first into the least-loaded of k bins; the lightest bin becomes the exclusion
/// chunk, since tests new since history land there too.
fn chunks(ids: &[(&str, f64)], k: usize, predicted: f64) -> Vec<PlannedChunk> {
    let mut order: Vec<&(&str, f64)> = ids.iter().collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    let mut bins: Vec<(f64, Vec<String>)> = vec![(0.0, Vec::new()); k];
    for (id, secs) in order {
        if let Some(lightest) = bins.iter_mut().min_by(|a, b| a.0.total_cmp(&b.0)) {
            lightest.0 += secs.max(0.0);
            lightest.1.push(id.to_string());
        }
    }
    // Heaviest first, so the lightest is last. pytest runs a chunk's tests in file order
    // whatever the list's order; sorted ids keep plans deterministic.
    bins.sort_by(|a, b| b.0.total_cmp(&a.0));
    for bin in &mut bins {
        bin.1.sort();
    }
    let known: f64 = bins.iter().map(|b| b.0).sum();
    let excluded: Vec<String> = bins[..k - 1]
        .iter()
        .flat_map(|b| b.1.iter().cloned())
        .collect();
    let mut out: Vec<PlannedChunk> = Vec::with_capacity(k);
    for (i, (secs, ids)) in bins.into_iter().enumerate() {
        let last = i + 1 == k;
        out.push(PlannedChunk {
            chunk: Chunk {
                index: i + 1,
                of: k,
                known_tests: ids.len(),
                part: if last {
                    Part::Exclude(excluded.clone())
                } else {
                    Part::Select(ids)
                },
            },
            // What history's file time holds beyond its known tests is the last chunk's.
            predicted: if last {
                secs + (predicted - known).max(0.0)
            } else {
                secs
            },
        });
    }
    out
}

/// The ids that no other known id is a prefix of, in pytest's node-id sense (the rest goes on
/// with `::` or `[`). A selection matches such extensions too, so without this a test could
/// match two chunks' lists (history may hold `test_a` from before it was parametrized and
/// `test_a[1]` from after) and run twice. The shorter id stands for both.
fn prefix_free(tests: &[(String, f64)]) -> Vec<(&str, f64)> {
    let all: std::collections::HashSet<&str> = tests.iter().map(|(id, _)| id.as_str()).collect();
    let mut kept: Vec<(&str, f64)> = Vec::with_capacity(tests.len());
    let mut seen = std::collections::HashSet::new();
    for (id, secs) in tests {
        let extends_another = id
            .match_indices("::")
            .map(|(i, _)| i)
            .chain(id.match_indices('[').map(|(i, _)| i))
            .any(|i| i > 0 && all.contains(&id[..i]));
        if !extends_another && seen.insert(id.as_str()) {
            kept.push((id.as_str(), *secs));
        }
    }
    kept
}

/// Whether pytest's node-id selection `wanted` takes the item `nodeid` (the plugin's rule,
/// python/racefree_pytest `_matches`), to check chunks against.
#[cfg(test)]
fn matches(nodeid: &str, wanted: &str) -> bool {
    nodeid
        .strip_prefix(wanted)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::") || rest.starts_with('['))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tests(durations: &[f64]) -> Vec<(String, f64)> {
        durations
            .iter()
            .enumerate()
            .map(|(i, &d)| (format!("t.py::test_v[{i}]"), d))
            .collect()
    }

    fn input(t: &[(String, f64)], total: f64, workers: usize) -> SplitInput<'_> {
        SplitInput {
            predicted: t.iter().map(|x| x.1).sum(),
            tests: t,
            overhead: 0.5,
            total,
            workers,
        }
    }

    #[test]
    fn a_giant_file_is_split_in_two_on_two_slots() {
        // packaging's shape: one file 73 s of a 96 s suite.
        let t = tests(&vec![73.0 / 1000.0; 1000]);
        let chunks = split(input(&t, 96.0, 2)).unwrap();
        assert_eq!(chunks.len(), 2);
        assert!(matches!(chunks[0].chunk.part, Part::Select(_)));
        let Part::Exclude(ex) = &chunks[1].chunk.part else {
            panic!("last chunk excludes")
        };
        let Part::Select(sel) = &chunks[0].chunk.part else {
            unreachable!()
        };
        assert_eq!(ex, sel);
        assert_eq!((chunks[1].chunk.index, chunks[1].chunk.of), (2, 2));
    }

    #[test]
    fn no_split_without_ids_small_files_one_slot_or_costly_collection() {
        let none: Vec<(String, f64)> = Vec::new();
        let mut i = input(&none, 96.0, 2);
        i.predicted = 73.0;
        assert_eq!(split(i), None, "history lacks ids");
        let t = tests(&[1.0; 10]);
        assert_eq!(split(input(&t, 96.0, 2)), None, "a small file");
        assert_eq!(split(input(&t, 10.0, 1)), None, "one slot");
        let t = tests(&[5.0; 10]);
        let mut i = input(&t, 60.0, 2);
        i.overhead = 100.0;
        assert_eq!(split(i), None, "collection costs more than splitting saves");
    }

    #[test]
    fn stale_prefixes_stand_for_their_extensions() {
        let t: Vec<(String, f64)> = vec![
            ("t.py::test_a".into(), 10.0),
            ("t.py::test_a[1]".into(), 10.0),
            ("t.py::test_b".into(), 10.0),
            ("t.py::test_c".into(), 10.0),
        ];
        let ids: Vec<&str> = prefix_free(&t).iter().map(|x| x.0).collect();
        assert_eq!(ids, ["t.py::test_a", "t.py::test_b", "t.py::test_c"]);
        assert!(matches("t.py::test_a[1]", "t.py::test_a"));
        assert!(matches("t.py::C::test_a", "t.py::C"));
        assert!(!matches("t.py::test_ab", "t.py::test_a"));
    }

    fn all_ids(chunks: &[PlannedChunk]) -> (Vec<String>, Vec<String>) {
        let mut selected = Vec::new();
        let mut excluded = Vec::new();
        for c in chunks {
            match &c.chunk.part {
                Part::Select(ids) => selected.extend(ids.iter().cloned()),
                Part::Exclude(ids) => excluded.extend(ids.iter().cloned()),
            }
        }
        (selected, excluded)
    }

    proptest! {
        #[test]
        fn chunks_partition_the_file(
            durations in proptest::collection::vec(0.0f64..5.0, 0..300),
            others in 0.0f64..200.0,
            workers in 1usize..12,
            overhead in 0.0f64..3.0,
        ) {
            let t = tests(&durations);
            let predicted: f64 = durations.iter().sum();
            let i = SplitInput { predicted, tests: &t, overhead, total: predicted + others, workers };
            let Some(chunks) = split(i) else {
                // Never split what is no longer than its share of the run.
                return Ok(());
            };
            prop_assert!(predicted + overhead > SPLIT_RATIO * (predicted + others) / workers as f64);
            let k = chunks.len();
            prop_assert!(k >= 2 && k <= workers && k <= durations.len());
            // Only the last chunk excludes, and it excludes exactly the others' ids.
            for (i, c) in chunks.iter().enumerate() {
                prop_assert_eq!(c.chunk.index, i + 1);
                prop_assert_eq!(c.chunk.of, k);
                prop_assert_eq!(matches!(c.chunk.part, Part::Exclude(_)), i + 1 == k);
            }
            let (mut selected, mut excluded) = all_ids(&chunks);
            selected.sort();
            excluded.sort();
            prop_assert_eq!(&selected, &excluded);
            // Every known id lands in exactly one chunk: selected once, or in none of the
            // lists (then the exclusion chunk runs it).
            let mut dedup = selected.clone();
            dedup.dedup();
            prop_assert_eq!(dedup.len(), selected.len());
            let counted: usize = chunks.iter().map(|c| c.chunk.known_tests).sum();
            prop_assert_eq!(counted, t.len());
            for (id, _) in &t {
                let n = chunks.iter().filter(|c| match &c.chunk.part {
                    Part::Select(ids) => ids.iter().any(|w| matches(id, w)),
                    Part::Exclude(ids) => !ids.iter().any(|w| matches(id, w)),
                }).count();
                prop_assert_eq!(n, 1, "{} runs in {} chunks", id, n);
            }
            // Balanced: longest first into the lightest bin keeps every two chunks within
            // one test of each other.
            let longest = durations.iter().cloned().fold(0.0, f64::max);
            let loads: Vec<f64> = chunks.iter().map(|c| c.predicted).collect();
            let max = loads.iter().cloned().fold(f64::MIN, f64::max);
            let min = loads.iter().cloned().fold(f64::MAX, f64::min);
            prop_assert!(max - min <= longest + 1e-9, "{:?} longest {}", loads, longest);
            let sum: f64 = loads.iter().sum();
            prop_assert!((sum - predicted).abs() < 1e-6);
        }
    }
}
