//! The async API: waits without blocking the executor, wakes when a same-host holder dies, and
//! leaves nothing behind when the future is dropped.
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{WorkerSpec, free_for_another_thread, tempdir, worker_main_if_requested};
use racefree_lock::{HoldState, LockOptions, Mode};

fn wait_until_held(path: &std::path::Path) {
    let started = Instant::now();
    while !matches!(
        racefree_lock::holder(path).map(|s| s.state),
        Ok(HoldState::Exclusive)
    ) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "holder never took the lock"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

async fn wakes_on_holder_death(test_name: &str, mode: &'static str) {
    let dir = tempdir();
    let lock = dir.path().join("l");
    let mut holder = WorkerSpec {
        lock: lock.clone(),
        journal: dir.path().join("journal"),
        mode,
        shared: false,
        iterations: 1,
        hold_us: 60_000_000,
    }
    .spawn(test_name);
    wait_until_held(&lock);
    let options = LockOptions::new(&lock).mode(if mode == "soft" {
        Mode::Soft
    } else {
        Mode::Kernel
    });
    let waiter = tokio::spawn(async move {
        let guard = options.acquire_async().await.unwrap();
        (Instant::now(), guard.token())
    });
    // Let the waiter settle into long pauses, then kill the holder.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed_at = Instant::now();
    holder.kill().unwrap();
    holder.wait().unwrap();
    let (acquired_at, token) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap();
    let latency = acquired_at.saturating_duration_since(killed_at);
    assert!(token > 0);
    assert!(
        latency < Duration::from_millis(100),
        "{mode}: woke {latency:?} after the holder died"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_waiter_wakes_when_holder_dies() {
    worker_main_if_requested();
    wakes_on_holder_death("kernel_waiter_wakes_when_holder_dies", "kernel").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_waiter_wakes_when_holder_dies() {
    worker_main_if_requested();
    wakes_on_holder_death("soft_waiter_wakes_when_holder_dies", "soft").await;
}

#[tokio::test(flavor = "current_thread")]
async fn dropped_future_leaves_no_claim() {
    for mode in [Mode::Kernel, Mode::Soft] {
        let dir = tempdir();
        let path = dir.path().join("l");
        let held = LockOptions::new(&path).mode(mode).acquire().unwrap();
        let options = LockOptions::new(&path).mode(mode);
        // On a current-thread runtime, a blocking waiter would starve this timer: it fires.
        let waited =
            tokio::time::timeout(Duration::from_millis(100), options.acquire_async()).await;
        assert!(waited.is_err(), "{mode:?}: acquired a held lock");
        drop(held);
        // Give a soft-mode attempt still running on the blocking pool time to finish and drop.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            free_for_another_thread(LockOptions::new(&path).mode(mode)),
            "{mode:?}: the dropped future left a claim"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn async_timeout_is_an_error() {
    let dir = tempdir();
    let path = dir.path().join("l");
    let _held = LockOptions::new(&path).acquire().unwrap();
    let started = Instant::now();
    let err = LockOptions::new(&path)
        .timeout(Some(Duration::from_millis(100)))
        .acquire_async()
        .await
        .unwrap_err();
    assert!(err.is_would_block());
    assert!(started.elapsed() >= Duration::from_millis(100));
}
