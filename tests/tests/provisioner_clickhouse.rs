//! The provisioner's ClickHouse part against the real engine and the Tansu broker:
//! migrations from empty, a second run that does nothing, a failed migration left
//! dirty and repaired, several servers with one unreachable, flows produced to the
//! topic arriving in `flows` and the aggregates through the tables `migrate` made,
//! dictionaries loaded over HTTP, and a rolling upgrade to a synthetic v2.

#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, Ipv6Addr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flow_proto::v1::{FlowDirection, InterfaceBoundary};
use flow_proto::{FlowMessage, SchemaVersion, encode_batch};
use flow_provisioner::Mode;
use flow_provisioner::clickhouse::{
    self as provisioner, MIGRATIONS, Migration, Schema, SettingValue,
};
use flow_provisioner::config::Config;
use flow_tests::services::{ClickHouse, KafkaBroker, Process, free_port};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;

/// Every object the migrations and v1's per-version part create.
const OBJECTS: &[&str] = &[
    "schema_migrations",
    "flows",
    "flows_1m",
    "flows_5m",
    "flows_1h",
    "flows_1m_consumer",
    "flows_5m_consumer",
    "flows_1h_consumer",
    "exporters",
    "exporters_consumer",
    "protocols",
    "asns",
    "networks",
    "flows_raw_errors",
    "flows_1_raw",
    "flows_1_raw_consumer",
    "flows_1_raw_errors",
];

fn config(servers: &[&str], broker: &str, dictionaries: &str) -> Config {
    let servers: Vec<String> = servers.iter().map(|s| format!("{s:?}")).collect();
    Config::parse(&format!(
        "[kafka]\nbrokers = [{broker:?}]\n\
         [clickhouse]\nservers = [{}]\nkafka_group = \"provisioner-test-{}-{}\"\n\
         kafka_consumers = 64\nkafka_settings = {{ kafka_flush_interval_ms = 500 }}\n\
         [http]\npublic_url = {dictionaries:?}\n",
        servers.join(", "),
        std::process::id(),
        free_port(),
    ))
    .unwrap()
}

/// Runs `migrate` (or `plan`) with a schema and returns its outcome and report.
async fn migrate(
    config: &Config,
    mode: Mode,
    schema: Schema<'_>,
) -> (Result<usize, String>, String) {
    let mut out = Vec::new();
    let result = provisioner::migrate_with(config, mode, schema, &mut out)
        .await
        .map_err(|e| e.to_string());
    (result, String::from_utf8(out).unwrap())
}

async fn objects(clickhouse: &ClickHouse) -> Vec<String> {
    clickhouse
        .client()
        .query("SELECT name FROM system.tables WHERE database = 'default' ORDER BY name")
        .fetch_all::<String>()
        .await
        .unwrap()
}

async fn assert_objects_exist(clickhouse: &ClickHouse, expected: &[&str]) {
    let objects = objects(clickhouse).await;
    for name in expected {
        assert!(
            objects.iter().any(|o| o == name),
            "{name} missing from {objects:?}"
        );
    }
}

/// The latest (version, dirty) record on a server.
async fn recorded(clickhouse: &ClickHouse) -> (i64, u8) {
    clickhouse
        .client()
        .query(
            "SELECT version, dirty FROM default.schema_migrations ORDER BY sequence DESC LIMIT 1",
        )
        .fetch_one::<(i64, u8)>()
        .await
        .unwrap()
}

async fn scalar<T>(clickhouse: &ClickHouse, sql: &str) -> T
where
    T: clickhouse::RowOwned + clickhouse::RowRead,
{
    clickhouse
        .client()
        .query(sql)
        .fetch_one::<T>()
        .await
        .unwrap()
}

/// Polls `sql` (a count) until it reaches `want`, for at most 90 s.
async fn wait_for_count(clickhouse: &ClickHouse, sql: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let count: u64 = scalar(clickhouse, sql).await;
        if count >= want {
            assert_eq!(count, want, "{sql}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sql}: {count} of {want} within 90 s:\n{}",
            clickhouse.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn mapped(v4: Ipv4Addr) -> Vec<u8> {
    v4.to_ipv6_mapped().octets().to_vec()
}

/// Flows of two exporters, IPv4 and IPv6, sampled and not, received in the last minutes.
fn flows(count: u32, first_sequence: u32) -> Vec<FlowMessage> {
    let base = now() - 120;
    (0..count)
        .map(|i| {
            let v6 = i % 3 == 2;
            FlowMessage {
                time_received: base + u64::from(i % 90),
                flow_start: base - 10,
                flow_end: base,
                sequence_number: first_sequence + i,
                sampling_rate: if i % 2 == 0 { 100 } else { 0 },
                exporter_address: mapped(Ipv4Addr::new(198, 51, 100, 1 + (i % 2) as u8)),
                exporter_name: format!("edge-{}", i % 2),
                exporter_group: "paris".into(),
                in_if: 10 + i % 4,
                out_if: 20,
                in_if_name: format!("et-0/0/{}", i % 4),
                out_if_name: "xe-1/0/0".into(),
                in_if_boundary: InterfaceBoundary::External as i32,
                out_if_boundary: InterfaceBoundary::Internal as i32,
                bytes: 1000 + u64::from(i),
                packets: 1 + u64::from(i % 5),
                src_addr: if v6 {
                    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16)
                        .octets()
                        .to_vec()
                } else {
                    mapped(Ipv4Addr::new(10, 0, 0, i as u8))
                },
                dst_addr: mapped(Ipv4Addr::new(192, 0, 2, 53)),
                src_as: 64_500 + i % 3,
                dst_as: 3,
                etype: if v6 { 0x86dd } else { 0x0800 },
                proto: if i % 2 == 0 { 6 } else { 17 },
                src_port: 40_000 + i,
                dst_port: 443,
                mpls_labels: (0..i % 3).map(|k| 16_000 + k).collect(),
                flow_direction: if i % 2 == 0 {
                    FlowDirection::Ingress
                } else {
                    FlowDirection::Egress
                } as i32,
                ..Default::default()
            }
        })
        .collect()
}

/// Produces each payload as one record to partition 0 of `topic`.
async fn produce(broker: &KafkaBroker, topic: &str, payloads: Vec<Vec<u8>>) {
    let partition = broker
        .client()
        .await
        .partition_client(topic, 0, UnknownTopicHandling::Retry)
        .await
        .unwrap();
    let records = payloads
        .into_iter()
        .map(|value| Record {
            key: None,
            value: Some(value),
            headers: Default::default(),
            timestamp: chrono::Utc::now(),
        })
        .collect();
    partition.produce(records, Compression::Lz4).await.unwrap();
}

fn batches(flows: &[FlowMessage]) -> Vec<Vec<u8>> {
    flows
        .chunks(5)
        .map(|chunk| {
            let mut payload = Vec::new();
            encode_batch(chunk, &mut payload);
            payload
        })
        .collect()
}

/// A row of `flows` read back, the types as text where that is clearest.
#[derive(Debug, PartialEq, clickhouse::Row, serde::Deserialize)]
struct FlowRow {
    sequence_number: u32,
    time_received: u32,
    exporter_address: String,
    src_addr: String,
    in_if_boundary: String,
    flow_direction: String,
    exporter_name: String,
    bytes: u64,
    proto: u8,
    schema_version: u16,
}

/// `python3 -m http.server` serving the dictionaries' CSV files under the endpoints' paths.
struct DictionaryServer {
    _process: Process,
    url: String,
    _dir: tempfile::TempDir,
}

const NETWORKS_CSV: &str = "network,name,role,site,region,tenant\n\
    10.0.0.0/24,lab-v4,servers,par1,eu-west,acme\n\
    2001:db8::/32,documentation,test,par2,eu-west,example\n";

fn serve_dictionaries() -> DictionaryServer {
    let dir = tempfile::tempdir().unwrap();
    let endpoints = dir.path().join("api/v0/clickhouse");
    std::fs::create_dir_all(&endpoints).unwrap();
    let data = flow_tests::shared_data_dir();
    std::fs::copy(data.join("protocols.csv"), endpoints.join("protocols.csv")).unwrap();
    std::fs::copy(data.join("asns.csv"), endpoints.join("asns.csv")).unwrap();
    std::fs::write(endpoints.join("networks.csv"), NETWORKS_CSV).unwrap();
    let port = free_port();
    let mut command = Command::new(flow_tests::python());
    command
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(dir.path());
    let process = Process::spawn("http.server", command, &dir.path().join("http.log"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        assert!(Instant::now() < deadline, "http.server did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    DictionaryServer {
        _process: process,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

/// A URL where nothing listens.
fn unreachable_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_then_migrate_from_empty_then_nothing_to_do() {
    let clickhouse = ClickHouse::start();
    let dictionaries = serve_dictionaries();
    let config = config(&[&clickhouse.url], "127.0.0.1:9", &dictionaries.url);

    let (planned, report) = migrate(&config, Mode::Plan, Schema::embedded()).await;
    assert_eq!(planned, Ok(MIGRATIONS.len() + 3), "{report}");
    for migration in MIGRATIONS {
        assert!(
            report.contains(&format!("pending {}:", migration.name)),
            "{report}"
        );
    }
    assert!(
        report.contains("CREATE TABLE IF NOT EXISTS default.flows\n"),
        "{report}"
    );
    assert!(
        report.contains("flows_1_raw, flows_1_raw_consumer, flows_1_raw_errors"),
        "{report}"
    );
    assert_eq!(
        objects(&clickhouse).await,
        Vec::<String>::new(),
        "plan changed nothing"
    );

    let (applied, report) = migrate(&config, Mode::Apply, Schema::embedded()).await;
    assert_eq!(applied, Ok(MIGRATIONS.len() + 3), "{report}");
    assert_objects_exist(&clickhouse, OBJECTS).await;
    let last = MIGRATIONS.last().unwrap().version;
    assert_eq!(recorded(&clickhouse).await, (i64::from(last), 0));
    assert!(!report.contains("warning"), "{report}");

    // Consumers capped at the server's max_threads (64 asked).
    let max_threads: u64 = scalar(&clickhouse, "SELECT toUInt64(getSetting('max_threads'))").await;
    let raw: String = scalar(
        &clickhouse,
        "SELECT create_table_query FROM system.tables WHERE name = 'flows_1_raw'",
    )
    .await;
    assert!(
        raw.contains(&format!("kafka_num_consumers = {max_threads},")),
        "{raw}"
    );
    assert!(raw.contains("kafka_topic_list = 'flows-v1'"), "{raw}");
    assert!(raw.contains("kafka_handle_error_mode = 'stream'"), "{raw}");

    let (again, report) = migrate(&config, Mode::Apply, Schema::embedded()).await;
    assert_eq!(again, Ok(0), "{report}");
    assert!(!report.contains("applied"), "{report}");
    let (planned, report) = migrate(&config, Mode::Plan, Schema::embedded()).await;
    assert_eq!(planned, Ok(0), "{report}");

    let mut out = Vec::new();
    let differences = provisioner::status_with(&config, Schema::embedded(), &mut out).await;
    let report = String::from_utf8(out).unwrap();
    assert_eq!(differences.unwrap(), 0, "{report}");
    assert!(
        report.contains(&format!(
            "migration {last} clean, 0 pending; raw tables for schema versions: v1"
        )),
        "{report}"
    );

    // A Kafka-engine setting changes: status sees it, migrate replaces the table and views.
    let mut changed = config.clone();
    changed
        .clickhouse
        .kafka_settings
        .insert("kafka_flush_interval_ms".into(), SettingValue::Integer(700));
    let mut out = Vec::new();
    let differences = provisioner::status_with(&changed, Schema::embedded(), &mut out).await;
    let report = String::from_utf8(out).unwrap();
    assert_eq!(differences.unwrap(), 3, "{report}");
    assert!(
        report.contains("replace flows_1_raw and its views"),
        "{report}"
    );
    let (replaced, report) = migrate(&changed, Mode::Apply, Schema::embedded()).await;
    assert_eq!(replaced, Ok(3), "{report}");
    let raw: String = scalar(
        &clickhouse,
        "SELECT create_table_query FROM system.tables WHERE name = 'flows_1_raw'",
    )
    .await;
    assert!(raw.contains("kafka_flush_interval_ms = 700"), "{raw}");
    assert_objects_exist(&clickhouse, OBJECTS).await;
    let (again, report) = migrate(&changed, Mode::Apply, Schema::embedded()).await;
    assert_eq!(again, Ok(0), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_from_the_topic_reach_flows_and_the_aggregates_and_dictionaries_load() {
    let broker = KafkaBroker::start();
    let clickhouse = ClickHouse::start();
    clickhouse.write_schemas();
    let dictionaries = serve_dictionaries();
    let version = flow_proto::current();
    let topic = version.topic("flows");
    broker.create_topic(&topic, 1).await;
    let config = config(&[&clickhouse.url], &broker.bootstrap, &dictionaries.url);

    let (applied, report) = migrate(&config, Mode::Apply, Schema::embedded()).await;
    assert!(applied.is_ok(), "{applied:?}\n{report}");
    assert!(!report.contains("warning"), "{report}");

    // Dictionaries from the endpoints.
    let tcp: String = scalar(
        &clickhouse,
        "SELECT dictGet('default.protocols', 'name', toUInt64(6))",
    )
    .await;
    assert_eq!(tcp, "TCP");
    let asn: String = scalar(
        &clickhouse,
        "SELECT dictGet('default.asns', 'name', toUInt64(3))",
    )
    .await;
    assert_eq!(asn, "MIT-GATEWAYS");
    let network: (String, String) = scalar(
        &clickhouse,
        "SELECT dictGet('default.networks', 'name', toIPv6('::ffff:10.0.0.7')), \
         dictGet('default.networks', 'tenant', toIPv6('2001:db8::1'))",
    )
    .await;
    assert_eq!(network, ("lab-v4".into(), "example".into()));

    // Flows and one garbage record through the Kafka table and the views migrate made.
    let flows = flows(40, 1);
    let mut payloads = batches(&flows);
    payloads.push(vec![0xff; 12]);
    produce(&broker, &topic, payloads).await;
    wait_for_count(
        &clickhouse,
        "SELECT count() FROM default.flows",
        flows.len() as u64,
    )
    .await;
    wait_for_count(
        &clickhouse,
        "SELECT count() FROM default.flows_raw_errors",
        1,
    )
    .await;
    let error: (String, String) = scalar(
        &clickhouse,
        "SELECT topic, error FROM default.flows_raw_errors LIMIT 1",
    )
    .await;
    assert_eq!(error.0, topic);
    assert!(!error.1.is_empty());

    // Values, column by column, for every flow.
    let rows: Vec<FlowRow> = clickhouse
        .client()
        .query(
            "SELECT sequence_number, toUInt32(time_received) AS time_received, \
             toString(exporter_address) AS exporter_address, toString(src_addr) AS src_addr, \
             toString(in_if_boundary) AS in_if_boundary, toString(flow_direction) AS flow_direction, \
             exporter_name, bytes, proto, schema_version FROM default.flows ORDER BY sequence_number",
        )
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(rows.len(), flows.len());
    for (row, flow) in rows.iter().zip(&flows) {
        let ip = |b: &[u8]| Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap()).to_string();
        let expected = FlowRow {
            sequence_number: flow.sequence_number,
            time_received: flow.time_received as u32,
            exporter_address: ip(&flow.exporter_address),
            src_addr: ip(&flow.src_addr),
            in_if_boundary: "external".into(),
            flow_direction: if flow.flow_direction == FlowDirection::Ingress as i32 {
                "ingress"
            } else {
                "egress"
            }
            .into(),
            exporter_name: flow.exporter_name.clone(),
            bytes: flow.bytes,
            proto: flow.proto as u8,
            schema_version: 1,
        };
        assert_eq!(row, &expected);
    }
    let labels: Vec<u32> = scalar(
        &clickhouse,
        "SELECT mpls_labels FROM default.flows WHERE sequence_number = 3",
    )
    .await;
    assert_eq!(labels, flows[2].mpls_labels);

    // The aggregates hold the sampled totals.
    let scaled = |f: &FlowMessage| f.bytes * f.sampling_rate.max(1);
    let total: u64 = flows.iter().map(scaled).sum();
    let edge0: u64 = flows
        .iter()
        .filter(|f| f.exporter_name == "edge-0")
        .map(scaled)
        .sum();
    for table in ["flows_1m", "flows_5m", "flows_1h"] {
        let sums: (u64, u64, u64) = scalar(
            &clickhouse,
            &format!(
                "SELECT sum(bytes), sumIf(bytes, exporter_name = 'edge-0'), sum(flows) FROM default.{table}"
            ),
        )
        .await;
        assert_eq!(sums, (total, edge0, flows.len() as u64), "{table}");
    }
    let interfaces: u64 = scalar(
        &clickhouse,
        "SELECT count() FROM (SELECT DISTINCT exporter_address, if_index FROM default.exporters)",
    )
    .await;
    // edge-0 sees in_if 10 and 12, edge-1 11 and 13, and both out_if 20.
    assert_eq!(interfaces, 2 * 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_inline_schema_the_kafka_table_needs_no_proto_file() {
    let broker = KafkaBroker::start();
    let clickhouse = ClickHouse::start(); // no write_schemas(): no .proto file on the server
    let dictionaries = serve_dictionaries();
    let topic = flow_proto::current().topic("flows");
    broker.create_topic(&topic, 1).await;
    let mut config = config(&[&clickhouse.url], &broker.bootstrap, &dictionaries.url);
    config.clickhouse.inline_schema = true;

    let (applied, report) = migrate(&config, Mode::Apply, Schema::embedded()).await;
    assert!(applied.is_ok(), "{applied:?}\n{report}");
    assert!(!report.contains("warning"), "{report}");
    let raw: String = scalar(
        &clickhouse,
        "SELECT create_table_query FROM system.tables WHERE name = 'flows_1_raw'",
    )
    .await;
    assert!(raw.contains("format_schema_source = 'string'"), "{raw}");
    let flows = flows(10, 1);
    produce(&broker, &topic, batches(&flows)).await;
    wait_for_count(&clickhouse, "SELECT count() FROM default.flows", 10).await;
    let bytes: u64 = scalar(&clickhouse, "SELECT sum(bytes) FROM default.flows").await;
    assert_eq!(bytes, flows.iter().map(|f| f.bytes).sum::<u64>());
    let files = std::fs::read_dir(&clickhouse.schemas_dir).map_or(0, |d| {
        d.filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".proto"))
        })
        .count()
    });
    assert_eq!(files, 0, "no .proto was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_failing_midway_stays_dirty_and_is_repaired_by_the_next_run() {
    let clickhouse = ClickHouse::start();
    let dictionaries = serve_dictionaries();
    let config = config(&[&clickhouse.url], "127.0.0.1:9", &dictionaries.url);
    // flows_1m already exists, without the columns flows_5m copies: statement 2 of 0002 fails.
    clickhouse
        .client()
        .query("CREATE TABLE default.flows_1m (x UInt8) ENGINE = MergeTree ORDER BY x")
        .execute()
        .await
        .unwrap();

    let (failed, _) = migrate(&config, Mode::Apply, Schema::embedded()).await;
    let message = failed.unwrap_err();
    assert!(message.contains(&clickhouse.url), "{message}");
    assert!(
        message.contains("0002_aggregates.sql: statement 2 of 6 failed"),
        "{message}"
    );
    assert!(
        message.contains("statement: CREATE TABLE IF NOT EXISTS default.flows_5m"),
        "{message}"
    );
    assert!(message.contains("left dirty"), "{message}");
    assert_eq!(recorded(&clickhouse).await, (2, 1));

    // While the cause remains, the next run says so again and stays dirty.
    let (failed, report) = migrate(&config, Mode::Apply, Schema::embedded()).await;
    assert!(failed.is_err());
    assert!(
        report.contains("migration 0002_aggregates.sql was left dirty"),
        "{report}"
    );
    assert_eq!(recorded(&clickhouse).await, (2, 1));

    clickhouse
        .client()
        .query("DROP TABLE default.flows_1m")
        .execute()
        .await
        .unwrap();
    let (repaired, report) = migrate(&config, Mode::Apply, Schema::embedded()).await;
    assert_eq!(repaired, Ok(MIGRATIONS.len() - 1 + 3), "{report}");
    assert!(report.contains("was left dirty"), "{report}");
    assert_objects_exist(&clickhouse, OBJECTS).await;
    assert_eq!(
        recorded(&clickhouse).await,
        (i64::from(MIGRATIONS.last().unwrap().version), 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_is_migrated_and_an_unreachable_one_is_named() {
    let first = ClickHouse::start();
    let second = ClickHouse::start();
    let dictionaries = serve_dictionaries();
    let down = unreachable_url();
    let config = config(
        &[&first.url, &down, &second.url],
        "127.0.0.1:9",
        &dictionaries.url,
    );

    let (result, _) = migrate(&config, Mode::Apply, Schema::embedded()).await;
    let message = result.unwrap_err();
    assert!(message.starts_with("1 of 3 servers failed"), "{message}");
    assert!(message.contains(&down), "{message}");
    assert!(
        !message.contains(&first.url) && !message.contains(&second.url),
        "{message}"
    );
    let last = i64::from(MIGRATIONS.last().unwrap().version);
    for server in [&first, &second] {
        assert_objects_exist(server, OBJECTS).await;
        assert_eq!(recorded(server).await, (last, 0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_names_the_unreachable_server_and_exits_non_zero() {
    let broker = KafkaBroker::start();
    let clickhouse = ClickHouse::start();
    let dictionaries = serve_dictionaries();
    let down = unreachable_url();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("provisioner.toml");
    std::fs::write(
        &path,
        format!(
            "[kafka]\nbrokers = [{:?}]\n[clickhouse]\nservers = [{:?}, {down:?}]\n\
             [http]\npublic_url = {:?}\n",
            broker.bootstrap, clickhouse.url, dictionaries.url
        ),
    )
    .unwrap();
    let output = Command::new(flow_tests::binary("flow-provisioner"))
        .arg("migrate")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&down), "{stderr}");
    assert_objects_exist(&clickhouse, OBJECTS).await;
}

/// A synthetic v2: v1's fields and one more, as a real release would add one.
fn synthetic_v2() -> SchemaVersion {
    let v1 = flow_proto::current();
    let text = v1
        .proto_text
        .replace("package flowpipeline.v1;", "package flowpipeline.v2;")
        .replace("message FlowMessageV1 {", "message FlowMessageV2 {");
    let end = text.rfind('}').unwrap();
    let text = format!("{}  string src_country = 49;\n}}\n", &text[..end]);
    SchemaVersion {
        number: 2,
        proto_text: Box::leak(text.into_boxed_str()),
    }
}

/// The migration the release of v2 would ship: the column its new field needs.
const V2_COLUMN: &str = "ALTER TABLE {database}.flows{on_cluster} ADD COLUMN IF NOT EXISTS `src_country` LowCardinality(String);\n";

/// A v2 message: a v1 message with field 49 appended (protobuf concatenates fields).
fn v2_batch(flows: &[FlowMessage], country: &str) -> Vec<u8> {
    let mut payload = Vec::new();
    for flow in flows {
        let mut message = prost::Message::encode_to_vec(flow);
        prost::encoding::string::encode(49, &country.to_owned(), &mut message);
        prost::encoding::encode_varint(message.len() as u64, &mut payload);
        payload.extend_from_slice(&message);
    }
    payload
}

/// The services and schema of an upgrade from v1 to the synthetic v2: both topics,
/// both `.proto` files where the engine looks, and the migration v2's release ships.
struct Upgrade {
    broker: KafkaBroker,
    clickhouse: ClickHouse,
    _dictionaries: DictionaryServer,
    config: Config,
    migrations: Vec<Migration>,
    versions: [SchemaVersion; 2],
}

impl Upgrade {
    async fn start() -> Upgrade {
        let broker = KafkaBroker::start();
        let clickhouse = ClickHouse::start();
        clickhouse.write_schemas();
        let versions = [flow_proto::current(), synthetic_v2()];
        let v2 = versions[1];
        std::fs::write(
            clickhouse.schemas_dir.join(v2.proto_file_name()),
            v2.proto_text,
        )
        .unwrap();
        for version in &versions {
            broker.create_topic(&version.topic("flows"), 1).await;
        }
        let dictionaries = serve_dictionaries();
        let config = config(&[&clickhouse.url], &broker.bootstrap, &dictionaries.url);
        let mut migrations = MIGRATIONS.to_vec();
        let next = migrations.last().unwrap().version + 1;
        migrations.push(Migration {
            version: next,
            name: Box::leak(format!("{next:04}_v2_columns.sql").into_boxed_str()),
            sql: V2_COLUMN,
        });
        Upgrade {
            broker,
            clickhouse,
            _dictionaries: dictionaries,
            config,
            migrations,
            versions,
        }
    }

    /// The upgraded release: one more migration, and v2 after v1.
    fn schema(&self) -> Schema<'_> {
        Schema {
            migrations: &self.migrations,
            versions: &self.versions,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_adds_v2_and_keeps_v1_both_consuming() {
    let upgrade = Upgrade::start().await;
    let (clickhouse, broker, config) = (&upgrade.clickhouse, &upgrade.broker, &upgrade.config);
    let [v1, v2] = upgrade.versions;
    let upgraded = upgrade.schema();

    let (applied, report) = migrate(config, Mode::Apply, Schema::embedded()).await;
    assert!(applied.is_ok(), "{report}");

    // The upgrade: one more migration, and v2 after v1; plan and status see it coming.
    let (planned, report) = migrate(config, Mode::Plan, upgraded).await;
    assert_eq!(planned, Ok(1 + 3), "{report}");
    assert!(
        report.contains(
            "_v2_columns.sql:\nALTER TABLE default.flows ADD COLUMN IF NOT EXISTS `src_country`"
        ),
        "{report}"
    );
    assert!(
        report.contains(
            "pending after the migrations: flows_2_raw, flows_2_raw_consumer, flows_2_raw_errors"
        ),
        "{report}"
    );
    let mut out = Vec::new();
    let differences = provisioner::status_with(config, upgraded, &mut out).await;
    assert_eq!(
        differences.unwrap(),
        1 + 3,
        "{}",
        String::from_utf8_lossy(&out)
    );
    let (applied, report) = migrate(config, Mode::Apply, upgraded).await;
    assert_eq!(applied, Ok(1 + 3), "{report}");
    assert!(
        report.contains(
            "schema v2: done: create flows_2_raw, flows_2_raw_consumer, flows_2_raw_errors"
        ),
        "{report}"
    );
    assert_objects_exist(
        clickhouse,
        &[
            "flows_1_raw",
            "flows_1_raw_consumer",
            "flows_2_raw",
            "flows_2_raw_consumer",
            "flows_2_raw_errors",
        ],
    )
    .await;
    let v2_raw: String = scalar(
        clickhouse,
        "SELECT create_table_query FROM system.tables WHERE name = 'flows_2_raw'",
    )
    .await;
    assert!(
        v2_raw.contains("kafka_schema = 'flow-v2.proto:FlowMessageV2'"),
        "{v2_raw}"
    );
    assert!(v2_raw.contains("`src_country` String"), "{v2_raw}");

    // Old agents still write v1, new ones v2: both land in flows.
    let old = flows(10, 1);
    let new = flows(10, 101);
    produce(broker, &v1.topic("flows"), batches(&old)).await;
    produce(broker, &v2.topic("flows"), vec![v2_batch(&new, "FR")]).await;
    wait_for_count(clickhouse, "SELECT count() FROM default.flows", 20).await;
    let by_version: Vec<(u16, String, u64, u64)> = clickhouse
        .client()
        .query(
            "SELECT schema_version, any(src_country), count(), sum(bytes) FROM default.flows \
             GROUP BY schema_version ORDER BY schema_version",
        )
        .fetch_all()
        .await
        .unwrap();
    let bytes = |f: &[FlowMessage]| f.iter().map(|f| f.bytes).sum::<u64>();
    assert_eq!(
        by_version,
        vec![
            (1, String::new(), 10, bytes(&old)),
            (2, "FR".into(), 10, bytes(&new))
        ],
        "v1 rows take the new column's default"
    );

    let mut out = Vec::new();
    let differences = provisioner::status_with(config, upgraded, &mut out).await;
    let report = String::from_utf8(out).unwrap();
    assert_eq!(differences.unwrap(), 0, "{report}");
    assert!(
        report.contains("raw tables for schema versions: v1, v2"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_refuses_while_the_old_topic_has_a_backlog_and_drops_once_drained() {
    let upgrade = Upgrade::start().await;
    let (clickhouse, broker, config) = (&upgrade.clickhouse, &upgrade.broker, &upgrade.config);
    let [v1, _] = upgrade.versions;
    let schema = upgrade.schema();
    let (applied, report) = migrate(config, Mode::Apply, schema).await;
    assert!(applied.is_ok(), "{report}");
    produce(broker, &v1.topic("flows"), batches(&flows(5, 1))).await;
    wait_for_count(clickhouse, "SELECT count() FROM default.flows", 5).await;

    // v1's views stop; records arrive that nobody reads.
    let execute = |sql: &'static str| {
        let client = clickhouse.client();
        async move { client.query(sql).execute().await.unwrap() }
    };
    // Both views: a Kafka table consumes while any view depends on it.
    execute("DETACH TABLE default.flows_1_raw_consumer").await;
    execute("DETACH TABLE default.flows_1_raw_errors").await;
    // The backlog counts Kafka records (offsets), not the flows they carry.
    let unread = batches(&flows(12, 11));
    let unread_records = unread.len();
    assert!(unread_records > 1);
    produce(broker, &v1.topic("flows"), unread).await;
    let options = provisioner::PruneOptions {
        keep_last: Some(1),
        idle: None,
        force: false,
    };
    let mut out = Vec::new();
    let refused = provisioner::prune(config, options, schema, &mut out).await;
    let report = String::from_utf8(out).unwrap();
    assert!(
        matches!(
            refused,
            Err(provisioner::ClickHouseError::PruneRefused { .. })
        ),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "refusing schema v1: {unread_records} unconsumed records"
        )),
        "{report}"
    );
    assert_objects_exist(clickhouse, &["flows_1_raw"]).await;

    // Once the backlog drains, the same rule drops v1 and keeps v2.
    for view in ["flows_1_raw_consumer", "flows_1_raw_errors"] {
        attach(clickhouse, view).await;
    }
    wait_for_count(clickhouse, "SELECT count() FROM default.flows", 17).await;
    // The engine commits its offsets after it has written the rows: wait for that.
    let topic = v1.topic("flows");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let backlog =
            flow_provisioner::kafka::backlog(&config.kafka, &topic, &config.clickhouse.kafka_group)
                .await
                .unwrap();
        if backlog == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{backlog} records still uncommitted after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut out = Vec::new();
    let pruned = provisioner::prune(config, options, schema, &mut out).await;
    let report = String::from_utf8(out).unwrap();
    assert_eq!(pruned.unwrap(), 1, "{report}");
    assert!(report.contains("dropping schema v1"), "{report}");
    let objects = objects(clickhouse).await;
    assert!(
        !objects.iter().any(|o| o.starts_with("flows_1_raw")),
        "{objects:?}"
    );
    assert!(objects.iter().any(|o| o == "flows_2_raw"), "{objects:?}");
}

/// ATTACHes a detached table, retrying while the engine answers that a query still
/// holds it ("Retry later", as it says), for at most 10 s.
async fn attach(clickhouse: &ClickHouse, table: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sql = format!("ATTACH TABLE default.{table}");
        match clickhouse.client().query(&sql).execute().await {
            Ok(()) => return,
            Err(e) if e.to_string().contains("Retry later") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("{sql}: {e}"),
        }
    }
}

/// Runs the binary with `args` and a configuration file; returns the exit code and output.
fn run_binary(config_text: &str, args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("provisioner.toml");
    std::fs::write(&path, config_text).unwrap();
    let output = Command::new(flow_tests::binary("flow-provisioner"))
        .args(args)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prune_command_needs_one_rule_and_always_keeps_the_current_version() {
    let clickhouse = ClickHouse::start();
    let dictionaries = serve_dictionaries();
    let config = config(&[&clickhouse.url], "127.0.0.1:9", &dictionaries.url);
    let (applied, report) = migrate(&config, Mode::Apply, Schema::embedded()).await;
    assert!(applied.is_ok(), "{report}");
    let text = format!(
        "[clickhouse]\nservers = [{:?}]\n[http]\npublic_url = {:?}\n",
        clickhouse.url, dictionaries.url
    );

    let (code, output) = run_binary(&text, &["prune"]);
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("prune needs a rule"), "{output}");
    let (code, output) = run_binary(&text, &["prune", "--keep-last", "1", "--idle", "1d"]);
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("one rule"), "{output}");

    let (code, output) = run_binary(&text, &["prune", "--keep-last", "1"]);
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.contains("prune: keeping schema v1: the current version"),
        "{output}"
    );
    assert_objects_exist(&clickhouse, OBJECTS).await;

    let (code, output) = run_binary(
        "[clickhouse]\nservers = [\"https://ch:8443\"]\n",
        &["prune"],
    );
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("clickhouse.servers"), "{output}");
}
