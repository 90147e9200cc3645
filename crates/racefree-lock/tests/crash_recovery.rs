//! Crash recovery with real SIGKILLs: holders die at random points, in and out of the critical
//! section; every waiter still gets the lock, and no two live holders ever overlap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::{WorkerSpec, check_journal, tempdir, worker_main_if_requested};

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn kill9(child: &mut Child) -> u32 {
    let pid = child.id();
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    pid
}

fn run_crashes(test_name: &str, mode: &'static str) {
    let dir = tempdir();
    let lock = dir.path().join("crashy.lock");
    let journal = dir.path().join("journal");
    let spec = WorkerSpec {
        lock: lock.clone(),
        journal: journal.clone(),
        mode,
        shared: false,
        iterations: 0,
        hold_us: 300,
    };
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(std::process::id());
    let mut workers: Vec<Child> = (0..6).map(|_| spec.spawn(test_name)).collect();
    let mut killed = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(5 + xorshift(&mut rng) % 60));
        let victim = (xorshift(&mut rng) % workers.len() as u64) as usize;
        killed.push(kill9(&mut workers[victim]));
        workers[victim] = spec.spawn(test_name);
    }
    for w in &mut workers {
        killed.push(kill9(w));
    }
    let before = check_journal(&journal, &killed);
    assert!(
        before > 20,
        "too little progress under crashes: {before} entries"
    );
    assert!(killed.len() > 30, "too few kills: {}", killed.len());

    // After all that carnage a fresh waiter must get the lock, promptly.
    let finisher = WorkerSpec {
        iterations: 5,
        ..spec
    };
    let started = Instant::now();
    let mut last = finisher.spawn(test_name);
    let status = loop {
        if let Some(s) = last.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "a waiter never acquired after the crashes"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success());
    let after = check_journal(&journal, &killed);
    assert_eq!(after, before + 5);
}

#[test]
fn kernel_mode_survives_sigkill_at_random_points() {
    worker_main_if_requested();
    run_crashes("kernel_mode_survives_sigkill_at_random_points", "kernel");
}

#[test]
fn soft_mode_survives_sigkill_at_random_points() {
    worker_main_if_requested();
    run_crashes("soft_mode_survives_sigkill_at_random_points", "soft");
}
