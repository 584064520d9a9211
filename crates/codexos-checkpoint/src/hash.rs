//! Object names: SHA-256 digests, shown as 64 lowercase hexadecimal digits.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::error::Error;

/// The name of a stored object (a file's content or a directory listing): the SHA-256 of its
/// bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ObjectHash(pub(crate) [u8; 32]);

impl ObjectHash {
    pub(crate) fn of(bytes: &[u8]) -> ObjectHash {
        ObjectHash(Sha256::digest(bytes).into())
    }

    pub(crate) fn from_hasher(hasher: Sha256) -> ObjectHash {
        ObjectHash(hasher.finalize().into())
    }

    pub(crate) fn parse_hex(text: &str) -> Option<ObjectHash> {
        let mut bytes = [0; 32];
        // `hex` accepts upper case too; names are written in lower case only, so that one
        // object has one name.
        if text.bytes().any(|byte| byte.is_ascii_uppercase()) {
            return None;
        }
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(ObjectHash(bytes))
    }

    /// The object's place under a fan-out directory: `ab/cdef…` (two, then 62 digits), so that
    /// no directory of the store holds more than a 256th of the objects.
    pub(crate) fn fanout_path(&self) -> String {
        let text = hex::encode(self.0);
        format!("{}/{}", &text[..2], &text[2..])
    }
}

impl fmt::Display for ObjectHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ObjectHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A checkpoint's id: the SHA-256 of its record (which names the workspace's root tree, the
/// time and the sizes), as 64 lowercase hexadecimal digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CheckpointId(pub(crate) ObjectHash);

impl CheckpointId {
    /// Parses the 64 lowercase hexadecimal digits of an id.
    pub fn parse(text: &str) -> Result<CheckpointId, Error> {
        ObjectHash::parse_hex(text).map(CheckpointId).ok_or_else(|| Error::InvalidId { id: text.to_owned() })
    }
}

impl FromStr for CheckpointId {
    type Err = Error;

    fn from_str(text: &str) -> Result<CheckpointId, Error> {
        CheckpointId::parse(text)
    }
}

impl fmt::Display for CheckpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for CheckpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CheckpointId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text_and_refuse_anything_else() {
        let id = CheckpointId(ObjectHash::of(b"record"));
        assert_eq!(CheckpointId::parse(&id.to_string()).unwrap(), id);
        for bad in ["", "abc", &"A".repeat(64), &"g".repeat(64), &"0".repeat(63), &"0".repeat(65)] {
            assert!(matches!(CheckpointId::parse(bad), Err(Error::InvalidId { .. })), "{bad:?}");
        }
    }

    #[test]
    fn objects_are_fanned_out_by_their_first_byte() {
        let hash = ObjectHash::of(b"");
        // The SHA-256 of nothing, as `sha256sum < /dev/null` prints it.
        assert_eq!(hash.fanout_path(), "e3/b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
