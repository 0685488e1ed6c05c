#![no_main]
// Any bytes from a peer: frames and control messages decode to a value or an error, never
// panic, and whatever decodes re-encodes to a message that decodes the same.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = protocol::wire::read_frame(&mut &data[..]);
    if let Ok(request) = protocol::wire::Request::decode(data) {
        assert_eq!(
            protocol::wire::Request::decode(&request.encode()).ok(),
            Some(request)
        );
    }
    if let Ok(response) = protocol::wire::Response::decode(data) {
        assert_eq!(
            protocol::wire::Response::decode(&response.encode()).ok(),
            Some(response)
        );
    }
});
