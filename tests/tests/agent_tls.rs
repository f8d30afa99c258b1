//! TLS to Kafka (`[kafka.tls]`), end to end. Tansu has no TLS listener, so the test
//! puts a TLS-terminating proxy (a tokio-rustls server) in front of it and has the
//! broker advertise the proxy's address: every connection the agent makes, bootstrap
//! and partition leaders, goes through TLS. The certificates are made by the
//! `openssl` command: a test CA, a server certificate for 127.0.0.1 (IP subject
//! alternative name) and a client certificate, which the proxy requires.
//!
//! - with the CA trusted and the client certificate set, a real capture's flows are
//!   produced and read back (through TLS as well);
//! - with another CA trusted, the handshake fails, nothing is produced, and the agent
//!   reports Kafka unreachable; with `insecure_skip_verify` the same setup produces.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flow_agent::config::Config;
use flow_agent::metrics::Metrics;
use flow_agent::pcap::read_udp_datagrams;
use flow_agent::run::Agent;
use flow_proto::FlowMessage;
use flow_tests::services::{KafkaBroker, free_port};
use rskafka::client::partition::UnknownTopicHandling;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};

/// Flows in the NetFlow v5 capture the test sends.
const FLOWS: u64 = 29;

/// The test's certificates, made with `openssl`.
struct Certificates {
    dir: tempfile::TempDir,
}

impl Certificates {
    fn make() -> Certificates {
        let dir = tempfile::tempdir().expect("temporary directory");
        let certificates = Certificates { dir };
        for ca in ["ca", "other-ca"] {
            certificates.openssl(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=flow test {ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
            ]);
        }
        for (name, extensions) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            std::fs::write(certificates.path(&format!("{name}.ext")), extensions)
                .expect("write the extensions");
            certificates.openssl(&[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &format!("/CN=flow test {name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ]);
            certificates.openssl(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ]);
        }
        certificates
    }

    fn openssl(&self, args: &[&str]) {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("run openssl (Debian package openssl)");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn certificate_chain(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .expect("a PEM file")
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

fn roots(ca: &Path) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for certificate in certificate_chain(ca) {
        roots.add(certificate).expect("a CA certificate");
    }
    Arc::new(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS-terminating proxy to the broker that requires a client certificate from the test CA.
struct TlsProxy {
    address: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    failures: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsProxy {
    async fn start(certificates: &Certificates, listener: TcpListener, upstream: u16) -> TlsProxy {
        let verifier = WebPkiClientVerifier::builder_with_provider(
            roots(&certificates.path("ca.pem")),
            provider(),
        )
        .build()
        .expect("a client verifier");
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                certificate_chain(&certificates.path("server.pem")),
                PrivateKeyDer::from_pem_file(certificates.path("server.key")).expect("a key"),
            )
            .expect("the server certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(AtomicUsize::new(0));
        let address = listener.local_addr().expect("the proxy's address");
        let (ok, failed) = (Arc::clone(&handshakes), Arc::clone(&failures));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (acceptor, ok, failed) =
                    (acceptor.clone(), Arc::clone(&ok), Arc::clone(&failed));
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(client).await else {
                        failed.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    ok.fetch_add(1, Ordering::SeqCst);
                    if let Ok(mut broker) =
                        TcpStream::connect((Ipv4Addr::LOCALHOST, upstream)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
                    }
                });
            }
        });
        TlsProxy {
            address,
            handshakes,
            failures,
            task,
        }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The broker behind the proxy, and the topic created through TLS.
async fn broker_behind_tls(
    certificates: &Certificates,
) -> (KafkaBroker, TlsProxy, rskafka::client::Client) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind the proxy");
    let advertised = listener.local_addr().expect("the proxy's address").port();
    let broker = KafkaBroker::start_advertising(free_port(), advertised);
    let port: u16 = broker
        .bootstrap
        .rsplit_once(':')
        .expect("host:port")
        .1
        .parse()
        .expect("a port");
    let proxy = TlsProxy::start(certificates, listener, port).await;
    let tls = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots(&certificates.path("ca.pem")))
        .with_client_auth_cert(
            certificate_chain(&certificates.path("client.pem")),
            PrivateKeyDer::from_pem_file(certificates.path("client.key")).expect("a key"),
        )
        .expect("the client certificate");
    let client = rskafka::client::ClientBuilder::new(vec![proxy.address.to_string()])
        .tls_config(Arc::new(tls))
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
    let handshakes_before = proxy.handshakes.load(Ordering::SeqCst);

    let (agent, metrics) = start_and_send(&agent_config(proxy.address, &certificates, "ca", false));
    let flows = produced_flows(&metrics, &client).await;
    assert!(
        proxy.handshakes.load(Ordering::SeqCst) > handshakes_before,
        "the agent went through TLS"
    );
    assert_eq!(proxy.failures.load(Ordering::SeqCst), 0);
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

    let untrusted = agent_config(proxy.address, &certificates, "other-ca", false);
    let (agent, metrics) = start_and_send(&untrusted);
    wait_for("the agent to refuse the broker's certificate", || {
        proxy.failures.load(Ordering::SeqCst) >= 2 && metrics.total_decoded() == FLOWS
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

    let skipping = agent_config(proxy.address, &certificates, "other-ca", true);
    let (agent, metrics) = start_and_send(&skipping);
    assert_eq!(produced_flows(&metrics, &client).await.len() as u64, FLOWS);
    agent.shutdown();
}
