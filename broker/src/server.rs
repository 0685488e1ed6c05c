//! `broker serve`: the release protocol over TCP. Each connection carries one release: hello,
//! challenge, attest, then release or denied. Decisions run on blocking threads, at most
//! `workers` at once (each holds one HSM session while it uses the key store).

use std::sync::Arc;
use std::time::Duration;

use sealing::release::Message;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use transport::frame::{read_frame, write_frame};

use crate::release::Broker;

/// Limits of the server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// Decisions at once.
    pub workers: usize,
    /// How long a peer may take to send each message.
    pub io_timeout: Duration,
    /// After shutdown is asked for, how long connections in flight may take to finish.
    pub grace: Duration,
}

/// Serve `listener` until `shutdown` turns true; then finish connections in flight within the
/// grace period.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let workers = Arc::new(Semaphore::new(limits.workers));
    let mut tasks = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "at the connection limit; closing a connection");
            continue;
        };
        let broker = broker.clone();
        let workers = workers.clone();
        tasks.spawn(async move {
            if let Err(e) = connection(stream, &broker, &workers, limits.io_timeout).await {
                tracing::info!(%peer, error = %e, "release connection ended early");
            }
            drop(permit);
        });
    }
    tracing::info!(
        in_flight = tasks.len(),
        "shutting down: finishing releases in flight"
    );
    let drained = tokio::time::timeout(limits.grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            cut = tasks.len(),
            "grace period over; closing the remaining connections"
        );
        tasks.abort_all();
    }
}

async fn receive(stream: &mut TcpStream, timeout: Duration) -> anyhow::Result<Message> {
    let body = tokio::time::timeout(timeout, read_frame(stream))
        .await
        .map_err(|_| anyhow::anyhow!("no message within {}", attest::format_duration(timeout)))??;
    Ok(Message::decode(&body)?)
}

async fn send(stream: &mut TcpStream, message: &Message, timeout: Duration) -> anyhow::Result<()> {
    tokio::time::timeout(timeout, write_frame(stream, &message.encode()))
        .await
        .map_err(|_| anyhow::anyhow!("the peer did not read the answer in time"))??;
    Ok(())
}

async fn connection(
    mut stream: TcpStream,
    broker: &Arc<Broker>,
    workers: &Arc<Semaphore>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let protocol = |got: &Message, expected: &str| Message::Denied {
        reason: "protocol".into(),
        message: format!("expected {expected}, got {}", got.op()),
    };
    let model = match receive(&mut stream, timeout).await? {
        Message::Hello { model_id } => model_id,
        other => return send(&mut stream, &protocol(&other, "hello"), timeout).await,
    };
    let answer = {
        let (broker, model) = (broker.clone(), model.clone());
        tokio::task::spawn_blocking(move || broker.hello(&model)).await?
    };
    send(&mut stream, &answer, timeout).await?;
    if !matches!(answer, Message::Challenge { .. }) {
        return Ok(());
    }
    let (nonce, document) = match receive(&mut stream, timeout).await? {
        Message::Attest { nonce, document } => (nonce, document),
        other => return send(&mut stream, &protocol(&other, "attest"), timeout).await,
    };
    let _worker = workers.acquire().await?;
    let (answer, timings) = {
        let broker = broker.clone();
        tokio::task::spawn_blocking(move || broker.attest(&model, &nonce, &document)).await?
    };
    tracing::debug!(
        verify_us = timings.verify.as_micros(),
        key_store_us = timings.key_store.as_micros(),
        log_us = timings.log.as_micros(),
        sign_us = timings.sign.as_micros(),
        "decided"
    );
    send(&mut stream, &answer, timeout).await
}
