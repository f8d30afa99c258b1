//! The main job: runs the pipeline locally on embedded defaults and shows what it does.
//!
//! For now it starts the real services (Kafka broker, ClickHouse engine), puts the
//! flow schemas where ClickHouse reads them, and shows the two binaries. With
//! `--keep` the services stay up until Ctrl-C.

use std::process::Command;

use flow_tests::services::{ClickHouse, KafkaBroker};

fn step(what: &str) {
    println!("==> {what}");
}

fn show_help(binary: &str) {
    let path = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(binary)))
        .filter(|path| path.exists());
    let Some(path) = path else {
        println!("    ({binary} not built next to the demo: run `cargo build --workspace --bins`)");
        return;
    };
    let output = Command::new(&path).arg("--help").output();
    match output {
        Ok(output) => print!("{}", String::from_utf8_lossy(&output.stdout)),
        Err(error) => println!("    cannot run {}: {error}", path.display()),
    }
}

fn main() {
    let keep = std::env::args().any(|arg| arg == "--keep");
    step("starting the Kafka broker (Tansu, memory storage)");
    let broker = KafkaBroker::start();
    println!("    bootstrap {}", broker.bootstrap);
    step("starting the ClickHouse engine");
    let clickhouse = ClickHouse::start();
    clickhouse.write_schemas();
    println!(
        "    {} (format_schemas: {})",
        clickhouse.url,
        clickhouse.schemas_dir.display()
    );
    let version = flow_proto::current();
    println!(
        "    schema {version}: topic {}, table {}, kafka_schema '{}'",
        version.topic("flows"),
        version.clickhouse().raw_table,
        version.clickhouse().kafka_schema
    );
    step("flow-agent --help");
    show_help("flow-agent");
    step("flow-provisioner --help");
    show_help("flow-provisioner");
    if keep {
        step("services up; Ctrl-C stops them");
        wait_for_stop_signal();
    }
    step("stopping the services");
}

/// Blocks until SIGINT or SIGTERM.
fn wait_for_stop_signal() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    });
}
