//! The Merkle tree of RFC 6962 / RFC 9162 over the log's entry hashes: the tree head (MTH), its
//! incremental form (`Frontier`), inclusion and consistency proofs and their verification.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{AuditError, Result};

/// A SHA-256 hash: an entry's hash, a tree node, a tree head.
pub type Hash = [u8; 32];

/// The hash of a leaf: SHA-256(0x00 || data). The prefix keeps a leaf from passing for a node.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(data);
    hasher.finalize().into()
}

/// The hash of an interior node: SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The root of the empty tree: SHA-256 of nothing.
pub(crate) fn empty_root() -> Hash {
    Sha256::digest(b"").into()
}

/// The Merkle tree hash (MTH) of a list of leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    let mut frontier = Frontier::new();
    for leaf in leaves {
        frontier.push(*leaf);
    }
    frontier.root()
}

/// The largest power of two strictly smaller than `n` (n >= 2): where RFC 6962 splits a tree.
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The state of a growing tree in O(log n) hashes: the roots of its perfect subtrees, left to
/// right, one for each one bit of the size (largest first). Enough to append and to compute the
/// root without the leaves, so the store keeps one per tenant and extends it on each append.
///
/// Serialized (serde) as its text form, so a deserialized frontier is a validated one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Frontier {
    size: u64,
    hashes: Vec<Hash>,
}

impl Frontier {
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of leaves pushed.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        // As in a binary counter: each trailing one bit of the size is a perfect subtree that
        // the new leaf's subtree now completes, merging into one twice its size.
        let mut hash = leaf;
        for _ in 0..self.size.trailing_ones() {
            let Some(left) = self.hashes.pop() else {
                unreachable!("a frontier holds one hash per one bit of its size")
            };
            hash = node_hash(&left, &hash);
        }
        self.hashes.push(hash);
        self.size += 1;
    }

    /// The tree head: the perfect subtrees folded from the right, which is the RFC 6962 split
    /// (the left subtree is always the largest perfect one).
    pub fn root(&self) -> Hash {
        let mut subtrees = self.hashes.iter().rev();
        match subtrees.next() {
            None => empty_root(),
            Some(last) => subtrees.fold(*last, |right, left| node_hash(left, &right)),
        }
    }

    /// The compact text form for a database column: `size:hex,hex,...` (`0:` when empty).
    pub fn to_text(&self) -> String {
        let hashes: Vec<String> = self.hashes.iter().map(hex::encode).collect();
        format!("{}:{}", self.size, hashes.join(","))
    }

    /// Parses [`Frontier::to_text`]'s form strictly: a canonical decimal size, lowercase hex
    /// hashes, exactly one per one bit of the size.
    pub fn from_text(text: &str) -> Result<Self> {
        let (size, hashes) = text.split_once(':').ok_or(AuditError::BadFrontier("no ':' after the size"))?;
        let size = parse_decimal_u64(size).ok_or(AuditError::BadFrontier("the size is not a canonical decimal"))?;
        let hashes = if hashes.is_empty() {
            Vec::new()
        } else {
            hashes
                .split(',')
                .map(parse_hex_hash)
                .collect::<Option<Vec<Hash>>>()
                .ok_or(AuditError::BadFrontier("a hash is not 64 lowercase hexadecimal digits"))?
        };
        if hashes.len() != size.count_ones() as usize {
            return Err(AuditError::BadFrontier("the number of hashes is not the number of one bits of the size"));
        }
        Ok(Self { size, hashes })
    }
}

impl From<Frontier> for String {
    fn from(frontier: Frontier) -> Self {
        frontier.to_text()
    }
}

impl TryFrom<String> for Frontier {
    type Error = AuditError;

    fn try_from(text: String) -> Result<Self> {
        Self::from_text(&text)
    }
}

/// A decimal without sign or leading zeros (but "0"), as the checkpoint and frontier formats
/// require, so each number has exactly one text form.
pub(crate) fn parse_decimal_u64(text: &str) -> Option<u64> {
    let canonical =
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
    if canonical { text.parse().ok() } else { None }
}

fn parse_hex_hash(text: &str) -> Option<Hash> {
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut hash = [0; 32];
    hex::decode_to_slice(text, &mut hash).ok()?;
    Some(hash)
}

/// Whatever can give the roots of a tree's subtrees: a slice of leaves (by hashing them) or a
/// [`Tree`] (by looking them up), so both share one implementation of the proofs.
pub(crate) trait Subtrees {
    fn size(&self) -> u64;
    /// MTH(D[start:end]), with start < end <= size.
    fn subtree_root(&self, start: u64, end: u64) -> Hash;
}

impl Subtrees for [Hash] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn subtree_root(&self, start: u64, end: u64) -> Hash {
        root(&self[start as usize..end as usize])
    }
}

/// Every level of a tree kept in memory (level 0 is the leaves, level h the roots of the
/// aligned perfect subtrees of 2^h leaves): twice the leaves' memory, and in exchange the root
/// at any size and any proof cost O(log² n) lookups instead of rehashing the leaves. This is
/// what lets verification check a consistency proof between every pair of checkpoints.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tree {
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    pub(crate) fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let row = &mut self.levels[level];
            row.push(hash);
            let n = row.len();
            if n % 2 == 1 {
                return;
            }
            hash = node_hash(&row[n - 2], &row[n - 1]);
            level += 1;
        }
    }

    pub(crate) fn leaves(&self) -> &[Hash] {
        self.levels.first().map_or(&[], Vec::as_slice)
    }

    /// The tree head at `size` <= the number of leaves.
    pub(crate) fn root_at(&self, size: u64) -> Hash {
        if size == 0 { empty_root() } else { self.subtree_root(0, size) }
    }
}

impl Subtrees for Tree {
    fn size(&self) -> u64 {
        self.leaves().len() as u64
    }

    fn subtree_root(&self, start: u64, end: u64) -> Hash {
        let n = end - start;
        // Every subtree that RFC 6962's recursion visits is aligned, so this lookup is the rule
        // and the split below the exception.
        if n.is_power_of_two() && start.is_multiple_of(n) {
            let level = n.trailing_zeros() as usize;
            return self.levels[level][(start >> level) as usize];
        }
        let k = split_point(n);
        node_hash(&self.subtree_root(start, start + k), &self.subtree_root(start + k, end))
    }
}

/// The inclusion proof of the leaf at `index` in the tree of all of `leaves` (RFC 9162 2.1.3.1),
/// ordered from the leaf's sibling up to the root's other child.
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Result<Vec<Hash>> {
    prove_inclusion(leaves, index)
}

pub(crate) fn prove_inclusion(tree: &(impl Subtrees + ?Sized), index: u64) -> Result<Vec<Hash>> {
    let size = tree.size();
    if index >= size {
        return Err(AuditError::IndexOutOfRange { index, size });
    }
    let mut proof = Vec::new();
    inclusion_path(tree, index, 0, size, &mut proof);
    Ok(proof)
}

fn inclusion_path(tree: &(impl Subtrees + ?Sized), index: u64, start: u64, end: u64, proof: &mut Vec<Hash>) {
    let n = end - start;
    if n <= 1 {
        return;
    }
    let k = split_point(n);
    if index < k {
        inclusion_path(tree, index, start, start + k, proof);
        proof.push(tree.subtree_root(start + k, end));
    } else {
        inclusion_path(tree, index - k, start + k, end, proof);
        proof.push(tree.subtree_root(start, start + k));
    }
}

/// Checks that `leaf` is the leaf at `index` of the tree of `size` leaves whose head is `root`
/// (RFC 9162 2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> Result<()> {
    if index >= size {
        return Err(AuditError::IndexOutOfRange { index, size });
    }
    let (mut node, mut last) = (index, size - 1);
    let mut hash = *leaf;
    for sibling in proof {
        if last == 0 {
            return Err(AuditError::BadProof("the proof is longer than the path from the leaf to the root"));
        }
        if node & 1 == 1 || node == last {
            hash = node_hash(sibling, &hash);
            // A right edge without a sibling: climb until the node is a right child again.
            while node & 1 == 0 && node != 0 {
                node >>= 1;
                last >>= 1;
            }
        } else {
            hash = node_hash(&hash, sibling);
        }
        node >>= 1;
        last >>= 1;
    }
    if last != 0 {
        return Err(AuditError::BadProof("the proof is shorter than the path from the leaf to the root"));
    }
    if hash != *root {
        return Err(AuditError::BadProof("the leaf and the proof lead to another root"));
    }
    Ok(())
}

/// The proof that the tree of the first `old_size` leaves is a prefix of the tree of all of
/// `leaves` (RFC 9162 2.1.4.1). Empty when `old_size` is 0 or the whole tree.
pub fn consistency_proof(leaves: &[Hash], old_size: u64) -> Result<Vec<Hash>> {
    prove_consistency(leaves, old_size)
}

pub(crate) fn prove_consistency(tree: &(impl Subtrees + ?Sized), old_size: u64) -> Result<Vec<Hash>> {
    let size = tree.size();
    if old_size > size {
        return Err(AuditError::SizeOutOfRange { old_size, size });
    }
    let mut proof = Vec::new();
    if old_size > 0 && old_size < size {
        consistency_path(tree, old_size, 0, size, true, &mut proof);
    }
    Ok(proof)
}

/// RFC 9162's SUBPROOF(m, D[start:end], complete): `complete` says whether the old tree's head
/// is the subtree itself (then the verifier knows it and it is left out).
fn consistency_path(
    tree: &(impl Subtrees + ?Sized),
    m: u64,
    start: u64,
    end: u64,
    complete: bool,
    proof: &mut Vec<Hash>,
) {
    let n = end - start;
    if m == n {
        if !complete {
            proof.push(tree.subtree_root(start, end));
        }
        return;
    }
    let k = split_point(n);
    if m <= k {
        consistency_path(tree, m, start, start + k, complete, proof);
        proof.push(tree.subtree_root(start + k, end));
    } else {
        consistency_path(tree, m - k, start + k, end, false, proof);
        proof.push(tree.subtree_root(start, start + k));
    }
}

/// Checks that the tree of `old_size` leaves with head `old_root` is a prefix of the tree of
/// `new_size` leaves with head `new_root` (RFC 9162 2.1.4.2). Stricter than the RFC at the
/// edges: a proof from size 0 holds only for the empty tree's head, and between equal sizes
/// only for equal heads, both with an empty proof.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<()> {
    if old_size > new_size {
        return Err(AuditError::BadProof("the old tree is larger than the new one"));
    }
    if old_size == new_size || old_size == 0 {
        if !proof.is_empty() {
            return Err(AuditError::BadProof("a proof from the empty tree or between equal sizes must be empty"));
        }
        if old_size == 0 && *old_root != empty_root() {
            return Err(AuditError::BadProof("the old root is not the empty tree's root"));
        }
        if old_size == new_size && old_root != new_root {
            return Err(AuditError::BadProof("two trees of the same size with different roots"));
        }
        return Ok(());
    }
    let mut hashes = proof.iter();
    // When the old tree is a perfect subtree of the new one, its head is the proof's first hash
    // and was left out of it.
    let first = if old_size.is_power_of_two() {
        *old_root
    } else {
        *hashes.next().ok_or(AuditError::BadProof("the proof is empty"))?
    };
    let (mut node, mut last) = (old_size - 1, new_size - 1);
    while node & 1 == 1 {
        node >>= 1;
        last >>= 1;
    }
    let (mut old_hash, mut new_hash) = (first, first);
    for sibling in hashes {
        if last == 0 {
            return Err(AuditError::BadProof("the proof is longer than the path to the new root"));
        }
        if node & 1 == 1 || node == last {
            old_hash = node_hash(sibling, &old_hash);
            new_hash = node_hash(sibling, &new_hash);
            while node & 1 == 0 && node != 0 {
                node >>= 1;
                last >>= 1;
            }
        } else {
            new_hash = node_hash(&new_hash, sibling);
        }
        node >>= 1;
        last >>= 1;
    }
    if last != 0 {
        return Err(AuditError::BadProof("the proof is shorter than the path to the new root"));
    }
    if old_hash != *old_root {
        return Err(AuditError::BadProof("the proof does not lead to the old root"));
    }
    if new_hash != *new_root {
        return Err(AuditError::BadProof("the proof does not lead to the new root"));
    }
    Ok(())
}

#[cfg(test)]
#[path = "tree_tests.rs"]
mod tests;
