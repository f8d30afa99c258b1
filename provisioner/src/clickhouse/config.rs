//! `[clickhouse]`: the servers, what the migrations create there, and the prune rule.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::config::ConfigError;

/// `[clickhouse]`: the servers and what the migrations create there. Every server is
/// treated as a copy of the others: each gets the same migrations.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// HTTP URLs of the servers.
    pub servers: Vec<String>,
    /// The database that holds the tables and the migrations' bookkeeping.
    pub database: String,
    /// The user the provisioner connects as; the server's default user otherwise.
    pub username: Option<String>,
    /// That user's password; never printed.
    pub password: Option<String>,
    /// With a cluster name, DDL runs `ON CLUSTER` and MergeTree engines are replicated.
    pub cluster: Option<String>,
    /// How long raw flows are kept (`15d`, `36h`, …).
    #[serde(deserialize_with = "duration")]
    pub flows_ttl: Duration,
    /// How long the one-minute aggregate is kept.
    #[serde(deserialize_with = "duration")]
    pub flows_1m_ttl: Duration,
    /// How long the five-minute aggregate is kept.
    #[serde(deserialize_with = "duration")]
    pub flows_5m_ttl: Duration,
    /// How long the one-hour aggregate is kept.
    #[serde(deserialize_with = "duration")]
    pub flows_1h_ttl: Duration,
    /// The consumer group of the Kafka-engine tables.
    pub kafka_group: String,
    /// Consumers per Kafka-engine table; capped at the server's `max_threads`, which
    /// ClickHouse otherwise refuses.
    pub kafka_consumers: u32,
    /// The brokers as ClickHouse reaches them, when not `kafka.brokers`.
    pub kafka_brokers: Option<Vec<String>>,
    /// Extra Kafka-engine settings (`kafka_flush_interval_ms = 500`, …).
    pub kafka_settings: BTreeMap<String, SettingValue>,
    /// Give the Kafka tables each version's `.proto` text inline
    /// (`format_schema_source = 'string'`) rather than the file init.sh writes, for
    /// servers without init.sh (managed services); servers that lack the setting get
    /// the file, with a warning.
    pub inline_schema: bool,
    /// `prune` keeps this many newest schema versions.
    pub prune_keep_last: Option<u32>,
    /// `prune` removes versions whose newest flow is older than this.
    #[serde(deserialize_with = "optional_duration")]
    pub prune_idle: Option<Duration>,
}

/// A Kafka-engine setting's value as TOML gives it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SettingValue {
    /// A number, written bare.
    Integer(i64),
    /// A boolean, written 0 or 1.
    Boolean(bool),
    /// Text, written as a quoted literal.
    Text(String),
}

/// Settings the provisioner sets itself on the Kafka-engine tables.
pub(crate) const MANAGED_KAFKA_SETTINGS: &[&str] = &[
    "kafka_broker_list",
    "kafka_topic_list",
    "kafka_group_name",
    "kafka_format",
    "kafka_schema",
    "kafka_num_consumers",
    "kafka_handle_error_mode",
    "kafka_security_protocol",
    "kafka_sasl_mechanism",
    "kafka_sasl_username",
    "kafka_sasl_password",
];

const DAY: u64 = 24 * 3600;

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            servers: vec!["http://127.0.0.1:8123".into()],
            database: "default".into(),
            username: None,
            password: None,
            cluster: None,
            flows_ttl: Duration::from_secs(15 * DAY),
            flows_1m_ttl: Duration::from_secs(30 * DAY),
            flows_5m_ttl: Duration::from_secs(90 * DAY),
            flows_1h_ttl: Duration::from_secs(365 * DAY),
            kafka_group: "clickhouse".into(),
            kafka_consumers: 1,
            kafka_brokers: None,
            kafka_settings: BTreeMap::new(),
            inline_schema: false,
            prune_keep_last: None,
            prune_idle: None,
        }
    }
}

impl std::fmt::Debug for ClickHouseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseConfig")
            .field("servers", &self.servers)
            .field("database", &self.database)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("cluster", &self.cluster)
            .field("flows_ttl", &self.flows_ttl)
            .field("flows_1m_ttl", &self.flows_1m_ttl)
            .field("flows_5m_ttl", &self.flows_5m_ttl)
            .field("flows_1h_ttl", &self.flows_1h_ttl)
            .field("kafka_group", &self.kafka_group)
            .field("kafka_consumers", &self.kafka_consumers)
            .field("kafka_brokers", &self.kafka_brokers)
            .field("kafka_settings", &self.kafka_settings)
            .field("inline_schema", &self.inline_schema)
            .field("prune_keep_last", &self.prune_keep_last)
            .field("prune_idle", &self.prune_idle)
            .finish()
    }
}

impl ClickHouseConfig {
    /// Checks what types cannot express; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| {
            Err(ConfigError::Invalid {
                key: format!("clickhouse.{key}"),
                message,
            })
        };
        if self.servers.is_empty() {
            return invalid("servers", "at least one server is needed".into());
        }
        if let Some(url) = self.servers.iter().find(|u| u.starts_with("https://")) {
            return invalid(
                "servers",
                format!("{url:?}: https is not built into this provisioner yet; use http://"),
            );
        }
        if let Some(url) = self.servers.iter().find(|u| !u.starts_with("http://")) {
            return invalid("servers", format!("{url:?} is not an http:// URL"));
        }
        if !is_identifier(&self.database) {
            return invalid(
                "database",
                format!("{:?} is not a plain identifier", self.database),
            );
        }
        if let Some(cluster) = self.cluster.as_deref().filter(|c| !is_identifier(c)) {
            return invalid("cluster", format!("{cluster:?} is not a plain identifier"));
        }
        if self.kafka_consumers == 0 {
            return invalid("kafka_consumers", "at least one consumer is needed".into());
        }
        if self.kafka_brokers.as_ref().is_some_and(Vec::is_empty) {
            return invalid("kafka_brokers", "leave it out, or name a broker".into());
        }
        for key in self.kafka_settings.keys() {
            if !(key.starts_with("kafka_") && is_identifier(key)) {
                return invalid(
                    &format!("kafka_settings.{key}"),
                    "not a Kafka-engine setting (kafka_…)".into(),
                );
            }
            if MANAGED_KAFKA_SETTINGS.contains(&key.as_str()) {
                return invalid(
                    &format!("kafka_settings.{key}"),
                    "set by the provisioner itself; use the matching key".into(),
                );
            }
        }
        match (self.prune_keep_last, self.prune_idle) {
            (Some(0), _) => invalid("prune_keep_last", "must keep at least 1".into()),
            (Some(_), Some(_)) => invalid(
                "prune_idle",
                "choose one rule: prune_keep_last or prune_idle".into(),
            ),
            _ => Ok(()),
        }
    }

    /// The brokers the Kafka-engine tables read from.
    pub fn kafka_brokers<'a>(&'a self, kafka: &'a crate::kafka::KafkaConfig) -> &'a [String] {
        self.kafka_brokers.as_deref().unwrap_or(&kafka.brokers)
    }
}

/// Names that go into SQL unquoted.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(serde::de::Error::custom)
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn durations_and_settings_parse() {
        let config = Config::parse(
            "[clickhouse]\nflows_ttl = \"36h\"\nprune_idle = \"30d\"\n\
             kafka_settings = { kafka_flush_interval_ms = 500, kafka_commit_on_select = false, kafka_client_id = \"ch\" }",
        )
        .unwrap();
        assert_eq!(config.clickhouse.flows_ttl.as_secs(), 36 * 3600);
        assert_eq!(
            config.clickhouse.prune_idle.map(|d| d.as_secs()),
            Some(30 * 86400)
        );
        assert_eq!(config.clickhouse.kafka_settings.len(), 3);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("servers = []", "clickhouse.servers"),
            ("servers = [\"127.0.0.1:8123\"]", "clickhouse.servers"),
            ("servers = [\"https://ch:8443\"]", "clickhouse.servers"),
            ("database = \"a;b\"", "clickhouse.database"),
            ("flows_ttl = \"soon\"", "clickhouse.flows_ttl"),
            ("kafka_consumers = 0", "clickhouse.kafka_consumers"),
            (
                "kafka_settings = { kafka_topic_list = \"x\" }",
                "clickhouse.kafka_settings.kafka_topic_list",
            ),
            (
                "kafka_settings = { max_threads = 1 }",
                "clickhouse.kafka_settings.max_threads",
            ),
            (
                "prune_keep_last = 2\nprune_idle = \"1d\"",
                "clickhouse.prune_idle",
            ),
        ] {
            let err = Config::parse(&format!("[clickhouse]\n{text}")).unwrap_err();
            assert!(err.to_string().contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn the_password_is_never_printed() {
        let config = Config::parse("[clickhouse]\npassword = \"s3cret\"").unwrap();
        assert!(!format!("{config:?}").contains("s3cret"));
    }
}
