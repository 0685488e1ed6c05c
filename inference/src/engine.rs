//! The model engine: a GGUF quantized llama held in memory, its tokenizer and chat template, and
//! generation with the sampling parameters users expect.
//!
//! The GGUF bytes are read from memory and never written anywhere. While loading, quantized
//! tensors are converted to the [`Precision`] asked for: by default F16, which represents 4- and
//! 5-bit weights exactly enough and multiplies them with unquantized activations; or Q8_0, whose
//! AVX2 kernels are about twice as fast but quantize every activation to 8 bits, which changes
//! the answers of small models with activation outliers (SmolLM2-135M among them).
//!
//! Every request runs on its own copy of the model's layer state: the weights are shared
//! (reference-counted tensors), the KV cache and attention masks belong to the request and are
//! dropped with it.

use std::collections::HashMap;
use std::io::Cursor;
use std::time::{Duration, Instant};

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{DType, Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::quantized_llama::ModelWeights;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};
use zeroize::Zeroizing;

/// The longest sequence (prompt and completion) the engine runs: candle's rotary table for
/// quantized llama has this many positions.
pub const MAX_CONTEXT: usize = 4096;
/// The system prompt used when a conversation brings none (the reference model's own).
pub const DEFAULT_SYSTEM_PROMPT: &str =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

/// GGUF token types (llama.cpp): control tokens are special, never produced from text.
const TOKEN_TYPE_CONTROL: i32 = 3;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The bytes are not a GGUF model this engine runs.
    #[error("the model is not a usable GGUF llama: {0}")]
    Model(String),
    /// The GGUF carries no usable tokenizer.
    #[error("the model's tokenizer cannot be built: {0}")]
    Tokenizer(String),
    /// The prompt and completion would not fit the context.
    #[error(
        "this request needs {needed} tokens ({prompt} in the prompt), more than the context of \
         {limit}"
    )]
    ContextLength {
        /// Prompt tokens.
        prompt: usize,
        /// Prompt plus the most completion tokens asked for.
        needed: usize,
        /// The limit.
        limit: usize,
    },
    /// The engine failed while generating.
    #[error("generation failed: {0}")]
    Generation(String),
}

fn model_error(e: impl std::fmt::Display) -> EngineError {
    EngineError::Model(e.to_string())
}

fn generation_error(e: impl std::fmt::Display) -> EngineError {
    EngineError::Generation(e.to_string())
}

/// What quantized weights become when the model is loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// Every quantized tensor expanded to F16: products use unquantized activations.
    #[default]
    F16,
    /// Tensors without a SIMD kernel in candle (Q4_1, Q5_0, Q5_1) requantized to Q8_0; the
    /// others kept. Faster, and activations are quantized to 8 bits.
    Q8_0,
}

impl Precision {
    /// The name used in configuration files.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F16 => "f16",
            Precision::Q8_0 => "q8_0",
        }
    }

    fn dtype(self) -> GgmlDType {
        match self {
            Precision::F16 => GgmlDType::F16,
            Precision::Q8_0 => GgmlDType::Q8_0,
        }
    }

    fn converts(self, dtype: GgmlDType) -> bool {
        match self {
            Precision::F16 => !matches!(dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16),
            Precision::Q8_0 => matches!(dtype, GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1),
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f16" => Ok(Precision::F16),
            "q8_0" => Ok(Precision::Q8_0),
            other => Err(format!(
                "unknown precision {other:?}: expected \"f16\" or \"q8_0\""
            )),
        }
    }
}

/// How loading went, for the cold-start figures.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadReport {
    /// Tensors converted to the precision asked for.
    pub converted: usize,
    /// Tensors in the model.
    pub tensors: usize,
    /// Time spent loading.
    pub elapsed: Duration,
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: Role,
    /// The text.
    pub content: String,
}

/// Who said a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Instructions for the assistant.
    System,
    /// The person asking.
    User,
    /// The model's earlier answers.
    Assistant,
}

impl Role {
    /// The role's name in the chat template and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// How to pick each next token.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// The most tokens to generate.
    pub max_tokens: usize,
    /// 0 picks the most likely token every time; higher is more random.
    pub temperature: f64,
    /// Nucleus sampling: only tokens within this much probability mass (1 keeps all).
    pub top_p: f64,
    /// The random generator's seed.
    pub seed: u64,
    /// Generation ends before any of these strings; they are not part of the answer.
    pub stop: Vec<String>,
}

impl SamplingParams {
    /// candle's sampler, for logits that [`scale`](Self::scale) has already divided by the
    /// temperature. `top_p` is kept at least the smallest positive `f32`, because candle compares
    /// in `f32` and a smaller value would round to 0 and leave no token at all; any top_p that
    /// small keeps just the most likely token, as it should.
    fn sampling(&self) -> Sampling {
        if self.temperature <= 0.0 {
            Sampling::ArgMax
        } else if self.top_p < 1.0 {
            Sampling::TopP {
                p: self.top_p.max(f64::from(f32::MIN_POSITIVE)),
                temperature: 1.0,
            }
        } else {
            Sampling::All { temperature: 1.0 }
        }
    }

    /// The logits less the largest, divided by the temperature. Subtracting first keeps a
    /// temperature near zero meaningful: the most likely token gets 0 and every other a large
    /// negative number or -inf (probability 0), where dividing first would overflow to
    /// inf - inf = NaN in the softmax and fail the request.
    fn scale(&self, logits: &Tensor) -> candle_core::Result<Tensor> {
        if self.temperature <= 0.0 {
            return Ok(logits.clone());
        }
        let mut values = logits.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        for value in &mut values {
            *value = (*value - max) / self.temperature;
        }
        Tensor::new(values, logits.device())
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The model ended its turn, or a stop string was reached.
    Stop,
    /// `max_tokens` was reached.
    Length,
    /// The receiver went away (the client disconnected).
    Cancelled,
}

impl FinishReason {
    /// The name OpenAI's API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// What a generation produced, besides the text handed to the callback.
#[derive(Clone, Copy, Debug)]
pub struct Generation {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// From the start of the call to the first token's text (the prompt's processing included).
    pub time_to_first_token: Option<Duration>,
    /// From the start of the call to the end.
    pub elapsed: Duration,
}

/// A loaded model: weights, tokenizer, and the tokens that end a turn.
pub struct Engine {
    weights: ModelWeights,
    tokenizer: Tokenizer,
    end_of_turn: Vec<u32>,
    im_start: String,
    im_end: String,
}

impl core::fmt::Debug for Engine {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Engine")
            .field("end_of_turn", &self.end_of_turn)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Load a GGUF llama from memory. The bytes are consumed and zeroized once the weights are
    /// built (on failure too); the only copies left are the engine's own tensors.
    pub fn load(
        gguf: Zeroizing<Vec<u8>>,
        precision: Precision,
    ) -> Result<(Self, LoadReport), EngineError> {
        let started = Instant::now();
        let device = Device::Cpu;
        let mut reader = Cursor::new(gguf.as_slice());
        let content = gguf_file::Content::read(&mut reader).map_err(model_error)?;
        let tokenizer = build_tokenizer(&content.metadata)?;
        let tensors = content.tensor_infos.len();
        let converted = content
            .tensor_infos
            .values()
            .filter(|t| precision.converts(t.ggml_dtype))
            .count();
        let weights = if converted == 0 {
            ModelWeights::from_gguf(content, &mut reader, &device).map_err(model_error)?
        } else {
            let rebuilt = convert(&content, &mut reader, &device, precision)?;
            let mut reader = Cursor::new(rebuilt.as_slice());
            let content = gguf_file::Content::read(&mut reader).map_err(model_error)?;
            ModelWeights::from_gguf(content, &mut reader, &device).map_err(model_error)?
        };
        drop(gguf);
        let end_of_turn = ["<|im_end|>", "<|endoftext|>", "</s>"]
            .iter()
            .filter_map(|t| tokenizer.token_to_id(t))
            .collect::<Vec<_>>();
        if tokenizer.token_to_id("<|im_start|>").is_none() || end_of_turn.is_empty() {
            return Err(EngineError::Tokenizer(
                "the vocabulary has no ChatML tokens (<|im_start|>, <|im_end|>)".into(),
            ));
        }
        Ok((
            Engine {
                weights,
                tokenizer,
                end_of_turn,
                im_start: "<|im_start|>".into(),
                im_end: "<|im_end|>".into(),
            },
            LoadReport {
                converted,
                tensors,
                elapsed: started.elapsed(),
            },
        ))
    }

    /// The conversation in the model's chat template (ChatML), ending where the assistant's
    /// answer begins. A conversation without a system message gets [`DEFAULT_SYSTEM_PROMPT`].
    pub fn prompt(&self, messages: &[Message]) -> Zeroizing<String> {
        let mut text = Zeroizing::new(String::new());
        if messages.first().is_none_or(|m| m.role != Role::System) {
            self.push_turn(&mut text, Role::System, DEFAULT_SYSTEM_PROMPT);
        }
        for message in messages {
            self.push_turn(&mut text, message.role, &message.content);
        }
        text.push_str(&self.im_start);
        text.push_str("assistant\n");
        text
    }

    fn push_turn(&self, text: &mut String, role: Role, content: &str) {
        text.push_str(&self.im_start);
        text.push_str(role.as_str());
        text.push('\n');
        text.push_str(content);
        text.push_str(&self.im_end);
        text.push('\n');
    }

    /// The prompt's tokens. Special tokens are recognised only where the template put them:
    /// a message that contains `<|im_start|>` is split by the template's markers, but the
    /// tokenizer treats special tokens in its text the same way, so callers must refuse such
    /// messages (see [`contains_control_text`](Self::contains_control_text)).
    pub fn tokenize(&self, prompt: &str) -> Result<Zeroizing<Vec<u32>>, EngineError> {
        let encoding = self
            .tokenizer
            .encode(prompt, false)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        Ok(Zeroizing::new(encoding.get_ids().to_vec()))
    }

    /// Whether `text` contains a control token's text (such as `<|im_start|>`), with which a
    /// message could forge turns of the conversation.
    pub fn contains_control_text(&self, text: &str) -> bool {
        text.contains(&self.im_start) || text.contains(&self.im_end)
    }

    /// Check that `messages` and `params` fit the context; returns the prompt's token count.
    pub fn check(
        &self,
        messages: &[Message],
        params: &SamplingParams,
    ) -> Result<usize, EngineError> {
        let prompt = self.prompt(messages);
        let tokens = self.tokenize(&prompt)?;
        fits(tokens.len(), params.max_tokens)?;
        Ok(tokens.len())
    }

    /// Generate an answer to `messages`. `on_text` receives the answer's text as it is produced
    /// (stop strings held back until they can be ruled out) and returns `false` to cancel.
    pub fn generate(
        &self,
        messages: &[Message],
        params: &SamplingParams,
        mut on_text: impl FnMut(&str) -> bool,
    ) -> Result<Generation, EngineError> {
        let started = Instant::now();
        let prompt = self.prompt(messages);
        let tokens = self.tokenize(&prompt)?;
        drop(prompt);
        fits(tokens.len(), params.max_tokens)?;
        // This request's own layer state: the KV cache it builds dies with it.
        let mut model = self.weights.clone();
        let mut sampler = LogitsProcessor::from_sampling(params.seed, params.sampling());
        let mut output = Output::new(&params.stop);
        let mut generated = Zeroizing::new(Vec::<u32>::with_capacity(params.max_tokens));
        let mut first_token = None;
        let mut finish = FinishReason::Length;
        let mut position = 0usize;
        let mut input = Tensor::new(tokens.as_slice(), &Device::Cpu)
            .and_then(|t| t.unsqueeze(0))
            .map_err(generation_error)?;
        while generated.len() < params.max_tokens {
            let logits = model
                .forward(&input, position)
                .and_then(|l| l.squeeze(0))
                .map_err(generation_error)?;
            position = position.saturating_add(input.dim(1).map_err(generation_error)?);
            let next = params
                .scale(&logits)
                .and_then(|l| sampler.sample(&l))
                .map_err(generation_error)?;
            if self.end_of_turn.contains(&next) {
                finish = FinishReason::Stop;
                break;
            }
            generated.push(next);
            let text = self
                .tokenizer
                .decode(&generated, false)
                .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
            let text = Zeroizing::new(text);
            let (emit, stopped) = output.advance(&text);
            if !emit.is_empty() {
                first_token.get_or_insert_with(|| started.elapsed());
                if !on_text(&emit) {
                    finish = FinishReason::Cancelled;
                    break;
                }
            }
            if stopped {
                finish = FinishReason::Stop;
                break;
            }
            input = Tensor::new(&[next], &Device::Cpu)
                .and_then(|t| t.unsqueeze(0))
                .map_err(generation_error)?;
        }
        if finish != FinishReason::Cancelled {
            let rest = output.finish();
            if !rest.is_empty() {
                first_token.get_or_insert_with(|| started.elapsed());
                if !on_text(&rest) {
                    finish = FinishReason::Cancelled;
                }
            }
        }
        Ok(Generation {
            prompt_tokens: tokens.len(),
            completion_tokens: generated.len(),
            finish_reason: finish,
            time_to_first_token: first_token,
            elapsed: started.elapsed(),
        })
    }

    /// Continue `prompt` (token ids, no template) greedily for exactly `count` tokens, an
    /// end-of-turn token included like any other: the engine's raw output, for comparing it
    /// with another implementation's (`inference/tests/parity.rs`). Each step gives the token
    /// chosen (the highest logit, the lowest id on a tie) and its lead over the second.
    pub fn greedy_continuation(
        &self,
        prompt: &[u32],
        count: usize,
    ) -> Result<Vec<GreedyStep>, EngineError> {
        fits(prompt.len(), count)?;
        let started = Instant::now();
        let mut model = self.weights.clone();
        let mut steps = Vec::with_capacity(count);
        let mut position = 0usize;
        let mut input = Tensor::new(prompt, &Device::Cpu)
            .and_then(|t| t.unsqueeze(0))
            .map_err(generation_error)?;
        while steps.len() < count {
            let logits = model
                .forward(&input, position)
                .and_then(|l| l.squeeze(0))
                .and_then(|l| l.to_dtype(candle_core::DType::F32))
                .and_then(|l| l.to_vec1::<f32>())
                .map_err(generation_error)?;
            position = position.saturating_add(input.dim(1).map_err(generation_error)?);
            let step = GreedyStep::of(&logits, started.elapsed())
                .ok_or_else(|| EngineError::Generation("no logits".into()))?;
            steps.push(step);
            input = Tensor::new(&[step.id], &Device::Cpu)
                .and_then(|t| t.unsqueeze(0))
                .map_err(generation_error)?;
        }
        Ok(steps)
    }
}

/// One step of [`Engine::greedy_continuation`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GreedyStep {
    /// The token chosen: the highest logit, the lowest id on a tie.
    pub id: u32,
    /// Its logit minus the second highest.
    pub margin: f32,
    /// When it was chosen, from the call's start (the first step's is the prompt's
    /// evaluation).
    pub elapsed: Duration,
}

impl GreedyStep {
    fn of(logits: &[f32], elapsed: Duration) -> Option<Self> {
        let mut best: Option<(usize, f32)> = None;
        let mut second = f32::NEG_INFINITY;
        for (i, &v) in logits.iter().enumerate() {
            match best {
                Some((_, b)) if v <= b => second = second.max(v),
                Some((_, b)) => {
                    second = second.max(b);
                    best = Some((i, v));
                }
                None => best = Some((i, v)),
            }
        }
        let (id, top) = best?;
        Some(GreedyStep {
            id: u32::try_from(id).ok()?,
            margin: top - second,
            elapsed,
        })
    }
}

fn fits(prompt: usize, max_tokens: usize) -> Result<(), EngineError> {
    let needed = prompt.saturating_add(max_tokens);
    if needed > MAX_CONTEXT || prompt == 0 {
        return Err(EngineError::ContextLength {
            prompt,
            needed,
            limit: MAX_CONTEXT,
        });
    }
    Ok(())
}

/// The answer's text as generation proceeds: what has been handed out, and what is held back
/// because it may be the start of a stop string or an incomplete UTF-8 sequence.
struct Output<'a> {
    stop: &'a [String],
    /// Bytes of the decoded answer already handed out.
    emitted: usize,
    /// The decoded answer so far, up to a stop string if one was found.
    text: Zeroizing<String>,
}

impl<'a> Output<'a> {
    fn new(stop: &'a [String]) -> Self {
        Output {
            stop,
            emitted: 0,
            text: Zeroizing::new(String::new()),
        }
    }

    /// Take the full decoded answer so far; return the new text that is safe to hand out, and
    /// whether a stop string ended the answer.
    fn advance(&mut self, decoded: &str) -> (Zeroizing<String>, bool) {
        // A replacement character at the end is a UTF-8 sequence split across tokens: wait.
        let complete = decoded.trim_end_matches('\u{FFFD}');
        self.text = Zeroizing::new(complete.to_owned());
        let search_from = self.emitted.saturating_sub(self.longest_stop());
        let found = self
            .stop
            .iter()
            .filter_map(|s| find_from(&self.text, s, search_from))
            .min();
        if let Some(at) = found {
            self.text.truncate(at);
            return (self.take(at), true);
        }
        // Hold back the longest suffix that is a prefix of some stop string.
        let hold = self
            .stop
            .iter()
            .map(|s| overlap(&self.text, s))
            .max()
            .unwrap_or(0);
        let upto = self.text.len().saturating_sub(hold).max(self.emitted);
        (self.take(upto), false)
    }

    fn finish(&mut self) -> Zeroizing<String> {
        let end = self.text.len();
        self.take(end)
    }

    fn take(&mut self, upto: usize) -> Zeroizing<String> {
        let upto = floor_char_boundary(&self.text, upto);
        let piece = self.text.get(self.emitted..upto).unwrap_or_default();
        let piece = Zeroizing::new(piece.to_owned());
        self.emitted = self.emitted.max(upto);
        piece
    }

    fn longest_stop(&self) -> usize {
        self.stop.iter().map(String::len).max().unwrap_or(0)
    }
}

fn find_from(text: &str, needle: &str, from: usize) -> Option<usize> {
    let from = floor_char_boundary(text, from);
    text.get(from..)?
        .find(needle)
        .map(|i| i.saturating_add(from))
}

/// The length of the longest suffix of `text` that is a proper prefix of `stop`.
fn overlap(text: &str, stop: &str) -> usize {
    (1..stop.len())
        .rev()
        .find(|&n| {
            stop.is_char_boundary(n) && stop.get(..n).is_some_and(|prefix| text.ends_with(prefix))
        })
        .unwrap_or(0)
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at = at.saturating_sub(1);
    }
    at
}

/// A GGUF in memory with the same metadata and tensors, converted to `precision`. The buffer is
/// zeroized when dropped.
fn convert(
    content: &gguf_file::Content,
    reader: &mut Cursor<&[u8]>,
    device: &Device,
    precision: Precision,
) -> Result<Zeroizing<Vec<u8>>, EngineError> {
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(content.tensor_infos.len());
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let tensor = content.tensor(reader, name, device).map_err(model_error)?;
        let tensor = if precision.converts(tensor.dtype()) {
            let values = tensor.dequantize(device).map_err(model_error)?;
            QTensor::quantize(&values, precision.dtype()).map_err(model_error)?
        } else {
            tensor
        };
        tensors.push((name.clone(), tensor));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    // Reserved up front, so that no partial copy is left behind by growing the buffer.
    let tensor_bytes: usize = tensors
        .iter()
        .map(|(_, t)| t.storage_size_in_bytes().saturating_add(32))
        .sum();
    let mut buffer = Zeroizing::new(Vec::with_capacity(
        tensor_bytes.saturating_add(reader.get_ref().len() / 2),
    ));
    gguf_file::write(&mut Cursor::new(&mut *buffer), &metadata, &tensor_refs)
        .map_err(model_error)?;
    Ok(buffer)
}

/// The byte-level BPE tokenizer a GGUF carries in its metadata (`tokenizer.ggml.*`, model
/// `gpt2`), with individual digits split first as SmolLM's and Llama 3's pre-tokenizers do, and
/// control tokens as special tokens.
fn build_tokenizer(metadata: &HashMap<String, gguf_file::Value>) -> Result<Tokenizer, EngineError> {
    let get = |key: &str| {
        metadata
            .get(key)
            .ok_or_else(|| EngineError::Tokenizer(format!("{key} is missing")))
    };
    let error = |e: candle_core::Error| EngineError::Tokenizer(e.to_string());
    let model = get("tokenizer.ggml.model")?.to_string().map_err(error)?;
    if model != "gpt2" {
        return Err(EngineError::Tokenizer(format!(
            "tokenizer.ggml.model is {model:?}; only byte-level BPE (\"gpt2\") is supported"
        )));
    }
    let tokens = get("tokenizer.ggml.tokens")?.to_vec().map_err(error)?;
    let merges = get("tokenizer.ggml.merges")?.to_vec().map_err(error)?;
    let types = metadata
        .get("tokenizer.ggml.token_type")
        .map(|v| v.to_vec().map_err(error))
        .transpose()?;
    let mut vocab = Vocab::default();
    let mut special = Vec::new();
    for (id, token) in tokens.iter().enumerate() {
        let token = token.to_string().map_err(error)?;
        let id = u32::try_from(id)
            .map_err(|_| EngineError::Tokenizer("the vocabulary is too large".into()))?;
        vocab.insert(token.clone(), id);
        let kind = types
            .and_then(|t| t.get(usize::try_from(id).unwrap_or(usize::MAX)))
            .and_then(|v| v.to_i32().ok());
        if kind == Some(TOKEN_TYPE_CONTROL) {
            special.push(AddedToken::from(token.clone(), true));
        }
    }
    let merges = merges
        .iter()
        .map(|m| {
            let m = m.to_string().map_err(error)?;
            m.split_once(' ')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .ok_or_else(|| EngineError::Tokenizer(format!("malformed merge {m:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
        Digits::new(true).into(),
        ByteLevel::new(false, true, true).into(),
    ])));
    tokenizer.with_decoder(Some(ByteLevel::new(false, true, true)));
    tokenizer.add_special_tokens(&special);
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stop: &[&str], pieces: &[&str]) -> (String, bool) {
        let stop: Vec<String> = stop.iter().map(|s| (*s).to_owned()).collect();
        let mut output = Output::new(&stop);
        let mut decoded = String::new();
        let mut handed = String::new();
        for piece in pieces {
            decoded.push_str(piece);
            let (emit, stopped) = output.advance(&decoded);
            handed.push_str(&emit);
            if stopped {
                return (handed, true);
            }
        }
        handed.push_str(&output.finish());
        (handed, false)
    }

    #[test]
    fn stop_strings_end_the_answer_and_are_not_part_of_it() {
        assert_eq!(
            run(&["\n\n"], &["Paris", ".", "\n", "\nMore"]),
            ("Paris.".into(), true)
        );
        assert_eq!(run(&["END"], &["a E", "N", "D b"]), ("a ".into(), true));
        // A held-back prefix that turns out not to be a stop string is handed out.
        assert_eq!(run(&["END"], &["a E", "N", "X"]), ("a ENX".into(), false));
        assert_eq!(run(&["END"], &["a EN"]), ("a EN".into(), false));
        // The earliest of several stop strings wins.
        assert_eq!(run(&["b", "a"], &["xab"]), ("x".into(), true));
        assert_eq!(run(&[], &["x", "y"]), ("xy".into(), false));
    }

    #[test]
    fn split_utf8_is_held_until_complete() {
        let stop = Vec::new();
        let mut output = Output::new(&stop);
        let (emit, _) = output.advance("caf\u{FFFD}");
        assert_eq!(emit.as_str(), "caf");
        let (emit, _) = output.advance("café");
        assert_eq!(emit.as_str(), "é");
    }

    #[test]
    fn overlap_is_the_longest_held_prefix() {
        assert_eq!(overlap("abcEN", "END"), 2);
        assert_eq!(overlap("abc", "END"), 0);
        assert_eq!(overlap("abcEND", "END"), 0);
        assert_eq!(overlap("é", "éx"), 2);
    }
}
