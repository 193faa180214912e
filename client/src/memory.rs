//! Where the client keeps what it remembers of a server's rounds
//! ([`RoundMemory`](privagg_service::RoundMemory)): one JSON file per server certificate
//! and client identity in a state directory, written atomically before anything that
//! depends on it is sent. Without a stable identity (no token) there is nothing to come
//! back as (no certificate, no token), and the memory lives as long as the
//! [`Client`](crate::Client).

use std::path::{Path, PathBuf};

use privagg_service::RoundMemory;
use privagg_service::durable::{Access, write_atomically};
use sha2::{Digest, Sha256};

use crate::error::SdkError;

/// The state directory clients use unless told otherwise: `$PRIVAGG_CLIENT_STATE`, else
/// `$XDG_STATE_HOME/privagg/client`, else `$HOME/.local/state/privagg/client`; `None` if
/// none of these is set.
pub fn default_state_dir() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("PRIVAGG_CLIENT_STATE")
        .or_else(|| var("XDG_STATE_HOME").map(|d| d.join("privagg/client")))
        .or_else(|| var("HOME").map(|d| d.join(".local/state/privagg/client")))
}

/// The file that holds one client's memory of one server, if it is kept on disk.
pub(crate) struct MemoryFile {
    path: Option<PathBuf>,
}

impl MemoryFile {
    /// The file for `identity` (the client's certificate or token) at the server whose
    /// certificate is `server_cert`, in `dir`.
    pub fn new(dir: Option<&Path>, server_cert: &[u8], identity: Option<Vec<u8>>) -> Self {
        let path = dir.zip(identity).map(|(dir, identity)| {
            let digest = Sha256::new().chain_update(server_cert).chain_update([0]).chain_update(identity).finalize();
            let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
            dir.join(format!("rounds-{name}.json"))
        });
        Self { path }
    }

    /// What was stored, or an empty memory if nothing was.
    pub fn load(&self) -> Result<RoundMemory, SdkError> {
        let Some(path) = &self.path else { return Ok(RoundMemory::default()) };
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| memory_error(path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RoundMemory::default()),
            Err(e) => Err(memory_error(path, e)),
        }
    }

    /// Stores `memory` durably.
    pub fn store(&self, memory: &RoundMemory) -> Result<(), SdkError> {
        let Some(path) = &self.path else { return Ok(()) };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| memory_error(path, e))?;
        }
        let json = serde_json::to_vec_pretty(memory).map_err(|e| memory_error(path, e))?;
        write_atomically(path, &json, Access::Private).map_err(|e| memory_error(path, e))
    }
}

fn memory_error(path: &Path, e: impl std::error::Error + Send + Sync + 'static) -> SdkError {
    SdkError::Memory { path: path.to_owned(), source: Box::new(e) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memories_are_kept_per_server_and_identity_and_survive_a_restart() {
        let dir = std::env::temp_dir().join(format!("privagg-client-memory-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let id = |s: &str| Some(s.as_bytes().to_vec());
        let file = MemoryFile::new(Some(&dir), b"server A", id("token-1"));
        assert_eq!(file.load().unwrap(), RoundMemory::default());
        let memory: RoundMemory =
            serde_json::from_str(r#"{"sessions":{"00":{"finished":3,"attempts":{"4":1}}}}"#).unwrap();
        file.store(&memory).unwrap();
        assert_eq!(MemoryFile::new(Some(&dir), b"server A", id("token-1")).load().unwrap(), memory);
        for other in [
            MemoryFile::new(Some(&dir), b"server B", id("token-1")),
            MemoryFile::new(Some(&dir), b"server A", id("token-2")),
        ] {
            assert_eq!(other.load().unwrap(), RoundMemory::default());
        }
        // No identity, nothing on disk.
        let ephemeral = MemoryFile::new(Some(&dir), b"server A", None);
        ephemeral.store(&memory).unwrap();
        assert_eq!(ephemeral.load().unwrap(), RoundMemory::default());
        // A damaged file is an error, not a fresh start.
        let damaged = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
        std::fs::write(&damaged, "{").unwrap();
        assert!(matches!(file.load(), Err(SdkError::Memory { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
