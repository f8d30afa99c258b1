//! The provisioner: run once per upgrade, it prepares the versioned Kafka topic
//! and ClickHouse; run as a service, it serves what ClickHouse needs over HTTP.
//!
//! - [`config`]: the one configuration file; each section belongs to its module.
//! - [`kafka`]: the versioned topic (create, keep in line, never shrink) and the
//!   consumer backlog that `prune` checks.
//! - [`clickhouse`]: migrations, per-version Kafka tables, rolling-upgrade retention.
//! - [`http`]: `init.sh`, the dictionaries' CSV files, the schemas, the Grafana proxy.

pub mod clickhouse;
pub mod config;
pub mod http;
pub mod kafka;

/// Whether a run changes things or only says what it would change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Make the changes (`migrate`).
    Apply,
    /// Change nothing, send no write of any kind, and list what `Apply` would do (`plan`).
    Plan,
}
