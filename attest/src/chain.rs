//! Certificate chain verification: from the document's `certificate` through its `cabundle`
//! (root first) to a configured trust anchor, directly or through a cross-certificate.
//!
//! Path building and signatures are `rustls-webpki`'s, restricted to ECDSA P-384 with SHA-384.
//! Around it we add what webpki leaves to callers: a precise error naming any certificate that
//! is out of its validity, keyUsage on CAs, the order of `cabundle`, and a check that the path
//! found is exactly the document's chain, in the Nitro shape, ending at the root the document
//! names: directly when that root is a Nitro root, or through one cross-certificate issued by a
//! national root.

use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, TrustAnchor};
use webpki::{EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeIdIter, VerifiedPath};

use crate::cache::{CachedChain, ChainCache};
use crate::cert::CertInfo;
use crate::document::Payload;
use crate::error::{CertPosition, VerifyError};
use crate::time::Timestamp;
use crate::trust::{AnchorKind, DocumentTrust};
use crate::types::{Region, short_hex};

/// ES384 only: every Nitro certificate is signed with ecdsa-with-SHA384 by a P-384 key.
pub(crate) static CHAIN_ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] =
    &[webpki::aws_lc_rs::ECDSA_P384_SHA384];

/// What a verified chain tells the caller.
#[derive(Clone, Debug)]
pub(crate) struct ChainFacts {
    pub(crate) region: Option<Region>,
    pub(crate) anchor_subject: String,
    pub(crate) anchor_is_aws_root: bool,
    pub(crate) via_cross_certificate: bool,
    /// The leaf's EC P-384 public point, for the COSE signature.
    pub(crate) leaf_point: Vec<u8>,
}

pub(crate) fn verify_chain(
    trust: &DocumentTrust,
    cache: &ChainCache,
    payload: &Payload,
    at: Timestamp,
) -> Result<ChainFacts, VerifyError> {
    let leaf = CertInfo::parse(&payload.certificate, CertPosition::Leaf)?;
    leaf.check_validity(at)?;
    leaf.check_leaf()?;
    let leaf_point = leaf
        .p384_point
        .clone()
        .ok_or(VerifyError::LeafKeyAlgorithm)?;
    let leaf_der = CertificateDer::from(payload.certificate.as_slice());
    let leaf_cert =
        EndEntityCert::try_from(&leaf_der).map_err(|e| VerifyError::CertificateMalformed {
            position: CertPosition::Leaf,
            reason: format!("{e:?}"),
        })?;

    let key = ChainCache::key(&payload.cabundle);
    let cached = match cache.get(&key, at) {
        Some(cached) => {
            tracing::debug!(chain = %short_hex(&key), "certificate chain found in cache");
            verify_leaf_under(&cached, &leaf_cert, &leaf, at)?;
            cached
        }
        None => {
            // The full path includes the leaf, so it needs no second check.
            let cached = verify_bundle(trust, payload, &leaf_cert, &leaf, at)?;
            tracing::debug!(
                chain = %short_hex(&key),
                anchor = %cached.anchor_subject,
                via_cross_certificate = cached.via_cross_certificate,
                "certificate chain verified in full and cached"
            );
            cache.insert(key, cached.clone());
            cached
        }
    };

    Ok(ChainFacts {
        region: cached.region,
        anchor_subject: cached.anchor_subject,
        anchor_is_aws_root: cached.anchor_is_aws_root,
        via_cross_certificate: cached.via_cross_certificate,
        leaf_point,
    })
}

/// The bundle is already trusted at `at`: the leaf must chain to its last certificate. With that
/// CA as the only anchor, webpki checks the leaf's signature, validity and constraints.
fn verify_leaf_under(
    cached: &CachedChain,
    leaf_cert: &EndEntityCert<'_>,
    leaf: &CertInfo,
    at: Timestamp,
) -> Result<(), VerifyError> {
    if leaf.issuer_raw != cached.issuing_subject_raw {
        return Err(VerifyError::ChainOrder {
            position: CertPosition::Leaf,
            subject: leaf.subject.clone(),
            expected_issuer: cached.issuing_subject.clone(),
        });
    }
    leaf_cert
        .verify_for_usage(
            CHAIN_ALGORITHMS,
            core::slice::from_ref(&cached.issuing_ca),
            &[],
            at.to_webpki(),
            AnyUsage,
            None,
            None,
        )
        .map_err(|e| VerifyError::Chain {
            reason: format!("leaf certificate: {e}"),
        })?;
    Ok(())
}

/// How many certificates a Nitro `cabundle` holds: the root, then the regional, zonal and
/// instance CAs. The leaf is issued by the instance CA.
pub const NITRO_CABUNDLE_LEN: usize = 4;

/// Full verification of the document's chain, producing what the cache keeps.
///
/// The only paths accepted have the Nitro shape: leaf ← instance ← zonal ← regional ←
/// `cabundle[0]`, where `cabundle[0]` is either a configured Nitro root (the AWS root) or is
/// certified by a configured cross-certificate issued by a national root. A national root is
/// never the end of a path on its own, and a leaf is never issued by a root.
fn verify_bundle(
    trust: &DocumentTrust,
    payload: &Payload,
    leaf_cert: &EndEntityCert<'_>,
    leaf: &CertInfo,
    at: Timestamp,
) -> Result<CachedChain, VerifyError> {
    if payload.cabundle.len() != NITRO_CABUNDLE_LEN {
        return Err(VerifyError::ChainShape {
            found: payload.cabundle.len(),
        });
    }
    let bundle: Vec<CertInfo> = payload
        .cabundle
        .iter()
        .enumerate()
        .map(|(i, der)| CertInfo::parse(der, CertPosition::Bundle(i)))
        .collect::<Result<_, _>>()?;
    let (root, issuing) = match (bundle.first(), bundle.last()) {
        (Some(root), Some(issuing)) => (root, issuing),
        _ => {
            return Err(VerifyError::ChainShape {
                found: bundle.len(),
            });
        }
    };
    for cert in &bundle {
        cert.check_validity(at)?;
        cert.check_ca()?;
    }
    check_order(&bundle, leaf)?;
    // The root the document names must be a configured Nitro root, or be certified by a
    // configured cross-certificate (same subject, same key): otherwise no path can be right,
    // whatever a name-only match would let webpki try.
    let known_root = trust.nitro_roots.iter().any(|a| a.names(root))
        || trust
            .cross_certs
            .iter()
            .any(|(_, c)| c.subject_raw == root.subject_raw && c.spki_raw == root.spki_raw);
    if !known_root {
        return Err(explain_path_failure(
            trust,
            root,
            at,
            &webpki::Error::UnknownIssuer,
        ));
    }

    let root_der = payload
        .cabundle
        .first()
        .map(|der| CertificateDer::from(der.as_slice()))
        .ok_or(VerifyError::CertificateMalformed {
            position: CertPosition::Bundle(0),
            reason: "missing".to_owned(),
        })?;
    let root_as_anchor = webpki::anchor_from_trusted_cert(&root_der).map_err(|e| {
        VerifyError::CertificateMalformed {
            position: CertPosition::Bundle(0),
            reason: format!("{e:?}"),
        }
    })?;
    let root_cert =
        EndEntityCert::try_from(&root_der).map_err(|e| VerifyError::CertificateMalformed {
            position: CertPosition::Bundle(0),
            reason: format!("{e:?}"),
        })?;

    let valid_anchors = trust.anchors_valid_at(at);
    let anchors: Vec<TrustAnchor<'_>> = valid_anchors
        .iter()
        .map(|(a, _)| a.anchor.clone())
        .collect();
    let kind_of = |anchor: &TrustAnchor<'_>| {
        valid_anchors.iter().find_map(|(a, kind)| {
            (a.anchor.subject == anchor.subject
                && a.anchor.subject_public_key_info == anchor.subject_public_key_info)
                .then_some((*a, *kind))
        })
    };
    let mut intermediates: Vec<CertificateDer<'_>> = payload
        .cabundle
        .iter()
        .skip(1)
        .map(|der| CertificateDer::from(der.as_slice()))
        .collect();
    intermediates.extend(trust.cross_certs.iter().map(|(der, _)| der.clone()));
    let own_cas = NITRO_CABUNDLE_LEN - 1;

    // webpki calls this for each candidate path and keeps searching when it fails: only a path
    // that is exactly leaf ← cabundle[3] ← cabundle[2] ← cabundle[1], then either the Nitro root
    // the document names (as an anchor), or one cross-certificate for that root issued by a
    // national root, is accepted.
    let shape = |path: &VerifiedPath<'_>| -> Result<(), webpki::Error> {
        let used: Vec<_> = path.intermediate_certificates().collect();
        let ours = payload.cabundle.iter().skip(1).rev();
        let follows_bundle = used.len() >= own_cas
            && ours
                .zip(used.iter())
                .all(|(expected, cert)| cert.der().as_ref() == expected.as_slice());
        let kind = kind_of(path.anchor()).map(|(_, kind)| kind);
        let ends_right = match (used.len().saturating_sub(own_cas), kind) {
            (0, Some(AnchorKind::Nitro)) => {
                path.anchor().subject == root_as_anchor.subject
                    && path.anchor().subject_public_key_info
                        == root_as_anchor.subject_public_key_info
            }
            (1, Some(AnchorKind::National)) => used.get(own_cas).is_some_and(|cross| {
                cross.subject() == root_cert.subject()
                    && cross.subject_public_key_info() == root_cert.subject_public_key_info()
            }),
            _ => false,
        };
        if follows_bundle && ends_right {
            Ok(())
        } else {
            Err(webpki::Error::UnknownIssuer)
        }
    };

    let path = leaf_cert
        .verify_for_usage(
            CHAIN_ALGORITHMS,
            &anchors,
            &intermediates,
            at.to_webpki(),
            AnyUsage,
            None,
            Some(&shape),
        )
        .map_err(|e| explain_path_failure(trust, root, at, &e))?;

    let used: Vec<_> = path.intermediate_certificates().collect();
    let via_cross_certificate = used.len() > own_cas;
    let anchor = kind_of(path.anchor()).map(|(anchor, _)| anchor);

    // The chain is trusted for as long as every certificate on it is valid.
    let mut not_before = bundle.iter().map(|c| c.not_before).max().unwrap_or(at);
    let mut not_after = bundle.iter().map(|c| c.not_after).min().unwrap_or(at);
    for cert in used.iter().skip(own_cas) {
        if let Some((_, info)) = trust
            .cross_certs
            .iter()
            .find(|(der, _)| der.as_ref() == cert.der().as_ref())
        {
            not_before = not_before.max(info.not_before);
            not_after = not_after.min(info.not_after);
        }
    }
    if let Some(anchor) = anchor {
        not_before = not_before.max(anchor.info.not_before);
        not_after = not_after.min(anchor.info.not_after);
    }

    let issuing_der = CertificateDer::from(
        payload
            .cabundle
            .last()
            .map(Vec::as_slice)
            .unwrap_or_default(),
    );
    let issuing_ca = webpki::anchor_from_trusted_cert(&issuing_der)
        .map_err(|e| VerifyError::CertificateMalformed {
            position: issuing.position,
            reason: format!("{e:?}"),
        })?
        .to_owned();

    Ok(CachedChain {
        issuing_ca,
        issuing_subject: issuing.subject.clone(),
        issuing_subject_raw: issuing.subject_raw.clone(),
        not_before,
        not_after,
        region: bundle.get(1).and_then(CertInfo::nitro_region),
        anchor_subject: anchor.map(|a| a.info.subject.clone()).unwrap_or_default(),
        anchor_is_aws_root: anchor.is_some_and(|a| a.is_aws_root),
        via_cross_certificate,
    })
}

/// `cabundle` is root first, each certificate issued by the one before, and the leaf is issued
/// by the last.
fn check_order(bundle: &[CertInfo], leaf: &CertInfo) -> Result<(), VerifyError> {
    let mut expected_issuer: Option<&CertInfo> = None;
    for cert in bundle.iter().chain(core::iter::once(leaf)) {
        let ok = match expected_issuer {
            None => cert.is_self_issued(),
            Some(issuer) => cert.issuer_raw == issuer.subject_raw,
        };
        if !ok {
            return Err(VerifyError::ChainOrder {
                position: cert.position,
                subject: cert.subject.clone(),
                expected_issuer: expected_issuer.map_or_else(
                    || "itself (cabundle[0] must be the root)".to_owned(),
                    |i| i.subject.clone(),
                ),
            });
        }
        expected_issuer = Some(cert);
    }
    Ok(())
}

/// Turn webpki's verdict into an error that names the certificate at fault. The document's own
/// certificates were checked for validity before, so a validity failure here is a configured one.
fn explain_path_failure(
    trust: &DocumentTrust,
    root: &CertInfo,
    at: Timestamp,
    error: &webpki::Error,
) -> VerifyError {
    let cross_for_root = trust
        .cross_certs
        .iter()
        .map(|(_, info)| info)
        .filter(|info| info.subject_raw == root.subject_raw && info.spki_raw == root.spki_raw);
    let nitro_root = trust.nitro_roots.iter().find(|a| a.names(root));
    if trust.national_roots.iter().any(|a| a.names(root)) {
        return VerifyError::UntrustedRoot {
            root: root.subject.clone(),
            detail: ": it is a national root, which certifies documents only through a \
                     cross-certificate for a Nitro root (the AWS root), never directly"
                .to_owned(),
        };
    }

    if matches!(
        error,
        webpki::Error::CertExpired { .. }
            | webpki::Error::CertNotValidYet { .. }
            | webpki::Error::UnknownIssuer
    ) {
        // Name a configured certificate on the way to the root whose validity excludes `at`:
        // a cross-certificate for the root, the root as an anchor, or the national root that
        // issued such a cross-certificate.
        let issuers_of_cross = trust
            .national_roots
            .iter()
            .map(|a| &a.info)
            .filter(|anchor| {
                cross_for_root
                    .clone()
                    .any(|cross| cross.issuer_raw == anchor.subject_raw)
            });
        let out_of_validity = cross_for_root
            .clone()
            .chain(nitro_root.map(|a| &a.info))
            .chain(issuers_of_cross)
            .find_map(|info| info.check_validity(at).err());
        if let Some(e) = out_of_validity {
            return e;
        }
    }
    if matches!(error, webpki::Error::UnknownIssuer) {
        let detail = if trust.all_anchors().next().is_none() {
            " (no trust anchor is configured)".to_owned()
        } else if cross_for_root.clone().next().is_some() {
            ", and the cross-certificate for it was not issued by a configured national root"
                .to_owned()
        } else {
            " and no configured cross-certificate certifies it".to_owned()
        };
        return VerifyError::UntrustedRoot {
            root: root.subject.clone(),
            detail,
        };
    }
    VerifyError::Chain {
        reason: error.to_string(),
    }
}

/// Nitro leaf certificates carry no extendedKeyUsage; if one ever does, any purpose is accepted
/// (the document signature, not a TLS role, is what the key is for).
#[derive(Clone, Copy, Debug)]
struct AnyUsage;

impl ExtendedKeyUsageValidator for AnyUsage {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        for purpose in iter {
            purpose?;
        }
        Ok(())
    }
}
