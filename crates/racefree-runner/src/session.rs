//! The session root: every file a run creates lives under one private directory,
//! `/dev/shm/racefree-<uid>/<run id>/` when /dev/shm is a writable tmpfs, else
//! `$TMPDIR/racefree-<uid>/<run id>/` (DESIGN §2.3). Directories are 0700; the per-user
//! parent is refused if it is a symlink, not ours, or open to others.
//!
//! Seam for the isolation issue: the run should hold a racefree-lock kernel lock on
//! `<run id>.lock` for its whole life, and start-up should remove directories of dead runs
//! (those whose lock can be taken). Today the run removes its own directory when it ends.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The plugin's source, embedded at build time.
pub const PLUGIN_SOURCE: &str = include_str!("../../../python/racefree_pytest/__init__.py");

pub struct Session {
    pub root: PathBuf,
    pub run_id: String,
    /// An exclusive flock on `<run id>.lock` beside the root, held for the run's life, so
    /// that sweepers of dead runs' directories (DESIGN §2.3) see this run as alive.
    _lock: std::os::fd::OwnedFd,
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

/// The directory session roots go under for this user.
fn base_dir() -> PathBuf {
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
        let user_dir = base.join(format!("racefree-{}", crate::unix::uid()));
        crate::unix::ensure_private_dir(&user_dir)?;
        // A collision of 64 random bits is not expected; mkdir fails rather than reuse.
        let run_id = random_id()?;
        let root = user_dir.join(&run_id);
        let lock_path = user_dir.join(format!("{run_id}.lock"));
        let lock = crate::unix::lock_exclusive(&lock_path)
            .map_err(io(format!("locking {}", lock_path.display())))?;
        crate::unix::mkdir_private(&root)
            .map_err(io(format!("creating session directory {}", root.display())))?;
        let session = Session {
            root,
            run_id,
            _lock: lock,
        };
        let plugin_dir = session.plugin_dir().join("racefree_pytest");
        std::fs::create_dir_all(&plugin_dir)
            .map_err(io(format!("creating {}", plugin_dir.display())))?;
        let plugin = plugin_dir.join("__init__.py");
        std::fs::write(&plugin, PLUGIN_SOURCE)
            .map_err(io(format!("writing {}", plugin.display())))?;
        Ok(session)
    }

    /// The directory to put on PYTHONPATH so `-p racefree_pytest` finds the plugin.
    pub fn plugin_dir(&self) -> PathBuf {
        self.root.join("plugin")
    }

    /// A worker slot's private temp root (TMPDIR and friends), created on first use.
    pub fn slot_tmp(&self, slot: usize) -> Result<PathBuf> {
        let dir = self.root.join(format!("w{slot}")).join("tmp");
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        Ok(dir)
    }

    /// A fresh `--basetemp` for one unit (pytest creates it).
    pub fn basetemp(&self, slot: usize, unit: usize, attempt: u32) -> PathBuf {
        self.root
            .join(format!("w{slot}"))
            .join(format!("basetemp-u{unit}-a{attempt}"))
    }

    /// A file describing a unit to the plugin (node-id selection, walked files).
    pub fn unit_file(&self, unit: usize, attempt: u32) -> PathBuf {
        self.root.join(format!("unit-u{unit}-a{attempt}.json"))
    }

    /// Removes the whole session directory, then (still holding it) its lock file.
    pub fn remove(&self) -> Result<()> {
        std::fs::remove_dir_all(&self.root)
            .map_err(io(format!("removing {}", self.root.display())))?;
        if let Some(parent) = self.root.parent() {
            let _ = std::fs::remove_file(parent.join(format!("{}.lock", self.run_id)));
        }
        Ok(())
    }
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
        // The run holds its lock file while it lives.
        let lock = t
            .path()
            .join(format!("racefree-{}/{}.lock", crate::unix::uid(), s.run_id));
        let other = std::fs::File::open(&lock).unwrap();
        assert!(
            rustix::fs::flock(&other, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                .is_err()
        );
        s.remove().unwrap();
        assert!(!s.root.exists());
        assert!(!lock.exists());
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
