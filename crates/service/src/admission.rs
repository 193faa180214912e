//! Who may take a seat: clients with a certificate of the deployment's enrollment
//! authority (checked in the TLS handshake), holders of a listed token, or anyone when
//! the server runs with neither (local trials; the server says so in its log).
//!
//! A connection is admitted as a [`ClientIdentity`]: a digest of its certificate, of its
//! token, or of the client's own random identity. One identity holds one connection. A
//! second connection with an identity in use is **refused** ([`Refusal::IdentityInUse`])
//! and the holder keeps its seat, unless it proves it is the same client: it presents
//! the same random client identity as the holder (a client reconnecting after a lost
//! connection; the random identity travels only inside TLS), or it holds the same
//! certificate (mutual TLS proved the private key). Such a connection replaces the older
//! one (or takes back its seat in the middle of a round). A leaked token therefore lets
//! nobody take over the seat of the client using it.
//!
//! An identity dropped for protocol violations or for stalling a transfer too often is
//! banned for a while or for the session ([`Refusal::Banned`]).

use std::collections::HashSet;

use sha2::{Digest, Sha256};

use crate::message::IDENTITY_LEN;

/// Who an admitted client is, for the server's lifetime: SHA-256 of its token, or of its
/// random identity under open admission.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientIdentity([u8; 32]);

impl ClientIdentity {
    /// The identity of a client admitted by its certificate (DER).
    pub fn of_certificate(der: &[u8]) -> Self {
        Self(digest(&[b"certificate:".as_slice(), der].concat()))
    }

    /// The identity of a client admitted by its token.
    pub fn of_token(token: &str) -> Self {
        Self(digest(token.as_bytes()))
    }

    /// The whole digest (what the server keeps of a ban across restarts).
    pub fn digest(&self) -> [u8; 32] {
        self.0
    }

    /// The identity whose [`digest`](Self::digest) this is.
    pub fn from_digest(digest: [u8; 32]) -> Self {
        Self(digest)
    }

    /// The first 8 bytes of the digest in hex: enough to tell identities apart in logs
    /// and records, useless to guess a token from.
    pub fn fingerprint(&self) -> String {
        self.0[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A prefix of a digest: enough to tell identities apart in logs, useless to guess
        // a token from.
        write!(f, "ClientIdentity({:02x}{:02x}{:02x}{:02x}…)", self.0[0], self.0[1], self.0[2], self.0[3])
    }
}

/// Why a connection was not admitted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The server uses a token list and the client presented no token.
    #[error("a token is required")]
    TokenRequired,
    /// The token is not on the list.
    #[error("unknown token")]
    UnknownToken,
    /// The first frame was not a well-formed `Hello`.
    #[error("expected a Hello, got {0}")]
    NotAHello(String),
    /// The server admits by certificate and the connection presented none.
    #[error("a client certificate is required")]
    CertificateRequired,
    /// Another live connection holds this identity (token) and this one did not prove it
    /// is the same client.
    #[error("this identity is in use by another connection")]
    IdentityInUse,
    /// The identity is banned (for a while, or the rest of the session).
    #[error("banned: {0}")]
    Banned(String),
}

/// The admission policy.
#[derive(Clone, Debug)]
pub struct Admission {
    rule: Rule,
}

#[derive(Clone, Debug)]
enum Rule {
    Open,
    /// SHA-256 of each allowed token.
    Tokens(HashSet<[u8; 32]>),
    /// A certificate the TLS handshake verified against the enrollment authority.
    Certificates,
}

impl Admission {
    /// Admits everyone.
    pub fn open() -> Self {
        Self { rule: Rule::Open }
    }

    /// Admits clients whose certificate the TLS handshake verified (the server's TLS
    /// configuration holds the enrollment authority's root).
    pub fn certificates() -> Self {
        Self { rule: Rule::Certificates }
    }

    /// Whether clients are admitted by certificate, so that every seat has a certified
    /// identity.
    pub fn by_certificate(&self) -> bool {
        matches!(self.rule, Rule::Certificates)
    }

    /// Admits the holders of `tokens` (surrounding whitespace ignored). `None` if the
    /// list holds no token.
    pub fn with_tokens<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        let tokens: HashSet<[u8; 32]> =
            tokens.into_iter().map(str::trim).filter(|t| !t.is_empty()).map(|t| digest(t.as_bytes())).collect();
        (!tokens.is_empty()).then_some(Self { rule: Rule::Tokens(tokens) })
    }

    /// Reads a token file's text: one token per line, blank lines and lines starting with
    /// `#` ignored. `None` if it holds no token.
    pub fn from_token_file(text: &str) -> Option<Self> {
        Self::with_tokens(text.lines().map(str::trim).filter(|l| !l.starts_with('#')))
    }

    /// Whether holding the identity proves it (a certificate whose key the TLS handshake
    /// checked), so that a second connection with it may replace the first. A token
    /// proves nothing of the kind: it may have leaked.
    pub fn proves_possession(&self) -> bool {
        matches!(self.rule, Rule::Certificates)
    }

    /// Whether anyone may join.
    pub fn is_open(&self) -> bool {
        matches!(self.rule, Rule::Open)
    }

    /// The identity of a client presenting `token`, its random `identity` and, from the
    /// TLS handshake, `certificate` (DER), or why it is refused.
    pub fn admit(
        &self,
        token: &str,
        identity: &[u8; IDENTITY_LEN],
        certificate: Option<&[u8]>,
    ) -> Result<ClientIdentity, Refusal> {
        match &self.rule {
            Rule::Open => Ok(ClientIdentity(digest(&[b"anonymous:".as_slice(), identity].concat()))),
            Rule::Certificates => certificate.map(ClientIdentity::of_certificate).ok_or(Refusal::CertificateRequired),
            Rule::Tokens(_) if token.is_empty() => Err(Refusal::TokenRequired),
            Rule::Tokens(tokens) => {
                let identity = ClientIdentity::of_token(token);
                if tokens.contains(&identity.0) { Ok(identity) } else { Err(Refusal::UnknownToken) }
            }
        }
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_admits_only_listed_tokens() {
        let a = Admission::from_token_file("# clients\nalpha\n\n  beta  \n").unwrap();
        assert!(!a.is_open());
        assert!(a.admit("alpha", &[0; 16], None).is_ok());
        // With tokens, the token is the identity, whatever the client's random one.
        assert_eq!(a.admit("beta", &[1; 16], None), a.admit("beta", &[2; 16], None));
        assert_eq!(a.admit("gamma", &[0; 16], None), Err(Refusal::UnknownToken));
        assert_eq!(a.admit("", &[0; 16], None), Err(Refusal::TokenRequired));
        assert!(Admission::from_token_file("# nothing\n\n").is_none());
    }

    #[test]
    fn open_admission_tells_clients_apart_by_their_identity() {
        let a = Admission::open();
        assert!(a.is_open());
        assert_ne!(a.admit("", &[1; 16], None), a.admit("", &[2; 16], None));
        assert_eq!(a.admit("x", &[1; 16], None), a.admit("y", &[1; 16], None));
    }

    #[test]
    fn admission_by_certificate_needs_one_and_is_it() {
        let a = Admission::certificates();
        assert!(a.by_certificate() && !a.is_open());
        assert_eq!(a.admit("", &[1; 16], None), Err(Refusal::CertificateRequired));
        assert_eq!(a.admit("", &[1; 16], Some(b"cert A")), a.admit("token", &[2; 16], Some(b"cert A")));
        assert_ne!(a.admit("", &[1; 16], Some(b"cert A")), a.admit("", &[1; 16], Some(b"cert B")));
    }
}
