-- Aggregated resolutions for dashboards: per minute, five minutes and hour, each with
-- its own TTL, keyed by what a dashboard groups by. The minute view reads `flows` and
-- scales bytes and packets by the sampling rate (an unknown rate, 0, counts as 1), so
-- a sum is a traffic total.
CREATE TABLE IF NOT EXISTS {database}.flows_1m{on_cluster}
(
    `time_received` DateTime CODEC(DoubleDelta, LZ4),
    `exporter_address` IPv6,
    `exporter_name` LowCardinality(String),
    `exporter_group` LowCardinality(String),
    `in_if_name` LowCardinality(String),
    `out_if_name` LowCardinality(String),
    `in_if_boundary` Enum8('undefined' = 0, 'external' = 1, 'internal' = 2),
    `out_if_boundary` Enum8('undefined' = 0, 'external' = 1, 'internal' = 2),
    `in_if_provider` LowCardinality(String),
    `out_if_provider` LowCardinality(String),
    `in_if_connectivity` LowCardinality(String),
    `out_if_connectivity` LowCardinality(String),
    `src_as` UInt32,
    `dst_as` UInt32,
    `etype` UInt32,
    `proto` UInt8,
    `flow_direction` Enum8('unknown' = 0, 'ingress' = 1, 'egress' = 2),
    `bytes` UInt64,
    `packets` UInt64,
    `flows` UInt64
)
ENGINE = {replicated}SummingMergeTree((bytes, packets, flows))
PARTITION BY toYYYYMMDD(time_received)
ORDER BY (time_received, exporter_address, exporter_name, exporter_group, in_if_name, out_if_name, in_if_boundary, out_if_boundary, in_if_provider, out_if_provider, in_if_connectivity, out_if_connectivity, src_as, dst_as, etype, proto, flow_direction)
TTL time_received + toIntervalSecond({flows_1m_ttl})
SETTINGS ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS {database}.flows_5m{on_cluster} AS {database}.flows_1m
ENGINE = {replicated}SummingMergeTree((bytes, packets, flows))
PARTITION BY toYYYYMM(time_received)
ORDER BY (time_received, exporter_address, exporter_name, exporter_group, in_if_name, out_if_name, in_if_boundary, out_if_boundary, in_if_provider, out_if_provider, in_if_connectivity, out_if_connectivity, src_as, dst_as, etype, proto, flow_direction)
TTL time_received + toIntervalSecond({flows_5m_ttl})
SETTINGS ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS {database}.flows_1h{on_cluster} AS {database}.flows_1m
ENGINE = {replicated}SummingMergeTree((bytes, packets, flows))
PARTITION BY toYYYYMM(time_received)
ORDER BY (time_received, exporter_address, exporter_name, exporter_group, in_if_name, out_if_name, in_if_boundary, out_if_boundary, in_if_provider, out_if_provider, in_if_connectivity, out_if_connectivity, src_as, dst_as, etype, proto, flow_direction)
TTL time_received + toIntervalSecond({flows_1h_ttl})
SETTINGS ttl_only_drop_parts = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.flows_1m_consumer{on_cluster} TO {database}.flows_1m AS
SELECT
    toStartOfMinute(time_received) AS time_received,
    exporter_address, exporter_name, exporter_group, in_if_name, out_if_name,
    in_if_boundary, out_if_boundary, in_if_provider, out_if_provider,
    in_if_connectivity, out_if_connectivity, src_as, dst_as, etype, proto, flow_direction,
    sum(bytes * greatest(sampling_rate, 1)) AS bytes,
    sum(packets * greatest(sampling_rate, 1)) AS packets,
    count() AS flows
FROM {database}.flows
GROUP BY ALL;

-- The coarser resolutions re-sum the minute rows as they are inserted: the same totals
-- for a sixtieth of the reads, and one list of what a dashboard groups by.
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.flows_5m_consumer{on_cluster} TO {database}.flows_5m AS
SELECT
    toStartOfFiveMinutes(time_received) AS time_received,
    * EXCEPT (time_received, bytes, packets, flows),
    sum(bytes) AS bytes,
    sum(packets) AS packets,
    sum(flows) AS flows
FROM {database}.flows_1m
GROUP BY ALL;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.flows_1h_consumer{on_cluster} TO {database}.flows_1h AS
SELECT
    toStartOfHour(time_received) AS time_received,
    * EXCEPT (time_received, bytes, packets, flows),
    sum(bytes) AS bytes,
    sum(packets) AS packets,
    sum(flows) AS flows
FROM {database}.flows_1m
GROUP BY ALL;
