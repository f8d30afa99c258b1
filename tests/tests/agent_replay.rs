//! The real captures through the real `flow-agent run` binary: every capture in
//! ../shared/data/captures is replayed over UDP to the agent, the topic is read back
//! with confluent-kafka (librdkafka) and decoded with `protoc`, and the flows must be
//! the same multiset as `flow-agent decode` prints for the same files.
//!
//! Replay: captures are sent in groups (the NetFlow fixtures' groups: templates, then
//! data; every other capture alone), each distinct exporter of a group from its own
//! socket on its own loopback address (127.0.G.S), in capture order, so each exporter
//! keeps its template cache as a router's would. The datagrams are read with the
//! agent's pcap reader, the one `decode` uses, so both sides see the same bytes.
//! NetFlow/IPFIX go to a `netflow` listener that takes the exporter address from the
//! datagram; sFlow to an `sflow` listener that takes it from the packet (the agent
//! address), as `decode --exporter-address packet` does. Both listeners stamp
//! `time_received` from the flow (`timestamps = "flow"`, `decode --timestamps flow`).
//!
//! What is not compared, and why:
//! - `exporter_address` of NetFlow/IPFIX flows is the replay's loopback address on the
//!   agent's side: it is mapped back to the capture's source address, then compared;
//! - the times the decoder stamps with the receive time, which is the capture's time
//!   for `decode` and the clock for the agent: `time_received`, `flow_start` and
//!   `flow_end` of sFlow flows (sFlow carries no flow times), and `time_received` of
//!   NetFlow/IPFIX records that carry no flow end (there is nothing to stamp it from).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;

use flow_agent::pcap::read_udp_datagrams;
use flow_tests::agent::{AgentProcess, datagrams_seen, free_udp_port, sum};
use flow_tests::clients::{consume_with_librdkafka, protoc_decode_many, split_length_delimited};
use flow_tests::services::{KafkaBroker, free_port};

/// A flow in a form both sides can be brought to: field name → value as text.
type Flow = BTreeMap<String, String>;

const PARTITIONS: i32 = 4;
/// Datagrams sent before waiting for the agent to have read them (the socket
/// buffer must not overflow: the comparison counts on the kernel delivering all).
const CHUNK: usize = 32;

fn captures_dir() -> PathBuf {
    flow_tests::shared_data_dir().join("captures")
}

/// Captures a router would send together, in order.
#[derive(Debug)]
struct Group {
    files: Vec<PathBuf>,
    sflow: bool,
}

/// The NetFlow fixtures' groups, then every capture that is in none, alone.
fn groups() -> Vec<Group> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/tests/fixtures/netflow");
    let mut fixture_files: Vec<PathBuf> = std::fs::read_dir(&fixtures)
        .expect("the NetFlow fixtures")
        .map(|entry| entry.expect("a fixture").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    fixture_files.sort();
    let mut groups = Vec::new();
    let mut grouped = BTreeSet::new();
    for path in fixture_files {
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture readable"))
                .expect("fixture JSON");
        let files: Vec<PathBuf> = fixture["files"]
            .as_array()
            .expect("a fixture's files")
            .iter()
            .map(|f| captures_dir().join(f.as_str().expect("a file name")))
            .collect();
        grouped.extend(files.iter().cloned());
        groups.push(Group {
            files,
            sflow: false,
        });
    }
    let mut others = Vec::new();
    for folder in ["netflow", "sflow", "vendors", "pmacct", "cisco-avc"] {
        for entry in std::fs::read_dir(captures_dir().join(folder)).expect("a capture folder") {
            let path = entry.expect("a capture").path();
            if path.extension().is_some_and(|e| e == "pcap") && !grouped.contains(&path) {
                others.push(path);
            }
        }
    }
    others.sort();
    groups.extend(others.into_iter().map(|path| Group {
        sflow: path.starts_with(captures_dir().join("sflow")),
        files: vec![path],
    }));
    groups
}

/// What `flow-agent decode` prints for a group, as [`Flow`]s.
fn decode_reference(group: &Group) -> Vec<Flow> {
    let mut command = Command::new(flow_tests::agent::binary());
    command.args(["decode", "--timestamps", "flow"]);
    if group.sflow {
        command.args(["--exporter-address", "packet"]);
    }
    let output = command
        .args(&group.files)
        .output()
        .expect("run flow-agent decode");
    assert!(
        output.status.success(),
        "decode {:?}: {}",
        group.files,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("JSON lines")
        .lines()
        .map(|line| json_flow(&serde_json::from_str(line).expect("a JSON flow")))
        .collect()
}

fn json_flow(value: &serde_json::Value) -> Flow {
    value
        .as_object()
        .expect("a JSON object")
        .iter()
        .map(|(key, value)| {
            let text = match value {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            (key.clone(), text)
        })
        .collect()
}

/// Fields of `bytes` type: addresses, shown as `decode` shows them.
const ADDRESS_FIELDS: [&str; 4] = ["exporter_address", "src_addr", "dst_addr", "next_hop"];

/// One message as `protoc --decode` prints it (`name: value` lines), as a [`Flow`].
fn protoc_flow(text: &str) -> Flow {
    let mut flow = Flow::new();
    for line in text.lines() {
        let (name, value) = line.split_once(": ").expect("a `name: value` line");
        let value = if let Some(quoted) = value.strip_prefix('"') {
            let bytes = unescape(quoted.strip_suffix('"').expect("a closing quote"));
            if ADDRESS_FIELDS.contains(&name) {
                let octets: [u8; 16] = bytes.as_slice().try_into().expect("a 16-byte address");
                Ipv6Addr::from(octets).to_canonical().to_string()
            } else {
                String::from_utf8(bytes).expect("UTF-8 text")
            }
        } else if name == "src_mac" || name == "dst_mac" {
            let b = value
                .parse::<u64>()
                .expect("a MAC as a number")
                .to_be_bytes();
            format!(
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                b[2], b[3], b[4], b[5], b[6], b[7]
            )
        } else {
            value.to_owned()
        };
        flow.entry(name.to_owned())
            .and_modify(|repeated| {
                repeated.push(',');
                repeated.push_str(&value);
            })
            .or_insert(value);
    }
    flow
}

/// The C-style escapes of protobuf's text format (`\ooo`, `\xhh`, `\n`, `\"`, …).
fn unescape(text: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut chars = text.bytes().peekable();
    while let Some(c) = chars.next() {
        if c != b'\\' {
            bytes.push(c);
            continue;
        }
        match chars.next().expect("an escape") {
            d @ b'0'..=b'7' => {
                let mut value = u32::from(d - b'0');
                for _ in 0..2 {
                    match chars.peek() {
                        Some(&d @ b'0'..=b'7') => {
                            value = value * 8 + u32::from(d - b'0');
                            chars.next();
                        }
                        _ => break,
                    }
                }
                bytes.push(value as u8);
            }
            b'x' => {
                let mut value = 0u8;
                while let Some(d) = chars.peek().and_then(|&d| (d as char).to_digit(16)) {
                    value = value * 16 + d as u8;
                    chars.next();
                }
                bytes.push(value);
            }
            b'n' => bytes.push(b'\n'),
            b'r' => bytes.push(b'\r'),
            b't' => bytes.push(b'\t'),
            other => bytes.push(other),
        }
    }
    bytes
}

/// Starts `flow-agent run` with a NetFlow and an sFlow listener (see the module doc).
/// Returns the agent and the two listeners' addresses.
fn start_agent(bootstrap: &str, topic_base: &str) -> (AgentProcess, SocketAddr, SocketAddr) {
    let netflow = SocketAddr::from((Ipv4Addr::LOCALHOST, free_udp_port()));
    let sflow = SocketAddr::from((Ipv4Addr::LOCALHOST, free_udp_port()));
    let http = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let config = format!(
        r#"
[[listeners]]
address = "{netflow}"
protocol = "netflow"
exporter_address = "datagram"
timestamps = "flow"

[[listeners]]
address = "{sflow}"
protocol = "sflow"
exporter_address = "packet"
timestamps = "flow"

[kafka]
brokers = ["{bootstrap}"]
topic_base = "{topic_base}"
linger_ms = 100

[buffer]
max_flows = 1000000

[http]
listen = "{http}"
"#
    );
    (AgentProcess::start(&config, http), netflow, sflow)
}

/// Sends a group's datagrams to `target` in capture order, each exporter from its own
/// socket on 127.0.`index`.S; returns which loopback address stands for which exporter.
fn replay(
    agent: &mut AgentProcess,
    target: SocketAddr,
    group: &Group,
    index: u8,
) -> HashMap<IpAddr, IpAddr> {
    let mut senders: HashMap<IpAddr, UdpSocket> = HashMap::new();
    let mut stands_for = HashMap::new();
    let mut sent = datagrams_seen(&agent.metrics());
    let mut unconfirmed = 0;
    for file in &group.files {
        for datagram in read_udp_datagrams(file).expect("a readable capture") {
            let exporter = datagram.source.ip();
            let count = senders.len();
            let socket = senders.entry(exporter).or_insert_with(|| {
                let host = u8::try_from(count + 1).expect("fewer than 255 exporters");
                let address = Ipv4Addr::new(127, 0, index, host);
                stands_for.insert(IpAddr::V4(address), exporter);
                UdpSocket::bind((address, 0)).expect("bind a loopback sender")
            });
            socket
                .send_to(&datagram.payload, target)
                .expect("send a datagram");
            sent += 1;
            unconfirmed += 1;
            if unconfirmed == CHUNK {
                agent.wait_for("the agent to read what was sent", |text| {
                    datagrams_seen(text) >= sent
                });
                unconfirmed = 0;
            }
        }
    }
    agent.wait_for("the agent to read what was sent", |text| {
        datagrams_seen(text) >= sent
    });
    stands_for
}

/// A flow without the times the decoder stamps with the receive time (see the module
/// doc): all three for sFlow, `time_received` for records with no flow end.
fn comparable(mut flow: Flow, sflow: bool) -> String {
    if sflow {
        for field in ["time_received", "flow_start", "flow_end"] {
            flow.remove(field);
        }
    } else if !flow.contains_key("flow_end") {
        flow.remove("time_received");
    }
    serde_json::to_string(&flow).expect("a flow as JSON")
}

#[tokio::test]
async fn replayed_captures_come_out_of_kafka_as_decode_prints_them() {
    let broker = KafkaBroker::start();
    let topic = flow_proto::topic_name("replay");
    broker.create_topic(&topic, PARTITIONS).await;
    let (mut agent, netflow, sflow) = start_agent(&broker.bootstrap, "replay");

    let mut expected: Vec<String> = Vec::new();
    let mut stands_for = HashMap::new();
    let groups = groups();
    assert!(
        groups.len() > 80,
        "every capture is replayed: {} groups",
        groups.len()
    );
    for (index, group) in groups.iter().enumerate() {
        expected.extend(
            decode_reference(group)
                .into_iter()
                .map(|flow| comparable(flow, group.sflow)),
        );
        let index = u8::try_from(index + 1).expect("fewer than 255 groups");
        let target = if group.sflow { sflow } else { netflow };
        stands_for.extend(replay(&mut agent, target, group, index));
    }
    let flows = expected.len() as u64;
    assert!(flows > 50_000, "the captures hold {flows} flows");

    let text = agent.wait_for("every flow to be produced", |text| {
        sum(text, "flow_agent_flows_produced_total") + sum(text, "flow_agent_flows_dropped_total")
            >= flows
    });
    assert_eq!(sum(&text, "flow_agent_flows_dropped_total"), 0, "{text}");
    assert_eq!(sum(&text, "flow_agent_flows_produced_total"), flows);
    let records = sum(&text, "flow_agent_kafka_records_total");

    let consumed = consume_with_librdkafka(&broker.bootstrap, &topic, records as usize);
    let messages: Vec<&[u8]> = consumed
        .iter()
        .flat_map(|record| split_length_delimited(&record.value))
        .collect();
    let mut produced: Vec<String> = protoc_decode_many(flow_proto::current(), &messages)
        .iter()
        .map(|text| {
            let mut flow = protoc_flow(text);
            // The NetFlow listener takes the datagram's (loopback) address; the
            // sFlow one the packet's: a flow with no loopback address is sFlow.
            let address = flow
                .get_mut("exporter_address")
                .expect("an exporter address");
            let replayed: IpAddr = address.parse().expect("an exporter address");
            let exporter = stands_for.get(&replayed);
            if let Some(exporter) = exporter {
                *address = exporter.to_canonical().to_string();
            }
            comparable(flow, exporter.is_none())
        })
        .collect();

    expected.sort_unstable();
    produced.sort_unstable();
    let missing: Vec<&String> = difference(&expected, &produced);
    let extra: Vec<&String> = difference(&produced, &expected);
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} flows decoded but not in the topic, e.g. {:?}\n{} in the topic but not decoded, e.g. {:?}",
        missing.len(),
        missing.iter().take(3).collect::<Vec<_>>(),
        extra.len(),
        extra.iter().take(3).collect::<Vec<_>>()
    );
    assert_eq!(produced.len(), expected.len());
}

/// What sorted `a` holds that sorted `b` does not (as multisets).
fn difference<'a>(a: &'a [String], b: &[String]) -> Vec<&'a String> {
    let mut left = Vec::new();
    let mut j = 0;
    for item in a {
        while j < b.len() && b[j] < *item {
            j += 1;
        }
        if j < b.len() && b[j] == *item {
            j += 1;
        } else {
            left.push(item);
        }
    }
    left
}
