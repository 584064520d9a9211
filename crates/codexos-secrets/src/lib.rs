//! Envelope encryption of tenant secrets.
//!
//! Three layers. The **master key** (32 random bytes, from the settings or a
//! key file of mode 0600) is the installation's; it never encrypts a secret
//! itself, only the tenants' data keys. Each tenant's **data key** (32
//! random bytes) is stored wrapped (AES-256-GCM) by the master key, with
//! the tenant's id as associated data, next to the id of the master key
//! that wrapped it. Each **secret** is sealed (AES-256-GCM) by its tenant's
//! data key, with the tenant's id and the secret's name as associated data:
//! a ciphertext moved to another row or another tenant does not open.
//! Every encryption takes a fresh random 96-bit nonce.
//!
//! Rotating the master key re-wraps the data keys (a few bytes per tenant)
//! and leaves the secrets as they are.
//!
//! Keys are wiped from memory when dropped (`zeroize`); secret values are
//! `SecretString`s, whose `Debug` shows nothing of them. This crate does no
//! I/O beyond the key files and knows nothing of the database.

mod key_file;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use codexos_core::{SecretName, TenantId};
use rand::TryRngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub use key_file::{create_key_file, read_key_file, sync_dir};

/// Bytes of a master key or a data key (AES-256).
pub const KEY_BYTES: usize = 32;
/// Bytes of an AES-GCM nonce (96 bits).
pub const NONCE_BYTES: usize = 12;

/// What can go wrong, named so an operator knows what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("master key file {}: {reason}", path.display())]
    KeyFile { path: PathBuf, reason: String },
    #[error(
        "master key file {} can be read or written by other users (mode {mode:o}); make it private with `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    KeyFileMode { path: PathBuf, mode: u32 },
    #[error("the master key is not valid: {0}")]
    InvalidKey(String),
    #[error(
        "the data key of tenant {tenant} is wrapped by master key {key_id}, which this process does not have \
         (it has {available}); configure that key (secrets.master_key_file or secrets.previous_master_key_files)"
    )]
    UnknownMasterKey { tenant: TenantId, key_id: String, available: String },
    #[error(
        "the data key of tenant {tenant} does not open with master key {key_id}: the stored key was altered or \
         belongs to another tenant"
    )]
    UnwrapFailed { tenant: TenantId, key_id: String },
    #[error("secret {name} does not open: it was altered, moved from another row, or sealed under another data key")]
    OpenFailed { name: SecretName },
    #[error("secret {name} does not hold UTF-8 text")]
    NotText { name: SecretName },
    #[error("cannot get random bytes from the operating system: {0}")]
    Random(String),
    #[error("encryption failed: {0}")]
    Seal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn random_bytes<const N: usize>() -> Result<Zeroizing<[u8; N]>> {
    let mut bytes = Zeroizing::new([0u8; N]);
    rand::rngs::OsRng.try_fill_bytes(bytes.as_mut()).map_err(|err| Error::Random(err.to_string()))?;
    Ok(bytes)
}

fn cipher(key: &[u8; KEY_BYTES]) -> Aes256Gcm {
    // The key is 32 bytes by its type, which is what AES-256 takes.
    Aes256Gcm::new(aes_gcm::Key::<Aes256Gcm>::from_slice(key))
}

/// Encrypts `plaintext` under `key` with a fresh nonce; returns (nonce, ciphertext with its tag).
fn seal(key: &[u8; KEY_BYTES], aad: &[u8], plaintext: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let nonce = random_bytes::<NONCE_BYTES>()?;
    // Room for the tag up front: the buffer is never reallocated, so no
    // copy of the plaintext is left behind in freed memory.
    let mut buffer = Vec::with_capacity(plaintext.len() + 16);
    buffer.extend_from_slice(plaintext);
    let mut buffer = Zeroizing::new(buffer);
    cipher(key)
        .encrypt_in_place(Nonce::from_slice(nonce.as_ref()), aad, &mut *buffer)
        .map_err(|err| Error::Seal(err.to_string()))?;
    Ok((nonce.to_vec(), std::mem::take(&mut *buffer)))
}

/// Decrypts and authenticates; `None` when the ciphertext, nonce, key or
/// associated data do not match.
fn open(key: &[u8; KEY_BYTES], aad: &[u8], nonce: &[u8], ciphertext: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if nonce.len() != NONCE_BYTES {
        return None;
    }
    let mut buffer = Zeroizing::new(ciphertext.to_vec());
    cipher(key).decrypt_in_place(Nonce::from_slice(nonce), aad, &mut *buffer).ok()?;
    Some(buffer)
}

/// The installation's master key. Its id (a short hash) is recorded next to
/// everything it wraps, so the right key is found after a rotation.
pub struct MasterKey {
    bytes: Zeroizing<[u8; KEY_BYTES]>,
    id: String,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl MasterKey {
    /// A new random key.
    pub fn generate() -> Result<Self> {
        Ok(Self::from_bytes(random_bytes::<KEY_BYTES>()?))
    }

    fn from_bytes(bytes: Zeroizing<[u8; KEY_BYTES]>) -> Self {
        // The first 8 bytes of a domain-separated SHA-256: enough to tell
        // keys apart, and nothing about the key.
        let mut hasher = Sha256::new();
        hasher.update(b"codexos master key id\0");
        hasher.update(bytes.as_ref());
        let id = hex::encode(&hasher.finalize()[..8]);
        Self { bytes, id }
    }

    /// A key written as base64 (standard alphabet, padded): 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self> {
        let decoded = Zeroizing::new(
            BASE64
                .decode(text.trim())
                .map_err(|_| Error::InvalidKey("expected 32 bytes in base64 (44 characters)".to_owned()))?,
        );
        let bytes: [u8; KEY_BYTES] = decoded.as_slice().try_into().map_err(|_| {
            Error::InvalidKey(format!("expected 32 bytes in base64 (44 characters), got {} bytes", decoded.len()))
        })?;
        Ok(Self::from_bytes(Zeroizing::new(bytes)))
    }

    /// The key as base64, for a key file.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(BASE64.encode(self.bytes.as_ref()))
    }

    /// A short hex id: the first 16 hex digits of a SHA-256 of the key.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Wraps a tenant's data key; the tenant's id is bound as associated
    /// data, so the wrapped key opens for that tenant only.
    pub fn wrap(&self, tenant: TenantId, data_key: &DataKey) -> Result<WrappedKey> {
        let (nonce, ciphertext) = seal(&self.bytes, &data_key_aad(tenant), data_key.bytes.as_ref())?;
        Ok(WrappedKey { master_key_id: self.id.clone(), nonce, ciphertext })
    }

    /// Unwraps a tenant's data key wrapped by this key.
    pub fn unwrap(&self, tenant: TenantId, wrapped: &WrappedKey) -> Result<DataKey> {
        if wrapped.master_key_id != self.id {
            return Err(Error::UnknownMasterKey {
                tenant,
                key_id: wrapped.master_key_id.clone(),
                available: self.id.clone(),
            });
        }
        let unwrap_failed = || Error::UnwrapFailed { tenant, key_id: self.id.clone() };
        let plain =
            open(&self.bytes, &data_key_aad(tenant), &wrapped.nonce, &wrapped.ciphertext).ok_or_else(unwrap_failed)?;
        let bytes: [u8; KEY_BYTES] = plain.as_slice().try_into().map_err(|_| unwrap_failed())?;
        Ok(DataKey { bytes: Zeroizing::new(bytes) })
    }
}

fn data_key_aad(tenant: TenantId) -> Vec<u8> {
    format!("codexos:data-key:v1:{tenant}").into_bytes()
}

fn secret_aad(tenant: TenantId, name: &SecretName) -> Vec<u8> {
    // A tenant id has a fixed shape and a name no ':', so no two pairs
    // give the same bytes.
    format!("codexos:secret:v1:{tenant}:{name}").into_bytes()
}

/// A data key as stored: wrapped by the master key `master_key_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub master_key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// A secret as stored: its nonce and ciphertext (with the GCM tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// A tenant's data key, in the clear: only in memory, only while used.
pub struct DataKey {
    bytes: Zeroizing<[u8; KEY_BYTES]>,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    /// A new random data key, for a tenant's first secret.
    pub fn generate() -> Result<Self> {
        Ok(Self { bytes: random_bytes::<KEY_BYTES>()? })
    }

    /// Seals a secret's value, bound to the tenant and the secret's name.
    pub fn seal(&self, tenant: TenantId, name: &SecretName, value: &SecretString) -> Result<Sealed> {
        let (nonce, ciphertext) = seal(&self.bytes, &secret_aad(tenant, name), value.expose_secret().as_bytes())?;
        Ok(Sealed { nonce, ciphertext })
    }

    /// Opens a sealed secret of this tenant by this name.
    pub fn open(&self, tenant: TenantId, name: &SecretName, sealed: &Sealed) -> Result<SecretString> {
        let plain = open(&self.bytes, &secret_aad(tenant, name), &sealed.nonce, &sealed.ciphertext)
            .ok_or_else(|| Error::OpenFailed { name: name.clone() })?;
        let text = std::str::from_utf8(&plain).map_err(|_| Error::NotText { name: name.clone() })?;
        // `SecretString` holds a `Box<str>`; building it from a `&str` makes
        // one allocation of the exact size, and `plain` is wiped on drop.
        Ok(SecretString::from(text))
    }
}

/// The master keys a process holds: the current one, which wraps new data
/// keys, and older ones that still unwrap data keys during a rotation.
#[derive(Clone)]
pub struct Keyring {
    current: Arc<MasterKey>,
    others: Arc<[MasterKey]>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current.id)
            .field("others", &self.others.iter().map(|key| key.id.as_str()).collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// `others` may repeat keys or hold the current one; each is kept once.
    pub fn new(current: MasterKey, others: Vec<MasterKey>) -> Self {
        let mut kept: Vec<MasterKey> = Vec::new();
        for key in others {
            if key.id != current.id && !kept.iter().any(|other| other.id == key.id) {
                kept.push(key);
            }
        }
        Self { current: Arc::new(current), others: kept.into() }
    }

    pub fn current(&self) -> &MasterKey {
        &self.current
    }

    /// Every key's id, the current one first.
    pub fn ids(&self) -> Vec<&str> {
        std::iter::once(self.current.id()).chain(self.others.iter().map(MasterKey::id)).collect()
    }

    /// The key with this id, if this keyring holds it.
    pub fn get(&self, id: &str) -> Option<&MasterKey> {
        std::iter::once(&*self.current).chain(self.others.iter()).find(|key| key.id == id)
    }

    /// Wraps a new data key with the current master key.
    pub fn wrap(&self, tenant: TenantId, data_key: &DataKey) -> Result<WrappedKey> {
        self.current.wrap(tenant, data_key)
    }

    /// Unwraps a data key with whichever master key wrapped it.
    pub fn unwrap(&self, tenant: TenantId, wrapped: &WrappedKey) -> Result<DataKey> {
        match self.get(&wrapped.master_key_id) {
            Some(key) => key.unwrap(tenant, wrapped),
            None => Err(Error::UnknownMasterKey {
                tenant,
                key_id: wrapped.master_key_id.clone(),
                available: self.ids().join(", "),
            }),
        }
    }

    /// A data key unwrapped with this keyring and wrapped again with `to`:
    /// what a master key rotation does to each tenant. The secrets sealed
    /// by the data key are untouched.
    pub fn rewrap(&self, tenant: TenantId, wrapped: &WrappedKey, to: &MasterKey) -> Result<WrappedKey> {
        let data_key = match self.get(&wrapped.master_key_id) {
            Some(key) => key.unwrap(tenant, wrapped)?,
            None if wrapped.master_key_id == to.id => to.unwrap(tenant, wrapped)?,
            None => self.unwrap(tenant, wrapped)?,
        };
        to.wrap(tenant, &data_key)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn name(text: &str) -> SecretName {
        SecretName::parse(text).unwrap()
    }

    fn value(text: &str) -> SecretString {
        SecretString::from(text)
    }

    #[test]
    fn secrets_round_trip_through_a_wrapped_data_key() {
        let master = MasterKey::generate().unwrap();
        let tenant = TenantId::new();
        let wrapped = master.wrap(tenant, &DataKey::generate().unwrap()).unwrap();
        assert_eq!(wrapped.master_key_id, master.id());
        assert_eq!(wrapped.nonce.len(), NONCE_BYTES);
        assert_eq!(wrapped.ciphertext.len(), KEY_BYTES + 16);
        let data_key = master.unwrap(tenant, &wrapped).unwrap();
        let sealed = data_key.seal(tenant, &name("GH_TOKEN"), &value("ghp_s3cr3t é")).unwrap();
        assert!(!sealed.ciphertext.windows(6).any(|window| window == b"s3cr3t"));
        let opened = master.unwrap(tenant, &wrapped).unwrap().open(tenant, &name("GH_TOKEN"), &sealed).unwrap();
        assert_eq!(opened.expose_secret(), "ghp_s3cr3t é");
        // The empty value and a long one work too.
        let long = "x".repeat(64 * 1024);
        for text in ["", long.as_str()] {
            let sealed = data_key.seal(tenant, &name("A"), &value(text)).unwrap();
            assert_eq!(data_key.open(tenant, &name("A"), &sealed).unwrap().expose_secret(), text);
        }
    }

    #[test]
    fn nonces_are_fresh_each_time() {
        let data_key = DataKey::generate().unwrap();
        let tenant = TenantId::new();
        let first = data_key.seal(tenant, &name("A"), &value("same")).unwrap();
        let second = data_key.seal(tenant, &name("A"), &value("same")).unwrap();
        assert_ne!(first.nonce, second.nonce);
        assert_ne!(first.ciphertext, second.ciphertext);
    }

    #[test]
    fn a_ciphertext_does_not_open_under_another_name_or_tenant() {
        let data_key = DataKey::generate().unwrap();
        let tenant = TenantId::new();
        let sealed = data_key.seal(tenant, &name("A"), &value("v")).unwrap();
        let err = data_key.open(tenant, &name("B"), &sealed).unwrap_err();
        assert_eq!(
            err.to_string(),
            "secret B does not open: it was altered, moved from another row, or sealed under another data key"
        );
        assert!(matches!(data_key.open(TenantId::new(), &name("A"), &sealed), Err(Error::OpenFailed { .. })));
        // Nor under another tenant's data key.
        let other = DataKey::generate().unwrap();
        assert!(matches!(other.open(tenant, &name("A"), &sealed), Err(Error::OpenFailed { .. })));
        // A wrapped data key opens for its own tenant only.
        let master = MasterKey::generate().unwrap();
        let wrapped = master.wrap(tenant, &data_key).unwrap();
        assert!(matches!(master.unwrap(TenantId::new(), &wrapped), Err(Error::UnwrapFailed { .. })));
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let data_key = DataKey::generate().unwrap();
        let tenant = TenantId::new();
        let sealed = data_key.seal(tenant, &name("A"), &value("the value")).unwrap();
        for byte in 0..sealed.ciphertext.len() {
            let mut altered = sealed.clone();
            altered.ciphertext[byte] ^= 0x01;
            assert!(data_key.open(tenant, &name("A"), &altered).is_err(), "byte {byte}");
        }
        let mut altered = sealed.clone();
        altered.nonce[0] ^= 0x80;
        assert!(data_key.open(tenant, &name("A"), &altered).is_err());
        let mut short = sealed;
        short.nonce.pop();
        assert!(data_key.open(tenant, &name("A"), &short).is_err());
        let master = MasterKey::generate().unwrap();
        let mut wrapped = master.wrap(tenant, &data_key).unwrap();
        wrapped.ciphertext[3] ^= 0x10;
        assert!(matches!(master.unwrap(tenant, &wrapped), Err(Error::UnwrapFailed { .. })));
    }

    #[test]
    fn the_wrong_master_key_is_named() {
        let tenant = TenantId::new();
        let right = MasterKey::generate().unwrap();
        let wrong = MasterKey::generate().unwrap();
        let wrapped = right.wrap(tenant, &DataKey::generate().unwrap()).unwrap();
        let keyring = Keyring::new(wrong, Vec::new());
        let err = keyring.unwrap(tenant, &wrapped).unwrap_err().to_string();
        assert!(err.contains(&format!("wrapped by master key {}", right.id())), "{err}");
        assert!(err.contains(keyring.current().id()), "{err}");
        // A key that claims the right id but is another key fails to open.
        let mut forged = MasterKey::generate().unwrap();
        forged.id = right.id().to_owned();
        assert!(matches!(forged.unwrap(tenant, &wrapped), Err(Error::UnwrapFailed { .. })));
    }

    #[test]
    fn rotation_rewraps_data_keys_and_keeps_secrets_readable() {
        let tenant = TenantId::new();
        let old = MasterKey::generate().unwrap();
        let data_key = DataKey::generate().unwrap();
        let wrapped = old.wrap(tenant, &data_key).unwrap();
        let sealed = data_key.seal(tenant, &name("TOKEN"), &value("abc")).unwrap();

        let new = MasterKey::generate().unwrap();
        let keyring = Keyring::new(MasterKey::from_base64(&old.to_base64()).unwrap(), Vec::new());
        let rewrapped = keyring.rewrap(tenant, &wrapped, &new).unwrap();
        assert_eq!(rewrapped.master_key_id, new.id());
        // Re-wrapping again (a rotation resumed after a crash) is harmless.
        let again = keyring.rewrap(tenant, &rewrapped, &new).unwrap();
        assert_eq!(again.master_key_id, new.id());

        // The new key alone opens the re-wrapped data key, and the secret
        // sealed before the rotation is read as it was.
        let after = Keyring::new(MasterKey::from_base64(&new.to_base64()).unwrap(), Vec::new());
        let opened = after.unwrap(tenant, &again).unwrap().open(tenant, &name("TOKEN"), &sealed).unwrap();
        assert_eq!(opened.expose_secret(), "abc");
        assert!(after.unwrap(tenant, &wrapped).is_err());
        // With the old key kept as a previous one, both open.
        let both = Keyring::new(new, vec![old]);
        assert!(both.unwrap(tenant, &wrapped).is_ok() && both.unwrap(tenant, &again).is_ok());
        assert_eq!(both.ids().len(), 2);
    }

    #[test]
    fn keys_parse_from_base64_and_never_print() {
        let key = MasterKey::generate().unwrap();
        let text = key.to_base64();
        assert_eq!(text.len(), 44);
        let parsed = MasterKey::from_base64(&format!("  {}\n", *text)).unwrap();
        assert_eq!(parsed.id(), key.id());
        assert_eq!(key.id().len(), 16);
        assert!(!format!("{key:?}").contains(text.as_str()));
        assert_eq!(format!("{:?}", DataKey::generate().unwrap()), "DataKey(..)");
        for bad in ["", "not base64!", "AAAA"] {
            let err = MasterKey::from_base64(bad).unwrap_err().to_string();
            assert!(err.starts_with("the master key is not valid: expected 32 bytes"), "{err}");
        }
    }
}
