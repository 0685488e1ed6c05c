//! The API the enclave serves, over TLS that terminates here: `POST /v1/chat/completions`
//! (JSON, or server-sent events with `stream: true`), `GET /v1/models`, and
//! `GET /attestation?nonce=<hex>`.
//!
//! Every answer carries a receipt signed by the enclave's receipt key (bound in its attestation
//! documents): in the [`RECEIPT_HEADER`] header, or the [`RECEIPT_EVENT`] event at the end of a
//! stream. Nothing about a request outlives its response: the conversation, tokens and KV cache
//! belong to the request and are dropped with it, and logs carry sizes, counts and timings only.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use attest::Timestamp;
use aws_lc_rs::digest::{self, SHA384};
use bytes::Bytes;
use data_encoding::{BASE64, HEXLOWER};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Frame, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use proofs::receipt::{ReceiptClaims, ReceiptSigner};
use protocol::channel::{ATTESTATION_PATH, RECEIPT_EVENT, RECEIPT_HEADER, tls_binding};
use protocol::nsm::{AttestationRequest, Nsm};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::api::{ApiError, parse_chat_request};
use crate::deadline::WriteDeadline;
use crate::engine::{Engine, EngineError, FinishReason, Generation};
use crate::tls::{TlsError, TlsIdentity};

/// The response body type.
pub type Body = BoxBody<Bytes, Infallible>;

/// What the key release established about the model: what receipts bind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseFacts {
    /// SHA-384 of the model's plaintext, as the broker signed it.
    pub model_digest: [u8; 48],
    /// The release-policy version the key was released under.
    pub policy_version: u64,
    /// The key-release decision's index in the transparency log.
    pub key_release_index: u64,
    /// A signed checkpoint of the log covering that index.
    pub checkpoint: String,
}

/// A model ready to answer.
#[derive(Debug)]
pub struct Loaded {
    /// The engine.
    pub engine: Engine,
    /// What its key release established.
    pub release: ReleaseFacts,
}

/// Bounds on what clients may ask of the API, and how long each step of a connection may take,
/// so that a client that opens connections and sends nothing, or stops reading, holds nothing
/// for long.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The largest request body, in bytes.
    pub max_body: usize,
    /// Generations that run at once; the others wait.
    pub max_concurrent: usize,
    /// How long a request may wait for a generation slot before it is refused (503). Nothing
    /// is sent meanwhile, so it stays below the host's idle timeout (60 s by default).
    pub queue_timeout: Duration,
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// How long the wait for a request's headers may take, also between requests.
    pub idle_timeout: Duration,
    /// How long a request's body may take to arrive once its headers have (408 after).
    pub body_timeout: Duration,
    /// How long a write to the client may make no progress: a client that stops reading loses
    /// its connection, and its generation stops.
    pub write_timeout: Duration,
    /// The longest a non-streamed answer may take, from its request to its last byte (504
    /// after, with the generation stopped). Nothing crosses the connection until a
    /// non-streamed answer is complete, and the host closes connections that carry nothing
    /// for its idle timeout (60 s by default): this stays below it. Long answers stream.
    pub max_answer_time: Duration,
    /// The longest a streamed answer may take, from its request to its last event: a client
    /// that reads just fast enough to keep the write deadline cannot hold a generation slot
    /// longer than this. The stream then ends with an `answer_timeout` error and no receipt.
    pub max_stream_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 1024 * 1024,
            max_concurrent: 1,
            queue_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_answer_time: Duration::from_secs(45),
            max_stream_time: Duration::from_secs(600),
        }
    }
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The TLS identity could not be made.
    #[error("cannot start the inference API: {0}")]
    Tls(#[from] TlsError),
    /// The receipt key could not be made.
    #[error("cannot start the inference API: {0}")]
    Receipts(#[from] proofs::receipt::ReceiptError),
}

/// The API: its TLS identity, receipt key, the model once loaded, and the generation slots.
pub struct Api {
    model_id: String,
    model: Mutex<Option<Arc<Loaded>>>,
    not_ready: Mutex<String>,
    /// Set once the model is withdrawn: generations in progress stop at their next token.
    withdrawn: Arc<AtomicBool>,
    /// Why, as a stable code and an explanation.
    withdrawal: Mutex<Option<(&'static str, String)>>,
    nsm: Arc<dyn Nsm>,
    tls: TlsIdentity,
    receipts: ReceiptSigner,
    receipt_key: Vec<u8>,
    slots: Arc<Semaphore>,
    limits: Limits,
}

impl core::fmt::Debug for Api {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Api")
            .field("model_id", &self.model_id)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Api {
    /// An API for `model_id`, with a fresh TLS key and receipt key, its attestation documents
    /// signed by `nsm`. It answers 503 until [`set_model`](Self::set_model).
    pub fn new(model_id: &str, nsm: Arc<dyn Nsm>, limits: Limits) -> Result<Self, StartError> {
        let tls = TlsIdentity::generate()?;
        let receipts = ReceiptSigner::generate()?;
        let receipt_key = receipts.public_key_der()?;
        Ok(Api {
            model_id: model_id.to_owned(),
            model: Mutex::new(None),
            not_ready: Mutex::new("the model is loading".into()),
            withdrawn: Arc::new(AtomicBool::new(false)),
            withdrawal: Mutex::new(None),
            nsm,
            tls,
            receipts,
            receipt_key,
            slots: Arc::new(Semaphore::new(limits.max_concurrent.max(1))),
            limits,
        })
    }

    /// The model is ready (unless it was withdrawn meanwhile).
    pub fn set_model(&self, loaded: Loaded) {
        let mut model = self.model.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.withdrawn.load(Ordering::SeqCst) {
            *model = Some(Arc::new(loaded));
        }
    }

    /// Withdraw the model for good: requests are answered 503 with `code` (`model_revoked`,
    /// `lease_expired`) and `why`; generations in progress stop at their next token and end
    /// with the same error, without a receipt. The model (and the memory file its weights are
    /// in, zeroed) is freed when the last of them has stopped. Returns how many answers still
    /// held it.
    pub fn withdraw(&self, code: &'static str, why: &str) -> usize {
        self.withdrawn.store(true, Ordering::SeqCst);
        *self
            .withdrawal
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((code, why.to_owned()));
        let taken = self
            .model
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        taken.map_or(0, |loaded| Arc::strong_count(&loaded).saturating_sub(1))
    }

    /// The model, if it is loaded and not withdrawn.
    fn loaded(&self) -> Option<Arc<Loaded>> {
        self.model
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The error for a request that finds no model: withdrawn, failed or loading.
    fn unavailable(&self) -> ApiError {
        if let Some((code, why)) = self
            .withdrawal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return ApiError::new(503, "server_error", code, why);
        }
        let why = self
            .not_ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        ApiError::new(503, "server_error", "model_not_ready", why)
    }

    /// The model will not become ready; requests are answered with `why`.
    pub fn set_failed(&self, why: &str) {
        *self
            .not_ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = format!("the model is not available: {why}");
    }

    /// The TLS certificate (DER) every connection presents.
    pub fn certificate(&self) -> &[u8] {
        self.tls.certificate()
    }

    /// The receipt key's SubjectPublicKeyInfo (DER), bound in every attestation document.
    pub fn receipt_public_key(&self) -> &[u8] {
        &self.receipt_key
    }

    /// Serve one connection: the TLS handshake, then HTTP/1.1 requests until the client closes
    /// it or goes idle.
    pub async fn serve_connection<S>(self: Arc<Self>, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls.server_config());
        // Below TLS, so that every write (handshake, headers, body, alerts) has the deadline.
        let stream = WriteDeadline::new(stream, self.limits.write_timeout);
        let handshake = acceptor.accept(stream);
        let tls = match tokio::time::timeout(self.limits.handshake_timeout, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::info!(error = %e, "TLS handshake refused");
                return;
            }
            Err(_) => {
                tracing::info!("TLS handshake timed out");
                return;
            }
        };
        let api = self.clone();
        // Receipts number the answers of their connection: a client learns how many answers it
        // was given, never how many the enclave has given others.
        let answers = Arc::new(AtomicU64::new(0));
        let service = hyper::service::service_fn(move |request| {
            let (api, answers) = (api.clone(), answers.clone());
            async move { Ok::<_, Infallible>(api.handle(request, &answers).await) }
        });
        let served = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.idle_timeout)
            .serve_connection(TokioIo::new(tls), service)
            .await;
        if let Err(e) = served {
            tracing::debug!(error = %e, "connection ended");
        }
    }

    /// Answer one request; `answers` numbers the answers of its connection.
    async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        answers: &Arc<AtomicU64>,
    ) -> Response<Body> {
        let path = request.uri().path().to_owned();
        let method = request.method().clone();
        let response = match (method.clone(), path.as_str()) {
            (Method::POST, "/v1/chat/completions") => self.chat(request, answers).await,
            (Method::GET, "/v1/models") => Ok(self.models()),
            (Method::GET, p) if p == ATTESTATION_PATH => {
                self.attestation(request.uri().query()).await
            }
            (_, "/v1/chat/completions" | "/v1/models") => Err(ApiError::new(
                405,
                "invalid_request_error",
                "method_not_allowed",
                format!("{method} is not allowed here"),
            )),
            _ => Err(ApiError::new(
                404,
                "invalid_request_error",
                "unknown_url",
                format!("no such endpoint: {method} {path}"),
            )),
        };
        let response = response.unwrap_or_else(error_response);
        tracing::info!(%method, path = %path, status = response.status().as_u16(), "request");
        response
    }

    fn models(&self) -> Response<Body> {
        let entry = match self.loaded() {
            Some(loaded) => json!({
                "id": self.model_id, "object": "model", "created": 0, "owned_by": "enclave",
                "ready": true,
                "sha384": HEXLOWER.encode(&loaded.release.model_digest),
                "policy_version": loaded.release.policy_version,
                "key_release_index": loaded.release.key_release_index,
            }),
            None => json!({
                "id": self.model_id, "object": "model", "created": 0, "owned_by": "enclave",
                "ready": false,
            }),
        };
        json_response(StatusCode::OK, &json!({"object": "list", "data": [entry]}))
    }

    async fn attestation(&self, query: Option<&str>) -> Result<Response<Body>, ApiError> {
        let nonce = query
            .unwrap_or_default()
            .split('&')
            .find_map(|kv| kv.strip_prefix("nonce="))
            .ok_or_else(|| {
                ApiError::invalid("nonce", "GET /attestation?nonce=<hex> needs a nonce")
            })?;
        let nonce = HEXLOWER_PERMISSIVE
            .decode(nonce.as_bytes())
            .ok()
            .filter(|n| (MIN_NONCE_LEN..=attest::MAX_USER_FIELD_LEN).contains(&n.len()))
            .ok_or_else(|| {
                ApiError::invalid(
                    "nonce",
                    format!(
                        "the nonce must be {} to {} bytes in hex",
                        MIN_NONCE_LEN,
                        attest::MAX_USER_FIELD_LEN
                    ),
                )
            })?;
        let nsm = self.nsm.clone();
        let user_data = tls_binding(self.certificate());
        let key = self.receipt_key.clone();
        let signed = tokio::task::spawn_blocking(move || {
            nsm.attest(&AttestationRequest {
                nonce: Some(&nonce),
                user_data: Some(&user_data),
                public_key: Some(&key),
            })
        })
        .await;
        let failed = |error: &dyn std::fmt::Display| {
            tracing::error!(%error, "attestation failed");
            ApiError::new(500, "server_error", "attestation_failed", "the NSM failed")
        };
        let document = match signed {
            Ok(Ok(document)) => document,
            Ok(Err(e)) => return Err(failed(&e)),
            Err(e) => return Err(failed(&e)),
        };
        let mut response = Response::new(full(document));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/cbor"));
        Ok(response)
    }

    async fn chat(
        self: &Arc<Self>,
        request: Request<Incoming>,
        answers: &Arc<AtomicU64>,
    ) -> Result<Response<Body>, ApiError> {
        let received = Instant::now();
        // Not held while the body arrives: a slow client must not keep a withdrawn model alive.
        if self.loaded().is_none() {
            return Err(self.unavailable());
        }
        let collected = tokio::time::timeout(
            self.limits.body_timeout,
            Limited::new(request.into_body(), self.limits.max_body).collect(),
        )
        .await
        .map_err(|_| {
            ApiError::new(
                408,
                "invalid_request_error",
                "request_timeout",
                format!(
                    "the request body did not arrive within {} s",
                    self.limits.body_timeout.as_secs()
                ),
            )
        })?;
        let body = collected
            .map_err(|_| {
                ApiError::new(
                    413,
                    "invalid_request_error",
                    "request_too_large",
                    format!(
                        "the request body is larger than {} bytes",
                        self.limits.max_body
                    ),
                )
            })?
            .to_bytes();
        let request_sha384 = sha384(&body);
        let Some(loaded) = self.loaded() else {
            return Err(self.unavailable());
        };
        // Parsing up to a megabyte of JSON and tokenizing it is CPU work: it runs on the
        // blocking pool, never on the threads that accept connections and answer probes.
        let (model_id, checking) = (self.model_id.clone(), loaded.clone());
        let chat = tokio::task::spawn_blocking(move || {
            let chat = parse_chat_request(&body, &model_id, random_seed)?;
            drop(body);
            if chat
                .messages
                .iter()
                .any(|m| checking.engine.contains_control_text(&m.content))
            {
                return Err(ApiError::invalid(
                    "messages",
                    "message content may not contain the chat template's control tokens",
                ));
            }
            checking
                .engine
                .check(&chat.messages, &chat.sampling)
                .map_err(|e| engine_error(&e))?;
            Ok(chat)
        })
        .await
        .map_err(|_| {
            ApiError::new(
                500,
                "server_error",
                "internal_error",
                "the request could not be checked",
            )
        })??;
        // Not held while the request waits for a slot: a withdrawal frees the model at once.
        drop(loaded);
        let permit = tokio::time::timeout(
            self.limits.queue_timeout,
            self.slots.clone().acquire_owned(),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| {
            ApiError::new(
                503,
                "server_error",
                "overloaded",
                "every generation slot stayed busy; retry later",
            )
        })?;
        // Withdrawn while the request waited for its slot: nothing more runs on the weights.
        let Some(loaded) = self.loaded() else {
            return Err(self.unavailable());
        };
        let (text_tx, text_rx) = mpsc::channel::<Zeroizing<String>>(64);
        let stream = chat.stream;
        let include_usage = chat.include_usage;
        let engine_model = loaded.clone();
        let withdrawn = self.withdrawn.clone();
        let generation = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            engine_model
                .engine
                .generate(&chat.messages, &chat.sampling, |text| {
                    // A withdrawn model stops mid-answer.
                    !withdrawn.load(Ordering::SeqCst)
                        && text_tx
                            .blocking_send(Zeroizing::new(text.to_owned()))
                            .is_ok()
                })
        });
        let context = Answer {
            api: self.clone(),
            release: loaded.release.clone(),
            id: format!("chatcmpl-{}", HEXLOWER.encode(&random_bytes::<12>())),
            created: Timestamp::now().unix_secs(),
            request_sha384,
            sequence: answers.fetch_add(1, Ordering::Relaxed),
        };
        if stream {
            let deadline = received + self.limits.max_stream_time;
            return Ok(context.stream(text_rx, generation, include_usage, deadline));
        }
        let limit = self.limits.max_answer_time;
        match tokio::time::timeout_at(received + limit, context.complete(text_rx, generation)).await
        {
            Ok(answer) => answer,
            // Dropping the answer drops its receiver, which stops the generation.
            Err(_) => Err(ApiError::new(
                504,
                "server_error",
                "answer_timeout",
                format!(
                    "a non-streamed answer must be complete within {} s of its request, because \
                     nothing crosses the connection until it is and the host closes idle \
                     connections; ask with \"stream\": true, or for fewer max_tokens",
                    limit.as_secs()
                ),
            )),
        }
    }
}

/// One answer in progress. It holds what the receipt binds, not the model: the model is held
/// only by the generation.
struct Answer {
    api: Arc<Api>,
    release: ReleaseFacts,
    id: String,
    created: u64,
    request_sha384: [u8; 48],
    /// The answer's number on its connection.
    sequence: u64,
}

type GenerationTask = tokio::task::JoinHandle<Result<Generation, EngineError>>;

impl Answer {
    async fn complete(
        self,
        mut text_rx: mpsc::Receiver<Zeroizing<String>>,
        generation: GenerationTask,
    ) -> Result<Response<Body>, ApiError> {
        let mut text = Zeroizing::new(String::new());
        while let Some(piece) = text_rx.recv().await {
            text.push_str(&piece);
        }
        let generation = finished(generation).await?;
        if self.api.withdrawn.load(Ordering::SeqCst) {
            return Err(self.api.unavailable());
        }
        let body = json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.api.model_id,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text.as_str()},
                "finish_reason": generation.finish_reason.as_str(),
            }],
            "usage": usage(&generation),
        });
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        crate::api::wipe(body);
        let receipt = self.receipt(&sha384(&bytes))?;
        log_generation(&self.id, &generation, false);
        let mut response = Response::new(full(bytes));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Ok(value) = HeaderValue::from_str(&BASE64.encode(&receipt)) {
            headers.insert(RECEIPT_HEADER, value);
        }
        Ok(response)
    }

    fn stream(
        self,
        text_rx: mpsc::Receiver<Zeroizing<String>>,
        generation: GenerationTask,
        include_usage: bool,
        deadline: Instant,
    ) -> Response<Body> {
        let (body_tx, body_rx) = mpsc::channel::<Bytes>(64);
        let timeout_tx = body_tx.clone();
        let limit = self.api.limits.max_stream_time;
        tokio::spawn(async move {
            let events = self.stream_events(text_rx, generation, include_usage, body_tx);
            if tokio::time::timeout_at(deadline, events).await.is_err() {
                // The events' future is dropped, and with it the receiver the generation
                // writes to: the generation stops.
                let error = ApiError::new(
                    504,
                    "server_error",
                    "answer_timeout",
                    format!(
                        "a streamed answer must be complete within {} s",
                        limit.as_secs()
                    ),
                );
                let event = format!("data: {}\n\n", error.body()).into_bytes();
                let _ = timeout_tx.try_send(Bytes::from(event));
            }
        });
        let mut response = Response::new(BoxBody::new(ChannelBody(body_rx)));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert("cache-control", HeaderValue::from_static("no-store"));
        response
    }

    async fn stream_events(
        self,
        mut text_rx: mpsc::Receiver<Zeroizing<String>>,
        generation: GenerationTask,
        include_usage: bool,
        body_tx: mpsc::Sender<Bytes>,
    ) {
        {
            let mut hasher = digest::Context::new(&SHA384);
            let send = |hasher: &mut digest::Context, event: Vec<u8>| {
                hasher.update(&event);
                body_tx.send(Bytes::from(event))
            };
            let first = self.chunk(json!({"role": "assistant", "content": ""}), None, None);
            if send(&mut hasher, first).await.is_err() {
                return;
            }
            while let Some(piece) = text_rx.recv().await {
                let event = self.chunk(json!({"content": piece.as_str()}), None, None);
                if send(&mut hasher, event).await.is_err() {
                    // The client went away: dropping the receiver cancels the generation.
                    return;
                }
            }
            let generation = match finished(generation).await {
                Ok(_) if self.api.withdrawn.load(Ordering::SeqCst) => {
                    let event = format!("data: {}\n\n", self.api.unavailable().body());
                    let _ = send(&mut hasher, event.into_bytes()).await;
                    return;
                }
                Ok(g) => g,
                Err(e) => {
                    let event = format!("data: {}\n\n", e.body()).into_bytes();
                    let _ = send(&mut hasher, event).await;
                    return;
                }
            };
            let usage = include_usage.then(|| usage(&generation));
            let last = self.chunk(json!({}), Some(generation.finish_reason), usage);
            if send(&mut hasher, last).await.is_err() {
                return;
            }
            let response_sha384 = finish_digest(hasher);
            match self.receipt(&response_sha384) {
                Ok(receipt) => {
                    let event = format!(
                        "event: {RECEIPT_EVENT}\ndata: {}\n\n",
                        BASE64.encode(&receipt)
                    );
                    let _ = body_tx.send(Bytes::from(event)).await;
                }
                Err(e) => tracing::error!(error = ?e, "cannot sign a receipt"),
            }
            let _ = body_tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
            log_generation(&self.id, &generation, true);
        }
    }

    fn chunk(&self, delta: Value, finish: Option<FinishReason>, usage: Option<Value>) -> Vec<u8> {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.api.model_id,
            "choices": [{
                "index": 0,
                "delta": delta,
                "finish_reason": finish.map(FinishReason::as_str),
            }],
        });
        if let (Some(usage), Value::Object(map)) = (usage, &mut chunk) {
            map.insert("usage".into(), usage);
        }
        let mut event = b"data: ".to_vec();
        event.extend_from_slice(&serde_json::to_vec(&chunk).unwrap_or_default());
        event.extend_from_slice(b"\n\n");
        crate::api::wipe(chunk);
        event
    }

    fn receipt(&self, response_sha384: &[u8; 48]) -> Result<Vec<u8>, ApiError> {
        let release = &self.release;
        let claims = ReceiptClaims {
            time: Timestamp::now(),
            sequence: self.sequence,
            request_sha384: self.request_sha384,
            response_sha384: *response_sha384,
            model_digest: release.model_digest,
            policy_version: release.policy_version,
            key_release_index: release.key_release_index,
            checkpoint: release.checkpoint.clone(),
        };
        self.api.receipts.sign(&claims).map_err(|e| {
            tracing::error!(error = %e, "cannot sign a receipt");
            ApiError::new(
                500,
                "server_error",
                "receipt_failed",
                "cannot sign the receipt",
            )
        })
    }
}

async fn finished(generation: GenerationTask) -> Result<Generation, ApiError> {
    match generation.await {
        Ok(Ok(g)) => Ok(g),
        Ok(Err(e)) => Err(engine_error(&e)),
        Err(_) => Err(ApiError::new(
            500,
            "server_error",
            "generation_failed",
            "the generation task failed",
        )),
    }
}

fn engine_error(e: &EngineError) -> ApiError {
    match e {
        // The model's own chat template refused the conversation (roles out of order, say).
        EngineError::Template(_) => ApiError {
            status: 400,
            kind: "invalid_request_error",
            message: e.to_string(),
            param: Some("messages"),
            code: Some("invalid_conversation"),
        },
        EngineError::ContextLength { .. } | EngineError::PromptBytes { .. } => ApiError {
            status: 400,
            kind: "invalid_request_error",
            message: e.to_string(),
            param: Some("messages"),
            code: Some("context_length_exceeded"),
        },
        _ => {
            tracing::error!(error = %e, "generation failed");
            ApiError::new(
                500,
                "server_error",
                "generation_failed",
                "generation failed",
            )
        }
    }
}

fn usage(g: &Generation) -> Value {
    json!({
        "prompt_tokens": g.prompt_tokens,
        "completion_tokens": g.completion_tokens,
        "total_tokens": g.prompt_tokens.saturating_add(g.completion_tokens),
    })
}

/// Sizes and timings only: never text.
fn log_generation(id: &str, g: &Generation, stream: bool) {
    tracing::info!(
        id,
        stream,
        prompt_tokens = g.prompt_tokens,
        completion_tokens = g.completion_tokens,
        finish_reason = g.finish_reason.as_str(),
        ttft_ms = g.time_to_first_token.map(|d| d.as_millis()),
        elapsed_ms = g.elapsed.as_millis(),
        "chat completion"
    );
}

fn error_response(error: ApiError) -> Response<Body> {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &error.body())
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(full(serde_json::to_vec(body).unwrap_or_default()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn full(bytes: Vec<u8>) -> Body {
    BoxBody::new(Full::new(Bytes::from(bytes)))
}

/// A response body fed by a channel: each message is one data frame.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b))))
    }
}

/// The shortest nonce `/attestation` accepts: a client needs at least 128 bits of its own.
const MIN_NONCE_LEN: usize = 16;

const HEXLOWER_PERMISSIVE: data_encoding::Encoding = data_encoding::HEXLOWER_PERMISSIVE;

fn sha384(bytes: &[u8]) -> [u8; 48] {
    finish_digest({
        let mut c = digest::Context::new(&SHA384);
        c.update(bytes);
        c
    })
}

fn finish_digest(context: digest::Context) -> [u8; 48] {
    let mut out = [0u8; 48];
    out.copy_from_slice(context.finish().as_ref());
    out
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // aws-lc's generator does not fail on Linux; a zero id or seed would be harmless anyway.
    let _ = aws_lc_rs::rand::fill(&mut out);
    out
}

fn random_seed() -> u64 {
    u64::from_le_bytes(random_bytes::<8>())
}
