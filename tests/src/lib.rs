//! Support for the integration tests: the real services they talk to, started on
//! free loopback ports and stopped when dropped, and the independent clients the
//! tests check the project against.
//!
//! - [`services`]: the Kafka-protocol broker (Tansu) and the ClickHouse engine.
//! - [`agent`]: the `flow-agent` binary run as an operator runs it.
//! - [`clients`]: confluent-kafka (librdkafka) and `protoc`, independent of our code.
//! - [`traffic`]: realistic flow datagrams, made by real exporters from synthetic traffic.
//! - [`pipeline`]: the whole pipeline on one machine, for the demo and the end-to-end test.
//! - [`tls`]: test certificates (made by `openssl`) and a TLS terminator in front of the broker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod agent;
pub mod clients;
pub mod pipeline;
pub mod services;
pub mod tls;
pub mod traffic;

use std::path::{Path, PathBuf};

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
/// for this profile. Tests (run from target/<profile>/deps/) build it first, once per
/// process, as a single test target does not build other packages' binaries; the demo
/// (run from target/<profile>/) takes the one `./run-demo` built beside it.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let exe = std::env::current_exe().expect("the executable's path");
    let exe_dir = exe.parent().expect("the executable's folder");
    if !exe_dir.ends_with("deps") {
        let path = exe_dir.join(name);
        assert!(
            path.exists(),
            "{} is missing: build it with `cargo build --profile demo --workspace --bins` (as ./run-demo does)",
            path.display()
        );
        return path;
    }
    let profile_dir = exe_dir.parent().expect("target/<profile>");
    let path = profile_dir.join(name);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|b| b == name) {
        let release = profile_dir.file_name().is_some_and(|p| p == "release");
        let mut cargo = std::process::Command::new(env!("CARGO"));
        // The variables cargo sets for this test process are not the outer build's:
        // build scripts that watch one (ring watches CARGO_MANIFEST_DIR) would run
        // again and rebuild their crates on every test run.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("CARGO_PKG_")
                || matches!(
                    key.as_ref(),
                    "CARGO_MANIFEST_DIR"
                        | "CARGO_MANIFEST_PATH"
                        | "CARGO_CRATE_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "CARGO_TARGET_TMPDIR"
                )
            {
                cargo.env_remove(key.as_ref());
            }
        }
        // Run outside cargo (a bench binary started by hand), the rustup proxy
        // would pick each crate's toolchain from its own folder (rskafka pins
        // one): the rustc beside this cargo is the toolchain that built us.
        if std::env::var_os("RUSTUP_TOOLCHAIN").is_none() && std::env::var_os("RUSTC").is_none() {
            let rustc = Path::new(env!("CARGO")).with_file_name("rustc");
            if rustc.exists() {
                cargo.env("RUSTC", rustc);
            }
        }
        // Each binary is its package's only one, of the same name.
        cargo.args(["build", "--quiet", "-p", name, "--bin", name]);
        if release {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("run cargo build");
        assert!(status.success(), "cargo build --bin {name} failed");
        built.push(name.to_owned());
    }
    path
}

/// The calling thread's CPU time (user and system), for the benchmarks: these
/// machines are shared, so wall time is noise.
pub fn thread_cpu_time() -> std::time::Duration {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .expect("thread CPU clock");
    std::time::Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
}
