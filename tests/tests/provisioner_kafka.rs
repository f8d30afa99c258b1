//! The provisioner's Kafka topic manager against the real test broker (Tansu), each
//! result read back with an independent client (confluent-kafka's AdminClient through
//! tests/support/kafka_admin.py), and, for what the test broker lacks (CreatePartitions,
//! AlterConfigs) or does not check (`validate_only`, SASL), at the message level: a
//! scripted peer on loopback decodes our requests with kafka-protocol's own decoders
//! and answers with bytes made by kafka-protocol's own encoders.
//!
//! Topics use 3 or 6 partitions: the test broker auto-creates unknown topics with 4.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;

use flow_provisioner::Mode;
use flow_provisioner::config::Config;
use flow_provisioner::kafka;
use flow_tests::services::{KafkaBroker, free_port};
use flow_tests::tls::{Certificates, ClientAuth, TlsTerminator};
use serde_json::Value;

const TOPIC_BASE: &str = "flows";

fn topic() -> String {
    flow_proto::topic_name(TOPIC_BASE)
}

/// A whole provisioner config for `bootstrap`, with extra `[kafka…]` lines.
fn config_text(brokers: &[&str], extra: &str) -> String {
    let brokers: Vec<String> = brokers.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        "[kafka]\nbrokers = [{}]\ntopic_base = \"{TOPIC_BASE}\"\ntimeout_seconds = 10\n{extra}\n",
        brokers.join(", ")
    )
}

fn config(brokers: &[&str], extra: &str) -> kafka::KafkaConfig {
    Config::parse(&config_text(brokers, extra)).unwrap().kafka
}

/// The topic as confluent-kafka's AdminClient describes it.
fn describe_independently(bootstrap: &str) -> Value {
    admin(&["describe", "--bootstrap", bootstrap, "--topic", &topic()])
}

fn admin(args: &[&str]) -> Value {
    let output = Command::new(flow_tests::python())
        .arg(flow_tests::support_dir().join("kafka_admin.py"))
        .args(args)
        .output()
        .expect("run kafka_admin.py");
    assert!(
        output.status.success(),
        "kafka_admin.py {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Runs the binary on a config; returns the exit code, stdout and stderr. The binary
/// also runs the ClickHouse part (issue 6), so its exit code is asserted only where the
/// Kafka part alone decides it (a failure); counts come from the library calls.
fn run(command: &str, text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("provisioner.toml");
    std::fs::write(&path, text).unwrap();
    let output = Command::new(flow_tests::binary("flow-provisioner"))
        .arg(command)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const CONFIG_ENTRIES: &str = "[kafka.topic]\npartitions = 3\n\
     [kafka.topic.config]\n\"retention.ms\" = \"3600000\"\n\"cleanup.policy\" = \"delete\"\n";

#[tokio::test]
async fn creates_the_topic_then_a_second_run_changes_nothing() {
    let broker = KafkaBroker::start();
    let config = config(&[&broker.bootstrap], CONFIG_ENTRIES);
    // plan on a missing topic: one change pending, and still no topic.
    assert_eq!(kafka::migrate(&config, Mode::Plan).await.unwrap(), 1);
    let topics = admin(&["topics", "--bootstrap", &broker.bootstrap]);
    assert_eq!(topics["topics"], serde_json::json!([]), "{topics}");

    assert_eq!(kafka::migrate(&config, Mode::Apply).await.unwrap(), 1);

    let seen = describe_independently(&broker.bootstrap);
    assert_eq!(seen["partitions"], 3, "{seen}");
    assert_eq!(seen["replication_factor"], 1, "{seen}");
    assert_eq!(seen["config"]["retention.ms"], "3600000", "{seen}");
    assert_eq!(seen["config"]["cleanup.policy"], "delete", "{seen}");

    assert_eq!(kafka::migrate(&config, Mode::Apply).await.unwrap(), 0);
    let (_, _, stderr) = run(
        "migrate",
        &config_text(&[&broker.bootstrap], CONFIG_ENTRIES),
    );
    let line = format!("topic {} is in line with the config: nothing sent", topic());
    assert!(stderr.contains(&line), "{stderr}");
    assert_eq!(describe_independently(&broker.bootstrap), seen);
    assert_eq!(kafka::status(&config).await.unwrap(), 0);
}

#[tokio::test]
async fn a_changed_entry_is_updated_and_an_unlisted_override_removed() {
    let broker = KafkaBroker::start();
    let first = config(&[&broker.bootstrap], CONFIG_ENTRIES);
    kafka::migrate(&first, Mode::Apply).await.unwrap();
    // An override someone else set, through the independent client.
    admin(&[
        "set-config",
        "--bootstrap",
        &broker.bootstrap,
        "--topic",
        &topic(),
        "max.message.bytes=2000000",
    ]);
    let changed_text = config_text(
        &[&broker.bootstrap],
        "[kafka.topic]\npartitions = 3\n\
         [kafka.topic.config]\n\"retention.ms\" = \"7200000\"\n\"cleanup.policy\" = \"delete\"\n",
    );
    let changed = Config::parse(&changed_text).unwrap().kafka;

    // plan lists both changes and changes nothing.
    let before = describe_independently(&broker.bootstrap);
    assert_eq!(before["config"]["max.message.bytes"], "2000000", "{before}");
    assert_eq!(kafka::migrate(&changed, Mode::Plan).await.unwrap(), 2);
    let (code, _, stderr) = run("plan", &changed_text);
    assert_ne!(code, 0, "{stderr}");
    for line in [
        "would set retention.ms = 7200000 (now 3600000)",
        "would delete override max.message.bytes (now 2000000",
        "2 change(s) pending, nothing sent",
    ] {
        assert!(stderr.contains(line), "{line}: {stderr}");
    }
    assert_eq!(describe_independently(&broker.bootstrap), before);

    // Without strict_sync the foreign override stays.
    let mut lenient = changed.clone();
    lenient.topic.strict_sync = false;
    assert_eq!(kafka::migrate(&lenient, Mode::Apply).await.unwrap(), 1);
    let after = describe_independently(&broker.bootstrap);
    assert_eq!(after["config"]["retention.ms"], "7200000", "{after}");
    assert_eq!(after["config"]["max.message.bytes"], "2000000", "{after}");

    // With it (the default), it goes; what the config lists stays.
    let (_, _, stderr) = run("migrate", &changed_text);
    assert!(
        stderr.contains("delete override max.message.bytes (now 2000000; not in the config, strict_sync is on): done"),
        "{stderr}"
    );
    let after = describe_independently(&broker.bootstrap);
    let entries = after["config"].as_object().unwrap();
    assert!(!entries.contains_key("max.message.bytes"), "{after}");
    assert_eq!(after["config"]["retention.ms"], "7200000", "{after}");
    assert_eq!(after["config"]["cleanup.policy"], "delete", "{after}");
    assert_eq!(kafka::migrate(&changed, Mode::Plan).await.unwrap(), 0);
}

#[tokio::test]
async fn partitions_and_replication_are_left_with_a_warning() {
    let broker = KafkaBroker::start();
    kafka::migrate(&config(&[&broker.bootstrap], CONFIG_ENTRIES), Mode::Apply)
        .await
        .unwrap();
    let differing_text = config_text(
        &[&broker.bootstrap],
        "[kafka.topic]\npartitions = 6\nreplication_factor = 2\n\
         [kafka.topic.config]\n\"retention.ms\" = \"3600000\"\n\"cleanup.policy\" = \"delete\"\n",
    );
    let differing = Config::parse(&differing_text).unwrap().kafka;
    let plan = kafka::sync_topic(&differing, Mode::Apply).await.unwrap();
    assert!(plan.actions.is_empty(), "{plan:?}");
    assert_eq!(
        plan.warnings,
        vec![
            kafka::Warning::PartitionsNotIncreased {
                actual: 3,
                configured: 6
            },
            kafka::Warning::Replication {
                actual: 1,
                configured: 2
            },
        ]
    );
    let (_, _, stderr) = run("migrate", &differing_text);
    for line in [
        "warning: the topic has 3 partitions, the config says 6: left at 3",
        "warning: the topic's replication factor is 1, the config says 2",
    ] {
        assert!(stderr.contains(line), "{line}: {stderr}");
    }
    assert_eq!(kafka::status(&differing).await.unwrap(), 2);
    let (_, stdout, _) = run("status", &differing_text);
    for line in [
        "partitions: 3 (config: 6) DIFFERS",
        "replication factor: 1 (config: 2) DIFFERS",
        "retention.ms: 3600000 (config: 3600000) ok",
    ] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }

    // Allowed, the increase needs CreatePartitions, which the test broker lacks: a clear
    // error and nothing changed (the request itself is tested at the message level below).
    let mut allowed = differing;
    allowed.topic.allow_partition_increase = true;
    let error = kafka::migrate(&allowed, Mode::Apply)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("does not support CreatePartitions"),
        "{error}"
    );
    assert_eq!(describe_independently(&broker.bootstrap)["partitions"], 3);
}

#[tokio::test]
async fn an_unreachable_broker_is_named_and_the_next_one_tried() {
    let dead = format!("127.0.0.1:{}", free_port());
    let error = kafka::migrate(&config(&[&dead], ""), Mode::Apply)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(&format!(
            "no broker could be used: broker {dead}: cannot connect"
        )),
        "{error}"
    );
    let (code, _, stderr) = run("migrate", &config_text(&[&dead], ""));
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "flow-provisioner: kafka: broker {dead}: cannot connect"
        )),
        "{stderr}"
    );

    let broker = KafkaBroker::start();
    let (_, _, stderr) = run(
        "migrate",
        &config_text(&[&dead, &broker.bootstrap], CONFIG_ENTRIES),
    );
    assert!(
        stderr.contains(&format!("broker {dead}: cannot connect")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("connected to broker {}", broker.bootstrap)),
        "{stderr}"
    );
    assert_eq!(describe_independently(&broker.bootstrap)["partitions"], 3);
}

#[tokio::test]
async fn manage_topic_off_touches_nothing() {
    // Not even a connection: the only broker named does not exist.
    let dead = format!("127.0.0.1:{}", free_port());
    let config = config(&[&dead], "manage_topic = false");
    let plan = kafka::sync_topic(&config, Mode::Apply).await.unwrap();
    assert_eq!(plan, kafka::Plan::default());
}

#[tokio::test]
async fn backlog_counts_what_the_group_has_not_committed() {
    use rskafka::client::partition::{Compression, UnknownTopicHandling};
    use rskafka::record::Record;

    let broker = KafkaBroker::start();
    let config = config(&[&broker.bootstrap], CONFIG_ENTRIES);
    kafka::migrate(&config, Mode::Apply).await.unwrap();
    let client = broker.client().await;
    // 10 records on partition 0, 7 on 1 (in two batches), none on 2.
    for (partition, batches) in [(0, vec![10]), (1, vec![4, 3])] {
        let producer = client
            .partition_client(topic(), partition, UnknownTopicHandling::Error)
            .await
            .unwrap();
        for count in batches {
            let records = (0..count)
                .map(|i| Record {
                    key: None,
                    value: Some(format!("record {i}").into_bytes()),
                    headers: BTreeMap::new(),
                    timestamp: chrono::Utc::now(),
                })
                .collect();
            producer
                .produce(records, Compression::NoCompression)
                .await
                .unwrap();
        }
    }
    let group = "backlog-group";
    assert_eq!(kafka::backlog(&config, &topic(), group).await.unwrap(), 17);
    admin(&[
        "commit",
        "--bootstrap",
        &broker.bootstrap,
        "--topic",
        &topic(),
        "--group",
        group,
        "0=4",
        "1=7",
    ]);
    assert_eq!(kafka::backlog(&config, &topic(), group).await.unwrap(), 6);
    let error = kafka::backlog(&config, "no-such-topic", group)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("no-such-topic"), "{error}");
}

/// A test broker started here rather than by `KafkaBroker`, for flags that it does not
/// pass: listening on `port`, advertising `advertised` (`127.0.0.1:PORT`).
struct OwnBroker {
    /// Stopped when dropped.
    _process: flow_tests::services::Process,
    _dir: tempfile::TempDir,
}

impl OwnBroker {
    fn start(port: u16, advertised: &str, flags: &[&str]) -> OwnBroker {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(flow_tests::cache_dir().join("bin/tansu"));
        command
            .arg("broker")
            .args(["--listener-url", &format!("tcp://127.0.0.1:{port}")])
            .args(["--advertised-listener-url", &format!("tcp://{advertised}")])
            .args(["--storage-engine", "memory://tansu/"])
            .args(flags)
            .env("RUST_LOG", "warn");
        let mut process =
            flow_tests::services::Process::spawn("tansu", command, &dir.path().join("log"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            process.assert_running();
            assert!(
                std::time::Instant::now() < deadline,
                "{}",
                process.log_tail()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        OwnBroker {
            _process: process,
            _dir: dir,
        }
    }
}

/// The test broker with `--authentication` (SCRAM required). Its users live in its
/// memory storage and can only be created by an authenticated client, so no login can
/// succeed; what this proves is that our SCRAM exchange runs against a real server's.
#[tokio::test]
async fn scram_against_the_real_broker_reaches_its_verdict() {
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let _broker = OwnBroker::start(port, &address, &["--authentication"]);
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let sasl = format!(
            "[kafka.sasl]\nmechanism = \"{mechanism}\"\nusername = \"flow\"\npassword = \"s3cret\"\n"
        );
        let error = kafka::status(&config(&[&address], &sasl))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&format!("broker {address}: SASL {mechanism}")),
            "{error}"
        );
        assert!(error.contains("unknown user"), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
    }
    // Without SASL the broker lets ApiVersions through and refuses the rest.
    assert!(kafka::status(&config(&[&address], "")).await.is_err());
}

/// The whole topic run over TLS to the real broker (through a TLS terminator it
/// advertises), checked by confluent-kafka over TLS too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topic_is_managed_over_tls() {
    let certificates = Certificates::make();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let broker_port = free_port();
    let _broker = OwnBroker::start(broker_port, &address, &[]);
    let _terminator = TlsTerminator::start(
        &certificates,
        listener,
        SocketAddr::from((Ipv4Addr::LOCALHOST, broker_port)),
        ClientAuth::NotAsked,
    );
    let ca = certificates.path("ca.pem");
    let tls = format!(
        "[kafka.tls]\nca_file = \"{}\"\n{CONFIG_ENTRIES}",
        ca.display()
    );
    let over_tls = config(&[&address], &tls);
    assert_eq!(kafka::migrate(&over_tls, Mode::Apply).await.unwrap(), 1);
    assert_eq!(kafka::migrate(&over_tls, Mode::Apply).await.unwrap(), 0);
    let ca = ca.display().to_string();
    let seen = admin(&[
        "describe",
        "--bootstrap",
        &address,
        "--ca-file",
        &ca,
        "--topic",
        &topic(),
    ]);
    assert_eq!(seen["partitions"], 3, "{seen}");
    assert_eq!(seen["config"]["retention.ms"], "3600000", "{seen}");

    // Plaintext to a TLS listener, or another CA, fails naming the broker.
    let plaintext = config(&[&address], CONFIG_ENTRIES);
    let error = kafka::status(&plaintext).await.unwrap_err().to_string();
    assert!(error.contains(&address), "{error}");
    let other = tls.replace(
        &ca,
        &certificates.path("other-ca.pem").display().to_string(),
    );
    let error = kafka::status(&config(&[&address], &other))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!("broker {address}: TLS handshake")),
        "{error}"
    );
}

/// A scripted broker on loopback: it decodes each request with kafka-protocol's
/// decoders, records it, and answers with kafka-protocol's encoders.
mod scripted {
    use std::sync::{Arc, Mutex};

    use bytes::{BufMut, Bytes, BytesMut};
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::describe_configs_response::{
        DescribeConfigsResourceResult, DescribeConfigsResult,
    };
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{
        Decodable, Encodable, HeaderVersion, StrBytes, decode_request_header_from_buffer,
    };
    use rsasl::callback::{Context, Request, SessionCallback, SessionData};
    use rsasl::mechanisms::scram;
    use rsasl::mechanisms::scram::properties::ScramStoredPassword;
    use rsasl::prelude::{Mechname, SASLConfig, SASLServer, Session, SessionError};
    use rsasl::property::AuthId;
    use rsasl::validate::NoValidation;
    use sha2::{Digest, Sha256};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// What the scripted broker offers and holds.
    #[derive(Debug, Clone)]
    pub struct Script {
        /// API keys advertised (with kafka-protocol's full version range).
        pub apis: Vec<ApiKey>,
        /// Lower maxima for some of them, as an older broker would advertise.
        pub max_versions: Vec<(ApiKey, i16)>,
        /// The topic's partitions.
        pub partitions: i32,
        /// Its config entries: name, value, DescribeConfigs source, documentation.
        pub entries: Vec<(&'static str, &'static str, i8, &'static str)>,
        /// The SASL exchange's answer: error code and message.
        pub sasl_error: (i16, &'static str),
        /// A SCRAM-SHA-256 user and password: SCRAM is then served by rsasl's server side.
        pub scram_user: Option<(&'static str, &'static str)>,
    }

    /// A request as received: API key, version and the body bytes.
    pub type Received = Arc<Mutex<Vec<(i16, i16, Bytes)>>>;

    /// Starts the peer; returns its address and what it receives.
    pub async fn start(topic: String, script: Script) -> (String, Received) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let received: Received = Arc::default();
        let (log, advertised) = (received.clone(), address.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (log, script, topic) = (log.clone(), script.clone(), topic.clone());
                let advertised = advertised.clone();
                tokio::spawn(async move {
                    let mut scram: Option<Session> = None;
                    loop {
                        let Ok(size) = stream.read_u32().await else {
                            return;
                        };
                        let mut frame = vec![0u8; size as usize];
                        if stream.read_exact(&mut frame).await.is_err() {
                            return;
                        }
                        let mut body = Bytes::from(frame);
                        let header = decode_request_header_from_buffer(&mut body).unwrap();
                        let (key, version) = (header.request_api_key, header.request_api_version);
                        log.lock().unwrap().push((key, version, body.clone()));
                        let answer = match scram_answer(&script, &mut scram, key, version, &body) {
                            Some(answer) => answer,
                            None => answer(&script, &topic, &advertised, key, version, body),
                        };
                        let mut out = BytesMut::new();
                        out.put_u32(0);
                        let response_header =
                            ResponseHeader::default().with_correlation_id(header.correlation_id);
                        let api = ApiKey::try_from(key).unwrap();
                        response_header
                            .encode(&mut out, api.response_header_version(version))
                            .unwrap();
                        out.extend_from_slice(&answer);
                        let size = (out.len() - 4) as u32;
                        out[..4].copy_from_slice(&size.to_be_bytes());
                        stream.write_all(&out).await.unwrap();
                    }
                });
            }
        });
        (address, received)
    }

    /// The SCRAM side of the script: a SaslHandshake naming SCRAM-SHA-256 starts an rsasl
    /// server session for the script's user, and each SaslAuthenticate steps it; `None`
    /// for every other request.
    fn scram_answer(
        script: &Script,
        session: &mut Option<Session>,
        key: i16,
        version: i16,
        body: &Bytes,
    ) -> Option<Bytes> {
        let (user, password) = script.scram_user?;
        match ApiKey::try_from(key).ok()? {
            ApiKey::SaslHandshake => {
                let request = SaslHandshakeRequest::decode(&mut body.clone(), version).unwrap();
                assert_eq!(request.mechanism.as_str(), "SCRAM-SHA-256");
                let config = SASLConfig::builder()
                    .with_defaults()
                    .with_callback(ScramUser::new(user, password))
                    .unwrap();
                let mechanism = Mechname::parse(b"SCRAM-SHA-256").unwrap();
                *session = Some(
                    SASLServer::<NoValidation>::new(config)
                        .start_suggested(mechanism)
                        .unwrap(),
                );
                let mechanisms = vec![text("SCRAM-SHA-256")];
                let response = SaslHandshakeResponse::default().with_mechanisms(mechanisms);
                Some(encoded(response, version))
            }
            ApiKey::SaslAuthenticate => {
                let request = SaslAuthenticateRequest::decode(&mut body.clone(), version).unwrap();
                let mut out = std::io::Cursor::new(Vec::new());
                let stepped = session
                    .as_mut()
                    .expect("SaslAuthenticate after SaslHandshake")
                    .step(Some(&request.auth_bytes), &mut out);
                let response = match stepped {
                    Ok(_) => SaslAuthenticateResponse::default()
                        .with_auth_bytes(Bytes::from(out.into_inner())),
                    Err(error) => SaslAuthenticateResponse::default()
                        .with_error_code(58)
                        .with_error_message(Some(text(&error.to_string()))),
                };
                Some(encoded(response, version))
            }
            _ => None,
        }
    }

    /// One SCRAM-SHA-256 user, stored as a server stores it (salted keys, no password).
    struct ScramUser {
        name: &'static str,
        stored_key: Vec<u8>,
        server_key: Vec<u8>,
    }

    const SALT: &[u8] = b"flow-test-salt";
    const ITERATIONS: u32 = 4096;

    impl ScramUser {
        fn new(name: &'static str, password: &str) -> ScramUser {
            let mut salted = sha2::digest::Output::<Sha256>::default();
            scram::tools::hash_password::<Sha256>(
                password.as_bytes(),
                ITERATIONS,
                SALT,
                &mut salted,
            );
            let (client_key, server_key) = scram::tools::derive_keys::<Sha256>(salted.as_slice());
            ScramUser {
                name,
                stored_key: Sha256::digest(client_key).to_vec(),
                server_key: server_key.to_vec(),
            }
        }
    }

    impl SessionCallback for ScramUser {
        fn callback(
            &self,
            _session: &SessionData,
            context: &Context,
            request: &mut Request<'_>,
        ) -> Result<(), SessionError> {
            if context.get_ref::<AuthId>() == Some(self.name) {
                request.satisfy::<ScramStoredPassword>(&ScramStoredPassword::new(
                    ITERATIONS,
                    SALT,
                    &self.stored_key,
                    &self.server_key,
                ))?;
            }
            Ok(())
        }
    }

    fn encoded<R: Encodable + HeaderVersion>(response: R, version: i16) -> Bytes {
        let mut bytes = BytesMut::new();
        response.encode(&mut bytes, version).unwrap();
        bytes.freeze()
    }

    fn text(s: &str) -> StrBytes {
        StrBytes::from_string(s.to_owned())
    }

    fn answer(
        script: &Script,
        topic: &str,
        address: &str,
        key: i16,
        version: i16,
        mut body: Bytes,
    ) -> Bytes {
        match ApiKey::try_from(key).unwrap() {
            ApiKey::ApiVersions => {
                let max = |api: ApiKey| {
                    let lower = script.max_versions.iter().find(|(a, _)| *a == api);
                    lower.map_or(api.valid_versions().max, |(_, max)| *max)
                };
                let apis = script
                    .apis
                    .iter()
                    .map(|api| {
                        ApiVersion::default()
                            .with_api_key(*api as i16)
                            .with_min_version(api.valid_versions().min)
                            .with_max_version(max(*api))
                    })
                    .collect();
                let response = ApiVersionsResponse::default().with_api_keys(apis);
                if version > max(ApiKey::ApiVersions) {
                    // As Kafka does: UNSUPPORTED_VERSION, in v0 form, with its own ranges.
                    return encoded(response.with_error_code(35), 0);
                }
                encoded(response, version)
            }
            ApiKey::SaslHandshake => encoded(
                SaslHandshakeResponse::default().with_mechanisms(vec![text("PLAIN")]),
                version,
            ),
            ApiKey::SaslAuthenticate => {
                let (code, message) = script.sasl_error;
                encoded(
                    SaslAuthenticateResponse::default()
                        .with_error_code(code)
                        .with_error_message(Some(text(message))),
                    version,
                )
            }
            ApiKey::Metadata => {
                let (host, port) = address.rsplit_once(':').unwrap();
                let partitions = (0..script.partitions)
                    .map(|p| {
                        MetadataResponsePartition::default()
                            .with_partition_index(p)
                            .with_leader_id(BrokerId(1))
                            .with_replica_nodes(vec![BrokerId(1)])
                            .with_isr_nodes(vec![BrokerId(1)])
                    })
                    .collect();
                encoded(
                    MetadataResponse::default()
                        .with_brokers(vec![
                            MetadataResponseBroker::default()
                                .with_node_id(BrokerId(1))
                                .with_host(text(host))
                                .with_port(port.parse().unwrap()),
                        ])
                        .with_controller_id(BrokerId(1))
                        .with_topics(vec![
                            MetadataResponseTopic::default()
                                .with_name(Some(TopicName(text(topic))))
                                .with_partitions(partitions),
                        ]),
                    version,
                )
            }
            ApiKey::DescribeConfigs => {
                let request = DescribeConfigsRequest::decode(&mut body, version).unwrap();
                let configs = script
                    .entries
                    .iter()
                    .map(|(name, value, source, documentation)| {
                        DescribeConfigsResourceResult::default()
                            .with_name(text(name))
                            .with_value(Some(text(value)))
                            .with_config_source(*source)
                            .with_documentation(Some(text(documentation)))
                    })
                    .collect();
                let resource = &request.resources[0];
                encoded(
                    DescribeConfigsResponse::default().with_results(vec![
                        DescribeConfigsResult::default()
                            .with_resource_type(resource.resource_type)
                            .with_resource_name(resource.resource_name.clone())
                            .with_configs(configs),
                    ]),
                    version,
                )
            }
            ApiKey::CreatePartitions => {
                let request = CreatePartitionsRequest::decode(&mut body, version).unwrap();
                let results = request
                    .topics
                    .iter()
                    .map(|t| {
                        create_partitions_response::CreatePartitionsTopicResult::default()
                            .with_name(t.name.clone())
                    })
                    .collect();
                encoded(
                    CreatePartitionsResponse::default().with_results(results),
                    version,
                )
            }
            ApiKey::AlterConfigs => {
                let request = AlterConfigsRequest::decode(&mut body, version).unwrap();
                let responses = request
                    .resources
                    .iter()
                    .map(|r| {
                        alter_configs_response::AlterConfigsResourceResponse::default()
                            .with_resource_type(r.resource_type)
                            .with_resource_name(r.resource_name.clone())
                    })
                    .collect();
                encoded(
                    AlterConfigsResponse::default().with_responses(responses),
                    version,
                )
            }
            ApiKey::IncrementalAlterConfigs => {
                let request = IncrementalAlterConfigsRequest::decode(&mut body, version).unwrap();
                let responses = request
                    .resources
                    .iter()
                    .map(|r| {
                        incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                            .with_resource_type(r.resource_type)
                            .with_resource_name(r.resource_name.clone())
                    })
                    .collect();
                encoded(
                    IncrementalAlterConfigsResponse::default().with_responses(responses),
                    version,
                )
            }
            other => panic!("the scripted broker was sent {other:?}"),
        }
    }

    /// The bodies received for `api`, decoded with kafka-protocol's decoder.
    pub fn requests<R: Decodable>(received: &Received, api: ApiKey) -> Vec<R> {
        received
            .lock()
            .unwrap()
            .iter()
            .filter(|(key, _, _)| *key == api as i16)
            .map(|(_, version, body)| R::decode(&mut body.clone(), *version).unwrap())
            .collect()
    }

    /// The API keys received, in order.
    pub fn keys(received: &Received) -> Vec<ApiKey> {
        received
            .lock()
            .unwrap()
            .iter()
            .map(|(key, _, _)| ApiKey::try_from(*key).unwrap())
            .collect()
    }
}

use kafka_protocol::messages::{
    AlterConfigsRequest, ApiKey, CreatePartitionsRequest, IncrementalAlterConfigsRequest,
    SaslAuthenticateRequest, SaslHandshakeRequest,
};

/// Real Kafka's reporting: overrides are DYNAMIC_TOPIC_CONFIG (1), defaults DEFAULT_CONFIG
/// (5) with documentation.
fn real_kafka_script(apis: Vec<ApiKey>) -> scripted::Script {
    scripted::Script {
        apis,
        partitions: 3,
        entries: vec![
            ("retention.ms", "3600000", 1, "How long a log is kept."),
            ("segment.bytes", "1048576", 1, "The segment size."),
            ("cleanup.policy", "delete", 5, "The retention policy."),
        ],
        sasl_error: (0, ""),
        scram_user: None,
        max_versions: Vec::new(),
    }
}

const BASE_APIS: [ApiKey; 3] = [
    ApiKey::ApiVersions,
    ApiKey::Metadata,
    ApiKey::DescribeConfigs,
];

/// Wants 6 partitions (increase allowed), retention.ms changed, segment.bytes gone.
const INCREASE_AND_CHANGE: &str = "[kafka.topic]\npartitions = 6\nallow_partition_increase = true\n\
     [kafka.topic.config]\n\"retention.ms\" = \"86400000\"\n\"cleanup.policy\" = \"delete\"\n";

#[tokio::test]
async fn partition_increase_and_the_alter_configs_fallback_at_the_message_level() {
    // The test broker has neither CreatePartitions nor AlterConfigs: this peer offers both
    // and no IncrementalAlterConfigs.
    let mut apis = BASE_APIS.to_vec();
    apis.extend([ApiKey::CreatePartitions, ApiKey::AlterConfigs]);
    let (address, received) = scripted::start(topic(), real_kafka_script(apis)).await;
    let config = config(&[&address], INCREASE_AND_CHANGE);

    assert_eq!(kafka::migrate(&config, Mode::Apply).await.unwrap(), 3);

    let increases: Vec<CreatePartitionsRequest> =
        scripted::requests(&received, ApiKey::CreatePartitions);
    assert_eq!(increases.len(), 1);
    assert_eq!(increases[0].topics.len(), 1);
    assert_eq!(increases[0].topics[0].name.0.as_str(), topic());
    assert_eq!(increases[0].topics[0].count, 6);
    assert!(!increases[0].validate_only);

    // AlterConfigs replaces the whole set: exactly the overrides that must remain.
    let alters: Vec<AlterConfigsRequest> = scripted::requests(&received, ApiKey::AlterConfigs);
    assert_eq!(alters.len(), 1);
    let resource = &alters[0].resources[0];
    assert_eq!(
        (resource.resource_type, resource.resource_name.as_str()),
        (2, topic().as_str())
    );
    let sent: Vec<(&str, Option<&str>)> = resource
        .configs
        .iter()
        .map(|c| (c.name.as_str(), c.value.as_ref().map(|v| v.as_str())))
        .collect();
    assert_eq!(sent, vec![("retention.ms", Some("86400000"))]);
}

#[tokio::test]
async fn incremental_alter_configs_sets_and_deletes_when_offered() {
    let mut apis = BASE_APIS.to_vec();
    apis.extend([ApiKey::IncrementalAlterConfigs, ApiKey::AlterConfigs]);
    let (address, received) = scripted::start(topic(), real_kafka_script(apis)).await;
    let config = config(
        &[&address],
        &INCREASE_AND_CHANGE.replace("partitions = 6", "partitions = 3"),
    );
    assert_eq!(kafka::migrate(&config, Mode::Apply).await.unwrap(), 2);
    assert!(!scripted::keys(&received).contains(&ApiKey::AlterConfigs));
    let alters: Vec<IncrementalAlterConfigsRequest> =
        scripted::requests(&received, ApiKey::IncrementalAlterConfigs);
    assert_eq!(alters.len(), 1);
    let ops: Vec<(&str, i8, Option<&str>)> = alters[0].resources[0]
        .configs
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                c.config_operation,
                c.value.as_ref().map(|v| v.as_str()),
            )
        })
        .collect();
    // SET is 0, DELETE 1; cleanup.policy is a default equal to the config: not sent.
    assert_eq!(
        ops,
        vec![
            ("retention.ms", 0, Some("86400000")),
            ("segment.bytes", 1, None)
        ]
    );
}

#[tokio::test]
async fn plan_sends_no_write_of_any_kind() {
    let mut apis = BASE_APIS.to_vec();
    apis.extend([
        ApiKey::CreatePartitions,
        ApiKey::AlterConfigs,
        ApiKey::IncrementalAlterConfigs,
        ApiKey::CreateTopics,
    ]);
    let (address, received) = scripted::start(topic(), real_kafka_script(apis)).await;
    let config = config(&[&address], INCREASE_AND_CHANGE);
    assert_eq!(kafka::migrate(&config, Mode::Plan).await.unwrap(), 3);
    let keys = scripted::keys(&received);
    assert!(
        keys.iter().all(|k| BASE_APIS.contains(k)),
        "plan sent {keys:?}"
    );
    assert!(keys.contains(&ApiKey::DescribeConfigs), "{keys:?}");
}

#[tokio::test]
async fn sasl_plain_authenticates_before_anything_else() {
    let mut apis = BASE_APIS.to_vec();
    apis.extend([ApiKey::SaslHandshake, ApiKey::SaslAuthenticate]);
    let script = real_kafka_script(apis);
    let sasl = "[kafka.sasl]\nmechanism = \"PLAIN\"\nusername = \"flow\"\npassword = \"s3cret\"\n";
    let (address, received) = scripted::start(topic(), script.clone()).await;
    kafka::status(&config(&[&address], sasl)).await.unwrap();
    let keys = scripted::keys(&received);
    assert_eq!(
        keys[..3],
        [
            ApiKey::ApiVersions,
            ApiKey::SaslHandshake,
            ApiKey::SaslAuthenticate
        ],
        "{keys:?}"
    );
    let handshakes: Vec<SaslHandshakeRequest> =
        scripted::requests(&received, ApiKey::SaslHandshake);
    assert_eq!(handshakes[0].mechanism.as_str(), "PLAIN");
    let auths: Vec<SaslAuthenticateRequest> =
        scripted::requests(&received, ApiKey::SaslAuthenticate);
    assert_eq!(&auths[0].auth_bytes[..], b"\0flow\0s3cret");

    // A refusal is reported with the broker's words, never the password.
    let refusing = scripted::Script {
        sasl_error: (58, "Authentication failed: invalid credentials"),
        ..script
    };
    let (address, _) = scripted::start(topic(), refusing).await;
    let error = kafka::status(&config(&[&address], sasl))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("SaslAuthenticationFailed"), "{error}");
    assert!(error.contains("invalid credentials"), "{error}");
    assert!(!error.contains("s3cret"), "{error}");
}

#[tokio::test]
async fn scram_completes_against_a_scram_server() {
    // The whole exchange (client-first, server-first, client-final, server-final) against
    // rsasl's server side holding the user's salted keys; a wrong password is refused.
    let mut apis = BASE_APIS.to_vec();
    apis.extend([ApiKey::SaslHandshake, ApiKey::SaslAuthenticate]);
    let script = scripted::Script {
        scram_user: Some(("flow", "s3cret")),
        ..real_kafka_script(apis)
    };
    let sasl = |password: &str| {
        format!(
            "[kafka.sasl]\nmechanism = \"SCRAM-SHA-256\"\nusername = \"flow\"\npassword = \"{password}\"\n"
        )
    };
    let (address, received) = scripted::start(topic(), script.clone()).await;
    kafka::status(&config(&[&address], &sasl("s3cret")))
        .await
        .unwrap();
    let keys = scripted::keys(&received);
    assert_eq!(
        keys[..4],
        [
            ApiKey::ApiVersions,
            ApiKey::SaslHandshake,
            ApiKey::SaslAuthenticate,
            ApiKey::SaslAuthenticate
        ],
        "{keys:?}"
    );
    assert!(keys.contains(&ApiKey::DescribeConfigs), "{keys:?}");

    let (address, _) = scripted::start(topic(), script).await;
    let error = kafka::status(&config(&[&address], &sasl("wrong")))
        .await
        .unwrap_err()
        .to_string();
    // rsasl's server answers with SCRAM's own `e=invalid-proof`, which our side reports.
    assert!(
        error.contains(&format!("broker {address}: SASL SCRAM-SHA-256")),
        "{error}"
    );
    assert!(error.contains("invalid proof"), "{error}");
}

#[tokio::test]
async fn versions_are_the_highest_both_sides_support() {
    // An older broker: ApiVersions up to v2 only (it answers our v3 with
    // UNSUPPORTED_VERSION), Metadata up to v9, DescribeConfigs up to v2.
    let script = scripted::Script {
        max_versions: vec![
            (ApiKey::ApiVersions, 2),
            (ApiKey::Metadata, 9),
            (ApiKey::DescribeConfigs, 2),
        ],
        ..real_kafka_script(BASE_APIS.to_vec())
    };
    let (address, received) = scripted::start(topic(), script).await;
    kafka::status(&config(&[&address], "")).await.unwrap();
    let sent: Vec<(i16, i16)> = received
        .lock()
        .unwrap()
        .iter()
        .map(|(key, version, _)| (*key, *version))
        .collect();
    let versions_of = |api: ApiKey| -> Vec<i16> {
        sent.iter()
            .filter(|(key, _)| *key == api as i16)
            .map(|(_, version)| *version)
            .collect()
    };
    // Per connection (bootstrap, then the controller): v3 refused, then v2.
    assert_eq!(versions_of(ApiKey::ApiVersions), vec![3, 2, 3, 2]);
    assert!(
        versions_of(ApiKey::Metadata).iter().all(|v| *v == 9),
        "{sent:?}"
    );
    assert_eq!(versions_of(ApiKey::DescribeConfigs), vec![2]);
}
