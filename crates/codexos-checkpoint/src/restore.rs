//! Making a directory equal to a checkpoint: remove what the checkpoint lacks, write what
//! differs, fix modes, leave the rest alone.
//!
//! Everything goes through directory descriptors opened with `O_NOFOLLOW`: a link planted in
//! the workspace (`ws/dir -> /outside`) is removed or replaced as a link, never entered, so a
//! restore writes and deletes inside the workspace only. Files are written to a temporary name
//! in their directory and renamed over the old one, so a reader sees the old file or the new
//! one, never half of either; a file is never written in place, so a hard link from the
//! workspace to a file elsewhere cannot carry a restore's writes out of it.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result, corrupt, read_error, write_error};
use crate::fsops::{self, Meta, RelPath};
use crate::hash::{CheckpointId, ObjectHash};
use crate::snapshot::Skipped;
use crate::stat_cache::StatCache;
use crate::store::{CHUNK, Kind, Store};
use crate::tree::{Node, Tree};

/// What a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Regular files (re)written.
    pub files_written: u64,
    /// Symbolic links (re)created.
    pub symlinks_written: u64,
    pub dirs_created: u64,
    /// Paths removed because the checkpoint does not have them (a directory counts with
    /// everything that was in it).
    pub removed: u64,
    /// Files and directories whose permission bits were changed in place.
    pub modes_changed: u64,
    /// Files read to compare them with the checkpoint; the others were vouched for by the
    /// stat cache, or differed in size.
    pub files_hashed: u64,
    /// Placeholders (sockets, devices, unreadable files) with nothing in their place: a
    /// checkpoint cannot bring those back.
    pub not_restored: Vec<Skipped>,
}

/// Restores `id` into the existing directory `workspace`.
pub(crate) fn restore(store: &Store, id: &CheckpointId, workspace: &Path) -> Result<RestoreReport> {
    let workspace = workspace.canonicalize().map_err(|err| read_error(workspace, err))?;
    store.check_separate(&workspace)?;
    let _lock = store.lock(false)?;
    let cache = store.load_cache(&workspace);
    run(store, id, &workspace, &cache)
}

/// Restores `id` into `new_dir`, which must not exist or be empty (a fork).
pub(crate) fn restore_into(store: &Store, id: &CheckpointId, new_dir: &Path) -> Result<RestoreReport> {
    // Checked before anything is created, then again on the real path.
    store.check_separate(&resolve_missing(new_dir))?;
    std::fs::create_dir_all(new_dir).map_err(|err| write_error(new_dir, err))?;
    let new_dir = new_dir.canonicalize().map_err(|err| read_error(new_dir, err))?;
    let mut entries = std::fs::read_dir(&new_dir).map_err(|err| read_error(&new_dir, err))?;
    if entries.next().is_some() {
        return Err(Error::NotEmpty { path: new_dir });
    }
    store.check_separate(&new_dir)?;
    let _lock = store.lock(false)?;
    let cache = StatCache { workspace: new_dir.clone(), ..StatCache::default() };
    run(store, id, &new_dir, &cache)
}

/// `path` with its deepest existing ancestor made canonical (the rest does not exist yet).
fn resolve_missing(path: &Path) -> std::path::PathBuf {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        let candidate = if existing.as_os_str().is_empty() { Path::new(".") } else { existing };
        if let Ok(canonical) = candidate.canonicalize() {
            return rest.iter().rev().fold(canonical, |path, name| path.join(name));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return path.to_owned(),
        }
    }
}

fn run(store: &Store, id: &CheckpointId, workspace: &Path, cache: &StatCache) -> Result<RestoreReport> {
    let record = store.read_record(id)?;
    let tree = store.read_tree(&record.tree)?;
    let root = fsops::open_root(workspace).map_err(|err| read_error(workspace, err))?;
    let mut restorer = Restorer { store, cache, path: RelPath::new(workspace), report: RestoreReport::default() };
    let before = restorer.make_writable(&root)?;
    restorer.dir(&root, &tree)?;
    restorer.set_dir_mode(&root, record.root_mode, Some(before))?;
    Ok(restorer.report)
}

struct Restorer<'a> {
    store: &'a Store,
    cache: &'a StatCache,
    path: RelPath,
    report: RestoreReport,
}

impl Restorer<'_> {
    fn dir(&mut self, dir: &OwnedFd, tree: &Tree) -> Result<()> {
        let names = fsops::list(dir).map_err(|err| read_error(self.path.display(), err))?;
        for name in names.iter().filter(|name| tree.get(name.to_bytes()).is_none()) {
            self.path.push(name.to_bytes());
            let removed = fsops::remove_all(dir, name, &mut self.path);
            self.path.pop();
            self.report.removed += removed?;
        }
        for entry in &tree.entries {
            // Names in a tree never hold NUL (checked when it was decoded).
            let name =
                CString::new(entry.name.as_slice()).map_err(|_| corrupt(self.path.display(), "NUL in a name"))?;
            self.path.push(&entry.name);
            let res = self.entry(dir, &name, &entry.node);
            self.path.pop();
            res?;
        }
        Ok(())
    }

    fn entry(&mut self, dir: &OwnedFd, name: &CStr, node: &Node) -> Result<()> {
        let current = fsops::stat_at(dir, name).map_err(|err| read_error(self.path.display(), err))?;
        match node {
            Node::File { mode, size, blob } => {
                if let Some(current) = current.filter(|meta| meta.kind == FileType::RegularFile)
                    && self.same_content(dir, name, &current, *size, blob)?
                {
                    if current.perm == *mode {
                        return Ok(());
                    }
                    // A file with other names may be linked from outside the workspace: give
                    // it a copy of its own rather than change the shared inode.
                    if current.nlink == 1 && self.chmod_file(dir, name, *mode)? {
                        self.report.modes_changed += 1;
                        return Ok(());
                    }
                }
                self.write_file(dir, name, current.as_ref(), *mode, *size, blob)
            }
            Node::Symlink { target } => {
                if let Some(current) = &current
                    && current.kind == FileType::Symlink
                    && fsops::read_link(dir, name).is_ok_and(|existing| existing == *target)
                {
                    return Ok(());
                }
                self.write_symlink(dir, name, current.as_ref(), target)
            }
            Node::Dir { mode, tree } => {
                let subtree = self.store.read_tree(tree)?;
                let existed = current.as_ref().is_some_and(|meta| meta.kind == FileType::Directory);
                if !existed {
                    if current.is_some() {
                        self.report.removed += fsops::remove_all(dir, name, &mut self.path)?;
                    }
                    rustix::fs::mkdirat(dir, name, Mode::RWXU).map_err(|err| write_error(self.path.display(), err))?;
                    self.report.dirs_created += 1;
                }
                let child = self.open_dir(dir, name)?;
                let before = self.make_writable(&child)?;
                self.dir(&child, &subtree)?;
                self.set_dir_mode(&child, *mode, existed.then_some(before))
            }
            Node::Uncaptured { reason } => {
                // Whatever is there now is left alone: we do not know what it should hold.
                if current.is_none() {
                    self.report.not_restored.push(Skipped { path: self.path.relative(), reason: *reason });
                }
                Ok(())
            }
        }
    }

    /// Whether the regular file `name` holds the blob: by the stat cache if it vouches for the
    /// file, else by reading it.
    fn same_content(
        &mut self,
        dir: &OwnedFd,
        name: &CStr,
        current: &Meta,
        size: u64,
        blob: &ObjectHash,
    ) -> Result<bool> {
        if current.key.size != size {
            return Ok(false);
        }
        if let Some(cached) = self.cache.lookup(self.path.bytes(), &current.key) {
            return Ok(cached == *blob);
        }
        let fd = match fsops::open_file(dir, name) {
            Ok(fd) => fd,
            // Unreadable, or gone: it will be written anew.
            Err(Errno::ACCESS | Errno::NOENT | Errno::LOOP) => return Ok(false),
            Err(err) => return Err(read_error(self.path.display(), err)),
        };
        self.report.files_hashed += 1;
        let mut file = File::from(fd);
        let mut hasher = Sha256::new();
        let mut buf = vec![0; CHUNK.min(size as usize + 1)];
        loop {
            let n = file.read(&mut buf).map_err(|err| read_error(self.path.display(), err))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(ObjectHash::from_hasher(hasher) == *blob)
    }

    /// Changes a file's permission bits through a descriptor (never following a link); `false`
    /// if the file cannot be opened to do so, in which case the caller rewrites it.
    fn chmod_file(&mut self, dir: &OwnedFd, name: &CStr, mode: u32) -> Result<bool> {
        let fd = match fsops::open_file(dir, name) {
            Ok(fd) => fd,
            Err(Errno::ACCESS | Errno::NOENT | Errno::LOOP) => return Ok(false),
            Err(err) => return Err(write_error(self.path.display(), err)),
        };
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|err| write_error(self.path.display(), err))?;
        Ok(true)
    }

    fn write_file(
        &mut self,
        dir: &OwnedFd,
        name: &CStr,
        current: Option<&Meta>,
        mode: u32,
        size: u64,
        blob: &ObjectHash,
    ) -> Result<()> {
        let mut source = self.store.open_blob(blob)?;
        let (temp_name, temp) = self.temp_file(dir)?;
        let res = (|| {
            let mut temp = File::from(temp);
            // On Linux this is `copy_file_range`: done in the kernel, and a reflink (a copy
            // sharing blocks until either side is written) on file systems that have them. The
            // copy is the workspace's own either way: nothing written to it reaches the blob.
            let copied = std::io::copy(&mut source, &mut temp).map_err(|err| write_error(self.path.display(), err))?;
            if copied != size {
                let reason = format!("blob of {copied} bytes where the checkpoint says {size}");
                return Err(corrupt(self.store.object_path(Kind::Blob, blob), reason));
            }
            rustix::fs::fchmod(&temp, Mode::from_raw_mode(mode))
                .map_err(|err| write_error(self.path.display(), err))?;
            Ok(())
        })();
        self.replace_with_temp(dir, name, current, &temp_name, res)?;
        self.report.files_written += 1;
        Ok(())
    }

    fn write_symlink(&mut self, dir: &OwnedFd, name: &CStr, current: Option<&Meta>, target: &[u8]) -> Result<()> {
        let temp_name = loop {
            let temp_name = temp_name();
            match rustix::fs::symlinkat(target, dir, &temp_name) {
                Ok(()) => break temp_name,
                Err(Errno::EXIST) => continue,
                Err(err) => return Err(write_error(self.path.display(), err)),
            }
        };
        self.replace_with_temp(dir, name, current, &temp_name, Ok(()))?;
        self.report.symlinks_written += 1;
        Ok(())
    }

    /// Renames the complete temporary `temp_name` over `name` (a directory in the way is
    /// removed first: a rename cannot replace one); removes the temporary on any failure.
    fn replace_with_temp(
        &mut self,
        dir: &OwnedFd,
        name: &CStr,
        current: Option<&Meta>,
        temp_name: &CStr,
        written: Result<()>,
    ) -> Result<()> {
        let res = written.and_then(|()| {
            if current.is_some_and(|meta| meta.kind == FileType::Directory) {
                self.report.removed += fsops::remove_all(dir, name, &mut self.path)?;
            }
            rustix::fs::renameat(dir, temp_name, dir, name).map_err(|err| write_error(self.path.display(), err))
        });
        if res.is_err() {
            let _ = rustix::fs::unlinkat(dir, temp_name, AtFlags::empty());
        }
        res
    }

    fn temp_file(&self, dir: &OwnedFd) -> Result<(CString, OwnedFd)> {
        loop {
            let temp_name = temp_name();
            let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            match rustix::fs::openat(dir, &temp_name, flags, Mode::from_raw_mode(0o600)) {
                Ok(fd) => return Ok((temp_name, fd)),
                Err(Errno::EXIST) => continue,
                Err(err) => return Err(write_error(self.path.display(), err)),
            }
        }
    }

    /// Opens a directory of the workspace to restore into it; one we may not read (mode 000,
    /// when not root) is made ours first.
    fn open_dir(&mut self, dir: &OwnedFd, name: &CStr) -> Result<OwnedFd> {
        match fsops::open_dir(dir, name) {
            Ok(fd) => Ok(fd),
            Err(Errno::ACCESS) => {
                // `stat` just said it is a directory, and the agent is not running during a
                // restore; the open below refuses a link anyway.
                rustix::fs::chmodat(dir, name, Mode::RWXU, AtFlags::empty())
                    .map_err(|err| write_error(self.path.display(), err))?;
                fsops::open_dir(dir, name).map_err(|err| write_error(self.path.display(), err))
            }
            Err(err) => Err(write_error(self.path.display(), err)),
        }
    }

    /// Gives us (the owner) read, write and search on a directory we are about to change
    /// (its mode is set when we are done with it); returns its permission bits before.
    fn make_writable(&mut self, dir: &OwnedFd) -> Result<u32> {
        let meta = fsops::fstat(dir).map_err(|err| read_error(self.path.display(), err))?;
        if meta.perm & 0o700 != 0o700 {
            rustix::fs::fchmod(dir, Mode::from_raw_mode(meta.perm | 0o700))
                .map_err(|err| write_error(self.path.display(), err))?;
        }
        Ok(meta.perm)
    }

    /// Sets a directory's permission bits; `before` is what an existing directory had before
    /// the restore touched it (`None` for one the restore created).
    fn set_dir_mode(&mut self, dir: impl AsFd, mode: u32, before: Option<u32>) -> Result<()> {
        let meta = fsops::fstat(&dir).map_err(|err| read_error(self.path.display(), err))?;
        if meta.perm != mode {
            rustix::fs::fchmod(&dir, Mode::from_raw_mode(mode)).map_err(|err| write_error(self.path.display(), err))?;
        }
        if before.is_some_and(|before| before != mode) {
            self.report.modes_changed += 1;
        }
        Ok(())
    }
}

/// A name for a file being written, unlikely to meet one of the workspace's own; if it does,
/// `O_EXCL` notices and the next one is tried. A leftover (a restore killed mid-file) is not
/// in any checkpoint, so the next restore removes it.
fn temp_name() -> CString {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    crate::store::c_name(&format!(".codexos-restore.{}.{n}", std::process::id()))
}
