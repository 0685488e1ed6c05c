//! The release policy on authentic documents: measurements, nonce, freshness and region.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap or index is a failed test"
)]

mod common;

use core::time::Duration;
use std::collections::BTreeMap;

use attest::{
    MeasurementSet, Nonce, PcrIndex, PcrValue, Policy, PolicyViolation, Region, VerifyError,
};

fn refused(policy: &Policy, at_offset_ms: i64) -> PolicyViolation {
    let doc = common::parsed(common::PROD);
    let at = attest::Timestamp::from_unix_millis(
        doc.timestamp()
            .unix_millis()
            .checked_add_signed(at_offset_ms)
            .unwrap(),
    );
    match common::aws_verifier().verify(&doc, policy, at) {
        Err(VerifyError::Policy(v)) => v,
        other => panic!("expected a policy refusal, got {other:?}"),
    }
}

fn actual_pcrs() -> BTreeMap<PcrIndex, PcrValue> {
    common::parsed(common::PROD).unverified().pcrs.clone()
}

fn set(pcrs: &[(u64, PcrValue)]) -> MeasurementSet {
    let map = pcrs
        .iter()
        .map(|(i, v)| (PcrIndex::try_from(*i).unwrap(), *v))
        .collect::<BTreeMap<_, _>>();
    MeasurementSet::try_from(map).unwrap()
}

fn pcr(i: u64) -> PcrValue {
    actual_pcrs()[&PcrIndex::try_from(i).unwrap()]
}

#[test]
fn matching_measurements_are_accepted() {
    let doc = common::parsed(common::PROD);
    let policy = Policy::new().allow_measurements(set(&[
        (0, pcr(0)),
        (1, pcr(1)),
        (2, pcr(2)),
        (3, pcr(3)),
    ]));
    common::aws_verifier()
        .verify(&doc, &policy, doc.timestamp())
        .unwrap();
}

#[test]
fn a_pcr_mismatch_names_the_pcr_with_both_values() {
    let wrong = PcrValue::try_from([0xab; 48].as_slice()).unwrap();
    let policy = Policy::new().allow_measurements(set(&[(0, pcr(0)), (2, wrong)]));
    match refused(&policy, 0) {
        PolicyViolation::PcrMismatch(d) => {
            assert_eq!(d.index.get(), 2);
            assert_eq!(d.expected, wrong);
            assert_eq!(d.actual, Some(pcr(2)));
            let text = d.to_string();
            assert!(
                text.contains(&wrong.to_hex()) && text.contains(&pcr(2).to_hex()),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_all_zero_expectation_is_not_a_wildcard() {
    let policy = Policy::new().allow_measurements(set(&[(0, PcrValue::ZERO)]));
    assert!(matches!(
        refused(&policy, 0),
        PolicyViolation::PcrMismatch(_)
    ));
}

#[test]
fn a_pcr_the_document_lacks_is_a_mismatch() {
    let policy = Policy::new().allow_measurements(set(&[(31, PcrValue::ZERO)]));
    match refused(&policy, 0) {
        PolicyViolation::PcrMismatch(d) => assert_eq!(d.actual, None),
        other => panic!("{other:?}"),
    }
}

#[test]
fn any_one_of_several_measurement_sets_suffices() {
    let wrong = PcrValue::try_from([1; 48].as_slice()).unwrap();
    let doc = common::parsed(common::PROD);
    let policy = Policy::new()
        .allow_measurements(set(&[(0, wrong)]))
        .allow_measurements(set(&[(0, pcr(0)), (1, pcr(1))]));
    common::aws_verifier()
        .verify(&doc, &policy, doc.timestamp())
        .unwrap();

    let policy = Policy::new()
        .allow_measurements(set(&[(0, wrong)]))
        .allow_measurements(set(&[(0, pcr(0)), (1, wrong)]));
    match refused(&policy, 0) {
        PolicyViolation::NoMeasurementSetMatched(all) => {
            assert_eq!(all.len(), 2);
            assert_eq!((all[0].set, all[0].index.get()), (0, 0));
            assert_eq!((all[1].set, all[1].index.get()), (1, 1));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_nonce_must_match_exactly() {
    let doc = common::parsed("anjuna-20240124-8d6106b4-debug.cbor");
    let verifier = common::aws_verifier();
    let base = Policy::new()
        .dangerous_any_measurements()
        .dangerous_allow_debug();
    let good = Nonce::try_from(b"Nonce\n".as_slice()).unwrap();
    verifier
        .verify(&doc, &base.clone().expect_nonce(good), doc.timestamp())
        .unwrap();
    let bad = Nonce::try_from(b"Nonce!".as_slice()).unwrap();
    let err = verifier
        .verify(&doc, &base.clone().expect_nonce(bad), doc.timestamp())
        .unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Policy(PolicyViolation::NonceMismatch { .. })
        ),
        "{err:?}"
    );
    let prefix = Nonce::try_from(b"Nonce".as_slice()).unwrap();
    assert!(
        verifier
            .verify(&doc, &base.expect_nonce(prefix), doc.timestamp())
            .is_err()
    );

    // A document without a nonce.
    let policy = Policy::new()
        .dangerous_any_measurements()
        .expect_nonce(Nonce::try_from(vec![1]).unwrap());
    assert!(matches!(
        refused(&policy, 0),
        PolicyViolation::NonceMissing { .. }
    ));
}

#[test]
fn stale_and_future_documents_are_refused() {
    let policy = Policy::new()
        .dangerous_any_measurements()
        .max_age(Duration::from_secs(60));
    match refused(&policy, 61_000) {
        PolicyViolation::Stale { age, max_age, .. } => {
            assert_eq!(age, Duration::from_secs(61));
            assert_eq!(max_age, Duration::from_secs(60));
        }
        other => panic!("{other:?}"),
    }
    // Exactly at the limit is still fresh.
    let doc = common::parsed(common::PROD);
    let at = attest::Timestamp::from_unix_millis(doc.timestamp().unix_millis() + 60_000);
    common::aws_verifier().verify(&doc, &policy, at).unwrap();
    // Older than the default five minutes.
    assert!(matches!(
        refused(&Policy::new().dangerous_any_measurements(), 301_000),
        PolicyViolation::Stale { .. }
    ));
    // Made after the verification time, beyond the allowed skew.
    assert!(matches!(
        refused(&Policy::new().dangerous_any_measurements(), -61_000),
        PolicyViolation::FromTheFuture { .. }
    ));
}

#[test]
fn regions_can_be_pinned() {
    let doc = common::parsed(common::PROD);
    let allowed = Policy::new()
        .dangerous_any_measurements()
        .allow_regions([Region::try_from("ap-south-1").unwrap()]);
    let v = common::aws_verifier()
        .verify(&doc, &allowed, doc.timestamp())
        .unwrap();
    assert_eq!(v.region().unwrap().as_str(), "ap-south-1");

    let policy = Policy::new().dangerous_any_measurements().allow_regions([
        Region::try_from("eu-central-1").unwrap(),
        Region::try_from("eu-west-1").unwrap(),
    ]);
    match refused(&policy, 0) {
        PolicyViolation::RegionNotAllowed { region, allowed } => {
            assert_eq!(region.as_str(), "ap-south-1");
            assert_eq!(allowed.len(), 2);
        }
        other => panic!("{other:?}"),
    }
}

/// A policy accepts no image until told which: one that pins nothing refuses a genuine
/// document, naming why, unless it says `dangerous_any_measurements`; and that never lets a
/// document past the sets a policy does list.
#[test]
fn a_policy_that_pins_nothing_accepts_nothing_unless_asked_to() {
    assert_eq!(refused(&Policy::new(), 0), PolicyViolation::NoMeasurements);
    assert_eq!(
        VerifyError::Policy(PolicyViolation::NoMeasurements).kind(),
        "no_measurements"
    );
    let doc = common::parsed(common::PROD);
    let any = Policy::new().dangerous_any_measurements();
    assert!(any.accepts_any_measurements());
    common::aws_verifier()
        .verify(&doc, &any, doc.timestamp())
        .unwrap();
    let other = Policy::new()
        .dangerous_any_measurements()
        .allow_measurements(set(&[(0, PcrValue::measure(b"another image"))]));
    assert!(!other.accepts_any_measurements());
    assert!(matches!(
        refused(&other, 0),
        PolicyViolation::PcrMismatch(_)
    ));
}

/// A policy file that lists no measurements says so in its policy: it checks authenticity only,
/// which is what `attest verify` reports, and what the broker and the client refuse.
#[test]
fn a_policy_file_without_measurements_is_marked_as_accepting_any_image() {
    let dir = std::path::Path::new(".");
    let open = attest::PolicyFile::parse("", dir).unwrap();
    assert!(open.policy.accepts_any_measurements());
    assert!(open.policy.check_pins_image().is_err());
    let pinned =
        attest::PolicyFile::parse(&format!("[[measurements]]\npcr0 = \"{}\"\n", pcr(0)), dir)
            .unwrap();
    assert!(!pinned.policy.accepts_any_measurements());
    assert!(pinned.policy.check_pins_image().is_ok());
}
