//! `host`: the parent-instance daemon.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use host::{HostConfig, Launch, Shared};
use scaffold::logging::{Level, LogArgs};
use tokio::net::TcpListener;
use tokio::sync::watch;
use transport::{Endpoint, HybridVsock, Transport, Vsock};

/// The parent-instance daemon: launches and supervises the enclave, forwards client TCP
/// connections to its vsock ports byte for byte, and relays its outbound connections to
/// allowlisted addresses. It can read none of what it carries.
#[derive(Debug, Parser)]
#[command(
    name = "host",
    version,
    after_help = "Examples:\n  \
    host run --dev                        # local enclave, simulated NSM, clients on 127.0.0.1:8443\n  \
    host run --config /etc/sovereign/host.toml\n  \
    host check-config host.toml --json\n\n\
    Exit codes: 0 success, 1 the configuration was refused (check-config), 2 usage, \
    configuration or I/O error."
)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Launch the enclave and serve until SIGTERM, then stop accepting, let connections finish
    /// within the grace period, and stop the enclave.
    #[command(after_help = "Examples:\n  \
        host run --dev\n  \
        host run --dev --dev-dir /tmp/sovereign-dev\n  \
        host run --config /etc/sovereign/host.toml --log-format json\n\n\
        --dev creates a development root in the directory (once), writes the enclave's \
        configuration there, and runs the `enclave` binary next to this one on the simulated \
        NSM. Its documents verify only against that root:\n  \
        attest verify doc.cbor --no-aws-root --nitro-root .sovereign-dev/nitro-root.pem")]
    Run {
        /// Configuration file (TOML); see docs/host.md.
        #[arg(long, value_name = "FILE", conflicts_with = "dev")]
        config: Option<PathBuf>,
        /// Use the embedded development defaults instead of a configuration file.
        #[arg(long)]
        dev: bool,
        /// The development directory (root, enclave configuration, sockets).
        #[arg(long, value_name = "DIR", default_value = ".sovereign-dev")]
        dev_dir: PathBuf,
    },
    /// Check a configuration file and print what it means.
    #[command(after_help = "Example:\n  host check-config /etc/sovereign/host.toml")]
    CheckConfig {
        /// The configuration file.
        file: PathBuf,
        /// Print JSON: {"valid", "error"} and, when valid, the settings.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs carry ids, ports and counts, never relayed bytes.
    scaffold::main("host", Level::INFO, cli.log, || match cli.command {
        Command::Run {
            config,
            dev,
            dev_dir,
        } => run(config.as_deref(), dev.then_some(dev_dir.as_path())),
        Command::CheckConfig { file, json } => check_config(&file, json),
    })
}

fn run(config: Option<&Path>, dev_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = match (config, dev_dir) {
        (Some(path), _) => HostConfig::load(path)?,
        (None, Some(dir)) => host::dev::prepare(dir)?,
        (None, None) => anyhow::bail!("give --config FILE, or --dev for the development defaults"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: HostConfig) -> anyhow::Result<()> {
    let shared = Arc::new(Shared::default());
    let (stop, stopping) = watch::channel(false);
    let grace = config.shutdown_grace;
    let mut tasks = tokio::task::JoinSet::new();

    // Bind everything first, so that a taken port fails the start instead of a task.
    for forward in config.forwards.clone() {
        let listener = TcpListener::bind(forward.listen)
            .await
            .with_context(|| format!("listening on {}", forward.listen))?;
        tracing::info!(listen = %forward.listen, enclave_port = forward.enclave_port, "forwarding");
        tasks.spawn(host::forward::serve(
            listener,
            forward,
            shared.clone(),
            stopping.clone(),
            grace,
        ));
    }
    let parent = match &config.enclave.launch {
        Launch::Development { socket, .. } => Endpoint::Hybrid(HybridVsock::new(socket)),
        Launch::Emulator(e) => Endpoint::Hybrid(HybridVsock::new(&e.socket)),
        Launch::Nitro(_) => Endpoint::Vsock(Vsock::inside_enclave()),
    };
    for relay in config.relays.clone() {
        tracing::info!(port = relay.port, target = %relay.target, "relaying");
        let (shared, stopping) = (shared.clone(), stopping.clone());
        match &parent {
            Endpoint::Vsock(t) => tasks.spawn(bind_relay(t, relay, shared, stopping, grace).await?),
            Endpoint::Hybrid(t) => {
                tasks.spawn(bind_relay(t, relay, shared, stopping, grace).await?)
            }
        };
    }
    if let Some(source) = config.model.clone() {
        tracing::info!(port = source.port, path = %source.path.display(), "serving the sealed model");
        let stopping = stopping.clone();
        match &parent {
            Endpoint::Vsock(t) => tasks.spawn(bind_model(t, source, stopping).await?),
            Endpoint::Hybrid(t) => tasks.spawn(bind_model(t, source, stopping).await?),
        };
    }
    if let Some(address) = config.admin {
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("admin endpoint on {address}"))?;
        tracing::info!(listen = %address, "admin endpoint: /healthz /readyz /status /metrics");
        tasks.spawn(host::admin::serve(
            listener,
            shared.clone(),
            stopping.clone(),
        ));
    }
    tasks.spawn(host::supervisor::supervise(
        config.enclave.clone(),
        shared.clone(),
        stopping.clone(),
    ));

    scaffold::shutdown_signal().await;
    tracing::info!(grace = %attest::format_duration(grace), "shutting down");
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    tracing::info!("stopped");
    Ok(())
}

/// Listen on the relay's host port; the returned future serves it until shutdown.
async fn bind_relay<T: Transport>(
    transport: &T,
    relay: host::Relay,
    shared: Arc<Shared>,
    stopping: watch::Receiver<bool>,
    grace: std::time::Duration,
) -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    let listener = transport
        .listen_parent(relay.port)
        .await
        .with_context(|| format!("relay listener on host port {}", relay.port))?;
    Ok(host::relay::serve(listener, relay, shared, stopping, grace))
}

/// Listen on the model's host port; the returned future serves it until shutdown.
async fn bind_model<T: Transport>(
    transport: &T,
    source: host::model_source::ModelSource,
    stopping: watch::Receiver<bool>,
) -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    let listener = transport
        .listen_parent(source.port)
        .await
        .with_context(|| format!("model listener on host port {}", source.port))?;
    Ok(host::model_source::serve(listener, source, stopping))
}

fn check_config(file: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let config = match HostConfig::load(file) {
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
    let launch = match &config.enclave.launch {
        Launch::Development {
            binary,
            config,
            socket,
        } => serde_json::json!({
            "mode": "development", "binary": binary, "config": config, "socket": socket,
        }),
        Launch::Emulator(e) => serde_json::json!({
            "mode": "emulator", "qemu": e.qemu, "firmware": e.firmware,
            "vhost_device_vsock": e.vhost_device_vsock, "eif": e.eif, "socket": e.socket,
            "cpu_count": e.cpu_count, "memory_mib": e.memory_mib, "console": e.console,
        }),
        Launch::Nitro(n) => serde_json::json!({
            "mode": "nitro", "nitro_cli": n.nitro_cli, "eif": n.eif, "cpu_count": n.cpu_count,
            "memory_mib": n.memory_mib, "cid": n.cid, "debug_mode": n.debug_mode,
        }),
    };
    let duration = |d| attest::format_duration(d);
    let summary = serde_json::json!({
        "valid": true,
        "enclave": {
            "launch": launch,
            "health_port": config.enclave.health_port,
            "ready_timeout": duration(config.enclave.ready_timeout),
            "restart_backoff": duration(config.enclave.restart_backoff),
            "restart_backoff_max": duration(config.enclave.restart_backoff_max),
        },
        "forwards": config.forwards.iter().map(|f| serde_json::json!({
            "listen": f.listen.to_string(), "enclave_port": f.enclave_port,
            "max_connections": f.max_connections, "idle_timeout": duration(f.idle_timeout),
        })).collect::<Vec<_>>(),
        "relays": config.relays.iter().map(|r| serde_json::json!({
            "port": r.port, "target": r.target,
            "max_connections": r.max_connections, "idle_timeout": duration(r.idle_timeout),
        })).collect::<Vec<_>>(),
        "admin": config.admin.map(|a| a.to_string()),
        "shutdown_grace": duration(config.shutdown_grace),
    });
    if json {
        println!("{summary}");
    } else {
        println!("valid: {}", file.display());
        println!("{}", serde_json::to_string_pretty(&summary)?);
        if let Launch::Nitro(n) = &config.enclave.launch
            && n.debug_mode
        {
            println!(
                "warning: debug_mode makes PCR0-2 zero and the console readable; never in production"
            );
        }
        for relay in &config.relays {
            println!(
                "the enclave may reach {} (host port {}) and nothing else",
                relay.target, relay.port
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
