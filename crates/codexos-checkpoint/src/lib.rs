//! Checkpoints of agent workspaces: snapshots of a directory into a content-addressed store
//! outside it, restored exactly (rollback) or into a new directory (fork).
//!
//! This crate owns the store's format and every file system access that checkpoints make; it
//! depends on nothing else of ours, speaks no SQL and runs no async code (the engine calls it
//! from `spawn_blocking`). docs/checkpoints.md is the longer story; in short:
//!
//! - **What a checkpoint is.** Git's model without git: file contents are *blobs* named by
//!   their SHA-256; each directory is a *tree* object listing its entries (name as bytes,
//!   kind, permission bits, size and blob, or link target, or subtree); a checkpoint *record*
//!   names the root tree, the time and the sizes, and its id is the record's SHA-256. Objects
//!   are shared by every checkpoint of the store, so a checkpoint after a one-file change adds
//!   one blob and the trees on the path to it. Empty directories are trees like the others.
//! - **Hash.** SHA-256 (`sha2`, already ours for API keys): a strong hash, so equal names mean
//!   equal contents, and fast where it matters (SHA-NI on current x86 and ARMv8 cores; and the
//!   stat cache means only changed files are hashed at all). BLAKE3 would hash faster on one
//!   core but adds a C/assembly dependency for a cost that the stat cache already removes.
//! - **`.git` is ordinary content.** A snapshot reads the workspace's `.git` like any other
//!   directory (never writing it, never running git), and a rollback restores it like any
//!   other: an agent that ran `git commit` or `git checkout` is undone with the rest, which is
//!   what "the workspace as the agent found it" means. Our own store is never in the
//!   workspace, so the user's history, branches and index hold nothing of ours.
//! - **Stat cache.** As git's index: per workspace, in the store, the `stat` (device, inode,
//!   mode, size, mtime, ctime, all in nanoseconds) each file had when it was hashed; a snapshot
//!   reads only the files whose `stat` changed. Racy timestamps are handled by trusting an
//!   entry only if the file's times were older than the walk that hashed it by two seconds
//!   (see `stat_cache.rs`).
//! - **Safety.** Walks and restores go through directory descriptors opened with `O_NOFOLLOW`:
//!   links are stored and recreated as links, never followed, so a restore cannot write or
//!   delete outside the workspace even when a link to elsewhere is planted in it. Files are
//!   written to a temporary name and renamed into place; blobs are never linked into a
//!   workspace, so a fork cannot write into the store.
//! - **What is not kept.** Owners, timestamps, extended attributes and ACLs, and the
//!   set-user-id, set-group-id and sticky bits (a rollback by the worker must not mint set-id
//!   programs). Sockets, FIFOs and devices are kept as placeholders: reported, left alone by a
//!   restore, never recreated.

mod error;
mod fsops;
mod hash;
mod restore;
mod retention;
mod snapshot;
mod stat_cache;
mod store;
mod tree;

use std::path::Path;

pub use error::{Error, Result};
pub use hash::CheckpointId;
pub use restore::RestoreReport;
pub use retention::Retention;
pub use snapshot::{Skipped, Snapshot};
pub use store::{Checkpoint, PruneReport, Store, StoreUsage};
pub use tree::SkipReason;

impl Store {
    /// Takes a checkpoint of `workspace` (which must not contain the store, nor lie in it).
    ///
    /// Unreadable files, sockets, FIFOs and devices are kept as placeholders and listed in
    /// [`Snapshot::skipped`], as are entries that vanished or changed type during the walk
    /// (those are left out). Only files whose `stat` changed since the previous snapshot of the
    /// same workspace into this store are read.
    pub fn snapshot(&self, workspace: &Path) -> Result<Snapshot> {
        snapshot::take(self, workspace, None)
    }

    /// Makes the existing directory `workspace` exactly the checkpoint `id`: removes what the
    /// checkpoint lacks, rewrites files whose content differs, recreates links, sets permission
    /// bits; files already identical are left as they are. Never follows a link inside the
    /// workspace, so it writes and deletes nothing outside it.
    pub fn restore(&self, id: &CheckpointId, workspace: &Path) -> Result<RestoreReport> {
        restore::restore(self, id, workspace)
    }

    /// Restores the checkpoint `id` into `new_dir` (created if missing; it must be empty): the
    /// workspace of a fork. The copy is independent of the store: writing it cannot change a
    /// checkpoint.
    pub fn restore_into(&self, id: &CheckpointId, new_dir: &Path) -> Result<RestoreReport> {
        restore::restore_into(self, id, new_dir)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// The walk lists a directory, then looks at each name: whatever disappears in between is
    /// reported and left out, and the snapshot still succeeds and restores.
    #[test]
    fn entries_vanishing_during_the_walk_are_reported_not_fatal() {
        let store_dir = tempfile::tempdir().unwrap();
        let workspace = tempfile::tempdir().unwrap();
        let ws = workspace.path();
        std::fs::write(ws.join("stays"), "kept").unwrap();
        std::fs::write(ws.join("file"), "gone soon").unwrap();
        std::fs::create_dir_all(ws.join("dir/sub")).unwrap();
        std::fs::write(ws.join("dir/sub/deep"), "gone too").unwrap();
        symlink("stays", ws.join("link")).unwrap();
        std::fs::create_dir(ws.join("becomes-file")).unwrap();
        let store = Store::open(store_dir.path()).unwrap();

        let canonical = ws.canonicalize().unwrap();
        let pull_away = |dir: &Path| {
            if dir == canonical {
                std::fs::remove_file(dir.join("file")).unwrap();
                std::fs::remove_dir_all(dir.join("dir")).unwrap();
                std::fs::remove_file(dir.join("link")).unwrap();
                std::fs::remove_dir(dir.join("becomes-file")).unwrap();
                std::fs::write(dir.join("becomes-file"), "now a file").unwrap();
            }
        };
        let snapshot = snapshot::take(&store, ws, Some(&pull_away)).unwrap();

        let mut skipped: Vec<_> =
            snapshot.skipped.iter().map(|skipped| (skipped.path.clone(), skipped.reason)).collect();
        skipped.sort();
        assert_eq!(
            skipped,
            [
                ("dir".into(), SkipReason::Vanished),
                ("file".into(), SkipReason::Vanished),
                ("link".into(), SkipReason::Vanished),
            ]
        );
        assert_eq!(snapshot.checkpoint.files, 2, "stays, and becomes-file as the file it became");
        let fork = tempfile::tempdir().unwrap();
        store.restore_into(&snapshot.checkpoint.id, &fork.path().join("ws")).unwrap();
        assert_eq!(std::fs::read_to_string(fork.path().join("ws/becomes-file")).unwrap(), "now a file");
        assert_eq!(std::fs::read_to_string(fork.path().join("ws/stays")).unwrap(), "kept");
        assert!(!fork.path().join("ws/dir").exists());
    }
}
