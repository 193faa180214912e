//! # privagg-protocol
//!
//! The sans-I/O core of privagg's secure aggregation: SecAgg (Bonawitz et al., CCS 2017)
//! with the sparse neighbour graphs of SecAgg+ (Bell et al., CCS 2020). It holds the
//! messages and their wire codec, the neighbour graph and its parameter finder, and two
//! state machines — [`ClientRound`] and [`ServerRound`] — that take a message and return
//! the messages to send. Sockets, timers and tasks live in the server and client crates;
//! here every protocol path runs in a unit test, and [`simulate`] runs whole rounds in
//! memory.
//!
//! ## One round
//!
//! 0. **Config.** Each client committed to a random nonce when it asked for the round;
//!    the server sends the round's [`RoundParams`], the cohort hash binding every seat's
//!    certificate and commitment, and an application payload.
//! 1. **AdvertiseKeys.** Each client makes two fresh Ristretto255 key pairs, `c` for the
//!    share channel and `s` for masks, and sends the public halves with its nonce, signed
//!    with its certificate's key. Once every seat revealed its nonce, the nonces label the
//!    graph and fix the session id ([`cohort`]); the server sends each client every
//!    seat's nonce and the signed keys of its neighbours (U1), which it verifies.
//! 2. **ShareKeys.** Each client draws a self-mask secret b_u, shares b_u and its mask key
//!    s_u with Feldman-verifiable Shamir sharing (threshold t among itself and its
//!    neighbours; commitments F_u to both polynomials, `privagg_crypto::vss`), and seals
//!    each neighbour's two shares with the digest of F_u under an AES-GCM key derived from
//!    DH(c_u, c_v); the associated data binds session, round, sender and recipient, and a
//!    certified sender signs each envelope ([`complaint::envelope_message`]). The server
//!    checks F_u commits to the advertised mask key and the envelopes' signatures, and
//!    relays the envelopes with their signatures and F_u (U2); each recipient checks the
//!    signature, then the digest and its shares.
//! 3. **MaskedInput.** y_u = x_u + PRG(b_u) + Σ_{v<u} PRG(s_uv) − Σ_{v>u} PRG(s_uv)
//!    mod 2^b over the neighbours v in U2, where s_uv is HKDF of DH(s_u, s_v). The server
//!    adds each y_u into one running sum as it arrives (U3).
//! 4. **Unmask.** The server tells each survivor which of its neighbours are in the sum
//!    and which dropped after ShareKeys; the survivor returns its shares of b_v for the
//!    former and of s_v for the latter — never both for one v. The server checks every
//!    share against its owner's commitments, drops the holders of wrong ones, rebuilds the
//!    secrets from t valid shares, regenerates the masks and removes them, leaving
//!    Σ_{u∈U3} x_u mod 2^b.
//!
//! Every key comes out of HKDF-SHA256 with the session id as salt and a purpose label,
//! round and client pair as info (see `privagg_crypto::kdf`), so masks never repeat
//! across rounds, sessions or pairs.
//!
//! ## Guarantees
//!
//! * **Privacy.** Against a server that may lie about who dropped, substitute keys or
//!   choose whom to seat, and colludes with a fraction c of the clients, the server's view
//!   of an honest client's masked input is uniform: the self mask hides it until the sum
//!   is final, and the pairwise masks hide it if the client is declared dropped. Peers are
//!   authenticated by certificates of an enrollment authority that is not the server; the
//!   graph's labelling comes from the clients' nonces; a client accepts only thresholds
//!   with 2t ≥ k + 2 + c. [`graph_params`] chooses k and t so that these conditions hold
//!   with probability 1 − 2^−40 for a given corrupt fraction.
//! * **Correctness under dropouts.** Any client may vanish after any message. While at
//!   least `min_clients` inputs reach the sum and every needed secret keeps t shares,
//!   the sum over U3 is exact; otherwise the round aborts with a [`RoundAbort`] and the
//!   server learns nothing about any input.
//! * **Robustness.** Decoding is total and bounded by [`Limits`]. A client that sends an
//!   out-of-phase, duplicate, malformed or wrongly sized message is dropped with a typed
//!   [`Violation`]; the others finish.
//! * **Honest-client checks.** A client refuses key lists, envelopes and unmask requests
//!   that contradict its own view, and any request for both shares of one peer.
//! * **Blame for bad envelopes.** A certified sender signs every envelope; the server
//!   checks and relays the signature, and a recipient refuses, revealing nothing, an
//!   envelope whose signature fails (the server tampered). A client that cannot use a
//!   validly signed envelope proves it ([`complaint`]: the channel's Diffie-Hellman value
//!   and a DLEQ proof) and goes on without that neighbour; the server re-opens the
//!   envelope it relayed and drops the liar, sender or complainer, keeping the sum exact.
//!   Since the sender provably made the bytes, this is safe against a malicious server.
//!
//! The wire format and a message-sequence diagram are in `protocol/PROTOCOL.md`.

mod client;
pub mod codec;
pub mod cohort;
pub mod complaint;
mod error;
pub mod graph;
pub mod graph_params;
pub mod masking;
mod message;
mod packing;
mod round_params;
mod server;
pub mod simulator;

pub use client::{ClientPolicy, ClientRound, ClientState, Identity};
pub use error::{ClientError, DecodeError, ParameterError, ParamsError, RoundAbort, ServerError, Violation};
pub use graph::NeighbourGraph;
pub use graph_params::{AdversaryClass, GraphParameters, ThreatModel, check_graph_parameters, find_graph_parameters};
pub use message::{
    Abort, AbortCode, AdvertisedKeys, Advertisement, COMMITMENTS_LABEL, Certified, ClientMessage, Config, ENVELOPE_LEN,
    Envelope, EnvelopeComplaint, ForwardedShare, KeyList, KeyPossession, Leave, Limits, MAX_ABORT_DETAIL,
    PROTOCOL_VERSION, PeerEntry, RevealedShare, SERVICE_TYPES, ServerMessage, ShareCommitments, ShareKeys,
    SurvivorSignature, UnmaskRequest, UnmaskResponse, encode_cohort, encode_entry, encode_forwarded_split,
    encode_key_list_split,
};
pub use packing::{PackedVector, packed_len};
pub use privagg_crypto::PrgKind;
pub use round_params::{ClientId, MAX_CLIENTS, MAX_DIM, RoundParams};
pub use server::{DropReason, DroppedClient, Outgoing, Phase, RoundOutput, ServerRound};
pub use simulator::{DropPoint, simulate};
