//! The object store: where checkpoints live, outside every workspace.
//!
//! ```text
//! STORE/
//!   VERSION              "codexos-checkpoint store 1"
//!   lock                 flock: shared while snapshotting or restoring, exclusive while pruning
//!   blobs/ab/cdef…       file contents, named by their SHA-256, read-only
//!   trees/ab/cdef…       directory listings (see tree.rs), named by their SHA-256
//!   checkpoints/<id>     one record per checkpoint: root tree, time, sizes
//!   index/<sha256(ws)>   the stat cache of each workspace snapshotted into this store
//!   tmp/                 objects being written, renamed into place when complete
//! ```
//!
//! Every object is written to `tmp/` and renamed into place, so a reader (or a process killed
//! mid-write) never sees half an object; a name that exists is complete. Objects are
//! deduplicated by name across all checkpoints of the store.

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result, corrupt, read_error, remove_error, write_error};
use crate::fsops::{self, stat_at};
use crate::hash::{CheckpointId, ObjectHash};
use crate::stat_cache::StatCache;
use crate::tree::{Node, Tree};

const VERSION: &str = "codexos-checkpoint store 1\n";
const LAYOUT: [&str; 5] = ["blobs", "trees", "checkpoints", "index", "tmp"];
/// Reads and writes of large files go through a buffer this big.
pub(crate) const CHUNK: usize = 256 * 1024;

/// A checkpoint store: a directory outside any workspace holding the snapshots of one or more
/// workspaces, content shared between all of them. Cheap to share between threads
/// (`Arc<Store>`); operations on one store from several processes are safe too.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    blobs: OwnedFd,
    trees: OwnedFd,
    records: OwnedFd,
    index: OwnedFd,
    tmp: OwnedFd,
}

/// What kind of object, and so which directory of the store it lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Blob,
    Tree,
}

/// A checkpoint as the store describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub id: CheckpointId,
    /// When the snapshot was taken, in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Regular files, directories (the root not counted) and symbolic links in it.
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Entries kept as placeholders only (sockets, FIFOs, devices, unreadable files).
    pub uncaptured: u64,
    /// The total size of its files: what a copy of the workspace would take.
    pub logical_bytes: u64,
    /// The bytes of new content this checkpoint added to the store (file contents and
    /// directory listings that no earlier checkpoint had): what it costs on its own.
    pub added_bytes: u64,
    /// New file contents (blobs) among them.
    pub added_blobs: u64,
}

/// What a store holds, in objects and bytes (file sizes, not blocks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreUsage {
    pub checkpoints: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub trees: u64,
    pub tree_bytes: u64,
    /// The stat caches of the workspaces snapshotted into the store.
    pub index_bytes: u64,
}

impl StoreUsage {
    pub fn total_bytes(&self) -> u64 {
        self.blob_bytes + self.tree_bytes + self.index_bytes
    }
}

/// What a `prune` removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub checkpoints: u64,
    pub blobs: u64,
    pub trees: u64,
    pub freed_bytes: u64,
}

/// The record of one checkpoint, stored as text under `checkpoints/<id>`, its id being the
/// SHA-256 of the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) tree: ObjectHash,
    pub(crate) root_mode: u32,
    pub(crate) created_at_ms: u64,
    pub(crate) files: u64,
    pub(crate) dirs: u64,
    pub(crate) symlinks: u64,
    pub(crate) uncaptured: u64,
    pub(crate) logical_bytes: u64,
    pub(crate) added_bytes: u64,
    pub(crate) added_blobs: u64,
}

impl Record {
    const HEADER: &'static str = "codexos-checkpoint 1";

    fn encode(&self) -> String {
        format!(
            "{}\ntree {}\nroot-mode {:o}\ncreated-at-ms {}\nfiles {}\ndirs {}\nsymlinks {}\nuncaptured {}\n\
             logical-bytes {}\nadded-bytes {}\nadded-blobs {}\n",
            Record::HEADER,
            self.tree,
            self.root_mode,
            self.created_at_ms,
            self.files,
            self.dirs,
            self.symlinks,
            self.uncaptured,
            self.logical_bytes,
            self.added_bytes,
            self.added_blobs,
        )
    }

    fn decode(text: &str) -> Option<Record> {
        let mut lines = text.lines();
        if lines.next()? != Record::HEADER {
            return None;
        }
        let mut field = |name: &str| lines.next()?.strip_prefix(name)?.strip_prefix(' ');
        let tree = ObjectHash::parse_hex(field("tree")?)?;
        let root_mode = u32::from_str_radix(field("root-mode")?, 8).ok().filter(|mode| mode & !0o777 == 0)?;
        let mut number = |name: &str| field(name)?.parse::<u64>().ok();
        let record = Record {
            tree,
            root_mode,
            created_at_ms: number("created-at-ms")?,
            files: number("files")?,
            dirs: number("dirs")?,
            symlinks: number("symlinks")?,
            uncaptured: number("uncaptured")?,
            logical_bytes: number("logical-bytes")?,
            added_bytes: number("added-bytes")?,
            added_blobs: number("added-blobs")?,
        };
        (lines.next().is_none() && record.encode() == text).then_some(record)
    }

    pub(crate) fn checkpoint(&self, id: CheckpointId) -> Checkpoint {
        Checkpoint {
            id,
            created_at_ms: self.created_at_ms,
            files: self.files,
            dirs: self.dirs,
            symlinks: self.symlinks,
            uncaptured: self.uncaptured,
            logical_bytes: self.logical_bytes,
            added_bytes: self.added_bytes,
            added_blobs: self.added_blobs,
        }
    }
}

/// Held for the length of an operation; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct StoreLock(#[allow(dead_code)] OwnedFd);

impl Store {
    /// Opens the store at `root`, creating it if need be. The directory must be empty, or a
    /// store of this version.
    pub fn open(root: &Path) -> Result<Store> {
        std::fs::create_dir_all(root).map_err(|err| write_error(root, err))?;
        let root = root.canonicalize().map_err(|err| read_error(root, err))?;
        let version_path = root.join("VERSION");
        match std::fs::read_to_string(&version_path) {
            Ok(text) if text == VERSION => {}
            Ok(text) => {
                let reason = format!("VERSION says {:?}", text.trim());
                return Err(Error::NotAStore { path: root, reason });
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Store::create_layout(&root)?,
            Err(err) => return Err(read_error(version_path, err)),
        }
        let open = |name: &str| {
            let path = root.join(name);
            fsops::open_root(&path).map_err(|err| read_error(path, err))
        };
        Ok(Store {
            blobs: open("blobs")?,
            trees: open("trees")?,
            records: open("checkpoints")?,
            index: open("index")?,
            tmp: open("tmp")?,
            root,
        })
    }

    fn create_layout(root: &Path) -> Result<()> {
        // Refuse to scatter our directories among somebody else's files.
        let foreign = std::fs::read_dir(root)
            .map_err(|err| read_error(root, err))?
            .filter_map(|entry| entry.ok())
            .find(|entry| {
                let name = entry.file_name();
                !LAYOUT.iter().any(|known| name == *known) && name != "lock"
            });
        if let Some(entry) = foreign {
            let reason = format!("no VERSION file, and it holds {:?}", entry.file_name());
            return Err(Error::NotAStore { path: root.to_owned(), reason });
        }
        for dir in LAYOUT {
            create_dir(&root.join(dir))?;
        }
        // VERSION last, so that a store interrupted while being created is created again.
        let temp = root.join(format!("tmp/VERSION.{}", std::process::id()));
        std::fs::write(&temp, VERSION).map_err(|err| write_error(&temp, err))?;
        let version_path = root.join("VERSION");
        std::fs::rename(&temp, &version_path).map_err(|err| write_error(version_path, err))
    }

    /// The store's directory (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn lock(&self, exclusive: bool) -> Result<StoreLock> {
        // A lock file opened per operation: flock locks belong to the open file, so threads
        // sharing one descriptor would not exclude each other.
        let path = self.root.join("lock");
        let fd = rustix::fs::open(&path, OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC, Mode::from_raw_mode(0o600))
            .map_err(|err| write_error(&path, err))?;
        let operation = if exclusive { FlockOperation::LockExclusive } else { FlockOperation::LockShared };
        rustix::fs::flock(&fd, operation).map_err(|err| write_error(&path, err))?;
        Ok(StoreLock(fd))
    }

    /// Refuses a workspace that contains the store or lies inside it.
    pub(crate) fn check_separate(&self, workspace: &Path) -> Result<()> {
        if self.root.starts_with(workspace) || workspace.starts_with(&self.root) {
            return Err(Error::Overlap { store: self.root.clone(), workspace: workspace.to_owned() });
        }
        Ok(())
    }

    fn dir(&self, kind: Kind) -> (BorrowedFd<'_>, &'static str) {
        match kind {
            Kind::Blob => (self.blobs.as_fd(), "blobs"),
            Kind::Tree => (self.trees.as_fd(), "trees"),
        }
    }

    pub(crate) fn object_path(&self, kind: Kind, hash: &ObjectHash) -> PathBuf {
        self.root.join(self.dir(kind).1).join(hash.fanout_path())
    }

    /// Whether a complete object of that name and size is there. The size check catches the
    /// empty or short files a power loss can leave behind a rename that was never flushed;
    /// such an object is written again.
    fn has_object(&self, kind: Kind, hash: &ObjectHash, size: u64) -> bool {
        let name = c_name(&hash.fanout_path());
        matches!(stat_at(self.dir(kind).0, &name), Ok(Some(meta)) if meta.key.size == size)
    }

    /// A new file in `tmp/`, to be renamed into place or removed.
    fn temp_file(&self) -> Result<(CString, File)> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = c_name(&format!("{}.{n}", std::process::id()));
            let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
            match rustix::fs::openat(&self.tmp, &name, flags, Mode::from_raw_mode(0o600)) {
                Ok(fd) => return Ok((name, File::from(fd))),
                // Left over by an earlier process with our pid: try the next name.
                Err(Errno::EXIST) => continue,
                Err(err) => return Err(write_error(self.tmp_path(&name), err)),
            }
        }
    }

    fn tmp_path(&self, name: &CStr) -> PathBuf {
        self.root.join("tmp").join(std::ffi::OsStr::from_bytes(name.to_bytes()))
    }

    /// Moves a complete temporary file into place as the object `hash`, read-only.
    fn commit_temp(&self, kind: Kind, temp_name: &CStr, temp: File, hash: &ObjectHash) -> Result<()> {
        let path = self.object_path(kind, hash);
        rustix::fs::fchmod(&temp, Mode::from_raw_mode(0o444)).map_err(|err| write_error(&path, err))?;
        drop(temp);
        let fanout_path = hash.fanout_path();
        let name = c_name(&fanout_path);
        let dir = self.dir(kind).0;
        match rustix::fs::renameat(&self.tmp, temp_name, dir, &name) {
            // The fan-out directories are made as needed (a store of a small workspace needs
            // few of them, and every directory costs its removal).
            Err(Errno::NOENT) => {
                match rustix::fs::mkdirat(dir, c_name(&fanout_path[..2]), Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => rustix::fs::renameat(&self.tmp, temp_name, dir, &name),
                    Err(err) => Err(err),
                }
            }
            res => res,
        }
        .map_err(|err| write_error(&path, err))
    }

    fn discard_temp(&self, temp_name: &CStr) {
        // Best effort: a leftover in tmp/ costs space until the next prune, nothing else.
        let _ = rustix::fs::unlinkat(&self.tmp, temp_name, AtFlags::empty());
    }

    /// Stores `bytes` as the object `hash` (their SHA-256) unless it is there; returns the
    /// bytes added.
    pub(crate) fn put_bytes(&self, kind: Kind, hash: &ObjectHash, bytes: &[u8]) -> Result<u64> {
        if self.has_object(kind, hash, bytes.len() as u64) {
            return Ok(0);
        }
        let (temp_name, mut temp) = self.temp_file()?;
        if let Err(err) = temp.write_all(bytes) {
            self.discard_temp(&temp_name);
            return Err(write_error(self.tmp_path(&temp_name), err));
        }
        if let Err(err) = self.commit_temp(kind, &temp_name, temp, hash) {
            self.discard_temp(&temp_name);
            return Err(err);
        }
        Ok(bytes.len() as u64)
    }

    /// Stores what `reader` yields as a blob, hashing while copying, so that the blob is
    /// exactly the bytes hashed even if the source changes meanwhile. Returns the hash, the
    /// size, and the bytes added (0 if the store had it). Read errors are reported at
    /// `source_path`.
    pub(crate) fn put_stream(&self, reader: &mut impl Read, source_path: &Path) -> Result<(ObjectHash, u64, u64)> {
        let (temp_name, mut temp) = self.temp_file()?;
        let res = (|| {
            let mut hasher = Sha256::new();
            let mut buf = vec![0; CHUNK];
            let mut size = 0u64;
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(err) => return Err(read_error(source_path, err)),
                };
                hasher.update(&buf[..n]);
                temp.write_all(&buf[..n]).map_err(|err| write_error(self.tmp_path(&temp_name), err))?;
                size += n as u64;
            }
            Ok((ObjectHash::from_hasher(hasher), size))
        })();
        let (hash, size) = match res {
            Ok(done) => done,
            Err(err) => {
                self.discard_temp(&temp_name);
                return Err(err);
            }
        };
        if self.has_object(Kind::Blob, &hash, size) {
            self.discard_temp(&temp_name);
            return Ok((hash, size, 0));
        }
        if let Err(err) = self.commit_temp(Kind::Blob, &temp_name, temp, &hash) {
            self.discard_temp(&temp_name);
            return Err(err);
        }
        Ok((hash, size, size))
    }

    pub(crate) fn open_blob(&self, hash: &ObjectHash) -> Result<File> {
        let name = c_name(&hash.fanout_path());
        match rustix::fs::openat(&self.blobs, &name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => Ok(File::from(fd)),
            Err(Errno::NOENT) => Err(corrupt(self.object_path(Kind::Blob, hash), "missing blob")),
            Err(err) => Err(read_error(self.object_path(Kind::Blob, hash), err)),
        }
    }

    /// Reads a tree, checking that it hashes to its name and decodes.
    pub(crate) fn read_tree(&self, hash: &ObjectHash) -> Result<Tree> {
        let path = self.object_path(Kind::Tree, hash);
        let name = c_name(&hash.fanout_path());
        let fd = match rustix::fs::openat(&self.trees, &name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Err(corrupt(path, "missing tree")),
            Err(err) => return Err(read_error(path, err)),
        };
        let mut bytes = Vec::new();
        File::from(fd).read_to_end(&mut bytes).map_err(|err| read_error(&path, err))?;
        if ObjectHash::of(&bytes) != *hash {
            return Err(corrupt(path, "content does not match its hash"));
        }
        Tree::decode(&bytes).map_err(|reason| corrupt(path, reason))
    }

    pub(crate) fn write_record(&self, record: &Record) -> Result<CheckpointId> {
        let text = record.encode();
        let id = CheckpointId(ObjectHash::of(text.as_bytes()));
        let path = self.root.join("checkpoints").join(id.to_string());
        let (temp_name, mut temp) = self.temp_file()?;
        let res = temp.write_all(text.as_bytes()).map_err(|err| write_error(&path, err)).and_then(|()| {
            drop(temp);
            rustix::fs::renameat(&self.tmp, &temp_name, &self.records, c_name(&id.to_string()))
                .map_err(|err| write_error(&path, err))
        });
        if res.is_err() {
            self.discard_temp(&temp_name);
        }
        res.map(|()| id)
    }

    pub(crate) fn read_record(&self, id: &CheckpointId) -> Result<Record> {
        let path = self.root.join("checkpoints").join(id.to_string());
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound { id: *id, store: self.root.clone() });
            }
            Err(err) => return Err(read_error(path, err)),
        };
        if ObjectHash::of(&text) != id.0 {
            return Err(corrupt(path, "record does not match its id"));
        }
        std::str::from_utf8(&text).ok().and_then(Record::decode).ok_or_else(|| corrupt(path, "unreadable record"))
    }

    /// The checkpoint `id`, or [`Error::NotFound`].
    pub fn checkpoint(&self, id: &CheckpointId) -> Result<Checkpoint> {
        Ok(self.read_record(id)?.checkpoint(*id))
    }

    /// Every checkpoint of the store, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        let mut checkpoints = Vec::new();
        for id in self.record_ids()? {
            match self.read_record(&id) {
                Ok(record) => checkpoints.push(record.checkpoint(id)),
                // Pruned by another process since it was listed.
                Err(Error::NotFound { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        checkpoints.sort_by_key(|checkpoint| (checkpoint.created_at_ms, checkpoint.id));
        Ok(checkpoints)
    }

    fn record_ids(&self) -> Result<Vec<CheckpointId>> {
        let names = fsops::list(&self.records).map_err(|err| read_error(self.root.join("checkpoints"), err))?;
        Ok(names.iter().filter_map(|name| name.to_str().ok().and_then(|name| CheckpointId::parse(name).ok())).collect())
    }

    fn index_name(workspace: &Path) -> CString {
        c_name(&ObjectHash::of(workspace.as_os_str().as_bytes()).to_string())
    }

    /// The stat cache of `workspace` (a canonical path); empty if there is none, it is
    /// damaged, or it is about another path.
    pub(crate) fn load_cache(&self, workspace: &Path) -> StatCache {
        let empty = || StatCache { workspace: workspace.to_owned(), ..StatCache::default() };
        let Ok(fd) = rustix::fs::openat(
            &self.index,
            Store::index_name(workspace),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            return empty();
        };
        let mut bytes = Vec::new();
        if File::from(fd).read_to_end(&mut bytes).is_err() {
            return empty();
        }
        StatCache::decode(&bytes).filter(|cache| cache.workspace == workspace).unwrap_or_else(empty)
    }

    pub(crate) fn save_cache(&self, cache: &StatCache) -> Result<()> {
        let name = Store::index_name(&cache.workspace);
        let path = self.root.join("index").join(std::ffi::OsStr::from_bytes(name.to_bytes()));
        let (temp_name, mut temp) = self.temp_file()?;
        let res = temp.write_all(&cache.encode()).map_err(|err| write_error(&path, err)).and_then(|()| {
            drop(temp);
            rustix::fs::renameat(&self.tmp, &temp_name, &self.index, &name).map_err(|err| write_error(&path, err))
        });
        if res.is_err() {
            self.discard_temp(&temp_name);
        }
        res
    }

    /// Collects the trees and blobs reachable from `root`, skipping trees already in `trees`
    /// (shared subtrees are walked once). Returns the bytes of the objects newly collected.
    pub(crate) fn mark(
        &self,
        root: ObjectHash,
        trees: &mut HashSet<ObjectHash>,
        blobs: &mut HashSet<ObjectHash>,
    ) -> Result<u64> {
        let mut bytes = 0;
        let mut pending = vec![root];
        while let Some(hash) = pending.pop() {
            if !trees.insert(hash) {
                continue;
            }
            let tree = self.read_tree(&hash)?;
            bytes += tree.encode().len() as u64;
            for entry in tree.entries {
                match entry.node {
                    Node::Dir { tree, .. } => pending.push(tree),
                    Node::File { blob, size, .. } => {
                        if blobs.insert(blob) {
                            bytes += size;
                        }
                    }
                    Node::Symlink { .. } | Node::Uncaptured { .. } => {}
                }
            }
        }
        Ok(bytes)
    }

    /// Deletes every checkpoint not in `keep`, then every tree and blob that no kept checkpoint
    /// references, leftovers in `tmp/`, and the stat caches' entries for deleted blobs (and
    /// the caches of workspaces that no longer exist). Nothing is deleted if a kept checkpoint
    /// is unknown or damaged. With a store shared between executions, `keep` must name the
    /// checkpoints of all of them.
    pub fn prune(&self, keep: &[CheckpointId]) -> Result<PruneReport> {
        let _lock = self.lock(true)?;
        let mut live_trees = HashSet::new();
        let mut live_blobs = HashSet::new();
        for id in keep {
            let record = self.read_record(id)?;
            self.mark(record.tree, &mut live_trees, &mut live_blobs)?;
        }
        let keep: HashSet<CheckpointId> = keep.iter().copied().collect();
        let mut report = PruneReport::default();
        for id in self.record_ids()? {
            if !keep.contains(&id) {
                let name = c_name(&id.to_string());
                rustix::fs::unlinkat(&self.records, &name, AtFlags::empty())
                    .map_err(|err| remove_error(self.root.join("checkpoints").join(id.to_string()), err))?;
                report.checkpoints += 1;
            }
        }
        for (kind, live) in [(Kind::Tree, &live_trees), (Kind::Blob, &live_blobs)] {
            let (removed, freed) = self.sweep(kind, live)?;
            match kind {
                Kind::Tree => report.trees = removed,
                Kind::Blob => report.blobs = removed,
            }
            report.freed_bytes += freed;
        }
        // Under the exclusive lock nobody is writing, so anything in tmp/ is a leftover.
        for name in fsops::list(&self.tmp).map_err(|err| read_error(self.root.join("tmp"), err))? {
            match rustix::fs::unlinkat(&self.tmp, &name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(err) => return Err(remove_error(self.tmp_path(&name), err)),
            }
        }
        self.prune_caches(&live_blobs)?;
        Ok(report)
    }

    fn sweep(&self, kind: Kind, live: &HashSet<ObjectHash>) -> Result<(u64, u64)> {
        let (dir, dir_name) = self.dir(kind);
        let (mut removed, mut freed) = (0, 0);
        for byte in 0..=255u8 {
            let fanout = format!("{byte:02x}");
            let path = self.root.join(dir_name).join(&fanout);
            let sub = match fsops::open_dir(dir, &c_name(&fanout)) {
                Ok(sub) => sub,
                Err(Errno::NOENT) => continue,
                Err(err) => return Err(read_error(&path, err)),
            };
            for name in fsops::list(&sub).map_err(|err| read_error(&path, err))? {
                let hash = name.to_str().ok().and_then(|rest| ObjectHash::parse_hex(&format!("{fanout}{rest}")));
                if hash.is_some_and(|hash| live.contains(&hash)) {
                    continue;
                }
                let size = stat_at(&sub, &name).ok().flatten().map_or(0, |meta| meta.key.size);
                match rustix::fs::unlinkat(&sub, &name, AtFlags::empty()) {
                    Ok(()) => {
                        removed += 1;
                        freed += size;
                    }
                    Err(Errno::NOENT) => {}
                    Err(err) => return Err(remove_error(path.join(std::ffi::OsStr::from_bytes(name.to_bytes())), err)),
                }
            }
        }
        Ok((removed, freed))
    }

    /// A stat cache must not vouch for a blob the store no longer has: the next snapshot would
    /// name it without writing it.
    fn prune_caches(&self, live_blobs: &HashSet<ObjectHash>) -> Result<()> {
        for name in fsops::list(&self.index).map_err(|err| read_error(self.root.join("index"), err))? {
            let path = self.root.join("index").join(std::ffi::OsStr::from_bytes(name.to_bytes()));
            let bytes = std::fs::read(&path).map_err(|err| read_error(&path, err))?;
            match StatCache::decode(&bytes) {
                Some(mut cache) if cache.workspace.is_dir() => {
                    let before = cache.entries.len();
                    cache.entries.retain(|_, entry| live_blobs.contains(&entry.blob));
                    if cache.entries.len() != before {
                        self.save_cache(&cache)?;
                    }
                }
                _ => std::fs::remove_file(&path).map_err(|err| remove_error(&path, err))?,
            }
        }
        Ok(())
    }

    /// Counts what the store holds.
    pub fn usage(&self) -> Result<StoreUsage> {
        let mut usage = StoreUsage { checkpoints: self.record_ids()?.len() as u64, ..StoreUsage::default() };
        for kind in [Kind::Blob, Kind::Tree] {
            let (dir, dir_name) = self.dir(kind);
            for byte in 0..=255u8 {
                let fanout = format!("{byte:02x}");
                let path = self.root.join(dir_name).join(&fanout);
                let sub = match fsops::open_dir(dir, &c_name(&fanout)) {
                    Ok(sub) => sub,
                    Err(Errno::NOENT) => continue,
                    Err(err) => return Err(read_error(&path, err)),
                };
                for name in fsops::list(&sub).map_err(|err| read_error(&path, err))? {
                    let size = stat_at(&sub, &name).ok().flatten().map_or(0, |meta| meta.key.size);
                    match kind {
                        Kind::Blob => (usage.blobs, usage.blob_bytes) = (usage.blobs + 1, usage.blob_bytes + size),
                        Kind::Tree => (usage.trees, usage.tree_bytes) = (usage.trees + 1, usage.tree_bytes + size),
                    }
                }
            }
        }
        for name in fsops::list(&self.index).map_err(|err| read_error(self.root.join("index"), err))? {
            usage.index_bytes += stat_at(&self.index, &name).ok().flatten().map_or(0, |meta| meta.key.size);
        }
        Ok(usage)
    }

    /// The bytes of content (blobs and trees, each counted once) that the checkpoints `ids`
    /// hold together: what the store would keep of them after a prune to exactly these.
    pub fn retained_bytes(&self, ids: &[CheckpointId]) -> Result<u64> {
        let (mut trees, mut blobs) = (HashSet::new(), HashSet::new());
        let mut bytes = 0;
        for id in ids {
            bytes += self.mark(self.read_record(id)?.tree, &mut trees, &mut blobs)?;
        }
        Ok(bytes)
    }

    /// Reads every object of the checkpoint back and checks it against its hash: a full
    /// integrity check (a restore checks trees and blob sizes only, to stay fast).
    pub fn verify(&self, id: &CheckpointId) -> Result<()> {
        let record = self.read_record(id)?;
        let (mut trees, mut blobs) = (HashSet::new(), HashSet::new());
        self.mark(record.tree, &mut trees, &mut blobs)?;
        let mut buf = vec![0; CHUNK];
        for blob in blobs {
            let path = self.object_path(Kind::Blob, &blob);
            let mut file = self.open_blob(&blob)?;
            let mut hasher = Sha256::new();
            loop {
                let n = file.read(&mut buf).map_err(|err| read_error(&path, err))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            if ObjectHash::from_hasher(hasher) != blob {
                return Err(corrupt(path, "content does not match its hash"));
            }
        }
        Ok(())
    }
}

fn create_dir(path: &Path) -> Result<()> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(write_error(path, err)),
    }
}

/// Our own object and file names never hold NUL.
pub(crate) fn c_name(name: &str) -> CString {
    CString::new(name).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            tree: ObjectHash::of(b"tree"),
            root_mode: 0o755,
            created_at_ms: 1_764_000_000_000,
            files: 3,
            dirs: 2,
            symlinks: 1,
            uncaptured: 0,
            logical_bytes: 1234,
            added_bytes: 99,
            added_blobs: 1,
        }
    }

    #[test]
    fn records_round_trip_and_refuse_anything_else() {
        let text = record().encode();
        assert_eq!(Record::decode(&text), Some(record()));
        assert_eq!(Record::decode(&text.replace("root-mode 755", "root-mode 4755")), None);
        assert_eq!(Record::decode(&text.replace("files 3", "files 03")), None);
        assert_eq!(Record::decode(&format!("{text}extra 1\n")), None);
        assert_eq!(Record::decode(&text[..text.len() - 1]), None);
    }

    #[test]
    fn a_directory_with_other_files_is_not_taken_for_a_store() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("precious.txt"), "x").unwrap();
        assert!(matches!(Store::open(dir.path()), Err(Error::NotAStore { .. })));
        assert!(dir.path().join("precious.txt").exists());
    }

    #[test]
    fn objects_are_written_once_and_a_truncated_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let hash = ObjectHash::of(b"content");
        assert_eq!(store.put_bytes(Kind::Blob, &hash, b"content").unwrap(), 7);
        assert_eq!(store.put_bytes(Kind::Blob, &hash, b"content").unwrap(), 0);
        // What a power loss after an unflushed rename can leave: the name, no content.
        let path = store.object_path(Kind::Blob, &hash);
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"").unwrap();
        assert_eq!(store.put_bytes(Kind::Blob, &hash, b"content").unwrap(), 7);
        assert_eq!(std::fs::read(&path).unwrap(), b"content");
        assert!(std::fs::metadata(&path).unwrap().permissions().readonly());
        assert_eq!(fsops::list(&store.tmp).unwrap(), Vec::<CString>::new());
    }
}
