//! `attest`: verify and inspect AWS Nitro attestation documents, and manage a development
//! national root of trust.
//!
//! Exit codes: 0 verified (or done), 1 refused (a verdict), 2 usage, configuration or I/O error.

mod chat;
mod fetch;
mod image;
mod inspect;
mod json;
mod log;
mod pkcs11;
mod pki;
mod policy;
mod receipt;
mod trust;
mod verify;

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

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
    /// Log format on standard error: text, or json for log collectors. Levels come from
    /// RUST_LOG (for example RUST_LOG=attest=debug); the default is warn.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
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

/// What a command concluded, when it ran to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Accepted,
    Refused,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging(cli.log_format);
    let result = match cli.command {
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
    };
    match result {
        Ok(Verdict::Accepted) => ExitCode::SUCCESS,
        Ok(Verdict::Refused) => ExitCode::from(1),
        Err(e) => {
            eprintln!("attest: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Logs go to standard error, so that standard output stays the verdict. Logs carry hashes and
/// ids, never document contents.
fn init_logging(format: LogFormat) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| spec.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::WARN));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(LevelFilter::TRACE);
    let result = match format {
        LogFormat::Text => tracing_subscriber::util::SubscriberInitExt::try_init(
            tracing_subscriber::layer::SubscriberExt::with(
                builder
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .finish(),
                filter,
            ),
        ),
        LogFormat::Json => tracing_subscriber::util::SubscriberInitExt::try_init(
            tracing_subscriber::layer::SubscriberExt::with(builder.json().finish(), filter),
        ),
    };
    if let Err(e) = result {
        eprintln!("attest: warning: logging disabled: {e}");
    }
}

/// Read a document from a path, or standard input for `-`, and decode raw CBOR, hex or base64.
fn read_document(source: &str) -> anyhow::Result<(Vec<u8>, attest::Encoding)> {
    let limit = u64::try_from(attest::MAX_ENCODED_LEN).unwrap_or(u64::MAX) + 1;
    let mut input = Vec::new();
    if source == "-" {
        std::io::stdin()
            .take(limit)
            .read_to_end(&mut input)
            .context("reading the document from standard input")?;
    } else {
        std::fs::File::open(source)
            .and_then(|f| f.take(limit).read_to_end(&mut input))
            .with_context(|| format!("reading the document {source}"))?;
    }
    match attest::decode_document(&input) {
        Ok(decoded) => Ok(decoded),
        Err(e) => bail!("{source}: {e}"),
    }
}

/// Read a file of limited size.
fn read_small_file(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    const LIMIT: u64 = 1024 * 1024;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(LIMIT + 1).read_to_end(&mut bytes))
        .with_context(|| format!("reading {what} {}", path.display()))?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > LIMIT {
        bail!("{what} {} is larger than 1 MiB", path.display());
    }
    Ok(bytes)
}

/// Write a file without replacing an existing one, via a temporary file, fsync and rename, so
/// that a crash leaves either nothing or the whole file.
fn write_new_file(path: &Path, contents: &[u8], private: bool) -> anyhow::Result<()> {
    use std::io::Write;
    write_atomically(path, private, false, |file| Ok(file.write_all(contents)?))
}

/// Write `path` through `fill` atomically ([`proofs::durable::write_atomically`]): a crash or a
/// failure leaves the old file or nothing, never part. An existing file is replaced only with
/// `overwrite`.
fn write_atomically<T>(
    path: &Path,
    private: bool,
    overwrite: bool,
    fill: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let replace = proofs::durable::Replace { private, overwrite };
    proofs::durable::write_atomically(path, replace, fill)
        .with_context(|| format!("writing {}", path.display()))
}
