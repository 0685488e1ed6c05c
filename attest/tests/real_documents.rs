//! Every real AWS document verifies at its own time against the built-in AWS root, reports the
//! facts SOURCES.md records, and is refused today naming its expired leaf certificate.
mod common;

use attest::{
    CertPosition, DocumentTrust, Policy, PolicyViolation, Timestamp, Verifier, VerifyError,
};
use common::{fixtures, policy_for, t};

#[test]
fn every_fixture_verifies_at_its_own_time_with_the_facts_of_its_sources() {
    let verifier = common::aws_verifier();
    for f in fixtures() {
        let doc = attest::parse(&f.bytes).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        assert_eq!(doc.timestamp().unix_millis(), f.timestamp_ms, "{}", f.name);
        let v = verifier
            .verify(&doc, &policy_for(f.debug), doc.timestamp())
            .unwrap_or_else(|e| panic!("{}: {e}", f.name));
        assert_eq!(v.module_id(), f.module_id, "{}", f.name);
        assert_eq!(v.is_debug(), f.debug, "{}", f.name);
        assert_eq!(v.pcrs().len(), 16, "{}", f.name);
        assert_eq!(
            v.public_key().map(<[u8]>::len),
            f.public_key_len,
            "{}",
            f.name
        );
        assert_eq!(
            v.user_data().map(<[u8]>::len),
            f.user_data_len,
            "{}",
            f.name
        );
        assert_eq!(v.nonce().map(<[u8]>::len), f.nonce_len, "{}", f.name);
        assert!(v.trust_path().anchor_is_aws_root, "{}", f.name);
        assert!(!v.trust_path().via_cross_certificate, "{}", f.name);
        let region = v
            .region()
            .unwrap_or_else(|| panic!("{}: no region", f.name));
        assert!(
            ["us-east-1", "us-east-2", "ap-south-1"].contains(&region.as_str()),
            "{}: {region}",
            f.name
        );
    }
}

#[test]
fn debug_fixtures_are_refused_unless_debug_is_allowed() {
    let verifier = common::aws_verifier();
    for f in fixtures().into_iter().filter(|f| f.debug) {
        let doc = attest::parse(&f.bytes).unwrap();
        let err = verifier
            .verify(
                &doc,
                &Policy::new().dangerous_any_measurements(),
                doc.timestamp(),
            )
            .unwrap_err();
        assert_eq!(
            err,
            VerifyError::Policy(PolicyViolation::DebugMode),
            "{}",
            f.name
        );
    }
}

#[test]
fn every_fixture_is_refused_today_naming_its_expired_leaf() {
    let verifier = common::aws_verifier();
    let today = t("2026-11-22T00:00:00Z");
    for f in fixtures() {
        let doc = attest::parse(&f.bytes).unwrap();
        match verifier.verify(&doc, &policy_for(f.debug), today) {
            Err(VerifyError::CertificateExpired {
                position,
                not_after,
                at,
                subject,
            }) => {
                assert_eq!(position, CertPosition::Leaf, "{}", f.name);
                assert_eq!(not_after, t(f.leaf_not_after), "{}", f.name);
                assert_eq!(at, today);
                assert!(
                    subject.contains(&f.module_id[..19]),
                    "{}: {subject}",
                    f.name
                );
            }
            other => panic!("{}: expected an expired leaf, got {other:?}", f.name),
        }
    }
}

#[test]
fn a_second_verification_uses_the_cached_chain_and_gives_the_same_answer() {
    let verifier = common::aws_verifier();
    let f = &fixtures()[7];
    let doc = attest::parse(&f.bytes).unwrap();
    let first = verifier
        .verify(
            &doc,
            &Policy::new().dangerous_any_measurements(),
            doc.timestamp(),
        )
        .unwrap();
    assert_eq!(verifier.cached_chains(), 1);
    let second = verifier
        .verify(
            &doc,
            &Policy::new().dangerous_any_measurements(),
            doc.timestamp(),
        )
        .unwrap();
    assert_eq!(verifier.cached_chains(), 1);
    assert_eq!(first.region(), second.region());
    assert_eq!(first.trust_path(), second.trust_path());
    // A cached chain is used only inside its validity: after the leaf expired, the answer
    // still names the leaf.
    let late = Timestamp::from_unix_millis(f.timestamp_ms + 4 * 3600 * 1000);
    assert!(matches!(
        verifier.verify(
            &doc,
            &Policy::new()
                .dangerous_any_measurements()
                .dangerous_any_age(),
            late
        ),
        Err(VerifyError::CertificateExpired {
            position: CertPosition::Leaf,
            ..
        })
    ));
}

#[test]
fn nothing_verifies_without_a_trust_anchor() {
    let verifier = Verifier::new(DocumentTrust::empty());
    let doc = common::parsed(common::PROD);
    assert!(matches!(
        verifier.verify(
            &doc,
            &Policy::new().dangerous_any_measurements(),
            doc.timestamp()
        ),
        Err(VerifyError::UntrustedRoot { .. })
    ));
}

#[test]
fn before_the_leaf_was_issued_the_leaf_is_not_yet_valid() {
    let verifier = common::aws_verifier();
    let doc = common::parsed(common::PROD);
    let early = t("2024-02-26T06:00:00Z");
    assert!(matches!(
        verifier.verify(
            &doc,
            &Policy::new()
                .dangerous_any_measurements()
                .dangerous_any_age(),
            early
        ),
        Err(VerifyError::CertificateNotYetValid {
            position: CertPosition::Leaf,
            ..
        })
    ));
}

#[test]
fn public_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Verifier>();
    check::<attest::ParsedDocument>();
    check::<attest::VerifiedDocument>();
    check::<Policy>();
    check::<DocumentTrust>();
    check::<VerifyError>();
    check::<attest::ParseError>();
}

#[test]
fn debug_output_names_documents_by_hash_and_never_prints_their_contents() {
    let bytes = common::fixture("anjuna-20240124-8d6106b4-debug.cbor");
    let doc = attest::parse(&bytes).unwrap();
    let verified = common::aws_verifier()
        .verify(&doc, &policy_for(true), doc.timestamp())
        .unwrap();
    let user_data_bytes = format!("{:?}", b"Hello World!\n".to_vec());
    for text in [format!("{doc:?}"), format!("{verified:?}")] {
        assert!(
            text.contains("i-0e4fe5de7ee5abe78-enc018d3cadd7d66279"),
            "{text}"
        );
        assert!(!text.contains(&user_data_bytes), "{text}");
        assert!(text.len() < 1000, "{} bytes of Debug output", text.len());
    }
}
