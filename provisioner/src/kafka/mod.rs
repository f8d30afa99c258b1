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
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: vec!["127.0.0.1:9092".into()],
            topic_base: "flows".into(),
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
