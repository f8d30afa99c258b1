//! What `/metrics` reports (Prometheus text): requests by route and status, and the
//! connection-level events no handler sees (header timeouts, oversized heads).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The counters of one `serve` process.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<String, BTreeMap<u16, u64>>>,
    connections_open: AtomicU64,
    connections_total: AtomicU64,
    connection_errors: AtomicU64,
    upstream_errors: AtomicU64,
    asns_reload_failures: AtomicU64,
}

impl Metrics {
    /// Counts one answered request.
    pub fn request(&self, route: &str, status: u16) {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        if !requests.contains_key(route) {
            requests.insert(route.to_owned(), BTreeMap::new());
        }
        if let Some(statuses) = requests.get_mut(route) {
            *statuses.entry(status).or_default() += 1;
        }
    }

    /// A connection was accepted.
    pub fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection ended, `failed` when hyper ended it for a protocol error or a timeout.
    pub fn connection_closed(&self, failed: bool) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
        if failed {
            self.connection_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Grafana upstream could not be reached or broke off.
    pub fn upstream_error(&self) {
        self.upstream_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The AS names file changed but could not be read; the previous names stay.
    pub fn asns_reload_failure(&self) {
        self.asns_reload_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP flow_provisioner_http_requests_total HTTP requests answered, by route and status.\n\
             # TYPE flow_provisioner_http_requests_total counter\n",
        );
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        for (route, statuses) in requests.iter() {
            for (status, count) in statuses {
                let _ = writeln!(
                    out,
                    "flow_provisioner_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}"
                );
            }
        }
        drop(requests);
        let plain = [
            (
                "flow_provisioner_http_connections_open",
                "gauge",
                "Connections being served.",
                &self.connections_open,
            ),
            (
                "flow_provisioner_http_connections_total",
                "counter",
                "Connections accepted.",
                &self.connections_total,
            ),
            (
                "flow_provisioner_http_connection_errors_total",
                "counter",
                "Connections closed for a protocol error, an oversized head or a timeout.",
                &self.connection_errors,
            ),
            (
                "flow_provisioner_grafana_upstream_errors_total",
                "counter",
                "Proxied requests the Grafana upstream did not answer.",
                &self.upstream_errors,
            ),
            (
                "flow_provisioner_asns_reload_failures_total",
                "counter",
                "Reloads of the AS names file that failed (the previous names stay).",
                &self.asns_reload_failures,
            ),
        ];
        for (name, kind, help, value) in plain {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}\n",
                value.load(Ordering::Relaxed)
            );
        }
        out
    }
}
