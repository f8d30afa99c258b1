//! Information elements and what they become in a `FlowMessage`.
//!
//! NetFlow v9 field types 1–127 are the IPFIX information elements of the same
//! numbers (IANA's IPFIX registry took them over from RFC 3954), and exporters
//! use IANA numbers beyond 127 in v9 too, so one mapping serves both.
//! A template is compiled once, when it arrives (see `template`): each value
//! gets the [`Field`] it feeds, chosen only when the exported length suits it;
//! plain unsigned values ([`Scalar`]s, most of a flow) are stored without any
//! dispatch on the field, the others through [`Record::set`].
//! Values land in a [`Record`], which becomes a `FlowMessage` once every field of
//! the record is known (fallbacks such as "out counters when in counters are
//! absent" need the whole record).

use flow_proto::FlowMessage;
use flow_proto::v1::FlowDirection;

use crate::decode::packet::parse_ethernet;
use crate::decode::{Flows, address_octets, set_address};

/// The length a template gives a field: the IPFIX variable-length marker is kept apart.
pub(crate) const VARIABLE_LENGTH: u16 = 65535;

/// What a value of a template field feeds. Fields the agent does not use are [`Field::Skip`].
/// A field appears once in a compiled template (its first occurrence), except
/// addresses, which keep the first specified one (see [`Field::repeatable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Skip,
    /// A plain unsigned value, kept as exported (see [`Scalar`]).
    Unsigned(Scalar),
    SrcAddr,
    DstAddr,
    NextHop,
    BgpNextHop,
    /// One of the ten MPLS label stack entries (IEs 70–79), by position.
    MplsLabel(u8),
    SamplingInterval,
    SamplerRandomInterval,
    SamplingPacketInterval,
    SamplingPacketSpace,
    SamplingSize,
    SamplingPopulation,
    DataLinkFrame,
}

/// The fields whose value is an unsigned integer kept as exported (most of a
/// flow, its times included). They live in one array of the [`Record`] indexed
/// by this enum, so that a compiled template stores such a value with one load
/// and one indexed store, whatever the field. For the counters, addresses'
/// companions and the like, 0 stands for "not in the record".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Scalar {
    Bytes,
    Packets,
    PostBytes,
    PostPackets,
    TotalBytes,
    TotalPackets,
    InitiatorBytes,
    InitiatorPackets,
    Proto,
    Tos,
    Dscp,
    TcpFlags,
    SrcPort,
    DstPort,
    SrcMask,
    DstMask,
    InIf,
    OutIf,
    InPhysicalIf,
    OutPhysicalIf,
    SrcAs,
    DstAs,
    SrcVlan,
    DstVlan,
    Dot1qVlan,
    PostDot1qVlan,
    SrcMac,
    DstMac,
    PostSrcMac,
    PostDstMac,
    ForwardingStatus,
    IpTtl,
    IpVersion,
    // From here on 0 is a value like any other: whether the record has the
    // field is told by the template (see `Record::present`).
    IcmpTypeCode,
    IcmpType,
    IcmpCode,
    Direction,
    StartSeconds,
    EndSeconds,
    StartMillis,
    EndMillis,
    /// A 64-bit NTP timestamp (seconds since 1900 and a binary fraction).
    StartNtp,
    EndNtp,
    /// Milliseconds since the exporter booted (sysUpTime).
    StartUptime,
    EndUptime,
    /// Microseconds before the export time.
    StartDeltaMicros,
    EndDeltaMicros,
    SystemInitMillis,
    SamplerId,
}

/// How many [`Scalar`]s there are: the length of the record's array of them.
const SCALARS: usize = Scalar::SamplerId as usize + 1;

/// Which [`Scalar`]s a template has, a bit each.
pub(crate) type Presence = u64;
const _: () = assert!(SCALARS <= Presence::BITS as usize);

impl Scalar {
    /// Its bit in a [`Presence`].
    pub(crate) const fn bit(self) -> Presence {
        1 << self as u32
    }
}

impl Field {
    /// The field an IPFIX information element (or NetFlow v9 field type) of
    /// enterprise 0 feeds, given its exported length; `Skip` when the agent does
    /// not use it or the length does not suit it (never guess at a bad length).
    pub(crate) fn for_element(element: u16, length: u16) -> Field {
        use Field::*;
        use Scalar::*;
        let (field, shape) = match element {
            1 => (Unsigned(Bytes), Shape::Unsigned),
            2 => (Unsigned(Packets), Shape::Unsigned),
            4 => (Unsigned(Proto), Shape::Unsigned),
            5 => (Unsigned(Tos), Shape::Unsigned),
            6 => (Unsigned(TcpFlags), Shape::Unsigned),
            7 => (Unsigned(SrcPort), Shape::Unsigned),
            8 => (SrcAddr, Shape::Ipv4),
            9 | 29 => (Unsigned(SrcMask), Shape::Unsigned),
            10 => (Unsigned(InIf), Shape::Unsigned),
            11 => (Unsigned(DstPort), Shape::Unsigned),
            12 => (DstAddr, Shape::Ipv4),
            13 | 30 => (Unsigned(DstMask), Shape::Unsigned),
            14 => (Unsigned(OutIf), Shape::Unsigned),
            15 => (NextHop, Shape::Ipv4),
            16 => (Unsigned(SrcAs), Shape::Unsigned),
            17 => (Unsigned(DstAs), Shape::Unsigned),
            18 => (BgpNextHop, Shape::Ipv4),
            21 => (Unsigned(EndUptime), Shape::Unsigned),
            22 => (Unsigned(StartUptime), Shape::Unsigned),
            23 => (Unsigned(PostBytes), Shape::Unsigned),
            24 => (Unsigned(PostPackets), Shape::Unsigned),
            27 => (SrcAddr, Shape::Ipv6),
            28 => (DstAddr, Shape::Ipv6),
            32 => (Unsigned(IcmpTypeCode), Shape::Unsigned),
            34 => (SamplingInterval, Shape::Unsigned),
            48 => (Unsigned(SamplerId), Shape::Unsigned),
            50 => (SamplerRandomInterval, Shape::Unsigned),
            56 => (Unsigned(SrcMac), Shape::Mac),
            57 => (Unsigned(PostDstMac), Shape::Mac),
            58 => (Unsigned(SrcVlan), Shape::Unsigned),
            59 => (Unsigned(DstVlan), Shape::Unsigned),
            60 => (Unsigned(IpVersion), Shape::Unsigned),
            61 => (Unsigned(Direction), Shape::Unsigned),
            62 => (NextHop, Shape::Ipv6),
            63 => (BgpNextHop, Shape::Ipv6),
            70..=79 => (MplsLabel((element - 70) as u8), Shape::MplsEntry),
            80 => (Unsigned(DstMac), Shape::Mac),
            81 => (Unsigned(PostSrcMac), Shape::Mac),
            85 => (Unsigned(TotalBytes), Shape::Unsigned),
            86 => (Unsigned(TotalPackets), Shape::Unsigned),
            89 => (Unsigned(ForwardingStatus), Shape::Unsigned),
            231 => (Unsigned(InitiatorBytes), Shape::Unsigned),
            298 => (Unsigned(InitiatorPackets), Shape::Unsigned),
            139 => (Unsigned(IcmpTypeCode), Shape::Unsigned),
            150 => (Unsigned(StartSeconds), Shape::Unsigned),
            151 => (Unsigned(EndSeconds), Shape::Unsigned),
            152 => (Unsigned(StartMillis), Shape::Unsigned),
            153 => (Unsigned(EndMillis), Shape::Unsigned),
            154 | 156 => (Unsigned(StartNtp), Shape::Ntp),
            155 | 157 => (Unsigned(EndNtp), Shape::Ntp),
            158 => (Unsigned(StartDeltaMicros), Shape::Unsigned),
            159 => (Unsigned(EndDeltaMicros), Shape::Unsigned),
            160 => (Unsigned(SystemInitMillis), Shape::Unsigned),
            176 | 178 => (Unsigned(IcmpType), Shape::Unsigned),
            177 | 179 => (Unsigned(IcmpCode), Shape::Unsigned),
            192 => (Unsigned(IpTtl), Shape::Unsigned),
            195 => (Unsigned(Dscp), Shape::Unsigned),
            243 => (Unsigned(Dot1qVlan), Shape::Unsigned),
            252 => (Unsigned(InPhysicalIf), Shape::Unsigned),
            253 => (Unsigned(OutPhysicalIf), Shape::Unsigned),
            254 => (Unsigned(PostDot1qVlan), Shape::Unsigned),
            302 => (Unsigned(SamplerId), Shape::Unsigned),
            305 => (SamplingPacketInterval, Shape::Unsigned),
            306 => (SamplingPacketSpace, Shape::Unsigned),
            309 => (SamplingSize, Shape::Unsigned),
            310 => (SamplingPopulation, Shape::Unsigned),
            315 => (DataLinkFrame, Shape::Any),
            _ => return Skip,
        };
        if shape.accepts(length) { field } else { Skip }
    }
}

impl Field {
    /// Whether a record with this field may state its own sampling rate (see
    /// [`Record::sampling_rate`]): templates without any skip that look-up.
    pub(crate) fn states_sampling(self) -> bool {
        matches!(
            self,
            Field::SamplingInterval
                | Field::SamplerRandomInterval
                | Field::SamplingPacketInterval
                | Field::SamplingPacketSpace
                | Field::SamplingSize
                | Field::SamplingPopulation
        )
    }

    /// Whether later occurrences in a template still matter: an address field
    /// may come as IPv4 then IPv6 (or twice), only one filled.
    pub(crate) fn repeatable(self) -> bool {
        matches!(
            self,
            Field::SrcAddr | Field::DstAddr | Field::NextHop | Field::BgpNextHop
        )
    }
}

/// The lengths a field's value may have.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// An unsigned integer, big-endian, reduced-size encoding allowed (RFC 7011 §6.2).
    Unsigned,
    Ipv4,
    Ipv6,
    Mac,
    /// An MPLS label stack entry: 20-bit label, 3 bits of traffic class, bottom-of-stack bit.
    MplsEntry,
    /// A 64-bit NTP timestamp (dateTimeMicroseconds, dateTimeNanoseconds).
    Ntp,
    /// Anything, variable length included.
    Any,
}

impl Shape {
    fn accepts(self, length: u16) -> bool {
        match self {
            Shape::Unsigned => (1..=8).contains(&length),
            Shape::Ipv4 => length == 4,
            Shape::Ipv6 => length == 16,
            Shape::Mac => length == 6,
            Shape::MplsEntry => length == 3,
            Shape::Ntp => length == 8,
            Shape::Any => true,
        }
    }
}

/// What the header of a datagram tells about all its records.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExportContext {
    /// The exporter address, IPv4 mapped into IPv6.
    pub exporter: [u8; 16],
    pub observation_domain: u32,
    pub sequence_number: u32,
    /// The export time, in milliseconds since the Unix epoch.
    pub export_millis: u64,
    /// When the exporter booted, in milliseconds since the Unix epoch, when known
    /// (NetFlow: export time minus sysUpTime; IPFIX: systemInitTimeMilliseconds).
    pub boot_millis: Option<u64>,
    /// When the agent received the datagram, in seconds since the Unix epoch.
    pub received: u64,
}

/// The values of one data record, borrowed from the datagram where they are bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    scalars: Scalars,
    /// The scalars the record has (its template's).
    present: Presence,
    src_addr: Option<Address>,
    dst_addr: Option<Address>,
    next_hop: Option<Address>,
    bgp_next_hop: Option<Address>,
    mpls_labels: [u32; 10],
    sampling_interval: Option<u64>,
    sampler_random_interval: Option<u64>,
    sampling_packet_interval: Option<u64>,
    sampling_packet_space: Option<u64>,
    sampling_size: Option<u64>,
    sampling_population: Option<u64>,
    frame: Option<&'a [u8]>,
}

/// The [`Scalar`] values of a record, indexed by field.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scalars([u64; SCALARS]);

impl Default for Scalars {
    fn default() -> Self {
        Scalars([0; SCALARS])
    }
}

impl std::ops::Index<Scalar> for Scalars {
    type Output = u64;

    #[inline]
    fn index(&self, scalar: Scalar) -> &u64 {
        &self.0[scalar as usize]
    }
}

impl std::ops::IndexMut<Scalar> for Scalars {
    #[inline]
    fn index_mut(&mut self, scalar: Scalar) -> &mut u64 {
        &mut self.0[scalar as usize]
    }
}

/// An address as the schema carries it, with its family for the ether type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Address {
    octets: [u8; 16],
    ipv4: bool,
}

impl Address {
    /// Builds from 4 or 16 bytes (the compiled template guarantees one of them).
    fn from_slice(value: &[u8]) -> Option<Address> {
        if let Ok(v4) = <[u8; 4]>::try_from(value) {
            Some(Address {
                octets: address_octets(std::net::Ipv4Addr::from(v4).into()),
                ipv4: true,
            })
        } else {
            let octets = <[u8; 16]>::try_from(value).ok()?;
            Some(Address {
                octets,
                ipv4: false,
            })
        }
    }

    /// Templates often carry both an IPv4 and an IPv6 field for one address,
    /// only one of them filled: the first specified address wins.
    fn keep_specified(slot: &mut Option<Address>, value: &[u8]) {
        let Some(address) = Address::from_slice(value) else {
            return;
        };
        if slot.is_none_or(|kept| kept.is_unspecified() && !address.is_unspecified()) {
            *slot = Some(address);
        }
    }

    /// 0.0.0.0 or ::, as exporters fill fields they have no value for.
    fn is_unspecified(&self) -> bool {
        // One comparison of a word, not a loop over bytes (every address set
        // and every next hop asks).
        let bits = u128::from_be_bytes(self.octets);
        if self.ipv4 {
            bits as u32 == 0
        } else {
            bits == 0
        }
    }
}

/// Reads a big-endian unsigned integer of up to 8 bytes (longer values keep
/// their low 8 bytes). The usual widths take a single load.
#[inline]
pub(crate) fn read_unsigned(value: &[u8]) -> u64 {
    match *value {
        [byte] => u64::from(byte),
        [a, b] => u64::from(u16::from_be_bytes([a, b])),
        [a, b, c, d] => u64::from(u32::from_be_bytes([a, b, c, d])),
        [a, b, c, d, e, f, g, h] => u64::from_be_bytes([a, b, c, d, e, f, g, h]),
        _ => value
            .iter()
            .fold(0u64, |acc, &byte| (acc << 8) | u64::from(byte)),
    }
}

/// Reads a sampling value, undoing a byte order mistake.
///
/// MikroTik RouterOS writes its sampling values little-endian. A sampling
/// interval above 2^24 (one packet in 16 million) is absurd for any real
/// exporter, so when the big-endian reading is that large and the byte-swapped
/// one is sane, the swapped one is what the exporter meant.
fn read_sampling_value(value: &[u8]) -> u64 {
    const SANE: u64 = 1 << 24;
    let big_endian = read_unsigned(value);
    if big_endian <= SANE {
        return big_endian;
    }
    let little_endian = value
        .iter()
        .rev()
        .fold(0u64, |acc, &byte| (acc << 8) | u64::from(byte));
    if (1..=SANE).contains(&little_endian) {
        little_endian
    } else {
        big_endian
    }
}

/// sysUpTime values are 32-bit milliseconds: they wrap every 49.7 days, so
/// boot time plus uptime may be off by whole wraps (a NetFlow v9 flow that
/// started before the header's sysUpTime wrapped, an IPFIX exporter up for
/// months). Of the moments the value can stand for, a flow's is the one
/// nearest its export.
fn nearest_to_export(millis: u64, export_millis: u64) -> u64 {
    const WRAP: i128 = 1 << 32;
    let behind = i128::from(export_millis) - i128::from(millis);
    let wraps = (behind + WRAP / 2).div_euclid(WRAP);
    u64::try_from(i128::from(millis) + wraps * WRAP).unwrap_or_default()
}

/// Converts a 64-bit NTP timestamp (seconds since 1900 and a binary fraction) to Unix milliseconds.
fn ntp_to_unix_millis(value: u64) -> u64 {
    const NTP_TO_UNIX_SECONDS: u64 = 2_208_988_800;
    let seconds = (value >> 32).saturating_sub(NTP_TO_UNIX_SECONDS);
    let millis = ((value & 0xffff_ffff) * 1000) >> 32;
    seconds * 1000 + millis
}

impl<'a> Record<'a> {
    /// Readies a record holding the previous record of a template for the next
    /// one of the same template. Every value a template holds overwrites its field
    /// (so resetting the whole record, hundreds of bytes, per record is not
    /// needed), except the addresses, which keep the first specified of several
    /// fields: only they are cleared.
    #[inline]
    pub(crate) fn next_of_same_template(&mut self) {
        self.src_addr = None;
        self.dst_addr = None;
        self.next_hop = None;
        self.bgp_next_hop = None;
    }

    /// Stores a plain unsigned value; which ones the record has is set apart
    /// (see [`Record::set_present`]).
    #[inline]
    pub(crate) fn set_scalar(&mut self, scalar: Scalar, value: u64) {
        self.scalars[scalar] = value;
    }

    /// Sets which scalars the record has: those of its template, all read.
    #[inline]
    pub(crate) fn set_present(&mut self, present: Presence) {
        self.present = present;
    }

    /// A scalar's value, if the record has it.
    fn stated(&self, scalar: Scalar) -> Option<u64> {
        (self.present & scalar.bit() != 0).then(|| self.scalars[scalar])
    }

    /// The sampler the record names, if any.
    pub(crate) fn sampler_id(&self) -> Option<u64> {
        self.stated(Scalar::SamplerId)
    }

    /// When the exporter booted, in milliseconds since the Unix epoch, if the record says.
    pub(crate) fn system_init_millis(&self) -> Option<u64> {
        self.stated(Scalar::SystemInitMillis)
    }

    /// Stores one value; `value` has the length the compiled template accepted.
    /// Every field but the addresses is overwritten unconditionally (see
    /// [`Record::next_of_same_template`]).
    #[inline]
    pub(crate) fn set(&mut self, field: Field, value: &'a [u8]) {
        use Field::*;
        let unsigned = || read_unsigned(value);
        let narrow = || read_unsigned(value) as u32;
        match field {
            Skip => {}
            Unsigned(scalar) => {
                self.scalars[scalar] = unsigned();
                self.present |= scalar.bit();
            }
            SrcAddr => Address::keep_specified(&mut self.src_addr, value),
            DstAddr => Address::keep_specified(&mut self.dst_addr, value),
            NextHop => Address::keep_specified(&mut self.next_hop, value),
            BgpNextHop => Address::keep_specified(&mut self.bgp_next_hop, value),
            MplsLabel(position) => {
                if let Some(slot) = self.mpls_labels.get_mut(usize::from(position)) {
                    *slot = narrow() >> 4;
                }
            }
            SamplingInterval => self.sampling_interval = Some(read_sampling_value(value)),
            SamplerRandomInterval => {
                self.sampler_random_interval = Some(read_sampling_value(value))
            }
            SamplingPacketInterval => {
                self.sampling_packet_interval = Some(read_sampling_value(value))
            }
            SamplingPacketSpace => self.sampling_packet_space = Some(read_sampling_value(value)),
            SamplingSize => self.sampling_size = Some(read_sampling_value(value)),
            SamplingPopulation => self.sampling_population = Some(read_sampling_value(value)),
            DataLinkFrame => self.frame = Some(value),
        }
    }

    /// The sampling rate the record states itself, if any: an interval (IE 34,
    /// IE 50), packet interval and space (IEs 305/306: `interval` packets
    /// selected out of every `interval + space`, systematic count-based
    /// sampling), or sampling size and population (IEs 309/310: `size` packets
    /// out of every `population`, random n-out-of-N sampling as Cisco IOS XR
    /// announces it; RFC 5477).
    pub(crate) fn sampling_rate(&self) -> Option<u64> {
        let by_count = match (self.sampling_packet_interval, self.sampling_packet_space) {
            (Some(interval), Some(space)) if interval > 0 => {
                Some(interval.saturating_add(space) / interval)
            }
            _ => None,
        };
        let n_out_of_n = match (self.sampling_size, self.sampling_population) {
            (Some(size), Some(population)) if size > 0 => Some(population / size),
            _ => None,
        };
        [
            self.sampling_interval,
            self.sampler_random_interval,
            by_count,
            n_out_of_n,
        ]
        .into_iter()
        .flatten()
        .find(|&rate| rate > 0)
    }

    /// Appends the record to `flows` as a flow, built in place; `sampling_rate`
    /// is the one resolved for it (never 0).
    pub(crate) fn push_flow(
        &self,
        flows: &mut Flows,
        context: &ExportContext,
        sampling_rate: u64,
        time_from_flow: bool,
    ) {
        self.write_flow(flows.push(), context, sampling_rate, time_from_flow);
    }

    fn write_flow(
        &self,
        flow: &mut FlowMessage,
        context: &ExportContext,
        sampling_rate: u64,
        time_from_flow: bool,
    ) {
        use Scalar::*;
        let wide = |scalar: Scalar| self.scalars[scalar];
        // The schema's 32-bit fields keep the low bits of wider exported values.
        let narrow = |scalar: Scalar| self.scalars[scalar] as u32;
        if let Some(frame) = self.frame {
            parse_ethernet(frame).fill(flow);
        }
        let boot_millis = self.system_init_millis().or(context.boot_millis);
        // A moment in seconds since the Unix epoch, from the first of the forms
        // exporters use that the record has (there is rarely more than one).
        let to_seconds = |[seconds, millis, ntp, uptime, before_export]: [Scalar; 5]| {
            if let Some(seconds) = self.stated(seconds) {
                return Some(seconds);
            }
            let millis = if let Some(millis) = self.stated(millis) {
                millis
            } else if let Some(ntp) = self.stated(ntp) {
                ntp_to_unix_millis(ntp)
            } else if let Some(uptime) = self.stated(uptime) {
                nearest_to_export(boot_millis?.checked_add(uptime)?, context.export_millis)
            } else {
                context
                    .export_millis
                    .checked_sub(self.stated(before_export)? / 1000)?
            };
            Some(millis / 1000)
        };
        flow.flow_start = to_seconds([
            StartSeconds,
            StartMillis,
            StartNtp,
            StartUptime,
            StartDeltaMicros,
        ])
        .unwrap_or_default();
        flow.flow_end = to_seconds([EndSeconds, EndMillis, EndNtp, EndUptime, EndDeltaMicros])
            .unwrap_or_default();
        flow.time_received = if time_from_flow && flow.flow_end != 0 {
            flow.flow_end
        } else {
            context.received
        };
        flow.sequence_number = context.sequence_number;
        flow.sampling_rate = sampling_rate;
        set_address(&mut flow.exporter_address, &context.exporter);
        flow.observation_domain = context.observation_domain;

        set_nonzero(
            &mut flow.in_if,
            first_nonzero([narrow(InIf), narrow(InPhysicalIf)]),
        );
        set_nonzero(
            &mut flow.out_if,
            first_nonzero([narrow(OutIf), narrow(OutPhysicalIf)]),
        );
        // Delta counters, else post (egress) ones, else totals, else the
        // initiator's (Cisco ASA's NSEL counts only per direction of a connection).
        set_nonzero(
            &mut flow.bytes,
            first_nonzero([
                wide(Bytes),
                wide(PostBytes),
                wide(TotalBytes),
                wide(InitiatorBytes),
            ]),
        );
        set_nonzero(
            &mut flow.packets,
            first_nonzero([
                wide(Packets),
                wide(PostPackets),
                wide(TotalPackets),
                wide(InitiatorPackets),
            ]),
        );
        if let Some(address) = self.src_addr {
            set_address(&mut flow.src_addr, &address.octets);
            flow.etype = if address.ipv4 {
                ETHERTYPE_IPV4
            } else {
                ETHERTYPE_IPV6
            };
        }
        if let Some(address) = self.dst_addr {
            set_address(&mut flow.dst_addr, &address.octets);
        }
        let specified =
            |address: &Option<Address>| address.filter(|address| !address.is_unspecified());
        let next_hop = specified(&self.next_hop)
            .or(specified(&self.bgp_next_hop))
            .or(self.next_hop)
            .or(self.bgp_next_hop);
        if let Some(address) = next_hop {
            set_address(&mut flow.next_hop, &address.octets);
        }
        match narrow(IpVersion) {
            4 => flow.etype = ETHERTYPE_IPV4,
            6 => flow.etype = ETHERTYPE_IPV6,
            _ => {}
        }
        set_nonzero(&mut flow.src_net_mask, narrow(SrcMask));
        set_nonzero(&mut flow.dst_net_mask, narrow(DstMask));
        set_nonzero(&mut flow.src_as, narrow(SrcAs));
        set_nonzero(&mut flow.dst_as, narrow(DstAs));
        set_nonzero(&mut flow.proto, narrow(Proto));
        // The TOS byte, else the DSCP (its top 6 bits) where only that is exported.
        set_nonzero(
            &mut flow.ip_tos,
            first_nonzero([narrow(Tos), narrow(Dscp) << 2]),
        );
        set_nonzero(&mut flow.ip_ttl, narrow(IpTtl));
        set_nonzero(&mut flow.src_port, narrow(SrcPort));
        set_nonzero(&mut flow.dst_port, narrow(DstPort));
        set_nonzero(&mut flow.tcp_flags, narrow(TcpFlags));
        if let Some(type_code) = self.stated(IcmpTypeCode) {
            flow.icmp_type = (type_code as u32) >> 8;
            flow.icmp_code = (type_code as u32) & 0xff;
        }
        if let Some(icmp_type) = self.stated(IcmpType) {
            flow.icmp_type = icmp_type as u32;
        }
        if let Some(icmp_code) = self.stated(IcmpCode) {
            flow.icmp_code = icmp_code as u32;
        }
        let has_icmp_fields =
            self.present & (IcmpTypeCode.bit() | IcmpType.bit() | IcmpCode.bit()) != 0;
        if matches!(flow.proto, PROTO_ICMP | PROTO_ICMPV6) && !has_icmp_fields {
            // Exporters without ICMP fields (Cisco, Juniper…) put type and code
            // in the destination port, as NetFlow v5 always did.
            flow.icmp_type = flow.dst_port >> 8;
            flow.icmp_code = flow.dst_port & 0xff;
        }
        set_nonzero(
            &mut flow.src_vlan,
            first_nonzero([narrow(SrcVlan), narrow(Dot1qVlan)]),
        );
        set_nonzero(
            &mut flow.dst_vlan,
            first_nonzero([narrow(DstVlan), narrow(PostDot1qVlan)]),
        );
        set_nonzero(
            &mut flow.src_mac,
            first_nonzero([wide(SrcMac), wide(PostSrcMac)]),
        );
        set_nonzero(
            &mut flow.dst_mac,
            first_nonzero([wide(DstMac), wide(PostDstMac)]),
        );
        if self.mpls_labels.iter().any(|&label| label != 0) {
            flow.mpls_labels.clear();
            flow.mpls_labels
                .extend(self.mpls_labels.iter().copied().filter(|&label| label != 0));
        }
        set_nonzero(&mut flow.forwarding_status, narrow(ForwardingStatus));
        if let Some(direction) = self.stated(Direction) {
            flow.set_flow_direction(match direction {
                0 => FlowDirection::Ingress,
                1 => FlowDirection::Egress,
                _ => FlowDirection::Unknown,
            });
        }
    }
}

const PROTO_ICMP: u32 = 1;
const PROTO_ICMPV6: u32 = 58;
const ETHERTYPE_IPV4: u32 = 0x0800;
const ETHERTYPE_IPV6: u32 = 0x86dd;

/// The first value that is set (0 means "not in the record").
fn first_nonzero<T: Copy + Default + PartialEq, const N: usize>(values: [T; N]) -> T {
    values
        .into_iter()
        .find(|value| *value != T::default())
        .unwrap_or_default()
}

/// Overwrites what the frame section may have set only with values the record carries.
fn set_nonzero<T: Copy + Default + PartialEq>(target: &mut T, value: T) {
    if value != T::default() {
        *target = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow_of(record: Record, time_from_flow: bool) -> FlowMessage {
        let mut flows = Flows::default();
        record.push_flow(&mut flows, &context(), 1, time_from_flow);
        flows.take().pop().unwrap()
    }

    fn context() -> ExportContext {
        ExportContext {
            exporter: [0; 16],
            observation_domain: 7,
            sequence_number: 42,
            export_millis: 1_700_000_000_000,
            boot_millis: Some(1_699_999_000_000),
            received: 1_700_000_001,
        }
    }

    #[test]
    fn lengths_that_do_not_suit_a_field_are_skipped() {
        assert_eq!(Field::for_element(8, 4), Field::SrcAddr);
        assert_eq!(Field::for_element(8, 16), Field::Skip);
        assert_eq!(Field::for_element(27, 16), Field::SrcAddr);
        assert_eq!(Field::for_element(1, 9), Field::Skip);
        assert_eq!(Field::for_element(1, VARIABLE_LENGTH), Field::Skip);
        assert_eq!(
            Field::for_element(315, VARIABLE_LENGTH),
            Field::DataLinkFrame
        );
        assert_eq!(Field::for_element(9999, 4), Field::Skip);
    }

    #[test]
    fn little_endian_sampling_values_are_swapped_only_when_absurd() {
        assert_eq!(read_sampling_value(&[0, 0, 0, 100]), 100);
        assert_eq!(read_sampling_value(&[100, 0, 0, 0]), 100);
        assert_eq!(read_sampling_value(&[0xe8, 0x03]), 0xe803);
        assert_eq!(read_sampling_value(&[0xff, 0xff, 0xff, 0xff]), 0xffff_ffff);
    }

    #[test]
    fn packet_interval_and_space_give_the_rate() {
        let mut record = Record::default();
        record.set(Field::SamplingPacketInterval, &[0, 0, 0, 1]);
        record.set(Field::SamplingPacketSpace, &[0, 0, 0, 99]);
        assert_eq!(record.sampling_rate(), Some(100));
        record.set(Field::SamplingInterval, &[0, 0, 0, 0]);
        assert_eq!(
            record.sampling_rate(),
            Some(100),
            "a zero interval is no rate"
        );

        let mut record = Record::default();
        record.set(Field::SamplingPacketInterval, &[1]);
        assert_eq!(record.sampling_rate(), None, "an interval without space");
        record.set(Field::SamplingSize, &[0, 1]);
        record.set(Field::SamplingPopulation, &[1, 0]);
        assert_eq!(record.sampling_rate(), Some(256));
    }

    #[test]
    fn times_become_absolute() {
        let (start, end) = (500_000u32.to_be_bytes(), 2_000_000u32.to_be_bytes());
        let mut record = Record::default();
        record.set(Field::Unsigned(Scalar::StartUptime), &start);
        record.set(Field::Unsigned(Scalar::EndDeltaMicros), &end);
        let flow = flow_of(record, true);
        assert_eq!(flow.flow_start, 1_699_999_500);
        assert_eq!(flow.flow_end, 1_699_999_998);
        assert_eq!(flow.time_received, 1_699_999_998);

        // 2023-11-14T22:13:20.5Z as NTP: seconds since 1900, then half a second.
        let ntp = (((1_700_000_000u64 + 2_208_988_800) << 32) | 0x8000_0000).to_be_bytes();
        let end = 1_700_000_010u32.to_be_bytes();
        let mut record = Record::default();
        record.set(Field::Unsigned(Scalar::StartNtp), &ntp);
        record.set(Field::Unsigned(Scalar::EndSeconds), &end);
        let flow = flow_of(record, false);
        assert_eq!(flow.flow_start, 1_700_000_000);
        assert_eq!(flow.flow_end, 1_700_000_010);
        assert_eq!(flow.time_received, 1_700_000_001);
    }

    #[test]
    fn uptimes_are_unwrapped_to_the_moment_nearest_the_export() {
        let export = context().export_millis;
        let wrap = 1u64 << 32;
        assert_eq!(nearest_to_export(export - 5000, export), export - 5000);
        assert_eq!(nearest_to_export(export + 300, export), export + 300);
        // v9: sysUpTime wrapped 1 s ago, the flow started 5 s before that.
        assert_eq!(
            nearest_to_export(export - 1000 + wrap - 5000, export),
            export - 6000
        );
        // IPFIX: an exporter booted 100 days ago, its 32-bit uptime wrapped twice.
        let boot = export - 100 * 86_400_000;
        let uptime = (100 * 86_400_000 - 7000) % wrap;
        assert_eq!(nearest_to_export(boot + uptime, export), export - 7000);
    }

    #[test]
    fn fallbacks_apply_only_when_the_main_field_is_absent() {
        let mut record = Record::default();
        record.set(Field::Unsigned(Scalar::TotalBytes), &[0, 9]);
        record.set(Field::Unsigned(Scalar::PostBytes), &[0, 5]);
        record.set(Field::Unsigned(Scalar::InPhysicalIf), &[0, 3]);
        record.set(Field::Unsigned(Scalar::OutIf), &[0, 4]);
        record.set(Field::Unsigned(Scalar::OutPhysicalIf), &[0, 8]);
        record.set(Field::BgpNextHop, &[10, 0, 0, 1]);
        record.set(Field::Unsigned(Scalar::Dot1qVlan), &[0, 12]);
        record.set(Field::MplsLabel(1), &[0x01, 0x23, 0x41]);
        record.set(Field::MplsLabel(0), &[0x00, 0x01, 0x00]);
        record.set(Field::Unsigned(Scalar::IcmpTypeCode), &[3, 1]);
        record.set(Field::Unsigned(Scalar::Direction), &[1]);
        record.set(Field::Unsigned(Scalar::Dscp), &[46]);
        let flow = flow_of(record, false);
        assert_eq!(flow.bytes, 5);
        assert_eq!((flow.in_if, flow.out_if), (3, 4));
        assert_eq!(
            flow.next_hop,
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1]
        );
        assert_eq!(flow.src_vlan, 12);
        assert_eq!(flow.mpls_labels, [16, 0x1234]);
        assert_eq!((flow.icmp_type, flow.icmp_code), (3, 1));
        assert_eq!(flow.flow_direction(), FlowDirection::Egress);
        assert_eq!(flow.ip_tos, 184, "expedited forwarding");
        assert_eq!(flow.flow_start, 0, "no time in the record");
    }

    #[test]
    fn icmp_type_and_code_come_from_the_destination_port_without_icmp_fields() {
        let mut record = Record::default();
        record.set(Field::Unsigned(Scalar::Proto), &[58]);
        record.set(Field::Unsigned(Scalar::DstPort), &[129, 0]);
        let flow = flow_of(record, false);
        assert_eq!((flow.icmp_type, flow.icmp_code), (129, 0));

        let mut record = Record::default();
        record.set(Field::Unsigned(Scalar::Proto), &[1]);
        record.set(Field::Unsigned(Scalar::DstPort), &[8, 0]);
        record.set(Field::Unsigned(Scalar::IcmpType), &[3]);
        record.set(Field::Unsigned(Scalar::IcmpCode), &[13]);
        let flow = flow_of(record, false);
        assert_eq!((flow.icmp_type, flow.icmp_code), (3, 13));
    }
}
