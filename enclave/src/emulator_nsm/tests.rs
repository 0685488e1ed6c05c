use attest::{DocumentTrust, Nonce, Policy, Region, Timestamp, Verifier};

use super::*;
use crate::simulated_nsm::{BootMeasurements, DevelopmentRoot, SimulatedNsm};

/// A document QEMU 10.0.2's `nitro-enclave` machine made (unsigned, all-zero certificate).
const QEMU_DOCUMENT: &[u8] =
    include_bytes!("../../../attest/tests/data/qemu-nitro-enclave-10.0.2.cbor");

const NOW: u64 = 1_800_000_000;

/// A stand-in for the emulator's device that returns the same document whatever is asked, as
/// a device that ignored the request would.
#[derive(Debug)]
struct Recorded(&'static [u8]);

impl Nsm for Recorded {
    fn kind(&self) -> NsmKind {
        NsmKind::Nitro
    }
    fn describe_pcr(&self, _: PcrIndex) -> Result<PcrState, NsmError> {
        Err(NsmError::Failure("not recorded".into()))
    }
    fn extend_pcr(&self, _: PcrIndex, _: &[u8]) -> Result<PcrValue, NsmError> {
        Err(NsmError::Failure("not recorded".into()))
    }
    fn lock_pcr(&self, _: PcrIndex) -> Result<(), NsmError> {
        Err(NsmError::Failure("not recorded".into()))
    }
    fn fill_random(&self, _: &mut [u8]) -> Result<(), NsmError> {
        Err(NsmError::Failure("not recorded".into()))
    }
    fn attest(&self, _: &AttestationRequest<'_>) -> Result<Vec<u8>, NsmError> {
        Ok(self.0.to_vec())
    }
}

fn development_root() -> (DevelopmentRoot, Verifier) {
    let root = attest::sim::simulated_nitro_root(
        Timestamp::from_unix_secs(NOW - 86_400),
        Timestamp::from_unix_secs(NOW + 86_400),
    )
    .unwrap();
    let mut trust = DocumentTrust::empty();
    trust.add_nitro_root(root.certificate.clone()).unwrap();
    (
        DevelopmentRoot {
            certificate: root.certificate,
            key_pem: root.private_key_pem.to_string(),
        },
        Verifier::new(trust),
    )
}

fn signer(root: DevelopmentRoot) -> SimulatedSigner {
    SimulatedSigner::new(
        root,
        Region::try_from("eu-central-1").unwrap(),
        Box::new(|| Timestamp::from_unix_secs(NOW)),
    )
}

#[test]
fn the_emulators_measurements_are_signed_under_the_development_root() {
    let recorded = attest::parse_unsigned(QEMU_DOCUMENT).unwrap();
    let fields = recorded.unverified();
    let (root, verifier) = development_root();
    let nsm = EmulatorNsm::new(Recorded(QEMU_DOCUMENT), signer(root));
    assert_eq!(nsm.kind(), NsmKind::Emulator);
    let bytes = nsm
        .attest(&AttestationRequest {
            nonce: fields.nonce,
            user_data: fields.user_data,
            public_key: fields.public_key,
        })
        .unwrap();
    let document = attest::parse(&bytes).unwrap();
    let mut policy = Policy::new().dangerous_any_measurements();
    if let Some(nonce) = fields.nonce {
        policy = policy.expect_nonce(Nonce::try_from(nonce).unwrap());
    }
    let verified = verifier
        .verify(&document, &policy, Timestamp::from_unix_secs(NOW))
        .unwrap();
    assert_eq!(
        verified.pcrs(),
        fields.pcrs,
        "the PCRs are QEMU's, unchanged"
    );
    assert_eq!(verified.nonce(), fields.nonce);
}

#[test]
fn a_document_that_does_not_echo_the_request_is_not_signed() {
    let fields = attest::parse_unsigned(QEMU_DOCUMENT).unwrap();
    let fields = fields.unverified();
    let (root, _) = development_root();
    let nsm = EmulatorNsm::new(Recorded(QEMU_DOCUMENT), signer(root));
    let other = [0xee; 32];
    for (name, request) in [
        (
            "nonce",
            AttestationRequest {
                nonce: Some(&other),
                user_data: fields.user_data,
                public_key: fields.public_key,
            },
        ),
        (
            "user_data",
            AttestationRequest {
                nonce: fields.nonce,
                user_data: Some(&other),
                public_key: fields.public_key,
            },
        ),
        (
            "public_key",
            AttestationRequest {
                nonce: fields.nonce,
                user_data: fields.user_data,
                public_key: Some(&other),
            },
        ),
    ] {
        let error = nsm.attest(&request).unwrap_err();
        assert!(error.to_string().contains(name), "{name}: {error}");
    }
    // A field the device reports that was not asked for is refused too.
    assert!(fields.nonce.is_some_and(|n| !n.is_empty()));
    let error = nsm
        .attest(&AttestationRequest {
            nonce: None,
            user_data: fields.user_data,
            public_key: fields.public_key,
        })
        .unwrap_err();
    assert!(error.to_string().contains("nonce"), "{error}");
}

#[test]
fn a_signed_document_is_never_signed_again() {
    // A device that signs (here the simulated NSM; on real hardware, AWS's): its documents are
    // refused, not re-signed under the development root.
    let (device_root, _) = development_root();
    let device = SimulatedNsm::new(
        device_root,
        Region::try_from("eu-central-1").unwrap(),
        BootMeasurements {
            pcr0: PcrValue::measure(b"image"),
            pcr1: PcrValue::measure(b"kernel"),
            pcr2: PcrValue::measure(b"application"),
            pcr8: None,
        },
        Box::new(|| Timestamp::from_unix_secs(NOW)),
    );
    let (root, _) = development_root();
    let nsm = EmulatorNsm::new(device, signer(root));
    let error = nsm.attest(&AttestationRequest::default()).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("signed: an ES384 algorithm or a non-zero signature"),
        "{error}"
    );

    // And garbage from the device is refused too.
    let (root, _) = development_root();
    let nsm = EmulatorNsm::new(Recorded(b"\x84\x40\xa0\x40"), signer(root));
    assert!(nsm.attest(&AttestationRequest::default()).is_err());
}
