//! The harness's outputs: one CSV row per round, and Markdown tables of medians (with
//! min–max over the rounds) per grid point, masked versus plain, and server memory
//! versus n.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::RoundRow;
use crate::stats::Spread;

/// A CSV column: its name and how to print it.
type Column = (&'static str, fn(&RoundRow) -> String);

/// CSV columns, in order.
const COLUMNS: &[Column] = &[
    ("mode", |r| r.mode.clone()),
    ("n", |r| r.n.to_string()),
    ("m", |r| r.m.to_string()),
    ("dropout_pct", |r| r.dropout_pct.to_string()),
    ("dropped", |r| r.dropped.to_string()),
    ("dropped_after_share_keys", |r| r.dropped_after_share_keys.to_string()),
    ("round", |r| r.round.to_string()),
    ("k", |r| r.k.to_string()),
    ("t", |r| r.t.to_string()),
    ("bits", |r| r.bits.to_string()),
    ("inputs", |r| r.inputs.to_string()),
    ("round_s", |r| format!("{:.6}", r.round_s)),
    ("advertise_keys_s", |r| format!("{:.6}", r.advertise_keys_s)),
    ("share_keys_s", |r| format!("{:.6}", r.share_keys_s)),
    ("masked_input_s", |r| format!("{:.6}", r.masked_input_s)),
    ("unmask_s", |r| format!("{:.6}", r.unmask_s)),
    ("reconstruct_s", |r| format!("{:.6}", r.reconstruct_s)),
    ("collect_s", |r| format!("{:.6}", r.collect_s)),
    ("wall_s", |r| format!("{:.6}", r.wall_s)),
    ("client_cpu_s", |r| format!("{:.6}", r.client_cpu_s)),
    ("server_cpu_s", |r| format!("{:.4}", r.server_cpu_s)),
    ("bytes_sent", |r| r.bytes_sent.to_string()),
    ("bytes_received", |r| r.bytes_received.to_string()),
    ("f32_payload", |r| r.f32_payload.to_string()),
    ("server_peak_rss", |r| r.server_peak_rss.to_string()),
    ("relay_datagrams", |r| r.relay_datagrams.to_string()),
    ("relay_lost", |r| r.relay_lost.to_string()),
    ("relay_queue_dropped", |r| r.relay_queue_dropped.to_string()),
    ("relay_reordered", |r| r.relay_reordered.to_string()),
    ("sum_error", |r| r.sum_error.map(|e| format!("{e:.3e}")).unwrap_or_default()),
];

/// The rows as CSV, with a header line.
pub fn csv(rows: &[RoundRow]) -> String {
    let mut out = COLUMNS.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(",");
    out.push('\n');
    for row in rows {
        out.push_str(&COLUMNS.iter().map(|(_, f)| f(row)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}

/// Key of a grid point: (mode, n, m, dropout %).
pub type PointKey = (String, u32, usize, u32);

/// The medians and ranges of one grid point over its rounds.
#[derive(Clone, Debug)]
pub struct PointSummary {
    /// Neighbours and threshold of the first round.
    pub k: u32,
    /// Shamir threshold.
    pub t: u32,
    /// Rounds measured.
    pub rounds: usize,
    /// Server round time, seconds.
    pub round_s: Spread,
    /// Mask removal (masked) or 0, seconds.
    pub reconstruct_s: Spread,
    /// Client CPU per client, seconds.
    pub client_cpu_s: Spread,
    /// Server CPU per round, seconds.
    pub server_cpu_s: Spread,
    /// Bytes sent per client.
    pub bytes_sent: Spread,
    /// Bytes received per client.
    pub bytes_received: Spread,
    /// Peak server memory over the session, bytes.
    pub peak_rss: u64,
    /// Dropped clients the server saw leave after ShareKeys (first round).
    pub dropped_after_share_keys: u32,
    /// Clients meant to drop.
    pub dropped: u32,
    /// Inputs in the released sum, per round.
    pub inputs: Spread,
    /// Server phase times (masked), seconds: AdvertiseKeys, ShareKeys, MaskedInput,
    /// Unmask.
    pub phases: [Spread; 4],
    /// Datagrams through the relay per round (0 without `--impair`).
    pub relay_datagrams: Spread,
    /// Of those, dropped by loss or a full queue.
    pub relay_dropped: Spread,
    /// Of those, held back to be reordered.
    pub relay_reordered: Spread,
    /// The largest sum error over the rounds, where checked (`--no-dp`).
    pub sum_error: Option<f64>,
}

/// Groups rows by grid point.
pub fn summarize(rows: &[RoundRow]) -> BTreeMap<PointKey, PointSummary> {
    let mut groups: BTreeMap<PointKey, Vec<&RoundRow>> = BTreeMap::new();
    for row in rows {
        groups.entry((row.mode.clone(), row.n, row.m, row.dropout_pct)).or_default().push(row);
    }
    groups
        .into_iter()
        .filter_map(|(key, rows)| {
            let spread = |f: fn(&RoundRow) -> f64| Spread::of(&rows.iter().map(|r| f(r)).collect::<Vec<_>>());
            let first = rows.first()?;
            Some((
                key,
                PointSummary {
                    k: first.k,
                    t: first.t,
                    rounds: rows.len(),
                    round_s: spread(|r| r.round_s)?,
                    reconstruct_s: spread(|r| r.reconstruct_s)?,
                    client_cpu_s: spread(|r| r.client_cpu_s)?,
                    server_cpu_s: spread(|r| r.server_cpu_s)?,
                    bytes_sent: spread(|r| r.bytes_sent as f64)?,
                    bytes_received: spread(|r| r.bytes_received as f64)?,
                    peak_rss: rows.iter().map(|r| r.server_peak_rss).max().unwrap_or(0),
                    dropped_after_share_keys: first.dropped_after_share_keys,
                    dropped: first.dropped,
                    inputs: spread(|r| f64::from(r.inputs))?,
                    phases: [
                        spread(|r| r.advertise_keys_s)?,
                        spread(|r| r.share_keys_s)?,
                        spread(|r| r.masked_input_s)?,
                        spread(|r| r.unmask_s)?,
                    ],
                    relay_datagrams: spread(|r| r.relay_datagrams as f64)?,
                    relay_dropped: spread(|r| (r.relay_lost + r.relay_queue_dropped) as f64)?,
                    relay_reordered: spread(|r| r.relay_reordered as f64)?,
                    sum_error: rows.iter().filter_map(|r| r.sum_error).reduce(f64::max),
                },
            ))
        })
        .collect()
}

fn bytes(b: f64) -> String {
    if b >= 1e6 { format!("{:.2} MB", b / 1e6) } else { format!("{:.1} kB", b / 1e3) }
}

/// Markdown tables: every point, masked ÷ plain, and server memory versus n.
pub fn markdown(summaries: &BTreeMap<PointKey, PointSummary>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| mode | n | m | dropout | k / t | round time, s | of which unmasking, s | client CPU per client, s | server CPU per round, s | sent per client | sent ÷ 4m | received per client | server peak RSS, MiB |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for ((mode, n, m, d), s) in summaries {
        let kt = if mode == "masked" { format!("{} / {}", s.k, s.t) } else { "–".into() };
        let drop = if mode == "masked" && s.dropped > 0 {
            format!("{d} % ({} after ShareKeys)", s.dropped_after_share_keys)
        } else {
            format!("{d} %")
        };
        let unmask = if mode == "masked" { s.reconstruct_s.format(1.0, 3) } else { "–".into() };
        let _ = writeln!(
            out,
            "| {mode} | {n} | {m} | {drop} | {kt} | {} | {unmask} | {} | {} | {} | {:.3} | {} | {:.0} |",
            s.round_s.format(1.0, 3),
            s.client_cpu_s.format(1.0, 4),
            s.server_cpu_s.format(1.0, 2),
            bytes(s.bytes_sent.median),
            s.bytes_sent.median / (4.0 * *m as f64),
            bytes(s.bytes_received.median),
            s.peak_rss as f64 / (1 << 20) as f64,
        );
    }
    out.push('\n');
    let _ = writeln!(out, "Masked ÷ plain, same n, m and dropout rate (medians over the rounds):\n");
    let _ = writeln!(
        out,
        "| n | m | dropout | masked round, s | plain round, s | time ratio | client CPU ratio | sent ratio |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for ((mode, n, m, d), s) in summaries {
        if mode != "masked" {
            continue;
        }
        let Some(p) = summaries.get(&("plain".to_owned(), *n, *m, *d)) else { continue };
        // Plain clients may use less CPU than the 10 ms tick resolves.
        let cpu = if p.client_cpu_s.median > 0.0 {
            format!("{:.1}×", s.client_cpu_s.median / p.client_cpu_s.median)
        } else {
            "–".into()
        };
        let _ = writeln!(
            out,
            "| {n} | {m} | {d} % | {:.3} | {:.3} | {:.2}× | {cpu} | {:.3} |",
            s.round_s.median,
            p.round_s.median,
            s.round_s.median / p.round_s.median,
            s.bytes_sent.median / p.bytes_sent.median,
        );
    }
    out.push('\n');
    let _ = writeln!(out, "Server peak RSS versus n (MiB; growth from the smallest to the largest n):\n");
    let mut by_row: BTreeMap<(String, usize, u32), Vec<(u32, u64)>> = BTreeMap::new();
    for ((mode, n, m, d), s) in summaries {
        by_row.entry((mode.clone(), *m, *d)).or_default().push((*n, s.peak_rss));
    }
    let _ = writeln!(out, "| mode | m | dropout | peak RSS by n | growth |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    for ((mode, m, d), mut points) in by_row {
        points.sort_unstable();
        let cells: Vec<String> =
            points.iter().map(|(n, rss)| format!("n={n}: {:.0}", *rss as f64 / (1 << 20) as f64)).collect();
        let growth = match (points.first(), points.last()) {
            (Some(a), Some(b)) if points.len() > 1 && a.1 > 0 => {
                format!("{:+.1} %", 100.0 * (b.1 as f64 / a.1 as f64 - 1.0))
            }
            _ => "–".into(),
        };
        let _ = writeln!(out, "| {mode} | {m} | {d} % | {} | {growth} |", cells.join(", "));
    }
    if summaries.values().any(|s| s.relay_datagrams.max > 0.0) {
        out.push('\n');
        let _ = writeln!(out, "Through the impairing relay (per round: medians, min–max):\n");
        let _ = writeln!(
            out,
            "| mode | n | m | dropout | rounds | inputs | AdvertiseKeys, s | ShareKeys, s | MaskedInput, s | Unmask, s | datagrams | dropped by the relay | reordered | sum error |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for ((mode, n, m, d), s) in summaries {
            let sum = s.sum_error.map_or_else(|| "not checked".into(), |e| format!("{e:.1e}"));
            let phases: Vec<String> = s.phases.iter().map(|p| p.format(1.0, 2)).collect();
            let _ = writeln!(
                out,
                "| {mode} | {n} | {m} | {d} % | {} | {} | {} | {} | {} | {} | {sum} |",
                s.rounds,
                s.inputs.format(1.0, 0),
                phases.join(" | "),
                s.relay_datagrams.format(1.0, 0),
                s.relay_dropped.format(1.0, 0),
                s.relay_reordered.format(1.0, 0),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(mode: &str, round: u64, round_s: f64) -> RoundRow {
        RoundRow {
            mode: mode.into(),
            n: 10,
            m: 1000,
            dropout_pct: 10,
            dropped: 1,
            round,
            round_s,
            client_cpu_s: 0.01,
            bytes_sent: 2600,
            f32_payload: 4000,
            server_peak_rss: 10 << 20,
            ..RoundRow::default()
        }
    }

    #[test]
    fn csv_has_a_header_and_a_line_per_round() {
        let text = csv(&[row("masked", 1, 0.5), row("masked", 2, 0.7)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("mode,n,m,dropout_pct"));
        assert_eq!(lines[0].split(',').count(), lines[1].split(',').count());
        assert!(lines[2].starts_with("masked,10,1000,10,1,0,2,"));
    }

    #[test]
    fn summaries_compare_masked_with_plain() {
        let rows = [row("masked", 1, 0.4), row("masked", 2, 0.6), row("masked", 3, 0.5), row("plain", 1, 0.25)];
        let summaries = summarize(&rows);
        assert_eq!(summaries.len(), 2);
        let masked = &summaries[&("masked".to_owned(), 10, 1000, 10)];
        assert_eq!((masked.round_s.median, masked.round_s.min, masked.round_s.max), (0.5, 0.4, 0.6));
        let text = markdown(&summaries);
        assert!(text.contains("| 10 | 1000 | 10 % | 0.500 | 0.250 | 2.00× |"), "{text}");
    }
}
