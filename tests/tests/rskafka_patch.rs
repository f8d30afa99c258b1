//! The vendored rskafka's patch (vendor/README.md) is in effect and writes what rskafka's
//! own, unpatched, reader reads back. Without it nothing else would fail: the agent would
//! only be slower, which the pipeline benchmark shows and no test may time. rskafka's record
//! batch types are public under its `unstable-fuzzing` feature, which tests alone turn on.

#![allow(clippy::unwrap_used)]

use std::io::Cursor;

use rskafka::protocol::record::{
    ControlBatchOrRecords, Record, RecordBatch, RecordBatchCompression, RecordBatchTimestampType,
    RecordHeader,
};
use rskafka::protocol::traits::{ReadType, WriteType};

/// Where a v2 record batch's records start: the fixed fields before them.
const RECORDS_OFFSET: usize = 61;
const LZ4_MAGIC: [u8; 4] = [0x04, 0x22, 0x4d, 0x18];
/// The LZ4 frame descriptor's flags: a checksum of each block, and of the whole content.
const BLOCK_CHECKSUM: u8 = 1 << 4;
const CONTENT_CHECKSUM: u8 = 1 << 2;

/// Records as the agent writes them (a large value, no key, no header), and with a key,
/// headers or no value, which the patch writes around the value.
fn records() -> Vec<Record> {
    let flows: Vec<u8> = (0..64 << 10).map(|i: u32| (i % 251) as u8).collect();
    vec![
        Record {
            timestamp_delta: 0,
            offset_delta: 0,
            key: None,
            value: Some(flows),
            headers: vec![],
        },
        Record {
            timestamp_delta: 7,
            offset_delta: 1,
            key: Some(b"exporter".to_vec()),
            value: Some(b"one flow".to_vec()),
            headers: vec![RecordHeader {
                key: "schema".to_owned(),
                value: b"v1".to_vec(),
            }],
        },
        Record {
            timestamp_delta: 9,
            offset_delta: 2,
            key: None,
            value: None,
            headers: vec![],
        },
    ]
}

fn batch(compression: RecordBatchCompression) -> RecordBatch {
    RecordBatch {
        base_offset: 0,
        partition_leader_epoch: 0,
        last_offset_delta: 2,
        first_timestamp: 1_764_806_400_000,
        max_timestamp: 1_764_806_400_009,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        records: ControlBatchOrRecords::Records(records()),
        compression,
        is_transactional: false,
        timestamp_type: RecordBatchTimestampType::CreateTime,
    }
}

fn written(batch: RecordBatch) -> Vec<u8> {
    let mut bytes = Vec::new();
    batch.write(&mut bytes).unwrap();
    bytes
}

#[test]
fn records_round_trip_through_the_unpatched_reader() {
    for compression in [
        RecordBatchCompression::NoCompression,
        RecordBatchCompression::Lz4,
    ] {
        let bytes = written(batch(compression));
        let read = RecordBatch::read(&mut Cursor::new(&bytes)).unwrap();
        assert_eq!(read, batch(compression), "{compression:?}");
    }
}

#[test]
fn lz4_frames_carry_no_checksum() {
    let bytes = written(batch(RecordBatchCompression::Lz4));
    let frame = &bytes[RECORDS_OFFSET..];
    assert_eq!(
        frame[..4],
        LZ4_MAGIC,
        "an LZ4 frame follows the batch's fields"
    );
    let flags = frame[4];
    assert_eq!(flags >> 6, 1, "LZ4 frame version 1: {flags:#010b}");
    assert_eq!(
        flags & (BLOCK_CHECKSUM | CONTENT_CHECKSUM),
        0,
        "no block or content checksum (vendor/rskafka.patch): {flags:#010b}"
    );
}
