//! The versioned Kafka topic: created with the operator's settings, kept in line,
//! never shrunk; and the consumer backlog of a topic, for `prune`.
//!
//! - [`connection`]: one broker connection (TCP, TLS, SASL, ApiVersions, framed calls).
//! - [`cluster`]: bootstrap through the configured brokers, metadata, controller.
//! - [`describe`]: what the broker says the topic is.
//! - [`plan`]: the pure decision from (config, described state) to actions.
//! - [`apply`]: sending those actions, with the AlterConfigs fallback.
//! - [`status`]: the topic against the config, for people.
//! - [`backlog`]: records a consumer group has yet to commit.

mod apply;
mod backlog;
mod cluster;
mod config;
mod connection;
mod describe;
mod plan;
mod sasl;
mod status;
mod tls;

pub use config::{KafkaConfig, KafkaSasl, KafkaTls, SaslMechanism, TopicConfig};
pub use describe::{ConfigEntry, TopicState};
pub use plan::{Action, Plan, Warning};

use crate::Mode;
use cluster::Cluster;

/// Why a Kafka step failed. Messages name the broker involved; never a credential.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// No configured broker could be used (unreachable, TLS, SASL); each one's reason is listed.
    #[error("no broker could be used: {0}")]
    Unreachable(String),
    /// A connection to a broker failed after it was open.
    #[error("broker {broker}: {message}")]
    Broker {
        /// `host:port`.
        broker: String,
        /// What went wrong.
        message: String,
    },
    /// The broker answered a request with an error code.
    #[error("broker {broker}: {request} failed: {code} ({name}){detail}")]
    Refused {
        /// `host:port`.
        broker: String,
        /// The request, e.g. `CreateTopics flows-v1`.
        request: String,
        /// Kafka's error code.
        code: i16,
        /// Its name, when known.
        name: String,
        /// The broker's error message, `: …`, or nothing.
        detail: String,
    },
    /// The broker does not offer an API that this step needs.
    #[error("broker {broker} does not support {api} (needed to {purpose})")]
    Unsupported {
        /// `host:port`.
        broker: String,
        /// The API's name.
        api: &'static str,
        /// What it was needed for.
        purpose: &'static str,
    },
    /// The TLS settings cannot be used.
    #[error("kafka.tls: {0}")]
    Tls(String),
    /// The cluster's answers do not fit together (e.g. no controller).
    #[error("{0}")]
    Cluster(String),
}

/// Prefix of every line this module logs on stderr.
fn log(message: impl std::fmt::Display) {
    eprintln!("flow-provisioner: kafka: {message}");
}

/// Brings the current version's topic in line with the config (or, in [`Mode::Plan`],
/// only says what that would change). Returns the number of changes made or pending.
pub async fn migrate(config: &KafkaConfig, mode: Mode) -> Result<usize, KafkaError> {
    Ok(sync_topic(config, mode).await?.actions.len())
}

/// [`migrate`] with its whole plan: the actions made (or pending, in [`Mode::Plan`])
/// and the warnings about what was left; empty when `manage_topic` is off.
pub async fn sync_topic(config: &KafkaConfig, mode: Mode) -> Result<Plan, KafkaError> {
    let topic = config.topic_name();
    if !config.manage_topic {
        log(format_args!(
            "manage_topic is off: topic {topic} left as it is"
        ));
        return Ok(Plan::default());
    }
    let mut cluster = Cluster::connect(config).await?;
    let state = describe::describe(&mut cluster, &topic).await?;
    let plan = plan::plan(&config.topic, state.as_ref());
    for warning in &plan.warnings {
        log(format_args!("topic {topic}: warning: {warning}"));
    }
    if plan.actions.is_empty() {
        log(format_args!(
            "topic {topic} is in line with the config: nothing sent"
        ));
        return Ok(plan);
    }
    match mode {
        Mode::Plan => {
            for action in &plan.actions {
                log(format_args!("topic {topic}: would {action}"));
            }
            log(format_args!(
                "plan: {} change(s) pending, nothing sent",
                plan.actions.len()
            ));
        }
        Mode::Apply => apply::apply(&mut cluster, &topic, &plan, state.as_ref()).await?,
    }
    Ok(plan)
}

/// Prints the topic's partitions, replication and configuration against the config.
/// Returns the number of differences.
pub async fn status(config: &KafkaConfig) -> Result<usize, KafkaError> {
    let topic = config.topic_name();
    let mut cluster = Cluster::connect(config).await?;
    let state = describe::describe(&mut cluster, &topic).await?;
    let (lines, differences) = status::report(&topic, &config.topic, state.as_ref());
    for line in lines {
        println!("{line}");
    }
    Ok(differences)
}

/// Records of `topic` not yet committed by consumer group `group`, summed over partitions:
/// the high watermark a Fetch returns minus the group's committed offset.
pub async fn backlog(config: &KafkaConfig, topic: &str, group: &str) -> Result<u64, KafkaError> {
    let mut cluster = Cluster::connect(config).await?;
    backlog::backlog(&mut cluster, topic, group).await
}
