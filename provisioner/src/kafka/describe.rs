//! What the broker says the topic is: its partitions and replication from Metadata,
//! its config entries from DescribeConfigs, each marked as an override or not.
//!
//! Real Kafka reports an override with source DYNAMIC_TOPIC_CONFIG and synthesises
//! every other entry (DEFAULT_CONFIG, STATIC_BROKER_CONFIG, …) with its documentation.
//! Some brokers (Tansu, the test broker) list only the keys that were set and report
//! each as DEFAULT_CONFIG without documentation: there, every listed entry is an override.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::KafkaError;
use super::cluster::{Cluster, find_topic};

/// ConfigResource type of a topic.
pub(super) const TOPIC_RESOURCE: i8 = 2;
/// DescribeConfigs source of a topic-level override.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
/// DescribeConfigs source of a built-in default.
const DEFAULT_CONFIG: i8 = 5;
/// Kafka's UNKNOWN_TOPIC_OR_PARTITION.
const UNKNOWN_TOPIC: i16 = 3;
/// The first DescribeConfigs version that carries documentation.
const WITH_DOCUMENTATION: i16 = 3;

/// The topic as described by the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicState {
    /// Number of partitions.
    pub partitions: i32,
    /// Replicas per partition (the largest count over partitions).
    pub replication_factor: i16,
    /// Every entry the broker reported, by key.
    pub configs: BTreeMap<String, ConfigEntry>,
}

/// One config entry as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// Its value; `None` when the broker hides it (sensitive) or has none.
    pub value: Option<String>,
    /// Whether it is set on the topic itself (see the module's doc for how that is decided).
    pub is_override: bool,
    /// Whether the broker says it cannot be changed.
    pub read_only: bool,
}

impl ConfigEntry {
    /// The value for people: `<hidden>` when the broker does not give it.
    pub fn shown(&self) -> String {
        self.value.clone().unwrap_or_else(|| "<hidden>".into())
    }

    /// An override entry with `value`, as a broker would report it.
    pub fn overridden(value: &str) -> ConfigEntry {
        ConfigEntry {
            value: Some(value.to_owned()),
            is_override: true,
            read_only: false,
        }
    }
}

/// Metadata then DescribeConfigs for `topic`; `None` when it does not exist.
pub(super) async fn describe(
    cluster: &mut Cluster,
    topic: &str,
) -> Result<Option<TopicState>, KafkaError> {
    let metadata = cluster.metadata().await?;
    let Some(found) = find_topic(&metadata, topic) else {
        return Ok(None);
    };
    if found.error_code == UNKNOWN_TOPIC {
        return Ok(None);
    }
    let partitions = i32::try_from(found.partitions.len()).unwrap_or(i32::MAX);
    let replicas = found.partitions.iter().map(|p| p.replica_nodes.len()).max();
    let replication_factor = i16::try_from(replicas.unwrap_or(0)).unwrap_or(i16::MAX);
    let error_code = found.error_code;
    let controller = cluster.controller().await?;
    controller.check(format_args!("Metadata {topic}"), error_code, None)?;
    let version = controller
        .require::<DescribeConfigsRequest>("DescribeConfigs", "read the topic's config entries")?;
    let request = DescribeConfigsRequest::default()
        .with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(TOPIC_RESOURCE)
                .with_resource_name(StrBytes::from_string(topic.to_owned()))
                .with_configuration_keys(None),
        ])
        .with_include_documentation(version >= WITH_DOCUMENTATION);
    let (response, version) = controller.call(&request, "DescribeConfigs").await?;
    let configs = configs_from(&response, topic, version).map_err(|(code, message)| {
        match controller.check(
            format_args!("DescribeConfigs {topic}"),
            code,
            message.as_ref(),
        ) {
            Err(error) => error,
            Ok(()) => controller.error(format!("DescribeConfigs {topic}: no result for it")),
        }
    })?;
    Ok(Some(TopicState {
        partitions,
        replication_factor,
        configs,
    }))
}

/// The entries of `topic` in a decoded DescribeConfigs response (at `version`), each
/// marked as an override or not; the error code and message of a failed result.
pub(super) fn configs_from(
    response: &DescribeConfigsResponse,
    topic: &str,
    version: i16,
) -> Result<BTreeMap<String, ConfigEntry>, (i16, Option<StrBytes>)> {
    let result = response
        .results
        .iter()
        .find(|r| r.resource_type == TOPIC_RESOURCE && r.resource_name.as_str() == topic)
        .ok_or((0, None))?;
    if result.error_code != 0 {
        return Err((result.error_code, result.error_message.clone()));
    }
    let every_entry_default = version >= WITH_DOCUMENTATION
        && result.configs.iter().all(|c| {
            matches!(c.config_source, DEFAULT_CONFIG | 0)
                && c.documentation.as_ref().is_none_or(|d| d.is_empty())
        });
    Ok(result
        .configs
        .iter()
        .map(|c| {
            let entry = ConfigEntry {
                value: c.value.as_ref().map(|v| v.as_str().to_owned()),
                is_override: every_entry_default || c.config_source == DYNAMIC_TOPIC_CONFIG,
                read_only: c.read_only,
            };
            (c.name.as_str().to_owned(), entry)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use bytes::BytesMut;
    use kafka_protocol::messages::describe_configs_response::{
        DescribeConfigsResourceResult, DescribeConfigsResult,
    };
    use kafka_protocol::protocol::{Decodable, Encodable};

    use super::*;

    fn entry(
        name: &str,
        value: &str,
        source: i8,
        documentation: &str,
    ) -> DescribeConfigsResourceResult {
        DescribeConfigsResourceResult::default()
            .with_name(StrBytes::from_string(name.into()))
            .with_value(Some(StrBytes::from_string(value.into())))
            .with_config_source(source)
            .with_documentation(Some(StrBytes::from_string(documentation.into())))
    }

    /// Encodes with kafka-protocol's encoder and decodes back, as the wire would carry it.
    fn over_the_wire(
        entries: Vec<DescribeConfigsResourceResult>,
        version: i16,
    ) -> DescribeConfigsResponse {
        let response = DescribeConfigsResponse::default().with_results(vec![
            DescribeConfigsResult::default()
                .with_resource_type(TOPIC_RESOURCE)
                .with_resource_name(StrBytes::from_static_str("flows-v1"))
                .with_configs(entries),
        ]);
        let mut bytes = BytesMut::new();
        response.encode(&mut bytes, version).unwrap();
        DescribeConfigsResponse::decode(&mut bytes.freeze(), version).unwrap()
    }

    #[test]
    fn real_kafka_style_only_dynamic_topic_entries_are_overrides() {
        let response = over_the_wire(
            vec![
                entry("retention.ms", "3600000", DYNAMIC_TOPIC_CONFIG, "How long…"),
                entry("cleanup.policy", "delete", DEFAULT_CONFIG, "The policy…"),
                entry("segment.bytes", "1073741824", 4, "The segment size…"),
            ],
            4,
        );
        let configs = configs_from(&response, "flows-v1", 4).unwrap();
        assert_eq!(configs.len(), 3);
        assert!(configs["retention.ms"].is_override);
        assert_eq!(configs["retention.ms"].value.as_deref(), Some("3600000"));
        assert!(!configs["cleanup.policy"].is_override);
        assert!(!configs["segment.bytes"].is_override);
    }

    #[test]
    fn a_real_broker_with_no_override_reports_none() {
        let response = over_the_wire(
            vec![entry(
                "cleanup.policy",
                "delete",
                DEFAULT_CONFIG,
                "The policy…",
            )],
            4,
        );
        let configs = configs_from(&response, "flows-v1", 4).unwrap();
        assert!(!configs["cleanup.policy"].is_override);
    }

    #[test]
    fn tansu_style_every_listed_entry_is_an_override() {
        // As the test broker answers: only the keys set, each DEFAULT_CONFIG, no documentation.
        let response = over_the_wire(
            vec![
                entry("retention.ms", "3600000", DEFAULT_CONFIG, ""),
                entry("segment.bytes", "1048576", DEFAULT_CONFIG, ""),
            ],
            4,
        );
        let configs = configs_from(&response, "flows-v1", 4).unwrap();
        assert!(configs.values().all(|e| e.is_override), "{configs:?}");
    }

    #[test]
    fn before_documentation_existed_the_source_decides() {
        let response = over_the_wire(
            vec![
                entry("retention.ms", "3600000", DYNAMIC_TOPIC_CONFIG, ""),
                entry("cleanup.policy", "delete", DEFAULT_CONFIG, ""),
            ],
            2,
        );
        let configs = configs_from(&response, "flows-v1", 2).unwrap();
        assert!(configs["retention.ms"].is_override);
        assert!(!configs["cleanup.policy"].is_override);
    }

    #[test]
    fn a_failed_result_gives_its_code() {
        let mut response = over_the_wire(vec![], 4);
        response.results[0].error_code = 3;
        assert_eq!(configs_from(&response, "flows-v1", 4).unwrap_err().0, 3);
        assert_eq!(configs_from(&response, "other", 4).unwrap_err().0, 0);
    }
}
