//! The HTTP endpoints ClickHouse needs: init.sh, the schemas, the dictionaries'
//! CSV files, health and metrics, and the reverse proxy to Grafana.
//!
//! - [`server`]: the listener, the connection bound, timeouts and shutdown.
//! - [`routes`]: which path goes where, authentication, methods, the metrics.
//! - [`resource`]: a fixed body with its ETag, served with HEAD and 304.
//! - [`schemas`]: `init.sh` and `flow-vN.proto`.
//! - [`dictionaries`]: `protocols.csv`, `asns.csv`, `networks.csv`.
//! - [`proxy`]: the Grafana reverse proxy.
//! - [`tls`]: the certificate and key for HTTPS, when configured.
//!
//! Built on hyper rather than tiny_http: tiny_http 0.12 sets no read timeout on a
//! connection (a client that sends half a request holds its thread forever), puts
//! no bound on a header line or on the threads it spawns (one per connection), and
//! runs TLS handshakes on its single accept thread, so one stalled TLS client would
//! stop every other. hyper gives a header-read timeout, a header size bound and
//! streaming bodies; the bound on connections is a semaphore in [`server`].

use serde::Deserialize;

use crate::config::{Config, ConfigError};

pub mod dictionaries;
mod metrics;
pub mod proxy;
mod resource;
mod routes;
pub mod schemas;
mod server;
mod tls;

pub use server::serve;

/// `[http]`: where `serve` listens, how ClickHouse reaches it, and the bounds that
/// keep one client from starving the others.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// The address `serve` listens on.
    pub listen: String,
    /// The base URL ClickHouse uses to reach `serve` (dictionary sources); by default
    /// `http://` followed by `listen`.
    pub public_url: Option<String>,
    /// HTTP basic authentication on the endpoints; the dictionaries then carry the
    /// matching credentials.
    pub auth: Option<BasicAuth>,
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers (and an idle keep-alive
    /// connection is kept) before the connection is closed.
    pub header_timeout_seconds: u64,
    /// The largest request head (request line and headers) accepted; larger gets 431.
    pub max_header_bytes: usize,
    /// Seconds a write to a client may wait (a client that stops reading) before
    /// the connection is closed.
    pub write_timeout_seconds: u64,
    /// Threads that run the handlers.
    pub worker_threads: usize,
    /// `[http.tls]`: serve HTTPS with this certificate and key.
    pub tls: Option<TlsConfig>,
}

/// `[http.tls]`: PEM files for HTTPS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first.
    pub cert_file: std::path::PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: std::path::PathBuf,
}

/// A user name and password for HTTP basic authentication.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// The user name.
    pub username: String,
    /// The password; never printed.
    pub password: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".into(),
            public_url: None,
            auth: None,
            max_connections: 256,
            header_timeout_seconds: 10,
            max_header_bytes: 16 * 1024,
            write_timeout_seconds: 60,
            worker_threads: 2,
            tls: None,
        }
    }
}

impl HttpConfig {
    /// The base URL of the endpoints as ClickHouse reaches them, without a trailing slash.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None if self.tls.is_some() => format!("https://{}", self.listen),
            None => format!("http://{}", self.listen),
        }
    }

    /// Checks the bounds make sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("http.max_connections", self.max_connections as u64),
            ("http.header_timeout_seconds", self.header_timeout_seconds),
            ("http.write_timeout_seconds", self.write_timeout_seconds),
            ("http.worker_threads", self.worker_threads as u64),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.max_header_bytes < 1024 {
            return Err(invalid("http.max_header_bytes", "must be at least 1024"));
        }
        if let Some(auth) = &self.auth
            && (auth.username.is_empty() || auth.username.contains(':'))
        {
            return Err(invalid(
                "http.auth.username",
                "must be non-empty and without `:`",
            ));
        }
        Ok(())
    }
}

/// A [`ConfigError::Invalid`] for `key`.
fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// Why `serve` could not run.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The async runtime could not be built.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    /// The listen address could not be bound.
    #[error("cannot listen on {address} (http.listen): {source}")]
    Bind {
        /// `http.listen`.
        address: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// SIGTERM and SIGINT handlers could not be installed.
    #[error("cannot handle signals: {0}")]
    Signal(std::io::Error),
    /// The AS names could not be loaded at start-up.
    #[error("dictionaries.asns: {0}")]
    Asns(#[from] dictionaries::asns::AsnsError),
    /// The certificate or key cannot be used.
    #[error("{key}: {message}")]
    Tls {
        /// `http.tls.cert_file` or `http.tls.key_file`.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A schema cannot be written by a shell script.
    #[error(transparent)]
    Schema(#[from] schemas::SchemaError),
    /// The configuration does not hold together.
    #[error(transparent)]
    Config(ConfigError),
}

/// The configuration pieces `serve` uses, checked together at start-up.
pub(crate) fn validate(config: &Config) -> Result<(), ConfigError> {
    config.http.validate()?;
    config.dictionaries.validate()?;
    config.grafana.validate()
}
