#![no_main]
// Any text as a policy file: a policy or an error naming the key, never a panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = attest::PolicyFile::parse(text, std::path::Path::new("."));
    }
});
