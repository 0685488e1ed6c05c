//! Revocations: a model, an image (its PCR0), one enclave launch (its module id) or every
//! enclave of one parent instance (its instance id) that may no longer get or keep a key.
//!
//! `broker revoke` records a revocation in the state directory (`revocations.json`, replaced
//! atomically under a lock, so concurrent revocations are all kept). The serving broker reads the
//! file at every decision: a revocation acts at the next release or renewal, which for a running
//! enclave is within one lease. Before it decides with a revocation it has not logged, the broker
//! appends a `revocation` entry to the log and records its index; it also looks every
//! [`POLL`], so that a revocation is logged promptly whether or not an enclave asks. A broker
//! that cannot read the file, or cannot log what it holds, refuses every release and renewal.
//!
//! A revocation is permanent: a revoked model is released again only under a new model id, a
//! revoked image never.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use attest::Timestamp;
use proofs::entry::{Entry, Revocation, RevocationTarget};
use serde::{Deserialize, Serialize};

use crate::config::read_bounded;
use crate::state::{StateDir, StateError};

/// How often the serving broker looks for revocations to log.
pub const POLL: Duration = Duration::from_secs(2);
/// The most revocations kept.
pub const MAX_REVOCATIONS: usize = 10_000;
/// The largest revocations file: room for [`MAX_REVOCATIONS`] of the longest.
const MAX_FILE_LEN: u64 = 16 * 1024 * 1024;
/// The longest reason, in bytes (the log's text bound).
pub const MAX_REASON_LEN: usize = proofs::entry::MAX_TEXT_LEN;

/// One revocation as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revoked {
    /// What it names.
    pub target: RevocationTarget,
    /// The model id, PCR0 (96 lowercase hex digits) or module id.
    pub value: String,
    /// Why.
    pub reason: String,
    /// When it was recorded.
    pub time: Timestamp,
    /// Its entry in the log, once logged.
    pub log_index: Option<u64>,
}

impl Revoked {
    /// A revocation of `value` as `target`, checked: a model id must be one, an image a PCR0
    /// value, a module id short printable text; the reason must be given.
    pub fn new(
        target: RevocationTarget,
        value: &str,
        reason: &str,
        time: Timestamp,
    ) -> Result<Self, String> {
        let value = match target {
            RevocationTarget::Model => sealing::Id::new(value)
                .map_err(|e| format!("--model {value:?}: {e}"))?
                .to_string(),
            RevocationTarget::Image => {
                let lower = value.to_ascii_lowercase();
                if lower.len() != 96 || !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!(
                        "--image: a PCR0 value is 96 hex digits, got {} characters",
                        value.len()
                    ));
                }
                lower
            }
            RevocationTarget::Instance => {
                // As module ids spell it: lowercase.
                let lower = value.to_ascii_lowercase();
                let id = lower.strip_prefix("i-").unwrap_or_default();
                if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!(
                        "--instance: an instance id such as i-0123456789abcdef0, got {value:?}"
                    ));
                }
                lower
            }
            RevocationTarget::Module => {
                if value.is_empty()
                    || value.len() > MAX_REASON_LEN
                    || value.chars().any(char::is_control)
                {
                    return Err(format!(
                        "--module: a module id is 1 to {MAX_REASON_LEN} printable bytes"
                    ));
                }
                value.to_owned()
            }
        };
        let reason = reason.trim();
        if reason.is_empty()
            || reason.len() > MAX_REASON_LEN
            || reason.chars().any(char::is_control)
        {
            return Err(format!(
                "--reason: say why, in 1 to {MAX_REASON_LEN} printable bytes on one line"
            ));
        }
        Ok(Self {
            target,
            value,
            reason: reason.to_owned(),
            time,
            log_index: None,
        })
    }

    /// The log entry.
    pub fn entry(&self) -> Entry {
        Entry::Revocation(Revocation {
            time: self.time,
            target: self.target,
            value: self.value.clone(),
            reason: self.reason.clone(),
        })
    }

    /// For `--json`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "target": self.target.as_str(),
            "value": self.value,
            "reason": self.reason,
            "time": self.time.to_string(),
            "log_index": self.log_index,
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    revocations: Vec<RawRevoked>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRevoked {
    target: String,
    value: String,
    reason: String,
    time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    log_index: Option<u64>,
}

impl StateDir {
    fn revocations_path(&self) -> PathBuf {
        self.path("revocations.json")
    }

    /// The revocations recorded, oldest first. A file that does not parse is an error: the
    /// broker then refuses every decision rather than forget a revocation.
    pub fn revocations(&self) -> Result<Vec<Revoked>, StateError> {
        read_revocations(&self.revocations_path())
    }

    /// Change the revocations under the state directory's revocation lock (held across
    /// processes), and write them back atomically if `change` returns `true`.
    pub fn update_revocations<R>(
        &self,
        change: impl FnOnce(&mut Vec<Revoked>) -> Result<(bool, R), StateError>,
    ) -> Result<R, StateError> {
        let lock_path = self.path("revocations.lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StateError::File(format!("{}: {e}", lock_path.display())))?;
        lock.lock()
            .map_err(|e| StateError::File(format!("locking {}: {e}", lock_path.display())))?;
        let path = self.revocations_path();
        let mut list = read_revocations(&path)?;
        let (changed, result) = change(&mut list)?;
        if changed {
            if list.len() > MAX_REVOCATIONS {
                return Err(StateError::File(format!(
                    "more than {MAX_REVOCATIONS} revocations"
                )));
            }
            let raw = RawFile {
                revocations: list
                    .iter()
                    .map(|r| RawRevoked {
                        target: r.target.as_str().to_owned(),
                        value: r.value.clone(),
                        reason: r.reason.clone(),
                        time: r.time.to_string(),
                        log_index: r.log_index,
                    })
                    .collect(),
            };
            let len = serde_json::to_vec_pretty(&raw).map_or(0, |v| v.len());
            if u64::try_from(len).unwrap_or(u64::MAX) > MAX_FILE_LEN {
                return Err(StateError::File(format!(
                    "the revocations would take more than {MAX_FILE_LEN} bytes"
                )));
            }
            self.write_json(&path, &raw, false)?;
        }
        drop(lock);
        Ok(result)
    }
}

fn read_revocations(path: &Path) -> Result<Vec<Revoked>, StateError> {
    let bytes = match read_bounded(path, MAX_FILE_LEN) {
        Ok(bytes) => bytes,
        Err(_) if !path.exists() => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let bad = |what: String| StateError::File(format!("{}: {what}", path.display()));
    let raw: RawFile = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    raw.revocations
        .into_iter()
        .map(|r| {
            let target = RevocationTarget::parse(&r.target)
                .ok_or_else(|| bad(format!("unknown target {:?}", r.target)))?;
            let time = Timestamp::parse_rfc3339(&r.time).map_err(|e| bad(e.to_string()))?;
            let mut revoked = Revoked::new(target, &r.value, &r.reason, time).map_err(bad)?;
            revoked.log_index = r.log_index;
            Ok(revoked)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> (StateDir, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "revocations-{}-{}",
            std::process::id(),
            aws_lc_rs::rand::generate::<[u8; 8]>(&aws_lc_rs::rand::SystemRandom::new())
                .map(|r| data_encoding::HEXLOWER.encode(&r.expose()))
                .unwrap()
        ));
        (StateDir::open(&dir).unwrap(), dir)
    }

    #[test]
    fn values_are_checked_and_normalised() {
        let now = Timestamp::now();
        let image = Revoked::new(RevocationTarget::Image, &"AB".repeat(48), "bad", now).unwrap();
        assert_eq!(image.value, "ab".repeat(48));
        let not_hex = "zz".repeat(48);
        for (target, value, reason) in [
            (RevocationTarget::Image, "ab", "short"),
            (RevocationTarget::Image, not_hex.as_str(), "not hex"),
            (RevocationTarget::Model, "a b", "not an id"),
            (RevocationTarget::Module, "", "empty"),
            (RevocationTarget::Module, "i-1-enc2", ""),
            (RevocationTarget::Module, "i-1-enc2", "two\nlines"),
        ] {
            assert!(
                Revoked::new(target, value, reason, now).is_err(),
                "{value:?} {reason:?}"
            );
        }
    }

    #[test]
    fn concurrent_revocations_are_all_kept() {
        let (state, dir) = state();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let state = state.clone();
                std::thread::spawn(move || {
                    state
                        .update_revocations(|list| {
                            list.push(
                                Revoked::new(
                                    RevocationTarget::Model,
                                    &format!("model-{i}"),
                                    "test",
                                    Timestamp::now(),
                                )
                                .unwrap(),
                            );
                            Ok((true, ()))
                        })
                        .unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(state.revocations().unwrap().len(), 8);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_damaged_file_is_an_error_not_an_empty_list() {
        let (state, dir) = state();
        std::fs::write(dir.join("revocations.json"), "{\"revocations\": [").unwrap();
        assert!(state.revocations().is_err());
        std::fs::write(
            dir.join("revocations.json"),
            "{\"revocations\": [{\"target\": \"region\", \"value\": \"x\", \"reason\": \"y\", \
             \"time\": \"2026-01-01T00:00:00Z\"}]}",
        )
        .unwrap();
        assert!(state.revocations().is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
