//! Inference receipts: what an enclave signs about every answer it gives.
//!
//! A receipt is a tagged COSE_Sign1 (RFC 9052) with algorithm ES384 in the protected header and,
//! as payload, a CBOR map in the deterministic encoding:
//!
//! ```text
//! { "v": 1, "time": ms, "sequence": uint, "request_sha384": bytes(48),
//!   "response_sha384": bytes(48), "model_digest": bytes(48), "policy_version": uint,
//!   "key_release_index": uint, "checkpoint": text (the log's signed checkpoint) }
//! ```
//!
//! The key is the enclave's: generated inside it at boot and bound into an attestation document
//! (the document's `public_key` field holds its SubjectPublicKeyInfo). A client verifies a
//! receipt offline with the receipt, that document, and its policy: see [`verify_receipt`].

use attest::cose::{CoseError, parse_es384, sign_es384, verify_es384};
use attest::{ParseError, Policy, Timestamp, VerifiedDocument, Verifier, VerifyError};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use cbor::{Map, Profile, Reader, required};
use coset::CoseSign1;

use crate::checkpoint::{CheckpointError, SignedCheckpoint};
use crate::cosignature::{WitnessError, WitnessPolicy};
use crate::note::NoteVerifier;

/// The receipt payload version.
pub const RECEIPT_VERSION: u64 = 1;
/// The largest receipt accepted, in bytes.
pub const MAX_RECEIPT_LEN: usize = 64 * 1024;
/// The content type in a receipt's protected header.
pub const RECEIPT_CONTENT_TYPE: &str = "application/inference-receipt+cbor";

/// Why a receipt was refused or could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The bytes are not a receipt: not a tagged COSE_Sign1 of the receipt's shape.
    #[error("malformed receipt: {0}")]
    Malformed(CoseError),
    /// The payload is not the receipt's map in the deterministic encoding (the error names the
    /// field).
    #[error("malformed receipt payload: {0}")]
    Payload(#[from] cbor::Error),
    /// A payload version this build does not know.
    #[error("receipt version {0} is unknown")]
    Version(u64),
    /// The attestation document cannot be parsed.
    #[error("the attestation document is malformed: {0}")]
    DocumentMalformed(ParseError),
    /// The attestation document does not verify under the policy at the receipt's time.
    #[error("the attestation document is refused: {0}")]
    Document(#[from] VerifyError),
    /// The attestation document binds no usable receipt key.
    #[error("the attestation document binds no P-384 public key: {0}")]
    NoKey(&'static str),
    /// The signature does not verify with the key the document binds.
    #[error("the receipt's signature does not verify with the key in the attestation document")]
    Signature,
    /// A bound field differs from what the verifier expected.
    #[error("{field} is {found}, expected {expected}")]
    Mismatch {
        /// The field.
        field: &'static str,
        /// What the receipt says.
        found: String,
        /// What was expected.
        expected: String,
    },
    /// The receipt claims a time before its attestation document existed.
    #[error("the receipt is dated {receipt}, before its attestation document ({document})")]
    BeforeDocument {
        /// The receipt's time.
        receipt: Timestamp,
        /// The document's time.
        document: Timestamp,
    },
    /// The checkpoint in the receipt does not verify.
    #[error("the receipt's checkpoint is refused: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The key-release entry is not inside the checkpoint's tree.
    #[error("key-release index {index} is not inside the checkpoint's tree of size {size}")]
    IndexOutsideCheckpoint {
        /// The index.
        index: u64,
        /// The checkpoint's size.
        size: u64,
    },
    /// The checkpoint lacks the cosignatures required, or one of them is forged.
    #[error("the receipt's checkpoint is refused: {0}")]
    Witnesses(#[from] WitnessError),
    /// Signing failed.
    #[error("cannot sign: {0}")]
    Sign(&'static str),
}

/// What a receipt binds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptClaims {
    /// When the enclave signed it.
    pub time: Timestamp,
    /// The answer's number on its connection (0 for the first): it tells a client nothing
    /// about the enclave's other connections.
    pub sequence: u64,
    /// SHA-384 of the request body, as received.
    pub request_sha384: [u8; 48],
    /// SHA-384 of the response body, as sent.
    pub response_sha384: [u8; 48],
    /// SHA-384 of the model that answered.
    pub model_digest: [u8; 48],
    /// The release-policy version the model key was released under.
    pub policy_version: u64,
    /// The index of that key-release decision in the transparency log.
    pub key_release_index: u64,
    /// A signed checkpoint of the log that covers that index.
    pub checkpoint: String,
}

/// The payload's fields.
const FIELDS: [&str; 9] = [
    "v",
    "time",
    "sequence",
    "request_sha384",
    "response_sha384",
    "model_digest",
    "policy_version",
    "key_release_index",
    "checkpoint",
];

impl ReceiptClaims {
    fn to_payload(&self) -> Vec<u8> {
        Map::new()
            .with("v", RECEIPT_VERSION)
            .with("time", self.time.unix_millis())
            .with("sequence", self.sequence)
            .with("request_sha384", &self.request_sha384)
            .with("response_sha384", &self.response_sha384)
            .with("model_digest", &self.model_digest)
            .with("policy_version", self.policy_version)
            .with("key_release_index", self.key_release_index)
            .with("checkpoint", &self.checkpoint)
            .encode()
    }

    fn from_payload(payload: &[u8]) -> Result<Self, ReceiptError> {
        Reader::read_all(payload, MAX_RECEIPT_LEN, Profile::Deterministic, |r| {
            let (mut version, mut time, mut sequence) = (None, None, None);
            let (mut request, mut response, mut model) = (None, None, None);
            let (mut policy_version, mut index, mut checkpoint) = (None, None, None);
            let mut map = r.map()?;
            while let Some(key) = map.key(&FIELDS)? {
                let value = map.value();
                match key {
                    "v" => {
                        let v = value.uint()?;
                        if v != RECEIPT_VERSION {
                            return Err(ReceiptError::Version(v));
                        }
                        version = Some(v);
                    }
                    "time" => time = Some(Timestamp::from_unix_millis(value.uint()?)),
                    "sequence" => sequence = Some(value.uint()?),
                    "request_sha384" => request = Some(digest(value)?),
                    "response_sha384" => response = Some(digest(value)?),
                    "model_digest" => model = Some(digest(value)?),
                    "policy_version" => policy_version = Some(value.uint()?),
                    "key_release_index" => index = Some(value.uint()?),
                    _ => checkpoint = Some(value.text()?.to_owned()),
                }
            }
            required(version, "v")?;
            Ok(Self {
                time: required(time, "time")?,
                sequence: required(sequence, "sequence")?,
                request_sha384: required(request, "request_sha384")?,
                response_sha384: required(response, "response_sha384")?,
                model_digest: required(model, "model_digest")?,
                policy_version: required(policy_version, "policy_version")?,
                key_release_index: required(index, "key_release_index")?,
                checkpoint: required(checkpoint, "checkpoint")?,
            })
        })
    }
}

fn digest(r: &mut Reader<'_>) -> Result<[u8; 48], cbor::Error> {
    let start = r.offset();
    let bytes = r.bytes()?;
    <[u8; 48]>::try_from(bytes).map_err(|_| r.invalid(start, "a SHA-384 digest is 48 bytes"))
}

/// A receipt as received: its claims, not yet verified.
#[derive(Clone, Debug, PartialEq)]
pub struct Receipt {
    /// What it claims.
    pub claims: ReceiptClaims,
    sign1: CoseSign1,
}

impl Receipt {
    /// Parse a receipt. Nothing is verified here: see [`verify_receipt`].
    pub fn parse(bytes: &[u8]) -> Result<Self, ReceiptError> {
        let sign1 = parse_es384(bytes, MAX_RECEIPT_LEN, RECEIPT_CONTENT_TYPE)
            .map_err(ReceiptError::Malformed)?;
        let claims = ReceiptClaims::from_payload(sign1.payload.as_deref().unwrap_or_default())?;
        Ok(Self { claims, sign1 })
    }

    fn verify_signature(&self, public_key: &[u8]) -> Result<(), ReceiptError> {
        verify_es384(&self.sign1, public_key).map_err(|_| ReceiptError::Signature)
    }
}

/// The enclave's receipt key.
#[derive(Debug)]
pub struct ReceiptSigner {
    key: EcdsaKeyPair,
}

impl ReceiptSigner {
    /// A fresh P-384 key. It never leaves the enclave and dies with it.
    pub fn generate() -> Result<Self, ReceiptError> {
        let key = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING)
            .map_err(|_| ReceiptError::Sign("key generation failed"))?;
        Ok(Self { key })
    }

    /// The public key as a DER SubjectPublicKeyInfo: what the attestation document's
    /// `public_key` binds.
    pub fn public_key_der(&self) -> Result<Vec<u8>, ReceiptError> {
        self.key
            .public_key()
            .as_der()
            .map(|der| der.as_ref().to_vec())
            .map_err(|_| ReceiptError::Sign("cannot encode the public key"))
    }

    /// Sign `claims`; returns the tagged COSE_Sign1 bytes.
    pub fn sign(&self, claims: &ReceiptClaims) -> Result<Vec<u8>, ReceiptError> {
        sign_es384(&self.key, RECEIPT_CONTENT_TYPE, claims.to_payload()).map_err(|e| match e {
            CoseError::Sign(reason) => ReceiptError::Sign(reason),
            _ => ReceiptError::Sign("the receipt could not be encoded"),
        })
    }
}

/// What a receipt must match to be accepted.
#[derive(Debug)]
pub struct ReceiptPolicy {
    /// The policy the attestation document must satisfy (measurements, debug, region, age).
    /// The document is judged at the receipt's time, so its age is the receipt's age at signing.
    pub attestation: Policy,
    /// The model that must have answered.
    pub model_digest: [u8; 48],
    /// The release-policy version the key must have been released under, if pinned.
    pub policy_version: Option<u64>,
    /// Keys that may sign the log's checkpoints. Empty means the checkpoint is not checked,
    /// which the caller must choose explicitly.
    pub log_keys: Vec<NoteVerifier>,
    /// The log's origin, if pinned.
    pub log_origin: Option<String>,
    /// The witnesses that must have cosigned the checkpoint (none by default). Requiring any
    /// needs log keys.
    pub witnesses: WitnessPolicy,
}

/// A receipt that verified, with the document that vouches for its key.
#[derive(Debug)]
pub struct VerifiedReceipt {
    /// What the receipt binds.
    pub claims: ReceiptClaims,
    /// The attestation document, verified at the receipt's time.
    pub document: VerifiedDocument,
    /// The log checkpoint, if log keys were given.
    pub checkpoint: Option<SignedCheckpoint>,
}

/// Verify a receipt offline:
///
/// 1. parse the receipt (strict COSE_Sign1, ES384, canonical payload);
/// 2. verify the attestation document with `verifier` under `policy.attestation`, at the
///    receipt's time, and check the receipt is not dated before the document by more than the
///    clock skew a document check allows ([`attest::ALLOWED_CLOCK_SKEW`]; within it, the
///    document is judged at its own time);
/// 3. verify the receipt's signature with the public key the document binds;
/// 4. check the request and response hashes, the model digest and the policy version;
/// 5. if log keys are given, verify the checkpoint, that it covers the key-release index, and
///    that the witnesses the policy requires cosigned it.
pub fn verify_receipt(
    receipt: &[u8],
    document: &[u8],
    verifier: &Verifier,
    policy: &ReceiptPolicy,
    request_sha384: &[u8; 48],
    response_sha384: &[u8; 48],
) -> Result<VerifiedReceipt, ReceiptError> {
    let receipt = Receipt::parse(receipt)?;
    let claims = &receipt.claims;
    let parsed = attest::parse(document).map_err(ReceiptError::DocumentMalformed)?;
    // The receipt's time comes from the enclave's clock, the document's from the NSM's: they
    // may disagree by the clock skew a document check allows. A receipt dated earlier than that
    // before its document is refused first, so that the refusal names the cause rather than a
    // certificate that was not yet valid; within the skew, the document is judged at its own
    // time (its age then counts from there).
    let document_time = parsed.timestamp();
    if claims.time.saturating_add(attest::ALLOWED_CLOCK_SKEW) < document_time {
        return Err(ReceiptError::BeforeDocument {
            receipt: claims.time,
            document: document_time,
        });
    }
    let at = claims.time.max(document_time);
    let verified = verifier.verify(&parsed, &policy.attestation, at)?;
    let key = verified
        .public_key()
        .ok_or(ReceiptError::NoKey("the document has no public_key"))?;
    receipt.verify_signature(key)?;

    expect("request_sha384", &claims.request_sha384, request_sha384)?;
    expect("response_sha384", &claims.response_sha384, response_sha384)?;
    expect("model_digest", &claims.model_digest, &policy.model_digest)?;
    if let Some(version) = policy.policy_version
        && claims.policy_version != version
    {
        return Err(ReceiptError::Mismatch {
            field: "policy_version",
            found: claims.policy_version.to_string(),
            expected: version.to_string(),
        });
    }
    let checkpoint = if policy.log_keys.is_empty() {
        if policy.witnesses.is_required() {
            return Err(ReceiptError::Witnesses(WitnessError::Policy(
                "witnesses are required but no log key is given".into(),
            )));
        }
        None
    } else {
        let cp = SignedCheckpoint::open(
            claims.checkpoint.as_bytes(),
            &policy.log_keys,
            policy.log_origin.as_deref(),
        )?;
        if claims.key_release_index >= cp.checkpoint.size {
            return Err(ReceiptError::IndexOutsideCheckpoint {
                index: claims.key_release_index,
                size: cp.checkpoint.size,
            });
        }
        policy.witnesses.check(&cp.note)?;
        Some(cp)
    };
    Ok(VerifiedReceipt {
        claims: receipt.claims,
        document: verified,
        checkpoint,
    })
}

fn expect(field: &'static str, found: &[u8; 48], expected: &[u8; 48]) -> Result<(), ReceiptError> {
    if found == expected {
        return Ok(());
    }
    Err(ReceiptError::Mismatch {
        field,
        found: data_encoding::HEXLOWER.encode(found),
        expected: data_encoding::HEXLOWER.encode(expected),
    })
}
