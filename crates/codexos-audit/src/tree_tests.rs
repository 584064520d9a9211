#![allow(clippy::unwrap_used, clippy::expect_used)]

use pretty_assertions::assert_eq;
use proptest::prelude::*;

use super::*;

/// The eight leaves of the RFC 6962 test vectors published with Certificate Transparency.
const VECTOR_LEAVES: [&[u8]; 8] = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
];

/// The published tree heads for sizes 0 to 8.
const VECTOR_ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// The published inclusion proofs: (leaf index, tree size, proof).
const VECTOR_INCLUSION: [(u64, u64, &[&str]); 4] = [
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

/// The published consistency proofs: (old size, new size, proof).
const VECTOR_CONSISTENCY: [(u64, u64, &[&str]); 5] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

fn h(text: &str) -> Hash {
    let mut hash = [0; 32];
    hex::decode_to_slice(text, &mut hash).unwrap();
    hash
}

fn hashes(texts: &[&str]) -> Vec<Hash> {
    texts.iter().map(|text| h(text)).collect()
}

fn vector_leaves() -> Vec<Hash> {
    VECTOR_LEAVES.iter().map(|data| leaf_hash(data)).collect()
}

/// Distinct leaves for generated trees.
fn leaves(n: u64) -> Vec<Hash> {
    (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
}

fn tree_of(leaves: &[Hash]) -> Tree {
    let mut tree = Tree::default();
    for leaf in leaves {
        tree.push(*leaf);
    }
    tree
}

#[test]
fn roots_match_the_published_vectors_at_every_size() {
    let leaves = vector_leaves();
    let tree = tree_of(&leaves);
    let mut frontier = Frontier::new();
    assert_eq!(hex::encode(frontier.root()), VECTOR_ROOTS[0]);
    for size in 0..=leaves.len() {
        assert_eq!(hex::encode(root(&leaves[..size])), VECTOR_ROOTS[size], "size {size}");
        assert_eq!(hex::encode(tree.root_at(size as u64)), VECTOR_ROOTS[size], "size {size}");
        if size > 0 {
            frontier.push(leaves[size - 1]);
            assert_eq!(hex::encode(frontier.root()), VECTOR_ROOTS[size], "size {size}");
        }
    }
}

#[test]
fn inclusion_proofs_match_the_published_vectors() {
    let leaves = vector_leaves();
    for (index, size, expected) in VECTOR_INCLUSION {
        let prefix = &leaves[..size as usize];
        let proof = inclusion_proof(prefix, index).unwrap();
        assert_eq!(proof, hashes(expected), "leaf {index} of {size}");
        assert_eq!(prove_inclusion(&tree_of(prefix), index).unwrap(), proof);
        let root = h(VECTOR_ROOTS[size as usize]);
        verify_inclusion(&leaves[index as usize], index, size, &proof, &root).unwrap();
        // The same proof says nothing about another leaf, index, size or root.
        assert!(verify_inclusion(&leaves[index as usize], index ^ 1, size, &proof, &root).is_err());
        assert!(verify_inclusion(&leaves[index as usize], index, size * 2, &proof, &root).is_err());
        assert!(verify_inclusion(&leaf_hash(b"another"), index, size, &proof, &root).is_err());
        assert!(verify_inclusion(&leaves[index as usize], index, size, &proof, &empty_root()).is_err());
        assert!(verify_inclusion(&leaves[index as usize], index, size, &proof[1..], &root).is_err());
        let longer: Vec<Hash> = proof.iter().copied().chain([root]).collect();
        assert!(verify_inclusion(&leaves[index as usize], index, size, &longer, &root).is_err());
    }
}

#[test]
fn consistency_proofs_match_the_published_vectors() {
    let leaves = vector_leaves();
    for (old_size, new_size, expected) in VECTOR_CONSISTENCY {
        let prefix = &leaves[..new_size as usize];
        let proof = consistency_proof(prefix, old_size).unwrap();
        assert_eq!(proof, hashes(expected), "{old_size} to {new_size}");
        assert_eq!(prove_consistency(&tree_of(prefix), old_size).unwrap(), proof);
        let (old_root, new_root) = (h(VECTOR_ROOTS[old_size as usize]), h(VECTOR_ROOTS[new_size as usize]));
        verify_consistency(old_size, new_size, &old_root, &new_root, &proof).unwrap();
        if old_size < new_size {
            assert!(verify_consistency(old_size, new_size, &new_root, &old_root, &proof).is_err());
            assert!(verify_consistency(old_size + 1, new_size, &old_root, &new_root, &proof).is_err());
            assert!(verify_consistency(old_size, new_size * 2, &old_root, &new_root, &proof).is_err());
            assert!(verify_consistency(old_size, new_size, &old_root, &new_root, &[]).is_err());
            assert!(verify_consistency(old_size, new_size, &old_root, &new_root, &proof[1..]).is_err());
        }
    }
}

#[test]
fn edge_cases_of_the_proofs() {
    let leaves = leaves(5);
    assert!(matches!(inclusion_proof(&leaves, 5), Err(AuditError::IndexOutOfRange { index: 5, size: 5 })));
    assert!(matches!(inclusion_proof(&[], 0), Err(AuditError::IndexOutOfRange { index: 0, size: 0 })));
    assert!(matches!(consistency_proof(&leaves, 6), Err(AuditError::SizeOutOfRange { old_size: 6, size: 5 })));
    assert_eq!(inclusion_proof(&leaves[..1], 0).unwrap(), Vec::<Hash>::new());
    verify_inclusion(&leaves[0], 0, 1, &[], &leaves[0]).unwrap();
    assert!(verify_inclusion(&leaves[0], 0, 0, &[], &leaves[0]).is_err());

    let (empty, whole) = (empty_root(), root(&leaves));
    assert_eq!(consistency_proof(&leaves, 0).unwrap(), Vec::<Hash>::new());
    assert_eq!(consistency_proof(&leaves, 5).unwrap(), Vec::<Hash>::new());
    verify_consistency(0, 5, &empty, &whole, &[]).unwrap();
    verify_consistency(5, 5, &whole, &whole, &[]).unwrap();
    verify_consistency(0, 0, &empty, &empty, &[]).unwrap();
    // Only the empty tree's head is the head of size 0; equal sizes need equal heads.
    assert!(verify_consistency(0, 5, &whole, &whole, &[]).is_err());
    assert!(verify_consistency(5, 5, &whole, &empty, &[]).is_err());
    assert!(verify_consistency(5, 5, &whole, &whole, &[whole]).is_err());
    assert!(verify_consistency(5, 4, &whole, &whole, &[]).is_err());
}

#[test]
fn every_proof_of_small_trees_verifies() {
    let all = leaves(40);
    let tree = tree_of(&all);
    for size in 1..=all.len() as u64 {
        let prefix = &all[..size as usize];
        let head = root(prefix);
        assert_eq!(tree.root_at(size), head);
        for index in 0..size {
            let proof = inclusion_proof(prefix, index).unwrap();
            verify_inclusion(&prefix[index as usize], index, size, &proof, &head).unwrap();
        }
        for old_size in 0..=size {
            let proof = consistency_proof(prefix, old_size).unwrap();
            verify_consistency(old_size, size, &root(&prefix[..old_size as usize]), &head, &proof).unwrap();
        }
    }
}

#[test]
fn frontier_text_is_strict() {
    let mut frontier = Frontier::new();
    assert_eq!(frontier.to_text(), "0:");
    assert_eq!(Frontier::from_text("0:").unwrap(), frontier);
    for leaf in leaves(5) {
        frontier.push(leaf);
    }
    let text = frontier.to_text();
    assert_eq!(text.matches(',').count(), 1, "5 = 4 + 1: two perfect subtrees");
    assert_eq!(Frontier::from_text(&text).unwrap(), frontier);

    let (size, hashes) = text.split_once(':').unwrap();
    let first = hashes.split(',').next().unwrap();
    for bad in [
        String::new(),
        "0".to_string(),
        format!("05:{hashes}"),
        format!("+5:{hashes}"),
        format!("4:{hashes}"),
        format!("7:{hashes}"),
        format!("{size}:{first}"),
        format!("{size}:{hashes},"),
        format!("{size}:{}", hashes.to_uppercase()),
        format!("{size}:{}", &hashes[1..]),
        format!("{size}: {hashes}"),
        format!("1:{first}0"),
        "18446744073709551616:".to_string(),
    ] {
        assert!(Frontier::from_text(&bad).is_err(), "{bad:?} was accepted");
    }
}

#[test]
fn frontier_serializes_as_its_text() {
    let mut frontier = Frontier::new();
    for leaf in leaves(3) {
        frontier.push(leaf);
    }
    let json = serde_json::to_string(&frontier).unwrap();
    assert_eq!(json, format!("\"{}\"", frontier.to_text()));
    assert_eq!(serde_json::from_str::<Frontier>(&json).unwrap(), frontier);
    assert!(serde_json::from_str::<Frontier>("\"3:\"").is_err());
}

/// A leaf, proof or root with one bit flipped.
fn flip(hash: &Hash, bit: usize) -> Hash {
    let mut flipped = *hash;
    flipped[bit / 8 % 32] ^= 1 << (bit % 8);
    flipped
}

proptest! {
    #[test]
    fn inclusion_proofs_verify_and_bit_flips_fail(
        size in 1u64..300,
        index_seed in any::<u64>(),
        bit in 0usize..256,
        element_seed in any::<usize>(),
    ) {
        let leaves = leaves(size);
        let index = index_seed % size;
        let head = root(&leaves);
        let leaf = leaves[index as usize];
        let proof = inclusion_proof(&leaves, index).unwrap();
        prop_assert_eq!(&prove_inclusion(&tree_of(&leaves), index).unwrap(), &proof);
        prop_assert!(verify_inclusion(&leaf, index, size, &proof, &head).is_ok());
        prop_assert!(verify_inclusion(&flip(&leaf, bit), index, size, &proof, &head).is_err());
        prop_assert!(verify_inclusion(&leaf, index, size, &proof, &flip(&head, bit)).is_err());
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let element = element_seed % bad.len();
            bad[element] = flip(&bad[element], bit);
            prop_assert!(verify_inclusion(&leaf, index, size, &bad, &head).is_err());
        }
    }

    #[test]
    fn consistency_proofs_verify(new_size in 1u64..300, old_seed in any::<u64>(), bit in 0usize..256) {
        let leaves = leaves(new_size);
        let old_size = old_seed % (new_size + 1);
        let (old_root, new_root) = (root(&leaves[..old_size as usize]), root(&leaves));
        let proof = consistency_proof(&leaves, old_size).unwrap();
        prop_assert_eq!(&prove_consistency(&tree_of(&leaves), old_size).unwrap(), &proof);
        prop_assert!(verify_consistency(old_size, new_size, &old_root, &new_root, &proof).is_ok());
        // Every tree extends the empty one: only a proof from a non-empty tree binds the roots.
        if old_size > 0 {
            prop_assert!(verify_consistency(old_size, new_size, &old_root, &flip(&new_root, bit), &proof).is_err());
            prop_assert!(verify_consistency(old_size, new_size, &flip(&old_root, bit), &new_root, &proof).is_err());
        }
        if let Some(first) = proof.first() {
            let mut bad = proof.clone();
            bad[0] = flip(first, bit);
            prop_assert!(verify_consistency(old_size, new_size, &old_root, &new_root, &bad).is_err());
        }
    }

    #[test]
    fn frontier_root_is_the_tree_head_after_every_push(size in 0u64..300) {
        let leaves = leaves(size);
        let mut frontier = Frontier::new();
        let mut tree = Tree::default();
        for (n, leaf) in leaves.iter().enumerate() {
            frontier.push(*leaf);
            tree.push(*leaf);
            let head = root(&leaves[..=n]);
            prop_assert_eq!(frontier.root(), head);
            prop_assert_eq!(tree.root_at(n as u64 + 1), head);
            prop_assert_eq!(frontier.size(), n as u64 + 1);
        }
        prop_assert_eq!(Frontier::from_text(&frontier.to_text()).unwrap(), frontier);
    }

    #[test]
    fn frontier_text_never_panics(text in ".{0,200}") {
        if let Ok(frontier) = Frontier::from_text(&text) {
            prop_assert_eq!(frontier.to_text(), text);
        }
    }
}
