#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `racefree run` end to end: real pytest processes in the real ./.venv, compared with plain
//! serial pytest on suites of our own.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;

mod common;
use common::{copy_dir, fixture_source, python, run};

/// Copies a fixture suite into a fresh temp dir (history and caches stay out of the repo).
fn fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture_source(name), dir.path());
    dir
}

fn racefree(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("racefree").unwrap();
    cmd.current_dir(dir)
        .arg("run")
        .arg("--python")
        .arg(python())
        .env_remove("VIRTUAL_ENV");
    cmd
}

fn pytest(dir: &Path) -> Command {
    let mut cmd = Command::new(python());
    cmd.current_dir(dir)
        .args(["-m", "pytest", "-p", "no:cacheprovider"]);
    cmd
}

/// (classname, name, what the testcase holds: "passed" or the failure/error/skipped tag).
fn junit_results(path: &Path) -> BTreeSet<(String, String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    doc.descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .map(|n| {
            let kinds: Vec<&str> = n
                .children()
                .filter(|c| c.is_element())
                .map(|c| c.tag_name().name())
                .filter(|t| matches!(*t, "failure" | "error" | "skipped"))
                .collect();
            let kind = if kinds.is_empty() {
                "passed".to_string()
            } else {
                kinds.join("+")
            };
            (
                n.attribute("classname").unwrap_or("").to_string(),
                n.attribute("name").unwrap().to_string(),
                kind,
            )
        })
        .collect()
}

/// Every line of an --events log, parsed, after checking the version field.
fn events(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["v"], 1, "{l}");
            v
        })
        .collect()
}

fn finished(events: &[serde_json::Value]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["event"] == "test_finished")
        .map(|e| {
            (
                e["nodeid"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// pytest's final line without the timing: "5 failed, 12 passed, ... in 0.20s" -> counts.
fn summary_counts(stdout: &str) -> String {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.contains(" in ") && l.trim_end().ends_with('s') || l.contains("s ="))
        .unwrap();
    let line = line.trim().trim_matches('=').trim();
    line.rsplit_once(" in ").unwrap().0.to_string()
}

#[test]
fn same_results_as_serial_pytest() {
    let dir = fixture("outcomes");
    let d = dir.path();
    let py = run(pytest(d).args(["--continue-on-collection-errors", "--junit-xml", "py.xml"]));
    assert_eq!(py.code, 1, "{}{}", py.stdout, py.stderr);
    let expected = junit_results(&d.join("py.xml"));
    assert!(expected.len() > 20, "{expected:?}");
    for (n, extra) in [("2", vec![]), ("3", vec!["--unit", "file"]), ("1", vec![])] {
        let rf = run(racefree(d)
            .args(["-n", n, "--junit-xml", "rf.xml", "--events", "rf.ndjson"])
            .args(&extra));
        // A collection error makes the run exit 2, as pytest does.
        assert_eq!(rf.code, 2, "-n {n} {extra:?}\n{}{}", rf.stdout, rf.stderr);
        assert_eq!(
            junit_results(&d.join("rf.xml")),
            expected,
            "-n {n} {extra:?}"
        );
        assert_eq!(
            summary_counts(&rf.stdout),
            summary_counts(&py.stdout),
            "{}",
            rf.stdout
        );
        let ev = events(&d.join("rf.ndjson"));
        let tests = finished(&ev);
        // Every testcase of pytest's report except the collection error is a finished test.
        assert_eq!(tests.len(), expected.len() - 1);
        assert!(tests.contains(&(
            "tests/test_ids.py::test_odd_ids[a::b]".into(),
            "passed".into()
        )));
        // pytest escapes non-ASCII ids; racefree reports them exactly as pytest names them.
        assert!(
            tests
                .iter()
                .any(|(n, o)| n.ends_with("test_odd_ids[\\u65e5\\u672c]") && o == "passed"),
            "{tests:?}"
        );
        assert!(tests.contains(&(
            "tests/test_outcomes.py::test_xpass_strict".into(),
            "failed".into()
        )));
        assert!(tests.contains(&(
            "tests/test_outcomes.py::test_teardown_error".into(),
            "passed".into()
        )));
        assert_eq!(ev.first().unwrap()["event"], "run_started");
        assert_eq!(ev.last().unwrap()["event"], "run_finished");
        assert_eq!(ev.last().unwrap()["exit_code"], 2);
    }
    // The failure sections read like pytest's.
    let rf = run(racefree(d).args(["-n", "2"]));
    assert!(rf.stdout.contains("= FAILURES ="), "{}", rf.stdout);
    assert!(
        rf.stdout.contains("ERROR at setup of test_setup_error"),
        "{}",
        rf.stdout
    );
    assert!(rf.stdout.contains("Captured stdout call"), "{}", rf.stdout);
    assert!(
        rf.stdout
            .contains("FAILED tests/test_outcomes.py::test_fail - AssertionError: one is not two")
    );
}

#[test]
fn node_ids_with_any_characters_select_exactly() {
    let dir = fixture("outcomes");
    let d = dir.path();
    let rf = run(racefree(d).args([
        "tests/test_ids.py::test_odd_ids[a::b]",
        "tests/test_ids.py::test_odd_ids[with space]",
        "tests/test_outcomes.py::TestGroup",
        "--events",
        "e.ndjson",
    ]));
    assert_eq!(rf.code, 0, "{}{}", rf.stdout, rf.stderr);
    let names: Vec<String> = finished(&events(&d.join("e.ndjson")))
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        names,
        vec![
            "tests/test_ids.py::test_odd_ids[a::b]",
            "tests/test_ids.py::test_odd_ids[with space]",
            "tests/test_outcomes.py::TestGroup::test_in_class",
            "tests/test_outcomes.py::TestGroup::test_marked_slow",
        ]
    );
}

#[test]
fn environment_keyword_and_mark_selection() {
    let dir = fixture("env");
    let d = dir.path();
    let rf = run(racefree(d).args(["-n", "2", "-v", "--durations", "2"]));
    assert_eq!(rf.code, 0, "{}{}", rf.stdout, rf.stderr);
    assert!(rf.stdout.contains("7 passed in"), "{}", rf.stdout);
    assert!(
        rf.stdout
            .contains("PASSED tests/test_other.py::test_other_file"),
        "{}",
        rf.stdout
    );
    assert!(rf.stdout.contains("slowest 2 durations"), "{}", rf.stdout);
    // --list-files shows discovery's view: estimated test count and path.
    let listed = run(racefree(d).arg("--list-files"));
    assert_eq!(
        listed.stdout, "6\ttests/test_env.py\n1\ttests/test_other.py\n",
        "{}",
        listed.stderr
    );
    let rf = run(racefree(d).args(["-n", "2", "-k", "keyword_target", "--events", "e.ndjson"]));
    assert_eq!(rf.code, 0, "{}{}", rf.stdout, rf.stderr);
    assert!(
        rf.stdout.contains("2 passed, 5 deselected in"),
        "{}",
        rf.stdout
    );
    let rf = run(racefree(d).args(["-m", "slow", "-q"]));
    assert!(
        rf.stdout.contains("1 passed, 6 deselected in"),
        "{}",
        rf.stdout
    );
    // Nothing selected: pytest's exit 5.
    let rf = run(racefree(d).args(["-k", "no_such_test_anywhere"]));
    assert_eq!(rf.code, 5, "{}{}", rf.stdout, rf.stderr);
    // The session root is gone after the run.
    let e = events(&d.join("e.ndjson"));
    let run_id = e[0]["run_id"].as_str().unwrap();
    let uid = rustix::process::getuid().as_raw();
    for base in [PathBuf::from("/dev/shm"), std::env::temp_dir()] {
        assert!(!base.join(format!("racefree-{uid}")).join(run_id).exists());
    }
}

#[test]
fn ten_megabytes_of_output_block_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("pytest.ini"), "[pytest]\n").unwrap();
    std::fs::write(
        d.join("test_loud.py"),
        "import os, sys\n\ndef test_loud():\n    chunk = b'x' * 65535 + b'\\n'\n    for _ in range(160):\n        os.write(1, chunk)\n        os.write(2, chunk)\n\ndef test_after():\n    pass\n",
    )
    .unwrap();
    let start = Instant::now();
    // -s: the output goes straight to racefree's pipes instead of pytest's capture.
    let rf = run(racefree(d).args(["-q", "--", "-s"]));
    assert_eq!(
        rf.code,
        0,
        "{}{}",
        &rf.stdout[rf.stdout.len().saturating_sub(2000)..],
        rf.stderr
    );
    assert!(
        rf.stdout.contains("2 passed"),
        "{}",
        &rf.stdout[rf.stdout.len().saturating_sub(500)..]
    );
    assert!(start.elapsed() < Duration::from_secs(60));
}

#[test]
fn exitfirst_stops_the_whole_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("pytest.ini"), "[pytest]\n").unwrap();
    // Many (estimated) tests, so the planner starts this file first; the failure comes once
    // the other slot is surely inside its 30 s test.
    std::fs::write(
        d.join("test_fail.py"),
        "import pytest\n\n@pytest.mark.parametrize('i', [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])\ndef test_fails(i):\n    if i == 3:\n        import time\n        time.sleep(1.5)\n    assert i != 3\n",
    )
    .unwrap();
    for i in 0..3 {
        std::fs::write(
            d.join(format!("test_slow{i}.py")),
            "import time\n\ndef test_a():\n    time.sleep(0.2)\n\ndef test_b():\n    time.sleep(30)\n\ndef test_c():\n    pass\n",
        )
        .unwrap();
    }
    let start = Instant::now();
    let rf = run(racefree(d).args(["-n", "2", "--unit", "file", "-x", "--events", "e.ndjson"]));
    let took = start.elapsed();
    assert_eq!(rf.code, 1, "{}{}", rf.stdout, rf.stderr);
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let tests = finished(&events(&d.join("e.ndjson")));
    assert!(
        tests.contains(&("test_fail.py::test_fails[3]".into(), "failed".into())),
        "{tests:?}"
    );
    // The slow test that was running when the run stopped is reported, as not run.
    assert!(
        tests
            .iter()
            .any(|(n, o)| n.ends_with("::test_b") && o == "not_run"),
        "{tests:?}"
    );
    // Files whose units never started have nothing to report.
    assert!(
        !tests.iter().any(|(n, _)| n.starts_with("test_slow2.py")),
        "{tests:?}"
    );
    assert!(rf.stdout.contains("file(s) not started"), "{}", rf.stdout);
    assert!(rf.stdout.contains("-x/--maxfail"), "{}", rf.stdout);
}

#[test]
fn a_test_that_kills_its_process_has_not_passed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("pytest.ini"), "[pytest]\n").unwrap();
    std::fs::write(
        d.join("test_exit.py"),
        "import os\n\ndef test_before():\n    pass\n\ndef test_exits():\n    os._exit(0)\n\ndef test_after():\n    pass\n",
    )
    .unwrap();
    let rf = run(racefree(d).args(["--events", "e.ndjson", "--junit-xml", "j.xml"]));
    assert_eq!(rf.code, 1, "{}{}", rf.stdout, rf.stderr);
    let tests = finished(&events(&d.join("e.ndjson")));
    assert_eq!(
        tests,
        vec![
            // Resumed in a fresh process after the crash.
            ("test_exit.py::test_after".to_string(), "passed".to_string()),
            (
                "test_exit.py::test_before".to_string(),
                "passed".to_string()
            ),
            (
                "test_exit.py::test_exits".to_string(),
                "crashed".to_string()
            ),
        ]
    );
    let junit = junit_results(&d.join("j.xml"));
    assert!(
        junit.contains(&("test_exit".into(), "test_exits".into(), "failure".into())),
        "{junit:?}"
    );
    // A segfault: the running test is the crash, named with its signal.
    std::fs::write(
        d.join("test_segv.py"),
        "import ctypes\n\ndef test_segfaults():\n    ctypes.string_at(0)\n",
    )
    .unwrap();
    let rf = run(racefree(d).args(["test_segv.py", "--events", "s.ndjson"]));
    assert_eq!(rf.code, 1, "{}{}", rf.stdout, rf.stderr);
    let ev = events(&d.join("s.ndjson"));
    let crash = ev.iter().find(|e| e["event"] == "test_finished").unwrap();
    assert_eq!(crash["outcome"], "crashed");
    assert!(
        crash["message"].as_str().unwrap().contains("SIGSEGV"),
        "{crash}"
    );
}

#[test]
fn history_lf_and_history_command() {
    let dir = fixture("outcomes");
    let d = dir.path();
    std::fs::remove_file(d.join("tests/test_collect_error.py")).unwrap();
    let first = run(racefree(d).args(["-n", "2", "-q"]));
    assert_eq!(first.code, 1);
    assert!(d.join(".racefree/history.db").is_file());
    assert_eq!(
        std::fs::read_to_string(d.join(".racefree/.gitignore"))
            .unwrap()
            .lines()
            .last(),
        Some("*")
    );
    let lf = run(racefree(d).args(["--lf", "--events", "lf.ndjson"]));
    assert_eq!(lf.code, 1, "{}{}", lf.stdout, lf.stderr);
    let names: Vec<String> = finished(&events(&d.join("lf.ndjson")))
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        names,
        vec![
            "tests/sub/test_more.py::test_error_in_call_raises",
            "tests/test_ids.py::test_numbers[2]",
            "tests/test_outcomes.py::test_fail",
            "tests/test_outcomes.py::test_setup_error",
            // A failed teardown counts as a failure for --lf, as in pytest's cache provider.
            "tests/test_outcomes.py::test_teardown_error",
            "tests/test_outcomes.py::test_xpass_strict",
        ]
    );
    let mut hist = Command::cargo_bin("racefree").unwrap();
    let out = hist
        .current_dir(d)
        .args(["history", "failed", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let failed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(failed.as_array().unwrap().len(), 6);
    let mut hist = Command::cargo_bin("racefree").unwrap();
    let out = hist
        .current_dir(d)
        .args(["history", "slowest", "--limit", "3"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
}

#[test]
fn clear_errors_for_bad_input() {
    let dir = fixture("env");
    let d = dir.path();
    let rf = run(racefree(d).arg("tests/no_such_file.py"));
    assert_eq!(rf.code, 4);
    assert!(rf.stderr.contains("no_such_file.py"), "{}", rf.stderr);
    // An interpreter that cannot import pytest (-S: no site-packages).
    let fake = d.join("nopytest");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\nexec {} -S \"$@\"\n", python().display()),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut cmd = Command::cargo_bin("racefree").unwrap();
    let rf = run(cmd.current_dir(d).args(["run", "--python"]).arg(&fake));
    assert_eq!(rf.code, 4);
    assert!(
        rf.stderr.contains("pytest cannot be imported"),
        "{}",
        rf.stderr
    );
    // Bad option values and bad config.
    let rf = run(racefree(d).args(["-n", "zero"]));
    assert_eq!(
        rf.code, 4,
        "usage errors exit 4, as pytest's: {}",
        rf.stderr
    );
    std::fs::write(d.join("pyproject.toml"), "[tool.racefree]\nworkerz = 2\n").unwrap();
    std::fs::write(d.join("pytest.ini"), "").unwrap();
    std::fs::remove_file(d.join("pytest.ini")).unwrap();
    let rf = run(&mut racefree(d));
    assert_eq!(rf.code, 4, "{}{}", rf.stdout, rf.stderr);
    assert!(rf.stderr.contains("workerz"), "{}", rf.stderr);
    // A usage error inside pytest (unknown option after --) is the run's usage error.
    std::fs::remove_file(d.join("pyproject.toml")).unwrap();
    let rf = run(racefree(d).args(["--", "--no-such-pytest-option"]));
    assert_eq!(rf.code, 4, "{}{}", rf.stdout, rf.stderr);
}

#[test]
fn subtests_are_counted_as_pytest_counts_them() {
    let dir = fixture("subtests");
    let d = dir.path();
    for verbosity in [None, Some("-q")] {
        let mut py = pytest(d);
        let mut rf = racefree(d);
        if let Some(flag) = verbosity {
            py.arg(flag);
            rf.arg(flag);
        }
        let py = run(&mut py);
        let rf = run(rf.args(["-n", "2", "--no-history"]));
        assert_eq!(rf.code, py.code, "{}{}", rf.stdout, rf.stderr);
        assert_eq!(
            summary_counts(&rf.stdout),
            summary_counts(&py.stdout),
            "{verbosity:?}\n{}",
            rf.stdout
        );
        assert!(
            rf.stdout
                .contains("SUBFAILED[m] (i=2) test_sub.py::test_a - assert 2 != 2"),
            "{}",
            rf.stdout
        );
    }
}

#[test]
fn xdist_in_addopts_does_not_start_workers_inside_units() {
    let dir = fixture("xdist_addopts");
    let out = run(racefree(dir.path()).args(["-n", "1", "--plain"]));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("1 passed"), "{}", out.stdout);
    // The same suite under plain pytest does start xdist's workers (so the test can fail).
    let plain = run(&mut pytest(dir.path()));
    assert_eq!(plain.code, 1, "{}\n{}", plain.stdout, plain.stderr);
}
