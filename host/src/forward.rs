//! Client connections, forwarded byte for byte to an enclave port. The host never parses these
//! bytes: in later stages they are TLS that terminates inside the enclave.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use scaffold::{Connections, Limit};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::Forward;
use crate::metrics::names;
use crate::pump::{Counters, Ending, pump};
use crate::state::Shared;

/// How long connecting to the enclave may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Accept clients on `listener` and forward each to the enclave until shutdown, then give open
/// connections `grace` to finish.
pub async fn serve(
    listener: TcpListener,
    forward: Forward,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let port = forward.enclave_port;
    let limit = Limit::new(forward.max_connections);
    let mut connections = Connections::new();
    let refused = |reason: &str| {
        shared.metrics.count(
            names::FORWARD_REFUSED,
            format!("port=\"{port}\",reason=\"{reason}\""),
        );
    };
    loop {
        let (client, peer) = tokio::select! {
            _ = shutdown.changed() => break,
            () = connections.reap() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(permit) = limit.admit() else {
            refused("limit");
            tracing::warn!(%peer, port, "at the connection limit; closing a client connection");
            continue;
        };
        // Never more than the enclave serves on this port: a connection it would refuse or
        // queue is closed here, where it costs the enclave nothing.
        if shared
            .port_limit(port)
            .is_some_and(|enclave_max| limit.in_use() > enclave_max)
        {
            refused("enclave_limit");
            tracing::warn!(%peer, port, "at the enclave's connection limit for this port; closing a client connection");
            continue;
        }
        let Some(endpoint) = shared.enclave() else {
            refused("enclave_not_ready");
            tracing::info!(%peer, port, "the enclave is not ready; closing a client connection");
            continue;
        };
        shared
            .metrics
            .count(names::FORWARD_CONNECTIONS, format!("port=\"{port}\""));
        let shared = shared.clone();
        let idle = forward.idle_timeout;
        connections.spawn(permit, async move {
            let started = Instant::now();
            let enclave = match tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect(port)).await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::warn!(%peer, port, error = %e, "cannot reach the enclave");
                    shared.metrics.count(
                        names::FORWARD_REFUSED,
                        format!("port=\"{port}\",reason=\"enclave_unreachable\""),
                    );
                    return;
                }
                Err(_) => {
                    shared.metrics.count(
                        names::FORWARD_REFUSED,
                        format!("port=\"{port}\",reason=\"enclave_timeout\""),
                    );
                    return;
                }
            };
            let metrics = &shared.metrics;
            metrics.observe_connect(started.elapsed());
            let _ = client.set_nodelay(true);
            metrics.forward_active.fetch_add(1, Ordering::Relaxed);
            let counters = Counters {
                a_to_b: &metrics.bytes_to_enclave,
                b_to_a: &metrics.bytes_from_enclave,
            };
            let ending = pump(client, enclave, idle, counters).await;
            metrics.forward_active.fetch_sub(1, Ordering::Relaxed);
            if ending == Ending::Idle {
                tracing::debug!(%peer, port, "closed an idle connection");
            }
        });
    }
    drop(listener);
    connections.drain(grace).await;
}
