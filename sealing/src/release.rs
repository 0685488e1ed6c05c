//! The key-release protocol between an enclave and the key broker, carried over the host's relay
//! (which sees only what is here: public keys, attestation documents, signed responses and a
//! data key wrapped to a key that never leaves the enclave).
//!
//! ```text
//! enclave → broker   hello     { model_id }
//! broker  → enclave  challenge { nonce (32 random bytes, single use), expires_in_ms }
//! enclave → broker   attest    { nonce, document }   document: NSM attestation with that nonce,
//!                                                    public_key = an ephemeral RSA key,
//!                                                    user_data = request_user_data(model, nonce)
//! broker  → enclave  release   { response, certificate }  or  denied { reason, message }
//! ```
//!
//! A release grants a lease (`lease_ms`, signed). Before it ends the enclave renews it on a new
//! connection, with a fresh document over a fresh nonce:
//!
//! ```text
//! enclave → broker   hello     { model_id }
//! broker  → enclave  challenge { nonce, expires_in_ms }
//! enclave → broker   renew     { nonce, key_id, document }  document: no public key,
//!                                                    user_data = renewal_user_data(model,
//!                                                    key_id, nonce)
//! broker  → enclave  renewed   { response, certificate }  or  denied { reason, message }
//! ```
//!
//! A renewal's `response` has its own content type and payload ([`RenewalClaims`]: no wrapped
//! key), and its log entry is a `lease-renewal`, so neither a release nor a renewal can stand in
//! for the other.
//!
//! `response` is a tagged COSE_Sign1 (ES384) by the broker's key, whose `certificate` the
//! national root issued for the `key-broker` role. Its payload ([`ReleaseClaims`]) binds the
//! nonce, the model and key ids, the model's digest and length, the policy version, the
//! document's digest, the wrapped data key, and the transparency-log entry recording the
//! release with its inclusion proof. [`KeyRequest::accept`] checks all of it before it unwraps
//! the key.
//!
//! Messages are CBOR maps with text keys, `v` (2) and `op`; unknown and duplicate keys are
//! errors; every field is bounded. Frames are those of the control protocol (the `protocol` crate).

use attest::cose::{CoseError, parse_es384, sign_es384, sign_es384_with, verify_es384};
use attest::service::{ServiceCertError, ServiceRole, verify_service_certificate};
use attest::{ServiceTrust, Timestamp};
use aws_lc_rs::digest::{SHA384, digest};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OaepAlgorithm, OaepPrivateDecryptingKey,
    PrivateDecryptingKey,
};
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use cbor::{Fields, Map, Profile, Reader};
use proofs::NoteVerifier;
use proofs::entry::{Entry, EntryError, LogEntry, Outcome};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::format::{DIGEST_LEN, DataKey, Id, KEY_LEN};

/// The protocol and payload version.
pub const RELEASE_VERSION: u64 = 2;
/// The challenge nonce's length.
pub const NONCE_LEN: usize = 32;
/// The largest wrapped key (an RSA-4096 ciphertext).
pub const MAX_WRAPPED_KEY_LEN: usize = 512;
/// The largest broker certificate.
pub const MAX_CERTIFICATE_LEN: usize = 8 * 1024;
/// The largest inclusion proof (text).
pub const MAX_PROOF_LEN: usize = 8 * 1024;
/// The largest signed response.
pub const MAX_RESPONSE_LEN: usize = 24 * 1024;
/// The longest denial reason or message.
pub const MAX_REASON_LEN: usize = 256;
/// The content type in a response's protected header.
pub const RESPONSE_CONTENT_TYPE: &str = "application/key-release+cbor";
/// The content type in a renewal response's protected header.
pub const RENEWAL_CONTENT_TYPE: &str = "application/lease-renewal+cbor";
/// The shortest lease a broker grants or an enclave accepts, in milliseconds.
pub const MIN_LEASE_MS: u64 = 1_000;
/// The longest lease, in milliseconds (a day).
pub const MAX_LEASE_MS: u64 = 24 * 3600 * 1000;
/// The size of the enclave's ephemeral RSA key.
pub const EPHEMERAL_KEY_SIZE: KeySize = KeySize::Rsa3072;

/// The digest RSA-OAEP uses (with MGF1 over the same digest).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OaepHash {
    /// SHA-256: the default.
    Sha256,
    /// SHA-1: only where an HSM supports nothing else (SoftHSM2 2.6); OAEP's security does not
    /// rest on SHA-1's collision resistance, but both sides must opt in.
    Sha1,
}

impl OaepHash {
    /// `sha256` or `sha1`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha1 => "sha1",
        }
    }

    /// Parse `sha256` or `sha1`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "sha256" => Some(Self::Sha256),
            "sha1" => Some(Self::Sha1),
            _ => None,
        }
    }

    /// The aws-lc algorithm: RSA-OAEP with this digest and MGF1 over the same digest.
    pub fn algorithm(self) -> &'static OaepAlgorithm {
        match self {
            Self::Sha256 => &OAEP_SHA256_MGF1SHA256,
            Self::Sha1 => &OAEP_SHA1_MGF1SHA1,
        }
    }
}

/// Why a release message or response was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    /// The bytes are not a valid message or payload (the reader's error names the field).
    #[error("malformed key-release message: {0}")]
    Malformed(#[from] cbor::Error),
    /// The response is not a COSE_Sign1 of the release response's shape.
    #[error("malformed key-release response: {0}")]
    Response(CoseError),
    /// The broker's key cannot sign responses: not a P-384 PKCS#8 key, or not the key its
    /// certificate certifies.
    #[error("the broker key {0}")]
    BrokerKey(&'static str),
    /// Another protocol version.
    #[error("unsupported key-release protocol version {0}")]
    Version(u64),
    /// A message other than the one the protocol expects next.
    #[error("expected a {expected} message, got {got}")]
    Unexpected {
        /// What was expected.
        expected: &'static str,
        /// What came.
        got: &'static str,
    },
    /// The broker refused.
    #[error("the key broker refused: {reason}: {message}")]
    Denied {
        /// The machine-readable reason.
        reason: String,
        /// The broker's explanation.
        message: String,
    },
    /// The broker's certificate is not a key-broker certificate under the trusted roots.
    #[error("the key broker's certificate is refused: {0}")]
    UntrustedBroker(ServiceCertError),
    /// The response's signature does not verify with the broker's certified key.
    #[error("the response's signature does not verify with the key broker's certified key")]
    Signature,
    /// A bound field differs from this request.
    #[error("the response's {field} does not match this request")]
    Mismatch {
        /// The field.
        field: &'static str,
    },
    /// The release is not proven to be in the transparency log.
    #[error("the release is not proven to be in the transparency log: {0}")]
    Log(&'static str),
    /// The checkpoint that proves the release lacks the witnesses' cosignatures the enclave
    /// requires, or carries a forged one: the broker may be showing a private fork of its log.
    #[error("the release's log checkpoint is not witnessed: {0}")]
    Witnesses(#[from] proofs::cosignature::WitnessError),
    /// The release's log entry is not a valid entry.
    #[error("the release's log entry is refused: {0}")]
    LogEntry(#[from] EntryError),
    /// The release's inclusion proof does not verify.
    #[error("the release's inclusion proof is refused: {0}")]
    Inclusion(#[from] proofs::audit::AuditError),
    /// The wrapped key cannot be unwrapped with this request's key.
    #[error("the wrapped data key does not unwrap with this request's key")]
    Unwrap,
    /// The lease granted is outside [`MIN_LEASE_MS`]..=[`MAX_LEASE_MS`].
    #[error("the lease granted ({0} ms) is outside 1 s to 24 h")]
    Lease(u64),
    /// The response uses an OAEP digest this side does not accept.
    #[error("the response wraps the key with RSA-OAEP {0}, which this side does not accept")]
    OaepNotAllowed(&'static str),
    /// A key or signature could not be made.
    #[error("crypto failure: {0}")]
    Crypto(&'static str),
}

impl From<ServiceCertError> for ReleaseError {
    fn from(e: ServiceCertError) -> Self {
        Self::UntrustedBroker(e)
    }
}

impl ReleaseError {
    /// A stable short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Malformed(_) | Self::Response(_) => "malformed",
            Self::BrokerKey(_) => "broker_key",
            Self::Version(_) => "version",
            Self::Unexpected { .. } => "unexpected_message",
            Self::Denied { .. } => "denied",
            Self::UntrustedBroker(_) => "untrusted_broker",
            Self::Signature => "signature",
            Self::Mismatch { .. } => "mismatch",
            Self::Log(_) | Self::LogEntry(_) | Self::Inclusion(_) => "log",
            Self::Witnesses(_) => "not_witnessed",
            Self::Unwrap => "unwrap",
            Self::OaepNotAllowed(_) => "oaep_not_allowed",
            Self::Lease(_) => "lease",
            Self::Crypto(_) => "crypto",
        }
    }
}

/// One message of the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// enclave → broker: which model's key it wants.
    Hello {
        /// The model.
        model_id: Id,
    },
    /// broker → enclave: the nonce to attest over.
    Challenge {
        /// Single-use, random.
        nonce: [u8; NONCE_LEN],
        /// How long the broker will accept it.
        expires_in_ms: u64,
    },
    /// enclave → broker: the attestation document over the nonce.
    Attest {
        /// The challenge's nonce.
        nonce: [u8; NONCE_LEN],
        /// The NSM's attestation document (COSE_Sign1).
        document: Vec<u8>,
    },
    /// broker → enclave: the signed release.
    Release {
        /// A tagged COSE_Sign1 over [`ReleaseClaims`].
        response: Vec<u8>,
        /// The broker key's certificate (DER).
        certificate: Vec<u8>,
    },
    /// enclave → broker: renew the lease on a key this enclave holds.
    Renew {
        /// The challenge's nonce.
        nonce: [u8; NONCE_LEN],
        /// The key held (the release's `key_id`).
        key_id: Id,
        /// The NSM's attestation document (COSE_Sign1), with [`renewal_user_data`].
        document: Vec<u8>,
    },
    /// broker → enclave: the signed renewal.
    Renewed {
        /// A tagged COSE_Sign1 over [`RenewalClaims`].
        response: Vec<u8>,
        /// The broker key's certificate (DER).
        certificate: Vec<u8>,
    },
    /// broker → enclave: the request was refused.
    Denied {
        /// A stable machine-readable reason (`pcr_mismatch`, `nonce_replayed`, …).
        reason: String,
        /// A human explanation.
        message: String,
    },
}

impl Message {
    /// The operation's name.
    pub fn op(&self) -> &'static str {
        match self {
            Self::Hello { .. } => "hello",
            Self::Challenge { .. } => "challenge",
            Self::Attest { .. } => "attest",
            Self::Release { .. } => "release",
            Self::Renew { .. } => "renew",
            Self::Renewed { .. } => "renewed",
            Self::Denied { .. } => "denied",
        }
    }

    /// The message's bytes (one frame's body).
    pub fn encode(&self) -> Vec<u8> {
        let map = Map::new().with("v", RELEASE_VERSION).with("op", self.op());
        match self {
            Self::Hello { model_id } => map.with("model_id", model_id.as_str()),
            Self::Challenge {
                nonce,
                expires_in_ms,
            } => map
                .with("nonce", nonce)
                .with("expires_in_ms", *expires_in_ms),
            Self::Attest { nonce, document } => map.with("nonce", nonce).with("document", document),
            Self::Release {
                response,
                certificate,
            }
            | Self::Renewed {
                response,
                certificate,
            } => map
                .with("response", response)
                .with("certificate", certificate),
            Self::Renew {
                nonce,
                key_id,
                document,
            } => map
                .with("nonce", nonce)
                .with("key_id", key_id.as_str())
                .with("document", document),
            Self::Denied { reason, message } => map
                .with("reason", truncate(reason))
                .with("message", truncate(message)),
        }
        .encode()
    }

    /// Decode one frame's body; anything but a valid message in its one deterministic encoding
    /// (RFC 8949 section 4.2.1) is an error, as the attestation document's parser refuses
    /// what is not a document.
    pub fn decode(bytes: &[u8]) -> Result<Self, ReleaseError> {
        let max = MAX_RESPONSE_LEN.saturating_add(attest::MAX_DOCUMENT_LEN);
        Reader::read_all(bytes, max, Profile::Deterministic, |r| {
            let mut f = Fields::read(r, &MESSAGE_FIELDS, read_item)?;
            check_version(&mut f)?;
            let op = need_text(&mut f, "op", 16)?;
            let message = match op {
                "hello" => Self::Hello {
                    model_id: need_id(&mut f, "model_id")?,
                },
                "challenge" => Self::Challenge {
                    nonce: need_array(&mut f, "nonce")?,
                    expires_in_ms: need_uint(&mut f, "expires_in_ms")?,
                },
                "attest" => Self::Attest {
                    nonce: need_array(&mut f, "nonce")?,
                    document: need_bytes(&mut f, "document", attest::MAX_DOCUMENT_LEN)?.to_vec(),
                },
                "release" => Self::Release {
                    response: need_bytes(&mut f, "response", MAX_RESPONSE_LEN)?.to_vec(),
                    certificate: need_bytes(&mut f, "certificate", MAX_CERTIFICATE_LEN)?.to_vec(),
                },
                "renew" => Self::Renew {
                    nonce: need_array(&mut f, "nonce")?,
                    key_id: need_id(&mut f, "key_id")?,
                    document: need_bytes(&mut f, "document", attest::MAX_DOCUMENT_LEN)?.to_vec(),
                },
                "renewed" => Self::Renewed {
                    response: need_bytes(&mut f, "response", MAX_RESPONSE_LEN)?.to_vec(),
                    certificate: need_bytes(&mut f, "certificate", MAX_CERTIFICATE_LEN)?.to_vec(),
                },
                "denied" => Self::Denied {
                    reason: need_text(&mut f, "reason", MAX_REASON_LEN)?.to_owned(),
                    message: need_text(&mut f, "message", MAX_REASON_LEN)?.to_owned(),
                },
                other => {
                    return Err(ReleaseError::Malformed(cbor::Error::invalid(
                        "op",
                        format!("unknown operation {other:?}"),
                    )));
                }
            };
            f.finish()?;
            Ok(message)
        })
    }
}

fn truncate(text: &str) -> &str {
    let mut end = text.len().min(MAX_REASON_LEN);
    while !text.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    text.get(..end).unwrap_or_default()
}

/// What the broker signs when it releases a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseClaims {
    /// The challenge nonce the document was made over.
    pub nonce: [u8; NONCE_LEN],
    /// The model.
    pub model_id: Id,
    /// The data key released.
    pub key_id: Id,
    /// SHA-384 of the model's plaintext, as sealed.
    pub model_digest: [u8; DIGEST_LEN],
    /// The model's plaintext length.
    pub model_len: u64,
    /// The release policy's version that allowed it.
    pub policy_version: u64,
    /// SHA-384 of the attestation document the decision was made on.
    pub document_sha384: [u8; DIGEST_LEN],
    /// The data key, RSA-OAEP-wrapped to the document's public key.
    pub wrapped_key: Vec<u8>,
    /// The OAEP digest.
    pub oaep_hash: OaepHash,
    /// The index of the log entry recording this release.
    pub log_index: u64,
    /// That entry's bytes (a `key-release` entry, canonical CBOR).
    pub log_entry: Vec<u8>,
    /// A `c2sp.org/tlog-proof@v1` proof that the entry is in a signed checkpoint.
    pub inclusion_proof: Vec<u8>,
    /// How long the key may be used without a renewal, in milliseconds, measured by the
    /// enclave from the moment it sent the document this release answers.
    pub lease_ms: u64,
}

impl ReleaseClaims {
    fn to_payload(&self) -> Vec<u8> {
        Map::new()
            .with("v", RELEASE_VERSION)
            .with("nonce", &self.nonce)
            .with("model_id", self.model_id.as_str())
            .with("key_id", self.key_id.as_str())
            .with("model_digest", &self.model_digest)
            .with("model_len", self.model_len)
            .with("policy_version", self.policy_version)
            .with("document_sha384", &self.document_sha384)
            .with("wrapped_key", &self.wrapped_key)
            .with("oaep_hash", self.oaep_hash.as_str())
            .with("log_index", self.log_index)
            .with("log_entry", &self.log_entry)
            .with("inclusion_proof", &self.inclusion_proof)
            .with("lease_ms", self.lease_ms)
            .encode()
    }

    fn from_payload(bytes: &[u8]) -> Result<Self, ReleaseError> {
        Reader::read_all(bytes, MAX_RESPONSE_LEN, Profile::Deterministic, |r| {
            let mut f = Fields::read(r, &CLAIM_FIELDS, read_item)?;
            check_version(&mut f)?;
            let oaep = need_text(&mut f, "oaep_hash", 16)?;
            let claims = Self {
                nonce: need_array(&mut f, "nonce")?,
                model_id: need_id(&mut f, "model_id")?,
                key_id: need_id(&mut f, "key_id")?,
                model_digest: need_array(&mut f, "model_digest")?,
                model_len: need_uint(&mut f, "model_len")?,
                policy_version: need_uint(&mut f, "policy_version")?,
                document_sha384: need_array(&mut f, "document_sha384")?,
                wrapped_key: need_bytes(&mut f, "wrapped_key", MAX_WRAPPED_KEY_LEN)?.to_vec(),
                oaep_hash: OaepHash::parse(oaep).ok_or_else(|| {
                    cbor::Error::invalid("oaep_hash", format!("unknown OAEP digest {oaep:?}"))
                })?,
                log_index: need_uint(&mut f, "log_index")?,
                log_entry: need_bytes(&mut f, "log_entry", proofs::MAX_ENTRY_LEN)?.to_vec(),
                inclusion_proof: need_bytes(&mut f, "inclusion_proof", MAX_PROOF_LEN)?.to_vec(),
                lease_ms: need_uint(&mut f, "lease_ms")?,
            };
            f.finish()?;
            Ok(claims)
        })
    }
}

/// What the broker signs when it renews a lease: no key, only the decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenewalClaims {
    /// The challenge nonce the document was made over.
    pub nonce: [u8; NONCE_LEN],
    /// The model.
    pub model_id: Id,
    /// The key whose lease is renewed.
    pub key_id: Id,
    /// The release policy's version that allowed it.
    pub policy_version: u64,
    /// SHA-384 of the attestation document the decision was made on.
    pub document_sha384: [u8; DIGEST_LEN],
    /// The new lease, in milliseconds, measured by the enclave from the moment it sent the
    /// document.
    pub lease_ms: u64,
    /// The index of the `lease-renewal` log entry.
    pub log_index: u64,
    /// That entry's bytes.
    pub log_entry: Vec<u8>,
    /// A `c2sp.org/tlog-proof@v1` proof that the entry is in a signed checkpoint.
    pub inclusion_proof: Vec<u8>,
}

impl RenewalClaims {
    fn to_payload(&self) -> Vec<u8> {
        Map::new()
            .with("v", RELEASE_VERSION)
            .with("nonce", &self.nonce)
            .with("model_id", self.model_id.as_str())
            .with("key_id", self.key_id.as_str())
            .with("policy_version", self.policy_version)
            .with("document_sha384", &self.document_sha384)
            .with("lease_ms", self.lease_ms)
            .with("log_index", self.log_index)
            .with("log_entry", &self.log_entry)
            .with("inclusion_proof", &self.inclusion_proof)
            .encode()
    }

    fn from_payload(bytes: &[u8]) -> Result<Self, ReleaseError> {
        Reader::read_all(bytes, MAX_RESPONSE_LEN, Profile::Deterministic, |r| {
            let mut f = Fields::read(r, &RENEWAL_FIELDS, read_item)?;
            check_version(&mut f)?;
            let claims = Self {
                nonce: need_array(&mut f, "nonce")?,
                model_id: need_id(&mut f, "model_id")?,
                key_id: need_id(&mut f, "key_id")?,
                policy_version: need_uint(&mut f, "policy_version")?,
                document_sha384: need_array(&mut f, "document_sha384")?,
                lease_ms: need_uint(&mut f, "lease_ms")?,
                log_index: need_uint(&mut f, "log_index")?,
                log_entry: need_bytes(&mut f, "log_entry", proofs::MAX_ENTRY_LEN)?.to_vec(),
                inclusion_proof: need_bytes(&mut f, "inclusion_proof", MAX_PROOF_LEN)?.to_vec(),
            };
            f.finish()?;
            Ok(claims)
        })
    }
}

/// The lease must be one this side accepts.
fn check_lease(lease_ms: u64) -> Result<(), ReleaseError> {
    if (MIN_LEASE_MS..=MAX_LEASE_MS).contains(&lease_ms) {
        Ok(())
    } else {
        Err(ReleaseError::Lease(lease_ms))
    }
}

/// The broker's response key: a P-384 key whose certificate the national root issued for the
/// `key-broker` role.
pub struct ResponseSigner {
    key: ResponseKey,
    certificate: Vec<u8>,
}

/// A P-384 key held outside this process (an HSM, through PKCS#11): it signs, and never hands
/// out its private half.
pub trait ExternalP384: Send + Sync {
    /// The ES384 signature of `message` (SHA-384, then ECDSA): r ‖ s, 96 bytes.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String>;
}

enum ResponseKey {
    Memory(EcdsaKeyPair),
    External(Box<dyn ExternalP384>),
}

impl std::fmt::Debug for ResponseSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseSigner").finish_non_exhaustive()
    }
}

impl ResponseSigner {
    /// A signer from a PKCS#8 (DER) P-384 key and its certificate (DER). The certificate must
    /// be a `key-broker` certificate under `trust` at `now`, for this key: a broker that starts
    /// is one that enclaves will accept.
    pub fn new(
        pkcs8: &[u8],
        certificate: Vec<u8>,
        trust: &ServiceTrust,
        now: Timestamp,
    ) -> Result<Self, ReleaseError> {
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8)
            .map_err(|_| ReleaseError::BrokerKey("is not a PKCS#8 P-384 key"))?;
        let certified =
            verify_service_certificate(&certificate, trust, ServiceRole::KeyBroker, now)?;
        let ours = key
            .public_key()
            .as_der()
            .map_err(|_| ReleaseError::Crypto("public key encoding"))?;
        if certified.spki_der != ours.as_ref() {
            return Err(ReleaseError::BrokerKey(
                "is not the key its certificate certifies",
            ));
        }
        Ok(Self {
            key: ResponseKey::Memory(key),
            certificate,
        })
    }

    /// A signer for a key held elsewhere and its certificate (DER), checked like [`Self::new`]:
    /// the key signs a probe, which must verify under the certified key, so a token that holds
    /// another key than the certificate's fails at start.
    pub fn external(
        key: Box<dyn ExternalP384>,
        certificate: Vec<u8>,
        trust: &ServiceTrust,
        now: Timestamp,
    ) -> Result<Self, ReleaseError> {
        let certified =
            verify_service_certificate(&certificate, trust, ServiceRole::KeyBroker, now)?;
        let signer = Self {
            key: ResponseKey::External(key),
            certificate,
        };
        let probe = signer.sign_payload(RESPONSE_CONTENT_TYPE, b"probe".to_vec())?;
        let sign1 = parse_es384(&probe, MAX_RESPONSE_LEN, RESPONSE_CONTENT_TYPE)
            .map_err(ReleaseError::Response)?;
        verify_es384(&sign1, &certified.spki_der)
            .map_err(|_| ReleaseError::BrokerKey("is not the key its certificate certifies"))?;
        Ok(signer)
    }

    /// Whether the private key is held outside this process.
    pub fn is_external(&self) -> bool {
        matches!(self.key, ResponseKey::External(_))
    }

    /// The certificate sent with every response.
    pub fn certificate(&self) -> &[u8] {
        &self.certificate
    }

    /// Sign `claims`: a tagged COSE_Sign1.
    pub fn sign(&self, claims: &ReleaseClaims) -> Result<Vec<u8>, ReleaseError> {
        self.sign_payload(RESPONSE_CONTENT_TYPE, claims.to_payload())
    }

    /// Sign a renewal's `claims`: a tagged COSE_Sign1 of the renewal's content type.
    pub fn sign_renewal(&self, claims: &RenewalClaims) -> Result<Vec<u8>, ReleaseError> {
        self.sign_payload(RENEWAL_CONTENT_TYPE, claims.to_payload())
    }

    fn sign_payload(&self, content_type: &str, payload: Vec<u8>) -> Result<Vec<u8>, ReleaseError> {
        let signed = match &self.key {
            ResponseKey::Memory(key) => sign_es384(key, content_type, payload),
            // The key's own error is its implementation's to log.
            ResponseKey::External(key) => {
                sign_es384_with(content_type, payload, |data| key.sign(data))
            }
        };
        signed.map_err(|e| match e {
            CoseError::Sign(reason) => ReleaseError::Crypto(reason),
            _ => ReleaseError::Crypto("the response could not be encoded"),
        })
    }
}

/// The `user_data` an enclave puts in a renewal's document: SHA-384 over its own domain
/// separator, the model id, the key id and the nonce. A release's document cannot serve as a
/// renewal's, nor the reverse.
pub fn renewal_user_data(model_id: &Id, key_id: &Id, nonce: &[u8; NONCE_LEN]) -> [u8; DIGEST_LEN] {
    let mut input = b"sovereign lease renewal v1\0".to_vec();
    input.extend_from_slice(model_id.as_str().as_bytes());
    input.push(0);
    input.extend_from_slice(key_id.as_str().as_bytes());
    input.push(0);
    input.extend_from_slice(nonce);
    sha384(&input)
}

/// Check the broker's answer to a renewal: the `document` this side sent over `nonce` for
/// `key_id` of `model_id`. The broker's certificate under the national root at `now`, the
/// signature, every bound field, the lease's bounds, and the `lease-renewal` log entry with its
/// inclusion proof. A denial is returned as [`ReleaseError::Denied`].
pub fn accept_renewal(
    model_id: &Id,
    key_id: &Id,
    nonce: &[u8; NONCE_LEN],
    document: &[u8],
    answer: &Message,
    trust: &ReleaseTrust,
    now: Timestamp,
) -> Result<(RenewalClaims, proofs::SignedCheckpoint), ReleaseError> {
    let (response, certificate) = match answer {
        Message::Renewed {
            response,
            certificate,
        } => (response, certificate),
        Message::Denied { reason, message } => {
            return Err(ReleaseError::Denied {
                reason: reason.clone(),
                message: message.clone(),
            });
        }
        other => {
            return Err(ReleaseError::Unexpected {
                expected: "renewed",
                got: other.op(),
            });
        }
    };
    let broker = verify_service_certificate(
        certificate,
        &trust.broker_roots,
        ServiceRole::KeyBroker,
        now,
    )?;
    let sign1 = parse_es384(response, MAX_RESPONSE_LEN, RENEWAL_CONTENT_TYPE)
        .map_err(ReleaseError::Response)?;
    verify_es384(&sign1, &broker.spki_der).map_err(|_| ReleaseError::Signature)?;
    let claims = RenewalClaims::from_payload(sign1.payload.as_deref().unwrap_or_default())?;
    let mismatch = |field| Err(ReleaseError::Mismatch { field });
    if !bool::from(claims.nonce.ct_eq(nonce)) {
        return mismatch("nonce");
    }
    if &claims.model_id != model_id {
        return mismatch("model_id");
    }
    if &claims.key_id != key_id {
        return mismatch("key_id");
    }
    if claims.document_sha384 != sha384(document) {
        return mismatch("document_sha384");
    }
    check_lease(claims.lease_ms)?;
    let entry = LogEntry::decode(&claims.log_entry)?;
    let Entry::LeaseRenewal(renewal) = entry.entry() else {
        return Err(ReleaseError::Log("the log entry is not a lease renewal"));
    };
    let consistent = renewal.outcome == Outcome::Released
        && renewal.model_id == claims.model_id.as_str()
        && renewal.key_id == claims.key_id.as_str()
        && renewal.policy_version == claims.policy_version
        && renewal.nonce.as_deref() == Some(&claims.nonce[..])
        && renewal.document_sha384 == Some(claims.document_sha384)
        && renewal.lease_ms == Some(claims.lease_ms);
    if !consistent {
        return Err(ReleaseError::Log(
            "the log entry records another decision than the response",
        ));
    }
    let checkpoint = included(&entry, &claims.inclusion_proof, claims.log_index, trust)?;
    Ok((claims, checkpoint))
}

/// The `user_data` an enclave puts in its document: SHA-384 over a domain separator, the model
/// id and the nonce, so a document made for one request cannot serve another.
pub fn request_user_data(model_id: &Id, nonce: &[u8; NONCE_LEN]) -> [u8; DIGEST_LEN] {
    let mut input = b"sovereign key release v1\0".to_vec();
    input.extend_from_slice(model_id.as_str().as_bytes());
    input.push(0);
    input.extend_from_slice(nonce);
    sha384(&input)
}

/// SHA-384 of `bytes`.
pub fn sha384(bytes: &[u8]) -> [u8; DIGEST_LEN] {
    <[u8; DIGEST_LEN]>::try_from(digest(&SHA384, bytes).as_ref()).unwrap_or([0; DIGEST_LEN])
}

/// What an enclave trusts when it accepts a released key: baked into its measured
/// configuration.
#[derive(Debug)]
pub struct ReleaseTrust {
    /// The national root(s) the broker's certificate must chain to.
    pub broker_roots: ServiceTrust,
    /// The transparency log's keys.
    pub log_keys: Vec<NoteVerifier>,
    /// The log's origin, if pinned.
    pub log_origin: Option<String>,
    /// The witnesses that must have cosigned the checkpoint proving a release or a renewal
    /// (none required by default).
    pub witnesses: proofs::cosignature::WitnessPolicy,
    /// The OAEP digests accepted.
    pub oaep_hashes: Vec<OaepHash>,
}

/// A key the broker released, checked and unwrapped.
#[derive(Debug)]
pub struct ReleasedKey {
    /// The data key.
    pub key: DataKey,
    /// What the broker signed about it.
    pub claims: ReleaseClaims,
    /// The log checkpoint the release is included in.
    pub checkpoint: proofs::SignedCheckpoint,
}

/// One release request in flight, on the enclave's side: an ephemeral RSA key pair whose
/// private half never leaves this value and is freed (and cleared by aws-lc) when it drops.
pub struct KeyRequest {
    model_id: Id,
    key: OaepPrivateDecryptingKey,
    public_key_der: Vec<u8>,
}

impl std::fmt::Debug for KeyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRequest")
            .field("model_id", &self.model_id)
            .finish_non_exhaustive()
    }
}

impl KeyRequest {
    /// A request for `model_id`'s key, with a fresh ephemeral key pair.
    pub fn new(model_id: Id) -> Result<Self, ReleaseError> {
        let private = PrivateDecryptingKey::generate(EPHEMERAL_KEY_SIZE)
            .map_err(|_| ReleaseError::Crypto("RSA key generation"))?;
        let public_key_der = private
            .public_key()
            .as_der()
            .map_err(|_| ReleaseError::Crypto("RSA public key encoding"))?
            .as_ref()
            .to_vec();
        let key = OaepPrivateDecryptingKey::new(private)
            .map_err(|_| ReleaseError::Crypto("RSA-OAEP key"))?;
        Ok(Self {
            model_id,
            key,
            public_key_der,
        })
    }

    /// The model asked for.
    pub fn model_id(&self) -> &Id {
        &self.model_id
    }

    /// The ephemeral public key (DER SubjectPublicKeyInfo) for the document's `public_key`.
    pub fn public_key_der(&self) -> &[u8] {
        &self.public_key_der
    }

    /// Check the broker's answer to the attestation `document` this side sent over `nonce`, and
    /// unwrap the data key. Everything is checked before the key is unwrapped: the broker's
    /// certificate against the national root at `now`, the signature, every bound field, the
    /// log entry and its inclusion proof. The request is consumed, so its private key is gone
    /// whatever the outcome.
    pub fn accept(
        self,
        nonce: &[u8; NONCE_LEN],
        document: &[u8],
        answer: &Message,
        trust: &ReleaseTrust,
        now: Timestamp,
    ) -> Result<ReleasedKey, ReleaseError> {
        let (response, certificate) = match answer {
            Message::Release {
                response,
                certificate,
            } => (response, certificate),
            Message::Denied { reason, message } => {
                return Err(ReleaseError::Denied {
                    reason: reason.clone(),
                    message: message.clone(),
                });
            }
            other => {
                return Err(ReleaseError::Unexpected {
                    expected: "release",
                    got: other.op(),
                });
            }
        };
        let broker = verify_service_certificate(
            certificate,
            &trust.broker_roots,
            ServiceRole::KeyBroker,
            now,
        )?;
        let claims = verify_response(response, &broker.spki_der)?;

        let mismatch = |field| Err(ReleaseError::Mismatch { field });
        if !bool::from(claims.nonce.ct_eq(nonce)) {
            return mismatch("nonce");
        }
        if claims.model_id != self.model_id {
            return mismatch("model_id");
        }
        if claims.document_sha384 != sha384(document) {
            return mismatch("document_sha384");
        }
        if !trust.oaep_hashes.contains(&claims.oaep_hash) {
            return Err(ReleaseError::OaepNotAllowed(claims.oaep_hash.as_str()));
        }
        check_lease(claims.lease_ms)?;
        let checkpoint = check_log_entry(&claims, trust)?;

        let mut out = Zeroizing::new(vec![0u8; self.key.min_output_size()]);
        let key = self
            .key
            .decrypt(
                claims.oaep_hash.algorithm(),
                &claims.wrapped_key,
                &mut out,
                None,
            )
            .map_err(|_| ReleaseError::Unwrap)?;
        if key.len() != KEY_LEN {
            return Err(ReleaseError::Unwrap);
        }
        let key = DataKey::from_slice(key).map_err(|_| ReleaseError::Unwrap)?;
        Ok(ReleasedKey {
            key,
            claims,
            checkpoint,
        })
    }
}

/// Verify a response's COSE_Sign1 with the broker's key (DER SubjectPublicKeyInfo) and return
/// its claims.
pub fn verify_response(response: &[u8], broker_spki: &[u8]) -> Result<ReleaseClaims, ReleaseError> {
    let sign1 = parse_es384(response, MAX_RESPONSE_LEN, RESPONSE_CONTENT_TYPE)
        .map_err(ReleaseError::Response)?;
    verify_es384(&sign1, broker_spki).map_err(|_| ReleaseError::Signature)?;
    ReleaseClaims::from_payload(sign1.payload.as_deref().unwrap_or_default())
}

/// The log entry must be the release these claims describe, and be in a checkpoint the log's
/// key signed.
fn check_log_entry(
    claims: &ReleaseClaims,
    trust: &ReleaseTrust,
) -> Result<proofs::SignedCheckpoint, ReleaseError> {
    let entry = LogEntry::decode(&claims.log_entry)?;
    let Entry::KeyRelease(release) = entry.entry() else {
        return Err(ReleaseError::Log("the log entry is not a key release"));
    };
    let consistent = release.outcome == Outcome::Released
        && release.model_id == claims.model_id.as_str()
        && release.key_id == claims.key_id.as_str()
        && release.policy_version == claims.policy_version
        && release.nonce.as_deref() == Some(&claims.nonce[..])
        && release.document_sha384 == Some(claims.document_sha384)
        && release.lease_ms == Some(claims.lease_ms);
    if !consistent {
        return Err(ReleaseError::Log(
            "the log entry records another decision than the response",
        ));
    }
    included(&entry, &claims.inclusion_proof, claims.log_index, trust)
}

/// `entry` must be at `index` in a checkpoint the log's key signed, by `proof`.
fn included(
    entry: &LogEntry,
    proof: &[u8],
    index: u64,
    trust: &ReleaseTrust,
) -> Result<proofs::SignedCheckpoint, ReleaseError> {
    let included = proofs::audit::verify_inclusion_file(
        proof,
        &entry.leaf_hash(),
        &trust.log_keys,
        trust.log_origin.as_deref(),
    )?;
    if included.index != index {
        return Err(ReleaseError::Mismatch { field: "log_index" });
    }
    trust.witnesses.check(&included.checkpoint.note)?;
    Ok(included.checkpoint)
}

/// Every field a message may carry; which are allowed depends on its operation.
const MESSAGE_FIELDS: [&str; 11] = [
    "v",
    "op",
    "model_id",
    "key_id",
    "nonce",
    "expires_in_ms",
    "document",
    "response",
    "certificate",
    "reason",
    "message",
];

/// The response payload's fields.
const CLAIM_FIELDS: [&str; 14] = [
    "v",
    "nonce",
    "model_id",
    "key_id",
    "model_digest",
    "model_len",
    "policy_version",
    "document_sha384",
    "wrapped_key",
    "oaep_hash",
    "log_index",
    "log_entry",
    "inclusion_proof",
    "lease_ms",
];

/// A renewal payload's fields.
const RENEWAL_FIELDS: [&str; 10] = [
    "v",
    "nonce",
    "model_id",
    "key_id",
    "policy_version",
    "document_sha384",
    "lease_ms",
    "log_index",
    "log_entry",
    "inclusion_proof",
];

/// A field's value, read by the type its name gives it.
enum Item<'a> {
    Uint(u64),
    Text(&'a str),
    Bytes(&'a [u8]),
}

fn read_item<'a>(key: &'static str, r: &mut Reader<'a>) -> Result<Item<'a>, ReleaseError> {
    Ok(match key {
        // `v` sorts before every other key (all longer than one byte): a message of another
        // version is refused as such before its fields are judged by this version's schema.
        "v" => match r.uint()? {
            RELEASE_VERSION => Item::Uint(RELEASE_VERSION),
            other => return Err(ReleaseError::Version(other)),
        },
        "expires_in_ms" | "model_len" | "policy_version" | "log_index" | "lease_ms" => {
            Item::Uint(r.uint()?)
        }
        "op" | "model_id" | "key_id" | "reason" | "message" | "oaep_hash" => Item::Text(r.text()?),
        _ => Item::Bytes(r.bytes()?),
    })
}

fn check_version(f: &mut Fields<Item<'_>>) -> Result<(), ReleaseError> {
    match need_uint(f, "v")? {
        RELEASE_VERSION => Ok(()),
        other => Err(ReleaseError::Version(other)),
    }
}

fn need_uint(f: &mut Fields<Item<'_>>, key: &'static str) -> Result<u64, cbor::Error> {
    match f.need(key)? {
        Item::Uint(n) => Ok(n),
        _ => Err(cbor::Error::invalid(key, "expected an unsigned integer")),
    }
}

fn need_text<'a>(
    f: &mut Fields<Item<'a>>,
    key: &'static str,
    max: usize,
) -> Result<&'a str, cbor::Error> {
    match f.need(key)? {
        Item::Text(t) if t.len() <= max => Ok(t),
        Item::Text(_) => Err(cbor::Error::invalid(
            key,
            format!("longer than {max} bytes"),
        )),
        _ => Err(cbor::Error::invalid(key, "expected text")),
    }
}

fn need_id(f: &mut Fields<Item<'_>>, key: &'static str) -> Result<Id, cbor::Error> {
    let text = need_text(f, key, crate::format::MAX_ID_LEN)?;
    Id::new(text).map_err(|e| cbor::Error::invalid(key, e.to_string()))
}

fn need_bytes<'a>(
    f: &mut Fields<Item<'a>>,
    key: &'static str,
    max: usize,
) -> Result<&'a [u8], cbor::Error> {
    match f.need(key)? {
        Item::Bytes(b) if b.len() <= max => Ok(b),
        Item::Bytes(_) => Err(cbor::Error::invalid(
            key,
            format!("longer than {max} bytes"),
        )),
        _ => Err(cbor::Error::invalid(key, "expected bytes")),
    }
}

fn need_array<const N: usize>(
    f: &mut Fields<Item<'_>>,
    key: &'static str,
) -> Result<[u8; N], cbor::Error> {
    let bytes = need_bytes(f, key, N)?;
    <[u8; N]>::try_from(bytes).map_err(|_| cbor::Error::invalid(key, format!("not {N} bytes")))
}
