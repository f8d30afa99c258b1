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
    let timeout_ms = controller.timeout_ms();
    let mut config_changes = Vec::new();
    for action in &plan.actions {
        match action {
            Action::Create { .. } => create(controller, topic, action, timeout_ms).await?,
            Action::IncreasePartitions { to, .. } => {
                increase_partitions(controller, topic, *to, timeout_ms).await?;
            }
            Action::Set { .. } | Action::Delete { .. } => config_changes.push(action),
        }
        if !matches!(action, Action::Set { .. } | Action::Delete { .. }) {
            log(format_args!("topic {topic}: {action}: done"));
        }
    }
    if !config_changes.is_empty() {
        alter_configs(controller, topic, &config_changes, state).await?;
        for action in config_changes {
            log(format_args!("topic {topic}: {action}: done"));
        }
    }
    Ok(())
}

fn name(topic: &str) -> StrBytes {
    StrBytes::from_string(topic.to_owned())
}

async fn create(
    controller: &mut Connection,
    topic: &str,
    action: &Action,
    timeout_ms: i32,
) -> Result<(), KafkaError> {
    let Action::Create {
        partitions,
        replication_factor,
        config,
    } = action
    else {
        return Ok(());
    };
    let configs = config
        .iter()
        .map(|(key, value)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(key.clone()))
                .with_value(Some(StrBytes::from_string(value.clone())))
        })
        .collect();
    let request = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(name(topic)))
                .with_num_partitions(*partitions)
                .with_replication_factor(*replication_factor)
                .with_configs(configs),
        ])
        .with_timeout_ms(timeout_ms)
        .with_validate_only(false);
    let (response, _) = controller.call(&request, "CreateTopics").await?;
    let result = response
        .topics
        .iter()
        .find(|t| t.name.0.as_str() == topic)
        .ok_or_else(|| controller.error(format!("CreateTopics {topic}: no result for it")))?;
    controller.check(
        format_args!("CreateTopics {topic}"),
        result.error_code,
        result.error_message.as_ref(),
    )
}

async fn increase_partitions(
    controller: &mut Connection,
    topic: &str,
    count: i32,
    timeout_ms: i32,
) -> Result<(), KafkaError> {
    controller.require::<CreatePartitionsRequest>(
        "CreatePartitions",
        "increase the topic's partitions (allow_partition_increase)",
    )?;
    let request = CreatePartitionsRequest::default()
        .with_topics(vec![
            CreatePartitionsTopic::default()
                .with_name(TopicName(name(topic)))
                .with_count(count)
                .with_assignments(None),
        ])
        .with_timeout_ms(timeout_ms)
        .with_validate_only(false);
    let (response, _) = controller.call(&request, "CreatePartitions").await?;
    let result = response
        .results
        .iter()
        .find(|r| r.name.0.as_str() == topic)
        .ok_or_else(|| controller.error(format!("CreatePartitions {topic}: no result for it")))?;
    controller.check(
        format_args!("CreatePartitions {topic}"),
        result.error_code,
        result.error_message.as_ref(),
    )
}

/// The config changes: incremental where the broker offers it, the whole set otherwise.
async fn alter_configs(
    controller: &mut Connection,
    topic: &str,
    changes: &[&Action],
    state: Option<&TopicState>,
) -> Result<(), KafkaError> {
    let response_errors: Vec<(i16, Option<StrBytes>)>;
    if controller
        .version::<IncrementalAlterConfigsRequest>()
        .is_some()
    {
        let configs = changes
            .iter()
            .filter_map(|action| match action {
                Action::Set { key, to, .. } => Some((key, SET, Some(to))),
                Action::Delete { key, .. } => Some((key, DELETE, None)),
                _ => None,
            })
            .map(|(key, operation, value)| {
                incremental_alter_configs_request::AlterableConfig::default()
                    .with_name(StrBytes::from_string(key.clone()))
                    .with_config_operation(operation)
                    .with_value(value.map(|v| StrBytes::from_string(v.clone())))
            })
            .collect();
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(TOPIC_RESOURCE)
                .with_resource_name(name(topic))
                .with_configs(configs),
        ]);
        let (response, _) = controller.call(&request, "IncrementalAlterConfigs").await?;
        response_errors = response
            .responses
            .into_iter()
            .map(|r| (r.error_code, r.error_message))
            .collect();
    } else {
        controller.require::<AlterConfigsRequest>(
            "IncrementalAlterConfigs or AlterConfigs",
            "change the topic's config entries",
        )?;
        let whole_set = overrides_after(state, changes);
        log(format_args!(
            "topic {topic}: the broker lacks IncrementalAlterConfigs: AlterConfigs with the \
             whole set of overrides ({})",
            whole_set.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
        let configs = whole_set
            .into_iter()
            .map(|(key, value)| {
                alter_configs_request::AlterableConfig::default()
                    .with_name(StrBytes::from_string(key))
                    .with_value(Some(StrBytes::from_string(value)))
            })
            .collect();
        let request = AlterConfigsRequest::default().with_resources(vec![
            alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(TOPIC_RESOURCE)
                .with_resource_name(name(topic))
                .with_configs(configs),
        ]);
        let (response, _) = controller.call(&request, "AlterConfigs").await?;
        response_errors = response
            .responses
            .into_iter()
            .map(|r| (r.error_code, r.error_message))
            .collect();
    }
    if response_errors.is_empty() {
        return Err(controller.error(format!("altering {topic}'s config: no result for it")));
    }
    for (code, message) in response_errors {
        controller.check(
            format_args!("altering {topic}'s config"),
            code,
            message.as_ref(),
        )?;
    }
    Ok(())
}

/// The overrides the topic must have after `changes`: AlterConfigs replaces the whole set,
/// so overrides that stay (those not deleted) are sent again.
fn overrides_after(state: Option<&TopicState>, changes: &[&Action]) -> BTreeMap<String, String> {
    let mut set: BTreeMap<String, String> = state
        .map(|s| {
            s.configs
                .iter()
                .filter(|(_, e)| e.is_override)
                .filter_map(|(k, e)| Some((k.clone(), e.value.clone()?)))
                .collect()
        })
        .unwrap_or_default();
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
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::describe::ConfigEntry;

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
        let after = overrides_after(Some(&state), &[&set, &delete]);
        assert_eq!(
            after,
            BTreeMap::from([
                ("max.message.bytes".into(), "3".into()),
                ("retention.ms".into(), "9".into()),
            ])
        );
    }
}
