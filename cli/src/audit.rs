//! `attest log audit`: a monitor's check of the whole log, from its tiles or its directory.
//!
//! It trusts nothing it is served: every entry is hashed and decoded, the tree is rebuilt from
//! the entries, the hash tiles served must be the ones rebuilt, the checkpoint must carry the
//! log key's signature (and the witnesses' cosignatures required) over the rebuilt root, and a
//! checkpoint saved earlier must be a prefix of the tree (same root at its size).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use proofs::entry::{Entry, LogEntry, Outcome};
use proofs::tiles::{Resource, TILE_WIDTH, Tile, TileHasher, parse_entries, parse_tile};
use proofs::{FileLogReader, Hash, SignedCheckpoint};
use scaffold::http::{HttpUrl, request};
use serde_json::{Value, json};

use crate::json;
use crate::log::{LogKeys, checkpoint_json, cosigned_json};
use crate::shared::{Verdict, read_small_file};
use crate::verify::print_json;

/// The largest tile or bundle fetched: 256 entries of at most 64 KiB, with their prefixes.
const MAX_BUNDLE: usize = 256 * (65_535 + 2);

#[derive(Debug, clap::Args)]
pub(crate) struct AuditArgs {
    /// The log: a tiles URL (`http://host:port[/prefix]`, as `attest log serve` or any
    /// tlog-tiles server gives it) or a log directory (the broker's `<state_dir>/log`).
    source: String,
    #[command(flatten)]
    keys: LogKeys,
    /// A checkpoint saved by an earlier audit: the log must still hold that tree as a prefix.
    #[arg(long, value_name = "FILE")]
    saved: Option<PathBuf>,
    /// Once the audit passes, write the audited checkpoint here (replaced atomically), to give
    /// as --saved next time.
    #[arg(long, value_name = "FILE")]
    save: Option<PathBuf>,
    /// How long each HTTP request may take.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    timeout: String,
    /// Print the result as JSON (see docs/cli.md for the shape).
    #[arg(long)]
    json: bool,
}

/// Where the log is read from.
enum Source {
    Tiles { url: HttpUrl, timeout: Duration },
    Dir(FileLogReader),
}

impl Source {
    /// `resource` from the server; `None` when it answers anything but 200.
    fn get(&self, resource: Resource) -> anyhow::Result<Option<Vec<u8>>> {
        let Self::Tiles { url, timeout } = self else {
            bail!("not a URL");
        };
        let path = resource.path();
        let (status, body) = request("GET", url, &path, &[], *timeout, MAX_BUNDLE)
            .map_err(|e| anyhow::anyhow!("{}: {e}", url.join(&path)))?;
        match status {
            200 => Ok(Some(body)),
            // Anything else for what a signed checkpoint covers is withholding it.
            _ => Ok(None),
        }
    }

    /// A tile or bundle the checkpoint covers: withheld (404) is a refusal.
    fn covered(&self, resource: Resource) -> anyhow::Result<Result<Vec<u8>, Refusal>> {
        Ok(self.get(resource)?.ok_or_else(|| {
            refused(
                "withheld",
                format!(
                    "{} is covered by the signed checkpoint but not served (not HTTP 200)",
                    resource.path()
                ),
            )
        }))
    }
}

/// Why the log was refused: what a monitor reports.
#[derive(Debug)]
struct Refusal {
    kind: &'static str,
    message: String,
}

fn refused(kind: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        kind,
        message: message.into(),
    }
}

/// What the log holds.
#[derive(Debug, Default)]
struct Summary {
    by_kind: BTreeMap<&'static str, u64>,
    released: BTreeMap<String, u64>,
    renewed: BTreeMap<String, u64>,
    denied: BTreeMap<(String, String), u64>,
    summarised_denials: BTreeMap<String, u64>,
    revocations: u64,
    policy_versions: Vec<u64>,
}

impl Summary {
    fn add(&mut self, entry: &Entry) {
        *self.by_kind.entry(entry.kind()).or_default() += 1;
        match entry {
            Entry::KeyRelease(k) | Entry::LeaseRenewal(k) => {
                let granted = if matches!(entry, Entry::KeyRelease(_)) {
                    &mut self.released
                } else {
                    &mut self.renewed
                };
                match k.outcome {
                    Outcome::Released => *granted.entry(k.model_id.clone()).or_default() += 1,
                    Outcome::Denied => {
                        *self
                            .denied
                            .entry((k.model_id.clone(), k.reason.clone()))
                            .or_default() += 1;
                    }
                }
            }
            Entry::DenialSummary(d) => {
                let total = self.summarised_denials.entry(d.reason.clone()).or_default();
                *total = total.saturating_add(d.count);
            }
            Entry::Revocation(_) => self.revocations += 1,
            Entry::PolicyChange(p) => self.policy_versions.push(p.policy_version),
            _ => {}
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "entries_by_kind": self.by_kind,
            "releases_by_model": self.released,
            "renewals_by_model": self.renewed,
            "denials": self.denied.iter().map(|((model, reason), n)| json!({
                "model_id": model, "reason": reason, "count": n,
            })).collect::<Vec<_>>(),
            "summarised_denials_by_reason": self.summarised_denials,
            "revocations": self.revocations,
            "policy_versions": self.policy_versions,
        })
    }

    fn print(&self) {
        let kinds: Vec<String> = self
            .by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        println!("  entries     {}", kinds.join(", "));
        for (model, n) in &self.released {
            let renewed = self.renewed.get(model).copied().unwrap_or(0);
            println!("  released    {model}: {n} (renewed {renewed})");
        }
        for ((model, reason), n) in &self.denied {
            println!("  denied      {model}: {reason} × {n}");
        }
        for (reason, n) in &self.summarised_denials {
            println!("  denied      (summarised, no authentic document): {reason} × {n}");
        }
        if self.revocations > 0 {
            println!("  revocations {}", self.revocations);
        }
        if !self.policy_versions.is_empty() {
            let versions: Vec<String> = self.policy_versions.iter().map(u64::to_string).collect();
            println!("  policies    versions {}", versions.join(", "));
        }
    }
}

/// What an audit that passed established.
struct Audited {
    checkpoint: SignedCheckpoint,
    note: Vec<u8>,
    cosigned: Vec<(String, u64)>,
    saved: Option<u64>,
    tiles_checked: u64,
    summary: Summary,
}

pub(crate) fn run(args: &AuditArgs) -> anyhow::Result<Verdict> {
    let trusted = args.keys.load()?;
    let witnesses = args.keys.witness_policy()?;
    let saved = args
        .saved
        .as_ref()
        .map(|path| {
            let bytes = read_small_file(path, "saved checkpoint")?;
            SignedCheckpoint::open(&bytes, &trusted, args.keys.origin())
                .with_context(|| format!("--saved {}", path.display()))
        })
        .transpose()?;
    let (source, note) = if args.source.contains("://") {
        let url = HttpUrl::parse(&args.source).map_err(anyhow::Error::msg)?;
        let timeout =
            attest::parse_duration(&args.timeout).map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
        let source = Source::Tiles { url, timeout };
        let note = source
            .get(Resource::Checkpoint)?
            .with_context(|| format!("{}: no checkpoint (not HTTP 200)", args.source))?;
        (source, note)
    } else {
        let (reader, note) = FileLogReader::open(Path::new(&args.source))?;
        let note = note.with_context(|| format!("{}: no checkpoint yet", args.source))?;
        (Source::Dir(reader), note)
    };
    let verdict = match audit(&source, &note, &trusted, args, &witnesses, saved.as_ref())? {
        Ok(audited) => {
            if let Some(path) = &args.save {
                write_replacing(path, &audited.note)?;
            }
            report(args, &audited)?;
            Verdict::Accepted
        }
        Err(refusal) => {
            if args.json {
                print_json(&json!({
                    "version": json::SCHEMA_VERSION, "verified": false,
                    "error": { "kind": refusal.kind, "message": refusal.message },
                }))?;
            } else {
                println!("refused: {}", refusal.message);
            }
            Verdict::Refused
        }
    };
    Ok(verdict)
}

fn report(args: &AuditArgs, audited: &Audited) -> anyhow::Result<()> {
    let cp = &audited.checkpoint.checkpoint;
    if args.json {
        print_json(&json!({
            "version": json::SCHEMA_VERSION, "verified": true,
            "source": args.source,
            "checkpoint": checkpoint_json(&audited.checkpoint),
            "cosigned_by": cosigned_json(&audited.cosigned),
            "consistent_with_saved_size": audited.saved,
            "tiles_checked": audited.tiles_checked,
            "summary": audited.summary.to_json(),
        }))?;
    } else {
        println!("audited: {} entries of {}", cp.size, cp.origin);
        println!("  root        {}", cp.root);
        println!("  signed by   {}", audited.checkpoint.signed_by.join(", "));
        crate::log::print_cosigned(&audited.cosigned);
        if let Some(size) = audited.saved {
            println!("  extends     the saved checkpoint of {size} entries");
        }
        if audited.tiles_checked > 0 {
            println!(
                "  tiles       {} hash tiles match the entries",
                audited.tiles_checked
            );
        }
        audited.summary.print();
    }
    Ok(())
}

/// The audit itself: `Err` for an I/O or usage failure, `Ok(Err)` for a log that is refused.
fn audit(
    source: &Source,
    note: &[u8],
    trusted: &[proofs::NoteVerifier],
    args: &AuditArgs,
    witnesses: &proofs::cosignature::WitnessPolicy,
    saved: Option<&SignedCheckpoint>,
) -> anyhow::Result<Result<Audited, Refusal>> {
    let checkpoint = match SignedCheckpoint::open(note, trusted, args.keys.origin()) {
        Ok(cp) => cp,
        Err(e) => return Ok(Err(refused("bad_checkpoint", e.to_string()))),
    };
    let cosigned = match witnesses.check(&checkpoint.note) {
        Ok(found) => found,
        Err(e) => return Ok(Err(refused("not_witnessed", e.to_string()))),
    };
    let size = checkpoint.checkpoint.size;
    if let Some(saved) = saved {
        if saved.checkpoint.origin != checkpoint.checkpoint.origin {
            return Ok(Err(refused(
                "wrong_log",
                format!(
                    "the saved checkpoint is of {:?}, the log is {:?}",
                    saved.checkpoint.origin, checkpoint.checkpoint.origin
                ),
            )));
        }
        if saved.checkpoint.size > size {
            return Ok(Err(refused(
                "inconsistent",
                format!(
                    "the log shrank: the saved checkpoint has {} entries, the log now {size} \
                     (a rollback, or a fork shown to this monitor)",
                    saved.checkpoint.size
                ),
            )));
        }
    }
    let mut hasher = TileHasher::new();
    let mut summary = Summary::default();
    let mut saved_root = (saved.map(|s| s.checkpoint.size) == Some(0)).then(Hash::empty);
    let mut tiles_checked = 0u64;
    let bundles = size.div_ceil(TILE_WIDTH);
    for bundle in 0..bundles {
        let width = u16::try_from((size - bundle * TILE_WIDTH).min(TILE_WIDTH)).unwrap_or(256);
        let entries: Vec<Vec<u8>> = match source {
            Source::Tiles { .. } => {
                let bytes = match source.covered(Resource::Entries {
                    index: bundle,
                    width,
                })? {
                    Ok(bytes) => bytes,
                    Err(refusal) => return Ok(Err(refusal)),
                };
                match parse_entries(&bytes, width) {
                    Some(entries) => entries.into_iter().map(<[u8]>::to_vec).collect(),
                    None => {
                        return Ok(Err(refused(
                            "malformed_bundle",
                            format!("entry bundle {bundle} does not hold {width} entries"),
                        )));
                    }
                }
            }
            Source::Dir(reader) => match reader.entries(bundle * TILE_WIDTH, u64::from(width)) {
                Ok(entries) => entries,
                Err(e) => return Ok(Err(refused("damaged_entry", e.to_string()))),
            },
        };
        for (index, bytes) in (bundle * TILE_WIDTH..).zip(&entries) {
            match LogEntry::decode(bytes) {
                Ok(entry) => summary.add(entry.entry()),
                Err(e) => {
                    return Ok(Err(refused(
                        "undecodable_entry",
                        format!("entry {index} is not a valid entry: {e}"),
                    )));
                }
            }
            let full = hasher.push(Hash::leaf(bytes));
            if Some(hasher.size()) == saved.map(|s| s.checkpoint.size) {
                saved_root = Some(hasher.root());
            }
            if let Err(refusal) = compare_tiles(source, &full, &mut tiles_checked)? {
                return Ok(Err(refusal));
            }
        }
    }
    if let Err(refusal) = compare_tiles(source, &hasher.partial_tiles(), &mut tiles_checked)? {
        return Ok(Err(refusal));
    }
    if hasher.root() != checkpoint.checkpoint.root {
        return Ok(Err(refused(
            "root_mismatch",
            format!(
                "the {size} entries hash to {}, but the checkpoint signs {}",
                hasher.root(),
                checkpoint.checkpoint.root
            ),
        )));
    }
    if let Some(saved) = saved
        && saved_root != Some(saved.checkpoint.root)
    {
        return Ok(Err(refused(
            "inconsistent",
            format!(
                "the log's first {} entries hash to {}, but the saved checkpoint signed {}: the \
                 log was rewritten, or this monitor is shown a fork",
                saved.checkpoint.size,
                saved_root.unwrap_or_else(Hash::empty),
                saved.checkpoint.root
            ),
        )));
    }
    Ok(Ok(Audited {
        checkpoint,
        note: note.to_vec(),
        cosigned,
        saved: saved.map(|s| s.checkpoint.size),
        tiles_checked,
        summary,
    }))
}

/// Compare the tiles rebuilt from the entries with the ones the server serves.
fn compare_tiles(
    source: &Source,
    tiles: &[Tile],
    checked: &mut u64,
) -> anyhow::Result<Result<(), Refusal>> {
    if matches!(source, Source::Dir(_)) {
        return Ok(Ok(()));
    }
    for (level, index, hashes) in tiles {
        let width = u16::try_from(hashes.len()).unwrap_or(256);
        let resource = Resource::Tile {
            level: *level,
            index: *index,
            width,
        };
        let served = match source.covered(resource)? {
            Ok(served) => served,
            Err(refusal) => return Ok(Err(refusal)),
        };
        if parse_tile(&served, width).as_ref() != Some(hashes) {
            return Ok(Err(refused(
                "tile_mismatch",
                format!(
                    "{} does not hold the hashes of the entries",
                    resource.path()
                ),
            )));
        }
        *checked += 1;
    }
    Ok(Ok(()))
}

fn write_replacing(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let replace = proofs::durable::Replace {
        private: false,
        overwrite: true,
    };
    proofs::durable::write_atomically(path, replace, |w| std::io::Write::write_all(w, bytes))
        .with_context(|| format!("writing {}", path.display()))
}
