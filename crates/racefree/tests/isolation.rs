#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `--isolate`: real pytest in real namespaces. Suites whose tests race on shared paths and
//! ports pass every time in namespace mode and fail without isolation; daemons do not outlive
//! their unit; tests see the invoking user's ids; `auto` falls back to `tmp` with one line.
//!
//! Where the kernel forbids namespaces (checked at run time by racefree's own probe), the
//! namespace tests print why and return instead of failing.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use assert_cmd::cargo::CommandCargoExt;

mod common;
use common::{Ran, copy_dir, fixture_source, python, run};

fn fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture_source(&format!("isolation/{name}")), dir.path());
    dir
}

fn racefree_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_racefree"))
}

fn racefree(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("racefree").unwrap();
    cmd.current_dir(dir)
        .args(["run", "--no-history", "--python"])
        .arg(python())
        .env_remove("VIRTUAL_ENV")
        .env_remove("RACEFREE_TEST_FAIL_NAMESPACE");
    cmd
}

/// Whether this kernel lets racefree set up a unit's namespaces (with a private network if
/// asked); prints the reason and returns false when it does not.
fn namespaces_work(private_network: bool) -> bool {
    let mut cmd = Command::new(racefree_bin());
    cmd.args(["__unit-init", "--probe"]);
    if private_network {
        cmd.arg("--private-network");
    }
    let out = cmd
        .env_remove("RACEFREE_TEST_FAIL_NAMESPACE")
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!(
            "SKIPPED: the kernel forbids namespaces here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    out.status.success()
}

/// One run of the race suite: two files, one unit each, on two workers at once.
fn race_run(dir: &Path, round: usize, isolate: &[&str]) -> Ran {
    run(racefree(dir)
        .args(["-n", "2", "--unit", "file", "-q"])
        .args(isolate)
        .env("ISO_BARRIER_DIR", dir.join(format!("barrier-{round}"))))
}

#[test]
fn races_pass_in_every_namespace_run_and_fail_without_isolation() {
    if !namespaces_work(true) {
        return;
    }
    let suite = fixture("races");
    for round in 0..20 {
        let out = race_run(
            suite.path(),
            round,
            &["--isolate", "namespace", "--private-network"],
        );
        assert_eq!(
            out.code, 0,
            "namespace run {round} failed:\n{}\n{}",
            out.stdout, out.stderr
        );
        assert!(out.stdout.contains("6 passed"), "{}", out.stdout);
    }
    // The same suite without isolation: one test of each pair loses its race.
    let mut failed = std::collections::BTreeSet::new();
    for round in 0..3 {
        let out = race_run(suite.path(), 100 + round, &["--isolate", "none"]);
        if out.code == 1 {
            for race in ["shm", "tmp", "port"] {
                if out.stdout.contains(&format!("::test_{race}_")) {
                    failed.insert(race);
                }
            }
        }
    }
    assert_eq!(
        failed.into_iter().collect::<Vec<_>>(),
        ["port", "shm", "tmp"],
        "without isolation the races should fail"
    );
    let _ = std::fs::remove_file("/dev/shm/racefree-itest-isolation-race");
    let _ = std::fs::remove_file(std::env::temp_dir().join("racefree-itest-isolation-race"));
}

/// Pids of live processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(marker))
                .unwrap_or(false)
        })
        .collect()
}

/// Pids of live processes whose whole command line (space-joined) is `cmdline`.
fn processes_running(cmdline: &str) -> Vec<i32> {
    let wanted: Vec<u8> = cmdline.replace(' ', "\0").into_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.strip_suffix(b"\0") == Some(&wanted[..]))
                .unwrap_or(false)
        })
        .collect()
}

fn unique_marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("1000.{}{nanos}", std::process::id())
}

#[test]
fn a_daemon_does_not_outlive_its_unit_in_a_namespace() {
    if !namespaces_work(false) {
        return;
    }
    let suite = fixture("world");
    let out_dir = suite.path().join("out");
    // Without a PID namespace the daemon leaves the process group (setsid), and racefree
    // still finds it by its unit's token and kills it (issue 4)...
    let marker = unique_marker();
    let out = run(racefree(suite.path())
        .args(["tests/test_daemon.py", "--isolate", "tmp"])
        .env("ISO_MARKER", &marker)
        .env("ISO_OUT", &out_dir));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let escaped = processes_with(&marker);
    for pid in &escaped {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    assert!(
        escaped.is_empty(),
        "processes left behind with tmp: {escaped:?}"
    );
    // ...and in a namespace (forked from the slot's server, or spawned through the init per
    // unit) it is gone too, and reported as a leak.
    for fork in [true, false] {
        let marker = unique_marker();
        let events = suite.path().join(format!("leak-{fork}.ndjson"));
        let mut cmd = racefree(suite.path());
        cmd.args(["tests/test_daemon.py", "--isolate", "namespace", "--events"])
            .arg(&events)
            .env("ISO_MARKER", &marker)
            .env("ISO_OUT", &out_dir);
        if !fork {
            cmd.arg("--no-fork");
        }
        let out = run(&mut cmd);
        assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
        let left = processes_with(&marker);
        assert!(
            left.is_empty(),
            "processes left behind (fork {fork}): {left:?}"
        );
        let log = std::fs::read_to_string(&events).unwrap();
        let leaks: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("\"event\":\"leak\"") && l.contains(&marker))
            .collect();
        assert_eq!(
            leaks.len(),
            1,
            "one leak event naming the daemon (fork {fork}):\n{log}"
        );
    }
}

#[test]
fn tests_see_the_invoking_users_ids() {
    if !namespaces_work(false) {
        return;
    }
    let suite = fixture("world");
    let out_dir = suite.path().join("out");
    let out = run(racefree(suite.path())
        .args(["tests/test_ids.py", "--isolate", "namespace"])
        .env("ISO_OUT", &out_dir));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let ids = std::fs::read_to_string(out_dir.join("ids")).unwrap();
    let expected = format!(
        "{} {}",
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw()
    );
    assert_eq!(ids, expected);
}

/// As root, the unprivileged path (a user namespace) is tested by dropping to `nobody`.
#[test]
fn an_unprivileged_user_keeps_its_ids_in_the_user_namespace() {
    if !rustix::process::geteuid().is_root() {
        return; // the non-root path is what every other test here exercises then
    }
    let Ok(setpriv) = which("setpriv") else {
        eprintln!("SKIPPED: setpriv(1) is not installed");
        return;
    };
    let as_nobody = |args: &[&str]| {
        Command::new(&setpriv)
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(racefree_bin())
            .args(args)
            .output()
            .unwrap()
    };
    let probe = as_nobody(&["__unit-init", "--probe"]);
    if !probe.status.success() {
        eprintln!(
            "SKIPPED: the kernel forbids unprivileged user namespaces: {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        );
        return;
    }
    let out = as_nobody(&[
        "__unit-init",
        "--private-network",
        "--",
        "sh",
        "-c",
        "id -u; id -g; ls -A /tmp | wc -l",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "65534\n65534\n0\n");
}

fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

#[test]
fn auto_falls_back_to_tmp_with_one_line_when_namespaces_are_forbidden() {
    let suite = fixture("world");
    let out_dir = suite.path().join("out");
    let out = run(racefree(suite.path())
        .args(["tests/test_session_view.py", "tests/test_ids.py"])
        .env("ISO_OUT", &out_dir)
        .env("RACEFREE_TEST_FAIL_NAMESPACE", "1"));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("isolation"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(
        lines[0].contains("isolation: tmp") && lines[0].contains("RACEFREE_TEST_FAIL_NAMESPACE"),
        "{}",
        lines[0]
    );
    // tmp isolation: the host's /dev/shm, where the session roots of other runs may live.
    let session = std::fs::read_to_string(out_dir.join("session")).unwrap();
    assert!(session.contains('/'), "{session}");
    let _ = std::fs::remove_file("/dev/shm/racefree-itest-isolation-shared");
    // An explicit `namespace` cannot fall back: it is a usage error naming the reason.
    let out = run(racefree(suite.path())
        .args(["tests/test_ids.py", "--isolate", "namespace"])
        .env("ISO_OUT", &out_dir)
        .env("RACEFREE_TEST_FAIL_NAMESPACE", "1"));
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(
        out.stderr.contains("RACEFREE_TEST_FAIL_NAMESPACE"),
        "{}",
        out.stderr
    );
    // Quiet when nothing falls back: no isolation line without -v.
    if namespaces_work(false) {
        let out = run(racefree(suite.path())
            .args(["tests/test_ids.py"])
            .env("ISO_OUT", &out_dir));
        assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
        assert!(!out.stderr.contains("isolation"), "{}", out.stderr);
        let out = run(racefree(suite.path())
            .args(["tests/test_ids.py", "-v"])
            .env("ISO_OUT", &out_dir));
        assert!(
            out.stderr.contains("racefree: isolation: namespace"),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn concurrent_namespace_runs_see_only_their_own_session_root() {
    if !namespaces_work(false) {
        return;
    }
    // Two runs at once in one checkout. The barrier lives in the checkout, which both runs
    // bind back into their private /tmp (a directory elsewhere under /tmp would be private).
    let suite = fixture("world");
    let barrier = suite.path().join("barrier");
    let outs = [suite.path().join("out-0"), suite.path().join("out-1")];
    let children: Vec<_> = outs
        .iter()
        .map(|out| {
            racefree(suite.path())
                .args(["tests/test_session_view.py", "--isolate", "namespace"])
                .env("ISO_OUT", out)
                .env("ISO_BARRIER_DIR", &barrier)
                .env("ISO_HOLD", "0.3")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut roots = Vec::new();
    for (child, out_dir) in children.into_iter().zip(&outs) {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let seen = std::fs::read_to_string(out_dir.join("session")).unwrap();
        let (root, listing) = seen.split_once('\n').unwrap();
        let run_id = Path::new(root).file_name().unwrap().to_str().unwrap();
        // Only this run's session directory is bound into the private tmpfs; the other run's
        // (and its lock file) stay on the host's side. So is the build's shared copy of the
        // plugin, which holds no run's state.
        let listed: Vec<&str> = listing
            .split(' ')
            .filter(|name| !name.starts_with("python-"))
            .collect();
        assert_eq!(listed, [run_id], "{seen}");
        roots.push(root.to_string());
    }
    assert_ne!(roots[0], roots[1]);
}

/// Starts `racefree __unit-init -- sh -c script` with its event fd (9) on a pipe (stdout).
fn init_with_event_pipe(script: &str) -> std::process::Child {
    Command::new("sh")
        .arg("-c")
        .arg("RACEFREE_EVENT_FD=9 exec \"$0\" __unit-init -- sh -c \"$1\" 9>&1 >/dev/null")
        .arg(racefree_bin())
        .arg(script)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn lines_and_status(mut child: std::process::Child) -> (Vec<String>, std::process::ExitStatus) {
    let mut text = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let status = child.wait().unwrap();
    (text.lines().map(str::to_string).collect(), status)
}

#[test]
fn init_reports_each_leftover_process_on_the_event_pipe_and_kills_it() {
    if !namespaces_work(false) {
        return;
    }
    let (a, b) = (unique_marker(), unique_marker() + "1");
    let child = init_with_event_pipe(&format!("sleep {a} & setsid sleep {b} & sleep 1; exit 3"));
    // The host pids of the two sleeps, seen from outside while they live.
    let started = std::time::Instant::now();
    let mut host_pids = Vec::new();
    while started.elapsed() < std::time::Duration::from_secs(5) {
        let (pa, pb) = (
            processes_running(&format!("sleep {a}")),
            processes_running(&format!("sleep {b}")),
        );
        if pa.len() == 1 && pb.len() == 1 {
            host_pids = vec![
                (format!("sleep {a}"), i64::from(pa[0])),
                (format!("sleep {b}"), i64::from(pb[0])),
            ];
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(host_pids.len(), 2, "the sleeps never showed up");
    let (lines, status) = lines_and_status(child);
    assert_eq!(status.code(), Some(3), "the command's exit status");
    let mut leaks: Vec<(String, i64)> = lines
        .iter()
        .map(|l| {
            assert!(l.starts_with("{\"e\":\"leak\",\"pid\":"), "{l}");
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v.as_object().unwrap().len(), 3, "{l}");
            (
                v["cmdline"].as_str().unwrap().to_string(),
                v["pid"].as_i64().unwrap(),
            )
        })
        .collect();
    leaks.sort();
    host_pids.sort();
    assert_eq!(leaks, host_pids, "one line per leak, with the host's pid");
    assert!(processes_with(&a).is_empty() && processes_with(&b).is_empty());

    // Nothing left: no line. A command killed by a signal: the init dies by the same signal.
    let (lines, status) = lines_and_status(init_with_event_pipe("kill -TERM $$"));
    assert!(lines.is_empty(), "{lines:?}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(15));
}

#[test]
fn the_isolate_key_in_pyproject_is_read_and_the_command_line_wins() {
    let suite = fixture("world");
    let out_dir = suite.path().join("out");
    std::fs::write(
        suite.path().join("pyproject.toml"),
        "[tool.racefree]\nisolate = \"tmp\"\nprivate-network = true\n",
    )
    .unwrap();
    // tmp from the file, with a private network: a usage error that says why.
    let out = run(racefree(suite.path())
        .args(["tests/test_ids.py"])
        .env("ISO_OUT", &out_dir));
    assert_eq!(out.code, 4, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("--private-network needs --isolate namespace"),
        "{}",
        out.stderr
    );
    // The command line overrides the file.
    std::fs::write(
        suite.path().join("pyproject.toml"),
        "[tool.racefree]\nisolate = \"tmp\"\n",
    )
    .unwrap();
    let out = run(racefree(suite.path())
        .args(["tests/test_ids.py", "-v"])
        .env("ISO_OUT", &out_dir));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("racefree: isolation: tmp"),
        "{}",
        out.stderr
    );
    if namespaces_work(false) {
        let out = run(racefree(suite.path())
            .args(["tests/test_ids.py", "-v", "--isolate", "namespace"])
            .env("ISO_OUT", &out_dir));
        assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains("racefree: isolation: namespace"),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn killing_racefree_kills_the_whole_namespace() {
    if !namespaces_work(false) {
        return;
    }
    let suite = fixture("world");
    let marker = unique_marker();
    let mut child = racefree(suite.path())
        .args(["tests/test_daemon.py", "--isolate", "namespace"])
        .env("ISO_MARKER", &marker)
        .env("ISO_SLEEP", "120")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let wait_until = |what: &str, done: &dyn Fn() -> bool| {
        let started = std::time::Instant::now();
        while !done() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "timed out waiting until {what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let daemon = format!("sleep {marker}");
    wait_until("the daemon started", &|| {
        !processes_running(&daemon).is_empty()
    });
    // SIGKILL: racefree can clean nothing up itself. The parent-death signals take the unit's
    // outer process, then its init, and with the init the kernel kills the namespace.
    child.kill().unwrap();
    child.wait().unwrap();
    wait_until("the daemon died with racefree", &|| {
        processes_running(&daemon).is_empty()
    });
}

/// Units of one worker slot run one after the other; in namespace mode each still gets its
/// own /tmp and /dev/shm, whether it is forked from the slot's server (which makes a mount
/// namespace per child) or spawned through the init. With `tmp` isolation the second unit
/// sees the first one's fixed-name files, so the test can fail.
#[test]
fn units_of_one_slot_do_not_share_tmp_or_shm_in_namespace_mode() {
    if !namespaces_work(false) {
        return;
    }
    let suite = fixture("perunit");
    for extra in [&[][..], &["--no-fork", "--unit", "file"][..]] {
        let marker = unique_marker();
        let out = run(racefree(suite.path())
            .args(["-n", "1", "--isolate", "namespace"])
            .args(extra)
            .env("ISO_MARKER", &marker));
        assert_eq!(out.code, 0, "{extra:?}: {}\n{}", out.stdout, out.stderr);
        assert!(out.stdout.contains("2 passed"), "{}", out.stdout);
    }
    let marker = unique_marker();
    let out = run(racefree(suite.path())
        .args(["-n", "1", "--isolate", "tmp", "--unit", "file"])
        .env("ISO_MARKER", &marker));
    for dir in ["/tmp", "/dev/shm"] {
        for name in ["one", "two"] {
            let _ = std::fs::remove_file(format!("{dir}/rf-{marker}-{name}"));
        }
    }
    assert_eq!(out.code, 1, "tmp isolation shares /tmp:\n{}", out.stdout);
}

/// The interpreter may live under a directory namespace mode makes private: a virtualenv in
/// /tmp (CI checkouts often are), reached through a wrapper script. racefree asks the
/// interpreter where it lives and binds that back, forked or spawned.
#[test]
fn an_interpreter_under_a_private_tmp_still_runs_in_namespace_mode() {
    if !namespaces_work(false) {
        return;
    }
    let suite = fixture("perunit");
    // A path under /tmp that leads to the real interpreter's virtualenv...
    let under_tmp = tempfile::Builder::new().tempdir_in("/tmp").unwrap();
    let venv = python().parent().unwrap().parent().unwrap().to_path_buf();
    let link = under_tmp.path().join("venv");
    std::os::unix::fs::symlink(&venv, &link).unwrap();
    // ...and a wrapper script in the project that runs python through it.
    let wrapper = suite.path().join("python-wrapper");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec {}/bin/python \"$@\"\n", link.display()),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    for extra in [&[][..], &["--no-fork", "--unit", "file"][..]] {
        let out = run(Command::cargo_bin("racefree")
            .unwrap()
            .current_dir(suite.path())
            .args([
                "run",
                "--no-history",
                "-n",
                "1",
                "--isolate",
                "namespace",
                "--python",
            ])
            .arg(&wrapper)
            .args(extra)
            .env_remove("VIRTUAL_ENV")
            .env("ISO_MARKER", unique_marker()));
        assert_eq!(out.code, 0, "{extra:?}: {}\n{}", out.stdout, out.stderr);
        assert!(out.stdout.contains("2 passed"), "{}", out.stdout);
    }
}

/// Forked from the slot's server or spawned, each unit of a slot is alone in a PID namespace
/// of its own under an init: pytest is PID 2 and sees neither the server nor what the
/// slot's other unit left running. The init reports each unit's daemon as a leak of that
/// unit and test, with the pid the host sees, and kills it.
#[test]
fn each_unit_of_a_slot_gets_its_own_pid_namespace_and_init() {
    if !namespaces_work(false) {
        return;
    }
    let suite = fixture("pidns");
    for extra in [&[][..], &["--no-fork", "--unit", "file"][..]] {
        let marker = unique_marker();
        let events = suite.path().join("events.ndjson");
        let child = racefree(suite.path())
            .args(["-n", "1", "--isolate", "namespace", "--events"])
            .arg(&events)
            .args(extra)
            .env("ISO_MARKER", &marker)
            .env("ISO_HOLD", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The daemons' pids as the host sees them, while they run.
        let daemons = [format!("sleep {marker}1"), format!("sleep {marker}2")];
        let mut host_pids = std::collections::BTreeMap::new();
        let started = std::time::Instant::now();
        while host_pids.len() < 2 && started.elapsed() < std::time::Duration::from_secs(60) {
            for daemon in &daemons {
                if let [pid] = processes_running(daemon)[..] {
                    host_pids.insert(daemon.clone(), i64::from(pid));
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{extra:?}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("2 passed"), "{stdout}");
        // Forked means forked: a server that failed would have spawned the units instead.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("fork server"), "{extra:?}: {stderr}");
        assert_eq!(host_pids.len(), 2, "{extra:?}: the daemons never showed up");
        assert!(
            processes_with(&marker).is_empty(),
            "{extra:?}: a daemon survived"
        );
        let log: Vec<serde_json::Value> = std::fs::read_to_string(&events)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let unit_of = |file: &str| {
            log.iter()
                .find(|e| e["event"] == "unit_started" && e["files"][0] == file)
                .map(|e| e["unit"].as_i64().unwrap())
                .unwrap()
        };
        let mut leaks: Vec<(String, i64, String, i64)> = log
            .iter()
            .filter(|e| e["event"] == "leak")
            .map(|e| {
                (
                    e["cmdline"].as_str().unwrap().to_string(),
                    e["pid"].as_i64().unwrap(),
                    e["nodeid"].as_str().unwrap_or("").to_string(),
                    e["unit"].as_i64().unwrap(),
                )
            })
            .collect();
        leaks.sort();
        let expected: Vec<(String, i64, String, i64)> = ["one", "two"]
            .iter()
            .zip(&daemons)
            .map(|(name, daemon)| {
                let file = format!("tests/test_{name}.py");
                (
                    daemon.clone(),
                    host_pids[daemon],
                    format!("{file}::test_{name}_is_alone_in_its_pid_namespace"),
                    unit_of(&file),
                )
            })
            .collect();
        assert_eq!(leaks, expected, "{extra:?}: one leak per daemon, host pids");
    }
}

/// As root, a run as `nobody`: a fork server not run by root keeps CAP_SYS_ADMIN in the
/// slot's user namespace (to make each unit's namespaces) and pytest runs without it. Needs
/// an interpreter `nobody` can run: the test one, or RACEFREE_TEST_UNPRIVILEGED_PYTHON.
#[test]
fn an_unprivileged_user_gets_forked_units_in_namespaces_of_their_own() {
    if !rustix::process::geteuid().is_root() {
        return; // every other test here runs unprivileged then
    }
    let Ok(setpriv) = which("setpriv") else {
        eprintln!("SKIPPED: setpriv(1) is not installed");
        return;
    };
    let python = std::env::var_os("RACEFREE_TEST_UNPRIVILEGED_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(python);
    let as_nobody = |program: &Path| {
        let mut cmd = Command::new(&setpriv);
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(program);
        cmd
    };
    // Through a shell: racefree resolves the interpreter's path, as this does.
    let usable = as_nobody(Path::new("sh"))
        .args(["-c", "realpath \"$0\" && \"$0\" -c 'import pytest'"])
        .arg(&python)
        .output()
        .unwrap();
    let probe = as_nobody(&racefree_bin())
        .args(["__unit-init", "--probe"])
        .output()
        .unwrap();
    if !usable.status.success() || !probe.status.success() {
        eprintln!(
            "SKIPPED: nobody cannot run {} with pytest, or may not make namespaces",
            python.display()
        );
        return;
    }
    let suite = fixture("pidns");
    std::fs::write(
        suite.path().join("tests/test_caps.py"),
        "def test_pytest_runs_without_capabilities():\n    \
         caps = [l.split() for l in open('/proc/self/status') if l.startswith(('CapEff', 'CapPrm', 'CapAmb'))]\n    \
         assert [int(v, 16) for _, v in caps] == [0, 0, 0], caps\n",
    )
    .unwrap();
    for dir in walk(suite.path()) {
        let mode = if dir.is_dir() { 0o777 } else { 0o666 };
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    }
    let out = run(as_nobody(&racefree_bin())
        .current_dir(suite.path())
        .args([
            "run",
            "--no-history",
            "-n",
            "1",
            "--isolate",
            "namespace",
            "--python",
        ])
        .arg(&python)
        .env("HOME", suite.path())
        .env_remove("VIRTUAL_ENV")
        .env("ISO_MARKER", unique_marker()));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("3 passed"), "{}", out.stdout);
    assert!(!out.stderr.contains("fork server"), "{}", out.stderr);
}

/// Every path under `root`, `root` included.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    if root.is_dir() {
        for entry in std::fs::read_dir(root).unwrap() {
            out.extend(walk(&entry.unwrap().path()));
        }
    }
    out
}

/// The command under `racefree __unit-init` gets a signal exactly once: racefree's own
/// (sent by the parent to the unit's process group, which the command is in) is not passed
/// on again by the outer supervisor or the init, and one sent to the outer process alone by
/// anyone else is passed on. Twice would matter: a second SIGTERM cuts short the traceback
/// faulthandler writes on the first, which is how a timeout shows where a test hung.
#[test]
fn the_command_gets_each_signal_once() {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    if !namespaces_work(false) {
        return;
    }
    // Exits with the number of SIGTERMs it got within half a second of the first.
    let script = "import signal, sys, time\n\
                  got = []\n\
                  signal.signal(signal.SIGTERM, lambda *_: got.append(1))\n\
                  print('ready', flush=True)\n\
                  while not got:\n    time.sleep(0.01)\n\
                  time.sleep(0.5)\n\
                  sys.exit(len(got))\n";
    for to_group in [true, false] {
        let python = python();
        // The virtualenv may lie under /tmp (a clone there), which the namespace covers.
        let venv = python
            .parent()
            .and_then(Path::parent)
            .unwrap()
            .to_path_buf();
        let mut child = Command::new(racefree_bin())
            .arg("__unit-init")
            .arg("--keep")
            .arg(&venv)
            .arg("--")
            .arg(&python)
            .args(["-c", script])
            .process_group(0)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready");
        let pid = child.id().to_string();
        if to_group {
            // As racefree stops a unit.
            let group = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
            rustix::process::kill_process_group(group, rustix::process::Signal::TERM).unwrap();
        } else {
            // Someone else, to the outer process alone.
            let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
            assert!(sent.success());
        }
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(1), "to the group: {to_group}");
    }
}

/// In a unit's PID namespace an orphan that exits is reaped at once by the unit's init, as
/// on any system, forked or spawned: a test that stops a daemon it started and waits for it
/// to be gone must not wait until its unit ends.
#[test]
fn an_orphan_that_exits_is_reaped_at_once_in_a_unit_namespace() {
    if !namespaces_work(false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pytest.ini"), "[pytest]\n").unwrap();
    std::fs::write(
        dir.path().join("test_orphan.py"),
        "import os\nimport subprocess\nimport time\n\n\n\
         def test_a_finished_orphan_is_gone():\n\
         \x20   # The shell leaves `sleep` behind (an orphan, the init's child) and prints its pid.\n\
         \x20   out = subprocess.run(['sh', '-c', 'sleep 0.2 >/dev/null 2>&1 & echo $!'], capture_output=True, text=True, check=True)\n\
         \x20   pid = int(out.stdout)\n\
         \x20   deadline = time.monotonic() + 10\n\
         \x20   while os.path.exists('/proc/%d' % pid):\n\
         \x20       assert time.monotonic() < deadline, 'the orphan was never reaped'\n\
         \x20       time.sleep(0.02)\n",
    )
    .unwrap();
    for extra in [&[][..], &["--no-fork"][..]] {
        let out = run(racefree(dir.path())
            .args(["-n", "1", "--isolate", "namespace", "--plain"])
            .args(extra));
        assert_eq!(out.code, 0, "{extra:?}: {}\n{}", out.stdout, out.stderr);
        assert!(out.stdout.contains("1 passed"), "{extra:?}: {}", out.stdout);
    }
}

#[test]
fn a_forked_units_init_holds_no_socket_but_its_own() {
    // The init factory (racefree __init-factory) forks each unit's init while it still
    // holds its end of the socket of the init it handed out before: the new init must not
    // keep that one, or a discarded init would live until the next init ended. Each unit
    // looks at its init (PID 1 of its namespace) and counts its sockets.
    if !namespaces_work(false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pyproject.toml"),
        "[tool.pytest.ini_options]\ntestpaths = [\"tests\"]\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    let record = dir.path().join("records");
    std::fs::create_dir(&record).unwrap();
    let names = ["a", "b", "c", "d"];
    for name in names {
        std::fs::write(
            dir.path().join(format!("tests/test_{name}.py")),
            format!(
                "import os\n\n\n\
                 def test_records_its_inits_descriptors():\n\
                 \x20   assert os.getpid() == 2\n\
                 \x20   targets = [os.readlink(\"/proc/1/fd/\" + fd) for fd in os.listdir(\"/proc/1/fd\")]\n\
                 \x20   with open(os.path.join(os.environ[\"RECORD_DIR\"], \"{name}\"), \"w\") as f:\n\
                 \x20       f.write(\"\\n\".join(targets))\n"
            ),
        )
        .unwrap();
    }
    let out = run(racefree(dir.path())
        .args(["-n", "1", "--isolate", "namespace", "--unit", "file", "-q"])
        .env("RECORD_DIR", &record));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("4 passed"), "{}", out.stdout);
    for name in names {
        let targets = std::fs::read_to_string(record.join(name)).unwrap();
        let sockets = targets.lines().filter(|t| t.starts_with("socket:")).count();
        assert_eq!(
            sockets, 1,
            "unit {name}'s init should hold only its own socket:\n{targets}"
        );
    }
}
