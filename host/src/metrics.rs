//! Prometheus text-format metrics: counts, gauges and latencies about connections and the
//! enclave's lifecycle. Nothing about the bytes' content is ever recorded.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 9] = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0];

/// The host's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// 1 while the enclave answers its readiness probe.
    pub enclave_ready: AtomicU64,
    /// Times the enclave stopped and was started again.
    pub enclave_restarts: AtomicU64,
    /// Launches that failed or never became ready.
    pub enclave_launch_failures: AtomicU64,
    /// Forwarded client connections open now.
    pub forward_active: AtomicU64,
    /// Relayed enclave connections open now.
    pub relay_active: AtomicU64,
    /// Bytes from clients to the enclave.
    pub bytes_to_enclave: AtomicU64,
    /// Bytes from the enclave to clients.
    pub bytes_from_enclave: AtomicU64,
    /// Bytes the enclave sent out through relays.
    pub relay_bytes_out: AtomicU64,
    /// Bytes relays brought back to the enclave.
    pub relay_bytes_in: AtomicU64,
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
    connect_latency: Histogram,
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Metrics {
    /// Add one to the counter `name` with these labels (`key="value"` pairs, already escaped).
    pub fn count(&self, name: &'static str, labels: String) {
        if let Ok(mut counters) = self.counters.lock() {
            *counters.entry((name, labels)).or_default() += 1;
        }
    }

    /// Record how long connecting to the enclave or a relay target took.
    pub fn observe_connect(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let histogram = &self.connect_latency;
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&histogram.buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        histogram.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        histogram.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The current value of a labelled counter (for status and tests).
    pub fn counter(&self, name: &str, labels: &str) -> u64 {
        self.counters
            .lock()
            .ok()
            .and_then(|c| c.get(&(counter_key(name)?, labels.to_owned())).copied())
            .unwrap_or(0)
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let gauges = [
            (
                "host_enclave_ready",
                "1 while the enclave answers its readiness probe.",
                &self.enclave_ready,
                "gauge",
            ),
            (
                "host_enclave_restarts_total",
                "Times the enclave stopped and was started again.",
                &self.enclave_restarts,
                "counter",
            ),
            (
                "host_enclave_launch_failures_total",
                "Launches that failed or never became ready.",
                &self.enclave_launch_failures,
                "counter",
            ),
            (
                "host_forward_active_connections",
                "Forwarded client connections open now.",
                &self.forward_active,
                "gauge",
            ),
            (
                "host_relay_active_connections",
                "Relayed enclave connections open now.",
                &self.relay_active,
                "gauge",
            ),
        ];
        for (name, help, value, kind) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        let _ = writeln!(
            out,
            "# HELP host_forward_bytes_total Bytes forwarded between clients and the enclave.\n\
             # TYPE host_forward_bytes_total counter"
        );
        let _ = writeln!(
            out,
            "host_forward_bytes_total{{direction=\"to_enclave\"}} {}",
            self.bytes_to_enclave.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "host_forward_bytes_total{{direction=\"from_enclave\"}} {}",
            self.bytes_from_enclave.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP host_relay_bytes_total Bytes relayed between the enclave and allowlisted targets.\n\
             # TYPE host_relay_bytes_total counter"
        );
        let _ = writeln!(
            out,
            "host_relay_bytes_total{{direction=\"out\"}} {}",
            self.relay_bytes_out.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "host_relay_bytes_total{{direction=\"in\"}} {}",
            self.relay_bytes_in.load(Ordering::Relaxed)
        );
        if let Ok(counters) = self.counters.lock() {
            let mut last = "";
            for ((name, labels), value) in counters.iter() {
                if *name != last {
                    let _ = writeln!(out, "# TYPE {name} counter");
                    last = name;
                }
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
        let h = &self.connect_latency;
        let _ = writeln!(
            out,
            "# HELP host_connect_seconds Time to connect to the enclave or a relay target.\n\
             # TYPE host_connect_seconds histogram"
        );
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&h.buckets) {
            let _ = writeln!(
                out,
                "host_connect_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = h.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "host_connect_seconds_bucket{{le=\"+Inf\"}} {count}");
        let sum = Duration::from_micros(h.sum_micros.load(Ordering::Relaxed)).as_secs_f64();
        let _ = writeln!(
            out,
            "host_connect_seconds_sum {sum}\nhost_connect_seconds_count {count}"
        );
        out
    }
}

/// The counters this host records, so that lookups by name can use the static key.
const COUNTERS: [&str; 4] = [
    "host_forward_connections_total",
    "host_forward_refused_total",
    "host_relay_connections_total",
    "host_relay_refused_total",
];

fn counter_key(name: &str) -> Option<&'static str> {
    COUNTERS.iter().copied().find(|c| *c == name)
}

/// The names of the labelled counters.
pub mod names {
    /// Client connections accepted, by enclave port.
    pub const FORWARD_CONNECTIONS: &str = "host_forward_connections_total";
    /// Client connections closed without forwarding, by port and reason.
    pub const FORWARD_REFUSED: &str = "host_forward_refused_total";
    /// Enclave connections relayed, by port.
    pub const RELAY_CONNECTIONS: &str = "host_relay_connections_total";
    /// Enclave connections not relayed, by port and reason.
    pub const RELAY_REFUSED: &str = "host_relay_refused_total";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::default();
        metrics.enclave_restarts.store(2, Ordering::Relaxed);
        metrics.count(
            names::FORWARD_REFUSED,
            "port=\"5000\",reason=\"limit\"".into(),
        );
        metrics.count(
            names::FORWARD_REFUSED,
            "port=\"5000\",reason=\"limit\"".into(),
        );
        metrics.observe_connect(Duration::from_micros(300));
        let text = metrics.render();
        assert!(text.contains("host_enclave_restarts_total 2\n"));
        assert!(text.contains("host_forward_refused_total{port=\"5000\",reason=\"limit\"} 2\n"));
        assert!(text.contains("host_connect_seconds_bucket{le=\"0.0001\"} 0\n"));
        assert!(text.contains("host_connect_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("host_connect_seconds_count 1\n"));
        assert_eq!(
            metrics.counter(names::FORWARD_REFUSED, "port=\"5000\",reason=\"limit\""),
            2
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
