//! The JSON record the server writes after each completed round.

use std::collections::BTreeMap;

use privagg_service::Offence;
use serde::{Deserialize, Serialize};

/// A client that left a round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DroppedRecord {
    /// Its id in the round.
    pub client: u32,
    /// The phase in which it left.
    pub phase: String,
    /// Why.
    pub reason: String,
    /// Whether its input is nevertheless in the sum (it left after uploading).
    pub in_sum: bool,
}

/// Who held a seat: the identity behind a round's client id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderRecord {
    /// The identity's fingerprint: the first 8 bytes, in hex, of SHA-256 of the token,
    /// or of "certificate:" ‖ the certificate's DER (`privagg identity` prints it).
    pub identity: String,
    /// The common name of its certificate's subject, if it presented one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Why an identity was banned (a typed reason, as the session gives it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum BanReason {
    /// It broke the protocol.
    Violation {
        /// The violation.
        detail: String,
    },
    /// It did not read what the server wrote within the write deadline.
    StalledDownload,
    /// It held an upload grant past its deadline.
    StalledUpload,
    /// It began a frame and did not finish it within the read deadline.
    StalledFrame,
}

impl BanReason {
    /// The reason for `offence`.
    pub fn of(offence: &Offence) -> Self {
        match offence {
            Offence::Violation(detail) => Self::Violation { detail: detail.clone() },
            Offence::StalledDownload => Self::StalledDownload,
            Offence::StalledUpload => Self::StalledUpload,
            Offence::StalledFrame => Self::StalledFrame,
            other => Self::Violation { detail: other.to_string() },
        }
    }

    /// The offence it gives.
    pub fn offence(&self) -> Offence {
        match self {
            Self::Violation { detail } => Offence::Violation(detail.clone()),
            Self::StalledDownload => Offence::StalledDownload,
            Self::StalledUpload => Offence::StalledUpload,
            Self::StalledFrame => Offence::StalledFrame,
        }
    }
}

/// An identity banned (for `--ban-duration`, or the rest of the session).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanRecord {
    /// The identity's fingerprint (a prefix of its digest).
    pub identity: String,
    /// Its seat in the round in progress when it was banned, if it held one.
    pub client: Option<u32>,
    /// The round being prepared or run when it was banned.
    pub round: u64,
    /// Offences counted against it.
    pub offences: u32,
    /// The offence that banned it.
    pub reason: BanReason,
}

/// Privacy accounting after a round, against the server (no amplification).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrivacyRecord {
    /// ε spent so far at `delta`: every release in the privacy ledger
    /// (`privacy-ledger.json`), aborted attempts and releases before a restart included.
    pub epsilon: f64,
    /// δ.
    pub delta: f64,
    /// The noise multiplier clients' noise actually gives (≥ the configured one).
    pub effective_noise_multiplier: f64,
    /// Releases charged so far (rounds completed, plus attempts released but not
    /// committed).
    #[serde(default)]
    pub releases: usize,
    /// With random check-ins: ε so far against those who see only the released models,
    /// at `check_in_delta`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_in_epsilon: Option<f64>,
    /// δ of `check_in_epsilon`: `delta` plus releases·β.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_in_delta: Option<f64>,
}

/// One completed round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// Round number (1-based).
    pub round: u64,
    /// Which attempt of this round completed (earlier ones aborted).
    pub attempt: u32,
    /// The completed attempt's instance (hex SecAgg session id).
    #[serde(default)]
    pub instance: String,
    /// The instances (hex) of every attempt of this round asked to unmask, in order,
    /// the completed one last.
    #[serde(default)]
    pub unmasked: Vec<String>,
    /// Clients that were given a seat.
    pub participants: u32,
    /// Who held each seat, by client id: the ids of `included`, `dropped` and the rest
    /// mapped to identities (never a token).
    #[serde(default)]
    pub clients: BTreeMap<u32, HolderRecord>,
    /// Ids of the clients whose inputs are in the sum.
    pub included: Vec<u32>,
    /// Clients that left, when and why.
    pub dropped: Vec<DroppedRecord>,
    /// Clients that lost their connection and came back to their seat.
    #[serde(default)]
    pub reconnected: Vec<u32>,
    /// Identities banned for the session since the previous round's record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub banned: Vec<BanRecord>,
    /// Neighbours per client (k) and Shamir threshold (t) of the round.
    pub neighbours: u32,
    /// Shamir threshold.
    pub threshold: u32,
    /// Bits per word of the modular sum.
    pub bits: u8,
    /// What the sum was divided by: the expected cohort size (DP on) or the total
    /// weight (DP off).
    pub denominator: f64,
    /// L2 norm of the averaged update applied to the model (before the server learning
    /// rate).
    pub update_norm: f64,
    /// Privacy accounting (DP on only).
    pub privacy: Option<PrivacyRecord>,
    /// With adaptive clipping: the round's clip, the noisy fraction of updates under it,
    /// and the next round's clip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip: Option<crate::aggregation::ClipStep>,
    /// Seconds spent in each phase, and `total`.
    pub timings: BTreeMap<String, f64>,
    /// Bytes received from the round's clients.
    pub bytes_in: u64,
    /// Bytes sent to them.
    pub bytes_out: u64,
}
