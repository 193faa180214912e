//! The verifiable round log, as the service carries it: the leaf of a committed round
//! ([`leaf`]), what a client asks and what the server proves before each round
//! ([`proof`]), and the client's check before it takes part ([`verify`]).
//!
//! The tree, the proofs and the signed checkpoints are `privagg-log`'s; the files of a
//! server's log are `privagg_server::round_log`'s. A client says in its `Ready` which
//! checkpoint it holds and which of its rounds it has not seen proven yet; the server
//! answers in that client's `Config` of the next round, so the check costs no round trip
//! and happens before the client reveals anything but its nonce — long before it would
//! send unmasking shares. `protocol/PROTOCOL.md` and `protocol/LOG.md` give the formats.

pub mod leaf;
pub mod proof;
pub mod verify;

pub use leaf::{LEAF_FORMAT, LeafPrivacy, RoundLeaf, origin};
pub use proof::{LogProof, LogRequest, LogState, ProvenLeaf};
pub use verify::{LogCheck, LogMemory, LogRefusal, LogTrust, MAX_REFUSED, RefusedCheckpoint, check};
