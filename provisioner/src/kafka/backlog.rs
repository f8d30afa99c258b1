//! A consumer group's backlog on a topic: per partition, the high watermark minus the
//! group's committed offset (or minus the log start where it has committed none).
//!
//! The high watermark is read from a Fetch response, not from ListOffsets LATEST, which
//! some brokers (the test broker on memory storage) get wrong; ListOffsets EARLIEST
//! gives the offset to fetch from, so that the fetch is never out of range.

use std::collections::BTreeMap;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic,
};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, GroupId, ListOffsetsRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::KafkaError;
use super::cluster::{Cluster, find_topic};
use super::connection::Connection;

/// ListOffsets' timestamp for the earliest offset.
const EARLIEST: i64 = -2;
/// The first OffsetFetch version that asks per group.
const OFFSET_FETCH_BY_GROUP: i16 = 8;

/// The sum over `topic`'s partitions of what `group` has not committed yet.
pub(super) async fn backlog(
    cluster: &mut Cluster,
    topic: &str,
    group: &str,
) -> Result<u64, KafkaError> {
    let metadata = cluster.metadata().await?;
    let found = find_topic(&metadata, topic)
        .filter(|t| t.error_code == 0)
        .ok_or_else(|| KafkaError::Cluster(format!("topic {topic} does not exist")))?;
    let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for partition in &found.partitions {
        by_leader
            .entry(partition.leader_id.0)
            .or_default()
            .push(partition.partition_index);
    }
    let committed = committed_offsets(cluster.coordinator(group).await?, topic, group).await?;
    let mut total = 0u64;
    for (leader, partitions) in by_leader {
        let connection = cluster.node(leader).await?;
        let starts = log_starts(connection, topic, &partitions).await?;
        let ends = high_watermarks(connection, topic, &starts).await?;
        for (partition, end) in ends {
            // A commit older than the log start (retention removed the records) counts
            // from the log start: what is gone cannot be consumed.
            let start = starts.get(&partition).copied().unwrap_or(0);
            let from = committed
                .get(&partition)
                .copied()
                .filter(|&offset| offset >= 0)
                .map_or(start, |offset| offset.max(start));
            total += u64::try_from(end - from).unwrap_or(0);
        }
    }
    Ok(total)
}

/// The group's committed offset per partition (-1 where it has none).
async fn committed_offsets(
    coordinator: &mut Connection,
    topic: &str,
    group: &str,
) -> Result<BTreeMap<i32, i64>, KafkaError> {
    let version = coordinator
        .require::<OffsetFetchRequest>("OffsetFetch", "read the group's committed offsets")?;
    let group_id = GroupId(StrBytes::from_string(group.to_owned()));
    let name = TopicName(StrBytes::from_string(topic.to_owned()));
    let request = if version >= OFFSET_FETCH_BY_GROUP {
        OffsetFetchRequest::default().with_groups(vec![
            OffsetFetchRequestGroup::default()
                .with_group_id(group_id)
                .with_topics(None),
        ])
    } else {
        OffsetFetchRequest::default()
            .with_group_id(group_id)
            .with_topics(Some(vec![
                OffsetFetchRequestTopic::default().with_name(name.clone()),
            ]))
    };
    let (response, version) = coordinator.call(&request, "OffsetFetch").await?;
    let what = format!("OffsetFetch {group}");
    let mut offsets = BTreeMap::new();
    if version >= OFFSET_FETCH_BY_GROUP {
        for g in &response.groups {
            coordinator.check(&what, g.error_code, None)?;
            for t in g.topics.iter().filter(|t| t.name == name) {
                for p in &t.partitions {
                    coordinator.check(&what, p.error_code, None)?;
                    offsets.insert(p.partition_index, p.committed_offset);
                }
            }
        }
    } else {
        coordinator.check(&what, response.error_code, None)?;
        for t in response.topics.iter().filter(|t| t.name == name) {
            for p in &t.partitions {
                coordinator.check(&what, p.error_code, None)?;
                offsets.insert(p.partition_index, p.committed_offset);
            }
        }
    }
    Ok(offsets)
}

/// ListOffsets EARLIEST for `partitions` on their leader.
async fn log_starts(
    leader: &mut Connection,
    topic: &str,
    partitions: &[i32],
) -> Result<BTreeMap<i32, i64>, KafkaError> {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|&p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(p)
                                .with_timestamp(EARLIEST)
                        })
                        .collect(),
                ),
        ]);
    let (response, _) = leader.call(&request, "ListOffsets").await?;
    let mut starts = BTreeMap::new();
    for t in &response.topics {
        for p in &t.partitions {
            leader.check(
                format_args!("ListOffsets {topic}/{}", p.partition_index),
                p.error_code,
                None,
            )?;
            starts.insert(p.partition_index, p.offset);
        }
    }
    Ok(starts)
}

/// The high watermark of each partition, from a Fetch at its log start.
async fn high_watermarks(
    leader: &mut Connection,
    topic: &str,
    starts: &BTreeMap<i32, i64>,
) -> Result<BTreeMap<i32, i64>, KafkaError> {
    let fetch_topic = FetchTopic::default()
        .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
        .with_partitions(
            starts
                .iter()
                .map(|(&partition, &start)| {
                    FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(start)
                        .with_partition_max_bytes(1 << 10)
                })
                .collect(),
        );
    // A fetch that may wait a little: the test broker answers a zero-wait fetch with
    // no partitions at all.
    let request = FetchRequest::default()
        .with_max_wait_ms(100)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![fetch_topic]);
    let (response, _) = leader.call(&request, "Fetch").await?;
    leader.check(format_args!("Fetch {topic}"), response.error_code, None)?;
    let mut ends = BTreeMap::new();
    for t in &response.responses {
        for p in &t.partitions {
            leader.check(
                format_args!("Fetch {topic}/{}", p.partition_index),
                p.error_code,
                None,
            )?;
            ends.insert(p.partition_index, p.high_watermark);
        }
    }
    if let Some(missing) = starts.keys().find(|p| !ends.contains_key(p)) {
        return Err(leader.error(format!("Fetch {topic}: no answer for partition {missing}")));
    }
    Ok(ends)
}
