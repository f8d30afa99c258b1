//! End to end, over loopback: `flow-agent run` (into the real broker, lz4 batches) beside
//! pmacct's collector (`nfacctd`, or `sfacctd` for sFlow) and nfdump's `nfcapd`, on the
//! same datagrams, measured the same way.
//!
//! `cargo bench -p flow-tests --bench pipeline` (a few minutes) prints, per dataset and
//! collector, the highest rate sustained with no drop, the collector's CPU time per flow
//! and flows per CPU-second (one core), and its resident memory; then the ratios.
//!
//! - Datagrams: a synthetic capture exported by softflowd (NetFlow v9, IPFIX) and by
//!   pmacct's sFlow probe (`flow_tests::traffic`), sent in a loop with sendmmsg by this
//!   process pinned to core 0; every collector runs pinned to core 1 (`taskset`), the
//!   broker beside the sender so that it does not take the collector's core.
//! - No drop: the collector socket's kernel drop counter (/proc/net/udp) did not move, and
//!   for the agent every flow sent came out of it into Kafka (`/metrics`: decoded =
//!   produced, nothing dropped); for pmacct, its log reports no lost data between its
//!   core and plugin. The search starts at the sender's ceiling and halves, then bisects.
//! - CPU: utime + stime from /proc/PID/stat over a trial (and pmacct's plugin process),
//!   divided by the flows sent, the least of three clean trials at the best rate; memory:
//!   VmHWM and VmRSS from /proc/PID/status at the end.
//! - nfacctd writes with its print plugin to /dev/null: its Kafka plugin links Debian's
//!   librdkafka 2.0.2, which cannot talk to the test broker (Tansu). nfcapd writes its
//!   files (uncompressed) to a temporary directory; nfdump has no sFlow collector in
//!   Debian (no sfcapd), so nfcapd sits out the sFlow dataset.
//!
//! `FLOW_BENCH_TRIAL_MS` sets each trial's length (default 2000); `FLOW_BENCH_ONLY`, a
//! comma-separated list of `agent`, `pmacct`, `nfcapd`, runs only those collectors;
//! `FLOW_BENCH_AGENT` runs that `flow-agent` binary instead of this profile's (to profile
//! a build that keeps its symbols).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use flow_agent::decode::{Datagram, DecodeCounters, DecodeOptions, Decoder, Flows};
use flow_tests::agent::{free_udp_port, sum};
use flow_tests::services::{KafkaBroker, Process, free_port, http_get};
use flow_tests::traffic::{
    ReplayStats, SyntheticCapture, TrafficShape, pmacct_sflow_datagrams, replay,
    softflowd_datagrams,
};
use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;
use tempfile::TempDir;

const SENDER_CORE: usize = 0;
const COLLECTOR_CORE: &str = "1";
/// Every collector's socket receive buffer (the machine's net.core.rmem_max).
const RECEIVE_BUFFER: usize = 4 << 20;
/// Trials per search, the first at the sender's ceiling.
const MAX_TRIALS: usize = 7;
/// A bisection stops when the bounds are this close.
const PRECISION: f64 = 1.1;
/// Trials at the best rate found, of which the least CPU per flow counts.
const REPEATS: usize = 3;

/// One dataset: the datagrams an exporter sent, and the flows in each.
struct Dataset {
    name: &'static str,
    sflow: bool,
    datagrams: Vec<Vec<u8>>,
    flows: Vec<u32>,
}

/// The collectors compared.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Agent,
    Pmacct,
    Nfcapd,
}

impl Kind {
    fn name(self, dataset: &Dataset) -> &'static str {
        match (self, dataset.sflow) {
            (Kind::Agent, _) => "flow-agent",
            (Kind::Pmacct, false) => "nfacctd",
            (Kind::Pmacct, true) => "sfacctd",
            (Kind::Nfcapd, _) => "nfcapd",
        }
    }
}

/// A running collector on core 1, and what it needs around it.
struct Collector {
    kind: Kind,
    process: Process,
    port: u16,
    /// The agent's `/metrics` port.
    http: Option<u16>,
    log: PathBuf,
    // Field order is drop order: the collector stops before its broker.
    _broker: Option<KafkaBroker>,
    _dir: TempDir,
}

/// Counters read before and after a trial.
#[derive(Debug, Clone, Copy, Default)]
struct Reading {
    cpu_ticks: u64,
    socket_drops: u64,
    /// The agent's flows decoded, produced, dropped; pmacct's "missing data" lines.
    decoded: u64,
    produced: u64,
    dropped: u64,
}

/// What one trial at one rate showed.
#[derive(Debug, Clone, Copy)]
struct Trial {
    sent: ReplayStats,
    cpu: Duration,
    socket_drops: u64,
    /// Flows the collector lost after the socket (agent: sent - produced).
    lost: u64,
}

impl Trial {
    fn rate(&self) -> f64 {
        self.sent.flows as f64 / self.sent.elapsed.as_secs_f64()
    }

    fn clean(&self) -> bool {
        self.socket_drops == 0 && self.lost == 0
    }

    fn ns_per_flow(&self) -> f64 {
        self.cpu.as_nanos() as f64 / self.sent.flows.max(1) as f64
    }
}

/// A collector's figures on one dataset.
struct Figures {
    collector: &'static str,
    /// The highest clean trial, and whether the sender could not go faster.
    best: Option<Trial>,
    sender_bound: bool,
    hwm_kib: u64,
    rss_kib: u64,
}

fn main() {
    let trial_length = Duration::from_millis(
        std::env::var("FLOW_BENCH_TRIAL_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000),
    );
    // Pinned before anything starts: the broker inherits the sender's core.
    let mut core = CpuSet::new();
    core.set(SENDER_CORE).expect("core 0 exists");
    sched_setaffinity(Pid::from_raw(0), &core).expect("pin the sender to core 0");

    let only = std::env::var("FLOW_BENCH_ONLY").unwrap_or_default();
    let wanted = |kind: Kind| {
        only.is_empty()
            || only
                .split(',')
                .any(|k| k.trim() == format!("{kind:?}").to_lowercase())
    };
    let datasets = datasets();
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the sender");
    let mut table = Vec::new();
    for dataset in &datasets {
        let flows: u64 = dataset.flows.iter().map(|&f| u64::from(f)).sum();
        eprintln!(
            "\n== {}: {} datagrams, {} flows a cycle ({:.1} flows a datagram)",
            dataset.name,
            dataset.datagrams.len(),
            flows,
            flows as f64 / dataset.datagrams.len() as f64
        );
        let mut results = Vec::new();
        for kind in [Kind::Agent, Kind::Pmacct, Kind::Nfcapd] {
            if !wanted(kind) || (kind == Kind::Nfcapd && dataset.sflow) {
                continue;
            }
            let mut collector = Collector::start(kind, dataset);
            results.push(collector.search(&socket, dataset, trial_length));
        }
        table.push((dataset.name, results));
    }
    print_table(&table);
}

/// The three datasets, from one synthetic capture, with each datagram's flow count as
/// the agent's decoder finds it (templates learned in order, as a collector would).
fn datasets() -> Vec<Dataset> {
    let synthetic = SyntheticCapture::write(TrafficShape::default());
    let capture = &synthetic.path;
    eprintln!(
        "synthetic traffic: {} packets, {} flows",
        synthetic.packets,
        TrafficShape::default().flows
    );
    let dataset = |name, sflow, datagrams: Vec<Vec<u8>>| {
        let mut decoder = Decoder::default();
        let mut counters = DecodeCounters::default();
        let mut out = Flows::default();
        let source = SocketAddr::from((Ipv4Addr::LOCALHOST, 9));
        let flows = datagrams
            .iter()
            .map(|payload| {
                out.clear();
                let datagram = Datagram {
                    source,
                    received: 1_790_000_000,
                    payload,
                };
                decoder
                    .decode(
                        &datagram,
                        None,
                        &DecodeOptions::default(),
                        &mut out,
                        &mut counters,
                    )
                    .unwrap_or_else(|e| panic!("{name}: the agent's decoder refused: {e}"));
                out.len() as u32
            })
            .collect();
        Dataset {
            name,
            sflow,
            datagrams,
            flows,
        }
    };
    vec![
        dataset(
            "NetFlow v9 (softflowd)",
            false,
            softflowd_datagrams(capture, 9),
        ),
        dataset("IPFIX (softflowd)", false, softflowd_datagrams(capture, 10)),
        dataset(
            "sFlow v5 (pmacct sfprobe)",
            true,
            pmacct_sflow_datagrams(capture, 1),
        ),
    ]
}

impl Collector {
    fn start(kind: Kind, dataset: &Dataset) -> Collector {
        let dir = tempfile::tempdir().expect("temporary directory");
        let port = free_udp_port();
        let log = dir.path().join("collector.log");
        let mut command = Command::new("taskset");
        command.args(["-c", COLLECTOR_CORE]);
        let mut broker = None;
        let mut http = None;
        match kind {
            Kind::Agent => {
                let kafka = KafkaBroker::start();
                let http_port = free_port();
                let text = agent_config(&kafka.bootstrap, port, http_port);
                let topic = flow_agent::config::Config::parse(&text)
                    .expect("the bench's agent.toml")
                    .kafka
                    .topic();
                tokio::runtime::Runtime::new()
                    .expect("a runtime")
                    .block_on(kafka.create_topic(&topic, 1));
                let path = dir.path().join("agent.toml");
                std::fs::write(&path, text).expect("write agent.toml");
                let binary = std::env::var_os("FLOW_BENCH_AGENT")
                    .map_or_else(flow_tests::agent::binary, PathBuf::from);
                command.arg(binary).arg("run").arg("--config").arg(path);
                broker = Some(kafka);
                http = Some(http_port);
            }
            Kind::Pmacct => {
                let (program, prefix) = if dataset.sflow {
                    ("sfacctd", "sfacctd")
                } else {
                    ("nfacctd", "nfacctd")
                };
                let path = dir.path().join("pmacct.conf");
                std::fs::write(&path, pmacct_config(prefix, port, dir.path()))
                    .expect("write the pmacct configuration");
                command.arg(program).arg("-f").arg(path);
            }
            Kind::Nfcapd => {
                let flows_dir = dir.path().join("flows");
                std::fs::create_dir(&flows_dir).expect("nfcapd's directory");
                command
                    .arg("nfcapd")
                    .args(["-b", "127.0.0.1", "-p", &port.to_string()])
                    .arg("-w")
                    .arg(&flows_dir)
                    .args(["-B", &RECEIVE_BUFFER.to_string(), "-t", "3600"]);
            }
        }
        let process = Process::spawn(kind.name(dataset), command, &log);
        let mut collector = Collector {
            kind,
            process,
            port,
            http,
            log,
            _broker: broker,
            _dir: dir,
        };
        collector.wait_listening();
        collector
    }

    /// Waits until the collector's socket exists (and, for the agent, `/metrics` answers).
    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.process.assert_running();
            let metrics = self
                .http
                .is_none_or(|port| http_get(port, "/metrics").is_some());
            if metrics && socket_drops(self.port).is_some() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{:?} never listened:\n{}",
                self.kind,
                self.process.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn read(&self) -> Reading {
        let pids = process_tree(self.process.pid());
        let mut reading = Reading {
            cpu_ticks: pids.iter().map(|&pid| cpu_ticks(pid)).sum(),
            socket_drops: socket_drops(self.port).expect("the collector's socket"),
            ..Reading::default()
        };
        if let Some(port) = self.http {
            let metrics = http_get(port, "/metrics").expect("the agent's /metrics");
            reading.decoded = sum(&metrics, "flow_agent_flows_decoded_total{");
            reading.produced = sum(&metrics, "flow_agent_flows_produced_total");
            reading.dropped = sum(&metrics, "flow_agent_flows_dropped_total{");
        } else if self.kind == Kind::Pmacct {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            reading.dropped = log.matches("missing data").count() as u64;
        }
        reading
    }

    /// Waits until what was sent has gone through: for the agent, until every decoded
    /// flow is produced or dropped and the decoded count stops moving; for the others,
    /// until their CPU time stops moving. Bounded: a stuck collector shows as lost flows.
    fn settle(&self, before: &Reading, sent: u64) -> Reading {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last = self.read();
        loop {
            std::thread::sleep(Duration::from_millis(if self.http.is_some() {
                100
            } else {
                300
            }));
            let now = self.read();
            let done = match self.kind {
                Kind::Agent => {
                    let decoded = now.decoded - before.decoded;
                    now.decoded == last.decoded
                        && now.produced + now.dropped >= now.decoded
                        && (decoded >= sent || now.socket_drops > before.socket_drops)
                }
                _ => now.cpu_ticks == last.cpu_ticks,
            };
            if done || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }

    fn trial(&self, socket: &UdpSocket, dataset: &Dataset, rate: u64, length: Duration) -> Trial {
        let before = self.read();
        let target = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let sent = replay(
            socket,
            target,
            &dataset.datagrams,
            &dataset.flows,
            rate,
            length,
        )
        .expect("replay");
        let after = self.settle(&before, sent.flows);
        let lost = match self.kind {
            Kind::Agent => sent
                .flows
                .saturating_sub(after.produced - before.produced)
                .max(after.dropped - before.dropped),
            _ => after.dropped - before.dropped,
        };
        let trial = Trial {
            sent,
            cpu: ticks_to_duration(after.cpu_ticks - before.cpu_ticks),
            socket_drops: after.socket_drops - before.socket_drops,
            lost,
        };
        eprintln!(
            "  {:<10} asked {:>6} sent {:>6} k flows/s: socket drops {:>7}, lost after it {:>8}, \
             {:>6.0} ns CPU a flow",
            self.kind.name(dataset),
            if rate == 0 {
                "max".to_owned()
            } else {
                (rate / 1000).to_string()
            },
            (trial.rate() / 1000.0) as u64,
            trial.socket_drops,
            trial.lost,
            trial.ns_per_flow()
        );
        trial
    }

    /// The highest clean rate: first as fast as the sender goes; if that drops, halve
    /// until clean, then bisect between the clean and the dropping rate.
    fn search(&mut self, socket: &UdpSocket, dataset: &Dataset, length: Duration) -> Figures {
        // A first short pass teaches templates and grows buffers.
        self.trial(socket, dataset, 100_000, Duration::from_millis(300));
        let ceiling = self.trial(socket, dataset, 0, length);
        let mut best = ceiling.clean().then_some(ceiling);
        // The rate asked of the sender for `best` (0: as fast as it can).
        let mut best_asked = 0;
        let sender_bound = best.is_some();
        let mut high = ceiling.rate();
        let mut low = 0.0f64;
        let mut trials = 1;
        while best.is_none_or(|b| b.rate() * PRECISION < high)
            && trials < MAX_TRIALS
            && !sender_bound
        {
            let rate = if low == 0.0 {
                high / 2.0
            } else {
                (low + high) / 2.0
            };
            let mut trial = self.trial(socket, dataset, rate as u64, length);
            if trial.cpu.is_zero() && self.kind != Kind::Agent {
                // Seen with nfcapd after an overload: alive, but it reads nothing more.
                eprintln!(
                    "  {} took no CPU time: stalled, restarting it",
                    self.kind.name(dataset)
                );
                *self = Collector::start(self.kind, dataset);
                self.trial(socket, dataset, 100_000, Duration::from_millis(300));
                trial = self.trial(socket, dataset, rate as u64, length);
            }
            trials += 1;
            if trial.clean() {
                low = trial.rate();
                best = Some(trial);
                best_asked = rate as u64;
            } else {
                high = rate;
            }
        }
        // The best rate again: its CPU figure is the least of REPEATS clean trials, since a
        // neighbour on this shared machine slows a trial down (caches, memory bandwidth,
        // stolen time), never speeds it up.
        if let Some(mut least) = best {
            for _ in 1..REPEATS {
                let again = self.trial(socket, dataset, best_asked, length);
                if again.clean() && again.ns_per_flow() < least.ns_per_flow() {
                    least = again;
                }
            }
            best = Some(least);
        }
        let (hwm_kib, rss_kib) = process_tree(self.process.pid())
            .iter()
            .map(|&pid| memory_kib(pid))
            .fold((0, 0), |(h, r), (ph, pr)| (h + ph, r + pr));
        self.process.assert_running();
        Figures {
            collector: self.kind.name(dataset),
            best,
            sender_bound,
            hwm_kib,
            rss_kib,
        }
    }
}

fn agent_config(brokers: &str, port: u16, http: u16) -> String {
    format!(
        r#"[kafka]
brokers = ["{brokers}"]
topic_base = "bench"
compression = "lz4"

[buffer]
max_flows = 1000000

[[listeners]]
address = "127.0.0.1:{port}"
receive_buffer_bytes = {RECEIVE_BUFFER}

[http]
listen = "127.0.0.1:{http}"
"#
    )
}

/// nfacctd or sfacctd with the print plugin to /dev/null, aggregating by 5-tuple.
fn pmacct_config(prefix: &str, port: u16, dir: &Path) -> String {
    format!(
        "daemonize: false\n\
         pidfile: {dir}/pmacct.pid\n\
         {prefix}_ip: 127.0.0.1\n\
         {prefix}_port: {port}\n\
         {prefix}_pipe_size: {RECEIVE_BUFFER}\n\
         plugins: print\n\
         print_output: csv\n\
         print_output_file: /dev/null\n\
         print_refresh_time: 10\n\
         aggregate: src_host, dst_host, src_port, dst_port, proto\n\
         plugin_pipe_size: 67108864\n\
         plugin_buffer_size: 65536\n",
        dir = dir.display()
    )
}

/// `pid` and every process below it (pmacct forks its plugins).
fn process_tree(pid: u32) -> Vec<u32> {
    let mut tree = vec![pid];
    let mut k = 0;
    while k < tree.len() {
        let parent = tree[k];
        let children = std::fs::read_dir(format!("/proc/{parent}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
            .flat_map(|text| {
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok())
                    .collect::<Vec<_>>()
            });
        tree.extend(children);
        k += 1;
    }
    tree
}

/// utime + stime of a process (all its threads), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0)
}

/// /proc counts CPU time in USER_HZ ticks, 100 a second on every Linux.
fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_millis(ticks * 10)
}

/// VmHWM and VmRSS in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// The kernel's drop counter of the UDP socket bound to 127.0.0.1:`port`.
fn socket_drops(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| fields.get(1) == Some(&local.as_str()))
        .map(|fields| fields.last().and_then(|d| d.parse::<u64>().ok()))
        .sum()
}

fn print_table(table: &[(&str, Vec<Figures>)]) {
    println!();
    println!(
        "Highest rate with no drop (sender on core {SENDER_CORE}, collector on core {COLLECTOR_CORE}), \
         collector CPU per flow at that rate, flows per CPU-second, memory."
    );
    println!(
        "flow-agent: into Kafka (Tansu), lz4 batches. nfacctd/sfacctd: print plugin to /dev/null \
         (its Kafka plugin links Debian's librdkafka 2.0.2, which cannot talk to Tansu). \
         nfcapd: its files. \"≥\": the sender's ceiling, not the collector's."
    );
    println!();
    println!(
        "| dataset | collector | no-drop rate (M flows/s) | CPU ns/flow | M flows/s per core | VmHWM MiB | VmRSS MiB | agent ÷ it (per core) | agent ÷ it (no-drop rate) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (dataset, results) in table {
        let agent = results
            .iter()
            .find(|r| r.collector == "flow-agent")
            .and_then(|r| r.best);
        for result in results {
            let (rate, ns, per_core) = match result.best {
                Some(t) => (
                    format!(
                        "{}{:.2}",
                        if result.sender_bound { "≥" } else { "" },
                        t.rate() / 1e6
                    ),
                    format!("{:.0}", t.ns_per_flow()),
                    Some(1e3 / t.ns_per_flow()),
                ),
                None => ("drops at every rate tried".to_owned(), "-".into(), None),
            };
            let ratio = |figure: fn(&Trial) -> f64| match (agent, result.best) {
                (Some(a), Some(b)) if result.collector != "flow-agent" => {
                    format!("{:.2}x", figure(&a) / figure(&b))
                }
                _ => String::new(),
            };
            let per_core_ratio = ratio(|t| 1.0 / t.ns_per_flow());
            let rate_ratio = ratio(Trial::rate);
            println!(
                "| {dataset} | {} | {rate} | {ns} | {} | {:.1} | {:.1} | {per_core_ratio} | {rate_ratio} |",
                result.collector,
                per_core.map_or("-".to_owned(), |p| format!("{p:.2}")),
                result.hwm_kib as f64 / 1024.0,
                result.rss_kib as f64 / 1024.0,
            );
        }
    }
}
