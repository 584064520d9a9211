//! Publishers of signed agent manifests: the id of a publisher's key and
//! what the platform found when it checked a manifest's signature
//! (docs/manifest.md, "Signature").

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The id of a publisher's Ed25519 key: the first 16 hexadecimal digits
/// (lowercase) of the SHA-256 of its 32-byte public key. Derived from the
/// key, so the same key has the same id in every tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PublisherKeyId(String);

impl PublisherKeyId {
    pub const LEN: usize = 16;

    pub fn parse(text: &str) -> Result<Self, PublisherKeyIdError> {
        let valid = text.len() == Self::LEN && text.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'));
        if !valid {
            return Err(PublisherKeyIdError(text.chars().take(40).collect()));
        }
        Ok(Self(text.to_owned()))
    }

    /// The id of a key whose SHA-256 digest is `digest`.
    pub fn from_digest(digest: &[u8; 32]) -> Self {
        Self(digest[..Self::LEN / 2].iter().map(|byte| format!("{byte:02x}")).collect())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PublisherKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for PublisherKeyId {
    type Error = PublisherKeyIdError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<PublisherKeyId> for String {
    fn from(id: PublisherKeyId) -> Self {
        id.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a publisher key id (16 lowercase hexadecimal digits)")]
pub struct PublisherKeyIdError(pub String);

/// What the platform found when a manifest version was registered. A
/// manifest whose signature does not match its content, or whose key the
/// tenant has not registered or revoked, is never stored, so it has no
/// status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureStatus {
    /// No `[signature]` table.
    Unsigned,
    /// Signed, the signature matches, and the tenant trusts the key.
    Verified,
    /// Signed and the signature matches, but the tenant does not trust the
    /// key. Registration refuses these today; the status is for a policy
    /// that would admit them.
    Untrusted,
}

impl SignatureStatus {
    pub const ALL: [SignatureStatus; 3] =
        [SignatureStatus::Unsigned, SignatureStatus::Verified, SignatureStatus::Untrusted];

    pub fn as_str(self) -> &'static str {
        match self {
            SignatureStatus::Unsigned => "unsigned",
            SignatureStatus::Verified => "verified",
            SignatureStatus::Untrusted => "untrusted",
        }
    }
}

impl fmt::Display for SignatureStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown signature status '{0}' (expected unsigned, verified or untrusted)")]
pub struct SignatureStatusError(pub String);

impl FromStr for SignatureStatus {
    type Err = SignatureStatusError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        SignatureStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| SignatureStatusError(text.chars().take(32).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_are_sixteen_lowercase_hex_digits() {
        assert_eq!(PublisherKeyId::parse("0123456789abcdef").unwrap().as_str(), "0123456789abcdef");
        for bad in ["", "0123456789ABCDEF", "0123456789abcde", "0123456789abcdef0", "0123456789abcdeg", "{id}"] {
            assert!(PublisherKeyId::parse(bad).is_err(), "{bad}");
        }
        let digest: [u8; 32] = std::array::from_fn(|index| u8::try_from(index).unwrap_or(0).wrapping_mul(17));
        assert_eq!(PublisherKeyId::from_digest(&digest).as_str(), "0011223344556677");
    }

    #[test]
    fn statuses_parse_and_print() {
        for status in SignatureStatus::ALL {
            assert_eq!(status.as_str().parse::<SignatureStatus>(), Ok(status));
            assert_eq!(serde_json::to_value(status).unwrap(), serde_json::json!(status.as_str()));
        }
        assert!("tampered".parse::<SignatureStatus>().is_err());
    }
}
