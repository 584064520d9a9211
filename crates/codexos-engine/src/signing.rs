//! Signed manifests: the canonical form a publisher signs, the `[signature]`
//! table that carries the signature inside the manifest, and publishers'
//! Ed25519 keys (docs/manifest.md, "Signature").
//!
//! The canonical form of a manifest is its TOML value without the
//! `signature` table, written as JSON by the rules of RFC 8785 (the JSON
//! Canonicalization Scheme): members sorted by the UTF-16 code units of
//! their names, no white space, strings with the fewest escapes, numbers as
//! ECMAScript prints them. Comments, white space, quoting, key order and
//! the choice between inline and standard tables do not change it; any
//! change of a key or a value does. What the key signs is a context line
//! followed by the canonical form, so that no other signature made with the
//! same key can pass for a manifest's.
//!
//! ```toml
//! [signature]
//! publisher = "3f9a0c1e5b7d2468"  # the key id
//! algorithm = "ed25519"
//! value = "base64 of the 64-byte signature"
//! ```

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use codexos_core::PublisherKeyId;
use ed25519_dalek::{Signer, VerifyingKey};
use rand::TryRngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The one signature algorithm, as `signature.algorithm` names it.
pub const ALGORITHM: &str = "ed25519";

/// What precedes the canonical form in the signed message.
const SIGNING_CONTEXT: &[u8] = b"codexos-manifest-signature-v1\n";

/// A public key's text form: this prefix, then the base64 of its 32 bytes.
const PUBLIC_KEY_PREFIX: &str = "ed25519:";

/// A private key file's one line opens with this.
const PRIVATE_KEY_PREFIX: &str = "CODEXOS-PUBLISHER-KEY+";

/// The largest key file read, in bytes (a key is about 100).
const MAX_KEY_FILE: u64 = 1024;

/// Deeper nesting than this is not a manifest.
const MAX_DEPTH: usize = 64;

/// The largest integer a JSON number (an IEEE double) holds exactly.
const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// The signature a manifest carries in its `[signature]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestSignature {
    /// The id of the key that signed (`signature.publisher`).
    pub publisher: PublisherKeyId,
    /// The Ed25519 signature of the canonical form (`signature.value`).
    pub value: [u8; 64],
}

/// Checks `signature.algorithm`; the reason is for that key.
pub fn check_algorithm(text: &str) -> Result<(), String> {
    if text == ALGORITHM {
        Ok(())
    } else {
        Err(format!(
            "'{}' is not a supported algorithm (expected \"{ALGORITHM}\")",
            text.chars().take(32).collect::<String>()
        ))
    }
}

/// Decodes `signature.value`: standard base64, with padding, of 64 bytes;
/// the reason is for that key.
pub fn decode_signature_value(text: &str) -> Result<[u8; 64], String> {
    let bytes = BASE64.decode(text).map_err(|_| "is not base64 (standard alphabet, with padding)".to_owned())?;
    let length = bytes.len();
    bytes.try_into().map_err(|_| format!("is {length} bytes; an Ed25519 signature is 64"))
}

/// Why a manifest cannot be signed or its signature does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the manifest is not valid TOML: {0}")]
    Syntax(String),
    /// A value the canonical form cannot hold exactly (a date, an integer
    /// beyond ±2^53-1, inf or nan), or nesting too deep.
    #[error("{key}: {reason}")]
    NotCanonical { key: String, reason: String },
    #[error("the manifest is not signed (it has no [signature] table)")]
    Unsigned,
    #[error("the manifest is signed by key {signed_by}, not by key {key}")]
    OtherKey { signed_by: PublisherKeyId, key: PublisherKeyId },
    #[error("the manifest was modified after it was signed: the signature by key {key} does not match its content")]
    Mismatch { key: PublisherKeyId },
    #[error(
        "cannot take the manifest's existing signature out of its text; delete its [signature] table and sign again"
    )]
    ExistingSignature,
}

/// Why a publisher key cannot be read, made or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a public key: {0} (expected ed25519:<base64 of 32 bytes>)")]
    BadPublicKey(&'static str),
    #[error("not a publisher key: {0}")]
    BadPrivateKey(&'static str),
    #[error("'{name}' is not a publisher name: {reason}")]
    BadName { name: String, reason: &'static str },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is readable or writable by others (mode {mode:o}); a publisher key must be 0600")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path}: {source}")]
    File { path: PathBuf, source: Box<KeyError> },
    #[error("cannot draw random bytes: {0}")]
    Random(String),
}

/// A manifest's SHA-256 as the platform records it: of its exact text, in
/// lowercase hexadecimal. Unlike the canonical form, any change of the text
/// changes it.
pub fn manifest_sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The canonical form of a manifest (see the module's documentation).
pub fn canonical_form(text: &str) -> Result<String, SignatureError> {
    let mut table = parse(text)?;
    table.remove("signature");
    let mut out = String::with_capacity(text.len());
    write_table(&mut out, &table, "", 0)?;
    Ok(out)
}

/// What a publisher's key signs: the context line and the canonical form.
fn signed_message(canonical: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNING_CONTEXT.len() + canonical.len());
    message.extend_from_slice(SIGNING_CONTEXT);
    message.extend_from_slice(canonical.as_bytes());
    message
}

fn parse(text: &str) -> Result<toml::Table, SignatureError> {
    text.parse().map_err(|err: toml::de::Error| SignatureError::Syntax(err.message().to_owned()))
}

/// Signs a manifest's text: any `[signature]` table it has is taken out,
/// the rest is kept exactly as written (comments, layout), and a new
/// `[signature]` table is appended at the end.
pub fn sign_manifest(text: &str, key: &PrivateKey) -> Result<String, SignatureError> {
    let unsigned = without_signature(text)?;
    let canonical = canonical_form(&unsigned)?;
    let value = key.key.sign(&signed_message(&canonical)).to_bytes();
    let newline = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let mut signed = unsigned.trim_end().to_owned();
    if !signed.is_empty() {
        signed.push_str(newline);
        signed.push_str(newline);
    }
    for line in [
        "[signature]".to_owned(),
        format!("publisher = \"{}\"", key.id()),
        format!("algorithm = \"{ALGORITHM}\""),
        format!("value = \"{}\"", BASE64.encode(value)),
    ] {
        signed.push_str(&line);
        signed.push_str(newline);
    }
    // What was written must verify; anything else is a bug caught here.
    let signature = ManifestSignature { publisher: key.id(), value };
    verify_signature(&signed, &signature, &key.public_key())?;
    Ok(signed)
}

/// Checks that `signature` (read from the manifest's `[signature]` table)
/// was made by `key` over the manifest's canonical form.
pub fn verify_signature(text: &str, signature: &ManifestSignature, key: &PublicKey) -> Result<(), SignatureError> {
    let key_id = key.id();
    if signature.publisher != key_id {
        return Err(SignatureError::OtherKey { signed_by: signature.publisher.clone(), key: key_id });
    }
    let canonical = canonical_form(text)?;
    let value = ed25519_dalek::Signature::from_bytes(&signature.value);
    key.key.verify_strict(&signed_message(&canonical), &value).map_err(|_| SignatureError::Mismatch { key: key_id })
}

/// The text without its `[signature]` table: the table's header line and
/// the lines up to the next table header are dropped. Checked: the result
/// must be the same TOML value less the signature, or the text is refused
/// (a signature written as an inline table or dotted keys, say).
fn without_signature(text: &str) -> Result<String, SignatureError> {
    let mut original = parse(text)?;
    if original.remove("signature").is_none() {
        return Ok(text.to_owned());
    }
    let mut kept = String::with_capacity(text.len());
    let mut skipping = false;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            skipping = is_signature_header(trimmed);
        }
        if !skipping {
            kept.push_str(line);
        }
    }
    match parse(&kept) {
        Ok(stripped) if stripped == original => Ok(kept),
        _ => Err(SignatureError::ExistingSignature),
    }
}

/// `[signature]`, with spaces inside the brackets or a comment after it.
fn is_signature_header(line: &str) -> bool {
    let Some(rest) = line.strip_prefix('[').filter(|rest| !rest.starts_with('[')) else { return false };
    let Some((inside, after)) = rest.split_once(']') else { return false };
    let after = after.trim();
    inside.trim() == "signature" && (after.is_empty() || after.starts_with('#'))
}

fn not_canonical(key: &str, reason: impl Into<String>) -> SignatureError {
    let key = if key.is_empty() { "(manifest)".to_owned() } else { key.to_owned() };
    SignatureError::NotCanonical { key, reason: reason.into() }
}

fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_owned() } else { format!("{parent}.{key}") }
}

fn write_table(out: &mut String, table: &toml::Table, path: &str, depth: usize) -> Result<(), SignatureError> {
    let mut members: Vec<(&String, &toml::Value)> = table.iter().collect();
    // RFC 8785 sorts by UTF-16 code units, which differs from Rust's byte
    // order for characters above U+FFFF.
    members.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
    out.push('{');
    for (index, (key, value)) in members.into_iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        write_string(out, key);
        out.push(':');
        write_value(out, value, &child_path(path, key), depth + 1)?;
    }
    out.push('}');
    Ok(())
}

fn write_value(out: &mut String, value: &toml::Value, path: &str, depth: usize) -> Result<(), SignatureError> {
    if depth > MAX_DEPTH {
        return Err(not_canonical(path, format!("is nested more than {MAX_DEPTH} levels deep")));
    }
    match value {
        toml::Value::String(text) => write_string(out, text),
        toml::Value::Integer(n) if n.unsigned_abs() <= MAX_SAFE_INTEGER.unsigned_abs() => out.push_str(&n.to_string()),
        toml::Value::Integer(n) => {
            return Err(not_canonical(
                path,
                format!("{n} is beyond the integers a signature covers exactly (-(2^53-1) to 2^53-1)"),
            ));
        }
        toml::Value::Float(x) if x.is_finite() => out.push_str(&ecmascript_number(*x)),
        toml::Value::Float(_) => return Err(not_canonical(path, "inf and nan cannot be signed")),
        toml::Value::Boolean(flag) => out.push_str(if *flag { "true" } else { "false" }),
        toml::Value::Datetime(_) => {
            return Err(not_canonical(path, "a date or time cannot be signed (no manifest key takes one)"));
        }
        toml::Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_value(out, item, &format!("{path}[{index}]"), depth + 1)?;
            }
            out.push(']');
        }
        toml::Value::Table(table) => write_table(out, table, path, depth)?,
    }
    Ok(())
}

/// A JSON string as RFC 8785 (ECMAScript's `JSON.stringify`) writes it:
/// only `"`, `\` and the control characters escaped, the short escapes
/// where there is one.
fn write_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A finite number as ECMAScript's `Number.prototype.toString` prints it
/// (RFC 8785, section 3.2.2.3): the shortest digits that read back as the
/// same double, in plain notation from 1e-6 up to 1e21, else exponential.
pub fn ecmascript_number(x: f64) -> String {
    if x == 0.0 {
        return "0".to_owned(); // and -0
    }
    // Rust's `{:e}` gives the shortest round-tripping digits too: `d.ddde±x`.
    let scientific = format!("{:e}", x.abs());
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let k = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    // The value is 0.DIGITS × 10^n.
    let n = exponent + 1;
    let mut out = String::new();
    if x < 0.0 {
        out.push('-');
    }
    let zeros = |count: i32| "0".repeat(usize::try_from(count).unwrap_or(0));
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.push_str(&zeros(n - k));
    } else if 0 < n && n <= 21 {
        let (whole, fraction) = digits.split_at(usize::try_from(n).unwrap_or(0));
        out.push_str(whole);
        out.push('.');
        out.push_str(fraction);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.push_str(&zeros(-n));
        out.push_str(&digits);
    } else {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        // The exponent of the first digit, always signed.
        let exponent = n - 1;
        out.push('e');
        out.push(if exponent < 0 { '-' } else { '+' });
        out.push_str(&exponent.unsigned_abs().to_string());
    }
    out
}

/// A publisher's public key; its text form is `ed25519:<base64 of the 32
/// bytes>`.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_KEY_PREFIX}{}", BASE64.encode(self.key.as_bytes()))
    }
}

impl PublicKey {
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let encoded = text
            .trim()
            .strip_prefix(PUBLIC_KEY_PREFIX)
            .ok_or(KeyError::BadPublicKey("it does not start with ed25519:"))?;
        let bytes = BASE64.decode(encoded).map_err(|_| KeyError::BadPublicKey("the key is not valid base64"))?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| KeyError::BadPublicKey("the key is not 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::BadPublicKey("not an Ed25519 public key"))?;
        // A key of small order would "verify" signatures nobody made.
        if key.is_weak() {
            return Err(KeyError::BadPublicKey("a weak Ed25519 key (of small order)"));
        }
        Ok(Self { key })
    }

    /// The key's id: the first 16 hexadecimal digits of the SHA-256 of its 32 bytes.
    pub fn id(&self) -> PublisherKeyId {
        PublisherKeyId::from_digest(&Sha256::digest(self.key.as_bytes()).into())
    }
}

/// Checks a publisher key's name: 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
pub fn check_publisher_name(name: &str) -> Result<(), KeyError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > 64 {
        "it is longer than 64 characters"
    } else if !name.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-')) {
        "only A-Z, a-z, 0-9, '.', '_' and '-' are allowed"
    } else {
        return Ok(());
    };
    Err(KeyError::BadName { name: name.chars().take(64).collect(), reason })
}

/// A publisher's private key, with the name it was made under. It stays on
/// the publisher's machine, in a 0600 file of one line:
/// `CODEXOS-PUBLISHER-KEY+<name>+<key id>+<base64 of the 32-byte seed>`.
/// `Debug` shows the name and id only; the key is wiped when dropped.
pub struct PrivateKey {
    name: String,
    key: ed25519_dalek::SigningKey,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey").field("name", &self.name).field("id", &self.id()).finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// A new key from the operating system's random number generator.
    pub fn generate(name: &str) -> Result<Self, KeyError> {
        check_publisher_name(name)?;
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.try_fill_bytes(seed.as_mut()).map_err(|err| KeyError::Random(err.to_string()))?;
        Ok(Self { name: name.to_owned(), key: ed25519_dalek::SigningKey::from_bytes(&seed) })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey { key: self.key.verifying_key() }
    }

    pub fn id(&self) -> PublisherKeyId {
        self.public_key().id()
    }

    /// The key file's text, newline included.
    fn to_text(&self) -> Zeroizing<String> {
        let encoded = Zeroizing::new(BASE64.encode(self.key.as_bytes()));
        let id = self.id();
        let length = PRIVATE_KEY_PREFIX.len() + self.name.len() + id.as_str().len() + encoded.len() + 3;
        // Built at its final size: no reallocation leaves a copy of the secret behind.
        let mut text = Zeroizing::new(String::with_capacity(length));
        for part in [PRIVATE_KEY_PREFIX, &self.name, "+", id.as_str(), "+", &encoded, "\n"] {
            text.push_str(part);
        }
        text
    }

    /// Reads a key file's text (a final newline is allowed).
    pub fn from_text(text: &str) -> Result<Self, KeyError> {
        let text = text.strip_suffix('\n').unwrap_or(text);
        let rest = text
            .strip_prefix(PRIVATE_KEY_PREFIX)
            .ok_or(KeyError::BadPrivateKey("it does not start with CODEXOS-PUBLISHER-KEY+"))?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id), Some(encoded)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(KeyError::BadPrivateKey("it is not CODEXOS-PUBLISHER-KEY+<name>+<key id>+<key>"));
        };
        check_publisher_name(name)?;
        let id = PublisherKeyId::parse(id).map_err(|_| KeyError::BadPrivateKey("the key id is not 16 hex digits"))?;
        let seed =
            Zeroizing::new(BASE64.decode(encoded).map_err(|_| KeyError::BadPrivateKey("the key is not valid base64"))?);
        let seed: &[u8; 32] =
            seed.as_slice().try_into().map_err(|_| KeyError::BadPrivateKey("the key is not 32 bytes"))?;
        let key = Self { name: name.to_owned(), key: ed25519_dalek::SigningKey::from_bytes(seed) };
        if key.id() != id {
            return Err(KeyError::BadPrivateKey("the key id does not match the key"));
        }
        Ok(key)
    }

    /// Writes the key to a new file at `path`, created with mode 0600; an
    /// existing file is never replaced.
    pub fn create_file(&self, path: &Path) -> Result<(), KeyError> {
        let io_error = |source| KeyError::Io { path: path.to_path_buf(), source };
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io_error)?;
        let written = file.write_all(self.to_text().as_bytes()).and_then(|()| file.sync_all());
        if let Err(err) = written {
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(io_error(err));
        }
        Ok(())
    }

    /// Loads a key file; one that the group or others may read or write is
    /// refused.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let io_error = |source| KeyError::Io { path: path.to_path_buf(), source };
        let mut file = File::open(path).map_err(io_error)?;
        // The checks read the opened file's metadata: they are about the file read.
        let metadata = file.metadata().map_err(io_error)?;
        let in_file = |source| KeyError::File { path: path.to_path_buf(), source: Box::new(source) };
        if !metadata.is_file() {
            return Err(in_file(KeyError::BadPrivateKey("it is not a regular file")));
        }
        let mode = metadata.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions { path: path.to_path_buf(), mode });
        }
        if metadata.len() > MAX_KEY_FILE {
            return Err(in_file(KeyError::BadPrivateKey("the file is too large to be a key")));
        }
        let mut text = Zeroizing::new(String::with_capacity(usize::try_from(MAX_KEY_FILE).unwrap_or(1024) + 1));
        file.read_to_string(&mut text).map_err(io_error)?;
        Self::from_text(&text).map_err(in_file)
    }
}

#[cfg(test)]
#[path = "signing_tests.rs"]
mod tests;
