//! `enclave`: the runtime inside a Nitro enclave.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use data_encoding::HEXLOWER;
use enclave::{
    CONFIG_PCR, Config, SIMULATED_NSM_COMPILED, Service, measure_config, open_nsm, permit,
};
use scaffold::logging::{Level, LogArgs};
use scaffold::shutdown_signal;
use transport::{Endpoint, Transport};

/// Every Rust heap block is zeroed when it is freed, so that prompts and answers leave nothing
/// behind in memory the allocator hands out again. llama.cpp allocates with C's `malloc`, which
/// this does not see (docs/inference.md, "Statelessness").
#[global_allocator]
static ALLOCATOR: zeroizing_alloc::ZeroAlloc<std::alloc::System> =
    zeroizing_alloc::ZeroAlloc(std::alloc::System);

/// How long connections in flight may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The runtime inside a Nitro enclave: measures its configuration into PCR16, then serves health
/// and attestation documents over vsock.
#[derive(Debug, Parser)]
#[command(
    name = "enclave",
    version,
    after_help = "Examples:\n  \
    enclave run --config /etc/enclave.toml\n  \
    enclave check-config enclave.toml --json\n\n\
    Exit codes: 0 success, 1 the configuration was refused (check-config), 2 usage, configuration, \
    NSM or I/O error."
)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Boot: open the NSM, extend the configuration's digest into PCR16 and lock it, then serve
    /// the control protocol until SIGTERM.
    #[command(after_help = "Examples:\n  \
        enclave run                                   # embedded defaults: vsock port 5000, /dev/nsm\n  \
        enclave run --config dev.toml --listen unix:/tmp/enclave.sock\n\n\
        A build without the `simulated-nsm` feature refuses nsm.kind = \"simulated\" and \
        nsm.kind = \"emulator\".")]
    Run {
        /// Configuration file (TOML). Default: the embedded defaults.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Listen here instead (`vsock` or `unix:<path>`); it is part of what is measured.
        #[arg(long, value_name = "ENDPOINT")]
        listen: Option<String>,
    },
    /// Check a configuration file and print what it means, with the PCR16 value an enclave
    /// booted with it reports (for release policies).
    #[command(after_help = "Example:\n  enclave check-config enclave.toml --json")]
    CheckConfig {
        /// The configuration file.
        file: PathBuf,
        /// Print JSON: {"valid", "canonical", "config_sha384", "pcr", "pcr_value", "error"}.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    scaffold::main("enclave", Level::INFO, cli.log, || match cli.command {
        Command::Run { config, listen } => run(config, listen),
        Command::CheckConfig { file, json } => check_config(&file, json),
    })
}

fn load(path: Option<&PathBuf>, listen: Option<String>) -> anyhow::Result<Config> {
    let mut config = match path {
        Some(path) => Config::load(path)?,
        None => Config::embedded_default(),
    };
    if let Some(listen) = listen {
        config.listen = listen.parse().context("--listen")?;
    }
    Ok(config)
}

fn run(path: Option<PathBuf>, listen: Option<String>) -> anyhow::Result<ExitCode> {
    let config = load(path.as_ref(), listen)?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        simulated_nsm_compiled = SIMULATED_NSM_COMPILED,
        "enclave starting: {}",
        if SIMULATED_NSM_COMPILED {
            "DEVELOPMENT build, the development NSMs (simulated, emulator) are compiled in"
        } else {
            "production build, the development NSMs are refused"
        }
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let nsm = open_nsm(&config)?;
        log_boot_measurements(&*nsm);
        let pcr = measure_config(&*nsm, &config)?;
        tracing::info!(
            pcr = CONFIG_PCR.get(),
            value = %pcr,
            nsm = nsm.kind().as_str(),
            "configuration measured and locked"
        );
        match &config.listen {
            Endpoint::Vsock(vsock) => serve(vsock, &config, nsm).await,
            Endpoint::Hybrid(hybrid) => serve(hybrid, &config, nsm).await,
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn serve<T: Transport>(
    transport: &T,
    config: &Config,
    nsm: Arc<dyn enclave::Nsm>,
) -> anyhow::Result<()> {
    let port = config.control_port;
    let api = match &config.model {
        Some(model) => Some(Arc::new(enclave::inference_api(nsm.clone(), model)?)),
        None => None,
    };
    let slot = config.model.as_ref().map(|model| {
        let slot = Arc::new(enclave::model::ModelSlot::new(&model.id, api.clone()));
        tokio::spawn(enclave::model::acquire(
            transport.clone(),
            nsm.clone(),
            model.clone(),
            slot.clone(),
        ));
        slot
    });
    let mut service = Service::new(nsm, config, slot);
    if let (Some(api), Some(model)) = (api, &config.model) {
        tracing::info!(port = model.api_port, "serving the inference API (TLS)");
        service = service.with_api(model.api_port, model.max_connections, api);
    }
    let ports = service.ports();
    let listener = transport
        .listen(&ports)
        .await
        .with_context(|| format!("listening on ports {ports:?}"))?;
    tracing::info!(
        port,
        health_port = config.health_port,
        "serving the control protocol (health probes on their own port)"
    );
    Arc::new(service)
        .run(listener, shutdown_signal(), SHUTDOWN_GRACE)
        .await;
    tracing::info!("stopped");
    Ok(())
}

fn check_config(file: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    let config = match Config::load(file) {
        Ok(config) => config,
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "valid": false, "error": e.to_string() })
                );
            } else {
                println!("invalid: {e}");
            }
            return Ok(ExitCode::from(1));
        }
    };
    let refused = permit(&config.nsm, SIMULATED_NSM_COMPILED).err();
    let digest = HEXLOWER.encode(&config.digest());
    let pcr = config.expected_pcr();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "valid": refused.is_none(),
                "canonical": config.canonical(),
                "config_sha384": digest,
                "pcr": CONFIG_PCR.get(),
                "pcr_value": pcr.to_hex(),
                "error": refused.as_ref().map(ToString::to_string),
            })
        );
    } else {
        match &refused {
            None => println!("valid: {}", file.display()),
            Some(e) => println!("refused by this build: {e}"),
        }
        print!("{}", config.canonical());
        println!("config sha384 = {digest}");
        println!("PCR{} = {pcr}", CONFIG_PCR.get());
        if config.nsm.is_development() {
            println!(
                "note: the {} NSM is for development only",
                config.nsm.kind()
            );
        }
    }
    Ok(if refused.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Log PCR0, PCR1 and PCR2 as the NSM reports them: what a policy pins (compare `attest measure`
/// of the image). A PCR that cannot be read is logged as such; it is not fatal here.
fn log_boot_measurements(nsm: &dyn protocol::nsm::Nsm) {
    let mut values = Vec::new();
    for index in [0, 1, 2] {
        let value = attest::PcrIndex::new(index)
            .ok_or_else(|| "no such PCR".to_owned())
            .and_then(|i| nsm.describe_pcr(i).map_err(|e| e.to_string()));
        values.push(match value {
            Ok(state) => state.value.to_string(),
            Err(e) => format!("unreadable ({e})"),
        });
    }
    if let [pcr0, pcr1, pcr2] = values.as_slice() {
        tracing::info!(%pcr0, %pcr1, %pcr2, nsm = nsm.kind().as_str(), "boot measurements");
    }
}
