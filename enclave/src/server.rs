//! The control protocol's server: health, and fresh attestation documents over a caller's nonce.
//! It keeps nothing between requests: each answer depends only on the request, the measured
//! configuration and the NSM.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use data_encoding::HEXLOWER;
use protocol::frame::{read_frame, write_frame};
use protocol::wire::{ErrorCode, Health, Request, RequestBody, Response, ResponseBody, WireError};
use scaffold::{Connections, Limit};
use tokio::io::AsyncWriteExt;
use transport::{Connection, Listener};

use crate::config::Config;
use crate::model::ModelSlot;
use protocol::nsm::{AttestationRequest, Nsm};

/// How long a refusal (`busy`, a framing error) may take to write before the connection is
/// dropped anyway.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a probe on the health port may take to send its request.
const HEALTH_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// One port's connection limit: each port has its own, so clients of one port never take the
/// capacity of another, and the host's health probes have a port clients cannot reach.
#[derive(Debug)]
struct Gate {
    port: u32,
    limit: Limit,
}

impl Gate {
    fn new(port: u32, max: usize) -> Self {
        Gate {
            port,
            limit: Limit::new(max),
        }
    }
}

/// What a port serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Control,
    Health,
    Api,
}

/// What every connection shares: the NSM and what health reports.
pub struct Service {
    nsm: Arc<dyn Nsm>,
    health: Health,
    model: Option<Arc<ModelSlot>>,
    idle_timeout: Duration,
    control: Gate,
    health_port: Gate,
    api: Option<(Gate, Arc<inference::Api>)>,
}

impl core::fmt::Debug for Service {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Service")
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A service for an enclave booted with `config` on `nsm`; `model` is the slot its sealed
    /// model is acquired into, if it has one.
    pub fn new(nsm: Arc<dyn Nsm>, config: &Config, model: Option<Arc<ModelSlot>>) -> Self {
        Service {
            health: Health {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                nsm: nsm.kind(),
                config_digest: config.digest(),
                model: None,
                port_limits: Vec::new(),
            },
            model,
            nsm,
            idle_timeout: config.idle_timeout,
            control: Gate::new(config.control_port, config.max_connections),
            health_port: Gate::new(config.health_port, crate::config::HEALTH_CONNECTIONS),
            api: None,
        }
    }

    /// Also serve the inference API on vsock `port`, at most `max_connections` at once: its
    /// connections are TLS, handed to `api`.
    #[must_use]
    pub fn with_api(mut self, port: u32, max_connections: usize, api: Arc<inference::Api>) -> Self {
        self.api = Some((Gate::new(port, max_connections), api));
        self
    }

    /// The ports to listen on: the control port, the health port, and the API's if there is
    /// one.
    pub fn ports(&self) -> Vec<u32> {
        let mut ports = vec![self.control.port, self.health_port.port];
        ports.extend(self.api.as_ref().map(|(gate, _)| gate.port));
        ports
    }

    /// The ports clients reach through the host, and how many connections each serves.
    fn port_limits(&self) -> Vec<(u32, u32)> {
        let mut limits: Vec<(u32, u32)> = [Some(&self.control), self.api.as_ref().map(|(g, _)| g)]
            .into_iter()
            .flatten()
            .map(|g| (g.port, u32::try_from(g.limit.max()).unwrap_or(u32::MAX)))
            .collect();
        limits.sort_unstable();
        limits
    }

    fn gate(&self, port: u32) -> Option<(&Gate, Role)> {
        if port == self.control.port {
            Some((&self.control, Role::Control))
        } else if port == self.health_port.port {
            Some((&self.health_port, Role::Health))
        } else {
            self.api
                .as_ref()
                .filter(|(gate, _)| gate.port == port)
                .map(|(gate, _)| (gate, Role::Api))
        }
    }

    /// Answer one decoded request.
    pub async fn answer(&self, request: Request) -> Response {
        let body = match request.body {
            RequestBody::Health => ResponseBody::Health(Health {
                model: self.model.as_ref().map(|m| m.status()),
                port_limits: self.port_limits(),
                ..self.health.clone()
            }),
            RequestBody::Attestation { nonce } => {
                let nsm = self.nsm.clone();
                let attested = tokio::task::spawn_blocking(move || {
                    nsm.attest(&AttestationRequest {
                        nonce: Some(nonce.as_bytes()),
                        ..AttestationRequest::default()
                    })
                })
                .await;
                match attested {
                    Ok(Ok(document)) => {
                        tracing::info!(
                            id = request.id,
                            document_sha384 = %short_digest(&document),
                            "attestation document issued"
                        );
                        ResponseBody::Attestation { document }
                    }
                    Ok(Err(e)) => {
                        tracing::error!(id = request.id, error = %e, "NSM attestation failed");
                        return Response::error(request.id, ErrorCode::NsmFailure, &e.to_string());
                    }
                    Err(_) => {
                        return Response::error(
                            request.id,
                            ErrorCode::NsmFailure,
                            "the attestation task failed",
                        );
                    }
                }
            }
            _ => {
                return Response::error(request.id, ErrorCode::UnknownOperation, "not served here");
            }
        };
        Response {
            id: request.id,
            body,
        }
    }

    /// Serve one connection until the peer closes it, goes idle, or breaks the framing.
    /// Malformed messages are answered and the connection stays usable; framing errors are
    /// answered and the connection is closed, since the frame boundary is lost.
    pub async fn serve_connection<S: Connection>(&self, stream: S) {
        self.serve_control(stream, Role::Control).await;
    }

    async fn serve_control<S: Connection>(&self, mut stream: S, role: Role) {
        let idle_timeout = match role {
            Role::Health => HEALTH_IDLE_TIMEOUT,
            Role::Control | Role::Api => self.idle_timeout,
        };
        loop {
            let body = match tokio::time::timeout(idle_timeout, read_frame(&mut stream)).await {
                Ok(Ok(body)) => body,
                Ok(Err(WireError::Closed)) => return,
                Ok(Err(e)) => {
                    tracing::info!(error = %e, "closing a connection after a framing error");
                    refuse(&mut stream, Response::error(0, e.code(), &e.to_string())).await;
                    return;
                }
                Err(_) => {
                    let message = format!(
                        "no complete request within {}",
                        attest::format_duration(idle_timeout)
                    );
                    refuse(
                        &mut stream,
                        Response::error(0, ErrorCode::TruncatedFrame, &message),
                    )
                    .await;
                    return;
                }
            };
            let response = match Request::decode(&body) {
                Ok(request) if role == Role::Health && request.body != RequestBody::Health => {
                    Response::error(
                        request.id,
                        ErrorCode::UnknownOperation,
                        "the health port answers health requests only",
                    )
                }
                Ok(request) => {
                    tracing::debug!(id = request.id, "request");
                    self.answer(request).await
                }
                Err(e) => {
                    tracing::info!(error = %e, "refused a malformed request");
                    Response::error(0, e.code(), &e.to_string())
                }
            };
            if write_frame(&mut stream, &response.encode()).await.is_err() {
                return;
            }
        }
    }

    /// Accept connections until `shutdown` completes, then give those in flight `grace` to
    /// finish.
    pub async fn run<S: Connection>(
        self: Arc<Self>,
        mut listener: Listener<S>,
        shutdown: impl Future<Output = ()>,
        grace: Duration,
    ) {
        let mut connections = Connections::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                () = connections.reap() => {}
                accepted = listener.accept() => {
                    let Ok((port, mut stream)) = accepted else { break };
                    let Some((gate, role)) = self.gate(port) else { continue };
                    match (gate.limit.admit(), role) {
                        (Some(permit), Role::Api) => {
                            if let Some((_, api)) = &self.api {
                                let api = api.clone();
                                connections.spawn(permit, async move {
                                    api.serve_connection(stream).await;
                                });
                            }
                        }
                        (Some(permit), role) => {
                            let service = self.clone();
                            connections.spawn(permit, async move {
                                service.serve_control(stream, role).await;
                            });
                        }
                        // TLS clients cannot read a control-protocol frame: just close.
                        (None, Role::Api) => {
                            tracing::warn!(port, "at the API port's connection limit; closing a connection");
                        }
                        (None, _) => {
                            tracing::warn!(port, "at the port's connection limit; refusing a connection");
                            connections.spawn_unlimited(async move {
                                let busy = Response::error(0, ErrorCode::Busy, "at the connection limit");
                                refuse(&mut stream, busy).await;
                            });
                        }
                    }
                }
            }
        }
        drop(listener);
        connections.drain(grace).await;
    }
}

async fn refuse<S: Connection>(stream: &mut S, response: Response) {
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
        let _ = write_frame(stream, &response.encode()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

fn short_digest(bytes: &[u8]) -> String {
    let digest = digest::digest(&digest::SHA384, bytes);
    HEXLOWER.encode(digest.as_ref().get(..8).unwrap_or_default())
}
