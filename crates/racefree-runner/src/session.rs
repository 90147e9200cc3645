//! The session root: every file a run creates lives under one private directory,
//! `/dev/shm/racefree-<uid>/<run id>/` when /dev/shm is a writable tmpfs, else
//! `$TMPDIR/racefree-<uid>/<run id>/` (DESIGN §2.3). Directories are 0700; the per-user
//! parent is refused if it is a symlink, not ours, or open to others.
//!
//! Liveness, not age: each run holds a racefree-lock lock on `<run id>.lock` beside its
//! directory for its whole life, taken *before* the directory exists. A later run (at start)
//! or `racefree clean` removes a session directory only when that lock can be taken, that is,
//! only when its owner is dead. Two runs at once, in one checkout or by two users, never touch
//! each other's files; a run killed by SIGKILL leaves a directory the next run removes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use racefree_lock::{LockGuard, LockOptions};

use crate::error::{Error, Result};

/// The plugin's source, embedded at build time.
pub const PLUGIN_SOURCE: &str = include_str!("../../../python/racefree_pytest/__init__.py");
/// The fork server's source (see `forkserver`), embedded beside the plugin.
pub const FORKSERVER_SOURCE: &str = include_str!("../../../python/racefree_forkserver.py");
/// A forked unit's namespaces and init, which the fork server imports.
pub const UNITNS_SOURCE: &str = include_str!("../../../python/racefree_unitns.py");
/// The pages a forked unit copies, learned and copied ahead, which the fork server imports.
pub const HOTPAGES_SOURCE: &str = include_str!("../../../python/racefree_hotpages.py");
/// The fork server's once-per-server fixture scan of the plugins, which it imports.
pub const FIXTURESCAN_SOURCE: &str = include_str!("../../../python/racefree_fixturescan.py");
/// The run's one coverage report under pytest-cov, from every unit's data (see `coverage`).
pub const COVERAGE_SOURCE: &str = include_str!("../../../python/racefree_coverage.py");

/// The directory of a run's units' `--basetemp`s, in its session root.
const BASETEMPS: &str = "basetemp";

/// The embedded Python modules, by their path in the plugin directory.
const PYTHON_FILES: [(&str, &str); 6] = [
    ("racefree_pytest/__init__.py", PLUGIN_SOURCE),
    ("racefree_forkserver.py", FORKSERVER_SOURCE),
    ("racefree_unitns.py", UNITNS_SOURCE),
    ("racefree_fixturescan.py", FIXTURESCAN_SOURCE),
    ("racefree_hotpages.py", HOTPAGES_SOURCE),
    ("racefree_coverage.py", COVERAGE_SOURCE),
];

pub struct Session {
    pub root: PathBuf,
    pub run_id: String,
    /// Where the embedded Python modules are (see `shared_python_dir`).
    python_dir: PathBuf,
    /// Held for the run's whole life: proves to other runs that this one is alive.
    lock: Option<LockGuard>,
}

/// A random id: 16 hex digits from the OS's generator.
pub fn random_id() -> Result<String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::io("reading random bytes", std::io::Error::other(e.to_string())))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::io(context, e)
}

/// The directory session roots go under for this user (before the `racefree-<uid>` level).
pub fn base_dir() -> PathBuf {
    #[cfg(target_os = "linux")]
    {
        if crate::unix::is_writable_tmpfs(Path::new("/dev/shm")) {
            return PathBuf::from("/dev/shm");
        }
    }
    std::env::temp_dir()
}

impl Session {
    pub fn create() -> Result<Session> {
        Self::create_in(&base_dir())
    }

    pub fn create_in(base: &Path) -> Result<Session> {
        let user_dir = user_dir_in(base);
        crate::unix::ensure_private_dir(&user_dir)?;
        // A collision of 64 random bits is not expected; mkdir fails rather than reuse.
        let run_id = random_id()?;
        let root = user_dir.join(&run_id);
        // Lock first, then create: a cleaner never sees a live run's directory unlocked.
        // A sweeper may hold a fresh lock file for an instant (it cannot yet tell a starting run
        // from a dead one); it lets go at once, so wait a little rather than fail.
        let lock = lock_run(&user_dir, &run_id, Duration::from_secs(2))?.ok_or_else(|| {
            Error::io(
                format!("locking {}", lock_path(&user_dir, &run_id).display()),
                std::io::Error::other("a run with the same random id holds it"),
            )
        })?;
        crate::unix::mkdir_private(&root)
            .map_err(io(format!("creating session directory {}", root.display())))?;
        crate::unix::mkdir_private(&root.join(BASETEMPS))
            .map_err(io(format!("creating {}", root.join(BASETEMPS).display())))?;
        let own = root.join("plugin");
        let python_dir = match shared_python_dir(&user_dir, &own) {
            Some(shared) => shared,
            None => {
                write_python_files(&own)?;
                own
            }
        };
        Ok(Session {
            root,
            run_id,
            python_dir,
            lock: Some(lock),
        })
    }

    /// The directory to put on PYTHONPATH so `-p racefree_pytest` finds the plugin.
    pub fn plugin_dir(&self) -> PathBuf {
        self.python_dir.clone()
    }

    /// The run's count of pytest-rerunfailures' reruns, for its `--max-suite-reruns` cap
    /// across units (python/racefree_pytest: `_RunWideSuiteReruns`).
    pub fn suite_reruns_file(&self) -> PathBuf {
        self.root.join("suite-reruns")
    }

    /// A worker slot's private temp root (TMPDIR and friends), created on first use.
    pub fn slot_tmp(&self, slot: usize) -> Result<PathBuf> {
        let dir = self.root.join(format!("w{slot}")).join("tmp");
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        Ok(dir)
    }

    /// A fresh `--basetemp` for one unit (pytest creates it). Their parent is the run's, as
    /// pytest-xdist's workers share theirs: xdist's recipe for a session fixture that runs
    /// once per run keeps its result and lock in `tmp_path_factory.getbasetemp().parent`.
    pub fn basetemp(&self, slot: usize, unit: usize, attempt: u32) -> PathBuf {
        self.root
            .join(BASETEMPS)
            .join(format!("gw{slot}-u{unit}-a{attempt}"))
    }

    /// The coverage data file of a unit under pytest-cov (its `COVERAGE_FILE`), alone in
    /// its directory with what it combines (see `coverage`).
    pub fn coverage_file(&self, unit: usize, attempt: u32) -> PathBuf {
        self.root
            .join(crate::coverage::DATA_DIR)
            .join(format!("u{unit}-a{attempt}"))
            .join(".coverage")
    }

    /// A file describing a unit to the plugin (node-id selection, walked files).
    pub fn unit_file(&self, unit: usize, attempt: u32) -> PathBuf {
        self.root.join(format!("unit-u{unit}-a{attempt}.json"))
    }

    /// Where a unit's faulthandler writes the tracebacks of a fatal signal or of SIGTERM.
    pub fn fault_file(&self, unit: usize, attempt: u32) -> PathBuf {
        self.root.join(format!("fault-u{unit}-a{attempt}.txt"))
    }

    /// Removes the whole session directory, then its lock file (while still holding the lock,
    /// so no cleaner can mistake the run for dead while its files exist).
    pub fn remove(&self) -> Result<()> {
        std::fs::remove_dir_all(&self.root)
            .map_err(io(format!("removing {}", self.root.display())))?;
        if let Some(parent) = self.root.parent() {
            let _ = std::fs::remove_file(lock_path(parent, &self.run_id));
        }
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        drop(self.lock.take());
    }
}

/// Writes the embedded Python modules into `dir`.
fn write_python_files(dir: &Path) -> Result<()> {
    for (name, source) in PYTHON_FILES {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io(format!("creating {}", parent.display())))?;
        }
        std::fs::write(&path, source).map_err(io(format!("writing {}", path.display())))?;
    }
    Ok(())
}

/// The directory of this build's Python modules that its runs share, under the per-user
/// directory: Python keeps their compiled bytecode beside them (`__pycache__`), so a fork
/// server or spawned unit does not compile some 3,000 lines again (tens of milliseconds on
/// the way to a run's first test). It is named by a hash of the sources, and comes into
/// being whole: the first run writes a copy in its session directory (`own`) and renames it
/// to it. A directory of that name whose files are not ours is not used, and None means the
/// run is to write and use its own copy. It holds no run's state, so sweeps (which remove
/// dead runs' directories only) leave it; each build leaves one of a few hundred KiB.
fn shared_python_dir(user_dir: &Path, own: &Path) -> Option<PathBuf> {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, source) in PYTHON_FILES {
        for byte in name.bytes().chain([0]).chain(source.bytes()) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    let shared = user_dir.join(format!("python-{hash:016x}"));
    if !shared.exists() && write_python_files(own).is_ok() {
        // Another run may rename its copy first: then ours stays in its session directory
        // (and is written again there, harmlessly, if the shared one is not ours).
        let _ = std::fs::rename(own, &shared);
    }
    let ours = PYTHON_FILES.iter().all(|(name, source)| {
        std::fs::read(shared.join(name)).is_ok_and(|bytes| bytes == source.as_bytes())
    });
    ours.then_some(shared)
}

fn user_dir_in(base: &Path) -> PathBuf {
    base.join(format!("racefree-{}", crate::unix::uid()))
}

fn lock_path(user_dir: &Path, run_id: &str) -> PathBuf {
    user_dir.join(format!("{run_id}.lock"))
}

/// Takes a run's liveness lock, waiting at most `wait`: `None` if its owner is alive.
fn lock_run(user_dir: &Path, run_id: &str, wait: Duration) -> Result<Option<LockGuard>> {
    let path = lock_path(user_dir, run_id);
    match LockOptions::new(&path).timeout(Some(wait)).acquire() {
        Ok(guard) => Ok(Some(guard)),
        Err(e) if e.is_would_block() => Ok(None),
        Err(e) => Err(Error::io(
            format!("locking {}", path.display()),
            std::io::Error::other(e),
        )),
    }
}

/// What a sweep over session directories found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sweep {
    /// Session directories (or lone lock files) of dead runs: removed, or would be.
    pub dead: Vec<PathBuf>,
    /// Session directories of live runs, left alone.
    pub live: Vec<PathBuf>,
}

/// A run id as `random_id` makes them: 16 lowercase hex digits. Nothing else in the per-user
/// directory is ever touched.
fn is_run_id(name: &str) -> bool {
    name.len() == 16
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Finds (and unless `dry_run`, removes) the session directories of dead runs under `base`,
/// judged by their liveness lock, never by age. `keep` is this run's own id.
pub fn sweep(base: &Path, keep: Option<&str>, dry_run: bool) -> Result<Sweep> {
    let user_dir = user_dir_in(base);
    let entries = match std::fs::read_dir(&user_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Sweep::default()),
        Err(e) => return Err(Error::io(format!("listing {}", user_dir.display()), e)),
    };
    let mut ids: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .map(|name| {
            name.strip_suffix(".lock")
                .map(str::to_owned)
                .unwrap_or(name)
        })
        .filter(|id| is_run_id(id) && Some(id.as_str()) != keep)
        .collect();
    ids.sort();
    ids.dedup();
    let mut sweep = Sweep::default();
    for id in ids {
        let dir = user_dir.join(&id);
        let Some(lock) = lock_run(&user_dir, &id, Duration::ZERO)? else {
            sweep.live.push(dir);
            continue;
        };
        if !dry_run {
            // Holding the dead run's lock: nobody else is removing it, and a live run never
            // reuses an id. remove_dir_all does not follow symlinks.
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("removing {}", dir.display()), e)),
            }
            let _ = std::fs::remove_file(lock_path(&user_dir, &id));
        }
        drop(lock);
        sweep.dead.push(dir);
    }
    Ok(sweep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_private_dirs_and_plugin() {
        let t = tempfile::tempdir().unwrap();
        let s = Session::create_in(t.path()).unwrap();
        assert!(s.plugin_dir().join("racefree_pytest/__init__.py").is_file());
        let slot = s.slot_tmp(1).unwrap();
        assert!(slot.is_dir());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&s.root).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        let s2 = Session::create_in(t.path()).unwrap();
        assert_ne!(s.root, s2.root);
        s.remove().unwrap();
        assert!(!s.root.exists());
    }

    #[test]
    fn runs_share_one_copy_of_the_python_modules_and_only_if_it_is_theirs() {
        let t = tempfile::tempdir().unwrap();
        let a = Session::create_in(t.path()).unwrap();
        let b = Session::create_in(t.path()).unwrap();
        let shared = a.plugin_dir();
        assert_eq!(shared, b.plugin_dir());
        assert!(!shared.starts_with(&a.root), "{}", shared.display());
        for (name, source) in PYTHON_FILES {
            assert_eq!(std::fs::read_to_string(shared.join(name)).unwrap(), source);
        }
        // Removing a run, or sweeping dead ones, leaves the shared copy.
        a.remove().unwrap();
        drop(b);
        sweep(t.path(), None, false).unwrap();
        assert!(shared.join("racefree_forkserver.py").is_file());
        // A shared copy whose files are not this build's is not used: a run uses its own.
        std::fs::write(shared.join("racefree_unitns.py"), "changed = True\n").unwrap();
        let c = Session::create_in(t.path()).unwrap();
        assert!(
            c.plugin_dir().starts_with(&c.root),
            "{}",
            c.plugin_dir().display()
        );
        for (name, source) in PYTHON_FILES {
            assert_eq!(
                std::fs::read_to_string(c.plugin_dir().join(name)).unwrap(),
                source
            );
        }
    }

    #[test]
    fn sweep_removes_dead_runs_only() {
        let t = tempfile::tempdir().unwrap();
        let live = Session::create_in(t.path()).unwrap();
        // A dead run: its directory and lock file exist, but nobody holds the lock.
        let dead = Session::create_in(t.path()).unwrap();
        let dead_root = dead.root.clone();
        std::fs::write(dead_root.join("left-behind"), "x").unwrap();
        drop(dead); // releases the lock without removing anything, as a SIGKILL would
        // Something that is not a session directory is never touched.
        let user_dir = user_dir_in(t.path());
        let other = user_dir.join("not-a-run");
        std::fs::create_dir(&other).unwrap();

        let seen = sweep(t.path(), None, true).unwrap();
        assert_eq!(seen.dead, vec![dead_root.clone()]);
        assert_eq!(seen.live, vec![live.root.clone()]);
        assert!(dead_root.exists(), "a dry run removed something");

        let swept = sweep(t.path(), None, false).unwrap();
        assert_eq!(swept.dead, vec![dead_root.clone()]);
        assert!(!dead_root.exists());
        assert!(!lock_path(&user_dir, &dead_root.file_name().unwrap().to_string_lossy()).exists());
        assert!(live.root.exists(), "a live run's directory was removed");
        assert!(other.exists());
        live.remove().unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_symlinked_user_dir() {
        let t = tempfile::tempdir().unwrap();
        let elsewhere = t.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(
            &elsewhere,
            t.path().join(format!("racefree-{}", crate::unix::uid())),
        )
        .unwrap();
        assert!(Session::create_in(t.path()).is_err());
    }
}
