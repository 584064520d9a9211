use std::io;
use std::path::PathBuf;

use crate::CheckpointId;

/// Everything that can go wrong with a checkpoint; each variant names the path (or the
/// checkpoint) it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file, directory or link of the workspace or the store could not be read or listed.
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// A file, directory or link could not be created, written, renamed or changed.
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    /// Something that had to go (a path absent from the checkpoint, a pruned object) could
    /// not be removed.
    #[error("cannot remove {}: {source}", path.display())]
    Remove { path: PathBuf, source: io::Error },
    /// The store holds no checkpoint by this id (never taken, or pruned).
    #[error("checkpoint {id} not found in the store at {}", store.display())]
    NotFound { id: CheckpointId, store: PathBuf },
    /// An object of the store is missing, truncated or does not hash to its name.
    #[error("corrupt checkpoint store: {}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// The text is not a checkpoint id (64 lowercase hexadecimal digits).
    #[error("invalid checkpoint id {id:?}: expected 64 hexadecimal digits")]
    InvalidId { id: String },
    /// The store and the workspace overlap: snapshotting would copy the store into itself, and
    /// restoring would delete it.
    #[error("the checkpoint store {} and the workspace {} must not contain each other", store.display(), workspace.display())]
    Overlap { store: PathBuf, workspace: PathBuf },
    /// A fork is restored into a new (or empty) directory only.
    #[error("cannot restore into {}: it exists and is not empty", path.display())]
    NotEmpty { path: PathBuf },
    /// The directory holds something else than a checkpoint store of this version.
    #[error("{} is not a checkpoint store of this version: {reason}", path.display())]
    NotAStore { path: PathBuf, reason: String },
}

/// The crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn read_error(path: impl Into<PathBuf>, source: impl Into<io::Error>) -> Error {
    Error::Read { path: path.into(), source: source.into() }
}

pub(crate) fn write_error(path: impl Into<PathBuf>, source: impl Into<io::Error>) -> Error {
    Error::Write { path: path.into(), source: source.into() }
}

pub(crate) fn remove_error(path: impl Into<PathBuf>, source: impl Into<io::Error>) -> Error {
    Error::Remove { path: path.into(), source: source.into() }
}

pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Error {
    Error::Corrupt { path: path.into(), reason: reason.into() }
}
