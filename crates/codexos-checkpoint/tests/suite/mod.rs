//! Shared helpers: a store and a workspace in temporary directories, and a full walk of a tree
//! to compare before and after.

mod dedup;
mod fork;
mod git;
mod props;
mod prune;
mod restore;
mod safety;
mod special;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use codexos_checkpoint::Store;
use tempfile::TempDir;

/// A store and a workspace, each in its own temporary directory.
pub struct Fixture {
    _store_dir: TempDir,
    workspace_dir: TempDir,
    pub store: Store,
}

impl Fixture {
    pub fn new() -> Fixture {
        let store_dir = tempfile::tempdir().unwrap();
        let workspace_dir = tempfile::tempdir().unwrap();
        let store = Store::open(&store_dir.path().join("store")).unwrap();
        Fixture { _store_dir: store_dir, workspace_dir, store }
    }

    pub fn ws(&self) -> &Path {
        self.workspace_dir.path()
    }
}

/// One entry of a tree as a person would check it: kind, permission bits, content or target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Dir { mode: u32 },
    File { mode: u32, content: Vec<u8> },
    Symlink { target: PathBuf },
    Other,
}

/// Every path under `root` (the root itself as ""), never following a link.
pub fn walk(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    walk_into(root, Path::new(""), &mut out);
    out
}

fn walk_into(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
    let path = root.join(rel);
    let meta = std::fs::symlink_metadata(&path).unwrap();
    let mode = meta.permissions().mode() & 0o7777;
    let entry = if meta.file_type().is_symlink() {
        Entry::Symlink { target: std::fs::read_link(&path).unwrap() }
    } else if meta.is_dir() {
        for child in std::fs::read_dir(&path).unwrap() {
            walk_into(root, &rel.join(child.unwrap().file_name()), out);
        }
        Entry::Dir { mode }
    } else if meta.is_file() {
        Entry::File { mode, content: std::fs::read(&path).unwrap() }
    } else {
        Entry::Other
    };
    out.insert(rel.to_owned(), entry);
}

pub fn write(path: &Path, content: impl AsRef<[u8]>) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, content).unwrap();
}

pub fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A name that is not UTF-8.
pub fn non_utf8(prefix: &str) -> PathBuf {
    let mut bytes = prefix.as_bytes().to_vec();
    bytes.extend_from_slice(b"-\xff\xfe");
    PathBuf::from(OsStr::from_bytes(&bytes))
}

/// Waits until files written before now count as settled for the stat cache (their
/// timestamps must be two seconds older than the snapshot that hashes them).
pub fn let_timestamps_settle() {
    std::thread::sleep(std::time::Duration::from_millis(2100));
}
