//! `attest policy`: check a policy file and say what it means.

use std::path::{Path, PathBuf};

use anyhow::Context;
use attest::{PolicyFile, TrustStore, format_duration, load_certificates};

use crate::{Verdict, read_small_file};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Check a policy file (TOML) and print what it means, reading every certificate it names.
    #[command(after_help = "Example:\n  attest policy check prod.toml\n\n\
        Exit codes: 0 valid, 2 invalid or unreadable.")]
    Check {
        /// The policy file.
        file: PathBuf,
    },
}

pub(crate) fn run(command: Command) -> anyhow::Result<Verdict> {
    let Command::Check { file } = command;
    let text = String::from_utf8(read_small_file(&file, "policy file")?)
        .context("policy file is not UTF-8")?;
    let parsed = PolicyFile::parse(&text, file.parent().unwrap_or(Path::new(".")))
        .with_context(|| format!("policy file {}", file.display()))?;

    let mut trust = TrustStore::empty();
    println!("policy file {} is valid:", file.display());
    if parsed.aws_root {
        trust.add_aws_root()?;
        println!("  trust       AWS Nitro root G1 (built in)");
    } else {
        println!("  trust       not the AWS root");
    }
    for path in &parsed.roots {
        for cert in load_certificates(&read_small_file(path, "root")?)
            .with_context(|| format!("root {}", path.display()))?
        {
            trust
                .add_root(cert)
                .with_context(|| format!("root {}", path.display()))?;
        }
        println!("  root        {}", path.display());
    }
    for path in &parsed.cross_certificates {
        for cert in load_certificates(&read_small_file(path, "cross-certificate")?)
            .with_context(|| format!("cross-certificate {}", path.display()))?
        {
            trust
                .add_cross_certificate(cert)
                .with_context(|| format!("cross-certificate {}", path.display()))?;
        }
        println!("  cross-cert  {}", path.display());
    }
    if trust.is_empty() {
        anyhow::bail!("the policy trusts no root: it would accept nothing");
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
