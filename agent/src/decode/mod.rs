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
    /// Seconds a NetFlow v9/IPFIX data set may wait for its template (0: not held).
    pub hold_early_data_seconds: u64,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            exporter_address: ExporterAddressSource::default(),
            timestamps: TimestampSource::default(),
            default_sampling_rate: 1,
            hold_early_data_seconds: 0,
        }
    }
}

/// IPv4 mapped into IPv6, as the schema carries every address.
pub fn address_bytes(ip: IpAddr) -> Vec<u8> {
    address_octets(ip).to_vec()
}

/// IPv4 mapped into IPv6, as the schema carries every address.
pub fn address_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Whether two flows have one exporter, as the runs of a datagram's flows are
/// found: on the usual 16 bytes, two loads rather than a call to memcmp.
#[inline]
pub fn same_exporter(a: &flow_proto::FlowMessage, b: &flow_proto::FlowMessage) -> bool {
    let (a, b) = (a.exporter_address.as_slice(), b.exporter_address.as_slice());
    match (<&[u8; 16]>::try_from(a), <&[u8; 16]>::try_from(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Writes an address field in place, reusing its buffer (see [`Flows`]); the
/// fixed length lets the copy be two moves rather than a call to memcpy.
#[inline]
pub(crate) fn set_address(field: &mut Vec<u8>, value: &[u8; 16]) {
    field.clear();
    field.extend_from_slice(value);
}

/// The flows decoded from datagrams, kept from one datagram to the next: clearing
/// keeps every message and its buffers (addresses, MPLS labels), and the next
/// datagram's flows are written over them, so that decoding allocates nothing
/// once the buffer has grown to the largest datagram.
#[derive(Debug, Default, Clone)]
pub struct Flows {
    /// Messages in use first (`len` of them), then cleared ones kept for reuse.
    messages: Vec<flow_proto::FlowMessage>,
    len: usize,
}

impl Flows {
    /// Forgets the flows, keeping their memory for the next ones.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// A new flow at the end, every field at its default. Inlined into the
    /// decoders' per-record path, where it runs once per flow.
    #[inline]
    pub fn push(&mut self) -> &mut flow_proto::FlowMessage {
        if self.len == self.messages.len() {
            self.grow();
        } else {
            // prost's clear keeps the allocations of bytes, strings and repeated fields.
            prost::Message::clear(&mut self.messages[self.len]);
        }
        self.len += 1;
        &mut self.messages[self.len - 1]
    }

    /// Adds a message: kept out of line, so that the usual path of `push`
    /// (reusing one) stays small enough to be inlined.
    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        self.messages.push(flow_proto::FlowMessage::default());
    }

    /// Drops the last flow (one whose decoding failed half-way).
    pub fn pop(&mut self) {
        self.len = self.len.saturating_sub(1);
    }

    /// Hands the flows over (to the producer), leaving this buffer empty.
    pub fn take(&mut self) -> Vec<flow_proto::FlowMessage> {
        self.messages.truncate(self.len);
        self.len = 0;
        std::mem::take(&mut self.messages)
    }
}

impl std::ops::Deref for Flows {
    type Target = [flow_proto::FlowMessage];

    fn deref(&self) -> &Self::Target {
        &self.messages[..self.len]
    }
}

impl std::ops::DerefMut for Flows {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.messages[..self.len]
    }
}

impl<'a> IntoIterator for &'a Flows {
    type Item = &'a flow_proto::FlowMessage;
    type IntoIter = std::slice::Iter<'a, flow_proto::FlowMessage>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a> IntoIterator for &'a mut Flows {
    type Item = &'a mut flow_proto::FlowMessage;
    type IntoIter = std::slice::IterMut<'a, flow_proto::FlowMessage>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter_mut()
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
    /// Data sets held to wait for their template (`hold_early_data_seconds`).
    pub early_sets_held: u64,
    /// Held data sets decoded once their template arrived.
    pub early_sets_decoded: u64,
    /// Data sets that could not be held (bounds) or whose template never came in time.
    pub early_sets_dropped: u64,
}

/// Why a datagram could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The first bytes match no protocol the agent knows.
    #[error("not NetFlow v5/v9, IPFIX or sFlow v5")]
    UnknownProtocol,
    /// A NetFlow v5, v9 or IPFIX datagram was malformed.
    #[error("{}: {source}", protocol.as_str())]
    Netflow {
        /// Which of the three.
        protocol: Protocol,
        /// What was wrong.
        source: netflow::NetflowError,
    },
    /// An sFlow datagram was malformed.
    #[error("sflow: {0}")]
    Sflow(#[from] sflow::SflowError),
}

impl DecodeError {
    /// A short name for metrics and the `decode` summary.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::UnknownProtocol => "unknown-protocol",
            DecodeError::Netflow { source, .. } => source.kind(),
            DecodeError::Sflow(error) => error.kind(),
        }
    }

    /// The protocol of the datagram, when it was recognised.
    pub fn protocol(&self) -> Option<Protocol> {
        match self {
            DecodeError::UnknownProtocol => None,
            DecodeError::Netflow { protocol, .. } => Some(*protocol),
            DecodeError::Sflow(_) => Some(Protocol::Sflow),
        }
    }
}

/// One decoder per listener worker: it recognises each datagram's protocol and
/// keeps the NetFlow v9/IPFIX templates of the exporters it hears.
#[derive(Debug, Default)]
pub struct Decoder {
    netflow: netflow::NetflowDecoder,
    sflow: sflow::SflowDecoder,
}

impl Decoder {
    /// A decoder with these template limits.
    pub fn new(limits: netflow::TemplateLimits) -> Self {
        Decoder {
            netflow: netflow::NetflowDecoder::new(limits),
            sflow: sflow::SflowDecoder,
        }
    }

    /// Decodes a datagram of the given protocol, or of the one its first bytes
    /// announce when `protocol` is None, appending its flows to `out`.
    pub fn decode(
        &mut self,
        datagram: &Datagram<'_>,
        protocol: Option<Protocol>,
        options: &DecodeOptions,
        out: &mut Flows,
        counters: &mut DecodeCounters,
    ) -> Result<Protocol, DecodeError> {
        let protocol = protocol
            .or_else(|| Protocol::detect(datagram.payload))
            .ok_or(DecodeError::UnknownProtocol)?;
        match protocol {
            Protocol::Sflow => self.sflow.decode(datagram, options, out, counters)?,
            _ => self
                .netflow
                .decode(datagram, options, out, counters)
                .map_err(|source| DecodeError::Netflow { protocol, source })?,
        }
        Ok(protocol)
    }

    /// Forgets templates unseen since before `now` minus the configured lifetime.
    pub fn expire(&mut self, now: u64) {
        self.netflow.expire(now);
    }
}
