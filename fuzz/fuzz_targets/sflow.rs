//! Any bytes as an sFlow v5 datagram.
#![no_main]

use std::net::SocketAddr;

use flow_agent::decode::{Datagram, DecodeCounters, DecodeOptions, Decoder, Protocol};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| {
    let datagram = Datagram {
        source: SocketAddr::from(([192, 0, 2, 1], 6343)),
        received: 0,
        payload,
    };
    let mut flows = flow_agent::decode::Flows::default();
    let _ = Decoder::default().decode(
        &datagram,
        Some(Protocol::Sflow),
        &DecodeOptions::default(),
        &mut flows,
        &mut DecodeCounters::default(),
    );
});
