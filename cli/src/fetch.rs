//! `attest fetch`: ask an enclave, through its host, for a fresh attestation document over a
//! nonce. Fetching proves nothing: verify the document with `attest verify --nonce`.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use attest::Nonce;
use data_encoding::HEXLOWER;
use protocol::wire::{Request, RequestBody, Response, ResponseBody, read_frame, write_frame};
use serde_json::json;

use crate::shared::{Verdict, write_new_file};

/// Fetch a fresh attestation document from an enclave through its host's TCP port.
///
/// The request carries a nonce (random unless --nonce is given); the document is written
/// unchanged to --out. Nothing is verified here: run `attest verify --nonce` on the result.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  \
    attest fetch --endpoint 127.0.0.1:8443 --nonce 5eed0123 --out doc.cbor\n  \
    attest verify doc.cbor --no-aws-root --nitro-root nitro-root.pem --nonce 5eed0123\n\n\
    Exit codes: 0 document written, 1 the enclave refused the request, 2 usage, network or \
    I/O error.")]
pub(crate) struct Args {
    /// The host's forwarding address (host:port).
    #[arg(long, value_name = "HOST:PORT")]
    endpoint: String,
    /// The nonce (hex, 1 to 1024 bytes). Default: 32 random bytes.
    #[arg(long, value_name = "HEX")]
    nonce: Option<String>,
    /// Where to write the document (raw CBOR). Must not exist.
    #[arg(long, value_name = "FILE", required_unless_present = "health")]
    out: Option<PathBuf>,
    /// Ask for the enclave's health instead of a document.
    #[arg(long, conflicts_with_all = ["nonce", "out"])]
    health: bool,
    /// Give up after this long (for example 10s).
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    timeout: String,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<Verdict> {
    let timeout = attest::parse_duration(&args.timeout).context("--timeout")?;
    let nonce = match &args.nonce {
        Some(hex) => Nonce::from_hex(hex).context("--nonce")?,
        None => {
            let mut bytes = [0u8; 32];
            aws_lc_rs::rand::fill(&mut bytes).map_err(|_| anyhow::anyhow!("no randomness"))?;
            Nonce::try_from(&bytes[..])?
        }
    };
    let body = if args.health {
        RequestBody::Health
    } else {
        RequestBody::Attestation {
            nonce: nonce.clone(),
        }
    };
    let mut id = [0u8; 8];
    aws_lc_rs::rand::fill(&mut id).map_err(|_| anyhow::anyhow!("no randomness"))?;
    let request = Request {
        id: u64::from_be_bytes(id),
        body,
    };
    let response = exchange(&args.endpoint, &request, timeout)?;
    if response.id != request.id && !matches!(response.body, ResponseBody::Error { .. }) {
        bail!("the response answers another request (id {})", response.id);
    }
    match response.body {
        ResponseBody::Attestation { document } => {
            let out = args.out.context("--out is required")?;
            write_new_file(&out, &document, false)?;
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, &document);
            if args.json {
                println!(
                    "{}",
                    json!({
                        "fetched": true, "out": out.display().to_string(),
                        "nonce": HEXLOWER.encode(nonce.as_bytes()), "bytes": document.len(),
                        "sha384": HEXLOWER.encode(digest.as_ref()),
                    })
                );
            } else {
                println!(
                    "wrote {} ({} bytes, not yet verified)",
                    out.display(),
                    document.len()
                );
                println!("nonce: {}", HEXLOWER.encode(nonce.as_bytes()));
            }
            Ok(Verdict::Accepted)
        }
        ResponseBody::Health(health) if args.health => {
            let digest = HEXLOWER.encode(&health.config_digest);
            let model = health.model.as_ref().map(|m| {
                json!({ "id": m.id, "state": m.state.as_str(),
                        "sha384": m.sha384.map(|d| HEXLOWER.encode(&d)), "detail": m.detail })
            });
            if args.json {
                println!(
                    "{}",
                    json!({ "healthy": true, "version": health.version,
                            "nsm": health.nsm.as_str(), "config_sha384": digest,
                            "model": model })
                );
            } else {
                println!(
                    "serving: enclave {} on the {} NSM, configuration sha384 {digest}",
                    health.version,
                    health.nsm.as_str()
                );
                if let Some(m) = &health.model {
                    println!(
                        "model {}: {}{}",
                        m.id,
                        m.state.as_str(),
                        m.detail
                            .as_deref()
                            .map(|d| format!(" ({d})"))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(Verdict::Accepted)
        }
        ResponseBody::Error { code, message } => {
            if args.json {
                println!(
                    "{}",
                    json!({ "fetched": false, "code": code.as_str(), "message": message })
                );
            } else {
                println!("refused by the enclave: {code}: {message}");
            }
            Ok(Verdict::Refused)
        }
        _ => bail!("the enclave answered with another operation"),
    }
}

fn exchange(endpoint: &str, request: &Request, timeout: Duration) -> anyhow::Result<Response> {
    let address = endpoint
        .to_socket_addrs()
        .with_context(|| format!("resolving {endpoint}"))?
        .next()
        .with_context(|| format!("{endpoint} has no address"))?;
    let mut stream = TcpStream::connect_timeout(&address, timeout)
        .with_context(|| format!("connecting to {endpoint}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write_frame(&mut stream, &request.encode()).context("sending the request")?;
    let body = read_frame(&mut stream).context("reading the response")?;
    Response::decode(&body).context("decoding the response")
}
