//! The workloads the micro-benchmarks and the Flower comparison time, built from the
//! public APIs of `privagg-crypto`, `privagg-protocol` and `privagg-dp` exactly as a
//! client and the server use them in a round (see `protocol/src/client.rs` and
//! `protocol/src/server.rs`), minus the messages around them.
//!
//! All randomness is seeded (`ChaCha20Rng`, `NoiseRng::insecure_from_seed`): benchmarks
//! must be repeatable, and nothing here protects real data.

use privagg_crypto::{
    KeyContext, MaskSeed, MaskSign, PrgKind, PublicKey, Scalar, SecretKey, Share, apply_masks,
    derive_pairwise_mask_seed, derive_self_mask_seed, shamir, stream_keystream,
};
use privagg_dp::planner::{Mechanism, NoiseTarget, PlanInput, plan};
use privagg_dp::{ClientEncoder, DpError, EncodedUpdate, NoiseRng};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;

/// Bits per word in the benchmarks: privagg's default with DP on (20-bit sums, carried
/// in 4-byte mask words).
pub const MASK_BITS: u32 = 20;

/// Keystream bytes per mask word at [`MASK_BITS`].
pub const WORD_BYTES: usize = 4;

/// A deterministic RNG for key material in benchmarks.
pub fn bench_rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// `count` distinct PRG seeds.
pub fn seeds(count: usize) -> Vec<MaskSeed> {
    (0..count)
        .map(|i| {
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&(i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
            bytes[31] = 0x5a;
            MaskSeed::from_bytes(bytes)
        })
        .collect()
}

/// A client's mask list: the first seed is its self mask (added), the others pairwise
/// masks, half added and half subtracted as for a client in the middle of the id range.
pub fn mask_list(seeds: &[MaskSeed]) -> Vec<(&MaskSeed, MaskSign)> {
    seeds.iter().enumerate().map(|(i, s)| (s, if i % 2 == 0 { MaskSign::Add } else { MaskSign::Subtract })).collect()
}

/// Generates the `words · WORD_BYTES` bytes of raw keystream of every seed that
/// [`apply_masks`] consumes for a `words`-word vector, the way it consumes them
/// (`stream_keystream`: 1 KiB pieces in an L1 buffer, one key expansion per seed), and
/// only looks at them: the raw generation rate, without the adding. Returns a fold of the
/// pieces' last bytes, so the work cannot be optimised away.
pub fn raw_keystream(kind: PrgKind, seeds: &[MaskSeed], words: usize) -> u8 {
    let blocks = (words * WORD_BYTES).div_ceil(kind.block_len());
    let mut fold = 0;
    for seed in seeds {
        stream_keystream(kind, seed, 0, blocks, |piece| {
            fold ^= std::hint::black_box(piece).last().copied().unwrap_or(0);
        });
    }
    fold
}

/// A vector of `m` words below 2^[`MASK_BITS`].
pub fn input_words(m: usize) -> Vec<u64> {
    let mask = (1u64 << MASK_BITS) - 1;
    (0..m as u64).map(|i| i.wrapping_mul(0x9e37_79b9) & mask).collect()
}

/// The key context of the benchmark session.
pub fn bench_context() -> KeyContext {
    KeyContext { session_id: [0x42; 32], round: 1 }
}

/// Shamir threshold for a secret shared among a client and its `k` neighbours:
/// ⌊(k + 1)/2⌋ + 1, a majority of the `k + 1` holders, as `flower_bench.py` uses.
pub fn majority_threshold(k: usize) -> usize {
    k.div_ceil(2) + 1
}

/// What the server holds about one client that dropped after ShareKeys, with `k`
/// neighbours that all reached the sum: `t` revealed shares of its mask key and its
/// neighbours' public mask keys.
pub struct DroppedClient {
    id: u32,
    public: PublicKey,
    shares: Vec<Share>,
    threshold: usize,
    neighbours: Vec<(u32, PublicKey)>,
    ctx: KeyContext,
}

impl DroppedClient {
    /// Client 1 drops; clients 2..=k+1 are its neighbours.
    pub fn new(k: usize, rng: &mut ChaCha20Rng) -> Self {
        let key = SecretKey::generate(rng);
        let threshold = majority_threshold(k);
        let holders: Vec<u32> = (1..=k as u32 + 1).collect();
        let shares = shamir::split(key.as_scalar(), threshold, &holders, rng).expect("valid threshold and holders");
        let neighbours = (2..=k as u32 + 1).map(|id| (id, SecretKey::generate(rng).public_key())).collect();
        Self {
            id: 1,
            public: key.public_key(),
            shares: shares[1..=threshold].to_vec(),
            threshold,
            neighbours,
            ctx: bench_context(),
        }
    }

    /// The server's work for this client: rebuild its mask key from `t` shares (and
    /// check it against its public key), agree a pairwise seed with each neighbour and
    /// remove those `k` masks from `sum`. `parallel` spreads the key agreements and the
    /// mask expansion over rayon's pool, as the server does; otherwise one core.
    pub fn remove(&self, kind: PrgKind, sum: &mut [u64], parallel: bool) -> Result<(), String> {
        let secret = shamir::reconstruct(&self.shares, self.threshold).map_err(|e| e.to_string())?;
        let key = SecretKey::from_scalar(secret);
        if key.public_key() != self.public {
            return Err("reconstructed the wrong key".into());
        }
        let seed_for = |(peer, public): &(u32, PublicKey)| -> Result<(MaskSeed, MaskSign), String> {
            let shared = key.diffie_hellman(public).map_err(|e| e.to_string())?;
            // The dropped client (id 1) would have subtracted; the survivors added.
            Ok((derive_pairwise_mask_seed(&shared, &self.ctx, self.id, *peer), MaskSign::Subtract))
        };
        let masks: Vec<(MaskSeed, MaskSign)> = if parallel {
            self.neighbours.par_iter().map(seed_for).collect::<Result<_, _>>()?
        } else {
            self.neighbours.iter().map(seed_for).collect::<Result<_, _>>()?
        };
        expand(kind, sum, &masks, parallel)
    }
}

/// What the server holds to remove the self masks of `count` clients in the sum: for
/// each, `t` revealed shares of its self-mask secret b_u.
pub struct SurvivorSelfMasks {
    secrets: Vec<(u32, Vec<Share>)>,
    threshold: usize,
    ctx: KeyContext,
}

impl SurvivorSelfMasks {
    /// `count` survivors, each sharing b_u among itself and `k` neighbours.
    pub fn new(count: usize, k: usize, rng: &mut ChaCha20Rng) -> Self {
        let threshold = majority_threshold(k);
        let holders: Vec<u32> = (1..=k as u32 + 1).collect();
        let secrets = (1..=count as u32)
            .map(|owner| {
                let b = Scalar::from(u64::from(owner) * 7919 + 13);
                let shares = shamir::split(&b, threshold, &holders, rng).expect("valid threshold and holders");
                (owner, shares[..threshold].to_vec())
            })
            .collect();
        Self { secrets, threshold, ctx: bench_context() }
    }

    /// Rebuilds every b_u, derives its self-mask seed and subtracts the masks from `sum`.
    pub fn remove(&self, kind: PrgKind, sum: &mut [u64], parallel: bool) -> Result<(), String> {
        let masks = self
            .secrets
            .iter()
            .map(|(owner, shares)| {
                let b = shamir::reconstruct(shares, self.threshold).map_err(|e| e.to_string())?;
                Ok((derive_self_mask_seed(&b, &self.ctx, *owner), MaskSign::Subtract))
            })
            .collect::<Result<Vec<_>, String>>()?;
        expand(kind, sum, &masks, parallel)
    }
}

/// One client's masking step with `k` neighbours: derive its self-mask seed, agree a
/// pairwise seed with each neighbour (k Diffie-Hellman + HKDF), and add the k + 1 masks
/// into its words on one core.
pub struct ClientMasking {
    own: SecretKey,
    self_secret: Scalar,
    neighbours: Vec<(u32, PublicKey)>,
    ctx: KeyContext,
}

impl ClientMasking {
    /// Client id 1 with neighbours 2..=k+1.
    pub fn new(k: usize, rng: &mut ChaCha20Rng) -> Self {
        Self {
            own: SecretKey::generate(rng),
            self_secret: Scalar::from(0x1234_5678u64),
            neighbours: (2..=k as u32 + 1).map(|id| (id, SecretKey::generate(rng).public_key())).collect(),
            ctx: bench_context(),
        }
    }

    /// Masks `words` in place, on the calling thread only.
    pub fn mask(&self, kind: PrgKind, words: &mut [u64]) -> Result<(), String> {
        let mut masks = Vec::with_capacity(self.neighbours.len() + 1);
        masks.push((derive_self_mask_seed(&self.self_secret, &self.ctx, 1), MaskSign::Add));
        for (peer, public) in &self.neighbours {
            let shared = self.own.diffie_hellman(public).map_err(|e| e.to_string())?;
            masks.push((derive_pairwise_mask_seed(&shared, &self.ctx, 1, *peer), MaskSign::Subtract));
        }
        expand(kind, words, &masks, false)
    }
}

/// One client's ShareKeys work with `k` neighbours: two fresh key pairs, Shamir
/// sharing of its mask key and self-mask secret (t of k + 1), and for each neighbour a
/// channel key (Diffie-Hellman + HKDF) and an AES-GCM envelope of its two shares.
pub struct ClientSetup {
    neighbours: Vec<(u32, PublicKey)>,
    threshold: usize,
    ctx: KeyContext,
}

impl ClientSetup {
    /// Client id 1 with neighbours 2..=k+1.
    pub fn new(k: usize, rng: &mut ChaCha20Rng) -> Self {
        Self {
            neighbours: (2..=k as u32 + 1).map(|id| (id, SecretKey::generate(rng).public_key())).collect(),
            threshold: majority_threshold(k),
            ctx: bench_context(),
        }
    }

    /// Runs the setup; returns the total envelope bytes.
    pub fn run(&self, rng: &mut ChaCha20Rng) -> Result<usize, String> {
        let channel = SecretKey::generate(rng);
        let mask = SecretKey::generate(rng);
        let self_secret = Scalar::random(rng);
        let holders: Vec<u32> = (1..=self.neighbours.len() as u32 + 1).collect();
        let key_shares = shamir::split(mask.as_scalar(), self.threshold, &holders, rng).map_err(|e| e.to_string())?;
        let self_shares = shamir::split(&self_secret, self.threshold, &holders, rng).map_err(|e| e.to_string())?;
        let mut total = 0;
        for ((peer, public), (k, b)) in self.neighbours.iter().zip(key_shares.iter().zip(&self_shares).skip(1)) {
            let shared = channel.diffie_hellman(public).map_err(|e| e.to_string())?;
            let key = privagg_crypto::derive_channel_key(&shared, &self.ctx, 1, *peer);
            let mut plaintext = [0u8; 64];
            plaintext[..32].copy_from_slice(k.y.as_bytes());
            plaintext[32..].copy_from_slice(b.y.as_bytes());
            let ctx = privagg_crypto::EnvelopeContext {
                session_id: self.ctx.session_id,
                round: self.ctx.round,
                sender: 1,
                recipient: *peer,
            };
            total += privagg_crypto::seal(&key, &ctx, &plaintext, rng).len();
        }
        Ok(total)
    }
}

/// Applies `masks` to `buf` at [`MASK_BITS`], over rayon's pool or on this thread.
fn expand(kind: PrgKind, buf: &mut [u64], masks: &[(MaskSeed, MaskSign)], parallel: bool) -> Result<(), String> {
    if parallel {
        privagg_protocol::masking::apply_all(kind, buf, MASK_BITS as u8, masks).map_err(|e| e.to_string())
    } else {
        let refs: Vec<(&MaskSeed, MaskSign)> = masks.iter().map(|(s, sign)| (s, *sign)).collect();
        apply_masks(kind, buf, 0, MASK_BITS, &refs).map_err(|e| e.to_string())
    }
}

/// A DP encoder as the server plans it for a cohort of `clients` (n_min = 90 %):
/// discrete Gaussian noise, z = 1, C = 1, 20 bits; `dim` model coordinates (padded to a
/// power of two by the rotation).
pub fn dp_encoder(dim: usize, clients: usize) -> Result<ClientEncoder, DpError> {
    let n_min = (clients * 9 / 10).max(1);
    let input = PlanInput::new(
        Mechanism::DiscreteGaussian,
        NoiseTarget::Multiplier(1.0),
        1e-5,
        100,
        1.0,
        clients,
        n_min,
        dim,
        1.0,
        MASK_BITS,
    );
    let plan = plan(&input)?;
    ClientEncoder::new(plan.encoding_params([3; 32]))
}

/// The same encoder without noise: clip, rotate, scale and conditional rounding only.
pub fn noiseless_encoder(dim: usize, clients: usize) -> Result<ClientEncoder, DpError> {
    let mut params = dp_encoder(dim, clients)?.params().clone();
    params.noise = privagg_dp::noise::NoiseSpec::None;
    params.rounding = privagg_dp::encoding::Rounding::Unbiased;
    ClientEncoder::new(params)
}

/// A model update of `dim` f32 values with L2 norm about 2 (so clipping to C = 1 acts).
pub fn update(dim: usize) -> Vec<f32> {
    let scale = 2.0 / (dim as f32).sqrt();
    (0..dim).map(|i| if i % 3 == 0 { scale } else { -scale * 0.7 }).collect()
}

/// Encodes `update` with a seeded noise RNG.
pub fn encode(encoder: &ClientEncoder, update: &[f32], seed: u8) -> Result<EncodedUpdate, DpError> {
    encoder.encode(update, &mut NoiseRng::insecure_from_seed([seed; 32]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_keystream_is_the_masking_keystream() {
        // One seed, added to zeros: the masked words are the keystream words.
        let seed = &seeds(1)[0];
        let mut words = vec![0u64; 5000];
        apply_masks(PrgKind::Aes128Ctr, &mut words, 0, 32, &[(seed, MaskSign::Add)]).unwrap();
        let mut bytes = vec![0u8; 5000 * WORD_BYTES];
        privagg_crypto::fill_keystream(PrgKind::Aes128Ctr, seed, 0, &mut bytes);
        let expected: Vec<u64> =
            bytes.chunks_exact(4).map(|c| u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect();
        assert_eq!(words, expected);
        // The pieces raw_keystream draws are that same keystream (their size depends on
        // the AES backend); it folds their last bytes.
        let mut pieces: Vec<Vec<u8>> = Vec::new();
        stream_keystream(PrgKind::Aes128Ctr, seed, 0, bytes.len() / 16, |p| pieces.push(p.to_vec()));
        assert_eq!(pieces.concat(), bytes);
        let fold = pieces.iter().fold(0, |a, p| a ^ p[p.len() - 1]);
        assert_eq!(raw_keystream(PrgKind::Aes128Ctr, &seeds(1), 5000), fold);
    }

    #[test]
    fn unmasking_workloads_run_and_cancel_their_own_masks() {
        let mut rng = bench_rng(1);
        let dropped = DroppedClient::new(10, &mut rng);
        let mut sum = vec![0u64; 3000];
        dropped.remove(PrgKind::Aes128Ctr, &mut sum, true).unwrap();
        let mut again = vec![0u64; 3000];
        dropped.remove(PrgKind::Aes128Ctr, &mut again, false).unwrap();
        assert_eq!(sum, again, "parallel and serial removal agree");
        assert!(sum.iter().any(|&w| w != 0));
        let survivors = SurvivorSelfMasks::new(5, 10, &mut rng);
        survivors.remove(PrgKind::ChaCha20, &mut sum, true).unwrap();
        let client = ClientMasking::new(4, &mut rng);
        client.mask(PrgKind::Aes128Ctr, &mut sum).unwrap();
        let setup = ClientSetup::new(4, &mut rng);
        assert_eq!(setup.run(&mut rng).unwrap(), 4 * (64 + privagg_crypto::ENVELOPE_OVERHEAD));
        assert!(sum.iter().all(|&w| w < 1 << MASK_BITS));
    }

    #[test]
    fn encoders_produce_padded_words_in_range() {
        let dp = dp_encoder(1000, 100).unwrap();
        let words = encode(&dp, &update(1000), 1).unwrap().words.clone();
        assert_eq!(words.len(), 1024);
        assert!(words.iter().all(|&w| w < 1 << MASK_BITS));
        let plain = noiseless_encoder(1000, 100).unwrap();
        assert_eq!(encode(&plain, &update(1000), 1).unwrap().words.len(), 1024);
        assert!(encode(&dp, &update(999), 1).is_err(), "wrong length is refused");
    }
}
