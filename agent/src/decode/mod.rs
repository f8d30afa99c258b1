//! Decoders: one module per protocol, each turning one datagram into zero or
//! more `FlowMessage`s. They never panic and never allocate without bound on
//! any input: a malformed datagram is an error that the caller counts and skips.

use std::net::{IpAddr, SocketAddr};

pub mod netflow;
pub mod packet;
pub mod sflow;

/// One UDP datagram as received from an exporter.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// Where the datagram came from.
    pub source: SocketAddr,
    /// When it was received, in seconds since the Unix epoch.
    pub received: u64,
    /// The UDP payload.
    pub payload: &'a [u8],
}

/// The flow export protocols the agent understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// Cisco NetFlow version 5.
    NetflowV5,
    /// Cisco NetFlow version 9 (RFC 3954).
    NetflowV9,
    /// IPFIX (RFC 7011).
    Ipfix,
    /// sFlow version 5.
    Sflow,
}

impl Protocol {
    /// Recognises the protocol from the first bytes of a datagram: NetFlow and
    /// IPFIX start with a 16-bit version (5, 9, 10), sFlow with a 32-bit one (5).
    pub fn detect(payload: &[u8]) -> Option<Protocol> {
        match payload {
            [0, 0, 0, 5, ..] => Some(Protocol::Sflow),
            [0, 5, ..] => Some(Protocol::NetflowV5),
            [0, 9, ..] => Some(Protocol::NetflowV9),
            [0, 10, ..] => Some(Protocol::Ipfix),
            _ => None,
        }
    }

    /// The name used in metrics, logs and the `decode` command.
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::NetflowV5 => "netflow-v5",
            Protocol::NetflowV9 => "netflow-v9",
            Protocol::Ipfix => "ipfix",
            Protocol::Sflow => "sflow",
        }
    }
}

/// Where a flow's exporter address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExporterAddressSource {
    /// The datagram's source address (the default: what the network proves).
    #[default]
    Datagram,
    /// The agent address the packet carries (sFlow), falling back to the
    /// datagram's source when the protocol has none.
    Packet,
}

/// Where a flow's time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampSource {
    /// The time the agent received the datagram (the default: exporter clocks drift).
    #[default]
    Received,
    /// The flow's own end time, as the exporter states it.
    Flow,
}

/// What an operator sets per listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Where the exporter address comes from.
    pub exporter_address: ExporterAddressSource,
    /// Where `time_received` comes from.
    pub timestamps: TimestampSource,
    /// The sampling rate given to flows that carry none (never 0: flows are never dropped for it).
    pub default_sampling_rate: u64,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            exporter_address: ExporterAddressSource::default(),
            timestamps: TimestampSource::default(),
            default_sampling_rate: 1,
        }
    }
}

/// IPv4 mapped into IPv6, as the schema carries every address.
pub fn address_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// Events that are not errors of the datagram but that an operator wants counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodeCounters {
    /// Data records whose template was not (yet) known.
    pub template_misses: u64,
    /// sFlow counter samples: counted, never produced.
    pub counter_samples: u64,
    /// Records skipped because they were malformed while the rest of the datagram was fine.
    pub skipped_records: u64,
}
