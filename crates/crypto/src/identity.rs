//! Certified identities. A client's long-term identity is an Ed25519 key pair (RFC 8032)
//! whose public key an enrollment authority — not the aggregation server — certifies in
//! an X.509 certificate (`privagg ca`). With it the client signs what it advertises in a
//! round and the survivor set it is shown; a peer accepts the signature only if the
//! certificate chains to the authority's root, is valid at the time, is meant for client
//! authentication, and the signature verifies under its key.
//!
//! Signing is ring's Ed25519 and verification is rustls-webpki's — the libraries rustls
//! itself uses for TLS — so the certificates are the ones mutual TLS checks too; nothing
//! here invents a format. Envelope signatures, which the server checks in batches, are
//! verified with [`crate::ed25519_cofactored`] under [`certificate_key`] instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, TrustAnchor, UnixTime};
use sha2::{Digest, Sha256};
use webpki::{EndEntityCert, KeyUsage};
use zeroize::Zeroizing;

use crate::ed25519_cofactored::VerifyingKey;

/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// Why a key, a certificate or a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The private key is not a PKCS#8 Ed25519 key.
    #[error("not a PKCS#8 Ed25519 private key")]
    Key,
    /// The certificate does not parse, is not issued by the root, is expired or not yet
    /// valid, or is not for client authentication.
    #[error("certificate refused: {0}")]
    Certificate(String),
    /// The signature does not verify under the certificate's key.
    #[error("bad signature")]
    Signature,
}

/// A client's identity key: the private half of its certificate's Ed25519 key.
pub struct IdentityKey {
    pair: ring::signature::Ed25519KeyPair,
}

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityKey(..)")
    }
}

impl IdentityKey {
    /// The key in a PKCS#8 document (DER), as `privagg ca issue` writes it.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, IdentityError> {
        let der = Zeroizing::new(der.to_vec());
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|_| IdentityError::Key)?;
        Ok(Self { pair })
    }

    /// The key from its 32-byte seed (RFC 8032's private key). For tests and vectors.
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, IdentityError> {
        let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| IdentityError::Key)?;
        Ok(Self { pair })
    }

    /// Signs `message` (deterministic Ed25519).
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }

    /// The public key (32 bytes).
    pub fn public_key(&self) -> [u8; 32] {
        use ring::signature::KeyPair;
        let mut out = [0u8; 32];
        out.copy_from_slice(self.pair.public_key().as_ref());
        out
    }
}

/// The enrollment authority's root certificate, which every client certificate must
/// chain to.
///
/// It remembers, per certificate it accepted, a span of time over which the certificate
/// is valid, so that a client meeting the same peers round after round verifies each
/// chain once rather than every round. A validity period is an interval: a certificate
/// valid at `now` and at `now + CHAIN_CACHE_HORIZON` is valid at every time between.
#[derive(Clone, Debug)]
pub struct TrustRoot {
    anchor: TrustAnchor<'static>,
    accepted: Arc<Mutex<HashMap<[u8; 32], Span>>>,
}

/// How far ahead of its first check a certificate's chain is trusted without checking
/// again, in seconds (if it is still valid then).
pub const CHAIN_CACHE_HORIZON: u64 = 3600;

/// Most certificates a root remembers; beyond it, it forgets them all and starts over.
const CHAIN_CACHE_SIZE: usize = 1 << 16;

/// Seconds since the Unix epoch over which a certificate was found valid, both ends
/// included.
#[derive(Clone, Copy, Debug)]
struct Span {
    from: u64,
    until: u64,
}

/// The signature algorithms client certificates and their signatures may use.
static ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] = &[webpki::ring::ED25519];

impl TrustRoot {
    /// The root in a DER certificate (`ca.der`).
    pub fn from_der(ca: &[u8]) -> Result<Self, IdentityError> {
        let der = CertificateDer::from(ca);
        let anchor = webpki::anchor_from_trusted_cert(&der).map_err(|e| IdentityError::Certificate(e.to_string()))?;
        Ok(Self { anchor: anchor.to_owned(), accepted: Arc::default() })
    }

    /// Checks that `cert` (DER) is issued by this root, is valid at `now` (seconds since
    /// the Unix epoch) and is for client authentication; returns it, ready to verify
    /// signatures.
    pub fn verify<'a>(&self, cert: &'a [u8], now: u64) -> Result<CertifiedKey<'a>, IdentityError> {
        let fingerprint: [u8; 32] = Sha256::digest(cert).into();
        let remembered = self.remembered(&fingerprint);
        if remembered.is_none_or(|span| now < span.from || now > span.until) {
            self.verify_chain(cert, now)?;
            let later = now.saturating_add(CHAIN_CACHE_HORIZON);
            let until = if self.verify_chain(cert, later).is_ok() { later } else { now };
            self.remember(fingerprint, Span { from: now, until });
        }
        Ok(CertifiedKey { der: CertificateDer::from(cert) })
    }

    fn remembered(&self, fingerprint: &[u8; 32]) -> Option<Span> {
        self.accepted.lock().ok()?.get(fingerprint).copied()
    }

    fn remember(&self, fingerprint: [u8; 32], span: Span) {
        // A poisoned lock only costs the cache.
        if let Ok(mut accepted) = self.accepted.lock() {
            if accepted.len() >= CHAIN_CACHE_SIZE {
                accepted.clear();
            }
            accepted.insert(fingerprint, span);
        }
    }

    /// The chain, validity at `now` and usage checks of webpki.
    fn verify_chain(&self, cert: &[u8], now: u64) -> Result<(), IdentityError> {
        let der = CertificateDer::from(cert);
        parse(&der)?
            .verify_for_usage(
                ALGORITHMS,
                std::slice::from_ref(&self.anchor),
                &[],
                UnixTime::since_unix_epoch(std::time::Duration::from_secs(now)),
                KeyUsage::client_auth(),
                None,
                None,
            )
            .map_err(|e| IdentityError::Certificate(e.to_string()))?;
        Ok(())
    }
}

/// Checks `signature` over `message` under the key of `cert` (DER) without checking who
/// issued it: for a certificate already verified, as the server's TLS handshake verifies
/// its clients'.
pub fn verify_signed_by(cert: &[u8], message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> Result<(), IdentityError> {
    CertifiedKey { der: CertificateDer::from(cert) }.verify_signature(message, signature)
}

/// The Ed25519 key of `cert` (DER), decoded to check signatures with
/// [`crate::ed25519_cofactored`], without checking who issued it (as
/// [`verify_signed_by`]). Refuses a certificate that does not parse or whose key is not
/// an Ed25519 point of large order.
pub fn certificate_key(cert: &[u8]) -> Result<VerifyingKey, IdentityError> {
    /// An Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE { SEQUENCE { OID 1.3.101.112 },
    /// BIT STRING (0 unused bits) key }.
    const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
    let der = CertificateDer::from(cert);
    let spki = parse(&der)?.subject_public_key_info();
    spki.strip_prefix(ED25519_SPKI_PREFIX.as_slice())
        .and_then(|key| <&[u8; 32]>::try_from(key).ok())
        .and_then(VerifyingKey::from_bytes)
        .ok_or_else(|| IdentityError::Certificate("not an Ed25519 key".into()))
}

fn parse<'a>(der: &'a CertificateDer<'a>) -> Result<EndEntityCert<'a>, IdentityError> {
    EndEntityCert::try_from(der).map_err(|e| IdentityError::Certificate(e.to_string()))
}

/// A certificate that a [`TrustRoot`] accepted: its key verifies signatures.
#[derive(Debug)]
pub struct CertifiedKey<'a> {
    der: CertificateDer<'a>,
}

impl CertifiedKey<'_> {
    /// Checks `signature` over `message` under the certificate's Ed25519 key.
    pub fn verify_signature(&self, message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> Result<(), IdentityError> {
        parse(&self.der)?
            .verify_signature(webpki::ring::ED25519, message, signature)
            .map_err(|_| IdentityError::Signature)
    }
}
