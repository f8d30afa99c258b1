//! Independent clients: confluent-kafka (librdkafka 2.16, through Python) to read
//! topics, and Debian's `protoc` to decode protobuf. Neither shares code with ours.

use std::io::Write;
use std::process::{Command, Stdio};

use serde::Deserialize;

/// One record as confluent-kafka read it.
#[derive(Debug, Clone, Deserialize)]
pub struct ConsumedRecord {
    /// Partition it came from.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// Key bytes, if any.
    #[serde(deserialize_with = "base64_opt")]
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    #[serde(deserialize_with = "base64")]
    pub value: Vec<u8>,
}

fn base64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let text = String::deserialize(d)?;
    decode_base64(&text).map_err(serde::de::Error::custom)
}

fn base64_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|text| decode_base64(&text).map_err(serde::de::Error::custom))
        .transpose()
}

fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text)
}

/// Reads `count` records of `topic` from the beginning with confluent-kafka.
pub fn consume_with_librdkafka(bootstrap: &str, topic: &str, count: usize) -> Vec<ConsumedRecord> {
    let output = Command::new(crate::python())
        .arg(crate::support_dir().join("kafka_consume.py"))
        .args(["--bootstrap", bootstrap, "--topic", topic])
        .args(["--count", &count.to_string(), "--timeout", "60"])
        .output()
        .expect("run kafka_consume.py");
    assert!(
        output.status.success(),
        "confluent-kafka consumer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("JSON lines")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a consumed record"))
        .collect()
}

/// Runs `protoc` with the flow schema's directory as its import path.
fn protoc(args: &[&str], input: &[u8]) -> Vec<u8> {
    let proto_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto");
    let mut child = Command::new("protoc")
        .arg(format!("--proto_path={proto_dir}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run protoc (Debian package protobuf-compiler)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("feed protoc");
    let output = child.wait_with_output().expect("protoc output");
    assert!(
        output.status.success(),
        "protoc {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Decodes one binary message of `version` to protobuf text format with `protoc --decode`.
pub fn protoc_decode(version: flow_proto::SchemaVersion, message: &[u8]) -> String {
    let type_name = format!(
        "flowpipeline.v{}.{}",
        version.number,
        version.message_name()
    );
    let file = version.proto_file_name();
    String::from_utf8(protoc(&[&format!("--decode={type_name}"), &file], message))
        .expect("text format")
}

/// Decodes many binary messages of `version` with one `protoc --decode` run (one run
/// per message costs a process each). The messages become the repeated field 1 of a
/// wrapper message, declared in a temporary `.proto` that imports the schema; the
/// result is each message's text format, in order, as [`protoc_decode`] prints it.
pub fn protoc_decode_many(version: flow_proto::SchemaVersion, messages: &[&[u8]]) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let wrapper = format!(
        "syntax = \"proto3\";\nimport \"{}\";\nmessage Batch {{ repeated flowpipeline.v{}.{} flows = 1; }}\n",
        version.proto_file_name(),
        version.number,
        version.message_name()
    );
    std::fs::write(dir.path().join("batch.proto"), wrapper).expect("write the wrapper .proto");
    let mut input = Vec::new();
    for message in messages {
        input.push(0x0a); // field 1, length-delimited
        let mut len = message.len();
        while len >= 0x80 {
            input.push((len as u8) | 0x80);
            len >>= 7;
        }
        input.push(len as u8);
        input.extend_from_slice(message);
    }
    let include = format!("--proto_path={}", dir.path().display());
    let text = String::from_utf8(protoc(&[&include, "--decode=Batch", "batch.proto"], &input))
        .expect("text format");
    // `flows {` opens a message, `}` in the first column closes it; fields are indented by 2.
    let mut decoded = Vec::with_capacity(messages.len());
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (line, current.as_mut()) {
            ("flows {", None) => current = Some(String::new()),
            ("}", Some(_)) => decoded.extend(current.take()),
            (field, Some(message)) => {
                message.push_str(field.strip_prefix("  ").unwrap_or(field));
                message.push('\n');
            }
            (other, None) => panic!("unexpected protoc output line {other:?}"),
        }
    }
    assert_eq!(
        decoded.len(),
        messages.len(),
        "protoc decoded every message"
    );
    decoded
}

/// Encodes protobuf text format back to binary with `protoc --encode`.
pub fn protoc_encode(version: flow_proto::SchemaVersion, text: &str) -> Vec<u8> {
    let type_name = format!(
        "flowpipeline.v{}.{}",
        version.number,
        version.message_name()
    );
    let file = version.proto_file_name();
    protoc(&[&format!("--encode={type_name}"), &file], text.as_bytes())
}

/// Splits a length-delimited batch into its messages' bytes (the framing only;
/// the messages themselves are for an independent decoder).
pub fn split_length_delimited(mut batch: &[u8]) -> Vec<&[u8]> {
    let mut messages = Vec::new();
    while !batch.is_empty() {
        let (mut len, mut shift, mut used) = (0usize, 0, 0);
        loop {
            let byte = batch[used];
            used += 1;
            len |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        messages.push(&batch[used..used + len]);
        batch = &batch[used + len..];
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_varint_framing() {
        let long = vec![7u8; 200];
        let mut batch = vec![2, 1, 2, 0];
        batch.extend([200, 1]);
        batch.extend(&long);
        assert_eq!(
            split_length_delimited(&batch),
            vec![&[1u8, 2][..], &[][..], &long[..]]
        );
    }
}
