//! The keys of the government's own services (the transparency log, the key broker),
//! certified by the national root: a verifier that holds the root learns each service key from
//! its certificate, and needs no second channel to distribute keys.
//!
//! A service certificate is an end-entity certificate issued directly by a national root, with
//! `CN=<key name>`, `OU=<role>` and keyUsage digitalSignature. The role keeps a key certified
//! for one service from being accepted for another.
//!
//! The roots trusted for service certificates are a [`ServiceTrust`], a different type from the
//! [`crate::DocumentTrust`] that attestation documents are verified against: a service key can
//! never sign a document that verifies, and an enclave's certificate is never a service's.

use rustls_pki_types::CertificateDer;
use webpki::{EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeIdIter};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::time::Timestamp;
use crate::trust::{Anchor, TrustError, is_aws_root};

/// The national roots trusted to certify the government's service keys (key broker,
/// transparency log). Documents are never verified against it.
#[derive(Clone, Debug, Default)]
pub struct ServiceTrust {
    roots: Vec<Anchor>,
}

impl ServiceTrust {
    /// No root: add national roots with [`ServiceTrust::add_root`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Trust a national root (DER) to certify service keys. The AWS Nitro root certifies
    /// enclaves, never a government's services, and is refused.
    pub fn add_root(&mut self, der: CertificateDer<'static>) -> Result<(), TrustError> {
        let anchor = Anchor::new(&der, false)?;
        if is_aws_root(&der) {
            return Err(TrustError::Role {
                subject: anchor.info.subject,
                reason: "the AWS Nitro root certifies enclaves, never a government's services",
            });
        }
        if anchor.info.is_ca != Some(true) {
            return Err(TrustError::Role {
                subject: anchor.info.subject,
                reason: "a root that certifies service keys must be a CA (cA=TRUE)",
            });
        }
        self.roots.push(anchor);
        Ok(())
    }

    /// True when no root is configured: such a store accepts nothing.
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }
}

/// What a service key is certified for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServiceRole {
    /// Signing transparency-log checkpoints.
    TransparencyLog,
    /// Signing key-release responses.
    KeyBroker,
    /// Approving release-policy changes (one person's key).
    Approver,
}

impl ServiceRole {
    /// The organizational-unit value that names the role in a certificate.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TransparencyLog => "transparency-log",
            Self::KeyBroker => "key-broker",
            Self::Approver => "policy-approver",
        }
    }
}

/// Why a service certificate was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceCertError {
    /// The certificate cannot be read.
    #[error("malformed service certificate: {0}")]
    Malformed(String),
    /// The certificate does not chain to a trusted root at the time asked.
    #[error("the service certificate is not trusted: {0}")]
    Untrusted(String),
    /// The certificate is for another role, or is a CA.
    #[error("the certificate is for {found:?}, not {expected:?}")]
    Role {
        /// The role wanted.
        expected: &'static str,
        /// What the certificate says.
        found: String,
    },
}

/// A service key that a trusted root vouches for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceKey {
    /// The key's name (the certificate's common name).
    pub name: String,
    /// The DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    /// When the certificate expires.
    pub not_after: Timestamp,
}

/// Verify that `certificate` (DER) was issued directly by one of `trust`'s roots for `role`, and
/// is valid at `at`; return the key it certifies.
pub fn verify_service_certificate(
    certificate: &[u8],
    trust: &ServiceTrust,
    role: ServiceRole,
    at: Timestamp,
) -> Result<ServiceKey, ServiceCertError> {
    let (_, x509) = X509Certificate::from_der(certificate)
        .map_err(|e| ServiceCertError::Malformed(e.to_string()))?;
    let text = |attr: Option<&x509_parser::x509::AttributeTypeAndValue<'_>>| {
        attr.and_then(|a| a.as_str().ok()).map(str::to_owned)
    };
    let unit = text(x509.subject().iter_organizational_unit().next()).unwrap_or_default();
    let name = text(x509.subject().iter_common_name().next())
        .ok_or_else(|| ServiceCertError::Malformed("no common name".into()))?;
    let is_ca = x509
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca);
    if unit != role.as_str() || is_ca {
        return Err(ServiceCertError::Role {
            expected: role.as_str(),
            found: if is_ca { "a CA".into() } else { unit },
        });
    }
    let der = CertificateDer::from(certificate);
    let ee =
        EndEntityCert::try_from(&der).map_err(|e| ServiceCertError::Malformed(format!("{e:?}")))?;
    // webpki does not check an anchor's own validity: an expired root is dropped here.
    let anchors: Vec<_> = trust
        .roots
        .iter()
        .filter(|a| a.info.check_validity(at).is_ok())
        .map(|a| a.anchor.clone())
        .collect();
    ee.verify_for_usage(
        crate::chain::CHAIN_ALGORITHMS,
        &anchors,
        &[],
        at.to_webpki(),
        NoExtendedUsage,
        None,
        None,
    )
    .map_err(|e| ServiceCertError::Untrusted(e.to_string()))?;
    Ok(ServiceKey {
        name,
        spki_der: x509.public_key().raw.to_vec(),
        not_after: Timestamp::from_unix_secs(
            u64::try_from(x509.validity().not_after.timestamp()).unwrap_or(0),
        ),
    })
}

/// Service certificates carry no extendedKeyUsage; the role is in the subject.
#[derive(Clone, Copy, Debug)]
struct NoExtendedUsage;

impl ExtendedKeyUsageValidator for NoExtendedUsage {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        for purpose in iter {
            purpose?;
        }
        Ok(())
    }
}
