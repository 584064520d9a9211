//! File system calls relative to directory descriptors, never following a symbolic link below
//! the root given by the caller: a workspace is walked and rewritten one `openat` at a time,
//! so a link planted inside it (`ws/dir -> /etc`) is a link to remove or recreate, never a
//! directory to enter, and paths deeper than `PATH_MAX` work.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Result, read_error, remove_error};

/// What a checkpoint needs of a `stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) kind: FileType,
    /// Permission bits (with set-id and sticky bits, which callers mask off).
    pub(crate) perm: u32,
    pub(crate) nlink: u64,
    pub(crate) key: StatKey,
}

/// The fields that tell whether a file may have changed since it was hashed, as in git's
/// index: any write changes the size or the times, a replacement changes the inode, and
/// `ctime` cannot be set back by anybody but the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StatKey {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) mode: u32,
    pub(crate) size: u64,
    pub(crate) mtime_ns: i128,
    pub(crate) ctime_ns: i128,
}

// `struct stat`'s field types differ between architectures (`c_ulong` here, `u64` there), so
// the casts below are needed on some and no-ops on others.
#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
pub(crate) fn meta(stat: &rustix::fs::Stat) -> Meta {
    let mode = stat.st_mode as u32;
    let time = |sec: i64, nsec: i64| i128::from(sec) * 1_000_000_000 + i128::from(nsec);
    Meta {
        kind: FileType::from_raw_mode(mode as _),
        perm: mode & 0o7777,
        nlink: stat.st_nlink as u64,
        key: StatKey {
            dev: stat.st_dev as u64,
            ino: stat.st_ino as u64,
            mode,
            size: stat.st_size as u64,
            mtime_ns: time(stat.st_mtime as i64, stat.st_mtime_nsec as i64),
            ctime_ns: time(stat.st_ctime as i64, stat.st_ctime_nsec as i64),
        },
    }
}

/// Opens the root of a walk: the one place where a symbolic link is followed, because the
/// caller named that path.
pub(crate) fn open_root(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?)
}

/// Opens a subdirectory; fails (ELOOP or ENOTDIR) if the name is a link or not a directory.
pub(crate) fn open_dir(dir: impl AsFd, name: &CStr) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Opens a regular file for reading; non-blocking, so that a file swapped for a FIFO
/// between listing and opening cannot hang us.
pub(crate) fn open_file(dir: impl AsFd, name: &CStr) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC, Mode::empty())
}

/// `lstat` of a name in a directory; `None` when it is not there.
pub(crate) fn stat_at(dir: impl AsFd, name: &CStr) -> Result<Option<Meta>, Errno> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(meta(&stat))),
        Err(Errno::NOENT) => Ok(None),
        Err(err) => Err(err),
    }
}

pub(crate) fn fstat(fd: impl AsFd) -> Result<Meta, Errno> {
    Ok(meta(&rustix::fs::fstat(fd)?))
}

/// The names in a directory (without `.` and `..`), sorted by bytes.
pub(crate) fn list(dir: impl AsFd) -> Result<Vec<CString>, Errno> {
    let mut names = Vec::new();
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

pub(crate) fn read_link(dir: impl AsFd, name: &CStr) -> Result<Vec<u8>, Errno> {
    Ok(rustix::fs::readlinkat(dir, name, Vec::new())?.into_bytes())
}

/// Removes whatever `name` is (a directory with everything below it), without following
/// links: a link is removed, never what it points at.
pub(crate) fn remove_all(dir: impl AsFd, name: &CStr, path: &mut RelPath) -> Result<u64> {
    let dir = dir.as_fd();
    let Some(meta) = stat_at(dir, name).map_err(|err| read_error(path.display(), err))? else {
        return Ok(0);
    };
    let mut removed = 1;
    if meta.kind == FileType::Directory {
        let child = match open_dir(dir, name) {
            Ok(child) => child,
            // A directory we may not read (mode 000 and not root): make it ours first.
            Err(Errno::ACCESS) => {
                rustix::fs::chmodat(dir, name, Mode::RWXU, AtFlags::empty())
                    .map_err(|err| remove_error(path.display(), err))?;
                open_dir(dir, name).map_err(|err| remove_error(path.display(), err))?
            }
            Err(err) => return Err(remove_error(path.display(), err)),
        };
        if meta.perm & 0o300 != 0o300 {
            rustix::fs::fchmod(&child, Mode::from_raw_mode(meta.perm | 0o700))
                .map_err(|err| remove_error(path.display(), err))?;
        }
        for child_name in list(&child).map_err(|err| read_error(path.display(), err))? {
            path.push(child_name.as_bytes());
            let res = remove_all(&child, &child_name, path);
            path.pop();
            removed += res?;
        }
        match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(err) => return Err(remove_error(path.display(), err)),
        }
    } else {
        match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(err) => return Err(remove_error(path.display(), err)),
        }
    }
    Ok(removed)
}

/// A path below a root as bytes, grown and shrunk one component at a time during a walk, and
/// shown (in errors and reports) joined to the root.
#[derive(Debug)]
pub(crate) struct RelPath {
    root: PathBuf,
    bytes: Vec<u8>,
    lengths: Vec<usize>,
}

impl RelPath {
    pub(crate) fn new(root: &Path) -> RelPath {
        RelPath { root: root.to_owned(), bytes: Vec::new(), lengths: Vec::new() }
    }

    pub(crate) fn push(&mut self, name: &[u8]) {
        self.lengths.push(self.bytes.len());
        if !self.bytes.is_empty() {
            self.bytes.push(b'/');
        }
        self.bytes.extend_from_slice(name);
    }

    pub(crate) fn pop(&mut self) {
        let len = self.lengths.pop().unwrap_or(0);
        self.bytes.truncate(len);
    }

    /// The path relative to the root, as bytes (`a/b/c`; empty for the root).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub(crate) fn relative(&self) -> PathBuf {
        PathBuf::from(OsStr::from_bytes(&self.bytes))
    }

    pub(crate) fn display(&self) -> PathBuf {
        if self.bytes.is_empty() { self.root.clone() } else { self.root.join(OsStr::from_bytes(&self.bytes)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_grow_and_shrink_by_component() {
        let mut path = RelPath::new(Path::new("/ws"));
        assert_eq!(path.display(), Path::new("/ws"));
        path.push(b"a");
        path.push(&[0xff, b'b']);
        assert_eq!(path.bytes(), b"a/\xffb");
        assert_eq!(path.display(), Path::new("/ws").join(OsStr::from_bytes(b"a/\xffb")));
        path.pop();
        assert_eq!(path.relative(), Path::new("a"));
        path.pop();
        path.pop();
        assert_eq!(path.bytes(), b"");
    }
}
