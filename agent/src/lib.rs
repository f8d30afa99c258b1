//! The flow agent: receives flows from exporters over UDP, decodes them into
//! `FlowMessage`s and produces them to the versioned Kafka topic.
//!
//! - [`decode`]: one decoder per protocol, turning a datagram into flows.

pub mod decode;
