//! Property tests: any bytes decode to a message or an error, never a panic; and what is sent
//! decodes to itself.
use proptest::prelude::*;
use protocol::wire::{Request, RequestBody, Response, read_frame};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..8192)) {
        let _ = Request::decode(&bytes);
        let _ = Response::decode(&bytes);
        let _ = read_frame(&mut bytes.as_slice());
    }

    #[test]
    fn requests_round_trip(id in any::<u64>(), nonce in proptest::collection::vec(any::<u8>(), 1..=1024)) {
        let request = Request { id, body: RequestBody::Attestation { nonce: attest::Nonce::try_from(nonce).unwrap() } };
        prop_assert_eq!(Request::decode(&request.encode()).unwrap(), request);
    }
}
