//! Which path goes where: the Grafana prefix to the proxy, the fixed files and
//! `asns.csv` under `/api/v0/clickhouse/`, `/healthz` and `/metrics`; basic
//! authentication, the allowed methods, and counting every answer.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::dictionaries::asns::Asns;
use super::dictionaries::{networks, protocols};
use super::metrics::Metrics;
use super::proxy::Proxy;
use super::resource::Resource;
use super::{HttpError, schemas};
use crate::config::Config;

/// Errors a streamed body may carry (the proxy's upstream breaking off).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every response body: whole for our own files, streamed for the proxy.
pub type Body = BoxBody<Bytes, BoxError>;

/// A body known in full.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// Where the ClickHouse files live.
const API: &str = "/api/v0/clickhouse";

/// The route label of `asns.csv`, which is read again when its file changes.
const ASNS: &str = "/api/v0/clickhouse/asns.csv";

/// Everything `serve` answers, built once at start-up.
#[derive(Debug)]
pub struct Routes {
    files: HashMap<String, Resource>,
    asns: Arc<Asns>,
    credentials: Option<[u8; 32]>,
    grafana: Option<Proxy>,
    metrics: Metrics,
}

impl Routes {
    /// Builds every fixed file and reads the AS names; any failure stops start-up.
    pub fn new(config: &Config) -> Result<Routes, HttpError> {
        let mut files = HashMap::new();
        let script = schemas::init_script(flow_proto::VERSIONS)?;
        files.insert(
            format!("{API}/init.sh"),
            Resource::new(script, "text/x-shellscript; charset=utf-8"),
        );
        for version in flow_proto::VERSIONS {
            files.insert(
                format!("{API}/{}", version.proto_file_name()),
                Resource::new(version.proto_text, "text/plain; charset=utf-8"),
            );
        }
        files.insert(
            format!("{API}/protocols.csv"),
            protocols::csv().into_resource(),
        );
        // The config was validated on load, so this cannot fail; keep the error anyway.
        let networks = networks::csv(&config.dictionaries.networks).map_err(HttpError::Config)?;
        files.insert(format!("{API}/networks.csv"), networks.into_resource());
        let asns = Asns::load(config.dictionaries.asns.as_deref())?;
        Ok(Routes {
            files,
            asns: Arc::new(asns),
            credentials: config
                .http
                .auth
                .as_ref()
                .map(|auth| digest(format!("{}:{}", auth.username, auth.password).as_bytes())),
            grafana: Proxy::new(&config.grafana),
            metrics: Metrics::default(),
        })
    }

    /// The metrics, for the connection-level counts.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Answers one request (that came over HTTPS when `secure`) and counts the
    /// answer under its route.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
        secure: bool,
    ) -> Response<Body> {
        let (route, response) = self.dispatch(request, peer, secure).await;
        self.metrics.request(route, response.status().as_u16());
        response
    }

    async fn dispatch(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
        secure: bool,
    ) -> (&str, Response<Body>) {
        let path = request.uri().path();
        // Grafana does its own authentication, with its own Authorization header.
        if let Some(proxy) = &self.grafana
            && proxy.serves(path)
        {
            return (
                "grafana",
                proxy.forward(request, peer, secure, &self.metrics).await,
            );
        }
        if path == "/healthz" {
            return match allowed(request.method()) {
                Some(refusal) => ("/healthz", refusal),
                None => ("/healthz", text(StatusCode::OK, "ok\n")),
            };
        }
        if !self.authorized(request.headers()) {
            let mut response = text(StatusCode::UNAUTHORIZED, "authentication required\n");
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"flow-provisioner\", charset=\"UTF-8\""),
            );
            return ("unauthorized", response);
        }
        let target = if path == "/metrics" {
            Target::Metrics
        } else if path == ASNS {
            Target::Asns
        } else if let Some((route, file)) = self.files.get_key_value(path) {
            Target::File(route, file)
        } else {
            return ("unknown", text(StatusCode::NOT_FOUND, "not found\n"));
        };
        let route = match target {
            Target::Metrics => "/metrics",
            Target::Asns => ASNS,
            Target::File(route, _) => route.as_str(),
        };
        if let Some(refusal) = allowed(request.method()) {
            return (route, refusal);
        }
        let response = match target {
            Target::Metrics => {
                let mut response = text(StatusCode::OK, self.metrics.render());
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            Target::Asns => self.asns(request.headers()).await,
            Target::File(_, file) => file.respond(request.headers()),
        };
        (route, response)
    }

    /// `asns.csv`, read again first if its file changed (off the async threads:
    /// the file can be large).
    async fn asns(&self, headers: &HeaderMap) -> Response<Body> {
        let asns = Arc::clone(&self.asns);
        match tokio::task::spawn_blocking(move || asns.current()).await {
            Ok((resource, error)) => {
                if let Some(error) = error {
                    self.metrics.asns_reload_failure();
                    eprintln!(
                        "flow-provisioner: dictionaries.asns: {error}; the previous names stay"
                    );
                }
                resource.respond(headers)
            }
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read the AS names: {e}\n"),
            ),
        }
    }

    /// Whether the request carries the configured credentials (or none are configured).
    /// The comparison is of digests, in constant time, so neither the password nor
    /// its length shows in the answer's timing.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.credentials else {
            return true;
        };
        let given = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .and_then(|(_, encoded)| {
                base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .ok()
            });
        match given {
            Some(given) => digest(&given).ct_eq(expected).into(),
            None => false,
        }
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// What a path under the authentication names.
#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    Metrics,
    Asns,
    File(&'a String, &'a Resource),
}

/// `None` for GET and HEAD, else the 405 to send.
fn allowed(method: &Method) -> Option<Response<Body>> {
    if method == Method::GET || method == Method::HEAD {
        return None;
    }
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    Some(response)
}

/// A plain-text answer.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
