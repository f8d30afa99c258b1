-- Applied for every flow schema version the provisioner knows, after the numbered
-- migrations (so `flows` exists): the Kafka-engine table reading the version's topic,
-- the consumer view into `flows`, and a view keeping the records the Protobuf parser
-- rejected. The table starts consuming once a view depends on it, so the view that
-- matters most comes first. The raw columns are the version's fields with the types of their `flows`
-- columns, which ClickHouse's Protobuf parser produces directly (epoch seconds to
-- DateTime, 16 bytes to IPv6, enum names to Enum8); the `flows` columns a version lacks
-- take their defaults. The table's comment records the settings and columns it was made
-- with: when they differ from the configuration, migrate replaces the table and views.
CREATE TABLE IF NOT EXISTS {database}.{raw_table}{on_cluster}
(
{raw_columns}
)
ENGINE = Kafka
SETTINGS
{kafka_settings}
COMMENT {raw_comment};

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.{consumer_view}{on_cluster} TO {database}.flows AS
SELECT
    {consumer_columns},
    {schema_version} AS schema_version
FROM {database}.{raw_table}
WHERE length(_error) = 0;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.{errors_view}{on_cluster} TO {database}.flows_raw_errors AS
SELECT
    now() AS timestamp,
    _topic AS topic,
    _partition AS partition,
    _offset AS offset,
    _raw_message AS raw,
    _error AS error
FROM {database}.{raw_table}
WHERE length(_error) > 0;
