//! The signature section, as `nitro-cli` writes it: a CBOR array holding one map with the
//! signing certificate (PEM) and a COSE_Sign1 over PCR0, both as arrays of byte values (the
//! serde encoding of `Vec<u8>`). The COSE payload is the CBOR map
//! `{"register_index": 0, "register_value": PCR0}`; the protected header is `{alg}` (ES256,
//! ES384 or ES512, matching the certificate's curve), the unprotected header empty.
//!
//! A reader accepts a signature only when it verifies under the certificate's key and covers the
//! PCR0 computed from the image. The certificate's validity period is reported, not enforced:
//! whether it is trusted is for the policy that pins PCR8.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED,
    ECDSA_P384_SHA384_FIXED_SIGNING, ECDSA_P521_SHA512_FIXED, ECDSA_P521_SHA512_FIXED_SIGNING,
    EcdsaKeyPair, EcdsaSigningAlgorithm, EcdsaVerificationAlgorithm, KeyPair, UnparsedPublicKey,
};
use ciborium::Value;
use coset::{CborSerializable, CoseSign1, CoseSign1Builder, HeaderBuilder, iana};
use data_encoding::BASE64;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use attest::CertificateFacts;
use attest::PcrValue;
use attest::Timestamp;

use crate::format::MAX_SIGNATURE_LEN;

const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_P521: &str = "1.3.132.0.35";
const COSE_SIGN1_TAG: u8 = 0xd2;
const CERTIFICATE_FIELD: &str = "signing_certificate";
const SIGNATURE_FIELD: &str = "signature";
const INDEX_FIELD: &str = "register_index";
const VALUE_FIELD: &str = "register_value";

/// A signature section that is malformed, or a signature that does not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The section's CBOR is not the structure `nitro-cli` writes.
    #[error("malformed signature section: {0}")]
    Malformed(String),
    /// The signing certificate cannot be used.
    #[error("signing certificate: {0}")]
    Certificate(String),
    /// The COSE_Sign1 structure is malformed or uses an algorithm other than the certificate's.
    #[error("COSE_Sign1: {0}")]
    Cose(String),
    /// The signature does not verify under the certificate's key.
    #[error("the signature does not verify under the signing certificate's key")]
    BadSignature,
    /// The signature is valid but over another PCR0 than the image's.
    #[error("the signature covers PCR0 {signed}, but the image measures {measured}")]
    WrongPcr0 {
        /// The value signed.
        signed: String,
        /// The value measured.
        measured: String,
    },
    /// The private key cannot be used, or does not belong to the certificate.
    #[error("signing key: {0}")]
    Key(String),
    /// The signer failed.
    #[error("signing failed: {0}")]
    Signing(String),
}

/// The ECDSA algorithms an image signature may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SigningAlgorithm {
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// ECDSA P-384 with SHA-384 (what AWS's documentation uses).
    Es384,
    /// ECDSA P-521 with SHA-512.
    Es512,
}

impl SigningAlgorithm {
    fn for_curve(oid: &str) -> Option<Self> {
        match oid {
            OID_P256 => Some(Self::Es256),
            OID_P384 => Some(Self::Es384),
            OID_P521 => Some(Self::Es512),
            _ => None,
        }
    }

    fn cose(self) -> iana::Algorithm {
        match self {
            Self::Es256 => iana::Algorithm::ES256,
            Self::Es384 => iana::Algorithm::ES384,
            Self::Es512 => iana::Algorithm::ES512,
        }
    }

    fn verification(self) -> &'static EcdsaVerificationAlgorithm {
        match self {
            Self::Es256 => &ECDSA_P256_SHA256_FIXED,
            Self::Es384 => &ECDSA_P384_SHA384_FIXED,
            Self::Es512 => &ECDSA_P521_SHA512_FIXED,
        }
    }

    fn signing(self) -> &'static EcdsaSigningAlgorithm {
        match self {
            Self::Es256 => &ECDSA_P256_SHA256_FIXED_SIGNING,
            Self::Es384 => &ECDSA_P384_SHA384_FIXED_SIGNING,
            Self::Es512 => &ECDSA_P521_SHA512_FIXED_SIGNING,
        }
    }

    /// The digest a raw ECDSA signer (such as PKCS#11 `CKM_ECDSA`) must be given.
    pub fn digest(self) -> &'static aws_lc_rs::digest::Algorithm {
        match self {
            Self::Es256 => &aws_lc_rs::digest::SHA256,
            Self::Es384 => &aws_lc_rs::digest::SHA384,
            Self::Es512 => &aws_lc_rs::digest::SHA512,
        }
    }

    /// The COSE name: `ES256`, `ES384` or `ES512`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::Es512 => "ES512",
        }
    }
}

/// Something that signs an image's PCR0: a key in a file ([`FileSigner`]), or a key in a token.
pub trait PcrSigner {
    /// The certificate for the key (DER); its digest becomes PCR8.
    fn certificate(&self) -> &CertificateDer<'static>;
    /// The algorithm, which must match the certificate's curve.
    fn algorithm(&self) -> SigningAlgorithm;
    /// Sign `message` (the COSE `Sig_structure`), returning `r ‖ s` as COSE encodes it.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignatureError>;
}

/// An ECDSA key held in memory, from a PEM file (PKCS#8 or SEC1 `EC PRIVATE KEY`, as
/// `openssl ecparam -genkey` writes), with its certificate.
pub struct FileSigner {
    key: EcdsaKeyPair,
    certificate: CertificateDer<'static>,
    algorithm: SigningAlgorithm,
}

impl core::fmt::Debug for FileSigner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FileSigner")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The one certificate in `bytes` (PEM or DER), with the signing algorithm its key implies.
pub(crate) fn signing_certificate(
    bytes: &[u8],
) -> Result<
    (
        CertificateDer<'static>,
        CertificateFacts,
        SigningAlgorithm,
        Vec<u8>,
    ),
    SignatureError,
> {
    let mut certificates =
        attest::load_certificates(bytes).map_err(|e| SignatureError::Certificate(e.to_string()))?;
    if certificates.len() != 1 {
        return Err(SignatureError::Certificate(format!(
            "expected one certificate, found {}",
            certificates.len()
        )));
    }
    let certificate = certificates
        .pop()
        .ok_or_else(|| SignatureError::Certificate("no certificate".into()))?;
    let info = CertificateFacts::parse(&certificate)
        .map_err(|e| SignatureError::Certificate(e.to_string()))?;
    let (algorithm, point) = match &info.ec_key {
        Some((curve, point)) => match SigningAlgorithm::for_curve(curve) {
            Some(algorithm) => (algorithm, point.clone()),
            None => {
                return Err(SignatureError::Certificate(format!(
                    "EC curve {curve} is not P-256, P-384 or P-521"
                )));
            }
        },
        None => {
            return Err(SignatureError::Certificate(
                "the key is not an EC key (image signatures are ECDSA)".into(),
            ));
        }
    };
    Ok((certificate, info, algorithm, point))
}

/// The certificate in `bytes` (PEM or DER, exactly one) and the signing algorithm its EC key
/// implies: what a [`PcrSigner`] backed by a token needs.
pub fn certificate_for_signing(
    bytes: &[u8],
) -> Result<(CertificateDer<'static>, SigningAlgorithm), SignatureError> {
    signing_certificate(bytes).map(|(certificate, _, algorithm, _)| (certificate, algorithm))
}

impl FileSigner {
    /// A signer from a PEM private key and its certificate (PEM or DER). Refuses a key that does
    /// not belong to the certificate.
    pub fn from_pem(key_pem: &[u8], certificate: &[u8]) -> Result<Self, SignatureError> {
        let (certificate, _, algorithm, point) = signing_certificate(certificate)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| SignatureError::Key(format!("not a PEM private key: {e}")))?;
        let key = EcdsaKeyPair::from_private_key_der(algorithm.signing(), key.secret_der())
            .map_err(|e| {
                SignatureError::Key(format!(
                    "not an ECDSA key on the certificate's curve ({}): {e}",
                    algorithm.name()
                ))
            })?;
        if key.public_key().as_ref() != point.as_slice() {
            return Err(SignatureError::Key(
                "the private key does not belong to the signing certificate".into(),
            ));
        }
        Ok(FileSigner {
            key,
            certificate,
            algorithm,
        })
    }
}

impl PcrSigner for FileSigner {
    fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignatureError> {
        self.key
            .sign(&SystemRandom::new(), message)
            .map(|signature| signature.as_ref().to_vec())
            .map_err(|_| SignatureError::Signing("ECDSA signing failed".into()))
    }
}

/// The verified signature of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSignature {
    /// The signing certificate (DER); PCR8 is its measurement.
    pub certificate: CertificateDer<'static>,
    /// The algorithm.
    pub algorithm: SigningAlgorithm,
    /// The certificate's subject.
    pub subject: String,
    /// The certificate's issuer.
    pub issuer: String,
    /// Start of the certificate's validity.
    pub not_before: Timestamp,
    /// End of the certificate's validity.
    pub not_after: Timestamp,
}

/// The COSE payload that a signature over `pcr0` covers, byte for byte as `nitro-cli` encodes
/// it.
pub fn pcr0_payload(pcr0: &PcrValue) -> Vec<u8> {
    encode(&Value::Map(vec![
        (Value::Text(INDEX_FIELD.into()), Value::Integer(0.into())),
        (Value::Text(VALUE_FIELD.into()), byte_array(pcr0.as_bytes())),
    ]))
}

fn byte_array(bytes: &[u8]) -> Value {
    Value::Array(bytes.iter().map(|b| Value::Integer((*b).into())).collect())
}

fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing a `Value` into a `Vec` cannot fail.
    let _ = ciborium::into_writer(value, &mut out);
    out
}

/// Whether the base64 between the PEM's armour lines, whitespace aside, is exactly the
/// canonical encoding of `der`. PEM decoders ignore the unused low bits of the last base64
/// character, so without this check a changed byte there would leave the certificate, and so
/// PCR8, unchanged while the image's bytes differ.
fn is_canonical_pem(pem: &[u8], der: &[u8]) -> bool {
    let body = pem
        .strip_prefix(b"-----BEGIN CERTIFICATE-----".as_slice())
        .and_then(|rest| {
            let end = rest
                .windows(b"-----END CERTIFICATE-----".len())
                .position(|w| w == b"-----END CERTIFICATE-----")?;
            rest.get(..end)
        });
    body.is_some_and(|body| {
        body.iter()
            .filter(|b| !b.is_ascii_whitespace())
            .copied()
            .eq(BASE64.encode(der).bytes())
    })
}

fn certificate_pem(certificate: &CertificateDer<'_>) -> String {
    let base64 = BASE64.encode(certificate);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in base64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// Sign `pcr0` and encode the signature section. The section is verified as a reader would
/// before it is returned, so a signer whose key does not match its certificate is caught here.
pub(crate) fn sign_section(
    signer: &dyn PcrSigner,
    pcr0: &PcrValue,
) -> Result<(Vec<u8>, ImageSignature), SignatureError> {
    let algorithm = signer.algorithm();
    let cose = CoseSign1Builder::new()
        .protected(HeaderBuilder::new().algorithm(algorithm.cose()).build())
        .payload(pcr0_payload(pcr0))
        .try_create_signature(b"", |message| signer.sign(message))?
        .build()
        .to_vec()
        .map_err(|e| SignatureError::Cose(e.to_string()))?;
    let section = encode(&Value::Array(vec![Value::Map(vec![
        (
            Value::Text(CERTIFICATE_FIELD.into()),
            byte_array(certificate_pem(signer.certificate()).as_bytes()),
        ),
        (Value::Text(SIGNATURE_FIELD.into()), byte_array(&cose)),
    ])]));
    let verified = verify_section(&section, pcr0)?;
    Ok((section, verified))
}

fn bytes_of(value: Value, what: &str) -> Result<Vec<u8>, SignatureError> {
    match value {
        Value::Bytes(bytes) => Ok(bytes),
        Value::Array(items) => items
            .into_iter()
            .map(|item| {
                item.as_integer()
                    .and_then(|i| u8::try_from(i).ok())
                    .ok_or_else(|| {
                        SignatureError::Malformed(format!(
                            "{what} holds a value that is not a byte"
                        ))
                    })
            })
            .collect(),
        _ => Err(SignatureError::Malformed(format!(
            "{what} is not a byte array"
        ))),
    }
}

fn decode_exact(bytes: &[u8], what: &str) -> Result<Value, SignatureError> {
    let mut rest = bytes;
    let value: Value = ciborium::from_reader(&mut rest)
        .map_err(|e| SignatureError::Malformed(format!("{what} is not CBOR: {e}")))?;
    if !rest.is_empty() {
        return Err(SignatureError::Malformed(format!(
            "{} trailing bytes after {what}",
            rest.len()
        )));
    }
    Ok(value)
}

/// Take the fields of a text-keyed map, refusing duplicates and unknown keys.
fn fields<const N: usize>(
    value: Value,
    names: [&str; N],
    what: &str,
) -> Result<[Value; N], SignatureError> {
    let Value::Map(entries) = value else {
        return Err(SignatureError::Malformed(format!("{what} is not a map")));
    };
    let mut found: [Option<Value>; N] = core::array::from_fn(|_| None);
    for (key, value) in entries {
        let key = key
            .into_text()
            .map_err(|_| SignatureError::Malformed(format!("{what} has a non-text key")))?;
        let slot = names
            .iter()
            .position(|name| *name == key)
            .and_then(|i| found.get_mut(i))
            .ok_or_else(|| SignatureError::Malformed(format!("{what} has unknown key {key:?}")))?;
        if slot.replace(value).is_some() {
            return Err(SignatureError::Malformed(format!(
                "{what} has key {key:?} twice"
            )));
        }
    }
    let mut out = Vec::with_capacity(N);
    for (name, value) in names.iter().zip(found) {
        out.push(
            value.ok_or_else(|| SignatureError::Malformed(format!("{what} has no {name:?}")))?,
        );
    }
    out.try_into()
        .map_err(|_| SignatureError::Malformed(format!("{what}: wrong field count")))
}

/// Decode a signature section and verify it against the image's measured PCR0.
pub(crate) fn verify_section(
    section: &[u8],
    pcr0: &PcrValue,
) -> Result<ImageSignature, SignatureError> {
    if u64::try_from(section.len()).unwrap_or(u64::MAX) > MAX_SIGNATURE_LEN {
        return Err(SignatureError::Malformed(format!(
            "{} bytes; the limit is {MAX_SIGNATURE_LEN}",
            section.len()
        )));
    }
    let Value::Array(entries) = decode_exact(section, "the section")? else {
        return Err(SignatureError::Malformed(
            "the section is not an array".into(),
        ));
    };
    let [entry] = <[Value; 1]>::try_from(entries).map_err(|entries| {
        SignatureError::Malformed(format!(
            "{} PCR signatures; exactly one (over PCR0) is defined",
            entries.len()
        ))
    })?;
    let [certificate, cose] = fields(entry, [CERTIFICATE_FIELD, SIGNATURE_FIELD], "the entry")?;
    let certificate = bytes_of(certificate, CERTIFICATE_FIELD)?;
    if !certificate.starts_with(b"-----BEGIN CERTIFICATE-----") {
        return Err(SignatureError::Certificate(
            "not a PEM certificate (nitro-cli stores it as PEM)".into(),
        ));
    }
    let (der, info, algorithm, point) = signing_certificate(&certificate)?;
    if !is_canonical_pem(&certificate, &der) {
        return Err(SignatureError::Certificate(
            "the PEM's base64 is not the certificate's canonical encoding".into(),
        ));
    }
    let certificate = der;
    let cose = bytes_of(cose, SIGNATURE_FIELD)?;
    let sign1 = if cose.first() == Some(&COSE_SIGN1_TAG) {
        <CoseSign1 as coset::TaggedCborSerializable>::from_tagged_slice(&cose)
    } else {
        CoseSign1::from_slice(&cose)
    }
    .map_err(|e| SignatureError::Cose(e.to_string()))?;
    let expected = HeaderBuilder::new().algorithm(algorithm.cose()).build();
    if sign1.protected.header != expected {
        return Err(SignatureError::Cose(format!(
            "the protected header must be exactly {{alg: {}}}, the certificate's algorithm",
            algorithm.name()
        )));
    }
    if !sign1.unprotected.is_empty() {
        return Err(SignatureError::Cose(
            "the unprotected header must be empty".into(),
        ));
    }
    sign1.verify_signature(b"", |signature, message| {
        UnparsedPublicKey::new(algorithm.verification(), &point)
            .verify(message, signature)
            .map_err(|_| SignatureError::BadSignature)
    })?;
    let payload = sign1
        .payload
        .as_deref()
        .ok_or_else(|| SignatureError::Cose("no payload".into()))?;
    let [index, value] = fields(
        decode_exact(payload, "the payload")?,
        [INDEX_FIELD, VALUE_FIELD],
        "the payload",
    )?;
    if index.as_integer() != Some(0.into()) {
        return Err(SignatureError::Malformed(
            "the payload signs a register other than PCR0".into(),
        ));
    }
    let signed = bytes_of(value, VALUE_FIELD)?;
    if signed.as_slice() != pcr0.as_bytes().as_slice() {
        return Err(SignatureError::WrongPcr0 {
            signed: data_encoding::HEXLOWER.encode(&signed),
            measured: pcr0.to_hex(),
        });
    }
    Ok(ImageSignature {
        certificate,
        algorithm,
        subject: info.subject,
        issuer: info.issuer,
        not_before: info.not_before,
        not_after: info.not_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_canonical_base64_of_the_certificate_is_accepted() {
        let der = [0u8, 1, 2, 3];
        let pem = |body: &str| {
            format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n")
        };
        assert!(is_canonical_pem(pem("AAECAw==").as_bytes(), &der));
        assert!(is_canonical_pem(pem("AAEC\r\n Aw==").as_bytes(), &der));
        // 'x' differs from 'w' only in bits that a lenient decoder drops: the same bytes.
        assert!(!is_canonical_pem(pem("AAECAx==").as_bytes(), &der));
        assert!(!is_canonical_pem(pem("AAECAw").as_bytes(), &der));
        assert!(!is_canonical_pem(pem("AAECAw==AA==").as_bytes(), &der));
        assert!(!is_canonical_pem(
            b"-----BEGIN CERTIFICATE-----\nAAECAw==\n",
            &der
        ));
    }

    #[test]
    fn payload_matches_the_bytes_nitro_cli_writes() {
        // From aws-nitro-enclaves-image-format 0.8.1, src/utils/cbor.rs: PcrInfo { 0, 0..48 },
        // as serde_cbor 0.11 and ciborium both encode it.
        let expected = "a26e72656769737465725f696e646578006e72656769737465725f76616c75659830000102030405060708090a0b0c0d0e0f101112131415161718181819181a181b181c181d181e181f1820182118221823182418251826182718281829182a182b182c182d182e182f";
        let value: Vec<u8> = (0u8..48).collect();
        let pcr = PcrValue::try_from(value.as_slice()).unwrap();
        assert_eq!(
            data_encoding::HEXLOWER.encode(&pcr0_payload(&pcr)),
            expected
        );
    }
}
