//! Acquiring the sealed model at boot: the key from the key broker, the ciphertext from the host.
//!
//! 1. Connect to the host's relay port for the broker; send hello (the model id).
//! 2. On the challenge: a fresh ephemeral RSA key pair, and an NSM attestation document over the
//!    nonce, with the public key and `user_data` = [`request_user_data`].
//! 3. Check the broker's answer ([`KeyRequest::accept`]): its certificate under the national
//!    root in this measured configuration, its signature, every bound field, and the log proof;
//!    then unwrap the data key. The private key is gone once the answer is checked.
//! 4. Stream the sealed model from the host's model port, decrypting into memory
//!    ([`sealing::open_into_memory`]): nothing is kept unless every chunk authenticates, the file
//!    ends where its header says, and the digest is the one the broker signed.
//!
//! Transport failures (the broker or host not reachable yet) are retried with back-off; a
//! refusal, or an answer or model that does not check out, is final: the enclave reports
//! `failed` and the reason in its health answer, and holds no key.
//!
//! 5. Keep the lease. The release grants a lease, which this enclave measures on
//!    its own monotonic clock from the moment it sent the document the release answers (so a
//!    host that delays the answer shortens the lease, never lengthens it). Once at most half of
//!    it is left, it renews over the same relay with a fresh document, and retries until the
//!    lease ends. When the broker refuses (`revoked` and every other final reason), or the lease
//!    ends without a renewal, the model is withdrawn for good: inference answers 503
//!    `model_revoked` or `lease_expired`, generations in progress stop, the model's memory (its
//!    memory file, zeroed) is freed, and health reports `revoked` or `lease_expired`.

use std::io::Read;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use attest::{ServiceTrust, Timestamp};
use protocol::frame::{read_frame, write_frame};
use protocol::wire::{ModelState, ModelStatus};
use sealing::Expected;
use sealing::release::{
    KeyRequest, Message, ReleaseError, ReleaseTrust, ReleasedKey, accept_renewal,
    renewal_user_data, request_user_data,
};
use tokio::io::{AsyncRead, AsyncReadExt};
use transport::Transport;

use inference::{Engine, Loaded, ModelFile, ReleaseFacts};

use crate::config::ModelConfig;
use protocol::nsm::{AttestationRequest, Nsm};

/// How long each step of a release may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest wait between attempts to reach the broker.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The model's status, and the API it is handed to once loaded.
#[derive(Debug)]
pub struct ModelSlot {
    status: Mutex<ModelStatus>,
    api: Option<Arc<inference::Api>>,
}

impl ModelSlot {
    /// A slot for `id`, loading; once loaded the model is handed to `api`.
    pub fn new(id: &sealing::Id, api: Option<Arc<inference::Api>>) -> Self {
        Self {
            status: Mutex::new(ModelStatus {
                id: id.to_string(),
                state: ModelState::Loading,
                sha384: None,
                detail: None,
            }),
            api,
        }
    }

    /// Where acquisition is.
    pub fn status(&self) -> ModelStatus {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, state: ModelState, sha384: Option<[u8; 48]>, detail: Option<String>) {
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        // A withdrawn model stays withdrawn, whatever a load still in progress reports.
        if matches!(status.state, ModelState::Revoked | ModelState::LeaseExpired) {
            return;
        }
        status.state = state;
        status.sha384 = sha384;
        status.detail = detail.map(|d| d.chars().take(protocol::wire::MAX_TEXT_LEN / 4).collect());
        if state == ModelState::Failed
            && let (Some(api), Some(why)) = (&self.api, &status.detail)
        {
            api.set_failed(why);
        }
    }

    /// Withdraw the model for good (`state` is `Revoked` or `LeaseExpired`): the API stops
    /// answering and frees it.
    fn withdraw(&self, state: ModelState, why: &str) {
        let code = match state {
            ModelState::Revoked => "model_revoked",
            _ => "lease_expired",
        };
        let holding = self.api.as_ref().map_or(0, |api| api.withdraw(code, why));
        tracing::error!(
            state = state.as_str(),
            reason = %why,
            answers_stopping = holding,
            "the model is withdrawn: its key and weights are dropped, inference answers 503"
        );
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        status.state = state;
        status.sha384 = None;
        status.detail = Some(why.chars().take(protocol::wire::MAX_TEXT_LEN / 4).collect());
    }
}

/// Why an attempt failed: worth retrying, or final.
enum Failure {
    Transient(String),
    Final(String),
}

impl From<ReleaseError> for Failure {
    fn from(e: ReleaseError) -> Self {
        Failure::Final(format!("{}: {e}", e.kind()))
    }
}

/// An ephemeral key pair being generated off the critical path: started before it is needed
/// (at boot, and during each back-off), awaited only once the broker's challenge has arrived.
type PendingKey = tokio::task::JoinHandle<(Result<KeyRequest, ReleaseError>, Duration)>;

fn generate_key(id: sealing::Id) -> PendingKey {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let key = KeyRequest::new(id);
        (key, started.elapsed())
    })
}

/// How long the key pair took to generate, and how long the release still waited for it.
#[derive(Clone, Copy, Default)]
struct KeyTiming {
    generated: Duration,
    waited: Duration,
}

/// Acquire the model into `slot`; returns when it is ready or has failed for good.
pub async fn acquire<T: Transport>(
    transport: T,
    nsm: Arc<dyn Nsm>,
    config: ModelConfig,
    slot: Arc<ModelSlot>,
) {
    let started = Instant::now();
    let mut pending = generate_key(config.id.clone());
    let trust = match release_trust(&config) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "the model's trust settings cannot be used");
            slot.set(ModelState::Failed, None, Some(e));
            return;
        }
    };
    let mut backoff = Duration::from_secs(1);
    let (released, timing, sent) = loop {
        match release(&transport, &nsm, &config, &trust, pending).await {
            Ok(key) => break key,
            Err(Failure::Transient(why)) => {
                // The next attempt's key pair is generated during the back-off.
                pending = generate_key(config.id.clone());
                tracing::info!(reason = %why, retry_in = ?backoff, "the key broker is not reachable yet");
                slot.set(
                    ModelState::Loading,
                    None,
                    Some(format!("waiting for the key broker: {why}")),
                );
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2).min(MAX_BACKOFF);
            }
            Err(Failure::Final(why)) => {
                tracing::error!(model = %config.id, reason = %why, "the model's key was not released");
                slot.set(ModelState::Failed, None, Some(why));
                return;
            }
        }
    };
    let key_released = started.elapsed();
    // The lease runs from now on, through the transfer and the load. Renewals must be proven in
    // the log that proved the release, by the key that signed its checkpoint: another broker
    // under the same root, with its own log key and revocations, cannot renew this lease.
    let lease = Duration::from_millis(released.claims.lease_ms);
    let mut trust = trust;
    trust.log_origin = Some(released.checkpoint.checkpoint.origin.clone());
    trust
        .log_keys
        .retain(|k| released.checkpoint.signed_by.iter().any(|n| n == k.name()));
    tokio::spawn(keep_lease(
        Lease {
            transport: transport.clone(),
            nsm: nsm.clone(),
            config: config.clone(),
            trust,
            slot: slot.clone(),
            key_id: released.claims.key_id.clone(),
        },
        sent + lease,
        lease,
    ));
    tracing::info!(
        model = %config.id,
        key_id = %released.claims.key_id,
        log_index = released.claims.log_index,
        lease_ms = released.claims.lease_ms,
        policy_version = released.claims.policy_version,
        elapsed_ms = key_released.as_millis(),
        keygen_ms = timing.generated.as_millis(),
        keygen_waited_ms = timing.waited.as_millis(),
        "model key released and verified"
    );
    let facts = ReleaseFacts {
        model_digest: released.claims.model_digest,
        policy_version: released.claims.policy_version,
        key_release_index: released.claims.log_index,
        checkpoint: released.checkpoint.note.clone(),
    };
    let plaintext = match fetch_and_open(&transport, &config, released).await {
        Ok(file) => file,
        Err(why) => {
            tracing::error!(model = %config.id, reason = %why, "the sealed model was refused");
            slot.set(ModelState::Failed, None, Some(why));
            return;
        }
    };
    let decrypted = started.elapsed();
    tracing::info!(
        model = %config.id,
        bytes = plaintext.len(),
        transfer_and_decrypt_ms = (decrypted - key_released).as_millis(),
        "model decrypted and checked; loading its weights"
    );
    slot.set(
        ModelState::Loading,
        None,
        Some("decrypted; mapping the weights".into()),
    );
    // The memory file is sealed and mapped by the engine: the weights are its pages.
    let settings = inference::engine::Settings {
        repack: config.repack,
        chat_template: config.chat_template.clone(),
        cpu: Some(config.cpu.resolve()),
        ..Default::default()
    };
    let loaded = tokio::task::spawn_blocking(move || Engine::load_file(plaintext, settings)).await;
    match loaded {
        Ok(Ok((engine, report))) => {
            tracing::info!(
                model = %config.id,
                types = %report
                    .types
                    .iter()
                    .map(|(t, n)| format!("{t}:{n}"))
                    .collect::<Vec<_>>()
                    .join(","),
                tensors = report.tensors,
                weights_bytes = report.weights_bytes,
                threads = report.threads,
                cpu = report.cpu.as_str(),
                load_ms = report.elapsed.as_millis(),
                total_ms = started.elapsed().as_millis(),
                "model loaded from its memory file, as shipped"
            );
            let digest = facts.model_digest;
            if let Some(api) = &slot.api {
                api.set_model(Loaded {
                    engine,
                    release: facts,
                });
            }
            slot.set(ModelState::Ready, Some(digest), None);
        }
        Ok(Err(e)) => {
            tracing::error!(model = %config.id, error = %e, "the model cannot be loaded");
            slot.set(ModelState::Failed, None, Some(e.to_string()));
        }
        Err(e) => slot.set(ModelState::Failed, None, Some(e.to_string())),
    }
}

fn release_trust(config: &ModelConfig) -> Result<ReleaseTrust, String> {
    let mut roots = ServiceTrust::new();
    for bytes in &config.broker_roots {
        for cert in attest::load_certificates(bytes).map_err(|e| e.to_string())? {
            roots.add_root(cert).map_err(|e| e.to_string())?;
        }
    }
    let log_keys = config
        .log_keys
        .iter()
        .map(|k| proofs::NoteVerifier::parse(k).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ReleaseTrust {
        broker_roots: roots,
        log_keys,
        log_origin: None,
        witnesses: crate::config::witness_policy(
            &config.witnesses,
            config.witnesses_required,
            config.dangerous_witness_minority,
        )
        .map_err(|e| e.to_string())?,
        oaep_hashes: config.oaep_hashes.clone(),
    })
}

async fn step<F: std::future::Future>(what: &str, f: F) -> Result<F::Output, Failure> {
    tokio::time::timeout(STEP_TIMEOUT, f)
        .await
        .map_err(|_| Failure::Transient(format!("{what} timed out")))
}

/// One release attempt, with the key pair `pending` generates.
async fn release<T: Transport>(
    transport: &T,
    nsm: &Arc<dyn Nsm>,
    config: &ModelConfig,
    trust: &ReleaseTrust,
    pending: PendingKey,
) -> Result<(ReleasedKey, KeyTiming, Instant), Failure> {
    let transient = |what: &str| {
        let what = what.to_owned();
        move |e: &dyn std::fmt::Display| Failure::Transient(format!("{what}: {e}"))
    };
    let mut stream = step("connecting", transport.connect_parent(config.broker_port))
        .await?
        .map_err(|e| transient("connecting to the broker relay")(&e))?;
    let hello = Message::Hello {
        model_id: config.id.clone(),
    };
    step("hello", write_frame(&mut stream, &hello.encode()))
        .await?
        .map_err(|e| transient("sending hello")(&e))?;
    let body = step("challenge", read_frame(&mut stream))
        .await?
        .map_err(|e| transient("reading the challenge")(&e))?;
    let nonce = match Message::decode(&body)? {
        Message::Challenge { nonce, .. } => nonce,
        Message::Denied { reason, message } => {
            return Err(ReleaseError::Denied { reason, message }.into());
        }
        other => {
            return Err(ReleaseError::Unexpected {
                expected: "challenge",
                got: other.op(),
            }
            .into());
        }
    };
    let waiting = Instant::now();
    let (request, generated) = pending.await.map_err(|e| Failure::Final(e.to_string()))?;
    let request = request?;
    let timing = KeyTiming {
        generated,
        waited: waiting.elapsed(),
    };
    let user_data = request_user_data(&config.id, &nonce);
    let public_key = request.public_key_der().to_vec();
    let document = {
        let nsm = nsm.clone();
        tokio::task::spawn_blocking(move || {
            nsm.attest(&AttestationRequest {
                nonce: Some(&nonce),
                public_key: Some(&public_key),
                user_data: Some(&user_data),
            })
        })
        .await
        .map_err(|e| Failure::Final(e.to_string()))?
        .map_err(|e| Failure::Final(format!("NSM attestation failed: {e}")))?
    };
    let attest = Message::Attest {
        nonce,
        document: document.clone(),
    };
    let sent = Instant::now();
    step("attest", write_frame(&mut stream, &attest.encode()))
        .await?
        .map_err(|e| transient("sending the attestation")(&e))?;
    let body = step("answer", read_frame(&mut stream))
        .await?
        .map_err(|e| transient("reading the answer")(&e))?;
    let answer = Message::decode(&body)?;
    Ok((
        request.accept(&nonce, &document, &answer, trust, Timestamp::now())?,
        timing,
        sent,
    ))
}

/// What keeping a lease needs.
struct Lease<T> {
    transport: T,
    nsm: Arc<dyn Nsm>,
    config: ModelConfig,
    trust: ReleaseTrust,
    slot: Arc<ModelSlot>,
    key_id: sealing::Id,
}

/// Denials that say nothing about this enclave's right to the key: retried until the lease ends.
const TRANSIENT_DENIALS: [&str; 9] = [
    "busy",
    // The broker's witnesses did not answer (it sends nothing uncosigned): they may come back.
    "not_witnessed",
    "log_unavailable",
    "key_store_error",
    "internal",
    "nonce_expired",
    "nonce_unknown",
    "nonce_replayed",
    "protocol",
];

/// How a renewal attempt ended.
enum Renewal {
    /// Granted: the lease now ends at this instant, and lasts this long.
    Granted(Instant, Duration),
    /// The broker refused for good.
    Refused(String),
}

/// Keep the lease that ends at `deadline` (of length `lease`) until the broker refuses or it
/// ends without a renewal; then withdraw the model.
async fn keep_lease<T: Transport>(
    lease_state: Lease<T>,
    mut deadline: Instant,
    mut lease: Duration,
) {
    loop {
        let ends = tokio::time::Instant::from_std(deadline);
        let outcome = tokio::select! {
            biased;
            () = tokio::time::sleep_until(ends) => None,
            outcome = renew_before(&lease_state, deadline, lease) => Some(outcome),
        };
        match outcome {
            Some(Renewal::Granted(until, granted)) => {
                deadline = until;
                lease = granted;
            }
            Some(Renewal::Refused(why)) => {
                lease_state.slot.withdraw(
                    ModelState::Revoked,
                    &format!("the key broker refused to renew the lease: {why}"),
                );
                return;
            }
            None => {
                lease_state.slot.withdraw(
                    ModelState::LeaseExpired,
                    &format!(
                        "the key's lease of {} ended without a renewal (the key broker was not \
                         reachable through the host)",
                        attest::format_duration(lease)
                    ),
                );
                return;
            }
        }
    }
}

/// Wait until at most half the lease is left, then renew, retrying transient failures; the
/// caller stops this when the lease ends.
async fn renew_before<T: Transport>(l: &Lease<T>, deadline: Instant, lease: Duration) -> Renewal {
    let start = deadline.checked_sub(lease / 2).unwrap_or_else(Instant::now);
    tokio::time::sleep_until(tokio::time::Instant::from_std(start)).await;
    let mut retry = (lease / 16).clamp(Duration::from_millis(100), Duration::from_secs(1));
    loop {
        let attempt_started = Instant::now();
        match renew(l).await {
            Ok((until, granted)) => {
                tracing::info!(
                    key_id = %l.key_id,
                    lease_ms = granted.as_millis(),
                    renewal_ms = attempt_started.elapsed().as_millis(),
                    "lease renewed"
                );
                return Renewal::Granted(until, granted);
            }
            Err(Failure::Final(why)) => return Renewal::Refused(why),
            Err(Failure::Transient(why)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                tracing::warn!(reason = %why, left_ms = left.as_millis(), "the lease could not be renewed yet");
                tokio::time::sleep(retry.min(left / 4).max(Duration::from_millis(50))).await;
                retry = retry.saturating_mul(2).min(Duration::from_secs(10));
            }
        }
    }
}

/// One renewal attempt: the new lease's end (measured from when the document was sent) and
/// length.
async fn renew<T: Transport>(l: &Lease<T>) -> Result<(Instant, Duration), Failure> {
    let transient =
        |what: &str, e: &dyn std::fmt::Display| Failure::Transient(format!("{what}: {e}"));
    let mut stream = step(
        "connecting",
        l.transport.connect_parent(l.config.broker_port),
    )
    .await?
    .map_err(|e| transient("connecting to the broker relay", &e))?;
    let hello = Message::Hello {
        model_id: l.config.id.clone(),
    };
    step("hello", write_frame(&mut stream, &hello.encode()))
        .await?
        .map_err(|e| transient("sending hello", &e))?;
    let body = step("challenge", read_frame(&mut stream))
        .await?
        .map_err(|e| transient("reading the challenge", &e))?;
    let nonce = match Message::decode(&body) {
        Ok(Message::Challenge { nonce, .. }) => nonce,
        Ok(Message::Denied { reason, message }) => return Err(denied(reason, message)),
        Ok(other) => return Err(transient("the challenge", &format!("got {}", other.op()))),
        Err(e) => return Err(transient("the challenge", &e)),
    };
    let user_data = renewal_user_data(&l.config.id, &l.key_id, &nonce);
    let document = {
        let nsm = l.nsm.clone();
        tokio::task::spawn_blocking(move || {
            nsm.attest(&AttestationRequest {
                nonce: Some(&nonce),
                public_key: None,
                user_data: Some(&user_data),
            })
        })
        .await
        .map_err(|e| transient("the NSM", &e))?
        .map_err(|e| transient("NSM attestation", &e))?
    };
    let renew = Message::Renew {
        nonce,
        key_id: l.key_id.clone(),
        document: document.clone(),
    };
    let sent = Instant::now();
    step("renew", write_frame(&mut stream, &renew.encode()))
        .await?
        .map_err(|e| transient("sending the renewal", &e))?;
    let body = step("answer", read_frame(&mut stream))
        .await?
        .map_err(|e| transient("reading the answer", &e))?;
    let answer = Message::decode(&body).map_err(|e| transient("the answer", &e))?;
    match accept_renewal(
        &l.config.id,
        &l.key_id,
        &nonce,
        &document,
        &answer,
        &l.trust,
        Timestamp::now(),
    ) {
        Ok((claims, _)) => {
            let granted = Duration::from_millis(claims.lease_ms);
            Ok((sent + granted, granted))
        }
        Err(ReleaseError::Denied { reason, message }) => Err(denied(reason, message)),
        // An answer that does not check out renews nothing; whoever forged it gains nothing
        // but the lease's end.
        Err(e) => {
            tracing::error!(error = %e, "a renewal answer was refused");
            Err(transient(
                "the renewal answer",
                &format!("{}: {e}", e.kind()),
            ))
        }
    }
}

/// A denial: final unless its reason is one of [`TRANSIENT_DENIALS`].
fn denied(reason: String, message: String) -> Failure {
    if TRANSIENT_DENIALS.contains(&reason.as_str()) {
        Failure::Transient(format!("{reason}: {message}"))
    } else {
        Failure::Final(format!("{reason}: {message}"))
    }
}

/// Stream the sealed model from the host and open it into memory.
async fn fetch_and_open<T: Transport>(
    transport: &T,
    config: &ModelConfig,
    released: ReleasedKey,
) -> Result<ModelFile, String> {
    let stream = transport
        .connect_parent(config.source_port)
        .await
        .map_err(|e| format!("connecting to the host's model port: {e}"))?;
    // The transfer runs ahead of the decryption, so that the two overlap.
    let (chunks, received) = tokio::sync::mpsc::channel(READ_AHEAD);
    let receiving = tokio::spawn(receive(stream, chunks));
    let max_size = config.max_size;
    let opened = tokio::task::spawn_blocking(move || {
        let mut reader = ChannelReader {
            received,
            current: std::io::Cursor::default(),
        };
        let claims = &released.claims;
        let expected = Expected {
            model_id: &claims.model_id,
            key_id: &claims.key_id,
            plaintext_sha384: &claims.model_digest,
            max_len: max_size.min(claims.model_len),
        };
        // Decrypted a chunk at a time straight into the model's memory file: the plaintext is
        // held once. On any failure the file is dropped, unread.
        let mut file =
            ModelFile::new("model.gguf").map_err(|e| format!("the model's memory file: {e}"))?;
        sealing::open_into(&mut reader, &released.key, &expected, &mut file)
            .map_err(|e| format!("{}: {e}", e.kind()))?;
        Ok(file)
    })
    .await;
    // Nothing more is read once the opener has its verdict (a refused file is not drained).
    receiving.abort();
    opened.map_err(|e| e.to_string())?
}

/// Received pieces of the sealed file that may wait for the decryption: 8 MiB at most.
const READ_AHEAD: usize = 8;
/// The size of one received piece. The host has `STEP_TIMEOUT` to deliver each.
const PIECE_LEN: usize = 1 << 20;

/// Read the sealed file from the host in pieces, until its end, an error, a stall, or the
/// opener stops listening. The pieces are ciphertext.
async fn receive<S: AsyncRead + Unpin>(
    mut stream: S,
    chunks: tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>,
) {
    loop {
        let mut piece = Vec::with_capacity(PIECE_LEN);
        let mut limited = (&mut stream).take(u64::try_from(PIECE_LEN).unwrap_or(u64::MAX));
        let read = limited.read_to_end(&mut piece);
        let (message, last) = match tokio::time::timeout(STEP_TIMEOUT, read).await {
            Ok(Ok(n)) => (Ok(piece), n < PIECE_LEN),
            Ok(Err(e)) => (Err(e), true),
            Err(_) => (
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the host stalled",
                )),
                true,
            ),
        };
        let empty = message.as_ref().is_ok_and(Vec::is_empty);
        if !empty && chunks.send(message).await.is_err() {
            return;
        }
        if last {
            return;
        }
    }
}

/// A synchronous reader over the received pieces, for the opener on a blocking thread. The
/// end of the channel is the end of the file.
struct ChannelReader {
    received: tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    current: std::io::Cursor<Vec<u8>>,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = Read::read(&mut self.current, buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            match self.received.blocking_recv() {
                Some(piece) => self.current = std::io::Cursor::new(piece?),
                None => return Ok(0),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything `receive` reads, in order, through the reader the opener uses.
    async fn through_pipeline<S: AsyncRead + Unpin + Send + 'static>(
        stream: S,
    ) -> std::io::Result<Vec<u8>> {
        let (chunks, received) = tokio::sync::mpsc::channel(READ_AHEAD);
        tokio::spawn(receive(stream, chunks));
        tokio::task::spawn_blocking(move || {
            let mut reader = ChannelReader {
                received,
                current: std::io::Cursor::default(),
            };
            let mut out = Vec::new();
            // Odd-sized reads, as the opener's header and chunk reads are.
            let mut buf = vec![0; 77_777];
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    return Ok(out);
                }
                out.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_byte_arrives_in_order_across_pieces() {
        for len in [
            0,
            1,
            PIECE_LEN - 1,
            PIECE_LEN,
            PIECE_LEN + 1,
            (READ_AHEAD + 3) * PIECE_LEN + 12_345,
        ] {
            let data: Vec<u8> = (0..len)
                .map(|i| ((i * 31 + i / 251) % 256).to_le_bytes()[0])
                .collect();
            // A duplex pipe delivers the bytes in small writes, as a socket would.
            let (mut writer, reader) = tokio::io::duplex(64 * 1024);
            let sent = data.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                writer.write_all(&sent).await.unwrap();
            });
            let got = through_pipeline(reader).await.unwrap();
            assert_eq!(got.len(), data.len(), "length {len}");
            assert!(got == data, "length {len}: bytes differ");
        }
    }

    /// A stream that fails after some bytes: the opener sees the error, not an early end of
    /// file.
    struct FailsAfter(usize);

    impl AsyncRead for FailsAfter {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if self.0 == 0 {
                return std::task::Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "reset by the host",
                )));
            }
            let n = self.0.min(buf.remaining()).min(4096);
            buf.put_slice(&vec![7; n]);
            self.0 -= n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_transfer_is_an_error_not_an_end() {
        for after in [0, 10, PIECE_LEN, 2 * PIECE_LEN + 5] {
            let error = through_pipeline(FailsAfter(after)).await.unwrap_err();
            assert_eq!(
                error.kind(),
                std::io::ErrorKind::ConnectionReset,
                "after {after}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_host_times_out() {
        let (_writer, reader) = tokio::io::duplex(1024);
        let (chunks, mut received) = tokio::sync::mpsc::channel(READ_AHEAD);
        tokio::spawn(receive(reader, chunks));
        let error = received.recv().await.unwrap().unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        assert!(received.recv().await.is_none(), "nothing after the error");
    }
}
