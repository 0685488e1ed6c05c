//! Properties of the tree, for random sizes up to thousands of entries: every proof the store
//! generates verifies against an independently computed root, and any altered hash, index or
//! size is refused.
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::as_conversions,
    reason = "test code: a failed unwrap or index is a failed test"
)]

use proofs::merkle::{verify_consistency, verify_inclusion};
use proofs::{Hash, LogStore, MemoryStore};
use proptest::prelude::*;

fn entry(i: u64) -> Vec<u8> {
    format!("entry {i}").into_bytes()
}

fn store(size: u64) -> MemoryStore {
    let mut store = MemoryStore::new();
    let entries: Vec<Vec<u8>> = (0..size).map(entry).collect();
    let refs: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
    store.append(&refs).unwrap();
    store
}

/// MTH of RFC 9162 section 2.1.1, straight from the definition: the reference the optimised
/// proof generation is checked against.
fn reference_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Hash::empty(),
        1 => leaves[0],
        n => {
            let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
            Hash::node(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
        }
    }
}

fn leaves(size: u64) -> Vec<Hash> {
    (0..size).map(|i| Hash::leaf(&entry(i))).collect()
}

fn flip(hash: &Hash, bit: usize) -> Hash {
    let mut bytes = hash.0;
    bytes[bit / 8 % 32] ^= 1 << (bit % 8);
    Hash(bytes)
}

#[test]
fn every_proof_in_small_trees_verifies() {
    let store = store(70);
    let leaves = leaves(70);
    for size in 1..=70u64 {
        let root = reference_root(&leaves[..size as usize]);
        assert_eq!(store.root_at(size).unwrap(), root, "size {size}");
        for index in 0..size {
            let proof = store.inclusion_proof(index, size).unwrap();
            verify_inclusion(&leaves[index as usize], index, size, &proof, &root).unwrap();
        }
        for old in 1..=size {
            let old_root = reference_root(&leaves[..old as usize]);
            let proof = store.consistency_proof(old, size).unwrap();
            verify_consistency(old, size, &proof, &old_root, &root).unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn inclusion_proofs_verify_and_tampering_is_refused(
        size in 1u64..4000,
        index_seed in any::<u64>(),
        other_seed in any::<u64>(),
        bit in 0usize..256,
    ) {
        let store = store(size);
        let leaves = leaves(size);
        let index = index_seed % size;
        let root = reference_root(&leaves);
        let leaf = leaves[index as usize];
        let proof = store.inclusion_proof(index, size).unwrap();
        prop_assert!(verify_inclusion(&leaf, index, size, &proof, &root).is_ok());

        // Any altered hash in the proof, the leaf or the root.
        for i in 0..proof.len() {
            let mut bad = proof.clone();
            bad[i] = flip(&bad[i], bit);
            prop_assert!(verify_inclusion(&leaf, index, size, &bad, &root).is_err());
        }
        prop_assert!(verify_inclusion(&flip(&leaf, bit), index, size, &proof, &root).is_err());
        prop_assert!(verify_inclusion(&leaf, index, size, &proof, &flip(&root, bit)).is_err());
        // A hash removed or added.
        if !proof.is_empty() {
            prop_assert!(verify_inclusion(&leaf, index, size, &proof[1..], &root).is_err());
            prop_assert!(verify_inclusion(&leaf, index, size, &proof[..proof.len() - 1], &root).is_err());
        }
        let mut longer = proof.clone();
        longer.push(leaf);
        prop_assert!(verify_inclusion(&leaf, index, size, &longer, &root).is_err());
        // Another index.
        let other = other_seed % size;
        if other != index {
            prop_assert!(verify_inclusion(&leaf, other, size, &proof, &root).is_err());
        }
        prop_assert!(verify_inclusion(&leaf, size, size, &proof, &root).is_err());
        // Another size, judged against that size's real root (a checkpoint binds the two).
        let other_size = 1 + other_seed % 4000;
        if other_size != size && index < other_size {
            let other_root = reference_root(&self::leaves(other_size));
            prop_assert!(verify_inclusion(&leaf, index, other_size, &proof, &other_root).is_err());
        }
    }

    #[test]
    fn consistency_proofs_verify_and_tampering_is_refused(
        new in 1u64..4000,
        old_seed in any::<u64>(),
        other_seed in any::<u64>(),
        bit in 0usize..256,
    ) {
        let store = store(new);
        let leaves = leaves(new);
        let old = 1 + old_seed % new;
        let old_root = reference_root(&leaves[..old as usize]);
        let new_root = reference_root(&leaves);
        let proof = store.consistency_proof(old, new).unwrap();
        prop_assert!(verify_consistency(old, new, &proof, &old_root, &new_root).is_ok());

        for i in 0..proof.len() {
            let mut bad = proof.clone();
            bad[i] = flip(&bad[i], bit);
            prop_assert!(verify_consistency(old, new, &bad, &old_root, &new_root).is_err());
        }
        prop_assert!(verify_consistency(old, new, &proof, &flip(&old_root, bit), &new_root).is_err());
        prop_assert!(verify_consistency(old, new, &proof, &old_root, &flip(&new_root, bit)).is_err());
        if !proof.is_empty() {
            prop_assert!(verify_consistency(old, new, &proof[1..], &old_root, &new_root).is_err());
            prop_assert!(verify_consistency(old, new, &proof[..proof.len() - 1], &old_root, &new_root).is_err());
        }
        let mut longer = proof.clone();
        longer.push(old_root);
        prop_assert!(verify_consistency(old, new, &longer, &old_root, &new_root).is_err());
        // Other sizes, with their real roots.
        let other_old = 1 + other_seed % new;
        if other_old != old {
            let other_root = reference_root(&leaves[..other_old as usize]);
            prop_assert!(verify_consistency(other_old, new, &proof, &other_root, &new_root).is_err());
        }
        let all = self::leaves(new + 1 + other_seed % 100);
        let bigger = all.len() as u64;
        prop_assert!(verify_consistency(old, bigger, &proof, &old_root, &reference_root(&all)).is_err());
        prop_assert!(verify_consistency(new, old, &proof, &new_root, &old_root).is_err() || old == new);
    }
}
