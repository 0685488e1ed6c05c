#![no_main]
// Receipts arrive from the enclave through the untrusted host: any bytes decode to a receipt
// or an error, never panic, and verification of a decodable receipt against a real document
// fails cleanly (the fuzzer cannot forge the signature).
use std::sync::OnceLock;

use attest::{DocumentTrust, Policy, Verifier};
use proofs::receipt::{Receipt, ReceiptPolicy, verify_receipt};

fn verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| Verifier::new(DocumentTrust::aws().unwrap_or_else(|_| DocumentTrust::empty())))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if Receipt::parse(data).is_ok() {
        let policy = ReceiptPolicy {
            attestation: Policy::new()
                .dangerous_any_measurements()
                .dangerous_any_age(),
            model_digest: [0; 48],
            policy_version: None,
            log_keys: Vec::new(),
            log_origin: None,
            witnesses: proofs::cosignature::WitnessPolicy::none(),
        };
        let document = include_bytes!("../seeds/parse/marlin-20240226-3a4a0301.cbor");
        assert!(verify_receipt(data, document, verifier(), &policy, &[0; 48], &[0; 48]).is_err());
    }
});
