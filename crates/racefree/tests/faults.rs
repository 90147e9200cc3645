#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `racefree run` survives anything a test can do (issue 4): crashes, hangs, leaked
//! processes, floods of output, flaky tests, broken environments, Ctrl-C. Each scenario runs
//! real pytest on tests/fixtures/faults (copied to a temp dir) and checks exact per-test
//! outcomes from the NDJSON events and the JUnit XML, not only the exit code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;
use serde_json::Value;

mod common;
use common::{Ran, copy_dir, fixture_source, python, run};

struct Suite {
    dir: tempfile::TempDir,
    /// Where the fixture's tests write pids and state ($FAULTS_DIR).
    state: PathBuf,
}

impl Suite {
    fn new() -> Suite {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&fixture_source("faults"), dir.path());
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        Suite { dir, state }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The tests write the pids they see and this suite checks them on the host: in a PID
    /// namespace those would be inner pids, so the suite runs with `--isolate tmp`.
    /// Namespace mode's own handling of what units leave behind is tested in isolation.rs.
    fn racefree(&self) -> Command {
        self.racefree_isolated("tmp")
    }

    fn racefree_isolated(&self, isolate: &str) -> Command {
        let mut cmd = Command::cargo_bin("racefree").unwrap();
        cmd.current_dir(self.path())
            .args(["run", "--no-history", "--plain", "--python"])
            .arg(python())
            .args(["--isolate", isolate])
            .args(["--events", "e.ndjson", "--junit-xml", "j.xml"])
            .env_remove("VIRTUAL_ENV")
            .env("FAULTS_DIR", &self.state);
        cmd
    }

    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.path().join("e.ndjson"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn pid(&self, name: &str) -> u32 {
        std::fs::read_to_string(self.state.join(format!("{name}.pid")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// testcase name -> the tags inside it (failure, flakyFailure, ...) and the failure message.
    fn junit(&self) -> BTreeMap<String, (Vec<String>, String)> {
        let text = std::fs::read_to_string(self.path().join("j.xml")).unwrap();
        let doc = roxmltree::Document::parse(&text).unwrap();
        doc.descendants()
            .filter(|n| n.has_tag_name("testcase"))
            .map(|n| {
                let tags: Vec<String> = n
                    .children()
                    .filter(|c| c.is_element())
                    .map(|c| c.tag_name().name().to_string())
                    .collect();
                let message = n
                    .children()
                    .find(|c| c.has_tag_name("failure"))
                    .and_then(|c| c.attribute("message"))
                    .unwrap_or("")
                    .to_string();
                (n.attribute("name").unwrap().to_string(), (tags, message))
            })
            .collect()
    }
}

/// The final result of each test: node id -> its test_finished event.
fn results(events: &[Value]) -> BTreeMap<String, Value> {
    events
        .iter()
        .filter(|e| e["event"] == "test_finished")
        .map(|e| (e["nodeid"].as_str().unwrap().to_string(), e.clone()))
        .collect()
}

fn outcomes(events: &[Value]) -> BTreeMap<String, String> {
    results(events)
        .into_iter()
        .map(|(k, v)| (k, v["outcome"].as_str().unwrap().to_string()))
        .collect()
}

fn expect(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Whether a process is gone (or dead and waiting to be reaped by init), allowing a few
/// seconds for init to reap it.
fn gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let rest = s[s.rfind(')')? + 1..].trim_start().to_string();
                rest.chars().next()
            });
        match state {
            None | Some('Z') | Some('X') => return true,
            Some(_) if Instant::now() > deadline => return false,
            Some(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn kill(pid: u32) {
    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
}

fn tail(s: &str) -> &str {
    &s[s.len().saturating_sub(3000)..]
}

/// test_segv.py: the tests around the segfault pass (the one after it in a fresh process),
/// the segfaulting one is a crash.
fn assert_segv_file_outcomes(ev: &[Value]) {
    assert_eq!(
        outcomes(ev),
        expect(&[
            ("tests/test_segv.py::test_after_segv", "passed"),
            ("tests/test_segv.py::test_before_segv", "passed"),
            ("tests/test_segv.py::test_segfaults", "crashed"),
        ])
    );
}

#[test]
fn faults_segfault_is_a_crash_with_its_traceback_and_the_rest_resumes() {
    let s = Suite::new();
    let out = run(s.racefree().arg("tests/test_segv.py"));
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let ev = s.events();
    assert_segv_file_outcomes(&ev);
    let crash = &results(&ev)["tests/test_segv.py::test_segfaults"];
    assert!(
        crash["message"].as_str().unwrap().contains("SIGSEGV"),
        "{crash}"
    );
    let longrepr = crash["longrepr"].as_str().unwrap();
    assert!(longrepr.contains("faulthandler traceback"), "{longrepr}");
    assert!(longrepr.contains("Fatal Python error"), "{longrepr}");
    assert!(
        longrepr.contains("in test_segfaults"),
        "the traceback names the test function: {longrepr}"
    );
    // The test after the crash ran in a second process, started for it.
    let resumed: Vec<&Value> = ev
        .iter()
        .filter(|e| e["event"] == "unit_started" && e["reason"] == "resume")
        .collect();
    assert_eq!(resumed.len(), 1, "{ev:?}");
    assert_eq!(resumed[0]["attempt"], 2);
    let junit = s.junit();
    let (tags, message) = &junit["test_segfaults"];
    assert_eq!(tags, &vec!["failure".to_string()]);
    assert!(message.contains("SIGSEGV"), "{message}");
    assert!(out.stdout.contains("1 failed") || out.stdout.contains("1 crashed"));
    assert!(out.stdout.contains("2 passed"), "{}", tail(&out.stdout));
}

#[test]
fn faults_os_exit_zero_is_a_crash_not_a_pass() {
    let s = Suite::new();
    let out = run(s.racefree().arg("tests/test_exit.py"));
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        outcomes(&s.events()),
        expect(&[
            ("tests/test_exit.py::test_after_exit", "passed"),
            ("tests/test_exit.py::test_after_exit_too", "passed"),
            ("tests/test_exit.py::test_before_exit", "passed"),
            ("tests/test_exit.py::test_exits_zero", "crashed"),
        ])
    );
    let crash = &results(&s.events())["tests/test_exit.py::test_exits_zero"];
    assert!(
        crash["message"].as_str().unwrap().contains("exit status 0"),
        "{crash}"
    );
    assert!(
        out.stdout.contains("3 passed, 1 crashed"),
        "{}",
        tail(&out.stdout)
    );
    // Any status the test's os._exit gives is the test's crash, not pytest's usage (4) or
    // internal (3) error: the run fails as for any crash, with no error for its unit.
    for status in ["2", "3", "4"] {
        let out = run(s
            .racefree()
            .arg("tests/test_exit.py")
            .env("RACEFREE_ITEST_EXIT", status));
        assert_eq!(
            out.code, 1,
            "os._exit({status}): {}{}",
            out.stdout, out.stderr
        );
        let crash = &results(&s.events())["tests/test_exit.py::test_exits_zero"];
        assert_eq!(crash["outcome"], "crashed", "{crash}");
        assert!(
            crash["message"]
                .as_str()
                .unwrap()
                .contains(&format!("exit status {status}")),
            "{crash}"
        );
        assert!(!out.stdout.contains("ERROR unit"), "{}", tail(&out.stdout));
    }
    // With -k, the resumed process's deselections are not counted twice.
    let out = run(s
        .racefree()
        .args(["-k", "not after_exit_too", "tests/test_exit.py"]));
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let ev = s.events();
    assert_eq!(
        outcomes(&ev),
        expect(&[
            ("tests/test_exit.py::test_after_exit", "passed"),
            ("tests/test_exit.py::test_before_exit", "passed"),
            ("tests/test_exit.py::test_exits_zero", "crashed"),
        ])
    );
    assert_eq!(ev.last().unwrap()["totals"]["deselected"], 1);
    assert!(
        out.stdout.contains("2 passed, 1 deselected, 1 crashed"),
        "{}",
        tail(&out.stdout)
    );
}

/// With namespaces (the default where the kernel allows them) units are forked by servers
/// that live in a PID namespace of their own: racefree must still signal the unit's real
/// process, so the hung test is timed out and the rest of its file resumes.
/// Runs racefree, checking that it ended within a minute (nothing hung) with `code`.
fn run_in_time(cmd: &mut Command, code: i32, what: &str) -> Ran {
    let start = Instant::now();
    let out = run(cmd);
    assert_eq!(out.code, code, "{what}{}{}", out.stdout, out.stderr);
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{what}: took too long"
    );
    out
}

#[test]
fn faults_timeouts_work_when_units_live_in_a_pid_namespace() {
    if !namespaces_work() {
        eprintln!("SKIPPED: the kernel forbids namespaces here");
        return;
    }
    let s = Suite::new();
    for fork in [true, false] {
        let mut cmd = s.racefree_isolated("namespace");
        cmd.args(["--timeout", "2", "--kill-grace", "1", "tests/test_hang.py"]);
        if !fork {
            cmd.arg("--no-fork");
        }
        run_in_time(&mut cmd, 1, &format!("fork {fork}:"));
        let ev = s.events();
        assert_eq!(
            outcomes(&ev),
            expect(&[
                ("tests/test_hang.py::test_after_hang", "passed"),
                ("tests/test_hang.py::test_hangs_with_grandchild", "failed"),
            ]),
            "fork {fork}"
        );
        let hang = &results(&ev)["tests/test_hang.py::test_hangs_with_grandchild"];
        assert_eq!(hang["message"], "timeout after 2 s");
        // The SIGTERM reached pytest through the unit's init: faulthandler's dump shows
        // where the test was stuck.
        assert!(
            hang["longrepr"]
                .as_str()
                .unwrap()
                .contains("test_hangs_with_grandchild"),
            "fork {fork}: {hang}"
        );
    }
}

#[test]
fn faults_timeout_kills_the_process_tree_and_resumes() {
    let s = Suite::new();
    let out = run_in_time(
        s.racefree().args([
            "--timeout",
            "2",
            "--kill-grace",
            "1",
            "-n",
            "2",
            "tests/test_hang.py",
            "tests/test_marker_timeout.py",
        ]),
        1,
        "",
    );
    let ev = s.events();
    assert_eq!(
        outcomes(&ev),
        expect(&[
            ("tests/test_hang.py::test_after_hang", "passed"),
            ("tests/test_hang.py::test_hangs_with_grandchild", "failed"),
            (
                "tests/test_marker_timeout.py::test_marker_disables_limit",
                "passed"
            ),
            ("tests/test_marker_timeout.py::test_marker_limit", "failed"),
        ])
    );
    let r = results(&ev);
    let hang = &r["tests/test_hang.py::test_hangs_with_grandchild"];
    assert_eq!(hang["message"], "timeout after 2 s");
    // faulthandler's dump on SIGTERM shows where the test was stuck.
    assert!(
        hang["longrepr"]
            .as_str()
            .unwrap()
            .contains("test_hangs_with_grandchild"),
        "{hang}"
    );
    // The marker's limit (1 s) won over --timeout.
    assert_eq!(
        r["tests/test_marker_timeout.py::test_marker_limit"]["message"],
        "timeout after 1 s"
    );
    let junit = s.junit();
    let (tags, message) = &junit["test_hangs_with_grandchild"];
    assert_eq!(tags, &vec!["failure".to_string()]);
    assert_eq!(message, "timeout after 2 s");
    assert!(
        out.stdout
            .contains("FAILED tests/test_hang.py::test_hangs_with_grandchild - timeout after 2 s"),
        "{}",
        tail(&out.stdout)
    );
    let grandchild = s.pid("grandchild");
    let is_gone = gone(grandchild);
    if !is_gone {
        kill(grandchild);
    }
    assert!(
        is_gone,
        "the hung test's grandchild {grandchild} outlived racefree"
    );
    // pytest does not warn about the timeout marker.
    assert!(!out.stdout.contains("PytestUnknownMarkWarning"));
    assert!(!out.stdout.contains("warning"), "{}", tail(&out.stdout));
}

#[test]
fn faults_setsid_daemon_is_killed_and_reported_as_a_leak() {
    let s = Suite::new();
    let out = run(s.racefree().arg("tests/test_daemon.py"));
    let daemon = s.pid("daemon");
    let is_gone = gone(daemon);
    if !is_gone {
        kill(daemon);
    }
    assert!(is_gone, "the setsid daemon {daemon} outlived racefree");
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let ev = s.events();
    assert_eq!(
        outcomes(&ev),
        expect(&[
            ("tests/test_daemon.py::test_after_daemon", "passed"),
            ("tests/test_daemon.py::test_starts_setsid_daemon", "passed"),
        ])
    );
    let leaks: Vec<&Value> = ev.iter().filter(|e| e["event"] == "leak").collect();
    assert_eq!(leaks.len(), 1, "{leaks:?}");
    assert_eq!(leaks[0]["pid"], daemon);
    assert_eq!(leaks[0]["cmdline"], "sleep 1000");
    assert_eq!(
        leaks[0]["nodeid"],
        "tests/test_daemon.py::test_starts_setsid_daemon"
    );
    assert!(
        out.stdout.contains(&format!(
            "LEAK unit 0 (tests/test_daemon.py::test_starts_setsid_daemon) - left pid {daemon} running, killed: sleep 1000"
        )),
        "{}",
        tail(&out.stdout)
    );
}

#[test]
fn faults_ten_megabytes_of_captured_output_pass() {
    let s = Suite::new();
    let out = run(s.racefree().arg("tests/test_loud.py"));
    assert_eq!(out.code, 0, "{}{}", tail(&out.stdout), out.stderr);
    assert_eq!(
        outcomes(&s.events()),
        expect(&[
            ("tests/test_loud.py::test_after_loud", "passed"),
            ("tests/test_loud.py::test_ten_megabytes_each_way", "passed"),
        ])
    );
}

#[test]
fn faults_retries_report_flaky_tests_loudly() {
    let s = Suite::new();
    let out = run(s
        .racefree()
        .args(["--retries", "1", "tests/test_flaky.py::test_fails_once"]));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let ev = s.events();
    let r = results(&ev);
    let flaky = &r["tests/test_flaky.py::test_fails_once"];
    assert_eq!(flaky["outcome"], "passed");
    assert_eq!(flaky["flaky"], true);
    assert_eq!(flaky["attempt"], 2);
    assert_eq!(flaky["reruns"][0]["attempt"], 1);
    assert!(
        flaky["reruns"][0]["message"]
            .as_str()
            .unwrap()
            .contains("first attempt fails")
    );
    let retries: Vec<&Value> = ev.iter().filter(|e| e["event"] == "test_retry").collect();
    assert_eq!(retries.len(), 1);
    assert!(
        out.stdout
            .contains("FLAKY tests/test_flaky.py::test_fails_once"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("1 passed, 1 flaky in"),
        "{}",
        out.stdout
    );
    let junit = s.junit();
    let (tags, _) = &junit["test_fails_once"];
    assert_eq!(tags, &vec!["flakyFailure".to_string()]);

    // The same with --flaky-result fail: the run fails.
    std::fs::remove_file(s.state.join("flaky-count")).unwrap();
    let out = run(s.racefree().args([
        "--retries",
        "1",
        "--flaky-result",
        "fail",
        "tests/test_flaky.py::test_fails_once",
    ]));
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);

    // A test that never passes: every attempt kept, <failure> plus <rerunFailure>.
    let out = run(s
        .racefree()
        .args(["--retries", "2", "tests/test_flaky.py::test_always_fails"]));
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let r = results(&s.events());
    let bad = &r["tests/test_flaky.py::test_always_fails"];
    assert_eq!(bad["outcome"], "failed");
    assert_eq!(bad["attempt"], 3);
    assert_eq!(bad["flaky"], false);
    assert_eq!(bad["reruns"].as_array().unwrap().len(), 2);
    let junit = s.junit();
    let (tags, _) = &junit["test_always_fails"];
    assert_eq!(
        tags,
        &vec![
            "failure".to_string(),
            "rerunFailure".to_string(),
            "rerunFailure".to_string()
        ]
    );
}

#[test]
fn faults_exit_4_before_any_test_is_retried_visibly() {
    let s = Suite::new();
    // The conftest kills the first process that imports it. Forked at the session point,
    // that is the fork server, which then serves from the conftest point; this test is
    // about a unit dying so, so its units start from the conftest point.
    let out = run(s
        .racefree()
        .env("RACEFREE_FORK_POINT", "conftest")
        .arg("tests/infra/test_infra.py"));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let ev = s.events();
    assert_eq!(
        outcomes(&ev),
        expect(&[(
            "tests/infra/test_infra.py::test_runs_after_infra_retry",
            "passed"
        )])
    );
    let infra: Vec<&Value> = ev.iter().filter(|e| e["event"] == "infra_retry").collect();
    assert_eq!(infra.len(), 1, "{ev:?}");
    assert_eq!(infra[0]["exit"]["code"], 4);
    assert_eq!(infra[0]["retry"], 1);
    assert_eq!(
        infra[0]["files"],
        serde_json::json!([["tests/infra/test_infra.py", true]])
    );
    assert!(
        out.stdout.contains("INFRASTRUCTURE RETRIES"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("INFRA RETRY unit 0"), "{}", out.stdout);
    // ... and in the JUnit XML, as a suite property with the forensics in system-err.
    let xml = std::fs::read_to_string(s.path().join("j.xml")).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let prop = doc
        .descendants()
        .find(|n| n.has_tag_name("property") && n.attribute("name") == Some("racefree.infra_retry"))
        .expect("an infra_retry property");
    assert!(
        prop.attribute("value").unwrap().contains(
            "ended (exit status 4) before any test; files: tests/infra/test_infra.py (exists)"
        ),
        "{xml}"
    );
}

#[test]
fn faults_a_file_deleted_after_discovery_fails_at_once() {
    let s = Suite::new();
    let out = run(s
        .racefree()
        .args(["-n", "1", "--unit", "file", "tests/gone"]));
    assert_eq!(out.code, 4, "{}{}", out.stdout, out.stderr);
    let ev = s.events();
    assert!(ev.iter().all(|e| e["event"] != "infra_retry"), "{ev:?}");
    let failed_unit = ev
        .iter()
        .find(|e| e["event"] == "unit_finished" && !e["error"].is_null())
        .unwrap();
    assert!(
        failed_unit["error"]
            .as_str()
            .unwrap()
            .contains("file(s) gone since discovery, not retried: tests/gone/test_gone.py"),
        "{failed_unit}"
    );
    assert_eq!(
        outcomes(&ev).values().filter(|o| *o == "passed").count(),
        30
    );
}

#[test]
fn faults_collection_error_does_not_stop_other_files() {
    let s = Suite::new();
    let out = run(s.racefree().args([
        "--unit",
        "pack",
        "tests/test_collect_broken.py",
        "tests/test_exit.py",
    ]));
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("ERROR collecting tests/test_collect_broken.py"),
        "{}",
        out.stdout
    );
    let o = outcomes(&s.events());
    assert_eq!(o["tests/test_exit.py::test_after_exit_too"], "passed");
    assert_eq!(o.len(), 4);
}

#[test]
fn faults_ctrl_c_writes_partial_reports_and_leaves_nothing_running() {
    let s = Suite::new();
    let child = s
        .racefree()
        .args([
            "-n",
            "2",
            "--unit",
            "file",
            "tests/test_interrupt_a.py",
            "tests/test_interrupt_b.py",
            // One test: planned last, it waits for a slot the hanging tests never free.
            "tests/test_interrupt_c.py",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(s.state.join("a.started").exists() && s.state.join("b.started").exists()) {
        assert!(Instant::now() < deadline, "the tests never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (a, b) = (s.pid("interrupt_a"), s.pid("interrupt_b"));
    let (a_gone, b_gone) = (gone(a), gone(b));
    for (pid, is_gone) in [(a, a_gone), (b, b_gone)] {
        if !is_gone {
            kill(pid);
        }
    }
    assert!(a_gone && b_gone, "processes outlived racefree: {a} {b}");
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    let ev = s.events();
    assert_eq!(
        outcomes(&ev),
        expect(&[
            ("tests/test_interrupt_a.py::test_a_never_reached", "not_run"),
            ("tests/test_interrupt_a.py::test_a_waits", "not_run"),
            ("tests/test_interrupt_b.py::test_b_passes", "passed"),
            ("tests/test_interrupt_b.py::test_b_waits", "not_run"),
        ])
    );
    let r = results(&ev);
    assert_eq!(
        r["tests/test_interrupt_a.py::test_a_waits"]["message"],
        "not run: interrupted"
    );
    let last = ev.last().unwrap();
    assert_eq!(last["event"], "run_finished");
    assert_eq!(last["exit_code"], 2);
    assert_eq!(last["interrupted"], "interrupted; 1 file(s) not started");
    assert_eq!(
        last["not_started"],
        serde_json::json!(["tests/test_interrupt_c.py"])
    );
    let junit = s.junit();
    assert_eq!(junit.len(), 5, "{junit:?}");
    assert_eq!(
        junit["tests.test_interrupt_c"].0,
        vec!["skipped".to_string()]
    );
    assert!(
        stdout.contains("NOT STARTED tests/test_interrupt_c.py - not run: interrupted"),
        "{stdout}"
    );
    assert_eq!(junit["test_b_passes"].0, Vec::<String>::new());
    assert_eq!(junit["test_a_waits"].0, vec!["skipped".to_string()]);
    assert!(
        stdout.contains("NOT RUN tests/test_interrupt_a.py::test_a_waits - not run: interrupted"),
        "{stdout}"
    );
}

#[test]
fn faults_run_timeout_stops_the_run() {
    let s = Suite::new();
    let out = run_in_time(
        s.racefree()
            .args(["--run-timeout", "10", "tests/test_interrupt_a.py"]),
        2,
        "",
    );
    // Ten seconds is plenty for the test to start even on a loaded machine.
    let a = s.pid("interrupt_a");
    assert!(gone(a));
    let ev = s.events();
    assert_eq!(
        outcomes(&ev),
        expect(&[
            ("tests/test_interrupt_a.py::test_a_never_reached", "not_run"),
            ("tests/test_interrupt_a.py::test_a_waits", "not_run"),
        ])
    );
    assert!(
        out.stdout.contains("run timeout after 10 s"),
        "{}",
        out.stdout
    );
}

#[test]
fn faults_leak_lines_on_the_event_pipe_become_leak_events() {
    let s = Suite::new();
    let out = run(s.racefree().arg("tests/test_leak_line.py"));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let ev = s.events();
    let leaks: Vec<&Value> = ev.iter().filter(|e| e["event"] == "leak").collect();
    assert_eq!(leaks.len(), 1, "{ev:?}");
    assert_eq!(leaks[0]["pid"], 4242);
    assert_eq!(leaks[0]["cmdline"], "fake-daemon --forever");
    assert_eq!(
        leaks[0]["nodeid"],
        "tests/test_leak_line.py::test_reports_a_leak_on_the_event_pipe"
    );
    assert!(
        out.stdout.contains("left pid 4242 running"),
        "{}",
        out.stdout
    );
}

#[test]
fn faults_second_ctrl_c_kills_at_once() {
    let s = Suite::new();
    let start = Instant::now();
    let child = s
        .racefree()
        .args(["--kill-grace", "120", "tests/test_ignores_term.py"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !s.state.join("term.started").exists() {
        assert!(Instant::now() < deadline, "the test never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = child.id().to_string();
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    // The test ignores SIGTERM, so only the second Ctrl-C ends the run before the grace.
    std::thread::sleep(Duration::from_millis(500));
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(100),
        "waited for the 120 s grace"
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        outcomes(&s.events()),
        expect(&[(
            "tests/test_ignores_term.py::test_ignores_sigterm",
            "not_run"
        )])
    );
}

#[test]
fn faults_a_fork_server_that_dies_loading_conftest_files_falls_back_visibly() {
    // The same conftest, forked at the session point (the default): it kills the fork
    // server that loads it first, and that server's parent serves from the conftest point
    // instead, saying why with -v. The test still runs, once.
    let s = Suite::new();
    let out = run(s
        .racefree()
        .args(["-v", "-n", "1", "tests/infra/test_infra.py"]));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("units fork at the conftest point")
            && out.stderr.contains("exit status 4"),
        "{}",
        out.stderr
    );
    assert_eq!(
        outcomes(&s.events()),
        expect(&[(
            "tests/infra/test_infra.py::test_runs_after_infra_retry",
            "passed"
        )])
    );
}

#[test]
fn faults_a_resumption_that_dies_before_collecting_loses_nothing() {
    let s = Suite::new();
    // The resumption dies importing the conftest, which a unit forked at the session point
    // never does: the server imported it before the first test poisoned it.
    let out = run(s
        .racefree()
        .env("RACEFREE_FORK_POINT", "conftest")
        .arg("tests/poisoned/test_poison.py"));
    // A pytest process that failed before collecting makes the run's status 2, as pytest's
    // collection errors do; its test is listed as not run.
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(
            "ERROR unit 1 - the pytest process ended (exit status 1) before collecting any test"
        ),
        "{}",
        out.stdout
    );
    let ev = s.events();
    assert_eq!(
        outcomes(&ev),
        expect(&[
            (
                "tests/poisoned/test_poison.py::test_never_collected_again",
                "not_run"
            ),
            (
                "tests/poisoned/test_poison.py::test_poisons_and_dies",
                "crashed"
            ),
        ])
    );
    let r = results(&ev);
    assert!(
        r["tests/poisoned/test_poison.py::test_never_collected_again"]["message"]
            .as_str()
            .unwrap()
            .contains("without collecting it"),
        "{r:?}"
    );
    // One resumption only: it died without progress, so it is not started again.
    let resumed = ev
        .iter()
        .filter(|e| e["event"] == "unit_started" && e["reason"] == "resume")
        .count();
    assert_eq!(resumed, 1);
}

fn namespaces_work() -> bool {
    let probe = Command::cargo_bin("racefree")
        .unwrap()
        .args(["__unit-init", "--probe"])
        .output()
        .unwrap();
    probe.status.success()
}

/// Also in namespace mode, where pytest runs under an init (PID 1 cannot die by the signal
/// pytest died of: the unit's outer process does, so the crash is still named by it).
#[test]
fn faults_abort_and_sigkill_are_crashes_named_by_signal() {
    let mut modes = vec![vec!["tmp"]];
    if namespaces_work() {
        modes.push(vec!["namespace"]);
        modes.push(vec!["namespace", "--no-fork"]);
    }
    for mode in modes {
        abort_and_sigkill_are_crashes_named_by_signal(&mode);
    }
}

fn abort_and_sigkill_are_crashes_named_by_signal(mode: &[&str]) {
    let s = Suite::new();
    let out = run(s
        .racefree_isolated(mode[0])
        .args(&mode[1..])
        .arg("tests/test_signals.py"));
    assert_eq!(out.code, 1, "{mode:?}: {}{}", out.stdout, out.stderr);
    let ev = s.events();
    assert_eq!(
        outcomes(&ev),
        expect(&[
            ("tests/test_signals.py::test_aborts", "crashed"),
            ("tests/test_signals.py::test_after_signals", "passed"),
            (
                "tests/test_signals.py::test_killed_like_by_the_oom_killer",
                "crashed"
            ),
        ]),
        "{mode:?}"
    );
    let r = results(&ev);
    let abort = &r["tests/test_signals.py::test_aborts"];
    assert!(
        abort["message"].as_str().unwrap().contains("SIGABRT"),
        "{mode:?}: {abort}"
    );
    assert!(
        abort["longrepr"]
            .as_str()
            .unwrap()
            .contains("in test_aborts"),
        "{mode:?}: {abort}"
    );
    let killed = &r["tests/test_signals.py::test_killed_like_by_the_oom_killer"];
    assert!(
        killed["message"].as_str().unwrap().contains("SIGKILL"),
        "{mode:?}: {killed}"
    );
}

/// Also in namespace mode, where the unit's outer process and init take SIGTERM to pass it
/// on: the SIGKILL after the grace still ends them all.
#[test]
fn faults_a_test_that_ignores_sigterm_is_killed_after_the_grace() {
    let mut modes = vec!["tmp"];
    if namespaces_work() {
        modes.push("namespace");
    }
    for mode in modes {
        let s = Suite::new();
        run_in_time(
            s.racefree_isolated(mode).args([
                "--timeout",
                "1",
                "--kill-grace",
                "1",
                "tests/test_ignores_term.py",
            ]),
            1,
            mode,
        );
        let r = results(&s.events());
        let t = &r["tests/test_ignores_term.py::test_ignores_sigterm"];
        assert_eq!(t["outcome"], "failed", "{mode}");
        assert_eq!(t["message"], "timeout after 1 s", "{mode}");
    }
}

#[test]
fn faults_crashes_are_retried_in_a_fresh_process_too() {
    let s = Suite::new();
    let out = run(s.racefree().args(["--retries", "1", "tests/test_segv.py"]));
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let ev = s.events();
    assert_segv_file_outcomes(&ev);
    let crash = &results(&ev)["tests/test_segv.py::test_segfaults"];
    assert_eq!(crash["attempt"], 2);
    assert_eq!(crash["reruns"][0]["outcome"], "crashed");
    let retried = ev
        .iter()
        .filter(|e| e["event"] == "unit_started" && e["reason"] == "retry")
        .count();
    assert_eq!(retried, 1);
}

#[test]
fn faults_timeouts_come_from_tool_racefree_too() {
    let s = Suite::new();
    std::fs::write(
        s.path().join("pyproject.toml"),
        "[tool.racefree]\ntimeout = 2\nkill-grace = 1\n",
    )
    .unwrap();
    let out = run(s.racefree().arg("tests/test_hang.py"));
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let r = results(&s.events());
    assert_eq!(
        r["tests/test_hang.py::test_hangs_with_grandchild"]["message"],
        "timeout after 2 s"
    );
    assert_eq!(
        r["tests/test_hang.py::test_after_hang"]["outcome"],
        "passed"
    );
    // The command line wins over the file.
    let out = run(s.racefree().args(["--timeout", "3", "tests/test_hang.py"]));
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let r = results(&s.events());
    assert_eq!(
        r["tests/test_hang.py::test_hangs_with_grandchild"]["message"],
        "timeout after 3 s"
    );
}

#[test]
fn faults_a_daemon_killed_with_its_timed_out_unit_is_still_a_leak() {
    let s = Suite::new();
    let out = run(s.racefree().args([
        "--timeout",
        "2",
        "--kill-grace",
        "1",
        "tests/test_daemon_then_hang.py",
    ]));
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let daemon = s.pid("daemon_hang");
    let is_gone = gone(daemon);
    if !is_gone {
        kill(daemon);
    }
    assert!(is_gone, "the daemon {daemon} outlived racefree");
    let ev = s.events();
    let leaks: Vec<&Value> = ev.iter().filter(|e| e["event"] == "leak").collect();
    assert_eq!(leaks.len(), 1, "{leaks:?}");
    assert_eq!(leaks[0]["pid"], daemon);
    assert_eq!(
        leaks[0]["nodeid"],
        "tests/test_daemon_then_hang.py::test_daemon_then_hang"
    );
    assert_eq!(
        results(&ev)["tests/test_daemon_then_hang.py::test_daemon_then_hang"]["message"],
        "timeout after 2 s"
    );
}
