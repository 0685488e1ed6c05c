//! The enclave's control protocol: the messages a client exchanges with the enclave, through
//! the host, which forwards the bytes without reading them. `docs/protocol.md` describes every
//! message and bound; this module is the one definition that the enclave, the host's readiness
//! probe and clients share.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of one CBOR map. The length
//! is checked against [`MAX_FRAME_LEN`] before anything is allocated. Maps carry the protocol
//! version (`v`), a request id (`id`, echoed in the response) and an operation (`op`); every other
//! field belongs to its operation, is typed and bounded, and an unknown or duplicate key is an
//! error. Messages are in the deterministic encoding (RFC 8949 section 4.2.1, through the
//! [`cbor`] crate), so each has exactly one.
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

use attest::{MAX_DOCUMENT_LEN, MAX_USER_FIELD_LEN, Nonce};
use cbor::{Map, Profile, Reader, Value};

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
    /// The body is not one map in the deterministic encoding with the protocol's fields, each
    /// once and of its type: the reader's error names the field and the byte.
    #[error("malformed message: {0}")]
    Malformed(#[from] cbor::Error),
    /// A field the message's operation requires is missing.
    #[error("malformed message: missing field `{0}`")]
    MissingField(&'static str),
    /// A field of the protocol that the message's operation does not define.
    #[error("malformed message: field `{0}` is not one of this operation's")]
    UnknownField(&'static str),
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
            | WireError::MissingField(_)
            | WireError::UnknownField(_)
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
    /// Loading, ready, failed, revoked or lease expired.
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
    /// The broker refused to renew the key's lease: the model and key are gone.
    Revoked,
    /// The key's lease ended without a renewal (the broker unreachable, or its traffic
    /// dropped): the model and key are gone.
    LeaseExpired,
}

impl ModelState {
    /// `loading`, `ready`, `failed`, `revoked` or `lease_expired`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loading => "loading",
            Self::Ready => "ready",
            Self::Failed => "failed",
            Self::Revoked => "revoked",
            Self::LeaseExpired => "lease_expired",
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
    /// QEMU's emulated Nitro enclave's NSM, its unsigned documents signed again under a
    /// simulated Nitro root (development only).
    Emulator,
}

impl NsmKind {
    /// The name used on the wire and in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            NsmKind::Nitro => "nitro",
            NsmKind::Simulated => "simulated",
            NsmKind::Emulator => "emulator",
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
        let map = envelope(self.id);
        match &self.body {
            RequestBody::Health => map.with("op", "health"),
            RequestBody::Attestation { nonce } => map
                .with("op", "attestation")
                .with("nonce", nonce.as_bytes()),
        }
        .encode()
    }

    /// Decode a frame body. Strict: the version must be [`PROTOCOL_VERSION`], and every field
    /// must be one this operation defines, with the right type and size.
    pub fn decode(body: &[u8]) -> Result<Self, WireError> {
        let mut message = Message::decode(body, &REQUEST_FIELDS)?;
        let body = match message.op {
            "health" => RequestBody::Health,
            "attestation" => {
                let nonce = message.take_bytes("nonce", MAX_USER_FIELD_LEN)?;
                let nonce = Nonce::try_from(nonce).map_err(|e| WireError::InvalidField {
                    field: "nonce",
                    reason: e.to_string(),
                })?;
                RequestBody::Attestation { nonce }
            }
            op => return Err(WireError::UnknownOperation(op.to_owned())),
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
        let mut map = envelope(self.id);
        match &self.body {
            ResponseBody::Health(health) => {
                map.insert("op", "health")
                    .insert("version", &health.version)
                    .insert("nsm", health.nsm.as_str())
                    .insert("config_digest", &health.config_digest);
                if let Some(model) = &health.model {
                    map.insert("model", &model.id)
                        .insert("model_state", model.state.as_str());
                    if let Some(digest) = &model.sha384 {
                        map.insert("model_sha384", digest);
                    }
                    if let Some(detail) = &model.detail {
                        map.insert("model_detail", detail);
                    }
                }
                if !health.port_limits.is_empty() {
                    let limits = health
                        .port_limits
                        .iter()
                        .fold(Map::new(), |limits, (port, max)| {
                            limits.with(u64::from(*port), *max)
                        });
                    map.insert("port_limits", Value::Map(limits));
                }
            }
            ResponseBody::Attestation { document } => {
                map.insert("op", "attestation").insert("document", document);
            }
            ResponseBody::Error { code, message } => {
                map.insert("op", "error")
                    .insert("code", code.as_str())
                    .insert("message", message);
            }
        }
        map.encode()
    }

    /// Decode a frame body, as strictly as [`Request::decode`].
    pub fn decode(body: &[u8]) -> Result<Self, WireError> {
        let mut message = Message::decode(body, &RESPONSE_FIELDS)?;
        let body = match message.op {
            "health" => {
                let version = message.take_text("version")?;
                let nsm = match message.take_text("nsm")? {
                    "nitro" => NsmKind::Nitro,
                    "simulated" => NsmKind::Simulated,
                    "emulator" => NsmKind::Emulator,
                    other => {
                        return Err(WireError::InvalidField {
                            field: "nsm",
                            reason: format!("unknown NSM kind `{other}`"),
                        });
                    }
                };
                let digest = message.take_bytes("config_digest", CONFIG_DIGEST_LEN)?;
                let config_digest = <[u8; CONFIG_DIGEST_LEN]>::try_from(digest).map_err(|_| {
                    WireError::InvalidField {
                        field: "config_digest",
                        reason: format!("{} bytes, expected {CONFIG_DIGEST_LEN}", digest.len()),
                    }
                })?;
                let model = match message.take_optional_text("model")? {
                    None => None,
                    Some(id) => Some(ModelStatus {
                        id: id.to_owned(),
                        state: match message.take_text("model_state")? {
                            "loading" => ModelState::Loading,
                            "ready" => ModelState::Ready,
                            "failed" => ModelState::Failed,
                            "revoked" => ModelState::Revoked,
                            "lease_expired" => ModelState::LeaseExpired,
                            other => {
                                return Err(WireError::InvalidField {
                                    field: "model_state",
                                    reason: format!("unknown state `{other}`"),
                                });
                            }
                        },
                        sha384: message
                            .take_optional_bytes("model_sha384")?
                            .map(|b| {
                                <[u8; 48]>::try_from(b).map_err(|_| WireError::InvalidField {
                                    field: "model_sha384",
                                    reason: format!("{} bytes, expected 48", b.len()),
                                })
                            })
                            .transpose()?,
                        detail: message
                            .take_optional_text("model_detail")?
                            .map(str::to_owned),
                    }),
                };
                let port_limits = message.take_port_limits();
                ResponseBody::Health(Health {
                    version: version.to_owned(),
                    nsm,
                    config_digest,
                    model,
                    port_limits,
                })
            }
            "attestation" => ResponseBody::Attestation {
                document: message.take_bytes("document", MAX_DOCUMENT_LEN)?.to_vec(),
            },
            "error" => {
                let name = message.take_text("code")?;
                let code = ErrorCode::from_name(name).ok_or_else(|| WireError::InvalidField {
                    field: "code",
                    reason: format!("unknown error code `{name}`"),
                })?;
                ResponseBody::Error {
                    code,
                    message: message.take_text("message")?.to_owned(),
                }
            }
            op => return Err(WireError::UnknownOperation(op.to_owned())),
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
    let len = header_read(got, header)?;
    let mut body = vec![0u8; len];
    let got = read_full(reader, &mut body)?;
    body_read(got, len)?;
    Ok(body)
}

/// What a header read that got `got` of its bytes means: the body's length, or why there is
/// none. Shared by the blocking and the async reader.
pub(crate) fn header_read(got: usize, header: [u8; FRAME_HEADER_LEN]) -> Result<usize, WireError> {
    match got {
        0 => Err(WireError::Closed),
        FRAME_HEADER_LEN => frame_body_len(header),
        _ => Err(WireError::TruncatedFrame { missing: 0 }),
    }
}

/// A body read that got `got` of its `len` bytes.
pub(crate) fn body_read(got: usize, len: usize) -> Result<(), WireError> {
    if got < len {
        return Err(WireError::TruncatedFrame {
            missing: len.saturating_sub(got),
        });
    }
    Ok(())
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

fn envelope(id: u64) -> Map<'static> {
    Map::new().with("v", PROTOCOL_VERSION).with("id", id)
}

/// Every field a request may carry; which are allowed depends on its operation.
const REQUEST_FIELDS: [&str; 4] = ["v", "id", "op", "nonce"];
/// Every field a response may carry.
const RESPONSE_FIELDS: [&str; 14] = [
    "v",
    "id",
    "op",
    "version",
    "nsm",
    "config_digest",
    "model",
    "model_state",
    "model_sha384",
    "model_detail",
    "port_limits",
    "document",
    "code",
    "message",
];

/// A field's value, read by the type its name gives it.
#[derive(Debug)]
enum Item<'a> {
    Text(&'a str),
    Bytes(&'a [u8]),
    PortLimits(Vec<(u32, u32)>),
}

/// A message whose envelope has been checked; operation fields are taken one by one, and
/// whatever is left over at the end is a field the operation does not define.
struct Message<'a> {
    id: u64,
    op: &'a str,
    fields: Vec<(&'static str, Item<'a>)>,
}

impl<'a> Message<'a> {
    fn decode(body: &'a [u8], known: &[&'static str]) -> Result<Self, WireError> {
        if body.len() > MAX_FRAME_LEN {
            return Err(WireError::FrameTooLarge {
                len: u64::try_from(body.len()).unwrap_or(u64::MAX),
                max: MAX_FRAME_LEN,
            });
        }
        Reader::read_all(body, MAX_FRAME_LEN, Profile::Deterministic, |r| {
            let (mut version, mut id, mut op) = (None, None, None);
            let mut fields = Vec::new();
            let mut map = r.map()?;
            while let Some(key) = map.key(known)? {
                let value = map.value();
                match key {
                    // `v` sorts first, so a peer of another version is told so before anything
                    // it sends is judged by this version's schema.
                    "v" => {
                        let got = value.uint()?;
                        if got != PROTOCOL_VERSION {
                            return Err(WireError::UnsupportedVersion { got });
                        }
                        version = Some(got);
                    }
                    "id" => id = Some(value.uint()?),
                    "op" => op = Some(text(value)?),
                    "nonce" | "config_digest" | "model_sha384" | "document" => {
                        fields.push((key, Item::Bytes(value.bytes()?)));
                    }
                    "port_limits" => fields.push((key, Item::PortLimits(port_limits(value)?))),
                    _ => fields.push((key, Item::Text(text(value)?))),
                }
            }
            version.ok_or(WireError::MissingField("v"))?;
            Ok(Message {
                id: id.ok_or(WireError::MissingField("id"))?,
                op: op.ok_or(WireError::MissingField("op"))?,
                fields,
            })
        })
    }

    fn take(&mut self, field: &'static str) -> Option<Item<'a>> {
        let index = self.fields.iter().position(|(k, _)| *k == field)?;
        Some(self.fields.swap_remove(index).1)
    }

    fn take_text(&mut self, field: &'static str) -> Result<&'a str, WireError> {
        self.take_optional_text(field)?
            .ok_or(WireError::MissingField(field))
    }

    fn take_optional_text(&mut self, field: &'static str) -> Result<Option<&'a str>, WireError> {
        match self.take(field) {
            None => Ok(None),
            Some(Item::Text(text)) => Ok(Some(text)),
            Some(_) => Err(WireError::UnknownField(field)),
        }
    }

    fn take_bytes(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], WireError> {
        let bytes = self
            .take_optional_bytes(field)?
            .ok_or(WireError::MissingField(field))?;
        if bytes.len() > max {
            return Err(too_long(field, bytes.len(), max));
        }
        Ok(bytes)
    }

    fn take_optional_bytes(&mut self, field: &'static str) -> Result<Option<&'a [u8]>, WireError> {
        match self.take(field) {
            None => Ok(None),
            Some(Item::Bytes(bytes)) => Ok(Some(bytes)),
            Some(_) => Err(WireError::UnknownField(field)),
        }
    }

    fn take_port_limits(&mut self) -> Vec<(u32, u32)> {
        match self.take("port_limits") {
            Some(Item::PortLimits(limits)) => limits,
            _ => Vec::new(),
        }
    }

    /// The message's id, once every field has been taken.
    fn finish(self) -> Result<u64, WireError> {
        match self.fields.first() {
            Some((key, _)) => Err(WireError::UnknownField(key)),
            None => Ok(self.id),
        }
    }
}

/// A text field, at most [`MAX_TEXT_LEN`] bytes.
fn text<'a>(r: &mut Reader<'a>) -> Result<&'a str, WireError> {
    let text = r.text()?;
    match r.field() {
        Some(field) if text.len() > MAX_TEXT_LEN => Err(too_long(field, text.len(), MAX_TEXT_LEN)),
        _ => Ok(text),
    }
}

/// `{port: max_connections}`: 1 to [`MAX_PORT_LIMITS`] entries, each port once, in increasing
/// order (the deterministic encoding's order for integer keys).
fn port_limits(r: &mut Reader<'_>) -> Result<Vec<(u32, u32)>, WireError> {
    const FIELD: &str = "port_limits";
    let mut map = r.map()?;
    // Omitted when empty, so that a message has one encoding.
    if map.remaining() == 0 {
        return Err(WireError::InvalidField {
            field: FIELD,
            reason: "empty; omit the field instead".into(),
        });
    }
    if map.remaining() > MAX_PORT_LIMITS {
        return Err(WireError::InvalidField {
            field: FIELD,
            reason: format!(
                "{} entries, the maximum is {MAX_PORT_LIMITS}",
                map.remaining()
            ),
        });
    }
    let number = |n: u64| {
        u32::try_from(n).map_err(|_| WireError::InvalidField {
            field: FIELD,
            reason: "not an unsigned 32-bit integer".into(),
        })
    };
    let mut out = Vec::with_capacity(map.remaining());
    while let Some(port) = map.uint_key()? {
        let max = map.value().uint()?;
        out.push((number(port)?, number(max)?));
    }
    Ok(out)
}

fn too_long(field: &'static str, len: usize, max: usize) -> WireError {
    WireError::InvalidField {
        field,
        reason: format!("{len} bytes, the maximum is {max}"),
    }
}

#[cfg(test)]
mod tests;
