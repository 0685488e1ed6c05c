//! A tiny llama GGUF with random weights, for tests and benchmarks that need a model but not the
//! reference one: the same architecture, tokenizer kind and chat tokens, a few hundred
//! kilobytes, and weights in Q4_1 so that loading exercises requantization.
//!
//! Its answers are noise, deterministic for a seed and greedy sampling.

use std::io::Cursor;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{Device, Tensor};

/// The embedding width.
const DIM: usize = 64;
/// The feed-forward width.
const FF: usize = 128;
/// Layers.
const LAYERS: usize = 2;
/// Attention heads, and key/value heads.
const HEADS: u32 = 4;
const KV_HEADS: u32 = 2;

/// ChatML, with a default system message, as the reference model's template writes it.
pub const CHAT_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and \
    messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a tiny test model<|im_end|>\n' }}\
    {% endif %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}\
    {% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// The GPT-2 byte-level alphabet: printable bytes stand for themselves, the rest map to U+0100
/// onwards, in byte order.
fn byte_level_alphabet() -> Vec<String> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 0x100u32;
    (0..=255u8)
        .map(|b| {
            if printable(b) {
                char::from(b).to_string()
            } else {
                let c = char::from_u32(next).unwrap_or('?');
                next = next.saturating_add(1);
                c.to_string()
            }
        })
        .collect()
}

/// A tiny random-weight llama in GGUF, deterministic for `seed`, with [`CHAT_TEMPLATE`].
pub fn model(seed: u64) -> Result<Vec<u8>, candle_core::Error> {
    model_with_template(seed, Some(CHAT_TEMPLATE))
}

/// [`model`] with another chat template in its metadata, or none.
pub fn model_with_template(
    seed: u64,
    template: Option<&str>,
) -> Result<Vec<u8>, candle_core::Error> {
    let device = Device::Cpu;
    let mut tokens = vec![
        "<|endoftext|>".to_owned(),
        "<|im_start|>".to_owned(),
        "<|im_end|>".to_owned(),
    ];
    let mut types = vec![Value::I32(3), Value::I32(3), Value::I32(3)];
    let alphabet = byte_level_alphabet();
    tokens.extend(alphabet.iter().cloned());
    types.extend(alphabet.iter().map(|_| Value::I32(1)));
    // A few merges, so that the BPE model has some to apply.
    let space = alphabet.get(usize::from(b' ')).cloned().unwrap_or_default();
    let mut merges = Vec::new();
    for (a, b) in [("t", "h"), ("th", "e"), (space.as_str(), "the"), ("i", "s")] {
        merges.push(Value::String(format!("{a} {b}")));
        tokens.push(format!("{a}{b}"));
        types.push(Value::I32(1));
    }
    let vocab = tokens.len();
    let metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        (
            "llama.block_count",
            Value::U32(u32::try_from(LAYERS).unwrap_or(2)),
        ),
        ("llama.context_length", Value::U32(4096)),
        (
            "llama.embedding_length",
            Value::U32(u32::try_from(DIM).unwrap_or(64)),
        ),
        (
            "llama.feed_forward_length",
            Value::U32(u32::try_from(FF).unwrap_or(128)),
        ),
        ("llama.attention.head_count", Value::U32(HEADS)),
        ("llama.attention.head_count_kv", Value::U32(KV_HEADS)),
        ("llama.rope.dimension_count", Value::U32(16)),
        ("llama.rope.freq_base", Value::F32(10_000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.merges", Value::Array(merges)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
    ];
    let mut metadata = metadata;
    if let Some(template) = template {
        metadata.push(("tokenizer.chat_template", Value::String(template.into())));
    }
    // Uniform weights in [-0.5, 0.5) from a seeded xorshift generator.
    let mut state = seed | 1;
    let mut random = |rows: usize, cols: usize, dtype: GgmlDType| {
        let values: Vec<f32> = (0..rows.saturating_mul(cols))
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let unit = f32::from(u16::try_from(state >> 48).unwrap_or(0)) / 65_536.0;
                unit - 0.5
            })
            .collect();
        QTensor::quantize(&Tensor::from_vec(values, (rows, cols), &device)?, dtype)
    };
    let ones = |n: usize| {
        QTensor::quantize(
            &Tensor::ones(n, candle_core::DType::F32, &device)?,
            GgmlDType::F32,
        )
    };
    let kv = DIM / usize::try_from(HEADS).unwrap_or(4) * usize::try_from(KV_HEADS).unwrap_or(2);
    let mut tensors: Vec<(String, QTensor)> = vec![
        (
            "token_embd.weight".into(),
            random(vocab, DIM, GgmlDType::Q8_0)?,
        ),
        ("output_norm.weight".into(), ones(DIM)?),
        ("output.weight".into(), random(vocab, DIM, GgmlDType::Q4_1)?),
    ];
    for layer in 0..LAYERS {
        let name = |n: &str| format!("blk.{layer}.{n}.weight");
        tensors.push((name("attn_q"), random(DIM, DIM, GgmlDType::Q4_1)?));
        tensors.push((name("attn_k"), random(kv, DIM, GgmlDType::Q4_1)?));
        tensors.push((name("attn_v"), random(kv, DIM, GgmlDType::Q4_1)?));
        tensors.push((name("attn_output"), random(DIM, DIM, GgmlDType::Q4_1)?));
        tensors.push((name("ffn_gate"), random(FF, DIM, GgmlDType::Q4_1)?));
        tensors.push((name("ffn_up"), random(FF, DIM, GgmlDType::Q4_1)?));
        tensors.push((name("ffn_down"), random(DIM, FF, GgmlDType::Q4_1)?));
        tensors.push((name("attn_norm"), ones(DIM)?));
        tensors.push((name("ffn_norm"), ones(DIM)?));
    }
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata, &tensors)?;
    Ok(out.into_inner())
}
