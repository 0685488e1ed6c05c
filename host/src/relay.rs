//! The enclave's way out: each configured host port accepts the enclave's connections and
//! relays them to exactly one allowlisted TCP address, like `vsock-proxy`. A port with no relay
//! has no listener, so the enclave's connection to it is refused; the enclave cannot name a
//! destination.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use transport::{Connection, Listener};

use crate::config::Relay;
use crate::metrics::names;
use crate::pump::{Counters, pump};
use crate::state::Shared;
use scaffold::{Connections, Limit};

/// How long connecting to a relay target may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Relay the enclave's connections on `listener` to `relay.target` until shutdown.
pub async fn serve<S: Connection>(
    mut listener: Listener<S>,
    relay: Relay,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let port = relay.port;
    let limit = Limit::new(relay.max_connections);
    let mut connections = Connections::new();
    let target: Arc<str> = relay.target.into();
    loop {
        let enclave = tokio::select! {
            _ = shutdown.changed() => break,
            () = connections.reap() => continue,
            accepted = listener.accept() => match accepted {
                Ok((_, stream)) => stream,
                Err(e) => {
                    tracing::error!(port, error = %e, "the relay's listener failed");
                    break;
                }
            },
        };
        let Some(permit) = limit.admit() else {
            shared.metrics.count(
                names::RELAY_REFUSED,
                format!("port=\"{port}\",reason=\"limit\""),
            );
            tracing::warn!(
                port,
                "relay at its connection limit; closing an enclave connection"
            );
            continue;
        };
        let shared = shared.clone();
        let target = target.clone();
        let idle = relay.idle_timeout;
        connections.spawn(permit, async move {
            let started = Instant::now();
            let outbound =
                match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&*target)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::warn!(port, %target, error = %e, "cannot reach the relay target");
                        shared.metrics.count(
                            names::RELAY_REFUSED,
                            format!("port=\"{port}\",reason=\"target_unreachable\""),
                        );
                        return;
                    }
                    Err(_) => {
                        shared.metrics.count(
                            names::RELAY_REFUSED,
                            format!("port=\"{port}\",reason=\"target_timeout\""),
                        );
                        return;
                    }
                };
            let metrics = &shared.metrics;
            metrics.observe_connect(started.elapsed());
            metrics.count(names::RELAY_CONNECTIONS, format!("port=\"{port}\""));
            metrics.relay_active.fetch_add(1, Ordering::Relaxed);
            let _ = outbound.set_nodelay(true);
            let counters = Counters {
                a_to_b: &metrics.relay_bytes_out,
                b_to_a: &metrics.relay_bytes_in,
            };
            pump(enclave, outbound, idle, counters).await;
            metrics.relay_active.fetch_sub(1, Ordering::Relaxed);
        });
    }
    drop(listener);
    connections.drain(grace).await;
}
