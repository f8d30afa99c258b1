//! Raw packet headers (Ethernet, 802.1Q and QinQ, MPLS, IPv4, IPv6, TCP, UDP,
//! ICMP, ICMPv6), as sFlow raw-header records and IPFIX `dataLinkFrameSection`
//! carry them, and as pcap files hold them.
//!
//! Sampled headers are cut at an arbitrary length (128 bytes is common), so parsing
//! keeps what it could read and stops at the first header that is cut short. It
//! never panics and never allocates.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flow_proto::FlowMessage;

use super::{address_octets, set_address};

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;
const ETHERTYPE_MPLS: u16 = 0x8847;
const ETHERTYPE_MPLS_MULTICAST: u16 = 0x8848;

/// MPLS labels kept at most: deeper stacks are rare and the schema wants a few.
pub const MAX_MPLS_LABELS: usize = 8;

/// What could be read from a packet's headers. Fields stay at their zero value when
/// the packet does not carry them or was cut before them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Headers<'a> {
    /// Source and destination MAC addresses, as 48-bit numbers.
    pub src_mac: u64,
    /// Destination MAC address.
    pub dst_mac: u64,
    /// The outer 802.1Q VLAN id (0 when untagged).
    pub vlan: u16,
    /// MPLS labels, outermost first (only the first `mpls_count` are meaningful).
    pub mpls_labels: [u32; MAX_MPLS_LABELS],
    /// How many MPLS labels were read.
    pub mpls_count: usize,
    /// The Ethernet type of the network layer (0x0800 or 0x86dd when it was IP).
    pub etype: u16,
    /// Source IP address.
    pub src_addr: Option<IpAddr>,
    /// Destination IP address.
    pub dst_addr: Option<IpAddr>,
    /// IP protocol / IPv6 next header of the transport layer.
    pub proto: u8,
    /// IPv4 TOS or IPv6 traffic class.
    pub tos: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// The IP length field (IPv4 total length, IPv6 payload length plus 40).
    pub ip_length: u16,
    /// Whether this is a fragment other than the first (no transport header then).
    pub later_fragment: bool,
    /// Transport source port (TCP, UDP).
    pub src_port: u16,
    /// Transport destination port.
    pub dst_port: u16,
    /// TCP flags.
    pub tcp_flags: u8,
    /// ICMP or ICMPv6 type.
    pub icmp_type: u8,
    /// ICMP or ICMPv6 code.
    pub icmp_code: u8,
    /// What follows the transport header (the UDP payload for UDP), possibly cut.
    pub payload: &'a [u8],
}

impl Headers<'_> {
    /// Copies what was read into a flow, leaving the other fields as they are.
    pub fn fill(&self, flow: &mut FlowMessage) {
        flow.src_mac = self.src_mac;
        flow.dst_mac = self.dst_mac;
        if self.vlan != 0 {
            flow.src_vlan = self.vlan.into();
        }
        if self.mpls_count > 0 {
            flow.mpls_labels.clear();
            flow.mpls_labels
                .extend_from_slice(&self.mpls_labels[..self.mpls_count]);
        }
        if self.etype != 0 {
            flow.etype = self.etype.into();
        }
        if let Some(src) = self.src_addr {
            set_address(&mut flow.src_addr, &address_octets(src));
        }
        if let Some(dst) = self.dst_addr {
            set_address(&mut flow.dst_addr, &address_octets(dst));
        }
        if self.src_addr.is_some() {
            flow.proto = self.proto.into();
            flow.ip_tos = self.tos.into();
            flow.ip_ttl = self.ttl.into();
        }
        flow.src_port = self.src_port.into();
        flow.dst_port = self.dst_port.into();
        flow.tcp_flags = self.tcp_flags.into();
        flow.icmp_type = self.icmp_type.into();
        flow.icmp_code = self.icmp_code.into();
    }
}

/// A cursor over a header that stops (returns None) instead of reading past the end.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.data.split_at_checked(n)?;
        self.data = rest;
        Some(head)
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn mac(&mut self) -> Option<u64> {
        self.take(6).map(|b| {
            b.iter()
                .fold(0u64, |acc, &byte| (acc << 8) | u64::from(byte))
        })
    }
}

/// Encapsulations followed at most, one inside the other (an Ethernet pseudowire
/// inside MPLS, an IP packet inside SRv6): real traffic nests one or two, and the
/// bound keeps crafted input from recursing deeply.
const MAX_NESTING: u8 = 2;

/// Parses an Ethernet frame (with 802.1Q/QinQ tags and MPLS) down to the transport header.
pub fn parse_ethernet(frame: &[u8]) -> Headers<'_> {
    let mut headers = Headers::default();
    parse_ethernet_into(frame, &mut headers, 0);
    headers
}

fn parse_ethernet_into<'a>(frame: &'a [u8], headers: &mut Headers<'a>, nesting: u8) {
    let mut reader = Reader { data: frame };
    let (Some(dst), Some(src)) = (reader.mac(), reader.mac()) else {
        return;
    };
    // An inner frame (pseudowire) describes the customer's traffic: its MACs and
    // VLAN, when it has one, replace the carrier's.
    headers.dst_mac = dst;
    headers.src_mac = src;
    let Some(mut etype) = reader.u16() else {
        return;
    };
    // VLAN tags: QinQ puts the service tag first; the outer VLAN id is what the schema keeps.
    let mut first_tag = true;
    while matches!(etype, ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD) {
        let (Some(tci), Some(next)) = (reader.u16(), reader.u16()) else {
            return;
        };
        if first_tag {
            headers.vlan = tci & 0x0fff;
            first_tag = false;
        }
        etype = next;
    }
    if matches!(etype, ETHERTYPE_MPLS | ETHERTYPE_MPLS_MULTICAST) {
        match parse_mpls(&mut reader, headers) {
            Some(AfterMpls::Ip(inner)) => etype = inner,
            Some(AfterMpls::Ethernet(inner)) if nesting < MAX_NESTING => {
                return parse_ethernet_into(inner, headers, nesting + 1);
            }
            _ => return,
        }
    }
    parse_network(etype, reader.data, headers, nesting);
}

/// What an MPLS label stack carries: there is no type field after it, so it is
/// guessed from the first nibble, as routers and tshark do.
enum AfterMpls<'a> {
    /// An IPv4 or IPv6 packet, by its Ethernet type.
    Ip(u16),
    /// An Ethernet pseudowire (RFC 4448): the inner frame, past its control word if any.
    Ethernet(&'a [u8]),
}

/// Reads an MPLS label stack and says what follows it.
fn parse_mpls<'a>(reader: &mut Reader<'a>, headers: &mut Headers<'_>) -> Option<AfterMpls<'a>> {
    loop {
        let entry = reader.u32()?;
        if headers.mpls_count < MAX_MPLS_LABELS {
            headers.mpls_labels[headers.mpls_count] = entry >> 12;
            headers.mpls_count += 1;
        }
        if entry & 0x100 != 0 {
            break; // bottom of stack
        }
    }
    let data = reader.data;
    match data.first()? >> 4 {
        4 => Some(AfterMpls::Ip(ETHERTYPE_IPV4)),
        6 => Some(AfterMpls::Ip(ETHERTYPE_IPV6)),
        // Otherwise an Ethernet pseudowire, when an Ethernet type follows the inner
        // MACs; a first nibble of 0 may be a control word (RFC 4385) in front of them.
        // Without one is tried first: past a control word, a VLAN-tagged frame
        // without one would show the Ethernet type after its tag.
        nibble => {
            let after_control_word = || {
                data.get(4..)
                    .filter(|inner| nibble == 0 && known_ethertype(inner))
            };
            Some(data)
                .filter(|inner| known_ethertype(inner))
                .or_else(after_control_word)
                .map(AfterMpls::Ethernet)
        }
    }
}

/// Whether the Ethernet type of this frame (after the two MACs) is one the parser follows.
fn known_ethertype(frame: &[u8]) -> bool {
    frame.get(12..14).is_some_and(|etype| {
        matches!(
            u16::from_be_bytes([etype[0], etype[1]]),
            ETHERTYPE_IPV4
                | ETHERTYPE_IPV6
                | ETHERTYPE_VLAN
                | ETHERTYPE_QINQ
                | ETHERTYPE_QINQ_OLD
                | ETHERTYPE_MPLS
                | ETHERTYPE_MPLS_MULTICAST
        )
    })
}

/// Parses an IP packet whose type the caller knows (sFlow sampled IPv4/IPv6 headers).
pub fn parse_ip(etype: u16, packet: &[u8]) -> Headers<'_> {
    let mut headers = Headers::default();
    parse_network(etype, packet, &mut headers, 0);
    headers
}

/// IPv6 next headers of an IP packet carried whole (SRv6 encapsulation, IPv6 tunnels).
const NEXT_HEADER_IPV4: u8 = 4;
const NEXT_HEADER_IPV6: u8 = 41;

fn parse_network<'a>(etype: u16, data: &'a [u8], headers: &mut Headers<'a>, nesting: u8) {
    let transport = match etype {
        ETHERTYPE_IPV4 => parse_ipv4(data, headers),
        ETHERTYPE_IPV6 => parse_ipv6(data, headers),
        _ => None,
    };
    let Some(transport) = transport else {
        return;
    };
    headers.etype = etype;
    if headers.later_fragment {
        return;
    }
    // SRv6 (and IPv6 tunnels) carry the customer's packet whole: report that one, as
    // tshark does; what cannot be read of it leaves the outer packet's values.
    let inner = match (etype, headers.proto) {
        (ETHERTYPE_IPV6, NEXT_HEADER_IPV4) => Some(ETHERTYPE_IPV4),
        (ETHERTYPE_IPV6, NEXT_HEADER_IPV6) => Some(ETHERTYPE_IPV6),
        _ => None,
    };
    match inner {
        Some(inner) if nesting < MAX_NESTING => {
            parse_network(inner, transport, headers, nesting + 1);
        }
        _ => parse_transport(transport, headers),
    }
}

/// Returns what follows the IPv4 header.
fn parse_ipv4<'a>(data: &'a [u8], headers: &mut Headers<'a>) -> Option<&'a [u8]> {
    let mut reader = Reader { data };
    let fixed = reader.take(20)?;
    if fixed[0] >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(fixed[0] & 0x0f) * 4;
    headers.tos = fixed[1];
    headers.ip_length = u16::from_be_bytes([fixed[2], fixed[3]]);
    headers.later_fragment = u16::from_be_bytes([fixed[6], fixed[7]]) & 0x1fff != 0;
    headers.ttl = fixed[8];
    headers.proto = fixed[9];
    headers.src_addr = Some(Ipv4Addr::new(fixed[12], fixed[13], fixed[14], fixed[15]).into());
    headers.dst_addr = Some(Ipv4Addr::new(fixed[16], fixed[17], fixed[18], fixed[19]).into());
    // Options, if any; a header shorter than 20 bytes is malformed: keep the addresses only.
    let options = header_len.checked_sub(20)?;
    reader.take(options)?;
    Some(reader.data)
}

/// Returns what follows the IPv6 header and its extension headers.
fn parse_ipv6<'a>(data: &'a [u8], headers: &mut Headers<'a>) -> Option<&'a [u8]> {
    let mut reader = Reader { data };
    let fixed = reader.take(40)?;
    if fixed[0] >> 4 != 6 {
        return None;
    }
    headers.tos = (fixed[0] << 4) | (fixed[1] >> 4);
    headers.ip_length = u16::from_be_bytes([fixed[4], fixed[5]]).saturating_add(40);
    headers.ttl = fixed[7];
    let mut next = fixed[6];
    let src: [u8; 16] = fixed[8..24].try_into().ok()?;
    let dst: [u8; 16] = fixed[24..40].try_into().ok()?;
    headers.src_addr = Some(Ipv6Addr::from(src).into());
    headers.dst_addr = Some(Ipv6Addr::from(dst).into());
    // Extension headers (bounded: a chain longer than 8 is not a real packet).
    for _ in 0..8 {
        match next {
            0 | 43 | 60 => {
                let ext = reader.take(2)?;
                next = ext[0];
                reader.take(usize::from(ext[1]) * 8 + 6)?;
            }
            44 => {
                let fragment = reader.take(8)?;
                next = fragment[0];
                headers.later_fragment = u16::from_be_bytes([fragment[2], fragment[3]]) >> 3 != 0;
            }
            _ => break,
        }
    }
    headers.proto = next;
    Some(reader.data)
}

fn parse_transport<'a>(data: &'a [u8], headers: &mut Headers<'a>) {
    let mut reader = Reader { data };
    match headers.proto {
        6 => {
            let (Some(src), Some(dst)) = (reader.u16(), reader.u16()) else {
                return;
            };
            headers.src_port = src;
            headers.dst_port = dst;
            if let Some(fixed) = reader.take(16) {
                headers.tcp_flags = fixed[9];
                let data_offset = usize::from(fixed[8] >> 4) * 4;
                headers.payload = data.get(data_offset..).unwrap_or_default();
            }
        }
        17 => {
            let (Some(src), Some(dst)) = (reader.u16(), reader.u16()) else {
                return;
            };
            headers.src_port = src;
            headers.dst_port = dst;
            if let (Some(length), Some(_checksum)) = (reader.u16(), reader.u16()) {
                // The UDP length bounds the payload (Ethernet padding follows short ones).
                let payload_len = usize::from(length).saturating_sub(8);
                headers.payload = reader.data.get(..payload_len).unwrap_or(reader.data);
            }
        }
        1 | 58 => {
            if let Some(kind) = reader.take(2) {
                headers.icmp_type = kind[0];
                headers.icmp_code = kind[1];
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(vlans: &[u16], mpls: &[u32], ip: &[u8], etype: u16) -> Vec<u8> {
        let mut f = vec![
            0, 0x11, 0x22, 0x33, 0x44, 0x55, 0, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
        ];
        for vlan in vlans {
            f.extend(ETHERTYPE_VLAN.to_be_bytes());
            f.extend(vlan.to_be_bytes());
        }
        if mpls.is_empty() {
            f.extend(etype.to_be_bytes());
        } else {
            f.extend(ETHERTYPE_MPLS.to_be_bytes());
            for (i, label) in mpls.iter().enumerate() {
                let bottom = if i + 1 == mpls.len() { 0x100 } else { 0 };
                f.extend(((label << 12) | bottom | 64).to_be_bytes());
            }
        }
        f.extend(ip);
        f
    }

    fn ipv4_tcp() -> Vec<u8> {
        let mut p = vec![
            0x45, 0xb8, 0, 52, 0, 1, 0x40, 0, 63, 6, 0, 0, 10, 0, 0, 1, 192, 0, 2, 53,
        ];
        p.extend([
            0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x1b, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        p
    }

    #[test]
    fn ethernet_vlan_ipv4_tcp() {
        let f = frame(&[100, 200], &[], &ipv4_tcp(), ETHERTYPE_IPV4);
        let h = parse_ethernet(&f);
        assert_eq!(h.dst_mac, 0x0011_2233_4455);
        assert_eq!(h.src_mac, 0x00aa_bbcc_ddee);
        assert_eq!(h.vlan, 100);
        assert_eq!(h.etype, ETHERTYPE_IPV4);
        assert_eq!(h.src_addr, Some(Ipv4Addr::new(10, 0, 0, 1).into()));
        assert_eq!(h.dst_addr, Some(Ipv4Addr::new(192, 0, 2, 53).into()));
        assert_eq!((h.proto, h.tos, h.ttl, h.ip_length), (6, 0xb8, 63, 52));
        assert_eq!((h.src_port, h.dst_port, h.tcp_flags), (40_000, 443, 0x1b));
    }

    #[test]
    fn mpls_stack_then_ipv4() {
        let f = frame(&[], &[16_000, 299_776], &ipv4_tcp(), 0);
        let h = parse_ethernet(&f);
        assert_eq!(&h.mpls_labels[..h.mpls_count], &[16_000, 299_776]);
        assert_eq!(h.dst_port, 443);
    }

    #[test]
    fn ethernet_pseudowire_with_and_without_control_word() {
        let customer = frame(&[42], &[], &ipv4_tcp(), ETHERTYPE_IPV4);
        for control_word in [&[0u8, 0, 0, 7][..], &[]] {
            let mut pseudowire = customer.clone();
            pseudowire.splice(0..0, control_word.iter().copied());
            let mut carrier = frame(&[], &[300_012, 17], &pseudowire, 0);
            carrier[0] = 0x02; // carrier MACs differ from the customer's
            let h = parse_ethernet(&carrier);
            assert_eq!(&h.mpls_labels[..h.mpls_count], &[300_012, 17]);
            assert_eq!(h.dst_mac, 0x0011_2233_4455, "customer MAC");
            assert_eq!(h.vlan, 42);
            assert_eq!(h.src_addr, Some(Ipv4Addr::new(10, 0, 0, 1).into()));
            assert_eq!(h.dst_port, 443);
        }
        // Neither an IP packet nor a frame with a known Ethernet type: labels only.
        let unknown = frame(&[], &[17], &[0x10; 40], 0);
        let h = parse_ethernet(&unknown);
        assert_eq!((h.mpls_count, h.src_addr), (1, None));
    }

    #[test]
    fn srv6_reports_the_inner_packet() {
        let mut p = vec![0x60, 0, 0, 0, 0, 40, NEXT_HEADER_IPV4, 64];
        p.extend([0xfc, 0x30].iter().chain(&[0; 13]).chain(&[0xf]));
        p.extend([0xfc, 0x30].iter().chain(&[0; 14]));
        p.extend(ipv4_tcp());
        let h = parse_ip(ETHERTYPE_IPV6, &p);
        assert_eq!(h.etype, ETHERTYPE_IPV4);
        assert_eq!(h.src_addr, Some(Ipv4Addr::new(10, 0, 0, 1).into()));
        assert_eq!((h.proto, h.ttl, h.dst_port), (6, 63, 443));
        // Cut inside the inner packet: the outer addresses stay.
        let h = parse_ip(ETHERTYPE_IPV6, &p[..50]);
        assert_eq!(h.src_addr, Some("fc30::f".parse::<IpAddr>().unwrap()));
    }

    #[test]
    fn ipv6_udp_and_icmpv6() {
        let mut p = vec![0x6b, 0x80, 0, 0, 0, 12, 17, 55];
        p.extend([0x20, 1, 0xd, 0xb8].iter().chain(&[0; 11]).chain(&[1]));
        p.extend([0x20, 1, 0xd, 0xb8].iter().chain(&[0; 11]).chain(&[2]));
        let mut udp = p.clone();
        udp.extend([0, 53, 0x30, 0x39, 0, 12, 0, 0, 1, 2, 3, 4, 0xee, 0xee]); // 2 bytes of padding
        let h = parse_ip(ETHERTYPE_IPV6, &udp);
        assert_eq!(h.src_addr, Some("2001:db8::1".parse::<IpAddr>().unwrap()));
        assert_eq!((h.proto, h.tos, h.ttl, h.ip_length), (17, 0xb8, 55, 52));
        assert_eq!((h.src_port, h.dst_port), (53, 12345));
        assert_eq!(h.payload, &[1, 2, 3, 4]);
        let mut icmp = p;
        icmp[6] = 58;
        icmp.extend([128, 0, 0, 0]);
        let h = parse_ip(ETHERTYPE_IPV6, &icmp);
        assert_eq!((h.proto, h.icmp_type, h.icmp_code), (58, 128, 0));
    }

    #[test]
    fn later_fragments_have_no_ports() {
        let mut p = ipv4_tcp();
        p[6] = 0x00;
        p[7] = 0x10; // fragment offset 16
        let h = parse_ip(ETHERTYPE_IPV4, &p);
        assert!(h.later_fragment);
        assert_eq!((h.src_port, h.dst_port), (0, 0));
        assert!(h.src_addr.is_some());
    }

    #[test]
    fn every_truncation_keeps_what_was_read_without_panicking() {
        let full = frame(&[7], &[], &ipv4_tcp(), ETHERTYPE_IPV4);
        for cut in 0..full.len() {
            let h = parse_ethernet(&full[..cut]);
            if cut >= 14 + 4 + 20 {
                assert_eq!(
                    h.src_addr,
                    Some(Ipv4Addr::new(10, 0, 0, 1).into()),
                    "cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn fill_copies_what_was_read() {
        let f = frame(&[100], &[], &ipv4_tcp(), ETHERTYPE_IPV4);
        let h = parse_ethernet(&f);
        let mut flow = FlowMessage::default();
        h.fill(&mut flow);
        assert_eq!(
            flow.src_addr,
            crate::decode::address_bytes(Ipv4Addr::new(10, 0, 0, 1).into())
        );
        assert_eq!(
            (flow.src_vlan, flow.etype, flow.proto, flow.dst_port),
            (100, 0x0800, 6, 443)
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse_ethernet(&data);
            let _ = parse_ip(ETHERTYPE_IPV4, &data);
            let _ = parse_ip(ETHERTYPE_IPV6, &data);
        }
    }
}
