//! Trust from files: for attestation documents (Nitro roots, national roots and their
//! cross-certificates) and, separately, for service certificates (national roots). The two are
//! different types, so a root given for one never serves the other.

use std::path::PathBuf;

use anyhow::{Context, bail};
use attest::{DocumentTrust, ServiceTrust};
use rustls_pki_types::CertificateDer;

use crate::shared::read_small_file;

/// Where document trust comes from.
#[derive(Debug, Default)]
pub(crate) struct DocumentRoots<'a> {
    /// The built-in AWS Nitro root G1, directly.
    pub(crate) aws_root: bool,
    /// Roots that issue the Nitro CA hierarchy themselves (a simulated Nitro PKI).
    pub(crate) nitro_roots: &'a [PathBuf],
    /// National roots: documents only through their cross-certificates.
    pub(crate) national_roots: &'a [PathBuf],
    /// Cross-certificates a national root issued for a Nitro root.
    pub(crate) cross_certificates: &'a [PathBuf],
}

/// A document trust store from the built-in AWS root (if wanted) and certificate files, each
/// PEM (one or more certificates) or DER.
pub(crate) fn document_trust(roots: &DocumentRoots<'_>) -> anyhow::Result<DocumentTrust> {
    let mut trust = DocumentTrust::empty();
    if roots.aws_root {
        trust.add_aws_root()?;
    }
    for (path, cert) in certificates(roots.nitro_roots, "Nitro root")? {
        trust
            .add_nitro_root(cert)
            .with_context(|| format!("Nitro root {}", path.display()))?;
    }
    for (path, cert) in certificates(roots.national_roots, "root")? {
        trust
            .add_national_root(cert)
            .with_context(|| format!("root {}", path.display()))?;
    }
    for (path, cert) in certificates(roots.cross_certificates, "cross-certificate")? {
        trust
            .add_cross_certificate(cert)
            .with_context(|| format!("cross-certificate {}", path.display()))?;
    }
    if trust.is_empty() {
        if roots.national_roots.is_empty() {
            bail!(
                "no trust anchor: without the AWS root, give a national root with its \
                 cross-certificate (--root and --cross-cert, or roots and cross_certificates)"
            );
        }
        bail!(
            "a national root reaches documents only through a cross-certificate it issued for a \
             Nitro root: give --cross-cert (or cross_certificates)"
        );
    }
    Ok(trust)
}

/// A service trust store (national roots that certify log and broker keys).
pub(crate) fn service_trust(roots: &[PathBuf]) -> anyhow::Result<ServiceTrust> {
    let mut trust = ServiceTrust::new();
    for (path, cert) in certificates(roots, "root")? {
        trust
            .add_root(cert)
            .with_context(|| format!("root {}", path.display()))?;
    }
    if trust.is_empty() {
        bail!("no national root to check service certificates against");
    }
    Ok(trust)
}

fn certificates<'a>(
    paths: &'a [PathBuf],
    what: &str,
) -> anyhow::Result<Vec<(&'a PathBuf, CertificateDer<'static>)>> {
    let mut out = Vec::new();
    for path in paths {
        let certs = attest::load_certificates(&read_small_file(path, what)?)
            .with_context(|| format!("{what} {}", path.display()))?;
        out.extend(certs.into_iter().map(|c| (path, c)));
    }
    Ok(out)
}
