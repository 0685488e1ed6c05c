//! `attest receipt verify`: check an inference receipt offline.

use std::path::PathBuf;

use anyhow::{Context, bail};
use attest::Verifier;
use aws_lc_rs::digest::{SHA384, digest};
use data_encoding::HEXLOWER;
use proofs::receipt::{ReceiptClaims, ReceiptError, ReceiptPolicy, verify_receipt};
use serde_json::json;

use crate::json;
use crate::log::{LogKeys, checkpoint_json};
use crate::shared::{Verdict, read_document, read_small_file};
use crate::verify::{TrustArgs, configure, print_json};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Verify a receipt: the attestation document verifies under the trust and policy given
    /// (judged at the receipt's time), the receipt is signed by the key that document binds,
    /// and it covers this request, this response, this model and policy version, with a
    /// key-release entry inside a checkpoint signed by a trusted log key.
    #[command(after_help = "Example:\n  \
        attest receipt verify answer.receipt --document enclave.cbor --policy prod.toml \\\n      \
        --request request.json --response response.json --model-digest 3f1a... \\\n      \
        --policy-version 4 --log-key 'gov.example/key-release-log+1a2b3c4d+AbCd...'\n\n\
        The document's age is measured at the receipt's time, so --max-age (or the policy\n\
        file's max_age) must cover how long the enclave signs with one attested key.\n\n\
        Exit codes: 0 verified, 1 refused, 2 usage, configuration or I/O error.")]
    Verify(Box<VerifyArgs>),
}

#[derive(Debug, clap::Args)]
pub(crate) struct VerifyArgs {
    /// The receipt (COSE_Sign1, raw CBOR).
    receipt: PathBuf,
    /// The attestation document that binds the receipt key: a path or -; CBOR, hex or base64.
    #[arg(long, value_name = "FILE")]
    document: String,
    /// The request body, exactly as sent.
    #[arg(long, value_name = "FILE", required_unless_present = "request_sha384")]
    request: Option<PathBuf>,
    /// The request body's SHA-384 (hex), instead of --request.
    #[arg(long, value_name = "HEX", conflicts_with = "request")]
    request_sha384: Option<String>,
    /// The response body, exactly as received.
    #[arg(long, value_name = "FILE", required_unless_present = "response_sha384")]
    response: Option<PathBuf>,
    /// The response body's SHA-384 (hex), instead of --response.
    #[arg(long, value_name = "HEX", conflicts_with = "response")]
    response_sha384: Option<String>,
    /// The SHA-384 (hex) of the model that must have answered.
    #[arg(long, value_name = "HEX")]
    model_digest: String,
    /// The release-policy version the model key must have been released under.
    #[arg(long, value_name = "N")]
    policy_version: Option<u64>,
    #[command(flatten)]
    log_keys: LogKeys,
    /// Do not check the receipt's log checkpoint (when no log key is at hand).
    #[arg(long, conflicts_with_all = ["keys", "certs", "witnesses"])]
    no_log_check: bool,
    #[command(flatten)]
    trust: TrustArgs,
    /// Print the result as JSON (see docs/cli.md for the shape).
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(command: Command) -> anyhow::Result<Verdict> {
    let Command::Verify(args) = command;
    let (trust, attestation) = configure(&args.trust)?;
    let log_keys = if args.no_log_check {
        Vec::new()
    } else if args.log_keys.is_empty() {
        bail!("give the log's key (--log-key, or --log-cert with --log-root), or --no-log-check");
    } else {
        args.log_keys.load()?
    };
    let policy = ReceiptPolicy {
        attestation,
        model_digest: sha384_arg(&args.model_digest, "--model-digest")?,
        policy_version: args.policy_version,
        log_keys,
        log_origin: args.log_keys.origin().map(str::to_owned),
        witnesses: args.log_keys.witness_policy()?,
    };
    let request = body_hash(
        args.request.as_ref(),
        args.request_sha384.as_deref(),
        "request",
    )?;
    let response = body_hash(
        args.response.as_ref(),
        args.response_sha384.as_deref(),
        "response",
    )?;
    let receipt = read_small_file(&args.receipt, "receipt")?;
    let (document, _) = read_document(&args.document)?;
    let verifier = Verifier::new(trust);

    match verify_receipt(&receipt, &document, &verifier, &policy, &request, &response) {
        Ok(verified) => {
            let c = &verified.claims;
            if args.json {
                print_json(&json!({
                    "version": json::SCHEMA_VERSION, "verified": true,
                    "receipt": claims_json(c),
                    "document": json::verified_document(&verified.document),
                    "checkpoint": verified.checkpoint.as_ref().map(checkpoint_json),
                    "log_checked": verified.checkpoint.is_some(),
                }))?;
            } else {
                println!(
                    "verified: receipt {} from {}",
                    c.sequence,
                    verified.document.module_id()
                );
                println!("  signed at   {}", c.time);
                println!("  model       sha384:{}", HEXLOWER.encode(&c.model_digest));
                println!("  policy      version {}", c.policy_version);
                match &verified.checkpoint {
                    Some(cp) => println!(
                        "  key release entry {} in {} (checkpoint size {})",
                        c.key_release_index, cp.checkpoint.origin, cp.checkpoint.size
                    ),
                    None => println!(
                        "  key release entry {} (log NOT checked: --no-log-check)",
                        c.key_release_index
                    ),
                }
            }
            Ok(Verdict::Accepted)
        }
        Err(e) => {
            if args.json {
                print_json(&json!({
                    "version": json::SCHEMA_VERSION, "verified": false,
                    "error": { "kind": receipt_kind(&e), "message": e.to_string() },
                }))?;
            } else {
                println!("refused: {e}");
            }
            Ok(Verdict::Refused)
        }
    }
}

/// What a receipt binds, as `--json` prints it (docs/cli.md).
pub(crate) fn claims_json(c: &ReceiptClaims) -> serde_json::Value {
    json!({
        "time": c.time.to_string(),
        "sequence": c.sequence,
        "request_sha384": HEXLOWER.encode(&c.request_sha384),
        "response_sha384": HEXLOWER.encode(&c.response_sha384),
        "model_digest": HEXLOWER.encode(&c.model_digest),
        "policy_version": c.policy_version,
        "key_release_index": c.key_release_index,
    })
}

/// Stable error kinds for scripts (docs/cli.md).
fn receipt_kind(error: &ReceiptError) -> &'static str {
    match error {
        ReceiptError::Malformed(_) | ReceiptError::Payload(_) | ReceiptError::Version(_) => {
            "malformed_receipt"
        }
        ReceiptError::DocumentMalformed(_) => "malformed_document",
        ReceiptError::Document(_) => "document_refused",
        ReceiptError::NoKey(_) => "no_receipt_key",
        ReceiptError::Signature => "bad_signature",
        ReceiptError::Mismatch { .. } => "mismatch",
        ReceiptError::BeforeDocument { .. } => "before_document",
        ReceiptError::Checkpoint(_) => "checkpoint_refused",
        ReceiptError::IndexOutsideCheckpoint { .. } => "index_outside_checkpoint",
        ReceiptError::Witnesses(_) => "not_witnessed",
        _ => "refused",
    }
}

fn body_hash(path: Option<&PathBuf>, hex: Option<&str>, what: &str) -> anyhow::Result<[u8; 48]> {
    match (path, hex) {
        (Some(path), _) => {
            let body = std::fs::read(path)
                .with_context(|| format!("reading the {what} {}", path.display()))?;
            let hash = digest(&SHA384, &body);
            <[u8; 48]>::try_from(hash.as_ref()).context("SHA-384")
        }
        (None, Some(hex)) => sha384_arg(hex, &format!("--{what}-sha384")),
        (None, None) => bail!("give --{what} or --{what}-sha384"),
    }
}

pub(crate) fn sha384_arg(hex: &str, flag: &str) -> anyhow::Result<[u8; 48]> {
    let bytes = data_encoding::HEXLOWER_PERMISSIVE
        .decode(hex.as_bytes())
        .with_context(|| format!("{flag} is not hex"))?;
    <[u8; 48]>::try_from(bytes.as_slice())
        .map_err(|_| anyhow::anyhow!("{flag} must be 96 hex digits (SHA-384)"))
}
