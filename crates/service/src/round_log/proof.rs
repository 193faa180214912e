//! What a client asks of the log ([`LogRequest`], in its `Ready`) and what the server
//! proves to it ([`LogProof`], in the client's own part of the round's `Config`), and
//! the server's in-memory log that answers ([`LogState`]).
//!
//! Both travel in the protocol's bounded codec; `protocol/PROTOCOL.md` ("The round log
//! in the round") gives the byte layout.

use privagg_log::{Checkpoint, Hash, LogKey, consistency_proof, inclusion_proofs, leaf_hash, root};
use privagg_protocol::DecodeError;
use privagg_protocol::codec::{Reader, Writer};

use super::leaf::origin;

/// Most rounds a client asks to have proven in one request (its rounds not yet proven
/// are at most a few: it checks them before every round it takes part in). Each costs
/// the server an inclusion proof, so a seated client can make it compute at most this
/// many (plus the latest leaf's) per attempt.
pub const MAX_PROVEN_ROUNDS: usize = 16;
/// Most hashes in one inclusion or consistency proof (2 · 64 covers any tree).
pub const MAX_PATH: usize = 128;
/// Longest leaf, in bytes.
pub const MAX_LEAF: usize = 64 * 1024;
/// Longest signed checkpoint (cosignatures included), in bytes.
pub const MAX_NOTE: usize = 8 * 1024;
/// Longest verifier key text, in bytes.
pub const MAX_KEY: usize = 1024;
/// The version byte of a [`LogProof`] encoding.
const PROOF_V1: u8 = 1;

/// What a client asks the log to prove, from what it accepted before: the checkpoint of
/// `size` leaves of the log of `session`, and the rounds (of that session) in which it
/// revealed unmasking shares and has not yet seen proven. All zero: nothing held.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LogRequest {
    /// The training session whose log the client holds a checkpoint of.
    pub session: [u8; 16],
    /// The tree size of that checkpoint (0: none).
    pub size: u64,
    /// Rounds to prove included, strictly ascending, at most [`MAX_PROVEN_ROUNDS`]
    /// (a request that is not is refused when decoded).
    pub rounds: Vec<u64>,
}

impl LogRequest {
    /// Appends the request: session [16], u64 size, list of u64 rounds.
    pub fn encode_into(&self, w: &mut Writer) {
        w.bytes(&self.session);
        w.u64(self.size);
        let rounds = &self.rounds[..self.rounds.len().min(MAX_PROVEN_ROUNDS)];
        w.u32(rounds.len() as u32);
        for r in rounds {
            w.u64(*r);
        }
    }

    /// Reads a request; never panics. More than [`MAX_PROVEN_ROUNDS`] rounds, or rounds
    /// not strictly ascending (a repeat included), are a [`DecodeError`]: the server
    /// computes no proof for them.
    pub fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let session = r.array()?;
        let size = r.u64()?;
        let count = r.count("proven rounds", MAX_PROVEN_ROUNDS as u64, 8)?;
        let rounds: Vec<u64> = (0..count).map(|_| r.u64()).collect::<Result<_, _>>()?;
        if rounds.windows(2).any(|w| w[0] >= w[1]) {
            return Err(DecodeError::InvalidField("proven rounds (not strictly ascending)"));
        }
        Ok(Self { session, size, rounds })
    }

    /// Encoded length in bytes.
    pub fn encoded_len(&self) -> usize {
        16 + 8 + 4 + 8 * self.rounds.len().min(MAX_PROVEN_ROUNDS)
    }
}

/// One leaf and its inclusion proof in the checkpoint's tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvenLeaf {
    /// The leaf's index (round − 1).
    pub index: u64,
    /// The leaf's bytes (canonical JSON of a `RoundLeaf`).
    pub leaf: Vec<u8>,
    /// RFC 9162 inclusion proof of the leaf in the checkpoint's tree.
    pub path: Vec<Hash>,
}

/// What the server proves to one client before a round: its current signed checkpoint,
/// that it extends the one the client holds, and the leaves the client needs — the
/// rounds it asked for and the latest round (whose leaf carries the cumulative ε).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogProof {
    /// The log's verifier key, `<name>+<id>+<key>` (what a client trusts on first use).
    pub key: String,
    /// The current checkpoint, a signed note.
    pub checkpoint: String,
    /// The tree size the consistency proof starts from (the client's, or 0).
    pub from: u64,
    /// RFC 9162 consistency proof from `from` to the checkpoint's size.
    pub consistency: Vec<Hash>,
    /// Leaves with their inclusion proofs, ascending by index.
    pub leaves: Vec<ProvenLeaf>,
}

fn hashes(w: &mut Writer, hashes: &[Hash]) {
    w.u32(hashes.len() as u32);
    for h in hashes {
        w.bytes(h);
    }
}

fn read_hashes(r: &mut Reader<'_>, what: &'static str) -> Result<Vec<Hash>, DecodeError> {
    let count = r.count(what, MAX_PATH as u64, 32)?;
    (0..count).map(|_| r.array()).collect()
}

impl LogProof {
    /// The encoding carried in a `Config`'s client data: empty for `None` (the server
    /// keeps no log); otherwise u8 version 1, text key, text checkpoint, u64 from, list
    /// of hashes, list of (u64 index, blob leaf, list of hashes).
    pub fn encode(proof: Option<&Self>) -> Vec<u8> {
        let Some(p) = proof else { return Vec::new() };
        let leaves: usize = p.leaves.iter().map(|l| 16 + l.leaf.len() + 32 * l.path.len()).sum();
        let mut w = Writer::with_capacity(32 + p.key.len() + p.checkpoint.len() + 32 * p.consistency.len() + leaves);
        w.u8(PROOF_V1);
        w.text(&p.key, MAX_KEY);
        w.text(&p.checkpoint, MAX_NOTE);
        w.u64(p.from);
        hashes(&mut w, &p.consistency);
        w.u32(p.leaves.len() as u32);
        for l in &p.leaves {
            w.u64(l.index);
            w.len_prefixed(&l.leaf);
            hashes(&mut w, &l.path);
        }
        w.into_bytes()
    }

    /// Decodes a `Config`'s client data: `None` if empty; never panics, never allocates
    /// beyond the bounds above.
    pub fn decode(bytes: &[u8]) -> Result<Option<Self>, DecodeError> {
        if bytes.is_empty() {
            return Ok(None);
        }
        let mut r = Reader::new(bytes);
        if r.u8()? != PROOF_V1 {
            return Err(DecodeError::InvalidField("log proof version"));
        }
        let key = r.text("log key", MAX_KEY as u64)?;
        let checkpoint = r.text("log checkpoint", MAX_NOTE as u64)?;
        let from = r.u64()?;
        let consistency = read_hashes(&mut r, "consistency proof")?;
        let count = r.count("proven leaves", MAX_PROVEN_ROUNDS as u64 + 1, 16)?;
        let mut leaves = Vec::with_capacity(count);
        for _ in 0..count {
            let index = r.u64()?;
            let leaf = r.len_prefixed("leaf", MAX_LEAF as u64)?.to_vec();
            let path = read_hashes(&mut r, "inclusion proof")?;
            leaves.push(ProvenLeaf { index, leaf, path });
        }
        r.finish()?;
        Ok(Some(Self { key, checkpoint, from, consistency, leaves }))
    }
}

/// The log as the server holds it in memory: every leaf, and the checkpoint over them
/// signed with the log's key. It answers each client's [`LogRequest`] with a
/// [`LogProof`].
#[derive(Clone, Debug)]
pub struct LogState {
    session: [u8; 16],
    key: String,
    note: String,
    leaves: Vec<Vec<u8>>,
    hashes: Vec<Hash>,
}

impl LogState {
    /// The empty log of training session `session`, signed with `key` (whose name must
    /// be the session's origin, `privagg/<session hex>`).
    pub fn new(session: [u8; 16], key: &LogKey) -> Self {
        let mut state = Self {
            session,
            key: key.verifier().to_string(),
            note: String::new(),
            leaves: Vec::new(),
            hashes: Vec::new(),
        };
        state.note = key.sign(&state.checkpoint());
        state
    }

    /// The log of `session` holding `leaves` (their canonical bytes, leaf 0 first),
    /// its checkpoint signed once with `key`.
    pub fn with_leaves(session: [u8; 16], key: &LogKey, leaves: Vec<Vec<u8>>) -> Self {
        let hashes = leaves.iter().map(|l| leaf_hash(l)).collect();
        let mut state = Self { session, key: key.verifier().to_string(), note: String::new(), leaves, hashes };
        state.note = key.sign(&state.checkpoint());
        state
    }

    /// Appends `leaf` (its canonical bytes) and signs the new checkpoint with `key`.
    pub fn append(&mut self, leaf: Vec<u8>, key: &LogKey) {
        self.hashes.push(leaf_hash(&leaf));
        self.leaves.push(leaf);
        self.note = key.sign(&self.checkpoint());
    }

    /// The current checkpoint (unsigned).
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            origin: origin(&hex::encode(self.session)),
            size: self.leaves.len() as u64,
            root: root(&self.hashes),
        }
    }

    /// The current checkpoint, signed.
    pub fn note(&self) -> &str {
        &self.note
    }

    /// Leaf `index`'s bytes, if the log holds it.
    pub fn leaf(&self, index: usize) -> Option<&[u8]> {
        self.leaves.get(index).map(Vec::as_slice)
    }

    /// The leaf hashes, leaf 0 first.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// The proof for a client that asked `request`: the current checkpoint, a consistency
    /// proof from the client's size (from 0 if it names another session; none if its
    /// size exceeds the log's, which the client then refuses), and the leaves of the
    /// rounds it asked for that the log holds, with the latest leaf.
    pub fn prove(&self, request: &LogRequest) -> LogProof {
        let size = self.leaves.len();
        let ours = request.session == self.session;
        let from = if ours { request.size } else { 0 };
        let consistency = usize::try_from(from)
            .ok()
            .and_then(|from| consistency_proof(&self.hashes, from, size).ok())
            .unwrap_or_default();
        let asked = request.rounds.iter().take(MAX_PROVEN_ROUNDS).filter(|_| ours);
        let mut indexes: Vec<usize> =
            asked.filter_map(|&r| usize::try_from(r).ok()?.checked_sub(1)).filter(|&i| i < size).collect();
        indexes.extend(size.checked_sub(1));
        indexes.sort_unstable();
        indexes.dedup();
        // All the paths in one pass over the tree (every index is below `size`).
        let paths = inclusion_proofs(&self.hashes, &indexes, size).unwrap_or_default();
        let leaves = indexes
            .into_iter()
            .zip(paths)
            .map(|(index, path)| ProvenLeaf { index: index as u64, leaf: self.leaves[index].clone(), path })
            .collect();
        LogProof { key: self.key.clone(), checkpoint: self.note.clone(), from, consistency, leaves }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_round_trip_and_refuse_every_cut() {
        let key = LogKey::generate(&origin(&hex::encode([7u8; 16]))).unwrap();
        let mut state = LogState::new([7; 16], &key);
        for i in 0..5u8 {
            state.append(vec![b'{', i, b'}'], &key);
        }
        let proof = state.prove(&LogRequest { session: [7; 16], size: 2, rounds: vec![2, 9] });
        assert_eq!(proof.from, 2);
        assert_eq!(proof.leaves.iter().map(|l| l.index).collect::<Vec<_>>(), [1, 4]);
        let bytes = LogProof::encode(Some(&proof));
        assert_eq!(LogProof::decode(&bytes), Ok(Some(proof)));
        for cut in 1..bytes.len() {
            assert!(LogProof::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(LogProof::decode(&[bytes.as_slice(), &[0]].concat()).is_err());
        assert_eq!(LogProof::decode(&[]), Ok(None));
        // Another session's client gets a proof from the empty tree and no rounds.
        let other = state.prove(&LogRequest { session: [8; 16], size: 3, rounds: vec![1] });
        assert_eq!((other.from, other.leaves.len()), (0, 1));
    }

    #[test]
    fn a_request_out_of_order_repeated_or_beyond_the_cap_is_refused_and_never_sent() {
        let decode = |rounds: &[u64]| {
            let mut w = Writer::with_capacity(64);
            w.bytes(&[7; 16]);
            w.u64(3);
            w.u32(rounds.len() as u32);
            for r in rounds {
                w.u64(*r);
            }
            LogRequest::decode_from(&mut Reader::new(&w.into_bytes()))
        };
        assert!(decode(&[1, 2, 5]).is_ok());
        assert_eq!(decode(&[2, 1]), Err(DecodeError::InvalidField("proven rounds (not strictly ascending)")));
        assert!(decode(&[2, 2]).is_err(), "a repeat");
        let many: Vec<u64> = (1..=MAX_PROVEN_ROUNDS as u64 + 1).collect();
        assert!(decode(&many).is_err(), "beyond the cap");
        assert!(decode(&many[..MAX_PROVEN_ROUNDS]).is_ok());
        // A client with more rounds to prove asks for the oldest, ascending, within the cap.
        let memory = crate::round_log::LogMemory {
            unproven: (1..=40u64).rev().map(|r| (r, vec![String::new()])).collect(),
            ..Default::default()
        };
        let request = memory.request([7; 16]);
        assert_eq!(request.rounds, (1..=MAX_PROVEN_ROUNDS as u64).collect::<Vec<_>>());
        let mut w = Writer::with_capacity(request.encoded_len());
        request.encode_into(&mut w);
        assert_eq!(LogRequest::decode_from(&mut Reader::new(&w.into_bytes())), Ok(request));
    }
}
