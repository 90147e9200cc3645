//! Lock semantics that users rely on: proof-of-death staleness, foreign hosts and leases,
//! malformed records, symlinks and special files, successors, timeouts and cancellation, threads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::{free_for_another_thread, held_elsewhere, tempdir};
use racefree_lock::{BreakOutcome, HolderRecord, LockError, LockOptions, Mode};

/// A record for this process as the library writes it, to be altered by a test.
fn own_soft_record(dir: &Path) -> HolderRecord {
    let probe = dir.join("probe.lock");
    let guard = LockOptions::new(&probe).mode(Mode::Soft).acquire().unwrap();
    let record = guard.record().unwrap().clone();
    guard.release().unwrap();
    record
}

fn plant(path: &Path, record: &HolderRecord) {
    std::fs::write(path, record.to_line()).unwrap();
}

fn soft(path: &Path) -> LockOptions {
    LockOptions::new(path).mode(Mode::Soft)
}

#[test]
fn reused_pid_with_other_start_time_is_stale() {
    let dir = tempdir();
    let path = dir.path().join("l");
    let mut record = own_soft_record(dir.path());
    record.token = "0".repeat(32);
    // Our own pid is alive, but a process that started at another time held the lock.
    record.start_time = record.start_time.map(|t| t + 12345).or(Some(1));
    plant(&path, &record);
    if cfg!(target_os = "linux") {
        let started = Instant::now();
        let guard = soft(&path)
            .timeout(Some(Duration::from_secs(2)))
            .acquire()
            .unwrap();
        assert!(started.elapsed() < Duration::from_millis(500));
        assert!(guard.token() > record.generation);
    }
}

#[test]
fn live_holder_with_matching_identity_is_not_stale() {
    let dir = tempdir();
    let path = dir.path().join("l");
    let mut record = own_soft_record(dir.path());
    record.token = "1".repeat(32);
    plant(&path, &record);
    assert!(soft(&path).try_acquire().unwrap().is_none());
    assert!(matches!(
        racefree_lock::break_stale(&path),
        Err(LockError::NotStale { .. })
    ));
    assert_eq!(
        std::fs::read(&path).unwrap(),
        record.to_line(),
        "record must be untouched"
    );
}

#[test]
fn dead_pid_is_stale_and_break_stale_removes_it() {
    let dir = tempdir();
    let path = dir.path().join("l");
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let mut record = own_soft_record(dir.path());
    record.pid = dead_pid;
    plant(&path, &record);
    assert!(matches!(
        racefree_lock::break_stale(&path).unwrap(),
        BreakOutcome::Broken { .. }
    ));
    assert!(!path.exists());
}

#[test]
fn foreign_host_without_lease_is_never_broken() {
    let dir = tempdir();
    let path = dir.path().join("l");
    let mut record = own_soft_record(dir.path());
    record.host.hostname = "some-other-host".into();
    record.host.machine_id = Some("f".repeat(32));
    record.pid = 999_999; // certainly gone here, and irrelevant on another host
    plant(&path, &record);
    let err = soft(&path)
        .timeout(Some(Duration::from_millis(200)))
        .acquire()
        .unwrap_err();
    assert!(err.is_would_block(), "{err}");
    assert!(matches!(
        racefree_lock::break_stale(&path),
        Err(LockError::NotStale { .. })
    ));
    assert!(path.exists());
}

fn age_file(path: &Path, by: Duration) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - by).unwrap();
}

#[test]
fn foreign_host_with_expired_lease_is_broken() {
    let dir = tempdir();
    let path = dir.path().join("l");
    let mut record = own_soft_record(dir.path());
    record.host.hostname = "some-other-host".into();
    record.lease_ms = Some(1_000);
    plant(&path, &record);
    age_file(&path, Duration::from_secs(10));
    let guard = soft(&path)
        .timeout(Some(Duration::from_secs(1)))
        .acquire()
        .unwrap();
    assert_ne!(guard.record().unwrap().token, record.token);
}

#[test]
fn foreign_host_with_fresh_lease_is_kept() {
    let dir = tempdir();
    let path = dir.path().join("l");
    let mut record = own_soft_record(dir.path());
    record.host.hostname = "some-other-host".into();
    record.lease_ms = Some(60_000);
    plant(&path, &record);
    age_file(&path, Duration::from_secs(5));
    assert!(soft(&path).try_acquire().unwrap().is_none());
}

#[test]
fn leased_holder_heartbeats_keep_it_alive() {
    let dir = tempdir();
    let path = dir.path().join("l");
    let guard = soft(&path)
        .lease(Some(Duration::from_millis(300)))
        .acquire()
        .unwrap();
    let first = std::fs::metadata(&path).unwrap().modified().unwrap();
    // Heartbeats come every 100 ms; allow a loaded machine plenty of slack to show one.
    let started = Instant::now();
    while std::fs::metadata(&path).unwrap().modified().unwrap() <= first {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the heartbeat did not refresh the record"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(guard);
    assert!(!path.exists());
}

#[test]
fn malformed_and_empty_records_are_evicted_after_the_grace() {
    for contents in [&b""[..], &b"{\"racefree_lock\":1,\"tok"[..]] {
        let dir = tempdir();
        let path = dir.path().join("l");
        std::fs::write(&path, contents).unwrap();
        let started = Instant::now();
        let guard = soft(&path)
            .timeout(Some(Duration::from_secs(4)))
            .acquire()
            .unwrap();
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(2),
            "evicted too early: {waited:?}"
        );
        assert!(
            waited < Duration::from_secs(3),
            "evicted too late: {waited:?}"
        );
        drop(guard);
    }
}

#[test]
fn symlink_at_lock_path_is_neither_followed_nor_truncated() {
    for mode in [Mode::Kernel, Mode::Soft, Mode::Auto] {
        let dir = tempdir();
        let target = dir.path().join("precious.txt");
        std::fs::write(&target, "precious data").unwrap();
        let path = dir.path().join("l");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let err = LockOptions::new(&path).mode(mode).acquire().unwrap_err();
        assert!(matches!(err, LockError::Symlink { .. }), "{mode:?}: {err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious data");
        assert!(racefree_lock::holder(&path).is_err());
    }
}

#[test]
fn fifo_at_lock_path_is_refused_without_hanging() {
    let dir = tempdir();
    let path = dir.path().join("l");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap()
            .success()
    );
    for mode in [Mode::Kernel, Mode::Soft] {
        let p = path.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(LockOptions::new(&p).mode(mode).acquire().map(|_| ()));
        });
        let result = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("hung on a FIFO");
        assert!(
            matches!(result, Err(LockError::NotRegularFile { kind: "FIFO", .. })),
            "{mode:?}: {result:?}"
        );
    }
}

#[test]
fn directory_and_missing_parent_get_clear_errors() {
    let dir = tempdir();
    let err = LockOptions::new(dir.path()).acquire().unwrap_err();
    assert!(matches!(err, LockError::NotRegularFile { .. }), "{err}");
    let missing = dir.path().join("no/such/dir/l");
    let err = LockOptions::new(&missing).acquire().unwrap_err();
    assert!(matches!(err, LockError::MissingParent { .. }), "{err}");
    assert!(err.to_string().contains("mkdir -p"));
}

#[test]
fn oversized_and_foreign_files_are_refused_and_left_intact() {
    let dir = tempdir();
    let big = dir.path().join("big");
    let mut data = b"{\"racefree_lock\":1,".to_vec();
    data.resize(20_000, b'x');
    std::fs::write(&big, &data).unwrap();
    for mode in [Mode::Kernel, Mode::Soft] {
        let err = LockOptions::new(&big).mode(mode).acquire().unwrap_err();
        assert!(matches!(err, LockError::OversizedRecord { .. }), "{err}");
    }
    assert_eq!(std::fs::read(&big).unwrap(), data);

    let foreign = dir.path().join("notes.txt");
    std::fs::write(&foreign, "my important notes\n").unwrap();
    for mode in [Mode::Kernel, Mode::Soft] {
        let err = LockOptions::new(&foreign).mode(mode).acquire().unwrap_err();
        assert!(matches!(err, LockError::ForeignContent { .. }), "{err}");
    }
    assert_eq!(
        std::fs::read_to_string(&foreign).unwrap(),
        "my important notes\n"
    );
}

#[test]
fn kernel_release_never_releases_a_successor() {
    let dir = tempdir();
    let path = dir.path().join("l");
    let first = LockOptions::new(&path)
        .mode(Mode::Kernel)
        .acquire()
        .unwrap();
    // Someone deletes the lock file behind our back; a successor locks the new inode.
    std::fs::remove_file(&path).unwrap();
    let successor = LockOptions::new(&path)
        .mode(Mode::Kernel)
        .acquire()
        .unwrap();
    first.release().unwrap();
    assert!(
        !free_for_another_thread(LockOptions::new(&path).mode(Mode::Kernel)),
        "releasing the first holder freed the successor's lock"
    );
    assert!(successor.token() > 0);
}

#[test]
fn soft_release_never_removes_a_successors_record() {
    let dir = tempdir();
    let path = dir.path().join("l");
    let first = soft(&path).acquire().unwrap();
    racefree_lock::force_break(&path).unwrap();
    let second = std::thread::spawn({
        let path = path.clone();
        move || {
            let g = soft(&path).acquire().unwrap();
            let token = g.record().unwrap().token.clone();
            std::mem::forget(g); // keep the record in place for the check below
            token
        }
    })
    .join()
    .unwrap();
    first.release().unwrap();
    let status = racefree_lock::holder(&path).unwrap();
    assert_eq!(status.record.unwrap().token, second);
}

#[test]
fn cancelled_waits_leave_no_claim() {
    for mode in [Mode::Kernel, Mode::Soft] {
        let dir = tempdir();
        let path = dir.path().join("l");
        let (holder, stop) = held_elsewhere(&path, mode);
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cancel);
        let waiter = std::thread::spawn({
            let path = path.clone();
            move || {
                LockOptions::new(&path)
                    .mode(mode)
                    .cancel_when(move || flag.load(Ordering::SeqCst))
                    .acquire()
                    .map(|_| ())
            }
        });
        std::thread::sleep(Duration::from_millis(50));
        cancel.store(true, Ordering::SeqCst);
        let result = waiter.join().unwrap();
        assert!(
            matches!(result, Err(LockError::Cancelled { .. })),
            "{result:?}"
        );
        drop(stop);
        holder.join().unwrap();
        // Nothing of the cancelled waiter remains: the lock is immediately free.
        assert!(
            LockOptions::new(&path)
                .mode(mode)
                .try_acquire()
                .unwrap()
                .is_some()
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp") || n.ends_with(".clock"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

#[test]
fn same_thread_waiting_forever_on_itself_is_an_error_and_reentrancy_is_opt_in() {
    for mode in [Mode::Kernel, Mode::Soft] {
        let dir = tempdir();
        let path = dir.path().join("l");
        let first = LockOptions::new(&path).mode(mode).acquire().unwrap();
        let err = LockOptions::new(&path).mode(mode).acquire().unwrap_err();
        assert!(
            matches!(err, LockError::WouldDeadlock { .. }),
            "{mode:?}: {err}"
        );
        let again = LockOptions::new(&path)
            .mode(mode)
            .reentrant(true)
            .acquire()
            .unwrap();
        assert_eq!(again.token(), first.token());
        drop(first);
        // Still held through the reentrant guard.
        assert!(
            !free_for_another_thread(LockOptions::new(&path).mode(mode)),
            "{mode:?}: released while a reentrant guard lives"
        );
        drop(again);
        assert!(
            free_for_another_thread(LockOptions::new(&path).mode(mode)),
            "{mode:?}: not released after the last guard"
        );
    }
}

#[test]
fn shared_holders_coexist_and_exclude_writers() {
    let dir = tempdir();
    let path = dir.path().join("l");
    let a = LockOptions::new(&path).shared(true).acquire().unwrap();
    assert!(free_for_another_thread(
        LockOptions::new(&path).shared(true)
    ));
    assert!(!free_for_another_thread(LockOptions::new(&path)));
    assert_eq!(
        racefree_lock::holder(&path).unwrap().state,
        racefree_lock::HoldState::Shared
    );
    drop(a);
    assert!(
        LockOptions::new(&path)
            .shared(true)
            .mode(Mode::Soft)
            .acquire()
            .is_err()
    );
}

#[test]
fn tokens_increase_across_holders_and_survive_a_lost_record() {
    let dir = tempdir();
    let path = dir.path().join("l");
    let mut last = 0;
    for i in 0..20 {
        if i == 10 {
            // The record is lost (file recreated); the clock floor keeps tokens increasing.
            std::fs::remove_file(&path).unwrap();
        }
        let g = LockOptions::new(&path).acquire().unwrap();
        assert!(g.token() > last);
        last = g.token();
    }
    let mut last_soft = 0;
    let soft_path = dir.path().join("s");
    for _ in 0..10 {
        let g = soft(&soft_path).acquire().unwrap();
        assert!(g.token() > last_soft);
        last_soft = g.token();
    }
}

#[test]
fn status_reports_the_holder() {
    let dir = tempdir();
    let path = dir.path().join("l");
    let guard = LockOptions::new(&path).acquire().unwrap();
    let status = racefree_lock::holder(&path).unwrap();
    assert_eq!(status.state, racefree_lock::HoldState::Exclusive);
    let record = status.record.unwrap();
    assert_eq!(record.pid, std::process::id());
    assert_eq!(record.generation, guard.token());
    assert_eq!(status.liveness, Some(racefree_lock::LivenessView::Alive));
    drop(guard);
    assert_eq!(
        racefree_lock::holder(&path).unwrap().state,
        racefree_lock::HoldState::Free
    );
}

#[test]
fn reused_descriptors_never_lock_a_replaced_file() {
    let dir = tempdir();
    let path = dir.path().join("l");
    let options = LockOptions::new(&path).mode(Mode::Kernel);
    // Acquire and release through the same options: the descriptor is parked for reuse.
    options.acquire().unwrap().release().unwrap();
    // The file is replaced, and another thread holds the new one.
    std::fs::remove_file(&path).unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let p = path.clone();
    let holder = std::thread::spawn(move || {
        let _g = LockOptions::new(&p).mode(Mode::Kernel).acquire().unwrap();
        ready_tx.send(()).unwrap();
        let _ = stop_rx.recv();
    });
    ready_rx.recv().unwrap();
    // The parked descriptor names the old, unlinked inode: locking it must not count.
    assert!(options.try_acquire().unwrap().is_none());
    drop(stop_tx);
    holder.join().unwrap();
    assert!(options.try_acquire().unwrap().is_some());
}
