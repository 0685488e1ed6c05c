//! Asking the log's witnesses to cosign each new checkpoint (C2SP `tlog-witness`), before a
//! release or a renewal is answered.
//!
//! Every witness is asked at once, each on a thread of its own with a consistency proof from the
//! size it last acknowledged. A witness that has seen another size answers 409 with that size,
//! and is asked once more with a proof from there. A cosignature is kept only once it verifies
//! under the witness's configured key over this checkpoint. The answers are collected until all
//! are in, or 100 ms after `required` have verified, so the checkpoint carries every cosignature
//! that comes promptly (parties may require more than the broker does); with fewer than
//! `required` within twice the timeout, nothing is sent, and the reasons are logged. A witness
//! that failed rests for ten seconds while enough others can cosign, and one whose request is
//! still in flight is not asked again, so a witness that hangs costs one thread and one socket,
//! not one per release. The log stays locked while its witnesses are asked: checkpoints reach
//! them in order. A witness that reports a larger tree than
//! the log holds, or refuses the checkpoint as inconsistent (422), has seen another history of
//! this log: that is logged as an error, because the log was forked or rolled back.
//!
//! The client speaks HTTP/1.1 over TCP (`http://` URLs only): the witness's answer is
//! self-authenticating (a signature under a configured key), and requests carry nothing secret.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

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
    remotes: Vec<Arc<Remote>>,
    required: usize,
    timeout: Duration,
}

/// One witness and what the broker knows of it, shared with the request in flight.
#[derive(Debug)]
struct Remote {
    config: WitnessConfig,
    /// The tree size this witness acknowledged last (0 before it is asked).
    known: Mutex<u64>,
    /// Left alone until then after a failure, while enough others can cosign.
    resting_until: Mutex<Option<Instant>>,
    /// A request to it is in flight: it is not asked again until that one ends, so a witness
    /// that hangs holds one thread and one socket, not one per release.
    busy: AtomicBool,
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
                .map(|config| {
                    Arc::new(Remote {
                        config,
                        known: Mutex::new(0),
                        resting_until: Mutex::new(None),
                        busy: AtomicBool::new(false),
                    })
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

    /// Ask the witnesses to cosign `checkpoint`, the current tree of `log` (signed, not yet
    /// published). Every witness that is not resting or still busy is asked at once, on a
    /// thread of its own; the answers are collected until all are in, or [`GRACE`] after
    /// `required` have verified (so a checkpoint carries every cosignature that comes promptly,
    /// for parties that require more than the broker does), or twice the timeout.
    pub fn cosign<S: LogStore>(
        &self,
        log: &Log<S>,
        checkpoint: &SignedCheckpoint,
    ) -> Result<Vec<NoteSignature>, NotWitnessed> {
        let size = checkpoint.checkpoint.size;
        let now = Instant::now();
        let idle: Vec<&Arc<Remote>> = self.remotes.iter().filter(|r| !r.is_busy()).collect();
        let awake: Vec<&Arc<Remote>> = idle.iter().copied().filter(|r| !r.resting(now)).collect();
        let asked = if awake.len() >= self.required {
            awake
        } else {
            idle
        };
        let mut failures: Vec<String> = self
            .remotes
            .iter()
            .filter(|r| r.is_busy())
            .map(|r| {
                format!(
                    "{}: still answering an earlier request",
                    r.config.key.name()
                )
            })
            .collect();
        let (answers, answered) = mpsc::channel();
        let mut pending = 0usize;
        for (i, remote) in asked.iter().enumerate() {
            let old = (*remote.known.lock().unwrap_or_else(PoisonError::into_inner)).min(size);
            match Remote::send(remote, i, old, log, checkpoint, self.timeout, &answers) {
                Ok(()) => pending += 1,
                Err(e) => failures.push(e),
            }
        }
        let deadline = now + self.timeout * 2;
        let mut quorum_at: Option<Instant> = None;
        let mut retried = vec![false; asked.len()];
        let mut cosignatures = Vec::new();
        while pending > 0 {
            let mut until = deadline;
            if let Some(at) = quorum_at {
                until = until.min(at + GRACE);
            }
            let Ok((i, judged)) =
                answered.recv_timeout(until.saturating_duration_since(Instant::now()))
            else {
                if quorum_at.is_none() {
                    failures.push(format!("{pending} witness(es) gave no answer in time"));
                }
                break;
            };
            pending -= 1;
            match judged {
                Judged::Cosigned(signature) => {
                    cosignatures.push(signature);
                    if cosignatures.len() == self.required {
                        quorum_at = Some(Instant::now());
                    }
                }
                Judged::SeenSize(seen) if !retried.get(i).copied().unwrap_or(true) => {
                    if let (Some(r), Some(remote)) = (retried.get_mut(i), asked.get(i)) {
                        *r = true;
                        match Remote::send(remote, i, seen, log, checkpoint, self.timeout, &answers)
                        {
                            Ok(()) => pending += 1,
                            Err(e) => failures.push(e),
                        }
                    }
                }
                Judged::SeenSize(_) => {
                    let name = asked.get(i).map_or("?", |r| r.config.key.name());
                    failures.push(format!("{name} changed its tree size twice while asked"));
                }
                Judged::Failed(why) => failures.push(why),
            }
        }
        for failure in &failures {
            tracing::warn!(size, "witness: {failure}");
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

/// How long the answers of other witnesses are still awaited once enough have cosigned.
const GRACE: Duration = Duration::from_millis(100);

/// How long a witness that failed is left alone while enough others can cosign.
const REST: Duration = Duration::from_secs(10);

/// A witness's answer, judged, tagged with its index among those asked.
type Answer = (usize, Judged);

/// What a witness's answer means.
enum Judged {
    Cosigned(NoteSignature),
    /// 409: it cosigned this size last.
    SeenSize(u64),
    Failed(String),
}

impl Remote {
    fn resting(&self, now: Instant) -> bool {
        self.resting_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|until| now < until)
    }

    fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }

    /// Send `checkpoint` with a consistency proof from `old` on a thread of its own, which
    /// judges the answer, records what it learnt of the witness (its size; a failure puts it to
    /// rest), and reports on `answers` tagged `i`, if anyone still listens.
    fn send<S: LogStore>(
        remote: &Arc<Self>,
        i: usize,
        old: u64,
        log: &Log<S>,
        checkpoint: &SignedCheckpoint,
        timeout: Duration,
        answers: &mpsc::Sender<Answer>,
    ) -> Result<(), String> {
        let name = remote.config.key.name();
        let size = checkpoint.checkpoint.size;
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
        let (remote, answers, note) = (remote.clone(), answers.clone(), checkpoint.note.clone());
        remote.busy.store(true, Ordering::Release);
        let thread = remote.clone();
        std::thread::Builder::new()
            .name("witness-request".into())
            .spawn(move || {
                let result = request(
                    "POST",
                    &thread.config.url,
                    "add-checkpoint",
                    body.as_bytes(),
                    timeout,
                    MAX_ANSWER_LEN,
                );
                let judged = thread.judge(result, &note, size);
                thread.record(&judged, size);
                thread.busy.store(false, Ordering::Release);
                // The broker may have stopped waiting: then nobody reads this.
                let _ = answers.send((i, judged));
            })
            .map(drop)
            .map_err(|e| {
                remote.busy.store(false, Ordering::Release);
                format!("{name}: cannot start a request: {e}")
            })
    }

    /// What an answer taught about the witness, whether or not anyone waits for it.
    fn record(&self, judged: &Judged, size: u64) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        let mut resting = self
            .resting_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match judged {
            Judged::Cosigned(_) => {
                *known = (*known).max(size);
                *resting = None;
            }
            Judged::SeenSize(seen) => *known = *seen,
            Judged::Failed(_) => *resting = Some(Instant::now() + REST),
        }
    }

    fn judge(&self, result: Result<(u16, Vec<u8>), String>, note: &str, size: u64) -> Judged {
        let name = self.config.key.name();
        let (status, answer) = match result {
            Ok(answer) => answer,
            Err(e) => return Judged::Failed(format!("{name} ({}): {e}", self.config.url)),
        };
        match status {
            200 => match self.cosignature(note, &answer) {
                Ok(signature) => Judged::Cosigned(signature),
                Err(e) => Judged::Failed(e),
            },
            409 => {
                let seen = std::str::from_utf8(&answer)
                    .ok()
                    .and_then(|t| t.trim_end_matches('\n').parse::<u64>().ok());
                match seen {
                    None => Judged::Failed(format!("{name}: a 409 without a tree size")),
                    Some(seen) if seen > size => {
                        tracing::error!(
                            witness = name,
                            witness_size = seen,
                            log_size = size,
                            "a witness has cosigned a larger tree of this log than it holds: \
                             the log was rolled back or forked"
                        );
                        Judged::Failed(format!(
                            "{name} has cosigned a tree of {seen} entries; this log holds {size}"
                        ))
                    }
                    Some(seen) => Judged::SeenSize(seen),
                }
            }
            422 => {
                tracing::error!(
                    witness = name,
                    size,
                    "a witness refuses the checkpoint as inconsistent with the tree it \
                     cosigned: the log was forked or rewritten"
                );
                Judged::Failed(format!("{name} refuses: {}", printable(&answer)))
            }
            other => Judged::Failed(format!("{name} answered {other}: {}", printable(&answer))),
        }
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
