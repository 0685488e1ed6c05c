//! The engine against llama.cpp, on the reference model in every quantization type the engine
//! runs as shipped: the same prompts, the same greedy continuation, every id equal.
//! `scripts/llama-reference` recorded llama.cpp's token ids (node-llama-cpp's prebuilt
//! libraries, their AVX2 variant, haswell) in `inference/tests/data/parity/llama-cpp-TYPE.json`;
//! the engine runs its own haswell build of the CPU kernels here, pinned. (`parity_skylakex.rs`
//! and `parity_icelake.rs` do the same for the AVX-512 builds, each in its own process: a
//! process runs one build.)
//!
//! For each type:
//! - the model: the reference model as shipped (Q4_1), or that file requantized by llama.cpp's
//!   quantizer, here with the engine's own copy (`llama::quantize`); its SHA-256 must be the one
//!   the reference was recorded from, so both sides run the same bytes;
//! - the tokenizer gives exactly llama.cpp's prompt ids (17 prompts: English, code, French,
//!   German, Spanish, Chinese, Russian, Arabic, Hindi, numbers, emoji, whitespace, a 664-token
//!   passage, and two ChatML conversations with their special tokens);
//! - the 64-token continuation is llama.cpp's, id for id. The first divergence is reported with
//!   both sides' leads.
//!
//! Stock llama.cpp repacks Q4_0 and Q4_K tensors into interleaved layouts with their own kernels;
//! the engine does not by default (a repacked tensor is a second copy beside the mapped file).
//! So Q4_0 and Q4_K_M run twice: repacked, id for id; as the engine runs them by default, with
//! divergences allowed only where llama.cpp's own lead was a near tie
//! ([`parity::NEAR_TIE`]): other kernels, other roundings, the same weights.
//!
//! `PARITY_MODEL` and `PARITY_REFERENCE` run one other file against its reference instead, id
//! for id (`PARITY_REPACK=1` repacks).
//! Needs the reference model: `bash scripts/fetch-model`.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap or index is a failed test"
)]

use std::path::Path;

use inference::engine::{Cpu, Settings};

#[path = "common/parity.rs"]
mod parity;

#[test]
fn the_engine_gives_llama_cpp_s_ids_in_every_quantization_type() {
    let failures = match (
        std::env::var_os("PARITY_MODEL"),
        std::env::var_os("PARITY_REFERENCE"),
    ) {
        (Some(model), Some(reference)) => parity::compare(
            "PARITY_MODEL",
            parity::read(Path::new(&model)),
            &serde_json::from_slice(&std::fs::read(reference).unwrap()).unwrap(),
            Settings {
                repack: std::env::var_os("PARITY_REPACK").is_some(),
                cpu: Some(Cpu::Haswell),
                ..Settings::default()
            },
            0.0,
        ),
        (None, None) => parity::every_type(Cpu::Haswell),
        _ => panic!("set both PARITY_MODEL and PARITY_REFERENCE, or neither"),
    };
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
