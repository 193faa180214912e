//! The server's certificate and QUIC configuration.
//!
//! Unless the operator supplies a certificate, the server generates a self-signed one
//! (rcgen, name `localhost`) on first start and keeps it in its state directory:
//! `cert.der` is public (clients pin it), `key.der` is private (mode 0600). Later starts
//! reuse them, so pinned clients keep working across restarts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use zeroize::Zeroizing;

use crate::error::ServeError;
use crate::storage::{write_atomically, write_private};

/// The server's certificate and its private key, DER-encoded.
pub struct ServerCertificate {
    /// The certificate (what clients pin).
    pub cert: Vec<u8>,
    key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for ServerCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCertificate").field("cert", &self.cert.len()).finish_non_exhaustive()
    }
}

impl ServerCertificate {
    /// Loads `cert.der` and `key.der` from `dir`, or generates and writes them.
    pub fn load_or_generate(dir: &Path) -> Result<Self, ServeError> {
        let (cert_path, key_path) = (dir.join("cert.der"), dir.join("key.der"));
        if cert_path.exists() && key_path.exists() {
            return Self::load(&cert_path, &key_path);
        }
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
        let identity =
            Self { cert: generated.cert.der().to_vec(), key: Zeroizing::new(generated.signing_key.serialize_der()) };
        write_private(&key_path, &identity.key)?;
        write_atomically(&cert_path, &identity.cert)?;
        tracing::info!(path = %cert_path.display(), "generated a self-signed certificate; clients pin this file");
        Ok(identity)
    }

    /// Loads a DER certificate and PKCS#8 key from the given files.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, ServeError> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| ServeError::io(p, e));
        Ok(Self { cert: read(cert)?, key: Zeroizing::new(read(key)?) })
    }

    /// The QUIC server configuration: TLS 1.3, ALPN `privagg/1`, and transport windows
    /// sized so that a connection buffers at most `max_frame` bytes it has not read and
    /// at most 256 KiB it has not had acknowledged. With `client_root`, clients must
    /// present a certificate it issued.
    pub fn server_config(
        &self,
        max_frame: usize,
        idle_timeout: Duration,
        client_root: Option<&[u8]>,
    ) -> Result<quinn::ServerConfig, ServeError> {
        Ok(privagg_service::quic::server_config(&self.cert, &self.key, max_frame, idle_timeout, client_root)?)
    }
}

/// Where the certificate lives in a state directory.
pub fn cert_path(state_dir: &Path) -> PathBuf {
    state_dir.join("cert.der")
}
