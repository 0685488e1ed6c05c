//! The simulated Nitro PKI: its documents have the real format, verify only against the
//! development root, and say exactly what was asked of them.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap or index is a failed test"
)]

mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use attest::pki::NewRoot;
use attest::sim::{DevelopmentRoots, SimulatedPki, SimulatedRequest};
use attest::{
    CertPosition, DocumentTrust, MeasurementSet, Nonce, PcrIndex, PcrValue, Policy, Region,
    Timestamp, Verifier, VerifyError,
};
use common::{dissect, t};
use proptest::prelude::*;

fn now() -> Timestamp {
    t("2026-06-01T12:00:00Z")
}

fn dev_roots() -> &'static DevelopmentRoots {
    static ROOTS: OnceLock<DevelopmentRoots> = OnceLock::new();
    ROOTS.get_or_init(|| {
        DevelopmentRoots::new(
            "Dev National Root",
            t("2026-01-01T00:00:00Z"),
            t("2036-01-01T00:00:00Z"),
        )
        .unwrap()
    })
}

/// The simulated Nitro root the PKI issues under.
fn dev_root() -> &'static NewRoot {
    &dev_roots().nitro
}

fn pki() -> &'static SimulatedPki {
    static PKI: OnceLock<SimulatedPki> = OnceLock::new();
    PKI.get_or_init(|| {
        let root = dev_root();
        SimulatedPki::new(
            &root.certificate,
            &root.private_key_pem,
            Region::try_from("eu-central-1").unwrap(),
            now(),
        )
        .unwrap()
    })
}

fn pcrs() -> BTreeMap<PcrIndex, PcrValue> {
    (0..16u8)
        .map(|i| {
            (
                PcrIndex::try_from(u64::from(i)).unwrap(),
                PcrValue::try_from([i + 1; 48].as_slice()).unwrap(),
            )
        })
        .collect()
}

fn dev_verifier() -> Verifier {
    Verifier::new(dev_roots().document_trust().unwrap())
}

#[test]
fn documents_have_the_real_format() {
    let doc = pki()
        .attest(
            &SimulatedRequest {
                pcrs: pcrs(),
                ..Default::default()
            },
            now(),
        )
        .unwrap();
    let real = common::fixture(common::PROD);
    let (real_protected, real_payload, _) = dissect(&real);
    let (protected, payload, signature) = dissect(&doc);
    assert_eq!(doc[0], real[0], "untagged COSE_Sign1 array");
    assert_eq!(protected, real_protected, "protected header bytes");
    let keys = |m: &Vec<(ciborium::Value, ciborium::Value)>| {
        m.iter()
            .map(|(k, _)| k.as_text().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(&payload),
        keys(&real_payload),
        "payload keys in the NSM's order"
    );
    assert_eq!(signature.len(), 96);
    let parsed = attest::parse(&doc).unwrap();
    assert_eq!(parsed.unverified().cabundle.len(), 4);
    assert_eq!(parsed.timestamp(), now());
}

#[test]
fn they_verify_against_the_development_root_only() {
    let nonce = [7u8; 32];
    let doc = pki()
        .attest(
            &SimulatedRequest {
                pcrs: pcrs(),
                nonce: Some(&nonce),
                ..Default::default()
            },
            now(),
        )
        .unwrap();
    let parsed = attest::parse(&doc).unwrap();
    let policy = Policy::new()
        .dangerous_any_measurements()
        .expect_nonce(Nonce::try_from(nonce.as_slice()).unwrap());
    let verified = dev_verifier().verify(&parsed, &policy, now()).unwrap();
    assert_eq!(verified.region().unwrap().as_str(), "eu-central-1");
    // Shaped like AWS's: i-<17 hex>-enc<16 hex>.
    let (instance, enclave) = verified.module_id().split_once("-enc").unwrap();
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    assert!(
        instance.strip_prefix("i-").is_some_and(|i| hex(i, 17)),
        "{}",
        verified.module_id()
    );
    assert!(hex(enclave, 16), "{}", verified.module_id());
    assert!(
        verified
            .trust_path()
            .anchor_subject
            .contains("Dev National Root")
    );
    assert!(!verified.is_debug());

    let aws = Verifier::new(DocumentTrust::aws().unwrap());
    let err = aws.verify(&parsed, &policy, now()).unwrap_err();
    assert!(matches!(err, VerifyError::UntrustedRoot { .. }), "{err:?}");
}

#[test]
fn the_leaf_lives_three_hours() {
    let doc = pki()
        .attest(
            &SimulatedRequest {
                pcrs: pcrs(),
                ..Default::default()
            },
            now(),
        )
        .unwrap();
    let parsed = attest::parse(&doc).unwrap();
    let policy = Policy::new()
        .dangerous_any_measurements()
        .dangerous_any_age();
    let later = Timestamp::from_unix_secs(now().unix_secs() + 3 * 3600);
    dev_verifier().verify(&parsed, &policy, later).unwrap();
    let too_late = Timestamp::from_unix_secs(now().unix_secs() + 3 * 3600 + 1);
    assert!(matches!(
        dev_verifier().verify(&parsed, &policy, too_late),
        Err(VerifyError::CertificateExpired {
            position: CertPosition::Leaf,
            ..
        })
    ));
}

#[test]
fn pinned_measurements_and_tampering_behave_as_for_real_documents() {
    let doc = pki()
        .attest(
            &SimulatedRequest {
                pcrs: pcrs(),
                ..Default::default()
            },
            now(),
        )
        .unwrap();
    let parsed = attest::parse(&doc).unwrap();
    let pinned =
        MeasurementSet::try_from(pcrs().into_iter().take(3).collect::<BTreeMap<_, _>>()).unwrap();
    dev_verifier()
        .verify(&parsed, &Policy::new().allow_measurements(pinned), now())
        .unwrap();

    let mut tampered = doc.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let parsed = attest::parse(&tampered).unwrap();
    assert_eq!(
        dev_verifier()
            .verify(&parsed, &Policy::new().dangerous_any_measurements(), now())
            .unwrap_err(),
        VerifyError::SignatureInvalid
    );
}

#[test]
fn out_of_bound_requests_are_refused() {
    let big = vec![0u8; 1025];
    for request in [
        SimulatedRequest {
            pcrs: pcrs(),
            user_data: Some(&big),
            ..Default::default()
        },
        SimulatedRequest {
            pcrs: pcrs(),
            nonce: Some(&big),
            ..Default::default()
        },
        SimulatedRequest {
            pcrs: pcrs(),
            public_key: Some(&[]),
            ..Default::default()
        },
        SimulatedRequest::default(),
    ] {
        assert!(pki().attest(&request, now()).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever the enclave asks for is exactly what the verified document says.
    #[test]
    fn fields_round_trip(
        user_data in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..=1024)),
        nonce in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..=1024)),
        public_key in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..=1024)),
        debug in any::<bool>(),
    ) {
        let mut pcrs = pcrs();
        if debug {
            pcrs.insert(PcrIndex::try_from(0).unwrap(), PcrValue::ZERO);
        }
        let request = SimulatedRequest {
            pcrs: pcrs.clone(),
            user_data: user_data.as_deref(),
            nonce: nonce.as_deref(),
            public_key: public_key.as_deref(),
        };
        let doc = pki().attest(&request, now()).unwrap();
        let parsed = attest::parse(&doc).unwrap();
        let policy = if debug { Policy::new().dangerous_any_measurements().dangerous_allow_debug() } else { Policy::new().dangerous_any_measurements() };
        let v = dev_verifier().verify(&parsed, &policy, now()).unwrap();
        prop_assert_eq!(v.user_data(), user_data.as_deref());
        prop_assert_eq!(v.nonce(), nonce.as_deref());
        prop_assert_eq!(v.public_key(), public_key.as_deref());
        prop_assert_eq!(v.pcrs(), &pcrs);
        prop_assert_eq!(v.is_debug(), debug);
    }
}
