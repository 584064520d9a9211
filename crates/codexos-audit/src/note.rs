//! Checkpoints: a tree head in the tlog-checkpoint text form, signed as a signed note with
//! Ed25519, and the keys that sign and verify them.
//!
//! A signed checkpoint looks like this (the key's name may differ from the origin):
//!
//! ```text
//! codexos.example/audit/acme
//! 20
//! 3q2+7w...base64 of the 32-byte root...=
//! time 1700000000000
//!
//! — codexos.example/audit Az3grl...base64 of (4-byte key id || 64-byte signature)...
//! ```

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer, VerifyingKey};
use rand::TryRngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{AuditError, Result};
use crate::tree::{Hash, parse_decimal_u64};

/// The signed-note signature type of Ed25519.
const ED25519: u8 = 0x01;

/// Where a signature line starts: an em dash and a space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// The text form of a private key opens with this, as signed-note tools write them.
const PRIVATE_KEY_PREFIX: &str = "PRIVATE+KEY+";

/// More signature lines than anyone sends us is a note to refuse (the format asks verifiers to
/// accept at least 16).
const MAX_SIGNATURES: usize = 64;

/// The largest key file read, in bytes (a key is about 100).
const MAX_KEY_FILE: u64 = 1024;

/// A tree head at a size, as signed: the tlog-checkpoint body with one extension line, the
/// time it was signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Names the log (one per tenant): a single line without control characters. A note with
    /// another origin is not this log's, whoever signed it.
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// Unix milliseconds.
    pub time_ms: i64,
}

impl Checkpoint {
    /// The note text: origin, size in decimal, base64 root, `time <unix millis>`, each ending
    /// in a newline.
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\ntime {}\n", self.origin, self.size, BASE64.encode(self.root), self.time_ms)
    }

    /// Parses a body strictly: exactly those four lines, each number in its one canonical form.
    fn parse(text: &str) -> Result<Self> {
        let text = text.strip_suffix('\n').ok_or(AuditError::BadCheckpoint("the body does not end in a newline"))?;
        let lines: Vec<&str> = text.split('\n').collect();
        let [origin, size, root, time] = lines[..] else {
            return Err(AuditError::BadCheckpoint("the body is not four lines: origin, size, root, time"));
        };
        if origin.is_empty() {
            return Err(AuditError::BadCheckpoint("the origin is empty"));
        }
        let size = parse_decimal_u64(size).ok_or(AuditError::BadCheckpoint("the size is not a canonical decimal"))?;
        let root = BASE64
            .decode(root)
            .ok()
            .and_then(|bytes| Hash::try_from(bytes).ok())
            .ok_or(AuditError::BadCheckpoint("the root is not the base64 of 32 bytes"))?;
        let time_ms = time
            .strip_prefix("time ")
            .and_then(parse_decimal_i64)
            .ok_or(AuditError::BadCheckpoint("the last line is not `time <unix millis>`"))?;
        Ok(Self { origin: origin.to_string(), size, root, time_ms })
    }
}

fn parse_decimal_i64(text: &str) -> Option<i64> {
    match text.strip_prefix('-') {
        Some("0") => None,
        Some(magnitude) => parse_decimal_u64(magnitude).and_then(|_| text.parse().ok()),
        None => parse_decimal_u64(text).and_then(|n| i64::try_from(n).ok()),
    }
}

/// The key id of the signed-note format: the first 4 bytes, big-endian, of
/// SHA-256(name || 0x0A || 0x01 || 32-byte public key).
fn key_id(name: &str, key: &VerifyingKey) -> u32 {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([b'\n', ED25519]);
    hasher.update(key.as_bytes());
    let digest = hasher.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Key names are non-empty, without Unicode spaces or `+` (the format's rule), and without
/// control characters (they would break the note's lines).
fn check_key_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.chars().any(char::is_whitespace) {
        "it contains a space"
    } else if name.contains('+') {
        "it contains '+'"
    } else if name.chars().any(char::is_control) {
        "it contains a control character"
    } else {
        return Ok(());
    };
    Err(AuditError::BadKeyName { name: name.to_string(), reason })
}

/// The private key that signs checkpoints, with its name. Its `Debug` shows the name and key
/// id only, and the secret is wiped from memory when it is dropped.
pub struct SigningKey {
    name: String,
    id: u32,
    key: ed25519_dalek::SigningKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("name", &self.name)
            .field("id", &format_args!("{:08x}", self.id))
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new key from the operating system's random number generator.
    pub fn generate(name: &str) -> Result<Self> {
        check_key_name(name)?;
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.try_fill_bytes(seed.as_mut()).map_err(|err| AuditError::Random(err.to_string()))?;
        Ok(Self::from_seed(name, &seed))
    }

    fn from_seed(name: &str, seed: &[u8; 32]) -> Self {
        let key = ed25519_dalek::SigningKey::from_bytes(seed);
        let id = key_id(name, &key.verifying_key());
        Self { name: name.to_string(), id, key }
    }

    /// Loads the key in `path`, or creates it there if there is no file yet.
    ///
    /// A new key is written to a temporary file created with mode 0600 (never readable by
    /// anyone else, not even for a moment) and then linked to `path` only if `path` still does
    /// not exist: a reader never sees a half-written key, and of two processes starting at once
    /// one creates the key and both use it. An existing file that the group or others may read
    /// or write is refused, as is a key of another name.
    pub fn load_or_create(path: &Path, name: &str) -> Result<Self> {
        check_key_name(name)?;
        match Self::load(path, name) {
            Err(AuditError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            loaded => return loaded,
        }
        let key = Self::generate(name)?;
        let io_error = |source| AuditError::Io { path: path.to_path_buf(), source };
        let file_name = path.file_name().ok_or_else(|| io_error(std::io::ErrorKind::InvalidInput.into()))?;
        let mut suffix = [0u8; 8];
        rand::rngs::OsRng.try_fill_bytes(&mut suffix).map_err(|err| AuditError::Random(err.to_string()))?;
        let temporary = path.with_file_name(format!(".{}.{}.tmp", file_name.to_string_lossy(), hex::encode(suffix)));
        let linked =
            OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary).and_then(|mut file| {
                file.write_all(key.to_text().as_bytes())?;
                file.sync_all()?;
                std::fs::hard_link(&temporary, path)
            });
        // The temporary name goes whatever happened; `path` keeps the key if the link was made.
        let _ = std::fs::remove_file(&temporary);
        match linked {
            Ok(()) => Ok(key),
            // Another process created it since we looked: theirs is the key.
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Self::load(path, name),
            Err(err) => Err(io_error(err)),
        }
    }

    fn load(path: &Path, name: &str) -> Result<Self> {
        let io_error = |source| AuditError::Io { path: path.to_path_buf(), source };
        let mut file = File::open(path).map_err(io_error)?;
        // The checks read the opened file's metadata, so they are about the file that is read.
        let metadata = file.metadata().map_err(io_error)?;
        if !metadata.is_file() {
            return Err(AuditError::KeyFileNotRegular { path: path.to_path_buf() });
        }
        let mode = metadata.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(AuditError::KeyFilePermissions { path: path.to_path_buf(), mode });
        }
        // A key file is a line; anything much longer is not one, and is not read.
        if metadata.len() > MAX_KEY_FILE {
            let source = Box::new(AuditError::BadSigningKey("the file is too large to be a key"));
            return Err(AuditError::KeyFile { path: path.to_path_buf(), source });
        }
        let mut text = Zeroizing::new(String::with_capacity(MAX_KEY_FILE as usize + 1));
        file.read_to_string(&mut text).map_err(io_error)?;
        let key = Self::from_text(&text)
            .map_err(|source| AuditError::KeyFile { path: path.to_path_buf(), source: Box::new(source) })?;
        if key.name != name {
            return Err(AuditError::KeyNameMismatch {
                path: path.to_path_buf(),
                found: key.name,
                expected: name.to_string(),
            });
        }
        Ok(key)
    }

    /// The text form, as in the key file: `PRIVATE+KEY+<name>+<8 hex key id>+<base64(0x01 ||
    /// 32-byte seed)>` and a newline.
    fn to_text(&self) -> Zeroizing<String> {
        let mut secret = Zeroizing::new(Vec::with_capacity(33));
        secret.push(ED25519);
        secret.extend_from_slice(self.key.as_bytes());
        let encoded = Zeroizing::new(BASE64.encode(secret.as_slice()));
        // Built in place at its final size: no reallocation leaves a copy of the secret behind.
        let id = format!("{:08x}", self.id);
        let length = PRIVATE_KEY_PREFIX.len() + self.name.len() + 1 + id.len() + 1 + encoded.len() + 1;
        let mut text = Zeroizing::new(String::with_capacity(length));
        for part in [PRIVATE_KEY_PREFIX, &self.name, "+", &id, "+", &encoded, "\n"] {
            text.push_str(part);
        }
        text
    }

    /// Parses the key file's contents (a final newline is allowed).
    pub fn from_text(text: &str) -> Result<Self> {
        let text = text.strip_suffix('\n').unwrap_or(text);
        let rest = text
            .strip_prefix(PRIVATE_KEY_PREFIX)
            .ok_or(AuditError::BadSigningKey("it does not start with PRIVATE+KEY+"))?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id), Some(encoded)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(AuditError::BadSigningKey("it is not PRIVATE+KEY+<name>+<key id>+<key>"));
        };
        check_key_name(name)?;
        let id = parse_key_id(id).ok_or(AuditError::BadSigningKey("the key id is not 8 hexadecimal digits"))?;
        let secret = Zeroizing::new(
            BASE64.decode(encoded).map_err(|_| AuditError::BadSigningKey("the key is not valid base64"))?,
        );
        let Some((&ED25519, seed)) = secret.split_first() else {
            return Err(AuditError::BadSigningKey("the key is not an Ed25519 key"));
        };
        let seed: &[u8; 32] = seed.try_into().map_err(|_| AuditError::BadSigningKey("the key is not 32 bytes"))?;
        let key = Self::from_seed(name, seed);
        if key.id != id {
            return Err(AuditError::BadSigningKey("the key id does not match the key"));
        }
        Ok(key)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public half, to verify this key's checkpoints.
    pub fn verifier(&self) -> VerifierKey {
        VerifierKey { name: self.name.clone(), id: self.id, key: self.key.verifying_key() }
    }

    /// The whole signed note: the checkpoint's body, a blank line, this key's signature line.
    pub fn sign(&self, checkpoint: &Checkpoint) -> String {
        self.sign_text(&checkpoint.body())
    }

    /// Signs any note text (which must end in a newline).
    fn sign_text(&self, text: &str) -> String {
        let signature = self.key.sign(text.as_bytes());
        let mut signed = Vec::with_capacity(4 + 64);
        signed.extend_from_slice(&self.id.to_be_bytes());
        signed.extend_from_slice(&signature.to_bytes());
        format!("{text}\n{SIGNATURE_PREFIX}{} {}\n", self.name, BASE64.encode(signed))
    }
}

/// A public key that verifies checkpoints: name, key id and Ed25519 key. Its text form (parse
/// and `Display`) is the signed-note verifier key: `<name>+<8 hex key id>+<base64(0x01 ||
/// 32-byte key)>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl VerifierKey {
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |reason| AuditError::BadVerifierKey { text: text.to_string(), reason };
        // The base64 part may itself contain '+', names and ids never do.
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id), Some(encoded)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("it is not <name>+<key id>+<key>"));
        };
        check_key_name(name)?;
        let id = parse_key_id(id).ok_or_else(|| bad("the key id is not 8 hexadecimal digits"))?;
        let bytes = BASE64.decode(encoded).map_err(|_| bad("the key is not valid base64"))?;
        let Some((&ED25519, key)) = bytes.split_first() else {
            return Err(bad("the key is not an Ed25519 key"));
        };
        let key: &[u8; 32] = key.try_into().map_err(|_| bad("the key is not 32 bytes"))?;
        let key = VerifyingKey::from_bytes(key).map_err(|_| bad("the key is not a valid Ed25519 public key"))?;
        if key_id(name, &key) != id {
            return Err(bad("the key id does not match the name and key"));
        }
        Ok(Self { name: name.to_string(), id, key })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn id(&self) -> u32 {
        self.id
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut bytes = Vec::with_capacity(33);
        bytes.push(ED25519);
        bytes.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.id, BASE64.encode(bytes))
    }
}

fn parse_key_id(text: &str) -> Option<u32> {
    if text.len() == 8 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        u32::from_str_radix(text, 16).ok()
    } else {
        None
    }
}

/// Opens a signed checkpoint: checks the note's format, verifies every signature line of `key`
/// (lines of other keys are ignored, as the format requires; at least one of `key`'s is
/// needed, and all of them must verify), then parses the body strictly.
pub fn open_checkpoint(note: &str, key: &VerifierKey) -> Result<Checkpoint> {
    Checkpoint::parse(open_note(note, key)?)
}

/// Checks a signed note's format and `key`'s signatures on it; returns its text.
fn open_note<'note>(note: &'note str, key: &VerifierKey) -> Result<&'note str> {
    if note.chars().any(|c| c < ' ' && c != '\n') {
        return Err(AuditError::BadNote("it contains a control character other than newline"));
    }
    if !note.ends_with('\n') {
        return Err(AuditError::BadNote("it does not end in a newline"));
    }
    // The text ends at the last blank line; the signature lines follow it.
    let split = note.rfind("\n\n").ok_or(AuditError::BadNote("there is no blank line before the signatures"))?;
    let (text, signatures) = (&note[..split + 1], &note[split + 2..]);
    let signatures = signatures.strip_suffix('\n').ok_or(AuditError::BadNote("there is no signature"))?;
    let mut verified = false;
    for (count, line) in signatures.split('\n').enumerate() {
        if count == MAX_SIGNATURES {
            return Err(AuditError::BadNote("it has too many signatures"));
        }
        let line = line
            .strip_prefix(SIGNATURE_PREFIX)
            .ok_or(AuditError::BadNote("a signature line does not start with '— '"))?;
        let (name, encoded) = line.split_once(' ').ok_or(AuditError::BadNote("a signature line has no signature"))?;
        check_key_name(name).map_err(|_| AuditError::BadNote("a signature line has an invalid key name"))?;
        let signed = BASE64.decode(encoded).map_err(|_| AuditError::BadNote("a signature is not valid base64"))?;
        if signed.len() < 5 {
            return Err(AuditError::BadNote("a signature is too short"));
        }
        let (id, signature) = signed.split_at(4);
        let id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
        if name != key.name || id != key.id {
            continue;
        }
        let bad_signature = || AuditError::BadSignature { name: key.name.clone(), id: key.id };
        let signature = ed25519_dalek::Signature::from_slice(signature).map_err(|_| bad_signature())?;
        key.key.verify_strict(text.as_bytes(), &signature).map_err(|_| bad_signature())?;
        verified = true;
    }
    if !verified {
        return Err(AuditError::NoSignature { name: key.name.clone(), id: key.id });
    }
    Ok(text)
}

#[cfg(test)]
#[path = "note_tests.rs"]
mod tests;
