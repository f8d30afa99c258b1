//! The `flow-agent` binary as the tests run it: `run` from a configuration file in a
//! temporary directory, stopped (SIGTERM) when dropped, its `/metrics` read with curl;
//! and the short-lived commands (`check`, a `run` that must refuse to start).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::services::Process;

/// The agent binary of this test profile.
pub fn binary() -> PathBuf {
    crate::binary("flow-agent")
}

/// A free UDP port on 127.0.0.1 (bound then released: a race is possible but rare).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .expect("bind an ephemeral UDP port")
        .port()
}

/// Writes `text` as `agent.toml` in `dir` and returns its path.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).expect("write agent.toml");
    path
}

/// Runs `flow-agent ARGS` to its end; a command still running after a minute is a
/// hang (killed, and the test fails), not a timing claim.
pub fn run_to_exit(args: &[&std::ffi::OsStr]) -> Output {
    let mut child = Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start flow-agent");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait for flow-agent").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("flow-agent {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("flow-agent's output")
}

/// `flow-agent run --config FILE`, running.
#[derive(Debug)]
pub struct AgentProcess {
    process: Process,
    http: SocketAddr,
    _dir: TempDir,
}

impl AgentProcess {
    /// Starts the agent on `config`, whose `[http] listen` must be `http`, and waits
    /// until `/metrics` answers.
    pub fn start(config: &str, http: SocketAddr) -> AgentProcess {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = write_config(dir.path(), config);
        let mut command = Command::new(binary());
        command.arg("run").arg("--config").arg(&path);
        let process = Process::spawn("flow-agent", command, &dir.path().join("agent.log"));
        let mut agent = AgentProcess {
            process,
            http,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while agent.try_metrics().is_none() {
            agent.process.assert_running();
            assert!(
                Instant::now() < deadline,
                "the agent's /metrics never answered:\n{}",
                agent.process.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    fn try_metrics(&self) -> Option<String> {
        let output = Command::new("curl")
            .args(["-sf", &format!("http://{}/metrics", self.http)])
            .output()
            .expect("run curl");
        output
            .status
            .success()
            .then(|| String::from_utf8(output.stdout).expect("metrics text"))
    }

    /// `/metrics` (Prometheus text); panics with the agent's log if it has exited.
    pub fn metrics(&mut self) -> String {
        self.process.assert_running();
        self.try_metrics().expect("the agent's /metrics")
    }

    /// Polls `/metrics` until `done` holds and returns that text; a minute without is
    /// a hang, not a timing claim.
    pub fn wait_for(&mut self, what: &str, mut done: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = self.metrics();
            if done(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "gave up waiting for {what}:\n{text}\n{}",
                self.process.log_tail()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The agent's output so far.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}

/// The sum of every sample whose name and labels start with `prefix`.
pub fn sum(metrics: &str, prefix: &str) -> u64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

/// Datagrams the agent has read: recognised ones, and those of no known protocol.
pub fn datagrams_seen(metrics: &str) -> u64 {
    sum(metrics, "flow_agent_datagrams_total{")
        + sum(
            metrics,
            "flow_agent_decode_errors_total{protocol=\"unknown\"",
        )
}
