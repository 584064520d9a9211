//! Master key files: one line of base64, readable by their owner only.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use zeroize::Zeroizing;

use crate::{Error, MasterKey, Result};

/// A key file is a line of base64; anything much larger is not one.
const MAX_KEY_FILE_BYTES: u64 = 1024;

fn key_file_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::KeyFile { path: path.to_owned(), reason: reason.into() }
}

/// Reads a master key file. Refused unless it is a regular file that no
/// other user can read or write (mode 0600 or stricter).
pub fn read_key_file(path: &Path) -> Result<MasterKey> {
    let file = File::open(path).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => key_file_error(path, "does not exist"),
        _ => key_file_error(path, format!("cannot be opened: {err}")),
    })?;
    // The checks look at the file opened, not at whatever the path names now.
    let metadata = file.metadata().map_err(|err| key_file_error(path, format!("cannot be read: {err}")))?;
    if !metadata.is_file() {
        return Err(key_file_error(path, "is not a regular file"));
    }
    let mode = metadata.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Error::KeyFileMode { path: path.to_owned(), mode });
    }
    if metadata.len() > MAX_KEY_FILE_BYTES {
        return Err(key_file_error(path, format!("is {} bytes; a key file is one line of base64", metadata.len())));
    }
    let mut text = Zeroizing::new(String::new());
    file.take(MAX_KEY_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(|err| key_file_error(path, format!("cannot be read: {err}")))?;
    MasterKey::from_base64(&text).map_err(|err| key_file_error(path, err.to_string()))
}

/// Writes `key` to a new key file at `path` (mode 0600) unless a file is
/// there already; answers whether it wrote one. The key is written to a
/// private temporary file first and linked into place, which fails if the
/// name exists: two processes starting at once cannot both create a key,
/// and nobody ever reads a half-written one.
pub fn create_key_file(path: &Path, key: &MasterKey) -> Result<bool> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let file_name = path.file_name().ok_or_else(|| key_file_error(path, "is not a file path"))?;
    let staging = dir.join(format!(
        ".{}.{}-{}.tmp",
        file_name.to_string_lossy(),
        std::process::id(),
        &MasterKey::generate()?.id()[..8]
    ));
    let written = (|| -> std::io::Result<()> {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&staging)?;
        let mut line = Zeroizing::new(key.to_base64().to_string());
        line.push('\n');
        file.write_all(line.as_bytes())?;
        file.sync_all()
    })();
    if let Err(err) = written {
        let _ = std::fs::remove_file(&staging);
        return Err(key_file_error(path, format!("cannot be written in {}: {err}", dir.display())));
    }
    let linked = std::fs::hard_link(&staging, path);
    let _ = std::fs::remove_file(&staging);
    match linked {
        Ok(()) => {
            sync_dir(dir).map_err(|err| key_file_error(path, format!("cannot be made durable: {err}")))?;
            Ok(true)
        }
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(err) => Err(key_file_error(path, format!("cannot be created: {err}"))),
    }
}

/// Makes a directory's entries (a new or renamed file) durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_new_key_file_is_private_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let key = MasterKey::generate().unwrap();
        assert!(create_key_file(&path, &key).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_key_file(&path).unwrap().id(), key.id());
        // No staging file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // An existing file is never replaced.
        let other = MasterKey::generate().unwrap();
        assert!(!create_key_file(&path, &other).unwrap());
        assert_eq!(read_key_file(&path).unwrap().id(), key.id());
    }

    #[test]
    fn readable_key_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        create_key_file(&path, &MasterKey::generate().unwrap()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = read_key_file(&path).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "master key file {} can be read or written by other users (mode 640); make it private with `chmod 600 {}`",
                path.display(),
                path.display()
            )
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(read_key_file(&path).is_ok());
    }

    #[test]
    fn bad_key_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.key");
        assert_eq!(
            read_key_file(&missing).unwrap_err().to_string(),
            format!("master key file {}: does not exist", missing.display())
        );
        let garbage = dir.path().join("garbage.key");
        std::fs::write(&garbage, "hello\n").unwrap();
        std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = read_key_file(&garbage).unwrap_err().to_string();
        assert!(err.contains("expected 32 bytes in base64"), "{err}");
        let err = read_key_file(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is not a regular file") || err.contains("mode"), "{err}");
        let no_dir = dir.path().join("missing/master.key");
        let err = create_key_file(&no_dir, &MasterKey::generate().unwrap()).unwrap_err().to_string();
        assert!(err.contains("cannot be written"), "{err}");
    }
}
