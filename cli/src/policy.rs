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
