//! Bans kept across restarts: `bans.json` in the state directory lists each identity
//! banned (its whole digest, so that it is recognised again), why, and until when (Unix
//! seconds; absent: the rest of the session, which a restart resumes). The server adds a
//! ban as the session imposes it and gives the session those still in force when it
//! starts; passed ones are dropped whenever the file is rewritten.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use privagg_service::{Ban, ClientIdentity, Offence};
use serde::{Deserialize, Serialize};

use crate::error::ServeError;
use crate::record::BanReason;
use crate::storage::write_atomically;

/// The file of bans in the state directory.
pub const BANS_FILE: &str = "bans.json";

/// One ban as kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBan {
    /// The identity's digest (hex, 64 digits).
    pub identity: String,
    /// The offence that banned it.
    pub reason: BanReason,
    /// The round being prepared or run when it was banned.
    pub round: u64,
    /// When it ends (Unix seconds); `None`: with the session.
    pub until_unix: Option<u64>,
}

impl StoredBan {
    /// What is left of it at `now`: `Some(None)` for the rest of the session, `None` if
    /// it has passed.
    pub fn remaining(&self, now: SystemTime) -> Option<Option<Duration>> {
        match self.until_unix {
            None => Some(None),
            Some(until) => {
                let left = (SystemTime::UNIX_EPOCH + Duration::from_secs(until)).duration_since(now).ok()?;
                (!left.is_zero()).then_some(Some(left))
            }
        }
    }

    /// The identity it bans (`None` if the digest is not 32 bytes of hex).
    pub fn client(&self) -> Option<ClientIdentity> {
        let digest: [u8; 32] = hex::decode(&self.identity).ok()?.try_into().ok()?;
        Some(ClientIdentity::from_digest(digest))
    }

    /// The offence, as the session takes it back.
    pub fn offence(&self) -> Offence {
        self.reason.offence()
    }
}

fn path(dir: &Path) -> PathBuf {
    dir.join(BANS_FILE)
}

/// The bans in `dir` still in force at `now` (none if there is no file).
pub fn load(dir: &Path, now: SystemTime) -> Result<Vec<StoredBan>, ServeError> {
    let path = path(dir);
    let bans: Vec<StoredBan> = match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|e| ServeError::Model(format!("{}: {e}", path.display())))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(ServeError::io(&path, e)),
    };
    Ok(bans.into_iter().filter(|b| b.remaining(now).is_some()).collect())
}

/// Adds `ban`, imposed at `now`, to the bans kept in `dir` (dropping those that passed).
pub fn keep(dir: &Path, ban: &Ban, now: SystemTime) -> Result<(), ServeError> {
    let mut bans = load(dir, now)?;
    let identity = hex::encode(ban.identity.digest());
    bans.retain(|b| b.identity != identity);
    let since_epoch = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    bans.push(StoredBan {
        identity,
        reason: BanReason::of(&ban.reason),
        round: ban.round,
        // Rounded up: a ban never ends early because of a restart.
        until_unix: ban.duration.map(|d| (since_epoch + d).as_secs_f64().ceil() as u64),
    });
    let json = serde_json::to_vec_pretty(&bans).map_err(|e| ServeError::Model(e.to_string()))?;
    write_atomically(&path(dir), &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(byte: u8, duration: Option<Duration>) -> Ban {
        Ban {
            identity: ClientIdentity::from_digest([byte; 32]),
            seat: None,
            round: 3,
            offences: 2,
            reason: Offence::StalledUpload,
            duration,
        }
    }

    #[test]
    fn bans_outlive_a_restart_until_they_pass() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(load(dir.path(), t0).unwrap().is_empty());
        keep(dir.path(), &ban(1, Some(Duration::from_secs(60))), t0).unwrap();
        keep(dir.path(), &ban(2, None), t0).unwrap();
        let kept = load(dir.path(), t0 + Duration::from_secs(59)).unwrap();
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].client(), Some(ClientIdentity::from_digest([1; 32])));
        assert_eq!(kept[0].offence(), Offence::StalledUpload);
        assert_eq!(kept[0].remaining(t0 + Duration::from_secs(59)), Some(Some(Duration::from_secs(1))));
        assert_eq!(kept[1].remaining(t0 + Duration::from_secs(59)), Some(None));
        // The timed ban has passed; the session's stays, and a rewrite forgets the other.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(load(dir.path(), later).unwrap().len(), 1);
        keep(dir.path(), &ban(3, None), later).unwrap();
        let raw: Vec<StoredBan> = serde_json::from_slice(&std::fs::read(path(dir.path())).unwrap()).unwrap();
        assert_eq!(raw.len(), 2);
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_an_amnesty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), b"{not json").unwrap();
        assert!(load(dir.path(), SystemTime::now()).is_err());
    }
}
