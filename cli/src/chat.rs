//! `attest chat`: ask the enclave's model a question over a channel the attestation document
//! vouches for, and accept the answer only with a receipt that verifies.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use attest::{Region, Verifier, parse_duration};
use client::{Answer, ChatRequest, ClientError, Session, Timeouts, Trust};
use data_encoding::HEXLOWER;
use serde_json::json;

use crate::json;
use crate::log::{LogKeys, checkpoint_json};
use crate::shared::Verdict;
use crate::verify::{TrustArgs, configure, print_json};

/// Chat with the model in an attested enclave.
///
/// The policy must pin the enclave image (PCR0, or PCR8 with its signing certificate, in every
/// measurement set); otherwise no connection is made.
///
/// On one TLS 1.3 connection: fetch an attestation document over a fresh nonce, verify it
/// (trust anchors, measurements, age, the nonce) and check that it binds the certificate this
/// connection's handshake was signed with. Only then is the prompt sent. The answer is accepted
/// only with a receipt, signed by the key that same document binds, over the exact request and
/// response bytes, naming the model and the key-release entry in the transparency log.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    attest chat --endpoint 127.0.0.1:8000 --no-aws-root --root national-root.pem \\\n      \
    --cross-cert aws-cross.pem --policy prod.toml --log-key log.vkey \\\n      \
    \"Which city is the capital of France?\"\n  \
    echo 'Summarise this.' | attest chat --endpoint enclave.example:443 --policy prod.toml \\\n      \
    --log-key log.vkey --stream --evidence ./audit -\n\n\
    Exit codes: 0 answered and verified; 1 refused (the enclave's document, its binding to the\n\
    connection or the answer's receipt did not verify: when the document is refused, nothing was\n\
    sent; when the receipt is, the answer is not printed, or is retracted when streamed);\n\
    2 usage, configuration, connection or API error.")]
pub(crate) struct Args {
    /// The question: text, or - to read it from standard input.
    prompt: String,
    /// The API endpoint, host:port (the host's forward to the enclave's API port).
    #[arg(long, value_name = "HOST:PORT")]
    endpoint: String,
    #[command(flatten)]
    trust: TrustArgs,
    /// The SHA-384 (hex) of the model that must answer. Without it the receipt's model is
    /// reported, and the pinned measurements decide which model the enclave may run.
    #[arg(long, value_name = "HEX")]
    model_digest: Option<String>,
    /// The release-policy version the model key must have been released under.
    #[arg(long, value_name = "N")]
    policy_version: Option<u64>,
    #[command(flatten)]
    log_keys: LogKeys,
    /// Send the prompt even though the policy pins no enclave image: any genuine enclave under
    /// the trust anchors would receive it. For development only.
    #[arg(long)]
    dangerous_any_image: bool,
    /// Do not check the receipt's log checkpoint (when no log key is at hand).
    #[arg(long, conflicts_with_all = ["keys", "certs", "witnesses"])]
    no_log_check: bool,
    /// A system message before the question.
    #[arg(long, value_name = "TEXT")]
    system: Option<String>,
    /// The model id (default: the first the enclave lists).
    #[arg(long)]
    model: Option<String>,
    /// At most this many tokens in the answer.
    #[arg(long, value_name = "N", default_value_t = 256)]
    max_tokens: u32,
    /// Sampling temperature; 0 is greedy and deterministic.
    #[arg(long, value_name = "T", default_value_t = 0.0)]
    temperature: f64,
    /// Sampling seed.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Print the answer as it is generated. It is verified when it ends; if its receipt is
    /// refused, a refusal follows it and the exit code is 1.
    #[arg(long, conflicts_with = "json")]
    stream: bool,
    /// Write the evidence to this directory for later audit with `attest receipt verify`:
    /// attestation.cbor, request.json, response (the bytes the receipt covers), receipt.cbor.
    #[arg(long, value_name = "DIR")]
    evidence: Option<PathBuf>,
    /// Give up connecting and attesting after this long.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    connect_timeout: String,
    /// Give up on the answer after this long.
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    timeout: String,
    /// Print the result as JSON (see docs/cli.md for the shape).
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<Verdict> {
    let prompt = if args.prompt == "-" {
        let mut text = String::new();
        std::io::stdin()
            .take(1024 * 1024)
            .read_to_string(&mut text)
            .context("reading the prompt from standard input")?;
        text
    } else {
        args.prompt.clone()
    };
    if prompt.trim().is_empty() {
        bail!("the prompt is empty");
    }
    if let Some(dir) = &args.evidence {
        check_evidence_dir(dir)?;
    }
    let (trust_store, policy) = configure(&args.trust)?;
    let log_keys = if args.no_log_check {
        Vec::new()
    } else if args.log_keys.is_empty() {
        bail!("give the log's key (--log-key, or --log-cert with --log-root), or --no-log-check");
    } else {
        args.log_keys.load()?
    };
    let model_digest = args
        .model_digest
        .as_deref()
        .map(|hex| crate::receipt::sha384_arg(hex, "--model-digest"))
        .transpose()?;
    let verifier = Verifier::new(trust_store);
    let mut trust = if args.dangerous_any_image {
        eprintln!(
            "attest: warning: --dangerous-any-image: the prompt goes to any genuine enclave under \
             this trust, whatever image it runs"
        );
        Trust::dangerous_any_image(verifier, policy)
    } else {
        Trust::new(verifier, policy).context(
            "refusing to send a prompt: the policy must pin the enclave image (a --policy file \
             with [[measurements]]; --dangerous-any-image for development only)",
        )?
    };
    if let Some(digest) = model_digest {
        trust = trust.model_digest(digest);
    }
    if let Some(version) = args.policy_version {
        trust = trust.policy_version(version);
    }
    let trust = Arc::new(
        trust
            .log(log_keys, args.log_keys.origin().map(str::to_owned))
            .witnesses(args.log_keys.witness_policy()?),
    );
    let timeouts = Timeouts {
        setup: duration(&args.connect_timeout, "--connect-timeout")?,
        answer: duration(&args.timeout, "--timeout")?,
    };
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(("system".to_owned(), system.clone()));
    }
    messages.push(("user".to_owned(), prompt));
    let request = ChatRequest {
        messages,
        model: args.model.clone(),
        max_tokens: Some(args.max_tokens),
        temperature: Some(args.temperature),
        seed: args.seed,
        stream: args.stream,
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let stream = args.stream;
    let outcome = runtime.block_on(async {
        let mut session = Session::connect(&args.endpoint, trust, timeouts).await?;
        let answer = session
            .chat(&request, |text| {
                if stream {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(text.as_bytes());
                    let _ = out.flush();
                }
            })
            .await?;
        Ok::<_, ClientError>((session, answer))
    });
    match outcome {
        Ok((session, answer)) => {
            if let Some(dir) = &args.evidence {
                write_evidence(dir, &session, &answer)?;
            }
            if args.json {
                print_json(&answer_json(&session, &answer))?;
            } else {
                if stream {
                    println!();
                } else {
                    println!("{}", answer.text);
                }
                print_summary(&session, &answer, args.evidence.as_deref());
            }
            Ok(Verdict::Accepted)
        }
        Err(e) => {
            if stream {
                println!();
            }
            if args.json {
                print_json(&json!({
                    "version": json::SCHEMA_VERSION, "verified": false,
                    "error": { "kind": e.kind(), "message": e.to_string() },
                }))?;
            } else if e.is_refusal() {
                println!("refused: {e}");
                if stream {
                    println!("  the answer printed above is NOT verified and must not be trusted");
                }
            }
            if e.is_refusal() {
                Ok(Verdict::Refused)
            } else {
                Err(e.into())
            }
        }
    }
}

fn duration(text: &str, flag: &str) -> anyhow::Result<Duration> {
    parse_duration(text).with_context(|| flag.to_owned())
}

fn print_summary(session: &Session, answer: &Answer, evidence: Option<&Path>) {
    let doc = &answer.verified.document;
    let claims = &answer.verified.claims;
    eprintln!("verified: answered by enclave {}", doc.module_id());
    eprintln!(
        "  channel     TLS 1.3; certificate sha384:{} bound in the document",
        HEXLOWER.encode(session.certificate_sha384())
    );
    for (index, value) in doc.pcrs() {
        if index.get() <= 2 {
            eprintln!("  {:<11} {value}", index.to_string());
        }
    }
    eprintln!(
        "  region      {}",
        doc.region()
            .map_or("(not named by the chain)", Region::as_str)
    );
    eprintln!("  trust       {}", doc.trust_path().anchor_subject);
    eprintln!(
        "  model       sha384:{}",
        HEXLOWER.encode(&claims.model_digest)
    );
    eprintln!(
        "  receipt     #{} signed at {}, policy version {}",
        claims.sequence, claims.time, claims.policy_version
    );
    match &answer.verified.checkpoint {
        Some(cp) => eprintln!(
            "  key release entry {} in {} (checkpoint size {})",
            claims.key_release_index, cp.checkpoint.origin, cp.checkpoint.size
        ),
        None => eprintln!(
            "  key release entry {} (log NOT checked: --no-log-check)",
            claims.key_release_index
        ),
    }
    if let Some(dir) = evidence {
        eprintln!("  evidence    {}", dir.display());
    }
}

fn answer_json(session: &Session, answer: &Answer) -> serde_json::Value {
    json!({
        "version": json::SCHEMA_VERSION, "verified": true,
        "answer": answer.text,
        "finish_reason": answer.finish_reason,
        "usage": answer.usage,
        "certificate_sha384": HEXLOWER.encode(session.certificate_sha384()),
        "receipt": crate::receipt::claims_json(&answer.verified.claims),
        "document": json::verified_document(&answer.verified.document),
        "checkpoint": answer.verified.checkpoint.as_ref().map(checkpoint_json),
        "log_checked": answer.verified.checkpoint.is_some(),
    })
}

const EVIDENCE_FILES: [&str; 4] = [
    "attestation.cbor",
    "request.json",
    "response",
    "receipt.cbor",
];

/// Refuse, before anything is sent, to mix this answer's evidence with an earlier one's.
fn check_evidence_dir(dir: &Path) -> anyhow::Result<()> {
    for name in EVIDENCE_FILES {
        if dir.join(name).exists() {
            bail!(
                "--evidence {}: {name} exists already; give an empty or new directory",
                dir.display()
            );
        }
    }
    Ok(())
}

/// The evidence, each file written whole or not at all.
fn write_evidence(dir: &Path, session: &Session, answer: &Answer) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let contents = [
        session.document_bytes(),
        answer.request_body.as_slice(),
        answer.response_body.as_slice(),
        answer.receipt.as_slice(),
    ];
    for (name, bytes) in EVIDENCE_FILES.into_iter().zip(contents) {
        crate::shared::write_new_file(&dir.join(name), bytes, false)?;
    }
    Ok(())
}
