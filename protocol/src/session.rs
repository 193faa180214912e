//! The session id: a hash binding the round parameters and every advertised key.
//!
//! `session_id = SHA-256("privagg/v1 session" ‖ u32 len ‖ params ‖ u32 count ‖
//!  for each client ascending: u32 id ‖ u32 32 ‖ channel key ‖ u32 32 ‖ mask key)`,
//! every field length-prefixed (Google's `compute_session_id` reused one length for two
//! keys; each field here carries its own). The session id is the HKDF salt of every
//! derived key and part of every envelope's associated data, so keys, masks and
//! envelopes of one round or one set of participants are useless in any other.
//!
//! The server computes it, because in SecAgg+ a client sees only its neighbours' keys;
//! like Google's implementation, a client cannot recompute it. A server that sent
//! different ids to different clients would only make the masks fail to cancel.

use sha2::{Digest, Sha256};

use crate::message::{AdvertisedKeys, encode_params_bytes};
use crate::round_params::{ClientId, RoundParams};

const SESSION_LABEL: &[u8] = b"privagg/v1 session";

/// The session id of a round whose clients advertised `keys` (ascending by id).
pub fn session_id<'a>(
    params: &RoundParams,
    keys: impl ExactSizeIterator<Item = (ClientId, &'a AdvertisedKeys)>,
) -> [u8; 32] {
    let params = encode_params_bytes(params);
    let mut h = Sha256::new();
    h.update(SESSION_LABEL);
    h.update((params.len() as u32).to_le_bytes());
    h.update(&params);
    h.update((keys.len() as u32).to_le_bytes());
    for (id, k) in keys {
        h.update(id.get().to_le_bytes());
        for key in [k.channel, k.mask] {
            h.update(32u32.to_le_bytes());
            h.update(key.to_bytes());
        }
    }
    h.finalize().into()
}
