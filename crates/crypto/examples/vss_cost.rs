//! Rough cost of Feldman share verification against plain Shamir reconstruction, at the
//! sizes the server and a client meet (one thread; a measurement, not a test):
//!
//! ```text
//! cargo run --release -p privagg-crypto --example vss_cost
//! ```
//!
//! * server, per owner: batch-verify the k + 1 revealed shares of one secret, then
//!   interpolate it from t of them (what unmasking does for every secret it rebuilds);
//! * client, per round: decode its k neighbours' 2k commitments from the wire (one
//!   ristretto255 decompression, a square root, per point), then verify the 2k shares they
//!   dealt it (one batched multiscalar multiplication over all their commitments). Both are
//!   O(k·t) and neither can be skipped: a client must check every share it was dealt before
//!   it masks (RELIABILITY.md, "What a client cannot skip").
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::Instant;

use curve25519_dalek::Scalar;
use privagg_crypto::shamir::{self, Share};
use privagg_crypto::vss::{self, Commitment};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn main() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    println!(
        "{:>5} {:>5} | {:>14} {:>14} {:>14} | {:>14} {:>14}",
        "k", "t", "verify/owner", "interp/owner", "1-by-1/owner", "client decode", "client verify"
    );
    for k in [10usize, 36, 50, 100, 200, 314] {
        let t = k / 2 + 1;
        let holders: Vec<u32> = (1..=k as u32 + 1).collect();
        let owners = 64;
        let sharings: Vec<(Vec<Share>, Commitment)> =
            (0..owners).map(|_| vss::split(&Scalar::random(&mut rng), t, &holders, &mut rng).unwrap()).collect();
        let start = Instant::now();
        for (shares, c) in &sharings {
            assert!(c.verify_batch(shares));
        }
        let verify = start.elapsed() / owners as u32;
        let coefficients = shamir::lagrange_coefficients_at_zero(&holders[..t]).unwrap();
        let start = Instant::now();
        let mut acc = Scalar::ZERO;
        for (shares, _) in &sharings {
            acc += coefficients.iter().zip(shares).map(|(l, s)| l * s.y).sum::<Scalar>();
        }
        let interpolate = start.elapsed() / owners as u32;
        let start = Instant::now();
        for (shares, c) in sharings.iter().take(4) {
            assert!(shares.iter().all(|s| c.verify(s)));
        }
        let one_by_one = start.elapsed() / 4;
        // A client holding one share of each of k neighbours' two secrets.
        let items: Vec<(&Commitment, &Share)> =
            sharings.iter().cycle().take(2 * k).map(|(shares, c)| (c, &shares[0])).collect();
        let encodings: Vec<Vec<[u8; 32]>> = items.iter().map(|(c, _)| c.encodings().to_vec()).collect();
        let start = Instant::now();
        let decoded: Vec<Commitment> = encodings.into_iter().map(|e| Commitment::from_encodings(e).unwrap()).collect();
        let decode = start.elapsed();
        assert_eq!(decoded.len(), 2 * k);
        let start = Instant::now();
        assert!(vss::verify_many(&items));
        let client = start.elapsed();
        println!(
            "{k:>5} {t:>5} | {:>14?} {:>14?} {:>14?} | {:>14?} {:>14?}   ({acc:?})",
            verify,
            interpolate,
            one_by_one,
            decode,
            client,
            acc = acc.as_bytes()[0]
        );
    }
}
