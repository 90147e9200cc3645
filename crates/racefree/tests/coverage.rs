//! pytest-cov under racefree: the run's coverage and report are pytest's, not one unit's.
//! Real pytest, real pytest-cov and coverage.py (installed by scripts/setup-venv.sh into
//! .venv/plugins), real racefree, fork servers and spawned units.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::prelude::*;
use common::{Ran, python, run};

/// Where pytest-cov and coverage.py are installed for the tests.
fn plugins_dir() -> PathBuf {
    common::plugins_dir("pytest_cov")
}

fn racefree(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("racefree").unwrap();
    cmd.current_dir(dir)
        .args(["run", "--python"])
        .arg(python())
        .env_remove("VIRTUAL_ENV")
        .env_remove("COVERAGE_FILE")
        .env("PYTHONPATH", plugins_dir());
    cmd
}

fn pytest(dir: &Path) -> Command {
    let mut cmd = Command::new(python());
    cmd.current_dir(dir)
        .args(["-m", "pytest", "-p", "no:cacheprovider"])
        .env_remove("COVERAGE_FILE")
        .env("PYTHONPATH", plugins_dir());
    cmd
}

/// A package with code only some tests reach (module-level lines included: a fork server
/// that imported the package ahead of a unit would hide them, and beside the tests, where
/// the interpreter finds it from the start, it is a module a server may preload), and six
/// test files, each reaching a different part of it.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("pkg")).unwrap();
    std::fs::create_dir_all(d.join("tests")).unwrap();
    std::fs::write(d.join("pytest.ini"), "[pytest]\ntestpaths = tests\n").unwrap();
    std::fs::write(
        d.join("pkg/__init__.py"),
        "LIMIT = 3\n\n\ndef small(x):\n    if x < LIMIT:\n        return True\n    return False\n\n\n\
         def name(x):\n    if x:\n        return 'yes'\n    return 'no'\n\n\n\
         def never():\n    return 'untested'\n",
    )
    .unwrap();
    std::fs::write(
        d.join("pkg/more.py"),
        "def double(x):\n    return 2 * x\n\n\ndef triple(x):\n    return 3 * x\n",
    )
    .unwrap();
    let bodies = [
        "from pkg import small\n\ndef test_a():\n    assert small(1)\n",
        "from pkg import small\n\ndef test_b():\n    assert not small(5)\n",
        "from pkg import name\n\ndef test_c():\n    assert name(1) == 'yes'\n",
        "from pkg.more import double\n\ndef test_d():\n    assert double(2) == 4\n",
        "import pkg\n\ndef test_e():\n    assert pkg.LIMIT == 3\n",
        "def test_f():\n    assert True\n",
    ];
    for (i, body) in bodies.iter().enumerate() {
        std::fs::write(d.join(format!("tests/test_{i}.py")), body).unwrap();
    }
    dir
}

/// pytest-cov's terminal table (from its `coverage:` line to TOTAL) in `out`.
fn table(out: &str) -> String {
    let start = out
        .find("coverage: platform")
        .unwrap_or_else(|| panic!("no coverage report in:\n{out}"));
    let rest = &out[start..];
    let end = rest
        .find("TOTAL")
        .map(|i| i + rest[i..].find('\n').unwrap_or(0));
    rest[..end.unwrap_or_else(|| panic!("no TOTAL in:\n{out}"))].to_string()
}

/// What the data file pytest-cov left says, line by line (`coverage report -m`).
fn data_report(dir: &Path) -> String {
    let ran = run(Command::new(python())
        .current_dir(dir)
        .args(["-m", "coverage", "report", "-m"])
        .env_remove("COVERAGE_FILE")
        .env("PYTHONPATH", plugins_dir()));
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    ran.stdout
}

/// A racefree run (with `extra` options) passed, showed pytest's table and left pytest's data.
fn assert_same_coverage(d: &Path, rf: &Ran, extra: &[&str], want_table: &str, want_data: &str) {
    assert_eq!(rf.code, 0, "{extra:?}: {}", show(rf));
    assert_eq!(table(&rf.stdout), want_table, "{extra:?}: {}", show(rf));
    assert_eq!(data_report(d), want_data, "{extra:?}");
}

fn show(ran: &Ran) -> String {
    format!("{}{}", ran.stdout, ran.stderr)
}

#[test]
fn the_runs_coverage_and_report_are_pytests_not_one_units() {
    // Each unit's pytest-cov erased the shared .coverage, saved its own share and reported
    // it to nobody: the data file said 60 % where pytest says 90 %, and no table was shown.
    let dir = project();
    let d = dir.path();
    let cov = ["--cov=pkg", "--cov-report=term-missing"];
    let py = run(pytest(d).args(cov));
    assert_eq!(py.code, 0, "{}", show(&py));
    let expected_table = table(&py.stdout);
    let expected_data = data_report(d);
    assert!(expected_data.contains("pkg/__init__.py"), "{expected_data}");
    std::fs::remove_file(d.join(".coverage")).unwrap();
    // Fork servers (twice: the second run's servers would preload what units imported, the
    // package under test among it), then spawned units.
    for extra in [&[][..], &[][..], &["--no-fork"][..]] {
        let rf = run(racefree(d)
            .args(["-n", "2", "--unit", "file"])
            .args(extra)
            .arg("--")
            .args(cov));
        assert_same_coverage(d, &rf, extra, &expected_table, &expected_data);
        // The table comes before the summary line, as in pytest's terminal summary.
        let at = rf.stdout.find("coverage: platform").unwrap();
        assert!(rf.stdout[at..].contains("6 passed"), "{}", rf.stdout);
    }
}

#[test]
fn a_total_below_cov_fail_under_fails_the_run_as_it_fails_pytest() {
    let dir = project();
    let d = dir.path();
    for (minimum, code) in [("95", 1), ("50", 0)] {
        let args = [
            "--cov=pkg".to_string(),
            format!("--cov-fail-under={minimum}"),
        ];
        let py = run(pytest(d).args(&args));
        assert_eq!(py.code, code, "{}", show(&py));
        let rf = run(racefree(d).args(["-n", "2", "--"]).args(&args));
        assert_eq!(rf.code, code, "{}", show(&rf));
        // pytest-cov's own lines, word for word.
        for line in py.stdout.lines().filter(|l| l.contains("test coverage of")) {
            assert!(rf.stdout.contains(line), "{line:?} not in:\n{}", rf.stdout);
        }
        if code == 1 {
            let error = py
                .stdout
                .lines()
                .find(|l| l.starts_with("ERROR: Coverage failure"))
                .unwrap();
            assert!(rf.stdout.contains(error), "{}", rf.stdout);
        }
    }
}

#[test]
fn reports_written_to_files_hold_the_whole_run() {
    // Every unit wrote coverage.xml for its own file (the last one to finish won).
    let dir = project();
    let d = dir.path();
    let args = [
        "--cov=pkg",
        "--cov-report=xml:cov.xml",
        "--cov-report=html:html",
    ];
    let py = run(pytest(d).args(args));
    assert_eq!(py.code, 0, "{}", show(&py));
    let lines_hit = |xml: &str| {
        xml.lines()
            .filter(|l| l.contains("<line ") && l.contains("hits=\"1\""))
            .count()
    };
    let expected = lines_hit(&std::fs::read_to_string(d.join("cov.xml")).unwrap());
    std::fs::remove_file(d.join("cov.xml")).unwrap();
    std::fs::remove_dir_all(d.join("html")).unwrap();
    let rf = run(racefree(d).args(["-n", "2", "--"]).args(args));
    assert_eq!(rf.code, 0, "{}", show(&rf));
    let xml = std::fs::read_to_string(d.join("cov.xml")).unwrap();
    assert_eq!(lines_hit(&xml), expected, "{xml}");
    assert!(d.join("html/index.html").exists());
    assert!(
        rf.stdout.contains("Coverage XML written to file cov.xml"),
        "{}",
        rf.stdout
    );
    assert!(
        rf.stdout.contains("Coverage HTML written to dir html"),
        "{}",
        rf.stdout
    );
}

#[test]
fn no_cov_turns_it_off_as_in_pytest() {
    let dir = project();
    let d = dir.path();
    let rf = run(racefree(d).args(["-n", "2", "--", "--cov=pkg", "--no-cov"]));
    assert_eq!(rf.code, 0, "{}", show(&rf));
    assert!(!rf.stdout.contains("coverage: platform"), "{}", rf.stdout);
    assert!(!d.join(".coverage").exists());
}

#[test]
fn cov_without_a_source_measures_the_project_not_racefree() {
    // With `--cov` alone coverage measures every file outside the standard library and
    // installed packages: racefree's own plugin and fork server, run in every unit, were
    // counted (TOTAL 2 % where pytest says 91 %).
    let dir = project();
    let d = dir.path();
    let py = run(pytest(d).args(["--cov", "--cov-branch"]));
    assert_eq!(py.code, 0, "{}", show(&py));
    let expected_table = table(&py.stdout);
    let expected_data = data_report(d);
    for extra in [&[][..], &["--no-fork"][..]] {
        let rf =
            run(racefree(d)
                .args(["-n", "2"])
                .args(extra)
                .args(["--", "--cov", "--cov-branch"]));
        assert_same_coverage(d, &rf, extra, &expected_table, &expected_data);
    }
}

#[test]
fn a_unit_stopped_for_a_timeout_keeps_the_coverage_of_the_tests_it_ran() {
    // pytest-cov saves its data when the session ends: a unit racefree stopped (SIGTERM)
    // lost the coverage of every test it had already passed.
    let dir = project();
    let d = dir.path();
    std::fs::write(
        d.join("tests/test_0.py"),
        "import time\nfrom pkg.more import triple\n\n\
         def test_covers_triple():\n    assert triple(2) == 6\n\n\
         def test_hangs():\n    time.sleep(30)\n",
    )
    .unwrap();
    let rf = run(racefree(d).args(["-n", "2", "--timeout", "2", "--", "--cov=pkg"]));
    assert_eq!(rf.code, 1, "{}", show(&rf));
    assert!(rf.stdout.contains("timeout"), "{}", rf.stdout);
    let data = data_report(d);
    // pkg/more.py: `double` (line 2) and `triple` (line 6) both ran; nothing is missing.
    let more = data.lines().find(|l| l.starts_with("pkg/more.py")).unwrap();
    assert!(more.contains("100%"), "{data}");
}

#[test]
fn a_run_stopped_by_exitfirst_makes_no_report_as_pytest_does_not() {
    let dir = project();
    let d = dir.path();
    std::fs::write(
        d.join("tests/test_5.py"),
        "def test_f():\n    assert False\n",
    )
    .unwrap();
    let args = ["-x", "--cov=pkg", "--cov-fail-under=10"];
    let py = run(pytest(d).args(args));
    assert_eq!(py.code, 1, "{}", show(&py));
    assert!(!py.stdout.contains("coverage: platform"), "{}", py.stdout);
    let rf = run(racefree(d).args(["-n", "1", "--"]).args(args));
    assert_eq!(rf.code, 1, "{}", show(&rf));
    assert!(!rf.stdout.contains("coverage: platform"), "{}", rf.stdout);
    assert!(
        !rf.stderr.contains("coverage report failed"),
        "{}",
        rf.stderr
    );
}
