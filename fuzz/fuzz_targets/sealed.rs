#![no_main]
// Bytes the host serves as a sealed model, and bytes a peer sends in the key-release protocol:
// an error or a value, never a panic, never plaintext from a file that was not sealed under
// the key, and release messages re-encode to themselves.
use std::sync::OnceLock;

use sealing::release::Message;
use sealing::{DataKey, Expected, Id};

fn key() -> &'static DataKey {
    static KEY: OnceLock<DataKey> = OnceLock::new();
    KEY.get_or_init(|| DataKey::from_slice(&[7; 32]).unwrap())
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let id = Id::new("m").unwrap();
    let expected = Expected {
        model_id: &id,
        key_id: &id,
        plaintext_sha384: &[0; 48],
        max_len: 1 << 20,
    };
    // The fuzzer cannot forge a GCM tag: nothing opens.
    assert!(sealing::open_into_memory(&mut &data[..], key(), &expected).is_err());
    let _ = sealing::read_header(&mut &data[..]);
    if let Ok(message) = Message::decode(data) {
        assert_eq!(Message::decode(&message.encode()).ok(), Some(message));
    }
    let _ = sealing::release::verify_response(data, &[0x30, 0x00]);
});
