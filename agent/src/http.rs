//! The operator's HTTP listener: `/metrics` (Prometheus text) and `/healthz`.
//!
//! tiny_http on one thread is plenty for a scrape every few seconds, and keeps
//! the HTTP stack out of the async runtime that produces to Kafka.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tiny_http::{Header, Response, Server};

use crate::metrics::Metrics;

/// Why the HTTP listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for HTTP on {address}: {message}")]
pub struct HttpError {
    address: SocketAddr,
    message: String,
}

/// The running listener; stopping it joins its thread.
pub struct HttpServer {
    server: Arc<Server>,
    thread: Option<JoinHandle<()>>,
    /// The bound address (the port is the kernel's choice when 0 was asked).
    pub address: SocketAddr,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl HttpServer {
    /// Binds `address` and serves until [`HttpServer::stop`]. `/healthz` answers
    /// 503 once Kafka has been unreachable for longer than `unhealthy_after`.
    pub fn start(
        address: SocketAddr,
        metrics: Arc<Metrics>,
        unhealthy_after: Duration,
    ) -> Result<HttpServer, HttpError> {
        let server = Server::http(address).map_err(|e| HttpError {
            address,
            message: e.to_string(),
        })?;
        let bound = server.server_addr().to_ip().ok_or_else(|| HttpError {
            address,
            message: "not an IP listener".to_owned(),
        })?;
        let server = Arc::new(server);
        let serving = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("http".to_owned())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    let response = respond(request.url(), &metrics, unhealthy_after);
                    let _ = request.respond(response);
                }
            })
            .map_err(|e| HttpError {
                address,
                message: e.to_string(),
            })?;
        Ok(HttpServer {
            server,
            thread: Some(thread),
            address: bound,
        })
    }

    /// Stops serving and waits for the thread.
    pub fn stop(mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn respond(
    url: &str,
    metrics: &Metrics,
    unhealthy_after: Duration,
) -> Response<std::io::Cursor<Vec<u8>>> {
    let path = url.split('?').next().unwrap_or(url);
    match path {
        "/metrics" => text(200, metrics.render(), "text/plain; version=0.0.4"),
        "/healthz" => {
            let unreachable = metrics.kafka_unreachable_for();
            if unreachable > unhealthy_after {
                let body = format!(
                    "unhealthy: Kafka unreachable for {}s\n",
                    unreachable.as_secs()
                );
                text(503, body, "text/plain")
            } else {
                text(200, "ok\n".to_owned(), "text/plain")
            }
        }
        _ => text(404, "not found\n".to_owned(), "text/plain"),
    }
}

fn text(status: u16, body: String, content_type: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    let mut response = Response::from_string(body).with_status_code(status);
    if let Ok(header) = Header::from_bytes("Content-Type", content_type) {
        response.add_header(header);
    }
    response
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use super::*;

    fn get(address: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(address).unwrap_or_else(|e| panic!("connect: {e}"));
        let request = format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .unwrap_or_else(|e| panic!("write: {e}"));
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .unwrap_or_else(|e| panic!("read: {e}"));
        response
    }

    #[test]
    fn serves_metrics_and_health() {
        let metrics = Arc::new(Metrics::default());
        let server = HttpServer::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Arc::clone(&metrics),
            Duration::from_secs(3600),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let response = get(server.address, "/metrics");
        assert!(
            response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
            "{response}"
        );
        assert!(
            response.contains("flow_agent_flows_produced_total 0"),
            "{response}"
        );
        assert!(get(server.address, "/healthz").contains(" 200 "));
        assert!(get(server.address, "/nothing").contains(" 404 "));
        server.stop();
    }

    #[test]
    fn health_fails_after_kafka_is_away_too_long() {
        let metrics = Arc::new(Metrics::default());
        metrics.kafka_unreachable();
        let server = HttpServer::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics,
            Duration::ZERO,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        std::thread::sleep(Duration::from_millis(2));
        let response = get(server.address, "/healthz");
        assert!(response.contains(" 503 "), "{response}");
        assert!(response.contains("Kafka unreachable"), "{response}");
        server.stop();
    }
}
