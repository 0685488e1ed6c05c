//! Receipts verify offline against the attestation document that binds the enclave's key, and
//! fail if any bound field, the signature or the binding is altered.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed unwrap or index is a failed test"
)]

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use attest::pki::NewRoot;
use attest::sim::{DevelopmentRoots, SimulatedPki, SimulatedRequest};
use attest::{
    DocumentTrust, MeasurementSet, PcrIndex, PcrValue, Policy, Region, ServiceTrust, Timestamp,
    Verifier,
};
use aws_lc_rs::digest::{SHA384, digest};
use ciborium::Value;
use coset::{CoseSign1, TaggedCborSerializable};
use proofs::receipt::{ReceiptClaims, ReceiptError, ReceiptPolicy, ReceiptSigner, verify_receipt};
use proofs::{Log, MemoryStore, NoteSigner, NoteVerifier};

fn t(s: &str) -> Timestamp {
    Timestamp::parse_rfc3339(s).unwrap()
}

fn roots() -> &'static DevelopmentRoots {
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

/// The national root: it certifies the log's key.
fn root() -> &'static NewRoot {
    &roots().national
}

fn pki() -> &'static SimulatedPki {
    static PKI: OnceLock<SimulatedPki> = OnceLock::new();
    PKI.get_or_init(|| {
        SimulatedPki::new(
            &roots().nitro.certificate,
            &roots().nitro.private_key_pem,
            Region::try_from("eu-west-1").unwrap(),
            t("2026-06-01T12:00:00Z"),
        )
        .unwrap()
    })
}

fn pcrs() -> BTreeMap<PcrIndex, PcrValue> {
    (0..16u8)
        .map(|i| (PcrIndex::new(i).unwrap(), PcrValue::measure(&[i])))
        .collect()
}

fn sha384(bytes: &[u8]) -> [u8; 48] {
    digest(&SHA384, bytes).as_ref().try_into().unwrap()
}

const DOC_TIME: &str = "2026-06-01T12:00:00Z";
const RECEIPT_TIME: &str = "2026-06-01T12:20:00Z";
const REQUEST: &[u8] = br#"{"model":"smollm2","messages":[{"role":"user","content":"hi"}]}"#;
const RESPONSE: &[u8] = br#"{"choices":[{"message":{"role":"assistant","content":"hello"}}]}"#;
const MODEL: &[u8] = b"the model weights";

struct Fixture {
    signer: ReceiptSigner,
    document: Vec<u8>,
    log_key: NoteVerifier,
    claims: ReceiptClaims,
}

fn fixture() -> Fixture {
    let signer = ReceiptSigner::generate().unwrap();
    let key = signer.public_key_der().unwrap();
    let document = pki()
        .attest(
            &SimulatedRequest {
                pcrs: pcrs(),
                public_key: Some(&key),
                ..Default::default()
            },
            t(DOC_TIME),
        )
        .unwrap();
    let log_signer = NoteSigner::generate("gov.example/key-release-log").unwrap();
    let log_key = log_signer.verifier();
    let mut log = Log::open(MemoryStore::new(), log_signer).unwrap();
    log.append(b"an earlier decision").unwrap();
    let index = log.append(b"the release of this enclave's key").unwrap();
    let checkpoint = log.checkpoint().unwrap().note;
    let claims = ReceiptClaims {
        time: t(RECEIPT_TIME),
        sequence: 0,
        request_sha384: sha384(REQUEST),
        response_sha384: sha384(RESPONSE),
        model_digest: sha384(MODEL),
        policy_version: 4,
        key_release_index: index,
        checkpoint,
    };
    Fixture {
        signer,
        document,
        log_key,
        claims,
    }
}

fn verifier() -> Verifier {
    Verifier::new(roots().document_trust().unwrap())
}

fn policy(f: &Fixture) -> ReceiptPolicy {
    ReceiptPolicy {
        // The enclave signs receipts with one attested key for up to an hour.
        attestation: Policy::new()
            .allow_measurements(MeasurementSet::try_from(pcrs()).unwrap())
            .max_age(Duration::from_secs(3600)),
        model_digest: sha384(MODEL),
        policy_version: Some(4),
        log_keys: vec![f.log_key.clone()],
        log_origin: Some("gov.example/key-release-log".into()),
        witnesses: proofs::cosignature::WitnessPolicy::none(),
    }
}

fn check(
    f: &Fixture,
    receipt: &[u8],
    policy: &ReceiptPolicy,
) -> Result<proofs::receipt::VerifiedReceipt, ReceiptError> {
    verify_receipt(
        receipt,
        &f.document,
        &verifier(),
        policy,
        &sha384(REQUEST),
        &sha384(RESPONSE),
    )
}

#[test]
fn a_receipt_verifies_offline() {
    let f = fixture();
    let receipt = f.signer.sign(&f.claims).unwrap();
    let verified = check(&f, &receipt, &policy(&f)).unwrap();
    assert_eq!(verified.claims, f.claims);
    assert_eq!(verified.document.pcrs(), &pcrs());
    assert_eq!(verified.checkpoint.unwrap().checkpoint.size, 2);
}

/// Re-encode the payload with one field changed, keeping the original signature.
fn with_field(receipt: &[u8], key: &str, value: Value) -> Vec<u8> {
    let mut sign1 = CoseSign1::from_tagged_slice(receipt).unwrap();
    let payload: Value = ciborium::from_reader(sign1.payload.as_deref().unwrap()).unwrap();
    let Value::Map(mut pairs) = payload else {
        panic!()
    };
    let slot = pairs
        .iter_mut()
        .find(|(k, _)| k.as_text() == Some(key))
        .unwrap();
    assert_ne!(slot.1, value, "{key} must actually change");
    slot.1 = value;
    let mut bytes = Vec::new();
    ciborium::into_writer(&Value::Map(pairs), &mut bytes).unwrap();
    sign1.payload = Some(bytes);
    sign1.to_tagged_vec().unwrap()
}

#[test]
fn altering_any_bound_field_breaks_the_signature() {
    let f = fixture();
    let receipt = f.signer.sign(&f.claims).unwrap();
    let int = |n: u64| Value::Integer(n.into());
    let bytes = |b: &[u8]| Value::Bytes(b.to_vec());
    let changes = [
        ("time", int(f.claims.time.unix_millis() + 1)),
        ("sequence", int(f.claims.sequence + 1)),
        ("request_sha384", bytes(&sha384(b"another request"))),
        ("response_sha384", bytes(&sha384(b"another response"))),
        ("model_digest", bytes(&sha384(b"another model"))),
        ("policy_version", int(5)),
        ("key_release_index", int(0)),
        (
            "checkpoint",
            Value::Text(f.claims.checkpoint.replace('2', "1")),
        ),
    ];
    for (key, value) in changes {
        let forged = with_field(&receipt, key, value);
        let err = check(&f, &forged, &policy(&f)).unwrap_err();
        assert!(matches!(err, ReceiptError::Signature), "{key}: {err}");
    }
}

#[test]
fn a_faithful_receipt_for_another_exchange_is_refused() {
    let f = fixture();
    let receipt = f.signer.sign(&f.claims).unwrap();
    let v = verifier();
    let p = policy(&f);
    let other = sha384(b"other");
    for (request, response) in [(other, sha384(RESPONSE)), (sha384(REQUEST), other)] {
        let err = verify_receipt(&receipt, &f.document, &v, &p, &request, &response).unwrap_err();
        assert!(matches!(err, ReceiptError::Mismatch { .. }), "{err}");
    }
    let mut p = policy(&f);
    p.model_digest = other;
    assert!(matches!(
        check(&f, &receipt, &p),
        Err(ReceiptError::Mismatch {
            field: "model_digest",
            ..
        })
    ));
    let mut p = policy(&f);
    p.policy_version = Some(5);
    assert!(matches!(
        check(&f, &receipt, &p),
        Err(ReceiptError::Mismatch {
            field: "policy_version",
            ..
        })
    ));
}

#[test]
fn a_tampered_signature_is_refused() {
    let f = fixture();
    let receipt = f.signer.sign(&f.claims).unwrap();
    let mut sign1 = CoseSign1::from_tagged_slice(&receipt).unwrap();
    sign1.signature[10] ^= 1;
    let forged = sign1.to_tagged_vec().unwrap();
    assert!(matches!(
        check(&f, &forged, &policy(&f)),
        Err(ReceiptError::Signature)
    ));
    // And every truncation is refused, never a panic.
    for len in 0..receipt.len() {
        assert!(check(&f, &receipt[..len], &policy(&f)).is_err());
    }
}

#[test]
fn the_attestation_binding_is_checked() {
    let f = fixture();
    let receipt = f.signer.sign(&f.claims).unwrap();
    // A document for another key: the receipt is not by the attested enclave.
    let stranger = ReceiptSigner::generate().unwrap().public_key_der().unwrap();
    let other = pki()
        .attest(
            &SimulatedRequest {
                pcrs: pcrs(),
                public_key: Some(&stranger),
                ..Default::default()
            },
            t(DOC_TIME),
        )
        .unwrap();
    let v = verifier();
    let p = policy(&f);
    let (req, resp) = (sha384(REQUEST), sha384(RESPONSE));
    assert!(matches!(
        verify_receipt(&receipt, &other, &v, &p, &req, &resp),
        Err(ReceiptError::Signature)
    ));
    // A document that binds no key.
    let keyless = pki()
        .attest(
            &SimulatedRequest {
                pcrs: pcrs(),
                ..Default::default()
            },
            t(DOC_TIME),
        )
        .unwrap();
    assert!(matches!(
        verify_receipt(&receipt, &keyless, &v, &p, &req, &resp),
        Err(ReceiptError::NoKey(_))
    ));
    // The enclave's measurements are not the ones the policy allows.
    let mut p = policy(&f);
    let mut others = pcrs();
    others.insert(
        PcrIndex::new(0).unwrap(),
        PcrValue::measure(b"another image"),
    );
    p.attestation = Policy::new()
        .allow_measurements(MeasurementSet::try_from(others).unwrap())
        .max_age(Duration::from_secs(3600));
    assert!(matches!(
        check(&f, &receipt, &p),
        Err(ReceiptError::Document(_))
    ));
    // The document is judged at the receipt's time: a key attested 20 minutes before the
    // receipt is too old for a policy that allows 5.
    let mut p = policy(&f);
    p.attestation = Policy::new().allow_measurements(MeasurementSet::try_from(pcrs()).unwrap());
    assert!(matches!(
        check(&f, &receipt, &p),
        Err(ReceiptError::Document(_))
    ));
    // A root the client does not trust.
    let untrusted = Verifier::new(DocumentTrust::aws().unwrap());
    assert!(matches!(
        verify_receipt(&receipt, &f.document, &untrusted, &policy(&f), &req, &resp),
        Err(ReceiptError::Document(_))
    ));
}

/// The receipt's time is the enclave's clock, the document's the NSM's: a receipt dated before
/// its document by less than the skew a document check allows (60 s) is an enclave clock that
/// lags, and is accepted; by more, it is refused.
#[test]
fn a_receipt_dated_before_its_document_is_refused_beyond_the_clock_skew() {
    let f = fixture();
    for (time, accepted) in [
        ("2026-06-01T11:59:30Z", true),
        ("2026-06-01T11:59:00Z", true),
        ("2026-06-01T11:58:59Z", false),
        ("2026-06-01T11:50:00Z", false),
    ] {
        let mut claims = f.claims.clone();
        claims.time = t(time);
        let receipt = f.signer.sign(&claims).unwrap();
        match check(&f, &receipt, &policy(&f)) {
            Ok(verified) => {
                assert!(accepted, "{time}");
                assert_eq!(verified.document.verified_at(), t(DOC_TIME));
            }
            Err(err) => {
                assert!(!accepted, "{time}: {err}");
                assert!(matches!(err, ReceiptError::BeforeDocument { .. }), "{err}");
            }
        }
    }
}

#[test]
fn the_checkpoint_is_checked_when_log_keys_are_given() {
    let f = fixture();
    // An index outside the checkpoint's tree.
    let mut claims = f.claims.clone();
    claims.key_release_index = 2;
    let receipt = f.signer.sign(&claims).unwrap();
    assert!(matches!(
        check(&f, &receipt, &policy(&f)),
        Err(ReceiptError::IndexOutsideCheckpoint { index: 2, size: 2 })
    ));
    // A checkpoint signed by another key.
    let receipt = f.signer.sign(&f.claims).unwrap();
    let mut p = policy(&f);
    p.log_keys = vec![
        NoteSigner::generate("gov.example/key-release-log")
            .unwrap()
            .verifier(),
    ];
    assert!(matches!(
        check(&f, &receipt, &p),
        Err(ReceiptError::Checkpoint(_))
    ));
    // Without log keys the checkpoint is not judged, and the result says so.
    p.log_keys.clear();
    assert!(check(&f, &receipt, &p).unwrap().checkpoint.is_none());
}

#[test]
fn the_log_key_is_certified_under_the_national_root() {
    use attest::pki::certify_service_key;
    use attest::service::ServiceRole;
    let signer = NoteSigner::generate("gov.example/key-release-log").unwrap();
    let key = signer.verifier();
    let certify = |role| {
        certify_service_key(
            &root().certificate,
            &root().private_key_pem,
            &key.to_spki_der(),
            key.name(),
            role,
            t("2026-01-01T00:00:00Z"),
            t("2027-01-01T00:00:00Z"),
        )
        .unwrap()
    };
    let cert = certify(ServiceRole::TransparencyLog);
    let trust = roots().service_trust().unwrap();
    let now = t("2026-06-01T12:00:00Z");
    assert_eq!(
        NoteVerifier::from_certificate(&cert, &trust, now).unwrap(),
        key
    );
    // Not for another role, not under another root, not after it expires.
    let broker = certify(ServiceRole::KeyBroker);
    assert!(NoteVerifier::from_certificate(&broker, &trust, now).is_err());
    let mut other = ServiceTrust::new();
    other.add_root(roots().nitro.certificate.clone()).unwrap();
    assert!(NoteVerifier::from_certificate(&cert, &other, now).is_err());
    assert!(NoteVerifier::from_certificate(&cert, &trust, t("2027-06-01T00:00:00Z")).is_err());
    let mut tampered = cert.to_vec();
    let last = tampered.len() - 5;
    tampered[last] ^= 1;
    assert!(NoteVerifier::from_certificate(&tampered, &trust, now).is_err());
}

#[test]
fn witnesses_required_by_the_client_must_have_cosigned_the_receipt_s_checkpoint() {
    use proofs::cosignature::{Cosigner, WitnessError, WitnessPolicy};
    let f = fixture();
    let (a, b, c) = (
        Cosigner::generate("witness-a.example").unwrap(),
        Cosigner::generate("witness-b.example").unwrap(),
        Cosigner::generate("witness-c.example").unwrap(),
    );
    let text = proofs::Note::parse(f.claims.checkpoint.as_bytes())
        .unwrap()
        .text;
    let cosigned_by = |cosigners: &[&Cosigner]| {
        let lines: Vec<_> = cosigners
            .iter()
            .map(|w| w.cosign(&text, 1_780_000_000).unwrap())
            .collect();
        proofs::cosignature::add_cosignatures(&f.claims.checkpoint, &lines).unwrap()
    };
    let two_of_three =
        WitnessPolicy::new(vec![a.verifier(), b.verifier(), c.verifier()], 2).unwrap();
    let receipt_with = |checkpoint: String| {
        let mut claims = f.claims.clone();
        claims.checkpoint = checkpoint;
        f.signer.sign(&claims).unwrap()
    };
    let mut p = policy(&f);
    p.witnesses = two_of_three;

    // Two of three cosigned: accepted.
    let verified = check(&f, &receipt_with(cosigned_by(&[&a, &c])), &p).unwrap();
    assert!(verified.checkpoint.is_some());
    // One of three, or none: refused, naming who did.
    for (signers, cosigned) in [(vec![&b], 1), (vec![], 0)] {
        let refused = check(&f, &receipt_with(cosigned_by(&signers)), &p).unwrap_err();
        assert!(
            matches!(
                refused,
                ReceiptError::Witnesses(WitnessError::TooFew { cosigned: n, required: 2, .. }) if n == cosigned
            ),
            "{refused}"
        );
    }
    // The same witness twice counts once.
    let twice = cosigned_by(&[&a]);
    let again = a.cosign(&text, 1_780_000_001).unwrap();
    let twice = proofs::cosignature::add_cosignatures(&twice, &[again]).unwrap();
    assert!(check(&f, &receipt_with(twice), &p).is_err());
    // An impostor under a named witness's name, with its own key, is refused.
    let impostor = Cosigner::generate("witness-a.example").unwrap();
    let forged = cosigned_by(&[&impostor, &b]);
    assert!(check(&f, &receipt_with(forged), &p).is_err());
    // A cosignature of another checkpoint moved onto this one does not verify.
    let other_text = text.replace("\n2\n", "\n3\n");
    let moved = a.cosign(&other_text, 1_780_000_000).unwrap();
    let moved = proofs::cosignature::add_cosignatures(&cosigned_by(&[&b]), &[moved]).unwrap();
    assert!(matches!(
        check(&f, &receipt_with(moved), &p),
        Err(ReceiptError::Witnesses(WitnessError::Note(
            proofs::NoteError::BadSignature { .. }
        )))
    ));
    // Witnesses without log keys cannot be judged: refused, not skipped.
    p.log_keys.clear();
    assert!(matches!(
        check(&f, &receipt_with(cosigned_by(&[&a, &b])), &p),
        Err(ReceiptError::Witnesses(WitnessError::Policy(_)))
    ));
}
