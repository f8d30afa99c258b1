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

/// The path of one of the workspace's binaries (`flow-agent`, `flow-provisioner`), built
/// for this test profile. `cargo test --workspace` builds them; when a single test target
/// runs alone, this builds the binary first, once per process.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let test_exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let profile_dir = test_exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test executable sits in target/<profile>/deps");
    let path = profile_dir.join(name);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|b| b == name) {
        let release = profile_dir.file_name().is_some_and(|p| p == "release");
        let mut cargo = std::process::Command::new(env!("CARGO"));
        // From the workspace root: from tests/, cargo looks for the binary in flow-tests only.
        cargo
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .args(["build", "--quiet", "--bin", name]);
        if release {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("run cargo build");
        assert!(status.success(), "cargo build --bin {name} failed");
        built.push(name.to_owned());
    }
    path
}
