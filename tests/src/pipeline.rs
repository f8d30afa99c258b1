//! The whole pipeline on one machine, as an operator would run it: the broker and the
//! ClickHouse engine, `flow-provisioner serve`, the served init.sh run into the
//! engine's format_schemas directory, `flow-provisioner migrate`, `flow-agent run`,
//! then real traffic. ClickHouse consumes the topic itself through the Kafka tables
//! and views `migrate` created; nothing else moves records.
//!
//! Every datagram sent to the agent passes through [`Sender`], which decodes a copy
//! with the agent's own decoder: that gives the totals the stored flows must match.
//! The live exporter (pmacct's probe on the loopback interface) sends to a relay of the
//! sender for the same reason.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flow_agent::decode::{Datagram, DecodeCounters, DecodeOptions, Decoder};
use tempfile::TempDir;

use crate::services::{ClickHouse, KafkaBroker, Process, free_port};

/// Flows, bytes and packets: what was sent, and what ClickHouse stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, clickhouse::Row)]
pub struct Totals {
    /// Flow records.
    pub flows: u64,
    /// Bytes as exported (before scaling by the sampling rate).
    pub bytes: u64,
    /// Packets as exported.
    pub packets: u64,
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} flows, {} bytes, {} packets",
            self.flows, self.bytes, self.packets
        )
    }
}

/// The running pipeline. Dropping it stops every process it started.
#[derive(Debug)]
pub struct Pipeline {
    // Field order is stop order: the exporter and the agent first, the services last.
    live: Option<LiveExporter>,
    agent: Process,
    serve: Process,
    clickhouse: ClickHouse,
    broker: KafkaBroker,
    /// The agent's NetFlow/IPFIX listener.
    pub netflow: SocketAddr,
    /// The agent's sFlow listener.
    pub sflow: SocketAddr,
    /// `http://127.0.0.1:PORT` of `flow-provisioner serve`.
    pub serve_url: String,
    /// The agent's `/metrics` and `/healthz` listener.
    pub agent_http: SocketAddr,
    runtime: tokio::runtime::Runtime,
    dir: TempDir,
}

/// Prints a step of the pipeline's progress.
pub type Progress<'a> = &'a dyn Fn(&str);

impl Pipeline {
    /// Starts everything and provisions Kafka and ClickHouse.
    pub fn start(progress: Progress<'_>) -> Pipeline {
        let dir = tempfile::tempdir().expect("temporary directory");
        progress("starting the Kafka broker (Tansu, memory storage)");
        let broker = KafkaBroker::start();
        progress("starting the ClickHouse engine (chdb-core behind its HTTP front)");
        let clickhouse = ClickHouse::start();

        let serve_port = free_port();
        let serve_url = format!("http://127.0.0.1:{serve_port}");
        let provisioner_config = dir.path().join("provisioner.toml");
        std::fs::write(
            &provisioner_config,
            provisioner_config_text(&broker.bootstrap, &clickhouse.url, serve_port),
        )
        .expect("write provisioner.toml");

        progress(&format!("starting flow-provisioner serve on {serve_url}"));
        let mut serve_command = Command::new(crate::binary("flow-provisioner"));
        serve_command
            .arg("serve")
            .arg("--config")
            .arg(&provisioner_config);
        let mut serve = Process::spawn(
            "flow-provisioner serve",
            serve_command,
            &dir.path().join("serve.log"),
        );
        crate::services::wait_until(
            "flow-provisioner serve",
            &mut serve,
            Duration::from_secs(20),
            || crate::services::http_get(serve_port, "/healthz").is_some(),
        );

        // The agent's listeners are chosen now so that the live exporter, which needs
        // time to settle before it exports what it sees, can start at once.
        let netflow = free_udp_address();
        let sflow = free_udp_address();
        progress("starting a live exporter: pmacct's probe on the loopback interface (IPFIX)");
        let live = LiveExporter::start(serve_port, netflow);

        progress("running the served init.sh into ClickHouse's format_schemas directory");
        let init = Command::new("sh")
            .arg("-c")
            .arg(r#"curl -fsS "$1/api/v0/clickhouse/init.sh" | sh -s -- "$2""#)
            .arg("init")
            .arg(&serve_url)
            .arg(&clickhouse.schemas_dir)
            .output()
            .expect("run curl | sh");
        assert!(
            init.status.success(),
            "init.sh failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        for line in String::from_utf8_lossy(&init.stdout).lines() {
            progress(&format!("  init.sh: {line}"));
        }

        progress("running flow-provisioner migrate (topic, tables, views, dictionaries)");
        let migrate = Command::new(crate::binary("flow-provisioner"))
            .arg("migrate")
            .arg("--config")
            .arg(&provisioner_config)
            .output()
            .expect("run flow-provisioner migrate");
        let migrate_log = String::from_utf8_lossy(&migrate.stderr);
        assert!(
            migrate.status.success(),
            "flow-provisioner migrate failed ({}):\n{migrate_log}",
            migrate.status
        );
        for line in migrate_log.lines() {
            progress(&format!("  {line}"));
        }

        let agent_http = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let agent_config = dir.path().join("agent.toml");
        std::fs::write(
            &agent_config,
            agent_config_text(&broker.bootstrap, netflow, sflow, agent_http),
        )
        .expect("write agent.toml");
        progress(&format!(
            "starting flow-agent (NetFlow/IPFIX on {netflow}, sFlow on {sflow}, metrics on {agent_http})"
        ));
        let mut agent_command = Command::new(crate::binary("flow-agent"));
        agent_command.arg("run").arg("--config").arg(&agent_config);
        let mut agent = Process::spawn("flow-agent", agent_command, &dir.path().join("agent.log"));
        crate::services::wait_until("flow-agent", &mut agent, Duration::from_secs(20), || {
            crate::services::http_get(agent_http.port(), "/healthz").is_some()
        });

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        Pipeline {
            live: Some(live),
            agent,
            serve,
            clickhouse,
            broker,
            netflow,
            sflow,
            serve_url,
            agent_http,
            runtime,
            dir,
        }
    }

    /// Sends the traffic of `plan` to the agent, then stops the live exporter (which
    /// has watched the loopback traffic since the pipeline started), reporting what
    /// each source sent; returns the totals of everything sent. Ends early when
    /// `stop` is set. Call it once.
    pub fn send_traffic(
        &mut self,
        plan: TrafficPlan,
        stop: &AtomicBool,
        report: &dyn Fn(&str, Totals),
    ) -> Totals {
        let stopped = || stop.load(Ordering::Relaxed);
        let mut sent = Totals::default();
        let mut add = |what: &str, totals: Totals| {
            report(what, totals);
            sent.flows += totals.flows;
            sent.bytes += totals.bytes;
            sent.packets += totals.packets;
        };
        let synthetic = crate::traffic::SyntheticCapture::write(crate::traffic::TrafficShape {
            flows: plan.synthetic_flows,
            ..Default::default()
        });
        let capture = &synthetic.path;
        let mut sources: Vec<(&str, Vec<Vec<u8>>, SocketAddr)> = vec![
            (
                "softflowd NetFlow v9 (synthetic traffic)",
                crate::traffic::softflowd_datagrams(capture, 9),
                self.netflow,
            ),
            (
                "softflowd IPFIX (synthetic traffic)",
                crate::traffic::softflowd_datagrams(capture, 10),
                self.netflow,
            ),
            (
                "pmacct sFlow 1:10 (synthetic traffic)",
                crate::traffic::pmacct_sflow_datagrams(capture, 10),
                self.sflow,
            ),
        ];
        if plan.captures {
            let (netflow, sflow) = capture_datagrams();
            sources.push((
                "NetFlow/IPFIX captures of real exporters",
                netflow,
                self.netflow,
            ));
            sources.push(("sFlow captures of real exporters", sflow, self.sflow));
        }
        // One source address per exporter, as real exporters have (templates are
        // kept per exporter address).
        for (host, (what, datagrams, target)) in (2u8..).zip(&sources) {
            if stopped() {
                break;
            }
            let mut sender = Sender::new(Ipv4Addr::new(127, 0, 0, host));
            for datagram in datagrams {
                sender.send(datagram, *target);
            }
            add(what, sender.sent());
        }
        if let Some(live) = self.live.take() {
            add("pmacctd IPFIX (live loopback traffic)", live.finish());
        }
        sent
    }

    /// What ClickHouse has stored in `flows` so far.
    pub fn stored(&self) -> Totals {
        self.runtime
            .block_on(
                self.clickhouse
                    .client()
                    .query("SELECT count() AS flows, sum(bytes) AS bytes, sum(packets) AS packets FROM flows")
                    .fetch_one::<Totals>(),
            )
            .unwrap_or_default()
    }

    /// Waits until ClickHouse has stored `expected` (or more), `limit` passes, or
    /// `stop` is set; reports progress every few seconds. Returns what is stored.
    pub fn wait_stored(
        &mut self,
        expected: Totals,
        limit: Duration,
        stop: &AtomicBool,
        progress: Progress<'_>,
    ) -> Totals {
        let deadline = Instant::now() + limit;
        let mut last_report = Instant::now();
        loop {
            let stored = self.stored();
            if stored.flows >= expected.flows
                || Instant::now() > deadline
                || stop.load(Ordering::Relaxed)
            {
                return stored;
            }
            if last_report.elapsed() > Duration::from_secs(3) {
                progress(&format!(
                    "  stored so far: {} of {} flows",
                    stored.flows, expected.flows
                ));
                last_report = Instant::now();
            }
            self.agent.assert_running();
            self.serve.assert_running();
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The busiest sources by AS name (the network's name from the `networks`
    /// dictionary when the flow carries no AS) and protocol name, through the
    /// provisioner's dictionaries, as ClickHouse prints a table.
    pub fn top_talkers(&self, rows: usize) -> String {
        let sql = format!(
            "SELECT \
               if(src_as = 0, dictGetOrDefault('networks', 'name', src_addr, '(unknown)'), \
                  dictGetOrDefault('asns', 'name', toUInt64(src_as), concat('AS', toString(src_as)))) AS source, \
               dictGetOrDefault('protocols', 'name', toUInt64(proto), toString(proto)) AS protocol, \
               count() AS flows, \
               formatReadableSize(sum(bytes * sampling_rate)) AS traffic, \
               sum(packets * sampling_rate) AS packets \
             FROM flows GROUP BY source, protocol ORDER BY sum(bytes * sampling_rate) DESC LIMIT {rows}"
        );
        self.query_text(&sql, "PrettyCompactMonoBlock")
    }

    /// A query's result in one of ClickHouse's text formats.
    pub fn query_text(&self, sql: &str, format: &str) -> String {
        let client = self.clickhouse.client();
        let bytes = self
            .runtime
            .block_on(async { client.query(sql).fetch_bytes(format)?.collect().await })
            .unwrap_or_else(|e| panic!("query failed: {e}\n{sql}"));
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The agent's `/metrics` text.
    pub fn agent_metrics(&self) -> String {
        crate::services::http_get(self.agent_http.port(), "/metrics").unwrap_or_default()
    }

    /// The work directory (configurations and logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The logs of the processes, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- flow-agent\n{}\n--- flow-provisioner serve\n{}\n--- clickhouse\n{}",
            self.agent.log_tail(),
            self.serve.log_tail(),
            self.clickhouse.log_tail()
        )
    }

    /// The ClickHouse engine's HTTP URL.
    pub fn clickhouse_url(&self) -> &str {
        &self.clickhouse.url
    }

    /// The broker's bootstrap address.
    pub fn bootstrap(&self) -> &str {
        &self.broker.bootstrap
    }
}

fn free_udp_address() -> SocketAddr {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .expect("bind an ephemeral UDP port")
}

/// The provisioner's configuration for the local pipeline: the embedded defaults,
/// with the local services' addresses, the test data's AS names, and the prefixes
/// of the synthetic traffic as networks.
fn provisioner_config_text(bootstrap: &str, clickhouse_url: &str, serve_port: u16) -> String {
    let asns = crate::shared_data_dir().join("asns.csv");
    let asns_line = if asns.exists() {
        format!("asns = {:?}\n", asns.display().to_string())
    } else {
        String::new()
    };
    format!(
        r#"[kafka]
brokers = ["{bootstrap}"]

[kafka.topic]
partitions = 2

[clickhouse]
servers = ["{clickhouse_url}"]
kafka_group = "pipeline-{pid}"

[clickhouse.kafka_settings]
kafka_flush_interval_ms = 500

[http]
listen = "127.0.0.1:{serve_port}"

[dictionaries]
{asns_line}
[[dictionaries.networks]]
prefix = "10.0.0.0/8"
name = "lab clients"
role = "clients"
site = "lab"

[[dictionaries.networks]]
prefix = "2001:db8::/32"
name = "lab clients (IPv6)"
role = "clients"
site = "lab"

[[dictionaries.networks]]
prefix = "127.0.0.0/8"
name = "loopback"
role = "local"
"#,
        pid = std::process::id()
    )
}

fn agent_config_text(
    bootstrap: &str,
    netflow: SocketAddr,
    sflow: SocketAddr,
    http: SocketAddr,
) -> String {
    format!(
        r#"[[listeners]]
address = "{netflow}"

[[listeners]]
address = "{sflow}"
protocol = "sflow"

[kafka]
brokers = ["{bootstrap}"]
linger_ms = 200

[http]
listen = "{http}"
"#
    )
}

/// What [`Pipeline::send_traffic`] sends.
#[derive(Debug, Clone, Copy)]
pub struct TrafficPlan {
    /// Flows in the synthetic capture that softflowd and pmacct export.
    pub synthetic_flows: u32,
    /// Whether to replay the real captures of `../shared/data/captures` too.
    pub captures: bool,
}

/// Sends datagrams to the agent from one source address and port, as one exporter
/// would, decoding a copy of each with the agent's decoder to know what was sent.
#[derive(Debug)]
pub struct Sender {
    socket: UdpSocket,
    decoder: Decoder,
    sent: Totals,
}

impl Sender {
    /// A sender on a fresh UDP port of `source` (any 127.0.0.0/8 address).
    pub fn new(source: Ipv4Addr) -> Sender {
        Sender {
            socket: UdpSocket::bind((source, 0)).expect("bind a sender socket"),
            decoder: Decoder::default(),
            sent: Totals::default(),
        }
    }

    /// Sends one datagram to `target`.
    pub fn send(&mut self, payload: &[u8], target: SocketAddr) {
        let source = self.socket.local_addr().expect("sender address");
        let received = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut flows = flow_agent::decode::Flows::default();
        let mut counters = DecodeCounters::default();
        let datagram = Datagram {
            source,
            received,
            payload,
        };
        // What the agent cannot decode, it does not produce: count only what decodes.
        if self
            .decoder
            .decode(
                &datagram,
                None,
                &DecodeOptions::default(),
                &mut flows,
                &mut counters,
            )
            .is_ok()
        {
            for flow in &flows {
                self.sent.flows += 1;
                self.sent.bytes += flow.bytes;
                self.sent.packets += flow.packets;
            }
        }
        self.socket
            .send_to(payload, target)
            .expect("send a datagram");
        // Loopback drops what a full receive buffer cannot take: pace the sends.
        std::thread::sleep(Duration::from_micros(300));
    }

    /// What was sent so far.
    pub fn sent(&self) -> Totals {
        self.sent
    }
}

/// Datagrams of the real captures in `../shared/data/captures`, NetFlow/IPFIX and
/// sFlow apart, each capture's template file before its data file.
pub fn capture_datagrams() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut netflow = Vec::new();
    let mut sflow = Vec::new();
    for (folder, out) in [("netflow", &mut netflow), ("sflow", &mut sflow)] {
        let dir = crate::shared_data_dir().join("captures").join(folder);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pcap"))
            .collect();
        // `x-template.pcap` sorts before `x-data.pcap` once "template" ranks first.
        files.sort_by_key(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name.replace("template", "\u{1}"), name)
        });
        for file in files {
            if let Ok(datagrams) = flow_agent::pcap::read_udp_datagrams(&file) {
                out.extend(datagrams.into_iter().map(|d| d.payload));
            }
        }
    }
    (netflow, sflow)
}

/// pmacct's probe (`pmacctd` with the `nfprobe` plugin) capturing the loopback
/// interface (TCP to one port only), exporting IPFIX to a relay that forwards each
/// datagram through a [`Sender`], while a thread makes HTTP requests to that port.
/// (softflowd 1.1.0 on `lo` receives the packets but processes none before its
/// capture buffer fills, so it is no live exporter here. pmacctd sent nothing of what
/// it saw in its first seconds, even when stopped: hence traffic from the start, and
/// [`LiveExporter::finish`] waits for a first export, within a bound.)
#[derive(Debug)]
pub struct LiveExporter {
    pmacctd: Process,
    traffic: std::thread::JoinHandle<()>,
    traffic_stop: Arc<AtomicBool>,
    relay: std::thread::JoinHandle<Sender>,
    relay_stop: Arc<AtomicBool>,
    relayed: Arc<AtomicU64>,
    started: Instant,
    _dir: TempDir,
}

/// How long [`LiveExporter::finish`] waits, from the start, for pmacctd's first export.
const FIRST_EXPORT_WAIT: Duration = Duration::from_secs(30);

impl LiveExporter {
    /// Starts pmacctd on `lo` for TCP traffic on `port` (an HTTP server's), and the
    /// requests to it, relaying the export to `target`.
    pub fn start(port: u16, target: SocketAddr) -> LiveExporter {
        let dir = tempfile::tempdir().expect("temporary directory");
        let relay_socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the relay");
        relay_socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("relay timeout");
        let relay_address = relay_socket.local_addr().expect("relay address");
        let config = dir.path().join("pmacctd.conf");
        std::fs::write(
            &config,
            format!(
                "daemonize: false\n\
                 pcap_interface: lo\n\
                 pcap_filter: tcp port {port}\n\
                 aggregate: src_host, dst_host, src_port, dst_port, proto, tos\n\
                 plugins: nfprobe\n\
                 nfprobe_receiver: {relay_address}\n\
                 nfprobe_version: 10\n\
                 nfprobe_timeouts: maxlife=5:expint=1:general=3:tcp.fin=1\n\
                 pidfile: {}\n",
                dir.path().join("pmacctd.pid").display()
            ),
        )
        .expect("write pmacctd.conf");
        let mut command = Command::new("pmacctd");
        command.arg("-f").arg(&config);
        let pmacctd = Process::spawn("pmacctd", command, &dir.path().join("pmacctd.log"));
        let stop = Arc::new(AtomicBool::new(false));
        let relay_stop = Arc::clone(&stop);
        let relayed = Arc::new(AtomicU64::new(0));
        let relay_count = Arc::clone(&relayed);
        let relay = std::thread::spawn(move || {
            let mut sender = Sender::new(Ipv4Addr::LOCALHOST);
            let mut buf = vec![0u8; 65_536];
            let mut quiet_since = None;
            loop {
                match relay_socket.recv(&mut buf) {
                    Ok(len) => {
                        sender.send(&buf[..len], target);
                        relay_count.fetch_add(1, Ordering::Relaxed);
                        quiet_since = None;
                    }
                    Err(_) if relay_stop.load(Ordering::Relaxed) => {
                        let since = *quiet_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > Duration::from_secs(1) {
                            return sender;
                        }
                    }
                    Err(_) => {}
                }
            }
        });
        let traffic_stop = Arc::new(AtomicBool::new(false));
        let traffic_running = Arc::clone(&traffic_stop);
        let traffic = std::thread::spawn(move || {
            while !traffic_running.load(Ordering::Relaxed) {
                let _ = crate::services::http_get(port, "/healthz");
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        LiveExporter {
            pmacctd,
            traffic,
            traffic_stop,
            relay,
            relay_stop: stop,
            relayed,
            started: Instant::now(),
            _dir: dir,
        }
    }

    /// Waits (at most [`FIRST_EXPORT_WAIT`] from the start) until pmacctd has exported
    /// something, then stops the traffic, pmacctd (which exports every flow it still
    /// holds) and the relay; returns what the relay forwarded.
    pub fn finish(mut self) -> Totals {
        while self.relayed.load(Ordering::Relaxed) == 0
            && self.started.elapsed() < FIRST_EXPORT_WAIT
        {
            self.pmacctd.assert_running();
            std::thread::sleep(Duration::from_millis(200));
        }
        self.traffic_stop.store(true, Ordering::Relaxed);
        let _ = self.traffic.join();
        self.pmacctd.stop();
        self.relay_stop.store(true, Ordering::Relaxed);
        self.relay.join().expect("the relay thread").sent()
    }
}
