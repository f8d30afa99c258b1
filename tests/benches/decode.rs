//! Decoding speed, per protocol, on datagrams made by real exporter code, with the
//! `netflow_parser` crate (a Rust peer) decoding the same datagrams in the same run.
//!
//! `cargo bench -p flow-tests --bench decode` prints flows per second per core (CPU
//! time of this thread, not wall time: the machines are shared; the fastest of five
//! one-second rounds, the peer measured the same way) for decode alone, for
//! decode plus protobuf encoding (the agent's one-pass encoder, and prost's beside it),
//! and the ratio to the peer.
//!
//! Datasets: a synthetic traffic capture exported by softflowd (NetFlow v5, v9, IPFIX)
//! and by pmacct's sFlow probe, plus the real Cisco AVC capture from ../shared/data.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use flow_agent::decode::{Datagram, DecodeCounters, DecodeOptions, Decoder, Flows};
use flow_proto::encode_batch;
use flow_tests::thread_cpu_time;
use flow_tests::traffic::{
    SyntheticCapture, TrafficShape, pmacct_sflow_datagrams, softflowd_datagrams,
};
use netflow_parser::NetflowParser;
use prost::Message;

/// How long each round of a measurement runs, in CPU time.
const ROUND: Duration = Duration::from_secs(1);
/// Rounds per measurement, of which the fastest counts: on a shared machine a
/// neighbour slows a round down (caches, memory bandwidth), never speeds it up.
const ROUNDS: usize = 5;

struct Dataset {
    name: &'static str,
    /// (source, payload) in the order the exporter sent them.
    datagrams: Vec<(SocketAddr, Vec<u8>)>,
    /// Whether the peer decodes this protocol.
    peer: bool,
}

/// Runs `pass` (one pass over a dataset, returning the flows it saw) for ROUNDS
/// rounds of ROUND of CPU time; returns the fastest round's flows per CPU second.
fn flows_per_second(mut pass: impl FnMut() -> u64) -> f64 {
    pass(); // warm-up: templates learned, buffers grown
    (0..ROUNDS)
        .map(|_| {
            let start = thread_cpu_time();
            let mut flows = 0u64;
            while thread_cpu_time() - start < ROUND {
                flows += pass();
            }
            flows as f64 / (thread_cpu_time() - start).as_secs_f64()
        })
        .fold(0.0, f64::max)
}

fn datagram<'a>(source: SocketAddr, payload: &'a [u8]) -> Datagram<'a> {
    Datagram {
        source,
        received: 1_790_000_000,
        payload,
    }
}

/// What follows decoding in a measurement.
#[derive(Clone, Copy)]
enum Encoding {
    None,
    /// flow_proto's one-pass encoder, as the agent encodes.
    OnePass,
    /// prost's `encode_length_delimited`, the reference the one-pass encoder is compared to.
    Prost,
}

fn ours(dataset: &Dataset, encoding: Encoding) -> (f64, u64) {
    let mut decoder = Decoder::default();
    let options = DecodeOptions::default();
    let mut counters = DecodeCounters::default();
    let mut flows = Flows::default();
    let mut encoded = Vec::with_capacity(1 << 20);
    let mut per_pass = 0;
    let rate = flows_per_second(|| {
        let mut total = 0u64;
        for (source, payload) in &dataset.datagrams {
            flows.clear();
            let _ = decoder.decode(
                &datagram(*source, payload),
                None,
                &options,
                &mut flows,
                &mut counters,
            );
            total += flows.len() as u64;
            encoded.clear();
            match encoding {
                Encoding::None => {}
                Encoding::OnePass => encode_batch(&flows, &mut encoded),
                Encoding::Prost => {
                    for flow in &flows {
                        let _ = flow.encode_length_delimited(&mut encoded);
                    }
                }
            }
        }
        per_pass = total;
        total
    });
    (rate, per_pass)
}

/// The peer's rate, counted in our flows per pass (the datagrams are the same), and
/// how many datagrams it refused in a pass (a rate over refused datagrams means nothing).
fn peer(dataset: &Dataset, flows_per_pass: u64) -> (f64, u64) {
    let mut parser = NetflowParser::default();
    let mut refused = 0;
    let rate = flows_per_second(|| {
        refused = 0;
        for (_, payload) in &dataset.datagrams {
            let result = std::hint::black_box(parser.parse_bytes(payload));
            refused += u64::from(result.error.is_some() || result.packets.is_empty());
        }
        flows_per_pass
    });
    (rate, refused)
}

fn exporter() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 2055)
}

fn datasets() -> Vec<Dataset> {
    let synthetic = SyntheticCapture::write(TrafficShape::default());
    let capture = &synthetic.path;
    eprintln!(
        "synthetic traffic: {} packets, {} flows",
        synthetic.packets,
        TrafficShape::default().flows
    );
    let from_exporter =
        |datagrams: Vec<Vec<u8>>| datagrams.into_iter().map(|d| (exporter(), d)).collect();
    let avc = flow_tests::shared_data_dir().join("captures/cisco-avc/IPFIX.pcap");
    let avc_datagrams = flow_agent::pcap::read_udp_datagrams(&avc)
        .expect("read the Cisco AVC capture")
        .into_iter()
        .map(|d| (d.source, d.payload.to_vec()))
        .collect();
    vec![
        Dataset {
            name: "NetFlow v5 (softflowd)",
            datagrams: from_exporter(softflowd_datagrams(capture, 5)),
            peer: true,
        },
        Dataset {
            name: "NetFlow v9 (softflowd)",
            datagrams: from_exporter(softflowd_datagrams(capture, 9)),
            peer: true,
        },
        Dataset {
            name: "IPFIX (softflowd)",
            datagrams: from_exporter(softflowd_datagrams(capture, 10)),
            peer: true,
        },
        Dataset {
            name: "IPFIX (Cisco AVC capture)",
            datagrams: avc_datagrams,
            peer: true,
        },
        Dataset {
            name: "sFlow v5 (pmacct sfprobe)",
            datagrams: from_exporter(pmacct_sflow_datagrams(capture, 1)),
            peer: false,
        },
    ]
}

fn main() {
    // `cargo test --benches` runs this with --bench absent: only check it builds.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    println!(
        "{:<28} {:>9} {:>10} {:>13} {:>14} {:>14} {:>16} {:>8}",
        "dataset",
        "datagrams",
        "flows",
        "decode Mfl/s",
        "+encode Mfl/s",
        "+prost Mfl/s",
        "netflow_parser",
        "ratio"
    );
    for dataset in datasets() {
        let (decode, flows) = ours(&dataset, Encoding::None);
        let (with_encode, _) = ours(&dataset, Encoding::OnePass);
        let (with_prost, _) = ours(&dataset, Encoding::Prost);
        let (peer_text, ratio_text) = if dataset.peer {
            match peer(&dataset, flows) {
                (peer_rate, 0) => (
                    format!("{:.2}", peer_rate / 1e6),
                    format!("{:.1}x", decode / peer_rate),
                ),
                (_, refused) => (format!("refused {refused}"), "n/a".into()),
            }
        } else {
            ("n/a".into(), "n/a".into())
        };
        println!(
            "{:<28} {:>9} {:>10} {:>13.2} {:>14.2} {:>14.2} {:>16} {:>8}",
            dataset.name,
            dataset.datagrams.len(),
            flows,
            decode / 1e6,
            with_encode / 1e6,
            with_prost / 1e6,
            peer_text,
            ratio_text
        );
    }
    println!(
        "(millions of flows per second per core, CPU time of the decoding thread; +encode: \
         decoding then flow_proto's one-pass length-delimited encoding, as the agent does; \
         +prost: decoding then prost's encode_length_delimited, for comparison)"
    );
}
