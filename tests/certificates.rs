//! Admission by certificate (mutual TLS): only clients with a certificate of the
//! deployment's enrollment authority get in; the others learn why at once.
#![allow(clippy::unwrap_used)] // test code

use std::time::Duration;

use privagg_ca::Authority;
use privagg_client::{PrivateKey, SdkError};
use privagg_e2e::{config, max_error, mean, start, submit, updates};

fn credential(authority: &Authority, name: &str) -> (Vec<u8>, PrivateKey) {
    let issued = authority.issue(name, 1).unwrap();
    (issued.cert, PrivateKey::from_pkcs8_der(issued.key.to_vec()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_clients_certified_by_the_enrollment_authority_are_admitted() {
    let dim = 8;
    let authority = Authority::create("privagg test authority", 1).unwrap();
    let impostor = Authority::create("privagg test authority", 1).unwrap(); // same name, other key
    let mut cfg = config("mtls", dim, 2, 2);
    std::fs::create_dir_all(&cfg.state).unwrap();
    let root = cfg.state.join("client-ca.der");
    std::fs::write(&root, authority.root_der()).unwrap();
    cfg.client_ca = Some(root);
    let running = start(cfg).await;

    let refused = |tweak: Box<dyn FnOnce(&mut privagg_client::ClientOptions) + Send>| {
        submit(&running, vec![0.0; dim], 1.0, move |o| {
            o.connect_deadline = Duration::from_secs(5);
            tweak(o);
        })
    };
    // A client without a certificate (trusting the server, or it would not even try) and
    // one certified by another authority.
    let uncertified = refused(Box::new(|o| {
        (o.cert, o.key, o.client_ca) = (None, None, None);
        o.policy.server = privagg_protocol::AdversaryClass::CuriousServer;
    }));
    let (cert, key) = credential(&impostor, "mallory");
    let foreign = refused(Box::new(move |o| {
        o.cert = Some(cert);
        o.key = Some(key);
        o.client_ca = Some(impostor.root_der().to_vec());
    }));
    for outcome in [uncertified.await.unwrap(), foreign.await.unwrap()] {
        assert!(matches!(outcome, Err(SdkError::Handshake(_))), "{outcome:?}");
    }

    let ups = updates(2, dim, 11);
    let clients: Vec<_> = ups
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let (cert, key) = credential(&authority, &format!("clinic-{i}"));
            let root = authority.root_der().to_vec();
            submit(&running, u.clone(), 1.0, move |o| {
                o.cert = Some(cert);
                o.key = Some(key);
                o.client_ca = Some(root);
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap().unwrap();
    }
    let summary = running.finish().await;
    assert!(max_error(&summary.model, &mean(&ups)) < 1e-6);
}
