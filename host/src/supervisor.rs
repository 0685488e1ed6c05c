//! Keeping the enclave running: launch it, wait until it answers a health request, probe it
//! while it runs, and start it again with exponential back-off when it exits or stops
//! answering. On shutdown it is stopped cleanly.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use protocol::frame::{read_frame, write_frame};
use protocol::wire::{ErrorCode, Health, Request, RequestBody, Response, ResponseBody, WireError};
use tokio::sync::watch;
use tokio::time::Instant;
use transport::Endpoint;

use crate::config::EnclaveSettings;
use crate::launcher::launch;
use crate::state::Shared;

/// How often a ready enclave is probed.
const PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Consecutive failed probes after which the enclave is restarted.
const PROBE_FAILURES_BEFORE_RESTART: u32 = 3;
/// An enclave that ran this long resets the back-off.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// Why a health probe failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The enclave's port could not be reached.
    #[error("cannot connect: {0}")]
    Connect(#[source] std::io::Error),
    /// The exchange broke: framing, or a message that is not a response.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The enclave answered something other than its health.
    #[error("the enclave answered a health request with `{0}`")]
    Unexpected(&'static str),
    /// The enclave refused the health request.
    #[error("the enclave refused the health request: {code}: {message}")]
    Refused {
        /// Its error code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Never ready in time.
    #[error("not ready within {within}: {last}")]
    NotReady {
        /// The time allowed.
        within: String,
        /// The last probe's failure.
        last: Box<ProbeError>,
    },
    /// The enclave ended before it was ready.
    #[error("exited before it was ready ({0})")]
    Exited(String),
}

/// Ask the enclave for its health over the control protocol.
pub async fn probe(endpoint: &Endpoint, port: u32) -> Result<Health, ProbeError> {
    let exchange = async {
        let mut stream = endpoint.connect(port).await.map_err(ProbeError::Connect)?;
        let request = Request {
            id: 0,
            body: RequestBody::Health,
        };
        write_frame(&mut stream, &request.encode()).await?;
        let response = Response::decode(&read_frame(&mut stream).await?)?;
        match response.body {
            ResponseBody::Health(health) => Ok(health),
            ResponseBody::Attestation { .. } => Err(ProbeError::Unexpected("attestation")),
            ResponseBody::Error { code, message } => Err(ProbeError::Refused { code, message }),
            _ => Err(ProbeError::Unexpected("another operation")),
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .map_err(|_| ProbeError::Timeout(PROBE_TIMEOUT))?
}

async fn wait_ready(
    endpoint: &Endpoint,
    port: u32,
    timeout: Duration,
) -> Result<Health, ProbeError> {
    let deadline = Instant::now() + timeout;
    loop {
        match probe(endpoint, port).await {
            Ok(health) => return Ok(health),
            Err(e) if Instant::now() >= deadline => {
                return Err(ProbeError::NotReady {
                    within: attest::format_duration(timeout),
                    last: Box::new(e),
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Run the enclave until `shutdown` becomes true.
pub async fn supervise(
    settings: EnclaveSettings,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    for left in crate::launcher::end_leftovers(&settings.launch).await {
        tracing::warn!(enclave = %left, "ended an enclave a previous run of the host left running");
    }
    let mut backoff = settings.restart_backoff;
    let mut launches = 0u64;
    while !*shutdown.borrow() {
        launches += 1;
        let ran_for = run_once(&settings, &shared, &mut shutdown, launches > 1).await;
        if *shutdown.borrow() {
            break;
        }
        if ran_for.is_some_and(|d| d >= STABLE_AFTER) {
            backoff = settings.restart_backoff;
        }
        shared.update_status(|s| s.state = "restarting");
        tracing::warn!(
            backoff = %attest::format_duration(backoff),
            "restarting the enclave after back-off"
        );
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => break,
        }
        backoff = (backoff * 2).min(settings.restart_backoff_max);
    }
    shared.update_status(|s| s.state = "stopped");
}

/// Launch once and supervise until the enclave ends or shutdown; returns how long it was
/// ready, if it ever was.
async fn run_once(
    settings: &EnclaveSettings,
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
    is_restart: bool,
) -> Option<Duration> {
    let metrics = &shared.metrics;
    let mut running = match launch(&settings.launch).await {
        Ok(running) => running,
        Err(e) => {
            metrics
                .enclave_launch_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "cannot launch the enclave");
            shared.update_status(|s| s.last_exit = Some(format!("launch failed: {e}")));
            return None;
        }
    };
    if is_restart {
        metrics.enclave_restarts.fetch_add(1, Ordering::Relaxed);
        shared.update_status(|s| s.restarts += 1);
    }
    let (id, pid) = (running.id.clone(), running.pid());
    shared.update_status(|s| {
        s.state = "starting";
        s.id = Some(id.clone());
        s.pid = pid;
    });
    tracing::info!(enclave = %id, endpoint = %running.endpoint, "enclave launched");

    let endpoint = running.endpoint.clone();
    let ready = tokio::select! {
        ready = wait_ready(&endpoint, settings.health_port, settings.ready_timeout) => ready,
        how = running.exited() => Err(ProbeError::Exited(how)),
        _ = shutdown.changed() => {
            running.stop().await;
            return None;
        }
    };
    let health = match ready {
        Ok(health) => health,
        Err(e) => {
            metrics
                .enclave_launch_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(enclave = %id, error = %e, "the enclave did not become ready");
            shared.update_status(|s| s.last_exit = Some(e.to_string()));
            running.stop().await;
            return None;
        }
    };
    let digest: String = health
        .config_digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    tracing::info!(
        enclave = %id,
        nsm = health.nsm.as_str(),
        config_sha384 = %digest,
        "enclave ready"
    );
    shared.update_status(|s| {
        s.state = "ready";
        s.nsm = Some(health.nsm.as_str());
        s.config_sha384 = Some(digest);
    });
    shared.set_port_limits(&health.port_limits);
    for (port, max) in &health.port_limits {
        tracing::info!(enclave = %id, port, max_connections = max, "the enclave's connection limit");
    }
    shared.set_enclave(Some(endpoint.clone()));
    let ready_at = Instant::now();

    let mut probes = tokio::time::interval(PROBE_INTERVAL);
    probes.reset();
    let mut failures = 0u32;
    let how = loop {
        tokio::select! {
            how = running.exited() => break how,
            _ = shutdown.changed() => {
                shared.set_enclave(None);
                tracing::info!(enclave = %id, "stopping the enclave");
                running.stop().await;
                return Some(ready_at.elapsed());
            }
            _ = probes.tick() => match probe(&endpoint, settings.health_port).await {
                Ok(health) => {
                    failures = 0;
                    shared.set_port_limits(&health.port_limits);
                    shared.set_enclave(Some(endpoint.clone()));
                }
                Err(e) => {
                    failures += 1;
                    shared.set_enclave(None);
                    tracing::warn!(enclave = %id, failures, error = %e, "health probe failed");
                    if failures >= PROBE_FAILURES_BEFORE_RESTART {
                        running.stop().await;
                        break "stopped answering health probes".to_owned();
                    }
                }
            },
        }
    };
    shared.set_enclave(None);
    shared.set_port_limits(&[]);
    tracing::warn!(enclave = %id, exit = %how, "the enclave stopped");
    shared.update_status(|s| {
        s.state = "restarting";
        s.last_exit = Some(how);
        s.nsm = None;
        s.config_sha384 = None;
    });
    Some(ready_at.elapsed())
}
