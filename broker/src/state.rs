//! The broker's state directory:
//!
//! ```text
//! <state_dir>/models/<hex(model id)>.json   one record per sealed model: the wrapped data key
//! <state_dir>/log/                           the transparency log (proofs::FileStore)
//! <state_dir>/policy.json                    the release policy last adopted, and its log entry
//! ```
//!
//! Records are replaced atomically and readable by the broker's user only. They are not trusted on
//! their own: each carries a tag the key store makes (HMAC-SHA256 under a key that lives with the
//! KEK), checked before its key is released, and once logged it must also match the
//! `model-sealed` entry the log holds for it (model, key id, digest, length and the SHA-384 of
//! the wrapped key). A wrapped key moved from one model's record to another's is refused. The log is held by one process at
//! a time; `broker seal` run while `broker serve` holds it leaves the record unlogged, and the
//! broker logs it, as read for that decision, before it releases that key.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use attest::Timestamp;
use data_encoding::{BASE64, HEXLOWER};
use proofs::entry::{Entry, LogEntry};
use proofs::{FileStore, Log, NoteSigner, StoreError};
use sealing::Id;
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, MAX_SMALL_FILE, read_bounded};
use crate::keystore::RECORD_TAG_LEN;

/// A sealed model's record: what releasing its key needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelRecord {
    /// The model.
    pub model_id: Id,
    /// Its data key's id, `<kek label>/<random hex>`.
    pub key_id: Id,
    /// The data key, wrapped under the KEK.
    pub wrapped_key: Vec<u8>,
    /// SHA-384 of the plaintext.
    pub model_sha384: [u8; 48],
    /// The plaintext's length.
    pub model_len: u64,
    /// When it was sealed.
    pub sealed_at: Timestamp,
    /// The `model-sealed` log entry's index, once logged.
    pub log_index: Option<u64>,
    /// The key store's tag over [`ModelRecord::authenticated_bytes`].
    pub tag: [u8; RECORD_TAG_LEN],
}

impl ModelRecord {
    /// What the record's tag covers: everything but the log index (added once logged), each
    /// field length-prefixed, under a domain separator.
    pub fn authenticated_bytes(&self) -> Vec<u8> {
        let mut out = b"sovereign-broker model record v1\0".to_vec();
        for field in [
            self.model_id.as_str().as_bytes(),
            self.key_id.as_str().as_bytes(),
            &self.wrapped_key,
            &self.model_sha384,
        ] {
            out.extend_from_slice(&u64::try_from(field.len()).unwrap_or(u64::MAX).to_be_bytes());
            out.extend_from_slice(field);
        }
        out.extend_from_slice(&self.model_len.to_be_bytes());
        out.extend_from_slice(&self.sealed_at.unix_millis().to_be_bytes());
        out
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecord {
    model_id: String,
    key_id: String,
    wrapped_key: String,
    model_sha384: String,
    model_len: u64,
    sealed_at: String,
    log_index: Option<u64>,
    tag: String,
}

/// The policy last adopted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyState {
    /// Its version.
    pub version: u64,
    /// SHA-384 of its file, hex.
    pub sha384: String,
    /// The `policy-change` entry's index.
    pub log_index: u64,
}

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// A file is unreadable or malformed.
    #[error("{0}")]
    File(String),
    /// The log failed.
    #[error("transparency log: {0}")]
    Log(#[from] proofs::LogError),
    /// An entry could not be encoded.
    #[error("log entry: {0}")]
    Entry(#[from] proofs::entry::EntryError),
    /// Too few witnesses cosigned the checkpoint.
    #[error("witnesses: {0}")]
    NotWitnessed(#[from] crate::witnesses::NotWitnessed),
}

impl From<ConfigError> for StateError {
    fn from(e: ConfigError) -> Self {
        Self::File(e.0)
    }
}

/// The state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Use `dir`, creating it and its `models` directory if needed.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir.join("models"))
            .map_err(|e| StateError::File(format!("creating {}: {e}", dir.display())))?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// A file in the state directory.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The log's directory.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("log")
    }

    fn record_path(&self, model: &Id) -> PathBuf {
        self.dir.join("models").join(format!(
            "{}.json",
            HEXLOWER.encode(model.as_str().as_bytes())
        ))
    }

    /// The record of `model`, if it was sealed.
    pub fn record(&self, model: &Id) -> Result<Option<ModelRecord>, StateError> {
        let path = self.record_path(model);
        if !path.exists() {
            return Ok(None);
        }
        let bytes = read_bounded(&path, MAX_SMALL_FILE)?;
        let bad = |what: &str| StateError::File(format!("{}: {what}", path.display()));
        let raw: RawRecord = serde_json::from_slice(&bytes).map_err(|e| bad(&e.to_string()))?;
        let record = ModelRecord {
            model_id: Id::new(&raw.model_id).map_err(|e| bad(&e.to_string()))?,
            key_id: Id::new(&raw.key_id).map_err(|e| bad(&e.to_string()))?,
            wrapped_key: BASE64
                .decode(raw.wrapped_key.as_bytes())
                .map_err(|_| bad("wrapped_key is not base64"))?,
            model_sha384: HEXLOWER
                .decode(raw.model_sha384.as_bytes())
                .ok()
                .and_then(|b| <[u8; 48]>::try_from(b.as_slice()).ok())
                .ok_or_else(|| bad("model_sha384 is not 96 hex digits"))?,
            model_len: raw.model_len,
            sealed_at: Timestamp::parse_rfc3339(&raw.sealed_at).map_err(|e| bad(&e.to_string()))?,
            log_index: raw.log_index,
            tag: HEXLOWER
                .decode(raw.tag.as_bytes())
                .ok()
                .and_then(|b| <[u8; RECORD_TAG_LEN]>::try_from(b.as_slice()).ok())
                .ok_or_else(|| bad("tag is not 64 hex digits"))?,
        };
        if &record.model_id != model {
            return Err(bad("the record names another model"));
        }
        Ok(Some(record))
    }

    /// Write `record` (replacing the model's previous record).
    pub fn save_record(&self, record: &ModelRecord) -> Result<(), StateError> {
        let raw = RawRecord {
            model_id: record.model_id.to_string(),
            key_id: record.key_id.to_string(),
            wrapped_key: BASE64.encode(&record.wrapped_key),
            model_sha384: HEXLOWER.encode(&record.model_sha384),
            model_len: record.model_len,
            sealed_at: record.sealed_at.to_string(),
            log_index: record.log_index,
            tag: HEXLOWER.encode(&record.tag),
        };
        self.write_json(&self.record_path(&record.model_id), &raw, true)
    }

    /// The policy last adopted.
    pub fn policy_state(&self) -> Result<Option<PolicyState>, StateError> {
        let path = self.dir.join("policy.json");
        if !path.exists() {
            return Ok(None);
        }
        let bytes = read_bounded(&path, MAX_SMALL_FILE)?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StateError::File(format!("{}: {e}", path.display())))
    }

    fn adopted_path(&self, sha384: &[u8; 48]) -> PathBuf {
        self.dir
            .join(format!("policy-adopted-{}.toml", HEXLOWER.encode(sha384)))
    }

    /// Keep a policy's bytes under a name made of their SHA-384, before the log names them: a
    /// broker with approvals runs them while a changed policy file waits for its approvals.
    pub fn keep_policy_bytes(&self, bytes: &[u8]) -> Result<(), StateError> {
        let path = self.adopted_path(&sealing::release::sha384(bytes));
        let replace = proofs::durable::Replace {
            private: false,
            overwrite: true,
        };
        proofs::durable::write_atomically(&path, replace, |w| std::io::Write::write_all(w, bytes))
            .map_err(|e| StateError::File(format!("writing {}: {e}", path.display())))
    }

    /// Record the policy adopted last (`policy.json`), for the commands' information and the
    /// single-administrator mode; the serving broker with approvals goes by the log.
    pub fn save_policy_state(&self, state: &PolicyState) -> Result<(), StateError> {
        self.write_json(&self.dir.join("policy.json"), state, false)
    }

    /// The bytes of an adopted policy whose SHA-384 is `sha384`, if they were kept.
    pub fn adopted_bytes(&self, sha384: &[u8; 48]) -> Result<Option<Vec<u8>>, StateError> {
        let path = self.adopted_path(sha384);
        if !path.exists() {
            return Ok(None);
        }
        let bytes = read_bounded(&path, crate::policy::MAX_POLICY_LEN)?;
        if &sealing::release::sha384(&bytes) != sha384 {
            return Err(StateError::File(format!(
                "{}: its bytes do not have the SHA-384 its name says",
                path.display()
            )));
        }
        Ok(Some(bytes))
    }

    /// The bytes of the policy `policy.json` records as adopted last, if they were kept. (For
    /// the commands' information; the serving broker takes the policy in force from the log.)
    pub fn adopted_policy(&self) -> Result<Option<Vec<u8>>, StateError> {
        let Some(state) = self.policy_state()? else {
            return Ok(None);
        };
        let Some(sha384) = HEXLOWER
            .decode(state.sha384.as_bytes())
            .ok()
            .and_then(|b| <[u8; 48]>::try_from(b.as_slice()).ok())
        else {
            return Err(StateError::File(
                "policy.json: sha384 is not 96 hex digits".into(),
            ));
        };
        self.adopted_bytes(&sha384)
    }

    pub(crate) fn write_json(
        &self,
        path: &Path,
        value: &impl Serialize,
        private: bool,
    ) -> Result<(), StateError> {
        let text = serde_json::to_vec_pretty(value)
            .map_err(|e| StateError::File(format!("{}: {e}", path.display())))?;
        let replace = proofs::durable::Replace {
            private,
            overwrite: true,
        };
        proofs::durable::write_atomically(path, replace, |w| std::io::Write::write_all(w, &text))
            .map_err(|e| StateError::File(format!("writing {}: {e}", path.display())))
    }
}

/// A log key from its file (`PRIVATE+KEY+…`).
pub fn read_log_key(key_file: &Path) -> Result<NoteSigner, StateError> {
    let skey = read_bounded(key_file, MAX_SMALL_FILE)?;
    let skey = zeroize::Zeroizing::new(
        String::from_utf8(skey)
            .map_err(|_| StateError::File(format!("{} is not text", key_file.display())))?,
    );
    NoteSigner::parse(skey.trim())
        .map_err(|e| StateError::File(format!("{}: {e}", key_file.display())))
}

/// The transparency log, shared by the broker's workers.
#[derive(Debug)]
pub struct Ledger {
    log: Mutex<Log<FileStore>>,
    witnesses: Option<crate::witnesses::Witnesses>,
}

/// An entry appended and proven.
#[derive(Debug)]
pub struct Proven {
    /// Its index.
    pub index: u64,
    /// Its bytes.
    pub entry: Vec<u8>,
    /// A `c2sp.org/tlog-proof@v1` inclusion proof in a freshly signed checkpoint.
    pub proof: Vec<u8>,
}

impl Ledger {
    /// Open the log in `state`, signing with `signer` (whose name is the log's origin). Fails
    /// (see [`Ledger::is_locked`]) if another process holds the log.
    pub fn open(state: &StateDir, signer: NoteSigner) -> Result<Self, StateError> {
        let store = FileStore::open(state.log_dir()).map_err(proofs::LogError::from)?;
        if store.recovery().repaired() {
            tracing::warn!(recovery = ?store.recovery(), "the log was repaired on open");
        }
        Ok(Self {
            log: Mutex::new(Log::open(store, signer)?),
            witnesses: None,
        })
    }

    /// Have every checkpoint that proves an entry cosigned by `witnesses` first.
    #[must_use]
    pub fn with_witnesses(mut self, witnesses: Option<crate::witnesses::Witnesses>) -> Self {
        self.witnesses = witnesses;
        self
    }

    /// Whether the log is held by another process.
    pub fn is_locked(error: &StateError) -> bool {
        matches!(
            error,
            StateError::Log(proofs::LogError::Store(StoreError::Locked(_)))
        )
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Log<FileStore>>, StateError> {
        self.log
            .lock()
            .map_err(|_| StateError::File("the log's lock is poisoned".into()))
    }

    /// Append `entry` durably; returns its index.
    pub fn append(&self, entry: Entry) -> Result<u64, StateError> {
        let entry = LogEntry::new(entry)?;
        Ok(self.lock()?.append(entry.bytes())?)
    }

    /// Append `entry` durably, sign a checkpoint over it, have the witnesses cosign it (if
    /// configured: fewer than required is an error, and the entry then stays appended, with no
    /// checkpoint published over it yet), store the checkpoint, and prove the entry's inclusion
    /// in it.
    pub fn append_proven(&self, entry: Entry) -> Result<Proven, StateError> {
        let entry = LogEntry::new(entry)?;
        let mut log = self.lock()?;
        let index = log.append(entry.bytes())?;
        // With witnesses, the checkpoint is stored (and so served to monitors) only once they
        // have cosigned it; without enough of them, the entry stays appended, covered by the
        // next checkpoint that is cosigned.
        let signed = log.sign_checkpoint()?;
        let cosignatures = match &self.witnesses {
            Some(witnesses) => witnesses.cosign(&log, &signed)?,
            None => Vec::new(),
        };
        log.publish(signed, &cosignatures)?;
        let proof = log.prove_inclusion(index)?.to_text().into_bytes();
        if proof.len() > sealing::release::MAX_PROOF_LEN {
            return Err(StateError::File(format!(
                "the inclusion proof is {} bytes, over the {} an enclave accepts: require fewer \
                 witnesses, or give them shorter names",
                proof.len(),
                sealing::release::MAX_PROOF_LEN
            )));
        }
        Ok(Proven {
            index,
            entry: entry.bytes().to_vec(),
            proof,
        })
    }

    /// The bytes of the entry at `index`.
    pub fn entry(&self, index: u64) -> Result<Vec<u8>, StateError> {
        Ok(self.lock()?.entry(index)?)
    }

    /// The number of entries.
    pub fn size(&self) -> Result<u64, StateError> {
        Ok(self.lock()?.size())
    }

    /// The log's verifier key.
    pub fn verifier(&self) -> Result<proofs::NoteVerifier, StateError> {
        Ok(self.lock()?.verifier())
    }
}
