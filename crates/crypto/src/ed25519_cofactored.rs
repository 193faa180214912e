//! Ed25519 signature checks (RFC 8032) with the cofactored equation, for one signature or
//! many under one key, such that both accept exactly the same signatures.
//!
//! RFC 8032 §5.1.7 lets a verifier check either `[s]B = R + [h]A` (what ring, and so
//! webpki, checks) or `[8][s]B = [8]R + [8][h]A`. Only the second can be checked for many
//! signatures at once without the batch accepting a signature that the check of it alone
//! refuses: in a random combination, a small-order component of one `R` cancels with
//! probability 1/8 (Chalkias, Garillot, Nikolaenko, "Taming the many EdDSAs", 2020; the
//! rules of Zcash's ZIP 215). privagg checks envelope signatures this way at both ends:
//! the server checks the k envelopes one client sends in one batch, each recipient checks
//! its own, and a server that accepted an envelope its recipient then refused would let
//! one client stall its neighbours.
//!
//! A signature `(R, s)` on `M` under `A` is accepted iff `s` is canonical (< ℓ), `R`
//! decodes to a curve point, and `[8]([s]B − R − [h]A)` is the identity, with
//! `h = SHA-512(R ‖ A ‖ M) mod ℓ` over the encodings as given. Every signature ring
//! accepts is accepted here (it meets the uncofactored equation); the converse fails only
//! for a signature with a small-order component or a non-canonical `R`, which only the
//! key's holder can make.
//!
//! The batch check, for weights `z_i` (128 bits, odd), is
//! `[8]([Σ z_i·s_i]B − Σ z_i·R_i − [Σ z_i·h_i]A) = identity`: one multiscalar
//! multiplication over `k + 2` points instead of `k` double-base multiplications. If every
//! signature passes alone the batch passes, always; if one fails alone, the batch passes
//! with probability below 2⁻¹²⁷. The weights are derived by hashing the key, the messages
//! and the signatures, so they are fixed only once all of them are.

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use sha2::{Digest, Sha512};

use crate::identity::SIGNATURE_LEN;

/// Domain-separation label of the batch weights.
const WEIGHTS_LABEL: &[u8] = b"privagg/v1 ed25519-cofactored-batch-weights";

/// An Ed25519 public key, decoded once to check many signatures under it.
#[derive(Clone, Copy, Debug)]
pub struct VerifyingKey {
    encoding: [u8; 32],
    point: EdwardsPoint,
}

impl VerifyingKey {
    /// The key with this encoding, or `None` if it does not decode to a curve point or
    /// the point has small order (under such a key `[8][h]A` vanishes and anyone could
    /// sign anything).
    pub fn from_bytes(encoding: &[u8; 32]) -> Option<Self> {
        let point = CompressedEdwardsY(*encoding).decompress()?;
        (!point.is_small_order()).then_some(Self { encoding: *encoding, point })
    }

    /// Whether `signature` on `message` is valid under this key (the module's rule).
    pub fn verify(&self, message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
        self.verify_all(&[(message, signature)])
    }

    /// Whether every `(message, signature)` is valid under this key: `true` exactly when
    /// [`VerifyingKey::verify`] is true for each (but for a chance below 2⁻¹²⁷ that a bad
    /// one passes), and for an empty list.
    pub fn verify_all(&self, items: &[(&[u8], &[u8; SIGNATURE_LEN])]) -> bool {
        let weights = self.weights(items);
        let mut scalars = Vec::with_capacity(items.len() + 2);
        let mut points = Vec::with_capacity(items.len() + 2);
        let (mut s_sum, mut h_sum) = (Scalar::ZERO, Scalar::ZERO);
        for ((message, signature), z) in items.iter().zip(weights) {
            let (Some(r_bytes), Some(s_bytes)) = (signature.first_chunk::<32>(), signature.last_chunk::<32>()) else {
                return false;
            };
            let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(*s_bytes)) else {
                return false;
            };
            let Some(r) = CompressedEdwardsY(*r_bytes).decompress() else {
                return false;
            };
            let h = challenge(r_bytes, &self.encoding, message);
            s_sum += z * s;
            h_sum += z * h;
            scalars.push(-z);
            points.push(r);
        }
        scalars.extend([s_sum, -h_sum]);
        points.extend([ED25519_BASEPOINT_POINT, self.point]);
        EdwardsPoint::vartime_multiscalar_mul(&scalars, &points).mul_by_cofactor().is_identity()
    }

    /// z_i = (SHA-512(seed ‖ i) truncated to 128 bits) | 1, seed = SHA-512(label ‖ key ‖
    /// every message and signature): odd, so never zero, and fixed only once the items are.
    fn weights(&self, items: &[(&[u8], &[u8; SIGNATURE_LEN])]) -> Vec<Scalar> {
        let mut h = Sha512::new();
        h.update(WEIGHTS_LABEL);
        h.update(self.encoding);
        h.update((items.len() as u64).to_be_bytes());
        for (message, signature) in items {
            h.update((message.len() as u64).to_be_bytes());
            h.update(message);
            h.update(signature);
        }
        let seed = h.finalize();
        (0..items.len() as u64)
            .map(|i| {
                let wide = Sha512::new().chain_update(seed).chain_update(i.to_be_bytes()).finalize();
                let mut z = [0u8; 16];
                z.copy_from_slice(&wide[..16]);
                Scalar::from(u128::from_le_bytes(z) | 1)
            })
            .collect()
    }
}

/// h = SHA-512(R ‖ A ‖ M) mod ℓ (RFC 8032 §5.1.7).
fn challenge(r: &[u8; 32], a: &[u8; 32], message: &[u8]) -> Scalar {
    let wide: [u8; 64] = Sha512::new().chain_update(r).chain_update(a).chain_update(message).finalize().into();
    Scalar::from_bytes_mod_order_wide(&wide)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

    use super::*;

    fn hex32(s: &str) -> [u8; 32] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    fn ring_key(seed: u8) -> (Ed25519KeyPair, VerifyingKey) {
        let pair = Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap();
        let key = VerifyingKey::from_bytes(&pair.public_key().as_ref().try_into().unwrap()).unwrap();
        (pair, key)
    }

    fn sign(pair: &Ed25519KeyPair, message: &[u8]) -> [u8; 64] {
        pair.sign(message).as_ref().try_into().unwrap()
    }

    #[test]
    fn a_batch_passes_iff_every_signature_does_and_names_nothing_else() {
        let (pair, key) = ring_key(3);
        let messages: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 1 + usize::from(i)]).collect();
        let signatures: Vec<[u8; 64]> = messages.iter().map(|m| sign(&pair, m)).collect();
        let items: Vec<(&[u8], &[u8; 64])> = messages.iter().map(Vec::as_slice).zip(&signatures).collect();
        assert!(key.verify_all(&items));
        assert!(key.verify_all(&[]));
        // One wrong signature anywhere fails the batch: a wrong s, a wrong R, a swapped pair,
        // a non-canonical s (s + ℓ), the signature of another key.
        let ell = hex32("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010");
        let mut s_plus_ell = signatures[7];
        let mut carry = 0u16;
        for (b, l) in s_plus_ell[32..].iter_mut().zip(ell) {
            let sum = u16::from(*b) + u16::from(l) + carry;
            *b = sum as u8;
            carry = sum >> 8;
        }
        let (other, _) = ring_key(4);
        let wrong: Vec<[u8; 64]> = vec![
            {
                let mut s = signatures[5];
                s[40] ^= 0x10;
                s
            },
            {
                let mut s = signatures[5];
                s[3] ^= 0x10;
                s
            },
            signatures[6],
            s_plus_ell,
            sign(&other, &messages[5]),
        ];
        for w in &wrong {
            let mut bad = items.clone();
            bad[5] = (messages[5].as_slice(), w);
            assert!(!key.verify_all(&bad));
            assert!(!key.verify(messages[5].as_slice(), w));
        }
        assert!(!key.verify(&messages[7], &s_plus_ell), "s must be canonical");
    }

    /// A signature made by the key's holder with a small-order component in R: ring (and
    /// any uncofactored check) refuses it; here the single check and the batch both accept
    /// it, so a server batching cannot accept what the recipient's single check refuses, nor
    /// the other way round.
    #[test]
    fn a_small_order_component_is_judged_the_same_alone_and_in_a_batch() {
        let secret = Scalar::from(123_456_789u64);
        let public = EdwardsPoint::mul_base(&secret).compress().to_bytes();
        let key = VerifyingKey::from_bytes(&public).unwrap();
        let order_four = CompressedEdwardsY([0; 32]).decompress().unwrap();
        assert!(order_four.is_small_order() && !order_four.is_identity());
        let message = b"envelope".as_slice();
        let nonce = Scalar::from(987_654_321u64);
        let r = (EdwardsPoint::mul_base(&nonce) + order_four).compress().to_bytes();
        let s = nonce + challenge(&r, &public, message) * secret;
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&r);
        signature[32..].copy_from_slice(s.as_bytes());
        assert!(UnparsedPublicKey::new(&ED25519, public).verify(message, &signature).is_err());
        assert!(key.verify(message, &signature));
        // In batches with other, ordinary signatures (each batch its own weights), it
        // passes every time: the cofactor clears it whatever the weights.
        let (pair, other) = ring_key(9);
        assert!(!other.verify(message, &signature));
        // (`bad_companion` below: a valid signature, but under another key.)
        for i in 0..16u8 {
            let companion = [i; 8];
            let bad_companion = sign(&pair, &companion);
            let plain_nonce = Scalar::from(1_000 + u64::from(i));
            let plain_r = EdwardsPoint::mul_base(&plain_nonce).compress().to_bytes();
            let plain_s = plain_nonce + challenge(&plain_r, &public, &companion) * secret;
            let mut plain = [0u8; 64];
            plain[..32].copy_from_slice(&plain_r);
            plain[32..].copy_from_slice(plain_s.as_bytes());
            UnparsedPublicKey::new(&ED25519, public).verify(&companion, &plain).unwrap();
            assert!(key.verify_all(&[(message, &signature), (companion.as_slice(), &plain)]));
            assert!(!key.verify_all(&[
                (message, &signature),
                (companion.as_slice(), &plain),
                (companion.as_slice(), &bad_companion)
            ]));
        }
    }

    #[test]
    fn two_wrong_signatures_whose_errors_cancel_in_a_plain_sum_fail_the_batch() {
        let (pair, key) = ring_key(5);
        let messages = [b"first".as_slice(), b"second".as_slice()];
        let mut signatures = messages.map(|m| sign(&pair, m));
        let delta = Scalar::from(7u8);
        for (signature, change) in signatures.iter_mut().zip([delta, -delta]) {
            let s = Scalar::from_canonical_bytes(signature[32..].try_into().unwrap()).unwrap() + change;
            signature[32..].copy_from_slice(s.as_bytes());
        }
        assert!(!key.verify(messages[0], &signatures[0]) && !key.verify(messages[1], &signatures[1]));
        assert!(!key.verify_all(&[(messages[0], &signatures[0]), (messages[1], &signatures[1])]));
    }

    #[test]
    fn small_order_keys_are_refused() {
        let identity = {
            let mut e = [0u8; 32];
            e[0] = 1;
            e
        };
        for encoding in [identity, [0u8; 32]] {
            assert!(CompressedEdwardsY(encoding).decompress().unwrap().is_small_order());
            assert!(VerifyingKey::from_bytes(&encoding).is_none());
        }
    }

    #[test]
    fn what_ring_accepts_is_accepted() {
        for seed in 0..16u8 {
            let (pair, key) = ring_key(seed);
            let message = vec![seed; usize::from(seed) * 7];
            let signature = sign(&pair, &message);
            UnparsedPublicKey::new(&ED25519, pair.public_key().as_ref()).verify(&message, &signature).unwrap();
            assert!(key.verify(&message, &signature));
        }
    }
}
