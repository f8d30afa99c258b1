//! Any bytes, from two exporters, through the decoder the listeners use: protocol
//! detection, NetFlow v5/v9/IPFIX with its template cache, sFlow. The first byte
//! picks the exporter, so templates learned from one input meet data of the next.
#![no_main]

use std::net::SocketAddr;

use flow_agent::decode::{Datagram, DecodeCounters, DecodeOptions, Decoder};
use libfuzzer_sys::fuzz_target;

thread_local! {
    static DECODER: std::cell::RefCell<Decoder> = std::cell::RefCell::new(Decoder::default());
}

fuzz_target!(|data: &[u8]| {
    let Some((&exporter, payload)) = data.split_first() else {
        return;
    };
    let source = SocketAddr::from(([192, 0, 2, exporter % 2], 2055));
    let datagram = Datagram {
        source,
        received: 1_790_000_000,
        payload,
    };
    let mut flows = flow_agent::decode::Flows::default();
    DECODER.with_borrow_mut(|decoder| {
        let _ = decoder.decode(
            &datagram,
            None,
            &DecodeOptions::default(),
            &mut flows,
            &mut DecodeCounters::default(),
        );
    });
});
