//! The server's real entry point: a `ServerSession` fed arbitrary connections, frames,
//! closes and time. Two honest-looking clients are admitted first, so that rounds start
//! and the fuzzer reaches every phase; after that the input decides everything. Any
//! panic is a bug.
//!
//! Input, as a sequence of operations: a byte `op`, then its arguments. `op % 6`:
//! 0 connect, 1 frame (u8 connection, u16 length, bytes), 2 close (u8 connection,
//! transient bit), 3 advance time (u8 seconds), 4 Hello from a connection with a
//! random identity (u8 connection, 16 bytes), 5 Ready (u8 connection).
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use privagg_dp::encoding::{Clipping, EncodingParams};
use privagg_protocol::{Limits, PrgKind, RoundParams};
use privagg_service::message::ClientServiceMessage;
use privagg_service::server::CheckInConfig;
use privagg_service::{Action, Admission, AggregationMode, RoundSettings, ServerSession, SessionConfig};

fn settings(round: u64) -> RoundSettings {
    RoundSettings {
        session: [1; 16],
        round,
        total_rounds: 3,
        mode: AggregationMode::Weighted { value_range: 4.0, max_weight: 10.0 },
        encoding: EncodingParams::without_dp(3, 1e-3, 32, Clipping::None, None).expect("valid"),
        model: vec![0.0; 2],
        train_timeout_secs: 0,
    }
}

/// Carries out the session's actions as a shell would.
fn drain(session: &mut ServerSession, now: Instant) {
    while let Some(action) = session.poll_action() {
        match action {
            Action::StartRound { round, clients, .. } => {
                let s = settings(round);
                let params = RoundParams {
                    round,
                    num_clients: clients,
                    neighbours: clients - 1,
                    threshold: 2,
                    min_clients: 2,
                    dim: 3,
                    bits: 32,
                    prg: PrgKind::default(),
                };
                let app_data: Arc<[u8]> = Arc::from(s.encode().expect("settings encode").into_boxed_slice());
                session.start_round(now, params, app_data).expect("the session seated this cohort");
            }
            Action::Finalize(mut job) => {
                job.run();
                session.handle_finalized(now, job);
            }
            Action::ChargeRelease { .. } => session.handle_release_charged(now),
            Action::Commit(_) => session.handle_committed(now),
            _ => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let mut session = ServerSession::new(SessionConfig {
        clients: 3,
        min_clients: 2,
        rounds: 3,
        completed_rounds: 0,
        phase_timeout: Duration::from_secs(10),
        train_timeout: Duration::from_secs(10),
        lobby_timeout: Duration::from_secs(20),
        hello_timeout: Duration::from_secs(5),
        upload_slots: 1,
        upload_timeout: Some(Duration::from_secs(3)),
        ban_after: 2,
        ban_duration: None,
        max_round_attempts: 2,
        stop_after_failed_round: true,
        retry_backoff: Duration::from_secs(1),
        admission: Admission::open(),
        limits: Limits { max_app_data: 0, ..Limits::default() },
        // An odd first byte runs random check-ins (every coin comes up, as replies are
        // the fuzzer's to choose).
        check_ins: data
            .first()
            .is_some_and(|b| b & 1 == 1)
            .then_some(CheckInConfig { rate_ppb: 1_000_000_000, max_cohort: 2 }),
    });
    for conn in 1..=2u64 {
        session.handle_connected(now, conn, None);
        let hello = ClientServiceMessage::Hello { token: String::new(), identity: [conn as u8; 16], resume: None };
        session.handle_frame(now, conn, &hello.encode());
        session.handle_frame(
            now,
            conn,
            &ClientServiceMessage::Ready { commitment: [0; 32], log: Default::default() }.encode(),
        );
    }
    drain(&mut session, now);
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let conn = u64::from(rest.first().copied().unwrap_or(0) % 8);
        match op % 6 {
            0 => session.handle_connected(now, conn, None),
            1 => {
                let len = rest.get(1..3).map_or(0, |b| usize::from(u16::from_le_bytes([b[0], b[1]])));
                let body = rest.get(3..).unwrap_or_default();
                let frame = &body[..len.min(body.len())];
                session.handle_frame(now, conn, frame);
                rest = &body[frame.len()..];
                drain(&mut session, now);
                continue;
            }
            2 => session.handle_closed(now, conn, rest.get(1).is_some_and(|b| b & 1 == 1)),
            3 => {
                now += Duration::from_secs(u64::from(rest.first().copied().unwrap_or(1)));
                if session.poll_timeout().is_some_and(|t| t <= now) {
                    session.handle_timeout(now);
                }
            }
            5 if rest.get(1).is_some_and(|b| b & 1 == 1) => {
                let round = u64::from(rest.get(2).copied().unwrap_or(1) % 4);
                let attempt = u32::from(rest.get(4).copied().unwrap_or(1) % 4);
                let join = rest.get(3).is_some_and(|b| b & 1 == 1);
                let reply = ClientServiceMessage::CheckInReply { round, attempt, join };
                session.handle_frame(now, conn, &reply.encode());
            }
            5 => session.handle_frame(
                now,
                conn,
                &ClientServiceMessage::Ready { commitment: [0; 32], log: Default::default() }.encode(),
            ),
            _ => {
                let identity: [u8; 16] = rest.get(1..17).and_then(|b| b.try_into().ok()).unwrap_or([0; 16]);
                let hello = ClientServiceMessage::Hello { token: String::new(), identity, resume: None };
                session.handle_frame(now, conn, &hello.encode());
            }
        }
        rest = rest.get(1..).unwrap_or_default();
        drain(&mut session, now);
    }
});
