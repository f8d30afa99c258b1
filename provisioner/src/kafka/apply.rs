//! Sends a plan's actions to the controller: CreateTopics, CreatePartitions, and the
//! config changes in one IncrementalAlterConfigs, or, on brokers without it, one
//! AlterConfigs carrying the whole set of overrides (it replaces them all).

use std::collections::BTreeMap;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::{
    AlterConfigsRequest, CreatePartitionsRequest, CreateTopicsRequest,
    IncrementalAlterConfigsRequest, TopicName, alter_configs_request,
    incremental_alter_configs_request,
};
use kafka_protocol::protocol::StrBytes;

use super::cluster::Cluster;
use super::connection::Connection;
use super::describe::{TOPIC_RESOURCE, TopicState};
use super::plan::{Action, Plan};
use super::{KafkaError, log};

/// IncrementalAlterConfigs operations.
const SET: i8 = 0;
const DELETE: i8 = 1;

/// Applies `plan` to `topic`; `state` is what the plan was made from.
pub(super) async fn apply(
    cluster: &mut Cluster,
    topic: &str,
    plan: &Plan,
    state: Option<&TopicState>,
) -> Result<(), KafkaError> {
    let controller = cluster.controller().await?;
    let mut config_changes = Vec::new();
    for action in &plan.actions {
        match action {
            Action::Create {
                partitions,
                replication_factor,
                config,
            } => create(controller, topic, *partitions, *replication_factor, config).await?,
            Action::IncreasePartitions { to, .. } => {
                increase_partitions(controller, topic, *to).await?;
            }
            Action::Set { .. } | Action::Delete { .. } => {
                config_changes.push(action);
                continue;
            }
        }
        log(format_args!("topic {topic}: {action}: done"));
    }
    if !config_changes.is_empty() {
        alter_configs(controller, topic, &config_changes, state).await?;
        for action in config_changes {
            log(format_args!("topic {topic}: {action}: done"));
        }
    }
    Ok(())
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_owned())
}

/// The result for `topic` among a response's `(name, error code, message)` results:
/// an error when it is missing or failed.
fn check_result<'a>(
    controller: &Connection,
    request: &str,
    topic: &str,
    mut results: impl Iterator<Item = (&'a StrBytes, i16, Option<&'a StrBytes>)>,
) -> Result<(), KafkaError> {
    let what = format!("{request} {topic}");
    let (_, code, message) = results
        .find(|(name, _, _)| name.as_str() == topic)
        .ok_or_else(|| controller.error(format!("{what}: no result for it")))?;
    controller.check(what, code, message)
}

async fn create(
    controller: &mut Connection,
    topic: &str,
    partitions: i32,
    replication_factor: i16,
    config: &BTreeMap<String, String>,
) -> Result<(), KafkaError> {
    let configs = config
        .iter()
        .map(|(key, value)| {
            CreatableTopicConfig::default()
                .with_name(text(key))
                .with_value(Some(text(value)))
        })
        .collect();
    let request = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(text(topic)))
                .with_num_partitions(partitions)
                .with_replication_factor(replication_factor)
                .with_configs(configs),
        ])
        .with_timeout_ms(controller.timeout_ms())
        .with_validate_only(false);
    let (response, _) = controller.call(&request, "CreateTopics").await?;
    let results = response
        .topics
        .iter()
        .map(|t| (&t.name.0, t.error_code, t.error_message.as_ref()));
    check_result(controller, "CreateTopics", topic, results)
}

async fn increase_partitions(
    controller: &mut Connection,
    topic: &str,
    count: i32,
) -> Result<(), KafkaError> {
    controller.require::<CreatePartitionsRequest>(
        "CreatePartitions",
        "increase the topic's partitions (allow_partition_increase)",
    )?;
    let request = CreatePartitionsRequest::default()
        .with_topics(vec![
            CreatePartitionsTopic::default()
                .with_name(TopicName(text(topic)))
                .with_count(count)
                .with_assignments(None),
        ])
        .with_timeout_ms(controller.timeout_ms())
        .with_validate_only(false);
    let (response, _) = controller.call(&request, "CreatePartitions").await?;
    let results = response
        .results
        .iter()
        .map(|r| (&r.name.0, r.error_code, r.error_message.as_ref()));
    check_result(controller, "CreatePartitions", topic, results)
}

/// The config changes: incremental where the broker offers it, the whole set otherwise.
async fn alter_configs(
    controller: &mut Connection,
    topic: &str,
    changes: &[&Action],
    state: Option<&TopicState>,
) -> Result<(), KafkaError> {
    if controller
        .version::<IncrementalAlterConfigsRequest>()
        .is_some()
    {
        let configs = changes
            .iter()
            .filter_map(|action| match action {
                Action::Set { key, to, .. } => Some((key, SET, Some(text(to)))),
                Action::Delete { key, .. } => Some((key, DELETE, None)),
                _ => None,
            })
            .map(|(key, operation, value)| {
                incremental_alter_configs_request::AlterableConfig::default()
                    .with_name(text(key))
                    .with_config_operation(operation)
                    .with_value(value)
            })
            .collect();
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(TOPIC_RESOURCE)
                .with_resource_name(text(topic))
                .with_configs(configs),
        ]);
        let (response, _) = controller.call(&request, "IncrementalAlterConfigs").await?;
        let results = response
            .responses
            .iter()
            .map(|r| (&r.resource_name, r.error_code, r.error_message.as_ref()));
        return check_result(controller, "IncrementalAlterConfigs", topic, results);
    }
    controller.require::<AlterConfigsRequest>(
        "IncrementalAlterConfigs or AlterConfigs",
        "change the topic's config entries",
    )?;
    let whole_set = overrides_after(state, changes).map_err(|e| controller.error(e))?;
    log(format_args!(
        "topic {topic}: the broker lacks IncrementalAlterConfigs: AlterConfigs with the \
         whole set of overrides ({})",
        whole_set.keys().cloned().collect::<Vec<_>>().join(", ")
    ));
    let configs = whole_set
        .iter()
        .map(|(key, value)| {
            alter_configs_request::AlterableConfig::default()
                .with_name(text(key))
                .with_value(Some(text(value)))
        })
        .collect();
    let request = AlterConfigsRequest::default().with_resources(vec![
        alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(TOPIC_RESOURCE)
            .with_resource_name(text(topic))
            .with_configs(configs),
    ]);
    let (response, _) = controller.call(&request, "AlterConfigs").await?;
    let results = response
        .responses
        .iter()
        .map(|r| (&r.resource_name, r.error_code, r.error_message.as_ref()));
    check_result(controller, "AlterConfigs", topic, results)
}

/// The overrides the topic must have after `changes`: AlterConfigs replaces the whole set,
/// so overrides that stay (those not deleted) are sent again. An override whose value the
/// broker hides would be lost: that is refused, naming it.
fn overrides_after(
    state: Option<&TopicState>,
    changes: &[&Action],
) -> Result<BTreeMap<String, String>, String> {
    let mut set = BTreeMap::new();
    for (key, entry) in state.iter().flat_map(|s| &s.configs) {
        if !entry.is_override {
            continue;
        }
        let deleted = changes.iter().any(
            |c| matches!(c, Action::Delete { key: k, .. } | Action::Set { key: k, .. } if k == key),
        );
        match &entry.value {
            Some(value) => {
                set.insert(key.clone(), value.clone());
            }
            None if deleted => {}
            None => {
                return Err(format!(
                    "AlterConfigs replaces every override, and the broker hides the value of \
                     {key}: it would be lost; nothing sent"
                ));
            }
        }
    }
    for change in changes {
        match change {
            Action::Set { key, to, .. } => {
                set.insert(key.clone(), to.clone());
            }
            Action::Delete { key, .. } => {
                set.remove(key);
            }
            _ => {}
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::describe::ConfigEntry;

    #[test]
    fn alter_configs_refuses_to_lose_a_hidden_override() {
        let hidden = ConfigEntry {
            value: None,
            ..ConfigEntry::overridden("")
        };
        let state = TopicState {
            partitions: 1,
            replication_factor: 1,
            configs: BTreeMap::from([("sasl.secret".into(), hidden)]),
        };
        let set = Action::Set {
            key: "retention.ms".into(),
            from: None,
            to: "9".into(),
        };
        let error = overrides_after(Some(&state), &[&set]).unwrap_err();
        assert!(error.contains("sasl.secret"), "{error}");
        let delete = Action::Delete {
            key: "sasl.secret".into(),
            value: None,
        };
        let after = overrides_after(Some(&state), &[&set, &delete]).unwrap();
        assert_eq!(after, BTreeMap::from([("retention.ms".into(), "9".into())]));
    }

    #[test]
    fn alter_configs_keeps_the_overrides_that_stay() {
        let state = TopicState {
            partitions: 1,
            replication_factor: 1,
            configs: BTreeMap::from([
                ("retention.ms".into(), ConfigEntry::overridden("1")),
                ("segment.bytes".into(), ConfigEntry::overridden("2")),
                ("max.message.bytes".into(), ConfigEntry::overridden("3")),
                (
                    "cleanup.policy".into(),
                    ConfigEntry {
                        is_override: false,
                        ..ConfigEntry::overridden("delete")
                    },
                ),
            ]),
        };
        let set = Action::Set {
            key: "retention.ms".into(),
            from: Some("1".into()),
            to: "9".into(),
        };
        let delete = Action::Delete {
            key: "segment.bytes".into(),
            value: Some("2".into()),
        };
        let after = overrides_after(Some(&state), &[&set, &delete]).unwrap();
        assert_eq!(
            after,
            BTreeMap::from([
                ("max.message.bytes".into(), "3".into()),
                ("retention.ms".into(), "9".into()),
            ])
        );
    }
}
