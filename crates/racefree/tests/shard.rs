#![allow(clippy::unwrap_used, clippy::expect_used)]
//! CI sharding end to end (issue 6), with real pytest in the real ./.venv on a suite of our
//! own (tests/fixtures/shard: 12 files that sleep for different times).
//!
//! Every "machine" is a fresh copy of the suite, so each has its own history, as CI runners do.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use assert_cmd::cargo::CommandCargoExt;

mod common;
use common::{copy_dir, fixture_source, python};

const SHARDS: usize = 4;

/// A fresh copy of the fixture suite: one CI machine's checkout.
fn machine(parent: &Path, name: &str) -> PathBuf {
    let to = parent.join(name);
    copy_dir(&fixture_source("shard"), &to);
    to
}

/// `racefree <args>` in `dir`, with no CI shard variables leaking in from the environment.
fn racefree(dir: &Path, args: &[&str]) -> (i32, String, String) {
    racefree_env(dir, args, &[])
}

/// `racefree <args>` in `dir` with exactly these CI shard variables set.
fn racefree_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::cargo_bin("racefree").unwrap();
    cmd.current_dir(dir).args(args).env_remove("VIRTUAL_ENV");
    for var in [
        "RACEFREE_SHARD",
        "CI_NODE_INDEX",
        "CI_NODE_TOTAL",
        "BUILDKITE_PARALLEL_JOB",
        "BUILDKITE_PARALLEL_JOB_COUNT",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `racefree run -n 2 --events ev.ndjson <extra>`; returns (exit code, stdout, finished tests).
fn run(dir: &Path, extra: &[&str]) -> (i32, String, Vec<Finished>) {
    run_env(dir, extra, &[])
}

fn run_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> (i32, String, Vec<Finished>) {
    let py = python();
    let mut args = vec![
        "run",
        "--python",
        py.to_str().unwrap(),
        "-n",
        "2",
        "--plain",
        "--events",
        "ev.ndjson",
    ];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = racefree_env(dir, &args, env);
    assert!(
        code == 0 || code == 1,
        "racefree {args:?}: exit {code}\n{stdout}{stderr}"
    );
    (code, stdout, finished(&dir.join("ev.ndjson")))
}

#[derive(Debug, Clone, PartialEq, PartialOrd)]
struct Finished {
    nodeid: String,
    file: String,
    outcome: String,
    duration: f64,
}

fn finished(events: &Path) -> Vec<Finished> {
    std::fs::read_to_string(events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "test_finished")
        .map(|e| Finished {
            nodeid: e["nodeid"].as_str().unwrap().into(),
            file: e["file"].as_str().unwrap().into(),
            outcome: e["outcome"].as_str().unwrap().into(),
            duration: e["duration"].as_f64().unwrap(),
        })
        .collect()
}

/// (node id, outcome), sorted, duplicates kept (a test run twice must show).
fn ids(tests: &[Finished]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = tests
        .iter()
        .map(|t| (t.nodeid.clone(), t.outcome.clone()))
        .collect();
    v.sort();
    v
}

fn balance(times: &[f64]) -> f64 {
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    times.iter().cloned().fold(0.0, f64::max) / mean
}

#[test]
fn shards_cover_one_full_run_and_balance_after_merging_their_durations() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();

    // The reference: one full run on one machine.
    let full_dir = machine(t, "full");
    let (full_code, _, full) = run(&full_dir, &[]);
    assert_eq!(full_code, 1, "the suite has one failing test");
    let full_ids = ids(&full);
    assert_eq!(full_ids.len(), 37, "{full_ids:?}");

    // Round 1: four machines without any durations, one after another.
    let mut round1 = Vec::new();
    let mut exports = Vec::new();
    for k in 1..=SHARDS {
        let dir = machine(t, &format!("r1-{k}"));
        let spec = format!("{k}/{SHARDS}");
        let (_, stdout, tests) = run(&dir, &["--shard", &spec]);
        assert!(
            stdout.contains(&format!("shard {spec}: ")) && stdout.contains(" predicted of "),
            "{stdout}"
        );
        round1.extend(tests);
        let export = t.join(format!("shard-{k}.json"));
        let (code, _, stderr) = racefree(
            &dir,
            &["durations", "export", "-o", export.to_str().unwrap()],
        );
        assert_eq!(code, 0, "{stderr}");
        exports.push(export);
    }
    assert_eq!(
        ids(&round1),
        full_ids,
        "the shards together are the full run"
    );

    // One export also carries a test whose file was deleted since, and one renamed inside
    // a file that still exists (older than that file's last whole run): merging drops both.
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&exports[0]).unwrap()).unwrap();
    assert_eq!(doc["racefree_durations"], 1);
    doc["tests"]["tests/test_deleted.py::test_gone"] =
        serde_json::json!({"duration": 9.0, "measured_at": 1});
    doc["tests"]["tests/test_b.py::test_renamed_away"] =
        serde_json::json!({"duration": 9.0, "measured_at": 1});
    std::fs::write(&exports[0], doc.to_string()).unwrap();

    // The merge job: import every shard's export, export the merged durations.
    let merge_dir = machine(t, "merge");
    let mut import: Vec<&str> = vec!["durations", "import"];
    import.extend(exports.iter().map(|p| p.to_str().unwrap()));
    let (code, _, stderr) = racefree(&merge_dir, &import);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("2 dropped"), "{stderr}");
    let merged = t.join("merged.json");
    let (code, _, stderr) = racefree(
        &merge_dir,
        &["durations", "export", "-o", merged.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{stderr}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&merged).unwrap()).unwrap();
    let merged_ids: BTreeSet<&str> = doc["tests"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let full_set: BTreeSet<&str> = full.iter().map(|t| t.nodeid.as_str()).collect();
    assert_eq!(
        merged_ids, full_set,
        "every test measured once, the deleted one gone"
    );

    // The plan every round-2 machine computes from the merged file.
    let (code, plan, stderr) = racefree(
        &merge_dir,
        &[
            "plan",
            "--shards",
            "4",
            "--durations-file",
            merged.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
    let predicted: Vec<f64> = plan["partition"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["predicted_secs"].as_f64().unwrap())
        .collect();

    // Round 2: four fresh machines planning from the merged file.
    let mut round2 = Vec::new();
    let mut measured = Vec::new();
    let mut wall = Vec::new();
    for k in 1..=SHARDS {
        let dir = machine(t, &format!("r2-{k}"));
        let spec = format!("{k}/{SHARDS}");
        let t0 = Instant::now();
        let (_, _, tests) = run(
            &dir,
            &[
                "--shard",
                &spec,
                "--durations-file",
                merged.to_str().unwrap(),
            ],
        );
        wall.push(t0.elapsed().as_secs_f64());
        // The shard ran exactly the files `racefree plan` gave it.
        let files: BTreeSet<&str> = tests.iter().map(|t| t.file.as_str()).collect();
        let planned: BTreeSet<&str> = plan["partition"][k - 1]["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        assert_eq!(files, planned, "shard {spec}");
        measured.push(tests.iter().map(|t| t.duration).sum::<f64>());
        round2.extend(tests);
    }
    assert_eq!(ids(&round2), full_ids, "round 2 covers the full run too");
    eprintln!(
        "round 2: predicted {predicted:?} (max/mean {:.3}), measured test time {measured:?} (max/mean {:.3}), wall {wall:?}; whole test {:.1}s",
        balance(&predicted),
        balance(&measured),
        started.elapsed().as_secs_f64()
    );
    assert!(balance(&predicted) <= 1.25, "predicted {predicted:?}");
    assert!(balance(&measured) <= 1.25, "measured {measured:?}");
}

#[test]
fn bad_shard_specs_and_durations_files_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = machine(tmp.path(), "m");
    for (args, names) in [
        (vec!["run", "--shard", "0/4"], "--shard: `0/4`"),
        (vec!["run", "--shard", "5/4"], "--shard: `5/4`"),
        (vec!["run", "--shard", "a/b"], "--shard: `a/b`"),
        (vec!["plan", "--shards", "0"], "--shards: 0"),
    ] {
        let (code, _, stderr) = racefree(&dir, &args);
        assert_eq!(code, 4, "{args:?}: {stderr}");
        assert!(stderr.contains(names), "{args:?}: {stderr}");
    }
    // The CI environment's variables are named when they are wrong.
    for (env, names) in [
        (
            [("CI_NODE_INDEX", "5"), ("CI_NODE_TOTAL", "4")],
            "CI_NODE_INDEX/CI_NODE_TOTAL: `5/4`",
        ),
        (
            [
                ("BUILDKITE_PARALLEL_JOB", "4"),
                ("BUILDKITE_PARALLEL_JOB_COUNT", "4"),
            ],
            "BUILDKITE_PARALLEL_JOB/BUILDKITE_PARALLEL_JOB_COUNT: `4/4`",
        ),
    ] {
        let (code, _, stderr) = racefree_env(&dir, &["run"], &env);
        assert_eq!(code, 4, "{env:?}: {stderr}");
        assert!(stderr.contains(names), "{env:?}: {stderr}");
    }
    let (code, _, stderr) = racefree_env(&dir, &["run"], &[("RACEFREE_SHARD", "3")]);
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("RACEFREE_SHARD: `3`"), "{stderr}");

    // A corrupt durations file is an error naming it, unless explicitly optional.
    std::fs::write(
        dir.join("corrupt.json"),
        "{\"tests/test_a.py::test_a\": \"slow\"}",
    )
    .unwrap();
    let (code, _, stderr) = racefree(
        &dir,
        &["plan", "--shards", "2", "--durations-file", "corrupt.json"],
    );
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("corrupt.json"), "{stderr}");
    let (code, stdout, stderr) = racefree(
        &dir,
        &[
            "plan",
            "--shards",
            "2",
            "--format",
            "lines",
            "--durations-file",
            "corrupt.json",
            "--durations-file-optional",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("corrupt.json"),
        "{stderr}"
    );
    assert_eq!(stdout.lines().count(), 12, "{stdout}");
    let py = python();
    let (code, _, stderr) = racefree(
        &dir,
        &[
            "run",
            "--python",
            py.to_str().unwrap(),
            "--shard",
            "1/2",
            "--durations-file",
            "missing.json",
        ],
    );
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("missing.json"), "{stderr}");
    let (code, _, stderr) = racefree(&dir, &["durations", "import", "corrupt.json"]);
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("corrupt.json"), "{stderr}");

    // --files-from names the list and the files it lacks.
    std::fs::write(
        dir.join("list.txt"),
        "tests/test_a.py\ntests/test_nope.py\n",
    )
    .unwrap();
    let (code, _, stderr) = racefree(&dir, &["run", "--files-from", "list.txt"]);
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains("list.txt") && stderr.contains("tests/test_nope.py"),
        "{stderr}"
    );
    let (code, _, stderr) = racefree(&dir, &["run", "--files-from", "absent.txt"]);
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("absent.txt"), "{stderr}");
}

#[test]
fn files_from_runs_exactly_a_plan_line_list() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = machine(tmp.path(), "m");
    let (code, plan, stderr) = racefree(&dir, &["plan", "--shards", "3", "--format", "lines"]);
    assert_eq!(code, 0, "{stderr}");
    let mut lists: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in plan.lines() {
        let (k, file) = line.split_once('\t').unwrap();
        lists.entry(k.into()).or_default().push(file.into());
    }
    assert_eq!(lists.len(), 3);
    assert_eq!(lists.values().map(Vec::len).sum::<usize>(), 12);
    // The smallest list keeps this quick.
    let list = lists.values().min_by_key(|l| l.len()).unwrap();
    std::fs::write(dir.join("files.txt"), list.join("\n")).unwrap();
    // The CI system's shard variables do not shard a list again: it is one machine's share.
    let (_, stdout, tests) = run_env(
        &dir,
        &["--files-from", "files.txt"],
        &[("CI_NODE_INDEX", "3"), ("CI_NODE_TOTAL", "3")],
    );
    assert!(!stdout.contains("shard 3/3"), "{stdout}");
    let files: BTreeSet<String> = tests.iter().map(|t| t.file.clone()).collect();
    assert_eq!(files, list.iter().cloned().collect::<BTreeSet<_>>());
    // An empty list runs nothing (exit 5), never the whole suite.
    std::fs::write(dir.join("empty.txt"), "# nothing\n").unwrap();
    let py = python();
    let (code, stdout, _) = racefree(
        &dir,
        &[
            "run",
            "--python",
            py.to_str().unwrap(),
            "--files-from",
            "empty.txt",
        ],
    );
    assert_eq!(code, 5, "{stdout}");
}
