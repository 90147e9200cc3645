//! Opening lock files safely: never through a symlink, never truncating, never hanging on a
//! FIFO, and refusing anything that is not a regular file.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::error::{LockError, Result};
use crate::record::{self, Contents, MAX_RECORD_BYTES};

/// The (device, inode) pair that names one file.
pub(crate) type FileId = (u64, u64);

pub(crate) fn file_id(st: &Stat) -> FileId {
    #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
    (st.st_dev as u64, st.st_ino as u64)
}

/// Modification time in nanoseconds since the epoch (field types differ between platforms).
#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
pub(crate) fn mtime_nanos(st: &Stat) -> i128 {
    st.st_mtime as i128 * 1_000_000_000 + st.st_mtime_nsec as i128
}

fn kind_name(ft: FileType) -> &'static str {
    match ft {
        FileType::Directory => "directory",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Symlink => "symbolic link",
        _ => "special file",
    }
}

/// Maps an open/stat error on a lock path to a message that names the fix.
pub(crate) fn open_error(path: &Path, op: &'static str, e: Errno) -> LockError {
    match e {
        Errno::LOOP | Errno::MLINK => LockError::Symlink {
            path: path.to_path_buf(),
        },
        Errno::ISDIR => LockError::NotRegularFile {
            path: path.to_path_buf(),
            kind: "directory",
        },
        Errno::NXIO => LockError::NotRegularFile {
            path: path.to_path_buf(),
            kind: "socket or device",
        },
        Errno::NOENT | Errno::NOTDIR => match parent_of(path) {
            Some(parent) if !parent.is_dir() => LockError::MissingParent {
                path: path.to_path_buf(),
                parent,
            },
            _ => LockError::io(path, op, std::io::Error::from(e)),
        },
        _ => LockError::io(path, op, std::io::Error::from(e)),
    }
}

pub(crate) fn parent_of(path: &Path) -> Option<PathBuf> {
    match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Some(PathBuf::from(".")),
        Some(p) => Some(p.to_path_buf()),
        None => None,
    }
}

/// Checks that a stat result is a regular file.
pub(crate) fn require_regular(path: &Path, st: &Stat) -> Result<()> {
    let ft = FileType::from_raw_mode(st.st_mode);
    if ft == FileType::RegularFile {
        Ok(())
    } else {
        Err(LockError::NotRegularFile {
            path: path.to_path_buf(),
            kind: kind_name(ft),
        })
    }
}

/// Opens (creating if needed) a file that carries a kernel lock.
///
/// `O_NOFOLLOW` so a planted symlink is never followed, no `O_TRUNC` so an existing file is never
/// emptied, `O_NONBLOCK` so a FIFO planted at the path cannot hang the open, `O_CLOEXEC` so
/// children do not inherit the lock by accident. Returns the file and its stat.
pub(crate) fn open_lock_file(path: &Path) -> Result<(File, Stat)> {
    let file = open_lock_file_unchecked(path)?;
    let st = rustix::fs::fstat(&file).map_err(|e| LockError::io(path, "fstat", e))?;
    require_regular(path, &st)?;
    Ok((file, st))
}

/// [`open_lock_file`] without the file-type check, for callers that `fstat` later anyway (and
/// must check the type then, before trusting or writing the file).
pub(crate) fn open_lock_file_unchecked(path: &Path) -> Result<File> {
    let flags =
        OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd = rustix::fs::open(path, flags, Mode::from_raw_mode(0o644))
        .map_err(|e| open_error(path, "open", e))?;
    Ok(File::from(fd))
}

/// Opens an existing file read-only for inspection, with the same protections.
/// `Ok(None)` if nothing is at the path.
pub(crate) fn open_existing_readonly(path: &Path) -> Result<Option<(OwnedFd, Stat)>> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(open_error(path, "open", e)),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| LockError::io(path, "fstat", e))?;
    require_regular(path, &st)?;
    Ok(Some((fd, st)))
}

/// Reads and classifies the record in an open lock file of the given size. Oversized files are
/// refused before a byte is read; foreign content is reported, never overwritten.
pub(crate) fn read_contents(path: &Path, fd: impl AsFd, size: u64) -> Result<Contents> {
    let buf = read_bounded(path, fd, size)?;
    let contents = record::parse(&buf);
    if contents == Contents::Foreign {
        return Err(LockError::ForeignContent {
            path: path.to_path_buf(),
            len: size,
        });
    }
    Ok(contents)
}

/// Reads a whole lock file of the given size, refusing oversized ones before reading a byte.
pub(crate) fn read_bounded(path: &Path, fd: impl AsFd, size: u64) -> Result<Vec<u8>> {
    if size > MAX_RECORD_BYTES {
        return Err(LockError::OversizedRecord {
            path: path.to_path_buf(),
            len: size,
            max: MAX_RECORD_BYTES,
        });
    }
    if size == 0 {
        return Ok(Vec::new());
    }
    let len = usize::try_from(size).unwrap_or(0);
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        match rustix::io::pread(&fd, &mut buf[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(LockError::io(path, "read", e)),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// Writes all of `bytes` at offset 0.
pub(crate) fn write_at_start(path: &Path, fd: impl AsFd, bytes: &[u8]) -> Result<()> {
    let mut written = 0;
    while written < bytes.len() {
        match rustix::io::pwrite(&fd, &bytes[written..], written as u64) {
            Ok(n) => written += n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(LockError::io(path, "write", e)),
        }
    }
    Ok(())
}

/// A sibling path in the same directory: `dir/<prefix><name><suffix>`.
pub(crate) fn sibling(path: &Path, prefix: &str, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{prefix}{name}{suffix}"))
}
