//! sFlow version 5 (sflow.org/sflow_version_5.txt): flow samples and expanded
//! flow samples become flows; counter samples are counted, never produced.
//!
//! sFlow carries no flow state (no templates), so the decoder holds none. Every
//! length is checked against the datagram before it is used; an unknown record is
//! skipped by its length, as the specification asks of collectors.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flow_proto::FlowMessage;

use super::packet::{self, Headers};
use super::{
    Datagram, DecodeCounters, DecodeOptions, ExporterAddressSource, Flows, address_octets,
    set_address,
};

// Sample formats (enterprise 0).
const FLOW_SAMPLE: u32 = 1;
const COUNTER_SAMPLE: u32 = 2;
const EXPANDED_FLOW_SAMPLE: u32 = 3;
const EXPANDED_COUNTER_SAMPLE: u32 = 4;

// Flow record formats (enterprise 0).
const RAW_PACKET_HEADER: u32 = 1;
const ETHERNET_FRAME: u32 = 2;
const SAMPLED_IPV4: u32 = 3;
const SAMPLED_IPV6: u32 = 4;
const EXTENDED_SWITCH: u32 = 1001;
const EXTENDED_ROUTER: u32 = 1002;
const EXTENDED_GATEWAY: u32 = 1003;

// Header protocols of raw packet header records.
const HEADER_ETHERNET: u32 = 1;
const HEADER_IPV4: u32 = 11;
const HEADER_IPV6: u32 = 12;

/// The interface value sFlow uses for "the device itself" (locally originated or terminated).
const LOCAL_INTERFACE: u32 = 0x3fff_ffff;
/// The largest 802.1Q VLAN id.
const MAX_VLAN: u32 = 4095;
/// Forwarding status given to dropped packets, as NetFlow's "dropped, unknown" (Akvorado does the same).
const FORWARDING_STATUS_DROPPED: u32 = 128;

/// Why an sFlow datagram could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SflowError {
    /// The datagram ends inside the named structure.
    #[error("sFlow datagram truncated in {0}")]
    Truncated(&'static str),
    /// Not version 5.
    #[error("sFlow version {0} is not supported (only 5 is)")]
    Version(u32),
    /// The agent address type is neither IPv4 (1) nor IPv6 (2).
    #[error("sFlow agent address type {0} is unknown")]
    AddressType(u32),
}

impl SflowError {
    /// A short name for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SflowError::Truncated(_) => "truncated",
            SflowError::Version(_) => "bad-version",
            SflowError::AddressType(_) => "bad-address-type",
        }
    }
}

type Result<T> = std::result::Result<T, SflowError>;

/// A big-endian (XDR) cursor that reports which structure was cut short.
#[derive(Clone, Copy)]
struct Xdr<'a> {
    data: &'a [u8],
}

impl<'a> Xdr<'a> {
    fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        let (head, rest) = self
            .data
            .split_at_checked(n)
            .ok_or(SflowError::Truncated(what))?;
        self.data = rest;
        Ok(head)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// XDR opaque data is padded to a multiple of 4 bytes.
    fn opaque(&mut self, len: usize, what: &'static str) -> Result<&'a [u8]> {
        let padded = len.checked_add(3).ok_or(SflowError::Truncated(what))? & !3;
        Ok(&self.bytes(padded, what)?[..len])
    }

    fn address(&mut self, what: &'static str) -> Result<Option<IpAddr>> {
        match self.u32(what)? {
            0 => Ok(None),
            1 => {
                let b = self.bytes(4, what)?;
                Ok(Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]).into()))
            }
            2 => {
                let b: [u8; 16] = self
                    .bytes(16, what)?
                    .try_into()
                    .map_err(|_| SflowError::Truncated(what))?;
                Ok(Some(Ipv6Addr::from(b).into()))
            }
            other => Err(SflowError::AddressType(other)),
        }
    }

    /// A length-prefixed structure: its body, and the cursor moved past it.
    fn sized(&mut self, what: &'static str) -> Result<Xdr<'a>> {
        let len = self.u32(what)? as usize;
        Ok(Xdr {
            data: self.opaque(len, what)?,
        })
    }
}

/// The sFlow v5 decoder. Stateless: a datagram carries all it needs.
#[derive(Debug, Clone, Default)]
pub struct SflowDecoder;

/// What the datagram header says, shared by its samples.
struct Agent {
    exporter: [u8; 16],
    sub_agent_id: u32,
    sequence: u32,
}

impl SflowDecoder {
    /// Decodes one sFlow datagram, appending a flow per flow sample to `out`.
    /// On error, the flows of the samples before the bad one are kept.
    pub fn decode(
        &mut self,
        datagram: &Datagram<'_>,
        options: &DecodeOptions,
        out: &mut Flows,
        counters: &mut DecodeCounters,
    ) -> Result<()> {
        let mut xdr = Xdr {
            data: datagram.payload,
        };
        let version = xdr.u32("header")?;
        if version != 5 {
            return Err(SflowError::Version(version));
        }
        let agent_address = xdr.address("agent address")?;
        let sub_agent_id = xdr.u32("header")?;
        let sequence = xdr.u32("header")?;
        let _uptime = xdr.u32("header")?;
        let samples = xdr.u32("header")?;
        let exporter = match (options.exporter_address, agent_address) {
            (ExporterAddressSource::Packet, Some(agent)) => agent,
            _ => datagram.source.ip(),
        };
        let agent = Agent {
            exporter: address_octets(exporter),
            sub_agent_id,
            sequence,
        };
        // The count is the sender's word: the loop is bounded by the data, not by it.
        for _ in 0..samples {
            let format = xdr.u32("sample")?;
            let mut sample = xdr.sized("sample")?;
            let expanded = match (format >> 12, format & 0xfff) {
                (0, FLOW_SAMPLE) => false,
                (0, EXPANDED_FLOW_SAMPLE) => true,
                (0, COUNTER_SAMPLE | EXPANDED_COUNTER_SAMPLE) => {
                    counters.counter_samples += 1;
                    continue;
                }
                _ => {
                    counters.skipped_records += 1;
                    continue;
                }
            };
            // Written in place over a reused message (see `Flows`), dropped if the sample is bad.
            let flow = out.push();
            if let Err(error) = flow_sample(&mut sample, expanded, &agent, datagram, options, flow)
            {
                out.pop();
                return Err(error);
            }
        }
        Ok(())
    }
}

/// An interface as a flow sample states it: the index, or why there is none.
enum Interface {
    Index(u32),
    Dropped,
    Multiple,
}

impl Interface {
    fn new(format: u32, value: u32) -> Interface {
        match format {
            1 => Interface::Dropped,
            2 => Interface::Multiple,
            _ if value == LOCAL_INTERFACE => Interface::Index(0),
            _ => Interface::Index(value),
        }
    }

    fn index(&self) -> u32 {
        match self {
            Interface::Index(index) => *index,
            Interface::Dropped | Interface::Multiple => 0,
        }
    }
}

fn flow_sample(
    sample: &mut Xdr<'_>,
    expanded: bool,
    agent: &Agent,
    datagram: &Datagram<'_>,
    options: &DecodeOptions,
    flow: &mut FlowMessage,
) -> Result<()> {
    let _sample_sequence = sample.u32("flow sample")?;
    if expanded {
        sample.bytes(8, "flow sample")?; // source id type and index
    } else {
        sample.u32("flow sample")?; // source id
    }
    let sampling_rate = sample.u32("flow sample")?;
    let _pool = sample.u32("flow sample")?;
    let _drops = sample.u32("flow sample")?;
    let (input, output) = if expanded {
        let input = Interface::new(sample.u32("flow sample")?, sample.u32("flow sample")?);
        (
            input,
            Interface::new(sample.u32("flow sample")?, sample.u32("flow sample")?),
        )
    } else {
        let compact = |value: u32| Interface::new(value >> 30, value & 0x3fff_ffff);
        (
            compact(sample.u32("flow sample")?),
            compact(sample.u32("flow sample")?),
        )
    };
    flow.time_received = datagram.received;
    flow.flow_start = datagram.received;
    flow.flow_end = datagram.received;
    flow.sequence_number = agent.sequence;
    flow.sampling_rate = if sampling_rate == 0 {
        options.default_sampling_rate
    } else {
        sampling_rate.into()
    };
    set_address(&mut flow.exporter_address, &agent.exporter);
    flow.observation_domain = agent.sub_agent_id;
    flow.in_if = input.index();
    flow.out_if = output.index();
    flow.packets = 1;
    if matches!(output, Interface::Dropped) {
        flow.forwarding_status = FORWARDING_STATUS_DROPPED;
    }
    let records = sample.u32("flow sample")?;
    let mut router_next_hop = None;
    let mut switch_vlans = None;
    let mut gateway_next_hop = None;
    for _ in 0..records {
        let format = sample.u32("flow record")?;
        let mut record = sample.sized("flow record")?;
        if format >> 12 != 0 {
            continue; // enterprise records: skipped by their length
        }
        match format & 0xfff {
            RAW_PACKET_HEADER => raw_packet_header(&mut record, flow)?,
            ETHERNET_FRAME => {
                let _length = record.u32("ethernet frame")?;
                let src = record.bytes(8, "ethernet frame")?;
                let dst = record.bytes(8, "ethernet frame")?;
                flow.src_mac = mac(src);
                flow.dst_mac = mac(dst);
                flow.etype = record.u32("ethernet frame")?;
            }
            SAMPLED_IPV4 => sampled_ip(&mut record, 4, flow)?,
            SAMPLED_IPV6 => sampled_ip(&mut record, 16, flow)?,
            EXTENDED_SWITCH => {
                let src_vlan = record.u32("extended switch")?;
                let _src_priority = record.u32("extended switch")?;
                switch_vlans = Some((src_vlan, record.u32("extended switch")?));
            }
            EXTENDED_ROUTER => {
                router_next_hop = record.address("extended router")?;
                flow.src_net_mask = record.u32("extended router")?;
                flow.dst_net_mask = record.u32("extended router")?;
            }
            EXTENDED_GATEWAY => gateway_next_hop = extended_gateway(&mut record, flow)?,
            _ => {}
        }
    }
    // The switch's own word on VLANs wins over the sampled header, whatever the record
    // order; agents write 0xffffffff for "unknown", and the header's VLAN stays then.
    if let Some((src_vlan, dst_vlan)) = switch_vlans {
        if src_vlan <= MAX_VLAN {
            flow.src_vlan = src_vlan;
        }
        if dst_vlan <= MAX_VLAN {
            flow.dst_vlan = dst_vlan;
        }
    }
    // The router record's next hop (IGP), else the gateway's (BGP); 0.0.0.0 means none.
    let known = |hop: Option<IpAddr>| hop.filter(|ip| !ip.is_unspecified());
    if let Some(next_hop) = known(router_next_hop).or(known(gateway_next_hop)) {
        set_address(&mut flow.next_hop, &address_octets(next_hop));
    }
    Ok(())
}

fn mac(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .take(6)
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

fn raw_packet_header(record: &mut Xdr<'_>, flow: &mut FlowMessage) -> Result<()> {
    let protocol = record.u32("raw packet header")?;
    let frame_length = record.u32("raw packet header")?;
    let _stripped = record.u32("raw packet header")?;
    let header_length = record.u32("raw packet header")? as usize;
    let header = record.opaque(header_length, "raw packet header")?;
    let headers: Headers<'_> = match protocol {
        HEADER_ETHERNET => packet::parse_ethernet(header),
        HEADER_IPV4 => packet::parse_ip(0x0800, header),
        HEADER_IPV6 => packet::parse_ip(0x86dd, header),
        _ => Headers::default(),
    };
    headers.fill(flow);
    flow.bytes = frame_length.into();
    Ok(())
}

/// Sampled IPv4 (address length 4) or IPv6 (16) data records.
fn sampled_ip(record: &mut Xdr<'_>, address_len: usize, flow: &mut FlowMessage) -> Result<()> {
    const WHAT: &str = "sampled IP";
    let length = record.u32(WHAT)?;
    let proto = record.u32(WHAT)?;
    let src = record.bytes(address_len, WHAT)?;
    let dst = record.bytes(address_len, WHAT)?;
    let to_ip = |b: &[u8]| -> IpAddr {
        match <[u8; 16]>::try_from(b) {
            Ok(v6) => Ipv6Addr::from(v6).into(),
            Err(_) => Ipv4Addr::new(b[0], b[1], b[2], b[3]).into(),
        }
    };
    set_address(&mut flow.src_addr, &address_octets(to_ip(src)));
    set_address(&mut flow.dst_addr, &address_octets(to_ip(dst)));
    flow.src_port = record.u32(WHAT)?;
    flow.dst_port = record.u32(WHAT)?;
    flow.tcp_flags = record.u32(WHAT)?;
    flow.ip_tos = record.u32(WHAT)?;
    flow.proto = proto;
    flow.etype = if address_len == 4 { 0x0800 } else { 0x86dd };
    if flow.bytes == 0 {
        flow.bytes = length.into();
    }
    Ok(())
}

/// Source and destination AS from the gateway record: the source AS is the sender's
/// own when the route is local (0), the destination AS is the last of the AS path.
fn extended_gateway(record: &mut Xdr<'_>, flow: &mut FlowMessage) -> Result<Option<IpAddr>> {
    const WHAT: &str = "extended gateway";
    let next_hop = record.address(WHAT)?;
    let router_as = record.u32(WHAT)?;
    let src_as = record.u32(WHAT)?;
    let _src_peer_as = record.u32(WHAT)?;
    flow.src_as = if src_as == 0 { router_as } else { src_as };
    let segments = record.u32(WHAT)?;
    let mut last_as = None;
    for _ in 0..segments {
        let _segment_type = record.u32(WHAT)?;
        let count = record.u32(WHAT)? as usize;
        let ases = record.bytes(
            count.checked_mul(4).ok_or(SflowError::Truncated(WHAT))?,
            WHAT,
        )?;
        if let Some(last) = ases.chunks_exact(4).last() {
            last_as = Some(u32::from_be_bytes([last[0], last[1], last[2], last[3]]));
        }
    }
    flow.dst_as = last_as.unwrap_or(router_as);
    Ok(next_hop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::address_bytes;
    use std::net::SocketAddr;

    /// Builds sFlow datagrams for the tests, as an agent would write them.
    struct Writer(Vec<u8>);

    impl Writer {
        fn u32(&mut self, v: u32) -> &mut Self {
            self.0.extend(v.to_be_bytes());
            self
        }
        fn opaque(&mut self, data: &[u8]) -> &mut Self {
            self.u32(data.len() as u32);
            self.0.extend(data);
            self.0.resize(self.0.len().next_multiple_of(4), 0);
            self
        }
    }

    fn header(samples: u32) -> Writer {
        let mut w = Writer(Vec::new());
        w.u32(5)
            .u32(1)
            .u32(u32::from(Ipv4Addr::new(192, 0, 2, 10)))
            .u32(7)
            .u32(42)
            .u32(1000)
            .u32(samples);
        w
    }

    fn ethernet_ipv4_tcp() -> Vec<u8> {
        let mut f = vec![
            0, 1, 2, 3, 4, 5, 0, 6, 7, 8, 9, 10, 0x81, 0, 0, 100, 0x08, 0,
        ];
        f.extend([
            0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        f.extend([
            0x9c, 0x40, 0, 80, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0, 0, 0, 0, 0, 0,
        ]);
        f
    }

    fn flow_sample_datagram(output: u32, with_gateway: bool) -> Vec<u8> {
        let mut raw = Writer(Vec::new());
        raw.u32(HEADER_ETHERNET)
            .u32(1500)
            .u32(4)
            .opaque(&ethernet_ipv4_tcp());
        let mut gateway = Writer(Vec::new());
        gateway
            .u32(1)
            .u32(u32::from(Ipv4Addr::new(203, 0, 113, 1)))
            .u32(65000)
            .u32(0)
            .u32(0);
        gateway
            .u32(1)
            .u32(2)
            .u32(2)
            .u32(3)
            .u32(15169)
            .u32(0)
            .u32(100);
        let mut sample = Writer(Vec::new());
        sample
            .u32(1)
            .u32(3)
            .u32(2048)
            .u32(0)
            .u32(0)
            .u32(10)
            .u32(output);
        sample.u32(if with_gateway { 2 } else { 1 });
        sample.u32(RAW_PACKET_HEADER).opaque(&raw.0);
        if with_gateway {
            sample.u32(EXTENDED_GATEWAY).opaque(&gateway.0);
        }
        let mut d = header(2);
        d.u32(FLOW_SAMPLE).opaque(&sample.0);
        d.u32(COUNTER_SAMPLE).opaque(&[0; 8]);
        d.0
    }

    fn decode(
        payload: &[u8],
        options: &DecodeOptions,
    ) -> (Result<()>, Vec<FlowMessage>, DecodeCounters) {
        let datagram = Datagram {
            source: SocketAddr::from(([198, 51, 100, 7], 6343)),
            received: 1_790_000_000,
            payload,
        };
        let (mut out, mut counters) = (Flows::default(), DecodeCounters::default());
        let result = SflowDecoder.decode(&datagram, options, &mut out, &mut counters);
        (result, out.take(), counters)
    }

    #[test]
    fn flow_sample_with_raw_header_and_gateway() {
        let (result, flows, counters) =
            decode(&flow_sample_datagram(20, true), &DecodeOptions::default());
        result.unwrap();
        assert_eq!(counters.counter_samples, 1);
        let flow = &flows[..];
        assert_eq!(flow.len(), 1);
        let f = &flow[0];
        assert_eq!(
            (f.sampling_rate, f.in_if, f.out_if, f.bytes, f.packets),
            (2048, 10, 20, 1500, 1)
        );
        assert_eq!(
            (f.src_vlan, f.proto, f.src_port, f.dst_port, f.tcp_flags),
            (100, 6, 40000, 80, 2)
        );
        assert_eq!((f.src_as, f.dst_as), (65000, 15169));
        assert_eq!(
            f.next_hop,
            address_bytes(Ipv4Addr::new(203, 0, 113, 1).into())
        );
        assert_eq!(
            f.exporter_address,
            address_bytes(Ipv4Addr::new(198, 51, 100, 7).into())
        );
        assert_eq!((f.observation_domain, f.sequence_number), (7, 42));
    }

    #[test]
    fn exporter_address_from_the_packet_when_asked() {
        let options = DecodeOptions {
            exporter_address: ExporterAddressSource::Packet,
            ..Default::default()
        };
        let (_, flows, _) = decode(&flow_sample_datagram(20, false), &options);
        assert_eq!(
            flows[0].exporter_address,
            address_bytes(Ipv4Addr::new(192, 0, 2, 10).into())
        );
    }

    #[test]
    fn special_output_interfaces() {
        let (_, flows, _) = decode(
            &flow_sample_datagram(0x4000_0001, false),
            &DecodeOptions::default(),
        );
        assert_eq!(
            (flows[0].out_if, flows[0].forwarding_status),
            (0, FORWARDING_STATUS_DROPPED)
        );
        let (_, flows, _) = decode(
            &flow_sample_datagram(0x8000_0003, false),
            &DecodeOptions::default(),
        );
        assert_eq!((flows[0].out_if, flows[0].forwarding_status), (0, 0));
        let (_, flows, _) = decode(
            &flow_sample_datagram(LOCAL_INTERFACE, false),
            &DecodeOptions::default(),
        );
        assert_eq!(flows[0].out_if, 0);
    }

    #[test]
    fn every_truncation_is_an_error_and_never_a_panic() {
        let full = flow_sample_datagram(20, true);
        for cut in 0..full.len() {
            let (result, flows, _) = decode(&full[..cut], &DecodeOptions::default());
            assert!(result.is_err(), "cut at {cut}");
            assert!(flows.len() <= 1);
        }
    }

    #[test]
    fn other_versions_are_refused() {
        let mut d = flow_sample_datagram(20, false);
        d[3] = 4;
        assert_eq!(
            decode(&d, &DecodeOptions::default()).0,
            Err(SflowError::Version(4))
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_after_a_valid_header_never_panic(tail in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let mut d = header(3).0;
            d.extend(tail);
            let _ = decode(&d, &DecodeOptions::default());
        }

        #[test]
        fn random_ethernet_ipv4_tcp_flows_decode_back(
            src in proptest::num::u32::ANY,
            dst in proptest::num::u32::ANY,
            ports in (proptest::num::u16::ANY, proptest::num::u16::ANY),
            flags in proptest::num::u8::ANY,
            vlan in 1u16..4095,
            frame_length in 54u32..9000,
            rate in 1u32..1_000_000,
            interfaces in (0u32..0x3FFF_FFFF, 0u32..0x3FFF_FFFF),
        ) {
            let mut frame = vec![0, 1, 2, 3, 4, 5, 0, 6, 7, 8, 9, 10, 0x81, 0];
            frame.extend(vlan.to_be_bytes());
            frame.extend([0x08, 0, 0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0]);
            frame.extend(src.to_be_bytes());
            frame.extend(dst.to_be_bytes());
            frame.extend(ports.0.to_be_bytes());
            frame.extend(ports.1.to_be_bytes());
            frame.extend([0, 0, 0, 0, 0, 0, 0, 0, 0x50, flags, 0, 0, 0, 0, 0, 0]);
            let mut raw = Writer(Vec::new());
            raw.u32(HEADER_ETHERNET).u32(frame_length).u32(4).opaque(&frame);
            let mut sample = Writer(Vec::new());
            sample.u32(1).u32(3).u32(rate).u32(0).u32(0).u32(interfaces.0).u32(interfaces.1).u32(1);
            sample.u32(RAW_PACKET_HEADER).opaque(&raw.0);
            let mut d = header(1);
            d.u32(FLOW_SAMPLE).opaque(&sample.0);

            let (result, flows, _) = decode(&d.0, &DecodeOptions::default());
            proptest::prop_assert_eq!(result, Ok(()));
            proptest::prop_assert_eq!(flows.len(), 1);
            let f = &flows[0];
            proptest::prop_assert_eq!(&f.src_addr, &address_bytes(Ipv4Addr::from(src).into()));
            proptest::prop_assert_eq!(&f.dst_addr, &address_bytes(Ipv4Addr::from(dst).into()));
            proptest::prop_assert_eq!(
                (f.src_port, f.dst_port, f.tcp_flags, f.proto, f.src_vlan),
                (u32::from(ports.0), u32::from(ports.1), u32::from(flags), 6, u32::from(vlan))
            );
            proptest::prop_assert_eq!(
                (f.bytes, f.packets, f.sampling_rate, f.in_if, f.out_if),
                (u64::from(frame_length), 1, u64::from(rate), interfaces.0, interfaces.1)
            );
        }
    }
}
