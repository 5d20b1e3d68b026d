//! Tests of the Merkle math: hand-computed trees, every proof up to 40 leaves, tampering.
use super::*;
use proptest::prelude::*;

fn leaves(n: u64) -> Vec<Hash> {
    (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
}

fn flipped(proof: &[Hash], element: usize, bit: usize) -> Vec<Hash> {
    let mut p = proof.to_vec();
    p[element][bit / 8] ^= 1 << (bit % 8);
    p
}

/// The bits to flip in a hash: all 256 in small trees; beyond, one per byte (moving with
/// `salt`), which still catches a check that reads only part of a hash, at an eighth of
/// the cost.
fn bits_to_flip(size: u64, salt: usize) -> Vec<usize> {
    if size <= 16 {
        (0..256).collect()
    } else {
        (0..32).map(|byte| byte * 8 + (byte + salt) % 8).collect()
    }
}

#[test]
fn hashes_have_the_rfc_prefixes() {
    assert_eq!(
        EMPTY_ROOT,
        <Hash>::try_from(digest::digest(&digest::SHA256, b"").as_ref()).unwrap()
    );
    assert_eq!(root_from_leaf_hashes(&[]), EMPTY_ROOT);
    let expect_leaf = digest::digest(&digest::SHA256, b"\x00abc");
    assert_eq!(leaf_hash(b"abc").as_slice(), expect_leaf.as_ref());
    let (l, r) = ([1u8; 32], [2u8; 32]);
    let mut input = vec![1u8];
    input.extend_from_slice(&l);
    input.extend_from_slice(&r);
    assert_eq!(
        node_hash(&l, &r).as_slice(),
        digest::digest(&digest::SHA256, &input).as_ref()
    );
}

#[test]
fn hash_from_slice_takes_only_32_bytes() {
    assert_eq!(hash_from_slice(&[7; 32]), Ok([7; 32]));
    assert_eq!(
        hash_from_slice(&[7; 31]),
        Err(ProofError::HashLength { got: 31 })
    );
    assert_eq!(hash_from_slice(&[]), Err(ProofError::HashLength { got: 0 }));
}

#[test]
fn incremental_roots_match_the_definition() {
    let all = leaves(64);
    let mut tree = Tree::new();
    assert_eq!(tree.root(0), Ok(EMPTY_ROOT));
    for (n, leaf) in all.iter().enumerate() {
        let added = tree.append(*leaf);
        assert_eq!(
            added[0],
            Node {
                level: 0,
                index: n as u64,
                hash: *leaf
            }
        );
        assert_eq!(added.len(), 1 + (n as u64 + 1).trailing_zeros() as usize);
        let size = n as u64 + 1;
        assert_eq!(tree.size(), size);
        assert_eq!(tree.root(size), Ok(root_from_leaf_hashes(&all[..=n])));
        assert_eq!(
            tree.root(size + 1),
            Err(ProofError::SizeBeyondTree {
                size: size + 1,
                tree_size: size
            })
        );
    }
    // Every historical size is still answered from the final tree.
    for size in 0..=64 {
        assert_eq!(
            tree.root(size),
            Ok(root_from_leaf_hashes(&all[..size as usize]))
        );
    }
    assert_eq!(Tree::from_leaf_hashes(all.iter().copied()), tree);
}

#[test]
fn levels_round_trip_and_bad_shapes_are_refused() {
    for n in 0..40 {
        let tree = Tree::from_leaf_hashes(leaves(n));
        let restored = Tree::from_levels(tree.levels().to_vec()).unwrap();
        assert_eq!(restored, tree);
    }
    let mut levels = Tree::from_leaf_hashes(leaves(5)).levels().to_vec();
    levels[1].pop();
    assert_eq!(
        Tree::from_levels(levels),
        Err(ProofError::MalformedLevels { level: 1 })
    );
    let mut levels = Tree::from_leaf_hashes(leaves(4)).levels().to_vec();
    levels.push(Vec::new());
    assert!(Tree::from_levels(levels).is_err());
    assert!(Tree::from_levels(vec![Vec::new()]).is_err());
    assert!(Tree::from_levels(vec![leaves(2)]).is_err());
}

#[test]
fn every_inclusion_proof_up_to_40_verifies_and_tampering_fails() {
    const MAX: u64 = 40;
    let all = leaves(MAX);
    let tree = Tree::from_leaf_hashes(all.iter().copied());
    let mut checked = 0;
    for size in 1..=MAX {
        let root = tree.root(size).unwrap();
        for index in 0..size {
            let leaf = all[index as usize];
            let proof = tree.inclusion_proof(index, size).unwrap();
            assert_eq!(proof.len(), inclusion_proof_len(index, size));
            assert_eq!(verify_inclusion(&leaf, index, size, &proof, &root), Ok(()));
            checked += 1;

            for e in 0..proof.len() {
                for bit in bits_to_flip(size, e) {
                    let bad = flipped(&proof, e, bit);
                    assert_eq!(
                        verify_inclusion(&leaf, index, size, &bad, &root),
                        Err(ProofError::RootMismatch)
                    );
                }
            }
            for bit in bits_to_flip(size, index as usize) {
                let bad_leaf = flipped(&[leaf], 0, bit)[0];
                assert!(verify_inclusion(&bad_leaf, index, size, &proof, &root).is_err());
                let bad_root = flipped(&[root], 0, bit)[0];
                assert!(verify_inclusion(&leaf, index, size, &proof, &bad_root).is_err());
            }
            // Another index fails, with this leaf or with that index's own leaf.
            for other in (0..size).filter(|&o| o != index) {
                assert!(verify_inclusion(&leaf, other, size, &proof, &root).is_err());
                let their_leaf = all[other as usize];
                assert!(verify_inclusion(&their_leaf, other, size, &proof, &root).is_err());
            }
            // Another size verifies only where its own proof is this very proof (leaf 0 of
            // 5 and of 6 share one, for instance): the root is what binds the size.
            for other in (index + 1..=MAX).filter(|&s| s != size) {
                let other_root = tree.root(other).unwrap();
                let same = tree.inclusion_proof(index, other).unwrap() == proof;
                assert_eq!(
                    verify_inclusion(&leaf, index, other, &proof, &other_root).is_ok(),
                    same,
                    "leaf {index}, size {size} proof checked against size {other}"
                );
                if proof.len() != inclusion_proof_len(index, other) {
                    assert!(matches!(
                        verify_inclusion(&leaf, index, other, &proof, &root),
                        Err(ProofError::ProofLength { .. })
                    ));
                }
            }
            // One hash too many or too few.
            let mut longer = proof.clone();
            longer.push(root);
            assert!(matches!(
                verify_inclusion(&leaf, index, size, &longer, &root),
                Err(ProofError::ProofLength { .. })
            ));
            let mut prepended = vec![leaf];
            prepended.extend_from_slice(&proof);
            assert!(verify_inclusion(&leaf, index, size, &prepended, &root).is_err());
            if !proof.is_empty() {
                assert!(matches!(
                    verify_inclusion(&leaf, index, size, &proof[1..], &root),
                    Err(ProofError::ProofLength { .. })
                ));
            }
        }
        assert_eq!(
            verify_inclusion(&all[0], size, size, &[], &root),
            Err(ProofError::IndexOutOfRange { index: size, size })
        );
        assert_eq!(
            tree.inclusion_proof(size, size),
            Err(ProofError::IndexOutOfRange { index: size, size })
        );
    }
    assert_eq!(checked, MAX * (MAX + 1) / 2);
    assert!(tree.inclusion_proof(0, MAX + 1).is_err());
    assert!(verify_inclusion(&all[0], 0, 0, &[], &EMPTY_ROOT).is_err());
}

#[test]
fn every_consistency_proof_up_to_40_verifies_and_tampering_fails() {
    const MAX: u64 = 40;
    let all = leaves(MAX);
    let tree = Tree::from_leaf_hashes(all.iter().copied());
    let roots: Vec<Hash> = (0..=MAX).map(|s| tree.root(s).unwrap()).collect();
    let proofs: std::collections::HashMap<(u64, u64), Vec<Hash>> = (1..=MAX)
        .flat_map(|s2| (1..=s2).map(move |s1| (s1, s2)))
        .map(|(s1, s2)| ((s1, s2), tree.consistency_proof(s1, s2).unwrap()))
        .collect();
    let mut checked = 0;
    for size2 in 1..=MAX {
        let root2 = roots[size2 as usize];
        for size1 in 1..=size2 {
            let root1 = roots[size1 as usize];
            let proof = &proofs[&(size1, size2)];
            if size1 < size2 {
                assert_eq!(proof.len(), consistency_proof_len(size1, size2));
            } else {
                assert!(proof.is_empty());
            }
            assert_eq!(
                verify_consistency(size1, size2, proof, &root1, &root2),
                Ok(())
            );
            assert_eq!(
                root_from_consistency_proof(size1, size2, proof, &root1),
                Ok(root2)
            );
            checked += 1;

            for e in 0..proof.len() {
                for bit in bits_to_flip(size2, e + size1 as usize) {
                    let bad = flipped(proof, e, bit);
                    assert!(verify_consistency(size1, size2, &bad, &root1, &root2).is_err());
                }
            }
            for bit in bits_to_flip(size2, size1 as usize) {
                let bad1 = flipped(&[root1], 0, bit)[0];
                assert!(verify_consistency(size1, size2, proof, &bad1, &root2).is_err());
                let bad2 = flipped(&[root2], 0, bit)[0];
                assert!(verify_consistency(size1, size2, proof, &root1, &bad2).is_err());
            }
            // Other sizes (with their own true roots) verify only where their own proof is
            // this very proof. Every other pair in small trees; beyond, the size changes
            // the upstream probes make (±1, ×2, ÷2, XOR 2).
            let nudged = |s: u64| [s.wrapping_sub(1), s + 1, s * 2, s / 2, s ^ 2, s];
            let others: Vec<(u64, u64)> = if size2 <= 20 {
                (1..=20)
                    .flat_map(|o2| (1..=o2).map(move |o1| (o1, o2)))
                    .collect()
            } else {
                nudged(size1)
                    .into_iter()
                    .flat_map(|o1| nudged(size2).into_iter().map(move |o2| (o1, o2)))
                    .collect()
            };
            for (other1, other2) in others {
                if (other1, other2) == (size1, size2) {
                    continue;
                }
                // Sizes beyond this tree have no true root to check against. (Checked
                // against the roots of `size1`/`size2` instead, some verify: a proof for
                // 1->21 also verifies as 2->42, every node one level up. A root hash does
                // not commit to the tree size; the signed checkpoint does.)
                let (Some(r1), Some(r2)) = (roots.get(other1 as usize), roots.get(other2 as usize))
                else {
                    continue;
                };
                let ok = verify_consistency(other1, other2, proof, r1, r2).is_ok();
                let same = proofs.get(&(other1, other2)) == Some(proof);
                assert_eq!(
                    ok, same,
                    "proof {size1}->{size2} checked as {other1}->{other2}"
                );
            }
            // One hash too many or too few.
            let mut longer = proof.clone();
            longer.push(root2);
            assert!(verify_consistency(size1, size2, &longer, &root1, &root2).is_err());
            let mut prepended = vec![root1];
            prepended.extend_from_slice(proof);
            assert!(verify_consistency(size1, size2, &prepended, &root1, &root2).is_err());
            if !proof.is_empty() {
                assert!(verify_consistency(size1, size2, &proof[1..], &root1, &root2).is_err());
                assert!(verify_consistency(
                    size1,
                    size2,
                    &proof[..proof.len() - 1],
                    &root1,
                    &root2
                )
                .is_err());
            }
        }
        // From the empty tree: refused, whatever the proof.
        assert_eq!(
            verify_consistency(0, size2, &[], &EMPTY_ROOT, &root2),
            Err(ProofError::EmptyOldTree)
        );
        assert_eq!(tree.consistency_proof(0, size2), Ok(Vec::new()));
        // Backwards: refused.
        assert_eq!(
            verify_consistency(size2, size2 - 1, &[], &root2, &roots[size2 as usize - 1]),
            Err(ProofError::SizesOutOfOrder {
                size1: size2,
                size2: size2 - 1
            })
        );
        assert!(tree.consistency_proof(size2, size2 - 1).is_err());
    }
    assert_eq!(checked, MAX * (MAX + 1) / 2);
    // Equal sizes: equal roots and an empty proof.
    assert_eq!(
        verify_consistency(0, 0, &[], &EMPTY_ROOT, &EMPTY_ROOT),
        Ok(())
    );
    assert_eq!(
        verify_consistency(3, 3, &[], &roots[3], &roots[4]),
        Err(ProofError::RootMismatch)
    );
    assert_eq!(
        verify_consistency(3, 3, &[roots[3]], &roots[3], &roots[3]),
        Err(ProofError::ProofLength { got: 1, want: 0 })
    );
    assert!(tree.consistency_proof(1, MAX + 1).is_err());
}

#[test]
fn errors_fold_into_verification_errors() {
    let e: Error = ProofError::RootMismatch.into();
    assert_eq!(e.kind(), crate::error::ErrorKind::Verification);
    assert_eq!(e.message(), ProofError::RootMismatch.to_string());
    let e = ProofError::ProofLength { got: 4, want: 3 };
    assert_eq!(
        e.to_string(),
        "Merkle proof has 4 hashes where these tree sizes call for 3"
    );
}

proptest! {
    #[test]
    fn random_trees_prove_and_verify(
        size in 1u64..2000,
        index_seed in any::<u64>(),
        old_seed in any::<u64>(),
        element_seed in any::<usize>(),
        bit in 0usize..256,
    ) {
        let all = leaves(size);
        let tree = Tree::from_leaf_hashes(all.iter().copied());
        let root = tree.root(size).unwrap();
        prop_assert_eq!(root, root_from_leaf_hashes(&all));

        let index = index_seed % size;
        let leaf = all[index as usize];
        let proof = tree.inclusion_proof(index, size).unwrap();
        prop_assert_eq!(proof.len(), inclusion_proof_len(index, size));
        prop_assert_eq!(verify_inclusion(&leaf, index, size, &proof, &root), Ok(()));
        if !proof.is_empty() {
            let bad = flipped(&proof, element_seed % proof.len(), bit);
            prop_assert!(verify_inclusion(&leaf, index, size, &bad, &root).is_err());
        }
        prop_assert!(verify_inclusion(&leaf, (index + 1) % size, size, &proof, &root).is_err()
            || size == 1);

        let old = 1 + old_seed % size;
        let old_root = tree.root(old).unwrap();
        prop_assert_eq!(old_root, root_from_leaf_hashes(&all[..old as usize]));
        let proof = tree.consistency_proof(old, size).unwrap();
        prop_assert_eq!(verify_consistency(old, size, &proof, &old_root, &root), Ok(()));
        if !proof.is_empty() {
            let bad = flipped(&proof, element_seed % proof.len(), bit);
            prop_assert!(verify_consistency(old, size, &bad, &old_root, &root).is_err());
            prop_assert!(verify_consistency(old, size, &proof[1..], &old_root, &root).is_err());
        }
        // The old tree's leaf is provable in the old tree too.
        let old_index = index % old;
        let old_proof = tree.inclusion_proof(old_index, old).unwrap();
        prop_assert_eq!(
            verify_inclusion(&all[old_index as usize], old_index, old, &old_proof, &old_root),
            Ok(())
        );
    }
}

#[test]
fn truncating_gives_the_tree_of_the_first_leaves() {
    let all = leaves(40);
    for n in 0..=40u64 {
        for k in 0..=n + 2 {
            let mut t = Tree::from_leaf_hashes(all[..n as usize].iter().copied());
            t.truncate(k);
            let want = Tree::from_leaf_hashes(all[..k.min(n) as usize].iter().copied());
            assert_eq!(t, want, "{n} leaves cut to {k}");
        }
    }
}
