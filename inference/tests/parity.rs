//! The engine against llama.cpp, on the reference model in every quantization type the engine
//! runs as shipped: the same prompts, the same greedy continuation, every id equal.
//! `scripts/llama-reference` recorded llama.cpp's token ids (node-llama-cpp's prebuilt
//! libraries, their AVX2 variant: the instruction set the engine is built for) in
//! `inference/tests/data/parity/llama-cpp-TYPE.json`.
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
//! divergences allowed only where llama.cpp's own lead was a near tie ([`NEAR_TIE`]): other
//! kernels, other roundings, the same weights.
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

use std::path::{Path, PathBuf};

use inference::Engine;
use inference::engine::Settings;
use llama::FileType;
use serde_json::Value;
use zeroize::Zeroizing;

/// The largest lead, in logits, of llama.cpp's choice where the engine's unrepacked Q4_0 and
/// Q4_K kernels may choose otherwise (measured: at most 0.52, in 24 of 34 continuations).
const NEAR_TIE: f64 = 0.6;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}. This test needs the reference model: bash scripts/fetch-model",
            path.display()
        )
    }))
}

fn data(name: &str) -> Value {
    let path = root().join("inference/tests/data/parity").join(name);
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

fn sha256(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER
        .encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

/// The reference model in `kind`: the shipped file, or its requantization (made once per build
/// directory).
fn model(kind: FileType) -> Zeroizing<Vec<u8>> {
    let shipped = root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if kind == FileType::Q4_1 {
        return read(&shipped);
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("parity-models");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.gguf", kind.as_str()));
    if !path.exists() {
        assert!(shipped.exists(), "bash scripts/fetch-model first");
        let partial = dir.join(format!("{}.gguf.partial", kind.as_str()));
        llama::quantize(&shipped, &partial, kind, 2).unwrap();
        std::fs::rename(&partial, &path).unwrap();
    }
    read(&path)
}

/// Runs every case of `reference` on `model`; the failures.
fn compare(
    label: &str,
    model: Zeroizing<Vec<u8>>,
    reference: &Value,
    settings: Settings,
    tolerance: f64,
) -> Vec<String> {
    let prompts = data("prompts.json");
    let prompts = prompts.as_array().unwrap();
    let mut failures = Vec::new();
    let digest = sha256(&model);
    if reference["model"]["sha256"].as_str().unwrap() != digest {
        return vec![format!(
            "{label}: the reference was recorded from another file (the model's SHA-256 is \
             {digest})"
        )];
    }
    let cases = reference["cases"].as_array().unwrap();
    assert!(cases.len() >= 10, "at least ten prompts");
    assert!(
        cases
            .iter()
            .any(|c| c["prompt_ids"].as_array().unwrap().len() > 500),
        "one prompt over 500 tokens"
    );
    let tokens = usize::try_from(reference["tokens"].as_u64().unwrap()).unwrap();
    let file = inference::ModelFile::with("model.gguf", &model).unwrap();
    drop(model);
    let (engine, report) = Engine::load_file(file, settings).unwrap();
    let mut identical = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let prompt = ids(&case["prompt_ids"]);
        let expected = ids(&case["ids"]);
        assert_eq!(expected.len(), tokens, "{name}");
        let text = prompts
            .iter()
            .find(|p| p["name"] == case["name"])
            .and_then(|p| p["text"].as_str())
            .unwrap_or_else(|| panic!("{name} is not in prompts.json"));
        let ours = engine.tokenize(text).unwrap();
        if ours.as_slice() != prompt.as_slice() {
            failures.push(format!(
                "{label} {name}: the tokenizer differs from llama.cpp's: {:?} vs {prompt:?}",
                ours.as_slice()
            ));
            continue;
        }
        let steps = engine.greedy_continuation(&prompt, tokens).unwrap();
        let got: Vec<u32> = steps.iter().map(|s| s.id).collect();
        match got.iter().zip(&expected).position(|(a, b)| a != b) {
            None => identical += 1,
            Some(at) => {
                let lead = case["margins"][at].as_f64().unwrap();
                let message = format!(
                    "{label} {name}: first divergence at step {at}: llama.cpp chose {} (lead \
                     {lead:.3}), the engine {} (lead {:.3})",
                    expected[at], got[at], steps[at].margin
                );
                println!("{message}");
                if lead > tolerance {
                    failures.push(message);
                }
            }
        }
    }
    println!(
        "{label} ({:?}): {identical} of {} continuations identical",
        report.types,
        cases.len()
    );
    failures
}

#[test]
fn the_engine_gives_llama_cpp_s_ids_in_every_quantization_type() {
    let failures = match (
        std::env::var_os("PARITY_MODEL"),
        std::env::var_os("PARITY_REFERENCE"),
    ) {
        (Some(model), Some(reference)) => compare(
            "PARITY_MODEL",
            read(Path::new(&model)),
            &serde_json::from_slice(&std::fs::read(reference).unwrap()).unwrap(),
            Settings {
                repack: std::env::var_os("PARITY_REPACK").is_some(),
                ..Settings::default()
            },
            0.0,
        ),
        (None, None) => FileType::ALL
            .iter()
            .flat_map(|&kind| {
                let reference = data(&format!("llama-cpp-{}.json", kind.as_str()));
                let repacked = matches!(kind, FileType::Q4_0 | FileType::Q4KM);
                let mut failures = compare(
                    kind.as_str(),
                    model(kind),
                    &reference,
                    Settings::default(),
                    if repacked { NEAR_TIE } else { 0.0 },
                );
                if repacked {
                    failures.extend(compare(
                        &format!("{} repacked", kind.as_str()),
                        model(kind),
                        &reference,
                        Settings {
                            repack: true,
                            ..Settings::default()
                        },
                        0.0,
                    ));
                }
                failures
            })
            .collect(),
        _ => panic!("set both PARITY_MODEL and PARITY_REFERENCE, or neither"),
    };
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
