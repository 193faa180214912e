//! The server's configuration: a TOML file whose every key may be overridden by a
//! command-line flag (see `privagg serve --help`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use privagg_dp::planner::Mechanism;
use privagg_dp::sampling::{CheckIns, Population};
use privagg_protocol::AdversaryClass;
use privagg_service::message::CHECK_IN_RATE_UNIT;
use privagg_service::privacy::{DEFAULT_MAX_EPSILON, assumed_colluders};
use serde::{Deserialize, Serialize};

use crate::error::ServeError;

/// Distributed-DP settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpConfig {
    /// Whether DP is on (the default). Off: weighted FedAvg without noise.
    pub enabled: bool,
    /// Noise multiplier z: the sum's noise std is z times its L2 sensitivity.
    pub noise_multiplier: f64,
    /// L2 clip C of each update, in model units.
    pub clip: f64,
    /// The integer noise: `discrete_gaussian` (default) or `skellam`.
    pub mechanism: Mechanism,
    /// δ of the reported ε.
    pub delta: f64,
    /// The rate at which clients take part in rounds. Below 1 only with `check_ins`.
    pub sampling_rate: f64,
    /// Random check-ins: before each round, each of the `clients` waiting clients decides
    /// with its own CSPRNG whether to take part, with probability `sampling_rate`. Only
    /// then is a second ε reported, against those who see only the released models; the
    /// headline stays at `q = 1` (the server sees who took part).
    pub check_ins: bool,
    /// Adaptive clipping (Andrew et al. 2021): `clip` is where C starts; each round the
    /// clients' noised clip indicators move it toward the target quantile. `None`: C
    /// stays `clip`.
    pub adaptive_clip: Option<privagg_dp::adaptive_clip::AdaptiveClipping>,
    /// Refuse to start a round that would take ε (at δ) beyond this; `None` (in TOML,
    /// `inf`): no budget. Default: 16, which stops only absurd configurations.
    pub max_epsilon: Option<f64>,
    /// Colluding clients whose noise the accounting does not count; unset:
    /// ⌈corrupt_fraction · min_clients⌉, what clients assume by default.
    pub colluders: Option<u32>,
    /// Bits per word of the modular sum.
    pub bits: u32,
    /// Run a plan whose accounting is loose: the discrete Gaussian's τ·m above 10⁻³, or
    /// rounding that inflates the sensitivity by more than 10 % (both cost ε for nothing;
    /// more bits or a larger clip usually fix them).
    pub force_plan: bool,
}

impl Default for DpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            noise_multiplier: 1.0,
            clip: 1.0,
            mechanism: Mechanism::DiscreteGaussian,
            delta: 1e-5,
            sampling_rate: 1.0,
            check_ins: false,
            adaptive_clip: None,
            max_epsilon: Some(DEFAULT_MAX_EPSILON),
            colluders: None,
            bits: 20,
            force_plan: false,
        }
    }
}

/// What the server is assumed able to do; it decides the threshold of every round.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Threat {
    /// The server may lie about who dropped out (send different clients different
    /// views): thresholds satisfy 2t ≥ k + 2 + c. The default.
    #[default]
    Malicious,
    /// The server follows the protocol and only tries to learn from what it sees:
    /// thresholds need only exceed the corrupt neighbours c. Clients must opt into it.
    Curious,
}

impl Threat {
    /// The adversary class the neighbour graphs are sized for.
    pub fn adversary(self) -> AdversaryClass {
        match self {
            Self::Malicious => AdversaryClass::SemiMaliciousServer,
            Self::Curious => AdversaryClass::CuriousServer,
        }
    }
}

/// Weighted FedAvg settings (DP off).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WeightingConfig {
    /// Each update coordinate is clamped to [−value_range, value_range].
    pub value_range: f64,
    /// Each client's weight is clamped to [0, max_weight].
    pub max_weight: f64,
    /// Bits per word of the modular sum.
    pub bits: u32,
}

impl Default for WeightingConfig {
    fn default() -> Self {
        Self { value_range: 8.0, max_weight: 1000.0, bits: 48 }
    }
}

/// Everything `privagg serve` needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// State directory: certificate, models, round records.
    pub state: PathBuf,
    /// Model dimension.
    pub dim: usize,
    /// Clients per round n (also the FedAvg denominator with DP on).
    pub clients: u32,
    /// Fewest clients whose inputs a round may release (the DP n_min).
    pub min_clients: u32,
    /// Rounds in the session.
    pub rounds: u64,
    /// Neighbours per client; unset: chosen by the parameter finder.
    pub neighbors: Option<u32>,
    /// Fraction of clients assumed corrupt, for choosing neighbours and threshold.
    pub corrupt_fraction: f64,
    /// What the server is assumed able to do, for choosing neighbours and threshold.
    pub threat: Threat,
    /// Differential privacy.
    pub dp: DpConfig,
    /// Weighted FedAvg without DP.
    pub weighting: WeightingConfig,
    /// Server learning rate η: θ ← θ + η·update.
    pub server_lr: f64,
    /// Server momentum β in [0, 1): v ← β·v + update, θ ← θ + η·v.
    pub server_momentum: f64,
    /// Initial model (`.npy`, 1-D float); zeros if unset.
    pub model_init: Option<PathBuf>,
    /// Seconds each protocol phase may take.
    pub phase_timeout: f64,
    /// Seconds a seated client may spend training on the round's model before the
    /// first phase's deadline starts (that deadline is this plus `phase_timeout`).
    pub train_timeout: f64,
    /// Seconds to wait for a full cohort before starting with at least `min_clients`.
    pub lobby_timeout: f64,
    /// Seconds of silence after which a connection counts as lost (the client may then
    /// reconnect to its seat until the phase deadline).
    pub idle_timeout: f64,
    /// Token file (one token per line): only holders of a listed token are admitted.
    pub tokens: Option<PathBuf>,
    /// Admit anyone, with any number of identities, when neither `tokens` nor
    /// `client_ca` is given. Without it the server refuses to start (local trials only).
    pub insecure_open_admission: bool,
    /// The enrollment authority's root certificate (DER): only clients with a certificate
    /// it issued are admitted (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// Certificate and key (DER) to use instead of the generated ones.
    pub cert: Option<PathBuf>,
    /// Private key (PKCS#8 DER) of `cert`.
    pub key: Option<PathBuf>,
    /// Masked inputs received at once; 0: as many as `upload_memory_mib` holds.
    pub upload_slots: usize,
    /// Memory for uploads in flight, in MiB: with `upload_slots` = 0, the server grants
    /// as many uploads at once as fit (each a masked input's frame), at least 4.
    pub upload_memory_mib: f64,
    /// Frames with shared parts (model downloads, relayed shares) written at once; each is
    /// bounded by the write deadline, so slow readers hold a slot only that long.
    pub download_slots: usize,
    /// Seconds a new connection may take to send its `Hello`.
    pub hello_timeout: f64,
    /// Seconds every transfer may take (one frame written to a client, one frame read
    /// from it, one granted upload), plus its size at `min_transfer_rate`; a client that
    /// stalls past it is dropped and its connection closed. Unset: the phase timeout (a
    /// seated client that takes longer misses its phase anyway; a server busy with its
    /// own work must not blame its clients for it).
    pub transfer_timeout: Option<f64>,
    /// Slowest transfer rate a client may impose, in bytes per second (see
    /// `transfer_timeout`).
    pub min_transfer_rate: f64,
    /// Connections that have not been admitted yet (awaiting their `Hello`), at most;
    /// more wait (at most the hello timeout) for one of them to finish.
    pub max_unadmitted: usize,
    /// Connections not yet admitted from one IP address, at most; more are refused.
    pub max_unadmitted_per_address: usize,
    /// Offences (protocol violations, stalled transfers) after which a client's identity
    /// is banned; 0: never.
    pub ban_after: u32,
    /// Seconds a ban lasts; `None`: the rest of the session. Bans outlive a restart
    /// (`bans.json`).
    pub ban_duration: Option<f64>,
    /// Attempts per round before the session fails.
    pub max_round_attempts: u32,
    /// End the session when a round has aborted `max_round_attempts` times in a row;
    /// otherwise keep serving and try it again after a back-off (check-ins always end it).
    pub stop_after_failed_round: bool,
    /// Seconds to wait after an aborted attempt before seating the next cohort, doubling
    /// with each further abort of the round (up to 64 times this).
    pub retry_backoff: f64,
    /// Resume a state directory whose rounds were committed with other settings (those
    /// of [`ServeConfig::plan`]); the change is recorded in `plan-changes.json`.
    pub force_resume: bool,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7000)),
            state: PathBuf::from("privagg-state"),
            dim: 0,
            clients: 10,
            min_clients: 8,
            rounds: 1,
            neighbors: None,
            corrupt_fraction: 0.05,
            threat: Threat::default(),
            dp: DpConfig::default(),
            weighting: WeightingConfig::default(),
            server_lr: 1.0,
            server_momentum: 0.0,
            model_init: None,
            phase_timeout: 30.0,
            train_timeout: 60.0,
            lobby_timeout: 60.0,
            idle_timeout: 30.0,
            tokens: None,
            insecure_open_admission: false,
            client_ca: None,
            cert: None,
            key: None,
            upload_slots: 0,
            upload_memory_mib: 256.0,
            download_slots: 64,
            hello_timeout: 5.0,
            transfer_timeout: None,
            min_transfer_rate: 256.0 * 1024.0,
            max_unadmitted: 1024,
            max_unadmitted_per_address: 256,
            ban_after: 2,
            ban_duration: None,
            max_round_attempts: 3,
            stop_after_failed_round: false,
            retry_backoff: 1.0,
            force_resume: false,
        }
    }
}

impl ServeConfig {
    /// Parses a TOML configuration (unknown keys are errors).
    pub fn from_toml(text: &str) -> Result<Self, ServeError> {
        toml::from_str(text).map_err(|e| ServeError::Config(e.to_string()))
    }

    /// The per-phase deadline.
    pub fn phase_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.phase_timeout)
    }

    /// How long a seated client may train before the first phase's deadline starts.
    pub fn train_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.train_timeout)
    }

    /// How long a silent connection lives.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.idle_timeout)
    }

    /// How long a partial cohort waits.
    pub fn lobby_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.lobby_timeout)
    }

    /// Uploads granted at once for upload frames of `upload_frame` bytes: `upload_slots`,
    /// or (0) as many as `upload_memory_mib` holds, at least 4 and at most 4096.
    pub fn effective_upload_slots(&self, upload_frame: usize) -> usize {
        if self.upload_slots > 0 {
            return self.upload_slots;
        }
        let budget = self.upload_memory_mib * (1u64 << 20) as f64;
        ((budget / upload_frame.max(1) as f64) as usize).clamp(4, 4096)
    }

    /// How long a new connection may take to send its `Hello`.
    pub fn hello_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.hello_timeout)
    }

    /// How long a transfer of `bytes` may take: the transfer timeout plus the bytes at
    /// the minimum rate.
    pub fn transfer_deadline(&self, bytes: usize) -> Duration {
        let base = self.transfer_timeout.unwrap_or(self.phase_timeout);
        Duration::from_secs_f64(base + bytes as f64 / self.min_transfer_rate)
    }

    /// Checks the ranges and consistency of what the session's plan depends on (cohort,
    /// timing, DP), without admission: what `privagg plan` needs.
    pub fn validate_plan(&self) -> Result<(), ServeError> {
        let bad = |m: String| Err(ServeError::Config(m));
        if self.dim == 0 {
            return bad("--dim must be at least 1".into());
        }
        if self.clients < 2 {
            return bad("--clients must be at least 2".into());
        }
        if self.min_clients < 2 || self.min_clients > self.clients {
            return bad(format!("--min-clients must be in 2..={}", self.clients));
        }
        if self.rounds == 0 {
            return bad("--rounds must be at least 1".into());
        }
        if !(self.server_lr.is_finite() && self.server_lr > 0.0) {
            return bad("--server-lr must be positive".into());
        }
        if !(0.0..1.0).contains(&self.server_momentum) {
            return bad("--server-momentum must be in [0, 1)".into());
        }
        for (name, secs) in [
            ("--phase-timeout", self.phase_timeout),
            ("--train-timeout", self.train_timeout),
            ("--lobby-timeout", self.lobby_timeout),
            ("--idle-timeout", self.idle_timeout),
            ("--hello-timeout", self.hello_timeout),
            ("--transfer-timeout", self.transfer_timeout.unwrap_or(self.phase_timeout)),
            ("--retry-backoff", self.retry_backoff),
            ("--ban-duration", self.ban_duration.unwrap_or(1.0)),
        ] {
            if !(secs.is_finite() && secs > 0.0 && secs < 1e6) {
                return bad(format!("{name} must be a positive number of seconds"));
            }
        }
        if self.max_round_attempts == 0 || self.download_slots == 0 {
            return bad("--download-slots and --max-round-attempts must be at least 1".into());
        }
        if !(self.upload_memory_mib.is_finite() && self.upload_memory_mib > 0.0) {
            return bad("--upload-memory-mib must be positive".into());
        }
        if self.max_unadmitted == 0 || self.max_unadmitted_per_address == 0 {
            return bad("--max-unadmitted and --max-unadmitted-per-address must be at least 1".into());
        }
        if !(self.min_transfer_rate.is_finite() && self.min_transfer_rate >= 1.0) {
            return bad("--min-transfer-rate must be at least 1 byte per second".into());
        }
        if !(0.0..1.0).contains(&self.corrupt_fraction) {
            return bad("--corrupt-fraction must be in [0, 1)".into());
        }
        if let Some(epsilon) = self.dp.max_epsilon
            && !(epsilon > 0.0 && epsilon.is_finite())
        {
            return bad(format!("--max-epsilon must be a positive number (\"inf\": no budget), got {epsilon}"));
        }
        if let Some(rule) = &self.dp.adaptive_clip {
            rule.validate().map_err(|e| ServeError::Config(format!("--adaptive-clip: {e}")))?;
        }
        if self.dp.enabled && self.dp.sampling_rate != 1.0 && !self.dp.check_ins {
            return bad(format!(
                "--sampling-rate {} claims amplification by sampling, but without --check-ins the server seats whoever is waiting: no sampling happens, so only 1 is accepted",
                self.dp.sampling_rate
            ));
        }
        if self.dp.check_ins {
            self.check_in_plan()?;
        }
        if !self.dp.enabled {
            let w = &self.weighting;
            if !(w.value_range.is_finite() && w.value_range > 0.0 && w.max_weight.is_finite() && w.max_weight > 0.0) {
                return bad("value range and max weight must be positive".into());
            }
        }
        Ok(())
    }

    /// The check-in regime (with `check_ins`; DP on or off): refuses a rate outside
    /// (0, 1] or below 10⁻⁹, and a population too small — where the chance `β` that a
    /// window's count is at an edge (fewer than `min_clients`, or more than the largest
    /// cohort), over every window the session may open (rounds × attempts), would
    /// exceed δ (the second ε figure adds that to δ). The population's corrupt clients
    /// (`corrupt_fraction`) are assumed to stay out.
    pub fn check_in_plan(&self) -> Result<Option<CheckIns>, ServeError> {
        if !self.dp.check_ins {
            return Ok(None);
        }
        let q = self.dp.sampling_rate;
        if !(q * f64::from(CHECK_IN_RATE_UNIT) >= 1.0 && q <= 1.0) {
            return Err(ServeError::Config(format!("--sampling-rate {q} must be in [1e-9, 1] with --check-ins")));
        }
        // What clients receive, and so what is accounted: the rate in parts per billion.
        let wire = f64::from(self.check_in_rate_ppb().unwrap_or(0)) / f64::from(CHECK_IN_RATE_UNIT);
        let population = Population {
            clients: u64::from(self.clients),
            min_cohort: u64::from(self.min_clients),
            max_cohort: u64::from(self.largest_cohort()),
            corrupt: u64::from(assumed_colluders(self.corrupt_fraction, self.clients)),
            colluders: u64::from(self.colluders()),
        };
        let windows = self.rounds.saturating_mul(u64::from(self.max_round_attempts));
        let regime =
            CheckIns::new(wire, population, windows).map_err(|e| ServeError::Config(format!("check-ins: {e}")))?;
        if self.dp.enabled && regime.total_delta(0.0) > self.dp.delta {
            return Err(ServeError::Config(format!(
                "check-ins: with {} clients checking in at rate {q}, a round's cohort falls outside {} ..= {} with probability {:.2e}; over {windows} windows ({} rounds × {} attempts) that exceeds δ = {} (more --clients, a higher rate or a lower --min-clients)",
                self.clients,
                self.min_clients,
                self.largest_cohort(),
                regime.shortfall(),
                self.rounds,
                self.max_round_attempts,
                self.dp.delta
            )));
        }
        Ok(Some(regime))
    }

    /// The largest cohort the session plans for: `clients`, or with check-ins the
    /// colluders (who may always join) plus the others' binomial count's mean and seven
    /// standard deviations (at most `clients`). The
    /// neighbour graph is checked at this size at start; each round's is made for its
    /// actual cohort, and a check-in that collects more fails as an attempt.
    pub fn largest_cohort(&self) -> u32 {
        let Some(ppb) = self.check_in_rate_ppb() else { return self.clients };
        let q = f64::from(ppb) / f64::from(CHECK_IN_RATE_UNIT);
        let colluders = f64::from(self.colluders());
        let n = f64::from(self.clients) - colluders;
        let high = (colluders + q * n + 7.0 * (q * (1.0 - q) * n).sqrt()).ceil();
        (high as u32).clamp(self.min_clients, self.clients)
    }

    /// Colluders in a cohort whose noise the accounting does not count:
    /// `dp.colluders`, or ⌈corrupt_fraction · min_clients⌉ (what clients assume).
    pub fn colluders(&self) -> u32 {
        self.dp.colluders.unwrap_or_else(|| assumed_colluders(self.corrupt_fraction, self.min_clients))
    }

    /// What shapes the model and its privacy, as kept in the state directory's
    /// `plan.json`: dimension, cohort, threat, DP, weighting and the server's optimizer.
    /// Rounds, addresses, timeouts and identities may change between runs.
    pub fn plan(&self) -> serde_json::Value {
        serde_json::json!({
            "dim": self.dim,
            "clients": self.clients,
            "min_clients": self.min_clients,
            "neighbors": self.neighbors,
            "corrupt_fraction": self.corrupt_fraction,
            "threat": self.threat,
            "dp": self.dp,
            "weighting": self.weighting,
            "server_lr": self.server_lr,
            "server_momentum": self.server_momentum,
        })
    }

    /// The check-in rate on the wire (parts per billion), with `check_ins`.
    pub fn check_in_rate_ppb(&self) -> Option<u32> {
        let unit = f64::from(CHECK_IN_RATE_UNIT);
        self.dp.check_ins.then(|| (self.dp.sampling_rate * unit).round() as u32)
    }

    /// Checks everything [`validate_plan`](Self::validate_plan) does, and admission:
    /// certificate and key together, one way to admit clients, and certified clients
    /// against a malicious server.
    pub fn validate(&self) -> Result<(), ServeError> {
        self.validate_plan()?;
        let bad = |m: &str| Err(ServeError::Config(m.into()));
        if self.cert.is_some() != self.key.is_some() {
            return bad("--cert and --key go together");
        }
        if self.tokens.is_some() && self.client_ca.is_some() {
            return bad("--tokens and --client-ca are two ways to admit clients: choose one");
        }
        if self.tokens.is_none() && self.client_ca.is_none() && !self.insecure_open_admission {
            return bad(
                "no admission: give --tokens (a token file) or --client-ca (the enrollment authority's root); to admit anyone with any number of identities (local trials only), pass --insecure-open-admission",
            );
        }
        if self.insecure_open_admission && (self.tokens.is_some() || self.client_ca.is_some()) {
            return bad("--insecure-open-admission contradicts --tokens and --client-ca: choose one");
        }
        if self.threat == Threat::Malicious && self.client_ca.is_none() {
            return bad(
                "against a malicious server clients must authenticate each other: give --client-ca (the enrollment authority's root), or run with --threat curious, which trusts the server",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_tokens_or_a_client_ca_the_server_needs_the_open_admission_opt_in() {
        let bare = ServeConfig { dim: 4, threat: Threat::Curious, ..ServeConfig::default() };
        let err = bare.validate().unwrap_err().to_string();
        assert!(err.contains("--insecure-open-admission"), "{err}");
        ServeConfig { insecure_open_admission: true, ..bare.clone() }.validate().unwrap();
        let both = ServeConfig { insecure_open_admission: true, tokens: Some("t".into()), ..bare };
        assert!(both.validate().is_err());
    }

    #[test]
    fn toml_sets_fields_and_rejects_unknown_keys() {
        let c = ServeConfig::from_toml(
            "dim = 100\nclients = 20\nmin_clients = 15\nrounds = 3\nclient_ca = \"ca.der\"\n[dp]\nnoise_multiplier = 1.5\nclip = 0.5\n",
        )
        .unwrap();
        assert_eq!((c.dim, c.clients, c.min_clients, c.rounds), (100, 20, 15, 3));
        assert_eq!(c.dp.noise_multiplier, 1.5);
        assert!(c.dp.enabled);
        c.validate().unwrap();
        assert!(ServeConfig::from_toml("dimm = 3").is_err());
        let off = ServeConfig::from_toml("dim = 4\n[dp]\nenabled = false\n").unwrap();
        assert!(!off.dp.enabled);
    }

    #[test]
    fn the_example_file_parses_and_validates() {
        let text = include_str!("../privagg.example.toml");
        let c = ServeConfig::from_toml(text).unwrap();
        c.validate().unwrap();
        assert_eq!((c.dim, c.clients, c.min_clients, c.rounds), (1000, 10, 8, 5));
        assert!(c.dp.enabled);
    }

    #[test]
    fn inconsistent_settings_are_refused() {
        let ok = ServeConfig { dim: 10, client_ca: Some("ca.der".into()), ..ServeConfig::default() };
        ok.validate().unwrap();
        let curious_with_tokens =
            ServeConfig { client_ca: None, tokens: Some("t".into()), threat: Threat::Curious, ..ok.clone() };
        curious_with_tokens.validate().unwrap();
        for broken in [
            ServeConfig { dim: 0, ..ok.clone() },
            ServeConfig { min_clients: 11, ..ok.clone() },
            ServeConfig { min_clients: 1, ..ok.clone() },
            ServeConfig { rounds: 0, ..ok.clone() },
            ServeConfig { server_momentum: 1.0, ..ok.clone() },
            ServeConfig { phase_timeout: 0.0, ..ok.clone() },
            ServeConfig { cert: Some("c".into()), ..ok.clone() },
            // Against a malicious server, tokens or open admission authenticate no one.
            ServeConfig { client_ca: None, ..ok.clone() },
            ServeConfig { client_ca: None, tokens: Some("t".into()), ..ok.clone() },
            ServeConfig { tokens: Some("t".into()), threat: Threat::Curious, ..ok.clone() },
        ] {
            assert!(broken.validate().is_err(), "{broken:?}");
        }
    }

    #[test]
    fn a_sampling_rate_the_server_does_not_implement_is_refused() {
        // The server seats whoever waits: an ε amplified by sampling would not hold
        // against it (the DP audit's C1).
        let mut c = ServeConfig { dim: 10, client_ca: Some("ca.der".into()), ..ServeConfig::default() };
        c.dp.sampling_rate = 0.01;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("--sampling-rate 0.01"), "{err}");
        // With check-ins it is a real sampling, if the population can fill the rounds.
        c.dp.check_ins = true;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("check-ins: with 10 clients checking in at rate 0.01"), "{err}");
        (c.clients, c.min_clients) = (100_000, 500);
        c.validate().unwrap();
        assert_eq!(c.check_in_rate_ppb(), Some(10_000_000));
        for bad in [0.0, 1e-10, 1.5, f64::NAN] {
            c.dp.sampling_rate = bad;
            assert!(c.validate().is_err(), "{bad}");
        }
        c.dp.sampling_rate = 0.01;
        (c.dp.enabled, c.dp.check_ins, c.clients, c.min_clients) = (false, false, 10, 8);
        c.validate().unwrap();
    }

    #[test]
    fn loose_plans_are_refused_unless_forced_and_a_budget_is_on_by_default() {
        // The DP audit's configurations G (b = 10: τ·m ≈ 3·10⁴, ε ≈ 339 300) and H (b = 12).
        let base = ServeConfig {
            dim: 1024,
            clients: 1000,
            min_clients: 1000,
            rounds: 10,
            client_ca: Some("ca.der".into()),
            ..ServeConfig::default()
        };
        assert_eq!(base.dp.max_epsilon, Some(16.0));
        for bits in [10, 12] {
            let mut c = base.clone();
            c.dp.bits = bits;
            c.dp.colluders = Some(0);
            let err = crate::aggregation::Aggregation::new(&c).err().expect("refused").to_string();
            assert!(err.contains("τ·m") || err.contains("inflates"), "b = {bits}: {err}");
            c.dp.force_plan = true;
            assert!(crate::aggregation::Aggregation::new(&c).is_ok(), "b = {bits}, forced");
        }
        assert!(crate::aggregation::Aggregation::new(&base).is_ok());
    }

    #[test]
    fn colluders_default_to_the_corrupt_fraction_clients_assume() {
        let c = ServeConfig { dim: 10, min_clients: 8, client_ca: Some("ca.der".into()), ..ServeConfig::default() };
        let plan = crate::aggregation::Aggregation::new(&c).unwrap().plan().unwrap().clone();
        assert_eq!(plan.honest_shares, 7, "⌈5 % of 8⌉ = 1 colluder");
        let mut zero = c.clone();
        zero.dp.colluders = Some(0);
        assert_eq!(crate::aggregation::Aggregation::new(&zero).unwrap().plan().unwrap().honest_shares, 8);
    }
}
