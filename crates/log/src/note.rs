//! Checkpoints, signed in the C2SP signed-note format (c2sp.org/signed-note,
//! c2sp.org/tlog-checkpoint):
//!
//! ```text
//! <origin>\n<tree size, decimal>\n<root hash, base64>\n
//! \n
//! — <key name> <base64(key id ‖ Ed25519 signature)>\n
//! ```
//!
//! The signature covers the body (the three lines, with their newlines). The key id is
//! the first four bytes of `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)`; a verifier key is
//! written `<name>+<key id, hex>+<base64(0x01 ‖ public key)>`. Ed25519 is ring's.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use sha2::{Digest, Sha256};

use crate::tree::Hash;

/// The signature type byte of Ed25519 in signed notes.
const ED25519_TYPE: u8 = 0x01;

/// A checkpoint or key that does not parse or verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// The text is not a checkpoint or key of this format.
    #[error("malformed {what}: {why}")]
    Malformed {
        /// A checkpoint, a verifier key, a private key.
        what: &'static str,
        /// What is wrong.
        why: String,
    },
    /// No signature by the expected key, or a signature that does not verify.
    #[error("the checkpoint carries no valid signature by {0}")]
    BadSignature(String),
}

fn malformed(what: &'static str, why: impl Into<String>) -> NoteError {
    NoteError::Malformed { what, why: why.into() }
}

/// A log's state: its origin (the log's name), size and root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's unique name (first line); never contains a newline.
    pub origin: String,
    /// Leaves in the tree.
    pub size: u64,
    /// The tree's root.
    pub root: Hash,
}

impl Checkpoint {
    /// The signed body: origin, size and root, one per line.
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, B64.encode(self.root))
    }

    /// Parses and verifies a signed checkpoint: it must carry a valid signature by `key`
    /// (other signatures, such as a witness's, are ignored here).
    pub fn verify(note: &str, key: &VerifierKey) -> Result<Self, NoteError> {
        Self::parse_body(open(note, key)?)
    }

    fn parse_body(body: &str) -> Result<Self, NoteError> {
        if body.lines().count() < 3 {
            return Err(malformed("checkpoint", "fewer than three lines"));
        }
        let mut lines = body.lines();
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next()) else {
            return Err(malformed("checkpoint", "fewer than three lines"));
        };
        let size = size.parse().map_err(|_| malformed("checkpoint", format!("tree size {size:?}")))?;
        let root = B64
            .decode(root)
            .ok()
            .and_then(|r| <Hash>::try_from(r).ok())
            .ok_or_else(|| malformed("checkpoint", "root hash is not 32 bytes of base64"))?;
        if origin.is_empty() {
            return Err(malformed("checkpoint", "empty origin"));
        }
        Ok(Self { origin: origin.into(), size, root })
    }
}

/// The text of a signed note, if it carries a valid signature by `key`; other
/// signatures are ignored.
pub fn open<'a>(note: &'a str, key: &VerifierKey) -> Result<&'a str, NoteError> {
    let split = note.find("\n\n").ok_or_else(|| malformed("note", "no blank line before the signatures"))?;
    let (text, signatures) = (&note[..=split], &note[split + 2..]);
    let signed = signatures.lines().filter_map(|line| line.strip_prefix("— ")).any(|line| {
        let Some((name, sig)) = line.split_once(' ') else { return false };
        let Ok(bytes) = B64.decode(sig) else { return false };
        name == key.name && bytes.len() == 68 && bytes[..4] == key.id && key.verify(text.as_bytes(), &bytes[4..])
    });
    if signed { Ok(text) } else { Err(NoteError::BadSignature(key.name.clone())) }
}

/// The key a log signs its checkpoints with (Ed25519, ring).
pub struct LogKey {
    name: String,
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
}

impl LogKey {
    /// A new key named `name` (the key name of the signature lines; no spaces,
    /// newlines or `+`).
    pub fn generate(name: &str) -> Result<Self, NoteError> {
        check_name(name)?;
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| malformed("private key", "the system RNG failed"))?;
        Self::from_pkcs8(name, pkcs8.as_ref())
    }

    /// A key from its PKCS#8 document ([`LogKey::pkcs8`]).
    pub fn from_pkcs8(name: &str, pkcs8: &[u8]) -> Result<Self, NoteError> {
        check_name(name)?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| malformed("private key", e.to_string()))?;
        Ok(Self { name: name.into(), pair, pkcs8: pkcs8.to_vec() })
    }

    /// The private key as PKCS#8 (a secret: store it readable by its owner only).
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The key that verifies this key's signatures.
    pub fn verifier(&self) -> VerifierKey {
        let public: [u8; 32] = self.pair.public_key().as_ref().try_into().unwrap_or([0; 32]);
        VerifierKey { id: key_id(&self.name, &public), name: self.name.clone(), public }
    }

    /// `checkpoint`, signed: the note text.
    pub fn sign(&self, checkpoint: &Checkpoint) -> String {
        let body = checkpoint.body();
        let mut sig = key_id(&self.name, &self.verifier().public).to_vec();
        sig.extend_from_slice(self.pair.sign(body.as_bytes()).as_ref());
        format!("{body}\n— {} {}\n", self.name, B64.encode(sig))
    }
}

impl Drop for LogKey {
    fn drop(&mut self) {
        // ring zeroizes its own key material; the PKCS#8 copy is ours.
        self.pkcs8.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&self.pkcs8);
    }
}

/// A log's public key, as verifiers hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: [u8; 4],
    public: [u8; 32],
}

impl VerifierKey {
    /// Parses `<name>+<key id, hex>+<base64(0x01 ‖ public key)>`, checking the id.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let bad = |why: &str| malformed("verifier key", why);
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected name+id+key"));
        };
        let key = B64.decode(key).map_err(|_| bad("the key is not base64"))?;
        let public: [u8; 32] = match key.split_first() {
            Some((&ED25519_TYPE, public)) => public.try_into().map_err(|_| bad("not a 32-byte Ed25519 key"))?,
            _ => return Err(bad("not an Ed25519 key")),
        };
        let parsed = Self { id: key_id(name, &public), name: name.into(), public };
        if hex::encode(parsed.id) != id {
            return Err(bad("the key id does not match the key"));
        }
        Ok(parsed)
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.public).verify(message, signature).is_ok()
    }
}

impl std::fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut key = vec![ED25519_TYPE];
        key.extend_from_slice(&self.public);
        write!(f, "{}+{}+{}", self.name, hex::encode(self.id), B64.encode(key))
    }
}

fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '+') {
        return Err(malformed("key name", format!("{name:?} is empty or holds a space, newline or '+'")));
    }
    Ok(())
}

fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let hash = Sha256::new().chain_update(name).chain_update([0x0a, ED25519_TYPE]).chain_update(public).finalize();
    [hash[0], hash[1], hash[2], hash[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_checkpoint_verifies_and_any_change_does_not() {
        let key = LogKey::generate("privagg.example/log").unwrap();
        let verifier = VerifierKey::parse(&key.verifier().to_string()).unwrap();
        let checkpoint = Checkpoint { origin: "privagg.example/log".into(), size: 7, root: [9; 32] };
        let note = key.sign(&checkpoint);
        assert_eq!(Checkpoint::verify(&note, &verifier).unwrap(), checkpoint);
        for tampered in [note.replacen("\n7\n", "\n8\n", 1), note.replacen("privagg.example", "privagg.evil", 1)] {
            assert_eq!(Checkpoint::verify(&tampered, &verifier), Err(NoteError::BadSignature(verifier.name().into())));
        }
        let other = LogKey::generate("privagg.example/log").unwrap().verifier();
        assert!(Checkpoint::verify(&note, &other).is_err());
        // The same key, restored from its PKCS#8 document, signs alike.
        let restored = LogKey::from_pkcs8("privagg.example/log", key.pkcs8()).unwrap();
        assert_eq!(restored.verifier(), verifier);
        assert!(Checkpoint::verify("no blank line", &verifier).is_err());
        assert!(VerifierKey::parse("name+00000000+AQ==").is_err());
        assert!(LogKey::generate("has space").is_err());
    }

    /// The example of golang.org/x/mod/sumdb/note, the reference implementation: its
    /// verifier key parses (so our key id is theirs) and its note verifies.
    #[test]
    fn the_reference_implementations_note_verifies() {
        let key = VerifierKey::parse("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW").unwrap();
        assert_eq!(key.to_string(), "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW");
        let text =
            "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
        let note = format!(
            "{text}\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
        );
        assert_eq!(open(&note, &key).unwrap(), text);
        assert!(open(&note.replace("problem,", "problem;"), &key).is_err());
        assert!(VerifierKey::parse("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW").is_err());
    }
}
