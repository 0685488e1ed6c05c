//! Parse and verify AWS Nitro Enclaves attestation documents against AWS's root or a nation's
//! own root of trust.
//!
//! Parsing (syntax) and verification (trust, signature, policy) are separate steps, and the types
//! say which has run: a [`ParsedDocument`] exposes nothing to act on; only a [`VerifiedDocument`]
//! hands out `user_data`, `public_key` and `nonce`. Time is always a parameter.
//!
//! ```
//! use attest::{DocumentTrust, Policy, Timestamp, Verifier, VerifyError};
//!
//! let bytes = include_bytes!("../tests/data/nitro/anjuna-20210324-b9db8022.cbor");
//! let document = attest::parse(bytes)?;
//! let verifier = Verifier::new(DocumentTrust::aws()?);
//!
//! // At the time the document was made, it verifies.
//! let verified = verifier.verify(&document, &Policy::new().dangerous_any_measurements(), document.timestamp())?;
//! assert_eq!(verified.region().map(|r| r.as_str()), Some("us-east-2"));
//! assert!(verified.public_key().is_some());
//!
//! // Today its three-hour leaf certificate has long expired.
//! let today = Timestamp::parse_rfc3339("2026-11-22T00:00:00Z")?;
//! let error = verifier.verify(&document, &Policy::new().dangerous_any_measurements(), today).unwrap_err();
//! assert!(matches!(error, VerifyError::CertificateExpired { .. }));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

mod cache;
mod cert;
mod chain;
mod document;
mod encoding;
mod error;
mod policy;
mod policy_file;
mod time;
mod trust;
mod types;
mod verify;

pub mod approval;
pub mod cose;
#[cfg(feature = "pki")]
pub mod pki;
pub mod service;
#[cfg(feature = "sim")]
pub mod sim;

// The public interface is:
pub use crate::cert::CertificateFacts;
pub use crate::chain::NITRO_CABUNDLE_LEN;
pub use crate::document::{
    MAX_CABUNDLE_LEN, MAX_CERT_LEN, MAX_DOCUMENT_LEN, ParsedDocument, UnsignedDocument, Unverified,
    parse, parse_unsigned,
};
pub use crate::encoding::{Encoding, EncodingError, MAX_ENCODED_LEN, decode_document};
pub use crate::error::{CertPosition, ParseError, PcrDifference, PolicyViolation, VerifyError};
pub use crate::policy::{
    ALLOWED_CLOCK_SKEW, DEFAULT_MAX_AGE, MeasurementSet, Policy, UnpinnedImage,
};
pub use crate::policy_file::{PolicyFile, PolicyFileError, PolicyRules};
pub use crate::service::ServiceTrust;
pub use crate::time::{InvalidDuration, InvalidTime, Timestamp, format_duration, parse_duration};
pub use crate::trust::{
    AWS_NITRO_ROOT_G1_SHA256, DocumentTrust, TrustError, aws_nitro_root_g1, load_certificates,
};
pub use crate::types::{
    MAX_USER_FIELD_LEN, Nonce, OutOfRange, PCR_LEN, PCR_SLOTS, PcrIndex, PcrValue, Region,
};
pub use crate::verify::{AuthenticDocument, TrustPath, VerifiedDocument, Verifier};
