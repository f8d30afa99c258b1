//! The HTTP endpoints ClickHouse needs: init.sh, the schemas, the dictionaries'
//! CSV files, health and metrics, and the reverse proxy to Grafana.

use serde::Deserialize;

use crate::config::Config;

/// `[http]`: where `serve` listens and how ClickHouse reaches it.
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
        }
    }
}

impl HttpConfig {
    /// The base URL of the endpoints as ClickHouse reaches them, without a trailing slash.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }
}

/// Why `serve` could not run.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {}

/// Serves the endpoints until SIGTERM or SIGINT.
pub fn serve(_config: &Config) -> Result<(), HttpError> {
    unimplemented!("issue 7")
}
