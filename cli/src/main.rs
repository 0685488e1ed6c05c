//! `attest`: verify and inspect AWS Nitro attestation documents, and manage a development
//! national root of trust.
//!
//! Exit codes: 0 verified (or done), 1 refused (a verdict), 2 usage, configuration or I/O error.

mod audit;
mod chat;
mod enclave_image;
mod fetch;
mod image;
mod inspect;
mod json;
mod log;
mod pkcs11;
mod pki;
mod policy;
mod receipt;
mod shared;
mod tiles;
mod trust;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::shared::Verdict;
use scaffold::logging::{Level, LogArgs};

/// Verify and inspect AWS Nitro Enclaves attestation documents; measure and build enclave
/// images; check transparency-log proofs and inference receipts offline.
#[derive(Debug, Parser)]
#[command(
    name = "attest",
    version,
    after_help = "Exit codes: 0 verified, 1 refused (the document must not be trusted), \
                  2 usage, configuration or I/O error.\n\n\
                  Example:\n  attest verify attest/tests/data/nitro/marlin-20240226-3a4a0301.cbor --at document"
)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Verify(verify::Args),
    Chat(Box<chat::Args>),
    Inspect(inspect::Args),
    Fetch(fetch::Args),
    Measure(image::MeasureArgs),
    /// Build enclave images (EIF) and reproducible ramdisks.
    #[command(subcommand)]
    Image(image::Command),
    /// Create a development national root, cross-certificates and service-key certificates;
    /// mint simulated documents.
    #[command(subcommand)]
    Pki(pki::Command),
    /// Check a policy file; print the policy that pins an enclave image.
    #[command(subcommand)]
    Policy(policy::Command),
    /// Check the transparency log's proofs offline; create a log key.
    #[command(subcommand)]
    Log(log::Command),
    /// Check inference receipts offline.
    #[command(subcommand)]
    Receipt(receipt::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let verdict = |result: anyhow::Result<Verdict>| {
        result.map(|verdict| match verdict {
            Verdict::Accepted => ExitCode::SUCCESS,
            Verdict::Refused => ExitCode::from(1),
        })
    };
    scaffold::main("attest", Level::WARN, cli.log, || {
        verdict(match cli.command {
            Command::Verify(args) => verify::run(args),
            Command::Chat(args) => chat::run(*args),
            Command::Inspect(args) => inspect::run(args),
            Command::Fetch(args) => fetch::run(args),
            Command::Measure(args) => image::measure(args),
            Command::Image(command) => image::run(command),
            Command::Pki(command) => pki::run(command),
            Command::Policy(command) => policy::run(command),
            Command::Log(command) => log::run(command),
            Command::Receipt(command) => receipt::run(command),
        })
    })
}
