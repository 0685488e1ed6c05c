//! Property tests: any bytes, and any mutation of a real document, parse to a value or an error
//! and verify to a value or an error, never a panic; and a mutated document is never accepted.
mod common;

use attest::Policy;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..8192)) {
        if let Ok(doc) = attest::parse(&bytes) {
            let _ = common::aws_verifier().verify(&doc, &Policy::new().dangerous_any_measurements(), doc.timestamp());
        }
        let _ = attest::decode_document(&bytes);
    }

    #[test]
    fn mutated_real_documents_are_never_accepted(
        which in 0usize..10,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let f = &common::fixtures()[which];
        let mut bytes = f.bytes.clone();
        let mut changed = false;
        for (index, value) in edits {
            let i = index.index(bytes.len());
            changed |= bytes[i] != value;
            bytes[i] = value;
        }
        if let Ok(doc) = attest::parse(&bytes) {
            let result = common::aws_verifier().verify(
                &doc, &common::policy_for(f.debug).dangerous_any_age(), doc.timestamp());
            prop_assert!(!changed || result.is_err());
        }
    }
}
