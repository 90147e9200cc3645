//! Exclusion under contention with real processes: 8 processes acquire many times each and
//! journal inside the critical section; the journal proves no overlap and increasing tokens.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{WorkerSpec, check_journal, tempdir, worker_main_if_requested};

const PROCESSES: usize = 8;

fn run_contention(
    test_name: &str,
    mode: &'static str,
    shared_every: Option<usize>,
    iterations: u32,
) {
    let dir = tempdir();
    let lock = dir.path().join("contended.lock");
    let journal = dir.path().join("journal");
    let children: Vec<_> = (0..PROCESSES)
        .map(|i| {
            WorkerSpec {
                lock: lock.clone(),
                journal: journal.clone(),
                mode,
                shared: shared_every.is_some_and(|k| i % k == 0),
                iterations,
                hold_us: 50,
            }
            .spawn(test_name)
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success(), "a worker failed");
    }
    let exclusive_entries = check_journal(&journal, &[]);
    let writers = shared_every.map_or(PROCESSES, |k| PROCESSES - PROCESSES.div_ceil(k));
    assert_eq!(exclusive_entries, writers * iterations as usize);
}

#[test]
fn kernel_exclusive_8_processes() {
    worker_main_if_requested();
    run_contention("kernel_exclusive_8_processes", "kernel", None, 200);
}

#[test]
fn kernel_shared_and_exclusive_8_processes() {
    worker_main_if_requested();
    run_contention(
        "kernel_shared_and_exclusive_8_processes",
        "kernel",
        Some(2),
        200,
    );
}

#[test]
fn soft_exclusive_8_processes() {
    worker_main_if_requested();
    run_contention("soft_exclusive_8_processes", "soft", None, 100);
}

/// The checker itself must catch what it is there to catch.
#[test]
#[should_panic(expected = "still held the lock")]
fn checker_catches_overlap() {
    let dir = tempdir();
    let journal = dir.path().join("journal");
    std::fs::write(&journal, "E 1 10\nE 2 11\nX 1 10\nX 2 11\n").unwrap();
    check_journal(&journal, &[]);
}

#[test]
#[should_panic(expected = "not increasing")]
fn checker_catches_non_increasing_tokens() {
    let dir = tempdir();
    let journal = dir.path().join("journal");
    std::fs::write(&journal, "E 5 10\nX 5 10\nE 5 11\nX 5 11\n").unwrap();
    check_journal(&journal, &[]);
}

#[test]
#[should_panic(expected = "while shared holders")]
fn checker_catches_writer_among_readers() {
    let dir = tempdir();
    let journal = dir.path().join("journal");
    std::fs::write(&journal, "S 0 10\nE 1 11\nX 1 11\nX 0 10\n").unwrap();
    check_journal(&journal, &[]);
}
