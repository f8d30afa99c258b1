//! TLS to Kafka (`[kafka.tls]`), end to end. Tansu has no TLS listener, so the test
//! puts a TLS-terminating proxy (`flow_tests::tls::TlsTerminator`) in front of it and
//! has the broker advertise the proxy's address: every connection the agent makes,
//! bootstrap and partition leaders, goes through TLS. The certificates are made by the
//! `openssl` command (`flow_tests::tls::Certificates`): a test CA, a server certificate
//! for 127.0.0.1 (IP subject alternative name) and a client certificate, which the
//! proxy requires.
//!
//! - with the CA trusted and the client certificate set, a real capture's flows are
//!   produced and read back (through TLS as well);
//! - with another CA trusted, the handshake fails, nothing is produced, and the agent
//!   reports Kafka unreachable; with `insecure_skip_verify` the same setup produces.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flow_agent::config::Config;
use flow_agent::metrics::Metrics;
use flow_agent::pcap::read_udp_datagrams;
use flow_agent::run::Agent;
use flow_proto::FlowMessage;
use flow_tests::services::{KafkaBroker, free_port};
use flow_tests::tls::{Certificates, ClientAuth, TlsTerminator};
use rskafka::client::partition::UnknownTopicHandling;
use tokio::net::TcpListener;

/// Flows in the NetFlow v5 capture the test sends.
const FLOWS: u64 = 29;

/// The broker behind the TLS terminator (which requires a client certificate), and the
/// topic created through TLS.
async fn broker_behind_tls(
    certificates: &Certificates,
) -> (KafkaBroker, TlsTerminator, rskafka::client::Client) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind the proxy");
    let advertised = listener.local_addr().expect("the proxy's address").port();
    let broker = KafkaBroker::start_advertising(free_port(), advertised);
    let upstream = broker.bootstrap.parse().expect("the broker's address");
    let proxy = TlsTerminator::start(certificates, listener, upstream, ClientAuth::Required);
    let client = rskafka::client::ClientBuilder::new(vec![proxy.address().to_string()])
        .tls_config(Arc::new(certificates.client_config()))
        .build()
        .await
        .expect("connect through the TLS proxy");
    client
        .controller_client()
        .expect("controller client")
        .create_topic(flow_proto::topic_name("tls"), 1, 1, 5_000)
        .await
        .expect("create the topic through TLS");
    (broker, proxy, client)
}

fn agent_config(
    proxy: SocketAddr,
    certificates: &Certificates,
    ca: &str,
    skip_verify: bool,
) -> Config {
    let text = format!(
        r#"
shutdown_flush_ms = 1000

[[listeners]]
address = "127.0.0.1:0"

[kafka]
brokers = ["{proxy}"]
topic_base = "tls"
linger_ms = 50
produce_timeout_ms = 2000
max_backoff_ms = 500

[kafka.tls]
ca_file = "{}"
cert_file = "{}"
key_file = "{}"
insecure_skip_verify = {skip_verify}
"#,
        certificates.path(&format!("{ca}.pem")).display(),
        certificates.path("client.pem").display(),
        certificates.path("client.key").display(),
    );
    Config::parse(&text).expect("the test configuration")
}

/// Starts an agent on `config` and sends it the NetFlow v5 capture.
fn start_and_send(config: &Config) -> (Agent, Arc<Metrics>) {
    let agent = Agent::start(config).expect("the agent starts");
    let capture = flow_tests::shared_data_dir().join("captures/netflow/nfv5.pcap");
    let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a sender");
    for datagram in read_udp_datagrams(&capture).expect("the capture") {
        sender
            .send_to(&datagram.payload, agent.listen_addresses()[0])
            .expect("send");
    }
    let metrics = Arc::clone(agent.metrics());
    (agent, metrics)
}

/// Waits until the capture's flows are produced, and reads the topic.
async fn produced_flows(metrics: &Metrics, client: &rskafka::client::Client) -> Vec<FlowMessage> {
    wait_for("the flows to be produced", || {
        metrics.total_produced() == FLOWS
    })
    .await;
    read_topic(client).await
}

/// Polls `done` every 20 ms; a minute without is a hang, not a timing claim.
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every flow in the topic's one partition, read through TLS.
async fn read_topic(client: &rskafka::client::Client) -> Vec<FlowMessage> {
    let partition = client
        .partition_client(
            flow_proto::topic_name("tls"),
            0,
            UnknownTopicHandling::Retry,
        )
        .await
        .expect("partition client");
    let (records, _high_watermark) = partition
        .fetch_records(0, 1..10_000_000, 1_000)
        .await
        .expect("fetch through TLS");
    records
        .into_iter()
        .flat_map(|record| {
            flow_proto::decode_batch::<FlowMessage>(&record.record.value.unwrap_or_default())
                .expect("length-delimited flows")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_reach_kafka_over_tls_with_a_client_certificate() {
    let certificates = Certificates::make();
    let (_broker, proxy, client) = broker_behind_tls(&certificates).await;
    let handshakes_before = proxy.handshakes();

    let (agent, metrics) =
        start_and_send(&agent_config(proxy.address(), &certificates, "ca", false));
    let flows = produced_flows(&metrics, &client).await;
    assert!(
        proxy.handshakes() > handshakes_before,
        "the agent went through TLS"
    );
    assert_eq!(proxy.failures(), 0);
    assert_eq!(flows.len() as u64, FLOWS);
    assert!(
        flows.iter().any(|f| f.dst_port == 11963 && f.bytes == 133),
        "the capture's first flow"
    );
    agent.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_broker_is_refused_unless_verification_is_skipped() {
    let certificates = Certificates::make();
    let (_broker, proxy, client) = broker_behind_tls(&certificates).await;

    let untrusted = agent_config(proxy.address(), &certificates, "other-ca", false);
    let (agent, metrics) = start_and_send(&untrusted);
    wait_for("the agent to refuse the broker's certificate", || {
        proxy.failures() >= 2 && metrics.total_decoded() == FLOWS
    })
    .await;
    assert_eq!(
        metrics.total_produced(),
        0,
        "nothing reaches an untrusted broker"
    );
    assert!(metrics.render().contains("flow_agent_kafka_connected 0"));
    agent.shutdown();
    assert!(read_topic(&client).await.is_empty());

    let skipping = agent_config(proxy.address(), &certificates, "other-ca", true);
    let (agent, metrics) = start_and_send(&skipping);
    assert_eq!(produced_flows(&metrics, &client).await.len() as u64, FLOWS);
    agent.shutdown();
}
