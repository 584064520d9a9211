use std::path::PathBuf;

/// Everything that can go wrong in this crate. Messages never quote a private key.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("index {index} is out of range for a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("old size {old_size} is larger than the tree's size {size}")]
    SizeOutOfRange { old_size: u64, size: u64 },
    #[error("the proof does not verify: {0}")]
    BadProof(&'static str),
    #[error("invalid frontier text: {0}")]
    BadFrontier(&'static str),
    #[error("invalid key name {name:?}: {reason}")]
    BadKeyName { name: String, reason: &'static str },
    #[error("invalid verifier key {text:?}: {reason}")]
    BadVerifierKey { text: String, reason: &'static str },
    /// The text of a private key is never echoed: only what is wrong with it.
    #[error("invalid signing key: {0}")]
    BadSigningKey(&'static str),
    #[error("invalid signed note: {0}")]
    BadNote(&'static str),
    #[error("the note's signature by {name}+{id:08x} does not verify")]
    BadSignature { name: String, id: u32 },
    #[error("the note has no signature by {name}+{id:08x}")]
    NoSignature { name: String, id: u32 },
    #[error("invalid checkpoint body: {0}")]
    BadCheckpoint(&'static str),
    #[error(
        "key file {} is readable or writable by group or others (mode {mode:o}): refusing to use it; \
         make it private with `chmod 600`",
        path.display()
    )]
    KeyFilePermissions { path: PathBuf, mode: u32 },
    #[error("key file {} is not a regular file", path.display())]
    KeyFileNotRegular { path: PathBuf },
    #[error("key file {} holds the key {found:?}, not {expected:?}", path.display())]
    KeyNameMismatch { path: PathBuf, found: String, expected: String },
    #[error("key file {}: {source}", path.display())]
    KeyFile { path: PathBuf, source: Box<AuditError> },
    #[error("key file {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
}

pub type Result<T, E = AuditError> = std::result::Result<T, E>;
