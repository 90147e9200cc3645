//! The unit's file systems, set up by PID 1 in its new mount namespace:
//!
//! 1. every mount becomes private (MS_REC|MS_PRIVATE on /), so nothing we mount propagates to
//!    the host and nothing the host mounts later appears here;
//! 2. /tmp, /dev/shm and /var/tmp get fresh tmpfs: fixed names there no longer collide
//!    between units;
//! 3. paths the unit must still reach that lay under those directories (racefree's session
//!    root with the plugin, the unit file, the slot's TMPDIR and basetemp; a project or venv
//!    under /tmp) are bound back in at the *same* path, so the environment of DESIGN §2.2 and
//!    every path in reports stay valid. Only this run's own session root comes back: another
//!    run's session directory, beside it on the host, is invisible;
//! 4. with a private network, loopback is brought up;
//! 5. a fresh /proc for the new PID namespace (last: binding back goes through the old /proc).
//!
//! The old /proc stays open (an O_PATH descriptor) so leaked processes can be named by their
//! host pids afterwards.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use rustix::fs::{Mode, OFlags};
use rustix::mount::{MountFlags, MountPropagationFlags};

use super::{SetupError, step};

/// Directories that get a private tmpfs.
const PRIVATE_DIRS: [&str; 3] = ["/tmp", "/dev/shm", "/var/tmp"];

/// Sets up the unit's mounts; returns the host's /proc, opened before it was covered.
pub fn setup(keep: &[PathBuf], private_network: bool) -> Result<OwnedFd, SetupError> {
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .map_err(step("making mounts private (mount --make-rprivate /)"))?;
    let old_proc = rustix::fs::open(
        "/proc",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(step("opening /proc"))?;
    let private: Vec<PathBuf> = private_dirs();
    // Kept paths may be named through the unresolved names too (/tmp/x when /tmp is a link).
    let named: Vec<PathBuf> = private
        .iter()
        .cloned()
        .chain(PRIVATE_DIRS.iter().map(PathBuf::from))
        .collect();
    let kept = open_kept(keep, &named)?;
    for dir in &private {
        rustix::mount::mount(
            "tmpfs",
            dir,
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            c"mode=1777",
        )
        .map_err(step(format!(
            "mounting a private tmpfs on {}",
            dir.display()
        )))?;
    }
    for (fd, path) in &kept {
        std::fs::create_dir_all(path).map_err(step(format!(
            "creating {} in the private tmpfs",
            path.display()
        )))?;
        // The descriptor still names the host's directory; its /proc link is a bind source.
        let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
        rustix::mount::mount_bind_recursive(source.as_str(), path)
            .map_err(step(format!("binding {} back in", path.display())))?;
    }
    drop(kept);
    if private_network {
        loopback_up().map_err(step("bringing up loopback in the private network"))?;
    }
    rustix::mount::mount(
        "proc",
        "/proc",
        "proc",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        None,
    )
    .map_err(step("mounting a fresh /proc"))?;
    Ok(old_proc)
}

/// The directories of `PRIVATE_DIRS` that exist here, resolved (one of them may be a link).
fn private_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = PRIVATE_DIRS
        .iter()
        .filter_map(|d| std::fs::canonicalize(d).ok())
        .filter(|d| d.is_dir())
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// The kept paths that lie under a private directory, outermost only, each opened (O_PATH)
/// before the tmpfs covers it. A path is kept where it is named (a symlink under /tmp that
/// leads elsewhere, such as a virtualenv link, is recreated as a mount of its target) and
/// where it really is; a private directory itself is never kept whole, or it would not be
/// private.
fn open_kept(keep: &[PathBuf], private: &[PathBuf]) -> Result<Vec<(OwnedFd, PathBuf)>, SetupError> {
    let under_private = |p: &PathBuf| private.iter().any(|d| p.starts_with(d) && p != d);
    let mut paths: Vec<(PathBuf, PathBuf)> = Vec::new();
    for given in keep.iter().filter(|p| p.is_absolute()) {
        let Ok(real) = std::fs::canonicalize(given) else {
            continue;
        };
        for at in [given.clone(), real.clone()] {
            if under_private(&at) {
                paths.push((at, real.clone()));
            }
        }
    }
    paths.sort();
    paths.dedup_by(|a, b| a.0 == b.0);
    let outermost: Vec<(PathBuf, PathBuf)> = paths
        .iter()
        .filter(|(p, _)| !paths.iter().any(|(q, _)| q != p && p.starts_with(q)))
        .cloned()
        .collect();
    outermost
        .into_iter()
        .map(|(path, real)| {
            let fd = rustix::fs::open(
                &real,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(step(format!("opening {}", real.display())))?;
            Ok((fd, path))
        })
        .collect()
}

/// `ip link set lo up`: a new network namespace starts with loopback down.
fn loopback_up() -> std::io::Result<()> {
    let sock = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        None,
    )?;
    // SAFETY: ifreq is a plain C struct of integers and byte arrays; all zeroes is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo") {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads an ifreq, which `req` is, alive for the call; the socket is
    // open.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_outermost_kept_paths_under_private_dirs_are_bound_back() {
        let t = tempfile::tempdir().unwrap();
        let private = t.path().canonicalize().unwrap().join("private");
        let project = private.join("project");
        std::fs::create_dir_all(project.join("sub")).unwrap();
        let outside = t.path().canonicalize().unwrap().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        let kept = open_kept(
            &[
                project.join("sub"),
                project.clone(),
                project.join("."),
                outside,
                private.join("missing"),
            ],
            std::slice::from_ref(&private),
        )
        .unwrap();
        let paths: Vec<&PathBuf> = kept.iter().map(|(_, p)| p).collect();
        assert_eq!(paths, [&project]);
    }

    #[test]
    fn a_link_under_a_private_dir_is_kept_where_named_and_the_dir_itself_never() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        let private = root.join("private");
        std::fs::create_dir_all(&private).unwrap();
        let target = root.join("elsewhere/venv");
        std::fs::create_dir_all(&target).unwrap();
        let link = private.join("ci/venv");
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let kept = open_kept(
            &[link.clone(), private.clone()],
            std::slice::from_ref(&private),
        )
        .unwrap();
        let paths: Vec<&PathBuf> = kept.iter().map(|(_, p)| p).collect();
        assert_eq!(paths, [&link]);
    }
}
