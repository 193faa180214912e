//! The parameters of one aggregation round, fixed by the server in the `Config`
//! message and checked by both sides before anything else happens.

use std::fmt;

use privagg_crypto::PrgKind;

use crate::error::ParamsError;

/// Largest cohort the protocol accepts in one round (ids are `1..=num_clients`).
pub const MAX_CLIENTS: u32 = 1 << 20;

/// Largest vector length, in words, the protocol accepts (2^30 words).
pub const MAX_DIM: u32 = 1 << 30;

/// A client's seat in one round: an id in `1..=num_clients`, assigned by the server.
///
/// Ids are the Shamir evaluation points, so id 0 does not exist.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(u32);

impl ClientId {
    /// Wraps a raw id; `None` for 0.
    pub fn new(raw: u32) -> Option<Self> {
        (raw != 0).then_some(Self(raw))
    }

    /// The raw id, never 0.
    pub fn get(self) -> u32 {
        self.0
    }

    /// Index of this id in a `Vec` of per-client slots (`id - 1`).
    pub(crate) fn index(self) -> usize {
        self.0 as usize - 1
    }

    /// The id of slot `index` (`index + 1`); `index` must be below [`MAX_CLIENTS`].
    pub(crate) fn from_index(index: usize) -> Self {
        Self(index as u32 + 1)
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {}", self.0)
    }
}

/// Everything both sides must agree on for one round.
///
/// Invariants (checked by [`RoundParams::validate`]):
/// * `2 ≤ num_clients ≤ MAX_CLIENTS`; clients are `1..=num_clients`;
/// * `neighbours` (k, not counting the client itself) is `num_clients − 1` (complete graph,
///   the original SecAgg) or an even number in `2..num_clients − 1` (a Harary graph,
///   SecAgg+);
/// * `2 ≤ threshold ≤ neighbours + 1`: the Shamir threshold among a client's k neighbours
///   and itself;
/// * `threshold ≤ min_clients ≤ num_clients`: a round whose sum would cover fewer than
///   `min_clients` inputs aborts and releases nothing;
/// * `1 ≤ dim ≤ MAX_DIM` words, each mod 2^`bits` with `1 ≤ bits ≤ 64`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundParams {
    /// Round number; part of every derived key, so masks never repeat across rounds.
    pub round: u64,
    /// Number of invited clients n.
    pub num_clients: u32,
    /// Neighbours per client k (not counting itself).
    pub neighbours: u32,
    /// Shamir threshold t.
    pub threshold: u32,
    /// Fewest inputs the released sum may cover.
    pub min_clients: u32,
    /// Vector length in words.
    pub dim: u32,
    /// Bits per word: arithmetic is mod 2^bits.
    pub bits: u8,
    /// The mask PRG.
    pub prg: PrgKind,
}

impl RoundParams {
    /// Checks the invariants listed on the type.
    pub fn validate(&self) -> Result<(), ParamsError> {
        let n = self.num_clients;
        if !(2..=MAX_CLIENTS).contains(&n) {
            return Err(ParamsError::NumClients(n));
        }
        let k = self.neighbours;
        let complete = k == n - 1;
        if !complete && (k < 2 || k >= n - 1 || !k.is_multiple_of(2)) {
            return Err(ParamsError::Neighbours { neighbours: k, num_clients: n });
        }
        if !(2..=k + 1).contains(&self.threshold) {
            return Err(ParamsError::Threshold { threshold: self.threshold, neighbours: k });
        }
        if !(self.threshold..=n).contains(&self.min_clients) {
            return Err(ParamsError::MinClients {
                min_clients: self.min_clients,
                threshold: self.threshold,
                num_clients: n,
            });
        }
        if !(1..=MAX_DIM).contains(&self.dim) {
            return Err(ParamsError::Dim(self.dim));
        }
        if !(1..=64).contains(&self.bits) {
            return Err(ParamsError::Bits(self.bits));
        }
        Ok(())
    }

    /// Whether every client neighbours every other (the original SecAgg).
    pub fn is_complete_graph(&self) -> bool {
        self.neighbours + 1 == self.num_clients
    }

    /// 2^bits − 1: the mask that reduces a word mod 2^bits.
    pub fn word_mask(&self) -> u64 {
        word_mask(self.bits)
    }

    /// Length in bytes of a bit-packed vector of this round.
    pub fn packed_len(&self) -> usize {
        crate::packing::packed_len(self.dim, self.bits)
    }

    /// All client ids of the round, ascending.
    pub fn client_ids(&self) -> impl Iterator<Item = ClientId> + use<> {
        (1..=self.num_clients).map(ClientId)
    }

    /// The id `raw` if it names a client of this round.
    pub fn client(&self, raw: u32) -> Option<ClientId> {
        (1..=self.num_clients).contains(&raw).then_some(ClientId(raw))
    }
}

/// 2^bits − 1 for `bits` in 1..=64.
pub(crate) fn word_mask(bits: u8) -> u64 {
    if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn params(n: u32, k: u32, t: u32) -> RoundParams {
        RoundParams {
            round: 7,
            num_clients: n,
            neighbours: k,
            threshold: t,
            min_clients: t,
            dim: 10,
            bits: 32,
            prg: PrgKind::default(),
        }
    }

    #[test]
    fn accepts_complete_and_harary_graphs() {
        params(2, 1, 2).validate().unwrap();
        params(10, 9, 5).validate().unwrap();
        params(10, 4, 3).validate().unwrap();
    }

    #[test]
    fn rejects_each_broken_invariant() {
        assert_eq!(params(1, 0, 2).validate(), Err(ParamsError::NumClients(1)));
        assert!(matches!(params(10, 3, 2).validate(), Err(ParamsError::Neighbours { .. })));
        assert!(matches!(params(10, 10, 2).validate(), Err(ParamsError::Neighbours { .. })));
        assert!(matches!(params(10, 0, 2).validate(), Err(ParamsError::Neighbours { .. })));
        assert!(matches!(params(10, 4, 6).validate(), Err(ParamsError::Threshold { .. })));
        assert!(matches!(params(10, 4, 1).validate(), Err(ParamsError::Threshold { .. })));
        let mut p = params(10, 9, 5);
        p.min_clients = 4;
        assert!(matches!(p.validate(), Err(ParamsError::MinClients { .. })));
        p.min_clients = 11;
        assert!(matches!(p.validate(), Err(ParamsError::MinClients { .. })));
        let mut p = params(10, 9, 5);
        p.dim = 0;
        assert_eq!(p.validate(), Err(ParamsError::Dim(0)));
        let mut p = params(10, 9, 5);
        p.bits = 65;
        assert_eq!(p.validate(), Err(ParamsError::Bits(65)));
        p.bits = 0;
        assert_eq!(p.validate(), Err(ParamsError::Bits(0)));
    }

    #[test]
    fn client_ids_are_one_based() {
        let p = params(3, 2, 2);
        assert_eq!(p.client(0), None);
        assert_eq!(p.client(4), None);
        assert_eq!(p.client(3).map(ClientId::get), Some(3));
        assert_eq!(ClientId::new(0), None);
        assert_eq!(p.client_ids().count(), 3);
    }
}
