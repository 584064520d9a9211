//! An audit entry as it is hashed: its canonical bytes, its entry hash.

use serde::{Deserialize, Serialize};

use crate::tree::{Hash, leaf_hash};

/// The `prev_hash` of the first entry (seq 1) of every log.
pub const GENESIS: Hash = [0; 32];

/// The version tag that opens the canonical bytes: a new encoding gets a new tag, so no two
/// encodings can hash alike.
const VERSION_TAG: &[u8] = b"codexos-audit-entry/v1";

/// One audit entry as it is hashed. `details` is JSON text exactly as stored: it is hashed as
/// text, never re-serialized, so the hash does not depend on a JSON library's formatting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub tenant: String,
    /// 1, 2, 3, ... within the tenant's log.
    pub seq: u64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub request_id: Option<String>,
    pub details: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// The entry hash of the entry at `seq - 1`; [`GENESIS`] for seq 1.
    pub prev_hash: Hash,
}

impl Record {
    /// The bytes the entry hash covers, in this order:
    ///
    /// ```text
    /// str("codexos-audit-entry/v1")       version tag
    /// str(tenant)
    /// u64(seq)
    /// str(actor) str(action) str(target) str(outcome)
    /// opt(request_id)
    /// str(details)
    /// i64(created_at)
    /// prev_hash                           32 bytes
    ///
    /// str(s)   = u64(byte length of s) || the UTF-8 bytes of s
    /// opt(s)   = 0x00 when absent, 0x01 || str(s) when present
    /// u64, i64 = 8 bytes, big-endian (two's complement for i64)
    /// ```
    ///
    /// Every field is either fixed-size or length-prefixed, so two different records never have
    /// the same bytes, whatever their strings contain.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        self.write_canonical_bytes(&mut bytes);
        bytes
    }

    /// [`Record::canonical_bytes`] into a buffer that the caller reuses (verification encodes a
    /// million records; one buffer saves a million allocations).
    pub(crate) fn write_canonical_bytes(&self, bytes: &mut Vec<u8>) {
        bytes.clear();
        let strings = [&self.tenant, &self.actor, &self.action, &self.target, &self.outcome, &self.details];
        let capacity = VERSION_TAG.len()
            + strings.iter().map(|text| text.len()).sum::<usize>()
            + self.request_id.as_ref().map_or(0, String::len)
            + 8 * 10
            + 1
            + 32;
        bytes.reserve(capacity);
        put_bytes(bytes, VERSION_TAG);
        put_bytes(bytes, self.tenant.as_bytes());
        bytes.extend_from_slice(&self.seq.to_be_bytes());
        put_bytes(bytes, self.actor.as_bytes());
        put_bytes(bytes, self.action.as_bytes());
        put_bytes(bytes, self.target.as_bytes());
        put_bytes(bytes, self.outcome.as_bytes());
        match &self.request_id {
            None => bytes.push(0x00),
            Some(request_id) => {
                bytes.push(0x01);
                put_bytes(bytes, request_id.as_bytes());
            }
        }
        put_bytes(bytes, self.details.as_bytes());
        bytes.extend_from_slice(&self.created_at.to_be_bytes());
        bytes.extend_from_slice(&self.prev_hash);
    }

    /// `leaf_hash(canonical_bytes)`: the link the next entry's `prev_hash` holds and, the same
    /// value, this entry's leaf in the Merkle tree.
    pub fn entry_hash(&self) -> Hash {
        leaf_hash(&self.canonical_bytes())
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use pretty_assertions::assert_eq;

    use super::*;

    fn record() -> Record {
        Record {
            tenant: "acme".into(),
            seq: 1,
            actor: "user:alice".into(),
            action: "agent.create".into(),
            target: "agent:reviewer".into(),
            outcome: "ok".into(),
            request_id: Some("req-1".into()),
            details: r#"{"model":"m"}"#.into(),
            created_at: 1_700_000_000_000,
            prev_hash: GENESIS,
        }
    }

    #[test]
    fn canonical_bytes_are_the_documented_layout() {
        let mut record = record();
        record.tenant = "t".into();
        record.actor = "a".into();
        record.action = String::new();
        record.target = "x".into();
        record.outcome = "ok".into();
        record.request_id = None;
        record.details = "{}".into();
        record.seq = 2;
        record.created_at = -1;
        record.prev_hash = [7; 32];
        let mut expected = Vec::new();
        expected.extend_from_slice(&22u64.to_be_bytes());
        expected.extend_from_slice(b"codexos-audit-entry/v1");
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, b't']);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2]);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, b'a']);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, b'x']);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2, b'o', b'k']);
        expected.push(0);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2, b'{', b'}']);
        expected.extend_from_slice(&[0xff; 8]);
        expected.extend_from_slice(&[7; 32]);
        assert_eq!(record.canonical_bytes(), expected);
        assert_eq!(record.entry_hash(), leaf_hash(&expected));
    }

    #[test]
    fn moving_bytes_between_fields_changes_the_hash() {
        let base = record();
        let mut shifted = base.clone();
        shifted.actor = "user:alic".into();
        shifted.action = "eagent.create".into();
        assert_ne!(base.entry_hash(), shifted.entry_hash());

        let mut absent = base.clone();
        absent.request_id = None;
        let mut empty = base.clone();
        empty.request_id = Some(String::new());
        assert_ne!(absent.entry_hash(), empty.entry_hash());
        assert_ne!(absent.entry_hash(), base.entry_hash());

        for change in [
            |r: &mut Record| r.tenant.push('x'),
            |r: &mut Record| r.seq += 1,
            |r: &mut Record| r.outcome.push('x'),
            |r: &mut Record| r.details.push(' '),
            |r: &mut Record| r.created_at += 1,
            |r: &mut Record| r.prev_hash[31] ^= 1,
        ] {
            let mut changed = base.clone();
            change(&mut changed);
            assert_ne!(changed.entry_hash(), base.entry_hash(), "{changed:?}");
        }
    }
}
