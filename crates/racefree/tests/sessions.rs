//! Session roots are judged by owner liveness, never by age: a SIGKILLed run's directory is
//! removed by the next run, and a live run's directory survives other runs and `racefree clean`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;

mod common;
use common::{python, suite};

fn racefree_run(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("racefree").unwrap();
    // `tmp` isolation: the test kills the pytest process by the pid it reports, which in a
    // PID namespace would be an inner pid (namespace_sessions.rs covers namespace mode).
    cmd.current_dir(dir)
        .args(["run", "-n", "1", "--isolate", "tmp", "--python"])
        .arg(python())
        .env_remove("VIRTUAL_ENV");
    cmd
}

/// The session root of the run whose test wrote `marker`: TMPDIR is `<root>/w<slot>/tmp`.
fn wait_for_marker(marker: &Path) -> (PathBuf, i32) {
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(marker)
            && let Some((tmp, pid)) = text.split_once('\n')
            && !pid.is_empty()
        {
            let root = Path::new(tmp)
                .parent()
                .unwrap()
                .parent()
                .unwrap()
                .to_path_buf();
            return (root, pid.trim().parse().unwrap());
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the slow test never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn dead_runs_are_cleaned_and_live_runs_are_never_touched() {
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("marker");
    let slow = suite(&[(
        "test_slow.py",
        &format!(
            "import os, time\n\
             def test_slow():\n\
             \x20   with open({m:?} + '.tmp', 'w') as f:\n\
             \x20       f.write(os.environ['TMPDIR'] + '\\n' + str(os.getpid()))\n\
             \x20   os.rename({m:?} + '.tmp', {m:?})\n\
             \x20   time.sleep(60)\n",
            m = marker.display().to_string()
        ),
    )]);
    let fast = suite(&[("test_fast.py", "def test_fast():\n    assert True\n")]);

    let mut live = racefree_run(slow.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (live_root, pytest_pid) = wait_for_marker(&marker);
    assert!(live_root.is_dir());

    // Another run and `racefree clean` leave the live run's directory alone.
    let out = racefree_run(fast.path()).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::cargo_bin("racefree")
        .unwrap()
        .arg("clean")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("kept {}", live_root.display())),
        "{text}"
    );
    assert!(
        live_root.is_dir(),
        "a live run's session directory was removed"
    );

    // SIGKILL the run (and the pytest it left behind): its directory stays, with nobody alive
    // holding its lock...
    live.kill().unwrap();
    live.wait().unwrap();
    let _ = Command::new("kill")
        .args(["-9", &pytest_pid.to_string()])
        .status();
    assert!(live_root.is_dir());
    let out = Command::cargo_bin("racefree")
        .unwrap()
        .args(["clean", "--dry-run"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("would remove {}", live_root.display())),
        "{text}"
    );
    assert!(live_root.is_dir(), "--dry-run removed something");

    // ...and the next run removes it.
    let out = racefree_run(fast.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("of dead runs"), "{stderr}");
    assert!(
        !live_root.exists(),
        "the dead run's session directory is still there"
    );
}
