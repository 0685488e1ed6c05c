//! `attest policy`: check a policy file and say what it means.

use std::path::{Path, PathBuf};

use anyhow::Context;
use attest::{PolicyFile, format_duration};

use crate::shared::{Verdict, read_small_file};
use crate::trust::{DocumentRoots, document_trust};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Check a policy file (TOML) and print what it means, reading every certificate it names.
    #[command(after_help = "Example:\n  attest policy check prod.toml\n\n\
        Exit codes: 0 valid, 2 invalid or unreadable.")]
    Check {
        /// The policy file.
        file: PathBuf,
    },
    /// Print the policy fragment (a [[measurements]] set) that pins an enclave image: its PCR0,
    /// PCR1, PCR2 and, when signed, PCR8, or only the PCRs given with --pcr. The image is read
    /// and checked as `attest measure` does.
    #[command(after_help = "Examples:\n  \
        attest policy from-image enclave.eif >> release-policy.toml\n  \
        attest policy from-image enclave.eif --pcr 8   # pin only the signer of signed images\n\n\
        Exit codes: 0 printed, 1 the image is malformed or its CRC or signature is wrong, \
        2 usage or I/O error.")]
    FromImage {
        /// The image (EIF).
        image: PathBuf,
        /// Pin only this PCR (0, 1, 2 or 8); repeat for several. Default: all of them.
        #[arg(long = "pcr", value_parser = image_pcr)]
        pcrs: Vec<u8>,
        /// Print JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
    /// Check a release policy's approvals offline: each must be by a named approver whose
    /// certificate a given national root issued for the policy-approver role, over the file's
    /// exact bytes and version. Exit 0 with at least K valid approvals, 1 without (naming who is
    /// missing and why each refused approval was refused), 2 on bad input.
    #[command(after_help = "Example:\n  \
        attest policy verify-approvals release-policy.toml --approvals alice.approval bob.approval \\\n      \
        --root national-root.pem --required 2 --approver alice@gov.example --approver bob@gov.example \\\n      \
        --approver carol@gov.example --json")]
    VerifyApprovals(VerifyApprovals),
}

/// The arguments of `attest policy verify-approvals`.
#[derive(Debug, clap::Args)]
pub(crate) struct VerifyApprovals {
    /// The release policy file (the broker's), exactly as approved.
    file: PathBuf,
    /// The approval files.
    #[arg(long, value_name = "FILE", num_args = 1.., required = true)]
    approvals: Vec<PathBuf>,
    /// A national root that certifies approvers (PEM); repeat for several.
    #[arg(long = "root", value_name = "FILE", required = true)]
    roots: Vec<PathBuf>,
    /// How many approvals are required (k).
    #[arg(long, value_name = "K")]
    required: usize,
    /// An approver's name (as their certificate's CN); repeat for each of the n.
    #[arg(long = "approver", value_name = "NAME", required = true)]
    approvers: Vec<String>,
    /// Check at this time (RFC 3339) instead of now.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn verify_approvals(args: &VerifyApprovals) -> anyhow::Result<Verdict> {
    use attest::approval::{Approval, ApprovalRule, check_approvals};
    let bytes = read_small_file(&args.file, "policy file")?;
    let text = std::str::from_utf8(&bytes).context("policy file is not UTF-8")?;
    let table: toml::Table =
        toml::from_str(text).with_context(|| format!("policy file {}", args.file.display()))?;
    let version = table
        .get("version")
        .and_then(toml::Value::as_integer)
        .and_then(|v| u64::try_from(v).ok())
        .with_context(|| format!("{}: no `version`", args.file.display()))?;
    let rule = ApprovalRule::new(args.required, args.approvers.clone())
        .map_err(|e| anyhow::anyhow!("--required/--approver: {e}"))?;
    let mut trust = attest::ServiceTrust::new();
    for root in &args.roots {
        for cert in attest::load_certificates(&read_small_file(root, "root")?)
            .with_context(|| root.display().to_string())?
        {
            trust
                .add_root(cert)
                .with_context(|| root.display().to_string())?;
        }
    }
    let mut approvals = Vec::new();
    for path in &args.approvals {
        approvals.push(
            Approval::parse(&read_small_file(path, "approval")?)
                .with_context(|| path.display().to_string())?,
        );
    }
    let at = match &args.at {
        Some(t) => attest::Timestamp::parse_rfc3339(t).context("--at")?,
        None => attest::Timestamp::now(),
    };
    let report = check_approvals(&bytes, version, &approvals, &rule, &trust, at);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "policy_version": version,
                "policy_sha384": data_encoding::HEXLOWER.encode(&attest::approval::policy_sha384(&bytes)),
                "required": rule.required,
                "approved_by": report.approved.iter().map(|(n, t)| serde_json::json!({
                    "approver": n, "time": t.to_string(),
                })).collect::<Vec<_>>(),
                "missing": report.missing,
                "refused": report.refused.iter().map(|(i, why)| serde_json::json!({
                    "file": args.approvals.get(*i).map(|p| p.display().to_string()),
                    "reason": why,
                })).collect::<Vec<_>>(),
                "valid": report.is_enough(),
            })
        );
    } else {
        let verdict = if report.is_enough() {
            "approved"
        } else {
            "NOT approved"
        };
        println!(
            "policy {} version {version}: {verdict}: {}",
            args.file.display(),
            report.summary()
        );
    }
    Ok(if report.is_enough() {
        Verdict::Accepted
    } else {
        Verdict::Refused
    })
}

fn image_pcr(text: &str) -> Result<u8, String> {
    match text.trim_start_matches("pcr").parse::<u8>() {
        Ok(index @ (0 | 1 | 2 | 8)) => Ok(index),
        _ => Err("an image measures PCR 0, 1, 2 and (signed) 8".into()),
    }
}

pub(crate) fn run(command: Command) -> anyhow::Result<Verdict> {
    let file = match command {
        Command::Check { file } => file,
        Command::FromImage { image, pcrs, json } => {
            return crate::image::policy_fragment(&image, &pcrs, json);
        }
        Command::VerifyApprovals(args) => return verify_approvals(&args),
    };
    let text = String::from_utf8(read_small_file(&file, "policy file")?)
        .context("policy file is not UTF-8")?;
    let parsed = PolicyFile::parse(&text, file.parent().unwrap_or(Path::new(".")))
        .with_context(|| format!("policy file {}", file.display()))?;

    document_trust(&DocumentRoots {
        aws_root: parsed.aws_root,
        nitro_roots: &parsed.nitro_roots,
        national_roots: &parsed.roots,
        cross_certificates: &parsed.cross_certificates,
    })?;
    println!("policy file {} is valid:", file.display());
    if parsed.aws_root {
        println!("  trust       AWS Nitro root G1 (built in)");
    } else {
        println!("  trust       not the AWS root");
    }
    for path in &parsed.nitro_roots {
        println!(
            "  nitro root  {} (issues the Nitro CA hierarchy itself)",
            path.display()
        );
    }
    for path in &parsed.roots {
        println!(
            "  root        {} (national: through its cross-certificates)",
            path.display()
        );
    }
    for path in &parsed.cross_certificates {
        println!("  cross-cert  {}", path.display());
    }
    let policy = &parsed.policy;
    match policy.measurements() {
        [] => println!("  measurements not pinned: any enclave image is accepted"),
        sets => {
            println!("  measurements one of {} set(s):", sets.len());
            for (i, set) in sets.iter().enumerate() {
                for (index, value) in set.pcrs() {
                    println!("    [{i}] {index} = {value}");
                }
            }
        }
    }
    println!(
        "  debug       {}",
        if policy.allows_debug() {
            "ALLOWED (dangerous)"
        } else {
            "refused"
        }
    );
    println!(
        "  max age     {}",
        policy
            .max_age_limit()
            .map_or("any (dangerous)".to_owned(), format_duration)
    );
    match policy.regions() {
        [] => println!("  regions     any"),
        regions => println!(
            "  regions     {}",
            regions
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
    Ok(Verdict::Accepted)
}
