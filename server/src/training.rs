//! What the server does with rounds beyond the protocol: it plans each one (the privacy
//! budget, the neighbour graph, the settings with the current model) and commits each
//! result (the FedAvg step, the privacy ledger, the model and the round record in the
//! state directory). The driver calls it when the session asks to start or commit a
//! round.

use std::sync::Arc;

use privagg_dp::ledger::{PrivacyLedger, Release};
use privagg_protocol::{DropReason, DroppedClient, PrgKind, RoundParams};
use privagg_service::{Ban, RoundCommit, RoundSettings};

use crate::aggregation::{Aggregation, Applied, graph_for};
use crate::config::ServeConfig;
use crate::error::ServeError;
use crate::record::{BanReason, BanRecord, DroppedRecord, HolderRecord, PrivacyRecord, RoundRecord};
use crate::round_log::RoundLog;
use crate::storage::StateDir;

/// Where a session stands when the server starts: after `completed` rounds.
#[derive(Clone, Debug, Default)]
pub struct Resume {
    /// Rounds already completed.
    pub completed: u64,
    /// The model after them.
    pub model: Vec<f32>,
    /// The server-momentum buffer, if momentum is on.
    pub momentum: Option<Vec<f32>>,
    /// The privacy ledger: every release charged so far.
    pub ledger: PrivacyLedger,
    /// The clip the next round uses, if adaptive clipping moved it.
    pub clip: Option<f64>,
}

/// What a finished session leaves.
#[derive(Clone, Debug)]
pub struct SessionSummary {
    /// Rounds completed in total (including earlier runs on the same state).
    pub completed_rounds: u64,
    /// The final model.
    pub model: Vec<f32>,
    /// ε spent at the configured δ (DP on).
    pub epsilon: Option<f64>,
}

/// The global model, its privacy ledger and its storage.
pub(crate) struct Training {
    config: Arc<ServeConfig>,
    aggregation: Aggregation,
    storage: StateDir,
    model: Vec<f32>,
    momentum: Option<Vec<f32>>,
    ledger: PrivacyLedger,
    /// The clip of the next round (DP on; model units).
    clip: f64,
    /// The training session the state directory belongs to.
    session: [u8; 16],
    /// The verifiable log of committed rounds.
    log: RoundLog,
    /// The settings of the round being run.
    settings: Option<RoundSettings>,
    /// The attempts asked to unmask since the last commit, `(round, instance hex)`: kept
    /// in `unmasked.json` and listed by the round's record and leaf.
    unmasked: Vec<(u64, String)>,
}

impl Training {
    pub fn new(
        config: Arc<ServeConfig>,
        aggregation: Aggregation,
        storage: StateDir,
        resume: Resume,
    ) -> Result<Self, ServeError> {
        let Resume { model, momentum, ledger, clip, .. } = resume;
        let session = storage.session()?;
        let log = RoundLog::open(&storage, &session)?;
        let clip = clip.unwrap_or(config.dp.clip);
        let committed = storage.last_completed_round()?.unwrap_or(0);
        let mut unmasked = storage.load_unmasked()?;
        unmasked.retain(|(r, _)| *r > committed);
        Ok(Self { config, aggregation, storage, model, momentum, ledger, clip, session, log, unmasked, settings: None })
    }

    /// The round log as it stands, for the session to prove to clients.
    pub fn log_state(&self) -> Arc<privagg_service::round_log::LogState> {
        self.log.state()
    }

    /// The current global model (after the last committed round).
    pub fn model(&self) -> &[f32] {
        &self.model
    }

    /// ε spent so far at the configured δ (DP on).
    fn epsilon(&self) -> Option<f64> {
        self.aggregation.plan().and_then(|p| self.ledger.epsilon(p.input.delta).ok())
    }

    /// The parameters and the payload of `round` for a cohort of `clients`, or why it
    /// cannot start (the privacy budget is spent, or no safe graph exists for it).
    pub fn plan(&mut self, round: u64, clients: u32) -> Result<(RoundParams, Arc<[u8]>), ServeError> {
        if let (Some(event), Some(budget)) = (self.aggregation.dp_event(), self.config.dp.max_epsilon) {
            self.ledger
                .check_budget(&event, budget, self.config.dp.delta)
                .map_err(|e| ServeError::Budget(e.to_string()))?;
        }
        let (neighbours, threshold) = graph_for(
            clients,
            self.config.min_clients,
            self.config.neighbors,
            self.config.corrupt_fraction,
            self.config.threat.adversary(),
        )?;
        let epsilon_spent = self.epsilon().unwrap_or(0.0);
        let mut settings = self.aggregation.round_settings(
            self.session,
            round,
            self.config.rounds,
            &self.model,
            (epsilon_spent, self.clip),
        )?;
        settings.train_timeout_secs = self.config.train_timeout.ceil() as u32;
        let params = RoundParams {
            round,
            num_clients: clients,
            neighbours,
            threshold,
            min_clients: self.config.min_clients,
            dim: settings.protocol_dim() as u32,
            bits: self.aggregation.bits(),
            prg: PrgKind::default(),
        };
        let app_data = settings.encode().map_err(|e| ServeError::Model(e.to_string()))?;
        self.settings = Some(settings);
        Ok((params, Arc::from(app_data.into_boxed_slice())))
    }

    /// Charges the release of `round` (attempt `attempt`, instance `instance`, `inputs`
    /// masked inputs in the sum) before any survivor is asked for its unmasking shares:
    /// notes the instance durably (the round's leaf lists it) and, DP on, writes the
    /// release to the privacy ledger.
    pub fn charge_release(
        &mut self,
        round: u64,
        attempt: u32,
        inputs: usize,
        instance: [u8; 32],
    ) -> Result<(), ServeError> {
        self.unmasked.push((round, hex::encode(instance)));
        self.storage.save_unmasked(&self.unmasked)?;
        let (Some(event), Some(plan)) = (self.aggregation.dp_event(), self.aggregation.plan()) else {
            tracing::info!(round, attempt, inputs, "release noted (DP off: nothing to charge)");
            return Ok(());
        };
        let release = Release {
            round,
            attempt,
            event,
            n_min: self.config.min_clients as usize,
            survivors: inputs,
            effective_noise_multiplier: plan.effective_noise_multiplier,
        };
        self.ledger.record(release).map_err(|e| ServeError::Model(format!("privacy ledger: {e}")))?;
        self.storage.save_ledger(&self.ledger)?;
        tracing::info!(round, attempt, inputs, epsilon = self.epsilon(), "release charged");
        Ok(())
    }

    /// An attempt aborted after its cohort was seated: noted in the ledger (with random
    /// check-ins it voids the amplified figure).
    pub fn note_seated_abort(&mut self) -> Result<(), ServeError> {
        if self.aggregation.check_ins().is_none() {
            return Ok(());
        }
        self.ledger.seated_aborts += 1;
        tracing::warn!("a seated attempt aborted: the ε against model consumers is no longer claimed");
        self.storage.save_ledger(&self.ledger)
    }

    /// Keeps `ban` in the state directory, so that it outlives a restart.
    pub fn keep_ban(&self, ban: &Ban) -> Result<(), ServeError> {
        crate::bans::keep(self.storage.path(), ban, std::time::SystemTime::now())
    }

    /// Applies a completed round to the model and commits model and record to the
    /// state directory (its release was charged before it was unmasked).
    pub fn commit(&mut self, commit: &RoundCommit) -> Result<RoundRecord, ServeError> {
        let settings = self.settings.take().ok_or_else(|| ServeError::Model("a round without settings".into()))?;
        let applied = self.aggregation.apply(
            &commit.output,
            &settings,
            &mut self.model,
            self.momentum.as_mut(),
            (self.config.server_lr, self.config.server_momentum),
        )?;
        let privacy = match self.aggregation.plan() {
            Some(plan) => {
                let delta = plan.input.delta;
                let bad = |e: privagg_dp::DpError| ServeError::Model(e.to_string());
                let check_in =
                    self.aggregation.check_ins().map(|c| c.ledger_epsilon(&self.ledger, commit.round, delta));
                let check_in = check_in.transpose().map_err(bad)?.flatten();
                Some(PrivacyRecord {
                    epsilon: self.ledger.epsilon(delta).map_err(bad)?,
                    delta,
                    effective_noise_multiplier: plan.effective_noise_multiplier,
                    releases: self.ledger.releases.len(),
                    check_in_epsilon: check_in.map(|(epsilon, _)| epsilon),
                    check_in_delta: check_in.map(|(_, delta)| delta),
                })
            }
            None => None,
        };
        if let Some(step) = applied.clip {
            self.clip = step.next_clip;
        }
        let mut record = record(commit, &applied, privacy);
        record.unmasked = self.unmasked.iter().filter(|(r, _)| *r == commit.round).map(|(_, i)| i.clone()).collect();
        self.storage.commit(&record, &self.model, self.momentum.as_deref())?;
        self.unmasked.retain(|(r, _)| *r > commit.round);
        self.storage.save_unmasked(&self.unmasked)?;
        self.log.append(&record, &self.ledger)?;
        tracing::info!(
            round = record.round,
            included = record.included.len(),
            dropped = record.dropped.len(),
            epsilon = record.privacy.as_ref().map(|p| p.epsilon),
            seconds = record.timings.get("total").copied().unwrap_or_default(),
            "round completed"
        );
        Ok(record)
    }

    /// What the session leaves after `completed_rounds`.
    pub fn into_summary(self, completed_rounds: u64) -> SessionSummary {
        let epsilon = self.epsilon();
        SessionSummary { completed_rounds, model: self.model, epsilon }
    }
}

fn record(commit: &RoundCommit, applied: &Applied, privacy: Option<PrivacyRecord>) -> RoundRecord {
    let mut timings: std::collections::BTreeMap<String, f64> =
        commit.timings.iter().map(|(phase, d)| (phase.as_str().to_owned(), d.as_secs_f64())).collect();
    timings.insert("total".into(), commit.total.as_secs_f64());
    let params = &commit.params;
    RoundRecord {
        round: commit.round,
        attempt: commit.attempt,
        instance: hex::encode(commit.instance),
        unmasked: Vec::new(),
        participants: params.num_clients,
        clients: commit
            .holders
            .iter()
            .map(|h| {
                let name = h.certificate.as_deref().and_then(privagg_ca::subject_name);
                (h.seat.get(), HolderRecord { identity: h.identity.fingerprint(), name })
            })
            .collect(),
        included: commit.output.included.iter().map(|c| c.get()).collect(),
        dropped: commit.dropped.iter().map(dropped_record).collect(),
        reconnected: commit.reconnected.iter().map(|c| c.get()).collect(),
        banned: commit.banned.iter().map(ban_record).collect(),
        neighbours: params.neighbours,
        threshold: params.threshold,
        bits: params.bits,
        denominator: applied.denominator,
        update_norm: applied.update_norm,
        privacy,
        timings,
        bytes_in: commit.bytes_in,
        bytes_out: commit.bytes_out,
        clip: applied.clip,
    }
}

fn ban_record(b: &Ban) -> BanRecord {
    BanRecord {
        identity: b.identity.fingerprint(),
        client: b.seat.map(|c| c.get()),
        round: b.round,
        offences: b.offences,
        reason: BanReason::of(&b.reason),
    }
}

fn dropped_record(d: &DroppedClient) -> DroppedRecord {
    DroppedRecord {
        client: d.client.get(),
        phase: d.phase.as_str().into(),
        reason: match &d.reason {
            DropReason::MissedDeadline => "missed the phase deadline".into(),
            DropReason::ConnectionLost => "connection lost".into(),
            DropReason::Left(detail) => format!("left: {detail}"),
            DropReason::Violation(v) => format!("protocol violation: {v}"),
        },
        in_sum: d.in_sum,
    }
}
