//! Timing guarantees, alone in their own test binary so that no sibling test loads the CPU
//! while they measure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{held_elsewhere, tempdir};
use racefree_lock::{LockOptions, Mode};

#[test]
fn timeouts_are_honoured_within_50ms() {
    for mode in [Mode::Kernel, Mode::Soft] {
        let dir = tempdir();
        let path = dir.path().join("l");
        let (holder, stop) = held_elsewhere(&path, mode);
        for ms in [0u64, 100, 300] {
            let started = Instant::now();
            let err = LockOptions::new(&path)
                .mode(mode)
                .timeout(Some(Duration::from_millis(ms)))
                .acquire()
                .unwrap_err();
            let waited = started.elapsed();
            assert!(err.is_would_block());
            assert!(
                waited >= Duration::from_millis(ms),
                "{mode:?}: gave up early: {waited:?}"
            );
            assert!(
                waited < Duration::from_millis(ms + 50),
                "{mode:?}: timeout {ms} ms overshot: {waited:?}"
            );
        }
        drop(stop);
        holder.join().unwrap();
    }
}
