//! TLS for the client: TLS 1.3 over QUIC with ALPN `privagg/1`, trusting exactly the
//! server certificate the operator handed out (pinning), with the ring provider.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;

use crate::wire::ALPN;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The pinned certificate is not a usable DER certificate.
    #[error("invalid server certificate: {0}")]
    Certificate(String),
    /// rustls refused the configuration.
    #[error("TLS configuration failed: {0}")]
    Config(#[from] rustls::Error),
    /// quinn refused the TLS configuration.
    #[error("QUIC TLS configuration failed: {0}")]
    Quic(String),
}

/// The transport settings shared by both ends: generous windows (a masked update is
/// megabytes), an idle timeout, and keep-alives so a client waiting for its round keeps
/// its connection.
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

/// A QUIC client configuration that trusts only `server_cert` (DER).
pub fn client_config(server_cert: &[u8], idle_timeout: Duration) -> Result<quinn::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(server_cert.to_vec())).map_err(|e| TlsError::Certificate(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(transport_config(idle_timeout)));
    Ok(config)
}
