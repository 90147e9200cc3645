//! Shared helpers for the lock integration tests: worker processes (this test binary re-run with
//! a worker spec in the environment) and the journal checker.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use racefree_lock::{LockOptions, Mode};

pub const WORKER_ENV: &str = "RACEFREE_LOCK_TEST_WORKER";

/// What a worker process does: `iterations` times (0 = until killed), acquire, journal
/// `E <generation> <pid>`, hold for `hold_us`, journal `X <generation> <pid>`, release.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub lock: PathBuf,
    pub journal: PathBuf,
    pub mode: &'static str,
    pub shared: bool,
    pub iterations: u32,
    pub hold_us: u64,
}

impl WorkerSpec {
    fn encode(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            self.lock.display(),
            self.journal.display(),
            self.mode,
            self.shared,
            self.iterations,
            self.hold_us
        )
    }

    fn decode(s: &str) -> WorkerSpec {
        let f: Vec<&str> = s.split('\n').collect();
        WorkerSpec {
            lock: f[0].into(),
            journal: f[1].into(),
            mode: if f[2] == "soft" { "soft" } else { "kernel" },
            shared: f[3] == "true",
            iterations: f[4].parse().unwrap(),
            hold_us: f[5].parse().unwrap(),
        }
    }

    /// Starts a worker: this same test binary, running only `test_name`, which calls
    /// [`worker_main_if_requested`].
    pub fn spawn(&self, test_name: &str) -> Child {
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                test_name,
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env(WORKER_ENV, self.encode())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    }
}

/// In a worker process, runs the worker loop and exits; in the test process, returns at once.
pub fn worker_main_if_requested() {
    let Ok(spec) = std::env::var(WORKER_ENV) else {
        return;
    };
    let spec = WorkerSpec::decode(&spec);
    let options = LockOptions::new(&spec.lock)
        .mode(if spec.mode == "soft" {
            Mode::Soft
        } else {
            Mode::Kernel
        })
        .shared(spec.shared);
    let mut journal = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&spec.journal)
        .unwrap();
    let pid = std::process::id();
    let kind = if spec.shared { "S" } else { "E" };
    let mut done = 0;
    while spec.iterations == 0 || done < spec.iterations {
        let guard = options.acquire().unwrap();
        // One write(2) per line on an O_APPEND file: lines never interleave, and their order in
        // the file is the order in which they happened.
        journal
            .write_all(format!("{kind} {} {pid}\n", guard.token()).as_bytes())
            .unwrap();
        if spec.hold_us > 0 {
            std::thread::sleep(Duration::from_micros(spec.hold_us));
        }
        journal
            .write_all(format!("X {} {pid}\n", guard.token()).as_bytes())
            .unwrap();
        guard.release().unwrap();
        done += 1;
    }
    std::process::exit(0);
}

/// Checks a journal: no exclusive interval overlaps any other interval, shared intervals only
/// overlap each other, exclusive generations strictly increase. Holders listed in `killed` may
/// have an entry with no exit (they died inside the critical section); anyone else's missing exit
/// is an error. Returns the number of exclusive entries.
pub fn check_journal(path: &Path, killed: &[u32]) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    let mut exclusive: Option<(u64, u32)> = None;
    let mut shared: Vec<u32> = Vec::new();
    let mut last_generation: Option<u64> = None;
    let mut count = 0;
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 3, "line {n}: torn journal line {line:?}");
        let generation: u64 = f[1].parse().unwrap();
        let pid: u32 = f[2].parse().unwrap();
        match f[0] {
            "E" => {
                if let Some((g, holder)) = exclusive {
                    assert!(
                        killed.contains(&holder),
                        "line {n}: pid {pid} entered while pid {holder} (generation {g}) still held the lock"
                    );
                }
                let live_readers: Vec<&u32> =
                    shared.iter().filter(|p| !killed.contains(p)).collect();
                assert!(
                    live_readers.is_empty(),
                    "line {n}: exclusive entry by {pid} while shared holders {live_readers:?} are inside"
                );
                shared.clear();
                if let Some(prev) = last_generation {
                    assert!(
                        generation > prev,
                        "line {n}: generation {generation} after {prev} is not increasing"
                    );
                }
                last_generation = Some(generation);
                exclusive = Some((generation, pid));
                count += 1;
            }
            "S" => {
                if let Some((g, holder)) = exclusive {
                    assert!(
                        killed.contains(&holder),
                        "line {n}: shared entry by {pid} while pid {holder} (generation {g}) holds it exclusively"
                    );
                    exclusive = None;
                }
                shared.push(pid);
            }
            "X" => {
                if let Some((g, holder)) = exclusive.filter(|(_, h)| *h == pid) {
                    assert_eq!(g, generation, "line {n}: exit with another generation");
                    let _ = holder;
                    exclusive = None;
                } else if let Some(i) = shared.iter().position(|p| *p == pid) {
                    shared.remove(i);
                } else {
                    panic!("line {n}: exit by {pid}, which was not inside");
                }
            }
            other => panic!("line {n}: unknown journal entry {other:?}"),
        }
    }
    count
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Holds `path` in another thread until the returned sender is dropped.
pub fn held_elsewhere(
    path: &Path,
    mode: Mode,
) -> (std::thread::JoinHandle<()>, std::sync::mpsc::Sender<()>) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let path = path.to_path_buf();
    let handle = std::thread::spawn(move || {
        let _g = LockOptions::new(&path).mode(mode).acquire().unwrap();
        ready_tx.send(()).unwrap();
        let _ = stop_rx.recv();
    });
    ready_rx.recv().unwrap();
    (handle, stop_tx)
}

/// Whether another thread (another open file description) could take the lock right now.
pub fn free_for_another_thread(options: LockOptions) -> bool {
    std::thread::spawn(move || options.try_acquire().unwrap().is_some())
        .join()
        .unwrap()
}
