//! The inference channel: how an enclave binds its TLS certificate into an attestation document,
//! and the names its API and clients share. `docs/inference.md` describes the whole exchange.
//!
//! The enclave generates its TLS key and a self-signed certificate at boot. Every document it
//! serves at [`ATTESTATION_PATH`] carries, in `user_data`, [`TLS_BINDING_PREFIX`] followed by the
//! SHA-384 of that certificate (DER), and in `public_key` its receipt key. A client that verified
//! the document, over its own nonce, and finds the certificate of the TLS connection it asked on
//! bound there knows that the other end of the connection is the measured enclave.
//!
//! ```
//! use protocol::channel::{tls_binding, check_tls_binding};
//!
//! let certificate = b"the DER of the enclave's certificate";
//! let user_data = tls_binding(certificate);
//! assert!(check_tls_binding(Some(&user_data), certificate).is_ok());
//! assert!(check_tls_binding(Some(&user_data), b"another certificate").is_err());
//! assert!(check_tls_binding(None, certificate).is_err());
//! ```

use aws_lc_rs::digest;

/// What `user_data` starts with when it binds a TLS certificate.
pub const TLS_BINDING_PREFIX: &[u8] = b"attest-tls-v1:";
/// Where the enclave serves a fresh attestation document: `GET /attestation?nonce=<hex>`,
/// answered with the document's raw CBOR (`application/cbor`).
pub const ATTESTATION_PATH: &str = "/attestation";
/// The response header that carries a non-streaming answer's receipt (standard base64).
pub const RECEIPT_HEADER: &str = "x-inference-receipt";
/// The server-sent event that carries a streaming answer's receipt (standard base64 data), sent
/// after the last chunk and before `data: [DONE]`. The receipt's response hash covers every byte
/// of the body before this event.
pub const RECEIPT_EVENT: &str = "receipt";

/// The `user_data` that binds `certificate_der`.
pub fn tls_binding(certificate_der: &[u8]) -> Vec<u8> {
    let mut out = TLS_BINDING_PREFIX.to_vec();
    out.extend_from_slice(digest::digest(&digest::SHA384, certificate_der).as_ref());
    out
}

/// Why a document does not bind a TLS certificate.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BindingError {
    /// The document has no `user_data`.
    #[error("the attestation document has no user_data, so it binds no TLS certificate")]
    Missing,
    /// `user_data` is not a TLS binding.
    #[error("the attestation document's user_data is not a TLS certificate binding")]
    NotABinding,
    /// It binds another certificate.
    #[error(
        "the TLS certificate of this connection is not the one the attestation document binds: \
         something other than the attested enclave terminated TLS"
    )]
    OtherCertificate,
}

/// Check that `user_data` binds `certificate_der`.
pub fn check_tls_binding(
    user_data: Option<&[u8]>,
    certificate_der: &[u8],
) -> Result<(), BindingError> {
    let user_data = user_data.ok_or(BindingError::Missing)?;
    let bound = user_data
        .strip_prefix(TLS_BINDING_PREFIX)
        .filter(|d| d.len() == digest::SHA384_OUTPUT_LEN)
        .ok_or(BindingError::NotABinding)?;
    let actual = digest::digest(&digest::SHA384, certificate_der);
    if bound == actual.as_ref() {
        Ok(())
    } else {
        Err(BindingError::OtherCertificate)
    }
}
