-- One row per flow as the agents send it: bytes and packets as exported, with the
-- sampling rate beside them. Every schema version's consumer view writes here; the
-- columns a version lacks take their defaults, and `schema_version` says which wrote
-- the row (prune uses it to see when a version went quiet).
CREATE TABLE IF NOT EXISTS {database}.flows{on_cluster}
(
    `time_received` DateTime CODEC(DoubleDelta, LZ4),
    `flow_start` DateTime,
    `flow_end` DateTime,
    `sequence_number` UInt32,
    `sampling_rate` UInt64,
    `exporter_address` IPv6,
    `exporter_name` LowCardinality(String),
    `exporter_group` LowCardinality(String),
    `observation_domain` UInt32,
    `in_if` UInt32,
    `out_if` UInt32,
    `in_if_name` LowCardinality(String),
    `out_if_name` LowCardinality(String),
    `in_if_description` LowCardinality(String),
    `out_if_description` LowCardinality(String),
    `in_if_speed` UInt32,
    `out_if_speed` UInt32,
    `in_if_boundary` Enum8('undefined' = 0, 'external' = 1, 'internal' = 2),
    `out_if_boundary` Enum8('undefined' = 0, 'external' = 1, 'internal' = 2),
    `in_if_provider` LowCardinality(String),
    `out_if_provider` LowCardinality(String),
    `in_if_connectivity` LowCardinality(String),
    `out_if_connectivity` LowCardinality(String),
    `bytes` UInt64,
    `packets` UInt64,
    `src_addr` IPv6,
    `dst_addr` IPv6,
    `src_net_mask` UInt8,
    `dst_net_mask` UInt8,
    `src_as` UInt32,
    `dst_as` UInt32,
    `next_hop` IPv6,
    `etype` UInt32,
    `proto` UInt8,
    `ip_tos` UInt8,
    `ip_ttl` UInt8,
    `src_port` UInt16,
    `dst_port` UInt16,
    `tcp_flags` UInt16,
    `icmp_type` UInt8,
    `icmp_code` UInt8,
    `src_vlan` UInt16,
    `dst_vlan` UInt16,
    `src_mac` UInt64,
    `dst_mac` UInt64,
    `mpls_labels` Array(UInt32),
    `forwarding_status` UInt8,
    `flow_direction` Enum8('unknown' = 0, 'ingress' = 1, 'egress' = 2),
    `schema_version` UInt16
)
ENGINE = {replicated}MergeTree
PARTITION BY toYYYYMMDD(time_received)
ORDER BY (time_received, exporter_address, in_if, out_if)
TTL time_received + toIntervalSecond({flows_ttl})
SETTINGS ttl_only_drop_parts = 1;
