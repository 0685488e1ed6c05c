use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use attest::{DocumentTrust, Nonce, Policy, Verifier, VerifyError};

use super::*;

const START: u64 = 1_800_000_000;

fn pcr(index: u8) -> PcrIndex {
    PcrIndex::try_from(u64::from(index)).unwrap()
}

fn boot() -> BootMeasurements {
    BootMeasurements {
        pcr8: None,
        pcr0: PcrValue::measure(b"image"),
        pcr1: PcrValue::measure(b"kernel"),
        pcr2: PcrValue::measure(b"application"),
    }
}

/// A module whose clock a test moves, and the development root's certificate.
fn module() -> (SimulatedNsm, CertificateDer<'static>, Arc<AtomicU64>) {
    let root = attest::sim::simulated_nitro_root(
        Timestamp::from_unix_secs(START - 86_400),
        Timestamp::from_unix_secs(START + 3650 * 86_400),
    )
    .unwrap();
    let now = Arc::new(AtomicU64::new(START));
    let clock_now = now.clone();
    let nsm = SimulatedNsm::new(
        DevelopmentRoot {
            certificate: root.certificate.clone(),
            key_pem: root.private_key_pem.to_string(),
        },
        Region::try_from("eu-central-1").unwrap(),
        boot(),
        Box::new(move || Timestamp::from_unix_secs(clock_now.load(Ordering::SeqCst))),
    );
    (nsm, root.certificate, now)
}

/// A verifier that trusts the simulated Nitro root directly, as one trusts AWS's.
fn verifier(root: &CertificateDer<'static>) -> Verifier {
    let mut trust = DocumentTrust::empty();
    trust.add_nitro_root(root.clone()).unwrap();
    Verifier::new(trust)
}

#[test]
fn boot_pcrs_are_locked_and_user_pcrs_extend_like_sha384() {
    let (nsm, _, _) = module();
    assert_eq!(
        nsm.describe_pcr(pcr(0)).unwrap(),
        PcrState {
            value: boot().pcr0,
            locked: true
        }
    );
    assert!(matches!(
        nsm.extend_pcr(pcr(0), b"x"),
        Err(NsmError::ReadOnly(i)) if i == pcr(0)
    ));
    assert!(matches!(
        nsm.extend_pcr(pcr(15), b"x"),
        Err(NsmError::ReadOnly(_))
    ));

    let first = nsm.extend_pcr(pcr(16), b"one").unwrap();
    assert_eq!(first, PcrValue::ZERO.extend(b"one"));
    let second = nsm.extend_pcr(pcr(16), b"two").unwrap();
    assert_eq!(second, first.extend(b"two"));
    assert_ne!(
        second,
        PcrValue::ZERO.extend(b"two").extend(b"one"),
        "order matters"
    );

    nsm.lock_pcr(pcr(16)).unwrap();
    assert!(matches!(
        nsm.extend_pcr(pcr(16), b"three"),
        Err(NsmError::ReadOnly(_))
    ));
    assert_eq!(nsm.describe_pcr(pcr(16)).unwrap().value, second);
}

#[test]
fn documents_verify_only_under_the_development_root() {
    let (nsm, root, now) = module();
    nsm.extend_pcr(pcr(16), &[7; 48]).unwrap();
    let nonce = [0x5a; 32];
    let bytes = nsm
        .attest(&AttestationRequest {
            nonce: Some(&nonce),
            public_key: Some(b"enclave key"),
            user_data: None,
        })
        .unwrap();
    let document = attest::parse(&bytes).unwrap();
    let at = Timestamp::from_unix_secs(now.load(Ordering::SeqCst));
    let policy = Policy::new()
        .dangerous_any_measurements()
        .expect_nonce(Nonce::try_from(&nonce[..]).unwrap());

    let verified = verifier(&root).verify(&document, &policy, at).unwrap();
    assert_eq!(verified.nonce(), Some(&nonce[..]));
    assert_eq!(verified.public_key(), Some(&b"enclave key"[..]));
    assert_eq!(verified.pcrs().len(), 17, "PCR0-15 and the used PCR16");
    assert_eq!(verified.pcrs()[&pcr(0)], boot().pcr0);
    assert_eq!(verified.pcrs()[&pcr(16)], PcrValue::ZERO.extend(&[7; 48]));
    assert!(!verified.is_debug());

    let aws = Verifier::new(DocumentTrust::aws().unwrap());
    assert!(matches!(
        aws.verify(&document, &policy, at),
        Err(VerifyError::UntrustedRoot { .. })
    ));
}

#[test]
fn the_simulated_pki_is_renewed_before_leaves_outlive_it() {
    let (nsm, root, now) = module();
    for day in 0..4u64 {
        let at = START + day * 86_400 + 3_600;
        now.store(at, Ordering::SeqCst);
        let bytes = nsm.attest(&AttestationRequest::default()).unwrap();
        let document = attest::parse(&bytes).unwrap();
        // Verify at the end of the leaf's three hours: every CA must still be valid then.
        let late = Timestamp::from_unix_secs(at + 3 * 3600 - 1);
        verifier(&root)
            .verify(
                &document,
                &Policy::new()
                    .dangerous_any_measurements()
                    .dangerous_any_age(),
                late,
            )
            .unwrap_or_else(|e| panic!("day {day}: {e}"));
    }
}

#[test]
fn random_bytes_differ() {
    let (nsm, _, _) = module();
    let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
    nsm.fill_random(&mut a).unwrap();
    nsm.fill_random(&mut b).unwrap();
    assert_ne!(a, b);
}
