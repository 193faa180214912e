//! Typed errors of the protocol core. A client's fault never becomes a server error
//! that stops the round: it becomes a [`Violation`] that drops that client alone.

use privagg_crypto::{CryptoError, ShamirError};

use crate::message::AbortCode;
use crate::round_params::ClientId;
use crate::server::Phase;

/// Why bytes did not decode into a message.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame ended before a field did.
    #[error("message truncated: needed {needed} more bytes, {remaining} left")]
    Truncated {
        /// Bytes the field needed.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// Bytes remained after the message ended.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// The version byte is not [`crate::PROTOCOL_VERSION`].
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// The type byte names no message for this direction.
    #[error("unknown message type {0:#04x}")]
    UnknownMessageType(u8),
    /// The type byte is in [`crate::SERVICE_TYPES`]: a service message, which the
    /// service layer decodes, not the protocol.
    #[error("message type {0:#04x} is reserved for service messages")]
    ReservedType(u8),
    /// A count or length exceeded the configured limit.
    #[error("{what} of {value} exceeds the limit of {limit}")]
    LimitExceeded {
        /// Which count.
        what: &'static str,
        /// The value received.
        value: u64,
        /// The limit.
        limit: u64,
    },
    /// A field held a value outside its domain.
    #[error("invalid {0}")]
    InvalidField(&'static str),
    /// A public key is not a canonical ristretto255 encoding of a non-identity point.
    #[error("invalid public key")]
    InvalidPublicKey,
    /// A share is not a canonical scalar.
    #[error("invalid scalar encoding")]
    InvalidScalar,
    /// A packed vector's byte length does not match its dimension and width.
    #[error("packed vector has {got} bytes, expected {expected}")]
    PackedLength {
        /// ⌈dim·bits/8⌉.
        expected: usize,
        /// Bytes received.
        got: usize,
    },
    /// The padding bits after the last word are not zero.
    #[error("non-zero padding bits in packed vector")]
    NonZeroPadding,
}

/// Round parameters that break an invariant of [`crate::RoundParams`].
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParamsError {
    /// n outside `2..=MAX_CLIENTS`.
    #[error("number of clients {0} is outside 2..={max}", max = crate::MAX_CLIENTS)]
    NumClients(u32),
    /// k neither n − 1 nor even in `2..n − 1`.
    #[error("{neighbours} neighbours is neither {complete} (complete graph) nor even and between 2 and {last}", complete = num_clients - 1, last = num_clients.saturating_sub(3))]
    Neighbours {
        /// k.
        neighbours: u32,
        /// n.
        num_clients: u32,
    },
    /// t outside `2..=k + 1`.
    #[error("threshold {threshold} is outside 2..={max}", max = neighbours + 1)]
    Threshold {
        /// t.
        threshold: u32,
        /// k.
        neighbours: u32,
    },
    /// min_clients outside `t..=n`.
    #[error("minimum of {min_clients} clients is outside {threshold}..={num_clients}")]
    MinClients {
        /// The minimum.
        min_clients: u32,
        /// t.
        threshold: u32,
        /// n.
        num_clients: u32,
    },
    /// dim outside `1..=MAX_DIM`.
    #[error("dimension {0} is outside 1..={max}", max = crate::MAX_DIM)]
    Dim(u32),
    /// bits outside `1..=64`.
    #[error("word width of {0} bits is outside 1..=64")]
    Bits(u8),
    /// The cohort does not fill the round's seats.
    #[error("{members} members for a round of {num_clients} clients")]
    CohortSize {
        /// Members given.
        members: usize,
        /// n.
        num_clients: u32,
    },
}

/// Why a neighbour count and threshold are unsafe or cannot be found.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum ParameterError {
    /// n outside the finder's range.
    #[error("number of clients {0} is outside 2..={max}", max = crate::graph_params::MAX_FINDER_CLIENTS)]
    NumClients(u32),
    /// A fraction outside [0, 1).
    #[error("{what} {value} is outside [0, 1)")]
    InvalidFraction {
        /// Which fraction.
        what: &'static str,
        /// Its value.
        value: f64,
    },
    /// The threat model is beyond what any graph can tolerate.
    #[error("infeasible threat model: {0}")]
    Infeasible(&'static str),
    /// k is neither n − 1 nor even and below n − 1.
    #[error("{neighbours} neighbours is neither n − 1 = {complete} nor even and below it", complete = num_clients - 1)]
    InvalidDegree {
        /// k.
        neighbours: u32,
        /// n.
        num_clients: u32,
    },
    /// Condition 1 fails: the honest survivors' graph may split.
    #[error("with {neighbours} neighbours the honest survivors' graph splits with probability above 2^-41")]
    Disconnected {
        /// k.
        neighbours: u32,
    },
    /// Conditions 2 and 3 leave no threshold.
    #[error(
        "with {neighbours} neighbours no threshold both keeps secrets from corrupt neighbours and survives the dropouts"
    )]
    NoSafeThreshold {
        /// k.
        neighbours: u32,
    },
    /// Condition 2 fails: corrupt neighbours could reach t.
    #[error(
        "threshold {threshold} is too low: corrupt neighbours could reconstruct a client's secrets; it must be at least {lowest}"
    )]
    ThresholdTooLow {
        /// t.
        threshold: u32,
        /// Smallest safe t.
        lowest: u32,
    },
    /// Condition 3 fails: too few neighbours may survive.
    #[error(
        "threshold {threshold} is too high: too few neighbours may survive the dropouts; it must be at most {highest}"
    )]
    ThresholdTooHigh {
        /// t.
        threshold: u32,
        /// Largest correct t.
        highest: u32,
    },
}

/// A message the client state machine refused; the client's round is over.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// A message arrived that the current state does not expect.
    #[error("unexpected {message} while {state}")]
    UnexpectedMessage {
        /// The client's state.
        state: &'static str,
        /// The message type.
        message: &'static str,
    },
    /// The round parameters are invalid.
    #[error("invalid round parameters: {0}")]
    InvalidParams(#[from] ParamsError),
    /// The parameters break the client's own policy.
    #[error("round refused by local policy: {0}")]
    PolicyRefused(String),
    /// The threshold is too low for the client's policy: the server, with the corrupt
    /// neighbours the policy assumes, could rebuild the client's secrets.
    #[error(
        "threshold {threshold} is below {required}, the least that keeps this client's secrets from a server with {corrupt_neighbours} corrupt neighbours"
    )]
    UnsafeThreshold {
        /// The round's threshold.
        threshold: u32,
        /// The smallest the policy accepts.
        required: u32,
        /// The corrupt neighbours it assumes.
        corrupt_neighbours: u32,
    },
    /// The policy assumes a server that may lie, and against such a server only peers
    /// certified by the enrollment authority can be trusted: this client has no
    /// certificate and root to take part with.
    #[error(
        "this client assumes a malicious server, which needs a certificate and the enrollment authority's root; without them only a client that trusts its server (threat: curious) may take part"
    )]
    IdentityRequired,
    /// The assigned id is outside the round.
    #[error("assigned id {0} is outside the round")]
    InvalidClientId(u32),
    /// The cohort in the key list is not the one the config committed to, or misplaces
    /// this client.
    #[error("the key list's cohort is not the one committed to: {0}")]
    CohortMismatch(String),
    /// A neighbour's entry carries no certificate and signature.
    #[error("{0} is not signed by a certified client")]
    UnsignedPeer(ClientId),
    /// A neighbour's certificate is not from the enrollment authority, not valid now, or
    /// not the one its seat was taken with.
    #[error("the certificate of {peer} is refused: {reason}")]
    PeerCertificate {
        /// The neighbour.
        peer: ClientId,
        /// Why.
        reason: String,
    },
    /// A neighbour's signature does not verify over what it advertised.
    #[error("the signature of {0} does not verify")]
    BadPeerSignature(ClientId),
    /// The key list lacks the client's own keys or shows different ones.
    #[error("the key list does not hold this client's own keys")]
    OwnKeysMissing,
    /// A list names a client that is not a neighbour (or is out of order).
    #[error("{0} is not an expected neighbour here")]
    UnexpectedPeer(ClientId),
    /// A list names a client twice.
    #[error("{0} appears twice")]
    DuplicatePeer(ClientId),
    /// Two clients advertised the same public key.
    #[error("{0} advertised a key that another client also uses")]
    ReusedKey(ClientId),
    /// A neighbour's keys came without valid proofs that it holds their secrets: keys the
    /// server made up, or related to another client's (refused before anything is sent).
    #[error("{0} advertised keys without proving it holds their secrets")]
    UnprovenKeys(ClientId),
    /// Too few neighbours remain for the threshold.
    #[error("only {alive} of the neighbourhood remain, below the threshold {threshold}")]
    TooFewNeighbours {
        /// Neighbours alive, the client included.
        alive: usize,
        /// t.
        threshold: u32,
    },
    /// Fewer of the client's neighbours are in the key list, or sent it shares, than its
    /// policy requires: the server may be withholding honest neighbours to isolate it.
    #[error("only {present} of {degree} neighbours remain; this client requires {required}")]
    NeighbourhoodShrunk {
        /// Neighbours whose envelopes arrived.
        present: usize,
        /// Neighbours in the graph.
        degree: u32,
        /// The least the policy accepts.
        required: usize,
    },
    /// An envelope did not open, held malformed shares, was bound to other commitments
    /// or dealt shares that do not verify, and this client cannot complain about it: it
    /// assumes a server that may deviate yet has no certificate with which to check that
    /// the sender signed the envelope (a state [`ClientError::IdentityRequired`] normally
    /// rules out).
    #[error("the envelope from {0} failed its checks")]
    EnvelopeRejected(ClientId),
    /// The envelope relayed as `{0}`'s carries no signature, though `{0}` is certified:
    /// the server stripped it (an honest server relays only signed envelopes from
    /// certified senders). Nothing is revealed about the envelope.
    #[error("the envelope from {0} is relayed without its sender's signature")]
    UnsignedEnvelope(ClientId),
    /// The signature relayed with `{0}`'s envelope does not verify under `{0}`'s
    /// certificate over this session, round, pair, commitments and ciphertext: the server
    /// altered, substituted or replayed it (an honest server checked it on receipt).
    /// Nothing is revealed about the envelope: a complaint could let the server open it.
    #[error("the envelope from {0} does not carry a valid signature of its sender")]
    BadEnvelopeSignature(ClientId),
    /// The survivor set to sign is malformed, leaves this client out, or covers fewer
    /// inputs than the round's minimum.
    #[error("survivor set refused: {0}")]
    SurvivorSetRefused(String),
    /// A survivor-set signature forwarded with the unmask request does not verify.
    #[error("the survivor-set signature of {0} does not verify")]
    BadSurvivorSignature(ClientId),
    /// Fewer than t of the client's holders signed the survivor set it signed: the server
    /// may be showing different holders different sets.
    #[error("only {signed} holders signed the survivor set, below the threshold {threshold}")]
    TooFewSurvivorSignatures {
        /// Valid signatures, this client's included.
        signed: usize,
        /// t.
        threshold: u32,
    },
    /// An unmask request asked for both shares of one client.
    #[error("the server asked for both shares of {0}")]
    BothSharesRequested(ClientId),
    /// An unmask request contradicts what this client saw.
    #[error("inconsistent unmask request: {0}")]
    InconsistentUnmaskRequest(String),
    /// The input has the wrong length.
    #[error("input has {got} words, the round expects {expected}")]
    WrongInputLength {
        /// dim.
        expected: u32,
        /// Length given.
        got: usize,
    },
    /// An input word is not below 2^bits.
    #[error("input word {index} is not below 2^{bits}")]
    InputOutOfRange {
        /// Position of the first bad word.
        index: usize,
        /// The round's width.
        bits: u8,
    },
    /// The input was set twice.
    #[error("the input is already set")]
    InputAlreadySet,
    /// The server aborted the round.
    #[error("the server aborted the round ({code:?}): {detail}")]
    Aborted {
        /// The server's code.
        code: AbortCode,
        /// The server's detail.
        detail: String,
    },
    /// A key agreement failed (a peer key of low order).
    #[error("key agreement failed: {0}")]
    Crypto(#[from] CryptoError),
    /// Shamir sharing failed.
    #[error("secret sharing failed: {0}")]
    Shamir(#[from] ShamirError),
}

/// What a client did wrong; the server drops it from the round for this.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// A message type that does not belong to the current phase.
    #[error("{message} during the {phase:?} phase")]
    UnexpectedMessage {
        /// The server's phase.
        phase: Phase,
        /// The message type.
        message: &'static str,
    },
    /// The phase's message, sent a second time.
    #[error("duplicate {0}")]
    DuplicateMessage(&'static str),
    /// The same public key used twice (by this client or by two clients).
    #[error("public key already in use")]
    ReusedKey,
    /// Advertised keys without valid proofs that the client holds their secrets.
    #[error("keys advertised without proof of possession")]
    UnprovenKeys,
    /// The revealed nonce does not match the client's commitment.
    #[error("the nonce does not match the commitment")]
    WrongNonce,
    /// A certified client's advertisement is unsigned, or its signature does not verify
    /// under its certificate.
    #[error("the advertisement's signature is missing or does not verify")]
    BadSignature,
    /// Share envelopes not addressed to exactly the advertising neighbours.
    #[error("envelopes must go to exactly the advertising neighbours: {0}")]
    WrongEnvelopes(String),
    /// A masked vector of the wrong length or width.
    #[error("masked input has {dim} words of {bits} bits, expected {expected_dim} of {expected_bits}")]
    WrongVectorShape {
        /// Words received.
        dim: u32,
        /// Width received.
        bits: u8,
        /// The round's dim.
        expected_dim: u32,
        /// The round's width.
        expected_bits: u8,
    },
    /// Feldman commitments of the wrong degree, or whose constant term is not the
    /// advertised mask key.
    #[error("wrong share commitments: {0}")]
    WrongCommitments(String),
    /// A revealed share of `owner`'s secret does not verify against `owner`'s commitments.
    #[error("revealed a share of {owner}'s secret that does not verify against its commitments")]
    InvalidShare {
        /// Whose secret the wrong share claims to be of.
        owner: ClientId,
    },
    /// An unmask response that does not answer exactly the request.
    #[error("unmask response does not match the request: {0}")]
    WrongShares(String),
    /// Sent `recipient` an envelope that does not open, holds a malformed plaintext, is
    /// bound to other commitments than those it gave the server, or deals shares that do
    /// not verify against them: proven by `recipient`'s complaint, checked by the server
    /// on the envelope it relayed (signed by the sender, if certified: it made those bytes).
    #[error("sent {recipient} an envelope that fails its checks (proven by {recipient}'s complaint)")]
    BadEnvelope {
        /// The client that complained.
        recipient: ClientId,
    },
    /// A certified client sent `recipient` an envelope without its signature.
    #[error("the envelope for {recipient} is not signed")]
    UnsignedEnvelope {
        /// Whom the envelope was for.
        recipient: ClientId,
    },
    /// A certified client's signature over its envelope for `recipient` does not verify
    /// under its certificate ([`crate::complaint::envelope_message`]).
    #[error("the signature of the envelope for {recipient} does not verify")]
    BadEnvelopeSignature {
        /// Whom the envelope was for.
        recipient: ClientId,
    },
    /// A client without a certificate signed its envelope for `recipient`: nothing could
    /// verify the signature, so it is refused rather than relayed.
    #[error("the envelope for {recipient} carries a signature, but its sender has no certificate")]
    UnexpectedEnvelopeSignature {
        /// Whom the envelope was for.
        recipient: ClientId,
    },
    /// Complained about `sender`'s envelope without cause: the envelope was not relayed to
    /// it, the complaint repeats or is out of order, the proof of the revealed channel
    /// value does not verify, the envelope does not carry the signature its sender's
    /// certificate requires, or the envelope passes every check under that value.
    #[error("unfounded complaint about {sender}'s envelope")]
    UnfoundedComplaint {
        /// The client complained about.
        sender: ClientId,
    },
    /// A frame that does not decode (reported by the transport layer).
    #[error("malformed message: {0}")]
    Malformed(DecodeError),
    /// A breach of the transport's rules (reported by the transport layer), e.g. an
    /// oversized frame or an upload without a grant.
    #[error("{0}")]
    Transport(String),
}

/// Why the server did not accept a message. Only [`ServerError::Violation`] drops the
/// sender; the others are ignored messages that change nothing.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerError {
    /// The sender is not a client of this round.
    #[error("unknown client id {0}")]
    UnknownClient(u32),
    /// The sender was already dropped from the round.
    #[error("{0} was already dropped from the round")]
    AlreadyDropped(ClientId),
    /// The round is over (completed, aborted, or collecting no more messages).
    #[error("the round no longer accepts messages")]
    RoundOver,
    /// The sender broke the protocol and has been dropped.
    #[error("{client} dropped: {violation}")]
    Violation {
        /// The sender.
        client: ClientId,
        /// What it did.
        violation: Violation,
    },
}

/// Why a round ended without a sum. Nothing about any input is revealed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoundAbort {
    /// Fewer clients than the minimum remained.
    #[error("only {remaining} clients remain in the {phase:?} phase, below the minimum of {required}")]
    TooFewClients {
        /// Phase in which it happened.
        phase: Phase,
        /// Clients remaining.
        remaining: usize,
        /// The round's minimum.
        required: u32,
    },
    /// Too few holders of some client's shares answered.
    #[error("only {available} holders of {owner}'s shares remain, below the threshold {threshold}")]
    TooFewShares {
        /// Whose secret.
        owner: ClientId,
        /// Shares available.
        available: usize,
        /// t.
        threshold: u32,
    },
    /// Seats did not reveal their nonce, so the graph cannot be labelled; the next attempt
    /// starts from fresh commitments without them.
    #[error("{missing} seated clients did not advertise their keys")]
    CohortIncomplete {
        /// Seats that did not reveal.
        missing: usize,
    },
    /// Fewer than t of the shares of some client's secret verify against its commitments:
    /// the holders in `liars` revealed wrong shares and were dropped, and the secret cannot
    /// be rebuilt from the rest. Nothing is released (never a corrupted sum).
    #[error(
        "only {valid} valid shares of {owner}'s secret, below the threshold {threshold}; wrong shares from {liars:?}"
    )]
    InvalidShares {
        /// Whose secret.
        owner: ClientId,
        /// Shares that verify.
        valid: usize,
        /// t.
        threshold: u32,
        /// The holders that revealed wrong shares of it (dropped and blamed).
        liars: Vec<ClientId>,
    },
    /// A reconstructed secret is inconsistent (bad shares).
    #[error("the shares of {0}'s secret are inconsistent")]
    ReconstructionFailed(ClientId),
    /// The driver aborted the round (e.g. shutdown).
    #[error("round aborted: {0}")]
    Cancelled(String),
}

impl RoundAbort {
    /// The abort code sent to clients.
    pub fn code(&self) -> AbortCode {
        match self {
            Self::TooFewClients { .. } | Self::TooFewShares { .. } | Self::CohortIncomplete { .. } => {
                AbortCode::TooFewClients
            }
            Self::ReconstructionFailed(_) | Self::InvalidShares { .. } => AbortCode::ReconstructionFailed,
            Self::Cancelled(_) => AbortCode::Shutdown,
        }
    }
}
