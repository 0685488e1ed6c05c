//! One plain HTTP/1.1 server on the bounded accept loop: what `attest log serve` and the
//! witness serve. TLS-terminating servers (the enclave's API, the broker) run their own loops
//! on the same [`Connections`] and [`Limit`].

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::{Connections, Limit, shutdown_signal};

/// The bounds of [`serve_http`].
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Connections served at once; more are closed as they arrive.
    pub max_connections: usize,
    /// How long a request's headers may take to arrive.
    pub header_timeout: Duration,
    /// How long a connection may stay open in all, however busy.
    pub lifetime: Duration,
    /// How long connections still open at shutdown get to finish.
    pub grace: Duration,
}

/// Serve HTTP/1.1 on `listener` until SIGTERM or SIGINT, each request answered by `answer`,
/// within `limits`; then wait up to `limits.grace` for the connections still open. Failed
/// accepts are logged and retried after 50 ms; a connection over the limit is closed at once.
pub async fn serve_http<F, Fut>(listener: TcpListener, limits: HttpLimits, answer: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let mut connections = Connections::new();
    let limit = Limit::new(limits.max_connections.max(1));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            () = connections.reap() => continue,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(permit) = limit.admit() else {
            tracing::warn!(%peer, "at the connection limit; closing a connection");
            continue;
        };
        // Headers and body leave in separate writes: without this, Nagle's algorithm holds the
        // body until the client's delayed acknowledgement (40 ms) on every request.
        let _ = stream.set_nodelay(true);
        let answer = answer.clone();
        connections.spawn(permit, async move {
            let service = hyper::service::service_fn(move |request| {
                let answer = answer.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(request).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            if tokio::time::timeout(limits.lifetime, served).await.is_err() {
                tracing::info!(%peer, lifetime = ?limits.lifetime, "connection closed at the end of its lifetime");
            }
        });
    }
    connections.drain(limits.grace).await;
}
