//! Any bytes through one NetFlow v5/v9/IPFIX decoder, as a few datagrams in a
//! row: the input is cut at each "NFSP" marker, so that one input can hold
//! templates and options in a datagram and the data they govern in the next,
//! with a fresh template cache per input (failures reproduce from one file),
//! and data held for templates that come in a later one.
//! A raw payload with no marker is one datagram, so captures seed it as is.
#![no_main]

use std::net::SocketAddr;

use flow_agent::decode::netflow::{NetflowDecoder, TemplateLimits};
use flow_agent::decode::{Datagram, DecodeCounters, DecodeOptions};
use libfuzzer_sys::fuzz_target;

const SEPARATOR: &[u8] = b"NFSP";

fuzz_target!(|input: &[u8]| {
    let mut decoder = NetflowDecoder::new(TemplateLimits::default());
    // The hold on: data before its template is kept, then decoded by a later datagram.
    let options = DecodeOptions {
        hold_early_data_seconds: 5,
        ..DecodeOptions::default()
    };
    let mut counters = DecodeCounters::default();
    let mut flows = flow_agent::decode::Flows::default();
    let source = SocketAddr::from(([192, 0, 2, 1], 2055));
    let mut rest = input;
    loop {
        let end = rest
            .windows(SEPARATOR.len())
            .position(|window| window == SEPARATOR)
            .unwrap_or(rest.len());
        let datagram = Datagram {
            source,
            received: 1_790_000_000,
            payload: &rest[..end],
        };
        flows.clear();
        let _ = decoder.decode(&datagram, &options, &mut flows, &mut counters);
        match rest.get(end + SEPARATOR.len()..) {
            Some(next) => rest = next,
            None => break,
        }
    }
});
