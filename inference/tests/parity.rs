//! The engine against llama.cpp, on the reference model: the same prompts, the same greedy
//! continuation. `scripts/llama-reference` recorded llama.cpp's token ids and, at every step,
//! how far its chosen token led the second (`inference/tests/data/parity/`).
//!
//! Checked, for every precision the engine offers:
//! - the tokenizer gives exactly llama.cpp's prompt ids (17 prompts: English, code, French,
//!   German, Spanish, Chinese, Russian, Arabic, Hindi, numbers, emoji, whitespace, a 664-token
//!   passage, and two ChatML conversations with their special tokens);
//! - the continuation equals llama.cpp's up to the first step where the two choose differently,
//!   and there llama.cpp's own lead was within [`near_tie`]: a near tie, which numerical
//!   differences may decide either way. A divergence where llama.cpp was sure is a bug (a wrong
//!   rotary embedding, attention or tokenizer diverges at once, by whole logits).
//!
//! Every case's first divergence is printed (`cargo test -p inference --test parity --
//! --nocapture`). After a divergence the two continue from different texts, so nothing later
//! is compared.
//!
//! Needs the reference model: `bash scripts/fetch-model`.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed unwrap or index is a failed test"
)]

use std::path::PathBuf;

use inference::{Engine, Precision};
use serde_json::Value;
use zeroize::Zeroizing;

/// The largest lead of llama.cpp's choice, in logits, at which the engine may choose otherwise.
/// llama.cpp multiplies the Q4_1 weights with activations quantized to 8 bits and keeps its KV
/// cache in F16; the engine's F16 precision expands the weights to F16 and keeps an F32 cache.
/// Those roundings move logits by tenths: llama.cpp itself, given an F32 cache instead of F16,
/// changes its own choice in 14 of these 17 cases. Measured here: F16 diverges only where
/// llama.cpp led by at most 0.33.
fn near_tie(precision: Precision) -> f64 {
    match precision {
        Precision::F16 => 0.5,
        // Q8_0 rounds the Q4_1 weights a second time, to another grid, and quantizes the
        // activations too: measured, divergences where llama.cpp led by up to 0.77.
        Precision::Q8_0 => 1.0,
    }
}

/// The model, or the file `PARITY_MODEL` names (with its reference in `PARITY_REFERENCE`, from
/// `scripts/llama-reference --model FILE --out REFERENCE`).
fn model() -> Zeroizing<Vec<u8>> {
    let path = std::env::var_os("PARITY_MODEL").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../models/SmolLM2-135M-Instruct.Q4_1.gguf")
        },
        PathBuf::from,
    );
    Zeroizing::new(std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}. This test needs the reference model: bash scripts/fetch-model",
            path.display()
        )
    }))
}

fn data(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/parity")
        .join(name);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| u32::try_from(v.as_u64().unwrap()).unwrap())
        .collect()
}

#[test]
fn the_engine_matches_llama_cpp_up_to_a_near_tie() {
    let reference = match std::env::var_os("PARITY_REFERENCE") {
        Some(path) => serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap(),
        None => data("llama-cpp-q4_1.json"),
    };
    let prompts = data("prompts.json");
    let prompts = prompts.as_array().unwrap();
    let model = model();
    assert_eq!(
        reference["model"]["sha256"].as_str().unwrap(),
        data_encoding::HEXLOWER
            .encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &model).as_ref()),
        "the reference was recorded from another file"
    );
    let cases = reference["cases"].as_array().unwrap();
    assert!(cases.len() >= 10, "at least ten prompts");
    assert!(
        cases
            .iter()
            .any(|c| c["prompt_ids"].as_array().unwrap().len() > 500),
        "one prompt over 500 tokens"
    );
    let tokens = usize::try_from(reference["tokens"].as_u64().unwrap()).unwrap();
    let mut failures = Vec::new();
    for precision in [Precision::F16, Precision::Q8_0] {
        let (engine, _) = Engine::load(model.clone(), precision).unwrap();
        let mut identical = 0;
        let mut matched = 0;
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let prompt = ids(&case["prompt_ids"]);
            let expected = ids(&case["ids"]);
            let margins: Vec<f64> = case["margins"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_f64().unwrap())
                .collect();
            assert_eq!(expected.len(), tokens, "{name}");

            let text = prompts
                .iter()
                .find(|p| p["name"] == case["name"])
                .and_then(|p| p["text"].as_str())
                .unwrap_or_else(|| panic!("{name} is not in prompts.json"));
            let ours = engine.tokenize(text).unwrap();
            if ours.as_slice() != prompt.as_slice() {
                failures.push(format!(
                    "{name}: the tokenizer differs from llama.cpp's: {:?} vs {prompt:?}",
                    ours.as_slice()
                ));
                continue;
            }

            let steps = engine.greedy_continuation(&prompt, tokens).unwrap();
            let got: Vec<u32> = steps.iter().map(|s| s.id).collect();
            match got.iter().zip(&expected).position(|(a, b)| a != b) {
                None => {
                    identical += 1;
                    matched += tokens;
                    println!("{precision:?} {name}: all {tokens} ids equal");
                }
                Some(at) => {
                    matched += at;
                    let lead = margins[at];
                    println!(
                        "{precision:?} {name}: first divergence at step {at}: llama.cpp {} \
                         (lead {lead:.3}), engine {} (lead {:.3})",
                        expected[at], got[at], steps[at].margin
                    );
                    if lead > near_tie(precision) {
                        failures.push(format!(
                            "{precision:?} {name}: step {at}: llama.cpp chose {} by {lead:.3} \
                             logits, the engine chose {} (its lead {:.3})",
                            expected[at], got[at], steps[at].margin
                        ));
                    }
                }
            }
        }
        println!(
            "{precision:?}: {identical} of {} continuations identical; {matched} of {} ids \
             before the first divergence",
            cases.len(),
            cases.len() * tokens
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
