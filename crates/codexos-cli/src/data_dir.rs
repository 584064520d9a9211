//! The data directory: where `codexos up` keeps its database, and where it
//! leaves `url` and `owner.key` for other commands and scripts to find.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

pub const URL_FILE: &str = "url";
pub const OWNER_KEY_FILE: &str = "owner.key";
const LOCK_FILE: &str = "lock";
/// How long a start waits for the data directory's lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The data directory, created (mode 0700) and checked writable. With
/// `Lock::Exclusive` a lock is held for as long as this value lives: two
/// platforms on one embedded database would fight over it.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: Option<File>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    Exclusive,
    /// Several API servers may share a directory (their database is elsewhere).
    Shared,
}

impl DataDir {
    pub fn open(path: &Path, lock_mode: Lock) -> anyhow::Result<Self> {
        if path.exists() && !path.is_dir() {
            bail!("data directory {} exists and is not a directory", path.display());
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .with_context(|| format!("cannot create data directory {}", path.display()))?;
        let lock_path = path.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|err| anyhow::anyhow!("data directory {} is not writable: {err}", path.display()))?;
        if lock_mode == Lock::Shared {
            return Ok(Self { path: path.to_owned(), _lock: None });
        }
        // A process that was just killed may hold the lock a moment longer
        // (its sandboxes die with it, a little after): wait briefly before
        // calling the directory busy.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    bail!("data directory {} is in use by another codexos process", path.display())
                }
                Err(std::fs::TryLockError::Error(err)) => {
                    bail!("cannot lock data directory {}: {err}", path.display())
                }
            }
        }
        Ok(Self { path: path.to_owned(), _lock: Some(lock) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Publishes the bound URL; replaced atomically so a reader never sees half.
    pub fn write_url(&self, url: &str) -> anyhow::Result<()> {
        write_private(&self.path.join(URL_FILE), &format!("{url}\n"))
    }

    pub fn remove_url(&self) {
        let _ = std::fs::remove_file(self.path.join(URL_FILE));
    }

    /// Saves the owner key readable by this user only (0600).
    pub fn write_owner_key(&self, key: &str) -> anyhow::Result<()> {
        write_private(&self.path.join(OWNER_KEY_FILE), &format!("{key}\n"))
    }
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let staging = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&staging)
        .with_context(|| format!("cannot write {}", staging.display()))?;
    // The mode above only applies when the file is new.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&staging, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Reads a file `codexos up` left in the data directory, trimmed.
pub fn read_published(data_dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(data_dir.join(name)).ok().map(|text| text.trim().to_owned()).filter(|text| !text.is_empty())
}
