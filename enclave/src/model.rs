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

use std::io::Read;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use attest::wire::{ModelState, ModelStatus};
use attest::{Timestamp, TrustStore};
use sealing::release::{
    KeyRequest, Message, ReleaseError, ReleaseTrust, ReleasedKey, request_user_data,
};
use sealing::{Expected, SealError};
use tokio::io::{AsyncRead, AsyncReadExt};
use transport::Transport;
use transport::frame::{read_frame, write_frame};
use zeroize::Zeroizing;

use crate::config::ModelConfig;
use crate::nsm::{AttestationRequest, Nsm};

/// How long each step of a release may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest wait between attempts to reach the broker.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The model's status and, once ready, its plaintext (zeroized when dropped).
#[derive(Debug)]
pub struct ModelSlot {
    status: Mutex<ModelStatus>,
    plaintext: Mutex<Option<Zeroizing<Vec<u8>>>>,
}

impl ModelSlot {
    /// A slot for `id`, loading.
    pub fn new(id: &sealing::Id) -> Self {
        Self {
            status: Mutex::new(ModelStatus {
                id: id.to_string(),
                state: ModelState::Loading,
                sha384: None,
                detail: None,
            }),
            plaintext: Mutex::new(None),
        }
    }

    /// Where acquisition is.
    pub fn status(&self) -> ModelStatus {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The plaintext's length, once ready.
    pub fn plaintext_len(&self) -> Option<usize> {
        self.plaintext
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|p| p.len())
    }

    fn set(&self, state: ModelState, sha384: Option<[u8; 48]>, detail: Option<String>) {
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        status.state = state;
        status.sha384 = sha384;
        status.detail = detail.map(|d| d.chars().take(attest::wire::MAX_TEXT_LEN / 4).collect());
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

/// Acquire the model into `slot`; returns when it is ready or has failed for good.
pub async fn acquire<T: Transport>(
    transport: T,
    nsm: Arc<dyn Nsm>,
    config: ModelConfig,
    slot: Arc<ModelSlot>,
) {
    let started = Instant::now();
    let trust = match release_trust(&config) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "the model's trust settings cannot be used");
            slot.set(ModelState::Failed, None, Some(e));
            return;
        }
    };
    let mut backoff = Duration::from_secs(1);
    let released = loop {
        match release(&transport, &nsm, &config, &trust).await {
            Ok(key) => break key,
            Err(Failure::Transient(why)) => {
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
    tracing::info!(
        model = %config.id,
        key_id = %released.claims.key_id,
        log_index = released.claims.log_index,
        policy_version = released.claims.policy_version,
        elapsed_ms = key_released.as_millis(),
        "model key released and verified"
    );
    let fetched = fetch_and_open(&transport, &config, released).await;
    match fetched {
        Ok((plaintext, sha384)) => {
            tracing::info!(
                model = %config.id,
                bytes = plaintext.len(),
                transfer_and_decrypt_ms = (started.elapsed() - key_released).as_millis(),
                "model decrypted and checked; held in memory"
            );
            *slot
                .plaintext
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(plaintext);
            slot.set(ModelState::Ready, Some(sha384), None);
        }
        Err(why) => {
            tracing::error!(model = %config.id, reason = %why, "the sealed model was refused");
            slot.set(ModelState::Failed, None, Some(why));
        }
    }
}

fn release_trust(config: &ModelConfig) -> Result<ReleaseTrust, String> {
    let mut roots = TrustStore::empty();
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
        oaep_hashes: config.oaep_hashes.clone(),
    })
}

async fn step<F: std::future::Future>(what: &str, f: F) -> Result<F::Output, Failure> {
    tokio::time::timeout(STEP_TIMEOUT, f)
        .await
        .map_err(|_| Failure::Transient(format!("{what} timed out")))
}

/// One release attempt.
async fn release<T: Transport>(
    transport: &T,
    nsm: &Arc<dyn Nsm>,
    config: &ModelConfig,
    trust: &ReleaseTrust,
) -> Result<ReleasedKey, Failure> {
    let transient = |what: &str| {
        let what = what.to_owned();
        move |e: &dyn std::fmt::Display| Failure::Transient(format!("{what}: {e}"))
    };
    let mut stream = step("connecting", transport.connect_parent(config.broker_port))
        .await?
        .map_err(|e| transient("connecting to the broker relay")(&e))?;
    let id = config.id.clone();
    let request = tokio::task::spawn_blocking(move || KeyRequest::new(id))
        .await
        .map_err(|e| Failure::Final(e.to_string()))??;
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
    step("attest", write_frame(&mut stream, &attest.encode()))
        .await?
        .map_err(|e| transient("sending the attestation")(&e))?;
    let body = step("answer", read_frame(&mut stream))
        .await?
        .map_err(|e| transient("reading the answer")(&e))?;
    let answer = Message::decode(&body)?;
    Ok(request.accept(&nonce, &document, &answer, trust, Timestamp::now())?)
}

/// Stream the sealed model from the host and open it into memory.
async fn fetch_and_open<T: Transport>(
    transport: &T,
    config: &ModelConfig,
    released: ReleasedKey,
) -> Result<(Zeroizing<Vec<u8>>, [u8; 48]), String> {
    let stream = transport
        .connect_parent(config.source_port)
        .await
        .map_err(|e| format!("connecting to the host's model port: {e}"))?;
    let handle = tokio::runtime::Handle::current();
    let max_size = config.max_size;
    let opened = tokio::task::spawn_blocking(move || {
        let mut reader = BlockingReader { handle, stream };
        let claims = &released.claims;
        let expected = Expected {
            model_id: &claims.model_id,
            key_id: &claims.key_id,
            plaintext_sha384: &claims.model_digest,
            max_len: max_size.min(claims.model_len),
        };
        let plaintext = sealing::open_into_memory(&mut reader, &released.key, &expected)?;
        Ok::<_, SealError>((plaintext, claims.model_digest))
    })
    .await
    .map_err(|e| e.to_string())?;
    opened.map_err(|e| format!("{}: {e}", e.kind()))
}

/// A synchronous reader over an async stream, for use on a blocking thread.
struct BlockingReader<S> {
    handle: tokio::runtime::Handle,
    stream: S,
}

impl<S: AsyncRead + Unpin> Read for BlockingReader<S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.stream.read(buf);
        self.handle
            .block_on(async { tokio::time::timeout(STEP_TIMEOUT, read).await })
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "the host stalled"))?
    }
}
