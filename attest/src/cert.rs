//! The facts about one certificate that the chain checks need, read with `x509-parser`.
//! Signatures and path building are `rustls-webpki`'s job; this is for precise errors and for
//! the checks webpki leaves to its caller (keyUsage on CAs, the region in a subject).

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::{CertPosition, VerifyError};
use crate::time::Timestamp;
use crate::types::Region;

/// What the verifier needs to know about a certificate.
#[derive(Clone, Debug)]
pub(crate) struct CertInfo {
    pub(crate) position: CertPosition,
    pub(crate) subject: String,
    pub(crate) subject_raw: Vec<u8>,
    pub(crate) issuer_raw: Vec<u8>,
    pub(crate) spki_raw: Vec<u8>,
    pub(crate) not_before: Timestamp,
    pub(crate) not_after: Timestamp,
    /// `Some(true)` for cA=TRUE, `Some(false)` for an explicit cA=FALSE, `None` when absent.
    pub(crate) is_ca: Option<bool>,
    /// keyUsage bits, `None` when the extension is absent.
    pub(crate) key_usage: Option<KeyUsageBits>,
    pub(crate) common_name: Option<String>,
    /// The raw EC point when the key is on P-384.
    pub(crate) p384_point: Option<Vec<u8>>,
    /// The issuer's name, for display.
    pub(crate) issuer: String,
    /// For an EC key: its curve's OID (dotted) and its raw point.
    pub(crate) ec_key: Option<(String, Vec<u8>)>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyUsageBits {
    pub(crate) digital_signature: bool,
    pub(crate) key_cert_sign: bool,
}

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_SECP384R1: &str = "1.3.132.0.34";

impl CertInfo {
    pub(crate) fn parse(der: &[u8], position: CertPosition) -> Result<Self, VerifyError> {
        let malformed = |reason: String| VerifyError::CertificateMalformed { position, reason };
        let (rest, cert) = X509Certificate::from_der(der).map_err(|e| malformed(format!("{e}")))?;
        if !rest.is_empty() {
            return Err(malformed(format!(
                "{} trailing bytes after the certificate",
                rest.len()
            )));
        }
        let is_ca = cert
            .basic_constraints()
            .map_err(|e| malformed(format!("basicConstraints: {e}")))?
            .map(|bc| bc.value.ca);
        let key_usage = cert
            .key_usage()
            .map_err(|e| malformed(format!("keyUsage: {e}")))?
            .map(|ku| KeyUsageBits {
                digital_signature: ku.value.digital_signature(),
                key_cert_sign: ku.value.key_cert_sign(),
            });
        let spki = cert.public_key();
        let ec_curve = (spki.algorithm.algorithm.to_id_string() == OID_EC_PUBLIC_KEY)
            .then(|| {
                spki.algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|oid| oid.to_id_string())
            })
            .flatten();
        let is_p384 = ec_curve.as_deref() == Some(OID_SECP384R1);
        let validity = cert.validity();
        Ok(Self {
            position,
            subject: cert.subject().to_string(),
            subject_raw: cert.subject().as_raw().to_vec(),
            issuer_raw: cert.issuer().as_raw().to_vec(),
            spki_raw: spki.raw.to_vec(),
            not_before: to_timestamp(validity.not_before.timestamp()),
            not_after: to_timestamp(validity.not_after.timestamp()),
            is_ca,
            key_usage,
            common_name: cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_owned),
            p384_point: is_p384.then(|| spki.subject_public_key.data.to_vec()),
            issuer: cert.issuer().to_string(),
            ec_key: ec_curve.map(|curve| (curve, spki.subject_public_key.data.to_vec())),
        })
    }

    /// Valid at `at`, or a precise error naming this certificate.
    pub(crate) fn check_validity(&self, at: Timestamp) -> Result<(), VerifyError> {
        // X.509 times have one-second resolution, and notAfter is inclusive.
        let at_secs = Timestamp::from_unix_secs(at.unix_secs());
        if at_secs < self.not_before {
            return Err(VerifyError::CertificateNotYetValid {
                position: self.position,
                subject: self.subject.clone(),
                not_before: self.not_before,
                at,
            });
        }
        if at_secs > self.not_after {
            return Err(VerifyError::CertificateExpired {
                position: self.position,
                subject: self.subject.clone(),
                not_after: self.not_after,
                at,
            });
        }
        Ok(())
    }

    /// A CA in the chain: cA=TRUE and, since it signs certificates, keyCertSign.
    pub(crate) fn check_ca(&self) -> Result<(), VerifyError> {
        if self.is_ca != Some(true) {
            return Err(VerifyError::BasicConstraints {
                position: self.position,
                subject: self.subject.clone(),
                reason: "a CA certificate must have cA=TRUE",
            });
        }
        if !self.key_usage.is_some_and(|ku| ku.key_cert_sign) {
            return Err(VerifyError::KeyUsage {
                position: self.position,
                subject: self.subject.clone(),
                required: "keyCertSign",
            });
        }
        Ok(())
    }

    /// The signing certificate: not a CA and, if keyUsage is present, allowed to sign.
    pub(crate) fn check_leaf(&self) -> Result<(), VerifyError> {
        if self.is_ca == Some(true) {
            return Err(VerifyError::BasicConstraints {
                position: self.position,
                subject: self.subject.clone(),
                reason: "the signing certificate must not be a CA",
            });
        }
        if self.key_usage.is_some_and(|ku| !ku.digital_signature) {
            return Err(VerifyError::KeyUsage {
                position: self.position,
                subject: self.subject.clone(),
                required: "digitalSignature",
            });
        }
        Ok(())
    }

    pub(crate) fn is_self_issued(&self) -> bool {
        self.subject_raw == self.issuer_raw
    }

    /// The AWS region a Nitro CA names: its common name ends `.<region>.aws.nitro-enclaves`.
    pub(crate) fn nitro_region(&self) -> Option<Region> {
        let cn = self.common_name.as_deref()?;
        let stem = cn.strip_suffix(".aws.nitro-enclaves")?;
        let region = stem.rsplit('.').next()?;
        Region::try_from(region).ok()
    }
}

fn to_timestamp(unix_secs: i64) -> Timestamp {
    Timestamp::from_unix_secs(u64::try_from(unix_secs).unwrap_or(0))
}

/// What a certificate says about itself, read and not verified: for display, and for callers
/// that choose a signature algorithm from the certificate's key (image signing).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertificateFacts {
    /// The subject, as text.
    pub subject: String,
    /// The issuer, as text.
    pub issuer: String,
    /// The start of its validity.
    pub not_before: Timestamp,
    /// The end of its validity (inclusive).
    pub not_after: Timestamp,
    /// For an EC key: its curve's OID (dotted) and its raw point.
    pub ec_key: Option<(String, Vec<u8>)>,
}

impl CertificateFacts {
    /// Read one DER certificate (nothing may follow it).
    pub fn parse(der: &[u8]) -> Result<Self, VerifyError> {
        let info = CertInfo::parse(der, CertPosition::Leaf)?;
        Ok(Self {
            subject: info.subject,
            issuer: info.issuer,
            not_before: info.not_before,
            not_after: info.not_after,
            ec_key: info.ec_key,
        })
    }
}
