//! `attest inspect`: what a document says, without trusting any of it.

use attest::Timestamp;
use data_encoding::HEXLOWER;
use serde_json::{Value, json};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::json;
use crate::shared::{Verdict, read_document};
use crate::verify::print_json;

/// Show a document's fields and certificate chain. NOTHING SHOWN IS VERIFIED: use
/// `attest verify` before acting on any of it.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  attest inspect doc.cbor --json | jq .pcrs\n\n\
    Exit codes: 0 shown, 1 the document is malformed, 2 usage or I/O error."
)]
pub(crate) struct Args {
    /// The document: a path, or - for standard input; raw CBOR, hex or base64.
    doc: String,
    /// Print as JSON (see docs/cli.md for the shape).
    #[arg(long)]
    json: bool,
}

const BANNER: &str =
    "NOT VERIFIED: these are the document's claims; run `attest verify` before trusting them.";

pub(crate) fn run(args: Args) -> anyhow::Result<Verdict> {
    let (bytes, encoding) = read_document(&args.doc)?;
    let parsed = attest::parse(&bytes);
    // An emulated NSM's document is shown too, marked unsigned: its PCRs are what an image
    // booted in the emulator measured.
    let unsigned = match &parsed {
        Err(e @ attest::ParseError::Unsigned { .. }) => attest::parse_unsigned(&bytes)
            .ok()
            .map(|u| (u, e.to_string())),
        _ => None,
    };
    let document = match (&parsed, &unsigned) {
        (Ok(d), _) => Some(d),
        (Err(_), Some(_)) => None,
        (Err(e), None) => {
            if args.json {
                print_json(&json!({
                    "version": json::SCHEMA_VERSION, "verified": false,
                    "error": json::parse_error(e),
                }))?;
            } else {
                println!("malformed document: {e}");
            }
            return Ok(Verdict::Refused);
        }
    };
    let (fields, banner) = match (document, &unsigned) {
        (Some(d), _) => (d.unverified(), BANNER.to_owned()),
        (None, Some((u, why))) => (u.unverified(), format!("UNSIGNED: {why}.")),
        (None, None) => return Ok(Verdict::Refused),
    };
    let sha384 =
        HEXLOWER.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, &bytes).as_ref());
    // An unsigned document's certificates are zero-byte placeholders: no chain to show.
    let placeholders = if unsigned.is_some() { 0 } else { usize::MAX };
    let chain: Vec<Value> = fields
        .cabundle
        .iter()
        .enumerate()
        .map(|(i, der)| certificate(&format!("cabundle[{i}]"), der))
        .chain(std::iter::once(certificate(
            "certificate",
            fields.certificate,
        )))
        .take(placeholders)
        .collect();

    if args.json {
        return print_json(&json!({
            "version": json::SCHEMA_VERSION,
            "verified": false,
            "signed": unsigned.is_none(),
            "warning": banner,
            "encoding": json::encoding(encoding),
            "sha384": sha384,
            "module_id": fields.module_id,
            "timestamp": fields.timestamp.to_string(),
            "timestamp_ms": fields.timestamp.unix_millis(),
            "digest": "SHA384",
            "pcrs": json::pcrs(fields.pcrs),
            "public_key": json::hex_or_null(fields.public_key),
            "user_data": json::hex_or_null(fields.user_data),
            "nonce": json::hex_or_null(fields.nonce),
            "chain": chain,
        }))
        .map(|()| Verdict::Accepted);
    }

    println!("{banner}");
    println!("encoding     {}", json::encoding(encoding));
    println!("sha384       {sha384}");
    println!("module_id    {}", fields.module_id);
    println!(
        "timestamp    {} ({} ms)",
        fields.timestamp,
        fields.timestamp.unix_millis()
    );
    println!("digest       SHA384");
    for (index, value) in fields.pcrs {
        println!("{:<12} {value}", index.to_string());
    }
    for (name, field) in [
        ("public_key", fields.public_key),
        ("user_data", fields.user_data),
        ("nonce", fields.nonce),
    ] {
        match field {
            Some(b) => println!("{name:<12} {} ({} bytes)", HEXLOWER.encode(b), b.len()),
            None => println!("{name:<12} absent"),
        }
    }
    if unsigned.is_some() {
        println!("chain        none (unsigned: the certificate fields are zero bytes)");
    } else {
        println!("chain (root first):");
    }
    for cert in &chain {
        let text = |k: &str| {
            cert.get(k)
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned()
        };
        println!("  {}: {}", text("position"), text("subject"));
        if let Some(error) = cert.get("error").and_then(Value::as_str) {
            println!("      unreadable: {error}");
            continue;
        }
        println!("      issuer   {}", text("issuer"));
        println!(
            "      valid    {} → {}",
            text("not_before"),
            text("not_after")
        );
        if let Some(region) = cert.get("region").and_then(Value::as_str) {
            println!("      region   {region}");
        }
        println!("      sha256   {}", text("sha256"));
    }
    Ok(Verdict::Accepted)
}

fn certificate(position: &str, der: &[u8]) -> Value {
    let sha256 =
        HEXLOWER.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref());
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return json!({ "position": position, "sha256": sha256, "error": "not a DER certificate" });
    };
    let time = |secs: i64| Timestamp::from_unix_secs(u64::try_from(secs).unwrap_or(0)).to_string();
    let region = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .and_then(|cn| cn.strip_suffix(".aws.nitro-enclaves"))
        .and_then(|stem| stem.rsplit('.').next())
        .map(str::to_owned);
    json!({
        "position": position,
        "subject": cert.subject().to_string(),
        "issuer": cert.issuer().to_string(),
        "not_before": time(cert.validity().not_before.timestamp()),
        "not_after": time(cert.validity().not_after.timestamp()),
        "is_ca": cert.is_ca(),
        "region": region,
        "sha256": sha256,
    })
}
