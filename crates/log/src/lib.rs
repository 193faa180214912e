//! # privagg-log
//!
//! A transparency log in the manner of Certificate Transparency: an append-only
//! sequence of leaves (here, one per committed round: `privagg_server::round_log`
//! writes them), hashed into an RFC 9162 Merkle tree ([`tree`]), whose size and root
//! the log signs as a checkpoint in the C2SP signed-note format ([`note`]). A verifier
//! that kept an earlier checkpoint asks for a consistency proof and learns whether the
//! log only grew; one that cares about a leaf asks for an inclusion proof. Neither has
//! to trust the log's operator: rewriting, reordering, truncating or forking the log
//! is caught by whoever holds a checkpoint from before.
//!
//! The crate holds no files and no policy: leaves are opaque bytes, and storage is the
//! caller's (see `privagg_server::round_log` for the state directory's layout).

pub mod note;
pub mod tree;

pub use note::{Checkpoint, LogKey, NoteError, VerifierKey, open};
pub use tree::{
    Hash, ProofError, consistency_proof, inclusion_proof, inclusion_proofs, leaf_hash, root, verify_consistency,
    verify_inclusion,
};
