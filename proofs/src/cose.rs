//! COSE_Sign1 (RFC 9052) with ES384, as receipts and key-release responses use it: ES384 in
//! the protected header with a content type, an embedded payload, no external data.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::EcdsaKeyPair;
use coset::{CoseSign1Builder, HeaderBuilder, TaggedCborSerializable, iana};

/// Sign `payload` with `key` (a P-384 key for `ECDSA_P384_SHA384_FIXED_SIGNING`) under
/// `content_type`; returns the tagged COSE_Sign1 bytes.
pub fn sign_es384(
    key: &EcdsaKeyPair,
    content_type: &str,
    payload: Vec<u8>,
) -> Result<Vec<u8>, &'static str> {
    let protected = HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES384)
        .content_type(content_type.to_owned())
        .build();
    let rng = SystemRandom::new();
    let mut failed = false;
    let sign1 = CoseSign1Builder::new()
        .protected(protected)
        .payload(payload)
        .create_signature(b"", |data| match key.sign(&rng, data) {
            Ok(sig) => sig.as_ref().to_vec(),
            Err(_) => {
                failed = true;
                Vec::new()
            }
        })
        .build();
    if failed {
        return Err("signing failed");
    }
    sign1
        .to_tagged_vec()
        .map_err(|_| "encoding the COSE_Sign1 failed")
}
