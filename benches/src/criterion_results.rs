//! Reading criterion's saved results (`<target>/criterion/**/new/{benchmark,sample}.json`)
//! back into medians and ranges, and the ratios `BENCHMARKS.md` quotes — each taken
//! between two benchmarks of the same `cargo bench` run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Deserialize;

use crate::stats::Spread;

/// One benchmark's identity and throughput, from `benchmark.json`.
#[derive(Clone, Debug, Deserialize)]
struct BenchmarkJson {
    group_id: String,
    function_id: Option<String>,
    value_str: Option<String>,
    throughput: Option<ThroughputJson>,
}

#[derive(Clone, Debug, Deserialize)]
enum ThroughputJson {
    Bytes(u64),
    BytesDecimal(u64),
    Elements(u64),
    Bits(u64),
}

/// Criterion's raw samples: `times[i]` ns for `iters[i]` iterations.
#[derive(Clone, Debug, Deserialize)]
struct SampleJson {
    iters: Vec<f64>,
    times: Vec<f64>,
}

/// One benchmark's result.
#[derive(Clone, Debug)]
pub struct BenchResult {
    /// `group/function/value`.
    pub id: String,
    /// Time per iteration, seconds, over the samples.
    pub time: Spread,
    /// Bytes per iteration, if declared.
    pub bytes: Option<u64>,
    /// Elements per iteration, if declared.
    pub elements: Option<u64>,
}

impl BenchResult {
    /// GB/s at the median time.
    pub fn gb_per_s(&self) -> Option<f64> {
        self.bytes.map(|b| b as f64 / self.time.median / 1e9)
    }
}

/// Every result under `dir` (a `criterion` directory), keyed by id.
pub fn load(dir: &Path) -> BTreeMap<String, BenchResult> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n == "new") {
                    if let Some(r) = read_one(&path) {
                        out.insert(r.id.clone(), r);
                    }
                } else if path.file_name().is_none_or(|n| n != "base" && n != "report") {
                    stack.push(path);
                }
            }
        }
    }
    out
}

fn read_one(dir: &Path) -> Option<BenchResult> {
    let bench: BenchmarkJson = serde_json::from_slice(&std::fs::read(dir.join("benchmark.json")).ok()?).ok()?;
    let sample: SampleJson = serde_json::from_slice(&std::fs::read(dir.join("sample.json")).ok()?).ok()?;
    let per_iter: Vec<f64> = sample.iters.iter().zip(&sample.times).map(|(i, t)| t / i * 1e-9).collect();
    let id =
        [Some(bench.group_id), bench.function_id, bench.value_str].into_iter().flatten().collect::<Vec<_>>().join("/");
    let (bytes, elements) = match bench.throughput {
        Some(ThroughputJson::Bytes(b) | ThroughputJson::BytesDecimal(b)) => (Some(b), None),
        Some(ThroughputJson::Bits(b)) => (Some(b / 8), None),
        Some(ThroughputJson::Elements(e)) => (None, Some(e)),
        None => (None, None),
    };
    Some(BenchResult { id, time: Spread::of(&per_iter)?, bytes, elements })
}

/// `1.23 ms`-style time.
pub fn time(seconds: f64) -> String {
    if seconds >= 1.0 {
        format!("{seconds:.3} s")
    } else if seconds >= 1e-3 {
        format!("{:.3} ms", seconds * 1e3)
    } else if seconds >= 1e-6 {
        format!("{:.3} µs", seconds * 1e6)
    } else {
        format!("{:.1} ns", seconds * 1e9)
    }
}

/// A Markdown table of every result: median, min–max, throughput at the median.
pub fn table(results: &BTreeMap<String, BenchResult>) -> String {
    let mut out = String::from("| benchmark | median | min – max | throughput |\n|---|---|---|---|\n");
    for r in results.values() {
        let rate = match (r.gb_per_s(), r.elements) {
            (Some(gb), _) => format!("{gb:.2} GB/s"),
            (None, Some(e)) => format!("{:.1} M elem/s", e as f64 / r.time.median / 1e6),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {} – {} | {rate} |",
            r.id,
            time(r.time.median),
            time(r.time.min),
            time(r.time.max)
        );
    }
    out
}

/// Masking rate ÷ raw keystream rate of the same bytes, for every `client_mask` point
/// (both measured in the same run), with `openssl_gbps` as an outside reference.
pub fn masking_ratios(results: &BTreeMap<String, BenchResult>, openssl_gbps: Option<f64>) -> String {
    let mut out = String::from(
        "| point | PRG | masking, GB/s of keystream | raw keystream, GB/s | masking ÷ raw | masking ÷ openssl |\n|---|---|---|---|---|---|\n",
    );
    for (id, fused) in results.iter().filter(|(id, _)| id.starts_with("client_mask/fused")) {
        let Some((prefix, point)) = id.split_once('/').and_then(|(_, rest)| rest.split_once('/')) else { continue };
        let suffix = prefix.trim_start_matches("fused");
        let Some(raw) = results.get(&format!("client_mask/raw_keystream{suffix}/{point}")) else { continue };
        let (Some(f), Some(r)) = (fused.gb_per_s(), raw.gb_per_s()) else { continue };
        let prg = if suffix.is_empty() { "AES-128-CTR" } else { "ChaCha20" };
        let vs_openssl = match (openssl_gbps, suffix.is_empty()) {
            (Some(o), true) => format!("{:.2}×", f / o),
            _ => "–".into(),
        };
        let _ = writeln!(out, "| {point} | {prg} | {f:.2} | {r:.2} | {:.0} % | {vs_openssl} |", 100.0 * f / r);
    }
    out
}

/// Runs `openssl speed -evp aes-128-ctr` on 16 KiB blocks `runs` times; the median
/// rate in GB/s, or `None` if openssl is missing or its output unreadable.
pub fn openssl_aes_ctr_gbps(runs: usize) -> Option<f64> {
    let mut rates = Vec::new();
    for _ in 0..runs {
        let output = std::process::Command::new("openssl")
            .args(["speed", "-evp", "aes-128-ctr", "-bytes", "16384", "-seconds", "2"])
            .output()
            .ok()?;
        rates.push(parse_openssl(&String::from_utf8_lossy(&output.stdout))?);
    }
    Spread::of(&rates).map(|s| s.median)
}

/// The 16384-byte column of `openssl speed` (in units of 1000 bytes/s) as GB/s.
pub fn parse_openssl(stdout: &str) -> Option<f64> {
    let line = stdout.lines().rev().find(|l| l.to_ascii_lowercase().starts_with("aes-128-ctr"))?;
    let last = line.split_whitespace().last()?;
    let kilo: f64 = last.trim_end_matches('k').parse().ok()?;
    Some(kilo * 1e3 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openssl_speed() {
        let out = "The 'numbers' are in 1000s of bytes per second processed.\n\
                   type          16384 bytes\n\
                   AES-128-CTR    7912345.67k\n";
        let gbps = parse_openssl(out).unwrap();
        assert!((gbps - 7.912_345_67).abs() < 1e-6);
        assert_eq!(parse_openssl("no numbers"), None);
    }

    #[test]
    fn loads_criterion_samples_and_forms_ratios() {
        let dir = std::env::temp_dir().join(format!("privagg-criterion-test-{}", std::process::id()));
        for (function, ns) in [("fused", 2.0e6), ("raw_keystream", 1.6e6)] {
            let new = dir.join("client_mask").join(function).join("m=1,k=1").join("new");
            std::fs::create_dir_all(&new).unwrap();
            std::fs::write(
                new.join("benchmark.json"),
                format!(
                    r#"{{"group_id":"client_mask","function_id":"{function}","value_str":"m=1,k=1","throughput":{{"Bytes":8000000}}}}"#
                ),
            )
            .unwrap();
            std::fs::write(new.join("sample.json"), format!(r#"{{"iters":[1.0,2.0],"times":[{ns},{}]}}"#, 2.0 * ns))
                .unwrap();
        }
        let results = load(&dir);
        assert_eq!(results.len(), 2);
        let fused = &results["client_mask/fused/m=1,k=1"];
        assert!((fused.time.median - 2e-3).abs() < 1e-12);
        assert!((fused.gb_per_s().unwrap() - 4.0).abs() < 1e-9);
        let ratios = masking_ratios(&results, Some(8.0));
        assert!(ratios.contains("| m=1,k=1 | AES-128-CTR | 4.00 | 5.00 | 80 % | 0.50× |"), "{ratios}");
        assert!(table(&results).contains("`client_mask/raw_keystream/m=1,k=1` | 1.600 ms"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
