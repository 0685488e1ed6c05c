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
use broker::seal::{Pass, SealRequest};
use broker::state::{Ledger, StateDir};
use broker::{KeyStoreConfig, server};
use clap::{Parser, Subcommand};
use proofs::NoteSigner;
use proofs::durable::{Replace, write_atomically};
use scaffold::logging::{Level, LogArgs};
use sealing::{DEFAULT_CHUNK_SIZE, Id};

mod policy_commands;
use policy_commands::PolicyCommand;

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
        Command::Policy(command) => policy_commands::run(command),
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
