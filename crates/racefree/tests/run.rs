#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `racefree run` end to end: real pytest processes in the real ./.venv, compared with plain
//! serial pytest on suites of our own.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;

mod common;
use common::{copy_dir, fixture_source, python, run, suite};

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

/// The testsuite's tests, failures, errors and skipped attributes.
fn junit_counts(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let suite = doc
        .descendants()
        .find(|n| n.has_tag_name("testsuite"))
        .unwrap();
    ["tests", "failures", "errors", "skipped"]
        .iter()
        .map(|a| format!("{a}={}", suite.attribute(*a).unwrap_or("?")))
        .collect()
}

/// Every line of an --events log, parsed, after checking the version field.
/// An error message as one line, without miette's wrapping and margin.
fn one_line(stderr: &str) -> String {
    stderr
        .split_whitespace()
        .filter(|w| *w != "│")
        .collect::<Vec<_>>()
        .join(" ")
}

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
        // Every testcase of pytest's report is a finished test, except the collection error
        // and the second testcase pytest writes for the test that fails in call and then
        // errors in teardown.
        assert_eq!(tests.len(), expected.len() - 2);
        assert_eq!(
            junit_counts(&d.join("rf.xml")),
            junit_counts(&d.join("py.xml"))
        );
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
    let dir = suite(&[]);
    let d = dir.path();
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
    stops_the_whole_run_on(&["-x"]);
    // pytest's own -x (or one in addopts) means the same: the whole run stops, not one unit.
    stops_the_whole_run_on(&["--", "-vx"]);
}

fn stops_the_whole_run_on(exitfirst: &[&str]) {
    let dir = suite(&[]);
    let d = dir.path();
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
    let rf = run(racefree(d)
        .args(["-n", "2", "--unit", "file", "--events", "e.ndjson"])
        .args(exitfirst));
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
    let dir = suite(&[]);
    let d = dir.path();
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
            "tests/test_outcomes.py::test_fail_then_teardown_error",
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
    assert_eq!(failed.as_array().unwrap().len(), 7);
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
    // The fork servers start while discovery runs; a path that is not there is still the
    // first and only thing said (-v would name the isolation once the files are found).
    let rf = run(racefree(d).args(["-v", "tests/no_such_file.py"]));
    assert_eq!(rf.code, 4);
    let said: Vec<&str> = rf.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        said.first().is_some_and(|l| l.contains("no_such_file.py"))
            && !rf.stderr.contains("isolation"),
        "{}",
        rf.stderr
    );
    // pytest options that would make every unit report nothing, or wait at a debugger
    // prompt nobody sees, are refused by name, with what to do instead.
    for (flag, instead) in [("--co", "--list-files"), ("--pdb", "pytest --pdb NODE_ID")] {
        let rf = run(racefree(d).args(["--", "-q", flag]));
        assert_eq!(rf.code, 4, "{flag}: {}{}", rf.stdout, rf.stderr);
        let said = one_line(&rf.stderr);
        assert!(
            said.contains(&format!("`{flag}`")) && said.contains(instead),
            "{said}"
        );
    }
    // pytest reads $PYTEST_ADDOPTS too, and so does racefree.
    let rf = run(racefree(d).env("PYTEST_ADDOPTS", "-q --pdb"));
    assert_eq!(rf.code, 4, "{}{}", rf.stdout, rf.stderr);
    assert!(rf.stderr.contains("--pdb"), "{}", rf.stderr);
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
    // A pytest that is there but breaks on import. Fork servers only look for pytest before
    // they start; when none of them imports it, the run must still stop with the reason.
    let broken = d.join("broken");
    std::fs::create_dir_all(broken.join("pytest")).unwrap();
    std::fs::write(
        broken.join("pytest/__init__.py"),
        "raise ImportError('this pytest is broken')\n",
    )
    .unwrap();
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nPYTHONPATH={} exec {} \"$@\"\n",
            broken.display(),
            python().display()
        ),
    )
    .unwrap();
    for mode in [None, Some("--no-fork")] {
        let mut cmd = Command::cargo_bin("racefree").unwrap();
        cmd.current_dir(d).args(["run", "--python"]).arg(&fake);
        cmd.args(mode);
        let rf = run(&mut cmd);
        assert_eq!(rf.code, 4, "{mode:?}: {}{}", rf.stdout, rf.stderr);
        assert!(
            rf.stderr.contains("pytest cannot be imported")
                && rf.stderr.contains("this pytest is broken")
                && !rf.stderr.contains("fork server off"),
            "{mode:?}: {}",
            rf.stderr
        );
    }
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

/// Two subprojects below `d`, each with a test file whose `test_a` passes and `check_b`
/// fails (a test only under `sub/pytest.ini`'s python_functions); `pkg/pyproject.toml`'s
/// addopts deselect every test. `test_a` takes `fixture`'s arguments (`""` or `"top"`).
fn write_subprojects(d: &Path, fixture: &str) {
    for sub in ["sub", "pkg"] {
        std::fs::create_dir(d.join(sub)).unwrap();
        std::fs::write(
            d.join(sub).join(format!("test_{sub}.py")),
            format!("def test_a({fixture}):\n    pass\n\n\ndef check_b():\n    assert 0\n"),
        )
        .unwrap();
    }
    std::fs::write(
        d.join("sub").join("pytest.ini"),
        "[pytest]\npython_functions = check_*\n",
    )
    .unwrap();
    std::fs::write(
        d.join("pkg").join("pyproject.toml"),
        "[tool.pytest.ini_options]\naddopts = \"-m nothing\"\n",
    )
    .unwrap();
}

#[test]
fn a_subprojects_own_configuration_is_not_read_when_pytest_would_not_read_it() {
    // Plain `pytest` at the top reads the top's configuration only. A unit given just
    // sub/test_x.py would find sub/pytest.ini (or pkg/pyproject.toml) first, and run other
    // tests (python_functions) or none at all (addopts).
    let dir = suite(&[]);
    let d = dir.path();
    write_subprojects(d, "");
    // With a configuration file at the top, and with another one the user names for
    // pytest (which racefree's own -c must not override).
    std::fs::write(d.join("ci.ini"), "[pytest]\npython_functions = check_*\n").unwrap();
    for named in [false, true] {
        let mut py = pytest(d);
        if named {
            py.env("PYTEST_ADDOPTS", "-c ci.ini");
        }
        let py = run(py.args(["--junit-xml", "py.xml"]));
        assert_eq!(py.code, i32::from(named), "{}{}", py.stdout, py.stderr);
        for fork in [true, false] {
            let mut cmd = racefree(d);
            cmd.args(["-n", "2", "--junit-xml", "rf.xml"]);
            if !fork {
                cmd.arg("--no-fork");
            }
            if named {
                cmd.env("PYTEST_ADDOPTS", "-c ci.ini");
            }
            let rf = run(&mut cmd);
            assert_eq!(rf.code, py.code, "fork {fork}: {}{}", rf.stdout, rf.stderr);
            assert_eq!(
                junit_results(&d.join("rf.xml")),
                junit_results(&d.join("py.xml")),
                "named {named}, fork {fork}"
            );
        }
    }
    // Run from inside the subproject, pytest reads its configuration, and so does racefree.
    let inner = d.join("sub");
    let py = run(&mut pytest(&inner));
    let rf = run(racefree(&inner).args(["-n", "2"]));
    assert_eq!((py.code, rf.code), (1, 1), "{}{}", rf.stdout, rf.stderr);
}

#[test]
fn without_a_configuration_file_at_the_top_no_subprojects_file_is_read() {
    // Plain `pytest` at a top with no configuration file reads none, not even the one a
    // subproject below has; a unit given only sub/test_sub.py would have found it. The top's
    // conftest.py must still reach every unit (pytest's conftest cut-off is the rootdir).
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("conftest.py"),
        "import pytest\n\n\n@pytest.fixture\ndef top():\n    return 1\n",
    )
    .unwrap();
    write_subprojects(d, "top");
    let py = run(pytest(d).args(["--junit-xml", "py.xml"]));
    assert_eq!(py.code, 0, "{}{}", py.stdout, py.stderr);
    for fork in [true, false] {
        let mut cmd = racefree(d);
        cmd.args(["-n", "2", "--junit-xml", "rf.xml"]);
        if !fork {
            cmd.arg("--no-fork");
        }
        let rf = run(&mut cmd);
        assert_eq!(rf.code, py.code, "fork {fork}: {}{}", rf.stdout, rf.stderr);
        assert_eq!(
            junit_results(&d.join("rf.xml")),
            junit_results(&d.join("py.xml")),
            "fork {fork}"
        );
    }
    // An -o of pytest's own that is no path (bundled too) keeps the subproject's file unread;
    // a --confcutdir in $PYTEST_ADDOPTS (read before racefree's arguments) is the user's.
    let same = |py: &mut Command, rf: &mut Command, what: &str| {
        let py = run(py.args(["--junit-xml", "py.xml"]));
        let rf = run(rf.args(["-n", "2", "--junit-xml", "rf.xml"]));
        assert_eq!(rf.code, py.code, "{what}: {}{}", rf.stdout, rf.stderr);
        assert_eq!(
            junit_results(&d.join("rf.xml")),
            junit_results(&d.join("py.xml")),
            "{what}"
        );
    };
    same(
        pytest(d).args(["-vo", "console_output_style=classic"]),
        racefree(d).args(["--", "-vo", "console_output_style=classic"]),
        "-vo",
    );
    let mut py = pytest(d);
    py.env("PYTEST_ADDOPTS", "--confcutdir=sub");
    let mut rf = racefree(d);
    rf.env("PYTEST_ADDOPTS", "--confcutdir=sub");
    same(&mut py, &mut rf, "--confcutdir");
    // A path option pytest resolves against the (absent) configuration file's directory.
    std::fs::create_dir(d.join("src")).unwrap();
    std::fs::write(d.join("src").join("helper.py"), "VALUE = 1\n").unwrap();
    std::fs::write(
        d.join("test_path.py"),
        "def test_path(top):\n    import helper\n    assert helper.VALUE == top\n",
    )
    .unwrap();
    same(
        pytest(d).args(["-vo", "pythonpath=src", "test_path.py"]),
        racefree(d).args(["test_path.py", "--", "-vo", "pythonpath=src"]),
        "pythonpath",
    );
}

#[test]
fn a_damaged_history_store_costs_a_warning_not_the_run() {
    // A store whose header is fine but whose pages are not opens, and fails at the first
    // read: that stopped the run with exit 3 before any test.
    let dir = suite(&[]);
    let d = dir.path();
    for i in 0..3 {
        std::fs::write(
            d.join(format!("test_{i}.py")),
            format!("def test_{i}():\n    pass\n"),
        )
        .unwrap();
    }
    let first = run(racefree(d).args(["-n", "2", "--lf"]));
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    let store = d.join(".racefree").join("history.db");
    let mut bytes = std::fs::read(&store).unwrap();
    assert!(bytes.len() > 8192, "{}", bytes.len());
    for (i, b) in bytes.iter_mut().enumerate().skip(4096) {
        *b = (i * 7919 % 251) as u8;
    }
    std::fs::write(&store, bytes).unwrap();
    let again = run(racefree(d).args(["-n", "2", "--lf"]));
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert!(again.stdout.contains("3 passed"), "{}", again.stdout);
    assert!(
        again
            .stderr
            .contains("running without history: history database")
            && again.stderr.contains("delete the file"),
        "{}",
        again.stderr
    );
}

#[test]
fn a_read_only_history_store_plans_the_run_and_costs_one_line() {
    // A store on a read-only mount (a CI cache): the run is planned from it, and one line
    // says this run is not added (there were two, one for the modules to preload).
    let dir = suite(&[("test_a.py", "def test_a():\n    pass\n")]);
    let d = dir.path();
    let first = run(racefree(d).arg("-q"));
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    let bin = assert_cmd::cargo::cargo_bin("racefree");
    // Root ignores file modes, so the store's directory is mounted read-only, in a mount
    // namespace of the test's own.
    let script = "mount --bind .racefree .racefree && mount -o remount,bind,ro .racefree .racefree \
                  && exec \"$0\" \"$@\"";
    let ro = run(Command::new("unshare")
        .current_dir(d)
        .env_remove("VIRTUAL_ENV")
        .args(["-m", "sh", "-c", script])
        .arg(&bin)
        .args(["run", "--python"])
        .arg(python())
        .arg("-q"));
    if ro.code != 0 && (ro.stderr.contains("unshare") || ro.stderr.contains("mount")) {
        eprintln!("skipped: no mount namespace here: {}", ro.stderr);
        return;
    }
    assert_eq!(ro.code, 0, "{}{}", ro.stdout, ro.stderr);
    let warnings: Vec<&str> = ro
        .stderr
        .lines()
        .filter(|l| l.contains("warning"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", ro.stderr);
    assert!(warnings[0].contains("is read-only"), "{}", ro.stderr);
}

#[test]
fn a_conftest_that_fails_to_import_is_a_collection_error_not_a_usage_error() {
    // pytest: "ERROR b", exit 2. Its unit also said "found no collectors" and exited 4,
    // which made racefree add an error for the unit and exit 4, a usage error.
    let dir = suite(&[]);
    let d = dir.path();
    for sub in ["a", "b"] {
        std::fs::create_dir(d.join(sub)).unwrap();
        std::fs::write(
            d.join(sub).join(format!("test_{sub}.py")),
            "def test_x():\n    pass\n",
        )
        .unwrap();
    }
    std::fs::write(d.join("b").join("conftest.py"), "import nope_mod\n").unwrap();
    let py = run(&mut pytest(d));
    assert_eq!(py.code, 2, "{}{}", py.stdout, py.stderr);
    // Forked at the session point, the unit collects and reports the error itself; spawned
    // (or forked before conftest files load), its pytest stops before collecting, with
    // "ImportError while loading conftest" and exit 4.
    for fork in [true, false] {
        let mut cmd = racefree(d);
        cmd.args(["-n", "2"]);
        if !fork {
            cmd.arg("--no-fork");
        }
        let rf = run(&mut cmd);
        assert_eq!(rf.code, 2, "fork {fork}: {}{}", rf.stdout, rf.stderr);
        assert!(
            rf.stdout.contains("ERROR b - ModuleNotFoundError"),
            "fork {fork}: {}",
            rf.stdout
        );
        assert!(!rf.stdout.contains("ERROR unit"), "{}", rf.stdout);
        assert!(!rf.stdout.contains("INFRA RETRY"), "{}", rf.stdout);
    }
    // Where pytest starts collecting (testpaths = b), that conftest is loaded before any
    // collection, and pytest itself stops with 4: so does racefree.
    std::fs::write(d.join("pytest.ini"), "[pytest]\ntestpaths = b\n").unwrap();
    let py = run(&mut pytest(d));
    assert_eq!(py.code, 4, "{}{}", py.stdout, py.stderr);
    let rf = run(racefree(d).args(["-n", "2", "--no-fork"]));
    assert_eq!(rf.code, 4, "{}{}", rf.stdout, rf.stderr);
}

#[test]
fn pytests_junitxml_is_the_runs_report_not_each_units() {
    // Every unit wrote the addopts' --junitxml to the same file: the last unit's tests only.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("pytest.ini"),
        "[pytest]\naddopts = --junitxml=out.xml\n",
    )
    .unwrap();
    for i in 0..3 {
        std::fs::write(
            d.join(format!("test_{i}.py")),
            format!("def test_{i}():\n    pass\n"),
        )
        .unwrap();
    }
    let py = run(&mut pytest(d));
    assert_eq!(py.code, 0, "{}{}", py.stdout, py.stderr);
    std::fs::rename(d.join("out.xml"), d.join("py.xml")).unwrap();
    let rf = run(racefree(d).args(["-n", "2", "--unit", "file"]));
    assert_eq!(rf.code, 0, "{}{}", rf.stdout, rf.stderr);
    assert_eq!(
        junit_results(&d.join("out.xml")),
        junit_results(&d.join("py.xml"))
    );
    // Given after `--`, it wins over addopts, as in pytest.
    let rf = run(racefree(d).args(["-n", "2", "--", "--junitxml=later.xml"]));
    assert_eq!(rf.code, 0, "{}{}", rf.stdout, rf.stderr);
    assert_eq!(junit_counts(&d.join("later.xml"))[0], "tests=3");
}

#[test]
fn a_conftest_that_turns_no_tests_into_success_is_obeyed() {
    let dir = suite(&[]);
    let d = dir.path();
    std::fs::write(
        d.join("conftest.py"),
        "def pytest_sessionfinish(session, exitstatus):\n    if exitstatus == 5:\n        session.exitstatus = 0\n",
    )
    .unwrap();
    for i in 0..2 {
        std::fs::write(
            d.join(format!("test_{i}.py")),
            format!("def test_{i}():\n    pass\n"),
        )
        .unwrap();
    }
    let py = run(pytest(d).args(["-k", "nomatch"]));
    assert_eq!(py.code, 0, "{}{}", py.stdout, py.stderr);
    for fork in [true, false] {
        let mut cmd = racefree(d);
        cmd.args(["-n", "2", "-k", "nomatch"]);
        if !fork {
            cmd.arg("--no-fork");
        }
        let rf = run(&mut cmd);
        assert_eq!(rf.code, 0, "fork {fork}: {}{}", rf.stdout, rf.stderr);
    }
    // Without the hook, no tests is still 5.
    std::fs::remove_file(d.join("conftest.py")).unwrap();
    assert_eq!(run(racefree(d).args(["-n", "2", "-k", "nomatch"])).code, 5);
}

#[test]
fn pytest_exit_in_a_test_ends_the_run_with_its_status_not_a_crash() {
    // pytest.exit() ends pytest's session with its reason and status. racefree reported
    // the test as crashed, an error for its unit, and ran the other files on.
    let dir = suite(&[]);
    let d = dir.path();
    std::fs::write(
        d.join("test_a.py"),
        "import pytest\n\ndef test_a():\n    pytest.exit('no database', returncode=3)\n\n\
         def test_after():\n    pass\n",
    )
    .unwrap();
    std::fs::write(
        d.join("test_slow.py"),
        "import time\n\ndef test_slow():\n    time.sleep(30)\n",
    )
    .unwrap();
    let py = run(&mut pytest(d));
    assert_eq!(py.code, 3, "{}{}", py.stdout, py.stderr);
    let started = Instant::now();
    let rf = run(racefree(d).args(["-n", "2", "--events", "rf.ndjson"]));
    assert_eq!(rf.code, 3, "{}{}", rf.stdout, rf.stderr);
    assert!(
        rf.stdout
            .contains("pytest.exit() in test_a.py::test_a: no database"),
        "{}",
        rf.stdout
    );
    assert!(!rf.stdout.contains("ERROR unit"), "{}", rf.stdout);
    let outcomes = finished(&events(&d.join("rf.ndjson")));
    assert!(
        outcomes.iter().all(|(_, outcome)| outcome == "not_run"),
        "{outcomes:?}"
    );
    // The other slot's long test was stopped, not waited for.
    assert!(started.elapsed() < Duration::from_secs(20));
    // Called in a test's teardown: the test's call had passed, and it stays passed.
    std::fs::remove_file(d.join("test_slow.py")).unwrap();
    std::fs::write(
        d.join("test_a.py"),
        "import pytest\n\n@pytest.fixture\ndef fx():\n    yield\n    pytest.exit('done', returncode=0)\n\n\
         def test_a(fx):\n    pass\n\n\ndef test_after():\n    pass\n",
    )
    .unwrap();
    let py = run(&mut pytest(d));
    assert_eq!(py.code, 0, "{}{}", py.stdout, py.stderr);
    let rf = run(racefree(d).args(["-n", "2", "--events", "rf.ndjson"]));
    assert_eq!(rf.code, 0, "{}{}", rf.stdout, rf.stderr);
    let outcomes = finished(&events(&d.join("rf.ndjson")));
    assert!(
        outcomes.contains(&("test_a.py::test_a".to_string(), "passed".to_string())),
        "{outcomes:?}"
    );
}

#[test]
fn a_run_whose_modules_all_skip_themselves_collected_nothing() {
    let dir = suite(&[]);
    let d = dir.path();
    for name in ["test_a.py", "test_b.py"] {
        std::fs::write(
            d.join(name),
            "import pytest\n\npytest.skip('no', allow_module_level=True)\n\n\ndef test_x():\n    pass\n",
        )
        .unwrap();
    }
    let py = run(&mut pytest(d));
    assert_eq!(py.code, 5, "{}{}", py.stdout, py.stderr);
    let rf = run(racefree(d).args(["-n", "2"]));
    assert_eq!(rf.code, 5, "{}{}", rf.stdout, rf.stderr);
    assert_eq!(summary_counts(&rf.stdout), summary_counts(&py.stdout));
    // One module with a test that runs: exit 0, for both.
    std::fs::write(d.join("test_c.py"), "def test_c():\n    pass\n").unwrap();
    assert_eq!(run(&mut pytest(d)).code, 0);
    assert_eq!(run(racefree(d).args(["-n", "2"])).code, 0);
}

#[test]
fn a_node_id_that_selects_nothing_is_not_found_as_in_pytest() {
    // pytest exits 4 ("ERROR: not found") for a node id that matches no test; racefree ran
    // the rest and exited 0 (or said "no tests ran", 5): a typo in CI went green.
    let dir = suite(&[]);
    let d = dir.path();
    std::fs::create_dir(d.join("tests")).unwrap();
    std::fs::write(
        d.join("tests").join("test_a.py"),
        "import pytest\n\ndef test_one():\n    pass\n\n\
         @pytest.mark.parametrize('x', [1, 2])\ndef test_p(x):\n    pass\n\n\
         class TestC:\n    def test_m(self):\n        pass\n",
    )
    .unwrap();
    let typo = "tests/test_a.py::test_typo";
    for args in [
        vec![typo, "tests/test_a.py::test_one"],
        vec![typo],
        vec!["tests/test_a.py::test_p[9]"],
    ] {
        let py = run(pytest(d).args(&args));
        assert_eq!(py.code, 4, "{args:?}: {}{}", py.stdout, py.stderr);
        let rf = run(racefree(d).args(&args).args(["--events", "rf.ndjson"]));
        assert_eq!(rf.code, 4, "{args:?}: {}{}", rf.stdout, rf.stderr);
        let bad = args[0];
        assert!(
            rf.stdout.contains(&format!("ERROR not found: {bad}")),
            "{}",
            rf.stdout
        );
        let ev = events(&d.join("rf.ndjson"));
        assert_eq!(ev.last().unwrap()["not_found"], serde_json::json!([bad]));
    }
    // A module that skips itself finds no collector for the id either, in pytest (exit 4).
    std::fs::write(
        d.join("tests").join("test_skip.py"),
        "import pytest\n\npytest.skip('no', allow_module_level=True)\n",
    )
    .unwrap();
    let args = ["tests/test_skip.py::test_typo"];
    assert_eq!(run(pytest(d).args(args)).code, 4);
    let rf = run(racefree(d).args(args));
    assert_eq!(rf.code, 4, "{}{}", rf.stdout, rf.stderr);
    // Ids that select a class, a parametrized function or one of its cases are found, and
    // one that -k then deselects was found too (pytest: 5, no tests ran).
    for (args, code) in [
        (
            vec![
                "tests/test_a.py::TestC",
                "tests/test_a.py::test_p",
                "tests/test_a.py::test_p[1]",
            ],
            0,
        ),
        (vec!["tests/test_a.py::test_one", "-k", "nothing"], 5),
    ] {
        let py = run(pytest(d).args(&args));
        assert_eq!(py.code, code, "{args:?}: {}{}", py.stdout, py.stderr);
        let rf = run(racefree(d).args(&args));
        assert_eq!(rf.code, code, "{args:?}: {}{}", rf.stdout, rf.stderr);
        assert!(!rf.stdout.contains("not found"), "{}", rf.stdout);
    }
}

#[test]
fn a_unittest_subtest_that_fails_fails_the_run_as_under_pytest() {
    // unittest's subTest: pytest reports the failed subtest apart and the test itself as
    // passed, but its session counts the failure (exit 1) and its JUnit lists the test as
    // failed. racefree said "1 failed, 1 passed" and exited 0, with a passing testcase.
    let dir = suite(&[]);
    let d = dir.path();
    std::fs::write(
        d.join("test_ut.py"),
        "import unittest\n\n\nclass T(unittest.TestCase):\n    def test_sub(self):\n\
         \x20       for i in range(3):\n            with self.subTest(i=i):\n\
         \x20               self.assertLess(i, 2)\n\n    def test_ok(self):\n        pass\n",
    )
    .unwrap();
    let py = run(pytest(d).args(["--junit-xml", "py.xml"]));
    assert_eq!(py.code, 1, "{}{}", py.stdout, py.stderr);
    let rf = run(racefree(d).args(["-n", "2", "--junit-xml", "rf.xml"]));
    assert_eq!(rf.code, py.code, "{}{}", rf.stdout, rf.stderr);
    assert_eq!(summary_counts(&rf.stdout), summary_counts(&py.stdout));
    assert_eq!(
        junit_results(&d.join("rf.xml")),
        junit_results(&d.join("py.xml"))
    );
    // History keeps it as failed: --lf runs it again, and only it.
    let lf = run(racefree(d).args(["-n", "2", "--lf", "-v"]));
    assert_eq!(lf.code, 1, "{}{}", lf.stdout, lf.stderr);
    assert!(
        lf.stdout.contains("test_ut.py::T::test_sub"),
        "{}",
        lf.stdout
    );
    assert!(
        !lf.stdout.contains("test_ut.py::T::test_ok"),
        "{}",
        lf.stdout
    );
}

/// The plugin does not send a passed setup or teardown when the test's call decides its
/// outcome; a test with no call (pytest's `--setup-only`) must still be reported from its
/// setup and teardown, not taken for one that never finished.
#[test]
fn tests_without_a_call_phase_are_reported_as_pytest_reports_them() {
    let dir = fixture("outcomes");
    let d = dir.path();
    let py = run(pytest(d).args([
        "--continue-on-collection-errors",
        "--setup-only",
        "--junit-xml",
        "py.xml",
    ]));
    assert_eq!(py.code, 1, "{}{}", py.stdout, py.stderr);
    let rf = run(racefree(d)
        .args(["-n", "2", "--junit-xml", "rf.xml", "--events", "rf.ndjson"])
        .args(["--", "--setup-only"]));
    assert_eq!(rf.code, 2, "{}{}", rf.stdout, rf.stderr);
    let expected = junit_results(&d.join("py.xml"));
    assert!(
        expected
            .iter()
            .filter(|(_, _, kind)| kind == "passed")
            .count()
            > 10,
        "{expected:?}"
    );
    assert_eq!(junit_results(&d.join("rf.xml")), expected);
    // pytest's summary counts no test whose call did not run ("2 skipped, 4 errors"), and
    // nor do racefree's progress lines.
    assert_eq!(summary_counts(&rf.stdout), summary_counts(&py.stdout));
    assert!(
        rf.stdout
            .lines()
            .filter(|l| l.starts_with('['))
            .all(|l| l.contains(": 0 passed")),
        "{}",
        rf.stdout
    );
    let tests = finished(&events(&d.join("rf.ndjson")));
    assert!(
        tests.iter().all(|(_, outcome)| outcome != "crashed"),
        "{tests:?}"
    );
}

/// A test tried again counts the subtests of its last attempt only, as it counts its own
/// outcome: a subtest that failed in the first attempt is not in the summary of a FLAKY test.
#[test]
fn subtests_count_with_their_tests_last_attempt() {
    let dir = fixture("subtests");
    let d = dir.path();
    std::fs::remove_file(d.join("test_sub.py")).unwrap();
    std::fs::write(
        d.join("test_sub_retried.py"),
        "from pathlib import Path\n\n\n\
         def test_sub(subtests):\n    \
             record = Path(__file__).parent / '.attempts'\n    \
             with record.open('a') as handle:\n        \
                 handle.write('x\\n')\n    \
             first = len(record.read_text().splitlines()) == 1\n    \
             for i in range(3):\n        \
                 with subtests.test(i=i):\n            \
                     assert not (first and i == 0)\n",
    )
    .unwrap();
    // -v: pytest counts passed subtests only when verbose.
    let rf = run(racefree(d).args(["-v", "-n", "1", "--retries", "1", "--events", "rf.ndjson"]));
    assert_eq!(rf.code, 0, "{}{}", rf.stdout, rf.stderr);
    let ev = events(&d.join("rf.ndjson"));
    let totals = &ev.last().unwrap()["totals"];
    assert_eq!(
        totals["subtests"],
        serde_json::json!({"subtests passed": 3}),
        "{totals}"
    );
    assert_eq!(totals["flaky"], 1, "{totals}");
    assert!(
        rf.stdout.contains("1 passed, 3 subtests passed, 1 flaky"),
        "{}",
        rf.stdout
    );
}

/// pytest turns a passing test with failed subtests into a failure when its terminal reporter
/// asks `pytest_report_teststatus`; a plugin standing in for that reporter under its name
/// (pytest-sugar does) may never ask, and then racefree's plugin must.
#[test]
fn failed_subtests_fail_their_test_under_a_stand_in_terminal_reporter() {
    let dir = fixture("subtests");
    let d = dir.path();
    std::fs::write(
        d.join("conftest.py"),
        "import pytest\n\n\n\
         class StandIn:\n    \
             def pytest_runtest_logreport(self, report):\n        \
                 pass\n\n\n\
         @pytest.hookimpl(trylast=True)\n\
         def pytest_configure(config):\n    \
             reporter = config.pluginmanager.get_plugin('terminalreporter')\n    \
             if reporter is not None:\n        \
                 config.pluginmanager.unregister(reporter)\n    \
             config.pluginmanager.register(StandIn(), 'terminalreporter')\n",
    )
    .unwrap();
    let py = run(&mut pytest(d));
    assert_eq!(py.code, 1, "{}{}", py.stdout, py.stderr);
    let rf = run(racefree(d).args(["-n", "1", "--no-history", "--events", "rf.ndjson"]));
    assert_eq!(rf.code, py.code, "{}{}", rf.stdout, rf.stderr);
    let tests = finished(&events(&d.join("rf.ndjson")));
    assert!(
        tests.contains(&("test_sub.py::test_a".into(), "failed".into())),
        "{tests:?}"
    );
}

/// Where pytest-rerunfailures is installed for the tests (see `common::plugins_dir`).
fn plugins_dir() -> PathBuf {
    common::plugins_dir("pytest_rerunfailures.py")
}

#[test]
fn max_suite_reruns_caps_the_whole_run_not_each_unit() {
    // pytest-rerunfailures' --max-suite-reruns N caps the reruns of the whole suite; each
    // unit is a pytest process of its own, and each counted only its own reruns, so four
    // files could rerun up to 4 x N times.
    let dir = suite(&[]);
    let d = dir.path();
    for i in 0..4 {
        std::fs::write(
            d.join(format!("test_f{i}.py")),
            "def test_always_fails():\n    assert False\n",
        )
        .unwrap();
    }
    let cap = ["--reruns", "2", "--max-suite-reruns", "3"];
    let py = run(pytest(d).args(cap).env("PYTHONPATH", plugins_dir()));
    assert!(py.stdout.contains("4 failed, 3 rerun"), "{}", py.stdout);
    for fork in [true, false] {
        let mut cmd = racefree(d);
        cmd.args(["-n", "2", "--unit", "file", "--events", "rf.ndjson"]);
        if !fork {
            cmd.arg("--no-fork");
        }
        let rf = run(cmd.arg("--").args(cap).env("PYTHONPATH", plugins_dir()));
        assert_eq!(rf.code, 1, "{}{}", rf.stdout, rf.stderr);
        let ev = events(&d.join("rf.ndjson"));
        let reruns = ev.iter().filter(|e| e["event"] == "test_retry").count();
        assert_eq!(reruns, 3, "fork {fork}: {}{}", rf.stdout, rf.stderr);
        let failed = ev
            .iter()
            .filter(|e| e["event"] == "test_finished" && e["outcome"] == "failed")
            .count();
        assert_eq!(failed, 4, "fork {fork}");
    }
}

/// pytest-rerunfailures runs a failed test again in the same process and marks the failed
/// attempt's report "rerun": racefree keeps that attempt as a failed one (as its own retries
/// do) and takes the test's result from its last attempt, never a crash.
#[test]
fn reruns_by_pytest_rerunfailures_are_attempts_not_crashes() {
    let dir = fixture("reruns");
    let d = dir.path();
    let py = run(pytest(d)
        .args(["--reruns", "1", "--junit-xml", "py.xml"])
        .env("PYTHONPATH", plugins_dir())
        .env("RERUN_MARK", "pytest"));
    assert_eq!(py.code, 1, "{}{}", py.stdout, py.stderr);
    assert!(py.stdout.contains("2 rerun"), "{}", py.stdout);
    let rf = run(racefree(d)
        .args(["-n", "2", "--junit-xml", "rf.xml", "--events", "rf.ndjson"])
        .args(["--", "--reruns", "1"])
        .env("PYTHONPATH", plugins_dir())
        .env("RERUN_MARK", "racefree"));
    assert_eq!(rf.code, py.code, "{}{}", rf.stdout, rf.stderr);
    // With pytest-xdist installed (as it is here), the plugin would start a thread in every
    // pytest process that is not an xdist worker; the fork servers keep it from doing so.
    assert!(!rf.stderr.contains("fork server off"), "{}", rf.stderr);
    // One testcase per test, with its last attempt's result (and the earlier attempts inside
    // it, as Surefire writes them). pytest's own report has those three too, and for the test
    // that fails every time also a "passed" testcase for its rerun attempt.
    let finals: BTreeSet<(String, String, String)> = [
        ("test_always_fails", "failure"),
        ("test_fails_once", "passed"),
        ("test_passes", "passed"),
    ]
    .iter()
    .map(|(name, kind)| {
        (
            "tests.test_reruns".into(),
            name.to_string(),
            kind.to_string(),
        )
    })
    .collect();
    assert_eq!(junit_results(&d.join("rf.xml")), finals);
    assert!(junit_results(&d.join("py.xml")).is_superset(&finals));
    let ev = events(&d.join("rf.ndjson"));
    let retried: Vec<(&str, u64, &str)> = ev
        .iter()
        .filter(|e| e["event"] == "test_retry")
        .map(|e| {
            (
                e["nodeid"].as_str().unwrap(),
                e["attempt"].as_u64().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(retried.len(), 2, "{retried:?}");
    assert!(retried.contains(&("tests/test_reruns.py::test_fails_once", 1, "failed")));
    assert!(retried.contains(&("tests/test_reruns.py::test_always_fails", 1, "failed")));
    let last: Vec<(String, String, u64, bool)> = ev
        .iter()
        .filter(|e| e["event"] == "test_finished")
        .map(|e| {
            (
                e["nodeid"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
                e["attempt"].as_u64().unwrap(),
                e["flaky"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(last.len(), 3, "{last:?}");
    assert!(last.contains(&(
        "tests/test_reruns.py::test_fails_once".into(),
        "passed".into(),
        2,
        true
    )));
    assert!(last.contains(&(
        "tests/test_reruns.py::test_always_fails".into(),
        "failed".into(),
        2,
        false
    )));
    assert!(
        rf.stdout
            .contains("FLAKY tests/test_reruns.py::test_fails_once"),
        "{}",
        rf.stdout
    );
    let rf_xml = std::fs::read_to_string(d.join("rf.xml")).unwrap();
    assert!(rf_xml.contains("<flakyFailure"), "{rf_xml}");
    assert!(rf_xml.contains("<rerunFailure"), "{rf_xml}");
}

/// pytest-rerunfailures's `--fail-on-flaky` makes a pytest process exit 7 when a test passed
/// only on a rerun: under racefree that is the run's flaky tests failing it (exit 1, as with
/// `--flaky-result fail`), not units that broke.
#[test]
fn fail_on_flaky_fails_the_run_for_its_flaky_tests() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("test_flaky.py"),
        "from pathlib import Path\n\n\n\
         def test_fails_once():\n    \
             mark = Path(__file__).parent / '.attempted'\n    \
             if not mark.exists():\n        \
                 mark.touch()\n        \
                 assert False\n\n\n\
         def test_passes():\n    \
             pass\n",
    )
    .unwrap();
    std::fs::write(d.join("test_other.py"), "def test_passes():\n    pass\n").unwrap();
    let py = run(pytest(d)
        .args(["--reruns", "1", "--fail-on-flaky"])
        .env("PYTHONPATH", plugins_dir()));
    assert_eq!(py.code, 7, "{}{}", py.stdout, py.stderr);
    std::fs::remove_file(d.join(".attempted")).unwrap();
    let rf = run(racefree(d)
        .args(["-n", "2", "--no-history"])
        .args(["--", "--reruns", "1", "--fail-on-flaky"])
        .env("PYTHONPATH", plugins_dir()));
    assert_eq!(rf.code, 1, "{}{}", rf.stdout, rf.stderr);
    assert!(!rf.stdout.contains("ERROR unit"), "{}", rf.stdout);
    assert!(rf.stdout.contains("3 passed, 1 flaky"), "{}", rf.stdout);
    // racefree's own setting wins; the unit's exit 7 is still no broken unit.
    std::fs::remove_file(d.join(".attempted")).unwrap();
    let rf = run(racefree(d)
        .args(["-n", "2", "--no-history", "--flaky-result", "pass"])
        .args([
            "--events",
            "rf.ndjson",
            "--",
            "--reruns",
            "1",
            "--fail-on-flaky",
        ])
        .env("PYTHONPATH", plugins_dir()));
    assert_eq!(rf.code, 0, "{}{}", rf.stdout, rf.stderr);
    assert!(!rf.stdout.contains("ERROR unit"), "{}", rf.stdout);
    let exits: Vec<i64> = events(&d.join("rf.ndjson"))
        .iter()
        .filter(|e| e["event"] == "unit_finished")
        .filter_map(|e| e["exit"]["code"].as_i64())
        .collect();
    assert!(exits.contains(&7), "{exits:?}");
}

/// A test's duration is measured in its process (racefree reads the plugin's messages in
/// batches) on a clock that a test faking time cannot reach: here one test replaces
/// `time.monotonic` and never puts it back, as a frozen clock left running would.
#[test]
fn durations_are_the_tests_own_even_after_a_test_fakes_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("test_clock.py"),
        "import time\n\n\n\
         def test_fakes_the_clock():\n    \
             time.monotonic = lambda: 1000.0\n\n\n\
         def test_sleeps():\n    \
             time.sleep(0.3)\n\n\n\
         def test_quick():\n    \
             pass\n",
    )
    .unwrap();
    let rf = run(racefree(d).args(["-n", "1", "--no-history", "--events", "rf.ndjson"]));
    assert_eq!(rf.code, 0, "{}{}", rf.stdout, rf.stderr);
    let ev = events(&d.join("rf.ndjson"));
    let duration = |name: &str| -> f64 {
        ev.iter()
            .find(|e| e["event"] == "test_finished" && e["nodeid"] == name)
            .and_then(|e| e["duration"].as_f64())
            .unwrap()
    };
    let slept = duration("test_clock.py::test_sleeps");
    assert!((0.3..2.0).contains(&slept), "{slept}");
    let quick = duration("test_clock.py::test_quick");
    assert!((0.0..0.2).contains(&quick), "{quick}");
}

/// A test that pytest-rerunfailures runs twice costs its file both attempts: the next run's
/// plan predicts the file from history with the failed attempt's time in it.
#[test]
fn a_files_reruns_count_in_its_predicted_time() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("test_slow_rerun.py"),
        "import time\nfrom pathlib import Path\n\n\n\
         def test_slow_then_fails_once():\n    \
             time.sleep(0.4)\n    \
             mark = Path(__file__).parent / '.attempted'\n    \
             if not mark.exists():\n        \
                 mark.touch()\n        \
                 assert False\n",
    )
    .unwrap();
    // Units of quick files, so that the start-up history learns is theirs (the median unit's).
    for name in ["test_quick_a.py", "test_quick_b.py"] {
        std::fs::write(d.join(name), "def test_quick():\n    pass\n").unwrap();
    }
    let first = run(racefree(d)
        .args(["-n", "1", "--", "--reruns", "1"])
        .env("PYTHONPATH", plugins_dir()));
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    let second = run(racefree(d).args(["-n", "1", "--events", "rf.ndjson"]));
    assert_eq!(second.code, 0, "{}{}", second.stdout, second.stderr);
    let ev = events(&d.join("rf.ndjson"));
    let unit = units_of(&ev, "test_slow_rerun.py");
    let predicted = unit[0]["predicted_secs"].as_f64().unwrap();
    // Two attempts of 0.4 s plus a quick unit's start-up; counting the last attempt alone
    // predicted about 0.4 s plus that start-up.
    assert!(predicted >= 0.8, "{predicted} {:?}", unit[0]);
}

/// What happens in an attempt that pytest-rerunfailures runs again belongs to that attempt: a
/// process killed in it makes the test crashed there (earlier attempts kept), a timeout marker
/// holds for it too, and `--retries 1` is still one fresh process more. Each test below fails
/// its first attempt in a process; the plugin's second one dies, hangs or fails again.
#[test]
fn reruns_that_crash_hang_or_keep_failing_are_told_apart() {
    let dir = fixture("reruns");
    let d = dir.path();
    let rf = run(racefree(d)
        .args(["more", "-n", "1", "--retries", "1", "--events", "rf.ndjson"])
        .args(["--", "--reruns", "1"])
        .env("PYTHONPATH", plugins_dir()));
    assert_eq!(rf.code, 1, "{}{}", rf.stdout, rf.stderr);
    let ev = events(&d.join("rf.ndjson"));
    let last = |name: &str| -> (serde_json::Value, Vec<(u64, String)>) {
        let id = format!("more/test_rerun_more.py::{name}");
        let done: Vec<&serde_json::Value> = ev
            .iter()
            .filter(|e| e["event"] == "test_finished" && e["nodeid"] == id.as_str())
            .collect();
        assert_eq!(done.len(), 1, "{id}: {done:?}");
        let earlier = done[0]["reruns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["attempt"].as_u64().unwrap(),
                    r["outcome"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        (done[0].clone(), earlier)
    };
    let attempts = |outcomes: [&str; 3]| -> Vec<(u64, String)> {
        (1..).zip(outcomes.iter().map(|o| o.to_string())).collect()
    };
    let (dies, earlier) = last("test_dies_when_run_again");
    assert_eq!(
        (&dies["outcome"], &dies["attempt"]),
        (&"crashed".into(), &4.into()),
        "{dies}"
    );
    assert_eq!(earlier, attempts(["failed", "crashed", "failed"]), "{dies}");
    let (hangs, earlier) = last("test_hangs_when_run_again");
    assert_eq!(
        (&hangs["outcome"], &hangs["attempt"]),
        (&"failed".into(), &4.into()),
        "{hangs}"
    );
    assert!(
        hangs["message"]
            .as_str()
            .unwrap()
            .contains("timeout after 1"),
        "{hangs}"
    );
    assert_eq!(earlier, attempts(["failed", "failed", "failed"]), "{hangs}");
    let (fails, earlier) = last("test_always_fails_too");
    assert_eq!(
        (&fails["outcome"], &fails["attempt"]),
        (&"failed".into(), &4.into()),
        "{fails}"
    );
    assert_eq!(earlier, attempts(["failed", "failed", "failed"]), "{fails}");
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

/// The `unit_started` events of units that ran (part of) `file` alone.
fn units_of<'a>(events: &'a [serde_json::Value], file: &str) -> Vec<&'a serde_json::Value> {
    events
        .iter()
        .filter(|e| e["event"] == "unit_started" && e["files"] == serde_json::json!([file]))
        .collect()
}

/// What each test of the `split` fixture ends with; `extra` are tests added since.
fn split_expected(extra: &[&str]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = (0..40)
        .map(|i| {
            let outcome = match i {
                7 => "failed",
                9 => "skipped",
                _ => "passed",
            };
            (
                format!("tests/test_big.py::test_v[{i}]"),
                outcome.to_string(),
            )
        })
        .collect();
    for id in [
        "tests/test_small_a.py::test_a1",
        "tests/test_small_a.py::test_a2",
        "tests/test_small_b.py::test_b1",
    ]
    .iter()
    .chain(extra)
    {
        out.push((id.to_string(), "passed".to_string()));
    }
    out.sort();
    out
}

/// A file holding most of the suite's time is split over both slots once history knows its
/// tests; a test added to it since still runs, exactly once; `--no-split` keeps it whole.
#[test]
fn a_long_file_is_split_over_the_slots() {
    let dir = fixture("split");
    let d = dir.path();
    let big = "tests/test_big.py";
    // The first run fills history; nothing is known yet, so nothing is split.
    let first = run(racefree(d).args(["-n", "2", "--events", "e1.ndjson"]));
    assert_eq!(first.code, 1, "{}{}", first.stdout, first.stderr);
    let ev = events(&d.join("e1.ndjson"));
    assert_eq!(units_of(&ev, big).len(), 1);
    assert_eq!(finished(&ev), split_expected(&[]));

    // A test history has never seen: it must run in the exclusion chunk.
    let mut text = std::fs::read_to_string(d.join(big)).unwrap();
    text.push_str("\n\ndef test_added_since():\n    pass\n");
    std::fs::write(d.join(big), text).unwrap();
    let added = "tests/test_big.py::test_added_since";

    for (name, extra) in [("fork", vec![]), ("no-fork", vec!["--no-fork"])] {
        let log = format!("{name}.ndjson");
        let rf = run(racefree(d)
            .args([
                "-n",
                "2",
                "--plain",
                "--junit-xml",
                "rf.xml",
                "--events",
                &log,
            ])
            .args(&extra));
        assert_eq!(rf.code, 1, "{name}\n{}{}", rf.stdout, rf.stderr);
        let ev = events(&d.join(&log));
        let chunks = units_of(&ev, big);
        assert!(chunks.len() >= 2, "{name}: {chunks:?}");
        let k = chunks.len();
        let mut indexes: Vec<u64> = chunks
            .iter()
            .map(|u| {
                assert_eq!(u["reason"], "planned", "{u}");
                assert_eq!(u["chunk"]["of"], k as u64, "{u}");
                u["chunk"]["index"].as_u64().unwrap()
            })
            .collect();
        indexes.sort();
        assert_eq!(indexes, (1..=k as u64).collect::<Vec<_>>());
        // Longest first: the chunks are the first units started, one per slot, so they run
        // at the same time (each started before any unit finished).
        let started: Vec<&serde_json::Value> = ev
            .iter()
            .filter(|e| e["event"] == "unit_started")
            .take(2)
            .collect();
        assert!(
            started.iter().all(|u| u["chunk"].is_object()),
            "{started:?}"
        );
        assert_ne!(started[0]["slot"], started[1]["slot"]);
        let first_finish = ev
            .iter()
            .position(|e| e["event"] == "unit_finished")
            .unwrap();
        let second_start = ev.iter().position(|e| e == started[1]).unwrap();
        assert!(
            second_start < first_finish,
            "{name}: chunks did not overlap"
        );
        // Every test exactly once, with its outcome; the added test too.
        assert_eq!(finished(&ev), split_expected(&[added]), "{name}");
        let totals = &ev.last().unwrap()["totals"];
        assert_eq!(
            (
                &totals["passed"],
                &totals["failed"],
                &totals["skipped"],
                &totals["deselected"]
            ),
            (
                &serde_json::json!(42),
                &serde_json::json!(1),
                &serde_json::json!(1),
                &serde_json::json!(0)
            ),
            "{name}"
        );
        assert_eq!(junit_results(&d.join("rf.xml")).len(), 44, "{name}");
        assert!(
            summary_counts(&rf.stdout).starts_with("1 failed, 42 passed, 1 skipped"),
            "{}",
            rf.stdout
        );
        assert!(rf.stdout.contains("tests/test_big.py [1/"), "{}", rf.stdout);
    }

    // A chunk whose process dies resumes its remaining tests by node id: still every test
    // exactly once.
    let rf = run(racefree(d)
        .args(["-n", "2", "--events", "crash.ndjson"])
        .env("SPLIT_CRASH_AT", "20"));
    assert_eq!(rf.code, 1, "{}{}", rf.stdout, rf.stderr);
    let ev = events(&d.join("crash.ndjson"));
    let units = units_of(&ev, big);
    assert!(units.iter().filter(|u| u["chunk"].is_object()).count() >= 2);
    assert!(units.iter().any(|u| u["reason"] == "resume"), "{units:?}");
    let mut expected = split_expected(&[added]);
    for (id, outcome) in &mut expected {
        if id == "tests/test_big.py::test_v[20]" {
            *outcome = "crashed".into();
        }
    }
    assert_eq!(finished(&ev), expected);

    // -k deselects within each chunk: every deselected test is counted once.
    let rf = run(racefree(d).args(["-n", "2", "-k", "not v[13]", "--events", "k.ndjson"]));
    assert_eq!(rf.code, 1, "{}{}", rf.stdout, rf.stderr);
    let ev = events(&d.join("k.ndjson"));
    assert!(units_of(&ev, big).len() >= 2);
    assert_eq!(ev.last().unwrap()["totals"]["deselected"], 1);
    assert_eq!(finished(&ev).len(), 43);

    // Opting out keeps the file in one process, by flag and by configuration.
    let rf = run(racefree(d).args(["-n", "2", "--no-split", "--events", "off.ndjson"]));
    assert_eq!(rf.code, 1, "{}{}", rf.stdout, rf.stderr);
    let ev = events(&d.join("off.ndjson"));
    let units = units_of(&ev, big);
    assert_eq!(units.len(), 1, "{units:?}");
    assert!(units[0]["chunk"].is_null());
    assert_eq!(finished(&ev), split_expected(&[added]));
    // pytest-xdist's --dist loadfile and loadscope keep a file's tests in one worker.
    for dist in ["loadfile", "loadscope"] {
        let rf =
            run(racefree(d).args(["-n", "2", "--events", "dist.ndjson", "--", "--dist", dist]));
        assert_eq!(rf.code, 1, "{dist}: {}{}", rf.stdout, rf.stderr);
        let units = events(&d.join("dist.ndjson"));
        assert_eq!(units_of(&units, big).len(), 1, "{dist}");
    }
    std::fs::write(d.join("pyproject.toml"), "[tool.racefree]\nsplit = false\n").unwrap();
    let rf = run(racefree(d).args(["-n", "2", "--events", "cfg.ndjson"]));
    assert_eq!(rf.code, 1, "{}{}", rf.stdout, rf.stderr);
    assert_eq!(units_of(&events(&d.join("cfg.ndjson")), big).len(), 1);
    std::fs::write(
        d.join("pyproject.toml"),
        "[tool.racefree]\nsplit = \"no\"\n",
    )
    .unwrap();
    let rf = run(racefree(d).args(["-n", "2"]));
    assert_eq!(rf.code, 4, "{}{}", rf.stdout, rf.stderr);
    assert!(rf.stderr.contains("split"), "{}", rf.stderr);

    // A node id the user names keeps its own selection: the file is not split.
    std::fs::remove_file(d.join("pyproject.toml")).unwrap();
    let rf = run(racefree(d).args([
        "-n",
        "2",
        "tests/test_big.py::test_v",
        "--events",
        "ids.ndjson",
    ]));
    assert_eq!(rf.code, 1, "{}{}", rf.stdout, rf.stderr);
    let ev = events(&d.join("ids.ndjson"));
    assert_eq!(units_of(&ev, big).len(), 1);
    assert_eq!(finished(&ev).len(), 40);

    // A split file that no longer imports: every chunk collects it, the error is reported once.
    let good = std::fs::read_to_string(d.join(big)).unwrap();
    std::fs::write(
        d.join(big),
        format!("{good}\nimport no_such_module_anywhere\n"),
    )
    .unwrap();
    let rf = run(racefree(d).args(["-n", "2", "--events", "broken.ndjson"]));
    assert_eq!(rf.code, 2, "{}{}", rf.stdout, rf.stderr);
    let ev = events(&d.join("broken.ndjson"));
    assert!(units_of(&ev, big).len() >= 2);
    let errors: Vec<&serde_json::Value> = ev
        .iter()
        .filter(|e| e["event"] == "collect_error")
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(ev.last().unwrap()["collect_errors"], 1);
    // One ERRORS section and one summary line, as pytest shows for one broken file.
    let sections = rf
        .stdout
        .matches(" ERROR collecting tests/test_big.py _")
        .count();
    let lines = rf
        .stdout
        .lines()
        .filter(|l| *l == "ERROR tests/test_big.py")
        .count();
    assert_eq!((sections, lines), (1, 1), "{}", rf.stdout);
    // The progress total counts what the chunks collected, once.
    assert!(
        rf.stdout.contains("[4/4 units, 3/3 tests]"),
        "{}",
        rf.stdout
    );
    std::fs::write(d.join(big), good).unwrap();
}

/// A pytest process that exits 1 (pytest's "tests failed") before collecting anything (here a
/// conftest file that ends the process as it is loaded) ran nothing of its files: the run must
/// say so, not report the other files' results alone.
#[test]
fn a_process_that_exits_1_before_collecting_is_an_error() {
    let dir = suite(&[]);
    let d = dir.path();
    std::fs::write(d.join("test_fine.py"), "def test_fine():\n    pass\n").unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    std::fs::write(d.join("sub/conftest.py"), "import os\nos._exit(1)\n").unwrap();
    std::fs::write(d.join("sub/test_lost.py"), "def test_lost():\n    pass\n").unwrap();
    for mode in [None, Some("--no-fork")] {
        let mut cmd = racefree(d);
        cmd.args(["--no-history", "--unit", "file"]).args(mode);
        let rf = run(&mut cmd);
        assert_eq!(rf.code, 2, "{mode:?}: {}{}", rf.stdout, rf.stderr);
        assert!(
            rf.stdout.contains("before collecting any test")
                || rf.stderr.contains("before collecting any test"),
            "{mode:?}: {}{}",
            rf.stdout,
            rf.stderr
        );
    }
    // Ending the process from a conftest's pytest_sessionfinish (a known cure for threads
    // that keep an interpreter from exiting) is pytest's business: every test reported.
    std::fs::remove_dir_all(d.join("sub")).unwrap();
    std::fs::write(
        d.join("conftest.py"),
        "import os\n\ndef pytest_sessionfinish(session, exitstatus):\n    os._exit(int(exitstatus))\n",
    )
    .unwrap();
    for mode in [None, Some("--no-fork")] {
        let mut cmd = racefree(d);
        cmd.args(["--no-history", "--unit", "file"]).args(mode);
        let rf = run(&mut cmd);
        assert_eq!(rf.code, 0, "{mode:?}: {}{}", rf.stdout, rf.stderr);
        assert!(rf.stdout.contains("1 passed"), "{mode:?}: {}", rf.stdout);
    }
}

#[test]
fn what_pytest_is_given_after_the_double_dash_is_read_as_pytest_reads_it() {
    // Paths after `--` were handed to every unit, which ran them again beside its own file;
    // `-o`/`-c` after `--` changed what units read but not what racefree's discovery found.
    let dir = suite(&[
        (
            "tests/test_a.py",
            "def test_a1():\n    pass\n\ndef test_a2():\n    pass\n",
        ),
        ("tests/test_b.py", "def test_b():\n    pass\n"),
        ("tests/check_c.py", "def test_c():\n    pass\n"),
        ("ci.ini", "[pytest]\npython_files = check_*.py\n"),
    ]);
    let d = dir.path();
    for args in [
        vec!["tests/test_a.py"],
        vec!["-k", "a1", "tests/test_a.py::test_a1", "tests/test_b.py"],
        vec!["-o", "python_files=check_*.py"],
        vec!["-c", "ci.ini"],
        vec!["-c=ci.ini"],
        vec!["-q", "--", "tests/test_b.py"],
    ] {
        let py = run(pytest(d).args(&args).args(["--junitxml", "py.xml"]));
        for mode in [None, Some("--no-fork")] {
            let rf = run(racefree(d)
                .args(["-n", "2", "--junit-xml", "rf.xml"])
                .args(mode)
                .arg("--")
                .args(&args));
            assert_eq!(
                rf.code, py.code,
                "{args:?} {mode:?}: {}{}",
                rf.stdout, rf.stderr
            );
            assert_eq!(
                junit_results(&d.join("rf.xml")),
                junit_results(&d.join("py.xml")),
                "{args:?} {mode:?}"
            );
        }
    }
    // A plugin option racefree does not know, before an existing path: which it is cannot
    // be told, so it is refused by name, with the two ways to say it.
    let rf = run(racefree(d).args(["--", "--my-plugin-flag", "tests"]));
    assert_eq!(rf.code, 4, "{}{}", rf.stdout, rf.stderr);
    assert!(
        one_line(&rf.stderr).contains("write `--my-plugin-flag=tests`; if it is a path to test, give it to racefree before `--`"),
        "{}",
        rf.stderr
    );
    // A path in PYTEST_ADDOPTS or addopts, which every unit's pytest reads, is refused too.
    let rf = run(racefree(d).env("PYTEST_ADDOPTS", "-q tests/test_b.py"));
    assert_eq!(rf.code, 4, "{}{}", rf.stdout, rf.stderr);
    assert!(
        one_line(&rf.stderr).contains("PYTEST_ADDOPTS names `tests/test_b.py` to test"),
        "{}",
        rf.stderr
    );
    // `-o` in addopts counts too, and the command line's wins over it.
    std::fs::write(
        d.join("pytest.ini"),
        "[pytest]\naddopts = -o python_files=check_*.py\n",
    )
    .unwrap();
    for (args, tests) in [(vec![], 1), (vec!["-o", "python_files=test_*.py"], 3)] {
        let rf = run(racefree(d).args(["-q", "--"]).args(&args));
        assert_eq!(rf.code, 0, "{args:?}: {}{}", rf.stdout, rf.stderr);
        assert!(
            rf.stdout.contains(&format!("{tests} passed")),
            "{args:?}: {}",
            rf.stdout
        );
    }
    // Test files outside the rootdir `--rootdir` names would not get pytest's ids: refused.
    std::fs::create_dir(d.join("elsewhere")).unwrap();
    let rf = run(racefree(d).args(["--", "--rootdir=elsewhere"]));
    assert_eq!(rf.code, 4, "{}{}", rf.stdout, rf.stderr);
    assert!(
        one_line(&rf.stderr).contains("outside pytest's rootdir"),
        "{}",
        rf.stderr
    );
    std::fs::write(
        d.join("pytest.ini"),
        "[pytest]\naddopts = -q tests/test_b.py\n",
    )
    .unwrap();
    let rf = run(&mut racefree(d));
    assert_eq!(rf.code, 4, "{}{}", rf.stdout, rf.stderr);
    let said = one_line(&rf.stderr);
    assert!(
        said.replace(' ', "")
            .contains("pytest.ininames`tests/test_b.py`totest")
            && said.contains("testpaths"),
        "{said}"
    );
}

#[test]
fn with_capturing_off_what_tests_print_is_shown_without_pytests_own_report() {
    // `-- -s` ran with capturing off, but what the tests printed went nowhere.
    let dir = suite(&[
        (
            "test_a.py",
            "import sys\n\ndef test_a():\n    print('printed by a')\n    sys.stderr.write('to stderr by a\\n')\n",
        ),
        (
            "test_b.py",
            "def test_b():\n    print('printed by b', end='')\n",
        ),
    ]);
    let d = dir.path();
    for mode in [None, Some("--no-fork")] {
        for flag in ["-s", "--capture=no", "--capture=tee-sys"] {
            let rf = run(racefree(d)
                .args(["-n", "2", "--events", "rf.ndjson"])
                .args(mode)
                .args(["--", flag]));
            assert_eq!(rf.code, 0, "{flag} {mode:?}: {}{}", rf.stdout, rf.stderr);
            assert!(
                rf.stdout.contains("printed by a\n"),
                "{flag} {mode:?}: {}",
                rf.stdout
            );
            assert!(
                rf.stdout.contains("printed by b"),
                "{flag} {mode:?}: {}",
                rf.stdout
            );
            assert!(
                rf.stderr.contains("to stderr by a\n"),
                "{flag} {mode:?}: {}",
                rf.stderr
            );
            // The units' own pytest report is racefree's to give, once.
            assert!(!rf.stdout.contains("test session starts"), "{}", rf.stdout);
            assert!(!rf.stdout.contains("1 passed in"), "{}", rf.stdout);
            let shown: Vec<_> = events(&d.join("rf.ndjson"))
                .into_iter()
                .filter(|e| e["event"] == "output")
                .collect();
            assert!(
                shown
                    .iter()
                    .any(|e| e["stream"] == "stderr" && e["text"] == "to stderr by a\n"),
                "{shown:?}"
            );
        }
    }
    // Captured (pytest's default), nothing is passed on.
    let rf = run(racefree(d).args(["-n", "2"]));
    assert!(!rf.stdout.contains("printed by"), "{}", rf.stdout);
}

#[test]
fn racefree_knows_which_of_pytests_own_options_take_a_value() {
    // racefree tells paths after `--` from option values with its own copy of pytest's
    // option table: it must be the interpreter's pytest's.
    let script = "from _pytest.config import get_config\n\
        p = get_config()._parser\n\
        opts = list(p._anonymous.options) + [o for g in p._groups for o in g.options]\n\
        for o in opts:\n\
        \x20   a = o.attrs()\n\
        \x20   takes = a.get('action', 'store') in ('store', 'append') and a.get('nargs') != 0\n\
        \x20   for n in o.names():\n\
        \x20       if n.startswith('--'):\n\
        \x20           print(n, int(takes), int(a.get('nargs') == '?'))\n";
    let out = run(Command::new(python()).args(["-c", script]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let pytests: BTreeSet<String> = out.stdout.lines().map(str::to_string).collect();
    let ours: BTreeSet<String> = racefree_runner::pytest_argv::pytest_long_options()
        .map(|(name, takes, maybe)| format!("{name} {} {}", takes as u8, maybe as u8))
        .collect();
    assert_eq!(
        ours.symmetric_difference(&pytests).collect::<Vec<_>>(),
        Vec::<&String>::new()
    );
}

#[test]
fn last_failed_keeps_to_the_node_ids_it_is_given_as_in_pytest() {
    // --lf with node ids replaced their selection with every failed test of their file: a
    // given id that had passed ran the file's failures instead of itself.
    let dir = suite(&[(
        "tests/test_a.py",
        "def test_ok():\n    pass\n\ndef test_bad():\n    assert 0\n\n\
         class TestC:\n    def test_m(self):\n        assert 0\n\n    def test_n(self):\n        pass\n",
    )]);
    let d = dir.path();
    // pytest's --lf needs its cache, which the `pytest` helper turns off.
    let pytest_lf = |args: &[&str]| {
        run(Command::new(python())
            .current_dir(d)
            .args(["-m", "pytest", "--junitxml", "py.xml"])
            .args(args))
    };
    assert_eq!(pytest_lf(&[]).code, 1);
    assert_eq!(run(racefree(d).arg("-n").arg("2")).code, 1);
    for given in [
        vec!["tests/test_a.py::test_ok"],
        vec!["tests/test_a.py::TestC"],
        vec!["tests/test_a.py::test_ok", "tests/test_a.py::test_bad"],
        vec!["tests/test_a.py"],
    ] {
        let mut args = vec!["--lf"];
        args.extend(&given);
        let py = pytest_lf(&args);
        let rf = run(racefree(d)
            .args(["-n", "2", "--junit-xml", "rf.xml"])
            .args(&args));
        assert_eq!(rf.code, py.code, "{given:?}: {}{}", rf.stdout, rf.stderr);
        assert_eq!(
            junit_results(&d.join("rf.xml")),
            junit_results(&d.join("py.xml")),
            "{given:?}"
        );
    }
}

/// (testcase name, the message of its failure or error) for each test that has one.
fn junit_messages(path: &Path) -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    doc.descendants()
        .filter(|n| n.has_tag_name("failure") || n.has_tag_name("error"))
        .map(|n| {
            let case = n.parent().unwrap();
            (
                case.attribute("name").unwrap().to_string(),
                n.attribute("message").unwrap_or("").trim_end().to_string(),
            )
        })
        .collect()
}

#[test]
fn failure_messages_in_junit_are_pytests_for_doctests_too() {
    // A doctest's failure has no crash line; pytest's JUnit then gives the whole report as
    // the message, where racefree's was empty.
    let dir = suite(&[
        ("test_doc.txt", ">>> 1 + 1\n3\n"),
        (
            "mod.py",
            "def f():\n    \"\"\"\n    >>> f()\n    2\n    \"\"\"\n    return 1\n",
        ),
        (
            "test_x.py",
            "def test_x():\n    assert 1 == 2, 'one is not two'\n",
        ),
    ]);
    let d = dir.path();
    let py = run(pytest(d).args(["--doctest-modules", "--junitxml", "py.xml"]));
    assert_eq!(py.code, 1, "{}", py.stdout);
    let rf = run(racefree(d).args(["--junit-xml", "rf.xml", "--", "--doctest-modules"]));
    assert_eq!(rf.code, 1, "{}{}", rf.stdout, rf.stderr);
    let ours = junit_messages(&d.join("rf.xml"));
    assert_eq!(ours, junit_messages(&d.join("py.xml")));
    assert_eq!(ours.len(), 3, "{ours:?}");
}

#[test]
fn warnings_of_the_configuration_and_conftests_are_counted_once_per_run() {
    // Every unit reads the configuration and imports the conftest: their warnings were
    // counted once per unit ("6 warnings" where pytest says 2).
    let dir = suite(&[
        (
            "conftest.py",
            "import warnings\nwarnings.warn('from conftest', UserWarning)\n",
        ),
        (
            "test_a.py",
            "import warnings\n\ndef test_a():\n    warnings.warn('in a test')\n",
        ),
        // Warnings at a test module's import are each file's own: counted each time.
        (
            "test_b.py",
            "import warnings\nwarnings.warn('at import')\n\ndef test_b():\n    pass\n",
        ),
        (
            "test_c.py",
            "import warnings\nwarnings.warn('at import')\n\ndef test_c():\n    pass\n",
        ),
    ]);
    let d = dir.path();
    std::fs::write(d.join("pytest.ini"), "[pytest]\nunknown_key = 1\n").unwrap();
    let py = run(pytest(d).arg("-q"));
    assert!(py.stdout.contains("3 passed, 5 warnings"), "{}", py.stdout);
    for mode in [None, Some("--no-fork")] {
        let rf = run(racefree(d)
            .args(["-n", "2", "--events", "rf.ndjson"])
            .args(mode));
        assert_eq!(rf.code, 0, "{mode:?}: {}{}", rf.stdout, rf.stderr);
        assert!(
            rf.stdout.contains("3 passed, 5 warnings"),
            "{mode:?}: {}",
            rf.stdout
        );
        let ev = events(&d.join("rf.ndjson"));
        assert_eq!(ev.last().unwrap()["totals"]["warnings"], 5, "{mode:?}");
    }
}

#[test]
fn xdists_recipe_for_a_session_fixture_that_runs_once_per_run_works() {
    // pytest-xdist's documented recipe keeps a session fixture's result, under a file lock,
    // in `tmp_path_factory.getbasetemp().parent`, which its workers share. Each slot had a
    // parent of its own, so the "once" ran once per slot.
    let conftest = "import fcntl, json, os\nimport pytest\n\n\
        @pytest.fixture(scope='session')\n\
        def data(tmp_path_factory):\n\
        \x20   root = tmp_path_factory.getbasetemp().parent\n\
        \x20   with open(root / 'data.lock', 'w') as lock:\n\
        \x20       fcntl.flock(lock, fcntl.LOCK_EX)\n\
        \x20       made = root / 'data.json'\n\
        \x20       if not made.exists():\n\
        \x20           with open(os.environ['PRODUCED_LOG'], 'a') as log:\n\
        \x20               log.write('made\\n')\n\
        \x20           made.write_text(json.dumps({'value': 42}))\n\
        \x20       return json.loads(made.read_text())\n";
    let test = "def test_uses(data):\n    assert data['value'] == 42\n";
    let dir = suite(&[
        ("conftest.py", conftest),
        ("test_a.py", test),
        ("test_b.py", test),
        ("test_c.py", test),
        ("test_d.py", test),
    ]);
    let d = dir.path();
    let log = d.join("produced.log");
    for mode in [None, Some("--no-fork")] {
        let _ = std::fs::remove_file(&log);
        let rf = run(racefree(d)
            .args(["-n", "2", "--unit", "file"])
            .args(mode)
            .env("PRODUCED_LOG", &log));
        assert_eq!(rf.code, 0, "{mode:?}: {}{}", rf.stdout, rf.stderr);
        assert!(rf.stdout.contains("4 passed"), "{}", rf.stdout);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "made\n", "{mode:?}");
    }
}

#[test]
fn the_cache_fixture_works_but_pytests_last_failed_state_is_left_alone() {
    // racefree ran pytest with -p no:cacheprovider: a test using the `cache` fixture errored
    // with "fixture 'cache' not found", where pytest and xdist's workers pass.
    let dir = suite(&[
        (
            "test_a.py",
            "def test_cache(cache):\n    cache.set('racefree/x', 1)\n    assert cache.get('racefree/x', 0) == 1\n",
        ),
        ("test_b.py", "def test_fails():\n    assert 0\n"),
    ]);
    let d = dir.path();
    for mode in [None, Some("--no-fork")] {
        let rf = run(racefree(d).args(["-n", "2"]).args(mode));
        assert_eq!(rf.code, 1, "{mode:?}: {}{}", rf.stdout, rf.stderr);
        assert!(
            rf.stdout.contains("1 failed, 1 passed"),
            "{mode:?}: {}",
            rf.stdout
        );
    }
    // Each unit saw a share of the tests: pytest's own last-failed state is not written.
    let cache = d.join(".pytest_cache").join("v");
    assert!(cache.join("racefree").join("x").is_file());
    assert!(!cache.join("cache").join("lastfailed").exists());
    assert!(!cache.join("cache").join("nodeids").exists());
}

#[test]
fn a_collection_error_ends_the_run_as_it_ends_pytests_session() {
    // With --continue-on-collection-errors, or -x reached by collection errors alone, pytest
    // counts them as failures (exit 1); racefree exited 2 whatever it was told.
    let dir = suite(&[
        ("test_bad.py", "import nonexistent_module_for_racefree\n"),
        ("test_ok.py", "def test_ok():\n    pass\n"),
    ]);
    let d = dir.path();
    for args in [
        vec![],
        vec!["--continue-on-collection-errors"],
        vec!["-x"],
        vec!["--maxfail=2"],
        vec!["-x", "--continue-on-collection-errors"],
    ] {
        let py = run(pytest(d).args(&args));
        let rf = run(racefree(d).args(["-n", "2", "--"]).args(&args));
        assert_eq!(rf.code, py.code, "{args:?}: {}{}", rf.stdout, rf.stderr);
    }
}

#[test]
fn junit_counts_a_teardown_error_as_pytest_does_with_each_outcome_alone() {
    // The outcomes fixture has a pass and a failure with teardown errors, whose count errors
    // cancelled out; alone, each was off by one test.
    let dir = suite(&[(
        "test_td.py",
        "import pytest\n\n@pytest.fixture\ndef bad_teardown():\n    yield\n    raise RuntimeError('teardown boom')\n\n\
         def test_fail_td(bad_teardown):\n    assert 0\n\ndef test_pass_td(bad_teardown):\n    pass\n\n\
         @pytest.mark.skip(reason='no')\ndef test_skip_td(bad_teardown):\n    pass\n\n\
         @pytest.fixture\ndef bad_setup(bad_teardown):\n    raise RuntimeError('setup boom')\n\n\
         def test_error_td(bad_setup):\n    pass\n",
    )]);
    let d = dir.path();
    for k in ["pass_td", "fail_td", "skip_td", "error_td", "td"] {
        let py = run(pytest(d).args(["-k", k, "--junitxml", "py.xml"]));
        let rf = run(racefree(d).args(["-k", k, "--junit-xml", "rf.xml"]));
        assert_eq!(rf.code, py.code, "{k}: {}{}", rf.stdout, rf.stderr);
        assert_eq!(
            junit_counts(&d.join("rf.xml")),
            junit_counts(&d.join("py.xml")),
            "-k {k}"
        );
    }
}

#[test]
fn tests_a_conftest_collects_from_other_files_run_as_under_pytest() {
    // A conftest's pytest_collect_file (YAML specs, say) collects tests racefree's discovery
    // cannot see: they were silently not run, and a failing suite passed.
    let conftest = "import pytest\n\n\
        def pytest_collect_file(parent, file_path):\n\
        \x20   if file_path.suffix == '.yaml' and file_path.name.startswith('test'):\n\
        \x20       return YamlFile.from_parent(parent, path=file_path)\n\n\
        class YamlFile(pytest.File):\n\
        \x20   def collect(self):\n\
        \x20       for line in self.path.read_text().splitlines():\n\
        \x20           name, value = line.split(':')\n\
        \x20           yield YamlItem.from_parent(self, name=name.strip(), value=value.strip())\n\n\
        class YamlItem(pytest.Item):\n\
        \x20   def __init__(self, *, value, **kw):\n\
        \x20       super().__init__(**kw)\n\
        \x20       self.value = value\n\n\
        \x20   def runtest(self):\n\
        \x20       assert self.value == 'ok'\n";
    let dir = suite(&[
        ("conftest.py", conftest),
        ("test_spec.yaml", "a: ok\nb: bad\n"),
        ("test_a.py", "def test_a():\n    pass\n"),
        ("sub/test_more.yaml", "c: ok\n"),
        ("sub/test_s.py", "def test_s():\n    pass\n"),
        ("sub/notes.yaml", "not: a test\n"),
    ]);
    let d = dir.path();
    let py = run(pytest(d).args(["--junitxml", "py.xml"]));
    assert_eq!(py.code, 1, "{}", py.stdout);
    for mode in [None, Some("--no-fork")] {
        // Twice: without history, then planned from it.
        for _ in 0..2 {
            let rf = run(racefree(d)
                .args(["-n", "2", "--junit-xml", "rf.xml"])
                .args(mode));
            assert_eq!(rf.code, 1, "{mode:?}: {}{}", rf.stdout, rf.stderr);
            assert_eq!(
                junit_results(&d.join("rf.xml")),
                junit_results(&d.join("py.xml")),
                "{mode:?}"
            );
        }
    }
    // A collector that finds nothing costs nothing but its unit.
    std::fs::remove_file(d.join("test_spec.yaml")).unwrap();
    std::fs::remove_file(d.join("sub/test_more.yaml")).unwrap();
    let py = run(pytest(d).args(["--junitxml", "py.xml"]));
    let rf = run(racefree(d).args(["-n", "2", "--junit-xml", "rf.xml"]));
    assert_eq!((rf.code, py.code), (0, 0), "{}{}", rf.stdout, rf.stderr);
    assert_eq!(
        junit_results(&d.join("rf.xml")),
        junit_results(&d.join("py.xml"))
    );
}

#[test]
fn a_keyboard_interrupt_raised_in_a_test_interrupts_the_run_as_pytests_session() {
    // It was reported as a crash, the rest of the unit resumed and the run went on.
    let dir = suite(&[
        (
            "test_a.py",
            "def test_k():\n    raise KeyboardInterrupt\n\ndef test_after():\n    pass\n",
        ),
        ("test_b.py", "def test_b():\n    pass\n"),
    ]);
    let d = dir.path();
    let py = run(pytest(d).arg("test_a.py"));
    assert_eq!(py.code, 2, "{}", py.stdout);
    for mode in [None, Some("--no-fork")] {
        let rf = run(racefree(d).args(["-n", "1", "test_a.py"]).args(mode));
        assert_eq!(rf.code, 2, "{mode:?}: {}{}", rf.stdout, rf.stderr);
        assert!(
            rf.stdout.contains("KeyboardInterrupt in test_a.py::test_k"),
            "{mode:?}: {}",
            rf.stdout
        );
        assert!(!rf.stdout.contains("crashed"), "{mode:?}: {}", rf.stdout);
        assert!(!rf.stdout.contains("1 passed"), "{mode:?}: {}", rf.stdout);
    }
}

#[test]
fn arguments_pytest_refuses_stop_the_run_with_pytests_message_once() {
    // Every unit exited 4 with pytest's usage message, and each was retried as an
    // infrastructure failure: dozens of the same blocks for one typo.
    let dir = suite(&[
        ("test_a.py", "def test_a():\n    pass\n"),
        ("test_b.py", "def test_b():\n    pass\n"),
        ("test_c.py", "def test_c():\n    pass\n"),
    ]);
    let d = dir.path();
    for (args, says) in [
        (
            vec!["--nonexistent-opt"],
            "unrecognized arguments: --nonexistent-opt",
        ),
        (vec!["-k", "bad(("], "Wrong expression passed to '-k'"),
        (
            vec!["-p", "no_such_plugin_racefree"],
            "no_such_plugin_racefree",
        ),
    ] {
        for mode in [None, Some("--no-fork")] {
            let py = run(pytest(d).args(&args));
            let rf = run(racefree(d)
                .args(["-n", "2"])
                .args(mode)
                .arg("--")
                .args(&args));
            assert_eq!(
                rf.code, py.code,
                "{args:?} {mode:?}: {}{}",
                rf.stdout, rf.stderr
            );
            let all = format!("{}{}", rf.stdout, rf.stderr);
            assert!(all.contains("pytest refused the run's arguments"), "{all}");
            assert!(all.contains(says), "{all}");
            assert!(!all.contains("INFRA"), "{args:?} {mode:?}: {all}");
        }
    }
}

#[test]
fn errors_in_setup_and_teardown_show_what_the_test_printed_as_pytest_does() {
    let dir = suite(&[(
        "test_e.py",
        "import pytest\n\n\
         @pytest.fixture\ndef broken_setup():\n    print('said in setup')\n    raise RuntimeError('setup boom')\n\n\
         @pytest.fixture\ndef broken_teardown():\n    yield\n    print('said in teardown')\n    raise RuntimeError('teardown boom')\n\n\
         def test_setup(broken_setup):\n    pass\n\n\
         def test_teardown(broken_teardown):\n    print('said in call')\n",
    )]);
    let d = dir.path();
    let py = run(pytest(d).arg("-q"));
    let rf = run(racefree(d).arg("-q"));
    assert_eq!(rf.code, py.code, "{}{}", rf.stdout, rf.stderr);
    for said in [
        "Captured stdout setup",
        "said in setup",
        "Captured stdout teardown",
        "said in teardown",
        "said in call",
    ] {
        assert!(py.stdout.contains(said), "pytest: {said}: {}", py.stdout);
        assert!(rf.stdout.contains(said), "racefree: {said}: {}", rf.stdout);
    }
}

#[test]
fn pytests_own_tb_no_and_durations_shape_the_report() {
    let dir = suite(&[(
        "test_f.py",
        "def test_fails():\n    assert 1 == 2\n\ndef test_ok():\n    pass\n",
    )]);
    let d = dir.path();
    let rf = run(racefree(d).args(["--", "--tb=no", "--durations", "1"]));
    assert_eq!(rf.code, 1, "{}{}", rf.stdout, rf.stderr);
    assert!(!rf.stdout.contains("= FAILURES ="), "{}", rf.stdout);
    assert!(
        rf.stdout.contains("FAILED test_f.py::test_fails"),
        "{}",
        rf.stdout
    );
    assert!(rf.stdout.contains("slowest 1 durations"), "{}", rf.stdout);
    let rf = run(racefree(d).args(["--", "--durations=x"]));
    assert_eq!(rf.code, 4, "{}{}", rf.stdout, rf.stderr);
    // As pytest's: tests faster than --durations-min (0.005 s unless -vv) go unnamed, in one
    // line; a bad value is a usage error.
    let slow = suite(&[(
        "test_s.py",
        "import time\n\ndef test_slow():\n    time.sleep(0.3)\n\ndef test_quick():\n    pass\n",
    )]);
    let s = slow.path();
    let rf = run(racefree(s).args(["--", "--durations=0"]));
    assert_eq!(rf.code, 0, "{}{}", rf.stdout, rf.stderr);
    let listed = |stdout: &str| -> Vec<String> {
        stdout
            .lines()
            .skip_while(|l| !l.contains("slowest durations"))
            .skip(1)
            .take_while(|l| !l.starts_with('='))
            .map(|l| match l.split_once("s ") {
                Some((secs, id)) if secs.parse::<f64>().is_ok() => id.to_string(),
                _ => l.to_string(),
            })
            .collect()
    };
    assert_eq!(
        listed(&rf.stdout),
        [
            "test_s.py::test_slow",
            "",
            "(1 durations < 0.005s hidden.  Use -vv to show these durations.)"
        ],
        "{}",
        rf.stdout
    );
    let rf = run(racefree(s).args(["--", "--durations=0", "--durations-min=0.1"]));
    assert_eq!(
        listed(&rf.stdout),
        ["test_s.py::test_slow", "", "(1 durations < 0.1s hidden.)"],
        "{}",
        rf.stdout
    );
    let rf = run(racefree(s).args(["-vv", "--", "--durations=0"]));
    assert_eq!(
        listed(&rf.stdout),
        ["test_s.py::test_slow", "test_s.py::test_quick"],
        "{}",
        rf.stdout
    );
    let rf = run(racefree(s).args(["--", "--durations=0", "--durations-min=soon"]));
    assert_eq!(rf.code, 4, "{}{}", rf.stdout, rf.stderr);
    assert!(rf.stderr.contains("--durations-min"), "{}", rf.stderr);
}

/// (testcase name, its properties as `name=value`) for each testcase that has any.
fn junit_properties(path: &Path) -> BTreeSet<(String, Vec<String>)> {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    doc.descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .filter_map(|case| {
            let props: Vec<String> = case
                .descendants()
                .filter(|n| n.has_tag_name("property"))
                .map(|p| {
                    format!(
                        "{}={}",
                        p.attribute("name").unwrap_or(""),
                        p.attribute("value").unwrap_or("")
                    )
                })
                .collect();
            (!props.is_empty()).then(|| (case.attribute("name").unwrap().to_string(), props))
        })
        .collect()
}

#[test]
fn what_tests_record_with_record_property_is_in_junit_as_in_pytests() {
    let dir = suite(&[(
        "test_p.py",
        "def test_props(record_property):\n    record_property('ticket', 'ABC-1')\n    record_property('size', 3)\n\n\
         def test_fails_with_props(record_property):\n    record_property('k', 'v')\n    assert 0\n\n\
         def test_plain():\n    pass\n",
    )]);
    let d = dir.path();
    run(pytest(d).args(["--junitxml", "py.xml"]));
    let rf = run(racefree(d).args(["--junit-xml", "rf.xml"]));
    assert_eq!(rf.code, 1, "{}{}", rf.stdout, rf.stderr);
    let ours = junit_properties(&d.join("rf.xml"));
    assert_eq!(ours, junit_properties(&d.join("py.xml")));
    assert_eq!(ours.len(), 2, "{ours:?}");
}

#[test]
fn a_collection_error_does_not_stop_the_units_running_beside_it() {
    // pytest ends a session with collection errors by raising Session.Interrupted, a
    // KeyboardInterrupt: it must not read as a test's KeyboardInterrupt that ends the run.
    let dir = suite(&[
        ("test_bad.py", "import nonexistent_module_for_racefree\n"),
        (
            "test_slow.py",
            "import time\n\ndef test_slow():\n    time.sleep(1.5)\n",
        ),
    ]);
    let d = dir.path();
    let rf = run(racefree(d).args(["-n", "2", "--no-history"]));
    assert_eq!(rf.code, 2, "{}{}", rf.stdout, rf.stderr);
    assert!(rf.stdout.contains("1 passed, 1 error"), "{}", rf.stdout);
    assert!(!rf.stdout.contains("KeyboardInterrupt"), "{}", rf.stdout);
}

#[test]
fn a_conftest_with_doctests_runs_them_under_doctest_modules_as_pytest() {
    let dir = suite(&[
        (
            "conftest.py",
            "def helper():\n    \"\"\"\n    >>> helper()\n    1\n    \"\"\"\n    return 1\n",
        ),
        ("test_a.py", "def test_a():\n    pass\n"),
    ]);
    let d = dir.path();
    let py = run(pytest(d).args(["--doctest-modules", "--junitxml", "py.xml"]));
    let rf = run(racefree(d).args(["--junit-xml", "rf.xml", "--", "--doctest-modules"]));
    assert_eq!(rf.code, py.code, "{}{}", rf.stdout, rf.stderr);
    assert_eq!(
        junit_results(&d.join("rf.xml")),
        junit_results(&d.join("py.xml"))
    );
    assert!(py.stdout.contains("2 passed"), "{}", py.stdout);
}

#[test]
fn last_failed_runs_a_file_that_failed_to_collect_again_as_pytest() {
    // History kept no trace of a collection error: after the import was fixed, --lf ran the
    // other failures only, never checking the broken file.
    let dir = suite(&[
        (
            "test_bad.py",
            "import os\n\nif os.environ.get('BREAK'):\n    raise ImportError('broken')\n\ndef test_b():\n    pass\n",
        ),
        (
            "test_f.py",
            "import os\n\ndef test_f():\n    assert not os.environ.get('BREAK')\n\ndef test_g():\n    pass\n",
        ),
    ]);
    let d = dir.path();
    let pytest_lf = |args: &[&str], broken: bool| {
        let mut cmd = Command::new(python());
        cmd.current_dir(d)
            .args(["-m", "pytest", "--junitxml", "py.xml"])
            .args(args);
        if broken {
            cmd.env("BREAK", "1");
        } else {
            cmd.env_remove("BREAK");
        }
        run(&mut cmd)
    };
    // racefree runs the other files past a collection error; so does pytest told to.
    assert_eq!(
        pytest_lf(&["--continue-on-collection-errors"], true).code,
        1
    );
    let first = run(racefree(d).args(["-n", "2"]).env("BREAK", "1"));
    assert_eq!(first.code, 2, "{}{}", first.stdout, first.stderr);
    let py = pytest_lf(&["--lf"], false);
    let rf = run(racefree(d)
        .args(["-n", "2", "--lf", "--junit-xml", "rf.xml"])
        .env_remove("BREAK"));
    assert_eq!(rf.code, py.code, "{}{}", rf.stdout, rf.stderr);
    assert_eq!(
        junit_results(&d.join("rf.xml")),
        junit_results(&d.join("py.xml"))
    );
    // Fixed and run, the file is no longer a last failure.
    let again = run(racefree(d).args(["-n", "2", "--lf"]).env_remove("BREAK"));
    assert!(
        again.stdout.contains("no previously failed tests"),
        "{}",
        again.stdout
    );
}

/// The short test summary section's lines, without its title and the final summary line.
fn short_summary(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .skip_while(|l| !l.contains("short test summary info"))
        .skip(1)
        .filter(|l| !l.trim().is_empty() && !l.contains(" in ") && !l.starts_with('!'))
        .map(str::to_string)
        .collect()
}

#[test]
fn report_characters_choose_the_short_summary_lines_as_in_pytest() {
    // racefree listed failures and errors whatever -r said, in the order units ended.
    let dir = suite(&[
        (
            "test_r.py",
            "import pytest\n\ndef test_pass():\n    pass\n\ndef test_fail():\n    assert 0\n\n\
             @pytest.mark.skip(reason='marker skip')\ndef test_skip_marker():\n    pass\n\n\
             def test_skip_inline():\n    pytest.skip('inline skip')\n\n\
             @pytest.mark.xfail(reason='known')\ndef test_xfail():\n    assert 0\n\n\
             @pytest.mark.xfail(reason='maybe')\ndef test_xpass():\n    pass\n\n\
             @pytest.fixture\ndef broken():\n    raise RuntimeError('x')\n\n\
             def test_error(broken):\n    pass\n",
        ),
        (
            "test_mod.py",
            "import pytest\npytest.skip('module skip', allow_module_level=True)\n",
        ),
        ("test_zz.py", "def test_late_failure():\n    assert 0\n"),
    ]);
    let d = dir.path();
    for chars in [
        vec![],
        vec!["-ra"],
        vec!["-rA"],
        vec!["-rN"],
        vec!["-rsx"],
        vec!["-rfE"],
    ] {
        let py = run(pytest(d).arg("-q").args(&chars));
        let rf = run(racefree(d).args(["-q", "-n", "2", "--"]).args(&chars));
        assert_eq!(rf.code, py.code, "{chars:?}: {}{}", rf.stdout, rf.stderr);
        assert_eq!(
            short_summary(&rf.stdout),
            short_summary(&py.stdout),
            "{chars:?}\npytest:\n{}\nracefree:\n{}",
            py.stdout,
            rf.stdout
        );
    }
}

#[test]
fn dist_loadgroup_keeps_an_xdist_groups_tests_in_one_process() {
    // pytest-xdist's `--dist loadgroup` promises that tests of one `xdist_group` run in one
    // worker, one after another (they share a database, a port, a file); racefree ran each
    // file in a process of its own, side by side.
    let grouped = |name: &str| {
        format!(
            "import os\nimport pytest\n\n@pytest.mark.xdist_group(name='db')\ndef test_{name}():\n    \
             with open(os.environ['PIDS'], 'a') as f:\n        f.write('%d\\n' % os.getpid())\n"
        )
    };
    let (a, b, c) = (grouped("a"), grouped("b"), grouped("c"));
    let dir = suite(&[
        ("test_a.py", a.as_str()),
        ("test_b.py", b.as_str()),
        ("test_c.py", c.as_str()),
        ("test_d.py", "def test_d():\n    pass\n"),
        ("test_e.py", "def test_e():\n    pass\n"),
    ]);
    let d = dir.path();
    let pids = d.join("pids.txt");
    let units_of = || {
        events(&d.join("rf.ndjson"))
            .iter()
            .filter(|e| e["event"] == "unit_started")
            .map(|e| e["files"].as_array().unwrap().len())
            .collect::<Vec<_>>()
    };
    for loadgroup in [true, false] {
        let _ = std::fs::remove_file(&pids);
        let mut cmd = racefree(d);
        cmd.args(["-n", "2", "--unit", "file", "--events", "rf.ndjson"])
            .env("PIDS", &pids);
        if loadgroup {
            cmd.args(["--", "--dist", "loadgroup"]);
        }
        let rf = run(&mut cmd);
        assert_eq!(rf.code, 0, "{}{}", rf.stdout, rf.stderr);
        let seen: BTreeSet<String> = std::fs::read_to_string(&pids)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        let mut units = units_of();
        units.sort();
        if loadgroup {
            assert_eq!(seen.len(), 1, "one process for the group: {seen:?}");
            // The group's three files in one unit; the others one per unit as asked.
            assert_eq!(units, vec![1, 1, 3], "{}", rf.stdout);
        } else {
            assert_eq!(units, vec![1, 1, 1, 1, 1], "{}", rf.stdout);
        }
    }
}

#[test]
fn a_retry_of_a_grouped_test_waits_until_its_group_has_run() {
    // A retry was queued as a unit of its own and started beside the group's unit, so two of
    // the group's tests ran at once.
    let dir = suite(&[
        (
            "conftest.py",
            "import os\nimport time\nimport pytest\n\n@pytest.fixture(autouse=True)\n\
             def log(request):\n    start = time.time()\n    yield\n    \
             with open(os.environ['LOG'], 'a') as f:\n        \
             f.write('%s %f %f\\n' % (request.node.nodeid, start, time.time()))\n",
        ),
        (
            "test_a.py",
            "import os\nimport time\nimport pytest\n\npytestmark = pytest.mark.xdist_group('db')\n\n\
             def test_flaky():\n    once = os.environ['ONCE']\n    if not os.path.exists(once):\n        \
             open(once, 'w').close()\n        assert False\n\n\
             def test_slow():\n    time.sleep(1.5)\n",
        ),
        (
            "test_b.py",
            "import time\nimport pytest\n\n@pytest.mark.xdist_group('db')\ndef test_b():\n    \
             time.sleep(1.0)\n",
        ),
    ]);
    let d = dir.path();
    let rf = run(racefree(d)
        .args(["-n", "2", "--retries", "1", "--", "--dist", "loadgroup"])
        .env("LOG", d.join("log.txt"))
        .env("ONCE", d.join("once")));
    assert_eq!(rf.code, 0, "{}{}", rf.stdout, rf.stderr);
    let mut spans: Vec<(String, f64, f64)> = std::fs::read_to_string(d.join("log.txt"))
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (
                f[0].to_string(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(spans.len(), 4, "{spans:?}");
    spans.sort_by(|a, b| a.1.total_cmp(&b.1));
    for pair in spans.windows(2) {
        assert!(
            pair[1].1 >= pair[0].2,
            "the group's tests overlapped: {spans:?}"
        );
    }
}

#[test]
fn a_split_files_failures_are_reported_in_pytests_order() {
    // Chunks of a split file report as they end: its failures came in a different order
    // from run to run.
    let mut big = String::from("import time\n");
    for i in 1..=12 {
        let check = if [4, 5, 6, 7, 12].contains(&i) {
            "assert False"
        } else {
            "pass"
        };
        big.push_str(&format!(
            "\ndef test_s{i:02}():\n    time.sleep(0.2)\n    {check}\n"
        ));
    }
    let dir = suite(&[
        ("test_big.py", big.as_str()),
        ("test_o.py", "def test_o():\n    pass\n"),
    ]);
    let d = dir.path();
    let py = run(pytest(d).args(["-q", "--tb=no"]));
    // History first, then runs that split the file.
    let first = run(racefree(d).args(["-q", "-n", "2", "--", "--tb=no"]));
    assert_eq!(first.code, 1, "{}{}", first.stdout, first.stderr);
    for _ in 0..2 {
        let rf = run(racefree(d).args(["-q", "-n", "2", "--events", "rf.ndjson", "--", "--tb=no"]));
        assert_eq!(rf.code, py.code, "{}{}", rf.stdout, rf.stderr);
        assert!(
            units_of(&events(&d.join("rf.ndjson")), "test_big.py").len() >= 2,
            "not split: {}",
            rf.stdout
        );
        assert_eq!(
            short_summary(&rf.stdout),
            short_summary(&py.stdout),
            "{}",
            rf.stdout
        );
    }
}

/// Everything pytest's terminal summary printed: from its first section's title to the
/// summary line (left out: its time differs).
fn summary_sections(stdout: &str) -> Vec<String> {
    let mut lines: Vec<String> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("=="))
        .map(str::to_string)
        .collect();
    lines.pop();
    lines
}

#[test]
fn failures_and_errors_read_as_pytest_prints_them() {
    // racefree printed a traceback's first source line unindented and without the blank line
    // before it (pytest's longreprtext strips them), in the order units ended, and ignored
    // --show-capture, --no-summary and --tb=line (a title per failure, no crash line).
    let dir = suite(&[
        (
            "test_a.py",
            "import logging\nimport sys\n\ndef test_fail():\n    print('to stdout')\n    \
             print('to stderr', file=sys.stderr)\n    logging.getLogger('x').warning('a log line')\n    \
             assert 1 == 2\n\ndef test_ok():\n    pass\n",
        ),
        (
            "test_b.py",
            "def helper(x):\n    raise ValueError('bad %s' % x)\n\ndef test_raise():\n    helper(3)\n",
        ),
        (
            "test_c.py",
            "import pytest\n\n@pytest.fixture\ndef broken():\n    print('setting up')\n    \
             raise RuntimeError('no setup')\n\ndef test_setup_error(broken):\n    pass\n",
        ),
        (
            "test_d.py",
            "import pytest\n\n@pytest.fixture\ndef leaky():\n    yield\n    \
             raise OSError('no teardown')\n\ndef test_teardown_error(leaky):\n    pass\n",
        ),
    ]);
    let d = dir.path();
    for options in [
        vec![],
        vec!["--show-capture=no"],
        vec!["--show-capture=stderr"],
        vec!["--show-capture=log"],
        vec!["--no-summary"],
        vec!["--tb=short"],
        vec!["--tb=line"],
        vec!["--tb=line", "--show-capture=no"],
        // Files in the order given, not by name.
        vec!["test_d.py", "test_c.py", "test_b.py", "test_a.py"],
    ] {
        let py = run(pytest(d).arg("-q").args(&options).env_remove("COLUMNS"));
        let rf = run(racefree(d)
            .args(["-q", "-n", "2", "--"])
            .args(&options)
            .env_remove("COLUMNS"));
        assert_eq!(rf.code, py.code, "{options:?}: {}{}", rf.stdout, rf.stderr);
        assert_eq!(
            summary_sections(&rf.stdout),
            summary_sections(&py.stdout),
            "{options:?}\npytest:\n{}\nracefree:\n{}",
            py.stdout,
            rf.stdout
        );
    }
}

/// The "warnings summary" section, from its title line to pytest's docs line.
fn warnings_section(stdout: &str) -> Vec<String> {
    let mut lines: Vec<String> = stdout
        .lines()
        .skip_while(|l| !l.contains("warnings summary"))
        .take_while(|l| !l.starts_with("-- Docs"))
        .map(str::to_string)
        .collect();
    // The title line's width is the terminal's.
    if !lines.is_empty() {
        lines.remove(0);
    }
    lines
}

#[test]
fn the_warnings_summary_shows_what_pytests_shows() {
    // racefree counted warnings but showed none of them.
    let mut files = vec![
        (
            "conftest.py".to_string(),
            "import warnings\nwarnings.warn('from conftest', UserWarning)\n".to_string(),
        ),
        (
            "test_a.py".to_string(),
            "import warnings\n\ndef test_a():\n    warnings.warn('in a test')\n".to_string(),
        ),
        (
            "test_b.py".to_string(),
            "import warnings\nwarnings.warn('at import')\n\ndef test_b():\n    pass\n".to_string(),
        ),
    ];
    // Ten tests with the same warning: pytest counts them per file instead of listing them.
    let many: String = (0..10)
        .map(|i| format!("def test_{i}():\n    warnings.warn(DeprecationWarning('old'))\n\n"))
        .collect();
    files.push(("test_many.py".into(), format!("import warnings\n\n{many}")));
    let borrowed: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let dir = suite(&borrowed);
    let d = dir.path();
    std::fs::write(d.join("pytest.ini"), "[pytest]\nunknown_key = 1\n").unwrap();
    let py = run(pytest(d).arg("-q"));
    let expected = warnings_section(&py.stdout);
    assert!(expected.len() > 8, "{}", py.stdout);
    for mode in [None, Some("--no-fork")] {
        let rf = run(racefree(d).args(["-q", "-n", "2"]).args(mode));
        assert_eq!(rf.code, py.code, "{mode:?}: {}{}", rf.stdout, rf.stderr);
        assert_eq!(
            warnings_section(&rf.stdout),
            expected,
            "{mode:?}: {}",
            rf.stdout
        );
    }
    // pytest's --disable-warnings leaves it out.
    let rf = run(racefree(d).args(["-q", "--", "--disable-warnings"]));
    assert!(!rf.stdout.contains("warnings summary"), "{}", rf.stdout);
}

#[test]
fn the_junit_testsuite_is_named_and_stamped_as_pytests() {
    let dir = suite(&[("test_a.py", "def test_a():\n    pass\n")]);
    let d = dir.path();
    std::fs::write(
        d.join("pytest.ini"),
        "[pytest]\njunit_suite_name = my suite\n",
    )
    .unwrap();
    run(pytest(d).args(["--junitxml", "py.xml"]));
    let rf = run(racefree(d).args(["--junit-xml", "rf.xml"]));
    assert_eq!(rf.code, 0, "{}{}", rf.stdout, rf.stderr);
    let attrs = |file: &str| {
        let text = std::fs::read_to_string(d.join(file)).unwrap();
        let doc = roxmltree::Document::parse(&text).unwrap();
        let root = doc.root_element();
        let suite = doc
            .descendants()
            .find(|n| n.has_tag_name("testsuite"))
            .unwrap();
        (
            root.attribute("name").map(str::to_string),
            suite.attribute("name").map(str::to_string),
            suite.attribute("hostname").map(str::to_string),
            suite.attribute("timestamp").is_some(),
        )
    };
    assert_eq!(attrs("rf.xml"), attrs("py.xml"));
}

/// A JUnit report as the tests below compare it: the testsuite's properties, and for each
/// testcase (by name, in order) its attributes but `time` and its children but
/// `<properties>`, each as (tag, attributes, text).
type JunitCase = (
    Vec<(String, String)>,
    Vec<(String, Vec<(String, String)>, String)>,
);

type JunitDetail = (Vec<(String, String)>, BTreeSet<(String, Vec<JunitCase>)>);

fn junit_detail(path: &Path) -> JunitDetail {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let attrs = |n: roxmltree::Node| -> Vec<(String, String)> {
        let mut a: Vec<(String, String)> = n
            .attributes()
            .filter(|a| a.name() != "time")
            .map(|a| (a.name().to_string(), a.value().to_string()))
            .collect();
        a.sort();
        a
    };
    let suite = doc
        .descendants()
        .find(|n| n.has_tag_name("testsuite"))
        .unwrap();
    let properties = suite
        .children()
        .filter(|n| n.has_tag_name("properties"))
        .flat_map(|p| p.children().filter(|n| n.has_tag_name("property")))
        .map(|p| {
            (
                p.attribute("name").unwrap().to_string(),
                p.attribute("value").unwrap().to_string(),
            )
        })
        .collect();
    let mut cases: std::collections::BTreeMap<String, Vec<JunitCase>> = Default::default();
    for case in suite.children().filter(|n| n.has_tag_name("testcase")) {
        let children = case
            .children()
            .filter(|c| c.is_element() && !c.has_tag_name("properties"))
            .map(|c| {
                (
                    c.tag_name().name().to_string(),
                    attrs(c),
                    c.text().unwrap_or("").to_string(),
                )
            })
            .collect();
        cases
            .entry(case.attribute("name").unwrap().to_string())
            .or_default()
            .push((attrs(case), children));
    }
    (properties, cases.into_iter().collect())
}

/// pytest's `<skipped>` texts for test skips, xfails and a skipped module, in one suite.
const SKIPS: &[(&str, &str)] = &[
    (
        "test_s.py",
        "import pytest\n\n\
         def test_skip_call():\n    pytest.skip('not today')\n\n\
         @pytest.mark.skip(reason='marked')\ndef test_skip_marker():\n    pass\n\n\
         @pytest.mark.skipif(True, reason='cond')\ndef test_skipif():\n    pass\n\n\
         @pytest.mark.xfail(reason='known bug')\ndef test_xfail():\n    assert 0\n\n\
         def test_xfail_call():\n    pytest.xfail('imperative')\n",
    ),
    (
        "test_m.py",
        "import pytest\npytest.skip('whole module', allow_module_level=True)\n",
    ),
];

#[test]
fn skips_have_pytests_text_in_junit() {
    let dir = suite(SKIPS);
    let d = dir.path();
    run(pytest(d).args(["--junitxml", "py.xml"]));
    let rf = run(racefree(d).args(["-n", "2", "--junit-xml", "rf.xml"]));
    assert_eq!(rf.code, 0, "{}{}", rf.stdout, rf.stderr);
    let ours = junit_detail(&d.join("rf.xml"));
    assert_eq!(ours, junit_detail(&d.join("py.xml")));
    // What pytest writes: where, and why.
    let (_, cases) = &ours;
    let skip = cases
        .iter()
        .find(|(name, _)| name == "test_skip_call")
        .unwrap();
    let text = &skip.1[0].1[0].2;
    assert!(text.ends_with("test_s.py:4: not today"), "{text}");
}

#[test]
fn testsuite_properties_are_in_junit_as_in_pytests() {
    let dir = suite(&[
        (
            "conftest.py",
            "import pytest\n\n\
             @pytest.fixture(scope='session', autouse=True)\n\
             def env(record_testsuite_property):\n    \
                 record_testsuite_property('ARCH', 'PPC')\n    \
                 record_testsuite_property('n', 3)\n",
        ),
        (
            "test_a.py",
            "def test_a(record_testsuite_property):\n    record_testsuite_property('ARCH', 'PPC')\n",
        ),
        ("test_b.py", "def test_b():\n    pass\n"),
    ]);
    let d = dir.path();
    // One process, as pytest: its list exactly (the same property twice, too).
    run(pytest(d).args(["--junitxml", "py.xml", "test_a.py"]));
    let rf = run(racefree(d).args(["--junit-xml", "rf.xml", "test_a.py"]));
    assert_eq!(rf.code, 0, "{}{}", rf.stdout, rf.stderr);
    let py = junit_detail(&d.join("py.xml"));
    assert_eq!(junit_detail(&d.join("rf.xml")), py);
    assert_eq!(py.0.len(), 3, "{py:?}");
    // Several processes each run the session fixture that pytest runs once: each property
    // as many times as one process recorded it.
    run(pytest(d).args(["--junitxml", "py.xml"]));
    let rf = run(racefree(d).args(["-n", "2", "--junit-xml", "rf.xml"]));
    assert_eq!(rf.code, 0, "{}{}", rf.stdout, rf.stderr);
    assert_eq!(
        junit_detail(&d.join("rf.xml")).0,
        junit_detail(&d.join("py.xml")).0
    );
}

#[test]
fn record_xml_attribute_sets_testcase_attributes_as_in_pytest() {
    let dir = suite(&[(
        "test_x.py",
        "def test_attr(record_xml_attribute):\n    \
             record_xml_attribute('assertions', 'REQ-1234')\n    \
             record_xml_attribute('classname', 'custom.class')\n\n\
         def test_plain():\n    pass\n\n\
         def test_fails(record_xml_attribute):\n    \
             record_xml_attribute('name', 'renamed')\n    \
             __import__('pytest').fail('no', pytrace=False)\n",
    )]);
    let d = dir.path();
    // xunit2 (pytest's default) keeps only classname and name; xunit1 every attribute, with
    // the test's file and line.
    for family in ["xunit2", "xunit1"] {
        let ini = format!("[pytest]\njunit_family = {family}\n");
        std::fs::write(d.join("pytest.ini"), ini).unwrap();
        let py = run(pytest(d).args(["--junitxml", "py.xml"]));
        let rf = run(racefree(d).args(["--junit-xml", "rf.xml"]));
        assert_eq!(rf.code, 1, "{}{}", rf.stdout, rf.stderr);
        let ours = junit_detail(&d.join("rf.xml"));
        assert_eq!(ours, junit_detail(&d.join("py.xml")), "{family}");
        let names: Vec<&str> = ours.1.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"renamed"), "{family}: {names:?}");
        // pytest's warnings about the fixture, as under pytest's own --junitxml.
        assert_eq!(
            summary_counts(&rf.stdout),
            summary_counts(&py.stdout),
            "{family}"
        );
    }
}

#[test]
fn junit_logging_writes_captured_output_as_pytest() {
    let dir = suite(&[(
        "test_o.py",
        "import logging, sys\nimport pytest\n\n\
         @pytest.fixture\ndef bad():\n    yield\n    print('teardown out')\n    raise RuntimeError('boom')\n\n\
         def test_pass():\n    print('hello out')\n    sys.stderr.write('hello err\\n')\n    \
             logging.getLogger().warning('a log line')\n\n\
         def test_fail():\n    print('fail out')\n    assert 0\n\n\
         def test_fail_then_teardown(bad):\n    print('call out')\n    assert 0\n\n\
         def test_error(bad):\n    sys.stderr.write('err\\n')\n\n\
         @pytest.mark.xfail\ndef test_xfail():\n    print('x')\n    assert 0\n\n\
         def test_quiet():\n    pass\n",
    )]);
    let d = dir.path();
    for logging in ["no", "log", "system-out", "system-err", "out-err", "all"] {
        for passing in ["true", "false"] {
            let ini = format!(
                "[pytest]\njunit_logging = {logging}\njunit_log_passing_tests = {passing}\n"
            );
            std::fs::write(d.join("pytest.ini"), ini).unwrap();
            run(pytest(d).args(["--junitxml", "py.xml"]));
            let rf = run(racefree(d).args(["--junit-xml", "rf.xml"]));
            assert_eq!(rf.code, 1, "{}{}", rf.stdout, rf.stderr);
            let ours = junit_detail(&d.join("rf.xml"));
            assert_eq!(
                ours,
                junit_detail(&d.join("py.xml")),
                "junit_logging={logging} junit_log_passing_tests={passing}"
            );
            let text = std::fs::read_to_string(d.join("rf.xml")).unwrap();
            assert_eq!(
                text.contains("hello out"),
                matches!(logging, "system-out" | "out-err" | "all") && passing == "true",
                "{logging} {passing}: {text}"
            );
        }
    }
    // Given after `--` (pytest's -o), as pytest takes it.
    std::fs::remove_file(d.join("pytest.ini")).unwrap();
    run(pytest(d).args(["--junitxml", "py.xml", "-o", "junit_logging=all"]));
    let rf = run(racefree(d).args(["--junit-xml", "rf.xml", "--", "-o", "junit_logging=all"]));
    assert_eq!(rf.code, 1, "{}{}", rf.stdout, rf.stderr);
    assert_eq!(
        junit_detail(&d.join("rf.xml")),
        junit_detail(&d.join("py.xml"))
    );
}

#[test]
fn a_skipped_tests_output_is_in_junit_once_with_every_phases() {
    // pytest writes a skipped test's output twice (at the skip, then at teardown, with every
    // phase's); racefree's testcase holds one of each element: the last, with it all.
    let dir = suite(&[(
        "test_k.py",
        "import pytest\n\ndef test_skips():\n    print('before the skip')\n    pytest.skip('no')\n",
    )]);
    let d = dir.path();
    std::fs::write(d.join("pytest.ini"), "[pytest]\njunit_logging = all\n").unwrap();
    run(pytest(d).args(["--junitxml", "py.xml"]));
    let rf = run(racefree(d).args(["--junit-xml", "rf.xml"]));
    assert_eq!(rf.code, 0, "{}{}", rf.stdout, rf.stderr);
    let last_of_each = |path: &Path| {
        let (_, cases) = junit_detail(path);
        let mut children = cases.into_iter().next().unwrap().1.remove(0).1;
        let mut kept = Vec::new();
        while let Some(child) = children.pop() {
            if !kept.iter().any(|k: &(String, _, _)| k.0 == child.0) {
                kept.insert(0, child);
            }
        }
        kept
    };
    let ours = last_of_each(&d.join("rf.xml"));
    assert_eq!(ours, last_of_each(&d.join("py.xml")));
    assert!(
        ours.iter().any(|c| c.2.contains("before the skip")),
        "{ours:?}"
    );
}

#[test]
fn other_plugins_terminal_summaries_are_shown_as_pytest_shows_them() {
    // What a conftest's or another plugin's pytest_terminal_summary wrote went to each
    // unit's terminal, which nobody reads: racefree showed none of it. Each unit's text now
    // comes to the run's summary, sections of one title merged, equal text shown once.
    let given = "from hypothesis import given, settings, strategies as st\n\n\n\
                 @settings(max_examples=20, database=None)\n@given(st.integers())\n\
                 def test_{name}(x):\n    assert isinstance(x, int)\n";
    let dir = suite(&[
        (
            "conftest.py",
            "import pytest\n\nWRITER = []\n\n\n\
             @pytest.hookimpl(trylast=True)\n\
             def pytest_configure(config):\n\
             \x20   WRITER.append(config.get_terminal_writer())\n\n\n\
             def pytest_terminal_summary(terminalreporter):\n\
             \x20   terminalreporter.section('passed here')\n\
             \x20   for report in terminalreporter.stats.get('passed', []):\n\
             \x20       terminalreporter.write_line(report.nodeid)\n\
             \x20   terminalreporter.section('the same everywhere', sep='-')\n\
             \x20   print('printed, not written')\n\
             \x20   WRITER[0].sep('=', 'a writer kept since configure')\n\
             \x20   WRITER[0].line('kept')\n",
        ),
        ("test_a.py", &given.replace("{name}", "a")),
        ("test_b.py", &given.replace("{name}", "b")),
        (
            "test_c.py",
            "import warnings\n\n\ndef test_c():\n    warnings.warn('w')\n\n\n\
             def test_d():\n    assert 0\n",
        ),
    ]);
    let d = dir.path();
    let plugins = common::plugins_dir("_hypothesis_pytestplugin.py");
    // Hypothesis's per-test timings differ from run to run.
    let steady = |stdout: &str| -> Vec<String> {
        summary_sections(stdout)
            .into_iter()
            .filter(|l| !l.contains("Typical runtimes") && !l.contains(" seconds)"))
            .collect()
    };
    let options = ["--hypothesis-show-statistics"];
    let py = run(pytest(d)
        .arg("-q")
        .args(options)
        .env("PYTHONPATH", &plugins)
        .env_remove("COLUMNS"));
    assert_eq!(py.code, 1, "{}{}", py.stdout, py.stderr);
    assert!(
        py.stdout.contains("Hypothesis Statistics") && py.stdout.contains("passed here"),
        "{}",
        py.stdout
    );
    for mode in [None, Some("--no-fork")] {
        let rf = run(racefree(d)
            // One file per process (without the fork server racefree packs small files, and a
            // process running several writes one text for them all).
            .args(["-q", "-n", "2", "--unit", "file"])
            .args(mode)
            .arg("--")
            .args(options)
            .env("PYTHONPATH", &plugins)
            .env_remove("COLUMNS"));
        assert_eq!(rf.code, py.code, "{mode:?}: {}{}", rf.stdout, rf.stderr);
        assert_eq!(
            steady(&rf.stdout),
            steady(&py.stdout),
            "{mode:?}\npytest:\n{}\nracefree:\n{}",
            py.stdout,
            rf.stdout
        );
    }
    // A terminal summary that raises ends pytest's process with a traceback and exit 1
    // after its session finished: racefree heard "done" and took the unit as fine.
    std::fs::write(
        d.join("conftest.py"),
        "def pytest_terminal_summary(terminalreporter):\n    raise RuntimeError('summary broke')\n",
    )
    .unwrap();
    let py = run(pytest(d)
        .args(["-q", "test_a.py"])
        .env("PYTHONPATH", &plugins));
    assert_eq!(py.code, 1, "{}{}", py.stdout, py.stderr);
    let rf = run(racefree(d)
        .args(["-q", "test_a.py"])
        .env("PYTHONPATH", &plugins));
    assert_eq!(rf.code, py.code, "{}{}", rf.stdout, rf.stderr);
    assert!(
        rf.stdout.contains("RuntimeError: summary broke"),
        "{}",
        rf.stdout
    );
    // A status changed after the session's hooks (a sessionfinish wrapper's 5 -> 0, here
    // in the unit that -k leaves without tests) is no broken process.
    std::fs::write(
        d.join("conftest.py"),
        "import pytest\n\n\n@pytest.hookimpl(wrapper=True)\n\
         def pytest_sessionfinish(session, exitstatus):\n    yield\n\
         \x20   if session.exitstatus == 5:\n        session.exitstatus = 0\n",
    )
    .unwrap();
    let rf = run(racefree(d)
        .args(["-q", "-k", "test_a", "test_a.py", "test_b.py"])
        .env("PYTHONPATH", &plugins));
    assert_eq!(rf.code, 0, "{}{}", rf.stdout, rf.stderr);
}

#[test]
fn same_named_test_files_outside_packages_fail_as_in_pytest() {
    // pytest imports a test file outside any package as its bare name: the second
    // test_same.py it collects fails ("import file mismatch"). Each in a process of its own,
    // both passed under racefree; they now share one, in pytest's order.
    let dir = suite(&[
        ("a/test_same.py", "def test_a():\n    pass\n"),
        ("b/test_same.py", "def test_b():\n    pass\n"),
        ("c/test_other.py", "def test_c():\n    pass\n"),
        ("p/__init__.py", ""),
        ("p/test_same.py", "def test_p():\n    pass\n"),
    ]);
    let d = dir.path();
    let py = run(pytest(d).arg("-q"));
    assert_eq!(py.code, 2, "{}{}", py.stdout, py.stderr);
    assert!(py.stdout.contains("ERROR b/test_same.py"), "{}", py.stdout);
    for mode in [None, Some("--no-fork")] {
        let rf = run(racefree(d).args(["-q", "-n", "2"]).args(mode));
        assert_eq!(rf.code, py.code, "{mode:?}: {}{}", rf.stdout, rf.stderr);
        assert_eq!(
            short_summary(&rf.stdout),
            short_summary(&py.stdout),
            "{mode:?}: {}",
            rf.stdout
        );
        assert!(rf.stdout.contains("import file mismatch"), "{}", rf.stdout);
    }
    // pytest's and racefree's runs of `args` in `dir` end alike; pytest's run is returned.
    let same = |dir: &Path, args: &[&str]| {
        let py = run(pytest(dir).arg("-q").args(args));
        let rf = run(racefree(dir).args(["-q", "-n", "2"]).args(args));
        assert_eq!(rf.code, py.code, "{args:?}: {}{}", rf.stdout, rf.stderr);
        let summary = short_summary(&rf.stdout);
        assert_eq!(
            summary,
            short_summary(&py.stdout),
            "{args:?}: {}",
            rf.stdout
        );
        py
    };
    // The paths in the order given: pytest imports b's first, and a's fails.
    let py = same(d, &["b", "a", "c", "p"]);
    assert!(py.stdout.contains("ERROR a/test_same.py"), "{}", py.stdout);
    // Two packages of one name in two directories: the second is not found in the first.
    let monorepo = suite(&[
        ("p1/tests/__init__.py", ""),
        ("p1/tests/test_one.py", "def test_one():\n    pass\n"),
        ("p2/tests/__init__.py", ""),
        ("p2/tests/test_two.py", "def test_two():\n    pass\n"),
    ]);
    assert_eq!(same(monorepo.path(), &[]).code, 2);
    // A conftest.py collected as a test module too (python_files = *.py) is imported anew
    // by pytest wherever it lies: two of them clash with nothing.
    let conftests = suite(&[
        ("a/conftest.py", "X = 1\n"),
        ("a/test_x.py", "def test_x():\n    pass\n"),
        ("b/conftest.py", "Y = 1\n"),
        ("b/test_y.py", "def test_y():\n    pass\n"),
    ]);
    let c = conftests.path();
    std::fs::write(c.join("pytest.ini"), "[pytest]\npython_files = *.py\n").unwrap();
    assert_eq!(same(c, &[]).code, 0);
    // Under --import-mode=importlib each file has a name of its own, in pytest and here.
    let py = run(pytest(d).args(["-q", "--import-mode=importlib"]));
    let rf = run(racefree(d).args(["-q", "-n", "2", "--", "--import-mode=importlib"]));
    assert_eq!((py.code, rf.code), (0, 0), "{}{}", rf.stdout, rf.stderr);
    assert!(rf.stdout.contains("4 passed"), "{}", rf.stdout);
}

#[test]
fn passing_tests_output_is_shown_under_rp_as_in_pytest() {
    // pytest's -rP, -rX and -rA show what passing (xpassing) tests printed, in PASSES and
    // XPASSES sections: racefree showed neither. A failure shows its teardown's output too
    // (racefree never did).
    let dir = suite(&[
        (
            "test_a.py",
            "import sys\n\ndef test_a():\n    print('out a')\n    sys.stderr.write('err a\\n')\n\n\
             def test_b():\n    pass\n\ndef test_c():\n    print('c out')\n    assert 0\n",
        ),
        (
            "test_b.py",
            "import pytest\n\n@pytest.fixture\ndef fx():\n    print('setup out')\n    yield\n    \
             print('teardown out')\n\ndef test_t(fx):\n    print('call out')\n\n\
             @pytest.mark.xfail\ndef test_xp():\n    print('xp out')\n\n\
             def test_fails(fx):\n    print('failing out')\n    assert 0\n",
        ),
    ]);
    let d = dir.path();
    for options in [
        vec!["-rA"],
        vec!["-rP"],
        vec!["-rX"],
        vec!["-rP", "--show-capture=stdout"],
        vec!["-rA", "--tb=no"],
        vec!["-rP", "--no-summary"],
        vec![],
        vec!["--tb=line"],
    ] {
        let py = run(pytest(d).arg("-q").args(&options).env_remove("COLUMNS"));
        let rf = run(racefree(d)
            .args(["-q", "-n", "2", "--"])
            .args(&options)
            .env_remove("COLUMNS"));
        assert_eq!(rf.code, py.code, "{options:?}: {}{}", rf.stdout, rf.stderr);
        assert_eq!(
            summary_sections(&rf.stdout),
            summary_sections(&py.stdout),
            "{options:?}\npytest:\n{}\nracefree:\n{}",
            py.stdout,
            rf.stdout
        );
    }
    // Only what a section shows travels: -ra's XPASSES takes no passing test's output.
    let rf = run(racefree(d).args(["-q", "--events", "ev.ndjson", "--", "-ra"]));
    assert_eq!(rf.code, 1, "{}{}", rf.stdout, rf.stderr);
    let events = std::fs::read_to_string(d.join("ev.ndjson")).unwrap();
    assert!(
        events.contains("xp out") && !events.contains("out a"),
        "{events}"
    );
}
