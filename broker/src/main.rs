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
use broker::config::Config;
use broker::keystore::{DEFAULT_ITERATIONS, Pkcs11Store, SoftwareStore};
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
        /// Print JSON: {version, sha384, models: {id: {measurements, allow_debug, max_age_secs,
        /// regions}}}.
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
        Command::Policy(PolicyCommand::Check { file, json }) => policy_check(&file, json),
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

    if !config.log_key.exists() {
        let signer = NoteSigner::generate(&config.log_origin)?;
        write_new(&config.log_key, signer.to_skey()?.as_bytes(), true)?;
        println!("created the log key {}", config.log_key.display());
    }
    let ledger = Ledger::open(&state, &config.log_origin, &config.log_key)?;
    println!("log verifier key: {}", ledger.verifier()?.to_vkey());

    let public = config.signing_key.with_extension("pub.pem");
    if !config.signing_key.exists() {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| anyhow::anyhow!("generating the response key"))?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref())
            .map_err(|_| anyhow::anyhow!("reading the new response key"))?;
        let spki = key
            .public_key()
            .as_der()
            .map_err(|_| anyhow::anyhow!("encoding the response key"))?;
        write_new(
            &config.signing_key,
            zeroize::Zeroizing::new(pem("PRIVATE KEY", pkcs8.as_ref())).as_bytes(),
            true,
        )?;
        write_new(&public, pem("PUBLIC KEY", spki.as_ref()).as_bytes(), false)?;
        println!(
            "created the response key {} and its public key {}",
            config.signing_key.display(),
            public.display()
        );
    }
    if config.signing_certificate.exists() {
        broker::open_signer(&config, &config.service_trust()?, attest::Timestamp::now())?;
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

    match &config.key_store {
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
            Pkcs11Store::open(settings, &pin)?;
        }
    }
    println!("key-encryption key {:?} is ready", config.kek_label);
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
    let ledger = match Ledger::open(&state, &config.log_origin, &config.log_key) {
        Ok(ledger) => Some(ledger),
        Err(e) if Ledger::is_locked(&e) => None,
        Err(e) => return Err(e.into()),
    };
    let key_store = broker::open_key_store(&config)?;
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
