//! The main job end to end, at a small volume: the same pipeline `./run-demo` runs
//! (broker, ClickHouse engine, `flow-provisioner serve` and `migrate`, the served
//! init.sh, `flow-agent run`, real exporters and captures), and ClickHouse, which
//! consumes the topic itself, stores exactly the flows, bytes and packets sent.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use flow_tests::pipeline::{Pipeline, TrafficPlan};

#[test]
fn clickhouse_stores_exactly_what_the_exporters_sent() {
    let mut pipeline = Pipeline::start(&|what| eprintln!("{what}"));
    let never = AtomicBool::new(false);
    let plan = TrafficPlan {
        synthetic_flows: 300,
        captures: true,
    };
    let sent = pipeline.send_traffic(plan, &never, &|what, totals| {
        eprintln!("{what}: {totals}");
        assert!(totals.flows > 0, "{what} sent no flow");
    });
    let stored = pipeline.wait_stored(sent, Duration::from_secs(120), &never, &|what| {
        eprintln!("{what}")
    });
    assert_eq!(stored, sent, "stored vs sent\n{}", pipeline.logs());

    let table = pipeline.top_talkers(20);
    eprintln!("{table}");
    for expected in ["TCP", "UDP", "lab clients"] {
        assert!(table.contains(expected), "{expected} missing from\n{table}");
    }
}
