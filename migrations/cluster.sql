-- Applied only in cluster mode (`clickhouse.cluster` set), after the numbered migrations:
-- Distributed tables over each node's local tables, so that a query on any node sees
-- the whole cluster. Nothing inserts through them: every node's Kafka tables and views
-- write to its local tables.
CREATE TABLE IF NOT EXISTS {database}.flows_distributed{on_cluster} AS {database}.flows
ENGINE = Distributed({cluster}, {database}, flows, rand());

CREATE TABLE IF NOT EXISTS {database}.flows_1m_distributed{on_cluster} AS {database}.flows_1m
ENGINE = Distributed({cluster}, {database}, flows_1m, rand());

CREATE TABLE IF NOT EXISTS {database}.flows_5m_distributed{on_cluster} AS {database}.flows_5m
ENGINE = Distributed({cluster}, {database}, flows_5m, rand());

CREATE TABLE IF NOT EXISTS {database}.flows_1h_distributed{on_cluster} AS {database}.flows_1h
ENGINE = Distributed({cluster}, {database}, flows_1h, rand());

CREATE TABLE IF NOT EXISTS {database}.exporters_distributed{on_cluster} AS {database}.exporters
ENGINE = Distributed({cluster}, {database}, exporters, rand());
