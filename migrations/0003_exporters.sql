-- The exporters and their interfaces as the flows describe them (Akvorado's "samplers"),
-- one row per exporter and interface, the latest description winning at merge.
CREATE TABLE IF NOT EXISTS {database}.exporters{on_cluster}
(
    `time_received` DateTime,
    `exporter_address` IPv6,
    `exporter_name` LowCardinality(String),
    `exporter_group` LowCardinality(String),
    `if_index` UInt32,
    `if_name` LowCardinality(String),
    `if_description` LowCardinality(String),
    `if_speed` UInt32,
    `if_boundary` Enum8('undefined' = 0, 'external' = 1, 'internal' = 2),
    `if_provider` LowCardinality(String),
    `if_connectivity` LowCardinality(String)
)
ENGINE = {replicated}ReplacingMergeTree(time_received)
ORDER BY (exporter_address, if_index);

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.exporters_consumer{on_cluster} TO {database}.exporters AS
SELECT DISTINCT
    time_received, exporter_address, exporter_name, exporter_group,
    interface.1 AS if_index,
    interface.2 AS if_name,
    interface.3 AS if_description,
    interface.4 AS if_speed,
    interface.5 AS if_boundary,
    interface.6 AS if_provider,
    interface.7 AS if_connectivity
FROM {database}.flows
ARRAY JOIN [
    (in_if, in_if_name, in_if_description, in_if_speed, in_if_boundary, in_if_provider, in_if_connectivity),
    (out_if, out_if_name, out_if_description, out_if_speed, out_if_boundary, out_if_provider, out_if_connectivity)
] AS interface
WHERE interface.1 != 0;
