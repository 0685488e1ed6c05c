//! A tiny llama GGUF with random weights, for tests and benchmarks that need a model but not the
//! reference one: the same architecture, tokenizer kind and chat tokens, a few hundred
//! kilobytes, and weights in Q4_1 and Q8_0 (and F32 norms), so that
//! loading and evaluation exercise quantized kernels.
//!
//! Its answers are noise, deterministic for a seed and greedy sampling.

use crate::gguf::{self, Tensor, Write};

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

/// GGML's codes for the types the tiny model uses.
const F32: u32 = 0;
const Q4_1: u32 = 3;
const Q8_0: u32 = 8;

/// A tiny random-weight llama in GGUF, deterministic for `seed`, with [`CHAT_TEMPLATE`].
pub fn model(seed: u64) -> Vec<u8> {
    model_with_template(seed, Some(CHAT_TEMPLATE))
}

/// [`model`] with another chat template in its metadata, or none.
pub fn model_with_template(seed: u64, template: Option<&str>) -> Vec<u8> {
    let mut tokens = vec![
        "<|endoftext|>".to_owned(),
        "<|im_start|>".to_owned(),
        "<|im_end|>".to_owned(),
    ];
    let mut types = vec![3, 3, 3];
    let alphabet = byte_level_alphabet();
    tokens.extend(alphabet.iter().cloned());
    types.extend(alphabet.iter().map(|_| 1));
    // A few merges, so that the BPE model has some to apply.
    let space = alphabet.get(usize::from(b' ')).cloned().unwrap_or_default();
    let mut merges = Vec::new();
    for (a, b) in [("t", "h"), ("th", "e"), (space.as_str(), "the"), ("i", "s")] {
        merges.push(format!("{a} {b}"));
        tokens.push(format!("{a}{b}"));
        types.push(1);
    }
    let vocab = tokens.len();
    let count = |n: usize| Write::U32(u32::try_from(n).unwrap_or(u32::MAX));
    let mut metadata: Vec<(&str, Write)> = vec![
        ("general.architecture", Write::String("llama".into())),
        ("llama.block_count", count(LAYERS)),
        ("llama.context_length", Write::U32(4096)),
        ("llama.embedding_length", count(DIM)),
        ("llama.feed_forward_length", count(FF)),
        ("llama.attention.head_count", Write::U32(HEADS)),
        ("llama.attention.head_count_kv", Write::U32(KV_HEADS)),
        ("llama.rope.dimension_count", Write::U32(16)),
        ("llama.rope.freq_base", Write::F32(10_000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Write::F32(1e-5)),
        ("tokenizer.ggml.model", Write::String("gpt2".into())),
        ("tokenizer.ggml.tokens", Write::Strings(tokens)),
        ("tokenizer.ggml.token_type", Write::I32s(types)),
        ("tokenizer.ggml.merges", Write::Strings(merges)),
        ("tokenizer.ggml.eos_token_id", Write::U32(2)),
    ];
    if let Some(template) = template {
        metadata.push(("tokenizer.chat_template", Write::String(template.into())));
    }
    // Uniform weights in [-0.5, 0.5) from a seeded xorshift generator.
    let mut state = seed | 1;
    let mut random = |name: String, rows: usize, cols: usize, kind: u32| {
        let values: Vec<f32> = (0..rows.saturating_mul(cols))
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let unit = f32::from(u16::try_from(state >> 48).unwrap_or(0)) / 65_536.0;
                unit - 0.5
            })
            .collect();
        let data = match kind {
            Q8_0 => quantize_q8_0(&values),
            _ => quantize_q4_1(&values),
        };
        Tensor {
            name,
            dims: vec![dim(cols), dim(rows)],
            kind,
            data,
        }
    };
    let ones = |name: String, n: usize| Tensor {
        name,
        dims: vec![dim(n)],
        kind: F32,
        data: std::iter::repeat_n(1f32.to_le_bytes(), n)
            .flatten()
            .collect(),
    };
    let kv = DIM / usize::try_from(HEADS).unwrap_or(4) * usize::try_from(KV_HEADS).unwrap_or(2);
    let mut tensors = vec![
        random("token_embd.weight".into(), vocab, DIM, Q8_0),
        ones("output_norm.weight".into(), DIM),
        random("output.weight".into(), vocab, DIM, Q4_1),
    ];
    for layer in 0..LAYERS {
        let name = |n: &str| format!("blk.{layer}.{n}.weight");
        tensors.push(random(name("attn_q"), DIM, DIM, Q4_1));
        tensors.push(random(name("attn_k"), kv, DIM, Q4_1));
        tensors.push(random(name("attn_v"), kv, DIM, Q4_1));
        tensors.push(random(name("attn_output"), DIM, DIM, Q4_1));
        tensors.push(random(name("ffn_gate"), FF, DIM, Q4_1));
        tensors.push(random(name("ffn_up"), FF, DIM, Q4_1));
        tensors.push(random(name("ffn_down"), DIM, FF, Q4_1));
        tensors.push(ones(name("attn_norm"), DIM));
        tensors.push(ones(name("ffn_norm"), DIM));
    }
    gguf::write(&metadata, &tensors)
}

fn dim(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// `x` as IEEE half precision, rounded to nearest (ties to even); the scales here are normal
/// numbers, subnormals flush to zero.
fn f16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = u16::try_from((bits >> 16) & 0x8000).unwrap_or(0);
    let exponent = i32::try_from((bits >> 23) & 0xff).unwrap_or(0) - 127 + 15;
    let mantissa = bits & 0x7f_ffff;
    if exponent <= 0 {
        return sign;
    }
    if exponent >= 31 {
        return sign | 0x7c00;
    }
    let mut half = (u32::try_from(exponent).unwrap_or(0) << 10) | (mantissa >> 13);
    let rest = mantissa & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && half & 1 == 1) {
        half += 1;
    }
    sign | u16::try_from(half.min(0x7c00)).unwrap_or(0x7c00)
}

/// `x` rounded to the nearest integer within 0 to 255, as a byte.
fn byte(x: f32) -> u8 {
    let x = x.round().clamp(0.0, 255.0);
    let mut b = 0u8;
    for bit in (0..8).rev() {
        let candidate = b | (1 << bit);
        if f32::from(candidate) <= x {
            b = candidate;
        }
    }
    b
}

/// GGML's Q8_0: blocks of 32, each an F16 scale and 32 signed bytes. Every row here is a
/// multiple of 32 wide.
fn quantize_q8_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / 32 * 34);
    for block in values.chunks_exact(32) {
        let max = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = max / 127.0;
        let inverse = if d > 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16_bits(d).to_le_bytes());
        // Signed bytes, -127 to 127, in two's complement.
        out.extend(
            block
                .iter()
                .map(|v| byte(v * inverse + 128.0).wrapping_sub(128)),
        );
    }
    out
}

/// GGML's Q4_1: blocks of 32, each an F16 scale and minimum and 16 bytes of 4-bit values, the
/// block's first half in the low nibbles.
fn quantize_q4_1(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / 32 * 20);
    for block in values.chunks_exact(32) {
        let min = block.iter().copied().fold(f32::INFINITY, f32::min);
        let max = block.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let d = (max - min) / 15.0;
        let inverse = if d > 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16_bits(d).to_le_bytes());
        out.extend_from_slice(&f16_bits(min).to_le_bytes());
        let q = |v: &f32| byte((v - min) * inverse).min(15);
        let (low, high) = block.split_at(16);
        for (a, b) in low.iter().zip(high) {
            out.push(q(a) | (q(b) << 4));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_and_clamp() {
        assert_eq!(byte(-3.0), 0);
        assert_eq!(byte(14.5), 15);
        assert_eq!(byte(14.4), 14);
        assert_eq!(byte(300.0), 255);
        assert_eq!(byte(-1.0 + 128.0).wrapping_sub(128), 0xff);
    }

    #[test]
    fn halves_round_to_nearest() {
        assert_eq!(f16_bits(1.0), 0x3c00);
        assert_eq!(f16_bits(-2.0), 0xc000);
        assert_eq!(f16_bits(0.5 / 127.0), 0x1c08);
        assert_eq!(f16_bits(65_504.0), 0x7bff);
        assert_eq!(f16_bits(1e6), 0x7c00);
        assert_eq!(f16_bits(0.0), 0);
    }

    #[test]
    fn the_model_is_a_gguf_with_the_expected_tensors() {
        let bytes = model(1);
        let header = gguf::Header::read(&bytes[..], dim(bytes.len())).unwrap();
        assert_eq!(header.tensors, 3 + LAYERS * 9);
        assert_eq!(header.str("tokenizer.chat_template"), Some(CHAT_TEMPLATE));
        assert_eq!(model(1), bytes, "deterministic for a seed");
        assert_ne!(model(2), bytes);
    }
}
