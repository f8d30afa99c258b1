//! The `flow-agent` binary as an operator runs it: `check` accepts the shipped sample
//! configuration and refuses bad ones with exit code 1 and the key at fault named;
//! `run` refuses to start on a bad configuration the same way; and `run` with no
//! broker to reach still receives and decodes (its `/metrics` shows it, and
//! `/healthz` reports the outage).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;

use flow_agent::pcap::read_udp_datagrams;
use flow_tests::agent::{AgentProcess, free_udp_port, run_to_exit, sum, write_config};
use flow_tests::services::free_port;

const MINIMAL: &str = "[kafka]\nbrokers = [\"127.0.0.1:9092\"]\n";

/// Runs `flow-agent COMMAND --config FILE` on `text`; returns the exit code and stderr.
fn with_config(command: &str, text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = write_config(dir.path(), text);
    let output = run_to_exit(&[
        OsStr::new(command),
        OsStr::new("--config"),
        path.as_os_str(),
    ]);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_the_shipped_sample() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/dist/agent.toml");
    let output = run_to_exit(&[
        OsStr::new("check"),
        OsStr::new("--config"),
        sample.as_os_str(),
    ]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("valid"));
}

/// Bad configurations, and the key each error must name.
fn bad_configs() -> Vec<(&'static str, String, &'static str)> {
    vec![
        (
            "unknown key",
            format!("{MINIMAL}linger = 5\n"),
            "kafka.linger",
        ),
        (
            "unknown key in a listener",
            format!("{MINIMAL}[[listeners]]\naddress = \"127.0.0.1:2055\"\nworkerz = 2\n"),
            "listeners[0].workerz",
        ),
        (
            "wrong type",
            format!("{MINIMAL}linger_ms = \"soon\"\n"),
            "kafka.linger_ms",
        ),
        (
            "bad address",
            format!("{MINIMAL}[http]\nlisten = \"localhost\"\n"),
            "http.listen",
        ),
        (
            "bad regex",
            format!("{MINIMAL}[[classifiers]]\ndescription = \"^Transit: (\"\n"),
            "classifiers[0].description",
        ),
        (
            "zero batch size",
            format!("{MINIMAL}max_batch_bytes = 0\n"),
            "kafka.max_batch_bytes",
        ),
        (
            "zero flows per record",
            format!("{MINIMAL}max_flows_per_message = 0\n"),
            "kafka.max_flows_per_message",
        ),
        ("missing section", String::new(), "kafka"),
        (
            "unreadable TLS file",
            format!("{MINIMAL}[kafka.tls]\nca_file = \"/nonexistent/ca.pem\"\n"),
            "kafka.tls.ca_file",
        ),
        (
            "missing key",
            format!("{MINIMAL}[[exporters]]\nname = \"edge1\"\n"),
            "exporters[0].address",
        ),
    ]
}

/// Runs `command` on every bad configuration: exit code 1, the key named; returns
/// each error output.
fn refused_naming_the_key(command: &str) -> Vec<String> {
    bad_configs()
        .into_iter()
        .map(|(what, text, key)| {
            let (code, stderr) = with_config(command, &text);
            assert_eq!(code, Some(1), "{command}, {what}: {stderr}");
            assert!(
                stderr.contains(&format!("key `{key}`: ")),
                "{command}, {what}: the error names {key}: {stderr}"
            );
            stderr
        })
        .collect()
}

#[test]
fn check_exits_1_naming_the_key_at_fault() {
    refused_naming_the_key("check");
}

#[test]
fn run_with_a_bad_config_stops_start_up_naming_the_key() {
    for stderr in refused_naming_the_key("run") {
        assert!(
            !stderr.contains("receiving on"),
            "the agent did not start: {stderr}"
        );
    }
}

#[test]
fn run_with_an_unreachable_broker_still_receives() {
    // A port nothing listens on: bound for a free number, then released.
    let broker = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let udp = SocketAddr::from((Ipv4Addr::LOCALHOST, free_udp_port()));
    let http = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let config = format!(
        "[[listeners]]\naddress = \"{udp}\"\n\n[kafka]\nbrokers = [\"{broker}\"]\n\
         produce_timeout_ms = 1000\nunhealthy_after_seconds = 1\n\n[http]\nlisten = \"{http}\"\n"
    );
    let mut agent = AgentProcess::start(&config, http);

    let capture = flow_tests::shared_data_dir().join("captures/netflow/nfv5.pcap");
    let datagrams = read_udp_datagrams(&capture).expect("the NetFlow v5 capture");
    let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a sender");
    for datagram in &datagrams {
        sender.send_to(&datagram.payload, udp).expect("send");
    }
    let text = agent.wait_for("the datagram to be decoded", |text| {
        sum(text, "flow_agent_flows_decoded_total{") >= 29
    });
    assert_eq!(
        sum(
            &text,
            "flow_agent_datagrams_total{exporter=\"127.0.0.1\",protocol=\"netflow-v5\"}"
        ),
        datagrams.len() as u64,
        "{text}"
    );
    assert_eq!(sum(&text, "flow_agent_flows_decoded_total{"), 29);
    // Held for Kafka, neither produced nor dropped, and Kafka reported down.
    let text = agent.wait_for("Kafka to be unreachable for 2 s", |text| {
        sum(text, "flow_agent_kafka_unreachable_seconds") >= 2
    });
    assert!(text.contains("flow_agent_kafka_connected 0"), "{text}");
    assert_eq!(sum(&text, "flow_agent_flows_held"), 29, "{text}");
    assert_eq!(sum(&text, "flow_agent_flows_produced_total"), 0);
    assert_eq!(sum(&text, "flow_agent_flows_dropped_total"), 0);
    let health = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{http}/healthz"))
        .output()
        .expect("run curl");
    assert_eq!(String::from_utf8_lossy(&health.stdout), "503");
    assert!(
        agent.log_tail().contains("retrying with backoff"),
        "the outage is logged: {}",
        agent.log_tail()
    );
}
