//! CI sharding: one deterministic partition of the files over N machines, balanced by the same
//! predictions the scheduler uses (longest-processing-time-first), and the shard spec read from
//! the command line or the CI system's environment.
//!
//! Determinism matters more than anything here: every matrix job computes the partition on its
//! own, so equal inputs (durations and file list) must give equal shards on every machine. Files
//! are ordered by predicted time, ties by path, and each goes to the least-loaded shard, ties to
//! the lowest index; no hash maps, clocks or randomness take part.

use std::fmt;

/// Which shard of how many this run is (1-based, as users and CI systems count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSpec {
    pub index: usize,
    pub total: usize,
}

impl fmt::Display for ShardSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.total)
    }
}

/// A bad shard specification, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: `{value}` is not a valid shard: {why}")]
pub struct ShardSpecError {
    pub source_name: String,
    pub value: String,
    pub why: String,
}

impl ShardSpec {
    /// Parses `K/N` (1-based). `source_name` names the flag or variable in errors.
    pub fn parse(value: &str, source_name: &str) -> Result<ShardSpec, ShardSpecError> {
        let err = |why: &str| ShardSpecError {
            source_name: source_name.to_owned(),
            value: value.to_owned(),
            why: format!("{why} (expected K/N with 1 <= K <= N, for example 2/4)"),
        };
        let (k, n) = value.trim().split_once('/').ok_or_else(|| err("no `/`"))?;
        let index: usize = k
            .trim()
            .parse()
            .map_err(|_| err("K is not a whole number"))?;
        let total: usize = n
            .trim()
            .parse()
            .map_err(|_| err("N is not a whole number"))?;
        Self::checked(index, total)
            .ok_or_else(|| err("K must be between 1 and N, and N at least 1"))
    }

    /// The shard for this run: the `--shard` flag wins over the environment, so a job can
    /// override what its CI system sets (`--shard 1/1` runs everything).
    pub fn resolve(
        flag: Option<&str>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<ShardSpec>, ShardSpecError> {
        match flag {
            Some(value) => Self::parse(value, "--shard").map(Some),
            None => Self::from_env(var),
        }
    }

    fn checked(index: usize, total: usize) -> Option<ShardSpec> {
        (total >= 1 && (1..=total).contains(&index)).then_some(ShardSpec { index, total })
    }

    /// The shard the CI system assigned, if any: `RACEFREE_SHARD=K/N`; GitLab's
    /// `CI_NODE_INDEX`/`CI_NODE_TOTAL` (1-based); Buildkite's `BUILDKITE_PARALLEL_JOB` (0-based)
    /// and `BUILDKITE_PARALLEL_JOB_COUNT`. A half-set or malformed pair is an error, not ignored.
    pub fn from_env(
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<ShardSpec>, ShardSpecError> {
        if let Some(v) = var("RACEFREE_SHARD").filter(|v| !v.trim().is_empty()) {
            return Self::parse(&v, "RACEFREE_SHARD").map(Some);
        }
        let pair = |index_var: &str,
                    total_var: &str,
                    zero_based: bool|
         -> Result<Option<ShardSpec>, ShardSpecError> {
            let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
            match (set(index_var), set(total_var)) {
                (None, None) => Ok(None),
                (Some(i), Some(n)) => {
                    let name = format!("{index_var}/{total_var}");
                    let value = format!("{i}/{n}");
                    let bad = |why: &str| ShardSpecError {
                        source_name: name.clone(),
                        value: value.clone(),
                        why: why.to_owned(),
                    };
                    let i: usize = i
                        .trim()
                        .parse()
                        .map_err(|_| bad("the index is not a whole number"))?;
                    let n: usize = n
                        .trim()
                        .parse()
                        .map_err(|_| bad("the total is not a whole number"))?;
                    let index = if zero_based {
                        i.checked_add(1)
                    } else {
                        Some(i)
                    };
                    index
                        .and_then(|index| Self::checked(index, n))
                        .map(Some)
                        .ok_or_else(|| {
                            bad(if zero_based {
                                "the index is out of range (it counts from 0 to the total - 1)"
                            } else {
                                "the index is out of range (it counts from 1 to the total)"
                            })
                        })
                }
                (i, _) => Err(ShardSpecError {
                    source_name: format!("{index_var}/{total_var}"),
                    value: i.unwrap_or_default(),
                    why: "only one of the two variables is set (set both, or neither)".to_owned(),
                }),
            }
        };
        if let Some(s) = pair("CI_NODE_INDEX", "CI_NODE_TOTAL", false)? {
            return Ok(Some(s));
        }
        pair(
            "BUILDKITE_PARALLEL_JOB",
            "BUILDKITE_PARALLEL_JOB_COUNT",
            true,
        )
    }
}

/// One shard of a partition.
#[derive(Debug, Clone, PartialEq)]
pub struct Shard {
    /// Files in the order they were assigned (longest first).
    pub files: Vec<String>,
    /// Sum of the files' predicted seconds.
    pub predicted: f64,
}

/// Partitions `files` (path, predicted seconds) into `total` shards by longest-processing-time
/// first. Every file lands in exactly one shard; the largest shard is at most 4/3 of the optimal
/// largest shard (Graham's bound for LPT).
pub fn partition(files: &[(String, f64)], total: usize) -> Vec<Shard> {
    let total = total.max(1);
    let mut order: Vec<&(String, f64)> = files.iter().collect();
    order.sort_by(|a, b| {
        sanitize(b.1)
            .total_cmp(&sanitize(a.1))
            .then_with(|| a.0.cmp(&b.0))
    });
    let mut shards = vec![
        Shard {
            files: Vec::new(),
            predicted: 0.0,
        };
        total
    ];
    for (path, secs) in order {
        // Least loaded; ties to the lowest index (min_by keeps the first minimum).
        let target = (0..total)
            .min_by(|&a, &b| shards[a].predicted.total_cmp(&shards[b].predicted))
            .unwrap_or(0);
        shards[target].files.push(path.clone());
        shards[target].predicted += sanitize(*secs);
    }
    shards
}

/// This machine's share of a partition, and what to tell the user about it.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardPick {
    pub spec: ShardSpec,
    pub files: Vec<String>,
    /// Predicted seconds of this shard's files.
    pub predicted: f64,
    /// Predicted seconds of all shards together.
    pub total_predicted: f64,
}

/// Partitions `files` over `spec.total` shards and keeps shard `spec.index`.
pub fn pick(files: &[(String, f64)], spec: ShardSpec) -> ShardPick {
    // A fold from +0.0: f64's `sum()` of nothing is -0.0, printed as "-0.0 s".
    let total_predicted = files
        .iter()
        .map(|(_, s)| sanitize(*s))
        .fold(0.0, |a, s| a + s);
    let shard = partition(files, spec.total)
        .into_iter()
        .nth(spec.index - 1)
        .unwrap_or(Shard {
            files: Vec::new(),
            predicted: 0.0,
        });
    ShardPick {
        spec,
        files: shard.files,
        predicted: shard.predicted,
        total_predicted,
    }
}

impl fmt::Display for ShardPick {
    /// `shard 2/4: 37 files, ~41 s predicted of 160 s`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let files = self.files.len();
        write!(
            f,
            "shard {}: {} file{}, ~{} predicted of {}",
            self.spec,
            files,
            if files == 1 { "" } else { "s" },
            secs(self.predicted),
            secs(self.total_predicted)
        )
    }
}

/// Seconds for humans: whole seconds from 10 s up, one decimal below.
fn secs(s: f64) -> String {
    if s >= 10.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.1} s")
    }
}

impl From<ShardSpecError> for crate::Error {
    fn from(e: ShardSpecError) -> Self {
        crate::Error::Usage(e.to_string())
    }
}

/// Predictions are clamped by the planner already; still, never let a NaN or a negative number
/// make the order machine-dependent.
fn sanitize(secs: f64) -> f64 {
    if secs.is_finite() && secs > 0.0 {
        secs
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| {
            owned
                .iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn parses_specs_and_rejects_bad_ones() {
        assert_eq!(
            ShardSpec::parse("2/4", "--shard").unwrap(),
            ShardSpec { index: 2, total: 4 }
        );
        for bad in ["0/4", "5/4", "2", "a/4", "2/b", "1/0", ""] {
            let e = ShardSpec::parse(bad, "--shard").unwrap_err();
            assert!(e.to_string().starts_with("--shard:"), "{e}");
        }
    }

    #[test]
    fn flag_wins_over_environment() {
        let e = env(&[("CI_NODE_INDEX", "1"), ("CI_NODE_TOTAL", "2")]);
        assert_eq!(
            ShardSpec::resolve(Some("1/1"), &e).unwrap(),
            Some(ShardSpec { index: 1, total: 1 })
        );
        assert_eq!(
            ShardSpec::resolve(None, &e).unwrap(),
            Some(ShardSpec { index: 1, total: 2 })
        );
        let bad = ShardSpec::resolve(None, env(&[("RACEFREE_SHARD", "a/b")])).unwrap_err();
        assert!(bad.to_string().contains("RACEFREE_SHARD: `a/b`"), "{bad}");
    }

    #[test]
    fn pick_prints_the_shard_line() {
        let files: Vec<(String, f64)> = [("a", 30.0), ("b", 20.0), ("c", 15.0), ("d", 5.0)]
            .iter()
            .map(|(p, s)| (p.to_string(), *s))
            .collect();
        let p = pick(&files, ShardSpec { index: 2, total: 2 });
        assert_eq!(p.files, vec!["b", "c"]);
        assert_eq!(p.to_string(), "shard 2/2: 2 files, ~35 s predicted of 70 s");
        let empty = pick(&files[..1], ShardSpec { index: 2, total: 2 });
        assert_eq!(
            empty.to_string(),
            "shard 2/2: 0 files, ~0.0 s predicted of 30 s"
        );
        let nothing = pick(&[], ShardSpec { index: 1, total: 2 });
        assert_eq!(
            nothing.to_string(),
            "shard 1/2: 0 files, ~0.0 s predicted of 0.0 s"
        );
    }

    #[test]
    fn reads_ci_environments() {
        assert_eq!(ShardSpec::from_env(env(&[])).unwrap(), None);
        assert_eq!(
            ShardSpec::from_env(env(&[
                ("RACEFREE_SHARD", "3/5"),
                ("CI_NODE_INDEX", "1"),
                ("CI_NODE_TOTAL", "2")
            ]))
            .unwrap(),
            Some(ShardSpec { index: 3, total: 5 })
        );
        assert_eq!(
            ShardSpec::from_env(env(&[("CI_NODE_INDEX", "2"), ("CI_NODE_TOTAL", "3")])).unwrap(),
            Some(ShardSpec { index: 2, total: 3 })
        );
        assert_eq!(
            ShardSpec::from_env(env(&[
                ("BUILDKITE_PARALLEL_JOB", "0"),
                ("BUILDKITE_PARALLEL_JOB_COUNT", "4")
            ]))
            .unwrap(),
            Some(ShardSpec { index: 1, total: 4 })
        );
        assert!(ShardSpec::from_env(env(&[("CI_NODE_INDEX", "2")])).is_err());
        assert!(
            ShardSpec::from_env(env(&[
                ("BUILDKITE_PARALLEL_JOB", "4"),
                ("BUILDKITE_PARALLEL_JOB_COUNT", "4")
            ]))
            .is_err()
        );
        // Empty values count as unset (some CI systems export every variable).
        assert_eq!(
            ShardSpec::from_env(env(&[("CI_NODE_INDEX", ""), ("CI_NODE_TOTAL", "")])).unwrap(),
            None
        );
    }

    /// The optimal makespan by exhaustive search (small instances only).
    fn optimum(weights: &[f64], m: usize) -> f64 {
        fn go(i: usize, w: &[f64], loads: &mut Vec<f64>, best: &mut f64) {
            let current = loads.iter().cloned().fold(0.0, f64::max);
            if current >= *best {
                return;
            }
            if i == w.len() {
                *best = current;
                return;
            }
            let mut seen_empty = false;
            for s in 0..loads.len() {
                if loads[s] == 0.0 {
                    if seen_empty {
                        continue; // empty shards are interchangeable
                    }
                    seen_empty = true;
                }
                loads[s] += w[i];
                go(i + 1, w, loads, best);
                loads[s] -= w[i];
            }
        }
        let mut best = f64::INFINITY;
        go(0, weights, &mut vec![0.0; m], &mut best);
        best
    }

    proptest! {
        #[test]
        fn covers_every_file_once_and_is_deterministic(
            (weights, order) in proptest::collection::vec(
                // Coarse weights force many ties, where only the path tie-break keeps order.
                prop_oneof![0.0f64..100.0, (0u8..4).prop_map(f64::from)],
                0..60,
            )
            .prop_flat_map(|w| {
                let n = w.len();
                (Just(w), Just((0..n).collect::<Vec<usize>>()).prop_shuffle())
            }),
            shards in 1usize..9,
        ) {
            let files: Vec<(String, f64)> =
                weights.iter().enumerate().map(|(i, w)| (format!("t/test_{i}.py"), *w)).collect();
            let parts = partition(&files, shards);
            prop_assert_eq!(parts.len(), shards);
            let mut all: Vec<&String> = parts.iter().flat_map(|s| &s.files).collect();
            all.sort();
            let mut expected: Vec<&String> = files.iter().map(|(p, _)| p).collect();
            expected.sort();
            prop_assert_eq!(all, expected);
            for s in &parts {
                let sum: f64 = s.files.iter().map(|p| files.iter().find(|f| &f.0 == p).map_or(0.0, |f| f.1)).sum();
                prop_assert!((s.predicted - sum).abs() < 1e-6);
            }
            // The same durations in any other input order (another machine's directory walk)
            // give the same shards.
            let permuted: Vec<(String, f64)> = order.iter().map(|&i| files[i].clone()).collect();
            prop_assert_eq!(partition(&permuted, shards), parts);
        }

        #[test]
        fn largest_shard_is_within_four_thirds_of_optimal(
            weights in proptest::collection::vec(0.1f64..50.0, 1..11),
            shards in 2usize..5,
        ) {
            let files: Vec<(String, f64)> =
                weights.iter().enumerate().map(|(i, w)| (format!("f{i:02}"), *w)).collect();
            let makespan = partition(&files, shards)
                .iter()
                .map(|s| s.predicted)
                .fold(0.0, f64::max);
            let opt = optimum(&weights, shards);
            // Graham's bound for LPT is (4/3 - 1/(3m)) of the optimum. It is a bound on the
            // optimum, not on the simple lower bound max(mean, largest): 4 equal files on 3
            // shards already need 2/(4/3) = 1.5 times that lower bound.
            prop_assert!(makespan <= opt * 4.0 / 3.0 + 1e-9, "LPT {makespan} vs optimum {opt}");
            // And never worse than the classic lower bound plus the largest file.
            let lower = (weights.iter().sum::<f64>() / shards as f64)
                .max(weights.iter().cloned().fold(0.0, f64::max));
            prop_assert!(makespan <= lower + weights.iter().cloned().fold(0.0, f64::max) + 1e-9);
        }
    }
}
