#![no_main]
// Any bytes from a peer: frames and control messages decode to a value or an error, never
// panic, and a message that decodes is the one encoding of what it decodes to.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = protocol::wire::read_frame(&mut &data[..]);
    if let Ok(request) = protocol::wire::Request::decode(data) {
        assert_eq!(request.encode(), data);
    }
    if let Ok(response) = protocol::wire::Response::decode(data) {
        assert_eq!(response.encode(), data);
    }
});
