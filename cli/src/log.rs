//! `attest log`: check what the transparency log hands out, offline.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use attest::Timestamp;
use proofs::audit::{self, AuditError};
use proofs::cosignature::WitnessPolicy;
use proofs::entry::{Entry, LogEntry};
use proofs::{Hash, NoteSigner, NoteVerifier, SignedCheckpoint};
use serde_json::{Value, json};

use crate::json;
use crate::shared::{Verdict, read_small_file, write_new_file};
use crate::verify::print_json;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Audit the whole log as a monitor: hash and decode every entry, rebuild the tree, check
    /// the served hash tiles, the checkpoint's signature and the witnesses' cosignatures, and
    /// that a checkpoint saved earlier is still a prefix; then summarise what the log holds.
    #[command(after_help = "Examples:\n  \
        attest log audit http://127.0.0.1:7390 --log-key log.vkey --witness w1.vkey \\\n      \
        --saved last.checkpoint --save last.checkpoint\n  \
        attest log audit /var/lib/broker/state/log --log-key log.vkey --json\n\n\
        Exit codes: 0 audited, 1 refused (the log or its checkpoint is not what it claims), \
        2 usage, configuration or I/O error.")]
    Audit(Box<crate::audit::AuditArgs>),
    /// Serve a log directory as C2SP tlog-tiles over HTTP, read-only, beside the broker that
    /// writes it: what the stored checkpoint covers, re-read every second.
    #[command(after_help = "Example:\n  \
        attest log serve /var/lib/broker/state/log --listen 0.0.0.0:7390\n\n\
        Paths: /checkpoint, /tile/<L>/<N>[.p/<W>], /tile/entries/<N>[.p/<W>] (see docs/cli.md).\n\
        Exit codes: 0 stopped by SIGTERM or SIGINT, 2 usage, configuration or I/O error.")]
    Serve(crate::tiles::ServeArgs),
    /// Verify that an entry is in the log: a c2sp.org/tlog-proof@v1 file holds the index, the
    /// audit path and the signed checkpoint; the entry (or its leaf hash) is given separately.
    #[command(after_help = "Examples:\n  \
        attest log verify-inclusion release-42.tlog-proof --entry release-42.cbor \\\n      \
        --log-key 'gov.example/log+1a2b3c4d+AbCd...'\n  \
        attest log verify-inclusion release-42.tlog-proof --leaf-hash 6e340b9c... \\\n      \
        --log-cert log.pem --log-root national-root.pem --json\n\n\
        Exit codes: 0 included, 1 refused (not proven), 2 usage, configuration or I/O error.")]
    VerifyInclusion {
        /// The proof file (c2sp.org/tlog-proof@v1).
        proof: PathBuf,
        /// The entry's bytes, exactly as logged.
        #[arg(long, value_name = "FILE", required_unless_present = "leaf_hash")]
        entry: Option<PathBuf>,
        /// The entry's RFC 9162 leaf hash (hex or base64) instead of the entry.
        #[arg(long, value_name = "HASH", conflicts_with = "entry")]
        leaf_hash: Option<String>,
        #[command(flatten)]
        keys: LogKeys,
        /// Print the result as JSON (see docs/cli.md for the shape).
        #[arg(long)]
        json: bool,
    },
    /// Verify that the log only grew between two signed checkpoints: both are signed by a
    /// trusted key, come from the same log, and the consistency proof links their roots.
    #[command(after_help = "Example:\n  \
        attest log verify-consistency --old yesterday.checkpoint --new today.checkpoint \\\n      \
        --proof yesterday-today.proof --log-key 'gov.example/log+1a2b3c4d+AbCd...'\n\n\
        Exit codes: 0 consistent, 1 refused, 2 usage, configuration or I/O error.")]
    VerifyConsistency {
        /// The older signed checkpoint.
        #[arg(long, value_name = "FILE")]
        old: PathBuf,
        /// The newer signed checkpoint.
        #[arg(long, value_name = "FILE")]
        new: PathBuf,
        /// The consistency proof (tlog-consistency-proof@v1).
        #[arg(long, value_name = "FILE")]
        proof: PathBuf,
        #[command(flatten)]
        keys: LogKeys,
        /// Print the result as JSON (see docs/cli.md for the shape).
        #[arg(long)]
        json: bool,
    },
    /// Create a log signing key (Ed25519, C2SP signed-note format): the private key file
    /// (mode 0600) and the verifier key that witnesses, monitors and `--log-key` use.
    #[command(after_help = "Example:\n  \
        attest log new-key --name gov.example/key-release-log --key log.key --vkey log.vkey\n\n\
        The name is the log's origin. Certify the verifier key under the national root with\n\
        `attest pki certify-log-key`.")]
    NewKey {
        /// The key name: the log's origin, such as gov.example/key-release-log.
        #[arg(long)]
        name: String,
        /// Where to write the private key. Must not exist.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Where to write the verifier key. Must not exist.
        #[arg(long, value_name = "FILE")]
        vkey: PathBuf,
    },
}

/// Which keys may sign the log's checkpoints.
#[derive(Debug, clap::Args)]
pub(crate) struct LogKeys {
    /// A trusted log key, `<name>+<key ID>+<base64 key>`, or a file holding one. Repeatable.
    #[arg(long = "log-key", value_name = "VKEY|FILE")]
    keys: Vec<String>,
    /// A certificate for a log key, issued by a national root given with --log-root.
    /// Repeatable.
    #[arg(long = "log-cert", value_name = "FILE", requires = "log_roots")]
    certs: Vec<PathBuf>,
    /// A national root (PEM or DER) that certifies --log-cert. Repeatable.
    #[arg(long = "log-root", value_name = "FILE")]
    log_roots: Vec<PathBuf>,
    /// Judge --log-cert validity at this time (RFC 3339). Default: now.
    #[arg(long, value_name = "RFC3339")]
    cert_time: Option<String>,
    /// Require checkpoints from this log (their first line). Default: any log a trusted key
    /// signs for.
    #[arg(long)]
    origin: Option<String>,
    /// A witness that must have cosigned the checkpoint (C2SP tlog-cosignature),
    /// `<name>+<key ID>+<base64(0x04 ‖ key)>`, or a file holding one. Repeatable.
    #[arg(long = "witness", value_name = "VKEY|FILE")]
    witnesses: Vec<String>,
    /// How many of the --witness keys must have cosigned. Default: all of them. It must be more
    /// than half of them, unless --dangerous-witness-minority.
    #[arg(long, value_name = "K", requires = "witnesses")]
    witnesses_required: Option<usize>,
    /// Accept --witnesses-required of half the witnesses or fewer: two halves could then each
    /// cosign another history of the log.
    #[arg(long, requires = "witnesses_required")]
    dangerous_witness_minority: bool,
}

impl LogKeys {
    /// The witnesses the checkpoint must carry cosignatures from (none unless --witness).
    pub(crate) fn witness_policy(&self) -> anyhow::Result<WitnessPolicy> {
        let mut vkeys = Vec::new();
        for arg in &self.witnesses {
            vkeys.push(if Path::new(arg).is_file() {
                String::from_utf8(read_small_file(Path::new(arg), "witness key")?)
                    .with_context(|| format!("--witness {arg}: not UTF-8"))?
            } else {
                arg.clone()
            });
        }
        WitnessPolicy::from_vkeys(
            &vkeys,
            self.witnesses_required,
            self.dangerous_witness_minority,
        )
        .context("--witness, --witnesses-required")
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.certs.is_empty()
    }

    pub(crate) fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    pub(crate) fn load(&self) -> anyhow::Result<Vec<NoteVerifier>> {
        let mut keys = Vec::new();
        for key in &self.keys {
            keys.push(read_vkey(key).with_context(|| format!("--log-key {key}"))?);
        }
        if !self.certs.is_empty() {
            let trust = crate::trust::service_trust(&self.log_roots)?;
            let at = match &self.cert_time {
                Some(t) => Timestamp::parse_rfc3339(t).context("--cert-time")?,
                None => Timestamp::now(),
            };
            for path in &self.certs {
                let certs = attest::load_certificates(&read_small_file(path, "log certificate")?)
                    .with_context(|| path.display().to_string())?;
                let [cert] = certs.as_slice() else {
                    bail!("{} must hold exactly one certificate", path.display());
                };
                keys.push(
                    NoteVerifier::from_certificate(cert, &trust, at)
                        .with_context(|| format!("--log-cert {}", path.display()))?,
                );
            }
        }
        if keys.is_empty() {
            bail!("no log key: give --log-key, or --log-cert with --log-root");
        }
        Ok(keys)
    }
}

/// A log verifier key given on the command line: the key itself, or a file holding it.
pub(crate) fn read_vkey(arg: &str) -> anyhow::Result<NoteVerifier> {
    let text = if Path::new(arg).is_file() {
        String::from_utf8(read_small_file(Path::new(arg), "log key")?)
            .context("the log key file is not UTF-8")?
    } else {
        arg.to_owned()
    };
    Ok(NoteVerifier::parse(text.trim())?)
}

pub(crate) fn run(command: Command) -> anyhow::Result<Verdict> {
    match command {
        Command::Audit(args) => crate::audit::run(&args),
        Command::Serve(args) => crate::tiles::run(&args),
        Command::VerifyInclusion {
            proof,
            entry,
            leaf_hash,
            keys,
            json,
        } => {
            let trusted = keys.load()?;
            let witnesses = keys.witness_policy()?;
            let proof_bytes = read_small_file(&proof, "proof")?;
            let (leaf, typed) = match (&entry, &leaf_hash) {
                (Some(path), _) => {
                    let bytes = read_small_file(path, "entry")?;
                    (Hash::leaf(&bytes), LogEntry::decode(&bytes).ok())
                }
                (None, Some(text)) => (parse_hash(text)?, None),
                (None, None) => bail!("give --entry or --leaf-hash"),
            };
            let verified =
                audit::verify_inclusion_file(&proof_bytes, &leaf, &trusted, keys.origin())
                    .and_then(|included| {
                        let cosigned = witnesses.check(&included.checkpoint.note)?;
                        Ok((included, cosigned))
                    });
            match verified {
                Ok((included, cosigned)) => {
                    if json {
                        print_json(&json!({
                            "version": json::SCHEMA_VERSION, "verified": true,
                            "index": included.index,
                            "leaf_hash": leaf.to_hex(),
                            "checkpoint": checkpoint_json(&included.checkpoint),
                            "cosigned_by": cosigned_json(&cosigned),
                            "entry": typed.as_ref().map(|e| entry_json(e.entry())),
                        }))?;
                    } else {
                        let cp = &included.checkpoint.checkpoint;
                        println!("included: entry {} of {}", included.index, cp.origin);
                        println!("  leaf hash   {}", leaf.to_hex());
                        println!("  checkpoint  size {} root {}", cp.size, cp.root);
                        println!("  signed by   {}", included.checkpoint.signed_by.join(", "));
                        print_cosigned(&cosigned);
                        if let Some(e) = &typed {
                            println!("  entry       {}", describe(e.entry()));
                        }
                    }
                    Ok(Verdict::Accepted)
                }
                Err(e) => refuse(json, &e),
            }
        }
        Command::VerifyConsistency {
            old,
            new,
            proof,
            keys,
            json,
        } => {
            let trusted = keys.load()?;
            let witnesses = keys.witness_policy()?;
            let old = read_small_file(&old, "old checkpoint")?;
            let new = read_small_file(&new, "new checkpoint")?;
            let proof = read_small_file(&proof, "proof")?;
            let verified =
                audit::verify_consistency_files(&old, &new, &proof, &trusted, keys.origin())
                    .and_then(|(old, new)| {
                        let cosigned = witnesses.check(&new.note)?;
                        Ok((old, new, cosigned))
                    });
            match verified {
                Ok((old, new, cosigned)) => {
                    if json {
                        print_json(&json!({
                            "version": json::SCHEMA_VERSION, "verified": true,
                            "old": checkpoint_json(&old), "new": checkpoint_json(&new),
                            "new_cosigned_by": cosigned_json(&cosigned),
                        }))?;
                    } else {
                        println!(
                            "consistent: {} grew from {} to {} entries",
                            new.checkpoint.origin, old.checkpoint.size, new.checkpoint.size
                        );
                        println!("  old root    {}", old.checkpoint.root);
                        println!("  new root    {}", new.checkpoint.root);
                        print_cosigned(&cosigned);
                    }
                    Ok(Verdict::Accepted)
                }
                Err(e) => refuse(json, &e),
            }
        }
        Command::NewKey { name, key, vkey } => {
            let signer = NoteSigner::generate(&name)?;
            let skey = signer.to_skey()?;
            let verifier = signer.verifier().to_vkey();
            write_new_file(&key, format!("{}\n", skey.as_str()).as_bytes(), true)?;
            write_new_file(&vkey, format!("{verifier}\n").as_bytes(), false)?;
            println!("log key {verifier}");
            println!("  private key {} (mode 0600)", key.display());
            println!("  verifier    {}", vkey.display());
            Ok(Verdict::Accepted)
        }
    }
}

/// Witnesses' names and cosignature times, for JSON.
pub(crate) fn cosigned_json(cosigned: &[(String, u64)]) -> Value {
    cosigned
        .iter()
        .map(|(name, time)| json!({ "witness": name, "time": time }))
        .collect()
}

pub(crate) fn print_cosigned(cosigned: &[(String, u64)]) {
    if !cosigned.is_empty() {
        let names: Vec<String> = cosigned
            .iter()
            .map(|(name, time)| format!("{name} (at {time})"))
            .collect();
        println!("  cosigned by {}", names.join(", "));
    }
}

fn refuse(json: bool, error: &AuditError) -> anyhow::Result<Verdict> {
    if json {
        print_json(&json!({
            "version": json::SCHEMA_VERSION, "verified": false,
            "error": { "kind": audit_kind(error), "message": error.to_string() },
        }))?;
    } else {
        println!("refused: {error}");
    }
    Ok(Verdict::Refused)
}

/// Stable error kinds for scripts (docs/cli.md).
fn audit_kind(error: &AuditError) -> &'static str {
    match error {
        AuditError::ProofFile(_) => "malformed_proof",
        AuditError::Checkpoint(proofs::CheckpointError::Note(proofs::NoteError::Untrusted {
            ..
        })) => "untrusted_checkpoint",
        AuditError::Checkpoint(proofs::CheckpointError::Note(
            proofs::NoteError::BadSignature { .. },
        )) => "bad_checkpoint_signature",
        AuditError::Checkpoint(proofs::CheckpointError::Origin { .. })
        | AuditError::Origins { .. } => "wrong_log",
        AuditError::Checkpoint(_) => "malformed_checkpoint",
        AuditError::Sizes { .. } => "size_mismatch",
        AuditError::Proof(_) => "proof_failed",
        AuditError::Witnesses(_) => "not_witnessed",
        _ => "refused",
    }
}

pub(crate) fn checkpoint_json(cp: &SignedCheckpoint) -> Value {
    json!({
        "origin": cp.checkpoint.origin,
        "size": cp.checkpoint.size,
        "root": cp.checkpoint.root.to_base64(),
        "signed_by": cp.signed_by,
    })
}

fn entry_json(entry: &Entry) -> Value {
    let hex = |b: &[u8]| data_encoding::HEXLOWER.encode(b);
    match entry {
        Entry::ImageRegistration(r) => json!({
            "type": "image-registration",
            "time": r.time.to_string(),
            "model_id": r.model_id,
            "model_digest": hex(&r.model_digest),
            "policy_version": r.policy_version,
            "pcrs": json::pcrs(&r.pcrs),
            "approvers": r.approvers,
        }),
        Entry::KeyRelease(k) => json!({
            "type": "key-release",
            "time": k.time.to_string(),
            "outcome": k.outcome.as_str(),
            "reason": k.reason,
            "model_id": k.model_id,
            "key_id": k.key_id,
            "policy_version": k.policy_version,
            "module_id": k.module_id,
            "pcrs": json::pcrs(&k.pcrs),
            "region": k.region,
            "document_sha384": k.document_sha384.map(|d| hex(&d)),
            "nonce": k.nonce.as_deref().map(hex),
        }),
        Entry::ModelSealed(m) => json!({
            "type": "model-sealed",
            "time": m.time.to_string(),
            "model_id": m.model_id,
            "key_id": m.key_id,
            "model_digest": hex(&m.model_digest),
            "model_len": m.model_len,
            "wrapped_key_sha384": m.wrapped_key_sha384.map(|d| hex(&d)),
        }),
        Entry::DenialSummary(d) => json!({
            "type": "denial-summary",
            "time": d.time.to_string(),
            "since": d.since.to_string(),
            "reason": d.reason,
            "count": d.count,
        }),
        Entry::PolicyChange(p) => json!({
            "type": "policy-change",
            "time": p.time.to_string(),
            "policy_version": p.policy_version,
            "policy_sha384": hex(&p.policy_sha384),
            "models": p.models,
        }),
        _ => json!({ "type": "unknown" }),
    }
}

fn describe(entry: &Entry) -> String {
    match entry {
        Entry::ImageRegistration(r) => format!(
            "image registration: model {} policy version {} at {}",
            r.model_id, r.policy_version, r.time
        ),
        Entry::KeyRelease(k) => format!(
            "key release {} ({}): model {} key {} at {}",
            k.outcome.as_str(),
            k.reason,
            k.model_id,
            k.key_id,
            k.time
        ),
        Entry::ModelSealed(m) => format!(
            "model sealed: model {} key {} ({} bytes) at {}",
            m.model_id, m.key_id, m.model_len, m.time
        ),
        Entry::DenialSummary(d) => format!(
            "{} denials ({}) counted from {} to {}",
            d.count, d.reason, d.since, d.time
        ),
        Entry::PolicyChange(p) => format!(
            "release policy version {} took effect at {} ({} models)",
            p.policy_version,
            p.time,
            p.models.len()
        ),
        _ => "an entry of an unknown type".into(),
    }
}

/// A SHA-256 hash in hex (64 digits) or standard base64.
fn parse_hash(text: &str) -> anyhow::Result<Hash> {
    Hash::from_hex(text)
        .or_else(|| Hash::from_base64(text))
        .with_context(|| format!("{text:?} is not a SHA-256 hash in hex or base64"))
}
