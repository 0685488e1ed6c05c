//! Forged documents: what a holder of a service key, or of the national root's key, could sign.
//! A document verifies only along the Nitro chain shape (root, then the cross-certificate where
//! configured, then the regional, zonal and instance CAs, then the leaf), and a national root is
//! never the end of a document's path on its own: none of these may verify.
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap or index is a failed test"
)]

mod common;

use std::collections::BTreeMap;

use attest::pki::{NewRoot, certify_service_key, cross_certify};
use attest::service::{ServiceRole, verify_service_certificate};
use attest::sim::{DevelopmentRoots, Signer, SimulatedPki, SimulatedRequest, sign_document};
use attest::{
    DocumentTrust, PcrIndex, PcrValue, Policy, Region, ServiceTrust, Timestamp, TrustError,
    Verifier, VerifyError, aws_nitro_root_g1,
};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use common::t;
use rustls_pki_types::CertificateDer;

fn now() -> Timestamp {
    t("2026-06-01T12:00:00Z")
}

fn roots() -> DevelopmentRoots {
    DevelopmentRoots::new(
        "Forgery Test National Root",
        t("2026-01-01T00:00:00Z"),
        t("2036-01-01T00:00:00Z"),
    )
    .unwrap()
}

fn pcrs() -> BTreeMap<PcrIndex, PcrValue> {
    (0..16u64)
        .map(|i| {
            (
                PcrIndex::try_from(i).unwrap(),
                PcrValue::measure(&i.to_be_bytes()),
            )
        })
        .collect()
}

/// A policy pinning the PCR0 the forger copies into its documents, as a release policy would.
fn pinned() -> Policy {
    let pcr0 = BTreeMap::from([(PcrIndex::ZERO, pcrs()[&PcrIndex::ZERO])]);
    Policy::new().allow_measurements(attest::MeasurementSet::try_from(pcr0).unwrap())
}

/// A P-384 service key (the broker's response key, the log's, an image signer's) and its
/// certificate from the national root.
fn service_key(root: &NewRoot, role: ServiceRole) -> (EcdsaKeyPair, CertificateDer<'static>) {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let spki = key.public_key().as_der().unwrap();
    let cert = certify_service_key(
        &root.certificate,
        &root.private_key_pem,
        spki.as_ref(),
        "key-broker",
        role,
        t("2026-01-01T00:00:00Z"),
        t("2027-01-01T00:00:00Z"),
    )
    .unwrap();
    (key, cert)
}

fn forge(key: &EcdsaKeyPair, certificate: &[u8], cabundle: &[&[u8]]) -> Vec<u8> {
    sign_document(
        &Signer {
            certificate,
            key,
            cabundle,
            module_id: "i-0123456789abcdef0-enc0123456789abcdef",
        },
        &SimulatedRequest {
            pcrs: pcrs(),
            public_key: Some(b"the forger's RSA key"),
            nonce: Some(b"the broker's nonce"),
            ..Default::default()
        },
        now(),
    )
    .unwrap()
}

/// A document in the full Nitro shape, minted through a simulated regional, zonal and instance CA
/// under `root`.
fn honest_document(root: &NewRoot) -> Vec<u8> {
    let pki = SimulatedPki::new(
        &root.certificate,
        &root.private_key_pem,
        Region::try_from("eu-central-1").unwrap(),
        now(),
    )
    .unwrap();
    pki.attest(
        &SimulatedRequest {
            pcrs: pcrs(),
            ..Default::default()
        },
        now(),
    )
    .unwrap()
}

fn verify(trust: DocumentTrust, document: &[u8]) -> Result<attest::VerifiedDocument, VerifyError> {
    let parsed = attest::parse(document).unwrap();
    Verifier::new(trust).verify(&parsed, &pinned(), now())
}

/// The review's reproduction: the broker's response key signs a document whose `cabundle` is
/// just the national root. Refused for its shape, whatever the trust configuration.
#[test]
fn a_service_key_cannot_sign_a_document() {
    let roots = roots();
    for role in [ServiceRole::KeyBroker, ServiceRole::TransparencyLog] {
        let (key, cert) = service_key(&roots.national, role);
        let forged = forge(&key, &cert, &[&roots.national.certificate]);
        let err = verify(roots.document_trust().unwrap(), &forged).unwrap_err();
        assert_eq!(err, VerifyError::ChainShape { found: 1 }, "{role:?}");
        assert_eq!(err.kind(), "chain_shape");

        // The service key posing as every CA of a full-length bundle: not a CA, refused.
        let padded: [&[u8]; 4] = [&roots.national.certificate, &cert, &cert, &cert];
        let err = verify(
            roots.document_trust().unwrap(),
            &forge(&key, &cert, &padded),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::BasicConstraints { .. } | VerifyError::ChainOrder { .. }
            ),
            "{err:?}"
        );
    }
}

/// Even a full Nitro-shaped chain issued by the national root itself is refused: the national
/// root reaches documents only through a cross-certificate for a Nitro root.
#[test]
fn a_national_root_never_anchors_a_document_directly() {
    let roots = roots();
    let document = honest_document(&roots.national);
    let err = verify(roots.document_trust().unwrap(), &document).unwrap_err();
    match &err {
        VerifyError::UntrustedRoot { detail, .. } => {
            assert!(detail.contains("national root"), "{err}");
        }
        other => panic!("expected an untrusted root, got {other:?}"),
    }

    // The same bundle shape under the simulated Nitro root verifies: the control.
    let document = honest_document(&roots.nitro);
    let verified = verify(roots.document_trust().unwrap(), &document).unwrap();
    assert!(verified.trust_path().via_cross_certificate);
}

/// A leaf issued directly by a Nitro root is never a document signer, even when that root is
/// trusted directly; nor is a chain with a CA level more or less than Nitro's.
#[test]
fn a_leaf_straight_under_a_root_or_a_chain_of_another_length_is_refused() {
    let roots = roots();
    let mut direct = DocumentTrust::empty();
    direct
        .add_nitro_root(roots.nitro.certificate.clone())
        .unwrap();
    let (key, cert) = service_key(&roots.nitro, ServiceRole::KeyBroker);
    let err = verify(
        direct.clone(),
        &forge(&key, &cert, &[&roots.nitro.certificate]),
    )
    .unwrap_err();
    assert_eq!(err, VerifyError::ChainShape { found: 1 });

    // Cut and padded bundles from an honest document.
    let honest = honest_document(&roots.nitro);
    assert!(verify(direct.clone(), &honest).is_ok());
    let (_, payload, _) = common::dissect(&honest);
    let field = |name: &str| {
        payload
            .iter()
            .find(|(k, _)| k.as_text() == Some(name))
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let cabundle: Vec<Vec<u8>> = field("cabundle")
        .into_array()
        .unwrap()
        .into_iter()
        .map(|v| v.into_bytes().unwrap())
        .collect();
    let leaf = field("certificate").into_bytes().unwrap();
    // Re-signing needs the leaf key, which the simulated PKI keeps: sign with a fresh key, the
    // shape check comes before the signature.
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    for len in [2usize, 3, 5] {
        let bundle: Vec<&[u8]> = (0..len)
            .map(|i| cabundle[i.min(cabundle.len() - 1)].as_slice())
            .collect();
        let err = verify(direct.clone(), &forge(&key, &leaf, &bundle)).unwrap_err();
        assert_eq!(err, VerifyError::ChainShape { found: len });
    }
}

/// Configurations that would open a second path are refused when built.
#[test]
fn trust_stores_refuse_mixed_roles() {
    let roots = roots();
    let other = DevelopmentRoots::new(
        "Another National Root",
        t("2026-01-01T00:00:00Z"),
        t("2036-01-01T00:00:00Z"),
    )
    .unwrap();
    // A root's cross-certificate for itself.
    let self_cross = cross_certify(
        &roots.national.certificate,
        &roots.national.private_key_pem,
        &roots.national.certificate,
        t("2026-01-01T00:00:00Z"),
        t("2027-01-01T00:00:00Z"),
    )
    .unwrap();
    assert!(matches!(
        DocumentTrust::empty().add_cross_certificate(self_cross),
        Err(TrustError::Role { .. })
    ));
    // Another national root's cross-certificate for this national root, in either order.
    let cross_for_national = cross_certify(
        &other.national.certificate,
        &other.national.private_key_pem,
        &roots.national.certificate,
        t("2026-01-01T00:00:00Z"),
        t("2027-01-01T00:00:00Z"),
    )
    .unwrap();
    let mut trust = DocumentTrust::empty();
    trust
        .add_national_root(roots.national.certificate.clone())
        .unwrap();
    assert!(matches!(
        trust.add_cross_certificate(cross_for_national.clone()),
        Err(TrustError::Role { .. })
    ));
    let mut trust = DocumentTrust::empty();
    trust.add_cross_certificate(cross_for_national).unwrap();
    assert!(matches!(
        trust.add_national_root(roots.national.certificate.clone()),
        Err(TrustError::Role { .. })
    ));
    // One root in both roles.
    let mut trust = DocumentTrust::empty();
    trust
        .add_national_root(roots.national.certificate.clone())
        .unwrap();
    assert!(matches!(
        trust.add_nitro_root(roots.national.certificate.clone()),
        Err(TrustError::Role { .. })
    ));
    // A national root without a cross-certificate verifies nothing.
    let mut lonely = DocumentTrust::empty();
    lonely
        .add_national_root(roots.national.certificate.clone())
        .unwrap();
    assert!(lonely.is_empty());
    // The AWS root never certifies a service.
    let mut services = ServiceTrust::new();
    assert!(matches!(
        services.add_root(aws_nitro_root_g1()),
        Err(TrustError::Role { .. })
    ));
}

/// The other direction: an enclave's signing certificate, or a certificate from the simulated
/// Nitro root, is never a service certificate.
#[test]
fn a_document_certificate_is_not_a_service_certificate() {
    let roots = roots();
    let services = roots.service_trust().unwrap();
    // Issued by the Nitro root with the key-broker role: not a root the service store holds.
    let (_, cert) = service_key(&roots.nitro, ServiceRole::KeyBroker);
    assert!(verify_service_certificate(&cert, &services, ServiceRole::KeyBroker, now()).is_err());
    // A real document's leaf.
    let doc = common::fixture(common::PROD);
    let (_, payload, _) = common::dissect(&doc);
    let leaf = payload
        .iter()
        .find(|(k, _)| k.as_text() == Some("certificate"))
        .map(|(_, v)| v.as_bytes().unwrap().clone())
        .unwrap();
    let at = attest::parse(&doc).unwrap().timestamp();
    assert!(verify_service_certificate(&leaf, &services, ServiceRole::KeyBroker, at).is_err());
    // The control: the national root's certificate for the role verifies.
    let (_, cert) = service_key(&roots.national, ServiceRole::KeyBroker);
    assert!(verify_service_certificate(&cert, &services, ServiceRole::KeyBroker, now()).is_ok());
}
