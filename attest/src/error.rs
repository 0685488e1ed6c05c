//! What went wrong, precisely enough to act on. Parse errors (syntax) and verify errors (trust,
//! signatures, policy) are different types, as they are different steps.

use core::fmt;
use core::time::Duration;

use crate::time::{Timestamp, format_duration};
use crate::types::{PcrIndex, PcrValue, Region};

/// The document is not a well-formed Nitro attestation document. Nothing about trust was checked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Longer than [`crate::MAX_DOCUMENT_LEN`].
    #[error("document is {len} bytes; the limit is {max}")]
    TooLarge {
        /// The length found.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a COSE_Sign1 structure.
    #[error("not a COSE_Sign1 structure: {reason}")]
    Cose {
        /// Why.
        reason: String,
    },
    /// Tagged with something other than COSE_Sign1 (18).
    #[error("CBOR tag {tag} where a COSE_Sign1 (tag 18) or untagged structure was expected")]
    UnexpectedTag {
        /// The tag number.
        tag: u64,
    },
    /// The protected header is not exactly `{alg: ES384}`.
    #[error("protected header must be exactly {{alg: ES384}}; found {found}")]
    Algorithm {
        /// What was found.
        found: String,
    },
    /// The document is not signed: an emulated NSM's (QEMU's `nitro-enclave` machine), which
    /// writes a non-ES384 algorithm, a zero signature and zero bytes for its certificates. No verifier may accept
    /// it; `attest inspect` shows its fields.
    #[error(
        "the document is not signed (COSE algorithm {algorithm}, a signature of {signature_len} \
         zero bytes, no certificate or CA bundle, as an emulated NSM writes them): it carries no \
         signature, so nothing in it can be verified"
    )]
    Unsigned {
        /// The algorithm the protected header names ("none" if it names none).
        algorithm: String,
        /// The length of the all-zero signature.
        signature_len: usize,
    },
    /// The payload is detached or absent.
    #[error("COSE_Sign1 has no payload")]
    PayloadMissing,
    /// An ES384 signature is 96 bytes (r ‖ s).
    #[error("signature is {len} bytes; ES384 signatures are 96")]
    SignatureLength {
        /// The length found.
        len: usize,
    },
    /// The payload is not one well-formed CBOR item.
    #[error("payload is not well-formed CBOR: {reason}")]
    PayloadCbor {
        /// Why.
        reason: String,
    },
    /// The payload is not a CBOR map.
    #[error("payload must be a CBOR map")]
    PayloadNotMap,
    /// A map key that is not a text string.
    #[error("payload has a map key that is not a text string")]
    NonTextKey,
    /// The same key twice.
    #[error("field {field:?} appears more than once")]
    DuplicateField {
        /// The field.
        field: String,
    },
    /// A key the format does not define.
    #[error("unknown field {field:?}")]
    UnknownField {
        /// The field.
        field: String,
    },
    /// A required key is absent.
    #[error("required field {field:?} is missing")]
    MissingField {
        /// The field.
        field: &'static str,
    },
    /// A value of the wrong CBOR type.
    #[error("field {field:?} must be {expected}")]
    FieldType {
        /// The field.
        field: &'static str,
        /// What was expected.
        expected: &'static str,
    },
    /// A value outside its size bound.
    #[error("field {field:?} is {len} long; it must be {bound}")]
    FieldSize {
        /// The field.
        field: &'static str,
        /// The length found.
        len: usize,
        /// The bound, in words.
        bound: &'static str,
    },
    /// A value with the right type and size but a meaning the format does not allow.
    #[error("field {field:?} is invalid: {reason}")]
    FieldValue {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// Where a certificate sits in the chain being checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertPosition {
    /// The document's `certificate`, whose key signed the document.
    Leaf,
    /// `cabundle[i]`; index 0 is the root the document names.
    Bundle(usize),
    /// A configured cross-certificate.
    CrossCertificate,
    /// A configured trust anchor.
    TrustAnchor,
}

impl fmt::Display for CertPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Leaf => f.write_str("leaf certificate"),
            Self::Bundle(0) => f.write_str("cabundle[0] (root)"),
            Self::Bundle(i) => write!(f, "cabundle[{i}]"),
            Self::CrossCertificate => f.write_str("cross-certificate"),
            Self::TrustAnchor => f.write_str("trust anchor"),
        }
    }
}

/// The document is well-formed but must not be trusted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A certificate's DER could not be read.
    #[error("{position} is malformed: {reason}")]
    CertificateMalformed {
        /// Where the certificate sits in the chain.
        position: CertPosition,
        /// Why.
        reason: String,
    },
    /// A certificate had expired at the time asked.
    #[error("{position} {subject:?} expired at {not_after} (checked at {at})")]
    CertificateExpired {
        /// Where the certificate sits in the chain.
        position: CertPosition,
        /// The certificate's subject.
        subject: String,
        /// The end of its validity.
        not_after: Timestamp,
        /// The time asked.
        at: Timestamp,
    },
    /// A certificate was not yet valid at the time asked.
    #[error("{position} {subject:?} is not valid before {not_before} (checked at {at})")]
    CertificateNotYetValid {
        /// Where the certificate sits in the chain.
        position: CertPosition,
        /// The certificate's subject.
        subject: String,
        /// The start of its validity.
        not_before: Timestamp,
        /// The time asked.
        at: Timestamp,
    },
    /// A CA certificate lacks `basicConstraints cA=TRUE`, or the leaf claims to be a CA.
    #[error("{position} {subject:?} has the wrong basicConstraints: {reason}")]
    BasicConstraints {
        /// Where the certificate sits in the chain.
        position: CertPosition,
        /// The certificate's subject.
        subject: String,
        /// Why.
        reason: &'static str,
    },
    /// A certificate's keyUsage does not allow what the chain uses its key for.
    #[error("{position} {subject:?} keyUsage lacks {required}")]
    KeyUsage {
        /// Where the certificate sits in the chain.
        position: CertPosition,
        /// The certificate's subject.
        subject: String,
        /// The key usage the chain needs.
        required: &'static str,
    },
    /// `cabundle` is not root-first with each certificate issued by the one before it.
    #[error("{position} {subject:?} is out of order: its issuer should be {expected_issuer:?}")]
    ChainOrder {
        /// Where the certificate sits in the chain.
        position: CertPosition,
        /// The certificate's subject.
        subject: String,
        /// The issuer the next certificate should have.
        expected_issuer: String,
    },
    /// `cabundle` is not the Nitro shape: the root, then the regional, zonal and instance CAs.
    #[error(
        "cabundle holds {found} certificates; a Nitro chain is the root, then the regional, \
         zonal and instance CAs ({expected}), and the leaf is issued by the instance CA",
        expected = crate::chain::NITRO_CABUNDLE_LEN
    )]
    ChainShape {
        /// How many certificates the document's `cabundle` holds.
        found: usize,
    },
    /// The root named by `cabundle[0]` is neither a configured trust anchor nor cross-certified
    /// by one.
    #[error("root {root:?} is not trusted: it is not a configured trust anchor{detail}")]
    UntrustedRoot {
        /// The root.
        root: String,
        /// What was wrong.
        detail: String,
    },
    /// Path validation (signatures, constraints, validity of configured certificates) failed.
    #[error("certificate chain rejected: {reason}")]
    Chain {
        /// Why.
        reason: String,
    },
    /// The leaf key is not a P-384 EC key, so it cannot have made an ES384 signature.
    #[error("leaf certificate key is not an EC P-384 key")]
    LeafKeyAlgorithm,
    /// The COSE_Sign1 signature does not verify with the leaf certificate's key.
    #[error("document signature does not verify with the leaf certificate's key")]
    SignatureInvalid,
    /// The document is authentic but the policy refuses it.
    #[error(transparent)]
    Policy(#[from] PolicyViolation),
}

impl VerifyError {
    /// A stable, machine-readable name for the kind of failure (used in `--json`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::CertificateMalformed { .. } => "certificate_malformed",
            Self::CertificateExpired { .. } => "certificate_expired",
            Self::CertificateNotYetValid { .. } => "certificate_not_yet_valid",
            Self::BasicConstraints { .. } => "basic_constraints",
            Self::KeyUsage { .. } => "key_usage",
            Self::ChainOrder { .. } => "chain_order",
            Self::ChainShape { .. } => "chain_shape",
            Self::UntrustedRoot { .. } => "untrusted_root",
            Self::Chain { .. } => "chain_invalid",
            Self::LeafKeyAlgorithm => "leaf_key_algorithm",
            Self::SignatureInvalid => "signature_invalid",
            Self::Policy(p) => p.kind(),
        }
    }
}

/// The payload reader's errors, as the parse errors they always were: key errors by field,
/// type errors naming the field, anything else as not well-formed.
impl From<cbor::Error> for ParseError {
    fn from(e: cbor::Error) -> Self {
        use cbor::ErrorKind;
        match (e.kind(), e.field()) {
            (ErrorKind::MissingKey { key }, _) => Self::MissingField { field: key },
            (ErrorKind::UnknownKey { key }, None) => Self::UnknownField { field: key.clone() },
            (ErrorKind::DuplicateKey { key }, None) => Self::DuplicateField { field: key.clone() },
            (ErrorKind::DuplicateKey { key }, Some(field)) => Self::FieldValue {
                field,
                reason: format!("{key} appears more than once"),
            },
            (ErrorKind::KeyType { .. }, None) => Self::NonTextKey,
            (ErrorKind::Type { expected, .. }, Some(field)) => Self::FieldType { field, expected },
            (ErrorKind::Type { .. }, None) => Self::PayloadNotMap,
            (ErrorKind::TooLarge { len, max }, _) => Self::TooLarge {
                len: *len,
                max: *max,
            },
            _ => Self::PayloadCbor {
                reason: e.to_string(),
            },
        }
    }
}

impl ParseError {
    /// A stable, machine-readable name for the kind of failure (used in `--json`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unsigned { .. } => "unsigned_document",
            _ => "malformed_document",
        }
    }
}

/// One way a document's PCRs differ from one allowed measurement set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcrDifference {
    /// Which allowed set (0-based, in policy order).
    pub set: usize,
    /// The first PCR in that set that differs.
    pub index: PcrIndex,
    /// What the policy requires.
    pub expected: PcrValue,
    /// What the document has; `None` if it lacks the PCR.
    pub actual: Option<PcrValue>,
}

impl fmt::Display for PcrDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.actual {
            Some(actual) => write!(
                f,
                "{} differs: expected {}, document has {}",
                self.index, self.expected, actual
            ),
            None => write!(
                f,
                "{} is required ({}) but the document does not have it",
                self.index, self.expected
            ),
        }
    }
}

/// The policy's reason for refusing an authentic document.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyViolation {
    /// The policy has one measurement set and the document does not match it.
    #[error("{0}")]
    PcrMismatch(PcrDifference),
    /// The policy has several measurement sets and the document matches none.
    #[error("PCRs match none of the {} allowed measurement sets: {}", .0.len(), join(.0))]
    NoMeasurementSetMatched(Vec<PcrDifference>),
    /// The policy lists no measurements and was not told to accept any image
    /// ([`crate::Policy::dangerous_any_measurements`]).
    #[error(
        "the policy pins no measurements: allow a measurement set, or accept any image with \
         dangerous_any_measurements"
    )]
    NoMeasurements,
    /// PCR0 is all zeros: the enclave runs in debug mode, and the policy does not allow it.
    #[error("enclave runs in debug mode (PCR0 is all zeros) and the policy does not allow debug")]
    DebugMode,
    /// Without PCR0 the verifier cannot tell whether the enclave runs in debug mode.
    #[error("document has no PCR0, so debug mode cannot be ruled out")]
    NoPcr0,
    /// Older than the policy's maximum age at the time asked.
    #[error(
        "document is stale: made at {timestamp}, {} before {at}; the maximum age is {}",
        format_duration(*age),
        format_duration(*max_age)
    )]
    Stale {
        /// When the document says it was made.
        timestamp: Timestamp,
        /// The time asked.
        at: Timestamp,
        /// Its age at the time asked.
        age: Duration,
        /// The policy's maximum age.
        max_age: Duration,
    },
    /// Made after the time asked (beyond the allowed clock skew).
    #[error("document is dated {timestamp}, after the verification time {at}")]
    FromTheFuture {
        /// When the document says it was made.
        timestamp: Timestamp,
        /// The time asked.
        at: Timestamp,
    },
    /// A nonce was expected and the document has none.
    #[error("document has no nonce; expected {expected}")]
    NonceMissing {
        /// What was expected.
        expected: String,
    },
    /// The document's nonce is not the expected one.
    #[error("nonce mismatch: expected {expected}, document has {actual}")]
    NonceMismatch {
        /// What was expected.
        expected: String,
        /// What the document has.
        actual: String,
    },
    /// The region is not among those the policy allows.
    #[error("region {region} is not allowed (allowed: {})", join(allowed))]
    RegionNotAllowed {
        /// The region the chain names.
        region: Region,
        /// The regions the policy allows.
        allowed: Vec<Region>,
    },
    /// The policy restricts regions but the chain names none that can be read.
    #[error("the policy restricts regions but the regional CA's subject names no region")]
    RegionUnknown,
}

impl PolicyViolation {
    /// A stable, machine-readable name for the kind of failure (used in `--json`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::PcrMismatch(_) | Self::NoMeasurementSetMatched(_) => "pcr_mismatch",
            Self::NoMeasurements => "no_measurements",
            Self::DebugMode => "debug_mode",
            Self::NoPcr0 => "no_pcr0",
            Self::Stale { .. } => "stale",
            Self::FromTheFuture { .. } => "from_the_future",
            Self::NonceMissing { .. } => "nonce_missing",
            Self::NonceMismatch { .. } => "nonce_mismatch",
            Self::RegionNotAllowed { .. } => "region_not_allowed",
            Self::RegionUnknown => "region_unknown",
        }
    }
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
