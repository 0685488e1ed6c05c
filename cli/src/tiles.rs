//! `attest log serve`: the log as C2SP tlog-tiles over HTTP, read-only.
//!
//! It reads the log directory without locking or repairing it, beside the broker that writes
//! it, and serves only what the stored checkpoint covers: the checkpoint is re-read every second,
//! and entries appended after it stay unserved until a checkpoint covers them. Full tiles never
//! change and are served as immutable; partial tiles and the checkpoint are not cached.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use proofs::FileLogReader;
use proofs::tiles::{Resource, read_entries, read_tile};

use crate::shared::Verdict;

/// How often the stored checkpoint is re-read.
const REFRESH: Duration = Duration::from_secs(1);

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// The log directory (the broker's `<state_dir>/log`).
    dir: PathBuf,
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:7390")]
    listen: SocketAddr,
    /// Serve below this path prefix (for example `/key-release-log`).
    #[arg(long, default_value = "")]
    prefix: String,
    /// Connections served at once; more are closed at once.
    #[arg(long, default_value_t = 256)]
    max_connections: usize,
}

/// The log as served: a reader at the stored checkpoint's size, and that checkpoint.
struct Published {
    reader: FileLogReader,
    checkpoint: Option<Bytes>,
}

fn publish(dir: &std::path::Path) -> anyhow::Result<Published> {
    let (reader, checkpoint) = FileLogReader::open(dir)
        .with_context(|| format!("reading the log in {}", dir.display()))?;
    Ok(Published {
        reader,
        checkpoint: checkpoint.map(Bytes::from),
    })
}

pub(crate) fn run(args: &ServeArgs) -> anyhow::Result<Verdict> {
    let prefix = args.prefix.trim_end_matches('/').to_owned();
    if !prefix.is_empty() && !prefix.starts_with('/') {
        anyhow::bail!("--prefix must start with '/'");
    }
    let published = Arc::new(RwLock::new(publish(&args.dir)?));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let dir = args.dir.clone();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let size = published.read().map_or(0, |p| p.reader.size());
        eprintln!(
            "attest: serving {} as tlog-tiles at http://{}{prefix}/ (size {size}, read-only)",
            dir.display(),
            args.listen
        );
        let refresher = {
            let published = published.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(REFRESH);
                loop {
                    tick.tick().await;
                    let dir = dir.clone();
                    match tokio::task::spawn_blocking(move || publish(&dir)).await {
                        Ok(Ok(fresh)) => {
                            if let Ok(mut current) = published.write() {
                                // Never go back to a smaller tree.
                                if fresh.reader.size() >= current.reader.size() {
                                    *current = fresh;
                                }
                            }
                        }
                        Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "the log could not be re-read"),
                        Err(_) => {}
                    }
                }
            })
        };
        let prefix = Arc::new(prefix);
        let limits = scaffold::HttpLimits {
            max_connections: args.max_connections,
            header_timeout: Duration::from_secs(10),
            lifetime: Duration::from_secs(60),
            grace: Duration::from_secs(5),
        };
        scaffold::serve_http(listener, limits, move |request: Request<Incoming>| {
            let published = published.clone();
            let prefix = prefix.clone();
            async move { answer(&published, &prefix, &request).await }
        })
        .await;
        refresher.abort();
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(Verdict::Accepted)
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    cache: &'static str,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

fn text(status: StatusCode, message: &'static str) -> Response<Full<Bytes>> {
    reply(
        status,
        "text/plain; charset=utf-8",
        "no-store",
        Bytes::from_static(message.as_bytes()),
    )
}

async fn answer(
    published: &Arc<RwLock<Published>>,
    prefix: &str,
    request: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    let Some(resource) = request
        .uri()
        .path()
        .strip_prefix(prefix)
        .and_then(|p| p.strip_prefix('/'))
        .and_then(Resource::parse)
    else {
        return text(StatusCode::NOT_FOUND, "not a tlog-tiles path\n");
    };
    let published = published.clone();
    let read = tokio::task::spawn_blocking(move || {
        let published = published
            .read()
            .map_err(|_| "the log's lock is poisoned".to_owned())?;
        let reader = &published.reader;
        let size = reader.size();
        Ok::<_, String>(match resource {
            Resource::Checkpoint => published.checkpoint.clone().map(|c| (c, false)),
            Resource::Tile {
                level,
                index,
                width,
            } => read_tile(reader, size, level, index, width)
                .map_err(|e| e.to_string())?
                .map(|t| (Bytes::from(t), width == 256)),
            Resource::Entries { index, width } => {
                read_entries(size, index, width, |first, n| reader.entries(first, n))
                    .map_err(|e| e.to_string())?
                    .map(|b| (Bytes::from(b), width == 256))
            }
        })
    })
    .await;
    match read {
        Ok(Ok(Some((body, immutable)))) => {
            let (content_type, cache) = match (resource, immutable) {
                (Resource::Checkpoint, _) => ("text/plain; charset=utf-8", "no-cache"),
                (_, true) => (
                    "application/octet-stream",
                    "public, max-age=31536000, immutable",
                ),
                (_, false) => ("application/octet-stream", "no-cache"),
            };
            reply(StatusCode::OK, content_type, cache, body)
        }
        Ok(Ok(None)) => text(StatusCode::NOT_FOUND, "not in the published tree\n"),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "reading the log");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the log could not be read\n",
            )
        }
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n"),
    }
}
