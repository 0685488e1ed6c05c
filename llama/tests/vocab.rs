//! The tokenizer of the linked llama.cpp, which `llama/patches/vocab-memory.patch` changes (BPE
//! merge ranks keyed by token ids, no token-to-piece cache), checked two ways:
//!
//! - llama.cpp's own tokenizer suite: each vocabulary-only GGUF in its `models/` with its cases
//!   (`.inp`) and the ids the model's reference tokenizer gives them (`.out`), as its
//!   `test-tokenizer-0` runs them. `scripts/llama-cpp` keeps the suite beside the libraries.
//! - Small vocabularies written here for what the suite does not reach: a merge whose left
//!   half is not a token, merges listed twice (kept by ids and by strings), and merges that name
//!   no pair.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers fail the test by panicking"
)]

use llama::{Context, LoadOptions, MemoryFile, Model};
use std::sync::Arc;

const SEPARATOR: &str = "\n__ggml_vocab_test__\n";

/// The vocabularies llama.cpp's test-tokenizer-0 runs (its tests/CMakeLists.txt), every one
/// with cases: a suite that loses one fails here rather than passing on fewer.
const SUITE: [&str; 15] = [
    "bert-bge",
    "command-r",
    "deepseek-coder",
    "deepseek-llm",
    "falcon",
    "gemma-4",
    "gpt-2",
    "llama-bpe",
    "llama-spm",
    "mpt",
    "phi-3",
    "qwen2",
    "qwen35",
    "refact",
    "starcoder",
];

/// Byte-level BPE vocabularies, whose pieces give back the text they were made from, byte for
/// byte: a check of the pieces, made since the patch when asked for.
const BYTE_LEVEL: [&str; 9] = [
    "deepseek-coder",
    "deepseek-llm",
    "gpt-2",
    "llama-bpe",
    "mpt",
    "qwen2",
    "qwen35",
    "refact",
    "starcoder",
];

fn vocab_only(name: &str, bytes: &[u8]) -> Model {
    let file = MemoryFile::with(name, bytes).unwrap();
    let options = LoadOptions {
        vocab_only: true,
        ..LoadOptions::default()
    };
    Model::load(file, options).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The cases of an `.inp` file, split as llama.cpp's test-tokenizer-0 splits them (a separator
/// at the very end opens no further case).
fn cases(text: &str) -> Vec<&str> {
    let mut cases = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        match rest.split_once(SEPARATOR) {
            Some((case, after)) => {
                cases.push(case);
                rest = after;
            }
            None => {
                cases.push(rest);
                break;
            }
        }
    }
    cases
}

#[test]
fn llama_cpp_s_tokenizer_suite_passes() {
    let suite = std::path::Path::new(env!("LLAMA_CPP_VOCAB_SUITE"));
    let mut vocabularies: Vec<_> = std::fs::read_dir(suite)
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/llama-cpp keeps it)", suite.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "gguf"))
        .collect();
    vocabularies.sort();
    let names: Vec<String> = vocabularies
        .iter()
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        SUITE.map(|name| format!("ggml-vocab-{name}.gguf")),
        "the suite"
    );
    for name in BYTE_LEVEL {
        assert!(SUITE.contains(&name), "{name} is not in the suite");
    }
    let mut round_trips = 0;
    let mut failures = Vec::new();
    let mut checked = 0;
    for gguf in &vocabularies {
        let name = gguf.file_name().unwrap().to_string_lossy().into_owned();
        let model = vocab_only(&name, &std::fs::read(gguf).unwrap());
        let input = std::fs::read_to_string(gguf.with_extension("gguf.inp")).unwrap();
        let output = std::fs::read_to_string(gguf.with_extension("gguf.out")).unwrap();
        let cases = cases(&input);
        let expected: Vec<&str> = output.lines().collect();
        assert_eq!(cases.len(), expected.len(), "{name}: cases and answers");
        assert!(cases.len() >= 40, "{name}: only {} cases", cases.len());
        for (case, answer) in cases.iter().zip(&expected) {
            let want: Vec<u32> = answer
                .split_whitespace()
                .map(|id| id.parse().unwrap())
                .collect();
            let got = model.tokenize(case, false).unwrap();
            if got != want {
                failures.push(format!("{name}: {case:?}: {got:?}, expected {want:?}"));
            }
            if BYTE_LEVEL
                .iter()
                .any(|v| name == format!("ggml-vocab-{v}.gguf"))
            {
                let mut text = Vec::new();
                for &id in &got {
                    model.piece(id, &mut text).unwrap();
                }
                round_trips += 1;
                if text != case.as_bytes() {
                    failures.push(format!(
                        "{name}: {case:?} comes back as {:?}",
                        String::from_utf8_lossy(&text)
                    ));
                }
            }
            checked += 1;
        }
    }
    assert!(round_trips >= 9 * 46, "{round_trips} round trips");
    assert!(
        failures.is_empty(),
        "{} of {checked} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn a_model_loaded_without_weights_makes_no_context() {
    let model = Arc::new(vocab_only("small.gguf", &small_vocabulary(&[], &[])));
    let err = Context::new(&model, 16, 1).unwrap_err().to_string();
    assert!(err.contains("without its weights"), "{err}");
}

/// A merge's halves need not be tokens: "t h" makes "th", which is not one, and "th e" makes
/// "the" from it. The ranks keyed by token ids cannot hold "th e"; its strings are kept.
#[test]
fn a_merge_whose_half_is_not_a_token_still_applies() {
    let model = vocab_only(
        "merge-of-a-non-token.gguf",
        &small_vocabulary(&["t", "h", "e", "the"], &["t h", "th e"]),
    );
    let the = 4; // after <|endoftext|>
    assert_eq!(model.tokenize("the", false).unwrap(), [the]);
    // Merges that name no pair (no space, an empty half) take a rank and change nothing.
    let model = vocab_only(
        "odd-merges.gguf",
        &small_vocabulary(&["t", "h", "e", "the"], &["t h", "th", "t ", " e", "th e"]),
    );
    assert_eq!(model.tokenize("the", false).unwrap(), [the]);
    // Without "th e", "th" is spelled out by its bytes' tokens.
    let model = vocab_only(
        "no-second-merge.gguf",
        &small_vocabulary(&["t", "h", "e", "the"], &["t h"]),
    );
    assert_eq!(model.tokenize("the", false).unwrap(), [1, 2, 3]);
}

/// A merge listed twice keeps its first (lowest) rank, as the map llama.cpp kept did: "t h" at
/// rank 0 comes before "h e" at rank 1, whatever its second listing at rank 2.
#[test]
fn a_merge_listed_twice_keeps_its_first_rank() {
    let tokens = ["t", "h", "e", "th", "he"];
    let (th, e, t, he) = (4, 3, 1, 5);
    let model = vocab_only(
        "twice.gguf",
        &small_vocabulary(&tokens, &["t h", "h e", "t h"]),
    );
    assert_eq!(model.tokenize("the", false).unwrap(), [th, e]);
    // The order decides: "h e" first gives the other split.
    let model = vocab_only(
        "other-order.gguf",
        &small_vocabulary(&tokens, &["h e", "t h", "h e"]),
    );
    assert_eq!(model.tokenize("the", false).unwrap(), [t, he]);
}

/// The same for merges kept by their strings: "ab c" (rank 2) comes before "c de" (rank 3),
/// whatever its second listing at rank 4, where a map that kept the last listing would apply
/// "c de" first.
#[test]
fn a_merge_of_non_tokens_listed_twice_keeps_its_first_rank() {
    let tokens = ["a", "b", "c", "d", "e", "abc", "cde"];
    let (a, b, d, e, abc, cde) = (1, 2, 4, 5, 6, 7);
    let model = vocab_only(
        "twice-by-strings.gguf",
        &small_vocabulary(&tokens, &["a b", "d e", "ab c", "c de", "ab c"]),
    );
    // "abc", then "de", which is no token, by its bytes' tokens.
    assert_eq!(model.tokenize("abcde", false).unwrap(), [abc, d, e]);
    let model = vocab_only(
        "other-order-by-strings.gguf",
        &small_vocabulary(&tokens, &["a b", "d e", "c de", "ab c", "c de"]),
    );
    assert_eq!(model.tokenize("abcde", false).unwrap(), [a, b, cde]);
}

/// A vocabulary-only GGUF (version 3) of a byte-level BPE model ("gpt2"): `<|endoftext|>` (id
/// 0), then `tokens`, then `merges`, with the hyperparameters llama.cpp reads before the
/// vocabulary.
fn small_vocabulary(tokens: &[&str], merges: &[&str]) -> Vec<u8> {
    enum Value<'a> {
        U32(u32),
        F32(f32),
        Str(&'a str),
        Strs(Vec<&'a str>),
        I32s(Vec<i32>),
    }
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend(u64::try_from(s.len()).unwrap().to_le_bytes());
        out.extend(s.as_bytes());
    }
    let mut all = vec!["<|endoftext|>"];
    all.extend(tokens);
    let mut types = vec![3];
    types.extend(tokens.iter().map(|_| 1));
    let metadata = [
        ("general.architecture", Value::Str("llama")),
        ("llama.block_count", Value::U32(1)),
        ("llama.context_length", Value::U32(64)),
        ("llama.embedding_length", Value::U32(8)),
        ("llama.feed_forward_length", Value::U32(16)),
        ("llama.attention.head_count", Value::U32(2)),
        ("llama.attention.head_count_kv", Value::U32(2)),
        ("llama.rope.dimension_count", Value::U32(4)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("tokenizer.ggml.model", Value::Str("gpt2")),
        ("tokenizer.ggml.pre", Value::Str("gpt-2")),
        ("tokenizer.ggml.tokens", Value::Strs(all)),
        ("tokenizer.ggml.token_type", Value::I32s(types)),
        ("tokenizer.ggml.merges", Value::Strs(merges.to_vec())),
        ("tokenizer.ggml.eos_token_id", Value::U32(0)),
    ];
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(0u64.to_le_bytes()); // tensors
    out.extend(u64::try_from(metadata.len()).unwrap().to_le_bytes());
    for (key, value) in metadata {
        string(&mut out, key);
        match value {
            Value::U32(v) => {
                out.extend(4u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Value::F32(v) => {
                out.extend(6u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Value::Str(s) => {
                out.extend(8u32.to_le_bytes());
                string(&mut out, s);
            }
            Value::Strs(list) => {
                out.extend(9u32.to_le_bytes());
                out.extend(8u32.to_le_bytes());
                out.extend(u64::try_from(list.len()).unwrap().to_le_bytes());
                for s in list {
                    string(&mut out, s);
                }
            }
            Value::I32s(list) => {
                out.extend(9u32.to_le_bytes());
                out.extend(5u32.to_le_bytes());
                out.extend(u64::try_from(list.len()).unwrap().to_le_bytes());
                for v in list {
                    out.extend(v.to_le_bytes());
                }
            }
        }
    }
    out
}
