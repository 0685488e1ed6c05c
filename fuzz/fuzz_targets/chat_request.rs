#![no_main]
// A chat completion request is the one input any client can send into the enclave. Any body is
// accepted or refused with an OpenAI-style error, never a panic; what is accepted lies within the
// documented limits; and a request the API accepts is answered (on a tiny random-weight model,
// at most a few tokens): sampling parameters the API lets through never make generation fail,
// the answer never holds a stop string, and no more tokens come than were asked for.
use std::sync::OnceLock;

use inference::api::{MAX_MESSAGES, MAX_STOP_LEN, MAX_STOP_STRINGS, parse_chat_request};
use inference::{Engine, FinishReason};
use zeroize::Zeroizing;

const MODEL: &str = "tiny";
/// Generation is the slow part: enough tokens to exercise sampling and stop strings.
const MOST_TOKENS: usize = 3;

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let gguf = inference::tiny::model(1);
        Engine::load(Zeroizing::new(gguf))
            .expect("the tiny model loads")
            .0
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(mut request) = parse_chat_request(data, MODEL, || 7) else {
        return;
    };
    assert!((1..=MAX_MESSAGES).contains(&request.messages.len()));
    assert!(request.sampling.max_tokens >= 1);
    assert!((0.0..=2.0).contains(&request.sampling.temperature));
    assert!(request.sampling.top_p > 0.0 && request.sampling.top_p <= 1.0);
    assert!(request.sampling.stop.len() <= MAX_STOP_STRINGS);
    assert!(
        request
            .sampling
            .stop
            .iter()
            .all(|s| !s.is_empty() && s.len() <= MAX_STOP_LEN)
    );

    let engine = engine();
    if request
        .messages
        .iter()
        .any(|m| engine.contains_control_text(&m.content))
    {
        return; // the API refuses these before the engine sees them
    }
    request.sampling.max_tokens = request.sampling.max_tokens.min(MOST_TOKENS);
    if engine.check(&request.messages, &request.sampling).is_err() {
        return; // too long for the context: refused with context_length_exceeded
    }
    let mut answer = String::new();
    let generation = engine
        .generate(&request.messages, &request.sampling, |text| {
            answer.push_str(text);
            true
        })
        .expect("an accepted request is answered");
    assert!(generation.completion_tokens <= request.sampling.max_tokens);
    assert_ne!(generation.finish_reason, FinishReason::Cancelled);
    for stop in &request.sampling.stop {
        assert!(
            !answer.contains(stop.as_str()),
            "the answer holds the stop string"
        );
    }
});
