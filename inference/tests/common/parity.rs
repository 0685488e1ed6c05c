//! The parity tests' common part: the engine against llama.cpp's recorded token ids
//! (`inference/tests/data/parity/`), for one build of the engine's CPU kernels.

#![allow(
    dead_code,
    reason = "each parity test binary uses its own part of this module"
)]

use std::path::{Path, PathBuf};

use inference::Engine;
use inference::engine::{Cpu, Settings};
use llama::FileType;
use serde_json::Value;
use zeroize::Zeroizing;

/// The largest lead, in logits, of llama.cpp's choice where the engine's unrepacked Q4_0 and
/// Q4_K kernels may choose otherwise (measured: at most 0.52, in 24 of 34 continuations).
pub(crate) const NEAR_TIE: f64 = 0.6;

pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub(crate) fn read(path: &Path) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}. This test needs the reference model: bash scripts/fetch-model",
            path.display()
        )
    }))
}

pub(crate) fn data(name: &str) -> Value {
    let path = root().join("inference/tests/data/parity").join(name);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

pub(crate) fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| u32::try_from(v.as_u64().unwrap()).unwrap())
        .collect()
}

pub(crate) fn sha256(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER
        .encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

/// The reference model in `kind`: the shipped file, or its requantization (made once per build
/// directory).
pub(crate) fn model(kind: FileType) -> Zeroizing<Vec<u8>> {
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
pub(crate) fn compare(
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

/// Every quantization type of the reference model, on the engine's `cpu` build, against
/// llama.cpp's ids recorded with its haswell variant (`llama-cpp-TYPE.json`). Q4_0 and Q4_K_M
/// run twice, repacked and not. On the haswell build, the shipped kernels and the repacked
/// ones must give llama.cpp's ids exactly, the unrepacked ones may diverge at near ties; on an
/// AVX-512 build every run may diverge, but only at near ties ([`NEAR_TIE`]): other
/// instructions, other roundings, the same weights. The failures.
pub(crate) fn every_type(cpu: Cpu) -> Vec<String> {
    FileType::ALL
        .iter()
        .flat_map(|&kind| {
            let reference = data(&format!("llama-cpp-{}.json", kind.as_str()));
            assert_eq!(
                reference["generator"]["cpu_variant"].as_str(),
                Some("haswell"),
                "{}: recorded with another CPU variant",
                kind.as_str()
            );
            let repackable = matches!(kind, FileType::Q4_0 | FileType::Q4KM);
            let settings = |repack| Settings {
                repack,
                cpu: Some(cpu),
                ..Settings::default()
            };
            let tolerance = |exact: bool| {
                if exact && cpu == Cpu::Haswell {
                    0.0
                } else {
                    NEAR_TIE
                }
            };
            let label = format!("{} ({cpu})", kind.as_str());
            let mut failures = compare(
                &label,
                model(kind),
                &reference,
                settings(false),
                tolerance(!repackable),
            );
            if repackable {
                failures.extend(compare(
                    &format!("{label} repacked"),
                    model(kind),
                    &reference,
                    settings(true),
                    tolerance(true),
                ));
            }
            failures
        })
        .collect()
}

/// An AVX-512 build against llama.cpp's haswell ids, every type, divergences at near ties
/// only; on a CPU that cannot run it, the check that loading with it is refused, naming what
/// the CPU lacks.
pub(crate) fn avx512_build(cpu: Cpu) {
    let missing = cpu.missing();
    if !missing.is_empty() {
        let file = inference::ModelFile::with("tiny.gguf", &inference::tiny::model(7)).unwrap();
        let settings = Settings {
            cpu: Some(cpu),
            ..Settings::default()
        };
        let err = Engine::load_file(file, settings).unwrap_err().to_string();
        assert!(
            missing.iter().all(|feature| err.contains(feature)) && err.contains(cpu.as_str()),
            "{err}"
        );
        println!(
            "this CPU lacks {}: the {cpu} build's answers cannot be compared here, only its \
             refusal: {err}",
            missing.join(", ")
        );
        return;
    }
    let failures = every_type(cpu);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
