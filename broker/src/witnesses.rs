//! Asking the log's witnesses to cosign each new checkpoint (C2SP `tlog-witness`), before a
//! release or a renewal is answered.
//!
//! Every witness is asked at once, each with a consistency proof from the size it last
//! acknowledged. A witness that has seen another size answers 409 with that size, and is asked
//! once more with a proof from there. A cosignature is kept only once it verifies under the
//! witness's configured key over this checkpoint. A release needs `required` of them: with
//! fewer, nothing is sent, and the reasons are logged. A witness that reports a larger tree than
//! the log holds, or refuses the checkpoint as inconsistent (422), has seen another history of
//! this log: that is logged as an error, because the log was forked or rolled back.
//!
//! The client speaks HTTP/1.1 over TCP (`http://` URLs only): the witness's answer is
//! self-authenticating (a signature under a configured key), and requests carry nothing secret.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use proofs::cosignature::CosignatureVerifier;
use proofs::note::NoteSignature;
use proofs::{Log, LogStore, Note, SignedCheckpoint};
use scaffold::http::{HttpUrl, request};

/// The largest answer read from a witness.
const MAX_ANSWER_LEN: usize = 16 * 1024;

/// One witness: its key and where it listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessConfig {
    /// Its cosignature key.
    pub key: CosignatureVerifier,
    /// Its URL: requests go to `<url>/add-checkpoint`.
    pub url: HttpUrl,
}

/// The witnesses a broker asks, and how many must cosign.
#[derive(Debug)]
pub struct Witnesses {
    remotes: Vec<Remote>,
    required: usize,
    timeout: Duration,
}

#[derive(Debug)]
struct Remote {
    config: WitnessConfig,
    /// The tree size this witness acknowledged last (0 before it is asked).
    known: Mutex<u64>,
}

/// Fewer witnesses cosigned than required; each failure, by witness.
#[derive(Debug, thiserror::Error)]
#[error("{cosigned} of the {required} witness cosignatures required: {}", failures.join("; "))]
pub struct NotWitnessed {
    /// How many cosigned.
    pub cosigned: usize,
    /// How many must.
    pub required: usize,
    /// What went wrong with the others.
    pub failures: Vec<String>,
}

impl Witnesses {
    /// Ask `witnesses`, of which `required` must cosign, waiting at most `timeout` for each.
    pub fn new(witnesses: Vec<WitnessConfig>, required: usize, timeout: Duration) -> Self {
        Self {
            remotes: witnesses
                .into_iter()
                .map(|config| Remote {
                    config,
                    known: Mutex::new(0),
                })
                .collect(),
            required,
            timeout,
        }
    }

    /// How many must cosign.
    pub fn required(&self) -> usize {
        self.required
    }

    /// The witnesses, for announcements.
    pub fn names(&self) -> Vec<String> {
        self.remotes
            .iter()
            .map(|r| format!("{} at {}", r.config.key.name(), r.config.url))
            .collect()
    }

    /// Ask every witness to cosign `checkpoint`, the latest of `log`; returns the cosignatures
    /// that verified, at least `required` of them.
    pub fn cosign<S: LogStore + Sync>(
        &self,
        log: &Log<S>,
        checkpoint: &SignedCheckpoint,
    ) -> Result<Vec<NoteSignature>, NotWitnessed> {
        let answers: Vec<Result<NoteSignature, String>> = std::thread::scope(|scope| {
            let asks: Vec<_> = self
                .remotes
                .iter()
                .map(|remote| scope.spawn(|| remote.ask(log, checkpoint, self.timeout)))
                .collect();
            asks.into_iter()
                .zip(&self.remotes)
                .map(|(ask, remote)| {
                    ask.join().unwrap_or_else(|_| {
                        Err(format!(
                            "{}: the request panicked",
                            remote.config.key.name()
                        ))
                    })
                })
                .collect()
        });
        let mut cosignatures = Vec::new();
        let mut failures = Vec::new();
        for answer in answers {
            match answer {
                Ok(signature) => cosignatures.push(signature),
                Err(failure) => failures.push(failure),
            }
        }
        for failure in &failures {
            tracing::warn!(size = checkpoint.checkpoint.size, "witness: {failure}");
        }
        if cosignatures.len() < self.required {
            return Err(NotWitnessed {
                cosigned: cosignatures.len(),
                required: self.required,
                failures,
            });
        }
        Ok(cosignatures)
    }
}

impl Remote {
    fn ask<S: LogStore>(
        &self,
        log: &Log<S>,
        checkpoint: &SignedCheckpoint,
        timeout: Duration,
    ) -> Result<NoteSignature, String> {
        let name = self.config.key.name();
        let size = checkpoint.checkpoint.size;
        let mut old = (*self.known.lock().unwrap_or_else(PoisonError::into_inner)).min(size);
        for _ in 0..2 {
            let proof = if old == 0 || old == size {
                Vec::new()
            } else {
                log.prove_consistency(old, size)
                    .map_err(|e| format!("{name}: no consistency proof from {old}: {e}"))?
                    .hashes
            };
            let mut body = format!("old {old}\n");
            for hash in &proof {
                body.push_str(&hash.to_base64());
                body.push('\n');
            }
            body.push('\n');
            body.push_str(&checkpoint.note);
            let (status, answer) = request(
                "POST",
                &self.config.url,
                "add-checkpoint",
                body.as_bytes(),
                timeout,
                MAX_ANSWER_LEN,
            )
            .map_err(|e| format!("{name} ({}): {e}", self.config.url))?;
            match status {
                200 => {
                    let signature = self.cosignature(&checkpoint.note, &answer)?;
                    *self.known.lock().unwrap_or_else(PoisonError::into_inner) = size;
                    return Ok(signature);
                }
                409 => {
                    let seen = std::str::from_utf8(&answer)
                        .ok()
                        .and_then(|t| t.trim_end_matches('\n').parse::<u64>().ok())
                        .ok_or_else(|| format!("{name}: a 409 without a tree size"))?;
                    if seen > size {
                        tracing::error!(
                            witness = name,
                            witness_size = seen,
                            log_size = size,
                            "a witness has cosigned a larger tree of this log than it holds: \
                             the log was rolled back or forked"
                        );
                        return Err(format!(
                            "{name} has cosigned a tree of {seen} entries; this log holds {size}"
                        ));
                    }
                    *self.known.lock().unwrap_or_else(PoisonError::into_inner) = seen;
                    old = seen;
                }
                422 => {
                    tracing::error!(
                        witness = name,
                        size,
                        "a witness refuses the checkpoint as inconsistent with the tree it \
                         cosigned: the log was forked or rewritten"
                    );
                    return Err(format!("{name} refuses: {}", printable(&answer)));
                }
                other => return Err(format!("{name} answered {other}: {}", printable(&answer))),
            }
        }
        Err(format!("{name} changed its tree size twice while asked"))
    }

    /// This witness's cosignature among the lines of `answer`, verified over `note`'s text.
    fn cosignature(&self, note: &str, answer: &[u8]) -> Result<NoteSignature, String> {
        let name = self.config.key.name();
        let text = std::str::from_utf8(answer).map_err(|_| format!("{name}: not UTF-8"))?;
        let parsed = Note::parse(note.as_bytes()).map_err(|e| format!("{name}: {e}"))?;
        let lines = Note::parse(format!("{}\n{text}", parsed.text).as_bytes())
            .map_err(|e| format!("{name}: the answer is not cosignature lines: {e}"))?;
        lines
            .signatures
            .into_iter()
            .find(|s| self.config.key.verify(&parsed.text, s).is_some())
            .ok_or_else(|| format!("{name}: no valid cosignature by its configured key"))
    }
}

/// What a witness said, for an error message: printable ASCII, at most 200 characters.
fn printable(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(200)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                ' '
            }
        })
        .collect::<String>()
        .trim()
        .to_owned()
}
