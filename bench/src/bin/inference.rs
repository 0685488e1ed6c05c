//! Inference: the full path against the engine called directly, on the reference model.
//!
//! - **direct**: `Engine::generate` in process, nothing around it;
//! - **full path**: the verifying client (`client::Session`: attested TLS 1.3, the answer
//!   streamed as server-sent events, its receipt verified) → the host's forwarder exactly as
//!   `host run` starts it → the enclave's API (hyper over rustls, receipts signed) on a
//!   hybrid-vsock Unix socket → the same engine code.
//!
//! Both generate the same greedy answer to the same prompt; the figures are medians of several
//! rounds, direct and full path alternating: time to first token, and decode speed (tokens
//! after the first, per second). Also the model's load time (the GGUF copied into the engine's
//! memory file, parsed, mapped).
//!
//! Then the engine against llama.cpp, the anchor, for each quantization type (the shipped Q4_1,
//! and Q4_0, Q8_0, Q4_K_M, Q5_K_M, Q6_K made from it by llama.cpp's quantizer): llama.cpp's own
//! greedy loop (its C API through the prebuilt libraries `scripts/llama-reference` installs, in
//! the CPU variant llama.cpp picks for this machine; a small harness, `scripts/llama-bench.c`,
//! compiled once) and the engine's, on the same file, the same prompt ids (the chat prompt
//! above, and a 664-token passage), the same number of tokens and threads, rounds alternating:
//! prefill and decode tokens per second, and the ratios. Then each type's peak memory, in a
//! fresh process, beside the GGUF's size plus the KV cache.
//!
//!     bash scripts/fetch-model
//!     cargo run --release --manifest-path bench/Cargo.toml --bin inference
//!     BENCH_THREADS=1 cargo run --release --manifest-path bench/Cargo.toml --bin inference
//!
//! The engine runs its haswell (AVX2) build of the CPU kernels, as the enclave does unless
//! configured otherwise; `BENCH_CPU=auto` runs the best this machine runs (AVX-512 where it
//! has it), as llama.cpp picks its variant, and `skylakex` or `icelake` name one.
//!
//! `BENCH_TYPES=q4_1,qwen2.5` limits the comparison to some types (q4_0, q4_1, q8_0, q4_k_m,
//! q5_k_m, q6_k) and models (qwen2.5 and gemma3, each once `scripts/fetch-model NAME` has
//! fetched it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use attest::sim::{DevelopmentRoots, SimulatedPki, SimulatedRequest};
use attest::{MeasurementSet, PcrIndex, PcrValue, Policy, Region, Timestamp, Verifier};
use client::{ChatRequest, Session, Timeouts, Trust};
use host::{Forward, Shared};
use inference::engine::{Engine, Message, Role, SamplingParams, Settings};
use inference::{Api, Limits, Loaded, ReleaseFacts};
use protocol::nsm::{AttestationRequest, Nsm, NsmError, PcrState};
use protocol::wire::NsmKind;
use tokio::net::TcpListener;
use transport::{Endpoint, HybridVsock, Transport};
use zeroize::Zeroizing;

#[path = "inference/peak.rs"]
mod peak;

const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../models/SmolLM2-135M-Instruct.Q4_1.gguf"
);
const PROMPT: &str = "Write a short paragraph about the history of Paris.";
const MAX_TOKENS: u32 = 128;
const ROUNDS: usize = 5;
/// Tokens each client asks for in the concurrency rounds.
const CONCURRENT_TOKENS: u32 = 32;
const API_PORT: u32 = 8000;

/// The benchmark's enclave signs its documents under a simulated Nitro root; it measures
/// nothing.
struct SimulatedNsm(SimulatedPki);

impl std::fmt::Debug for SimulatedNsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimulatedNsm")
    }
}

const UNUSED: &str = "the benchmark's NSM only signs documents";

impl Nsm for SimulatedNsm {
    fn kind(&self) -> NsmKind {
        NsmKind::Simulated
    }
    fn describe_pcr(&self, _: PcrIndex) -> Result<PcrState, NsmError> {
        Err(NsmError::Failure(UNUSED.into()))
    }
    fn extend_pcr(&self, _: PcrIndex, _: &[u8]) -> Result<PcrValue, NsmError> {
        Err(NsmError::Failure(UNUSED.into()))
    }
    fn lock_pcr(&self, _: PcrIndex) -> Result<(), NsmError> {
        Err(NsmError::Failure(UNUSED.into()))
    }
    fn fill_random(&self, _: &mut [u8]) -> Result<(), NsmError> {
        Err(NsmError::Failure(UNUSED.into()))
    }
    fn attest(&self, request: &AttestationRequest<'_>) -> Result<Vec<u8>, NsmError> {
        let request = SimulatedRequest {
            pcrs: [(PcrIndex::ZERO, bench_image())].into(),
            public_key: request.public_key,
            user_data: request.user_data,
            nonce: request.nonce,
        };
        self.0
            .attest(&request, Timestamp::now())
            .map_err(|e| NsmError::Failure(e.to_string()))
    }
}

/// The PCR0 the benchmark's simulated enclave reports.
fn bench_image() -> PcrValue {
    PcrValue::measure(b"bench image")
}

/// Time to first token and decode rate (tokens after the first, per second).
#[derive(Clone, Copy)]
struct Run {
    ttft: Duration,
    decode_tps: f64,
    tokens: u64,
}

fn run(ttft: Duration, total: Duration, tokens: u64) -> Run {
    let decode = total.saturating_sub(ttft).as_secs_f64();
    Run {
        ttft,
        decode_tps: tokens.saturating_sub(1) as f64 / decode.max(1e-9),
        tokens,
    }
}

fn load(bytes: &[u8]) -> (Engine, Duration) {
    let started = Instant::now();
    let (engine, _) = Engine::load(Zeroizing::new(bytes.to_vec())).unwrap();
    (engine, started.elapsed())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Pins the engine's CPU build when `BENCH_CPU` names one (haswell, skylakex, icelake, or auto
/// for the best this CPU runs); the build that runs (haswell unless asked).
fn engine_cpu() -> llama::Cpu {
    if let Ok(name) = std::env::var("BENCH_CPU") {
        let cpu = match name.as_str() {
            "auto" => llama::Cpu::best().unwrap_or(llama::Cpu::Haswell),
            name => llama::Cpu::from_name(name)
                .unwrap_or_else(|| panic!("BENCH_CPU={name}: haswell, skylakex, icelake or auto")),
        };
        llama::use_cpu(cpu).unwrap();
    }
    llama::cpu().unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cpu = engine_cpu();
    if let [_, flag, path] = args.as_slice()
        && flag == "--peak"
    {
        peak::measure(std::path::Path::new(path));
        return;
    }
    let bytes = std::fs::read(MODEL)
        .unwrap_or_else(|e| panic!("{MODEL}: {e}: run `bash scripts/fetch-model` first"));
    println!(
        "inference benchmark: SmolLM2-135M-Instruct (Q4_1 GGUF, run as shipped), greedy, {MAX_TOKENS} \
         tokens, median of {ROUNDS} alternating rounds"
    );
    println!(
        "machine: {} logical CPUs; the engine runs its {cpu} build of the CPU kernels ({}; \
         BENCH_CPU=auto|skylakex|icelake asks for another)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu.features().join(" ")
    );

    let (engine, load_time) = load(&bytes);
    println!(
        "model load (copy into the memory file, parse, map the weights): {:.2} s",
        load_time.as_secs_f64()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut full_path = rt.block_on(FullPath::start(&bytes));

    let messages = [Message {
        role: Role::User,
        content: PROMPT.to_owned(),
    }];
    let params = SamplingParams {
        max_tokens: MAX_TOKENS as usize,
        temperature: 0.0,
        top_p: 1.0,
        seed: 1,
        stop: Vec::new(),
    };
    // Rounds alternate, so that neither path is favoured by warm caches or by the machine's
    // other load drifting during the run.
    let mut direct = Vec::new();
    let mut full = Vec::new();
    for _ in 0..ROUNDS {
        let mut direct_text = String::new();
        let g = engine
            .generate(&messages, &params, |t| {
                direct_text.push_str(t);
                true
            })
            .unwrap();
        let ttft = g.time_to_first_token.unwrap_or_default();
        direct.push(run(ttft, g.elapsed, g.completion_tokens as u64));

        let (round, full_text) = rt.block_on(full_path.round());
        assert_eq!(
            full_text, direct_text,
            "the two paths must give the same greedy answer"
        );
        full.push(round);
    }

    let report = |name: &str, runs: &[Run]| {
        let ttft = median(runs.iter().map(|r| r.ttft.as_secs_f64() * 1e3).collect());
        let tps = median(runs.iter().map(|r| r.decode_tps).collect());
        println!(
            "{name:<10} time to first token {ttft:>7.1} ms   decode {tps:>6.1} tokens/s   ({} tokens)",
            runs[0].tokens
        );
        (ttft, tps)
    };
    let (d_ttft, d_tps) = report("direct", &direct);
    let (f_ttft, f_tps) = report("full path", &full);
    println!(
        "full path / direct: decode {:.1}%, time to first token {:+.1} ms",
        100.0 * f_tps / d_tps,
        f_ttft - d_ttft
    );

    // Several generations at once, through the full path: the enclave's default API limits
    // (one generation at a time, the others queued for up to 30 s).
    println!();
    println!(
        "concurrent clients through the full path, {CONCURRENT_TOKENS} tokens each, the API's \
         default limits ({} generation(s) at once, the rest queued)",
        Limits::default().max_concurrent
    );
    for clients in [1, 4, 16] {
        let (results, tokens, wall) = rt.block_on(full_path.concurrent(clients, CONCURRENT_TOKENS));
        let mut ttft: Vec<f64> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|d| d.as_secs_f64() * 1e3)
            .collect();
        let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        ttft.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            ttft.get(((ttft.len() as f64 * p).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or(f64::NAN)
        };
        println!(
            "  {clients:>2} clients: {:>6.1} tokens/s in all; time to first token p50 {:>7.0} ms, \
             p99 {:>7.0} ms; {} failed{}",
            tokens as f64 / wall.as_secs_f64(),
            pct(0.50),
            pct(0.99),
            failed.len(),
            failed
                .first()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
    let _ = std::fs::remove_dir_all(&full_path.dir);
    drop(full_path);
    drop(engine);

    against_llama_cpp(&messages);
}

/// The quantization types compared: the shipped Q4_1 and llama.cpp's requantizations of it.
const TYPES: [llama::FileType; 6] = llama::FileType::ALL;

/// The reference model in `kind`: the shipped file, or its requantization by llama.cpp's
/// quantizer (the engine's copy), made once in the benchmark's build directory.
fn model_file(kind: llama::FileType) -> std::path::PathBuf {
    let shipped = std::path::PathBuf::from(MODEL);
    if kind == llama::FileType::Q4_1 {
        return shipped;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/models");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("SmolLM2-135M-Instruct.{}.gguf", kind.as_str()));
    if !path.exists() {
        let partial = path.with_extension("partial");
        llama::quantize(&shipped, &partial, kind, 2).unwrap();
        std::fs::rename(&partial, &path).unwrap();
    }
    path
}

/// The models besides the reference one, when `scripts/fetch-model NAME` has fetched them: the
/// name, the GGUF, and the chat template the enclave is configured with (`None`: the GGUF's own).
fn other_models() -> Vec<(&'static str, std::path::PathBuf, Option<std::path::PathBuf>)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    vec![
        (
            "qwen2.5",
            root.join("models/qwen2.5-coder-0.5b-instruct-Q4_K_M.gguf"),
            None,
        ),
        (
            "gemma3",
            root.join("models/gemma-3-270m-Q4_K_M.gguf"),
            Some(root.join("scripts/templates/gemma-turns.jinja")),
        ),
    ]
}

/// Whether `BENCH_TYPES` (a comma-separated list such as `q4_1,q8_0,gemma3`) names `name`;
/// without it, every type is run.
fn chosen(name: &str) -> bool {
    std::env::var("BENCH_TYPES").map_or(true, |list| list.split(',').any(|t| t.trim() == name))
}

/// The quantization types `BENCH_TYPES` chooses.
fn chosen_types() -> Vec<llama::FileType> {
    TYPES.into_iter().filter(|t| chosen(t.as_str())).collect()
}

/// The evaluation threads: `BENCH_THREADS`, or the machine's.
fn bench_threads() -> usize {
    std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse::<usize>().ok())
        .filter(|&t| t > 0)
        .unwrap_or_else(inference::engine::default_threads)
}

/// The engine's raw greedy loop (`Engine::greedy_continuation`) against llama.cpp's, through
/// its C API (`scripts/llama-reference --bench`): for each quantization type the same file, the
/// same prompt ids, the same number of tokens, the same thread count, rounds alternating in one
/// run. Then each type's peak memory beside the GGUF's size and the KV cache's.
fn against_llama_cpp(messages: &[Message]) {
    let threads = bench_threads();
    println!();
    println!(
        "against llama.cpp (its C API through node-llama-cpp's prebuilt libraries), {threads} thread(s) each (BENCH_THREADS sets \
         it), greedy, median of {ROUNDS} alternating rounds; prefill = prompt to first token"
    );
    println!(
        "  llama.cpp best = the CPU variant llama.cpp picks here (AVX-512 where the CPU has it); \
         llama.cpp avx2 = its haswell variant; engine = its {} build",
        llama::cpu().unwrap()
    );
    println!(
        "  {:<16} {:<9} {:>17} {:>17} {:>17} {:>15} {:>15}",
        "type",
        "prompt",
        "llama.cpp best",
        "llama.cpp avx2",
        "engine",
        "ratio to best",
        "ratio to avx2"
    );
    for kind in chosen_types() {
        let repackable = matches!(kind, llama::FileType::Q4_0 | llama::FileType::Q4KM);
        compare(
            kind.as_str(),
            &model_file(kind),
            None,
            repackable,
            messages,
            threads,
        );
    }
    for (name, path, template) in other_models() {
        if !chosen(name) {
            continue;
        }
        if !path.exists() {
            println!("  ({name}: not fetched; `bash scripts/fetch-model {name}` adds its rows)");
            continue;
        }
        let template = template.map(|t| std::fs::read_to_string(t).unwrap());
        compare(name, &path, template, true, messages, threads);
    }
    peak::report(threads);
}

/// One model file's rows: llama.cpp (its own choice of CPU variant, and AVX2) against the
/// engine (and the engine repacked, where that applies), on the chat prompt and the passage.
fn compare(
    label: &str,
    path: &std::path::Path,
    template: Option<String>,
    repackable: bool,
    messages: &[Message],
    threads: usize,
) {
    let mut best = LlamaCpp::start(threads, path, "best");
    let mut avx2 = LlamaCpp::start(threads, path, "haswell");
    for repack in [false, true] {
        if repack && !repackable {
            continue;
        }
        let bytes = std::fs::read(path).unwrap();
        let file = inference::ModelFile::with("model.gguf", &bytes).unwrap();
        drop(bytes);
        let settings = Settings {
            threads,
            repack,
            chat_template: template.clone(),
            ..Settings::default()
        };
        let (engine, _) = Engine::load_file(file, settings).unwrap();
        let chat = engine
            .tokenize(&engine.prompt(messages).unwrap())
            .unwrap()
            .to_vec();
        let long = engine.tokenize(&long_text()).unwrap().to_vec();
        let label = if repack {
            format!("{label} repacked")
        } else {
            label.to_owned()
        };
        for (name, ids, tokens) in [("chat", chat, MAX_TOKENS as usize), ("long", long, 64)] {
            let (mut ours, mut theirs, mut same_isa) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                let steps = engine.greedy_continuation(&ids, tokens).unwrap();
                let prefill = steps[0].elapsed.as_secs_f64();
                let decode = steps[tokens - 1].elapsed.as_secs_f64() - prefill;
                ours.push((
                    ids.len() as f64 / prefill,
                    (tokens - 1) as f64 / decode.max(1e-9),
                ));
                theirs.push(best.round(&ids, tokens));
                same_isa.push(avx2.round(&ids, tokens));
            }
            let med = |runs: &[(f64, f64)]| {
                (
                    median(runs.iter().map(|r| r.0).collect()),
                    median(runs.iter().map(|r| r.1).collect()),
                )
            };
            let (b, a, e) = (med(&theirs), med(&same_isa), med(&ours));
            let pair = |p: (f64, f64)| format!("{:.0} / {:.0}", p.0, p.1);
            let ratio = |x: (f64, f64)| format!("{:.2}x / {:.2}x", e.0 / x.0, e.1 / x.1);
            println!(
                "  {:<16} {:<9} {:>17} {:>17} {:>17} {:>15} {:>15}",
                label,
                format!("{name} {}", ids.len()),
                pair(b),
                pair(a),
                pair(e),
                ratio(b),
                ratio(a)
            );
        }
    }
}

/// The 664-token passage of the parity prompts, as text (each model tokenizes it its way).
fn long_text() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../inference/tests/data/parity/prompts.json"
    );
    let prompts: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    prompts
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "long_prose")
        .and_then(|p| p["text"].as_str())
        .unwrap()
        .to_owned()
}

/// llama.cpp's greedy loop, in its own process.
struct LlamaCpp {
    child: std::process::Child,
    input: std::process::ChildStdin,
    output: std::io::BufReader<std::process::ChildStdout>,
}

impl LlamaCpp {
    fn start(threads: usize, model: &std::path::Path, cpu: &str) -> LlamaCpp {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/llama-reference");
        let mut child = Command::new("bash")
            .arg(script)
            .args(["--bench", "--threads", &threads.to_string()])
            .arg("--model")
            .arg(model)
            .args(["--cpu", cpu])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{script}: {e}"));
        let input = child.stdin.take().unwrap();
        let mut output = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut ready = String::new();
        output.read_line(&mut ready).unwrap();
        let ready: serde_json::Value = serde_json::from_str(&ready).unwrap_or_else(|e| {
            panic!("scripts/llama-reference --bench did not start ({e}); its messages are above")
        });
        if ready["ready"] != true {
            panic!("scripts/llama-reference --bench did not start: {ready}");
        }
        LlamaCpp {
            child,
            input,
            output,
        }
    }

    /// Prefill and decode tokens per second for one generation.
    fn round(&mut self, ids: &[u32], tokens: usize) -> (f64, f64) {
        use std::io::{BufRead, Write};
        let mut line = tokens.to_string();
        for id in ids {
            line.push(' ');
            line.push_str(&id.to_string());
        }
        line.push('\n');
        self.input.write_all(line.as_bytes()).unwrap();
        self.input.flush().unwrap();
        let mut answer = String::new();
        self.output.read_line(&mut answer).unwrap();
        let answer: serde_json::Value = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("llama.cpp's harness answered {answer:?}: {e}"));
        let prefill = answer["prefill_ms"].as_f64().unwrap() / 1e3;
        let decode = answer["decode_ms"].as_f64().unwrap() / 1e3;
        (
            ids.len() as f64 / prefill,
            (tokens - 1) as f64 / decode.max(1e-9),
        )
    }
}

impl Drop for LlamaCpp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The enclave's API behind the host's forwarder, asked by the verifying client.
struct FullPath {
    session: Session,
    request: ChatRequest,
    address: String,
    trust: Arc<Trust>,
    dir: std::path::PathBuf,
    _stop: tokio::sync::watch::Sender<bool>,
}

impl FullPath {
    async fn start(bytes: &[u8]) -> FullPath {
        let now = Timestamp::now();
        let roots = DevelopmentRoots::new(
            "Bench National Root",
            Timestamp::from_unix_secs(now.unix_secs() - 86_400),
            Timestamp::from_unix_secs(now.unix_secs() + 86_400),
        )
        .unwrap();
        let pki = SimulatedPki::new(
            &roots.nitro.certificate,
            &roots.nitro.private_key_pem,
            Region::try_from("eu-central-1").unwrap(),
            now,
        )
        .unwrap();
        let api =
            Arc::new(Api::new("smollm2", Arc::new(SimulatedNsm(pki)), Limits::default()).unwrap());
        let (engine, _) = load(bytes);
        api.set_model(Loaded {
            engine,
            release: ReleaseFacts {
                model_digest: [0; 48],
                policy_version: 1,
                key_release_index: 0,
                checkpoint: String::new(),
            },
        });

        let dir = std::env::temp_dir().join(format!("inference-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let enclave = HybridVsock::new(dir.join("enclave.sock"));
        let mut listener = enclave.listen(&[API_PORT]).await.unwrap();
        tokio::spawn(async move {
            while let Ok((_, stream)) = listener.accept().await {
                tokio::spawn(api.clone().serve_connection(stream));
            }
        });
        let shared = Arc::new(Shared::default());
        shared.set_enclave(Some(Endpoint::Hybrid(enclave)));
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = tcp.local_addr().unwrap();
        tokio::spawn(host::forward::serve(
            tcp,
            Forward {
                listen: address,
                enclave_port: API_PORT,
                max_connections: 64,
                idle_timeout: Duration::from_secs(60),
            },
            shared,
            stopping,
            Duration::from_secs(1),
        ));

        // The image the simulated attester reports, pinned as a client pins its enclave's.
        let pcr0 = BTreeMap::from([(PcrIndex::ZERO, bench_image())]);
        let trust = Arc::new(
            Trust::new(
                Verifier::new(roots.document_trust().unwrap()),
                Policy::new().allow_measurements(MeasurementSet::try_from(pcr0).unwrap()),
            )
            .unwrap(),
        );
        let session = Session::connect(&address.to_string(), trust.clone(), Timeouts::default())
            .await
            .unwrap();
        let request = ChatRequest {
            messages: vec![("user".into(), PROMPT.into())],
            model: None,
            max_tokens: Some(MAX_TOKENS),
            temperature: Some(0.0),
            seed: Some(1),
            stream: true,
        };
        FullPath {
            session,
            request,
            address: address.to_string(),
            trust,
            dir,
            _stop: stop,
        }
    }

    /// `clients` verifying clients, each on its own attested connection, ask at the same moment
    /// for `max_tokens` tokens (streamed, receipts verified). Returns each one's time to first
    /// token (or its error), the tokens received, and the time until the last answer ended.
    async fn concurrent(
        &self,
        clients: usize,
        max_tokens: u32,
    ) -> (Vec<Result<Duration, String>>, u64, Duration) {
        let barrier = Arc::new(tokio::sync::Barrier::new(clients + 1));
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let mut session =
                Session::connect(&self.address, self.trust.clone(), Timeouts::default())
                    .await
                    .unwrap();
            let mut request = self.request.clone();
            request.max_tokens = Some(max_tokens);
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let started = Instant::now();
                let mut first = None;
                let answer = session
                    .chat(&request, |_| {
                        first.get_or_insert_with(|| started.elapsed());
                    })
                    .await;
                match answer {
                    Ok(answer) => {
                        let tokens = answer
                            .usage
                            .as_ref()
                            .and_then(|u| u.get("completion_tokens"))
                            .and_then(serde_json::Value::as_u64)
                            .unwrap_or_default();
                        (Ok(first.unwrap_or_else(|| started.elapsed())), tokens)
                    }
                    Err(e) => (Err(e.to_string()), 0),
                }
            }));
        }
        barrier.wait().await;
        let started = Instant::now();
        let mut results = Vec::new();
        let mut tokens = 0;
        for task in tasks {
            let (result, n) = task.await.unwrap();
            results.push(result);
            tokens += n;
        }
        (results, tokens, started.elapsed())
    }

    /// One streamed answer, its receipt verified; timed as the client sees it.
    async fn round(&mut self) -> (Run, String) {
        let started = Instant::now();
        let mut first = None;
        let answer = self
            .session
            .chat(&self.request, |_| {
                first.get_or_insert_with(|| started.elapsed());
            })
            .await
            .unwrap();
        let total = started.elapsed();
        let tokens = answer
            .usage
            .as_ref()
            .and_then(|u| u.get("completion_tokens"))
            .and_then(serde_json::Value::as_u64)
            .unwrap();
        (run(first.unwrap_or(total), total, tokens), answer.text)
    }
}
