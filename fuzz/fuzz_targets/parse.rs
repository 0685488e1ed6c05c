#![no_main]
// Any bytes: decoding and parsing return a value or an error, never panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = attest::decode_document(data);
    let _ = attest::parse(data);
});
