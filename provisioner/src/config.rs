//! The provisioner's configuration file (TOML). Each section belongs to the module
//! that uses it; unknown keys are errors, and every error names the key at fault.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::clickhouse::ClickHouseConfig;
use crate::http::HttpConfig;
use crate::http::dictionaries::DictionariesConfig;
use crate::http::proxy::GrafanaConfig;
use crate::kafka::KafkaConfig;

/// The whole configuration file. Every section has defaults, so an empty file
/// provisions a local single-node setup.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[kafka]`: the brokers and the versioned topic.
    pub kafka: KafkaConfig,
    /// `[clickhouse]`: the servers and what the migrations create.
    pub clickhouse: ClickHouseConfig,
    /// `[http]`: the endpoints `serve` offers.
    pub http: HttpConfig,
    /// `[dictionaries]`: where the AS names and the operator's networks come from.
    pub dictionaries: DictionariesConfig,
    /// `[grafana]`: the reverse proxy to Grafana.
    pub grafana: GrafanaConfig,
}

/// Why the configuration could not be used. The message always names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The TOML is malformed.
    #[error("invalid TOML: {0}")]
    Syntax(String),
    /// A key is unknown or its value has the wrong type.
    #[error("key `{key}`: {message}")]
    Key {
        /// The key's dotted path.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// A value parses but makes no sense.
    #[error("key `{key}`: {message}")]
    Invalid {
        /// The key's dotted path.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text)
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let deserializer =
            toml::Deserializer::parse(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let message = e.into_inner().message().to_owned();
            ConfigError::Key { key, message }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.kafka.validate()?;
        self.clickhouse.validate()?;
        crate::http::validate(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::parse("[kafka]\nno_such_key = 1").unwrap_err();
        assert!(err.to_string().contains("kafka.no_such_key"), "{err}");
    }

    #[test]
    fn an_empty_file_gives_the_local_defaults() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.kafka.topic_base, "flows");
        assert_eq!(config.http.public_url(), "http://127.0.0.1:8080");
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let err = Config::parse("[kafka]\nbrokers = []").unwrap_err();
        assert!(err.to_string().contains("kafka.brokers"), "{err}");
    }
}
