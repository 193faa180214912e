//! QUIC for both shells (feature `quic`): the ALPN, the transport and TLS
//! configurations, frame I/O on a quinn stream, the graceful close and the connection
//! retry loop. The server and the client SDK use these, and so does the plain-FedAvg
//! benchmark, so all three run the same transport.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::frame::{self, FRAME_HEADER_LEN, Frame, FrameError};

/// The ALPN protocol id; it versions the whole wire format.
pub const ALPN: &[u8] = b"privagg/1";

/// How long a graceful close waits for the peer to acknowledge what was sent.
pub const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Why a TLS or QUIC configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// rustls refused a certificate, key or setting.
    #[error("TLS configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
    /// quinn refused the TLS configuration.
    #[error("QUIC TLS configuration failed: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// The client-certificate verifier could not be built from the root.
    #[error("client certificate verifier: {0}")]
    ClientVerifier(String),
}

/// The certificate (DER) the peer of `connection` presented in the handshake, if any.
pub fn peer_certificate(connection: &quinn::Connection) -> Option<Vec<u8>> {
    let identity = connection.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    chain.first().map(|c| c.to_vec())
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The frame is larger than the reader accepts now (or than a u32 can say).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The stream ended in the middle of a frame.
    #[error("the stream ended inside a frame")]
    Truncated,
    /// Reading failed (connection lost, reset, …).
    #[error("read failed: {0}")]
    Read(#[from] quinn::ReadError),
    /// Writing failed.
    #[error("write failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// A frame began but did not complete within its deadline.
    #[error("the rest of a frame of {len} bytes did not arrive in time")]
    TimedOut {
        /// The frame's announced length.
        len: usize,
    },
}

/// The connection receive window of a connection the server has not admitted yet: room
/// for a `Hello` and little more, so that a connection that never says hello costs the
/// server no more than this in buffered data.
pub const UNADMITTED_RECEIVE_WINDOW: u32 = 64 << 10;

/// The connection receive window of an admitted client that may upload frames of
/// `max_frame` bytes: one frame and some control traffic.
pub fn admitted_receive_window(max_frame: usize) -> u32 {
    u32::try_from(FRAME_HEADER_LEN + max_frame + (64 << 10)).unwrap_or(u32::MAX)
}

/// The transport settings shared by both ends: generous windows (a masked update is
/// megabytes), an idle timeout, and keep-alives at a quarter of it so that a client
/// waiting for its round keeps its connection.
pub fn transport_config(idle_timeout: Duration) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(quinn::VarInt::from_u32(16 << 20));
    t.receive_window(quinn::VarInt::from_u32(32 << 20));
    t.send_window(32 << 20);
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(1));
    t.keep_alive_interval(Some(idle_timeout / 4));
    if let Ok(timeout) = quinn::IdleTimeout::try_from(idle_timeout) {
        t.max_idle_timeout(Some(timeout));
    }
    t
}

/// A client's certificate (DER) and its PKCS#8 private key (DER), for mutual TLS.
#[derive(Clone, Copy)]
pub struct ClientCredential<'a> {
    /// The certificate, issued by the deployment's enrollment authority.
    pub cert: &'a [u8],
    /// Its private key.
    pub key: &'a [u8],
}

/// A client configuration (TLS 1.3, ALPN `privagg/1`, ring) that trusts exactly
/// `server_cert` (DER): the operator hands the certificate out and clients pin it. With
/// `credential`, the client proves its identity (mutual TLS).
pub fn client_config(
    server_cert: &[u8],
    credential: Option<ClientCredential<'_>>,
    idle_timeout: Duration,
) -> Result<quinn::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(server_cert.to_vec()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots);
    let mut tls = match credential {
        Some(c) => builder.with_client_auth_cert(
            vec![CertificateDer::from(c.cert.to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.key.to_vec())),
        )?,
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(transport_config(idle_timeout)));
    Ok(config)
}

/// A server configuration (TLS 1.3, ALPN `privagg/1`, no 0-RTT) for `cert` and its
/// PKCS#8 `key` (DER), with transport windows sized so that a connection buffers at
/// most [`UNADMITTED_RECEIVE_WINDOW`] bytes it has not read until the server admits it
/// and raises its window to one frame of `max_frame` bytes
/// ([`admitted_receive_window`], `quinn::Connection::set_receive_window`), and at most
/// 256 KiB it has not had acknowledged. With `client_root` (the enrollment authority's certificate, DER),
/// only clients with a certificate it issued complete the handshake (mutual TLS).
pub fn server_config(
    cert: &[u8],
    key: &[u8],
    max_frame: usize,
    idle_timeout: Duration,
    client_root: Option<&[u8]>,
) -> Result<quinn::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_vec()));
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match client_root {
        Some(root) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(CertificateDer::from(root.to_vec()))?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::ClientVerifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut tls = builder.with_single_cert(vec![CertificateDer::from(cert.to_vec())], key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    let mut transport = transport_config(idle_timeout);
    let window = admitted_receive_window(max_frame);
    transport.stream_receive_window(quinn::VarInt::from_u32(window));
    // The connection-level window bounds what all its streams buffer: small until the
    // client is admitted.
    transport.receive_window(quinn::VarInt::from_u32(UNADMITTED_RECEIVE_WINDOW.min(window)));
    transport.send_window(256 << 10);
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Writes one frame; a shared tail goes to quinn by reference, not copied.
pub async fn write_frame(send: &mut quinn::SendStream, frame: &Frame) -> Result<(), WireError> {
    let mut parts = frame.wire_parts()?;
    send.write_all_chunks(&mut parts).await?;
    Ok(())
}

/// Reads one frame, whose length must be within the `limit` asked for once the header
/// has arrived (so a limit raised while the reader waited applies). `None` when the
/// stream ended cleanly between frames. Memory grows with the bytes that arrive, not
/// with the length announced. Not cancel-safe: read from one task.
pub async fn read_frame(
    recv: &mut quinn::RecvStream,
    limit: impl FnOnce() -> usize,
) -> Result<Option<Vec<u8>>, WireError> {
    read_frame_within(recv, limit, |_| None).await
}

/// [`read_frame`], with a deadline for the rest of a frame once its header has arrived:
/// `deadline(len)` for a frame of `len` bytes (`None`: no deadline). Waiting for a header
/// has no deadline (a client may be idle between frames; the idle timeout and the
/// session's phase deadlines bound that).
pub async fn read_frame_within(
    recv: &mut quinn::RecvStream,
    limit: impl FnOnce() -> usize,
    deadline: impl FnOnce(usize) -> Option<Duration>,
) -> Result<Option<Vec<u8>>, WireError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(quinn::ReadExactError::FinishedEarly(_)) => return Err(WireError::Truncated),
        Err(quinn::ReadExactError::ReadError(e)) => return Err(e.into()),
    }
    let len = frame::message_len(header, limit())?;
    let body = async {
        let mut message = Vec::with_capacity(len.min(64 << 10));
        while message.len() < len {
            match recv.read_chunk(len - message.len(), true).await? {
                Some(chunk) => message.extend_from_slice(&chunk.bytes),
                None => return Err(WireError::Truncated),
            }
        }
        Ok(Some(message))
    };
    match deadline(len) {
        Some(d) => tokio::time::timeout(d, body).await.map_err(|_| WireError::TimedOut { len })?,
        None => body.await,
    }
}

/// Closes politely: finishes the stream, waits (at most [`CLOSE_GRACE`]) until the
/// peer has everything, then closes the connection with `code` and `reason`. A bare
/// close can lose its one CONNECTION_CLOSE packet under load, and the peer would then
/// learn of it only at its idle timeout.
pub async fn close_gracefully(send: &mut quinn::SendStream, connection: &quinn::Connection, code: u32, reason: &str) {
    if send.finish().is_ok() {
        let _ = tokio::time::timeout(CLOSE_GRACE, send.stopped()).await;
    }
    connection.close(quinn::VarInt::from_u32(code), reason.as_bytes());
}

/// How long the server waits, after its last words are acknowledged, for the client to
/// read them and close the connection itself.
pub const PEER_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The server's goodbye: finishes the stream, waits until the peer has everything and
/// then (at most [`PEER_CLOSE_GRACE`]) until it closes the connection after reading it,
/// and only then closes. A peer that receives CONNECTION_CLOSE may drop stream data it
/// has not read yet, such as a `SessionEnd` acknowledged but still in its buffers.
pub async fn close_after_peer(send: &mut quinn::SendStream, connection: &quinn::Connection, code: u32, reason: &str) {
    if send.finish().is_ok() {
        let _ = tokio::time::timeout(CLOSE_GRACE, send.stopped()).await;
        let _ = tokio::time::timeout(PEER_CLOSE_GRACE, connection.closed()).await;
    }
    connection.close(quinn::VarInt::from_u32(code), reason.as_bytes());
}

/// Runs `attempt` until it succeeds, fails with an error `retryable` refuses, or
/// `patience` has passed; waits 100 ms after the first failure, doubling up to 2 s.
pub async fn retry<T, E, Fut>(
    patience: Duration,
    mut attempt: impl FnMut() -> Fut,
    retryable: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let deadline = tokio::time::Instant::now() + patience;
    let mut backoff = Duration::from_millis(100);
    loop {
        match attempt().await {
            Err(e) if retryable(&e) && tokio::time::Instant::now() + backoff < deadline => {
                tracing::debug!(error = %e, "retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retry_backs_off_until_its_patience_runs_out() {
        let attempts = Cell::new(0);
        let start = tokio::time::Instant::now();
        let result: Result<(), String> = retry(
            Duration::from_secs(3),
            || {
                attempts.set(attempts.get() + 1);
                async { Err("unreachable".to_owned()) }
            },
            |_| true,
        )
        .await;
        assert!(result.is_err());
        // Waits of 0.1, 0.2, 0.4 and 0.8 s; the next (1.6 s) would pass the deadline.
        assert_eq!(attempts.get(), 5);
        assert_eq!(start.elapsed(), Duration::from_millis(1500));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_stops_at_a_final_error_or_a_success() {
        let attempts = Cell::new(0);
        let refused: Result<(), String> = retry(
            Duration::from_secs(60),
            || {
                attempts.set(attempts.get() + 1);
                async { Err("refused".to_owned()) }
            },
            |e| e != "refused",
        )
        .await;
        assert_eq!((refused, attempts.get()), (Err("refused".to_owned()), 1));
        let attempts = Cell::new(0);
        let third: Result<u32, String> = retry(
            Duration::from_secs(60),
            || {
                attempts.set(attempts.get() + 1);
                let n = attempts.get();
                async move { if n < 3 { Err("unreachable".to_owned()) } else { Ok(n) } }
            },
            |_| true,
        )
        .await;
        assert_eq!(third, Ok(3));
    }
}
