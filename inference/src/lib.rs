//! The model engine and the OpenAI-compatible API the enclave serves.
//!
//! - [`engine`]: a GGUF llama loaded from memory and run as shipped on llama.cpp, its tokenizer and chat
//!   template, and generation with max_tokens, temperature, top_p, seed and stop strings.
//! - [`api`]: the request and response bodies of `POST /v1/chat/completions`, validated, with
//!   OpenAI-style errors.
//! - [`server`]: the HTTP/1.1 API over TLS that terminates in the enclave, with a receipt on
//!   every answer.
//! - [`gguf`]: the GGUF header's scalar metadata, read before llama.cpp maps the file, and the
//!   writer of [`tiny`]'s model.
//! - [`tiny`]: a tiny random-weight model for tests and benchmarks.

#![forbid(unsafe_code)]

pub mod api;
mod deadline;
pub mod engine;
pub mod gguf;
mod sample;
pub mod server;
mod template;
pub mod tiny;
mod tls;

pub use engine::{
    Engine, EngineError, FinishReason, Generation, GreedyStep, LoadReport, Message, ModelFile,
    Role, SamplingParams,
};
pub use server::{Api, Limits, Loaded, ReleaseFacts, StartError};
pub use tls::{TlsError, TlsIdentity};
