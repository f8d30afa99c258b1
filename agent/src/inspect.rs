//! `flow-agent decode FILE.pcap…`: what an exporter sends, as the agent understands
//! it. Operators use it to check an exporter before pointing it at the agent; the
//! tests and the cross-build checks use it to compare decoders.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::process::ExitCode;

use argh::FromArgs;
use flow_proto::FlowMessage;
use flow_proto::v1::{FlowDirection, InterfaceBoundary};
use serde_json::{Map, Value, json};

use crate::decode::{
    Datagram, DecodeCounters, DecodeOptions, Decoder, ExporterAddressSource, Flows, Protocol,
    TimestampSource,
};
use crate::pcap::read_udp_datagrams;

/// Decodes the flow datagrams of pcap files and prints one JSON object per flow.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "decode")]
pub struct DecodeCommand {
    /// classic pcap files, read in order with one decoder (a template file, then its data)
    #[argh(positional)]
    files: Vec<PathBuf>,
    /// force the protocol: netflow-v5, netflow-v9, ipfix or sflow (default: recognised per datagram)
    #[argh(option, from_str_fn(parse_protocol))]
    protocol: Option<Protocol>,
    /// exporter address from the "datagram" source (default) or the "packet" (sFlow agent address)
    #[argh(
        option,
        default = "ExporterAddressSource::Datagram",
        from_str_fn(parse_exporter_address)
    )]
    exporter_address: ExporterAddressSource,
    /// time_received from the capture time, "received" (default), or the "flow" end
    #[argh(
        option,
        default = "TimestampSource::Received",
        from_str_fn(parse_timestamps)
    )]
    timestamps: TimestampSource,
    /// sampling rate for flows that carry none (default 1)
    #[argh(option, default = "1")]
    default_sampling_rate: u64,
    /// seconds a NetFlow v9/IPFIX data set may wait for its template, in capture time (default 0: not held)
    #[argh(option, default = "0")]
    hold_early_data_seconds: u64,
}

fn parse_protocol(value: &str) -> Result<Protocol, String> {
    [
        Protocol::NetflowV5,
        Protocol::NetflowV9,
        Protocol::Ipfix,
        Protocol::Sflow,
    ]
    .into_iter()
    .find(|p| p.as_str() == value)
    .ok_or_else(|| format!("unknown protocol {value:?}: netflow-v5, netflow-v9, ipfix or sflow"))
}

fn parse_exporter_address(value: &str) -> Result<ExporterAddressSource, String> {
    match value {
        "datagram" => Ok(ExporterAddressSource::Datagram),
        "packet" => Ok(ExporterAddressSource::Packet),
        _ => Err(format!("{value:?}: datagram or packet")),
    }
}

fn parse_timestamps(value: &str) -> Result<TimestampSource, String> {
    match value {
        "received" => Ok(TimestampSource::Received),
        "flow" => Ok(TimestampSource::Flow),
        _ => Err(format!("{value:?}: received or flow")),
    }
}

/// What a run saw, for the summary on stderr.
#[derive(Debug, Default)]
struct Summary {
    datagrams: u64,
    flows: u64,
    by_protocol: BTreeMap<&'static str, u64>,
    errors: BTreeMap<String, u64>,
}

impl DecodeCommand {
    /// Runs the command: 0 when every file was read, 1 when one could not be.
    pub fn execute(self) -> ExitCode {
        let options = DecodeOptions {
            exporter_address: self.exporter_address,
            timestamps: self.timestamps,
            default_sampling_rate: self.default_sampling_rate.max(1),
            hold_early_data_seconds: self.hold_early_data_seconds,
        };
        let mut decoder = Decoder::default();
        let mut counters = DecodeCounters::default();
        let mut summary = Summary::default();
        let mut flows = Flows::default();
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        for file in &self.files {
            let datagrams = match read_udp_datagrams(file) {
                Ok(datagrams) => datagrams,
                Err(error) => {
                    eprintln!("flow-agent decode: {error}");
                    return ExitCode::FAILURE;
                }
            };
            for captured in &datagrams {
                let datagram = Datagram {
                    source: captured.source,
                    received: captured.timestamp,
                    payload: &captured.payload,
                };
                flows.clear();
                summary.datagrams += 1;
                match decoder.decode(
                    &datagram,
                    self.protocol,
                    &options,
                    &mut flows,
                    &mut counters,
                ) {
                    Ok(protocol) => *summary.by_protocol.entry(protocol.as_str()).or_default() += 1,
                    Err(error) => {
                        let protocol = error.protocol().map_or("unknown", |p| p.as_str());
                        *summary
                            .errors
                            .entry(format!("{protocol}/{}", error.kind()))
                            .or_default() += 1;
                    }
                }
                for flow in &flows {
                    summary.flows += 1;
                    if writeln!(out, "{}", flow_to_json(flow)).is_err() {
                        return ExitCode::SUCCESS; // stdout closed (| head): nothing more to say
                    }
                }
            }
        }
        let _ = out.flush();
        let early = if self.hold_early_data_seconds > 0 {
            format!(
                ", early sets held/decoded/dropped: {}/{}/{}",
                counters.early_sets_held, counters.early_sets_decoded, counters.early_sets_dropped
            )
        } else {
            String::new()
        };
        eprintln!(
            "datagrams: {}, flows: {}, by protocol: {:?}, errors: {:?}, template misses: {}, counter samples: {}, skipped records: {}{early}",
            summary.datagrams,
            summary.flows,
            summary.by_protocol,
            summary.errors,
            counters.template_misses,
            counters.counter_samples,
            counters.skipped_records
        );
        ExitCode::SUCCESS
    }
}

fn ip_text(bytes: &[u8]) -> Value {
    match <[u8; 16]>::try_from(bytes) {
        Ok(octets) => {
            let ip: IpAddr = Ipv6Addr::from(octets).to_canonical();
            json!(ip.to_string())
        }
        Err(_) => json!(bytes),
    }
}

fn mac_text(mac: u64) -> Value {
    let b = mac.to_be_bytes();
    json!(format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[2], b[3], b[4], b[5], b[6], b[7]
    ))
}

/// A flow as JSON, keys named as in the `.proto`, values as an operator reads them
/// (addresses as IP text, MACs as aa:bb:…, enums by name). As in protobuf's JSON
/// mapping, fields at their default value are left out.
pub fn flow_to_json(flow: &FlowMessage) -> Value {
    let mut map = Map::new();
    macro_rules! numbers {
        ($($field:ident),* $(,)?) => {$(
            if flow.$field != 0 {
                map.insert(stringify!($field).into(), json!(flow.$field));
            }
        )*};
    }
    macro_rules! texts {
        ($($field:ident),* $(,)?) => {$(
            if !flow.$field.is_empty() {
                map.insert(stringify!($field).into(), json!(flow.$field));
            }
        )*};
    }
    macro_rules! addresses {
        ($($field:ident),* $(,)?) => {$(
            if !flow.$field.is_empty() {
                map.insert(stringify!($field).into(), ip_text(&flow.$field));
            }
        )*};
    }
    numbers!(
        time_received,
        flow_start,
        flow_end,
        sequence_number,
        sampling_rate
    );
    addresses!(exporter_address);
    texts!(exporter_name, exporter_group);
    numbers!(observation_domain, in_if, out_if);
    texts!(
        in_if_name,
        out_if_name,
        in_if_description,
        out_if_description
    );
    numbers!(in_if_speed, out_if_speed);
    for (key, value) in [
        ("in_if_boundary", flow.in_if_boundary),
        ("out_if_boundary", flow.out_if_boundary),
    ] {
        if value != 0 {
            let name = InterfaceBoundary::try_from(value)
                .map_or_else(|_| json!(value), |b| json!(b.as_str_name()));
            map.insert(key.into(), name);
        }
    }
    texts!(
        in_if_provider,
        out_if_provider,
        in_if_connectivity,
        out_if_connectivity
    );
    numbers!(bytes, packets);
    addresses!(src_addr, dst_addr);
    numbers!(src_net_mask, dst_net_mask, src_as, dst_as);
    addresses!(next_hop);
    numbers!(
        etype, proto, ip_tos, ip_ttl, src_port, dst_port, tcp_flags, icmp_type, icmp_code,
        src_vlan, dst_vlan
    );
    for (key, mac) in [("src_mac", flow.src_mac), ("dst_mac", flow.dst_mac)] {
        if mac != 0 {
            map.insert(key.into(), mac_text(mac));
        }
    }
    if !flow.mpls_labels.is_empty() {
        map.insert("mpls_labels".into(), json!(flow.mpls_labels));
    }
    numbers!(forwarding_status);
    if flow.flow_direction != 0 {
        let name = FlowDirection::try_from(flow.flow_direction)
            .map_or_else(|_| json!(flow.flow_direction), |d| json!(d.as_str_name()));
        map.insert("flow_direction".into(), name);
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn json_uses_proto_names_and_readable_values() {
        let flow = FlowMessage {
            src_addr: crate::decode::address_bytes(Ipv4Addr::new(10, 0, 0, 1).into()),
            dst_addr: crate::decode::address_bytes("2001:db8::1".parse().unwrap()),
            src_port: 443,
            src_mac: 0x0011_2233_4455,
            in_if_boundary: InterfaceBoundary::External as i32,
            flow_direction: FlowDirection::Egress as i32,
            mpls_labels: vec![16, 17],
            ..Default::default()
        };
        assert_eq!(
            flow_to_json(&flow),
            json!({
                "src_addr": "10.0.0.1", "dst_addr": "2001:db8::1", "src_port": 443,
                "src_mac": "00:11:22:33:44:55", "in_if_boundary": "EXTERNAL",
                "flow_direction": "EGRESS", "mpls_labels": [16, 17],
            })
        );
    }
}
