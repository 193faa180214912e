//! The end-to-end harness: whole rounds over QUIC on loopback, secure (a `privagg serve`
//! process and n SDK clients) or plain (the [`crate::plain`] server process and n plain
//! clients), for a grid of cohort sizes n, model sizes m and dropout rates.
//!
//! Per round it records the server's wall time for each phase (from its
//! `round-<r>.json`), the clients' CPU time (this process's CPU time over the round ÷ n:
//! every client runs here as a tokio task), bytes sent and received per client (frames
//! as the SDK counts them), the server's CPU time and its peak resident memory
//! (`VmHWM`). [`report`] writes the CSV and summary tables, [`plot`] the SVG figures.

pub mod plot;
pub mod report;
pub mod run;
pub mod server;

use serde::Serialize;

/// Secure aggregation or the plain baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `privagg serve` with the SDK: encoding, masking, SecAgg+ phases.
    Masked,
    /// Raw f32 vectors summed over the same transport.
    Plain,
}

impl Mode {
    /// Lower-case name, as in the CSV.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Masked => "masked",
            Mode::Plain => "plain",
        }
    }
}

/// One configuration of the grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Point {
    /// Secure or plain.
    pub mode: Mode,
    /// Clients per round.
    pub n: u32,
    /// Model dimension (f32 coordinates of an update).
    pub m: usize,
    /// Percentage of clients that drop out (masked: once the server forwarded their
    /// neighbours' envelopes, i.e. after ShareKeys; plain: after receiving the model).
    pub dropout_pct: u32,
}

impl Point {
    /// Clients that drop out: ⌈n · dropout⌉.
    pub fn dropped(&self) -> u32 {
        (self.n * self.dropout_pct).div_ceil(100)
    }

    /// The fewest clients a round may release: n minus 30 % (rounded up), for every
    /// dropout rate, so that the neighbour graph and threshold — chosen from n and this
    /// bound — are the same across a row of the grid.
    pub fn min_clients(&self) -> u32 {
        (self.n - (self.n * 30).div_ceil(100)).max(2)
    }

    /// The plain f32 payload of one update: 4·m bytes.
    pub fn f32_payload(&self) -> u64 {
        4 * self.m as u64
    }

    /// A short label, e.g. `masked-n100-m100000-d10`.
    pub fn label(&self) -> String {
        format!("{}-n{}-m{}-d{}", self.mode.name(), self.n, self.m, self.dropout_pct)
    }
}

/// What one round of one grid point measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RoundRow {
    /// `masked` or `plain`.
    pub mode: String,
    /// Clients per round.
    pub n: u32,
    /// Model dimension.
    pub m: usize,
    /// Dropout percentage.
    pub dropout_pct: u32,
    /// Clients that dropped.
    pub dropped: u32,
    /// Of those, how many the server recorded as leaving after ShareKeys (during
    /// MaskedInput: their pairwise masks had to be removed).
    pub dropped_after_share_keys: u32,
    /// Round number.
    pub round: u64,
    /// Neighbours per client (masked).
    pub k: u32,
    /// Shamir threshold (masked).
    pub t: u32,
    /// Bits per word (masked).
    pub bits: u8,
    /// Inputs in the released sum.
    pub inputs: u32,
    /// Server: round start to round committed, seconds.
    pub round_s: f64,
    /// Server phase times (masked), seconds.
    pub advertise_keys_s: f64,
    /// ShareKeys phase.
    pub share_keys_s: f64,
    /// MaskedInput phase (uploads).
    pub masked_input_s: f64,
    /// Unmask phase (shares).
    pub unmask_s: f64,
    /// Reconstruct (mask removal).
    pub reconstruct_s: f64,
    /// Plain: round start to the last upload.
    pub collect_s: f64,
    /// The harness's view: all clients started to all clients done.
    pub wall_s: f64,
    /// Client CPU seconds per client (this process's CPU over the round ÷ n).
    pub client_cpu_s: f64,
    /// Server process CPU seconds over the round.
    pub server_cpu_s: f64,
    /// Median bytes a surviving client sent.
    pub bytes_sent: u64,
    /// Median bytes a surviving client received.
    pub bytes_received: u64,
    /// 4·m.
    pub f32_payload: u64,
    /// Server peak resident memory (VmHWM) after this round, bytes.
    pub server_peak_rss: u64,
    /// With `--impair`: datagrams that reached the relay during the round, both ways.
    pub relay_datagrams: u64,
    /// Of those, dropped by the relay's random loss.
    pub relay_lost: u64,
    /// Of those, dropped by its bottleneck's full queue.
    pub relay_queue_dropped: u64,
    /// Of those, held back to be reordered.
    pub relay_reordered: u64,
    /// Without DP (`--no-dp`, masked): the largest difference between the round's change
    /// of the model and the exact mean of the inputs (0 up to quantization); `None`
    /// where not checked (DP on, or plain).
    pub sum_error: Option<f64>,
}
