//! What every subcommand shares: the verdict a command reaches, logging, and reading and
//! writing files within bounds and atomically.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};

/// What a command concluded, when it ran to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Accepted,
    Refused,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// Logs go to standard error, so that standard output stays the verdict. Logs carry hashes and
/// ids, never document contents.
pub(crate) fn init_logging(format: LogFormat) {
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
pub(crate) fn read_document(source: &str) -> anyhow::Result<(Vec<u8>, attest::Encoding)> {
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
pub(crate) fn read_small_file(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
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
pub(crate) fn write_new_file(path: &Path, contents: &[u8], private: bool) -> anyhow::Result<()> {
    use std::io::Write;
    write_atomically(path, private, false, |file| Ok(file.write_all(contents)?))
}

/// Write `path` through `fill` atomically ([`proofs::durable::write_atomically`]): a crash or a
/// failure leaves the old file or nothing, never part. An existing file is replaced only with
/// `overwrite`.
pub(crate) fn write_atomically<T>(
    path: &Path,
    private: bool,
    overwrite: bool,
    fill: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let replace = proofs::durable::Replace { private, overwrite };
    proofs::durable::write_atomically(path, replace, fill)
        .with_context(|| format!("writing {}", path.display()))
}
