//! The flow agent: receives flows from exporters over UDP, decodes them into
//! `FlowMessage`s and produces them to the versioned Kafka topic.
//!
//! - [`decode`]: one decoder per protocol, turning a datagram into flows.
//! - [`config`]: the TOML configuration file.
//! - [`enrich`]: exporter and interface attributes added to each flow.
//! - [`producer`]: the bounded intake, per-partition batches and the Kafka producer.
//! - [`tls`]: TLS to the brokers (`[kafka.tls]`, cargo feature `tls`).
//! - [`metrics`], [`http`]: counters and the `/metrics` and `/healthz` listener.
//! - [`inspect`]: the `decode` command, flows of capture files as JSON.
//! - [`listener`]: UDP sockets and their receive-decode-enrich workers.
//! - [`pcap`]: UDP datagrams read from capture files, for `decode` and the tests.
//! - [`run`]: the `run` and `check` commands, wiring and shutdown.

pub mod config;
pub mod decode;
pub mod enrich;
pub mod http;
pub mod inspect;
pub mod listener;
pub mod metrics;
pub mod pcap;
pub mod producer;
pub mod run;
pub mod tls;
