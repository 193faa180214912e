//! The driver: one task that owns the [`ServerSession`] and the [`Training`], feeds the
//! session what the connection tasks and the clock report, and carries out its actions.
//! It holds no protocol logic; nothing else touches the session, so it needs no lock.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use privagg_protocol::{Limits, ServerMessage};
use privagg_service::frame::Frame;
use privagg_service::message::{FromServer, ServerServiceMessage};
use privagg_service::{Action, ConnId, ServerSession, SessionEnd, SessionEvent};
use tokio::sync::{mpsc, watch};

use crate::connection::{ConnEvent, ConnHandle, Outbound};
use crate::error::ServeError;
use crate::record::RoundRecord;
use crate::training::{SessionSummary, Training};

/// What the server reports while it runs (for progress displays and tests).
#[derive(Clone, Debug)]
pub enum ServerEvent {
    /// Progress of the session: a round started, changed phase or aborted.
    Session(SessionEvent),
    /// A round completed and was committed.
    RoundCompleted(Box<RoundRecord>),
}

pub(crate) struct Driver {
    pub session: ServerSession,
    pub training: Training,
    pub conns: HashMap<ConnId, ConnHandle>,
    pub events: mpsc::Receiver<ConnEvent>,
    pub observer: Option<mpsc::UnboundedSender<ServerEvent>>,
    pub shutdown: watch::Receiver<bool>,
    pub deviation: Option<Deviation>,
}

/// Rewrites each protocol message on its way to a connection: a server that deviates
/// from the protocol, for tests that play one against real clients. Clients assume any
/// server may do this; it gives the server no power it does not have anyway.
pub type Deviation = Box<dyn FnMut(ConnId, &mut ServerMessage) + Send>;

impl Driver {
    /// Runs the session to its end; on an error of its own, tells every client why.
    pub async fn run(mut self) -> Result<SessionSummary, ServeError> {
        let result = self.drive().await;
        if let Err(e) = &result {
            self.session.close(e.end_reason(), &e.to_string());
            // A closed session only says goodbye; errors here change nothing.
            let _ = self.perform_actions().await;
        }
        let completed_rounds = self.session.completed_rounds();
        result.map(|()| self.training.into_summary(completed_rounds))
    }

    async fn drive(&mut self) -> Result<(), ServeError> {
        loop {
            match self.perform_actions().await? {
                Some(SessionEnd::Complete { .. }) => return Ok(()),
                Some(SessionEnd::RoundFailed { round, attempts, reason }) => {
                    return Err(ServeError::RoundFailed { round, attempts, reason: reason.to_string() });
                }
                None => {}
            }
            let deadline = self.session.poll_timeout().map(tokio::time::Instant::from_std);
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(event) => self.handle(event),
                    None => return Err(self.shut_down()),
                },
                () = sleep_until(deadline) => self.session.handle_timeout(Instant::now()),
                _ = self.shutdown.changed() => return Err(self.shut_down()),
            }
        }
    }

    fn shut_down(&self) -> ServeError {
        ServeError::Shutdown { completed_rounds: self.session.completed_rounds() }
    }

    fn handle(&mut self, event: ConnEvent) {
        let now = Instant::now();
        match event {
            ConnEvent::Connected { conn, handle, certificate } => {
                self.conns.insert(conn, handle);
                self.session.handle_connected(now, conn, certificate.map(Arc::from));
            }
            ConnEvent::Frame { conn, frame } => self.session.handle_frame(now, conn, &frame),
            ConnEvent::Oversized { conn, len, limit } => self.session.handle_oversized(now, conn, len, limit),
            ConnEvent::Stalled { conn, stall } => self.session.handle_stalled(now, conn, stall),
            ConnEvent::Closed { conn, transient } => {
                self.conns.remove(&conn);
                self.session.handle_closed(now, conn, transient);
            }
        }
    }

    /// Carries out the session's actions; returns how it ended, if it did.
    async fn perform_actions(&mut self) -> Result<Option<SessionEnd>, ServeError> {
        while let Some(action) = self.session.poll_action() {
            match action {
                Action::Send { conn, frame } => {
                    let frame = self.deviate(conn, frame);
                    self.to_conn(conn, Outbound::Frame(frame));
                }
                Action::Close { conn, reason } => self.to_conn(conn, Outbound::Close(reason)),
                Action::Admitted { conn } => self.to_conn(conn, Outbound::Admitted),
                Action::SetFrameLimit { conn, limit } => {
                    if let Some(handle) = self.conns.get(&conn) {
                        handle.frame_limit.store(limit, Ordering::Release);
                        // Room for one frame of the limit: an upload only while granted.
                        let window = privagg_service::quic::admitted_receive_window(limit);
                        handle.connection.set_receive_window(quinn::VarInt::from_u32(window));
                    }
                }
                Action::StartRound { round, clients, .. } => {
                    let (params, app_data) = self.training.plan(round, clients)?;
                    self.session.start_round(Instant::now(), params, app_data)?;
                }
                Action::ChargeRelease { round, attempt, inputs, instance } => {
                    self.training.charge_release(round, attempt, inputs, instance)?;
                    self.session.handle_release_charged(Instant::now());
                }
                Action::Finalize(mut job) => {
                    // Expanding the masks of dropped clients is CPU-heavy: off the runtime.
                    let job = tokio::task::spawn_blocking(move || {
                        job.run();
                        job
                    })
                    .await
                    .map_err(|e| ServeError::Model(format!("unmasking task failed: {e}")))?;
                    self.session.handle_finalized(Instant::now(), job);
                }
                Action::SendModel { round, conns } => {
                    let model = ServerServiceMessage::Model { round, values: self.training.model().to_vec() };
                    let frame = Frame::new(model.encode());
                    for conn in conns {
                        self.to_conn(conn, Outbound::Frame(frame.clone()));
                    }
                }
                Action::Commit(commit) => {
                    let record = self.training.commit(&commit)?;
                    // The next round's `Config`s prove the log with this round in it.
                    self.session.set_log(self.training.log_state());
                    self.notify(ServerEvent::RoundCompleted(Box::new(record)));
                    self.session.handle_committed(Instant::now());
                }
                Action::Event(event) => {
                    log_progress(&event);
                    match &event {
                        SessionEvent::RoundAborted { .. } => self.training.note_seated_abort()?,
                        SessionEvent::Banned(ban) => self.training.keep_ban(ban)?,
                        _ => {}
                    }
                    self.notify(ServerEvent::Session(event));
                }
                Action::Finished(end) => return Ok(Some(end)),
            }
        }
        Ok(None)
    }

    /// The frame as the deviation rewrites it, if there is one and the frame is a
    /// protocol message.
    fn deviate(&mut self, conn: ConnId, frame: Frame) -> Frame {
        let Some(deviation) = &mut self.deviation else { return frame };
        match FromServer::decode(&frame.to_vec(), &Limits { max_app_data: u64::MAX, ..Limits::default() }) {
            Ok(FromServer::Protocol(mut message)) => {
                deviation(conn, &mut message);
                Frame::new(message.encode())
            }
            _ => frame,
        }
    }

    fn to_conn(&self, conn: ConnId, out: Outbound) {
        // A closed connection reports itself with its own event.
        if let Some(handle) = self.conns.get(&conn) {
            let _ = handle.outbox.send(out);
        }
    }

    fn notify(&self, event: ServerEvent) {
        if let Some(observer) = &self.observer {
            let _ = observer.send(event);
        }
    }
}

/// Logs where the round stands, so that an operator (and the crash tests, which kill
/// the server in a chosen phase) can tell from the log which phase a round is in. Only
/// round numbers, phases and counts: nothing about any input.
fn log_progress(event: &SessionEvent) {
    // The session logs "round started" (the first phase, AdvertiseKeys) itself.
    if let SessionEvent::PhaseChanged { round, phase } = event {
        tracing::info!(round, phase = phase.as_str(), "round phase");
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
