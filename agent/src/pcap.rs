//! Reads the UDP datagrams of a classic pcap file, so that `flow-agent decode` and
//! the tests can feed real exporter captures to the decoders as if they came from
//! the network. The headers are parsed by `decode::packet`, the code that reads
//! sFlow's sampled headers.
//!
//! The record format is read here rather than with the `pcap-file` crate: that crate
//! refuses captures whose sub-second field is out of range, which a real capture in
//! ../shared/data (pmacct's 403) has; the format itself is a 24-byte header and
//! 16-byte record headers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::decode::packet::{self, Headers};

/// Link types (tcpdump.org/linktypes.html) the reader knows.
const LINKTYPE_NULL: u32 = 0;
const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_RAW: u32 = 101;
const LINKTYPE_LOOP: u32 = 108;
const LINKTYPE_LINUX_SLL: u32 = 113;
const LINKTYPE_IPV4: u32 = 228;
const LINKTYPE_IPV6: u32 = 229;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;

/// One UDP datagram found in a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcapDatagram {
    /// The sender (the exporter).
    pub source: SocketAddr,
    /// The receiver (the collector).
    pub destination: SocketAddr,
    /// Capture time, in seconds since the Unix epoch.
    pub timestamp: u64,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

/// Why a capture could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    /// The file could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not a classic pcap file (pcapng is not read), or is cut short.
    #[error("{path} is not a readable pcap file: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// The capture's link type is not one the reader knows.
    #[error(
        "{path}: link type {linktype} is not supported (Ethernet, Linux cooked, raw IP, BSD loopback are)"
    )]
    LinkType {
        /// The file.
        path: PathBuf,
        /// Its link type number.
        linktype: u32,
    },
}

/// Reads every UDP datagram of a capture, in file order. Packets that are not UDP
/// (BGP and BMP sessions in some captures, say) and later IP fragments are skipped.
pub fn read_udp_datagrams(path: &Path) -> Result<Vec<PcapDatagram>, PcapError> {
    let data = std::fs::read(path).map_err(|source| PcapError::Open {
        path: path.to_owned(),
        source,
    })?;
    let format_error = |reason| PcapError::Format {
        path: path.to_owned(),
        reason,
    };
    let header = data
        .get(..24)
        .ok_or(format_error("shorter than a pcap header"))?;
    // The magic number says the byte order (and micro- or nanosecond times: seconds suffice here).
    let read_u32: fn([u8; 4]) -> u32 = match header[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => u32::from_le_bytes,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => u32::from_be_bytes,
        _ => return Err(format_error("unknown magic number (pcapng is not read)")),
    };
    let field = |bytes: &[u8], at: usize| {
        read_u32([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
    };
    let linktype = field(header, 20) & 0x0fff_ffff;
    let mut datagrams = Vec::new();
    let mut rest = &data[24..];
    while !rest.is_empty() {
        let record = rest
            .get(..16)
            .ok_or(format_error("cut inside a record header"))?;
        let captured = field(record, 8) as usize;
        let frame = rest
            .get(16..16 + captured)
            .ok_or(format_error("cut inside a packet"))?;
        rest = &rest[16 + captured..];
        let headers = link_headers(linktype, frame).ok_or_else(|| PcapError::LinkType {
            path: path.to_owned(),
            linktype,
        })?;
        if let Some(datagram) = udp_datagram(&headers, field(record, 0).into()) {
            datagrams.push(datagram);
        }
    }
    Ok(datagrams)
}

/// Parses one captured packet by its link type; None for a link type we do not read.
fn link_headers(linktype: u32, data: &[u8]) -> Option<Headers<'_>> {
    let ip_version = |data: &[u8]| match data.first().map(|b| b >> 4) {
        Some(6) => ETHERTYPE_IPV6,
        _ => ETHERTYPE_IPV4,
    };
    Some(match linktype {
        LINKTYPE_ETHERNET => packet::parse_ethernet(data),
        // Linux cooked capture: a 16-byte header whose last two bytes are the Ethernet type.
        LINKTYPE_LINUX_SLL => {
            let etype = data
                .get(14..16)
                .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
            packet::parse_ip(etype, data.get(16..).unwrap_or_default())
        }
        LINKTYPE_RAW | LINKTYPE_IPV4 | LINKTYPE_IPV6 => packet::parse_ip(ip_version(data), data),
        // BSD loopback: a 4-byte address family in host order, then IP.
        LINKTYPE_NULL | LINKTYPE_LOOP => {
            let ip = data.get(4..).unwrap_or_default();
            packet::parse_ip(ip_version(ip), ip)
        }
        _ => return None,
    })
}

fn udp_datagram(headers: &Headers<'_>, timestamp: u64) -> Option<PcapDatagram> {
    let (Some(src), Some(dst)) = (headers.src_addr, headers.dst_addr) else {
        return None;
    };
    if headers.proto != 17 || headers.later_fragment {
        return None;
    }
    Some(PcapDatagram {
        source: SocketAddr::new(src.to_canonical(), headers.src_port),
        destination: SocketAddr::new(dst.to_canonical(), headers.dst_port),
        timestamp,
        payload: headers.payload.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(relative: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/data/captures")
            .join(relative)
    }

    #[test]
    fn reads_the_netflow_v5_capture() {
        let datagrams = read_udp_datagrams(&capture("netflow/nfv5.pcap")).unwrap();
        assert_eq!(datagrams.len(), 1);
        let datagram = &datagrams[0];
        assert_eq!(datagram.destination.port(), 9990);
        assert_eq!(&datagram.payload[..2], &[0, 5]);
        // 24-byte header and 29 records of 48 bytes.
        assert_eq!(datagram.payload.len(), 24 + 29 * 48);
        assert_eq!(
            u16::from_be_bytes([datagram.payload[2], datagram.payload[3]]),
            29
        );
    }

    #[test]
    fn skips_what_is_not_udp() {
        // pmacct's BMP captures hold TCP sessions beside the IPFIX datagrams.
        let path = capture("pmacct/400-IPFIXv10-BMP-CISCO-SRv6-multiple-sources__traffic-00.pcap");
        let datagrams = read_udp_datagrams(&path).unwrap();
        assert!(!datagrams.is_empty());
        assert!(datagrams.iter().all(|d| d.payload.starts_with(&[0, 10])));
    }

    #[test]
    fn reads_captures_with_out_of_range_sub_second_times() {
        let path =
            capture("pmacct/403-IPFIXv10-BMP-IPv6-CISCO-locrib-peerdown-vrf__traffic-00.pcap");
        assert!(!read_udp_datagrams(&path).unwrap().is_empty());
    }

    #[test]
    fn a_missing_or_bad_file_is_a_named_error() {
        let err = read_udp_datagrams(Path::new("/nonexistent.pcap")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent.pcap"), "{err}");
        let not_pcap = std::env::temp_dir().join(format!("not-a-pcap-{}", std::process::id()));
        std::fs::write(&not_pcap, b"hello, this is not a capture").unwrap();
        let err = read_udp_datagrams(&not_pcap).unwrap_err();
        std::fs::remove_file(&not_pcap).unwrap();
        assert!(matches!(err, PcapError::Format { .. }), "{err}");
    }
}
