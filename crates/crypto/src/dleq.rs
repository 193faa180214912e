//! Proofs of discrete-logarithm equality (Chaum and Pedersen, CRYPTO 1992) over
//! ristretto255, made non-interactive with the Fiat–Shamir transform.
//!
//! A holder of the secret key `x` of `X = x·G` proves that a revealed point `Z` is `x·P`
//! for a public point `P`, without revealing `x`. In privagg: a client that cannot open an
//! envelope reveals the Diffie-Hellman value `Z = c_v·C_u` of its channel with the sender
//! (`X = C_v` its advertised channel key, `P = C_u` the sender's), so the server can derive
//! the envelope key and see for itself whether the envelope was bad.
//!
//! ```text
//! prove:  k ← random,  A = k·G,  B = k·P,  c = H(label ‖ context ‖ X ‖ P ‖ Z ‖ A ‖ B),  s = k + c·x
//! verify: A = s·G − c·X,  B = s·P − c·Z,  accept iff c = H(label ‖ context ‖ X ‖ P ‖ Z ‖ A ‖ B)
//! ```
//!
//! H is SHA-512 reduced mod ℓ, with the label `privagg/v1 dleq` and a caller-chosen context
//! (session, round, parties) so that a proof cannot be replayed elsewhere. The proof is the
//! pair `(c, s)`, 64 bytes.

use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::VartimeMultiscalarMul;
use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

use crate::error::CryptoError;
use crate::key_agreement::{PublicKey, SecretKey};

/// Domain-separation label of the challenge hash.
pub const DLEQ_LABEL: &[u8] = b"privagg/v1 dleq";

/// A proof that `log_G X = log_P Z`: the challenge and the response.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DleqProof {
    /// The challenge c.
    pub challenge: Scalar,
    /// The response s = k + c·x.
    pub response: Scalar,
}

impl DleqProof {
    /// Length of the encoding: c ‖ s, two canonical scalars.
    pub const LEN: usize = 64;

    /// c ‖ s.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..32].copy_from_slice(self.challenge.as_bytes());
        out[32..].copy_from_slice(self.response.as_bytes());
        out
    }

    /// Decodes [`DleqProof::to_bytes`]; rejects non-canonical scalars with
    /// [`CryptoError::InvalidScalar`].
    pub fn from_bytes(bytes: &[u8; Self::LEN]) -> Result<Self, CryptoError> {
        let scalar = |b: &[u8]| -> Result<Scalar, CryptoError> {
            let mut a = [0u8; 32];
            a.copy_from_slice(b);
            Option::from(Scalar::from_canonical_bytes(a)).ok_or(CryptoError::InvalidScalar)
        };
        Ok(Self { challenge: scalar(&bytes[..32])?, response: scalar(&bytes[32..])? })
    }
}

/// Computes `Z = x·P` for the secret key `x` and proves it equals the discrete log of
/// `x`'s public key. Returns Z's canonical encoding (the Diffie-Hellman value of `x` and
/// `P`, as [`SecretKey::diffie_hellman`] computes it; zeroized on drop, as it is secret
/// until revealed) and the proof.
pub fn prove<R: rand_core::CryptoRng + ?Sized>(
    secret: &SecretKey,
    peer: &PublicKey,
    context: &[u8],
    rng: &mut R,
) -> (Zeroizing<[u8; 32]>, DleqProof) {
    let x = secret.as_scalar();
    let p = peer.point();
    let z = p * x;
    let k = Zeroizing::new(Scalar::random(rng));
    let a = RistrettoPoint::mul_base(&k);
    let b = p * *k;
    let public = secret.public_key();
    let z_bytes = Zeroizing::new(z.compress().to_bytes());
    let challenge = challenge(context, &public.to_bytes(), &peer.to_bytes(), &z_bytes, &a, &b);
    let response = *k + challenge * x;
    (z_bytes, DleqProof { challenge, response })
}

/// Checks that `shared` (a point encoding) is `x·peer` for the `x` with `x·G = public`.
/// Fails with [`CryptoError::InvalidPublicKey`] if `shared` is not a canonical point and
/// [`CryptoError::InvalidProof`] if the proof does not verify.
pub fn verify(
    public: &PublicKey,
    peer: &PublicKey,
    shared: &[u8; 32],
    proof: &DleqProof,
    context: &[u8],
) -> Result<(), CryptoError> {
    let z =
        curve25519_dalek::ristretto::CompressedRistretto(*shared).decompress().ok_or(CryptoError::InvalidPublicKey)?;
    let minus_c = -proof.challenge;
    let a = RistrettoPoint::vartime_double_scalar_mul_basepoint(&minus_c, &public.point(), &proof.response);
    let b = RistrettoPoint::vartime_multiscalar_mul([proof.response, minus_c], [peer.point(), z]);
    let expected = challenge(context, &public.to_bytes(), &peer.to_bytes(), shared, &a, &b);
    if expected == proof.challenge { Ok(()) } else { Err(CryptoError::InvalidProof) }
}

/// Proves knowledge of the secret key behind `secret.public_key()`: a DLEQ proof with
/// `P = G` (so `Z = X`), which is a Schnorr proof, bound to `context`. A client that
/// advertises a key must prove it this way, or it could advertise a key related to
/// another client's (`X_w + a·G`) and get values revealed about it that are really about
/// the other client's key.
pub fn prove_possession<R: rand_core::CryptoRng + ?Sized>(
    secret: &SecretKey,
    context: &[u8],
    rng: &mut R,
) -> DleqProof {
    prove(secret, &generator(), context, rng).1
}

/// Checks a [`prove_possession`] proof for `public` and `context`; fails with
/// [`CryptoError::InvalidProof`].
pub fn verify_possession(public: &PublicKey, proof: &DleqProof, context: &[u8]) -> Result<(), CryptoError> {
    verify(public, &generator(), &public.to_bytes(), proof, context)
}

/// The group's generator G as a public key (the public key of the scalar 1).
fn generator() -> PublicKey {
    SecretKey::from_scalar(Scalar::ONE).public_key()
}

fn challenge(
    context: &[u8],
    x: &[u8; 32],
    p: &[u8; 32],
    z: &[u8; 32],
    a: &RistrettoPoint,
    b: &RistrettoPoint,
) -> Scalar {
    let mut h = Sha512::new();
    h.update(DLEQ_LABEL);
    h.update((context.len() as u64).to_be_bytes());
    h.update(context);
    for part in [x, p, z, &a.compress().to_bytes(), &b.compress().to_bytes()] {
        h.update(part);
    }
    let wide: [u8; 64] = h.finalize().into();
    Scalar::from_bytes_mod_order_wide(&wide)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;
    use crate::key_agreement::KeyPair;

    #[test]
    fn an_honest_proof_verifies_and_reveals_the_dh_value() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let (v, u) = (KeyPair::generate(&mut rng), KeyPair::generate(&mut rng));
        let (z, proof) = prove(&v.secret, &u.public, b"ctx", &mut rng);
        assert_eq!(&*z, u.secret.diffie_hellman(&v.public).unwrap().as_bytes());
        assert_eq!(verify(&v.public, &u.public, &z, &proof, b"ctx"), Ok(()));
        assert_eq!(DleqProof::from_bytes(&proof.to_bytes()).unwrap(), proof);
    }

    #[test]
    fn possession_is_proven_for_the_key_and_context_only() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let (w, u) = (KeyPair::generate(&mut rng), KeyPair::generate(&mut rng));
        let proof = prove_possession(&w.secret, b"ctx", &mut rng);
        assert_eq!(verify_possession(&w.public, &proof, b"ctx"), Ok(()));
        assert_eq!(verify_possession(&w.public, &proof, b"other"), Err(CryptoError::InvalidProof));
        assert_eq!(verify_possession(&u.public, &proof, b"ctx"), Err(CryptoError::InvalidProof));
        // The rogue key X_w + a·G: whoever knows a (but not w's secret) proves a·G at best.
        let a = SecretKey::generate(&mut rng);
        let rogue = PublicKey::from_bytes(&(w.public.point() + a.public_key().point()).compress().to_bytes()).unwrap();
        let with_a = prove_possession(&a, b"ctx", &mut rng);
        assert_eq!(verify_possession(&rogue, &with_a, b"ctx"), Err(CryptoError::InvalidProof));
        assert_eq!(verify_possession(&rogue, &proof, b"ctx"), Err(CryptoError::InvalidProof));
    }

    #[test]
    fn wrong_values_keys_contexts_and_proofs_are_rejected() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let (v, u, w) = (KeyPair::generate(&mut rng), KeyPair::generate(&mut rng), KeyPair::generate(&mut rng));
        let (z, proof) = prove(&v.secret, &u.public, b"ctx", &mut rng);
        // Another DH value (with a third key), another context, another prover key, another peer.
        let other = *w.secret.diffie_hellman(&u.public).unwrap().as_bytes();
        assert_eq!(verify(&v.public, &u.public, &other, &proof, b"ctx"), Err(CryptoError::InvalidProof));
        assert_eq!(verify(&v.public, &u.public, &z, &proof, b"other"), Err(CryptoError::InvalidProof));
        assert_eq!(verify(&w.public, &u.public, &z, &proof, b"ctx"), Err(CryptoError::InvalidProof));
        assert_eq!(verify(&v.public, &w.public, &z, &proof, b"ctx"), Err(CryptoError::InvalidProof));
        // A tampered proof, a proof made with the wrong secret, a non-point value.
        let mut bad = proof;
        bad.response += Scalar::ONE;
        assert_eq!(verify(&v.public, &u.public, &z, &bad, b"ctx"), Err(CryptoError::InvalidProof));
        let (z_w, proof_w) = prove(&w.secret, &u.public, b"ctx", &mut rng);
        assert_eq!(verify(&v.public, &u.public, &z_w, &proof_w, b"ctx"), Err(CryptoError::InvalidProof));
        assert_eq!(verify(&v.public, &u.public, &[0xff; 32], &proof, b"ctx"), Err(CryptoError::InvalidPublicKey));
        assert_eq!(DleqProof::from_bytes(&[0xff; 64]), Err(CryptoError::InvalidScalar));
    }
}
