//! NetFlow v5: a 24-byte header and up to 30 records of a fixed 48-byte layout,
//! decoded through a template compiled once from that layout.

use super::fields::{ExportContext, Record};
use super::template::{FieldSpec, Template, TemplateKind};
use super::{NetflowError, Output, exporter_of, read_u16, read_u32};
use crate::decode::address_octets;
use crate::decode::{Datagram, TimestampSource};

const HEADER_LENGTH: usize = 24;
const RECORD_LENGTH: usize = 48;
/// Cisco's documented maximum of records per datagram.
const MAX_RECORDS: usize = 30;

/// The v5 record layout as (information element, length); 210 is paddingOctets.
const LAYOUT: [(u16, u16); 20] = [
    (8, 4),   // srcaddr
    (12, 4),  // dstaddr
    (15, 4),  // nexthop
    (10, 2),  // input
    (14, 2),  // output
    (2, 4),   // dPkts
    (1, 4),   // dOctets
    (22, 4),  // First (sysUptime ms)
    (21, 4),  // Last (sysUptime ms)
    (7, 2),   // srcport
    (11, 2),  // dstport
    (210, 1), // pad1
    (6, 1),   // tcp_flags
    (4, 1),   // prot
    (5, 1),   // tos
    (16, 2),  // src_as
    (17, 2),  // dst_as
    (9, 1),   // src_mask
    (13, 1),  // dst_mask
    (210, 2), // pad2
];

/// The compiled v5 record layout.
pub(super) fn template() -> Template {
    let fields = LAYOUT.map(|(element, length)| FieldSpec {
        element,
        length,
        standard: true,
    });
    Template::compile(TemplateKind::Data, &fields).expect("the v5 layout is a valid template")
}

pub(super) fn decode(
    template: &Template,
    datagram: &Datagram,
    output: &mut Output,
) -> Result<(), NetflowError> {
    let payload = datagram.payload;
    let (header, records) = payload
        .split_at_checked(HEADER_LENGTH)
        .ok_or(NetflowError::Truncated("header"))?;
    let field = |offset| read_u32(header, offset).unwrap_or_default();
    let count = usize::from(read_u16(header, 2).unwrap_or_default());
    if count == 0 || count > MAX_RECORDS {
        return Err(NetflowError::BadLength("record count"));
    }
    let records = records
        .get(..count * RECORD_LENGTH)
        .ok_or(NetflowError::Truncated("records"))?;
    let (sys_uptime, unix_secs, unix_nsecs) = (field(4), field(8), field(12));
    let export_millis = u64::from(unix_secs) * 1000 + u64::from(unix_nsecs) / 1_000_000;
    let [engine_type, engine_id, sampling_high, sampling_low] = field(20).to_be_bytes();
    // Top 2 bits: sampling mode; low 14 bits: the interval.
    let interval = u64::from(u16::from_be_bytes([sampling_high, sampling_low]) & 0x3fff);
    let sampling_rate = if interval > 0 {
        interval
    } else {
        output.options.default_sampling_rate.max(1)
    };
    let context = ExportContext {
        exporter: address_octets(exporter_of(datagram)),
        // v5's engine type and id are what v9's source id replaced (RFC 3954 §5.1).
        observation_domain: u32::from(u16::from_be_bytes([engine_type, engine_id])),
        sequence_number: field(16),
        export_millis,
        boot_millis: export_millis.checked_sub(u64::from(sys_uptime)),
        received: datagram.received,
    };
    let time_from_flow = output.options.timestamps == TimestampSource::Flow;
    let mut record = Record::default();
    // Each record is read from the rest of the records: the bytes after it
    // make most of its values a single load (see `Template::read_record`).
    for start in (0..records.len()).step_by(RECORD_LENGTH) {
        let rest = records.get(start..).unwrap_or_default();
        if template.read_record(rest, &mut record).is_none() {
            output.counters.skipped_records += 1;
            continue;
        }
        record.push_flow(output.flows, &context, sampling_rate, time_from_flow);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_48_bytes_of_known_fields() {
        let template = template();
        assert_eq!(template.min_record_length, RECORD_LENGTH);
        let record: Vec<u8> = (1..=48).collect();
        let mut read = Record::default();
        assert_eq!(
            template.read_record(&record, &mut read),
            Some(RECORD_LENGTH)
        );
        assert_ne!(read, Record::default());
    }
}
