//! # privagg-benches
//!
//! Benchmarks of privagg against its two references: what the hardware can do (the raw
//! keystream rate of the mask PRG, and plain unmasked aggregation over the same QUIC
//! transport) and what users would otherwise pick (Flower's SecAgg+).
//!
//! * `benches/*.rs` — criterion micro-benchmarks (`cargo bench -p privagg-benches`):
//!   `keystream`, `client_mask`, `client_encode`, `server_unmask`, `shamir`,
//!   `key_agreement`, `plain_sum`. The workloads live in [`workload`].
//! * `bench_report` — reads criterion's results and prints the tables of
//!   `BENCHMARKS.md`: medians with min–max, and the ratios taken within one run
//!   (masking rate ÷ raw keystream rate of the same bytes).
//! * `e2e` — the end-to-end harness: a `privagg serve` process (or the [`plain`] server)
//!   and n clients over QUIC on loopback, for a grid of n, m and dropout rates; writes
//!   CSV, a summary and SVG plots ([`e2e`]).
//! * [`relay`] — a userspace UDP relay that delays, jitters, loses, reorders and
//!   rate-limits datagrams between clients and a server (the e2e harness's `--impair`,
//!   and the tests' impaired rounds).
//! * `flower_compare` — runs `flower_bench.py` and the matching privagg workloads in one
//!   session and prints the ratios.
//!
//! Every timing is a median over repetitions with its range: the machines these run on
//! are shared and noisy, and no test asserts a timing.

pub mod criterion_results;
pub mod e2e;
pub mod plain;
pub mod procfs;
pub mod relay;
pub mod stats;
pub mod workload;
