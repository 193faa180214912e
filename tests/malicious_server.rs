//! A malicious aggregation server over QUIC, played against real SDK clients with
//! certificates from the enrollment authority: the server runs its real session and
//! rewrites protocol messages on their way out. Each attack ends in the client's typed
//! refusal before it reveals anything the attack is after.
#![allow(clippy::unwrap_used)] // test code

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use privagg_client::{RoundError, SdkError};
use privagg_crypto::SecretKey;
use privagg_e2e::{Running, config, start_deviating, submit, updates};
use privagg_protocol::{AdvertisedKeys, ClientError, ClientId, ServerMessage};
use privagg_server::Deviation;
use privagg_service::ConnId;
use rand::SeedableRng;

/// The protocol error a client's round ended with, if it ended with one.
fn protocol_error(result: &Result<privagg_client::RoundReport, SdkError>) -> Option<&ClientError> {
    match result {
        Err(SdkError::Round(RoundError::Protocol(e))) => Some(e),
        _ => None,
    }
}

/// Which seat each connection holds, and the round's threshold, from the `Config`s sent.
#[derive(Default)]
struct Seats {
    seats: HashMap<ConnId, ClientId>,
    threshold: usize,
}

impl Seats {
    fn learn(&mut self, conn: ConnId, message: &ServerMessage) -> Option<ClientId> {
        if let ServerMessage::Config(config) = message {
            self.seats.insert(conn, config.client_id);
            self.threshold = config.params.threshold as usize;
        }
        self.seats.get(&conn).copied()
    }
}

async fn run_clients(running: &Running, n: usize) -> Vec<Result<privagg_client::RoundReport, SdkError>> {
    let tasks: Vec<_> = updates(n, 8, 5).into_iter().map(|u| submit(running, u, 1.0, |_| {})).collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_the_server_substitutes_for_a_neighbours_are_refused_and_the_round_goes_on() {
    // The first client to get its key list sees the server's keys under a neighbour's
    // name (the neighbour's certificate and signature kept; the proofs of possession the
    // server attaches are for another round and seat, the neighbour's signature covers
    // other keys: either refuses them).
    let mut seats = Seats::default();
    let mut victim = None;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let (channel, mask) = (SecretKey::generate(&mut rng), SecretKey::generate(&mut rng));
    let server_keys = AdvertisedKeys::prove(&channel, &mask, &[0; 32], ClientId::new(1).unwrap(), &mut rng);
    let deviation: Deviation = Box::new(move |conn, message| {
        let own = seats.learn(conn, message);
        if let ServerMessage::KeyList(list) = message
            && victim.is_none_or(|v| v == conn)
        {
            victim = Some(conn);
            let entry = list.entries.iter_mut().find(|e| Some(e.id) != own).unwrap();
            std::sync::Arc::make_mut(entry).keys = server_keys;
        }
    });
    let mut running = start_deviating(config("substituted-keys", 8, 6, 5), Some(deviation)).await;
    let results = run_clients(&running, 6).await;
    let refused: Vec<_> = results.iter().filter_map(protocol_error).collect();
    assert!(matches!(refused.as_slice(), [ClientError::UnprovenKeys(_)]), "{results:?}");
    // The victim left before sharing anything; the other five finished without it.
    let record = running.next_record().await;
    assert_eq!(record.included.len(), 5);
    assert_eq!(results.iter().filter(|r| r.as_ref().is_ok_and(|r| r.inputs == 5)).count(), 5, "{results:?}");
    running.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_view_of_who_dropped_is_refused_by_every_holder_it_is_told_to() {
    // Ten clients (k = 6, t = 4). The server tells t holders of client 1 that it dropped
    // (asking for their shares of its mask key), while client 1 and its other holders
    // hear that it survived (and reveal shares of its self-mask secret). Each holder
    // signed the true survivor set, so each that hears the lie refuses.
    let lied_to = Arc::new(Mutex::new(Vec::new()));
    let mut seats = Seats::default();
    let (target, record) = (ClientId::new(1).unwrap(), lied_to.clone());
    let deviation: Deviation = Box::new(move |conn, message| {
        let seat = seats.learn(conn, message);
        if let ServerMessage::UnmaskRequest(request) = message
            && seat != Some(target)
            && request.survivors.contains(&target)
        {
            let mut lied_to = record.lock().unwrap();
            if lied_to.len() < seats.threshold {
                lied_to.push(conn);
                request.survivors.retain(|&c| c != target);
                request.dropped.push(target);
                request.dropped.sort_unstable();
            }
        }
    });
    let mut c = config("split-view", 8, 10, 8);
    c.neighbors = Some(6);
    c.max_round_attempts = 1;
    c.stop_after_failed_round = true;
    let running = start_deviating(c, Some(deviation)).await;
    let results = run_clients(&running, 10).await;
    let inconsistent =
        results.iter().filter(|r| matches!(protocol_error(r), Some(ClientError::InconsistentUnmaskRequest(_)))).count();
    assert_eq!(lied_to.lock().unwrap().len(), 4);
    assert_eq!(inconsistent, 4, "{results:?}");
    // Without their shares the server cannot even finish the honest round.
    assert!(results.iter().all(|r| r.is_err()), "{results:?}");
    running.shutdown.shutdown();
}
