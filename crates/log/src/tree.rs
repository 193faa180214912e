//! RFC 9162 (Certificate Transparency 2.0) Merkle tree hashing, §2.1: leaf hashes
//! `SHA-256(0x00 ‖ leaf)`, interior nodes `SHA-256(0x01 ‖ left ‖ right)`, the tree over
//! `n` leaves split at the largest power of two below `n`; inclusion proofs (§2.1.3) and
//! consistency proofs (§2.1.4), made from the leaf hashes and verified by the RFC's
//! algorithms. Checked against the published CT test vectors.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// A proof that does not verify, or a request no proof exists for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The index or sizes are out of range (`index < size`, `first ≤ second ≤ leaves`).
    #[error("no proof for {what}")]
    OutOfRange {
        /// What was asked for.
        what: String,
    },
    /// The proof does not lead to the given root(s).
    #[error("the {0} proof does not verify")]
    Invalid(&'static str),
}

/// `SHA-256(0x00 ‖ leaf)`.
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    Sha256::new().chain_update([0x00]).chain_update(leaf).finalize().into()
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new().chain_update([0x01]).chain_update(left).chain_update(right).finalize().into()
}

/// The largest power of two strictly below `n` (`n ≥ 2`).
fn split(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The root of the tree over `leaves` (leaf hashes); SHA-256 of nothing for no leaves.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => Sha256::digest([]).into(),
        [one] => *one,
        _ => {
            let k = split(leaves.len());
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The inclusion proof of leaf `index` in the tree of the first `size` of `leaves`
/// (RFC 9162 `PATH`).
pub fn inclusion_proof(leaves: &[Hash], index: usize, size: usize) -> Result<Vec<Hash>, ProofError> {
    if index >= size || size > leaves.len() {
        return Err(ProofError::OutOfRange { what: format!("leaf {index} in a tree of {size}") });
    }
    fn path(m: usize, leaves: &[Hash], out: &mut Vec<Hash>) {
        if leaves.len() <= 1 {
            return;
        }
        let k = split(leaves.len());
        if m < k {
            path(m, &leaves[..k], out);
            out.push(root(&leaves[k..]));
        } else {
            path(m - k, &leaves[k..], out);
            out.push(root(&leaves[..k]));
        }
    }
    let mut out = Vec::new();
    path(index, &leaves[..size], &mut out);
    Ok(out)
}

/// The inclusion proofs of leaves `indexes` in the tree of the first `size` of `leaves`,
/// in one pass: each subtree's root is hashed once for all of them (about 2 · `size`
/// hashes in all, where [`inclusion_proof`] takes about `size` per proof). Each proof is
/// the one [`inclusion_proof`] makes.
pub fn inclusion_proofs(leaves: &[Hash], indexes: &[usize], size: usize) -> Result<Vec<Vec<Hash>>, ProofError> {
    if size > leaves.len() || indexes.iter().any(|&i| i >= size) {
        return Err(ProofError::OutOfRange { what: format!("leaves {indexes:?} in a tree of {size}") });
    }
    /// The root of `leaves[start..end]` (`end - start ≥ 1`), memoized by range.
    fn subtree(leaves: &[Hash], start: usize, end: usize, memo: &mut HashMap<(usize, usize), Hash>) -> Hash {
        if end - start == 1 {
            return leaves[start];
        }
        if let Some(hash) = memo.get(&(start, end)) {
            return *hash;
        }
        let k = split(end - start);
        let hash = node_hash(&subtree(leaves, start, start + k, memo), &subtree(leaves, start + k, end, memo));
        memo.insert((start, end), hash);
        hash
    }
    let mut memo = HashMap::new();
    let proofs = indexes
        .iter()
        .map(|&index| {
            let (mut start, mut end, mut path) = (0, size, Vec::new());
            while end - start > 1 {
                let k = split(end - start);
                if index < start + k {
                    path.push(subtree(leaves, start + k, end, &mut memo));
                    end = start + k;
                } else {
                    path.push(subtree(leaves, start, start + k, &mut memo));
                    start += k;
                }
            }
            // Found from the root down; a path lists the siblings from the leaf up.
            path.reverse();
            path
        })
        .collect();
    Ok(proofs)
}

/// The consistency proof from the tree of the first `first` leaves to that of the first
/// `second` (RFC 9162 `PROOF`); empty when `first` is 0 or equals `second`.
pub fn consistency_proof(leaves: &[Hash], first: usize, second: usize) -> Result<Vec<Hash>, ProofError> {
    if first > second || second > leaves.len() {
        return Err(ProofError::OutOfRange { what: format!("sizes {first} → {second}") });
    }
    fn subproof(m: usize, leaves: &[Hash], whole: bool, out: &mut Vec<Hash>) {
        let n = leaves.len();
        if m == n {
            if !whole {
                out.push(root(leaves));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            subproof(m, &leaves[..k], whole, out);
            out.push(root(&leaves[k..]));
        } else {
            subproof(m - k, &leaves[k..], false, out);
            out.push(root(&leaves[..k]));
        }
    }
    let mut out = Vec::new();
    if first > 0 && first < second {
        subproof(first, &leaves[..second], true, &mut out);
    }
    Ok(out)
}

/// Shifts `a` and `b` right together until `a`'s lowest bit is set or `a` is 0.
fn shift_while_even(a: &mut usize, b: &mut usize) {
    while *a != 0 && *a & 1 == 0 {
        *a >>= 1;
        *b >>= 1;
    }
}

/// Verifies that `leaf` (a leaf hash) is leaf `index` of the tree of `size` with `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: usize, size: usize, proof: &[Hash], root: &Hash) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange { what: format!("leaf {index} in a tree of {size}") });
    }
    let (mut f, mut s, mut r) = (index, size - 1, *leaf);
    for p in proof {
        if s == 0 {
            return Err(ProofError::Invalid("inclusion"));
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                shift_while_even(&mut f, &mut s);
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s == 0 && r == *root { Ok(()) } else { Err(ProofError::Invalid("inclusion")) }
}

/// Verifies that the tree of `first` leaves with `first_root` is a prefix of the tree of
/// `second` leaves with `second_root` (RFC 9162 §2.1.4.2; sizes 0 and equal sizes
/// included: an empty proof, and equal roots for equal sizes).
pub fn verify_consistency(
    first: usize,
    second: usize,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    let invalid = Err(ProofError::Invalid("consistency"));
    if first > second {
        return Err(ProofError::OutOfRange { what: format!("sizes {first} → {second}") });
    }
    if first == 0 || first == second {
        let same = first == 0 || first_root == second_root;
        return if proof.is_empty() && same { Ok(()) } else { invalid };
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let Some((&start, rest)) = path.split_first() else { return invalid };
    let (mut f, mut s) = (first - 1, second - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (start, start);
    for c in rest {
        if s == 0 {
            return invalid;
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f & 1 == 0 {
                shift_while_even(&mut f, &mut s);
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if fr == *first_root && sr == *second_root && s == 0 { Ok(()) } else { invalid }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(hex: &str) -> Hash {
        hex::decode(hex).unwrap().try_into().unwrap()
    }

    /// The Certificate Transparency reference tree (certificate-transparency-go's
    /// `merkle` tests; the same vectors as RFC 6962 implementations use).
    fn ct_leaves() -> Vec<Hash> {
        ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
            .iter()
            .map(|l| leaf_hash(&hex::decode(l).unwrap()))
            .collect()
    }

    const CT_ROOTS: [&str; 9] = [
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

    #[test]
    fn roots_match_the_certificate_transparency_vectors() {
        let leaves = ct_leaves();
        for (size, want) in CT_ROOTS.iter().enumerate() {
            assert_eq!(root(&leaves[..size]), h(want), "size {size}");
        }
    }

    #[test]
    fn proofs_match_the_certificate_transparency_vectors() {
        let leaves = ct_leaves();
        let root8 = h(CT_ROOTS[8]);
        for (index, want) in [
            (
                0,
                vec![
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                vec![
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ] {
            let want: Vec<Hash> = want.into_iter().map(h).collect();
            assert_eq!(inclusion_proof(&leaves, index, 8).unwrap(), want);
            verify_inclusion(&leaves[index], index, 8, &want, &root8).unwrap();
        }
        for (first, want) in [
            (
                2,
                vec![
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                vec![
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ] {
            let want: Vec<Hash> = want.into_iter().map(h).collect();
            assert_eq!(consistency_proof(&leaves, first, 8).unwrap(), want);
            verify_consistency(first, 8, &h(CT_ROOTS[first]), &root8, &want).unwrap();
        }
    }

    #[test]
    fn every_proof_of_every_shape_verifies_and_a_mangled_one_does_not() {
        let leaves: Vec<Hash> = (0..37u8).map(|i| leaf_hash(&[i, i.wrapping_mul(7)])).collect();
        let roots: Vec<Hash> = (0..=leaves.len()).map(|n| root(&leaves[..n])).collect();
        for size in 1..=leaves.len() {
            for index in 0..size {
                let proof = inclusion_proof(&leaves, index, size).unwrap();
                verify_inclusion(&leaves[index], index, size, &proof, &roots[size]).unwrap();
                assert!(
                    verify_inclusion(&leaves[(index + 1) % size], index, size, &proof, &roots[size]).is_err()
                        || size == 1
                );
                if let Some(last) = proof.len().checked_sub(1) {
                    let mut bad = proof.clone();
                    bad[last][7] ^= 1;
                    assert!(verify_inclusion(&leaves[index], index, size, &bad, &roots[size]).is_err());
                    assert!(verify_inclusion(&leaves[index], index, size, &proof[..last], &roots[size]).is_err());
                }
            }
            let all: Vec<usize> = (0..size).collect();
            let one_pass = inclusion_proofs(&leaves, &all, size).unwrap();
            for (index, proof) in one_pass.iter().enumerate() {
                assert_eq!(*proof, inclusion_proof(&leaves, index, size).unwrap(), "leaf {index} of {size}");
            }
            assert!(inclusion_proofs(&leaves, &[size], size).is_err());
            for first in 0..=size {
                let proof = consistency_proof(&leaves, first, size).unwrap();
                verify_consistency(first, size, &roots[first], &roots[size], &proof).unwrap();
                if first > 0 && first < size {
                    // A fork: a different tree of the same first size.
                    let mut forked = leaves[..first].to_vec();
                    forked[first - 1][0] ^= 1;
                    assert!(verify_consistency(first, size, &root(&forked), &roots[size], &proof).is_err());
                    let mut bad = proof.clone();
                    bad[0][3] ^= 0x80;
                    assert!(verify_consistency(first, size, &roots[first], &roots[size], &bad).is_err());
                    assert!(verify_consistency(first, size, &roots[first], &roots[size], &[]).is_err());
                }
            }
        }
        assert!(verify_consistency(4, 4, &roots[4], &roots[5], &[]).is_err());
        assert!(inclusion_proof(&leaves, 5, 5).is_err());
        assert!(consistency_proof(&leaves, 6, 5).is_err());
        assert!(verify_consistency(6, 5, &roots[6], &roots[5], &[]).is_err());
    }
}
