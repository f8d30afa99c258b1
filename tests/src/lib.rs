//! Support for the integration tests: the real services they talk to, started on
//! free loopback ports and stopped when dropped, and the independent clients the
//! tests check the project against.
//!
//! - [`services`]: the Kafka-protocol broker (Tansu) and the ClickHouse engine.
//! - [`clients`]: confluent-kafka (librdkafka) and `protoc`, independent of our code.
//! - [`traffic`]: realistic flow datagrams, made by real exporters from synthetic traffic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod clients;
pub mod services;
pub mod traffic;

use std::path::PathBuf;

/// Where `tests/install` put the broker binary and the Python venv.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("FLOW_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
            .join(".cache/flow-pipeline"),
    }
}

/// The venv's Python, with chdb-core and confluent-kafka.
pub fn python() -> PathBuf {
    cache_dir().join("venv/bin/python")
}

/// The repository's `tests/support` folder.
pub fn support_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("support")
}

/// `../shared/data` beside the repository: real captures and data files.
pub fn shared_data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")
}
