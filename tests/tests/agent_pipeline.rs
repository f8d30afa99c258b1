//! The agent against a real broker (Tansu): flows sent over UDP come out of the
//! topic, nothing is lost while the broker is frozen or restarted within the
//! buffer bound, drops beyond it are counted exactly, and bad input is counted
//! without stopping the agent.
//!
//! The agent runs in-process ([`flow_agent::run::Agent`]) so its counters can be
//! read directly; `agent_cli.rs` runs the binary. Flows are synthetic NetFlow v5
//! datagrams whose every flow carries a unique identity (source address and
//! port), so the test can tell lost flows from duplicates: delivery is
//! at-least-once, and a produce request abandoned on a frozen broker may have
//! been written.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use flow_agent::config::Config;
use flow_agent::run::Agent;
use flow_proto::FlowMessage;
use flow_tests::services::KafkaBroker;
use rskafka::client::partition::UnknownTopicHandling;

const PARTITIONS: i32 = 4;
const FLOWS_PER_DATAGRAM: u32 = 30;

/// A flow's identity: where the test put its sequence number.
fn identity(flow: &FlowMessage) -> u32 {
    let src = flow.src_addr.get(12..16).unwrap_or_default();
    u32::from_be_bytes(src.try_into().expect("an IPv4-mapped source address"))
}

/// One NetFlow v5 datagram carrying flows `first..first + count` (each with its
/// number as source address).
fn netflow_v5(first: u32, count: u32) -> Vec<u8> {
    let mut datagram = Vec::with_capacity(24 + 48 * count as usize);
    datagram.extend_from_slice(&5u16.to_be_bytes());
    datagram.extend_from_slice(&(count as u16).to_be_bytes());
    datagram.extend_from_slice(&100_000u32.to_be_bytes()); // sys_uptime ms
    datagram.extend_from_slice(&1_790_000_000u32.to_be_bytes()); // unix_secs
    datagram.extend_from_slice(&0u32.to_be_bytes()); // unix_nsecs
    datagram.extend_from_slice(&first.to_be_bytes()); // flow_sequence
    datagram.extend_from_slice(&[0, 0, 0, 0]); // engine type, id, sampling
    for id in first..first + count {
        datagram.extend_from_slice(&id.to_be_bytes()); // srcaddr
        datagram.extend_from_slice(&Ipv4Addr::new(192, 0, 2, 1).octets()); // dstaddr
        datagram.extend_from_slice(&[0; 4]); // nexthop
        datagram.extend_from_slice(&3u16.to_be_bytes()); // input
        datagram.extend_from_slice(&4u16.to_be_bytes()); // output
        datagram.extend_from_slice(&2u32.to_be_bytes()); // packets
        datagram.extend_from_slice(&3000u32.to_be_bytes()); // bytes
        datagram.extend_from_slice(&90_000u32.to_be_bytes()); // first
        datagram.extend_from_slice(&95_000u32.to_be_bytes()); // last
        datagram.extend_from_slice(&((id % 60_000) as u16 + 1024).to_be_bytes()); // srcport
        datagram.extend_from_slice(&443u16.to_be_bytes()); // dstport
        datagram.extend_from_slice(&[0, 0x18, 6, 0]); // pad, tcp flags, proto, tos
        datagram.extend_from_slice(&[0; 4]); // src/dst AS
        datagram.extend_from_slice(&[24, 24, 0, 0]); // masks, pad
    }
    datagram
}

/// Polls `done` every 50 ms; panics with `what` after a minute (a hang, not a timing claim).
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends flows `ids` to the agent, waiting for each chunk to be decoded before
/// the next (a loopback burst could overflow the socket buffer, and the test
/// counts on the kernel delivering everything).
fn send_flows(agent: &Agent, ids: std::ops::Range<u32>) {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a sender");
    let target: SocketAddr = agent.listen_addresses()[0];
    let metrics = agent.metrics();
    let mut next = ids.start;
    while next < ids.end {
        let chunk_end = (next + 20 * FLOWS_PER_DATAGRAM).min(ids.end);
        let decoded_before = metrics.total_decoded();
        let mut first = next;
        while first < chunk_end {
            let count = FLOWS_PER_DATAGRAM.min(chunk_end - first);
            socket
                .send_to(&netflow_v5(first, count), target)
                .expect("send a datagram");
            first += count;
        }
        let expected = decoded_before + u64::from(chunk_end - next);
        wait_for("the agent to decode what was sent", || {
            metrics.total_decoded() >= expected
        });
        next = chunk_end;
    }
}

/// How long the broker stays frozen or dead while flows keep coming.
const OUTAGE: Duration = Duration::from_secs(10);

/// Sends flows `ids` spread over `OUTAGE`, as exporters keep sending while Kafka is away.
fn send_flows_during_outage(agent: &Agent, ids: std::ops::Range<u32>) {
    const STEPS: u32 = 10;
    let step = (ids.end - ids.start).div_ceil(STEPS);
    for i in 0..STEPS {
        let start = (ids.start + i * step).min(ids.end);
        send_flows(agent, start..(start + step).min(ids.end));
        std::thread::sleep(OUTAGE / STEPS);
    }
}

fn config(brokers: &str, topic_base: &str, max_flows: usize) -> Config {
    let text = format!(
        r#"
[[listeners]]
address = "127.0.0.1:0"
timestamps = "flow"

[kafka]
brokers = ["{brokers}"]
topic_base = "{topic_base}"
linger_ms = 50
max_flows_per_message = 100
produce_timeout_ms = 2000
max_backoff_ms = 500

[buffer]
max_flows = {max_flows}
"#
    );
    Config::parse(&text).expect("test configuration")
}

/// Every flow in the topic, read with rskafka up to each partition's high watermark.
async fn read_topic(broker: &KafkaBroker, topic: &str) -> Vec<FlowMessage> {
    let client = broker.client().await;
    let mut flows = Vec::new();
    for partition in 0..PARTITIONS {
        let partition = client
            .partition_client(topic, partition, UnknownTopicHandling::Retry)
            .await
            .expect("partition client");
        let mut offset = 0;
        loop {
            let (records, high_watermark) = partition
                .fetch_records(offset, 1..10_000_000, 100)
                .await
                .expect("fetch records");
            for record in records {
                let value = record.record.value.unwrap_or_default();
                flows.extend(
                    flow_proto::decode_batch::<FlowMessage>(&value)
                        .expect("length-delimited flows"),
                );
                offset = record.offset + 1;
            }
            if offset >= high_watermark {
                break;
            }
        }
    }
    flows
}

fn identities(flows: &[FlowMessage]) -> BTreeSet<u32> {
    flows.iter().map(identity).collect()
}

/// Waits until the agent holds nothing: every flow decoded was produced or dropped.
fn wait_settled(agent: &Agent) {
    let metrics = agent.metrics();
    wait_for("the agent to produce or drop everything", || {
        metrics.total_produced() + metrics.total_dropped() == metrics.total_decoded()
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_sent_over_udp_come_out_of_the_topic() {
    let broker = KafkaBroker::start();
    let topic = flow_proto::topic_name("udp");
    broker.create_topic(&topic, PARTITIONS).await;
    let agent = Agent::start(&config(&broker.bootstrap, "udp", 100_000)).expect("agent starts");

    send_flows(&agent, 0..3_000);
    wait_settled(&agent);
    let metrics = agent.metrics();
    assert_eq!(metrics.total_produced(), 3_000);
    assert_eq!(metrics.total_dropped(), 0);

    let flows = read_topic(&broker, &topic).await;
    assert_eq!(flows.len(), 3_000, "no duplicates without failures");
    assert_eq!(identities(&flows), (0..3_000).collect());
    let flow = flows.iter().find(|f| identity(f) == 7).expect("flow 7");
    assert_eq!(
        (flow.bytes, flow.packets, flow.proto, flow.dst_port),
        (3000, 2, 6, 443)
    );
    let text = metrics.render();
    let records: u64 = sample(&text, "flow_agent_kafka_records_total");
    assert!(
        records < 3_000 / 10,
        "several flows per record: {records} records"
    );
    agent.shutdown();
}

/// The value of an unlabelled sample in Prometheus text.
fn sample(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} in\n{text}"))
}

/// Flows sent: 1,500 before the outage, 4,500 during it, 1,500 after.
const SENT: u32 = 7_500;

/// Asserts what the agent produced against the topic: with a bound that holds
/// the whole outage, every flow; with a smaller one, `sent = produced + dropped`
/// and the topic holds exactly the produced flows (at least once each).
fn check_accounting(agent: &Agent, flows_in_topic: &BTreeSet<u32>, sent: u32, bound: usize) {
    let metrics = agent.metrics();
    assert_eq!(metrics.total_decoded(), u64::from(sent));
    assert_eq!(
        metrics.total_produced() + metrics.total_dropped(),
        u64::from(sent)
    );
    assert_eq!(flows_in_topic.len() as u64, metrics.total_produced());
    if bound >= sent as usize {
        assert_eq!(metrics.total_dropped(), 0, "the bound was never reached");
    } else {
        assert!(
            metrics.total_dropped() > 0,
            "the outage overflowed the bound"
        );
        let text = metrics.render();
        let dropped = sample(
            &text,
            "flow_agent_flows_dropped_total{reason=\"buffer-full\"}",
        );
        assert_eq!(
            dropped,
            metrics.total_dropped(),
            "every drop is the buffer's"
        );
    }
}

async fn frozen_broker(bound: usize) {
    let broker = KafkaBroker::start();
    let topic = flow_proto::topic_name("frozen");
    broker.create_topic(&topic, PARTITIONS).await;
    let agent = Agent::start(&config(&broker.bootstrap, "frozen", bound)).expect("agent starts");

    send_flows(&agent, 0..1_500);
    broker.process().signal(libc::SIGSTOP);
    send_flows_during_outage(&agent, 1_500..6_000);
    // The agent found the broker frozen: a produce call timed out.
    assert!(
        agent
            .metrics()
            .render()
            .contains("flow_agent_kafka_connected 0")
    );
    broker.process().signal(libc::SIGCONT);
    send_flows(&agent, 6_000..SENT);
    wait_settled(&agent);

    let in_topic = identities(&read_topic(&broker, &topic).await);
    check_accounting(&agent, &in_topic, SENT, bound);
    if bound >= SENT as usize {
        assert_eq!(in_topic, (0..SENT).collect(), "every flow, at least once");
    }
    agent.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_broker_loses_nothing_within_the_bound() {
    frozen_broker(100_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_broker_beyond_the_bound_counts_every_drop() {
    frozen_broker(2_000).await;
}

async fn restarted_broker(bound: usize) {
    let mut broker = KafkaBroker::start();
    let topic = flow_proto::topic_name("restart");
    broker.create_topic(&topic, PARTITIONS).await;
    let agent = Agent::start(&config(&broker.bootstrap, "restart", bound)).expect("agent starts");

    send_flows(&agent, 0..1_500);
    wait_settled(&agent);
    // Memory storage forgets everything: read what was produced before the kill.
    let mut in_topic = identities(&read_topic(&broker, &topic).await);
    assert_eq!(in_topic, (0..1_500).collect());

    broker.kill();
    send_flows_during_outage(&agent, 1_500..6_000);
    assert!(
        agent
            .metrics()
            .render()
            .contains("flow_agent_kafka_connected 0"),
        "the agent saw the broker gone"
    );
    broker.restart();
    // The agent must not produce before the topic exists again (it finds it by itself).
    broker.create_topic(&topic, PARTITIONS).await;
    send_flows(&agent, 6_000..SENT);
    wait_settled(&agent);

    let after = identities(&read_topic(&broker, &topic).await);
    assert!(
        after.iter().all(|id| !in_topic.contains(id)),
        "nothing produced twice across the restart"
    );
    in_topic.extend(after);
    check_accounting(&agent, &in_topic, SENT, bound);
    if bound >= SENT as usize {
        assert_eq!(in_topic, (0..SENT).collect(), "every flow, at least once");
    }
    agent.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_broker_loses_nothing_within_the_bound() {
    restarted_broker(100_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_broker_beyond_the_bound_counts_every_drop() {
    restarted_broker(2_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_at_start_holds_up_to_the_bound_and_counts_drops() {
    let mut broker = KafkaBroker::start();
    let bootstrap = broker.bootstrap.clone();
    broker.kill();
    let agent =
        Agent::start(&config(&bootstrap, "late", 1_000)).expect("agent starts without Kafka");
    let metrics = agent.metrics();

    send_flows(&agent, 0..2_500);
    assert_eq!(
        metrics.total_decoded(),
        2_500,
        "receiving goes on without Kafka"
    );
    assert_eq!(
        metrics.total_dropped(),
        1_500,
        "everything beyond the bound"
    );
    assert!(metrics.render().contains("flow_agent_flows_held 1000"));

    broker.restart();
    let topic = flow_proto::topic_name("late");
    broker.create_topic(&topic, PARTITIONS).await;
    wait_settled(&agent);
    assert_eq!(metrics.total_produced(), 1_000);
    assert_eq!(metrics.total_produced() + metrics.total_dropped(), 2_500);
    let flows = read_topic(&broker, &topic).await;
    assert_eq!(
        identities(&flows),
        (0..1_000).collect(),
        "the oldest flows are the ones kept"
    );
    agent.shutdown();
}

#[test]
fn garbage_and_truncated_datagrams_are_counted_and_the_agent_keeps_going() {
    // No broker: this is about the receiving end.
    let agent = Agent::start(&config("127.0.0.1:1", "garbage", 100_000)).expect("agent starts");
    let metrics = agent.metrics();
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a sender");
    let target = agent.listen_addresses()[0];
    let valid = netflow_v5(0, 10);
    let garbage: Vec<Vec<u8>> = vec![
        vec![0xde, 0xad, 0xbe, 0xef, 1, 2, 3],
        vec![0],
        valid[..30].to_vec(),
        valid[..valid.len() - 1].to_vec(),
        vec![0, 9, 0, 1, 0, 0],
        vec![0, 10, 0, 200, 0, 0, 0, 0],
    ];
    for datagram in &garbage {
        socket.send_to(datagram, target).expect("send garbage");
    }
    wait_for("every bad datagram to be counted", || {
        metrics.total_decode_errors() >= garbage.len() as u64
    });
    socket
        .send_to(&valid, target)
        .expect("send a valid datagram");
    wait_for("the valid datagram after the garbage", || {
        metrics.total_decoded() >= 10
    });
    assert_eq!(metrics.total_decode_errors(), garbage.len() as u64);
    let text = metrics.render();
    assert!(
        text.contains("flow_agent_decode_errors_total{protocol=\"unknown\""),
        "{text}"
    );
    assert!(
        text.contains("flow_agent_decode_errors_total{protocol=\"netflow-v5\""),
        "{text}"
    );
    agent.shutdown();
}
