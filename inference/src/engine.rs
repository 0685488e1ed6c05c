//! The model engine: a GGUF llama held in memory in its own quantization, its tokenizer and chat
//! template, and generation with the sampling parameters users expect.
//!
//! The weights run on llama.cpp's CPU kernels (the [`llama`] crate) exactly as the GGUF ships
//! them (Q4_0, Q4_1, Q8_0, the K-quants, F16 ...), nothing dequantized at load. The GGUF bytes
//! are copied once into an anonymous memory file that llama.cpp maps, never written to a named
//! file, and the caller's copy is zeroized. The chat template and sampling run here; tokenizing
//! and detokenizing are llama.cpp's (its log is discarded).
//!
//! Every request runs in its own llama.cpp context (KV cache, logits, work buffers), sized to
//! the request and freed when it ends, its KV cache overwritten with zeros first; the weights
//! are shared.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::gguf::Header;
use crate::sample::Sampler;
use crate::template::{ChatTemplate, ControlTexts};
use zeroize::Zeroizing;

/// The longest rendered prompt, in bytes, that is tokenized: 16 bytes for each position of the
/// context, far more than any text needs per token. It bounds the tokenizer's work, which for
/// vocabularies with many user-defined tokens (Gemma's newlines and space runs) grows with the
/// square of the matches in the text.
pub const MAX_PROMPT_BYTES: usize = MAX_CONTEXT * 16;

/// The longest sequence (prompt and completion) the engine runs: the largest context (KV cache)
/// a request gets.
pub const MAX_CONTEXT: usize = 4096;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The bytes are not a GGUF model this engine runs.
    #[error("the model is not a usable GGUF llama: {0}")]
    Model(String),
    /// This CPU cannot run the build of the CPU kernels asked for, or any of them, or another
    /// build already runs in this process.
    #[error("{0}")]
    Cpu(String),
    /// The GGUF carries no usable tokenizer.
    #[error("the model's tokenizer cannot be built: {0}")]
    Tokenizer(String),
    /// The rendered conversation is longer, in bytes, than any that fits the context.
    #[error(
        "the conversation is {bytes} bytes once rendered, more than the {limit} a context of \
         {tokens} tokens can hold"
    )]
    PromptBytes {
        /// The rendered prompt's length.
        bytes: usize,
        /// The limit ([`MAX_PROMPT_BYTES`]).
        limit: usize,
        /// The context, in tokens.
        tokens: usize,
    },
    /// The chat template is missing or broken, or refused the conversation.
    #[error("chat template: {0}")]
    Template(String),
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

/// How loading went, for the cold-start figures.
#[derive(Clone, Debug)]
pub struct LoadReport {
    /// Tensors in the model.
    pub tensors: usize,
    /// Their types as shipped, with how many tensors have each (`q4_1: 211, f32: 61`).
    pub types: Vec<(String, usize)>,
    /// The bytes of the weights.
    pub weights_bytes: u64,
    /// The bytes of one position of a request's KV cache (F16 keys and values, every layer); a
    /// request's context holds its prompt plus `max_tokens`, rounded up to 256 positions.
    pub kv_bytes_per_position: u64,
    /// Threads each request's evaluation uses.
    pub threads: usize,
    /// The build of the CPU kernels that runs (see [`Settings::cpu`]).
    pub cpu: llama::Cpu,
    /// Time spent loading.
    pub elapsed: Duration,
}

/// An anonymous file in memory that a model is written into before loading: no name in any file
/// system (`memfd_create`), sealed against writes once loaded.
pub use llama::MemoryFile as ModelFile;

/// A build of the CPU kernels (AVX2 or AVX-512), chosen with [`Settings::cpu`].
pub use llama::Cpu;

/// The evaluation threads when none are given: the machine's.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// How a model is run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Threads each request's evaluation uses.
    pub threads: usize,
    /// Let llama.cpp repack Q4_0, Q4_K and IQ4_NL tensors into its interleaved layouts, as stock
    /// llama.cpp does: its faster kernels for those types, and its exact answers; but each
    /// repacked tensor is a second copy beside the mapped file. Off by default, so that the
    /// weights take the GGUF's size once, whatever their type.
    pub repack: bool,
    /// A chat template (Jinja, as in Hugging Face's `tokenizer_config.json`) used instead of
    /// the one the GGUF carries (`tokenizer.chat_template`): a model without one needs it, and
    /// a model with neither is refused.
    pub chat_template: Option<String>,
    /// The build of the CPU kernels to run (AVX2 or AVX-512; see [`llama::Cpu`]), or none for
    /// the process's: haswell (AVX2) unless another was asked for. One build runs per process:
    /// asking for another than the first model's is refused, as is one this CPU cannot run.
    pub cpu: Option<llama::Cpu>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            threads: default_threads(),
            repack: false,
            chat_template: None,
            cpu: None,
        }
    }
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

/// A loaded model: weights, tokenizer, chat template, and the tokens that end a turn.
pub struct Engine {
    model: Arc<llama::Model>,
    threads: usize,
    template: ChatTemplate,
    controls: ControlTexts,
    end_of_turn: Vec<u32>,
}

impl core::fmt::Debug for Engine {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Engine")
            .field("end_of_turn", &self.end_of_turn)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Load a GGUF llama from memory, evaluated on as many threads as the machine has. The
    /// bytes are copied into the model's memory file, then zeroized (on failure too).
    pub fn load(gguf: Zeroizing<Vec<u8>>) -> Result<(Self, LoadReport), EngineError> {
        let file = ModelFile::with("model.gguf", &gguf).map_err(model_error)?;
        drop(gguf);
        Self::load_file(file, Settings::default())
    }

    /// Load the GGUF in `file`. The file is sealed against writes and mapped: the weights take
    /// its memory, once (twice for repacked tensors, see [`Settings::repack`]).
    pub fn load_file(
        file: ModelFile,
        settings: Settings,
    ) -> Result<(Self, LoadReport), EngineError> {
        let threads = settings.threads.max(1);
        let started = Instant::now();
        let cpu_error = |e: llama::Error| EngineError::Cpu(e.to_string());
        if let Some(cpu) = settings.cpu {
            llama::use_cpu(cpu).map_err(cpu_error)?;
        }
        let cpu = llama::cpu().map_err(cpu_error)?;
        let reader = std::io::BufReader::new(file.reader().map_err(model_error)?);
        let header = Header::read(reader, file.len()).map_err(model_error)?;
        let template_source = match &settings.chat_template {
            Some(template) => template.clone(),
            None => match header.metadata.get("tokenizer.chat_template") {
                Some(crate::gguf::Value::LongString(len)) => {
                    return Err(EngineError::Template(format!(
                        "the model's chat template is {len} bytes, more than 1 MiB"
                    )));
                }
                Some(value) => value
                    .as_str()
                    .ok_or_else(|| model_error("tokenizer.chat_template is not a string"))?
                    .to_owned(),
                None => {
                    return Err(EngineError::Template(
                        "the model carries no chat template (tokenizer.chat_template) and none \
                         is configured"
                            .into(),
                    ));
                }
            },
        };
        let kv_bytes_per_position = kv_bytes_per_position(&header);
        let special_ids = (
            header.u32("tokenizer.ggml.bos_token_id"),
            header.u32("tokenizer.ggml.eos_token_id"),
        );
        let Header { tensors, types, .. } = header;
        let options = llama::LoadOptions {
            mmap: true,
            repack: settings.repack,
            vocab_only: false,
        };
        let model = llama::Model::load(file, options).map_err(model_error)?;
        let weights_bytes = model.weights_size();
        let vocab = u32::try_from(model.vocab_size()).map_err(model_error)?;
        let end_of_turn: Vec<u32> = (0..vocab)
            .filter(|&id| model.is_end_of_generation(id))
            .collect();
        if end_of_turn.is_empty() {
            return Err(EngineError::Tokenizer(
                "the vocabulary has no token that ends a turn".into(),
            ));
        }
        let mut controls = Vec::new();
        for id in (0..vocab).filter(|&id| model.is_control(id)) {
            controls.push(model.token_text(id).map_err(model_error)?);
        }
        let controls = ControlTexts::new(controls).map_err(EngineError::Tokenizer)?;
        // The BOS and EOS the GGUF names (llama.cpp would make up defaults for the others).
        let text = |id: Option<u32>| {
            id.and_then(|id| model.token_text(id).ok())
                .unwrap_or_default()
        };
        let (bos, eos) = special_ids;
        let template = ChatTemplate::new(template_source, text(bos), text(eos))
            .map_err(EngineError::Template)?;
        Ok((
            Engine {
                model: Arc::new(model),
                threads: threads.max(1),
                template,
                controls,
                end_of_turn,
            },
            LoadReport {
                tensors,
                types,
                weights_bytes,
                kv_bytes_per_position,
                threads: threads.max(1),
                cpu,
                elapsed: started.elapsed(),
            },
        ))
    }

    /// The conversation in the model's chat template, ending where the assistant's answer
    /// begins. A conversation the template refuses (roles out of order, say) is an error.
    pub fn prompt(&self, messages: &[Message]) -> Result<Zeroizing<String>, EngineError> {
        let prompt = self
            .template
            .render(messages)
            .map_err(EngineError::Template)?;
        if prompt.len() > MAX_PROMPT_BYTES {
            return Err(EngineError::PromptBytes {
                bytes: prompt.len(),
                limit: MAX_PROMPT_BYTES,
                tokens: MAX_CONTEXT,
            });
        }
        Ok(prompt)
    }

    /// The prompt's tokens (llama.cpp's tokenizer). The text of a control token becomes that
    /// token, wherever it is: callers must refuse messages that contain one (see
    /// [`contains_control_text`](Self::contains_control_text)), or a message could forge turns.
    pub fn tokenize(&self, prompt: &str) -> Result<Zeroizing<Vec<u32>>, EngineError> {
        self.model
            .tokenize(prompt, true)
            .map(Zeroizing::new)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))
    }

    /// Whether `text` contains a control token's text (such as `<|im_start|>`), with which a
    /// message could forge turns of the conversation.
    pub fn contains_control_text(&self, text: &str) -> bool {
        self.controls.found_in(text)
    }

    /// The conversation's prompt tokens, checked: the turn structure the tokens carry (their
    /// control tokens, and the user-defined tokens the template itself writes) must be the one
    /// the template gives the same conversation with every message empty. So no message, alone
    /// or as the template transforms and joins it, forms a token that marks a turn.
    fn conversation(&self, messages: &[Message]) -> Result<Zeroizing<Vec<u32>>, EngineError> {
        let prompt = self.prompt(messages)?;
        let tokens = self.tokenize(&prompt)?;
        drop(prompt);
        let empty: Vec<Message> = messages
            .iter()
            .map(|m| Message {
                role: m.role,
                content: String::new(),
            })
            .collect();
        let skeleton = self.tokenize(&self.prompt(&empty)?)?;
        let written: Vec<u32> = skeleton
            .iter()
            .copied()
            .filter(|&id| self.model.is_user_defined(id) && !self.is_blank(id))
            .collect();
        let structure = |ids: &[u32]| -> Vec<u32> {
            ids.iter()
                .copied()
                .filter(|id| self.model.is_control(*id) || written.contains(id))
                .collect()
        };
        if structure(&tokens) != structure(&skeleton) {
            return Err(EngineError::Template(
                "a message forms tokens that mark turns of the conversation".into(),
            ));
        }
        Ok(tokens)
    }

    /// Whether token `id`'s text is only whitespace (Gemma's newline tokens are user-defined).
    fn is_blank(&self, id: u32) -> bool {
        self.model
            .token_text(id)
            .is_ok_and(|t| t.chars().all(|c| c.is_whitespace() || c == '\u{2581}'))
    }

    /// Check that `messages` and `params` fit the context; returns the prompt's token count.
    pub fn check(
        &self,
        messages: &[Message],
        params: &SamplingParams,
    ) -> Result<usize, EngineError> {
        let tokens = self.conversation(messages)?;
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
        let tokens = self.conversation(messages)?;
        fits(tokens.len(), params.max_tokens)?;
        let mut context = self.context(tokens.len().saturating_add(params.max_tokens))?;
        let mut sampler = Sampler::new(params.seed, params.temperature, params.top_p);
        let mut output = Output::new(&params.stop);
        let mut generated = Zeroizing::new(Vec::<u32>::with_capacity(params.max_tokens));
        let mut bytes = Zeroizing::new(Vec::<u8>::new());
        let mut first_token = None;
        let mut finish = FinishReason::Length;
        let mut input = Zeroizing::new(tokens.to_vec());
        while generated.len() < params.max_tokens {
            let logits = context.evaluate(&input).map_err(generation_error)?;
            let next = sampler
                .sample(logits)
                .ok_or_else(|| generation_error("the model gave no logit that is a number"))?;
            if self.end_of_turn.contains(&next) {
                finish = FinishReason::Stop;
                break;
            }
            generated.push(next);
            self.model
                .piece(next, &mut bytes)
                .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
            let text = Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned());
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
            input.clear();
            input.push(next);
        }
        drop(input);
        drop(context);
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

    /// A new context for a request of `needed` positions (prompt and completion): its KV cache
    /// and work buffers sized to it (in steps of 256), freed when the request ends. Its KV cache
    /// is overwritten with zeros before it is freed ([`llama::Context`]'s drop).
    fn context(&self, needed: usize) -> Result<llama::Context, EngineError> {
        let positions = needed
            .div_ceil(256)
            .saturating_mul(256)
            .clamp(256, MAX_CONTEXT);
        let positions = u32::try_from(positions).unwrap_or(u32::MAX);
        llama::Context::new(&self.model, positions, self.threads).map_err(generation_error)
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
        let mut context = self.context(prompt.len().saturating_add(count))?;
        let mut steps = Vec::with_capacity(count);
        let mut input: Vec<u32> = prompt.to_vec();
        while steps.len() < count {
            let logits = context.evaluate(&input).map_err(generation_error)?;
            let step = GreedyStep::of(logits, started.elapsed())
                .ok_or_else(|| EngineError::Generation("no logits".into()))?;
            steps.push(step);
            input.clear();
            input.push(step.id);
        }
        drop(context);
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

/// The bytes of one position of a KV cache in F16, from the model's metadata (0 if it lacks the
/// figures).
fn kv_bytes_per_position(header: &Header) -> u64 {
    let number = |key: &str| header.u32(key).map(u64::from);
    let Some(arch) = header.str("general.architecture") else {
        return 0;
    };
    let key = |name: &str| format!("{arch}.{name}");
    let (Some(layers), Some(width), Some(heads)) = (
        number(&key("block_count")),
        number(&key("embedding_length")),
        number(&key("attention.head_count")),
    ) else {
        return 0;
    };
    let kv_heads = number(&key("attention.head_count_kv")).unwrap_or(heads);
    let head = width.checked_div(heads).unwrap_or(0);
    let k = number(&key("attention.key_length")).unwrap_or(head);
    let v = number(&key("attention.value_length")).unwrap_or(head);
    layers
        .saturating_mul(kv_heads)
        .saturating_mul(k.saturating_add(v))
        .saturating_mul(2)
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
