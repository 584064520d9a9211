//! The cryptography of the tamper-evident audit log, one log per tenant: how an entry is
//! hashed, how entries are chained and put in a Merkle tree, how the tree's head is signed in a
//! checkpoint, and how a whole log is verified. Pure: no database, no async, no I/O but the
//! signing key's file; the store keeps the rows and calls this crate.
//!
//! # Design
//!
//! - **One hash, two structures.** An entry's hash is `leaf_hash(canonical_bytes)` (RFC 6962's
//!   leaf hash over a versioned, length-prefixed encoding of every field, see
//!   [`Record::canonical_bytes`]). The same value is the link the next entry stores as its
//!   `prev_hash` (a hash chain: 1 starts from [`GENESIS`]) and the entry's leaf in an RFC 6962
//!   Merkle tree over the log. The chain makes any single change visible to a reader of the
//!   rows; the tree gives short proofs that an entry is in the log (inclusion) and that an
//!   older log is a prefix of a newer one (consistency).
//! - **Appending costs O(log n).** The store keeps a [`Frontier`] per tenant (the roots of
//!   the tree's perfect subtrees, in a text column) and extends it on each append without
//!   reading old entries.
//! - **Checkpoints.** From time to time the store signs the tree head: a C2SP tlog-checkpoint
//!   body (origin naming the tenant's log, size, base64 root, and one extension line `time
//!   <unix millis>`) in a C2SP signed note with an Ed25519 key ([`SigningKey`]), whose public
//!   half ([`VerifierKey`], in the signed-note verifier key form) anyone may hold.
//!
//! # What verification detects
//!
//! [`verify`] (or [`Verifier`], streaming) recomputes every entry hash, follows the chain,
//! rebuilds the tree, opens every checkpoint and checks that its root is the tree's root at its
//! size and that it is consistent with the checkpoint before (through a consistency proof,
//! built and verified for each successive pair). The first problem by seq wins:
//!
//! - **Edited**: an entry that does not hash to its stored hash. Or, when the chain is intact
//!   but a checkpoint's root is not the tree's (whoever edited an entry also recomputed every
//!   hash after it, which only a checkpoint can show): the checkpoint's size, with the range of
//!   entries since the last matching checkpoint in the detail, since the tree cannot tell which
//!   of them changed. Also an entry whose successor follows it while it follows nothing of the
//!   log: the entry before it was replaced.
//! - **Deleted**: a gap in the seqs, or an entry that hashes right only under a higher seq and
//!   whose predecessor is gone (removed and the rest renumbered), or entries renumbered and
//!   rehashed that follow entries no longer there.
//! - **Reordered**: an entry whose predecessor (by `prev_hash`) comes after it, or a seq that
//!   comes after a higher one (rows swapped, with or without their seqs).
//! - **Inserted**: a seq that appears twice; an entry between another and the entry that
//!   follows that other (the follower skips it); an entry that follows nothing in the log and
//!   that the next entry does not follow.
//! - **Truncated**: a valid checkpoint signs a size larger than the number of entries left.
//! - **BadCheckpoint**: a checkpoint that does not open (no valid signature of the key, a body
//!   that is not exactly the four lines), is for another origin, signs another size than it is
//!   stored under, or is not consistent with the one before.
//!
//! A valid signature on a root that is not the tree's counts as Edited, not BadCheckpoint:
//! the signature proves the root was once the log's, so the entries changed since.
//!
//! # What it cannot detect
//!
//! The database alone cannot prove that entries appended after the last checkpoint were not
//! removed, nor that well-formed entries appended after it are genuine: whoever can write the
//! table can cut or extend the tail beyond the last checkpoint, and can rewrite everything and
//! drop the checkpoints (a [`Verdict::Intact`] says how many checkpoints it verified). A copy
//! of the latest checkpoint kept elsewhere (by an auditor, a backup, a witness) closes both: a
//! log that does not extend it consistently is caught. With the signing key, an attacker can
//! forge checkpoints too, so the key lives outside the database, in a file readable only by the
//! server.

mod error;
mod note;
mod record;
mod tree;
mod verify;

pub use error::{AuditError, Result};
pub use note::{Checkpoint, SigningKey, VerifierKey, open_checkpoint};
pub use record::{GENESIS, Record};
pub use tree::{
    Frontier, Hash, consistency_proof, inclusion_proof, leaf_hash, node_hash, root, verify_consistency,
    verify_inclusion,
};
pub use verify::{StoredCheckpoint, StoredEntry, Tamper, Verdict, Verifier, verify};
