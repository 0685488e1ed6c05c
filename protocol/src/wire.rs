//! The enclave's control protocol: the messages a client exchanges with the enclave, through
//! the host, which forwards the bytes without reading them. `docs/protocol.md` describes every
//! message and bound; this module is the one definition that the enclave, the host's readiness
//! probe and clients share.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of one CBOR map. The length
//! is checked against [`MAX_FRAME_LEN`] before anything is allocated. Maps carry the protocol
//! version (`v`), a request id (`id`, echoed in the response) and an operation (`op`); every other
//! field belongs to its operation, is typed and bounded, and an unknown or duplicate key is an
//! error.
//!
//! ```
//! use attest::Nonce;
//! use protocol::wire::{Request, RequestBody, read_frame, write_frame};
//!
//! let request = Request { id: 7, body: RequestBody::Attestation { nonce: Nonce::try_from(&[9u8; 32][..])? } };
//! let mut channel = Vec::new();
//! write_frame(&mut channel, &request.encode())?;
//! let body = read_frame(&mut channel.as_slice())?;
//! assert_eq!(Request::decode(&body)?, request);
//!
//! // A length prefix over the maximum is refused before any allocation.
//! let oversized = 1_000_000u32.to_be_bytes();
//! assert!(read_frame(&mut &oversized[..]).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::{self, Read, Write};

use ciborium::Value;

use attest::{MAX_DOCUMENT_LEN, MAX_USER_FIELD_LEN, Nonce};

/// The protocol version this build speaks. A peer with another version gets
/// [`ErrorCode::UnsupportedVersion`].
pub const PROTOCOL_VERSION: u64 = 1;
/// The length of a frame's prefix.
pub const FRAME_HEADER_LEN: usize = 4;
/// The largest frame body either side accepts: an attestation document at its maximum size
/// plus room for the envelope.
pub const MAX_FRAME_LEN: usize = MAX_DOCUMENT_LEN + 1024;
/// The longest error message or version string carried in a response.
pub const MAX_TEXT_LEN: usize = 256;
/// The length of the enclave configuration's digest (SHA-384).
pub const CONFIG_DIGEST_LEN: usize = 48;

/// Why a frame or message was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The length prefix announced more than [`MAX_FRAME_LEN`] bytes.
    #[error("frame of {len} bytes announced; the maximum is {max}")]
    FrameTooLarge {
        /// The announced length.
        len: u64,
        /// The maximum.
        max: usize,
    },
    /// The length prefix announced an empty frame.
    #[error("empty frame")]
    EmptyFrame,
    /// The stream ended inside a frame.
    #[error("truncated frame: the stream ended {missing} bytes short")]
    TruncatedFrame {
        /// How many announced bytes never arrived (0 when the prefix itself was cut).
        missing: usize,
    },
    /// The stream ended cleanly between frames.
    #[error("the peer closed the connection")]
    Closed,
    /// Reading or writing the stream failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The body is not one well-formed CBOR item.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The message is not a CBOR map with text keys.
    #[error("malformed message: expected a map with text keys")]
    NotAMap,
    /// A required field is missing.
    #[error("malformed message: missing field `{0}`")]
    MissingField(&'static str),
    /// A field this protocol does not define (for the message's operation).
    #[error("malformed message: unknown field `{0}`")]
    UnknownField(String),
    /// A field appears twice.
    #[error("malformed message: duplicate field `{0}`")]
    DuplicateField(String),
    /// A field has the wrong CBOR type or an out-of-range value.
    #[error("malformed message: field `{field}`: {reason}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The peer speaks another protocol version.
    #[error("unsupported protocol version {got}; this build speaks {PROTOCOL_VERSION}")]
    UnsupportedVersion {
        /// The version the peer sent.
        got: u64,
    },
    /// The operation is not one this protocol defines.
    #[error("unknown operation `{0}`")]
    UnknownOperation(String),
}

impl WireError {
    /// The error code an enclave answers with when a request fails this way.
    pub fn code(&self) -> ErrorCode {
        match self {
            WireError::FrameTooLarge { .. } | WireError::EmptyFrame => ErrorCode::FrameTooLarge,
            WireError::TruncatedFrame { .. } | WireError::Closed | WireError::Io(_) => {
                ErrorCode::TruncatedFrame
            }
            WireError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            WireError::UnknownOperation(_) => ErrorCode::UnknownOperation,
            WireError::Malformed(_)
            | WireError::NotAMap
            | WireError::MissingField(_)
            | WireError::UnknownField(_)
            | WireError::DuplicateField(_)
            | WireError::InvalidField { .. } => ErrorCode::Malformed,
        }
    }
}

/// A request from a client to the enclave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Chosen by the client and echoed in the response.
    pub id: u64,
    /// What is asked.
    pub body: RequestBody,
}

/// The operations a client may ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestBody {
    /// Is the enclave serving, and with which configuration?
    Health,
    /// A fresh attestation document over the client's nonce.
    Attestation {
        /// The client's nonce (1 to 1024 bytes); the document carries it unchanged.
        nonce: Nonce,
    },
}

/// The enclave's answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The request's id, or 0 when the request could not be read.
    pub id: u64,
    /// The answer.
    pub body: ResponseBody,
}

/// The answers the enclave gives.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResponseBody {
    /// The enclave is serving.
    Health(Health),
    /// A COSE_Sign1 attestation document, exactly as the NSM produced it.
    Attestation {
        /// The document (at most [`MAX_DOCUMENT_LEN`] bytes).
        document: Vec<u8>,
    },
    /// The request was refused or failed.
    Error {
        /// What went wrong, for programs.
        code: ErrorCode,
        /// What went wrong, for people (at most [`MAX_TEXT_LEN`] bytes).
        message: String,
    },
}

/// What the enclave reports about itself. The host may read it: none of it is secret, and none of
/// it is proof of anything until it is matched against a verified attestation document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// The enclave build's version (at most [`MAX_TEXT_LEN`] bytes).
    pub version: String,
    /// Which NSM the enclave runs on.
    pub nsm: NsmKind,
    /// SHA-384 of the enclave's canonical configuration, the value extended into its
    /// configuration PCR.
    pub config_digest: [u8; CONFIG_DIGEST_LEN],
    /// The sealed model the enclave serves, if its configuration names one.
    pub model: Option<ModelStatus>,
    /// For each port a client may reach through the host, how many connections the enclave
    /// serves at once (at most [`MAX_PORT_LIMITS`] entries). The host admits no more than this,
    /// so a port's connections never queue inside the enclave where probes cannot see them.
    pub port_limits: Vec<(u32, u32)>,
}

/// The most ports a health answer lists limits for.
pub const MAX_PORT_LIMITS: usize = 16;

/// Where an enclave is in acquiring its model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelStatus {
    /// The model's id (at most [`MAX_TEXT_LEN`] bytes).
    pub id: String,
    /// Loading, ready or failed.
    pub state: ModelState,
    /// SHA-384 of the model's plaintext, once it is loaded and checked.
    pub sha384: Option<[u8; 48]>,
    /// Why it failed, or what it is waiting for (at most [`MAX_TEXT_LEN`] bytes).
    pub detail: Option<String>,
}

/// The states of [`ModelStatus`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelState {
    /// Asking the key broker for the key, or fetching and decrypting the model.
    Loading,
    /// Decrypted, checked and held in memory.
    Ready,
    /// Refused by the broker, or the response or model did not check out.
    Failed,
}

impl ModelState {
    /// `loading`, `ready` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loading => "loading",
            Self::Ready => "ready",
            Self::Failed => "failed",
        }
    }
}

/// Which Nitro Secure Module an enclave uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NsmKind {
    /// The real NSM device of a Nitro enclave.
    Nitro,
    /// The software NSM for development, signing under a simulated Nitro root.
    Simulated,
}

impl NsmKind {
    /// The name used on the wire and in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            NsmKind::Nitro => "nitro",
            NsmKind::Simulated => "simulated",
        }
    }
}

/// Machine-readable reasons in an error response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The length prefix was over the maximum, or zero. The enclave closes the connection.
    FrameTooLarge,
    /// The connection ended, or went idle, inside a frame. The enclave closes the connection.
    TruncatedFrame,
    /// The frame's body was not a valid message. The connection stays usable.
    Malformed,
    /// The message's protocol version is not this enclave's. The connection stays usable.
    UnsupportedVersion,
    /// The operation is not defined. The connection stays usable.
    UnknownOperation,
    /// The NSM failed to produce what was asked.
    NsmFailure,
    /// The enclave is at its connection limit.
    Busy,
}

const ERROR_CODES: [(ErrorCode, &str); 7] = [
    (ErrorCode::FrameTooLarge, "frame_too_large"),
    (ErrorCode::TruncatedFrame, "truncated_frame"),
    (ErrorCode::Malformed, "malformed"),
    (ErrorCode::UnsupportedVersion, "unsupported_version"),
    (ErrorCode::UnknownOperation, "unknown_operation"),
    (ErrorCode::NsmFailure, "nsm_failure"),
    (ErrorCode::Busy, "busy"),
];

impl ErrorCode {
    /// The code's name on the wire.
    pub fn as_str(self) -> &'static str {
        ERROR_CODES
            .iter()
            .find(|(code, _)| *code == self)
            .map_or("malformed", |(_, name)| name)
    }

    fn from_name(name: &str) -> Option<Self> {
        ERROR_CODES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(code, _)| *code)
    }
}

impl core::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Request {
    /// The message's CBOR bytes (a frame body).
    pub fn encode(&self) -> Vec<u8> {
        let mut fields = envelope(self.id);
        match &self.body {
            RequestBody::Health => fields.push(text_field("op", "health")),
            RequestBody::Attestation { nonce } => {
                fields.push(text_field("op", "attestation"));
                fields.push(("nonce".into(), Value::Bytes(nonce.as_bytes().to_vec())));
            }
        }
        to_cbor(fields)
    }

    /// Decode a frame body. Strict: the version must be [`PROTOCOL_VERSION`], and every field
    /// must be one this operation defines, with the right type and size.
    pub fn decode(body: &[u8]) -> Result<Self, WireError> {
        let mut message = Message::decode(body)?;
        let body = match message.op.as_str() {
            "health" => RequestBody::Health,
            "attestation" => {
                let nonce = message.take_bytes("nonce", MAX_USER_FIELD_LEN)?;
                let nonce = Nonce::try_from(nonce).map_err(|e| WireError::InvalidField {
                    field: "nonce",
                    reason: e.to_string(),
                })?;
                RequestBody::Attestation { nonce }
            }
            _ => return Err(WireError::UnknownOperation(message.op)),
        };
        Ok(Request {
            id: message.finish()?,
            body,
        })
    }
}

impl Response {
    /// An error response with `message` cut to [`MAX_TEXT_LEN`] bytes.
    pub fn error(id: u64, code: ErrorCode, message: &str) -> Self {
        let mut end = message.len().min(MAX_TEXT_LEN);
        while !message.is_char_boundary(end) {
            end = end.saturating_sub(1);
        }
        Response {
            id,
            body: ResponseBody::Error {
                code,
                message: message.get(..end).unwrap_or_default().to_owned(),
            },
        }
    }

    /// The message's CBOR bytes (a frame body).
    pub fn encode(&self) -> Vec<u8> {
        let mut fields = envelope(self.id);
        match &self.body {
            ResponseBody::Health(health) => {
                fields.push(text_field("op", "health"));
                fields.push(text_field("version", &health.version));
                fields.push(text_field("nsm", health.nsm.as_str()));
                fields.push((
                    "config_digest".into(),
                    Value::Bytes(health.config_digest.to_vec()),
                ));
                if let Some(model) = &health.model {
                    fields.push(text_field("model", &model.id));
                    fields.push(text_field("model_state", model.state.as_str()));
                    if let Some(digest) = &model.sha384 {
                        fields.push(("model_sha384".into(), Value::Bytes(digest.to_vec())));
                    }
                    if let Some(detail) = &model.detail {
                        fields.push(text_field("model_detail", detail));
                    }
                }
                if !health.port_limits.is_empty() {
                    let limits = health
                        .port_limits
                        .iter()
                        .map(|(port, max)| {
                            (
                                Value::Integer((*port).into()),
                                Value::Integer((*max).into()),
                            )
                        })
                        .collect();
                    fields.push(("port_limits".into(), Value::Map(limits)));
                }
            }
            ResponseBody::Attestation { document } => {
                fields.push(text_field("op", "attestation"));
                fields.push(("document".into(), Value::Bytes(document.clone())));
            }
            ResponseBody::Error { code, message } => {
                fields.push(text_field("op", "error"));
                fields.push(text_field("code", code.as_str()));
                fields.push(text_field("message", message));
            }
        }
        to_cbor(fields)
    }

    /// Decode a frame body, as strictly as [`Request::decode`].
    pub fn decode(body: &[u8]) -> Result<Self, WireError> {
        let mut message = Message::decode(body)?;
        let body = match message.op.as_str() {
            "health" => {
                let version = message.take_text("version")?;
                let nsm = match message.take_text("nsm")?.as_str() {
                    "nitro" => NsmKind::Nitro,
                    "simulated" => NsmKind::Simulated,
                    other => {
                        return Err(WireError::InvalidField {
                            field: "nsm",
                            reason: format!("unknown NSM kind `{other}`"),
                        });
                    }
                };
                let digest = message.take_bytes("config_digest", CONFIG_DIGEST_LEN)?;
                let config_digest = <[u8; CONFIG_DIGEST_LEN]>::try_from(digest).map_err(|d| {
                    WireError::InvalidField {
                        field: "config_digest",
                        reason: format!("{} bytes, expected {CONFIG_DIGEST_LEN}", d.len()),
                    }
                })?;
                let model = match message.take_optional("model") {
                    None => None,
                    Some(id) => Some(ModelStatus {
                        id: Message::text(id, "model")?,
                        state: match message.take_text("model_state")?.as_str() {
                            "loading" => ModelState::Loading,
                            "ready" => ModelState::Ready,
                            "failed" => ModelState::Failed,
                            other => {
                                return Err(WireError::InvalidField {
                                    field: "model_state",
                                    reason: format!("unknown state `{other}`"),
                                });
                            }
                        },
                        sha384: message
                            .take_optional("model_sha384")
                            .map(|v| match v {
                                Value::Bytes(b) => <[u8; 48]>::try_from(b.as_slice())
                                    .map_err(|_| too_long("model_sha384", b.len(), 48)),
                                _ => Err(wrong_type("model_sha384", "a byte string")),
                            })
                            .transpose()?,
                        detail: message
                            .take_optional("model_detail")
                            .map(|v| Message::text(v, "model_detail"))
                            .transpose()?,
                    }),
                };
                let port_limits = message
                    .take_optional("port_limits")
                    .map(port_limits)
                    .transpose()?
                    .unwrap_or_default();
                ResponseBody::Health(Health {
                    version,
                    nsm,
                    config_digest,
                    model,
                    port_limits,
                })
            }
            "attestation" => ResponseBody::Attestation {
                document: message.take_bytes("document", MAX_DOCUMENT_LEN)?,
            },
            "error" => {
                let name = message.take_text("code")?;
                let code = ErrorCode::from_name(&name).ok_or(WireError::InvalidField {
                    field: "code",
                    reason: format!("unknown error code `{name}`"),
                })?;
                ResponseBody::Error {
                    code,
                    message: message.take_text("message")?,
                }
            }
            _ => return Err(WireError::UnknownOperation(message.op)),
        };
        Ok(Response {
            id: message.finish()?,
            body,
        })
    }
}

/// The length a frame header announces, checked against [`MAX_FRAME_LEN`]: call this before
/// allocating anything for the body.
pub fn frame_body_len(header: [u8; FRAME_HEADER_LEN]) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(header);
    let too_large = || WireError::FrameTooLarge {
        len: u64::from(len),
        max: MAX_FRAME_LEN,
    };
    let len = usize::try_from(len).map_err(|_| too_large())?;
    if len == 0 {
        return Err(WireError::EmptyFrame);
    }
    if len > MAX_FRAME_LEN {
        return Err(too_large());
    }
    Ok(len)
}

/// The header for a body of `len` bytes, or an error if it is over [`MAX_FRAME_LEN`].
pub fn frame_header(len: usize) -> Result<[u8; FRAME_HEADER_LEN], WireError> {
    if len == 0 {
        return Err(WireError::EmptyFrame);
    }
    match u32::try_from(len) {
        Ok(n) if len <= MAX_FRAME_LEN => Ok(n.to_be_bytes()),
        _ => Err(WireError::FrameTooLarge {
            len: u64::try_from(len).unwrap_or(u64::MAX),
            max: MAX_FRAME_LEN,
        }),
    }
}

/// Write one frame (blocking).
pub fn write_frame(writer: &mut impl Write, body: &[u8]) -> Result<(), WireError> {
    let header = frame_header(body.len())?;
    writer.write_all(&header)?;
    writer.write_all(body)?;
    writer.flush()?;
    Ok(())
}

/// Read one frame's body (blocking). A clean end of stream before the header is
/// [`WireError::Closed`]; anywhere else it is [`WireError::TruncatedFrame`].
pub fn read_frame(reader: &mut impl Read) -> Result<Vec<u8>, WireError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    let got = read_full(reader, &mut header)?;
    if got == 0 {
        return Err(WireError::Closed);
    }
    if got < FRAME_HEADER_LEN {
        return Err(WireError::TruncatedFrame { missing: 0 });
    }
    let len = frame_body_len(header)?;
    let mut body = vec![0u8; len];
    let got = read_full(reader, &mut body)?;
    if got < len {
        return Err(WireError::TruncatedFrame {
            missing: len.saturating_sub(got),
        });
    }
    Ok(body)
}

/// Fill `buf` unless the stream ends first; returns how many bytes were read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..) {
        if rest.is_empty() {
            break;
        }
        match reader.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn envelope(id: u64) -> Vec<(Value, Value)> {
    vec![
        ("v".into(), Value::Integer(PROTOCOL_VERSION.into())),
        ("id".into(), Value::Integer(id.into())),
    ]
}

fn text_field(name: &str, value: &str) -> (Value, Value) {
    (name.into(), Value::Text(value.to_owned()))
}

fn to_cbor(fields: Vec<(Value, Value)>) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing a map of integers, text and bytes into a Vec cannot fail.
    let _ = ciborium::ser::into_writer(&Value::Map(fields), &mut out);
    out
}

/// A decoded map whose envelope has been checked; operation fields are taken one by one, and
/// whatever is left over at the end is an unknown field.
struct Message {
    id: u64,
    op: String,
    fields: Vec<(String, Value)>,
}

impl Message {
    fn decode(body: &[u8]) -> Result<Self, WireError> {
        if body.len() > MAX_FRAME_LEN {
            return Err(WireError::FrameTooLarge {
                len: u64::try_from(body.len()).unwrap_or(u64::MAX),
                max: MAX_FRAME_LEN,
            });
        }
        let mut cursor = io::Cursor::new(body);
        let value: Value = ciborium::de::from_reader(&mut cursor)
            .map_err(|e| WireError::Malformed(e.to_string()))?;
        if usize::try_from(cursor.position()).ok() != Some(body.len()) {
            return Err(WireError::Malformed(
                "trailing bytes after the message".into(),
            ));
        }
        let Value::Map(entries) = value else {
            return Err(WireError::NotAMap);
        };
        let mut fields: Vec<(String, Value)> = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let Value::Text(key) = key else {
                return Err(WireError::NotAMap);
            };
            if fields.iter().any(|(k, _)| *k == key) {
                return Err(WireError::DuplicateField(key));
            }
            fields.push((key, value));
        }
        let mut message = Message {
            id: 0,
            op: String::new(),
            fields,
        };
        let version = message.take_uint("v")?;
        if version != PROTOCOL_VERSION {
            return Err(WireError::UnsupportedVersion { got: version });
        }
        message.id = message.take_uint("id")?;
        message.op = message.take_text("op")?;
        Ok(message)
    }

    fn take(&mut self, field: &'static str) -> Result<Value, WireError> {
        let index = self
            .fields
            .iter()
            .position(|(k, _)| k == field)
            .ok_or(WireError::MissingField(field))?;
        Ok(self.fields.swap_remove(index).1)
    }

    fn take_uint(&mut self, field: &'static str) -> Result<u64, WireError> {
        match self.take(field)? {
            Value::Integer(n) => u64::try_from(n).map_err(|_| WireError::InvalidField {
                field,
                reason: "not an unsigned 64-bit integer".into(),
            }),
            _ => Err(wrong_type(field, "an unsigned integer")),
        }
    }

    fn take_optional(&mut self, field: &'static str) -> Option<Value> {
        self.take(field).ok()
    }

    fn take_text(&mut self, field: &'static str) -> Result<String, WireError> {
        Self::text(self.take(field)?, field)
    }

    fn text(value: Value, field: &'static str) -> Result<String, WireError> {
        match value {
            Value::Text(text) if text.len() <= MAX_TEXT_LEN => Ok(text),
            Value::Text(text) => Err(too_long(field, text.len(), MAX_TEXT_LEN)),
            _ => Err(wrong_type(field, "a text string")),
        }
    }

    fn take_bytes(&mut self, field: &'static str, max: usize) -> Result<Vec<u8>, WireError> {
        match self.take(field)? {
            Value::Bytes(bytes) if bytes.len() <= max => Ok(bytes),
            Value::Bytes(bytes) => Err(too_long(field, bytes.len(), max)),
            _ => Err(wrong_type(field, "a byte string")),
        }
    }

    /// The message's id, once every field has been taken.
    fn finish(self) -> Result<u64, WireError> {
        match self.fields.into_iter().next() {
            Some((key, _)) => Err(WireError::UnknownField(key)),
            None => Ok(self.id),
        }
    }
}

/// `{port: max_connections}`: at most [`MAX_PORT_LIMITS`] entries, each port once, in order.
fn port_limits(value: Value) -> Result<Vec<(u32, u32)>, WireError> {
    const FIELD: &str = "port_limits";
    let Value::Map(entries) = value else {
        return Err(wrong_type(FIELD, "a map of port to limit"));
    };
    if entries.len() > MAX_PORT_LIMITS {
        return Err(WireError::InvalidField {
            field: FIELD,
            reason: format!(
                "{} entries, the maximum is {MAX_PORT_LIMITS}",
                entries.len()
            ),
        });
    }
    let number = |v: Value| match v {
        Value::Integer(n) => u32::try_from(n).map_err(|_| WireError::InvalidField {
            field: FIELD,
            reason: "not an unsigned 32-bit integer".into(),
        }),
        _ => Err(wrong_type(FIELD, "unsigned integers")),
    };
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(entries.len());
    for (port, max) in entries {
        let (port, max) = (number(port)?, number(max)?);
        if out.last().is_some_and(|(last, _)| *last >= port) {
            return Err(WireError::InvalidField {
                field: FIELD,
                reason: "ports must be listed once each, in increasing order".into(),
            });
        }
        out.push((port, max));
    }
    Ok(out)
}

fn wrong_type(field: &'static str, expected: &str) -> WireError {
    WireError::InvalidField {
        field,
        reason: format!("expected {expected}"),
    }
}

fn too_long(field: &'static str, len: usize, max: usize) -> WireError {
    WireError::InvalidField {
        field,
        reason: format!("{len} bytes, the maximum is {max}"),
    }
}

#[cfg(test)]
mod tests;
