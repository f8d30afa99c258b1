//! `flow-agent`: receives flows at the edge and produces them to Kafka.

use std::process::ExitCode;

use argh::FromArgs;

use flow_agent::inspect::DecodeCommand;
use flow_agent::run::{CheckCommand, RunCommand};

/// mimalloc rather than the C library's allocator: the agent allocates and
/// frees its chunks, records and requests continuously, and musl's (that of
/// the static builds) hands large blocks back to the kernel at every free, so
/// that they come back as page faults: 40% of a static agent's CPU went to
/// page faults, mmap and munmap (measured in `cross/README.md`).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Receives NetFlow v5/v9, IPFIX and sFlow v5 and produces them to the versioned Kafka topic.
#[derive(FromArgs, Debug)]
struct Cli {
    /// print the version and the flow schema version, then exit
    #[argh(switch)]
    version: bool,
    #[argh(subcommand)]
    command: Option<Command>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum Command {
    Run(RunCommand),
    Check(CheckCommand),
    Decode(DecodeCommand),
}

fn main() -> ExitCode {
    let cli: Cli = argh::from_env();
    if cli.version {
        println!(
            "flow-agent {} (flow schema {}, topic {})",
            env!("CARGO_PKG_VERSION"),
            flow_proto::current(),
            flow_proto::topic_name("<base>")
        );
        return ExitCode::SUCCESS;
    }
    match cli.command {
        Some(Command::Run(command)) => command.execute(),
        Some(Command::Check(command)) => command.execute(),
        Some(Command::Decode(command)) => command.execute(),
        None => {
            eprintln!("flow-agent: a command is needed (run, check, decode); see --help");
            ExitCode::FAILURE
        }
    }
}
