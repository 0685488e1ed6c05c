//! Trust for attestation documents: the roots that issue the Nitro CA hierarchy (AWS's root G1
//! built in), and a nation's roots, which reach documents only through cross-certificates.
//!
//! A nation takes control of trust by cross-certification: its root issues a CA certificate with
//! the AWS root's subject and key. A verifier that trusts only the national root then accepts AWS
//! documents through that cross-certificate, and stops when it expires or is withdrawn.
//!
//! A national root is never an anchor for documents on its own: the same root certifies the
//! government's service keys (key broker, transparency log), and a document signed under one of
//! those must never verify. Service certificates have their own store,
//! [`crate::service::ServiceTrust`].

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
    Anchor {
        /// Why.
        reason: String,
    },
    /// A cross-certificate must be a CA that may sign certificates.
    #[error("not a usable cross-certificate: {reason}")]
    NotCa {
        /// Why.
        reason: String,
    },
    /// The built-in AWS root does not match its pinned fingerprint (a corrupted build).
    #[error("built-in AWS Nitro root does not match its pinned SHA-256 fingerprint")]
    AwsRootFingerprint,
    /// A certificate given for one role that the store already holds in another, or that can
    /// never serve in this one.
    #[error("{subject:?}: {reason}")]
    Role {
        /// The certificate's subject.
        subject: String,
        /// What is wrong with using it here.
        reason: &'static str,
    },
}

/// A configured trust anchor.
#[derive(Clone, Debug)]
pub(crate) struct Anchor {
    pub(crate) anchor: TrustAnchor<'static>,
    pub(crate) info: CertInfo,
    pub(crate) is_aws_root: bool,
}

impl Anchor {
    pub(crate) fn new(
        der: &CertificateDer<'static>,
        is_aws_root: bool,
    ) -> Result<Self, TrustError> {
        let info = CertInfo::parse(der, CertPosition::TrustAnchor)?;
        let anchor = webpki::anchor_from_trusted_cert(der)
            .map_err(|e| TrustError::Anchor {
                reason: format!("{e:?}"),
            })?
            .to_owned();
        Ok(Self {
            anchor,
            info,
            is_aws_root,
        })
    }

    /// Same subject and same key: the certificate names this anchor.
    pub(crate) fn names(&self, info: &CertInfo) -> bool {
        self.info.subject_raw == info.subject_raw && self.info.spki_raw == info.spki_raw
    }
}

/// Where a document's chain may end: the roots a [`crate::Verifier`] trusts for attestation
/// documents, and nothing else.
///
/// - A **Nitro root** issues the Nitro CA hierarchy (regional, zonal, instance CAs) itself:
///   AWS's root G1 ([`DocumentTrust::add_aws_root`]), or a simulated Nitro root in development
///   ([`DocumentTrust::add_nitro_root`]).
/// - A **national root** ([`DocumentTrust::add_national_root`]) reaches documents only through
///   a cross-certificate it issued for a Nitro root ([`DocumentTrust::add_cross_certificate`]).
///   A chain that ends at the national root any other way is refused, so the service keys the
///   same root certifies can never sign a document that verifies.
#[derive(Clone, Debug, Default)]
pub struct DocumentTrust {
    pub(crate) nitro_roots: Vec<Anchor>,
    pub(crate) national_roots: Vec<Anchor>,
    pub(crate) cross_certs: Vec<(CertificateDer<'static>, CertInfo)>,
}

impl DocumentTrust {
    /// Nothing trusted: add roots with the methods below.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The built-in AWS Nitro root G1, checked against its pinned fingerprint.
    pub fn aws() -> Result<Self, TrustError> {
        let mut store = Self::empty();
        store.add_aws_root()?;
        Ok(store)
    }

    /// Trust the built-in AWS Nitro root G1 directly.
    pub fn add_aws_root(&mut self) -> Result<(), TrustError> {
        let der = aws_nitro_root_g1();
        if !is_aws_root(&der) {
            return Err(TrustError::AwsRootFingerprint);
        }
        let anchor = Anchor::new(&der, true)?;
        self.nitro_roots.push(anchor);
        Ok(())
    }

    /// Trust another root that issues the Nitro CA hierarchy itself (a simulated Nitro PKI in
    /// development), given as DER. Never a national root: those certify service keys too, and
    /// reach documents only through [`DocumentTrust::add_cross_certificate`].
    pub fn add_nitro_root(&mut self, der: CertificateDer<'static>) -> Result<(), TrustError> {
        let anchor = Anchor::new(&der, is_aws_root(&der))?;
        if self.national_roots.iter().any(|n| n.names(&anchor.info)) {
            return Err(role(&anchor.info, "already trusted as a national root"));
        }
        self.nitro_roots.push(anchor);
        Ok(())
    }

    /// Trust a national root, given as DER, for the documents its cross-certificates lead to.
    pub fn add_national_root(&mut self, der: CertificateDer<'static>) -> Result<(), TrustError> {
        let anchor = Anchor::new(&der, false)?;
        if anchor.info.is_ca != Some(true) {
            return Err(role(&anchor.info, "a national root must be a CA (cA=TRUE)"));
        }
        if self.nitro_roots.iter().any(|n| n.names(&anchor.info)) {
            return Err(role(&anchor.info, "already trusted as a Nitro root"));
        }
        if self.cross_certs.iter().any(|(_, c)| anchor.names(c)) {
            return Err(role(
                &anchor.info,
                "a configured cross-certificate certifies this national root itself, which \
                 would let it sign documents directly",
            ));
        }
        self.national_roots.push(anchor);
        Ok(())
    }

    /// Add a cross-certificate: a CA certificate a national root issued for a Nitro root (the
    /// AWS root, or a simulated one), given as DER.
    pub fn add_cross_certificate(
        &mut self,
        der: CertificateDer<'static>,
    ) -> Result<(), TrustError> {
        let info = CertInfo::parse(&der, CertPosition::CrossCertificate)?;
        info.check_ca().map_err(|e| TrustError::NotCa {
            reason: e.to_string(),
        })?;
        if info.is_self_issued() {
            return Err(role(
                &info,
                "a cross-certificate is issued by one root for another; this one names itself",
            ));
        }
        if self.national_roots.iter().any(|n| n.names(&info)) {
            return Err(role(
                &info,
                "this cross-certificate certifies a national root itself, which would let it \
                 sign documents directly",
            ));
        }
        self.cross_certs.push((der, info));
        Ok(())
    }

    /// True when no document can verify: no Nitro root, and no national root with a
    /// cross-certificate.
    pub fn is_empty(&self) -> bool {
        self.nitro_roots.is_empty()
            && (self.national_roots.is_empty() || self.cross_certs.is_empty())
    }

    /// True when the built-in AWS root is trusted directly (not only through a cross-certificate).
    pub fn trusts_aws_root_directly(&self) -> bool {
        self.nitro_roots.iter().any(|a| a.is_aws_root)
    }

    /// The anchors whose own certificate is valid at `at`: Nitro roots, then national roots.
    /// webpki does not check an anchor's validity, so a root that has expired is dropped here.
    pub(crate) fn anchors_valid_at(&self, at: Timestamp) -> Vec<(&Anchor, AnchorKind)> {
        let nitro = self.nitro_roots.iter().map(|a| (a, AnchorKind::Nitro));
        let national = self
            .national_roots
            .iter()
            .map(|a| (a, AnchorKind::National));
        nitro
            .chain(national)
            .filter(|(a, _)| a.info.check_validity(at).is_ok())
            .collect()
    }

    pub(crate) fn all_anchors(&self) -> impl Iterator<Item = &Anchor> + Clone {
        self.nitro_roots.iter().chain(&self.national_roots)
    }
}

/// Which role an anchor plays for documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AnchorKind {
    /// Issues the Nitro CA hierarchy: the path ends at it directly.
    Nitro,
    /// Reached only through a cross-certificate.
    National,
}

fn role(info: &CertInfo, reason: &'static str) -> TrustError {
    TrustError::Role {
        subject: info.subject.clone(),
        reason,
    }
}

/// The certificate is AWS's Nitro root G1 (by its pinned fingerprint).
pub(crate) fn is_aws_root(der: &[u8]) -> bool {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    data_encoding::HEXLOWER.encode(digest.as_ref()) == AWS_NITRO_ROOT_G1_SHA256
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
        let store = DocumentTrust::aws().unwrap();
        assert!(store.trusts_aws_root_directly());
        let [anchor] = store.nitro_roots.as_slice() else {
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
