//! `broker`: seal models, check release policies, and serve key releases to verified enclaves.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use broker::config::{Config, ServiceKey};
use broker::keystore::{DEFAULT_ITERATIONS, Pkcs11Store, SigningKeyKind, SoftwareStore};
use broker::policy::ReleasePolicy;
use broker::seal::{Pass, SealRequest};
use broker::state::{Ledger, StateDir};
use broker::{KeyStoreConfig, server};
use clap::{Parser, Subcommand};
use proofs::NoteSigner;
use proofs::durable::{Replace, write_atomically};
use scaffold::logging::{Level, LogArgs};
use sealing::{DEFAULT_CHUNK_SIZE, Id};

#[derive(Debug, Parser)]
#[command(
    name = "broker",
    version,
    about = "The key broker: seals models, and releases their keys from the HSM only to \
             enclaves whose attestation verifies against the national root and the release \
             policy. Every decision is logged before it is answered.",
    after_help = "Exit codes: 0 done, 1 refused (an invalid policy or configuration), 2 usage, \
                  configuration or I/O error.\n\nSee docs/broker.md."
)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create what the configuration names and is missing: the state directory, the log's
    /// signing key, the response key (to be certified by the national root), and the
    /// key-encryption key in the key store. Existing keys are kept.
    #[command(after_help = "Examples:\n  \
        BROKER_PKCS11_PIN=… broker init --config broker.toml\n  \
        BROKER_PASSPHRASE=… broker init --config dev-broker.toml   # software key store\n\n\
        Then have the national root certify the response key:\n  \
        attest pki certify-broker-key --issuer-cert national-root.pem --issuer-key national-root.key \\\n      \
        --public-key broker.pub.pem --out broker.pem")]
    Init {
        /// The broker's configuration.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// PBKDF2 iterations for a new software key store.
        #[arg(long, default_value_t = DEFAULT_ITERATIONS)]
        iterations: u32,
    },
    /// Seal a model: a new data key from the key store, the model encrypted under it (chunked
    /// AES-256-GCM, streamed), the sealed file written atomically, the model's digest and key id
    /// registered and logged.
    #[command(after_help = "Example:\n  \
        broker seal smollm2-135m.gguf --model-id smollm2-135m --out smollm2.sealed --config broker.toml\n\n\
        The sealed file can go anywhere (the host serves it to the enclave); only a verified \
        enclave gets its key. Sealing again registers a new key; the old sealed file no longer \
        opens.")]
    Seal {
        /// The model file.
        model: PathBuf,
        /// The model's id, as the release policy names it.
        #[arg(long, value_name = "ID")]
        model_id: String,
        /// Where to write the sealed model. Must not exist unless --force.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The broker's configuration.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Plaintext bytes per chunk (4096 to 16777216).
        #[arg(long, default_value_t = DEFAULT_CHUNK_SIZE)]
        chunk_size: u32,
        /// Replace an existing output file.
        #[arg(long)]
        force: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve key releases until SIGTERM.
    #[command(after_help = "Example:\n  \
        BROKER_PKCS11_PIN=… broker serve --config broker.toml\n\n\
        At start the release policy is adopted: a changed policy must carry a higher version, \
        and is logged before it takes effect.")]
    Serve {
        /// The broker's configuration.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Revoke a model, an image (its PCR0) or one enclave (its module id): no release and no
    /// lease renewal for it from now on. A running enclave stops at its next renewal, so within
    /// one lease (the policy's `lease`, 15 minutes by default).
    #[command(after_help = "Examples:\n  \
        broker revoke --model smollm2-135m --reason \"withdrawn by order 2026-14\" --config broker.toml\n  \
        broker revoke --image 3f2a…(96 hex digits) --reason \"image recalled\" --config broker.toml\n  \
        broker revoke --module i-0abc-enc0def --reason \"enclave misbehaved\" --config broker.toml\n  \
        broker revoke --instance i-0abc --reason \"instance compromised\" --config broker.toml\n  \
        broker revoke --list --config broker.toml --json\n\n\
        The revocation is recorded in the state directory at once; the serving broker logs it \
        within seconds (or at its next start, if none is running) and refuses releases and \
        renewals for it from its next decision. Revocations are permanent.")]
    Revoke {
        /// Revoke a model id.
        #[arg(long, value_name = "ID", conflicts_with_all = ["image", "module", "instance", "list"])]
        model: Option<String>,
        /// Revoke an enclave image by its PCR0 (96 hex digits).
        #[arg(long, value_name = "PCR0", conflicts_with_all = ["module", "instance", "list"])]
        image: Option<String>,
        /// Revoke one enclave launch by the module id its attestation documents carry
        /// (`i-…-enc…`; a relaunch on the same instance gets a new one: see --instance).
        #[arg(long, value_name = "MODULE_ID", conflicts_with_all = ["instance", "list"])]
        module: Option<String>,
        /// Revoke every enclave of one parent instance, by its instance id (`i-…`, the module
        /// id's prefix), whatever it relaunches.
        #[arg(long, value_name = "INSTANCE_ID", conflicts_with = "list")]
        instance: Option<String>,
        /// Why: recorded in the log (one line, at most 256 bytes). Required to revoke.
        #[arg(long, value_name = "TEXT", conflicts_with = "list")]
        reason: Option<String>,
        /// List the revocations recorded, and whether each is logged yet.
        #[arg(long)]
        list: bool,
        /// The broker's configuration.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Release policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Check a configuration file and print what it means.
    #[command(after_help = "Example:\n  broker check-config broker.toml --json")]
    CheckConfig {
        /// The configuration.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Check a release policy and print, per model, what it allows. Exit 1 if it is refused.
    #[command(after_help = "Example:\n  broker policy check release-policy.toml --json")]
    Check {
        /// The policy file.
        file: PathBuf,
        /// Print JSON: {version, sha384, notice_secs, models: {id: {measurements, allow_debug,
        /// max_age_secs, regions, lease_secs}}}.
        #[arg(long)]
        json: bool,
    },
    /// Propose a policy change: check the file against the policy in force and print what it
    /// changes, the statement each approver signs, and who must approve. Exit 1 if it is refused.
    #[command(after_help = "Example:\n  \
        broker policy propose release-policy-v4.toml --config broker.toml\n\n\
        Then each approver runs `broker policy approve` on the same file, and an operator runs \
        `broker policy apply` with the approvals.")]
    Propose {
        /// The proposed policy file.
        file: PathBuf,
        /// The broker's configuration (its approval rule and state).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve a policy file: sign its SHA-384 and version with an approver's key (a PKCS#8 PEM
    /// file, or a key in a PKCS#11 token), certified by the national root for the
    /// policy-approver role. Needs no broker: run it where the key is.
    #[command(after_help = "Examples:\n  \
        broker policy approve release-policy-v4.toml --certificate alice.pem --key alice.key \\\n      \
        --out alice.approval\n  \
        APPROVER_PKCS11_PIN=… broker policy approve release-policy-v4.toml --certificate alice.pem \\\n      \
        --pkcs11-module /usr/lib/softhsm/libsofthsm2.so --token alice --key-label approver --out alice.approval")]
    Approve {
        /// The policy file, exactly as it will be applied.
        file: PathBuf,
        /// The approver's certificate (PEM), issued by the national root for policy-approver.
        #[arg(long, value_name = "FILE")]
        certificate: PathBuf,
        /// The approver's private key (PKCS#8 PEM, P-384).
        #[arg(long, value_name = "FILE", conflicts_with_all = ["pkcs11_module", "token", "key_label"])]
        key: Option<PathBuf>,
        #[command(flatten)]
        token: TokenArgs,
        /// Where to write the approval. Must not exist.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Make an approver's P-384 key: in a PKCS#11 token (never extractable), or as a PKCS#8 PEM
    /// file; write its public key for `attest pki certify-approver-key`.
    #[command(after_help = "Example:\n  \
        APPROVER_PKCS11_PIN=… broker policy approver-key --pkcs11-module /usr/lib/softhsm/libsofthsm2.so \\\n      \
        --token alice --key-label approver --public-key alice.pub.pem")]
    ApproverKey {
        /// Write the private key to this file (PKCS#8 PEM, mode 0600) instead of a token.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["pkcs11_module", "token", "key_label"])]
        key_out: Option<PathBuf>,
        #[command(flatten)]
        token: TokenArgs,
        /// Where to write the public key (PEM). Must not exist.
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
    },
    /// Apply an approved policy change: check the approvals against the configuration's rule
    /// and the national root (exit 1 naming who is missing), then put the approvals in the
    /// approvals directory and the file in the configured policy path. The serving broker
    /// adopts it within seconds (after its notice period, if it sets one), or at its next start.
    #[command(after_help = "Example:\n  \
        broker policy apply release-policy-v4.toml --approvals alice.approval bob.approval \\\n      \
        --config broker.toml")]
    Apply {
        /// The approved policy file.
        file: PathBuf,
        /// The approval files.
        #[arg(long, value_name = "FILE", num_args = 1.., required = true)]
        approvals: Vec<PathBuf>,
        /// The broker's configuration.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A key in a PKCS#11 token (the PIN comes from $APPROVER_PKCS11_PIN).
#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// The PKCS#11 module.
    #[arg(long, value_name = "FILE", requires_all = ["token", "key_label"])]
    pkcs11_module: Option<PathBuf>,
    /// The token's label.
    #[arg(long, value_name = "LABEL")]
    token: Option<String>,
    /// The key's label in the token.
    #[arg(long, value_name = "LABEL")]
    key_label: Option<String>,
}

impl TokenArgs {
    fn key(&self) -> Option<broker::keystore::TokenKey> {
        Some(broker::keystore::TokenKey {
            module: self.pkcs11_module.clone()?,
            token: self.token.clone()?,
            label: self.key_label.clone()?,
        })
    }
}

fn approver_pin() -> anyhow::Result<zeroize::Zeroizing<String>> {
    let pin = broker::secrets::get("APPROVER_PKCS11_PIN")
        .context("set $APPROVER_PKCS11_PIN to the token's user PIN")?;
    Ok(zeroize::Zeroizing::new(
        String::from_utf8(pin.to_vec())
            .context("the PIN is not text")?
            .trim_end()
            .to_owned(),
    ))
}

fn main() -> ExitCode {
    take_secrets_from_environment();
    let cli = Cli::parse();
    scaffold::main("broker", Level::INFO, cli.log, || match cli.command {
        Command::Init { config, iterations } => init(&config, iterations),
        Command::Seal {
            model,
            model_id,
            out,
            config,
            chunk_size,
            force,
            json,
        } => seal(&model, &model_id, &out, &config, chunk_size, force, json),
        Command::Serve { config } => serve(&config),
        Command::Revoke {
            model,
            image,
            module,
            instance,
            reason,
            list,
            config,
            json,
        } => revoke(
            [model, image, module, instance],
            reason.as_deref(),
            list,
            &config,
            json,
        ),
        Command::Policy(PolicyCommand::Check { file, json }) => policy_check(&file, json),
        Command::Policy(PolicyCommand::Propose { file, config, json }) => {
            policy_propose(&file, &config, json)
        }
        Command::Policy(PolicyCommand::Approve {
            file,
            certificate,
            key,
            token,
            out,
        }) => policy_approve(&file, &certificate, key.as_deref(), &token, &out),
        Command::Policy(PolicyCommand::ApproverKey {
            key_out,
            token,
            public_key,
        }) => approver_key(key_out.as_deref(), &token, &public_key),
        Command::Policy(PolicyCommand::Apply {
            file,
            approvals,
            config,
            json,
        }) => policy_apply(&file, &approvals, &config, json),
        Command::CheckConfig { file, json } => check_config(&file, json),
    })
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = data_encoding::BASE64.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn write_new(path: &Path, contents: &[u8], private: bool) -> anyhow::Result<()> {
    let replace = Replace {
        private,
        overwrite: false,
    };
    write_atomically(path, replace, |w| w.write_all(contents))
        .with_context(|| format!("writing {}", path.display()))
}

fn init(path: &Path, iterations: u32) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    let state = StateDir::open(&config.state_dir)?;
    println!("state directory {}", config.state_dir.display());

    let token = match &config.key_store {
        KeyStoreConfig::Software {
            file,
            passphrase_file,
        } => {
            let passphrase = broker::keystore::software_passphrase(passphrase_file.as_ref())?;
            if file.exists() {
                SoftwareStore::open(file, &passphrase)?;
            } else {
                SoftwareStore::create(file, &config.kek_label, &passphrase, iterations)?;
                println!("created the software key store {}", file.display());
            }
            eprintln!("broker: warning: the software key store is not an HSM");
            None
        }
        KeyStoreConfig::Pkcs11 { .. } => {
            let (settings, pin) = broker::pkcs11_settings(&config)?;
            for label in Pkcs11Store::create_missing(&settings, &pin)? {
                println!(
                    "generated {label:?} in token {:?} (256 bits, private, sensitive, never \
                     extractable, not modifiable)",
                    settings.token
                );
            }
            Some(Pkcs11Store::open(settings, &pin)?)
        }
    };
    println!("key-encryption key {:?} is ready", config.kek_label);

    match &config.log_key {
        ServiceKey::File(file) => {
            if !file.exists() {
                let signer = NoteSigner::generate(&config.log_origin)?;
                write_new(file, signer.to_skey()?.as_bytes(), true)?;
                println!("created the log key {}", file.display());
            }
            eprintln!("broker: warning: the log key is a file, not in the HSM");
        }
        ServiceKey::Token(label) => {
            let token = token.as_ref().ok_or(broker::OpenError::NotPkcs11)?;
            if token.generate_signing_key(label, SigningKeyKind::Ed25519)? {
                println!("generated the log key {label:?} (Ed25519) in the token");
            }
        }
    }
    let ledger = Ledger::open(&state, broker::open_log_signer(&config, token.as_ref())?)?;
    println!("log verifier key: {}", ledger.verifier()?.to_vkey());

    let public = match &config.signing_key {
        ServiceKey::File(file) => {
            let public = file.with_extension("pub.pem");
            if !file.exists() {
                let pkcs8 = EcdsaKeyPair::generate_pkcs8(
                    &ECDSA_P384_SHA384_FIXED_SIGNING,
                    &SystemRandom::new(),
                )
                .map_err(|_| anyhow::anyhow!("generating the response key"))?;
                let key =
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref())
                        .map_err(|_| anyhow::anyhow!("reading the new response key"))?;
                let spki = key
                    .public_key()
                    .as_der()
                    .map_err(|_| anyhow::anyhow!("encoding the response key"))?;
                write_new(
                    file,
                    zeroize::Zeroizing::new(pem("PRIVATE KEY", pkcs8.as_ref())).as_bytes(),
                    true,
                )?;
                write_new(&public, pem("PUBLIC KEY", spki.as_ref()).as_bytes(), false)?;
                println!(
                    "created the response key {} and its public key {}",
                    file.display(),
                    public.display()
                );
            }
            eprintln!("broker: warning: the response key is a file, not in the HSM");
            public
        }
        ServiceKey::Token(label) => {
            let token = token.as_ref().ok_or(broker::OpenError::NotPkcs11)?;
            let public = config.signing_certificate.with_extension("pub.pem");
            if token.generate_signing_key(label, SigningKeyKind::P384)? {
                println!("generated the response key {label:?} (P-384) in the token");
            }
            let spki = token
                .signing_key(label, SigningKeyKind::P384)?
                .public_key()
                .to_vec();
            let text = pem("PUBLIC KEY", &spki);
            match std::fs::read(&public) {
                Ok(existing) if existing == text.as_bytes() => {}
                Ok(_) => anyhow::bail!(
                    "{} holds another public key than the token's {label:?}: move it away",
                    public.display()
                ),
                Err(_) => {
                    write_new(&public, text.as_bytes(), false)?;
                    println!("wrote its public key {}", public.display());
                }
            }
            public
        }
    };
    if config.signing_certificate.exists() {
        broker::open_signer(
            &config,
            &config.service_trust()?,
            attest::Timestamp::now(),
            token.as_ref(),
        )?;
        println!(
            "response certificate {} is valid for the key-broker role",
            config.signing_certificate.display()
        );
    } else {
        println!(
            "next: have the national root certify the response key, e.g.\n  attest pki \
             certify-broker-key --issuer-cert ROOT.pem --issuer-key ROOT.key --public-key {} \
             --out {}",
            public.display(),
            config.signing_certificate.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn seal(
    model: &Path,
    model_id: &str,
    out: &Path,
    config: &Path,
    chunk_size: u32,
    force: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let model_id = Id::new(model_id).context("--model-id")?;
    let config = Config::load(config)?;
    let total = std::fs::metadata(model)
        .with_context(|| format!("reading {}", model.display()))?
        .len();
    let state = StateDir::open(&config.state_dir)?;
    let (key_store, token) = broker::open_key_stores(&config)?;
    let log_signer = broker::open_log_signer(&config, token.as_deref())?;
    let ledger = match Ledger::open(&state, log_signer) {
        Ok(ledger) => Some(ledger),
        Err(e) if Ledger::is_locked(&e) => None,
        Err(e) => return Err(e.into()),
    };
    let mut bar = Progress::new(total);
    let sealed = broker::seal::seal_model(
        &SealRequest {
            input: model,
            model_id,
            out,
            overwrite: force,
            chunk_size,
            at: attest::Timestamp::now(),
        },
        key_store.as_ref(),
        &state,
        ledger.as_ref(),
        &mut |pass, done| bar.show(pass, done),
    );
    bar.finish();
    let sealed = sealed?;
    let r = &sealed.record;
    let digest = data_encoding::HEXLOWER.encode(&r.model_sha384);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "model_id": r.model_id.as_str(),
                "key_id": r.key_id.as_str(),
                "model_sha384": digest,
                "model_len": r.model_len,
                "sealed": out,
                "sealed_len": sealed.sealed_len,
                "log_index": r.log_index,
            })
        );
    } else {
        println!(
            "sealed {} ({} bytes) as {}\n  model id      {}\n  key id        {}\n  SHA-384       {digest}",
            model.display(),
            r.model_len,
            out.display(),
            r.model_id,
            r.key_id,
        );
        match r.log_index {
            Some(i) => println!("  log entry     {i}"),
            None => println!(
                "  log entry     pending: a running broker holds the log and will log this \
                 sealing before it releases the key"
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A progress bar on stderr when it is a terminal; nothing otherwise.
struct Progress {
    total: u64,
    shown: Option<Instant>,
    enabled: bool,
}

impl Progress {
    fn new(total: u64) -> Self {
        Self {
            total,
            shown: None,
            enabled: std::io::stderr().is_terminal(),
        }
    }

    fn show(&mut self, pass: Pass, done: u64) {
        if !self.enabled
            || self
                .shown
                .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
        {
            return;
        }
        self.shown = Some(Instant::now());
        let per_mille = done
            .min(self.total)
            .saturating_mul(1000)
            .checked_div(self.total)
            .unwrap_or(1000);
        let width = 30u64;
        let filled = usize::try_from(per_mille * width / 1000).unwrap_or(0);
        let empty = usize::try_from(width).unwrap_or(0).saturating_sub(filled);
        let label = match pass {
            Pass::Hash => "hashing   ",
            Pass::Encrypt => "encrypting",
        };
        eprint!(
            "\r{label} [{}{}] {:3}.{}% of {} MiB",
            "#".repeat(filled),
            " ".repeat(empty),
            per_mille / 10,
            per_mille % 10,
            self.total / (1024 * 1024)
        );
    }

    fn finish(&self) {
        if self.enabled && self.shown.is_some() {
            eprintln!();
        }
    }
}

fn serve(path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    let broker = Arc::new(broker::open(&config, Box::new(attest::Timestamp::now))?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        tracing::info!(
            listen = %config.listen,
            key_store = broker.key_store_kind(),
            oaep = config.oaep_hash.as_str(),
            "broker serving key releases"
        );
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            scaffold::shutdown_signal().await;
            tracing::info!("shutdown requested");
            let _ = stop.send(true);
        });
        server::serve(
            listener,
            broker,
            server::Limits {
                max_connections: config.max_connections,
                workers: config.workers,
                io_timeout: config.io_timeout,
                grace: config.io_timeout.saturating_mul(2),
            },
            stopped,
        )
        .await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn revoke(
    [model, image, module, instance]: [Option<String>; 4],
    reason: Option<&str>,
    list: bool,
    path: &Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use broker::revocation::Revoked;
    use proofs::entry::RevocationTarget;
    let config = Config::load(path)?;
    let state = StateDir::open(&config.state_dir)?;
    if list {
        let revocations = state.revocations()?;
        if json {
            let list: Vec<_> = revocations.iter().map(Revoked::to_json).collect();
            println!("{}", serde_json::json!({ "revocations": list }));
        } else if revocations.is_empty() {
            println!("no revocations");
        } else {
            for r in &revocations {
                let logged = r
                    .log_index
                    .map_or_else(|| "not logged yet".to_owned(), |i| format!("log entry {i}"));
                println!(
                    "{} {} {}: {} ({logged})",
                    r.time,
                    r.target.as_str(),
                    r.value,
                    r.reason
                );
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (target, value) = match (model, image, module, instance) {
        (Some(v), None, None, None) => (RevocationTarget::Model, v),
        (None, Some(v), None, None) => (RevocationTarget::Image, v),
        (None, None, Some(v), None) => (RevocationTarget::Module, v),
        (None, None, None, Some(v)) => (RevocationTarget::Instance, v),
        _ => anyhow::bail!(
            "name what to revoke: one of --model, --image, --module or --instance (or --list)"
        ),
    };
    let reason = reason.context("--reason is required: the log records why")?;
    let revoked = Revoked::new(target, &value, reason, attest::Timestamp::now())
        .map_err(|e| anyhow::anyhow!(e))?;
    let added = state.update_revocations(|list| {
        if list
            .iter()
            .any(|r| r.target == revoked.target && r.value == revoked.value)
        {
            return Ok((false, false));
        }
        list.push(revoked.clone());
        Ok((true, true))
    })?;
    if json {
        let mut value = revoked.to_json();
        if let Some(map) = value.as_object_mut() {
            map.insert("already_revoked".into(), (!added).into());
        }
        println!("{value}");
    } else if added {
        println!(
            "revoked {} {}: the serving broker logs it within {} s (or at its next start) and \
             refuses every release and renewal for it from then on",
            target.as_str(),
            revoked.value,
            broker::revocation::POLL.as_secs()
        );
    } else {
        println!("{} {} was already revoked", target.as_str(), revoked.value);
    }
    Ok(ExitCode::SUCCESS)
}

/// The policy in force per the state directory: the bytes adopted last, if kept.
fn policy_in_force(config: &Config) -> anyhow::Result<Option<ReleasePolicy>> {
    let state = StateDir::open(&config.state_dir)?;
    Ok(match state.adopted_policy()? {
        Some(bytes) => Some(ReleasePolicy::parse(&bytes)?),
        None => None,
    })
}

fn policy_propose(file: &Path, path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    let proposed = match ReleasePolicy::load(file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("broker: {}: {e}", file.display());
            return Ok(ExitCode::from(1));
        }
    };
    let current = policy_in_force(&config)?;
    let hex = |b: &[u8]| data_encoding::HEXLOWER.encode(b);
    let mut problems = Vec::new();
    if let Some(c) = &current
        && proposed.version <= c.version
    {
        problems.push(format!(
            "its version {} must be above the version in force ({})",
            proposed.version, c.version
        ));
    }
    let before: std::collections::BTreeMap<String, serde_json::Value> = current
        .as_ref()
        .map(|c| {
            c.to_json()
                .get("models")
                .and_then(serde_json::Value::as_object)
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect()
        })
        .unwrap_or_default();
    let after: std::collections::BTreeMap<String, serde_json::Value> = proposed
        .to_json()
        .get("models")
        .and_then(serde_json::Value::as_object)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let added: Vec<&String> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    let removed: Vec<&String> = before.keys().filter(|k| !after.contains_key(*k)).collect();
    let changed: Vec<&String> = after
        .iter()
        .filter(|(k, v)| before.get(*k).is_some_and(|b| b != *v))
        .map(|(k, _)| k)
        .collect();
    let rule = config.approval.as_ref().map(|a| &a.rule);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "version": proposed.version,
                "sha384": hex(&proposed.sha384),
                "notice_secs": proposed.notice.as_secs(),
                "version_in_force": current.as_ref().map(|c| c.version),
                "models_added": added,
                "models_removed": removed,
                "models_changed": changed,
                "required": rule.map(|r| r.required),
                "approvers": rule.map(|r| r.approvers.clone()),
                "problems": problems,
                "valid": problems.is_empty(),
            })
        );
    } else {
        println!(
            "policy {}: version {} (in force: {})",
            file.display(),
            proposed.version,
            current
                .as_ref()
                .map_or_else(|| "none".to_owned(), |c| c.version.to_string())
        );
        println!("  sha384   {}", hex(&proposed.sha384));
        let names = |v: &[&String]| {
            if v.is_empty() {
                "-".to_owned()
            } else {
                v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            }
        };
        println!(
            "  models   added {}; removed {}; changed {}",
            names(&added),
            names(&removed),
            names(&changed)
        );
        if !proposed.notice.is_zero() {
            println!(
                "  notice   takes effect {} after the last approval",
                attest::format_duration(proposed.notice)
            );
        }
        match rule {
            Some(r) => println!(
                "  approval {} of: {} (each signs SHA-384 and version with `broker policy approve`)",
                r.required,
                r.approvers.join(", ")
            ),
            None => println!("  approval none: dangerous_single_administrator is set"),
        }
        for p in &problems {
            println!("  refused: {p}");
        }
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn policy_approve(
    file: &Path,
    certificate: &Path,
    key: Option<&Path>,
    token: &TokenArgs,
    out: &Path,
) -> anyhow::Result<ExitCode> {
    use attest::approval::{Approval, ApprovalClaims};
    let policy = ReleasePolicy::load(file)?;
    let cert_pem = broker::config::read_bounded(certificate, broker::config::MAX_SMALL_FILE)?;
    let cert = attest::load_certificates(&cert_pem)
        .map_err(|e| anyhow::anyhow!("{}: {e}", certificate.display()))?
        .into_iter()
        .next()
        .with_context(|| format!("{}: no certificate", certificate.display()))?;
    // The name the certificate gives, whatever root issued it: the broker checks the rest.
    let (_, x509) = x509_parser::parse_x509_certificate(&cert)
        .map_err(|e| anyhow::anyhow!("{}: {e}", certificate.display()))?;
    let name = x509
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .with_context(|| format!("{}: no common name", certificate.display()))?
        .to_owned();
    let spki = x509.public_key().raw.to_vec();
    let claims = ApprovalClaims {
        policy_sha384: policy.sha384,
        policy_version: policy.version,
        approver: name.clone(),
        time: attest::Timestamp::now(),
    };
    let approval = match (key, token.key()) {
        (Some(key), None) => {
            let pem = zeroize::Zeroizing::new(broker::config::read_bounded(
                key,
                broker::config::MAX_SMALL_FILE,
            )?);
            let der = zeroize::Zeroizing::new(
                <rustls_pki_types::PrivatePkcs8KeyDer as rustls_pki_types::pem::PemObject>::from_pem_slice(&pem)
                    .map_err(|_| anyhow::anyhow!("{} is not a PKCS#8 PEM key", key.display()))?,
            );
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, der.secret_pkcs8_der())
                    .map_err(|_| anyhow::anyhow!("{} is not a P-384 key", key.display()))?;
            Approval::sign(&claims, cert.to_vec(), |data| {
                pair.sign(&SystemRandom::new(), data)
                    .map(|s| s.as_ref().to_vec())
                    .map_err(|_| "signing failed".to_owned())
            })?
        }
        (None, Some(token_key)) => {
            let pin = approver_pin()?;
            Approval::sign(&claims, cert.to_vec(), |data| {
                token_key.sign(&pin, data).map_err(|e| e.to_string())
            })?
        }
        _ => anyhow::bail!(
            "give the approver's key: --key FILE, or --pkcs11-module, --token and --key-label"
        ),
    };
    // The signature must verify with the certificate's key: a key that is not the
    // certificate's would make an approval every broker refuses.
    let sign1 = attest::cose::parse_es384(
        &approval.signed,
        attest::approval::MAX_APPROVAL_LEN,
        attest::approval::APPROVAL_CONTENT_TYPE,
    )?;
    if attest::cose::verify_es384(&sign1, &spki).is_err() {
        anyhow::bail!("the key is not the one {} certifies", certificate.display());
    }
    write_new(out, approval.to_text().as_bytes(), false)?;
    println!(
        "{name} approved version {} (sha384 {}) in {}",
        policy.version,
        data_encoding::HEXLOWER.encode(&policy.sha384),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn approver_key(
    key_out: Option<&Path>,
    token: &TokenArgs,
    public_key: &Path,
) -> anyhow::Result<ExitCode> {
    if public_key.exists() {
        anyhow::bail!("{} exists", public_key.display());
    }
    let spki = match (key_out, token.key()) {
        (Some(path), None) => {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(
                &ECDSA_P384_SHA384_FIXED_SIGNING,
                &SystemRandom::new(),
            )
            .map_err(|_| anyhow::anyhow!("key generation failed"))?;
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref())
                .map_err(|_| anyhow::anyhow!("key generation failed"))?;
            let pem_key = zeroize::Zeroizing::new(pem("PRIVATE KEY", pkcs8.as_ref()));
            write_new(path, pem_key.as_bytes(), true)?;
            pair.public_key()
                .as_der()
                .map_err(|_| anyhow::anyhow!("public key encoding"))?
                .as_ref()
                .to_vec()
        }
        (None, Some(token_key)) => token_key.generate(&approver_pin()?)?,
        _ => anyhow::bail!(
            "say where the key goes: --key-out FILE, or --pkcs11-module, --token and --key-label"
        ),
    };
    write_new(public_key, pem("PUBLIC KEY", &spki).as_bytes(), false)?;
    println!(
        "approver key made; its public key is in {}: have the national root certify it with \
         `attest pki certify-approver-key`",
        public_key.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn policy_apply(
    file: &Path,
    approvals: &[PathBuf],
    path: &Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    let Some(approval) = &config.approval else {
        anyhow::bail!(
            "the configuration has no [approval] section: with dangerous_single_administrator \
             the policy file takes effect as written, at the next start"
        );
    };
    let policy = ReleasePolicy::load(file)?;
    if let Some(current) = policy_in_force(&config)?
        && policy.version <= current.version
    {
        eprintln!(
            "broker: refused: version {} is not above the version in force ({})",
            policy.version, current.version
        );
        return Ok(ExitCode::from(1));
    }
    let mut parsed = Vec::new();
    for a in approvals {
        let bytes = broker::config::read_bounded(a, 64 * 1024)?;
        parsed.push(
            attest::approval::Approval::parse(&bytes).with_context(|| a.display().to_string())?,
        );
    }
    let now = attest::Timestamp::now();
    let report = attest::approval::check_approvals(
        &policy.bytes,
        policy.version,
        &parsed,
        &approval.rule,
        &config.service_trust()?,
        now,
    );
    let takes_effect = report.last_approval().map(|last| {
        attest::Timestamp::from_unix_millis(
            last.unix_millis()
                .saturating_add(u64::try_from(policy.notice.as_millis()).unwrap_or(u64::MAX)),
        )
    });
    if json {
        println!(
            "{}",
            serde_json::json!({
                "version": policy.version,
                "sha384": data_encoding::HEXLOWER.encode(&policy.sha384),
                "approved_by": report.approved.keys().collect::<Vec<_>>(),
                "missing": report.missing,
                "refused": report.refused.iter().map(|(i, why)| serde_json::json!({
                    "file": approvals.get(*i).map(|p| p.display().to_string()),
                    "reason": why,
                })).collect::<Vec<_>>(),
                "required": report.required,
                "applied": report.is_enough(),
                "takes_effect": takes_effect.filter(|_| report.is_enough()).map(|t| t.to_string()),
            })
        );
    }
    if !report.is_enough() {
        if !json {
            eprintln!("broker: refused: {}", report.summary());
        }
        return Ok(ExitCode::from(1));
    }
    std::fs::create_dir_all(&approval.dir)
        .with_context(|| format!("creating {}", approval.dir.display()))?;
    let prefix = data_encoding::HEXLOWER.encode(&policy.sha384[..8]);
    for (i, a) in parsed.iter().enumerate() {
        if report.refused.iter().any(|(r, _)| *r == i) {
            continue;
        }
        let target = approval
            .dir
            .join(format!("v{}-{prefix}-{i}.approval", policy.version));
        write_atomically(
            &target,
            Replace {
                private: false,
                overwrite: true,
            },
            |w| w.write_all(a.to_text().as_bytes()),
        )?;
    }
    write_atomically(
        &config.policy,
        Replace {
            private: false,
            overwrite: true,
        },
        |w| w.write_all(&policy.bytes),
    )?;
    if !json {
        println!(
            "applied version {} ({}): the serving broker adopts it within {} s{}, or at its next \
             start, and logs its approvers",
            policy.version,
            report.summary(),
            broker::revocation::POLL.as_secs(),
            takes_effect
                .filter(|t| *t > now)
                .map(|t| format!(" of {t} (its notice period)"))
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn policy_check(file: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let policy = match ReleasePolicy::load(file) {
        Ok(p) => p,
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "valid": false, "error": e.to_string() })
                );
            } else {
                eprintln!("broker: {}: {e}", file.display());
            }
            return Ok(ExitCode::from(1));
        }
    };
    if json {
        println!("{}", with_valid(policy.to_json()));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "release policy version {} (SHA-384 {})",
        policy.version,
        data_encoding::HEXLOWER.encode(&policy.sha384)
    );
    for (id, p) in &policy.models {
        println!("model {id}:");
        for (i, set) in p.measurements().iter().enumerate() {
            println!("  allowed image {}:", i + 1);
            for (index, value) in set.pcrs() {
                println!("    {index} = {value}");
            }
        }
        println!(
            "  debug enclaves: {}",
            if p.allows_debug() {
                "ALLOWED"
            } else {
                "refused"
            }
        );
        match p.max_age_limit() {
            Some(age) => println!(
                "  documents older than {} refused",
                attest::format_duration(age)
            ),
            None => println!("  documents of any age accepted"),
        }
        if p.regions().is_empty() {
            println!("  any region");
        } else {
            let regions: Vec<&str> = p.regions().iter().map(|r| r.as_str()).collect();
            println!("  regions: {}", regions.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check_config(file: &Path, json: bool) -> anyhow::Result<ExitCode> {
    match Config::load(file) {
        Ok(config) => {
            if json {
                println!("{}", with_valid(config.to_json()));
            } else {
                println!("{}", serde_json::to_string_pretty(&config.to_json())?);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "valid": false, "error": e.to_string() })
                );
            } else {
                eprintln!("broker: {}: {e}", file.display());
            }
            Ok(ExitCode::from(1))
        }
    }
}

/// `value` (an object) with `"valid": true` added.
fn with_valid(mut value: serde_json::Value) -> serde_json::Value {
    if let Some(object) = value.as_object_mut() {
        object.insert("valid".into(), true.into());
    }
    value
}

/// Move the PIN and passphrase out of the environment into the broker's own keeping, so that
/// they are not left in the environment of this process or of anything it starts.
#[expect(unsafe_code, reason = "std::env::remove_var; see the SAFETY comment")]
fn take_secrets_from_environment() {
    for name in broker::secrets::SECRET_VARIABLES {
        if let Some(value) = std::env::var_os(name) {
            broker::secrets::adopt(name, zeroize::Zeroizing::new(value.into_encoded_bytes()));
            // SAFETY: this runs first in `main`, before this process starts any thread, so no
            // other thread can read or write the environment at the same time.
            unsafe { std::env::remove_var(name) };
        }
    }
}
