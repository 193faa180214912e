//! The state directory: certificate, global model, privacy ledger and one record per
//! completed round, written so that a crash never leaves a half-applied round nor an
//! uncharged release.
//!
//! Before the survivors of an attempt are asked for their unmasking shares, the server
//! rewrites `privacy-ledger.json` with that release appended (DP on): from then on it is
//! charged, whatever happens to the round. With or without DP it also appends the
//! attempt's instance (its SecAgg session id) to `unmasked.json`, which the round's record
//! and log leaf list, so that every client that revealed unmasking shares finds its
//! attempt logged — across a crash too. After round r the server writes
//! `model-<r>.npy` (float32, 1-D, NumPy format), the momentum buffer if server momentum
//! is on (`momentum-<r>.npy`), and then `round-<r>.json`. Every file is written to a
//! temporary name, flushed, and renamed into place, and the directory is synced.
//! `round-<r>.json` is the commit mark: on restart the server removes model and
//! momentum files without a record (a crash between finalize and commit), and resumes
//! after the highest r whose record and model both exist, so an interrupted round is
//! redone from the previous model — never applied twice, and charged for every release.

use std::path::{Path, PathBuf};

use ndarray::Array1;
use ndarray_npy::{ReadNpyExt, WriteNpyExt};
use privagg_service::durable::{self, Access};

use privagg_dp::ledger::PrivacyLedger;

use crate::error::ServeError;
use crate::record::RoundRecord;

/// The privacy ledger's file in the state directory.
pub const LEDGER_FILE: &str = "privacy-ledger.json";
/// The attempts asked to unmask since the last commit (round, instance), in the state
/// directory.
pub const UNMASKED_FILE: &str = "unmasked.json";

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename, directory fsync).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ServeError> {
    durable::write_atomically(path, bytes, Access::Shared).map_err(|e| ServeError::io(path, e))
}

/// Like [`write_atomically`], for secrets: the file is created readable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ServeError> {
    durable::write_atomically(path, bytes, Access::Private).map_err(|e| ServeError::io(path, e))
}

/// A float32 vector as `.npy` bytes.
pub fn npy_bytes(values: &[f32]) -> Result<Vec<u8>, ServeError> {
    let mut out = Vec::with_capacity(128 + 4 * values.len());
    Array1::from(values.to_vec())
        .write_npy(&mut out)
        .map_err(|e| ServeError::Model(format!("cannot encode the model: {e}")))?;
    Ok(out)
}

fn parse_session(hex: &str) -> Option<[u8; 16]> {
    let mut session = [0u8; 16];
    if hex.len() != 32 || !hex.is_ascii() {
        return None;
    }
    for (byte, pair) in session.iter_mut().zip(hex.as_bytes().chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(session)
}

/// Reads a 1-D float32 or float64 `.npy` file as f32. The error says what is wrong: not
/// a .npy file, the wrong number of dimensions, or the wrong element type.
pub fn read_vector(path: &Path) -> Result<Vec<f32>, ServeError> {
    use ndarray_npy::ReadNpyError;
    let bytes = std::fs::read(path).map_err(|e| ServeError::io(path, e))?;
    let as_f32 = match Array1::<f32>::read_npy(bytes.as_slice()) {
        Ok(a) => return Ok(a.to_vec()),
        Err(e) => e,
    };
    let as_f64 = match Array1::<f64>::read_npy(bytes.as_slice()) {
        Ok(a) => return Ok(a.iter().map(|&v| v as f32).collect()),
        Err(e) => e,
    };
    let problem = match (&as_f32, &as_f64) {
        (ReadNpyError::WrongNdim(_, ndim), _) | (_, ReadNpyError::WrongNdim(_, ndim)) => {
            format!("has {ndim} dimensions; a model or update is a 1-D array (flatten it first)")
        }
        (ReadNpyError::WrongDescriptor(dtype), ReadNpyError::WrongDescriptor(_)) => {
            format!("holds elements of type {dtype}; expected float32 ('<f4') or float64 ('<f8')")
        }
        _ => format!("is not a 1-D float32/float64 .npy file ({as_f64})"),
    };
    Err(ServeError::Model(format!("{} {problem}", path.display())))
}

/// What the state directory says about progress.
pub struct Checkpoint {
    /// The last completed round (0 if none).
    pub round: u64,
    /// The model after it.
    pub model: Vec<f32>,
    /// The server-momentum buffer after it, if momentum is on.
    pub momentum: Option<Vec<f32>>,
    /// Its record (None for round 0).
    pub record: Option<RoundRecord>,
}

/// An exclusive hold on a state directory (a lock on `DIR/lock`), for as long as it
/// lives: one server per directory.
#[derive(Debug)]
pub struct StateLock(#[allow(dead_code)] std::fs::File);

/// What resuming needs to keep: the settings that shape the model and its privacy. A
/// session resumed with others is refused unless forced (`force_resume`), and then the
/// change is recorded in `plan-changes.json`.
pub const PLAN_FILE: &str = "plan.json";

/// The state directory of one session.
#[derive(Clone, Debug)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Opens (creating if needed) the state directory.
    pub fn open(dir: &Path) -> Result<Self, ServeError> {
        std::fs::create_dir_all(dir).map_err(|e| ServeError::io(dir, e))?;
        Ok(Self { dir: dir.to_owned() })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Takes the directory for this server: refuses one another server holds, and one
    /// where files cannot be written (checked now, not after a round).
    pub fn lock(&self) -> Result<StateLock, ServeError> {
        let path = self.dir.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ServeError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(ServeError::Config(format!(
                    "another privagg server is using the state directory {}",
                    self.dir.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(ServeError::io(&path, e)),
        }
        let probe = self.dir.join(".write-probe");
        write_atomically(&probe, b"")?;
        std::fs::remove_file(&probe).map_err(|e| ServeError::io(&probe, e))?;
        Ok(StateLock(file))
    }

    /// Checks `plan` (what shapes the model and its privacy, as JSON) against the one
    /// the session started with, saving it the first time. A different plan is refused
    /// after rounds were committed, unless `force`: then it replaces the old one and the
    /// change is appended to `plan-changes.json`.
    pub fn check_plan(&self, plan: &serde_json::Value, completed: u64, force: bool) -> Result<(), ServeError> {
        let path = self.dir.join(PLAN_FILE);
        let saved: Option<serde_json::Value> = match std::fs::read(&path) {
            Ok(bytes) => Some(
                serde_json::from_slice(&bytes).map_err(|e| ServeError::Model(format!("{}: {e}", path.display())))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(ServeError::io(&path, e)),
        };
        let changed = match &saved {
            Some(saved) if completed > 0 && saved != plan => changed_keys(saved, plan),
            Some(_) | None => Vec::new(),
        };
        if !changed.is_empty() {
            if !force {
                return Err(ServeError::Config(format!(
                    "{} rounds were committed with other settings ({} changed; see {}); resume with the same settings, or pass --force-resume to record the change and go on",
                    completed,
                    changed.join(", "),
                    path.display()
                )));
            }
            let log_path = self.dir.join("plan-changes.json");
            let mut changes: Vec<serde_json::Value> = match std::fs::read(&log_path) {
                Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            changes.push(
                serde_json::json!({ "after_round": completed, "changed": changed, "before": saved, "after": plan }),
            );
            let json = serde_json::to_vec_pretty(&changes).map_err(|e| ServeError::Model(e.to_string()))?;
            write_atomically(&log_path, &json)?;
            tracing::warn!(?changed, "resuming with changed settings (--force-resume); recorded in plan-changes.json");
        }
        if saved.as_ref() != Some(plan) {
            let json = serde_json::to_vec_pretty(plan).map_err(|e| ServeError::Model(e.to_string()))?;
            write_atomically(&path, &json)?;
        }
        Ok(())
    }

    fn model_path(&self, round: u64) -> PathBuf {
        self.dir.join(format!("model-{round}.npy"))
    }

    fn momentum_path(&self, round: u64) -> PathBuf {
        self.dir.join(format!("momentum-{round}.npy"))
    }

    fn record_path(&self, round: u64) -> PathBuf {
        self.dir.join(format!("round-{round}.json"))
    }

    fn ledger_path(&self) -> PathBuf {
        self.dir.join(LEDGER_FILE)
    }

    /// The privacy ledger: every release charged so far (empty if none was).
    pub fn load_ledger(&self) -> Result<PrivacyLedger, ServeError> {
        let path = self.ledger_path();
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| ServeError::Model(format!("{}: {e}", path.display())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PrivacyLedger::new()),
            Err(e) => Err(ServeError::io(&path, e)),
        }
    }

    /// The attempts asked to unmask and not yet committed, as `(round, instance hex)`,
    /// in order (none if the file is absent).
    pub fn load_unmasked(&self) -> Result<Vec<(u64, String)>, ServeError> {
        let path = self.dir.join(UNMASKED_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| ServeError::Model(format!("{}: {e}", path.display())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(ServeError::io(&path, e)),
        }
    }

    /// Replaces the list of attempts asked to unmask atomically.
    pub fn save_unmasked(&self, unmasked: &[(u64, String)]) -> Result<(), ServeError> {
        let json = serde_json::to_vec(unmasked).map_err(|e| ServeError::Model(e.to_string()))?;
        write_atomically(&self.dir.join(UNMASKED_FILE), &json)
    }

    /// Replaces the privacy ledger atomically.
    pub fn save_ledger(&self, ledger: &PrivacyLedger) -> Result<(), ServeError> {
        let json = serde_json::to_vec_pretty(ledger).map_err(|e| ServeError::Model(e.to_string()))?;
        write_atomically(&self.ledger_path(), &json)
    }

    /// Removes model and momentum files of rounds without a record: what a crash
    /// between finalize and commit leaves. Returns the rounds cleaned up.
    pub fn remove_uncommitted(&self) -> Result<Vec<u64>, ServeError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| ServeError::io(&self.dir, e))?;
        let mut removed = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(round) = name.to_str().and_then(|n| {
                let stem = n.strip_suffix(".npy")?;
                stem.strip_prefix("model-").or_else(|| stem.strip_prefix("momentum-"))?.parse::<u64>().ok()
            }) else {
                continue;
            };
            if !self.record_path(round).exists() {
                std::fs::remove_file(entry.path()).map_err(|e| ServeError::io(&entry.path(), e))?;
                removed.push(round);
            }
        }
        removed.sort_unstable();
        removed.dedup();
        Ok(removed)
    }

    /// The training session this state belongs to: 16 random bytes made the first time
    /// and kept in `session` (hex), so that a restarted server carries on the same
    /// session and clients can tell a replayed round from a new one.
    pub fn session(&self) -> Result<[u8; 16], ServeError> {
        let path = self.dir.join("session");
        match std::fs::read_to_string(&path) {
            Ok(text) => parse_session(text.trim())
                .ok_or_else(|| ServeError::Model(format!("{} is not 32 hexadecimal digits", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let session: [u8; 16] = rand::random();
                let hex: String = session.iter().map(|b| format!("{b:02x}")).collect();
                write_atomically(&path, hex.as_bytes())?;
                Ok(session)
            }
            Err(e) => Err(ServeError::io(&path, e)),
        }
    }

    /// The highest round with both a record and a model, if any.
    pub fn last_completed_round(&self) -> Result<Option<u64>, ServeError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| ServeError::io(&self.dir, e))?;
        let mut best = None;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(round) = name
                .to_str()
                .and_then(|n| n.strip_prefix("round-"))
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if self.model_path(round).exists() && best.is_none_or(|b| round > b) {
                best = Some(round);
            }
        }
        Ok(best)
    }

    /// Loads the last checkpoint, or `None` if no round completed yet.
    pub fn load_latest(&self, dim: usize, momentum: bool) -> Result<Option<Checkpoint>, ServeError> {
        let Some(round) = self.last_completed_round()? else { return Ok(None) };
        let model = read_vector(&self.model_path(round))?;
        if model.len() != dim {
            return Err(ServeError::Model(format!(
                "the saved model of round {round} has {} values, but --dim is {dim}",
                model.len()
            )));
        }
        let momentum = if momentum && self.momentum_path(round).exists() {
            Some(read_vector(&self.momentum_path(round))?)
        } else {
            None
        };
        let record = self.load_record(round)?;
        Ok(Some(Checkpoint { round, model, momentum, record: Some(record) }))
    }

    /// The record of committed round `round`.
    pub fn load_record(&self, round: u64) -> Result<RoundRecord, ServeError> {
        let path = self.record_path(round);
        let text = std::fs::read(&path).map_err(|e| ServeError::io(&path, e))?;
        serde_json::from_slice(&text).map_err(|e| ServeError::Model(format!("{}: {e}", path.display())))
    }

    /// Commits a completed round: model (and momentum) first, the record last.
    pub fn commit(&self, record: &RoundRecord, model: &[f32], momentum: Option<&[f32]>) -> Result<(), ServeError> {
        write_atomically(&self.model_path(record.round), &npy_bytes(model)?)?;
        if let Some(m) = momentum {
            write_atomically(&self.momentum_path(record.round), &npy_bytes(m)?)?;
        }
        let json = serde_json::to_vec_pretty(record).map_err(|e| ServeError::Model(e.to_string()))?;
        write_atomically(&self.record_path(record.round), &json)
    }
}

/// The keys (`dp.clip` for nested ones) whose values differ between two JSON objects.
fn changed_keys(before: &serde_json::Value, after: &serde_json::Value) -> Vec<String> {
    match (before, after) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            keys.into_iter()
                .filter(|k| a.get(*k) != b.get(*k))
                .flat_map(|k| match (a.get(k), b.get(k)) {
                    (Some(x @ serde_json::Value::Object(_)), Some(y @ serde_json::Value::Object(_))) => {
                        changed_keys(x, y).into_iter().map(|inner| format!("{k}.{inner}")).collect()
                    }
                    _ => vec![k.clone()],
                })
                .collect()
        }
        _ => vec!["settings".into()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_where_files_cannot_be_written_is_refused_before_any_round() {
        // Tests run as root, whom permissions do not stop; a directory where the probe
        // file must go makes the write fail for anyone.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".write-probe/in-the-way")).unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let Err(err) = state.lock() else { panic!("an unwritable directory was accepted") };
        assert!(err.to_string().contains(".write-probe"), "{err}");
        // Writable again: accepted.
        std::fs::remove_dir_all(dir.path().join(".write-probe")).unwrap();
        state.lock().unwrap();
    }

    #[test]
    fn the_session_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("privagg-storage-session-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let state = StateDir::open(&dir).unwrap();
        let first = state.session().unwrap();
        assert_eq!(state.session().unwrap(), first);
        assert_eq!(StateDir::open(&dir).unwrap().session().unwrap(), first);
        std::fs::write(dir.join("session"), "not hex").unwrap();
        assert!(state.session().is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
