//! Shamir sharing: reconstruction, secrecy-related structure, tamper detection, error paths.

use privagg_crypto::{CryptoError, Scalar, ShamirError, Share, lagrange_coefficients_at_zero, reconstruct, split};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

fn holders(n: usize) -> Vec<u32> {
    // Non-consecutive ids, as client ids are.
    (0..n as u32).map(|i| 3 * i + 1).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any t of the n shares, in any order, rebuild the secret.
    #[test]
    fn any_t_shares_reconstruct(
        seed in any::<u64>(),
        n in 1usize..16,
        t_frac in 0.0f64..1.0,
        pick in any::<u64>(),
    ) {
        let mut rng = rng(seed);
        let t = 1 + (t_frac * n as f64) as usize % n;
        let secret = Scalar::random(&mut rng);
        let shares = split(&secret, t, &holders(n), &mut rng).expect("valid");
        prop_assert_eq!(shares.len(), n);
        // A pseudo-random subset of size t in a pseudo-random order.
        let mut order: Vec<usize> = (0..n).collect();
        let mut x = pick | 1;
        for i in (1..n).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let subset: Vec<Share> = order[..t].iter().map(|&i| shares[i].clone()).collect();
        prop_assert_eq!(reconstruct(&subset, t).expect("enough shares"), secret);
        // All n shares: the extra ones are checked and consistent.
        prop_assert_eq!(reconstruct(&shares, t).expect("consistent"), secret);
        // Precomputed coefficients give the same secret.
        let xs: Vec<u32> = subset.iter().map(|s| s.x).collect();
        let lambdas = lagrange_coefficients_at_zero(&xs).expect("distinct ids");
        let via_coefficients: Scalar = lambdas.iter().zip(&subset).map(|(l, s)| l * s.y).sum();
        prop_assert_eq!(via_coefficients, secret);
    }

    /// Fewer than t shares are refused.
    #[test]
    fn fewer_than_t_shares_fail(seed in any::<u64>(), n in 2usize..12, t_frac in 0.0f64..1.0) {
        let mut rng = rng(seed);
        let t = 2 + (t_frac * (n - 1) as f64) as usize % (n - 1);
        let shares = split(&Scalar::random(&mut rng), t, &holders(n), &mut rng).expect("valid");
        prop_assert_eq!(
            reconstruct(&shares[..t - 1], t),
            Err(ShamirError::NotEnoughShares { needed: t, got: t - 1 })
        );
    }

    /// A tampered share among more than t shares is detected, wherever it is.
    #[test]
    fn tampered_share_is_detected(
        seed in any::<u64>(),
        n in 2usize..12,
        t_frac in 0.0f64..1.0,
        victim_frac in 0.0f64..1.0,
        delta in 1u64..,
    ) {
        let mut rng = rng(seed);
        let t = 1 + (t_frac * (n - 1) as f64) as usize % (n - 1); // t < n
        let mut shares =
            split(&Scalar::random(&mut rng), t, &holders(n), &mut rng).expect("valid");
        let victim = (victim_frac * n as f64) as usize % n;
        shares[victim].y += Scalar::from(delta);
        prop_assert_eq!(reconstruct(&shares, t), Err(ShamirError::InconsistentShares));
    }
}

#[test]
fn threshold_one_shares_are_the_secret() {
    let mut rng = rng(1);
    let secret = Scalar::random(&mut rng);
    let shares = split(&secret, 1, &[5, 6, 7], &mut rng).expect("valid");
    assert!(shares.iter().all(|s| s.y == secret));
    assert_eq!(reconstruct(&shares[2..], 1), Ok(secret));
}

#[test]
fn shares_follow_holder_order() {
    let mut rng = rng(2);
    let shares = split(&Scalar::ONE, 2, &[9, 4, 7], &mut rng).expect("valid");
    let xs: Vec<u32> = shares.iter().map(|s| s.x).collect();
    assert_eq!(xs, vec![9, 4, 7]);
}

#[test]
fn split_rejects_bad_parameters() {
    let mut rng = rng(3);
    let s = Scalar::ONE;
    assert_eq!(split(&s, 0, &[1, 2], &mut rng), Err(ShamirError::InvalidThreshold { threshold: 0, shares: 2 }));
    assert_eq!(split(&s, 3, &[1, 2], &mut rng), Err(ShamirError::InvalidThreshold { threshold: 3, shares: 2 }));
    assert_eq!(split(&s, 1, &[], &mut rng), Err(ShamirError::InvalidThreshold { threshold: 1, shares: 0 }));
    assert_eq!(split(&s, 2, &[1, 0, 2], &mut rng), Err(ShamirError::ZeroId));
    assert_eq!(split(&s, 2, &[1, 5, 2, 5], &mut rng), Err(ShamirError::DuplicateId(5)));
}

#[test]
fn reconstruct_rejects_bad_input() {
    let mut rng = rng(4);
    let shares = split(&Scalar::ONE, 2, &[1, 2, 3], &mut rng).expect("valid");
    assert_eq!(reconstruct(&shares, 0), Err(ShamirError::InvalidThreshold { threshold: 0, shares: 3 }));
    assert_eq!(reconstruct(&shares[..1], 2), Err(ShamirError::NotEnoughShares { needed: 2, got: 1 }));
    assert_eq!(reconstruct(&[], 1), Err(ShamirError::NotEnoughShares { needed: 1, got: 0 }));
    let dup = vec![shares[0].clone(), shares[1].clone(), shares[0].clone()];
    assert_eq!(reconstruct(&dup, 2), Err(ShamirError::DuplicateId(1)));
    let zero = vec![shares[0].clone(), Share { x: 0, y: Scalar::ONE }];
    assert_eq!(reconstruct(&zero, 2), Err(ShamirError::ZeroId));
}

#[test]
fn lagrange_coefficients_reject_bad_input() {
    assert_eq!(lagrange_coefficients_at_zero(&[]), Err(ShamirError::NotEnoughShares { needed: 1, got: 0 }));
    assert_eq!(lagrange_coefficients_at_zero(&[3, 0]), Err(ShamirError::ZeroId));
    assert_eq!(lagrange_coefficients_at_zero(&[3, 4, 3]), Err(ShamirError::DuplicateId(3)));
    // λ for {1, 2} at 0: λ₁ = 2/(2−1) = 2, λ₂ = 1/(1−2) = −1.
    assert_eq!(lagrange_coefficients_at_zero(&[1, 2]), Ok(vec![Scalar::from(2u64), -Scalar::ONE]));
}

#[test]
fn share_bytes_round_trip() {
    let mut rng = rng(5);
    for share in split(&Scalar::random(&mut rng), 2, &[1, 0xdead_beef, u32::MAX], &mut rng).expect("valid") {
        let bytes = share.to_bytes();
        assert_eq!(bytes.len(), Share::LEN);
        assert_eq!(bytes[..4], share.x.to_be_bytes());
        assert_eq!(bytes[4..], share.y.to_bytes());
        assert_eq!(Share::from_bytes(&bytes), Ok(share));
    }
}

#[test]
fn share_decoding_rejects_zero_id_and_non_canonical_scalars() {
    let mut bytes = [0u8; Share::LEN];
    bytes[3] = 1;
    assert!(Share::from_bytes(&bytes).is_ok());
    assert_eq!(Share::from_bytes(&[0u8; Share::LEN]), Err(CryptoError::ZeroShareId));
    let mut high = [0xffu8; Share::LEN];
    assert_eq!(Share::from_bytes(&high), Err(CryptoError::InvalidScalar));
    // ℓ itself (little-endian) is not canonical.
    let ell = "edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010";
    high[4..].copy_from_slice(&hex::decode(ell).expect("hex"));
    assert_eq!(Share::from_bytes(&high), Err(CryptoError::InvalidScalar));
}

#[test]
fn share_debug_is_redacted() {
    let share = Share { x: 4, y: Scalar::from(12345u64) };
    assert_eq!(format!("{share:?}"), "Share { x: 4, y: <redacted> }");
}

#[test]
fn large_thresholds_work() {
    let mut rng = rng(6);
    let secret = Scalar::random(&mut rng);
    let n = 300;
    let t = 150;
    let shares = split(&secret, t, &holders(n), &mut rng).expect("valid");
    assert_eq!(reconstruct(&shares[n - t..], t), Ok(secret));
    assert_eq!(reconstruct(&shares, t), Ok(secret));
}
