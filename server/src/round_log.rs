//! The verifiable round log of a state directory: one leaf per committed round, in an
//! RFC 9162 Merkle tree, and a checkpoint signed with the log's Ed25519 key after each
//! append ([`privagg_log`]).
//!
//! A leaf is a function of what the state directory already holds — the round's record,
//! its model file and the releases the ledger charged for it — so the log is written
//! right after the record (the commit mark), a crash in between is caught up on the next
//! start, and an auditor recomputes every leaf from the files it describes
//! ([`verify`]). Layout, beside the other state files:
//!
//! | file | what |
//! | --- | --- |
//! | `log/leaf-<i>.json` | leaf `i` (0-based; round `i + 1`), canonical JSON of [`RoundLeaf`] |
//! | `log/checkpoint` | the latest signed checkpoint |
//! | `log/checkpoint-<size>` | every checkpoint signed, by size: the log's own history |
//! | `log-key.pk8` | the log's private key (PKCS#8, owner-only) |
//! | `log.pub` | its verifier key, `<name>+<id>+<key>`: give it to auditors |
//!
//! The leaf encoding is serde_json of [`RoundLeaf`], fields in declaration order, floats
//! in their shortest round-trip form: the same facts always give the same bytes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use privagg_dp::ledger::{PrivacyLedger, Release};
use privagg_log::{Checkpoint, Hash, LogKey, VerifierKey, leaf_hash, root};
use privagg_service::round_log::{LogState, origin};
use sha2::{Digest, Sha256};

use crate::error::ServeError;
use crate::record::RoundRecord;
use crate::storage::{StateDir, write_atomically, write_private};

pub use privagg_service::round_log::{LEAF_FORMAT, LeafPrivacy, RoundLeaf};

/// A log that does not verify: the first problem found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// A file is missing or unreadable.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A leaf disagrees with the state it describes, or with its place in the log.
    #[error("leaf {index} (round {round}): {why}")]
    Leaf {
        /// The leaf's index.
        index: usize,
        /// The round it should describe.
        round: u64,
        /// What is wrong.
        why: String,
    },
    /// A checkpoint is unsigned, or does not match the leaves.
    #[error("checkpoint {name}: {why}")]
    Checkpoint {
        /// Which checkpoint.
        name: String,
        /// What is wrong.
        why: String,
    },
}

fn file_error(path: &Path, why: impl std::fmt::Display) -> LogError {
    LogError::File { path: path.to_owned(), why: why.to_string() }
}

fn log_dir(state: &Path) -> PathBuf {
    state.join("log")
}

fn leaf_path(state: &Path, index: usize) -> PathBuf {
    log_dir(state).join(format!("leaf-{index}.json"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The leaf of `record`, whose model file holds `model` (bytes) and whose releases the
/// ledger lists, in session `session`.
pub fn leaf_of(session: &str, record: &RoundRecord, model: &[u8], ledger: &PrivacyLedger) -> Result<RoundLeaf, String> {
    let mut included = record.included.clone();
    included.sort_unstable();
    let ids: Vec<u8> = included.iter().flat_map(|id| id.to_be_bytes()).collect();
    let privacy = match &record.privacy {
        None => None,
        Some(p) => {
            let upto = |keep: &dyn Fn(&Release) -> bool| PrivacyLedger {
                releases: ledger.releases.iter().filter(|r| keep(r)).cloned().collect(),
                ..PrivacyLedger::default()
            };
            let this_round = upto(&|r| r.round == record.round);
            let total = upto(&|r| r.round <= record.round);
            Some(LeafPrivacy {
                delta: p.delta,
                epsilon_round: this_round.epsilon(p.delta).map_err(|e| e.to_string())?,
                epsilon_total: total.epsilon(p.delta).map_err(|e| e.to_string())?,
                releases: this_round.releases,
            })
        }
    };
    Ok(RoundLeaf {
        format: LEAF_FORMAT.into(),
        software: concat!("privagg ", env!("CARGO_PKG_VERSION")).into(),
        session: session.into(),
        round: record.round,
        attempt: record.attempt,
        instance: record.instance.clone(),
        unmasked: record.unmasked.clone(),
        participants: record.participants,
        neighbours: record.neighbours,
        threshold: record.threshold,
        bits: record.bits,
        survivors: sha256_hex(&ids),
        survivor_count: included.len(),
        denominator: record.denominator,
        model_sha256: sha256_hex(model),
        privacy,
    })
}

fn encode(leaf: &RoundLeaf) -> Result<Vec<u8>, String> {
    leaf.encode().map_err(|e| e.to_string())
}

/// Where the server keeps a round log's leaves and signed checkpoints: the state
/// directory's files ([`FileLogStore`]) today; a database can implement it later. Each
/// call is durable when it returns.
pub trait LogStore: Send {
    /// Every leaf, leaf 0 (round 1) first.
    fn leaves(&mut self) -> Result<Vec<Vec<u8>>, ServeError>;
    /// Appends leaf `index` (`leaf`, canonical bytes), then the checkpoint signed over the
    /// log that ends with it (`note`, a signed note): the leaf first, so that no checkpoint
    /// ever names a leaf the store lacks.
    fn append(&mut self, index: usize, leaf: &[u8], note: &str) -> Result<(), ServeError>;
}

/// The log's files beside the other state files (the layout in the module's docs).
pub struct FileLogStore {
    state: PathBuf,
}

impl FileLogStore {
    /// The log of the state directory `state` (its `log/` directory is made if missing).
    pub fn open(state: &Path) -> Result<Self, ServeError> {
        let dir = log_dir(state);
        std::fs::create_dir_all(&dir).map_err(|e| ServeError::io(&dir, e))?;
        Ok(Self { state: state.to_owned() })
    }
}

impl LogStore for FileLogStore {
    fn leaves(&mut self) -> Result<Vec<Vec<u8>>, ServeError> {
        let mut leaves = Vec::new();
        loop {
            let path = leaf_path(&self.state, leaves.len());
            match std::fs::read(&path) {
                Ok(bytes) => leaves.push(bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(leaves),
                Err(e) => return Err(ServeError::io(&path, e)),
            }
        }
    }

    fn append(&mut self, index: usize, leaf: &[u8], note: &str) -> Result<(), ServeError> {
        write_atomically(&leaf_path(&self.state, index), leaf)?;
        let dir = log_dir(&self.state);
        write_atomically(&dir.join(format!("checkpoint-{}", index + 1)), note.as_bytes())?;
        write_atomically(&dir.join("checkpoint"), note.as_bytes())
    }
}

/// The log of a state directory, as the server keeps it: its [`LogStore`], and in memory
/// the [`LogState`] that proves the log to clients.
pub struct RoundLog {
    state: PathBuf,
    store: Box<dyn LogStore>,
    session: String,
    key: LogKey,
    log: Arc<LogState>,
}

impl RoundLog {
    /// Opens the log of `storage` (making its key the first time), and appends the
    /// leaves of committed rounds it lacks (a crash between commit and log).
    pub fn open(storage: &StateDir, session_id: &[u8; 16]) -> Result<Self, ServeError> {
        let state = storage.path().to_owned();
        let session = hex::encode(session_id);
        let mut store: Box<dyn LogStore> = Box::new(FileLogStore::open(&state)?);
        let key_path = state.join("log-key.pk8");
        let bad_key = |e: privagg_log::NoteError| ServeError::Model(format!("{}: {e}", key_path.display()));
        let key = match std::fs::read(&key_path) {
            Ok(pkcs8) => LogKey::from_pkcs8(&origin(&session), &pkcs8).map_err(bad_key)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = LogKey::generate(&origin(&session)).map_err(bad_key)?;
                write_private(&key_path, key.pkcs8())?;
                write_atomically(&state.join("log.pub"), format!("{}\n", key.verifier()).as_bytes())?;
                key
            }
            Err(e) => return Err(ServeError::io(&key_path, e)),
        };
        let log = Arc::new(LogState::with_leaves(*session_id, &key, store.leaves()?));
        let mut log = Self { state, store, session, key, log };
        let committed = storage.last_completed_round()?.unwrap_or(0);
        let held = log.log.hashes().len() as u64;
        if held > committed {
            return Err(ServeError::Model(format!(
                "the round log holds {held} rounds but {} only {committed}: a committed round's record or model is gone (restore it; `privagg log verify` names what is missing)",
                log.state.display()
            )));
        }
        if held < committed {
            let ledger = storage.load_ledger()?;
            for round in held + 1..=committed {
                let record = storage.load_record(round)?;
                log.append(&record, &ledger)?;
            }
        }
        Ok(log)
    }

    /// Appends committed round `record.round` (the next one) and signs the new
    /// checkpoint ([`LogStore::append`]).
    pub fn append(&mut self, record: &RoundRecord, ledger: &PrivacyLedger) -> Result<(), ServeError> {
        let index = self.log.hashes().len();
        if record.round != index as u64 + 1 {
            return Err(ServeError::Model(format!(
                "the log holds {index} rounds; cannot append round {}",
                record.round
            )));
        }
        let model_path = self.state.join(format!("model-{}.npy", record.round));
        let model = std::fs::read(&model_path).map_err(|e| ServeError::io(&model_path, e))?;
        let bytes =
            leaf_of(&self.session, record, &model, ledger).and_then(|l| encode(&l)).map_err(ServeError::Model)?;
        let log = Arc::make_mut(&mut self.log);
        log.append(bytes.clone(), &self.key);
        self.store.append(index, &bytes, log.note())
    }

    /// The current checkpoint (unsigned).
    pub fn checkpoint(&self) -> Checkpoint {
        self.log.checkpoint()
    }

    /// The log in memory, as the session proves it to clients.
    pub fn state(&self) -> Arc<LogState> {
        self.log.clone()
    }
}

/// What [`verify`] checked.
#[derive(Debug, PartialEq)]
pub struct Verified {
    /// Rounds in the log.
    pub rounds: usize,
    /// Its root.
    pub root: Hash,
    /// ε at δ over the whole log (DP on).
    pub epsilon: Option<(f64, f64)>,
    /// Checkpoints of the log's history that matched.
    pub checkpoints: usize,
}

/// Verifies the log of state directory `state` against `key` (the log's verifier key,
/// which an auditor should hold from before; `log.pub` of the directory otherwise) and
/// any checkpoints the auditor kept (`trusted`, signed notes): every leaf is recomputed
/// from the record, model and ledger it describes and must equal the stored one; rounds
/// are in order and of one session; the per-round ε compose to each logged total; every
/// checkpoint — the latest, the log's history and the trusted ones — is signed by `key`
/// and is the root of the leaves up to its size (so the log is an extension of each:
/// no leaf was rewritten, reordered or dropped since it was signed). Returns the first
/// problem found.
pub fn verify(state: &Path, key: Option<&VerifierKey>, trusted: &[String]) -> Result<Verified, LogError> {
    let key = match key {
        Some(key) => key.clone(),
        None => {
            let path = state.join("log.pub");
            let text = std::fs::read_to_string(&path).map_err(|e| file_error(&path, e))?;
            VerifierKey::parse(&text).map_err(|e| file_error(&path, e))?
        }
    };
    let storage = StateDir::open(state).map_err(|e| file_error(state, e))?;
    let ledger = storage.load_ledger().map_err(|e| file_error(state, e))?;
    let session = storage.session().map_err(|e| file_error(state, e))?;
    let session = hex::encode(session);
    let mut leaves = Vec::new();
    let mut epsilon = None;
    let mut releases = PrivacyLedger::new();
    loop {
        let index = leaves.len();
        let round = index as u64 + 1;
        let path = leaf_path(state, index);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(file_error(&path, e)),
        };
        let problem = |why: String| LogError::Leaf { index, round, why };
        let leaf: RoundLeaf = serde_json::from_slice(&bytes).map_err(|e| problem(format!("does not parse: {e}")))?;
        if leaf.round != round || leaf.session != session || leaf.format != LEAF_FORMAT {
            return Err(problem(format!(
                "describes round {} of session {} ({})",
                leaf.round, leaf.session, leaf.format
            )));
        }
        if !leaf.unmasked.contains(&leaf.instance) {
            return Err(problem("its completed attempt is not among the attempts it lists as unmasked".into()));
        }
        let record = storage.load_record(round).map_err(|e| problem(e.to_string()))?;
        let model_path = state.join(format!("model-{round}.npy"));
        let model = std::fs::read(&model_path).map_err(|e| problem(format!("{}: {e}", model_path.display())))?;
        let expected = leaf_of(&session, &record, &model, &ledger).map_err(problem)?;
        if expected.model_sha256 != leaf.model_sha256 {
            return Err(problem(format!(
                "model-{round}.npy hashes to {}, the leaf says {}",
                expected.model_sha256, leaf.model_sha256
            )));
        }
        if encode(&expected).map_err(problem)? != bytes {
            let field = differing_field(&expected, &leaf);
            return Err(problem(format!("disagrees with round-{round}.json or the ledger ({field})")));
        }
        if let Some(p) = &leaf.privacy {
            releases.releases.extend(p.releases.iter().cloned());
            let total = releases.epsilon(p.delta).map_err(|e| problem(e.to_string()))?;
            if (total - p.epsilon_total).abs() > 1e-9 * total.max(1.0) {
                return Err(problem(format!("its releases compose to ε = {total}, it says {}", p.epsilon_total)));
            }
            epsilon = Some((total, p.delta));
        }
        leaves.push(leaf_hash(&bytes));
    }
    let check = |name: String, note: &str| -> Result<(), LogError> {
        let bad = |why: String| LogError::Checkpoint { name: name.clone(), why };
        let checkpoint = Checkpoint::verify(note, &key).map_err(|e| bad(e.to_string()))?;
        if checkpoint.origin != origin(&session) {
            return Err(bad(format!("is for log {:?}", checkpoint.origin)));
        }
        let size = usize::try_from(checkpoint.size).unwrap_or(usize::MAX);
        if size > leaves.len() {
            return Err(bad(format!("covers {size} rounds, the log holds {} (truncated)", leaves.len())));
        }
        if root(&leaves[..size]) != checkpoint.root {
            return Err(bad(format!("its root is not that of the first {size} leaves (rewritten or forked)")));
        }
        Ok(())
    };
    let latest_path = log_dir(state).join("checkpoint");
    let latest = std::fs::read_to_string(&latest_path).map_err(|e| file_error(&latest_path, e))?;
    check("log/checkpoint".into(), &latest)?;
    if Checkpoint::verify(&latest, &key).map(|c| c.size as usize) != Ok(leaves.len()) {
        return Err(LogError::Checkpoint {
            name: "log/checkpoint".into(),
            why: format!("does not cover all {} leaves", leaves.len()),
        });
    }
    let mut checkpoints = 1;
    for size in 1..=leaves.len() {
        let path = log_dir(state).join(format!("checkpoint-{size}"));
        let note = std::fs::read_to_string(&path).map_err(|e| file_error(&path, e))?;
        check(format!("log/checkpoint-{size}"), &note)?;
        checkpoints += 1;
    }
    for (i, note) in trusted.iter().enumerate() {
        check(format!("trusted #{}", i + 1), note)?;
        checkpoints += 1;
    }
    Ok(Verified { rounds: leaves.len(), root: root(&leaves), epsilon, checkpoints })
}

/// The first top-level field where two leaves differ, for the error message.
fn differing_field(expected: &RoundLeaf, stored: &RoundLeaf) -> String {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(expected), serde_json::to_value(stored))
    else {
        return "unknown field".into();
    };
    a.iter().find(|(k, v)| b.get(*k) != Some(v)).map_or_else(|| "encoding".into(), |(k, _)| format!("field {k}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The leaf of LOG.md's example, byte for byte, and its RFC 9162 leaf hash.
    #[test]
    fn the_documented_leaf_encodes_and_hashes_as_pinned() {
        let leaf = RoundLeaf {
            format: LEAF_FORMAT.into(),
            software: "privagg 0.1.0".into(),
            session: "00112233445566778899aabbccddeeff".into(),
            round: 1,
            attempt: 2,
            instance: "5a".repeat(32),
            unmasked: vec!["a5".repeat(32), "5a".repeat(32)],
            participants: 3,
            neighbours: 2,
            threshold: 2,
            bits: 20,
            survivors: sha256_hex(&[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]),
            survivor_count: 3,
            denominator: 3.0,
            model_sha256: sha256_hex(b""),
            privacy: None,
        };
        let bytes = encode(&leaf).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"format":"privagg-round-leaf/2","software":"privagg 0.1.0","session":"00112233445566778899aabbccddeeff","#,
                r#""round":1,"attempt":2,"instance":"INSTANCE","unmasked":["OTHER","INSTANCE"],"#,
                r#""participants":3,"neighbours":2,"threshold":2,"bits":20,"#,
                r#""survivors":"PLACEHOLDER","survivor_count":3,"denominator":3.0,"#,
                r#""model_sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","privacy":null}"#
            )
            .replace("PLACEHOLDER", &leaf.survivors)
            .replace("INSTANCE", &"5a".repeat(32))
            .replace("OTHER", &"a5".repeat(32))
        );
        assert_eq!(hex::encode(leaf_hash(&bytes)), "236208d331a10f33068f8156ad6af4cf445330f78b09c7f0b2dd3648266c29e5");
        assert_eq!(serde_json::from_slice::<RoundLeaf>(&bytes).unwrap(), leaf);
    }
}
