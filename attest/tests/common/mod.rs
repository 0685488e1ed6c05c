//! Shared helpers for the integration tests: the real documents and the facts SOURCES.md
//! records about them.
#![allow(
    dead_code,
    reason = "shared by several test crates, each using a part: an expectation would be unfulfilled in some"
)]
#![expect(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed unwrap or index is a failed test"
)]

use std::path::PathBuf;

use attest::{DocumentTrust, ParsedDocument, Policy, Timestamp, Verifier};

/// One real document and what SOURCES.md says of it.
pub struct Fixture {
    pub name: &'static str,
    pub timestamp_ms: u64,
    pub module_id: &'static str,
    pub debug: bool,
    pub public_key_len: Option<usize>,
    pub user_data_len: Option<usize>,
    pub nonce_len: Option<usize>,
    pub leaf_not_after: &'static str,
    pub bytes: Vec<u8>,
}

type Facts = (
    &'static str,
    u64,
    &'static str,
    bool,
    Option<usize>,
    Option<usize>,
    Option<usize>,
    &'static str,
);

const FACTS: &[Facts] = &[
    (
        "anjuna-20210317-234f1201.cbor",
        1616018515685,
        "i-078824548edcf6519-enc01784234ec227b58",
        false,
        None,
        None,
        None,
        "2021-03-18T01:01:55Z",
    ),
    (
        "anjuna-20210324-b9db8022.cbor",
        1616602241734,
        "i-0a6d65e7122308898-enc017846bcd2f820da",
        false,
        Some(294),
        None,
        None,
        "2021-03-24T19:06:22Z",
    ),
    (
        "anjuna-20240124-8d6106b4-debug.cbor",
        1706120065635,
        "i-0e4fe5de7ee5abe78-enc018d3cadd7d66279",
        true,
        Some(294),
        Some(13),
        Some(6),
        "2024-01-24T21:14:17Z",
    ),
    (
        "anjuna-20230921-5a2eac9d.cbor",
        1695337797673,
        "i-07ceff4b3ab54305f-enc018aba0189375080",
        false,
        None,
        Some(13),
        None,
        "2023-09-22T02:09:51Z",
    ),
    (
        "evervault-20221013-a7255268.cbor",
        1665651482136,
        "i-020b6af9246d90e92-enc0183d09086c24190",
        false,
        None,
        None,
        Some(256),
        "2022-10-13T11:58:02Z",
    ),
    (
        "evervault-20230118-061b9b75.cbor",
        1674047239280,
        "i-0ec0e572c8263d8ff-enc0185c4fd382eeb25",
        false,
        None,
        Some(120),
        Some(256),
        "2023-01-18T16:07:16Z",
    ),
    (
        "evervault-20230918-6f80ac25-debug.cbor",
        1695049410860,
        "i-0918f6c55e3b61d89-enc018aa8b8e2285d13",
        true,
        None,
        Some(91),
        Some(256),
        "2023-09-18T17:37:12Z",
    ),
    (
        "marlin-20240226-3a4a0301.cbor",
        1708930921439,
        "i-0df237f0418feb41e-enc018d1c7ef94eb110",
        false,
        Some(32),
        Some(42),
        None,
        "2024-02-26T09:59:36Z",
    ),
    (
        "marlin-20240720-9606fab0.cbor",
        1721459019101,
        "i-0f1cd77d37fd8bcc9-enc018e7aa61e2040ff",
        false,
        Some(32),
        None,
        None,
        "2024-07-20T10:03:26Z",
    ),
    (
        "marlin-20240403-b723381a.cbor",
        1712149702338,
        "i-058bac400e426cc24-enc018e0924a1c4673e",
        false,
        Some(32),
        Some(42),
        None,
        "2024-04-03T16:08:03Z",
    ),
];

/// Every real document in `tests/data/nitro`.
pub fn fixtures() -> Vec<Fixture> {
    FACTS
        .iter()
        .map(
            |&(name, timestamp_ms, module_id, debug, pk, ud, nonce, leaf_not_after)| Fixture {
                name,
                timestamp_ms,
                module_id,
                debug,
                public_key_len: pk,
                user_data_len: ud,
                nonce_len: nonce,
                leaf_not_after,
                bytes: fixture(name),
            },
        )
        .collect()
}

pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/nitro")
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(data_dir().join(name)).unwrap()
}

/// A production document (not debug) used where one is enough.
pub const PROD: &str = "marlin-20240226-3a4a0301.cbor";

pub fn aws_verifier() -> Verifier {
    Verifier::new(DocumentTrust::aws().unwrap())
}

pub fn parsed(name: &str) -> ParsedDocument {
    attest::parse(&fixture(name)).unwrap()
}

pub fn t(text: &str) -> Timestamp {
    Timestamp::parse_rfc3339(text).unwrap()
}

/// The default policy, allowing debug when the fixture is a debug one.
pub fn policy_for(debug: bool) -> Policy {
    if debug {
        Policy::new()
            .dangerous_any_measurements()
            .dangerous_allow_debug()
    } else {
        Policy::new().dangerous_any_measurements()
    }
}

/// Split a real document into (protected header bytes, payload map, signature) so tests can
/// rebuild it with one thing changed.
pub fn dissect(bytes: &[u8]) -> (Vec<u8>, Vec<(ciborium::Value, ciborium::Value)>, Vec<u8>) {
    let value: ciborium::Value = ciborium::de::from_reader(bytes).unwrap();
    let ciborium::Value::Array(items) = value else {
        panic!("not an array")
    };
    let [protected, _unprotected, payload, signature]: [ciborium::Value; 4] =
        items.try_into().unwrap();
    let payload: ciborium::Value =
        ciborium::de::from_reader(payload.as_bytes().unwrap().as_slice()).unwrap();
    (
        protected.into_bytes().unwrap(),
        payload.into_map().unwrap(),
        signature.into_bytes().unwrap(),
    )
}

pub fn encode(value: &ciborium::Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(value, &mut out).unwrap();
    out
}

/// Assemble an untagged COSE_Sign1 from its parts.
pub fn assemble(protected: &[u8], payload: &[u8], signature: &[u8]) -> Vec<u8> {
    use ciborium::Value;
    encode(&Value::Array(vec![
        Value::Bytes(protected.to_vec()),
        Value::Map(vec![]),
        Value::Bytes(payload.to_vec()),
        Value::Bytes(signature.to_vec()),
    ]))
}
