#![no_main]
// The GGUF header the engine reads itself before llama.cpp maps the model: any bytes give a
// header or an error, never a panic, and never an allocation larger than the input (every
// length is checked against what is left of the file first). A header that reads has as many
// tensors counted by type as it says it holds.
use inference::gguf::Header;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
    if let Ok(header) = Header::read(data, len) {
        let counted: usize = header.types.iter().map(|(_, n)| n).sum();
        assert_eq!(counted, header.tensors);
    }
});
