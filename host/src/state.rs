//! What the host's tasks share: where the enclave can be reached (if it is ready), its status
//! for operators, and the metrics.

use std::sync::Mutex;
use std::sync::atomic::Ordering;

use serde::Serialize;
use tokio::sync::watch;
use transport::Endpoint;

use crate::metrics::Metrics;

/// The enclave's lifecycle as operators see it (`GET /status`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    /// `starting`, `ready`, `restarting` or `stopped`.
    pub state: &'static str,
    /// The process id (development) or Nitro enclave id of the current enclave.
    pub id: Option<String>,
    /// Its process id, in development.
    pub pid: Option<u32>,
    /// How many times it has been restarted.
    pub restarts: u64,
    /// How the last enclave ended.
    pub last_exit: Option<String>,
    /// The NSM the ready enclave reports.
    pub nsm: Option<&'static str>,
    /// The ready enclave's configuration digest (hex), as it reports it (unverified).
    pub config_sha384: Option<String>,
}

/// State shared by the supervisor, forwarders, relays and the admin endpoint.
#[derive(Debug)]
pub struct Shared {
    /// Metrics.
    pub metrics: Metrics,
    endpoint: watch::Sender<Option<Endpoint>>,
    status: Mutex<Status>,
    /// Per enclave port, how many connections the ready enclave serves at once.
    port_limits: Mutex<Vec<(u32, u32)>>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            metrics: Metrics::default(),
            endpoint: watch::Sender::new(None),
            status: Mutex::new(Status {
                state: "starting",
                ..Status::default()
            }),
            port_limits: Mutex::new(Vec::new()),
        }
    }
}

impl Shared {
    /// Where the enclave can be reached, if it is ready.
    pub fn enclave(&self) -> Option<Endpoint> {
        self.endpoint.borrow().clone()
    }

    /// Announce that the enclave is ready at `endpoint`, or (with `None`) that it is not.
    pub fn set_enclave(&self, endpoint: Option<Endpoint>) {
        let ready = u64::from(endpoint.is_some());
        self.metrics.enclave_ready.store(ready, Ordering::Relaxed);
        self.endpoint.send_replace(endpoint);
    }

    /// Record the per-port connection limits the enclave reports in its health.
    pub fn set_port_limits(&self, limits: &[(u32, u32)]) {
        if let Ok(mut current) = self.port_limits.lock() {
            limits.clone_into(&mut current);
        }
    }

    /// How many connections the enclave serves at once on `port`, if it said.
    pub fn port_limit(&self, port: u32) -> Option<usize> {
        let limits = self.port_limits.lock().ok()?;
        let (_, max) = limits.iter().find(|(p, _)| *p == port)?;
        usize::try_from(*max).ok()
    }

    /// A copy of the status.
    pub fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Change the status.
    pub fn update_status(&self, change: impl FnOnce(&mut Status)) {
        if let Ok(mut status) = self.status.lock() {
            change(&mut status);
        }
    }

    /// Wait until the enclave's readiness changes.
    pub fn watch_enclave(&self) -> watch::Receiver<Option<Endpoint>> {
        self.endpoint.subscribe()
    }
}
