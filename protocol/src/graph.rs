//! The neighbour graph of SecAgg+ (Bell et al., CCS 2020): a Harary graph H(k, n) whose
//! node labels are randomly permuted from a seed the clients' revealed nonces fix (see
//! [`crate::cohort`]), so that the server cannot choose who neighbours whom.
//!
//! Clients sit on a ring in the order of a random permutation; each is linked to the k/2
//! clients before it and the k/2 after it, so k is even. With k = n − 1 every client
//! neighbours every other, which is the original SecAgg of Bonawitz et al. (CCS 2017).
//! A client exchanges keys, shares secrets and masks only with its neighbours.
//!
//! The permutation is a Fisher–Yates shuffle driven by the AES-128-CTR keystream of
//! SHA-256(`"privagg/v1 graph"` ‖ seed), with unbiased rejection sampling: it depends on
//! nothing but the seed, so every platform derives the same graph.

use privagg_crypto::{MaskSeed, PrgKind, fill_keystream};
use sha2::{Digest, Sha256};

use crate::round_params::ClientId;

/// Domain-separation label of the graph permutation.
const GRAPH_LABEL: &[u8] = b"privagg/v1 graph";

/// Who neighbours whom in one round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighbourGraph {
    /// Number of neighbours per client (k), not counting the client itself.
    degree: u32,
    /// `ring[p]` is the index (id − 1) of the client at ring position `p`.
    ring: Vec<u32>,
    /// `position[i]` is the ring position of the client with index `i`.
    position: Vec<u32>,
}

impl NeighbourGraph {
    /// A permuted Harary graph over clients `1..=n` with degree `k`; `k` must be `n − 1`
    /// or even and below `n` (as [`crate::RoundParams::validate`] checks).
    pub fn new(n: u32, k: u32, seed: &[u8; 32]) -> Self {
        let mut ring: Vec<u32> = (0..n).collect();
        let mut words = WordStream::new(seed);
        for i in (1..ring.len()).rev() {
            let j = words.below(i as u64 + 1) as usize;
            ring.swap(i, j);
        }
        let mut position = vec![0u32; ring.len()];
        for (p, &client) in ring.iter().enumerate() {
            position[client as usize] = p as u32;
        }
        Self { degree: k.min(n.saturating_sub(1)), ring, position }
    }

    /// Number of clients.
    pub fn num_clients(&self) -> u32 {
        self.ring.len() as u32
    }

    /// Neighbours per client, not counting itself.
    pub fn degree(&self) -> u32 {
        self.degree
    }

    fn is_complete(&self) -> bool {
        self.degree as usize + 1 >= self.ring.len()
    }

    /// The neighbours of `id` (not `id` itself), ascending. Empty for an id outside the graph.
    pub fn neighbours(&self, id: ClientId) -> Vec<ClientId> {
        let n = self.ring.len();
        let Some(&p) = self.position.get(id.index()) else {
            return Vec::new();
        };
        let mut out: Vec<ClientId> = if self.is_complete() {
            (0..n).filter(|&i| i != id.index()).map(ClientId::from_index).collect()
        } else {
            let half = (self.degree / 2) as usize;
            let p = p as usize;
            (1..=half)
                .flat_map(|d| [(p + d) % n, (p + n - d) % n])
                .map(|q| ClientId::from_index(self.ring[q] as usize))
                .collect()
        };
        out.sort_unstable();
        out
    }

    /// Whether `a` and `b` are distinct neighbours.
    pub fn are_neighbours(&self, a: ClientId, b: ClientId) -> bool {
        let (Some(&pa), Some(&pb)) = (self.position.get(a.index()), self.position.get(b.index())) else {
            return false;
        };
        if a == b {
            return false;
        }
        if self.is_complete() {
            return true;
        }
        let n = self.ring.len() as u32;
        let d = pa.abs_diff(pb);
        d.min(n - d) <= self.degree / 2
    }
}

/// Uniform u64 words from the AES-CTR keystream of a domain-separated seed.
struct WordStream {
    seed: MaskSeed,
    block: u64,
    buf: Vec<u8>,
    used: usize,
}

impl WordStream {
    const BUF_LEN: usize = 4096;

    fn new(graph_seed: &[u8; 32]) -> Self {
        let digest: [u8; 32] = Sha256::new().chain_update(GRAPH_LABEL).chain_update(graph_seed).finalize().into();
        Self { seed: MaskSeed::from_bytes(digest), block: 0, buf: vec![0; Self::BUF_LEN], used: Self::BUF_LEN }
    }

    fn next_u64(&mut self) -> u64 {
        if self.used == self.buf.len() {
            fill_keystream(PrgKind::Aes128Ctr, &self.seed, self.block, &mut self.buf);
            self.block += (Self::BUF_LEN / 16) as u64;
            self.used = 0;
        }
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.buf[self.used..self.used + 8]);
        self.used += 8;
        u64::from_le_bytes(word)
    }

    /// Uniform in `0..range` (`range ≥ 1`) by rejection: values below 2^64 mod range are
    /// redrawn, so the accepted region is a multiple of `range`.
    fn below(&mut self, range: u64) -> u64 {
        let reject_below = range.wrapping_neg() % range;
        loop {
            let x = self.next_u64();
            if x >= reject_below {
                return x % range;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u32) -> ClientId {
        ClientId::new(i).unwrap()
    }

    #[test]
    fn harary_graph_is_k_regular_and_symmetric() {
        for (n, k) in [(10, 4), (11, 2), (100, 20), (7, 6), (30, 28)] {
            let g = NeighbourGraph::new(n, k, &[3; 32]);
            for a in 1..=n {
                let nb = g.neighbours(id(a));
                assert_eq!(nb.len() as u32, k, "n={n} k={k} a={a}");
                assert!(!nb.contains(&id(a)));
                for &b in &nb {
                    assert!(g.are_neighbours(id(a), b));
                    assert!(g.neighbours(b).contains(&id(a)));
                }
                let count = (1..=n).filter(|&b| g.are_neighbours(id(a), id(b))).count();
                assert_eq!(count as u32, k);
            }
        }
    }

    #[test]
    fn complete_graph_links_everyone() {
        let g = NeighbourGraph::new(6, 5, &[0; 32]);
        assert_eq!(g.neighbours(id(3)), vec![id(1), id(2), id(4), id(5), id(6)]);
        assert!(g.are_neighbours(id(1), id(6)));
        assert!(!g.are_neighbours(id(1), id(1)));
    }

    #[test]
    fn graph_is_deterministic_and_seed_dependent() {
        let a = NeighbourGraph::new(50, 6, &[1; 32]);
        assert_eq!(a, NeighbourGraph::new(50, 6, &[1; 32]));
        assert_ne!(a, NeighbourGraph::new(50, 6, &[2; 32]));
        // Pin the permutation so that a change of PRG or shuffle is noticed: every
        // implementation must derive the same graph from the same seed.
        let pinned = NeighbourGraph::new(8, 2, &[0; 32]);
        assert_eq!(pinned.ring, vec![7, 0, 6, 2, 3, 1, 4, 5]);
        assert_eq!(pinned.neighbours(id(1)), vec![id(7), id(8)]);
    }

    #[test]
    fn ids_outside_the_graph_have_no_neighbours() {
        let g = NeighbourGraph::new(5, 2, &[0; 32]);
        assert!(g.neighbours(id(6)).is_empty());
        assert!(!g.are_neighbours(id(1), id(6)));
    }

    #[test]
    fn shuffle_is_roughly_uniform() {
        // Position of client 1 over many seeds: each of 8 positions expected 250 times
        // in 2000 graphs; a chi-square with 7 degrees of freedom beyond 24.3 has p < 0.001.
        let mut counts = [0u32; 8];
        for s in 0..2000u32 {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&s.to_le_bytes());
            let g = NeighbourGraph::new(8, 2, &seed);
            counts[g.position[0] as usize] += 1;
        }
        let chi2: f64 = counts.iter().map(|&c| (f64::from(c) - 250.0).powi(2) / 250.0).sum();
        assert!(chi2 < 24.3, "chi2 = {chi2}, counts = {counts:?}");
    }
}
