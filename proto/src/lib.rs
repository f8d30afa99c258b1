//! The flow schema shared by the agent, the provisioner and the tests.
//!
//! Each schema version is one `.proto` file beside this crate (`flow-v1.proto`, …).
//! Its text is the single source of truth: the Rust types below are generated
//! from it at build time, the provisioner serves it to ClickHouse through
//! `init.sh`, and every name that depends on the version (Kafka topic, ClickHouse
//! tables, `kafka_schema`) is derived here.

mod encode;
mod framing;
mod names;

pub use encode::EncodeDelimited;
pub use framing::{FramingError, decode_batch, encode_batch, encoded_len};
pub use names::{ClickHouseNames, SchemaVersion, VERSIONS, current, topic_name};

/// Version 1 of the flow schema, generated from `flow-v1.proto`.
pub mod v1 {
    #![allow(missing_docs, missing_debug_implementations, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/flowpipeline.v1.rs"));
}

/// The message the agent writes today.
pub type FlowMessage = v1::FlowMessageV1;
