//! The agent's Kafka stage alone: what its producer (rskafka underneath) spends
//! of CPU per flow turning encoded flows into acknowledged records, with
//! librdkafka (confluent-kafka) producing the very same record values to the
//! same broker in the same run as the peer.
//!
//! `cargo bench -p flow-tests --bench produce` runs, per dataset and compression,
//! the agent's `producer::channel` in process against a Tansu broker: this thread
//! decodes, enriches and encodes the flows as a listener would and feeds the
//! intake; the producer runs on its own thread and runtime, as in the agent,
//! and its thread's CPU time (user and system, the loopback TCP send included)
//! divided by the flows acknowledged is the figure. The peer then produces the
//! records the agent wrote (read back from the topic) with the agent's linger
//! and batch size; its figure is the whole Python process's CPU time.
//!
//! Why: the pipeline benchmark's per-core figure is the sum of the listener's
//! stage and this one; this one tells how much of it the Kafka client costs,
//! and whether another client would cost less.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use flow_agent::config::{Compression, Config};
use flow_agent::decode::{Datagram, DecodeCounters, DecodeOptions, Decoder, Flows};
use flow_agent::enrich::Enricher;
use flow_agent::metrics::Metrics;
use flow_agent::producer::{EncodedFlows, channel};
use flow_agent::tls::Transport;
use flow_proto::FlowMessage;
use flow_tests::clients::split_length_delimited;
use flow_tests::services::KafkaBroker;
use flow_tests::thread_cpu_time;
use flow_tests::traffic::{
    SyntheticCapture, TrafficShape, pmacct_sflow_datagrams, softflowd_datagrams,
};
use rskafka::client::partition::UnknownTopicHandling;

/// Flows produced per measurement: a couple of seconds of the producer's CPU.
const FLOWS: u64 = 4_000_000;
/// Datagrams a listener hands to the intake at once (its `recvmmsg` batch).
const RECEIVE_BATCH: usize = 32;
/// Flows fed but not yet acknowledged, at most: the feeder waits beyond, so
/// that nothing is dropped and the figure is per flow produced.
const WINDOW: u64 = 200_000;
/// The intake's bound, well above the window.
const BOUND: usize = 1_000_000;

struct Dataset {
    name: &'static str,
    /// The flows of each datagram, decoded once (templates learned in order).
    datagrams: Vec<Vec<FlowMessage>>,
}

/// CPU time of one measurement and the flows it covers.
struct Spent {
    cpu: Duration,
    flows: u64,
}

impl Spent {
    fn nanos_per_flow(&self) -> f64 {
        self.cpu.as_nanos() as f64 / self.flows.max(1) as f64
    }
}

/// The agent's defaults, but for the broker and compression, and for the
/// `[kafka]` keys in `FLOW_BENCH_KAFKA` (`;`-separated, to try other record or
/// batch sizes: `max_flows_per_message = 10000; max_message_bytes = 900000`).
fn config(bootstrap: &str, compression: &str) -> Config {
    let extra = std::env::var("FLOW_BENCH_KAFKA").unwrap_or_default();
    let extra = extra.replace(';', "\n");
    Config::parse(&format!(
        "[kafka]\nbrokers = [\"{bootstrap}\"]\ntopic_base = \"bench\"\ncompression = \"{compression}\"\n{extra}\n\n\
         [[listeners]]\naddress = \"127.0.0.1:0\"\n"
    ))
    .expect("the benchmark's agent config (FLOW_BENCH_KAFKA?)")
}

fn decode_all(datagrams: Vec<Vec<u8>>) -> Vec<Vec<FlowMessage>> {
    let source = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 2055);
    let mut decoder = Decoder::default();
    let mut counters = DecodeCounters::default();
    let mut flows = Flows::default();
    let options = DecodeOptions::default();
    datagrams
        .iter()
        .filter_map(|payload| {
            flows.clear();
            let datagram = Datagram {
                source,
                received: 1_790_000_000,
                payload,
            };
            let _ = decoder.decode(&datagram, None, &options, &mut flows, &mut counters);
            (!flows.is_empty()).then(|| flows.to_vec())
        })
        .collect()
}

fn datasets() -> Vec<Dataset> {
    let synthetic = SyntheticCapture::write(TrafficShape::default());
    let capture = &synthetic.path;
    vec![
        Dataset {
            name: "NetFlow v9 (softflowd)",
            datagrams: decode_all(softflowd_datagrams(capture, 9)),
        },
        Dataset {
            name: "IPFIX (softflowd)",
            datagrams: decode_all(softflowd_datagrams(capture, 10)),
        },
        Dataset {
            name: "sFlow v5 (pmacct sfprobe)",
            datagrams: decode_all(pmacct_sflow_datagrams(capture, 1)),
        },
    ]
}

/// Feeds [`FLOWS`] flows of `dataset` through the agent's intake and producer;
/// returns the producer thread's CPU time and the flows acknowledged.
fn agent(dataset: &Dataset, config: &Config) -> Spent {
    let metrics = Arc::new(Metrics::default());
    let enricher = Enricher::new(config).expect("the benchmark's enricher");
    let transport = Transport::new(&config.kafka).expect("plaintext transport");
    let (intake, producer) = channel(&config.kafka, transport, BOUND, Arc::clone(&metrics));
    let kafka = std::thread::Builder::new()
        .name("kafka".to_owned())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let start = thread_cpu_time();
            runtime.block_on(producer.run(std::future::pending(), Duration::from_secs(60)));
            thread_cpu_time() - start
        })
        .expect("spawn the producer thread");

    // Enriched once: what the producer sees is the same, and enriching is the listener's.
    let mut datagrams = dataset.datagrams.clone();
    for flows in &mut datagrams {
        enricher.enrich(flows);
    }
    let mut fed = 0u64;
    'feed: loop {
        for batch in datagrams.chunks(RECEIVE_BATCH) {
            while fed - metrics.total_produced() - metrics.total_dropped() > WINDOW {
                std::thread::sleep(Duration::from_micros(200));
            }
            let mut pending: Vec<EncodedFlows> = Vec::new();
            for flows in batch {
                intake.encode(flows, &mut pending);
                fed += flows.len() as u64;
            }
            intake.submit(pending);
            if fed >= FLOWS {
                break 'feed;
            }
        }
    }
    drop(intake);
    let cpu = kafka.join().expect("the producer thread");
    assert_eq!(
        metrics.total_dropped(),
        0,
        "{}: the agent dropped flows",
        dataset.name
    );
    assert_eq!(
        metrics.total_produced(),
        fed,
        "{}: flows unaccounted",
        dataset.name
    );
    Spent { cpu, flows: fed }
}

/// The records of `topic` (partition 0) until they hold `flows` flows, each with
/// its flow count.
async fn records_holding(broker: &KafkaBroker, topic: &str, flows: u64) -> Vec<(Vec<u8>, u32)> {
    let client = broker.client().await;
    let partition = client
        .partition_client(topic, 0, UnknownTopicHandling::Retry)
        .await
        .expect("partition client");
    let (mut values, mut held, mut offset) = (Vec::new(), 0u64, 0);
    while held < flows {
        let (records, _) = partition
            .fetch_records(offset, 1..10_000_000, 1_000)
            .await
            .expect("fetch the agent's records");
        assert!(!records.is_empty(), "{topic} ran out of records");
        for record in records {
            offset = record.offset + 1;
            let value = record.record.value.expect("a record value");
            let count = split_length_delimited(&value).len();
            held += count as u64;
            values.push((value, u32::try_from(count).expect("flows in a record")));
        }
    }
    values
}

/// librdkafka producing `values` over and over until [`FLOWS`] flows went out,
/// with `compression` (the name both the agent's config and librdkafka use).
fn peer(
    broker: &KafkaBroker,
    config: &Config,
    compression: &str,
    values: &[(Vec<u8>, u32)],
) -> Spent {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("values.bin");
    let mut file = Vec::new();
    for (value, flows) in values {
        let length = u32::try_from(value.len()).expect("record length");
        file.extend_from_slice(&length.to_be_bytes());
        file.extend_from_slice(&flows.to_be_bytes());
        file.extend_from_slice(value);
    }
    std::fs::write(&path, file).expect("write the record values");
    let output = Command::new(flow_tests::python())
        .arg(flow_tests::support_dir().join("kafka_produce_bench.py"))
        .args(["--bootstrap", &broker.bootstrap, "--topic", "peer"])
        .arg("--values")
        .arg(&path)
        .args(["--flows", &FLOWS.to_string(), "--compression", compression])
        .args(["--linger-ms", &config.kafka.linger_ms.to_string()])
        .args(["--batch-bytes", &config.kafka.max_batch_bytes.to_string()])
        .output()
        .expect("run kafka_produce_bench.py");
    assert!(
        output.status.success(),
        "librdkafka producer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("the peer's JSON report");
    assert_eq!(
        report["delivery_errors"], 0,
        "librdkafka delivery errors: {report}"
    );
    Spent {
        cpu: Duration::from_secs_f64(report["cpu_seconds"].as_f64().expect("cpu_seconds")),
        flows: report["flows"].as_u64().expect("flows"),
    }
}

/// liblz4 alone (the library rskafka's lz4 frames come from, at the same
/// level) compressing `values` as blocks, no frame, checksum or client: the
/// floor of the compression any lz4 producer pays. CPU time of this thread.
fn lz4_alone(values: &[(Vec<u8>, u32)]) -> Spent {
    let largest = values.iter().map(|(v, _)| v.len()).max().unwrap_or(0);
    let mut output = vec![0u8; lz4::block::compress_bound(largest).expect("a bound")];
    let start = thread_cpu_time();
    let mut flows = 0u64;
    while flows < FLOWS {
        for (value, count) in values {
            let written = lz4::block::compress_to_buffer(value, None, false, &mut output)
                .expect("lz4 block compression");
            std::hint::black_box(written);
            flows += u64::from(*count);
        }
    }
    Spent {
        cpu: thread_cpu_time() - start,
        flows,
    }
}

fn main() {
    // `cargo test --benches` runs this with --bench absent: only check it builds.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let datasets = datasets();
    let mut broker = KafkaBroker::start();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    println!(
        "{:<28} {:>11} {:>11} {:>12} {:>14} {:>9} {:>13} {:>16}",
        "dataset",
        "compression",
        "bytes/flow",
        "agent ns/fl",
        "librdkafka ns",
        "ratio",
        "lz4 alone ns",
        "agent Mfl/s/core"
    );
    for dataset in &datasets {
        for compression in ["lz4", "none"] {
            // Memory storage: a fresh broker per measurement holds only its records.
            broker.restart();
            let config = config(&broker.bootstrap, compression);
            let topic = config.kafka.topic();
            runtime.block_on(async {
                broker.create_topic(&topic, 1).await;
                broker.create_topic("peer", 1).await;
            });
            let ours = agent(dataset, &config);
            let cycle: u64 = dataset.datagrams.iter().map(|d| d.len() as u64).sum();
            let values = runtime.block_on(records_holding(&broker, &topic, cycle));
            let bytes: usize = values.iter().map(|(v, _)| v.len()).sum();
            let flows: u64 = values.iter().map(|&(_, f)| u64::from(f)).sum();
            let theirs = peer(&broker, &config, compression, &values);
            let floor = match config.kafka.compression {
                Compression::Lz4 => format!("{:.0}", lz4_alone(&values).nanos_per_flow()),
                _ => "-".to_owned(),
            };
            println!(
                "{:<28} {:>11} {:>11.1} {:>12.0} {:>14.0} {:>8.2}x {:>13} {:>16.2}",
                dataset.name,
                compression,
                bytes as f64 / flows as f64,
                ours.nanos_per_flow(),
                theirs.nanos_per_flow(),
                theirs.nanos_per_flow() / ours.nanos_per_flow(),
                floor,
                1e3 / ours.nanos_per_flow(),
            );
        }
    }
    println!(
        "(CPU per flow acknowledged by the broker. agent: its producer thread, rskafka \
         underneath, the records it forms from the listener's chunks; librdkafka: the same \
         record values with the agent's linger and batch size, the whole confluent-kafka \
         process, its Python loop included. ratio: librdkafka / agent, above 1 the agent is \
         cheaper. lz4 alone: liblz4 compressing the same values as bare blocks. agent Mfl/s/core: the ceiling this stage alone puts on the agent, whose \
         listener stage comes on top)"
    );
}
