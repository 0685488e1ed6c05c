//! Shared helpers for the integration tests: the real documents and their facts.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

pub struct Fixture {
    pub name: &'static str,
    pub debug: bool,
    pub region: &'static str,
    pub bytes: Vec<u8>,
}

/// Every real document in `tests/data/nitro`, with facts from its SOURCES.md.
pub fn fixtures() -> Vec<Fixture> {
    [
        ("anjuna-20210317-234f1201.cbor", false),
        ("anjuna-20210324-b9db8022.cbor", false),
        ("anjuna-20230921-5a2eac9d.cbor", false),
        ("anjuna-20240124-8d6106b4-debug.cbor", true),
        ("evervault-20221013-a7255268.cbor", false),
        ("evervault-20230118-061b9b75.cbor", false),
        ("evervault-20230918-6f80ac25-debug.cbor", true),
        ("marlin-20240226-3a4a0301.cbor", false),
        ("marlin-20240403-b723381a.cbor", false),
        ("marlin-20240720-9606fab0.cbor", false),
    ]
    .into_iter()
    .map(|(name, debug)| Fixture {
        name,
        debug,
        region: "",
        bytes: std::fs::read(data_dir().join(name)).unwrap(),
    })
    .collect()
}

pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/nitro")
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(data_dir().join(name)).unwrap()
}
