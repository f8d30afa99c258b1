//! Any bytes as a sampled packet header (sFlow raw headers, IPFIX dataLinkFrameSection).
#![no_main]

use flow_agent::decode::packet::{parse_ethernet, parse_ip};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| {
    let mut flow = flow_proto::FlowMessage::default();
    parse_ethernet(frame).fill(&mut flow);
    parse_ip(0x0800, frame).fill(&mut flow);
    parse_ip(0x86dd, frame).fill(&mut flow);
});
