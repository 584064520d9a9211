//! Taking a checkpoint: one walk of the workspace, reading only the files whose `stat` changed
//! since the last snapshot, storing new contents and the listings of the directories.

use std::collections::HashMap;
use std::ffi::CStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::FileType;
use rustix::io::Errno;

use crate::error::{Result, read_error};
use crate::fsops::{self, Meta, RelPath};
use crate::hash::ObjectHash;
use crate::stat_cache::{CacheEntry, StatCache, settled};
use crate::store::{Checkpoint, Kind, Record, Store};
use crate::tree::{MODE_BITS, Node, SkipReason, Tree, TreeEntry};

/// Files up to this size are read whole and hashed in memory; larger ones are hashed while
/// being copied into the store.
const SMALL_FILE: u64 = 1024 * 1024;

/// A checkpoint just taken, with what the walk found on the way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub checkpoint: Checkpoint,
    /// Files read and hashed; the others were vouched for by the stat cache.
    pub hashed_files: u64,
    /// What is not (fully) in the checkpoint, and why.
    pub skipped: Vec<Skipped>,
}

/// A path of the workspace (relative to it) left out of a checkpoint or a restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: SkipReason,
}

/// Called with each directory's path right after it is listed; tests use it to pull files away
/// from under the walk.
pub(crate) type AfterListing<'a> = Option<&'a dyn Fn(&Path)>;

pub(crate) fn take(store: &Store, workspace: &Path, after_listing: AfterListing<'_>) -> Result<Snapshot> {
    let workspace = workspace.canonicalize().map_err(|err| read_error(workspace, err))?;
    store.check_separate(&workspace)?;
    let _lock = store.lock(false)?;
    let walk_started_ns = now_ns();
    let root = fsops::open_root(&workspace).map_err(|err| read_error(&workspace, err))?;
    let root_meta = fsops::fstat(&root).map_err(|err| read_error(&workspace, err))?;
    let old_cache = store.load_cache(&workspace);
    let mut walk = Walk {
        store,
        new_cache: StatCache { workspace: workspace.clone(), entries: HashMap::with_capacity(old_cache.entries.len()) },
        old_cache,
        walk_started_ns,
        path: RelPath::new(&workspace),
        buf: Vec::new(),
        after_listing,
        counts: Counts::default(),
        skipped: Vec::new(),
    };
    let tree = walk.dir(&root)?;
    store.save_cache(&walk.new_cache)?;
    let counts = walk.counts;
    let record = Record {
        tree,
        root_mode: root_meta.perm & MODE_BITS,
        created_at_ms: (walk_started_ns / 1_000_000) as u64,
        files: counts.files,
        dirs: counts.dirs,
        symlinks: counts.symlinks,
        uncaptured: counts.uncaptured,
        logical_bytes: counts.logical_bytes,
        added_bytes: counts.added_bytes,
        added_blobs: counts.added_blobs,
    };
    let id = store.write_record(&record)?;
    Ok(Snapshot { checkpoint: record.checkpoint(id), hashed_files: counts.hashed_files, skipped: walk.skipped })
}

pub(crate) fn now_ns() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_nanos() as i128)
}

#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    files: u64,
    dirs: u64,
    symlinks: u64,
    uncaptured: u64,
    logical_bytes: u64,
    added_bytes: u64,
    added_blobs: u64,
    hashed_files: u64,
}

struct Walk<'a> {
    store: &'a Store,
    old_cache: StatCache,
    new_cache: StatCache,
    walk_started_ns: i128,
    path: RelPath,
    /// Reused for every small file.
    buf: Vec<u8>,
    after_listing: AfterListing<'a>,
    counts: Counts,
    skipped: Vec<Skipped>,
}

impl Walk<'_> {
    /// Stores the listing of the directory open at `dir` (and everything below it).
    fn dir(&mut self, dir: &OwnedFd) -> Result<ObjectHash> {
        let names = fsops::list(dir).map_err(|err| read_error(self.path.display(), err))?;
        if let Some(after_listing) = self.after_listing {
            after_listing(&self.path.display());
        }
        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            self.path.push(name.to_bytes());
            let node = self.entry(dir, &name);
            self.path.pop();
            if let Some(node) = node? {
                entries.push(TreeEntry { name: name.into_bytes(), node });
            }
        }
        let bytes = Tree { entries }.encode();
        let hash = ObjectHash::of(&bytes);
        self.counts.added_bytes += self.store.put_bytes(Kind::Tree, &hash, &bytes)?;
        Ok(hash)
    }

    /// What goes into the checkpoint for `name`: `None` when it vanished or changed type while
    /// being looked at.
    fn entry(&mut self, dir: &OwnedFd, name: &CStr) -> Result<Option<Node>> {
        let meta = match fsops::stat_at(dir, name) {
            Ok(Some(meta)) => meta,
            Ok(None) => return Ok(self.skip(SkipReason::Vanished)),
            Err(Errno::ACCESS) => return Ok(self.uncaptured(SkipReason::Unreadable)),
            Err(err) => return Err(read_error(self.path.display(), err)),
        };
        match meta.kind {
            FileType::Directory => {
                let child = match fsops::open_dir(dir, name) {
                    Ok(child) => child,
                    Err(err) => return self.open_failed(err),
                };
                let tree = self.dir(&child)?;
                self.counts.dirs += 1;
                Ok(Some(Node::Dir { mode: meta.perm & MODE_BITS, tree }))
            }
            FileType::RegularFile => self.file(dir, name, &meta),
            FileType::Symlink => match fsops::read_link(dir, name) {
                Ok(target) => {
                    self.counts.symlinks += 1;
                    Ok(Some(Node::Symlink { target }))
                }
                Err(err) => self.open_failed(err),
            },
            FileType::Socket => Ok(self.uncaptured(SkipReason::Socket)),
            FileType::Fifo => Ok(self.uncaptured(SkipReason::Fifo)),
            FileType::CharacterDevice | FileType::BlockDevice | FileType::Unknown => {
                Ok(self.uncaptured(SkipReason::Device))
            }
        }
    }

    fn file(&mut self, dir: &OwnedFd, name: &CStr, meta: &Meta) -> Result<Option<Node>> {
        if let Some(blob) = self.old_cache.lookup(self.path.bytes(), &meta.key) {
            self.new_cache
                .entries
                .insert(self.path.bytes().to_vec(), CacheEntry { key: meta.key, blob, settled: true });
            self.counts.files += 1;
            self.counts.logical_bytes += meta.key.size;
            return Ok(Some(Node::File { mode: meta.perm & MODE_BITS, size: meta.key.size, blob }));
        }
        let fd = match fsops::open_file(dir, name) {
            Ok(fd) => fd,
            Err(err) => return self.open_failed(err),
        };
        // The stat of what is actually read (the name may have been replaced since `stat_at`).
        let meta = fsops::fstat(&fd).map_err(|err| read_error(self.path.display(), err))?;
        if meta.kind != FileType::RegularFile {
            return Ok(self.skip(SkipReason::Changed));
        }
        let mut file = File::from(fd);
        let (blob, size, added) = if meta.key.size <= SMALL_FILE {
            self.buf.clear();
            file.read_to_end(&mut self.buf).map_err(|err| read_error(self.path.display(), err))?;
            let blob = ObjectHash::of(&self.buf);
            let added = self.store.put_bytes(Kind::Blob, &blob, &self.buf)?;
            (blob, self.buf.len() as u64, added)
        } else {
            self.store.put_stream(&mut file, &self.path.display())?
        };
        if added > 0 {
            self.counts.added_blobs += 1;
            self.counts.added_bytes += added;
        }
        self.counts.hashed_files += 1;
        self.counts.files += 1;
        self.counts.logical_bytes += size;
        // A file that grew or shrank while being read is hashed again next time.
        let settled = settled(&meta.key, self.walk_started_ns) && size == meta.key.size;
        self.new_cache.entries.insert(self.path.bytes().to_vec(), CacheEntry { key: meta.key, blob, settled });
        Ok(Some(Node::File { mode: meta.perm & MODE_BITS, size, blob }))
    }

    /// An `openat` or `readlinkat` of something `stat` just saw failed.
    fn open_failed(&mut self, err: Errno) -> Result<Option<Node>> {
        match err {
            Errno::NOENT => Ok(self.skip(SkipReason::Vanished)),
            // ELOOP/ENOTDIR: a directory became a link or a file; EINVAL: a link became
            // something else.
            Errno::LOOP | Errno::NOTDIR | Errno::INVAL => Ok(self.skip(SkipReason::Changed)),
            Errno::ACCESS | Errno::PERM => Ok(self.uncaptured(SkipReason::Unreadable)),
            err => Err(read_error(self.path.display(), err)),
        }
    }

    fn skip(&mut self, reason: SkipReason) -> Option<Node> {
        self.skipped.push(Skipped { path: self.path.relative(), reason });
        None
    }

    /// Keeps the name as a placeholder, so that a restore leaves the thing alone.
    fn uncaptured(&mut self, reason: SkipReason) -> Option<Node> {
        self.skipped.push(Skipped { path: self.path.relative(), reason });
        self.counts.uncaptured += 1;
        Some(Node::Uncaptured { reason })
    }
}
