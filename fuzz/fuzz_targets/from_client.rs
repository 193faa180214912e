//! The server's decoder of client frames (protocol and service messages), with the
//! limits the server uses, and the client's decoder of server frames. Never panics;
//! whatever decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use privagg_protocol::Limits;
use privagg_service::message::{FromClient, FromServer};

fuzz_target!(|data: &[u8]| {
    let server_limits = Limits { max_app_data: 0, ..Limits::default() };
    match FromClient::decode(data, &server_limits) {
        Ok(FromClient::Protocol(m)) => assert_eq!(m.encode(), data),
        Ok(FromClient::Service(m)) => assert_eq!(m.encode(), data),
        Err(_) => {}
    }
    let client_limits = Limits { max_app_data: 1 << 20, ..Limits::default() };
    match FromServer::decode(data, &client_limits) {
        Ok(FromServer::Protocol(m)) => assert_eq!(m.encode(), data),
        Ok(FromServer::Service(m)) => assert_eq!(m.encode(), data),
        Err(_) => {}
    }
});
