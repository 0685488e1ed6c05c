//! The verifying client of the enclave's inference API.
//!
//! A [`Session`] is one TLS 1.3 connection to the enclave, on which, in this order:
//!
//! 1. the client asks for an attestation document over a fresh random nonce
//!    (`GET /attestation?nonce=`);
//! 2. it verifies the document against the caller's trust anchors and policy, requiring the
//!    nonce, and checks that the document binds the certificate this connection's handshake was
//!    signed with ([`protocol::channel::check_tls_binding`]);
//! 3. only then does it send a prompt, and it accepts an answer only with a receipt that the
//!    key bound in that same document signed over the exact request and response bytes
//!    ([`proofs::receipt::verify_receipt`]).
//!
//! Nothing of the caller's leaves the machine before step 2 succeeds. The host, the cloud
//! operator, and anything else on the path see TLS records only.
//!
//! The API is asynchronous (tokio); the `attest chat` command wraps it for the shell.

mod sse;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use attest::{Nonce, Policy, Timestamp, UnpinnedImage, VerifiedDocument, Verifier, VerifyError};
use aws_lc_rs::digest::{SHA384, digest};
use bytes::Bytes;
use data_encoding::{BASE64, HEXLOWER};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, body::Incoming};
use hyper_util::rt::TokioIo;
use proofs::NoteVerifier;
use proofs::cosignature::WitnessPolicy;
use proofs::receipt::{MAX_RECEIPT_LEN, Receipt, ReceiptError, ReceiptPolicy, VerifiedReceipt};
use protocol::channel::{ATTESTATION_PATH, BindingError, RECEIPT_HEADER, check_tls_binding};
use rustls_pki_types::ServerName;
use serde_json::{Value, json};

/// The largest answer accepted, streamed or not.
pub const MAX_RESPONSE_LEN: usize = 16 * 1024 * 1024;
/// The largest error or model-list body accepted.
const MAX_SMALL_BODY_LEN: usize = 64 * 1024;
/// The nonce's length: fresh and random for every session.
const NONCE_LEN: usize = 32;

/// What the client trusts and requires. Shared by every session.
///
/// Built with [`Trust::new`], which refuses a policy that does not pin the enclave image: a
/// prompt never goes to "any genuine enclave". [`Trust::dangerous_any_image`] skips that check,
/// for development only.
#[derive(Debug)]
pub struct Trust {
    /// Verifies attestation documents against the caller's document trust (a national root and
    /// its cross-certificate, or AWS's root).
    verifier: Verifier,
    /// What the document must satisfy: measurements, debug, age, regions. The session adds its
    /// own nonce. Receipts judge the same document at their signing time, so `max_age` bounds
    /// how long one session may keep receiving answers.
    policy: Policy,
    /// The model that must answer (SHA-384), if pinned. When not pinned, the receipt's digest is
    /// reported, and the measurements pinned in `policy` decide which model the enclave may
    /// have been released.
    model_digest: Option<[u8; 48]>,
    /// The release-policy version the model key must have been released under, if pinned.
    policy_version: Option<u64>,
    /// Keys that sign the key-release log's checkpoints. Empty skips the log check, which the
    /// caller must choose explicitly.
    log_keys: Vec<NoteVerifier>,
    /// The log's origin, if pinned.
    log_origin: Option<String>,
    /// The witnesses that must have cosigned the log's checkpoint.
    witnesses: WitnessPolicy,
}

impl Trust {
    /// Trust documents `verifier` accepts under `policy`, which must pin the enclave image
    /// ([`Policy::check_pins_image`]: PCR0, or PCR8 with a named signing certificate, in every
    /// measurement set). Nothing is sent to an enclave that a policy pinning nothing would let
    /// through, because nothing is built.
    pub fn new(verifier: Verifier, policy: Policy) -> Result<Self, UnpinnedImage> {
        policy.check_pins_image()?;
        Ok(Self::dangerous_any_image(verifier, policy))
    }

    /// Like [`Trust::new`], without requiring a pinned image: any genuine enclave under the
    /// verifier's roots is trusted with the prompt. For development only.
    pub fn dangerous_any_image(verifier: Verifier, policy: Policy) -> Self {
        Self {
            verifier,
            policy,
            model_digest: None,
            policy_version: None,
            log_keys: Vec::new(),
            log_origin: None,
            witnesses: WitnessPolicy::none(),
        }
    }

    /// Require the answering model to have this SHA-384.
    #[must_use]
    pub fn model_digest(mut self, digest: [u8; 48]) -> Self {
        self.model_digest = Some(digest);
        self
    }

    /// Require the model key to have been released under this release-policy version.
    #[must_use]
    pub fn policy_version(mut self, version: u64) -> Self {
        self.policy_version = Some(version);
        self
    }

    /// Check receipts' key-release log checkpoints against these keys (and this origin, if
    /// given). Without keys the log is not checked.
    #[must_use]
    pub fn log(mut self, keys: Vec<NoteVerifier>, origin: Option<String>) -> Self {
        self.log_keys = keys;
        self.log_origin = origin;
        self
    }

    /// Require receipts' log checkpoints to carry cosignatures from these witnesses (with
    /// [`Trust::log`]: a cosigned checkpoint is still one the log's key signed).
    #[must_use]
    pub fn witnesses(mut self, witnesses: WitnessPolicy) -> Self {
        self.witnesses = witnesses;
        self
    }

    /// The policy documents must satisfy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

/// Time limits.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// TCP connect, TLS handshake, attestation and the model list, together.
    pub setup: Duration,
    /// One chat completion, from request to receipt.
    pub answer: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            setup: Duration::from_secs(30),
            answer: Duration::from_secs(600),
        }
    }
}

/// Why a session or an answer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No TCP connection.
    #[error("cannot connect to {address}: {reason}")]
    Connect {
        /// The endpoint.
        address: String,
        /// Why.
        reason: String,
    },
    /// The TLS handshake failed.
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// A step took too long.
    #[error("{what}: no answer within {seconds} s")]
    Timeout {
        /// What was waited for.
        what: &'static str,
        /// The limit.
        seconds: u64,
    },
    /// The HTTP exchange failed (connection closed, malformed HTTP).
    #[error("HTTP: {0}")]
    Http(String),
    /// The API refused the request with an error of its own (its message, as sent).
    #[error("the API answered {status}: {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The OpenAI-style error code, if any.
        code: Option<String>,
        /// The error message.
        message: String,
    },
    /// The attestation document did not verify. Nothing was sent.
    #[error("the attestation document is refused: {0}")]
    Attestation(String),
    /// The document is authentic but does not vouch for this connection. Nothing was sent.
    #[error("{0}")]
    Binding(#[from] BindingError),
    /// The answer's receipt did not verify: the answer must not be trusted.
    #[error("the answer's receipt is refused: {0}")]
    Receipt(#[from] ReceiptError),
    /// The enclave's side broke the protocol (a missing receipt, a malformed stream).
    #[error("the answer breaks the protocol: {0}")]
    Protocol(String),
}

impl ClientError {
    /// A verdict against the enclave or its answer (the caller must not trust it), as opposed
    /// to an error that prevented reaching one.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ClientError::Attestation(_)
                | ClientError::Binding(_)
                | ClientError::Receipt(_)
                | ClientError::Protocol(_)
        )
    }

    /// A stable name for scripts.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Connect { .. } => "connect",
            ClientError::Tls(_) => "tls",
            ClientError::Timeout { .. } => "timeout",
            ClientError::Http(_) => "http",
            ClientError::Api { .. } => "api_error",
            ClientError::Attestation(_) => "attestation_refused",
            ClientError::Binding(_) => "channel_not_bound",
            ClientError::Receipt(_) => "receipt_refused",
            ClientError::Protocol(_) => "protocol",
        }
    }
}

impl From<VerifyError> for ClientError {
    fn from(e: VerifyError) -> Self {
        ClientError::Attestation(e.to_string())
    }
}

/// A model the API lists (`GET /v1/models`), as the attested enclave reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    /// The id requests name.
    pub id: String,
    /// The model's SHA-384 (hex), if loaded.
    pub digest: Option<String>,
}

/// One chat request.
#[derive(Clone, Debug, Default)]
pub struct ChatRequest {
    /// `(role, content)` pairs: `system`, `user`, `assistant`.
    pub messages: Vec<(String, String)>,
    /// The model id; the session's first listed model if `None`.
    pub model: Option<String>,
    /// At most this many tokens (the API's default if `None`).
    pub max_tokens: Option<u32>,
    /// Sampling temperature; 0 is greedy (the API's default if `None`).
    pub temperature: Option<f64>,
    /// The sampling seed (random if `None`).
    pub seed: Option<u64>,
    /// Stream the answer as server-sent events.
    pub stream: bool,
}

/// An answer whose receipt verified.
#[derive(Debug)]
pub struct Answer {
    /// The assistant's text.
    pub text: String,
    /// `stop`, `length` or `cancelled`.
    pub finish_reason: String,
    /// Token counts, if the API reported them.
    pub usage: Option<Value>,
    /// The request body, exactly as sent (what the receipt's request hash covers).
    pub request_body: Vec<u8>,
    /// The response body, exactly as received up to the receipt (what its response hash covers).
    pub response_body: Vec<u8>,
    /// The receipt (COSE_Sign1).
    pub receipt: Vec<u8>,
    /// The verified receipt, with the document that vouches for its key.
    pub verified: VerifiedReceipt,
}

/// One attested connection to the enclave's API.
pub struct Session {
    sender: SendRequest<Full<Bytes>>,
    trust: Arc<Trust>,
    timeouts: Timeouts,
    authority: String,
    nonce: Nonce,
    document: Vec<u8>,
    verified: VerifiedDocument,
    certificate_sha384: [u8; 48],
    models: Vec<ModelInfo>,
}

impl core::fmt::Debug for Session {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Session")
            .field("authority", &self.authority)
            .field("module_id", &self.verified.module_id())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Connect to `address` (`host:port`), and attest the connection: on success, the document
    /// verified under `trust` with this session's nonce and binds this connection's certificate.
    pub async fn connect(
        address: &str,
        trust: Arc<Trust>,
        timeouts: Timeouts,
    ) -> Result<Session, ClientError> {
        within(timeouts.setup, "connecting and attesting", async {
            Session::establish(address, trust, timeouts).await
        })
        .await?
    }

    async fn establish(
        address: &str,
        trust: Arc<Trust>,
        timeouts: Timeouts,
    ) -> Result<Session, ClientError> {
        let connect_error = |reason: String| ClientError::Connect {
            address: address.to_owned(),
            reason,
        };
        let tcp = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let config = tls::client_config().map_err(|e| ClientError::Tls(e.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(server_name(address)?, tcp)
            .await
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let certificate = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(<[_]>::first)
            .ok_or_else(|| ClientError::Tls("the server presented no certificate".into()))?
            .to_vec();

        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(async move {
            // Ends when the session is dropped or the server closes.
            let _ = connection.await;
        });

        let mut sender = sender;
        let mut random = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut random)
            .map_err(|_| ClientError::Tls("no randomness for the nonce".into()))?;
        let nonce = Nonce::try_from(&random[..])
            .map_err(|e| ClientError::Protocol(format!("nonce: {e}")))?;

        // The document, over this connection; nothing else is sent before it is checked.
        let path = format!(
            "{ATTESTATION_PATH}?nonce={}",
            HEXLOWER.encode(nonce.as_bytes())
        );
        let response = send(&mut sender, address, Method::GET, &path, Bytes::new()).await?;
        let document = read_body(response, attest::MAX_DOCUMENT_LEN)
            .await?
            .to_vec();
        let parsed = attest::parse(&document)
            .map_err(|e| ClientError::Attestation(format!("malformed: {e}")))?;
        let policy = trust.policy.clone().expect_nonce(nonce.clone());
        let verified = trust.verifier.verify(&parsed, &policy, Timestamp::now())?;
        check_tls_binding(verified.user_data(), &certificate)?;
        if verified.public_key().is_none() {
            return Err(ClientError::Attestation(
                "the document binds no receipt key (public_key is absent)".into(),
            ));
        }

        let response = send(
            &mut sender,
            address,
            Method::GET,
            "/v1/models",
            Bytes::new(),
        )
        .await?;
        let models = parse_models(&read_body(response, MAX_SMALL_BODY_LEN).await?)?;
        Ok(Session {
            sender,
            trust,
            timeouts,
            authority: address.to_owned(),
            nonce,
            document,
            verified,
            certificate_sha384: sha384(&certificate),
            models,
        })
    }

    /// The verified attestation document that vouches for this connection.
    pub fn document(&self) -> &VerifiedDocument {
        &self.verified
    }

    /// The document's bytes (raw CBOR), for keeping with the receipts.
    pub fn document_bytes(&self) -> &[u8] {
        &self.document
    }

    /// SHA-384 of the enclave's TLS certificate, as the document binds it.
    pub fn certificate_sha384(&self) -> &[u8; 48] {
        &self.certificate_sha384
    }

    /// The models the enclave lists.
    pub fn models(&self) -> &[ModelInfo] {
        &self.models
    }

    /// Ask, and accept the answer only with a receipt that verifies. `on_text` receives the
    /// text as it streams, before the receipt is checked (a caller that acts on it must wait
    /// for `Ok`); for a non-streamed answer it receives the whole text once, after the check.
    pub async fn chat(
        &mut self,
        request: &ChatRequest,
        on_text: impl FnMut(&str),
    ) -> Result<Answer, ClientError> {
        let limit = self.timeouts.answer;
        within(limit, "the answer", self.chat_inner(request, on_text)).await?
    }

    async fn chat_inner(
        &mut self,
        request: &ChatRequest,
        mut on_text: impl FnMut(&str),
    ) -> Result<Answer, ClientError> {
        let model = match &request.model {
            Some(model) => model.clone(),
            None => self
                .models
                .first()
                .map(|m| m.id.clone())
                .ok_or_else(|| ClientError::Protocol("the API lists no model".into()))?,
        };
        let body = request_body(request, &model);
        let response = send(
            &mut self.sender,
            &self.authority,
            Method::POST,
            "/v1/chat/completions",
            Bytes::from(body.clone()),
        )
        .await?;
        let (text, finish_reason, usage, response_body, receipt) = if request.stream {
            let mut events = sse::EventStream::new(MAX_RESPONSE_LEN);
            let mut incoming = response.into_body();
            while let Some(frame) = incoming.frame().await {
                let frame = frame.map_err(|e| ClientError::Http(e.to_string()))?;
                if let Ok(data) = frame.into_data() {
                    events.push(&data, &mut on_text)?;
                }
            }
            let done = events.finish()?;
            (
                done.text,
                done.finish_reason,
                done.usage,
                done.hashed,
                done.receipt,
            )
        } else {
            let receipt = response
                .headers()
                .get(RECEIPT_HEADER)
                .map(|v| BASE64.decode(v.as_bytes()))
                .transpose()
                .map_err(|_| ClientError::Protocol("the receipt header is not base64".into()))?
                .ok_or_else(|| ClientError::Protocol("the answer carries no receipt".into()))?;
            let body = read_body(response, MAX_RESPONSE_LEN).await?;
            let (text, finish_reason, usage) = completion(&body)?;
            (text, finish_reason, usage, body.to_vec(), receipt)
        };
        if receipt.len() > MAX_RECEIPT_LEN {
            return Err(ClientError::Protocol("the receipt is too large".into()));
        }
        let verified = self.verify_receipt(&receipt, &body, &response_body)?;
        if !request.stream {
            // Handed over only once verified.
            on_text(&text);
        }
        Ok(Answer {
            text,
            finish_reason,
            usage,
            request_body: body,
            response_body,
            receipt,
            verified,
        })
    }

    fn verify_receipt(
        &self,
        receipt: &[u8],
        request: &[u8],
        response: &[u8],
    ) -> Result<VerifiedReceipt, ClientError> {
        let model_digest = match self.trust.model_digest {
            Some(digest) => digest,
            // Not pinned: whatever the receipt names, which the signature check below covers.
            None => Receipt::parse(receipt)?.claims.model_digest,
        };
        let policy = ReceiptPolicy {
            attestation: self.trust.policy.clone().expect_nonce(self.nonce.clone()),
            model_digest,
            policy_version: self.trust.policy_version,
            log_keys: self.trust.log_keys.clone(),
            log_origin: self.trust.log_origin.clone(),
            witnesses: self.trust.witnesses.clone(),
        };
        Ok(proofs::receipt::verify_receipt(
            receipt,
            &self.document,
            &self.trust.verifier,
            &policy,
            &sha384(request),
            &sha384(response),
        )?)
    }
}

/// One request on the session's connection; a non-2xx answer becomes [`ClientError::Api`].
async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    authority: &str,
    method: Method,
    path: &str,
    body: Bytes,
) -> Result<Response<Incoming>, ClientError> {
    let mut builder = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(HOST, authority);
    if method == Method::POST {
        builder = builder.header(CONTENT_TYPE, "application/json");
    }
    let request = builder
        .body(Full::new(body))
        .map_err(|e| ClientError::Http(e.to_string()))?;
    sender
        .ready()
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status().as_u16();
    let body = read_body(response, MAX_SMALL_BODY_LEN)
        .await
        .unwrap_or_default();
    Err(api_error(status, &body))
}

async fn within<T>(
    limit: Duration,
    what: &'static str,
    future: impl Future<Output = T>,
) -> Result<T, ClientError> {
    tokio::time::timeout(limit, future)
        .await
        .map_err(|_| ClientError::Timeout {
            what,
            seconds: limit.as_secs(),
        })
}

fn server_name(address: &str) -> Result<ServerName<'static>, ClientError> {
    // The name is not checked (the attestation document vouches for the certificate); it is
    // sent as SNI when it is a DNS name.
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|_| ClientError::Connect {
        address: address.to_owned(),
        reason: "not a host name or IP address with a port".into(),
    })
}

async fn read_body(response: Response<Incoming>, limit: usize) -> Result<Bytes, ClientError> {
    Limited::new(response.into_body(), limit)
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .map_err(|e| ClientError::Http(format!("reading the body (at most {limit} bytes): {e}")))
}

fn parse_models(body: &[u8]) -> Result<Vec<ModelInfo>, ClientError> {
    let list: Value = serde_json::from_slice(body)
        .map_err(|e| ClientError::Protocol(format!("the model list: {e}")))?;
    let models = list
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| ClientError::Protocol("the model list has no `data` array".into()))?
        .iter()
        .filter_map(|m| {
            Some(ModelInfo {
                id: m.get("id")?.as_str()?.to_owned(),
                digest: m.get("digest").and_then(Value::as_str).map(str::to_owned),
            })
        })
        .collect();
    Ok(models)
}

fn api_error(status: u16, body: &[u8]) -> ClientError {
    let error = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").cloned());
    let field = |name: &str| {
        error
            .as_ref()
            .and_then(|e| e.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    ClientError::Api {
        status,
        code: field("code"),
        message: field("message").unwrap_or_else(|| "(no error message)".to_owned()),
    }
}

fn request_body(request: &ChatRequest, model: &str) -> Vec<u8> {
    let messages: Vec<Value> = request
        .messages
        .iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    let mut body = json!({"model": model, "messages": messages, "stream": request.stream});
    if let Value::Object(map) = &mut body {
        if let Some(n) = request.max_tokens {
            map.insert("max_tokens".into(), n.into());
        }
        if let Some(t) = request.temperature {
            map.insert("temperature".into(), t.into());
        }
        if let Some(seed) = request.seed {
            map.insert("seed".into(), seed.into());
        }
        if request.stream {
            map.insert("stream_options".into(), json!({"include_usage": true}));
        }
    }
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Text, finish reason and usage of a non-streamed completion.
fn completion(body: &[u8]) -> Result<(String, String, Option<Value>), ClientError> {
    let malformed = |what: &str| ClientError::Protocol(format!("the completion {what}"));
    let value: Value =
        serde_json::from_slice(body).map_err(|e| malformed(&format!("is not JSON: {e}")))?;
    let choice = value
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or_else(|| malformed("has no choice"))?;
    let text = choice
        .get("message")
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("has no message content"))?
        .to_owned();
    let finish = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    Ok((text, finish, value.get("usage").cloned()))
}

fn sha384(bytes: &[u8]) -> [u8; 48] {
    let mut out = [0u8; 48];
    out.copy_from_slice(digest(&SHA384, bytes).as_ref());
    out
}
