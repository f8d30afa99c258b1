//! The reverse proxy to Grafana under `[grafana] prefix`: method, headers, bodies
//! and statuses pass through, bodies streamed both ways, hop-by-hop headers dropped
//! and X-Forwarded-For/Proto/Host added. The path, prefix included, is forwarded as
//! it came, which is what Grafana's `serve_from_sub_path` expects.
//!
//! WebSocket upgrades (Grafana Live) are passed on, and after the upstream's 101
//! the two connections are joined into a tunnel.
//!
//! It connects only ever to the configured upstream: the request's path and Host
//! header go to that one address and are never used to choose where to connect,
//! so it cannot be used as an open proxy. One upstream connection per request (a
//! plain HTTP/1.1 client over a TcpStream, hyper's low-level client) keeps that
//! obvious, at the cost of a TCP handshake on loopback or LAN per request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::invalid;
use super::metrics::Metrics;
use super::routes::{Body, BoxError, text};
use crate::config::ConfigError;

/// `[grafana]`: where Grafana is and under which path prefix it is served.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrafanaConfig {
    /// The path prefix proxied (no trailing slash); Grafana's `root_url` should end with it.
    pub prefix: String,
    /// Grafana's own address, `http://host:port`; without it there is no proxy.
    pub upstream: Option<String>,
    /// Seconds to connect to the upstream before answering 502.
    pub connect_timeout_seconds: u64,
    /// Seconds to wait for the upstream's response head before answering 504.
    pub response_timeout_seconds: u64,
    /// WebSocket tunnels open at once (they outlive their HTTP connection's slot);
    /// beyond, an upgrade request gets 503.
    pub max_websockets: usize,
}

impl Default for GrafanaConfig {
    fn default() -> Self {
        GrafanaConfig {
            prefix: "/grafana".into(),
            upstream: None,
            connect_timeout_seconds: 5,
            response_timeout_seconds: 60,
            max_websockets: 128,
        }
    }
}

impl GrafanaConfig {
    /// Checks the prefix and the upstream URL, naming the key at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let prefix = &self.prefix;
        let own = ["/api", "/healthz", "/metrics"];
        if !prefix.starts_with('/')
            || prefix.len() < 2
            || prefix.ends_with('/')
            || prefix.contains(['?', '#', ' '])
        {
            return Err(invalid(
                "grafana.prefix",
                format!("`{prefix}` must be a path such as /grafana, without a trailing slash"),
            ));
        }
        if own
            .iter()
            .any(|o| prefix == o || prefix.starts_with(&format!("{o}/")))
        {
            return Err(invalid(
                "grafana.prefix",
                format!("`{prefix}` would hide the provisioner's own {own:?}"),
            ));
        }
        for (key, value) in [
            (
                "grafana.connect_timeout_seconds",
                self.connect_timeout_seconds,
            ),
            (
                "grafana.response_timeout_seconds",
                self.response_timeout_seconds,
            ),
            ("grafana.max_websockets", self.max_websockets as u64),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if let Some(url) = &self.upstream {
            Upstream::parse(url).map_err(|message| invalid("grafana.upstream", message))?;
        }
        Ok(())
    }
}

/// The one address the proxy connects to.
#[derive(Debug, Clone)]
struct Upstream {
    host: String,
    port: u16,
    /// `host:port` as configured, for Host when the client sent none, and messages.
    authority: HeaderValue,
}

impl Upstream {
    fn parse(url: &str) -> Result<Upstream, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!(
                "`{url}` must start with http:// (no TLS to the upstream)"
            ));
        }
        let Some(authority) = uri.authority() else {
            return Err(format!("`{url}` has no host"));
        };
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "`{url}` must have no path: the request's path (prefix included) is forwarded as it is"
            ));
        }
        if authority.as_str().contains('@') {
            return Err(format!("`{url}` must not carry credentials"));
        }
        Ok(Upstream {
            host: authority.host().trim_matches(['[', ']']).to_owned(),
            port: authority.port_u16().unwrap_or(80),
            authority: HeaderValue::from_str(authority.as_str())
                .map_err(|e| format!("`{url}`: {e}"))?,
        })
    }
}

/// The proxy as configured; built only when `[grafana] upstream` is set.
#[derive(Debug)]
pub struct Proxy {
    prefix: String,
    upstream: Upstream,
    url: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    max_websockets: usize,
    tunnels: Arc<Semaphore>,
}

/// Why a request could not be forwarded; each becomes a 502 or 504 naming the upstream.
#[derive(Debug, thiserror::Error)]
enum ProxyError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
    #[error("the HTTP exchange failed: {0}")]
    Exchange(hyper::Error),
    #[error("no response within {0:?}")]
    ResponseTimeout(Duration),
    #[error("{0} WebSocket tunnels are open already (grafana.max_websockets)")]
    TooManyTunnels(usize),
}

impl Proxy {
    /// The proxy for a validated config, if an upstream is set.
    pub fn new(config: &GrafanaConfig) -> Option<Proxy> {
        let url = config.upstream.as_ref()?;
        let upstream = Upstream::parse(url).ok()?;
        Some(Proxy {
            prefix: config.prefix.clone(),
            upstream,
            url: url.trim_end_matches('/').to_owned(),
            connect_timeout: Duration::from_secs(config.connect_timeout_seconds),
            response_timeout: Duration::from_secs(config.response_timeout_seconds),
            max_websockets: config.max_websockets,
            tunnels: Arc::new(Semaphore::new(config.max_websockets)),
        })
    }

    /// Whether `path` is the prefix or under it (`/grafana` and `/grafana/…`, not `/grafanax`).
    pub fn serves(&self, path: &str) -> bool {
        path.strip_prefix(&self.prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// Forwards the request and streams the answer back; 502 or 504 with a clear
    /// message when the upstream does not answer.
    pub async fn forward(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
        secure: bool,
        metrics: &Metrics,
    ) -> Response<Body> {
        match self.exchange(request, peer, secure).await {
            Ok(response) => response,
            Err(e) => {
                metrics.upstream_error();
                let status = match e {
                    ProxyError::ConnectTimeout(_) | ProxyError::ResponseTimeout(_) => {
                        StatusCode::GATEWAY_TIMEOUT
                    }
                    ProxyError::TooManyTunnels(_) => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::BAD_GATEWAY,
                };
                eprintln!("flow-provisioner: grafana upstream {}: {e}", self.url);
                text(
                    status,
                    format!("the Grafana upstream {} did not answer: {e}\n", self.url),
                )
            }
        }
    }

    async fn exchange(
        &self,
        mut request: Request<Incoming>,
        peer: SocketAddr,
        secure: bool,
    ) -> Result<Response<Body>, ProxyError> {
        // A WebSocket (Grafana Live) asks to switch protocols: the one hop-by-hop
        // header pair that must be passed on, and then the connection is a tunnel.
        let protocol = upgrade_protocol(request.headers());
        let tunnel_slot = match protocol {
            Some(_) => Some(
                Arc::clone(&self.tunnels)
                    .try_acquire_owned()
                    .map_err(|_| ProxyError::TooManyTunnels(self.max_websockets))?,
            ),
            None => None,
        };
        let client_side = protocol.is_some().then(|| hyper::upgrade::on(&mut request));
        let (mut parts, body) = request.into_parts();
        // Origin form only: an absolute-form request line still goes to our upstream.
        let target = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse::<Uri>()
            .unwrap_or_else(|_| Uri::from_static("/"));
        let client_host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        remove_hop_by_hop(&mut parts.headers);
        add_forwarded(&mut parts.headers, peer, secure, client_host.as_ref());
        // Grafana checks Origin against Host on writes, so the client's Host is kept.
        let host = client_host.unwrap_or_else(|| self.upstream.authority.clone());
        parts.headers.insert(header::HOST, host);
        if let Some(protocol) = &protocol {
            parts.headers.insert(header::UPGRADE, protocol.clone());
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        parts.uri = target;
        parts.version = Version::HTTP_11;

        let connect = TcpStream::connect((self.upstream.host.as_str(), self.upstream.port));
        let stream = tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| ProxyError::ConnectTimeout(self.connect_timeout))?
            .map_err(ProxyError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(ProxyError::Exchange)?;
        // Drives the upstream connection until the response body is read or dropped
        // (or, after a 101, hands it over to the tunnel).
        tokio::spawn(connection.with_upgrades());
        let send = sender.send_request(Request::from_parts(parts, body));
        let mut response = tokio::time::timeout(self.response_timeout, send)
            .await
            .map_err(|_| ProxyError::ResponseTimeout(self.response_timeout))?
            .map_err(ProxyError::Exchange)?;
        let switched = match (client_side, tunnel_slot) {
            (Some(client_side), Some(slot))
                if response.status() == StatusCode::SWITCHING_PROTOCOLS =>
            {
                let upstream_side = hyper::upgrade::on(&mut response);
                tokio::spawn(async move {
                    tunnel(client_side, upstream_side).await;
                    drop(slot);
                });
                upgrade_protocol(response.headers())
            }
            _ => None,
        };
        let (mut parts, body) = response.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        if let Some(protocol) = switched {
            parts.headers.insert(header::UPGRADE, protocol);
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        Ok(Response::from_parts(
            parts,
            body.map_err(BoxError::from).boxed(),
        ))
    }
}

/// The protocol asked for (or agreed to) when the Connection header has the
/// `upgrade` token and an Upgrade header names one.
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asked = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asked
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Copies bytes both ways between the client's and the upstream's switched
/// connections until either side closes.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (Ok(client), Ok(upstream)) = (client.await, upstream.await) else {
        return;
    };
    let _ =
        tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(upstream)).await;
}

/// Headers that describe one connection and must not cross the proxy (RFC 9110
/// §7.6.1), with every header the Connection header names.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// X-Forwarded-For gets the client's address appended; Proto and Host say how the
/// client reached us.
fn add_forwarded(
    headers: &mut HeaderMap,
    peer: SocketAddr,
    secure: bool,
    host: Option<&HeaderValue>,
) {
    let earlier: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let client = peer.ip().to_canonical().to_string();
    let chain = if earlier.is_empty() {
        client
    } else {
        format!("{}, {client}", earlier.join(", "))
    };
    if let Ok(chain) = HeaderValue::from_str(&chain) {
        headers.insert("x-forwarded-for", chain);
    }
    let proto = if secure { "https" } else { "http" };
    headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
    match host {
        Some(host) => headers.insert("x-forwarded-host", host.clone()),
        None => headers.remove("x-forwarded-host"),
    };
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config(prefix: &str, upstream: &str) -> GrafanaConfig {
        GrafanaConfig {
            prefix: prefix.into(),
            upstream: Some(upstream.into()),
            ..GrafanaConfig::default()
        }
    }

    #[test]
    fn bad_settings_name_their_key() {
        let cases = [
            ("/grafana/", "http://127.0.0.1:3000", "grafana.prefix"),
            ("grafana", "http://127.0.0.1:3000", "grafana.prefix"),
            ("/api/v0", "http://127.0.0.1:3000", "grafana.prefix"),
            ("/grafana", "https://grafana:3000", "grafana.upstream"),
            ("/grafana", "http://grafana:3000/sub", "grafana.upstream"),
            (
                "/grafana",
                "http://user:pw@grafana:3000",
                "grafana.upstream",
            ),
            ("/grafana", "not a url", "grafana.upstream"),
        ];
        for (prefix, upstream, key) in cases {
            let err = config(prefix, upstream).validate().unwrap_err().to_string();
            assert!(err.contains(key), "{prefix} {upstream}: {err}");
        }
        config("/grafana", "http://[::1]:3000/").validate().unwrap();
    }

    #[test]
    fn only_the_prefix_and_below_are_proxied() {
        let proxy = Proxy::new(&config("/grafana", "http://127.0.0.1:3000")).unwrap();
        assert!(proxy.serves("/grafana"));
        assert!(proxy.serves("/grafana/api/health"));
        assert!(!proxy.serves("/grafanax"));
        assert!(!proxy.serves("/api/v0/clickhouse/init.sh"));
        assert_eq!(proxy.upstream.host, "127.0.0.1");
        assert_eq!(proxy.upstream.port, 3000);
    }

    #[test]
    fn hop_by_hop_headers_go_and_forwarding_headers_come() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("grafana_session=abc"),
        );
        remove_hop_by_hop(&mut headers);
        let host = HeaderValue::from_static("flows.example.net");
        let peer = "[::ffff:192.0.2.7]:5000".parse().unwrap();
        add_forwarded(&mut headers, peer, true, Some(&host));
        assert!(headers.get("x-private").is_none());
        assert!(headers.get("keep-alive").is_none());
        assert!(headers.get(header::TRANSFER_ENCODING).is_none());
        assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 192.0.2.7");
        assert_eq!(headers["x-forwarded-host"], "flows.example.net");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers[header::COOKIE], "grafana_session=abc");
    }
}
