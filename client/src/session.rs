//! A client's connection to the aggregation server and its part in rounds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ndarray::{Array1, ArrayView1};
use privagg_dp::{ClientEncoder, NoiseRng};
use privagg_protocol::{ClientMessage, ClientPolicy, ClientRound, Limits, ServerMessage};
use rand::RngExt;
use sha2::{Digest, Sha256};

use crate::error::SdkError;
use crate::settings::{AggregationMode, RoundSettings};
use crate::tls::client_config;
use crate::wire::{FromServer, MAX_CONTROL_FRAME, ServiceMessage, read_frame, write_frame};

/// After which of its own steps a client vanishes (a testing aid for dropouts).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropAfter {
    /// On receiving the config, before advertising keys.
    Config,
    /// After advertising its keys.
    AdvertiseKeys,
    /// After sending its share envelopes (the server may drop it before the phase ends).
    ShareKeys,
    /// On receiving its neighbours' envelopes, before masking: it is in U2 but not U3,
    /// the case that makes the server rebuild its mask key.
    ForwardedShares,
    /// After uploading its masked input.
    MaskedInput,
    /// After sending its unmasking shares.
    UnmaskResponse,
}

/// How to reach the server and what to accept from it.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The server's UDP address.
    pub server: SocketAddr,
    /// The name in the server's certificate (privagg's generated certificate says
    /// `localhost`).
    pub server_name: String,
    /// The server's certificate (DER), trusted exactly (pinned).
    pub server_cert: Vec<u8>,
    /// Admission token, if the server uses a token file.
    pub token: Option<String>,
    /// Refuse rounds whose effective noise multiplier is below this (and rounds without
    /// DP). A client may demand more privacy than the server offers, never less.
    pub min_noise_multiplier: Option<f64>,
    /// How long to keep retrying an unreachable server (connect and reconnect).
    pub connect_deadline: Duration,
    /// QUIC idle timeout; keep-alives go out at a quarter of it.
    pub idle_timeout: Duration,
    /// Testing only: vanish after this step.
    #[doc(hidden)]
    pub drop_after: Option<DropAfter>,
}

impl ClientOptions {
    /// Options with defaults: server name `localhost`, no token, no local noise floor,
    /// 10 s to connect, 60 s idle timeout.
    pub fn new(server: SocketAddr, server_cert: Vec<u8>) -> Self {
        Self {
            server,
            server_name: "localhost".into(),
            server_cert,
            token: None,
            min_noise_multiplier: None,
            connect_deadline: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            drop_after: None,
        }
    }
}

/// What one round did for this client.
#[derive(Clone, Debug, PartialEq)]
pub struct RoundReport {
    /// The round number.
    pub round: u64,
    /// How many clients' inputs the released sum covers.
    pub inputs: u32,
    /// L2 norm of the update before clipping (DP on), for adaptive-clipping studies.
    pub pre_clip_norm: f64,
    /// Bytes this client sent during the round (frames included).
    pub bytes_sent: u64,
    /// Bytes it received.
    pub bytes_received: u64,
}

/// A connected client.
pub struct Client {
    options: ClientOptions,
    endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    identity: [u8; 16],
    bytes_sent: u64,
    bytes_received: u64,
}

/// The background encoding of an update: its words and pre-clip norm.
type EncodingJob = tokio::task::JoinHandle<Result<(Vec<u64>, f64), SdkError>>;

/// One round's state while it runs.
struct RoundInProgress {
    protocol: ClientRound,
    rng: NoiseRng,
    settings: Option<RoundSettings>,
    encoding: Option<EncodingJob>,
    pre_clip_norm: f64,
    /// The encoded masked input, kept until the server has it (it may be resent).
    upload: Option<Vec<u8>>,
    /// Whether the upload went out on the current connection.
    uploaded: bool,
    /// The last frame sent, resent after reconnecting (an upload is announced again
    /// instead of resent whole).
    last_sent: Option<Vec<u8>>,
    /// Digest of the last frame handled, to skip the server's resend after reconnecting.
    last_received: Option<[u8; 32]>,
    /// Whether the connection was just re-established.
    resumed: bool,
}

impl Client {
    /// Connects and gets admitted. Retries an unreachable server until
    /// `connect_deadline`; a refusal is final.
    pub async fn connect(options: ClientOptions) -> Result<Self, SdkError> {
        let config = client_config(&options.server_cert, options.idle_timeout)?;
        let bind: SocketAddr = if options.server.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }
            .parse()
            .map_err(|e| SdkError::Local(format!("{e}")))?;
        let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| SdkError::Local(e.to_string()))?;
        endpoint.set_default_client_config(config);
        let identity: [u8; 16] = rand::rng().random();
        let (connection, send, recv) = open(&endpoint, &options, identity).await?;
        Ok(Self { options, endpoint, connection, send, recv, identity, bytes_sent: 0, bytes_received: 0 })
    }

    /// Reconnects after a lost connection, with the same identity, retrying until
    /// `connect_deadline`.
    pub async fn reconnect(&mut self) -> Result<(), SdkError> {
        let (connection, send, recv) = open(&self.endpoint, &self.options, self.identity).await?;
        self.connection = connection;
        self.send = send;
        self.recv = recv;
        Ok(())
    }

    /// Takes part in the next round with `update` (the model delta, the model's length)
    /// and `weight` (used only when the server runs without DP; e.g. the number of
    /// local examples). Returns when the round completed with this client's input in the
    /// sum.
    pub async fn submit(&mut self, update: ArrayView1<'_, f32>, weight: f32) -> Result<RoundReport, SdkError> {
        let update = update.to_vec();
        self.take_part(|_| Ok((update.clone(), weight))).await
    }

    /// Takes part in the next round: `train` gets the current global model and returns
    /// the update (the change to the model, same length).
    pub async fn round_with<F, E>(&mut self, mut train: F) -> Result<RoundReport, SdkError>
    where
        F: FnMut(ArrayView1<'_, f32>) -> Result<Array1<f32>, E>,
        E: std::fmt::Display,
    {
        self.take_part(|settings| {
            train(ArrayView1::from(&settings.model))
                .map(|u| (u.to_vec(), 1.0))
                .map_err(|e| SdkError::InvalidUpdate(e.to_string()))
        })
        .await
    }

    /// Testing only: vanish after `step` in later rounds (`None`: stay).
    #[doc(hidden)]
    pub fn set_drop_after(&mut self, step: Option<DropAfter>) {
        self.options.drop_after = step;
    }

    /// Takes part in every round until the session ends: `train` gets the current
    /// global model and returns the update. Rounds that abort, or that this client loses
    /// its connection in, are skipped (after reconnecting); other errors end the loop.
    pub async fn run<F, E>(&mut self, mut train: F) -> Result<Vec<RoundReport>, SdkError>
    where
        F: FnMut(ArrayView1<'_, f32>) -> Result<Array1<f32>, E>,
        E: std::fmt::Display,
    {
        self.run_weighted(|model| train(model).map(|u| (u, 1.0))).await
    }

    /// Like [`Client::run`], with `train` also returning the update's weight (used when
    /// the server runs without DP).
    pub async fn run_weighted<F, E>(&mut self, mut train: F) -> Result<Vec<RoundReport>, SdkError>
    where
        F: FnMut(ArrayView1<'_, f32>) -> Result<(Array1<f32>, f32), E>,
        E: std::fmt::Display,
    {
        let mut reports = Vec::new();
        loop {
            let result = self
                .take_part(|settings| {
                    train(ArrayView1::from(&settings.model))
                        .map(|(u, w)| (u.to_vec(), w))
                        .map_err(|e| SdkError::InvalidUpdate(e.to_string()))
                })
                .await;
            match result {
                Ok(report) => reports.push(report),
                Err(SdkError::SessionEnded { .. }) => return Ok(reports),
                Err(e) if e.is_round_local() => {
                    tracing::warn!(error = %e, "round lost; waiting for the next one");
                    if e.lost_connection() {
                        self.reconnect().await?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Closes the connection politely: what was sent is delivered first.
    pub async fn close(mut self) {
        let _ = self.send.finish();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.send.stopped()).await;
        self.connection.close(quinn::VarInt::from_u32(0), b"bye");
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }

    async fn send_frame(&mut self, payload: &[u8]) -> Result<(), SdkError> {
        write_frame(&mut self.send, payload).await?;
        self.bytes_sent += 4 + payload.len() as u64;
        Ok(())
    }

    /// Leaves the round: tells the server why, then returns `error`.
    async fn leave(&mut self, round: &mut ClientRound, error: SdkError) -> SdkError {
        let bye = round.leave(&error.to_string());
        // The round is over for us either way; a failed goodbye changes nothing.
        let _ = self.send_frame(&bye.encode()).await;
        error
    }

    /// Runs one round. `provide` turns the round's settings into (update, weight).
    async fn take_part<F>(&mut self, mut provide: F) -> Result<RoundReport, SdkError>
    where
        F: FnMut(&RoundSettings) -> Result<(Vec<f32>, f32), SdkError>,
    {
        let (sent_before, received_before) = (self.bytes_sent, self.bytes_received);
        let limits = Limits::default();
        let mut state = RoundInProgress {
            protocol: ClientRound::new(ClientPolicy::default()),
            rng: NoiseRng::from_os().map_err(|e| SdkError::Local(e.to_string()))?,
            settings: None,
            encoding: None,
            pre_clip_norm: 0.0,
            upload: None,
            uploaded: false,
            last_sent: None,
            last_received: None,
            resumed: false,
        };
        loop {
            let frame = match read_frame(&mut self.recv, limits.max_app_data as usize).await {
                Ok(Some(frame)) => frame,
                Ok(None) => return Err(SdkError::ConnectionLost("the server closed the stream".into())),
                Err(e) => {
                    let e = SdkError::from(e);
                    if !e.lost_connection() {
                        return Err(e);
                    }
                    self.resume(&mut state, &e).await?;
                    continue;
                }
            };
            self.bytes_received += 4 + frame.len() as u64;
            let digest: [u8; 32] = Sha256::digest(&frame).into();
            if std::mem::take(&mut state.resumed) && state.last_received == Some(digest) {
                // The server resent what it sent last; this client already handled it.
                continue;
            }
            state.last_received = Some(digest);
            let msg = match FromServer::decode(&frame, &limits).map_err(crate::wire::WireError::from)? {
                FromServer::Service(ServiceMessage::UploadGrant) => {
                    if !state.uploaded {
                        let upload = state.upload.as_ref().ok_or_else(|| {
                            SdkError::InvalidConfig("upload granted before the input was ready".into())
                        })?;
                        self.send_frame(upload).await?;
                        state.uploaded = true;
                        self.testing_drop(DropAfter::MaskedInput).await?;
                    }
                    continue;
                }
                FromServer::Service(ServiceMessage::SessionEnd { completed_rounds, .. }) => {
                    return Err(SdkError::SessionEnded { completed_rounds });
                }
                FromServer::Service(other) => {
                    return Err(SdkError::InvalidConfig(format!("unexpected {other:?} during a round")));
                }
                FromServer::Protocol(msg) => msg,
            };
            match &msg {
                ServerMessage::Config(config) => {
                    if let Err(e) = self.start_round(&mut state, &config.app_data, config.params.dim, &mut provide) {
                        return Err(self.leave(&mut state.protocol, e).await);
                    }
                    self.testing_drop(DropAfter::Config).await?;
                }
                ServerMessage::ForwardedShares(_) => {
                    self.testing_drop(DropAfter::ForwardedShares).await?;
                    if let Some(job) = state.encoding.take() {
                        let encoded = job.await.map_err(|e| SdkError::Local(e.to_string()))?;
                        let (words, norm) = match encoded {
                            Ok(encoded) => encoded,
                            Err(e) => return Err(self.leave(&mut state.protocol, e).await),
                        };
                        state.pre_clip_norm = norm;
                        state.protocol.set_input(words)?;
                    }
                }
                ServerMessage::RoundComplete { inputs } => {
                    let inputs = *inputs;
                    state.protocol.receive(msg, &mut state.rng)?;
                    return Ok(RoundReport {
                        round: state.settings.as_ref().map_or(0, |s| s.round),
                        inputs,
                        pre_clip_norm: state.pre_clip_norm,
                        bytes_sent: self.bytes_sent - sent_before,
                        bytes_received: self.bytes_received - received_before,
                    });
                }
                _ => {}
            }
            let heavy = matches!(msg, ServerMessage::ForwardedShares(_));
            let reply = if heavy {
                // Masking expands k + 1 PRG streams over the whole vector: off the runtime.
                let (protocol, rng, reply) = tokio::task::spawn_blocking(move || {
                    let (mut protocol, mut rng) = (state.protocol, state.rng);
                    let reply = protocol.receive(msg, &mut rng);
                    (protocol, rng, reply)
                })
                .await
                .map_err(|e| SdkError::Local(e.to_string()))?;
                state.protocol = protocol;
                state.rng = rng;
                reply
            } else {
                state.protocol.receive(msg, &mut state.rng)
            };
            let reply = match reply {
                Ok(reply) => reply,
                Err(privagg_protocol::ClientError::Aborted { code, detail }) => {
                    return Err(SdkError::Aborted { code, detail });
                }
                Err(e) => return Err(self.leave(&mut state.protocol, SdkError::Protocol(e)).await),
            };
            match reply {
                Some(ClientMessage::MaskedInput(vector)) => {
                    state.upload = Some(ClientMessage::MaskedInput(vector).encode());
                    let ready = ServiceMessage::UploadReady.encode();
                    self.send_frame(&ready).await?;
                    state.last_sent = Some(ready);
                }
                Some(reply) => {
                    let bytes = reply.encode();
                    self.send_frame(&bytes).await?;
                    state.last_sent = Some(bytes);
                    self.testing_drop(match reply {
                        ClientMessage::AdvertiseKeys(_) => DropAfter::AdvertiseKeys,
                        ClientMessage::ShareKeys(_) => DropAfter::ShareKeys,
                        _ => DropAfter::UnmaskResponse,
                    })
                    .await?;
                }
                None => {}
            }
        }
    }

    /// Reconnects after the connection was lost mid-round (same identity, so the server
    /// gives back the seat) and resends the last frame, which the server ignores if it
    /// already has it.
    async fn resume(&mut self, state: &mut RoundInProgress, cause: &SdkError) -> Result<(), SdkError> {
        tracing::warn!(error = %cause, "connection lost; reconnecting");
        self.reconnect().await?;
        state.uploaded = false;
        state.resumed = true;
        if let Some(last) = state.last_sent.clone() {
            self.send_frame(&last).await?;
        }
        Ok(())
    }

    /// Checks the round's settings against the update and the local policy, then starts
    /// encoding the update in the background (it overlaps the key exchange).
    fn start_round<F>(
        &self,
        state: &mut RoundInProgress,
        app_data: &[u8],
        protocol_dim: u32,
        provide: &mut F,
    ) -> Result<(), SdkError>
    where
        F: FnMut(&RoundSettings) -> Result<(Vec<f32>, f32), SdkError>,
    {
        let settings = RoundSettings::decode(app_data).map_err(|e| SdkError::InvalidConfig(e.to_string()))?;
        if settings.encoding.padded_dim != protocol_dim as usize {
            return Err(SdkError::InvalidConfig(format!(
                "the protocol carries {protocol_dim} words but the encoding makes {}",
                settings.encoding.padded_dim
            )));
        }
        self.check_policy(&settings)?;
        let (update, weight) = provide(&settings)?;
        if update.len() != settings.model_dim() {
            return Err(SdkError::DimensionMismatch { expected: settings.model_dim(), got: update.len() });
        }
        let job_settings = settings.clone();
        state.encoding = Some(tokio::task::spawn_blocking(move || encode_update(&job_settings, &update, weight)));
        state.settings = Some(settings);
        Ok(())
    }

    fn check_policy(&self, settings: &RoundSettings) -> Result<(), SdkError> {
        let Some(floor) = self.options.min_noise_multiplier else {
            return Ok(());
        };
        match settings.effective_noise_multiplier() {
            Some(z) if z >= floor => Ok(()),
            Some(z) => Err(SdkError::PolicyRefused(format!(
                "the server's noise multiplier {z:.3} is below this client's minimum {floor}"
            ))),
            None => Err(SdkError::PolicyRefused(format!(
                "the server runs without DP; this client requires a noise multiplier of at least {floor}"
            ))),
        }
    }

    /// Vanishes if the testing option asks for it at `step`: lets what was sent arrive,
    /// then closes the connection without a goodbye.
    async fn testing_drop(&mut self, step: DropAfter) -> Result<(), SdkError> {
        if self.options.drop_after == Some(step) {
            let _ = self.send.finish();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.send.stopped()).await;
            self.connection.close(quinn::VarInt::from_u32(1), b"testing dropout");
            return Err(SdkError::TestingDropout);
        }
        Ok(())
    }
}

impl Drop for Client {
    /// A client dropped without [`Client::close`] still closes its connection, so the
    /// server drops it from a round at once instead of waiting for the idle timeout.
    fn drop(&mut self) {
        self.connection.close(quinn::VarInt::from_u32(0), b"client dropped");
    }
}

/// Clips, rotates, quantizes and noises the update (DP on), or clamps, weights and
/// quantizes it (DP off). Returns the words and the pre-clip norm.
fn encode_update(settings: &RoundSettings, update: &[f32], weight: f32) -> Result<(Vec<u64>, f64), SdkError> {
    let invalid = |e: privagg_dp::DpError| SdkError::InvalidUpdate(e.to_string());
    let encoder = ClientEncoder::new(settings.encoding.clone()).map_err(|e| SdkError::InvalidConfig(e.to_string()))?;
    let mut rng = NoiseRng::from_os().map_err(|e| SdkError::Local(e.to_string()))?;
    let encoded = match settings.mode {
        AggregationMode::Dp { .. } => encoder.encode(update, &mut rng).map_err(invalid)?,
        AggregationMode::Weighted { value_range, max_weight } => {
            if !weight.is_finite() || weight < 0.0 {
                return Err(SdkError::InvalidUpdate(format!("weight {weight} is not a finite non-negative number")));
            }
            let weight = weight.min(max_weight as f32);
            let range = value_range as f32;
            let mut weighted: Vec<f32> = update.iter().map(|x| x.clamp(-range, range) * weight).collect();
            weighted.push(weight);
            encoder.encode(&weighted, &mut rng).map_err(invalid)?
        }
    };
    Ok((encoded.words.clone(), encoded.pre_clip_norm))
}

/// Opens a connection, retrying until the deadline, and gets admitted.
async fn open(
    endpoint: &quinn::Endpoint,
    options: &ClientOptions,
    identity: [u8; 16],
) -> Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream), SdkError> {
    let deadline = Instant::now() + options.connect_deadline;
    let mut backoff = Duration::from_millis(100);
    loop {
        match try_open(endpoint, options, identity).await {
            Err(SdkError::Unreachable(reason)) if Instant::now() + backoff < deadline => {
                tracing::debug!(%reason, "server unreachable; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

async fn try_open(
    endpoint: &quinn::Endpoint,
    options: &ClientOptions,
    identity: [u8; 16],
) -> Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream), SdkError> {
    let unreachable = |e: &dyn std::fmt::Display| SdkError::Unreachable(e.to_string());
    let connecting = endpoint.connect(options.server, &options.server_name).map_err(|e| unreachable(&e))?;
    let connection = tokio::time::timeout(options.connect_deadline, connecting)
        .await
        .map_err(|e| unreachable(&e))?
        .map_err(|e| unreachable(&e))?;
    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| unreachable(&e))?;
    let hello = ServiceMessage::Hello { token: options.token.clone().unwrap_or_default(), identity };
    write_frame(&mut send, &hello.encode()).await?;
    let reply = read_frame(&mut recv, MAX_CONTROL_FRAME)
        .await?
        .ok_or_else(|| SdkError::Refused("the server closed the connection".into()))?;
    match ServiceMessage::decode(&reply).map_err(crate::wire::WireError::from)? {
        ServiceMessage::Welcome => Ok((connection, send, recv)),
        ServiceMessage::Refused { reason } => Err(SdkError::Refused(reason)),
        other => Err(SdkError::InvalidConfig(format!("expected Welcome, got {other:?}"))),
    }
}
