//! `flow-provisioner`: prepares Kafka and ClickHouse, and serves what ClickHouse needs.
//!
//! Exit codes: 0 done (or, for `plan` and `status`, nothing differs); 1 a step failed
//! (the message names the broker or server); 2 the configuration is unusable (the
//! message names the key); 3 `plan` or `status` found differences from the config.

use std::path::PathBuf;
use std::process::ExitCode;

use argh::FromArgs;

use flow_provisioner::config::Config;
use flow_provisioner::{Mode, clickhouse, http, kafka};

/// Prepares the Kafka topic and ClickHouse for the flow pipeline, once per upgrade,
/// and serves what ClickHouse needs.
#[derive(FromArgs, Debug)]
struct Cli {
    /// print the version and the flow schema versions it knows, then exit
    #[argh(switch)]
    version: bool,
    #[argh(subcommand)]
    command: Option<Command>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum Command {
    Migrate(MigrateCommand),
    Plan(PlanCommand),
    Status(StatusCommand),
    Serve(ServeCommand),
    Prune(PruneCommand),
}

/// Creates or brings in line the Kafka topic, then applies the ClickHouse migrations.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "migrate")]
struct MigrateCommand {
    /// the configuration file (TOML); without it, the embedded local defaults
    #[argh(option)]
    config: Option<PathBuf>,
}

/// Prints what `migrate` would change, and changes nothing.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "plan")]
struct PlanCommand {
    /// the configuration file (TOML); without it, the embedded local defaults
    #[argh(option)]
    config: Option<PathBuf>,
}

/// Prints the topic and the ClickHouse servers' state against the configuration.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "status")]
struct StatusCommand {
    /// the configuration file (TOML); without it, the embedded local defaults
    #[argh(option)]
    config: Option<PathBuf>,
}

/// Serves init.sh, the schemas, the dictionaries and the Grafana proxy.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "serve")]
struct ServeCommand {
    /// the configuration file (TOML); without it, the embedded local defaults
    #[argh(option)]
    config: Option<PathBuf>,
}

/// Drops the Kafka tables and views of old schema versions, by a rule from the flags
/// or the configuration; refused while a version's topic holds unconsumed records.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "prune")]
struct PruneCommand {
    /// the configuration file (TOML); without it, the embedded local defaults
    #[argh(option)]
    config: Option<PathBuf>,
    /// keep the newest K schema versions (the current one among them)
    #[argh(option)]
    keep_last: Option<u32>,
    /// prune the versions whose newest flow is older than this (`30d`, `12h`)
    #[argh(option, from_str_fn(duration))]
    idle: Option<std::time::Duration>,
    /// prune even while a topic still holds unconsumed records
    #[argh(switch)]
    force: bool,
}

fn duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))
}

const FAILED: u8 = 1;
const BAD_CONFIG: u8 = 2;
const DIFFERENCES: u8 = 3;

fn main() -> ExitCode {
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
        return ExitCode::SUCCESS;
    }
    let Some(command) = cli.command else {
        eprintln!(
            "flow-provisioner: a command is needed (migrate, plan, status, serve, prune); see --help"
        );
        return ExitCode::from(BAD_CONFIG);
    };
    let path = match &command {
        Command::Migrate(c) => &c.config,
        Command::Plan(c) => &c.config,
        Command::Status(c) => &c.config,
        Command::Serve(c) => &c.config,
        Command::Prune(c) => &c.config,
    };
    let config = match path {
        Some(path) => Config::load(path).map_err(|e| format!("{}: {e}", path.display())),
        None => Config::parse("").map_err(|e| format!("embedded defaults: {e}")),
    };
    let config = match config {
        Ok(config) => config,
        Err(message) => {
            eprintln!("flow-provisioner: {message}");
            return ExitCode::from(BAD_CONFIG);
        }
    };
    match command {
        Command::Migrate(_) => provision(&config, Mode::Apply),
        Command::Plan(_) => provision(&config, Mode::Plan),
        Command::Status(_) => status(&config),
        Command::Serve(_) => match http::serve(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("flow-provisioner: serve: {e}");
                ExitCode::from(FAILED)
            }
        },
        Command::Prune(c) => prune(
            &config,
            clickhouse::PruneOptions {
                keep_last: c.keep_last,
                idle: c.idle,
                force: c.force,
            },
        ),
    }
}

fn prune(config: &Config, options: clickhouse::PruneOptions) -> ExitCode {
    let schema = clickhouse::Schema::embedded();
    let result = runtime().block_on(clickhouse::prune(
        config,
        options,
        schema,
        &mut std::io::stdout(),
    ));
    conclude(false, [result.map_err(|e| format!("clickhouse: {e}"))])
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can be built")
}

/// `migrate` and `plan`: the Kafka part, then the ClickHouse part, each reported;
/// a failure of one does not keep the other from running.
fn provision(config: &Config, mode: Mode) -> ExitCode {
    runtime().block_on(async {
        let kafka = kafka::migrate(&config.kafka, mode).await;
        let clickhouse = clickhouse::migrate(config, mode).await;
        conclude(
            mode == Mode::Plan,
            [
                kafka.map_err(|e| format!("kafka: {e}")),
                clickhouse.map_err(|e| format!("clickhouse: {e}")),
            ],
        )
    })
}

fn status(config: &Config) -> ExitCode {
    runtime().block_on(async {
        let kafka = kafka::status(&config.kafka).await;
        let clickhouse = clickhouse::status(config).await;
        conclude(
            true,
            [
                kafka.map_err(|e| format!("kafka: {e}")),
                clickhouse.map_err(|e| format!("clickhouse: {e}")),
            ],
        )
    })
}

/// The exit code of a run from its parts' outcomes (each a count of changes or
/// differences); differences count only when the run reports rather than applies.
fn conclude<const N: usize>(reporting: bool, parts: [Result<usize, String>; N]) -> ExitCode {
    let mut failed = false;
    let mut differences = 0;
    for part in parts {
        match part {
            Ok(count) => differences += count,
            Err(message) => {
                eprintln!("flow-provisioner: {message}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::from(FAILED)
    } else if reporting && differences > 0 {
        ExitCode::from(DIFFERENCES)
    } else {
        ExitCode::SUCCESS
    }
}
