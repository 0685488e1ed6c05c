//! A nation's root of trust: with only the national root configured, real AWS documents verify
//! through a cross-certificate for the AWS root, and stop verifying without it or once it
//! has expired.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap or index is a failed test"
)]

mod common;

use attest::pki::{NewRoot, cross_certify, init_root};
use attest::{
    CertPosition, DocumentTrust, Policy, Timestamp, Verifier, VerifyError, aws_nitro_root_g1,
};
use common::{fixtures, policy_for, t};
use rustls_pki_types::CertificateDer;

fn national_root() -> NewRoot {
    init_root(
        "Test National Root CA",
        "Test Government",
        "GB",
        t("2020-01-01T00:00:00Z"),
        t("2040-01-01T00:00:00Z"),
    )
    .unwrap()
}

fn cross(root: &NewRoot, not_before: &str, not_after: &str) -> CertificateDer<'static> {
    cross_certify(
        &root.certificate,
        &root.private_key_pem,
        &aws_nitro_root_g1(),
        t(not_before),
        t(not_after),
    )
    .unwrap()
}

fn national_verifier(root: &NewRoot, crosses: &[CertificateDer<'static>]) -> Verifier {
    let mut trust = DocumentTrust::empty();
    trust.add_national_root(root.certificate.clone()).unwrap();
    for c in crosses {
        trust.add_cross_certificate(c.clone()).unwrap();
    }
    Verifier::new(trust)
}

#[test]
fn real_documents_verify_through_a_cross_certificate_covering_them() {
    let root = national_root();
    let verifier = national_verifier(
        &root,
        &[cross(&root, "2021-01-01T00:00:00Z", "2025-01-01T00:00:00Z")],
    );
    for f in fixtures() {
        let doc = attest::parse(&f.bytes).unwrap();
        let v = verifier
            .verify(&doc, &policy_for(f.debug), doc.timestamp())
            .unwrap_or_else(|e| panic!("{}: {e}", f.name));
        assert!(v.trust_path().via_cross_certificate, "{}", f.name);
        assert!(!v.trust_path().anchor_is_aws_root, "{}", f.name);
        assert!(
            v.trust_path()
                .anchor_subject
                .contains("Test National Root CA")
        );
    }
}

#[test]
fn without_the_cross_certificate_they_are_untrusted() {
    let root = national_root();
    let verifier = national_verifier(&root, &[]);
    for f in fixtures() {
        let doc = attest::parse(&f.bytes).unwrap();
        match verifier.verify(&doc, &policy_for(f.debug), doc.timestamp()) {
            Err(VerifyError::UntrustedRoot { root, .. }) => {
                assert!(root.contains("aws.nitro-enclaves"), "{}: {root}", f.name);
            }
            other => panic!("{}: expected untrusted root, got {other:?}", f.name),
        }
    }
}

#[test]
fn once_the_cross_certificate_has_expired_they_are_refused_naming_it() {
    let root = national_root();
    // Valid from 2021 to the end of 2023: covers the 2021–2023 documents, not the 2024 ones.
    let verifier = national_verifier(
        &root,
        &[cross(&root, "2021-01-01T00:00:00Z", "2023-12-31T00:00:00Z")],
    );
    let mut refused = 0;
    for f in fixtures() {
        let doc = attest::parse(&f.bytes).unwrap();
        let result = verifier.verify(&doc, &policy_for(f.debug), doc.timestamp());
        if doc.timestamp() < t("2023-12-31T00:00:00Z") {
            assert!(result.is_ok(), "{}: {result:?}", f.name);
        } else {
            refused += 1;
            match result {
                Err(VerifyError::CertificateExpired {
                    position,
                    not_after,
                    ..
                }) => {
                    assert_eq!(position, CertPosition::CrossCertificate, "{}", f.name);
                    assert_eq!(not_after, t("2023-12-31T00:00:00Z"));
                }
                other => panic!(
                    "{}: expected an expired cross-certificate, got {other:?}",
                    f.name
                ),
            }
        }
    }
    assert_eq!(refused, 4, "the four 2024 documents");
}

#[test]
fn a_cross_certificate_not_yet_valid_does_not_help() {
    let root = national_root();
    let verifier = national_verifier(
        &root,
        &[cross(&root, "2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z")],
    );
    let doc = common::parsed(common::PROD);
    assert!(matches!(
        verifier.verify(
            &doc,
            &Policy::new().dangerous_any_measurements(),
            doc.timestamp()
        ),
        Err(VerifyError::CertificateNotYetValid {
            position: CertPosition::CrossCertificate,
            ..
        })
    ));
}

#[test]
fn a_cross_certificate_from_another_root_does_not_help() {
    let root = national_root();
    let doc = common::parsed(common::PROD);
    let stranger = init_root(
        "Another Nation Root CA",
        "Another Government",
        "FR",
        t("2020-01-01T00:00:00Z"),
        t("2040-01-01T00:00:00Z"),
    )
    .unwrap();
    let verifier = national_verifier(
        &root,
        &[cross(
            &stranger,
            "2021-01-01T00:00:00Z",
            "2025-01-01T00:00:00Z",
        )],
    );
    let err = verifier
        .verify(
            &doc,
            &Policy::new().dangerous_any_measurements(),
            doc.timestamp(),
        )
        .unwrap_err();
    assert!(matches!(err, VerifyError::UntrustedRoot { .. }), "{err:?}");

    // Same name as our root, different key: the signature on the cross-certificate fails.
    let impostor = national_root();
    let verifier = national_verifier(
        &root,
        &[cross(
            &impostor,
            "2021-01-01T00:00:00Z",
            "2025-01-01T00:00:00Z",
        )],
    );
    let err = verifier
        .verify(
            &doc,
            &Policy::new().dangerous_any_measurements(),
            doc.timestamp(),
        )
        .unwrap_err();
    assert!(matches!(err, VerifyError::Chain { .. }), "{err:?}");
}

#[test]
fn an_expired_national_root_is_not_an_anchor() {
    let root = init_root(
        "Short-lived Root",
        "Test Government",
        "GB",
        t("2020-01-01T00:00:00Z"),
        t("2022-01-01T00:00:00Z"),
    )
    .unwrap();
    let verifier = national_verifier(
        &root,
        &[cross(&root, "2021-01-01T00:00:00Z", "2021-12-31T00:00:00Z")],
    );
    let doc = common::parsed(common::PROD);
    let at: Timestamp = doc.timestamp();
    let err = verifier
        .verify(&doc, &Policy::new().dangerous_any_measurements(), at)
        .unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::CertificateExpired {
                position: CertPosition::CrossCertificate | CertPosition::TrustAnchor,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn the_aws_root_and_a_national_root_can_be_trusted_together() {
    let root = national_root();
    let mut trust = DocumentTrust::aws().unwrap();
    trust.add_national_root(root.certificate.clone()).unwrap();
    let verifier = Verifier::new(trust);
    let doc = common::parsed(common::PROD);
    let v = verifier
        .verify(
            &doc,
            &Policy::new().dangerous_any_measurements(),
            doc.timestamp(),
        )
        .unwrap();
    assert!(v.trust_path().anchor_is_aws_root);
}
