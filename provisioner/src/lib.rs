//! The provisioner: run once per upgrade, it prepares the versioned Kafka topic
//! and ClickHouse; run as a service, it serves what ClickHouse needs over HTTP.
//!
//! - [`config`]: the one configuration file, section by section.
//! - [`kafka`]: the versioned topic (create, keep in line, never shrink).
//! - [`http`]: `init.sh`, the dictionaries' CSV files, the Grafana proxy.

pub mod config;
pub mod http;
pub mod kafka;
