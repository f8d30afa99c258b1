//! The main job: the whole pipeline on one machine, on embedded defaults, with real
//! traffic, ending with a top-talkers table from ClickHouse and totals checked
//! against what was sent. Ctrl-C stops it cleanly at any point; `--keep` leaves the
//! pipeline running after the table until Ctrl-C.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flow_tests::pipeline::{Pipeline, TrafficPlan};

/// Prints a step; the lines that detail one (indented) go under it.
fn step(what: &str) {
    if what.starts_with(' ') {
        println!("  {what}");
    } else {
        println!("==> {what}");
    }
}

fn main() -> ExitCode {
    let keep = std::env::args().any(|arg| arg == "--keep");
    let stop = watch_for_stop_signal();
    let stopped = || stop.load(Ordering::Relaxed);
    let mut pipeline = Pipeline::start(&|what| step(what));

    step(
        "sending traffic: real exporters (softflowd, pmacct) on synthetic and live traffic, and real captures",
    );
    let plan = TrafficPlan {
        synthetic_flows: 5_000,
        captures: true,
    };
    let sent = pipeline.send_traffic(plan, &stop, &|what, totals| {
        println!("    {what}: {totals}");
    });
    println!("    sent in all: {sent}");

    step("waiting for ClickHouse to consume the topic through the Kafka table and its view");
    let stored = pipeline.wait_stored(sent, Duration::from_secs(180), &stop, &|what| {
        println!("{what}")
    });
    if stopped() {
        step("interrupted: stopping everything");
        return ExitCode::FAILURE;
    }

    step(
        "top talkers, from ClickHouse (AS and protocol names through the provisioner's dictionaries)",
    );
    print!("{}", pipeline.top_talkers(15));
    println!("    sent:   {sent}");
    println!("    stored: {stored}");
    let matched = stored == sent;
    if matched {
        step("the stored totals match what was sent");
    } else {
        step("MISMATCH between what was sent and what ClickHouse stored");
        eprintln!("{}", pipeline.logs());
    }
    if keep && matched {
        step(&format!(
            "the pipeline stays up (ClickHouse {}, Kafka {}, provisioner {}, work dir {}); Ctrl-C stops it",
            pipeline.clickhouse_url(),
            pipeline.bootstrap(),
            pipeline.serve_url,
            pipeline.dir().display()
        ));
        while !stopped() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    step("stopping everything");
    drop(pipeline);
    if matched {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A flag set by SIGINT or SIGTERM, so that every step can end early and the
/// pipeline's processes are stopped in order when it is dropped.
fn watch_for_stop_signal() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        runtime.block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        });
        flag.store(true, Ordering::Relaxed);
    });
    stop
}
