//! Decoder-level tests: datagrams built byte by byte for each edge case, and
//! property tests (random flows round-trip through v9 and IPFIX; arbitrary bytes never panic).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use flow_proto::FlowMessage;
use proptest::prelude::*;

use super::*;
use crate::decode::{DecodeCounters, DecodeOptions, Flows, TimestampSource, address_bytes};

const EXPORTER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const RECEIVED: u64 = 1_700_000_100;

/// Builds NetFlow v9 and IPFIX messages set by set.
struct Message {
    version: u16,
    domain: u32,
    sets: Vec<u8>,
}

impl Message {
    fn v9() -> Self {
        Message {
            version: 9,
            domain: 0,
            sets: Vec::new(),
        }
    }

    fn ipfix() -> Self {
        Message {
            version: 10,
            domain: 0,
            sets: Vec::new(),
        }
    }

    fn domain(mut self, domain: u32) -> Self {
        self.domain = domain;
        self
    }

    fn set(mut self, id: u16, content: &[u8]) -> Self {
        self.sets.extend(id.to_be_bytes());
        self.sets.extend((content.len() as u16 + 4).to_be_bytes());
        self.sets.extend(content);
        self
    }

    /// A data template: id then (element, length) pairs.
    fn template(self, id: u16, fields: &[(u16, u16)]) -> Self {
        let set_id = if self.version == 9 { 0 } else { 2 };
        let mut content = Vec::new();
        content.extend(id.to_be_bytes());
        content.extend((fields.len() as u16).to_be_bytes());
        for (element, length) in fields {
            content.extend(element.to_be_bytes());
            content.extend(length.to_be_bytes());
        }
        self.set(set_id, &content)
    }

    /// An options template with one scope field (v9: system; IPFIX: observation domain id).
    fn options_template(self, id: u16, fields: &[(u16, u16)]) -> Self {
        let mut content = Vec::new();
        content.extend(id.to_be_bytes());
        let set_id = if self.version == 9 {
            content.extend(4u16.to_be_bytes());
            content.extend((fields.len() as u16 * 4).to_be_bytes());
            content.extend([0, 1, 0, 4]);
            1
        } else {
            content.extend((fields.len() as u16 + 1).to_be_bytes());
            content.extend(1u16.to_be_bytes());
            content.extend([0, 149, 0, 4]);
            3
        };
        for (element, length) in fields {
            content.extend(element.to_be_bytes());
            content.extend(length.to_be_bytes());
        }
        self.set(set_id, &content)
    }

    fn bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend(self.version.to_be_bytes());
        if self.version == 9 {
            bytes.extend(1u16.to_be_bytes()); // count: not checked
            bytes.extend(3_600_000u32.to_be_bytes()); // sysUptime: one hour
            bytes.extend(1_700_000_000u32.to_be_bytes());
        } else {
            bytes.extend((16 + self.sets.len() as u16).to_be_bytes());
            bytes.extend(1_700_000_000u32.to_be_bytes());
        }
        bytes.extend(77u32.to_be_bytes()); // sequence
        bytes.extend(self.domain.to_be_bytes());
        bytes.extend(&self.sets);
        bytes
    }
}

/// Runs datagrams through one decoder, as a listener would.
struct Harness {
    decoder: NetflowDecoder,
    options: DecodeOptions,
    counters: DecodeCounters,
    received: u64,
}

impl Harness {
    fn new() -> Self {
        Harness {
            decoder: NetflowDecoder::default(),
            options: DecodeOptions::default(),
            counters: DecodeCounters::default(),
            received: RECEIVED,
        }
    }

    fn decode(&mut self, payload: &[u8]) -> Result<Vec<FlowMessage>, NetflowError> {
        let datagram = Datagram {
            source: SocketAddr::new(IpAddr::V4(EXPORTER), 40000),
            received: self.received,
            payload,
        };
        let mut flows = Flows::default();
        self.decoder
            .decode(&datagram, &self.options, &mut flows, &mut self.counters)
            .map(|()| flows.take())
    }
}

fn be(value: u64, length: usize) -> Vec<u8> {
    value.to_be_bytes()[8 - length..].to_vec()
}

fn v4(address: [u8; 4]) -> Vec<u8> {
    address_bytes(IpAddr::V4(Ipv4Addr::from(address)))
}

#[test]
fn truncated_headers_are_errors() {
    let mut harness = Harness::new();
    for message in [
        Message::v9().bytes(),
        Message::ipfix().bytes(),
        v5_datagram(1, 0),
    ] {
        for length in 0..message.len().min(24) {
            let result = harness.decode(&message[..length]);
            let error = result.expect_err("a truncated header decodes to nothing");
            assert!(
                ["truncated", "bad-length"].contains(&error.kind()),
                "{length}: {error}"
            );
        }
    }
    assert_eq!(
        harness.decode(&[0, 7, 0, 0]),
        Err(NetflowError::BadVersion(7))
    );
}

#[test]
fn set_lengths_out_of_bounds_are_errors() {
    let mut harness = Harness::new();
    for version in [9, 10] {
        let mut message = if version == 9 {
            Message::v9()
        } else {
            Message::ipfix()
        };
        message.sets = vec![1, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            harness.decode(&message.bytes()).unwrap_err().kind(),
            "bad-length"
        );
        message.sets = vec![1, 0, 0, 12, 0, 0, 0, 0];
        assert_eq!(
            harness.decode(&message.bytes()).unwrap_err().kind(),
            "bad-length"
        );
    }
    let mut message = Message::ipfix().bytes();
    message[3] += 1; // the header claims one byte more than the datagram has
    assert_eq!(harness.decode(&message).unwrap_err().kind(), "bad-length");
}

#[test]
fn absurd_templates_are_refused() {
    let mut harness = Harness::new();
    for message in [Message::v9(), Message::ipfix()] {
        let set_id = if message.version == 9 { 0 } else { 2 };
        let huge = message.set(set_id, &[1, 0, 0xff, 0xff, 0, 8, 0, 4]);
        assert_eq!(
            harness.decode(&huge.bytes()).unwrap_err().kind(),
            "bad-template"
        );
    }
    let low_id = Message::v9().template(255, &[(8, 4)]);
    assert_eq!(
        harness.decode(&low_id.bytes()).unwrap_err().kind(),
        "bad-template"
    );
    let variable_v9 = Message::v9().template(256, &[(8, 4), (82, 65535)]);
    assert_eq!(
        harness.decode(&variable_v9.bytes()).unwrap_err().kind(),
        "bad-template"
    );
    let short = Message::ipfix().set(2, &[1, 0, 0, 3, 0, 8, 0, 4]);
    assert_eq!(
        harness.decode(&short.bytes()).unwrap_err().kind(),
        "truncated"
    );
}

#[test]
fn data_before_its_template_is_counted() {
    let mut harness = Harness::new();
    let data = Message::v9().set(300, &[10, 0, 0, 1]);
    assert!(harness.decode(&data.bytes()).unwrap().is_empty());
    assert_eq!(harness.counters.template_misses, 1);
    harness
        .decode(&Message::v9().template(300, &[(8, 4)]).bytes())
        .unwrap();
    let flows = harness.decode(&data.bytes()).unwrap();
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].src_addr, v4([10, 0, 0, 1]));
    assert_eq!(flows[0].etype, 0x0800);
    let other_domain = Message::v9().domain(5).set(300, &[10, 0, 0, 1]);
    assert!(harness.decode(&other_domain.bytes()).unwrap().is_empty());
    assert_eq!(
        harness.counters.template_misses, 2,
        "templates are per source id"
    );
}

#[test]
fn data_before_its_template_is_held_when_asked_and_decoded_when_it_comes() {
    for message in [Message::v9, Message::ipfix] {
        let mut harness = Harness::new();
        harness.options.hold_early_data_seconds = 5;
        let data = message().set(300, &[10, 0, 0, 1, 10, 0, 0, 2]);
        assert!(harness.decode(&data.bytes()).unwrap().is_empty());
        assert_eq!(
            (
                harness.counters.template_misses,
                harness.counters.early_sets_held
            ),
            (1, 1)
        );
        harness.received += 5;
        let flows = harness
            .decode(&message().template(300, &[(8, 4)]).bytes())
            .unwrap();
        let sources: Vec<&[u8]> = flows.iter().map(|f| f.src_addr.as_slice()).collect();
        assert_eq!(sources, [v4([10, 0, 0, 1]), v4([10, 0, 0, 2])]);
        assert_eq!(harness.counters.early_sets_decoded, 1);
        assert_eq!(harness.counters.early_sets_dropped, 0);
        // Decoded once: the template's next datagram brings nothing more.
        assert!(
            harness
                .decode(&message().template(300, &[(8, 4)]).bytes())
                .unwrap()
                .is_empty()
        );
    }
}

#[test]
fn held_data_waits_for_its_own_template_only_and_expires() {
    let mut harness = Harness::new();
    harness.options.hold_early_data_seconds = 2;
    harness
        .decode(&Message::v9().set(300, &[10, 0, 0, 1]).bytes())
        .unwrap();
    // Another template, and another domain's template of the same id, release nothing.
    let other = harness
        .decode(&Message::v9().template(301, &[(8, 4)]).bytes())
        .unwrap();
    let other_domain = harness
        .decode(&Message::v9().domain(5).template(300, &[(8, 4)]).bytes())
        .unwrap();
    assert!(other.is_empty() && other_domain.is_empty());
    harness.received += 3;
    let late = harness
        .decode(&Message::v9().template(300, &[(8, 4)]).bytes())
        .unwrap();
    assert!(late.is_empty(), "the template came after the hold");
    assert_eq!(
        (
            harness.counters.early_sets_held,
            harness.counters.early_sets_dropped
        ),
        (1, 1)
    );
}

#[test]
fn without_the_hold_early_data_is_only_counted() {
    let mut harness = Harness::new();
    harness
        .decode(&Message::v9().set(300, &[10, 0, 0, 1]).bytes())
        .unwrap();
    let flows = harness
        .decode(&Message::v9().template(300, &[(8, 4)]).bytes())
        .unwrap();
    assert!(flows.is_empty());
    assert_eq!(harness.counters.template_misses, 1);
    assert_eq!(harness.counters.early_sets_held, 0);
}

#[test]
fn a_template_after_its_data_in_the_same_datagram_releases_it() {
    let mut harness = Harness::new();
    harness.options.hold_early_data_seconds = 1;
    let datagram = Message::ipfix()
        .set(300, &[10, 0, 0, 1])
        .template(300, &[(8, 4)]);
    let flows = harness.decode(&datagram.bytes()).unwrap();
    assert_eq!(flows.len(), 1);
    assert_eq!(harness.counters.early_sets_decoded, 1);
}

#[test]
fn v9_fields_and_times() {
    let mut harness = Harness::new();
    let template = [
        (27, 16),
        (28, 16),
        (7, 2),
        (11, 2),
        (4, 1),
        (1, 4),
        (2, 4),
        (22, 4),
        (21, 4),
        (62, 16),
        (61, 1),
    ];
    let src = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    let dst = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
    let mut record = Vec::new();
    record.extend(src.octets());
    record.extend(dst.octets());
    record.extend([0, 80, 1, 187, 6]);
    record.extend(be(1500, 4));
    record.extend(be(3, 4));
    record.extend(be(3_590_000, 4)); // first: 10 s before export
    record.extend(be(3_599_000, 4)); // last: 1 s before export
    record.extend(dst.octets());
    record.push(1);
    record.extend([0, 0, 0]); // padding
    let message = Message::v9().template(400, &template).set(400, &record);
    let flows = harness.decode(&message.bytes()).unwrap();
    assert_eq!(flows.len(), 1);
    let flow = &flows[0];
    assert_eq!(flow.src_addr, src.octets());
    assert_eq!(flow.next_hop, dst.octets());
    assert_eq!((flow.src_port, flow.dst_port, flow.proto), (80, 443, 6));
    assert_eq!((flow.bytes, flow.packets), (1500, 3));
    assert_eq!(
        (flow.flow_start, flow.flow_end),
        (1_699_999_990, 1_699_999_999)
    );
    assert_eq!(flow.etype, 0x86dd);
    assert_eq!(flow.time_received, RECEIVED);
    assert_eq!(flow.sequence_number, 77);
    assert_eq!(flow.sampling_rate, 1);
    assert_eq!(flow.exporter_address, v4(EXPORTER.octets()));
    assert_eq!(flow.flow_direction(), flow_proto::v1::FlowDirection::Egress);

    harness.options.timestamps = TimestampSource::Flow;
    let flows = harness
        .decode(&Message::v9().set(400, &record).bytes())
        .unwrap();
    assert_eq!(flows[0].time_received, 1_699_999_999);
}

#[test]
fn ipfix_withdrawal_forgets_templates() {
    let mut harness = Harness::new();
    let setup = Message::ipfix()
        .template(256, &[(8, 4)])
        .template(257, &[(12, 4)]);
    harness.decode(&setup.bytes()).unwrap();
    let data = Message::ipfix()
        .set(256, &[10, 0, 0, 1])
        .set(257, &[10, 0, 0, 2]);
    assert_eq!(harness.decode(&data.bytes()).unwrap().len(), 2);

    harness
        .decode(&Message::ipfix().set(2, &[1, 0, 0, 0]).bytes())
        .unwrap();
    assert_eq!(harness.decode(&data.bytes()).unwrap().len(), 1);
    assert_eq!(harness.counters.template_misses, 1);

    let options = Message::ipfix().options_template(258, &[(34, 4)]);
    harness.decode(&options.bytes()).unwrap();
    harness
        .decode(&Message::ipfix().set(2, &[0, 2, 0, 0]).bytes())
        .unwrap();
    assert!(harness.decode(&data.bytes()).unwrap().is_empty());
    assert_eq!(harness.counters.template_misses, 3);

    // Withdrawing all data templates left the options template, until its own withdrawal.
    let options_data = Message::ipfix().set(258, &[0, 0, 0, 0, 0, 0, 0, 50]);
    harness.decode(&options_data.bytes()).unwrap();
    assert_eq!(harness.counters.template_misses, 3);
    harness
        .decode(&Message::ipfix().set(3, &[0, 3, 0, 0]).bytes())
        .unwrap();
    harness.decode(&options_data.bytes()).unwrap();
    assert_eq!(harness.counters.template_misses, 4);
}

#[test]
fn templates_are_replaced_and_expire() {
    let mut harness = Harness::new();
    harness
        .decode(&Message::ipfix().template(256, &[(8, 4)]).bytes())
        .unwrap();
    harness
        .decode(&Message::ipfix().template(256, &[(12, 4)]).bytes())
        .unwrap();
    let data = Message::ipfix().set(256, &[10, 0, 0, 1]);
    let flows = harness.decode(&data.bytes()).unwrap();
    assert_eq!((flows[0].src_addr.len(), flows[0].dst_addr.len()), (0, 16));

    let expiry = TemplateLimits::default().expiry_seconds;
    harness.decoder.expire(RECEIVED + expiry);
    assert_eq!(
        harness.decode(&data.bytes()).unwrap().len(),
        1,
        "still fresh"
    );
    harness.decoder.expire(RECEIVED + expiry + 1);
    assert!(harness.decode(&data.bytes()).unwrap().is_empty());
    assert_eq!(harness.counters.template_misses, 1);
}

#[test]
fn a_repeated_template_is_refreshed_and_a_changed_one_replaced() {
    for version in [Message::v9, Message::ipfix] {
        let mut harness = Harness::new();
        let template = version().template(256, &[(8, 4)]);
        harness.decode(&template.bytes()).unwrap();
        let expiry = TemplateLimits::default().expiry_seconds;
        harness.received = RECEIVED + expiry;
        harness.decode(&template.bytes()).unwrap();
        harness.decoder.expire(RECEIVED + expiry + 1);
        let data = version().set(256, &[10, 0, 0, 1]);
        let flows = harness.decode(&data.bytes()).unwrap();
        assert_eq!(flows.len(), 1, "the repeat refreshed it");
        assert_eq!(flows[0].src_addr, v4([10, 0, 0, 1]));

        harness
            .decode(&version().template(256, &[(12, 4)]).bytes())
            .unwrap();
        let flows = harness.decode(&data.bytes()).unwrap();
        assert_eq!((flows[0].src_addr.len(), flows[0].dst_addr.len()), (0, 16));
    }

    // The same fields, as an options template: no longer a data template.
    let mut harness = Harness::new();
    let fields = [(149, 4), (34, 4)];
    harness
        .decode(&Message::ipfix().template(256, &fields).bytes())
        .unwrap();
    let data = Message::ipfix().set(256, &[0, 0, 0, 0, 0, 0, 0, 50]);
    assert_eq!(harness.decode(&data.bytes()).unwrap().len(), 1);
    harness
        .decode(&Message::ipfix().options_template(256, &fields[1..]).bytes())
        .unwrap();
    assert!(harness.decode(&data.bytes()).unwrap().is_empty());
}

#[test]
fn template_count_is_bounded() {
    let mut harness = Harness::new();
    harness.decoder = NetflowDecoder::new(TemplateLimits {
        per_exporter: 2,
        total: 10,
        expiry_seconds: 60,
    });
    let message = Message::ipfix()
        .template(256, &[(8, 4)])
        .template(257, &[(8, 4)]);
    harness.decode(&message.bytes()).unwrap();
    let third = Message::ipfix().template(258, &[(8, 4)]);
    assert_eq!(
        harness.decode(&third.bytes()),
        Err(NetflowError::TemplateLimit)
    );
    let replacement = Message::ipfix().template(257, &[(12, 4)]);
    harness.decode(&replacement.bytes()).unwrap();
}

#[test]
fn records_per_set_are_bounded() {
    let mut harness = Harness::new();
    harness
        .decode(&Message::v9().template(256, &[(4, 1)]).bytes())
        .unwrap();
    let fine = Message::v9().set(256, &[6; data::MAX_RECORDS_PER_SET]);
    assert_eq!(
        harness.decode(&fine.bytes()).unwrap().len(),
        data::MAX_RECORDS_PER_SET
    );
    let too_many = Message::v9().set(256, &[6; data::MAX_RECORDS_PER_SET + 1]);
    assert_eq!(
        harness.decode(&too_many.bytes()),
        Err(NetflowError::TooManyRecords)
    );
}

#[test]
fn sampling_rates_follow_the_sampler_id_of_each_flow() {
    let mut harness = Harness::new();
    harness.options.default_sampling_rate = 0;
    // Cisco NCS: two samplers announced in options, flows name theirs; options,
    // templates and data all in one datagram.
    let message = Message::v9()
        .options_template(257, &[(48, 2), (50, 4)])
        .template(258, &[(8, 4), (48, 2)])
        .set(
            257,
            &[
                0, 0, 0, 0, 0, 1, 0, 0, 0, 100, 0, 0, 0, 0, 0, 2, 0, 0, 3, 232,
            ],
        )
        .set(
            258,
            &[10, 0, 0, 1, 0, 1, 10, 0, 0, 2, 0, 2, 10, 0, 0, 3, 0, 9],
        );
    let flows = harness.decode(&message.bytes()).unwrap();
    let rates: Vec<u64> = flows.iter().map(|flow| flow.sampling_rate).collect();
    assert_eq!(
        rates,
        [100, 1000, 1000],
        "unknown sampler 9: the latest rate"
    );

    let mut fresh = Harness::new();
    fresh.options.default_sampling_rate = 0;
    let data = Message::v9()
        .template(258, &[(8, 4), (48, 2)])
        .set(258, &[10, 0, 0, 1, 0, 1]);
    assert_eq!(
        fresh.decode(&data.bytes()).unwrap()[0].sampling_rate,
        1,
        "never 0"
    );
}

#[test]
fn ipfix_sampling_from_options_and_from_records() {
    let mut harness = Harness::new();
    harness.options.default_sampling_rate = 7;
    let data_template = Message::ipfix().template(300, &[(8, 4), (302, 4)]);
    harness.decode(&data_template.bytes()).unwrap();
    let data = Message::ipfix().set(300, &[10, 0, 0, 1, 0, 0, 0, 4]);
    assert_eq!(harness.decode(&data.bytes()).unwrap()[0].sampling_rate, 7);

    // selectorId 4: one packet in every 1 + 63.
    let options = Message::ipfix()
        .options_template(301, &[(302, 4), (305, 4), (306, 4)])
        .set(301, &[0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 63]);
    harness.decode(&options.bytes()).unwrap();
    assert_eq!(harness.decode(&data.bytes()).unwrap()[0].sampling_rate, 64);

    // Rates expire like templates: once forgotten, the default applies again.
    let expiry = TemplateLimits::default().expiry_seconds;
    harness.decoder.expire(RECEIVED + expiry + 1);
    harness.decode(&data_template.bytes()).unwrap();
    assert_eq!(harness.decode(&data.bytes()).unwrap()[0].sampling_rate, 7);

    // MikroTik: samplingInterval written little-endian.
    let mikrotik = Message::ipfix()
        .domain(3)
        .options_template(301, &[(34, 4)])
        .set(301, &[0, 0, 0, 3, 100, 0, 0, 0])
        .template(300, &[(8, 4)])
        .set(300, &[10, 0, 0, 1]);
    assert_eq!(
        harness.decode(&mikrotik.bytes()).unwrap()[0].sampling_rate,
        100
    );

    // Huawei: the sampling interval is a field of the data record itself.
    let huawei = Message::ipfix()
        .domain(4)
        .template(300, &[(8, 4), (34, 4)])
        .set(300, &[10, 0, 0, 1, 0, 0, 0, 200]);
    assert_eq!(
        harness.decode(&huawei.bytes()).unwrap()[0].sampling_rate,
        200
    );
}

#[test]
fn ipfix_enterprise_and_variable_length_fields_are_skipped() {
    let mut harness = Harness::new();
    let mut template = Vec::new();
    template.extend([1, 0, 0, 4]); // id 256, 4 fields
    template.extend([0x80, 1, 0, 4, 0, 0, 0x23, 0x8b]); // enterprise 9099, element 1
    template.extend([0, 82, 0xff, 0xff]); // interfaceName, variable length
    template.extend([0, 7, 0, 2, 0, 11, 0, 2]);
    let mut record = vec![0xde, 0xad, 0xbe, 0xef];
    record.extend([3, b'e', b't', b'h']);
    record.extend([0, 22, 0, 23]);
    record.extend([0xde, 0xad, 0xbe, 0xef, 255, 0, 1, b'x', 0, 25, 0, 26]);
    let message = Message::ipfix().set(2, &template).set(256, &record);
    let flows = harness.decode(&message.bytes()).unwrap();
    let ports: Vec<(u32, u32)> = flows
        .iter()
        .map(|flow| (flow.src_port, flow.dst_port))
        .collect();
    assert_eq!(ports, [(22, 23), (25, 26)]);
}

#[test]
fn ipfix_times_from_boot_time_in_options() {
    let mut harness = Harness::new();
    let message = Message::ipfix()
        .options_template(260, &[(160, 8)])
        .set(260, &[0, 0, 0, 0, 0, 0, 1, 0x8b, 0xcf, 0xe5, 0x68, 0x00])
        .template(261, &[(22, 4), (21, 4), (8, 4)])
        .set(261, &[0, 0, 0x03, 0xe8, 0, 0, 0x07, 0xd0, 10, 0, 0, 1]);
    let flows = harness.decode(&message.bytes()).unwrap();
    // Booted at 1,700,000,000,000 ms; started 1 s and ended 2 s later.
    assert_eq!(
        (flows[0].flow_start, flows[0].flow_end),
        (1_700_000_001, 1_700_000_002)
    );
}

fn v5_datagram(count: u16, sampling: u16) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend(5u16.to_be_bytes());
    bytes.extend(count.to_be_bytes());
    bytes.extend(3_600_000u32.to_be_bytes());
    bytes.extend(1_700_000_000u32.to_be_bytes());
    bytes.extend(500_000_000u32.to_be_bytes());
    bytes.extend(1234u32.to_be_bytes());
    bytes.extend([1, 2]);
    bytes.extend(sampling.to_be_bytes());
    for index in 0..count {
        bytes.extend([10, 0, 0, index as u8, 10, 0, 1, 1, 10, 0, 2, 1]);
        bytes.extend([0, 3, 0, 4]);
        bytes.extend(be(5, 4));
        bytes.extend(be(500, 4));
        bytes.extend(be(3_000_000, 4));
        bytes.extend(be(3_599_500, 4));
        bytes.extend([0, 53, 4, 1, 0, 0x12, 17, 0xb8]);
        bytes.extend([0xfd, 0xe8, 0, 42, 24, 16, 0, 0]);
    }
    bytes
}

#[test]
fn v5_records() {
    let mut harness = Harness::new();
    let flows = harness.decode(&v5_datagram(2, 0x4000 | 100)).unwrap();
    assert_eq!(flows.len(), 2);
    let flow = &flows[1];
    assert_eq!(flow.src_addr, v4([10, 0, 0, 1]));
    assert_eq!(flow.next_hop, v4([10, 0, 2, 1]));
    assert_eq!((flow.in_if, flow.out_if), (3, 4));
    assert_eq!((flow.packets, flow.bytes), (5, 500));
    assert_eq!((flow.src_port, flow.dst_port), (53, 1025));
    assert_eq!((flow.tcp_flags, flow.proto, flow.ip_tos), (0x12, 17, 0xb8));
    assert_eq!((flow.src_as, flow.dst_as), (65000, 42));
    assert_eq!((flow.src_net_mask, flow.dst_net_mask), (24, 16));
    assert_eq!(flow.sampling_rate, 100);
    assert_eq!(flow.observation_domain, 0x0102);
    assert_eq!(flow.sequence_number, 1234);
    // Exported at 1,700,000,000.5 s, 3,600 s after boot.
    assert_eq!(
        (flow.flow_start, flow.flow_end),
        (1_699_999_400, 1_700_000_000)
    );

    let mut short = v5_datagram(2, 0);
    short.pop();
    assert_eq!(
        harness.decode(&short),
        Err(NetflowError::Truncated("records"))
    );
    assert_eq!(
        harness.decode(&v5_datagram(31, 0)).unwrap_err().kind(),
        "bad-length"
    );
}

/// A flow with the fields a round trip must carry.
#[derive(Debug, Clone)]
struct TestFlow {
    src: IpAddr,
    dst: IpAddr,
    src_port: u16,
    dst_port: u16,
    proto: u8,
    bytes: u64,
    packets: u32,
    in_if: u32,
    out_if: u32,
    src_as: u32,
    dst_as: u32,
    tcp_flags: u8,
    src_vlan: u16,
}

fn test_flow() -> impl Strategy<Value = TestFlow> {
    let address = prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
    ];
    (
        (
            address.clone(),
            address,
            any::<u16>(),
            any::<u16>(),
            any::<u8>(),
        ),
        (1..u64::MAX, 1..u32::MAX, 1..u32::MAX, 1..u32::MAX),
        (1..u32::MAX, 1..u32::MAX, 1..u8::MAX, 1..4095u16),
    )
        .prop_map(
            |(
                (src, dst, src_port, dst_port, proto),
                (bytes, packets, in_if, out_if),
                (src_as, dst_as, tcp_flags, src_vlan),
            )| {
                // Both addresses of one flow share a family.
                let dst = match (src, dst) {
                    (IpAddr::V4(_), IpAddr::V6(v6)) => {
                        IpAddr::V4(Ipv4Addr::from_bits(v6.to_bits() as u32))
                    }
                    (IpAddr::V6(_), IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
                    _ => dst,
                };
                TestFlow {
                    src,
                    dst,
                    src_port,
                    dst_port,
                    proto,
                    bytes,
                    packets,
                    in_if,
                    out_if,
                    src_as,
                    dst_as,
                    tcp_flags,
                    src_vlan,
                }
            },
        )
}

/// Encodes flows of one address family with a template of that family.
fn encode_flows(version: u16, template_id: u16, flows: &[TestFlow]) -> Vec<u8> {
    let ipv4 = matches!(flows.first().map(|flow| flow.src), Some(IpAddr::V4(_)));
    let (address_length, src, dst) = if ipv4 { (4, 8, 12) } else { (16, 27, 28) };
    let template = [
        (src, address_length),
        (dst, address_length),
        (7, 2),
        (11, 2),
        (4, 1),
        (1, 8),
        (2, 4),
        (10, 4),
        (14, 4),
        (16, 4),
        (17, 4),
        (6, 1),
        (58, 2),
    ];
    let mut records = Vec::new();
    for flow in flows {
        for address in [flow.src, flow.dst] {
            match address {
                IpAddr::V4(v4) => records.extend(v4.octets()),
                IpAddr::V6(v6) => records.extend(v6.octets()),
            }
        }
        records.extend(flow.src_port.to_be_bytes());
        records.extend(flow.dst_port.to_be_bytes());
        records.push(flow.proto);
        records.extend(flow.bytes.to_be_bytes());
        records.extend(flow.packets.to_be_bytes());
        records.extend(flow.in_if.to_be_bytes());
        records.extend(flow.out_if.to_be_bytes());
        records.extend(flow.src_as.to_be_bytes());
        records.extend(flow.dst_as.to_be_bytes());
        records.push(flow.tcp_flags);
        records.extend(flow.src_vlan.to_be_bytes());
    }
    let message = if version == 9 {
        Message::v9()
    } else {
        Message::ipfix()
    };
    message
        .template(template_id, &template)
        .set(template_id, &records)
        .bytes()
}

proptest! {
    #[test]
    fn random_flows_round_trip(
        version in prop_oneof![Just(9u16), Just(10u16)],
        template_id in 256u16..,
        flows in prop::collection::vec(test_flow(), 1..20),
    ) {
        let family = flows[0].src.is_ipv4();
        let flows: Vec<TestFlow> = flows.into_iter().filter(|flow| flow.src.is_ipv4() == family).collect();
        let mut harness = Harness::new();
        let decoded = harness.decode(&encode_flows(version, template_id, &flows)).unwrap();
        prop_assert_eq!(decoded.len(), flows.len());
        for (flow, decoded) in flows.iter().zip(&decoded) {
            prop_assert_eq!(&decoded.src_addr, &address_bytes(flow.src));
            prop_assert_eq!(&decoded.dst_addr, &address_bytes(flow.dst));
            prop_assert_eq!(decoded.src_port, u32::from(flow.src_port));
            prop_assert_eq!(decoded.dst_port, u32::from(flow.dst_port));
            prop_assert_eq!(decoded.proto, u32::from(flow.proto));
            prop_assert_eq!(decoded.bytes, flow.bytes);
            prop_assert_eq!(decoded.packets, u64::from(flow.packets));
            prop_assert_eq!((decoded.in_if, decoded.out_if), (flow.in_if, flow.out_if));
            prop_assert_eq!((decoded.src_as, decoded.dst_as), (flow.src_as, flow.dst_as));
            prop_assert_eq!(decoded.tcp_flags, u32::from(flow.tcp_flags));
            prop_assert_eq!(decoded.src_vlan, u32::from(flow.src_vlan));
            prop_assert_eq!(decoded.etype, if family { 0x0800 } else { 0x86dd });
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        version in prop_oneof![Just(5u16), Just(9u16), Just(10u16), any::<u16>()],
        body in prop::collection::vec(any::<u8>(), 0..2000),
        flows in prop::collection::vec(test_flow(), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut harness = Harness::new();
        // Known templates first, so that random data sets reach the record walker.
        let _ = harness.decode(&encode_flows(9, 256, &flows));
        let _ = harness.decode(&encode_flows(10, 256, &flows));
        let mut payload = version.to_be_bytes().to_vec();
        payload.extend(&body);
        let _ = harness.decode(&payload);
        // A valid datagram cut anywhere, and one with random bytes after a valid header.
        let valid = encode_flows(if version == 9 { 9 } else { 10 }, 256, &flows);
        let _ = harness.decode(&valid[..cut.index(valid.len() + 1)]);
        let mut mixed = valid[..20].to_vec();
        mixed.extend(&body);
        let _ = harness.decode(&mixed);
    }
}
