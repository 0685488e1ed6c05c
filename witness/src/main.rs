//! `witness`: cosign transparency logs' checkpoints over C2SP tlog-witness.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use proofs::NoteVerifier;
use proofs::cosignature::Cosigner;
use proofs::durable::{Replace, write_atomically};
use scaffold::logging::{Level, LogArgs};
use serde::Deserialize;
use witness::{MAX_REQUEST_LEN, Witness};

#[derive(Debug, Parser)]
#[command(
    name = "witness",
    version,
    about = "A transparency-log witness (C2SP tlog-witness): cosigns a log's checkpoint only \
             once it is consistent with the last one it cosigned for that log, and never two \
             trees of one size, so a log cannot show different histories to different parties \
             and have both cosigned.",
    after_help = "Exit codes: 0 done, 2 usage, configuration or I/O error.\n\nSee docs/witness.md."
)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make the witness's cosigning key (Ed25519, cosignature/v1) if it is missing, and print
    /// its verifier key for the logs' clients to require.
    #[command(after_help = "Example:\n  witness init --config witness.toml")]
    Init {
        /// The witness's configuration.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Answer POST /add-checkpoint until SIGTERM.
    #[command(after_help = "Example:\n  witness serve --config witness.toml")]
    Serve {
        /// The witness's configuration.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

/// The configuration file.
///
/// ```toml
/// listen = "127.0.0.1:7380"
/// name = "witness.agency.example/w1"   # the key's name, as clients will require it
/// key = "witness.key"                   # made by `witness init`
/// state_dir = "state"                   # the latest checkpoint cosigned, per log
/// [[log]]
/// origin = "gov.example/key-release-log"
/// keys = ["gov.example/key-release-log+…+…"]   # the log's note verifier keys
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    listen: SocketAddr,
    name: String,
    key: PathBuf,
    state_dir: PathBuf,
    #[serde(default)]
    log: Vec<LogConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogConfig {
    origin: String,
    keys: Vec<String>,
}

fn load(path: &Path) -> anyhow::Result<(Config, PathBuf)> {
    let bytes = scaffold::read_bounded(path, 1024 * 1024)?;
    let text = std::str::from_utf8(&bytes).context("the configuration is not UTF-8")?;
    let mut config: Config = toml::from_str(text).with_context(|| format!("{}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new(".")).to_owned();
    config.key = base.join(&config.key);
    config.state_dir = base.join(&config.state_dir);
    Ok((config, base))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    scaffold::main("witness", Level::INFO, cli.log, || match cli.command {
        Command::Init { config } => init(&config),
        Command::Serve { config } => serve(&config),
    })
}

fn init(path: &Path) -> anyhow::Result<ExitCode> {
    let (config, _) = load(path)?;
    let cosigner = if config.key.exists() {
        read_key(&config)?
    } else {
        let cosigner = Cosigner::generate(&config.name)?;
        let skey = cosigner.to_skey()?;
        write_atomically(
            &config.key,
            Replace {
                private: true,
                overwrite: false,
            },
            |w| std::io::Write::write_all(w, skey.as_bytes()),
        )
        .with_context(|| format!("writing {}", config.key.display()))?;
        cosigner
    };
    println!("witness verifier key: {}", cosigner.verifier().to_vkey());
    Ok(ExitCode::SUCCESS)
}

fn read_key(config: &Config) -> anyhow::Result<Cosigner> {
    let text = zeroize::Zeroizing::new(
        String::from_utf8(scaffold::read_bounded(&config.key, 4096)?.to_vec())
            .context("the key file is not text")?,
    );
    let cosigner = Cosigner::parse(&text).with_context(|| config.key.display().to_string())?;
    if cosigner.verifier().name() != config.name {
        anyhow::bail!(
            "{} is the key of {:?}, not of {:?}",
            config.key.display(),
            cosigner.verifier().name(),
            config.name
        );
    }
    Ok(cosigner)
}

fn serve(path: &Path) -> anyhow::Result<ExitCode> {
    let (config, _) = load(path)?;
    let cosigner = read_key(&config)?;
    let mut logs = Vec::new();
    for log in &config.log {
        let keys = log
            .keys
            .iter()
            .map(|k| {
                NoteVerifier::parse(k).with_context(|| format!("log {:?}: key {k:?}", log.origin))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        logs.push((log.origin.clone(), keys));
    }
    if logs.is_empty() {
        anyhow::bail!("no [[log]] configured: the witness would cosign nothing");
    }
    let vkey = cosigner.verifier().to_vkey();
    let witness = Arc::new(Witness::open(&config.state_dir, cosigner, logs)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        tracing::info!(listen = %config.listen, key = %vkey, logs = config.log.len(), "witness serving");
        let limits = scaffold::HttpLimits {
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            lifetime: Duration::from_secs(30),
            grace: Duration::from_secs(5),
        };
        scaffold::serve_http(listener, limits, move |request| {
            let witness = witness.clone();
            async move { answer(&witness, request).await }
        })
        .await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn answer(witness: &Arc<Witness>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: u16, content_type: &'static str, body: Vec<u8>| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() =
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    };
    if request.uri().path() != "/add-checkpoint" {
        return reply(404, "text/plain; charset=utf-8", b"not found\n".to_vec());
    }
    if request.method() != Method::POST {
        return reply(405, "text/plain; charset=utf-8", b"POST only\n".to_vec());
    }
    let body = match tokio::time::timeout(
        Duration::from_secs(10),
        Limited::new(request.into_body(), MAX_REQUEST_LEN).collect(),
    )
    .await
    {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(_)) => return reply(413, "text/plain; charset=utf-8", b"too large\n".to_vec()),
        Err(_) => return reply(408, "text/plain; charset=utf-8", b"too slow\n".to_vec()),
    };
    let witness = witness.clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let answered = tokio::task::spawn_blocking(move || witness.add_checkpoint(&body, now)).await;
    match answered {
        Ok(a) => {
            tracing::info!(status = a.status, "add-checkpoint");
            reply(a.status, a.content_type, a.body)
        }
        Err(_) => reply(
            500,
            "text/plain; charset=utf-8",
            b"internal error\n".to_vec(),
        ),
    }
}
