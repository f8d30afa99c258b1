//! `flow-agent`: receives flows at the edge and produces them to Kafka.

use argh::FromArgs;

/// Receives NetFlow v5/v9, IPFIX and sFlow v5 and produces them to the versioned Kafka topic.
#[derive(FromArgs, Debug)]
struct Cli {
    /// print the version and the flow schema version, then exit
    #[argh(switch)]
    version: bool,
}

fn main() {
    let cli: Cli = argh::from_env();
    if cli.version {
        println!(
            "flow-agent {} (flow schema {}, topic {})",
            env!("CARGO_PKG_VERSION"),
            flow_proto::current(),
            flow_proto::topic_name("<base>")
        );
    }
}
