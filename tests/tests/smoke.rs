//! The pipeline's contract, end to end: what the agent writes (length-delimited
//! `FlowMessageV1`, several per Kafka record, lz4), an independent Kafka client
//! (librdkafka) and an independent protobuf decoder (`protoc`) read back, and
//! ClickHouse's own Protobuf parser reads into the column types the migrations use,
//! both by `INSERT … FORMAT Protobuf` and through a Kafka-engine table.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use flow_proto::v1::{FlowDirection, InterfaceBoundary};
use flow_proto::{FlowMessage, SchemaVersion, encode_batch};
use flow_tests::clients::{
    consume_with_librdkafka, protoc_decode, protoc_encode, split_length_delimited,
};
use flow_tests::services::{ClickHouse, KafkaBroker};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;
use serde_json::{Value, json};

const RECORDS: usize = 3;
const FLOWS_PER_RECORD: usize = 4;

fn address(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// Flows that use every field, IPv4 and IPv6, empty and full values.
fn sample_flows() -> Vec<FlowMessage> {
    (0..RECORDS * FLOWS_PER_RECORD)
        .map(|i| {
            let n = i as u32;
            let v6 = i % 3 == 2;
            let (src, dst): (IpAddr, IpAddr) = if v6 {
                (
                    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n as u16 + 1).into(),
                    Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x53).into(),
                )
            } else {
                (
                    Ipv4Addr::new(10, 0, 0, n as u8 + 1).into(),
                    Ipv4Addr::new(192, 0, 2, 53).into(),
                )
            };
            FlowMessage {
                time_received: 1_790_000_000 + u64::from(n),
                flow_start: 1_789_999_990 + u64::from(n),
                flow_end: 1_789_999_999 + u64::from(n),
                sequence_number: 1000 + n,
                sampling_rate: if i % 2 == 0 { 1024 } else { 1 },
                exporter_address: address(Ipv4Addr::new(198, 51, 100, 1 + (n % 2) as u8).into()),
                exporter_name: format!("edge-{}", n % 2),
                exporter_group: "paris".into(),
                observation_domain: 256 * (n % 3),
                in_if: 10 + n,
                out_if: 20 + n,
                in_if_name: format!("et-0/0/{n}"),
                out_if_name: "xe-1/0/0".into(),
                in_if_description: format!("Transit: Cogent {n}"),
                out_if_description: String::new(),
                in_if_speed: 100_000,
                out_if_speed: 10_000,
                in_if_boundary: InterfaceBoundary::External as i32,
                out_if_boundary: if i % 2 == 0 {
                    InterfaceBoundary::Internal
                } else {
                    InterfaceBoundary::Undefined
                } as i32,
                in_if_provider: "cogent".into(),
                out_if_provider: String::new(),
                in_if_connectivity: "transit".into(),
                out_if_connectivity: "core".into(),
                bytes: 1500 * u64::from(n + 1) + (1 << 40),
                packets: u64::from(n + 1),
                src_addr: address(src),
                dst_addr: address(dst),
                src_net_mask: if v6 { 64 } else { 24 },
                dst_net_mask: if v6 { 48 } else { 32 },
                src_as: 64_500 + n,
                dst_as: 15_169,
                next_hop: if i % 4 == 3 {
                    Vec::new()
                } else {
                    address(Ipv4Addr::new(203, 0, 113, 1).into())
                },
                etype: if v6 { 0x86dd } else { 0x0800 },
                proto: if i % 2 == 0 { 6 } else { 17 },
                ip_tos: 0xb8,
                ip_ttl: 64,
                src_port: 40_000 + n,
                dst_port: 443,
                tcp_flags: if i % 2 == 0 { 0x1b } else { 0 },
                icmp_type: 0,
                icmp_code: 0,
                src_vlan: 100 + n,
                dst_vlan: 0,
                src_mac: 0x0011_2233_4455 + u64::from(n),
                dst_mac: 0x00aa_bbcc_ddee,
                mpls_labels: (0..i % 3).map(|k| 16_000 + k as u32).collect(),
                forwarding_status: 64,
                flow_direction: if i % 2 == 0 {
                    FlowDirection::Ingress
                } else {
                    FlowDirection::Egress
                } as i32,
            }
        })
        .collect()
}

/// One column of the ClickHouse tables: its type as the migrations use it, how to
/// read it back as JSON, and what it must be for a flow.
struct Column {
    name: &'static str,
    clickhouse_type: &'static str,
    select: &'static str,
    expected: fn(&FlowMessage) -> Value,
}

fn ip_text(bytes: &[u8]) -> Value {
    let octets: [u8; 16] = bytes.try_into().unwrap_or([0; 16]);
    json!(Ipv6Addr::from(octets).to_string())
}

fn boundary_name(value: i32) -> Value {
    json!(
        InterfaceBoundary::try_from(value)
            .unwrap()
            .as_str_name()
            .to_lowercase()
    )
}

fn direction_name(value: i32) -> Value {
    json!(
        FlowDirection::try_from(value)
            .unwrap()
            .as_str_name()
            .to_lowercase()
    )
}

const BOUNDARY: &str = "Enum8('undefined' = 0, 'external' = 1, 'internal' = 2)";
const DIRECTION: &str = "Enum8('unknown' = 0, 'ingress' = 1, 'egress' = 2)";

macro_rules! column {
    ($name:ident, $type:expr, $select:expr, |$f:ident| $expected:expr) => {
        Column {
            name: stringify!($name),
            clickhouse_type: $type,
            select: $select,
            expected: |$f: &FlowMessage| $expected,
        }
    };
    ($name:ident, $type:expr) => {
        column!($name, $type, stringify!($name), |f| json!(f.$name))
    };
}

fn columns() -> Vec<Column> {
    vec![
        column!(
            time_received,
            "DateTime",
            "toUnixTimestamp(time_received)",
            |f| json!(f.time_received)
        ),
        column!(
            flow_start,
            "DateTime",
            "toUnixTimestamp(flow_start)",
            |f| json!(f.flow_start)
        ),
        column!(
            flow_end,
            "DateTime",
            "toUnixTimestamp(flow_end)",
            |f| json!(f.flow_end)
        ),
        column!(sequence_number, "UInt32"),
        column!(sampling_rate, "UInt64"),
        column!(
            exporter_address,
            "IPv6",
            "toString(exporter_address)",
            |f| ip_text(&f.exporter_address)
        ),
        column!(exporter_name, "LowCardinality(String)"),
        column!(exporter_group, "LowCardinality(String)"),
        column!(observation_domain, "UInt32"),
        column!(in_if, "UInt32"),
        column!(out_if, "UInt32"),
        column!(in_if_name, "LowCardinality(String)"),
        column!(out_if_name, "LowCardinality(String)"),
        column!(in_if_description, "LowCardinality(String)"),
        column!(out_if_description, "LowCardinality(String)"),
        column!(in_if_speed, "UInt32"),
        column!(out_if_speed, "UInt32"),
        column!(in_if_boundary, BOUNDARY, "toString(in_if_boundary)", |f| {
            boundary_name(f.in_if_boundary)
        }),
        column!(
            out_if_boundary,
            BOUNDARY,
            "toString(out_if_boundary)",
            |f| boundary_name(f.out_if_boundary)
        ),
        column!(in_if_provider, "LowCardinality(String)"),
        column!(out_if_provider, "LowCardinality(String)"),
        column!(in_if_connectivity, "LowCardinality(String)"),
        column!(out_if_connectivity, "LowCardinality(String)"),
        column!(bytes, "UInt64"),
        column!(packets, "UInt64"),
        column!(src_addr, "IPv6", "toString(src_addr)", |f| ip_text(
            &f.src_addr
        )),
        column!(dst_addr, "IPv6", "toString(dst_addr)", |f| ip_text(
            &f.dst_addr
        )),
        column!(src_net_mask, "UInt8"),
        column!(dst_net_mask, "UInt8"),
        column!(src_as, "UInt32"),
        column!(dst_as, "UInt32"),
        column!(next_hop, "IPv6", "toString(next_hop)", |f| ip_text(
            &f.next_hop
        )),
        column!(etype, "UInt32"),
        column!(proto, "UInt8"),
        column!(ip_tos, "UInt8"),
        column!(ip_ttl, "UInt8"),
        column!(src_port, "UInt16"),
        column!(dst_port, "UInt16"),
        column!(tcp_flags, "UInt16"),
        column!(icmp_type, "UInt8"),
        column!(icmp_code, "UInt8"),
        column!(src_vlan, "UInt16"),
        column!(dst_vlan, "UInt16"),
        column!(src_mac, "UInt64"),
        column!(dst_mac, "UInt64"),
        column!(mpls_labels, "Array(UInt32)"),
        column!(forwarding_status, "UInt8"),
        column!(flow_direction, DIRECTION, "toString(flow_direction)", |f| {
            direction_name(f.flow_direction)
        }),
    ]
}

fn column_definitions() -> String {
    columns()
        .iter()
        .map(|c| format!("`{}` {}", c.name, c.clickhouse_type))
        .collect::<Vec<_>>()
        .join(",\n  ")
}

/// A MergeTree table with the migrations' column types.
async fn create_merge_tree(client: &clickhouse::Client, table: &str) {
    client
        .query(&format!(
            "CREATE TABLE {table} (\n  {}\n) ENGINE = MergeTree ORDER BY sequence_number",
            column_definitions()
        ))
        .execute()
        .await
        .unwrap();
}

/// Reads a table back in `sequence_number` order and compares every column of every flow.
async fn assert_table_holds(clickhouse: &ClickHouse, table: &str, flows: &[FlowMessage]) {
    let select = columns()
        .iter()
        .map(|c| format!("{} AS `{}`", c.select, c.name))
        .collect::<Vec<_>>()
        .join(", ");
    let mut cursor = clickhouse
        .client()
        .with_setting("output_format_json_quote_64bit_integers", "0")
        .query(&format!(
            "SELECT {select} FROM {table} ORDER BY sequence_number"
        ))
        .fetch_bytes("JSONEachRow")
        .unwrap();
    let text = String::from_utf8(cursor.collect().await.unwrap().to_vec()).unwrap();
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), flows.len(), "rows in {table}");
    for (row, flow) in rows.iter().zip(flows) {
        for column in columns() {
            assert_eq!(
                row[column.name],
                (column.expected)(flow),
                "{table}: column {} of flow {}",
                column.name,
                flow.sequence_number
            );
        }
    }
}

fn batches(flows: &[FlowMessage]) -> Vec<Vec<u8>> {
    flows
        .chunks(FLOWS_PER_RECORD)
        .map(|chunk| {
            let mut payload = Vec::new();
            encode_batch(chunk, &mut payload);
            payload
        })
        .collect()
}

/// Text-format lines that protoc must print for this flow (a sample of field kinds).
fn expected_protoc_lines(flow: &FlowMessage) -> Vec<String> {
    vec![
        format!("sequence_number: {}", flow.sequence_number),
        format!("bytes: {}", flow.bytes),
        format!("src_port: {}", flow.src_port),
        format!("exporter_name: \"{}\"", flow.exporter_name),
        format!("in_if_description: \"{}\"", flow.in_if_description),
        format!(
            "in_if_boundary: {}",
            InterfaceBoundary::try_from(flow.in_if_boundary)
                .unwrap()
                .as_str_name()
        ),
        format!(
            "flow_direction: {}",
            FlowDirection::try_from(flow.flow_direction)
                .unwrap()
                .as_str_name()
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_wire_format_schema_and_clickhouse_agree() {
    let broker = KafkaBroker::start();
    let clickhouse = ClickHouse::start();
    clickhouse.write_schemas();
    let version = flow_proto::current();
    let topic = version.topic("flows");
    let flows = sample_flows();
    let payloads = batches(&flows);

    // Produce with rskafka, lz4, several flows per record, as the agent does.
    broker.create_topic(&topic, 1).await;
    let partition = broker
        .client()
        .await
        .partition_client(&topic, 0, UnknownTopicHandling::Retry)
        .await
        .unwrap();
    let records = payloads
        .iter()
        .map(|payload| Record {
            key: None,
            value: Some(payload.clone()),
            headers: Default::default(),
            timestamp: chrono::Utc::now(),
        })
        .collect();
    partition.produce(records, Compression::Lz4).await.unwrap();

    // An independent client reads the same bytes back…
    let consumed = consume_with_librdkafka(&broker.bootstrap, &topic, RECORDS);
    let values: Vec<Vec<u8>> = consumed.iter().map(|r| r.value.clone()).collect();
    assert_eq!(values, payloads, "records as librdkafka reads them");

    // …and an independent decoder finds every flow, field by field, with nothing unknown.
    let messages: Vec<&[u8]> = values
        .iter()
        .flat_map(|v| split_length_delimited(v))
        .collect();
    assert_eq!(messages.len(), flows.len());
    for (message, flow) in messages.iter().zip(&flows) {
        let text = protoc_decode(version, message);
        for line in expected_protoc_lines(flow) {
            assert!(
                text.lines().any(|l| l == line),
                "protoc output lacks {line:?}:\n{text}"
            );
        }
        assert_eq!(
            protoc_encode(version, &text),
            *message,
            "protoc re-encodes the same bytes:\n{text}"
        );
    }

    // ClickHouse's own Protobuf parser reads the payloads into the migrations' column types.
    let client = clickhouse.client();
    let kafka_schema = version.clickhouse().kafka_schema;
    create_merge_tree(&client, "smoke_direct").await;
    for payload in &values {
        let mut insert = client
            .clone()
            .with_setting("format_schema", kafka_schema.clone())
            .insert_formatted_with("INSERT INTO smoke_direct FORMAT Protobuf");
        insert.send(payload.clone().into()).await.unwrap();
        insert.end().await.unwrap();
    }
    assert_table_holds(&clickhouse, "smoke_direct", &flows).await;

    // The real ingestion path: a Kafka-engine table and a materialized view.
    assert_kafka_engine_ingests(&broker, &clickhouse, version, &topic, &flows).await;
}

async fn assert_kafka_engine_ingests(
    broker: &KafkaBroker,
    clickhouse: &ClickHouse,
    version: SchemaVersion,
    topic: &str,
    flows: &[FlowMessage],
) {
    let client = clickhouse.client();
    let names = version.clickhouse();
    let group = format!("smoke-{}", std::process::id());
    create_merge_tree(&client, "smoke_flows").await;
    client
        .query(&format!(
            "CREATE TABLE {raw} (\n  {columns}\n) ENGINE = Kafka SETTINGS \
             kafka_broker_list = '{brokers}', kafka_topic_list = '{topic}', \
             kafka_group_name = '{group}', kafka_format = 'Protobuf', \
             kafka_schema = '{schema}', kafka_flush_interval_ms = 500",
            raw = names.raw_table,
            columns = column_definitions(),
            brokers = broker.bootstrap,
            schema = names.kafka_schema,
        ))
        .execute()
        .await
        .unwrap();
    client
        .query(&format!(
            "CREATE MATERIALIZED VIEW {view} TO smoke_flows AS SELECT * FROM {raw}",
            view = names.consumer_view,
            raw = names.raw_table,
        ))
        .execute()
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let count: u64 = client
            .query("SELECT count() FROM smoke_flows")
            .fetch_one()
            .await
            .unwrap();
        if count >= flows.len() as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Kafka engine stored {count} of {} flows within 90 s:\n{}",
            flows.len(),
            clickhouse.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_table_holds(clickhouse, "smoke_flows", flows).await;
}
