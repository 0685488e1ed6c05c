//! The OpenAI-compatible request and response bodies: parsing and validating
//! `POST /v1/chat/completions`, and the JSON the API answers with, errors included.
//!
//! Parameters OpenAI clients commonly send and that do not change the answer (`user`,
//! `frequency_penalty` 0, …) are accepted and ignored; parameters that would change it and are not
//! supported (`n` above 1, `logprobs`, tools) are refused with an error naming them.

use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use crate::engine::{Message, Role, SamplingParams};

/// The default `max_tokens` when a request gives none.
pub const DEFAULT_MAX_TOKENS: usize = 256;
/// The most stop strings a request may give (OpenAI's limit).
pub const MAX_STOP_STRINGS: usize = 4;
/// The longest stop string, in bytes.
pub const MAX_STOP_LEN: usize = 256;
/// The most messages in one conversation.
pub const MAX_MESSAGES: usize = 256;

/// An OpenAI-style error: HTTP status and the `error` object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// `invalid_request_error`, `not_found_error`, `server_error`, …
    pub kind: &'static str,
    /// What was wrong, for a person.
    pub message: String,
    /// The parameter at fault, if one.
    pub param: Option<&'static str>,
    /// A stable code for scripts.
    pub code: Option<&'static str>,
}

impl ApiError {
    /// A 400 about `param`.
    pub fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            kind: "invalid_request_error",
            message: message.into(),
            param: Some(param),
            code: None,
        }
    }

    /// An error with no parameter at fault.
    pub fn new(
        status: u16,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            param: None,
            code: Some(code),
        }
    }

    /// The body: `{"error": {"message", "type", "param", "code"}}`.
    pub fn body(&self) -> Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

/// A validated chat completion request.
#[derive(Debug)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<Message>,
    /// How to sample.
    pub sampling: SamplingParams,
    /// Whether to answer with server-sent events.
    pub stream: bool,
    /// Whether the final streamed chunk carries `usage` (`stream_options.include_usage`).
    pub include_usage: bool,
}

impl Drop for ChatRequest {
    fn drop(&mut self) {
        for message in &mut self.messages {
            zeroize::Zeroize::zeroize(&mut message.content);
        }
    }
}

/// Parse and validate a request body for the model `model_id`. `random_seed` supplies the seed
/// when the request gives none.
pub fn parse_chat_request(
    body: &[u8],
    model_id: &str,
    random_seed: impl FnOnce() -> u64,
) -> Result<ChatRequest, ApiError> {
    let value: Zeroizing<Vec<u8>> = Zeroizing::new(body.to_vec());
    let parsed: Value = serde_json::from_slice(&value).map_err(|e| {
        ApiError::new(
            400,
            "invalid_request_error",
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(mut fields) = parsed else {
        return Err(ApiError::new(
            400,
            "invalid_request_error",
            "invalid_json",
            "the body must be a JSON object",
        ));
    };
    let result = parse_fields(&mut fields, model_id, random_seed);
    wipe(Value::Object(fields));
    result
}

fn parse_fields(
    fields: &mut Map<String, Value>,
    model_id: &str,
    random_seed: impl FnOnce() -> u64,
) -> Result<ChatRequest, ApiError> {
    match fields.get("model") {
        Some(Value::String(m)) if m == model_id => {}
        Some(Value::String(m)) => {
            return Err(ApiError {
                status: 404,
                kind: "invalid_request_error",
                message: format!(
                    "The model `{m}` does not exist; this enclave serves `{model_id}`"
                ),
                param: Some("model"),
                code: Some("model_not_found"),
            });
        }
        Some(_) => return Err(ApiError::invalid("model", "model must be a string")),
        None => return Err(ApiError::invalid("model", "model is required")),
    }
    let messages = parse_messages(fields.get_mut("messages"))?;
    let max_tokens = match fields
        .get("max_completion_tokens")
        .or_else(|| fields.get("max_tokens"))
    {
        None | Some(Value::Null) => DEFAULT_MAX_TOKENS,
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n >= 1)
            .ok_or_else(|| {
                ApiError::invalid("max_tokens", "max_tokens must be an integer of at least 1")
            })?,
    };
    let temperature = number(fields, "temperature", 1.0)?;
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid(
            "temperature",
            format!("temperature must be between 0 and 2, got {temperature}"),
        ));
    }
    let top_p = number(fields, "top_p", 1.0)?;
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid(
            "top_p",
            format!("top_p must be greater than 0 and at most 1, got {top_p}"),
        ));
    }
    let seed = match fields.get("seed") {
        None | Some(Value::Null) => random_seed(),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_i64().map(i64::cast_unsigned))
            .ok_or_else(|| ApiError::invalid("seed", "seed must be an integer"))?,
    };
    let stop = parse_stop(fields.get("stop"))?;
    let stream = match fields.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid("stream", "stream must be a boolean")),
    };
    let include_usage = fields
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    match fields.get("n") {
        None | Some(Value::Null) => {}
        Some(v) if v.as_u64() == Some(1) => {}
        Some(_) => return Err(ApiError::invalid("n", "only n = 1 is supported")),
    }
    if fields.get("logprobs").and_then(Value::as_bool) == Some(true) {
        return Err(ApiError::invalid("logprobs", "logprobs are not supported"));
    }
    for unsupported in ["tools", "functions", "tool_choice", "function_call"] {
        if fields.get(unsupported).is_some_and(|v| !v.is_null()) {
            return Err(ApiError::invalid(
                static_name(unsupported),
                format!("{unsupported} is not supported by this model"),
            ));
        }
    }
    if let Some(format) = fields.get("response_format")
        && format.get("type").and_then(Value::as_str) != Some("text")
        && !format.is_null()
    {
        return Err(ApiError::invalid(
            "response_format",
            "only response_format {\"type\": \"text\"} is supported",
        ));
    }
    Ok(ChatRequest {
        messages,
        sampling: SamplingParams {
            max_tokens,
            temperature,
            top_p,
            seed,
            stop,
        },
        stream,
        include_usage,
    })
}

fn static_name(name: &str) -> &'static str {
    match name {
        "tools" => "tools",
        "functions" => "functions",
        "tool_choice" => "tool_choice",
        _ => "function_call",
    }
}

fn number(fields: &Map<String, Value>, name: &'static str, default: f64) -> Result<f64, ApiError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| ApiError::invalid(name, format!("{name} must be a number"))),
    }
}

fn parse_stop(value: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let stop: Vec<String> = match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    ApiError::invalid("stop", "stop must be a string or an array of strings")
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ApiError::invalid(
                "stop",
                "stop must be a string or an array of strings",
            ));
        }
    };
    if stop.len() > MAX_STOP_STRINGS {
        return Err(ApiError::invalid(
            "stop",
            format!("at most {MAX_STOP_STRINGS} stop strings are allowed"),
        ));
    }
    if stop.iter().any(|s| s.is_empty() || s.len() > MAX_STOP_LEN) {
        return Err(ApiError::invalid(
            "stop",
            format!("each stop string must be 1 to {MAX_STOP_LEN} bytes"),
        ));
    }
    Ok(stop)
}

fn parse_messages(value: Option<&mut Value>) -> Result<Vec<Message>, ApiError> {
    let Some(Value::Array(items)) = value else {
        return Err(ApiError::invalid(
            "messages",
            "messages must be a non-empty array",
        ));
    };
    if items.is_empty() || items.len() > MAX_MESSAGES {
        return Err(ApiError::invalid(
            "messages",
            format!("messages must hold 1 to {MAX_MESSAGES} messages"),
        ));
    }
    let mut messages = Vec::with_capacity(items.len());
    for item in items.iter_mut() {
        let role = match item.get("role").and_then(Value::as_str) {
            Some("system" | "developer") => Role::System,
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some(other) => {
                return Err(ApiError::invalid(
                    "messages",
                    format!("unsupported role {other:?}: use system, user or assistant"),
                ));
            }
            None => return Err(ApiError::invalid("messages", "every message needs a role")),
        };
        let content = match item.get_mut("content").map(Value::take) {
            Some(Value::String(s)) => s,
            Some(Value::Array(parts)) => {
                let mut text = String::new();
                for part in parts {
                    match (part.get("type").and_then(Value::as_str), part.get("text")) {
                        (Some("text"), Some(Value::String(t))) => text.push_str(t),
                        _ => {
                            wipe(part);
                            zeroize::Zeroize::zeroize(&mut text);
                            return Err(ApiError::invalid(
                                "messages",
                                "only text content parts are supported",
                            ));
                        }
                    }
                    wipe(part);
                }
                text
            }
            _ => {
                return Err(ApiError::invalid(
                    "messages",
                    "every message needs content: a string or text parts",
                ));
            }
        };
        messages.push(Message { role, content });
    }
    Ok(messages)
}

/// Zeroize the strings of a parsed JSON value as it is dropped.
/// Zeroize every string in a JSON value (prompts and answers pass through `serde_json`).
pub(crate) fn wipe(value: Value) {
    match value {
        Value::String(mut s) => zeroize::Zeroize::zeroize(&mut s),
        Value::Array(items) => items.into_iter().for_each(wipe),
        Value::Object(map) => map.into_iter().for_each(|(_, v)| wipe(v)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<ChatRequest, ApiError> {
        parse_chat_request(body.as_bytes(), "m", || 42)
    }

    #[test]
    fn a_full_request_is_read() {
        let r = parse(
            r#"{"model":"m","messages":[{"role":"system","content":"be brief"},
               {"role":"user","content":[{"type":"text","text":"hi "},{"type":"text","text":"there"}]}],
               "max_tokens":5,"temperature":0.5,"top_p":0.9,"seed":7,"stop":["x","y"],"stream":true,
               "stream_options":{"include_usage":true},"user":"ignored","n":1}"#,
        )
        .unwrap();
        assert_eq!(r.messages.len(), 2);
        assert_eq!(r.messages[1].content, "hi there");
        assert_eq!(r.messages[0].role, Role::System);
        assert_eq!(r.sampling.max_tokens, 5);
        assert_eq!(r.sampling.temperature, 0.5);
        assert_eq!(r.sampling.top_p, 0.9);
        assert_eq!(r.sampling.seed, 7);
        assert_eq!(r.sampling.stop, vec!["x", "y"]);
        assert!(r.stream && r.include_usage);
    }

    #[test]
    fn defaults_apply() {
        let r = parse(r#"{"model":"m","messages":[{"role":"user","content":"q"}]}"#).unwrap();
        assert_eq!(r.sampling.max_tokens, DEFAULT_MAX_TOKENS);
        assert_eq!(r.sampling.temperature, 1.0);
        assert_eq!(r.sampling.seed, 42);
        assert!(!r.stream);
    }

    #[test]
    fn bad_parameters_are_named() {
        let cases = [
            (
                r#"{"messages":[{"role":"user","content":"q"}]}"#,
                Some("model"),
                400,
            ),
            (
                r#"{"model":"other","messages":[{"role":"user","content":"q"}]}"#,
                Some("model"),
                404,
            ),
            (r#"{"model":"m","messages":[]}"#, Some("messages"), 400),
            (
                r#"{"model":"m","messages":[{"role":"tool","content":"q"}]}"#,
                Some("messages"),
                400,
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}]}"#,
                Some("messages"),
                400,
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"q"}],"temperature":2.5}"#,
                Some("temperature"),
                400,
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"q"}],"temperature":"hot"}"#,
                Some("temperature"),
                400,
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"q"}],"top_p":0}"#,
                Some("top_p"),
                400,
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"q"}],"max_tokens":0}"#,
                Some("max_tokens"),
                400,
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"q"}],"max_tokens":-3}"#,
                Some("max_tokens"),
                400,
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"q"}],"seed":1.5}"#,
                Some("seed"),
                400,
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"q"}],"stop":["a","b","c","d","e"]}"#,
                Some("stop"),
                400,
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"q"}],"stop":[""]}"#,
                Some("stop"),
                400,
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"q"}],"stop":3}"#,
                Some("stop"),
                400,
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"q"}],"n":2}"#,
                Some("n"),
                400,
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"q"}],"stream":"yes"}"#,
                Some("stream"),
                400,
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"q"}],"tools":[{}]}"#,
                Some("tools"),
                400,
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"q"}],"logprobs":true}"#,
                Some("logprobs"),
                400,
            ),
            (r#"not json"#, None, 400),
            (r#"[1,2]"#, None, 400),
        ];
        for (body, param, status) in cases {
            let error = parse(body).unwrap_err();
            assert_eq!(error.param, param, "{body}: {error:?}");
            assert_eq!(error.status, status, "{body}");
            let json = error.body();
            assert!(json["error"]["message"].as_str().unwrap().len() > 5);
            assert!(json["error"]["type"].is_string());
        }
    }
}
