//! The versioned Kafka topic: created with the operator's settings, kept in line,
//! never shrunk; and the consumer backlog of a topic, for `prune`.

use serde::Deserialize;

use crate::Mode;

/// `[kafka]`: how to reach the brokers and what the versioned topic looks like.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// The topic base name; the schema version is appended (`flows` → `flows-v1`).
    pub topic_base: String,
    /// `[kafka.tls]`: TLS to the brokers; absent means plaintext.
    pub tls: Option<KafkaTls>,
    /// `[kafka.sasl]`: SASL authentication; absent means none.
    pub sasl: Option<KafkaSasl>,
}

/// TLS settings for the brokers, shared by the provisioner's own connection and the
/// ClickHouse Kafka tables (which must reach the same brokers the same way).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaTls {
    /// A PEM file of the certificate authorities to trust; the system roots otherwise.
    pub ca_file: Option<std::path::PathBuf>,
    /// A PEM client certificate, for brokers that require one (with `key_file`).
    pub cert_file: Option<std::path::PathBuf>,
    /// The PEM private key of `cert_file`.
    pub key_file: Option<std::path::PathBuf>,
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
        }
    }
}

/// Why a Kafka step failed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {}

/// Brings the current version's topic in line with the config (or, in [`Mode::Plan`],
/// only says what that would change). Returns the number of changes made or pending.
pub async fn migrate(_config: &KafkaConfig, _mode: Mode) -> Result<usize, KafkaError> {
    unimplemented!("issue 5")
}

/// Prints the topic's partitions, replication and configuration against the config.
/// Returns the number of differences.
pub async fn status(_config: &KafkaConfig) -> Result<usize, KafkaError> {
    unimplemented!("issue 5")
}

/// Records of `topic` not yet committed by consumer group `group`, summed over partitions:
/// the high watermark a Fetch returns minus the group's committed offset.
pub async fn backlog(_config: &KafkaConfig, _topic: &str, _group: &str) -> Result<u64, KafkaError> {
    unimplemented!("issue 5")
}
