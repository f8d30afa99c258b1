//! `flow-provisioner`: prepares Kafka and ClickHouse, and serves what ClickHouse needs.

use argh::FromArgs;

/// Prepares the Kafka topic and ClickHouse for the flow pipeline, once per upgrade.
#[derive(FromArgs, Debug)]
struct Cli {
    /// print the version and the flow schema versions it knows, then exit
    #[argh(switch)]
    version: bool,
}

fn main() {
    let cli: Cli = argh::from_env();
    if cli.version {
        let versions: Vec<String> = flow_proto::VERSIONS
            .iter()
            .map(ToString::to_string)
            .collect();
        println!(
            "flow-provisioner {} (flow schemas {})",
            env!("CARGO_PKG_VERSION"),
            versions.join(", ")
        );
    }
}
