//! The engine's skylakex build of the CPU kernels (AVX-512 F, CD, VL, DQ, BW) against llama.cpp's
//! recorded ids, as `parity.rs` does for the haswell build: every quantization type of the
//! reference model, the same prompts, the same greedy continuation, except where llama.cpp's
//! lead was a near tie (other instructions round differently). Its own test binary, since a
//! process runs one build. On a CPU without AVX-512 it checks instead that the build is
//! refused, naming what the CPU lacks.
//! Needs the reference model: `bash scripts/fetch-model`.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap or index is a failed test"
)]

use inference::engine::Cpu;

#[path = "common/parity.rs"]
mod parity;

#[test]
fn the_skylakex_build_gives_llama_cpp_s_ids_but_at_near_ties() {
    parity::avx512_build(Cpu::SkylakeX);
}
