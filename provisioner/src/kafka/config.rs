//! `[kafka]`: how to reach the brokers and what the versioned topic looks like.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;

/// `[kafka]`: how to reach the brokers and what the versioned topic looks like.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port`, tried in order.
    pub brokers: Vec<String>,
    /// The topic base name; the schema version is appended (`flows` → `flows-v1`).
    pub topic_base: String,
    /// `[kafka.tls]`: TLS to the brokers; absent means plaintext.
    pub tls: Option<KafkaTls>,
    /// `[kafka.sasl]`: SASL authentication; absent means none.
    pub sasl: Option<KafkaSasl>,
    /// The client id the brokers see in their logs and quotas.
    pub client_id: String,
    /// Bound on connecting and on each request, in seconds.
    pub timeout_seconds: u64,
    /// Whether `migrate` touches the topic at all (off: someone else manages it).
    pub manage_topic: bool,
    /// `[kafka.topic]`: the topic's settings.
    pub topic: TopicConfig,
}

/// `[kafka.topic]`: what the versioned topic should look like.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicConfig {
    /// Partitions at creation (an existing topic keeps its own, see below).
    pub partitions: i32,
    /// Replication factor at creation (never changed afterwards).
    pub replication_factor: i16,
    /// Remove the topic's overrides that `config` does not list.
    pub strict_sync: bool,
    /// Let `migrate` raise an existing topic's partitions to `partitions` (never lowers).
    pub allow_partition_increase: bool,
    /// `[kafka.topic.config]`: topic-level config entries. Written, the section replaces
    /// the default (`retention.ms` = one day: ClickHouse consumes continuously, Kafka
    /// only has to bridge its outages).
    pub config: BTreeMap<String, String>,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            partitions: 8,
            replication_factor: 1,
            strict_sync: true,
            allow_partition_increase: false,
            config: BTreeMap::from([("retention.ms".into(), "86400000".into())]),
        }
    }
}

/// TLS settings for the brokers, shared by the provisioner's own connection and the
/// ClickHouse Kafka tables (which must reach the same brokers the same way).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaTls {
    /// A PEM file of the certificate authorities to trust; the system roots otherwise.
    pub ca_file: Option<PathBuf>,
    /// A PEM client certificate, for brokers that require one (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// The PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Accept any certificate (test setups only).
    pub insecure_skip_verify: bool,
}

/// SASL settings for the brokers.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSasl {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: SaslMechanism,
    /// The user name.
    pub username: String,
    /// The password; never printed.
    pub password: String,
}

/// The SASL mechanisms the provisioner and ClickHouse both speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    /// Plain user name and password (use with TLS).
    #[serde(rename = "PLAIN")]
    Plain,
    /// SCRAM with SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// SCRAM with SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The mechanism's name on the wire (SaslHandshake).
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl std::fmt::Debug for KafkaSasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: vec!["127.0.0.1:9092".into()],
            topic_base: "flows".into(),
            tls: None,
            sasl: None,
            client_id: "flow-provisioner".into(),
            timeout_seconds: 30,
            manage_topic: true,
            topic: TopicConfig::default(),
        }
    }
}

impl KafkaConfig {
    /// The topic of the current schema version, `<topic_base>-v<N>`.
    pub fn topic_name(&self) -> String {
        flow_proto::topic_name(&self.topic_base)
    }

    /// The bound on connecting and on each request.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }

    /// Checks what types cannot express; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| {
            Err(ConfigError::Invalid {
                key: format!("kafka.{key}"),
                message,
            })
        };
        if self.brokers.is_empty() {
            return invalid("brokers", "at least one broker is needed".into());
        }
        for broker in &self.brokers {
            let port = broker
                .rsplit_once(':')
                .map(|(host, port)| (host, port.parse::<u16>()));
            if !matches!(port, Some((host, Ok(_))) if !host.is_empty()) {
                return invalid("brokers", format!("`{broker}` is not host:port"));
            }
        }
        let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if self.topic_base.is_empty() || !self.topic_base.chars().all(legal) {
            return invalid(
                "topic_base",
                format!(
                    "`{}` is not a Kafka topic name (letters, digits, `.`, `_`, `-`)",
                    self.topic_base
                ),
            );
        }
        if self.client_id.is_empty() {
            return invalid("client_id", "must not be empty".into());
        }
        if self.timeout_seconds == 0 {
            return invalid("timeout_seconds", "must be at least 1".into());
        }
        if self.topic.partitions < 1 {
            return invalid("topic.partitions", "must be at least 1".into());
        }
        if self.topic.replication_factor < 1 {
            return invalid("topic.replication_factor", "must be at least 1".into());
        }
        if let Some(key) = self.topic.config.keys().find(|k| k.trim().is_empty()) {
            return invalid("topic.config", format!("empty key `{key}`"));
        }
        if let Some(tls) = &self.tls
            && tls.cert_file.is_some() != tls.key_file.is_some()
        {
            return invalid("tls.cert_file", "cert_file and key_file go together".into());
        }
        if let Some(sasl) = &self.sasl
            && sasl.username.is_empty()
        {
            return invalid("sasl.username", "must not be empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use crate::config::Config;

    fn error_of(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn defaults() {
        let kafka = Config::parse("").unwrap().kafka;
        assert_eq!(kafka.client_id, "flow-provisioner");
        assert!(kafka.manage_topic);
        assert_eq!(kafka.topic.partitions, 8);
        assert_eq!(kafka.topic.replication_factor, 1);
        assert!(kafka.topic.strict_sync);
        assert!(!kafka.topic.allow_partition_increase);
        assert_eq!(kafka.topic.config["retention.ms"], "86400000");
        assert_eq!(kafka.topic_name(), flow_proto::topic_name("flows"));
    }

    #[test]
    fn a_written_config_section_replaces_the_default() {
        let kafka = Config::parse("[kafka.topic.config]\n\"cleanup.policy\" = \"delete\"")
            .unwrap()
            .kafka;
        assert_eq!(kafka.topic.config.len(), 1);
        assert_eq!(kafka.topic.config["cleanup.policy"], "delete");
    }

    #[test]
    fn errors_name_the_key() {
        for (text, key) in [
            ("[kafka]\nbrokers = [\"nohost\"]", "kafka.brokers"),
            ("[kafka]\nbrokers = [\"h:notaport\"]", "kafka.brokers"),
            ("[kafka]\ntopic_base = \"a b\"", "kafka.topic_base"),
            ("[kafka]\nclient_id = \"\"", "kafka.client_id"),
            ("[kafka]\ntimeout_seconds = 0", "kafka.timeout_seconds"),
            ("[kafka.topic]\npartitions = 0", "kafka.topic.partitions"),
            (
                "[kafka.topic]\nreplication_factor = 0",
                "kafka.topic.replication_factor",
            ),
            ("[kafka.topic]\nsize = 3", "kafka.topic.size"),
            (
                "[kafka.topic.config]\n\"retention.ms\" = 5",
                "kafka.topic.config.retention.ms",
            ),
            ("[kafka.tls]\ncert_file = \"/c.pem\"", "kafka.tls.cert_file"),
            (
                "[kafka.sasl]\nmechanism = \"GSSAPI\"\nusername = \"u\"\npassword = \"p\"",
                "kafka.sasl.mechanism",
            ),
        ] {
            let error = error_of(text);
            assert!(error.contains(key), "{text}: {error}");
        }
    }

    #[test]
    fn the_password_is_never_printed() {
        let config = Config::parse(
            "[kafka.sasl]\nmechanism = \"SCRAM-SHA-512\"\nusername = \"u\"\npassword = \"s3cret\"",
        )
        .unwrap();
        assert!(!format!("{config:?}").contains("s3cret"));
    }
}
