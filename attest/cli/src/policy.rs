//! `attest policy`: check a policy file and say what it means.

use std::path::{Path, PathBuf};

use anyhow::Context;
use attest::{PolicyFile, format_duration};

use crate::{Verdict, load_trust, read_small_file};

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

    load_trust(parsed.aws_root, &parsed.roots, &parsed.cross_certificates)?;
    println!("policy file {} is valid:", file.display());
    if parsed.aws_root {
        println!("  trust       AWS Nitro root G1 (built in)");
    } else {
        println!("  trust       not the AWS root");
    }
    for path in &parsed.roots {
        println!("  root        {}", path.display());
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
