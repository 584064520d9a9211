//! Verification of a whole tenant log: the chain, the tree, every checkpoint, and, when
//! something is wrong, what was done to the log and where.

use serde::Serialize;

use crate::note::{Checkpoint, VerifierKey, open_checkpoint};
use crate::record::{GENESIS, Record};
use crate::tree::{Hash, Subtrees, Tree, leaf_hash, prove_consistency, verify_consistency};

/// An entry as read from the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEntry {
    pub record: Record,
    /// The entry hash as stored (the `entry_hash` column), not as recomputed.
    pub stored_hash: Hash,
}

/// A signed checkpoint as read from the store: the size it was stored under and the note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub size: u64,
    pub note: String,
}

/// What verification found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// Every entry hashes to its stored hash and links to the one before it, and every
    /// checkpoint verifies, matches the tree at its size and is consistent with the one before.
    Intact {
        size: u64,
        /// The tree head over all entries, in hex.
        root: String,
        /// How many checkpoints were verified.
        checkpoints: usize,
    },
    /// The first problem, by seq: where, what, and a sentence for a person.
    Tampered { seq: u64, problem: Tamper, detail: String },
}

/// What was done to the log, as far as the evidence tells (see the crate documentation for
/// how each is recognized).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tamper {
    Edited,
    Deleted,
    Inserted,
    Reordered,
    Truncated,
    BadCheckpoint,
}

/// How many entries after the first broken one are kept to explain it: enough to see a row
/// moved a few places, bounded so a ruined log costs no more memory than an intact one.
const WINDOW: usize = 64;

/// How far a renumbered entry's original seq is searched for (each try is one hash).
const RENUMBER_SEARCH: u64 = 16;

enum State {
    /// Everything so far is intact.
    Checking,
    /// The entry at `position` (0-based) broke the chain; it and the next few are kept until
    /// `finish` explains what happened.
    Explaining { position: usize, window: Vec<StoredEntry> },
    /// A checkpoint showed the problem; nothing after it matters.
    Found { seq: u64, problem: Tamper, detail: String },
}

/// Verifies a tenant's log streaming over its entries in seq order: push each entry, then
/// `finish`. Checking stops at the first problem (which is kept); the leaves are collected
/// to the end either way.
pub struct Verifier {
    origin: String,
    key: VerifierKey,
    /// By size; `next_checkpoint` is the first one not yet reached.
    checkpoints: Vec<StoredCheckpoint>,
    next_checkpoint: usize,
    /// The size and root of the last checkpoint that verified.
    last_verified: Option<(u64, Hash)>,
    verified: usize,
    tree: Tree,
    state: State,
    buffer: Vec<u8>,
}

impl Verifier {
    /// `origin` is the tenant's log's name, as in its checkpoints; `checkpoints` may come in any
    /// order.
    pub fn new(origin: &str, key: VerifierKey, mut checkpoints: Vec<StoredCheckpoint>) -> Self {
        checkpoints.sort_by_key(|checkpoint| checkpoint.size);
        let mut verifier = Self {
            origin: origin.to_string(),
            key,
            checkpoints,
            next_checkpoint: 0,
            last_verified: None,
            verified: 0,
            tree: Tree::default(),
            state: State::Checking,
            buffer: Vec::new(),
        };
        verifier.check_checkpoints();
        verifier
    }

    /// The next entry, in seq order.
    pub fn push(&mut self, entry: StoredEntry) {
        match &mut self.state {
            State::Checking => {
                let leaves = self.tree.leaves();
                let position = leaves.len();
                let previous = leaves.last().unwrap_or(&GENESIS);
                let intact = entry.record.seq == position as u64 + 1
                    && entry.record.prev_hash == *previous
                    && self.entry_hash(&entry.record) == entry.stored_hash;
                self.tree.push(entry.stored_hash);
                if intact {
                    self.check_checkpoints();
                } else {
                    self.state = State::Explaining { position, window: vec![entry] };
                }
            }
            State::Explaining { window, .. } => {
                self.tree.push(entry.stored_hash);
                if window.len() < WINDOW {
                    window.push(entry);
                }
            }
            State::Found { .. } => self.tree.push(entry.stored_hash),
        }
    }

    /// The verdict on everything pushed.
    pub fn finish(self) -> Verdict {
        match self.state {
            State::Found { seq, problem, detail } => Verdict::Tampered { seq, problem, detail },
            State::Explaining { position, ref window } => {
                let (seq, problem, detail) = explain(self.tree.leaves(), position, window);
                Verdict::Tampered { seq, problem, detail }
            }
            State::Checking => self.finish_intact_chain(),
        }
    }

    /// The leaf hashes (stored entry hashes) of every entry pushed, for proofs afterwards.
    pub fn leaves(&self) -> &[Hash] {
        self.tree.leaves()
    }

    fn entry_hash(&mut self, record: &Record) -> Hash {
        record.write_canonical_bytes(&mut self.buffer);
        leaf_hash(&self.buffer)
    }

    /// Checks the checkpoints of the tree's current size (the tree grows one leaf at a time,
    /// so each checkpoint is checked when the tree has exactly its size).
    fn check_checkpoints(&mut self) {
        let size = self.tree.size();
        while let Some(stored) = self.checkpoints.get(self.next_checkpoint) {
            if stored.size > size {
                return;
            }
            self.next_checkpoint += 1;
            if let Err((seq, problem, detail)) = self.check_checkpoint(self.next_checkpoint - 1) {
                self.state = State::Found { seq, problem, detail };
                return;
            }
        }
    }

    fn check_checkpoint(&mut self, index: usize) -> Result<(), (u64, Tamper, String)> {
        let size = self.checkpoints[index].size;
        debug_assert_eq!(size, self.tree.size());
        let bad = |detail: String| (size, Tamper::BadCheckpoint, detail);
        let checkpoint = self.open(index).map_err(bad)?;
        let root = self.tree.root_at(size);
        if checkpoint.root != root {
            // The signature holds, so the root was the log's once: the entries changed since.
            // The chain itself is intact, so whoever changed an entry recomputed every hash
            // after it, and only the checkpoints still know better.
            let first_unproven = self.last_verified.map_or(1, |(verified_size, _)| verified_size + 1);
            let detail = if first_unproven == size {
                format!(
                    "entry {size} is not the entry the checkpoint at size {size} signed: it was changed and the \
                     hashes after it recomputed"
                )
            } else {
                format!(
                    "the entries up to {size} do not hash to the root signed by the checkpoint at size {size}, \
                     while those up to {} do: one of the entries {first_unproven} to {size} was changed and the \
                     hashes after it recomputed",
                    first_unproven - 1
                )
            };
            return Err((size, Tamper::Edited, detail));
        }
        if let Some((old_size, old_root)) = self.last_verified {
            // Both roots match the tree, so this holds; checking it anyway keeps the proof code
            // honest on every verification, at O(log² n) per pair.
            let consistent = prove_consistency(&self.tree, old_size)
                .and_then(|proof| verify_consistency(old_size, size, &old_root, &checkpoint.root, &proof));
            if let Err(err) = consistent {
                return Err(bad(format!(
                    "the checkpoint at size {size} is not consistent with the one at size {old_size}: {err}"
                )));
            }
        }
        self.last_verified = Some((size, checkpoint.root));
        self.verified += 1;
        Ok(())
    }

    /// Opens the stored checkpoint at `index`: signature, format, origin and size.
    fn open(&self, index: usize) -> Result<Checkpoint, String> {
        let stored = &self.checkpoints[index];
        let size = stored.size;
        let checkpoint = open_checkpoint(&stored.note, &self.key)
            .map_err(|err| format!("the checkpoint stored at size {size} is not valid: {err}"))?;
        if checkpoint.origin != self.origin {
            return Err(format!(
                "the checkpoint stored at size {size} is for the log {:?}, not {:?}",
                checkpoint.origin, self.origin
            ));
        }
        if checkpoint.size != size {
            return Err(format!("the checkpoint stored at size {size} signs size {}", checkpoint.size));
        }
        Ok(checkpoint)
    }

    /// Every entry is intact; what is left to see is whether a checkpoint covers entries that
    /// are no longer there.
    fn finish_intact_chain(self) -> Verdict {
        let size = self.tree.size();
        let beyond = self.next_checkpoint..self.checkpoints.len();
        // Only a checkpoint that verifies proves that the log was longer.
        let longest = beyond.clone().rev().find(|&index| self.open(index).is_ok());
        if let Some(index) = longest {
            let claimed = self.checkpoints[index].size;
            let detail = if claimed == size + 1 {
                format!("a checkpoint signed the log at size {claimed}, and entry {claimed} is gone")
            } else {
                format!("a checkpoint signed the log at size {claimed}, and entries {} to {claimed} are gone", size + 1)
            };
            return Verdict::Tampered { seq: size + 1, problem: Tamper::Truncated, detail };
        }
        if let Some(index) = beyond.clone().next() {
            let detail = self.open(index).err().unwrap_or_default();
            return Verdict::Tampered { seq: self.checkpoints[index].size, problem: Tamper::BadCheckpoint, detail };
        }
        Verdict::Intact { size, root: hex::encode(self.tree.root_at(size)), checkpoints: self.verified }
    }
}

/// Verifies a whole log: [`Verifier`] over `entries`.
pub fn verify(
    origin: &str,
    key: VerifierKey,
    checkpoints: Vec<StoredCheckpoint>,
    entries: impl IntoIterator<Item = StoredEntry>,
) -> Verdict {
    let mut verifier = Verifier::new(origin, key, checkpoints);
    for entry in entries {
        verifier.push(entry);
    }
    verifier.finish()
}

/// Where an entry's `prev_hash` leads.
enum Link {
    /// To the start of the log (GENESIS).
    Start,
    /// To the verified entry at this position.
    Earlier(usize),
    /// To an entry after the broken one.
    Later,
    Nowhere,
}

fn link(prev_hash: &Hash, verified: &[Hash], window: &[StoredEntry]) -> Link {
    if *prev_hash == GENESIS {
        Link::Start
    } else if let Some(position) = verified.iter().rposition(|leaf| leaf == prev_hash) {
        Link::Earlier(position)
    } else if window.iter().any(|entry| entry.stored_hash == *prev_hash) {
        Link::Later
    } else {
        Link::Nowhere
    }
}

/// The seq under which `entry` hashes to its stored hash, searched near its current seq: an
/// entry that was renumbered, not otherwise changed, is found under its original seq.
fn original_seq(entry: &StoredEntry) -> Option<u64> {
    let mut record = entry.record.clone();
    let current = record.seq;
    let candidates = (1..=RENUMBER_SEARCH)
        .flat_map(|distance| [current.checked_add(distance), current.checked_sub(distance)])
        .flatten()
        .filter(|&seq| seq > 0);
    candidates.into_iter().find(|&seq| {
        record.seq = seq;
        record.entry_hash() == entry.stored_hash
    })
}

/// Explains the first broken entry, `window[0]` at `position`, with every verified entry
/// before it (`leaves[..position]`) and the entries after it in `window`.
///
/// Each entry's `prev_hash` names the entry that was before it when it was written, and its
/// stored hash is its identity, so the links tell what moved: an entry whose predecessor is
/// missing lost it (Deleted), one whose predecessor comes after it was moved (Reordered), one
/// that nothing follows and that follows nothing, or that sits between an entry and the entry
/// that follows it, was added (Inserted).
fn explain(leaves: &[Hash], position: usize, window: &[StoredEntry]) -> (u64, Tamper, String) {
    let verified = &leaves[..position];
    let expected = position as u64 + 1;
    let entry = &window[0];
    let later = &window[1..];
    let seq = entry.record.seq;
    let prev_hash = &entry.record.prev_hash;

    if seq == 0 {
        return (expected, Tamper::Inserted, format!("the entry at place {expected} has seq 0, and seqs start at 1"));
    }
    if seq < expected {
        return (
            seq,
            Tamper::Inserted,
            format!("seq {seq} appears twice: an entry was added under an existing number"),
        );
    }
    if seq > expected {
        if later.iter().any(|other| (expected..seq).contains(&other.record.seq)) {
            return (expected, Tamper::Reordered, format!("entry {seq} comes before entry {expected}"));
        }
        let detail = if seq == expected + 1 {
            format!("entry {expected} is missing")
        } else {
            format!("entries {expected} to {} are missing", seq - 1)
        };
        return (expected, Tamper::Deleted, detail);
    }

    let previous = verified.last().unwrap_or(&GENESIS);
    let links_back = prev_hash == previous;
    if entry.record.entry_hash() != entry.stored_hash {
        if links_back {
            return (
                expected,
                Tamper::Edited,
                format!("entry {expected} does not hash to its stored hash: it was changed"),
            );
        }
        return match original_seq(entry) {
            None => (
                expected,
                Tamper::Edited,
                format!(
                    "entry {expected} does not hash to its stored hash nor follow the entry before it: it was changed"
                ),
            ),
            Some(original) if original > expected => {
                if matches!(link(prev_hash, verified, later), Link::Later) {
                    let detail = format!(
                        "the entry numbered {expected} was entry {original}, and the entry it followed comes after it"
                    );
                    (expected, Tamper::Reordered, detail)
                } else {
                    let removed = if original == expected + 1 {
                        format!("entry {expected} was removed")
                    } else {
                        format!("entries {expected} to {} were removed", original - 1)
                    };
                    (expected, Tamper::Deleted, format!("{removed} and the entries after renumbered"))
                }
            }
            Some(original) => match link(prev_hash, verified, later) {
                Link::Earlier(predecessor) => {
                    let added = predecessor as u64 + 2;
                    let detail = format!(
                        "the entry numbered {expected} was entry {original}: entries were added after entry {} and \
                         the entries after renumbered",
                        added - 1
                    );
                    (added, Tamper::Inserted, detail)
                }
                Link::Later => (
                    expected,
                    Tamper::Reordered,
                    format!(
                        "the entry numbered {expected} was entry {original}, and the entry it followed comes after it"
                    ),
                ),
                Link::Start | Link::Nowhere => (
                    expected,
                    Tamper::Inserted,
                    format!("the entry numbered {expected} was entry {original} and follows no entry of the log"),
                ),
            },
        };
    }

    // The entry is as it was hashed, but does not follow the entry before it.
    match link(prev_hash, verified, later) {
        Link::Earlier(predecessor) => {
            let added = predecessor as u64 + 2;
            let detail = if added + 1 == expected {
                format!("entry {expected} follows entry {}, so entry {added} between them was added", added - 1)
            } else {
                format!(
                    "entry {expected} follows entry {}, so entries {added} to {} between them were added",
                    added - 1,
                    expected - 1
                )
            };
            (added, Tamper::Inserted, detail)
        }
        Link::Start => {
            (expected, Tamper::Inserted, format!("entry {expected} claims to be the first entry: it was added"))
        }
        Link::Later => (expected, Tamper::Reordered, format!("entry {expected} follows an entry that comes after it")),
        Link::Nowhere => match later.first() {
            // The log goes on from this entry, so it is genuine: what it follows was replaced.
            Some(next) if next.record.prev_hash == entry.stored_hash => {
                let replaced = expected.saturating_sub(1).max(1);
                let detail = format!(
                    "entry {expected} follows an entry that is not in the log: entry {replaced} was changed and its \
                     hash recomputed"
                );
                (replaced, Tamper::Edited, detail)
            }
            Some(next) => match link(&next.record.prev_hash, verified, later) {
                Link::Start | Link::Earlier(_) => (
                    expected,
                    Tamper::Inserted,
                    format!(
                        "entry {expected} follows no entry of the log, and the entry after it skips it: it was added"
                    ),
                ),
                Link::Later => (
                    expected,
                    Tamper::Reordered,
                    format!("entry {} follows an entry that comes after it", expected + 1),
                ),
                Link::Nowhere => (
                    expected,
                    Tamper::Deleted,
                    format!(
                        "entries {expected} and {} follow entries that are not in the log: entries were removed and \
                         the ones after renumbered and their hashes recomputed",
                        expected + 1
                    ),
                ),
            },
            None => (expected, Tamper::Inserted, format!("the last entry, {expected}, follows no entry of the log")),
        },
    }
}
