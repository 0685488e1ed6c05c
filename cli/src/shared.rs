//! What every subcommand shares: the verdict a command reaches, and reading and writing files
//! within bounds and atomically.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};

/// What a command concluded, when it ran to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(crate) enum Verdict {
    Accepted,
    Refused,
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

/// Read a file of at most 1 MiB.
pub(crate) fn read_small_file(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    scaffold::read_bounded(path, 1024 * 1024).with_context(|| format!("reading {what}"))
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
