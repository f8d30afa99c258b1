-- Kafka records the Protobuf parser rejected, kept for a day so that they can be looked
-- at rather than lost; each schema version's raw table feeds it through a view.
CREATE TABLE IF NOT EXISTS {database}.flows_raw_errors{on_cluster}
(
    `timestamp` DateTime,
    `topic` LowCardinality(String),
    `partition` UInt64,
    `offset` UInt64,
    `raw` String,
    `error` String
)
ENGINE = {replicated}MergeTree
PARTITION BY toYYYYMMDD(timestamp)
ORDER BY (timestamp, topic, partition, offset)
TTL timestamp + toIntervalDay(1);
