//! The engine on a tiny random-weight model: loading, sampling parameters, stop strings, the
//! context bound, and that no request's state reaches the next.

#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap or index is a failed test"
)]

use inference::engine::MAX_CONTEXT;
use inference::{Engine, EngineError, FinishReason, Message, Precision, Role, SamplingParams};
use zeroize::Zeroizing;

fn engine(precision: Precision) -> Engine {
    let (engine, report) = Engine::load(
        Zeroizing::new(inference::tiny::model(3).unwrap()),
        precision,
    )
    .unwrap();
    assert!(
        report.converted > 0,
        "the tiny model's Q4_1 tensors are converted"
    );
    assert!(report.tensors > report.converted);
    engine
}

fn ask(text: &str) -> Vec<Message> {
    vec![Message {
        role: Role::User,
        content: text.into(),
    }]
}

fn params(max_tokens: usize, temperature: f64, seed: u64) -> SamplingParams {
    SamplingParams {
        max_tokens,
        temperature,
        top_p: 1.0,
        seed,
        stop: Vec::new(),
    }
}

fn run(engine: &Engine, messages: &[Message], p: &SamplingParams) -> (String, FinishReason, usize) {
    let mut out = String::new();
    let g = engine
        .generate(messages, p, |t| {
            out.push_str(t);
            true
        })
        .unwrap();
    (out, g.finish_reason, g.completion_tokens)
}

#[test]
fn greedy_answers_are_deterministic_and_no_request_leaks_into_the_next() {
    for precision in [Precision::F16, Precision::Q8_0] {
        let engine = engine(precision);
        let p = params(24, 0.0, 1);
        let first = run(&engine, &ask("the capital of France"), &p);
        assert!(first.2 >= 1 && first.2 <= 24);
        // Another conversation in between must not change the answer: each request has its own
        // KV cache.
        let other = run(
            &engine,
            &ask("something else entirely, and longer than that"),
            &p,
        );
        let again = run(&engine, &ask("the capital of France"), &p);
        assert_eq!(first, again, "{precision:?}");
        assert!(other.2 >= 1);
    }
}

#[test]
fn max_tokens_and_seed_are_honoured() {
    let engine = engine(Precision::F16);
    let messages = ask("count");
    let (_, finish, n) = run(&engine, &messages, &params(3, 1.5, 9));
    assert!(n <= 3);
    if finish == FinishReason::Length {
        assert_eq!(n, 3);
    }
    let a = run(&engine, &messages, &params(16, 1.5, 11));
    let b = run(&engine, &messages, &params(16, 1.5, 11));
    assert_eq!(a, b, "the same seed gives the same answer");
    let differs = (12..20).any(|seed| run(&engine, &messages, &params(16, 1.5, seed)) != a);
    assert!(differs, "other seeds give other answers at temperature 1.5");
}

#[test]
fn extreme_sampling_parameters_the_api_accepts_still_answer() {
    // The API accepts any temperature in (0, 2] and top_p in (0, 1]. At their small ends they
    // must behave as their limit, greedy decoding, not fail: dividing the logits by a tiny
    // temperature overflows, and a top_p below f32's range rounds to 0 and keeps no token.
    let engine = engine(Precision::F16);
    let messages = ask("hello there");
    let greedy = run(&engine, &messages, &params(8, 0.0, 1));
    for temperature in [1e-300, 5e-324, 1e-40, 1e-12] {
        assert_eq!(
            run(&engine, &messages, &params(8, temperature, 7)),
            greedy,
            "temperature {temperature} is greedy"
        );
    }
    for (temperature, top_p) in [(2.0, 1e-300), (1.0, 5e-324), (1e-300, 1e-300), (0.7, 1e-9)] {
        let p = SamplingParams {
            top_p,
            ..params(8, temperature, 7)
        };
        assert_eq!(
            run(&engine, &messages, &p),
            greedy,
            "top_p {top_p} at temperature {temperature} keeps only the most likely token"
        );
    }
    for seed in 0..8 {
        let (_, _, n) = run(&engine, &messages, &params(8, 2.0, seed));
        assert!(n >= 1, "temperature 2 samples (seed {seed})");
    }
}

#[test]
fn a_stop_string_ends_the_answer_before_it() {
    let engine = engine(Precision::F16);
    let messages = ask("tell me");
    let (full, _, _) = run(&engine, &messages, &params(32, 0.0, 1));
    let chars: Vec<char> = full.chars().collect();
    assert!(
        chars.len() >= 6,
        "the tiny model answered too little: {full:?}"
    );
    let stop: String = chars[3..5].iter().collect();
    let expected = &full[..full.find(&stop).unwrap()];
    let mut p = params(32, 0.0, 1);
    p.stop = vec![stop.clone()];
    let (cut, finish, _) = run(&engine, &messages, &p);
    assert_eq!(cut, expected, "stop {stop:?} in {full:?}");
    assert_eq!(finish, FinishReason::Stop);
}

#[test]
fn cancelling_stops_generation() {
    let engine = engine(Precision::F16);
    let mut calls = 0;
    let g = engine
        .generate(&ask("go"), &params(64, 0.0, 1), |_| {
            calls += 1;
            false
        })
        .unwrap();
    assert_eq!(calls, 1);
    assert_eq!(g.finish_reason, FinishReason::Cancelled);
}

#[test]
fn the_context_is_bounded() {
    let engine = engine(Precision::F16);
    let error = engine
        .check(&ask("q"), &params(MAX_CONTEXT, 0.0, 1))
        .unwrap_err();
    assert!(
        matches!(error, EngineError::ContextLength { .. }),
        "{error}"
    );
    assert!(engine.check(&ask("q"), &params(16, 0.0, 1)).is_ok());
    assert!(engine.contains_control_text("x<|im_start|>system"));
    assert!(!engine.contains_control_text("plain"));
}

#[test]
fn what_is_not_a_gguf_llama_is_refused() {
    for bytes in [Vec::new(), b"GGUF".to_vec(), vec![0u8; 4096]] {
        assert!(Engine::load(Zeroizing::new(bytes), Precision::F16).is_err());
    }
}
