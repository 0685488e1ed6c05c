//! COSE_Sign1 (RFC 9052) with ES384, as the system's own signed objects use it: inference
//! receipts and key-release responses. Tagged, the protected header naming ES384 and the
//! object's content type and nothing critical, the payload embedded, no external data. One
//! signer and one opener, so that both kinds are checked the same way. (Attestation documents
//! are COSE_Sign1 too, but in AWS's shape: see [`crate::parse`].)
//!
//! ```
//! use attest::cose::{CoseError, open_es384, sign_es384};
//! use aws_lc_rs::rand::SystemRandom;
//! use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
//!
//! let key = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING)?;
//! let signed = sign_es384(&key, "application/example+cbor", b"payload".to_vec())?;
//! let public = key.public_key().as_ref();
//! let payload = open_es384(&signed, 1024, "application/example+cbor", public)?;
//! assert_eq!(payload, b"payload");
//!
//! // Another content type is refused, even under the right key.
//! let error = open_es384(&signed, 1024, "application/other", public).unwrap_err();
//! assert!(matches!(error, CoseError::Header(_)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED, EcdsaKeyPair, UnparsedPublicKey};
use coset::{CoseSign1, CoseSign1Builder, HeaderBuilder, TaggedCborSerializable, iana};

/// An ES384 signature: r ‖ s, 48 bytes each.
const SIGNATURE_LEN: usize = 96;

/// Why a signed object was refused, or could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoseError {
    /// Larger than the object may be.
    #[error("{len} bytes; the limit is {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a tagged COSE_Sign1.
    #[error("not a tagged COSE_Sign1: {0}")]
    NotSign1(#[source] coset::CoseError),
    /// The protected header is not the one expected.
    #[error("the protected header {0}")]
    Header(&'static str),
    /// The payload is detached.
    #[error("the payload is detached")]
    Detached,
    /// The signature is not 96 bytes.
    #[error("an ES384 signature is 96 bytes, not {0}")]
    SignatureLength(usize),
    /// The signature does not verify with the key.
    #[error("the signature does not verify")]
    Signature,
    /// Signing or encoding failed.
    #[error("cannot sign: {0}")]
    Sign(&'static str),
}

/// Sign `payload` with `key` (P-384, `ECDSA_P384_SHA384_FIXED_SIGNING`) under `content_type`:
/// the tagged COSE_Sign1 bytes.
pub fn sign_es384(
    key: &EcdsaKeyPair,
    content_type: &str,
    payload: Vec<u8>,
) -> Result<Vec<u8>, CoseError> {
    let protected = HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES384)
        .content_type(content_type.to_owned())
        .build();
    let rng = SystemRandom::new();
    let mut failed = false;
    let sign1 = CoseSign1Builder::new()
        .protected(protected)
        .payload(payload)
        .create_signature(b"", |data| match key.sign(&rng, data) {
            Ok(signature) => signature.as_ref().to_vec(),
            Err(_) => {
                failed = true;
                Vec::new()
            }
        })
        .build();
    if failed {
        return Err(CoseError::Sign("the key could not sign"));
    }
    sign1
        .to_tagged_vec()
        .map_err(|_| CoseError::Sign("the COSE_Sign1 could not be encoded"))
}

/// [`sign_es384`] with a signer of its own (an HSM, say): `sign` gets the bytes to sign (the
/// COSE Sig_structure) and returns the ES384 signature, r ‖ s, 96 bytes.
pub fn sign_es384_with(
    content_type: &str,
    payload: Vec<u8>,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, String>,
) -> Result<Vec<u8>, CoseError> {
    let protected = HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES384)
        .content_type(content_type.to_owned())
        .build();
    let mut outcome = Ok(());
    let mut sign = Some(sign);
    let sign1 = CoseSign1Builder::new()
        .protected(protected)
        .payload(payload)
        .create_signature(b"", |data| match sign.take().map(|f| f(data)) {
            Some(Ok(signature)) if signature.len() == SIGNATURE_LEN => signature,
            Some(Ok(_)) => {
                outcome = Err(CoseError::Sign("the signer's signature is not 96 bytes"));
                Vec::new()
            }
            _ => {
                outcome = Err(CoseError::Sign("the signer could not sign"));
                Vec::new()
            }
        })
        .build();
    outcome?;
    sign1
        .to_tagged_vec()
        .map_err(|_| CoseError::Sign("the COSE_Sign1 could not be encoded"))
}

/// Parse a signed object of at most `max` bytes and check its shape: tagged, ES384 with
/// `content_type` and nothing critical in the protected header, an embedded payload, a 96-byte
/// signature. Its signature is not checked: see [`verify_es384`].
pub fn parse_es384(bytes: &[u8], max: usize, content_type: &str) -> Result<CoseSign1, CoseError> {
    if bytes.len() > max {
        return Err(CoseError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    let sign1 = CoseSign1::from_tagged_slice(bytes).map_err(CoseError::NotSign1)?;
    let header = &sign1.protected.header;
    if header.alg
        != Some(coset::RegisteredLabelWithPrivate::Assigned(
            iana::Algorithm::ES384,
        ))
    {
        return Err(CoseError::Header("must name ES384"));
    }
    if !header.crit.is_empty() {
        return Err(CoseError::Header("names critical parameters"));
    }
    if header.content_type != Some(coset::ContentType::Text(content_type.to_owned())) {
        return Err(CoseError::Header("names another content type"));
    }
    if sign1.payload.is_none() {
        return Err(CoseError::Detached);
    }
    if sign1.signature.len() != SIGNATURE_LEN {
        return Err(CoseError::SignatureLength(sign1.signature.len()));
    }
    Ok(sign1)
}

/// Check `sign1`'s signature with `public_key` (an uncompressed P-384 point, or its DER
/// SubjectPublicKeyInfo).
pub fn verify_es384(sign1: &CoseSign1, public_key: &[u8]) -> Result<(), CoseError> {
    sign1
        .verify_signature(b"", |signature, data| {
            UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, public_key).verify(data, signature)
        })
        .map_err(|_| CoseError::Signature)
}

/// [`parse_es384`], then [`verify_es384`]: the payload of an object `public_key` signed.
pub fn open_es384(
    bytes: &[u8],
    max: usize,
    content_type: &str,
    public_key: &[u8],
) -> Result<Vec<u8>, CoseError> {
    let sign1 = parse_es384(bytes, max, content_type)?;
    verify_es384(&sign1, public_key)?;
    sign1.payload.ok_or(CoseError::Detached)
}
