#![no_main]
// Whatever parses is verified against the AWS root at its own time: an error or a value, no panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let (Ok(doc), Ok(trust)) = (attest::parse(data), attest::DocumentTrust::aws()) {
        let policy = attest::Policy::new()
            .dangerous_any_measurements()
            .dangerous_allow_debug();
        let _ = attest::Verifier::new(trust).verify(&doc, &policy, doc.timestamp());
    }
});
