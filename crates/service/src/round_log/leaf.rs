//! The leaf of one committed round: its public facts, in a canonical JSON encoding
//! (serde_json of [`RoundLeaf`], fields in declaration order, no whitespace, floats in
//! their shortest round-trip form), so that the same facts always give the same bytes.
//! The server writes it (`privagg_server::round_log`); clients read the leaves the
//! server proves to them; auditors recompute them from the state directory.

use privagg_dp::ledger::Release;
use serde::{Deserialize, Serialize};

/// The leaf format's name and version (the first field of every leaf).
pub const LEAF_FORMAT: &str = "privagg-round-leaf/2";

/// One round's public facts, as logged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundLeaf {
    /// [`LEAF_FORMAT`].
    pub format: String,
    /// The server software that wrote it (`privagg <version>`).
    pub software: String,
    /// The training session (hex).
    pub session: String,
    /// Round number (1-based; leaf index + 1).
    pub round: u64,
    /// The attempt that completed.
    pub attempt: u32,
    /// The completed attempt's instance (hex): its SecAgg session id, the transcript
    /// hash of its cohort and of every seat's nonce, which each of its clients derives.
    pub instance: String,
    /// The instance (hex) of every attempt of this round whose survivors were asked for
    /// their unmasking shares, in order, the completed one last: each such attempt may
    /// have released a sum. A client that revealed shares in an attempt requires it here
    /// ([`RoundLeaf::logs_instance`]).
    pub unmasked: Vec<String>,
    /// Clients seated (n).
    pub participants: u32,
    /// Neighbours per client (k).
    pub neighbours: u32,
    /// Shamir threshold (t).
    pub threshold: u32,
    /// Bits per word of the modular sum.
    pub bits: u8,
    /// SHA-256 of the sorted ids of the clients in the sum, each 4 bytes big-endian (hex).
    pub survivors: String,
    /// How many clients are in the sum.
    pub survivor_count: usize,
    /// What the sum was divided by.
    pub denominator: f64,
    /// SHA-256 of `model-<round>.npy` (hex): the model after the round.
    pub model_sha256: String,
    /// With DP: what the round charged and the total so far.
    pub privacy: Option<LeafPrivacy>,
}

/// The privacy a round spent, as logged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeafPrivacy {
    /// δ of both ε figures.
    pub delta: f64,
    /// Every release charged for this round: the completed attempt and any aborted one
    /// that was unmasked, or released before a crash.
    pub releases: Vec<Release>,
    /// ε of this round's releases alone.
    pub epsilon_round: f64,
    /// ε of every release up to and including this round's.
    pub epsilon_total: f64,
}

impl RoundLeaf {
    /// The canonical encoding: the bytes the log hashes.
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Whether the leaf logs attempt `instance` (hex) of its round (as the completed attempt
    /// or among those unmasked): what a client that revealed unmasking shares in that
    /// attempt requires.
    pub fn logs_instance(&self, instance: &str) -> bool {
        self.instance == instance || self.unmasked.iter().any(|u| u == instance)
    }

    /// Parses a leaf (any JSON that describes one; whether it is canonical is checked by
    /// hashing the bytes, not here).
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The log's origin line (and key name) for training session `session` (hex): unique
/// per session.
pub fn origin(session: &str) -> String {
    format!("privagg/{session}")
}
