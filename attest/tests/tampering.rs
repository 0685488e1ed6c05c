//! Tampering with a real document: every single-bit flip in the signature, the payload and the
//! leaf certificate is refused, and every truncation of every document is an error, never a
//! panic.
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap or index is a failed test"
)]

mod common;

use attest::Policy;
use common::{fixtures, policy_for};

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
}

/// Flip every bit in `range` of the document; each result must be refused.
fn assert_every_flip_refused(name: &str, range: core::ops::Range<usize>) {
    let original = common::fixture(name);
    let verifier = common::aws_verifier();
    let policy = Policy::new()
        .dangerous_any_measurements()
        .dangerous_any_age();
    let at = attest::parse(&original).unwrap().timestamp();
    assert!(
        verifier
            .verify(&attest::parse(&original).unwrap(), &policy, at)
            .is_ok()
    );
    let mut flips = 0;
    for byte in range {
        for bit in 0..8 {
            let mut bytes = original.clone();
            bytes[byte] ^= 1 << bit;
            if let Ok(doc) = attest::parse(&bytes) {
                // Verify at the original time: a flipped timestamp must not help either.
                assert!(
                    verifier.verify(&doc, &policy, at).is_err(),
                    "{name}: flipping bit {bit} of byte {byte} was accepted"
                );
            }
            flips += 1;
        }
    }
    assert!(flips > 0);
}

#[test]
fn every_bit_flip_in_the_signature_is_refused() {
    let bytes = common::fixture(common::PROD);
    let (_, _, signature) = common::dissect(&bytes);
    let start = find(&bytes, &signature);
    assert_every_flip_refused(common::PROD, start..start + signature.len());
}

#[test]
fn every_bit_flip_in_the_payload_is_refused() {
    let bytes = common::fixture(common::PROD);
    let value: ciborium::Value = ciborium::de::from_reader(bytes.as_slice()).unwrap();
    let payload = value.as_array().unwrap()[2].as_bytes().unwrap().clone();
    let start = find(&bytes, &payload);
    assert_every_flip_refused(common::PROD, start..start + payload.len());
}

#[test]
fn every_bit_flip_in_the_leaf_certificate_is_refused() {
    let bytes = common::fixture(common::PROD);
    let doc = attest::parse(&bytes).unwrap();
    let leaf = doc.unverified().certificate.to_vec();
    let start = find(&bytes, &leaf);
    assert_every_flip_refused(common::PROD, start..start + leaf.len());
}

#[test]
fn every_truncation_of_every_document_is_an_error_not_a_panic() {
    let verifier = common::aws_verifier();
    for f in fixtures() {
        let policy = policy_for(f.debug);
        for len in 0..f.bytes.len() {
            let cut = &f.bytes[..len];
            if let Ok(doc) = attest::parse(cut) {
                let at = doc.timestamp();
                assert!(
                    verifier.verify(&doc, &policy, at).is_err(),
                    "{}: {len}",
                    f.name
                );
            }
        }
    }
}

#[test]
fn trailing_bytes_after_the_document_are_refused() {
    let mut bytes = common::fixture(common::PROD);
    bytes.push(0);
    assert!(matches!(
        attest::parse(&bytes),
        Err(attest::ParseError::Cose { .. })
    ));
}
