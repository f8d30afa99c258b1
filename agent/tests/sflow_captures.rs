//! The sFlow decoder against real captures: every value tshark (an independent
//! dissector) finds in ../shared/data/captures/sflow must come out of the decoder.
//! The expected values are fixtures made once by `fixtures/make-sflow-fixtures`.

use std::path::{Path, PathBuf};

use flow_agent::decode::{Datagram, DecodeCounters, DecodeOptions, Decoder, Flows};
use flow_agent::inspect::flow_to_json;
use flow_agent::pcap::read_udp_datagrams;
use serde_json::Value;

fn captures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/captures")
}

fn fixtures() -> Vec<Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sflow");
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .expect("the fixtures folder")
        .map(|e| e.expect("a fixture entry").path())
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).expect("a readable fixture");
            serde_json::from_str(&text).expect("a JSON fixture")
        })
        .collect()
}

/// A field the decoder left at its default is absent from the JSON form.
fn actual_or_default(flow: &Value, key: &str, expected: &Value) -> Value {
    flow.get(key).cloned().unwrap_or_else(|| match expected {
        Value::Number(_) => Value::from(0),
        _ => Value::Null,
    })
}

#[test]
fn every_sflow_capture_decodes_to_what_tshark_sees() {
    let fixtures = fixtures();
    assert_eq!(fixtures.len(), 15, "one fixture per capture");
    for fixture in fixtures {
        let capture = fixture["capture"].as_str().unwrap();
        let mut decoder = Decoder::default();
        let mut counters = DecodeCounters::default();
        let mut flows = Flows::default();
        for captured in read_udp_datagrams(&captures().join(capture)).unwrap() {
            let datagram = Datagram {
                source: captured.source,
                received: captured.timestamp,
                payload: &captured.payload,
            };
            decoder
                .decode(
                    &datagram,
                    None,
                    &DecodeOptions::default(),
                    &mut flows,
                    &mut counters,
                )
                .unwrap_or_else(|e| panic!("{capture}: {e}"));
        }
        let expected = fixture["flows"].as_array().unwrap();
        assert_eq!(flows.len(), expected.len(), "{capture}: flows");
        assert_eq!(
            counters.counter_samples,
            fixture["counter_samples"].as_u64().unwrap(),
            "{capture}: counter samples"
        );
        for (index, (flow, expected)) in flows.iter().zip(expected).enumerate() {
            let actual = flow_to_json(flow);
            for (key, value) in expected.as_object().unwrap() {
                assert_eq!(
                    actual_or_default(&actual, key, value),
                    *value,
                    "{capture}: flow {index}, {key} (decoded: {actual})"
                );
            }
        }
    }
}

#[test]
fn decode_command_prints_one_json_object_per_flow() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_flow-agent"))
        .arg("decode")
        .arg(captures().join("sflow/data-1140.pcap"))
        .arg(captures().join("netflow/nfv5.pcap"))
        .output()
        .unwrap();
    assert!(output.status.success());
    let lines: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5 + 29);
    assert_eq!(lines[0]["src_addr"], "2a0c:8880:2:0:185:21:130:38");
    assert_eq!(lines[0]["sampling_rate"], 1024);
    assert_eq!(lines[5]["src_addr"], "161.202.212.212");
    let summary = String::from_utf8(output.stderr).unwrap();
    assert!(summary.contains("datagrams: 2, flows: 34"), "{summary}");
}

#[test]
fn decode_command_names_a_missing_file() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_flow-agent"))
        .args(["decode", "/nonexistent/capture.pcap"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/capture.pcap"));
}
