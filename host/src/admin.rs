//! The operator's endpoint, plain HTTP/1.1 on a private address: `GET /healthz` (liveness: the
//! host runs), `GET /readyz` (readiness: the enclave answers), `GET /status` (JSON) and
//! `GET /metrics` (Prometheus). One request per connection; requests are bounded in size and
//! time.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::state::Shared;

/// The largest request head read.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// How long a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests served at once.
const MAX_CONNECTIONS: usize = 32;

/// Serve the admin endpoint on `listener` until shutdown.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limit = scaffold::Limit::new(MAX_CONNECTIONS);
    let mut connections = scaffold::Connections::new();
    loop {
        let stream = tokio::select! {
            _ = shutdown.changed() => break,
            () = connections.reap() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(permit) = limit.admit() else {
            continue;
        };
        let shared = shared.clone();
        connections.spawn(permit, async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &shared)).await;
        });
    }
    connections.drain(Duration::from_secs(1)).await;
}

async fn answer(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
        if head.len() > MAX_REQUEST_HEAD {
            return respond(&mut stream, 431, "text/plain", "request head too large\n").await;
        }
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        return respond(&mut stream, 405, "text/plain", "only GET\n").await;
    }
    match path {
        "/healthz" => respond(&mut stream, 200, "text/plain", "ok\n").await,
        "/readyz" if shared.enclave().is_some() => {
            respond(&mut stream, 200, "text/plain", "ready\n").await
        }
        "/readyz" => respond(&mut stream, 503, "text/plain", "the enclave is not ready\n").await,
        "/status" => {
            let body = serde_json::to_string(&shared.status()).unwrap_or_else(|_| "{}".into());
            respond(&mut stream, 200, "application/json", &(body + "\n")).await
        }
        "/metrics" => {
            let body = shared.metrics.render();
            respond(&mut stream, 200, "text/plain; version=0.0.4", &body).await
        }
        _ => respond(&mut stream, 404, "text/plain", "not found\n").await,
    }
}

async fn respond(stream: &mut TcpStream, code: u16, kind: &str, body: &str) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
