//! `attest verify`: the verdict on one document.

use std::path::{Path, PathBuf};

use anyhow::Context;
use attest::{
    DocumentTrust, Nonce, Policy, PolicyFile, Region, Timestamp, VerifiedDocument, Verifier,
    parse_duration,
};
use data_encoding::HEXLOWER;
use serde_json::json;

use crate::json;
use crate::shared::{Verdict, read_document, read_small_file};
use crate::trust::{DocumentRoots, document_trust};

/// Verify a document: certificate chain, signature, then policy.
///
/// Trust is the built-in AWS Nitro root G1 unless --no-aws-root. A national root (--root)
/// reaches documents only through a cross-certificate it issued for a Nitro root (--cross-cert);
/// a document whose chain ends at the national root any other way is refused. A policy file
/// (--policy) holds the same settings; an option given here replaces the file's value.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    attest verify doc.cbor --at document\n  \
    attest verify doc.b64 --nonce 0badc0de --max-age 2m --policy prod.toml --json\n  \
    attest verify doc.cbor --no-aws-root --root national-root.pem \\\n      \
    --cross-cert aws-cross.pem --at document\n\n\
    Exit codes: 0 verified, 1 refused, 2 usage, configuration or I/O error.")]
pub(crate) struct Args {
    /// The document: a path, or - for standard input; raw CBOR, hex or base64.
    doc: String,
    #[command(flatten)]
    trust: TrustArgs,
    /// Require this nonce (hex).
    #[arg(long, value_name = "HEX")]
    nonce: Option<String>,
    /// Verify at this time (RFC 3339), or `document` for the document's own timestamp. Default: now.
    #[arg(long, value_name = "RFC3339|document")]
    at: Option<String>,
    /// Print the result as JSON (see docs/cli.md for the shape).
    #[arg(long)]
    json: bool,
}

/// Where trust comes from and what a document must satisfy: shared by every command that
/// verifies attestation documents.
#[derive(Debug, clap::Args)]
pub(crate) struct TrustArgs {
    /// Trust this national root (PEM or DER) for the documents its cross-certificates lead to.
    /// Repeatable.
    #[arg(long = "root", value_name = "FILE")]
    roots: Vec<PathBuf>,
    /// A cross-certificate (PEM or DER) a national root issued for a Nitro root, such as the
    /// AWS root. Repeatable.
    #[arg(long = "cross-cert", value_name = "FILE")]
    cross_certs: Vec<PathBuf>,
    /// Trust this root (PEM or DER) as one that issues the Nitro CA hierarchy itself, as AWS's
    /// does: a simulated Nitro PKI in development. Never a national root. Repeatable.
    #[arg(long = "nitro-root", value_name = "FILE")]
    nitro_roots: Vec<PathBuf>,
    /// Do not trust the built-in AWS Nitro root G1.
    #[arg(long)]
    no_aws_root: bool,
    /// Policy file (TOML): roots, cross-certificates, measurements, debug, max age, regions.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Refuse documents older than this at the verification time (for example 90s, 5m, 1h).
    /// Default: 5m.
    #[arg(long, value_name = "DURATION")]
    max_age: Option<String>,
    /// Accept enclaves in debug mode (PCR0 all zeros). Their memory is readable by the host.
    #[arg(long)]
    allow_debug: bool,
    /// Accept only this AWS region (for example eu-central-1). Repeatable.
    #[arg(long = "region", value_name = "REGION")]
    regions: Vec<String>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<Verdict> {
    let (trust, mut policy) = configure(&args.trust)?;
    if let Some(hex) = &args.nonce {
        policy = policy.expect_nonce(Nonce::from_hex(hex).context("--nonce")?);
    }
    let (bytes, encoding) = read_document(&args.doc)?;

    let document = match attest::parse(&bytes) {
        Ok(document) => document,
        Err(e) => {
            if args.json {
                print_json(&json!({
                    "version": json::SCHEMA_VERSION, "verified": false,
                    "encoding": json::encoding(encoding), "error": json::parse_error(&e),
                }))?;
            } else {
                println!("rejected: malformed document: {e}");
            }
            return Ok(Verdict::Refused);
        }
    };
    let at = match args.at.as_deref() {
        None => Timestamp::now(),
        Some("document") => document.timestamp(),
        Some(text) => Timestamp::parse_rfc3339(text).context("--at")?,
    };

    let verifier = Verifier::new(trust);
    match verifier.verify(&document, &policy, at) {
        Ok(verified) => {
            if args.json {
                print_json(&json!({
                    "version": json::SCHEMA_VERSION, "verified": true,
                    "encoding": json::encoding(encoding),
                    "document": json::verified_document(&verified),
                    "region": verified.region().map(Region::as_str),
                    "debug": verified.is_debug(),
                    "trust": {
                        "anchor": verified.trust_path().anchor_subject,
                        "aws_root": verified.trust_path().anchor_is_aws_root,
                        "via_cross_certificate": verified.trust_path().via_cross_certificate,
                    },
                    "verified_at": at.to_string(),
                    "measurements_pinned": !policy.measurements().is_empty(),
                }))?;
            } else {
                print_verified(&verified, &policy);
            }
            Ok(Verdict::Accepted)
        }
        Err(e) => {
            if args.json {
                print_json(&json!({
                    "version": json::SCHEMA_VERSION, "verified": false,
                    "encoding": json::encoding(encoding),
                    "document": json::unverified_summary(document.sha384(), &document.unverified()),
                    "verified_at": at.to_string(),
                    "error": json::verify_error(&e),
                }))?;
            } else {
                println!("rejected: {e}");
            }
            Ok(Verdict::Refused)
        }
    }
}

/// Trust and policy from the policy file, then the command line.
pub(crate) fn configure(args: &TrustArgs) -> anyhow::Result<(DocumentTrust, Policy)> {
    let file = match &args.policy {
        Some(path) => {
            let text = read_small_file(path, "policy file")?;
            let text = String::from_utf8(text).context("policy file is not UTF-8")?;
            let base = path.parent().unwrap_or(Path::new("."));
            Some(
                PolicyFile::parse(&text, base)
                    .with_context(|| format!("policy file {}", path.display()))?,
            )
        }
        None => None,
    };
    let (mut aws_root, mut nitro_roots, mut roots, mut cross_certs, mut policy) = match file {
        Some(f) => (
            f.aws_root,
            f.nitro_roots,
            f.roots,
            f.cross_certificates,
            f.policy,
        ),
        // Without a policy file, `verify` checks that the document is genuine: any image.
        None => (
            true,
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Policy::new().dangerous_any_measurements(),
        ),
    };
    if args.no_aws_root {
        aws_root = false;
    }
    if !args.roots.is_empty() {
        roots.clone_from(&args.roots);
    }
    if !args.cross_certs.is_empty() {
        cross_certs.clone_from(&args.cross_certs);
    }
    if !args.nitro_roots.is_empty() {
        nitro_roots.clone_from(&args.nitro_roots);
    }

    let trust = document_trust(&DocumentRoots {
        aws_root,
        nitro_roots: &nitro_roots,
        national_roots: &roots,
        cross_certificates: &cross_certs,
    })?;

    if let Some(text) = &args.max_age {
        policy = policy.max_age(parse_duration(text).context("--max-age")?);
    }
    if args.allow_debug {
        policy = policy.dangerous_allow_debug();
    }
    if !args.regions.is_empty() {
        let regions = args
            .regions
            .iter()
            .map(|r| Region::try_from(r.as_str()))
            .collect::<Result<Vec<_>, _>>()
            .context("--region")?;
        policy = policy.allow_regions(regions);
    }
    Ok((trust, policy))
}

fn print_verified(doc: &VerifiedDocument, policy: &Policy) {
    let path = doc.trust_path();
    let via = if path.via_cross_certificate {
        " via cross-certificate"
    } else {
        ""
    };
    println!("verified: {}", doc.module_id());
    println!("  document    sha384:{}", HEXLOWER.encode(doc.sha384()));
    println!("  made at     {}", doc.timestamp());
    println!("  checked at  {}", doc.verified_at());
    println!("  trust       {}{via}", path.anchor_subject);
    println!(
        "  region      {}",
        doc.region()
            .map_or("(not named by the chain)", Region::as_str)
    );
    println!(
        "  debug       {}",
        if doc.is_debug() {
            "YES: PCR0 is all zeros (allowed by --allow-debug)"
        } else {
            "no"
        }
    );
    println!(
        "  measurements {}",
        if policy.measurements().is_empty() {
            "not pinned (no policy measurements given)"
        } else {
            "match the policy"
        }
    );
    for (index, value) in doc.pcrs() {
        if *value != attest::PcrValue::ZERO || index.get() <= 2 {
            println!("  {:<11} {value}", index.to_string());
        }
    }
    for (name, field) in [
        ("public_key", doc.public_key()),
        ("user_data", doc.user_data()),
        ("nonce", doc.nonce()),
    ] {
        match field {
            Some(bytes) => println!("  {name:<11} {} bytes", bytes.len()),
            None => println!("  {name:<11} absent"),
        }
    }
}

pub(crate) fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
