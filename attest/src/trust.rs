//! Trust anchors: the AWS Nitro root G1 built in, and a nation's roots and cross-certificates
//! loaded from files.
//!
//! A nation takes control of trust by cross-certification: its root issues a CA certificate with
//! the AWS root's subject and key. A verifier that trusts only the national root then accepts AWS
//! documents through that cross-certificate, and stops when it expires or is withdrawn.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor};

use crate::cert::CertInfo;
use crate::error::{CertPosition, VerifyError};
use crate::time::Timestamp;

/// SHA-256 of the DER of the AWS Nitro Enclaves root G1, as AWS publishes it.
pub const AWS_NITRO_ROOT_G1_SHA256: &str =
    "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b";

const AWS_NITRO_ROOT_G1_PEM: &str = include_str!("aws_nitro_root_g1.pem");

/// A certificate file that could not be used as a trust anchor or cross-certificate.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// Neither PEM certificates nor one DER certificate.
    #[error("no certificate found: expected PEM (BEGIN CERTIFICATE) or DER")]
    NoCertificate,
    /// The certificate could not be read.
    #[error(transparent)]
    Certificate(#[from] VerifyError),
    /// webpki refused the certificate as an anchor.
    #[error("cannot be a trust anchor: {reason}")]
    Anchor { reason: String },
    /// A cross-certificate must be a CA that may sign certificates.
    #[error("not a usable cross-certificate: {reason}")]
    NotCa { reason: String },
    /// The built-in AWS root does not match its pinned fingerprint (a corrupted build).
    #[error("built-in AWS Nitro root does not match its pinned SHA-256 fingerprint")]
    AwsRootFingerprint,
}

/// A configured trust anchor.
#[derive(Clone, Debug)]
pub(crate) struct Anchor {
    pub(crate) anchor: TrustAnchor<'static>,
    pub(crate) info: CertInfo,
    pub(crate) is_aws_root: bool,
}

/// The roots and cross-certificates a [`crate::Verifier`] trusts.
#[derive(Clone, Debug, Default)]
pub struct TrustStore {
    pub(crate) anchors: Vec<Anchor>,
    pub(crate) cross_certs: Vec<(CertificateDer<'static>, CertInfo)>,
}

impl TrustStore {
    /// No anchors: add national roots with [`TrustStore::add_root`].
    pub fn empty() -> Self {
        Self::default()
    }

    /// The built-in AWS Nitro root G1, checked against its pinned fingerprint.
    pub fn aws() -> Result<Self, TrustError> {
        let mut store = Self::empty();
        store.add_aws_root()?;
        Ok(store)
    }

    /// Add the built-in AWS Nitro root G1.
    pub fn add_aws_root(&mut self) -> Result<(), TrustError> {
        let der = aws_nitro_root_g1();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
        if data_encoding::HEXLOWER.encode(digest.as_ref()) != AWS_NITRO_ROOT_G1_SHA256 {
            return Err(TrustError::AwsRootFingerprint);
        }
        self.push_anchor(der, true)
    }

    /// Trust a root (for example a national root CA), given as DER.
    pub fn add_root(&mut self, der: CertificateDer<'static>) -> Result<(), TrustError> {
        self.push_anchor(der, false)
    }

    /// Add a cross-certificate: a CA certificate one of the roots issued for another root (such
    /// as a national root's certificate for the AWS root), given as DER.
    pub fn add_cross_certificate(
        &mut self,
        der: CertificateDer<'static>,
    ) -> Result<(), TrustError> {
        let info = CertInfo::parse(&der, CertPosition::CrossCertificate)?;
        info.check_ca().map_err(|e| TrustError::NotCa {
            reason: e.to_string(),
        })?;
        self.cross_certs.push((der, info));
        Ok(())
    }

    /// True when no root is configured: such a store accepts nothing.
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    fn push_anchor(
        &mut self,
        der: CertificateDer<'static>,
        is_aws_root: bool,
    ) -> Result<(), TrustError> {
        let info = CertInfo::parse(&der, CertPosition::TrustAnchor)?;
        let anchor = webpki::anchor_from_trusted_cert(&der)
            .map_err(|e| TrustError::Anchor {
                reason: format!("{e:?}"),
            })?
            .to_owned();
        self.anchors.push(Anchor {
            anchor,
            info,
            is_aws_root,
        });
        Ok(())
    }

    /// The anchors whose own certificate is valid at `at`. webpki does not check an anchor's
    /// validity, so a national root that has expired is dropped here.
    pub(crate) fn anchors_valid_at(&self, at: Timestamp) -> Vec<&Anchor> {
        self.anchors
            .iter()
            .filter(|a| a.info.check_validity(at).is_ok())
            .collect()
    }
}

/// The built-in AWS Nitro Enclaves root G1 certificate (DER).
pub fn aws_nitro_root_g1() -> CertificateDer<'static> {
    // The PEM is a compile-time constant; a parse failure yields an empty certificate, which the
    // fingerprint check in `add_aws_root` then rejects.
    CertificateDer::from_pem_slice(AWS_NITRO_ROOT_G1_PEM.as_bytes())
        .unwrap_or_else(|_| CertificateDer::from(Vec::new()))
}

/// Read every certificate in `bytes`: PEM (one or more `CERTIFICATE` blocks) or a single DER
/// certificate.
pub fn load_certificates(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let looks_pem = bytes
        .windows(b"-----BEGIN".len())
        .any(|w| w == b"-----BEGIN");
    if looks_pem {
        let certs: Vec<_> = CertificateDer::pem_slice_iter(bytes)
            .collect::<Result<_, _>>()
            .map_err(|_| TrustError::NoCertificate)?;
        if certs.is_empty() {
            return Err(TrustError::NoCertificate);
        }
        return Ok(certs);
    }
    if bytes.first() == Some(&0x30) {
        CertInfo::parse(bytes, CertPosition::TrustAnchor)?;
        return Ok(vec![CertificateDer::from(bytes.to_vec())]);
    }
    Err(TrustError::NoCertificate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_aws_root_matches_its_pin() {
        let store = TrustStore::aws().unwrap();
        let [anchor] = store.anchors.as_slice() else {
            panic!("expected exactly one anchor");
        };
        assert!(anchor.is_aws_root);
        assert_eq!(
            anchor.info.subject,
            "C=US, O=Amazon, OU=AWS, CN=aws.nitro-enclaves"
        );
    }

    #[test]
    fn load_rejects_non_certificates() {
        assert_eq!(load_certificates(b"hello"), Err(TrustError::NoCertificate));
        assert!(load_certificates(&[0x30, 0x03, 0x01, 0x02]).is_err());
        let pem = AWS_NITRO_ROOT_G1_PEM.as_bytes();
        assert_eq!(load_certificates(pem).unwrap().len(), 1);
        let der = aws_nitro_root_g1();
        assert_eq!(load_certificates(&der).unwrap(), vec![der]);
    }
}
