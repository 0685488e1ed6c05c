//! A witness for transparency logs: the C2SP `tlog-witness` protocol, answered with C2SP
//! `tlog-cosignature` v1 cosignatures.
//!
//! An independent agency runs it. For each log it is configured for (an origin and the log's
//! keys), it keeps the latest checkpoint it cosigned, durably, and cosigns a new checkpoint only
//! once it has checked, in order:
//!
//! 1. the request is well formed (`old <size>`, up to 63 base64 consistency-proof hashes, an
//!    empty line, a signed checkpoint): 400 otherwise;
//! 2. it knows the checkpoint's origin: 404 otherwise;
//! 3. a key it trusts for that log signed it: 403 otherwise;
//! 4. `old` is not above the checkpoint's size: 400 otherwise;
//! 5. `old` is the size it cosigned last (0 if none): 409 otherwise, with that size as the body
//!    (`text/x.tlog.size`), so the caller can retry with the right proof;
//! 6. the checkpoint is consistent with the one it cosigned last: an empty tree has the empty
//!    root; from size 0 the proof is empty; at the same size the roots are equal; otherwise the
//!    RFC 9162 consistency proof verifies: 422 otherwise.
//!
//! Then it records the checkpoint (fsynced, replaced atomically) before it answers 200 with its
//! cosignature line. So it never cosigns two different trees of one size, nor a tree that does
//! not extend one it cosigned, also across a crash: a log that shows one history to the witness
//! and another to someone else can have only one of them cosigned.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use proofs::cosignature::Cosigner;
use proofs::durable::{Replace, write_atomically};
use proofs::merkle::verify_consistency;
use proofs::{Checkpoint, Hash, Note, NoteVerifier};

/// The largest request body read.
pub const MAX_REQUEST_LEN: usize = 64 * 1024;
/// The most consistency-proof hashes a request may carry.
pub const MAX_PROOF_HASHES: usize = 63;
/// The content type of a 409's body.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// Why a witness could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WitnessError {
    /// Two logs with one origin.
    #[error("the log {0:?} is configured twice")]
    DuplicateLog(String),
    /// A log with no key.
    #[error("the log {0:?} has no key")]
    NoKey(String),
    /// A state file cannot be read or written.
    #[error("{path}: {message}")]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// One answer: its status, content type and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The content type.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    fn text(status: u16, message: impl Into<String>) -> Self {
        let mut body = message.into().into_bytes();
        body.push(b'\n');
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body,
        }
    }
}

/// A log this witness cosigns for.
struct Log {
    keys: Vec<NoteVerifier>,
    /// The latest checkpoint cosigned (size, root), and its file.
    latest: Mutex<Option<(u64, Hash)>>,
    path: PathBuf,
}

/// The witness: its cosigning key and the logs it knows.
pub struct Witness {
    cosigner: Cosigner,
    logs: BTreeMap<String, Log>,
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Witness")
            .field("cosigner", &self.cosigner)
            .field("logs", &self.logs.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn state_error(path: &Path, message: impl Into<String>) -> WitnessError {
    WitnessError::State {
        path: path.to_owned(),
        message: message.into(),
    }
}

impl Witness {
    /// A witness cosigning with `cosigner` for `logs` (origin and the log's keys), keeping its
    /// state in `dir` (one file per log, named by the SHA-256 of its origin). The state already
    /// there is read; a file that does not parse is an error, never a fresh start.
    pub fn open(
        dir: &Path,
        cosigner: Cosigner,
        logs: Vec<(String, Vec<NoteVerifier>)>,
    ) -> Result<Self, WitnessError> {
        std::fs::create_dir_all(dir).map_err(|e| state_error(dir, e.to_string()))?;
        let mut known = BTreeMap::new();
        for (origin, keys) in logs {
            if keys.is_empty() {
                return Err(WitnessError::NoKey(origin));
            }
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, origin.as_bytes());
            let path = dir.join(format!(
                "{}.checkpoint",
                data_encoding::HEXLOWER.encode(digest.as_ref())
            ));
            let latest = read_state(&path)?;
            let log = Log {
                keys,
                latest: Mutex::new(latest),
                path,
            };
            if known.insert(origin.clone(), log).is_some() {
                return Err(WitnessError::DuplicateLog(origin));
            }
        }
        Ok(Self {
            cosigner,
            logs: known,
        })
    }

    /// The size and root this witness cosigned last for `origin`.
    pub fn latest(&self, origin: &str) -> Option<(u64, Hash)> {
        self.logs
            .get(origin)
            .and_then(|log| *log.latest.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Answer an `add-checkpoint` request's body at `now` (seconds since the epoch).
    pub fn add_checkpoint(&self, body: &[u8], now: u64) -> Answer {
        match self.add(body, now) {
            Ok(answer) | Err(answer) => answer,
        }
    }

    fn add(&self, body: &[u8], now: u64) -> Result<Answer, Answer> {
        let bad = |why: &str| Answer::text(400, why);
        if body.len() > MAX_REQUEST_LEN {
            return Err(Answer::text(413, "the request is too large"));
        }
        let text = std::str::from_utf8(body).map_err(|_| bad("the request is not UTF-8"))?;
        let (first, mut rest) = text
            .split_once('\n')
            .ok_or_else(|| bad("expected `old <size>` on the first line"))?;
        let old = first
            .strip_prefix("old ")
            .and_then(|n| n.parse::<u64>().ok().filter(|v| v.to_string() == n))
            .ok_or_else(|| bad("expected `old <size>` (decimal, no leading zeros)"))?;
        let mut proof = Vec::new();
        loop {
            let (line, next) = rest
                .split_once('\n')
                .ok_or_else(|| bad("expected an empty line before the checkpoint"))?;
            rest = next;
            if line.is_empty() {
                break;
            }
            if proof.len() == MAX_PROOF_HASHES {
                return Err(bad("more than 63 consistency-proof hashes"));
            }
            proof.push(
                Hash::from_base64(line).ok_or_else(|| bad("a proof line is not a base64 hash"))?,
            );
        }
        let note = Note::parse(rest.as_bytes()).map_err(|e| bad(&e.to_string()))?;
        let checkpoint = Checkpoint::parse_text(&note.text).map_err(|e| bad(&e.to_string()))?;
        let log = self
            .logs
            .get(&checkpoint.origin)
            .ok_or_else(|| Answer::text(404, "this witness does not know the log"))?;
        note.verify(&log.keys)
            .map_err(|e| Answer::text(403, format!("the checkpoint's signature: {e}")))?;
        if old > checkpoint.size {
            return Err(bad("old is above the checkpoint's size"));
        }
        let mut latest = log.latest.lock().unwrap_or_else(PoisonError::into_inner);
        let (size, root) = latest.unwrap_or((0, Hash::empty()));
        if old != size {
            return Err(Answer {
                status: 409,
                content_type: SIZE_CONTENT_TYPE,
                body: format!("{size}\n").into_bytes(),
            });
        }
        let inconsistent = |why: &str| Answer::text(422, why);
        if checkpoint.size == 0 && checkpoint.root != Hash::empty() {
            return Err(inconsistent("an empty tree's root is the empty hash"));
        }
        if old == 0 {
            if !proof.is_empty() {
                return Err(inconsistent("from size 0 the proof is empty"));
            }
        } else if old == checkpoint.size {
            if checkpoint.root != root || !proof.is_empty() {
                return Err(inconsistent(
                    "this witness cosigned another tree of this size",
                ));
            }
        } else {
            verify_consistency(old, checkpoint.size, &proof, &root, &checkpoint.root)
                .map_err(|e| inconsistent(&format!("the consistency proof: {e}")))?;
        }
        if *latest != Some((checkpoint.size, checkpoint.root)) {
            write_state(&log.path, checkpoint.size, &checkpoint.root)
                .map_err(|e| Answer::text(500, format!("the state could not be saved: {e}")))?;
            *latest = Some((checkpoint.size, checkpoint.root));
        }
        drop(latest);
        let cosignature = self
            .cosigner
            .cosign(&note.text, now)
            .map_err(|e| Answer::text(500, format!("cannot cosign: {e}")))?;
        let line = Note {
            text: String::new(),
            signatures: vec![cosignature],
        }
        .to_text();
        // `to_text` writes the text, a blank line, then the signature lines: keep the lines.
        let line = line.trim_start_matches('\n').to_owned();
        Ok(Answer {
            status: 200,
            content_type: "text/plain; charset=utf-8",
            body: line.into_bytes(),
        })
    }
}

/// `size\nroot\n`, or nothing if the file does not exist.
fn read_state(path: &Path) -> Result<Option<(u64, Hash)>, WitnessError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(state_error(path, e.to_string())),
    };
    let mut lines = text.lines();
    let size = lines.next().and_then(|s| s.parse::<u64>().ok());
    let root = lines.next().and_then(Hash::from_base64);
    match (size, root, lines.next()) {
        (Some(size), Some(root), None) => Ok(Some((size, root))),
        _ => Err(state_error(
            path,
            "not a witness state file (size, root): refusing to start over",
        )),
    }
}

fn write_state(path: &Path, size: u64, root: &Hash) -> std::io::Result<()> {
    let text = format!("{size}\n{}\n", root.to_base64());
    write_atomically(
        path,
        Replace {
            private: false,
            overwrite: true,
        },
        |w| std::io::Write::write_all(w, text.as_bytes()),
    )
}
