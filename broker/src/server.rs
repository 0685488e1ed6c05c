//! `broker serve`: the release protocol over TCP. Each connection carries one release (hello,
//! challenge, attest, then release or denied) or one lease renewal (hello, challenge, renew,
//! then renewed or denied). Decisions run on blocking threads, at most
//! `workers` at once (each holds one HSM session while it uses the key store).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use protocol::frame::{read_frame, write_frame};
use protocol::wire::WireError;
use scaffold::{Connections, Limit};
use sealing::Id;
use sealing::release::Message;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

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
    let limit = Limit::new(limits.max_connections);
    let workers = Arc::new(Semaphore::new(limits.workers));
    let mut connections = Connections::new();
    let mut flush = tokio::time::interval(crate::release::DENIAL_WINDOW);
    flush.reset();
    // Revocations recorded by `broker revoke` are logged within this period, traffic or not, and
    // an approved policy change takes effect.
    let mut revocations = tokio::time::interval(crate::revocation::POLL);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.changed() => break,
            _ = flush.tick() => {
                // In the background: accepting never waits for the log's fsync.
                let broker = broker.clone();
                drop(tokio::task::spawn_blocking(move || broker.flush_denials()));
                continue;
            }
            _ = revocations.tick() => {
                let broker = broker.clone();
                drop(tokio::task::spawn_blocking(move || {
                    broker.log_revocations();
                    broker.refresh_policy();
                }));
                continue;
            }
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
        let broker = broker.clone();
        let workers = workers.clone();
        connections.spawn(permit, async move {
            if let Err(e) =
                connection(stream, peer.ip(), &broker, &workers, limits.io_timeout).await
            {
                tracing::info!(%peer, error = %e, "release connection ended early");
            }
        });
    }
    tracing::info!(
        in_flight = connections.len(),
        "shutting down: finishing releases in flight"
    );
    connections.drain(limits.grace).await;
    let _ = tokio::task::spawn_blocking(move || broker.flush_denials()).await;
}

/// Why a connection ended before its release was decided and answered.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    /// The peer sent nothing within the time allowed.
    #[error("no message within {0}")]
    Silent(String),
    /// The peer did not read the answer within the time allowed.
    #[error("the peer did not read the answer in time")]
    SlowReader,
    /// The peer closed, or broke the framing.
    #[error(transparent)]
    Frame(#[from] WireError),
    /// A decision's task failed.
    #[error("the decision's task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The worker pool is closed (the server is stopping).
    #[error("no worker: the server is stopping")]
    Stopping(#[from] tokio::sync::AcquireError),
}

/// Why no message was received.
enum Received {
    /// Nothing usable arrived: the peer went silent, closed, or broke the framing.
    Io(ConnectionError),
    /// A frame arrived that is not a release message.
    Malformed(sealing::release::ReleaseError),
}

async fn receive(stream: &mut TcpStream, timeout: Duration) -> Result<Message, Received> {
    let body = tokio::time::timeout(timeout, read_frame(stream))
        .await
        .map_err(|_| Received::Io(ConnectionError::Silent(attest::format_duration(timeout))))?
        .map_err(|e| Received::Io(e.into()))?;
    Message::decode(&body).map_err(Received::Malformed)
}

async fn send(
    stream: &mut TcpStream,
    message: &Message,
    timeout: Duration,
) -> Result<(), ConnectionError> {
    tokio::time::timeout(timeout, write_frame(stream, &message.encode()))
        .await
        .map_err(|_| ConnectionError::SlowReader)??;
    Ok(())
}

/// Refuse a connection that broke the protocol: logged (within the peer's budget), answered,
/// closed.
async fn refuse_protocol(
    stream: &mut TcpStream,
    broker: &Arc<Broker>,
    model: Option<Id>,
    peer: IpAddr,
    message: String,
    timeout: Duration,
) -> Result<(), ConnectionError> {
    let broker = broker.clone();
    let answer =
        tokio::task::spawn_blocking(move || broker.deny_protocol(model.as_ref(), peer, message))
            .await?;
    send(stream, &answer, timeout).await
}

async fn connection(
    mut stream: TcpStream,
    peer: IpAddr,
    broker: &Arc<Broker>,
    workers: &Arc<Semaphore>,
    timeout: Duration,
) -> Result<(), ConnectionError> {
    let expected = |got: &Message, expected: &str| format!("expected {expected}, got {}", got.op());
    let model = match receive(&mut stream, timeout).await {
        Ok(Message::Hello { model_id }) => model_id,
        Ok(other) => {
            let message = expected(&other, "hello");
            return refuse_protocol(&mut stream, broker, None, peer, message, timeout).await;
        }
        Err(Received::Malformed(e)) => {
            let message = format!("not a release message: {e}");
            return refuse_protocol(&mut stream, broker, None, peer, message, timeout).await;
        }
        Err(Received::Io(e)) => return Err(e),
    };
    let answer = {
        let (broker, model) = (broker.clone(), model.clone());
        tokio::task::spawn_blocking(move || broker.hello(&model, peer)).await?
    };
    send(&mut stream, &answer, timeout).await?;
    if !matches!(answer, Message::Challenge { .. }) {
        return Ok(());
    }
    let request = match receive(&mut stream, timeout).await {
        Ok(m @ (Message::Attest { .. } | Message::Renew { .. })) => m,
        Ok(other) => {
            let message = expected(&other, "attest or renew");
            return refuse_protocol(&mut stream, broker, Some(model), peer, message, timeout).await;
        }
        Err(Received::Malformed(e)) => {
            let message = format!("not a release message: {e}");
            return refuse_protocol(&mut stream, broker, Some(model), peer, message, timeout).await;
        }
        Err(Received::Io(e)) => return Err(e),
    };
    let _worker = workers.acquire().await?;
    let (answer, timings) = {
        let broker = broker.clone();
        tokio::task::spawn_blocking(move || match request {
            Message::Renew {
                nonce,
                key_id,
                document,
            } => broker.renew(&model, &nonce, &key_id, &document, peer),
            Message::Attest { nonce, document } => broker.attest(&model, &nonce, &document, peer),
            // Only the two above reach here.
            other => (
                broker.deny_protocol(Some(&model), peer, format!("unexpected {}", other.op())),
                crate::release::Timings::default(),
            ),
        })
        .await?
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
