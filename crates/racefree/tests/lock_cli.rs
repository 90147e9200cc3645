//! `racefree lock` end to end, with real child processes and real signals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;

fn racefree() -> Command {
    Command::cargo_bin("racefree").unwrap()
}

fn lock_cmd(path: &Path) -> Command {
    let mut c = racefree();
    c.arg("lock").arg(path);
    c
}

fn wait_for_file(path: &Path) {
    let started = Instant::now();
    while !path.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn pid_alive(pid: i32) -> bool {
    // A zombie still answers kill(0); look at /proc for its state where we can.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => Command::new("kill")
            .args(["-0", &pid.to_string()])
            .status()
            .unwrap()
            .success(),
    }
}

fn signal(pid: u32, sig: &str) {
    assert!(
        Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

fn try_lock_code(path: &Path) -> i32 {
    lock_cmd(path)
        .args(["-n", "--", "true"])
        .status()
        .unwrap()
        .code()
        .unwrap()
}

#[test]
fn exit_code_passes_through_and_token_is_exported() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("l");
    let out = lock_cmd(&lock)
        .args(["--", "sh", "-c", "echo \"$RACEFREE_LOCK_TOKEN\"; exit 7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    let token: u64 = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(token > 0);
    let out = lock_cmd(&lock).args(["-c", "exit 3"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn killed_child_gives_128_plus_signal() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("l");
    let status = lock_cmd(&lock).args(["-c", "kill -9 $$"]).status().unwrap();
    assert_eq!(status.code(), Some(128 + 9));
    let status = lock_cmd(&lock)
        .args(["-c", "kill -TERM $$"])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(128 + 15));
}

fn hold(lock: &Path, marker: &Path, secs: u32) -> Child {
    lock_cmd(lock)
        .args(["-c", &format!("touch '{}'; sleep {secs}", marker.display())])
        .spawn()
        .unwrap()
}

#[test]
fn conflict_exits_1_or_the_e_code_and_timeout_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("l");
    let marker = dir.path().join("held");
    let mut holder = hold(&lock, &marker, 30);
    wait_for_file(&marker);
    assert_eq!(try_lock_code(&lock), 1);
    let out = lock_cmd(&lock)
        .args(["-n", "-E", "42", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(42));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lock is held by pid"));
    let started = Instant::now();
    let status = lock_cmd(&lock)
        .args(["-w", "0.3", "--", "true"])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(started.elapsed() >= Duration::from_millis(300));
    holder.kill().unwrap();
    holder.wait().unwrap();
    // The holder (racefree) is gone: the kernel released its lock.
    assert_eq!(try_lock_code(&lock), 0);
}

#[test]
fn sigterm_reaches_the_child_and_the_lock_is_held_until_it_exits() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("l");
    let started = dir.path().join("started");
    let got_term = dir.path().join("got-term");
    let script = format!(
        "trap 'touch \"{got}\"; sleep 1; exit 5' TERM; touch \"{started}\"; while :; do sleep 0.05; done",
        got = got_term.display(),
        started = started.display()
    );
    let mut racefree = lock_cmd(&lock).args(["-c", &script]).spawn().unwrap();
    wait_for_file(&started);
    signal(racefree.id(), "-TERM");
    wait_for_file(&got_term);
    // The child is still cleaning up: the lock must still be held.
    assert_eq!(
        try_lock_code(&lock),
        1,
        "lock released before the child exited"
    );
    let status = racefree.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(5),
        "racefree must exit with the child's status"
    );
    assert_eq!(try_lock_code(&lock), 0);
}

#[test]
fn child_dies_when_racefree_is_sigkilled() {
    if !cfg!(target_os = "linux") {
        return; // no parent-death signal elsewhere (documented)
    }
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("l");
    let pidfile = dir.path().join("pid");
    let mut racefree = lock_cmd(&lock)
        .args([
            "-c",
            &format!("echo $$ > '{}'; exec sleep 60", pidfile.display()),
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&pidfile);
    std::thread::sleep(Duration::from_millis(50));
    let child_pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pid_alive(child_pid));
    racefree.kill().unwrap(); // SIGKILL
    racefree.wait().unwrap();
    let started = Instant::now();
    while pid_alive(child_pid) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "child {child_pid} outlived racefree"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(try_lock_code(&lock), 0);
}

#[test]
fn signal_while_waiting_cancels_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("l");
    let marker = dir.path().join("held");
    let mut holder = hold(&lock, &marker, 30);
    wait_for_file(&marker);
    let mut waiter = lock_cmd(&lock).args(["--", "true"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    signal(waiter.id(), "-INT");
    let status = waiter.wait().unwrap();
    assert_eq!(status.code(), Some(128 + 2));
    holder.kill().unwrap();
    holder.wait().unwrap();
}

#[test]
fn status_and_break_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("l");
    let marker = dir.path().join("held");
    let mut holder = hold(&lock, &marker, 30);
    wait_for_file(&marker);
    let out = racefree()
        .args(["lock", "status"])
        .arg(&lock)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("held exclusively") && text.contains("[alive]"),
        "{text}"
    );
    let out = racefree()
        .args(["lock", "status", "--json"])
        .arg(&lock)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["state"], "exclusive");
    assert_eq!(json["record"]["pid"], holder.id());
    // A live kernel-lock holder is never broken, not even with --force.
    let out = racefree()
        .args(["lock", "break"])
        .arg(&lock)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = racefree()
        .args(["lock", "break", "--force"])
        .arg(&lock)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    holder.kill().unwrap();
    holder.wait().unwrap();

    // A soft lock whose holder was SIGKILLed is broken on proof of death.
    let soft = dir.path().join("soft");
    let marker = dir.path().join("soft-held");
    let mut holder = lock_cmd(&soft)
        .args([
            "--mode",
            "soft",
            "-c",
            &format!("touch '{}'; sleep 30", marker.display()),
        ])
        .spawn()
        .unwrap();
    wait_for_file(&marker);
    holder.kill().unwrap();
    holder.wait().unwrap();
    let out = racefree()
        .args(["lock", "break"])
        .arg(&soft)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("broke stale lock") && text.contains("is gone"),
        "{text}"
    );
    assert!(!soft.exists());
}

#[test]
fn bad_input_gets_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (
            vec![
                "lock".into(),
                dir.path().join("no/dir/l").display().to_string(),
                "--".into(),
                "true".into(),
            ],
            66,
            "mkdir -p",
        ),
        (
            vec![
                "lock".into(),
                dir.path().display().to_string(),
                "--".into(),
                "true".into(),
            ],
            66,
            "is a directory",
        ),
        (
            vec!["lock".into(), dir.path().join("l").display().to_string()],
            4,
            "no command given",
        ),
        (
            vec![
                "lock".into(),
                "-w".into(),
                "soon".into(),
                "x".into(),
                "--".into(),
                "true".into(),
            ],
            4,
            "not a number of seconds",
        ),
        (
            vec![
                "lock".into(),
                "-s".into(),
                "-x".into(),
                "x".into(),
                "--".into(),
                "true".into(),
            ],
            4,
            "cannot be used with",
        ),
        (
            vec![
                "lock".into(),
                dir.path().join("l").display().to_string(),
                "--".into(),
                "/no/such/program".into(),
            ],
            127,
            "cannot run",
        ),
    ];
    for (args, code, message) in cases {
        let out = racefree().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    let target = dir.path().join("precious");
    std::fs::write(&target, "keep me").unwrap();
    let link = dir.path().join("link.lock");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = lock_cmd(&link).args(["--", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(66));
    assert!(String::from_utf8_lossy(&out.stderr).contains("symbolic link"));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
}

#[test]
fn help_and_version() {
    let out = racefree().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with("racefree ")
    );
    let out = racefree().args(["lock", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--shared",
        "--nonblock",
        "--timeout",
        "--conflict-exit-code",
        "--mode",
        "--lease",
        "--command",
    ] {
        assert!(help.contains(flag), "help lacks {flag}");
    }
}

#[test]
fn flock_style_command_without_double_dash() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("l");
    let out = lock_cmd(&lock)
        .args(["sh", "-c", "exit 9"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(9),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = racefree()
        .args(["lock", "-n"])
        .arg(&lock)
        .args(["echo", "-n", "-x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "-x");
}
