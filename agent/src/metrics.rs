//! What the agent counts, and its Prometheus text rendering.
//!
//! One [`Metrics`] is shared by every thread: plain atomics for the hot totals,
//! small mutex-guarded maps for the labelled series (an exporter's datagram is
//! counted under one short lock). Rendering is hand-formatted: the text format
//! is simple and a metrics crate would cost more binary size than it saves.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::IpAddr;
use std::sync::Mutex;
// portable-atomic: 32-bit MIPS has no native 64-bit atomics; elsewhere this is std's AtomicU64.
use portable_atomic::AtomicU64;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::decode::{DecodeCounters, Protocol};

/// Why flows were dropped (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DropReason {
    /// The buffer bound was reached: Kafka is slow or away.
    BufferFull,
    /// Shutdown's flush deadline passed with flows still held.
    Shutdown,
    /// One flow alone is larger than a Kafka record may be.
    TooLarge,
}

impl DropReason {
    fn as_str(self) -> &'static str {
        match self {
            DropReason::BufferFull => "buffer-full",
            DropReason::Shutdown => "shutdown",
            DropReason::TooLarge => "too-large",
        }
    }
}

/// Upper bounds of the produce latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Datagrams and flows seen from one exporter with one protocol.
#[derive(Debug, Default, Clone, Copy)]
struct ExporterCounts {
    datagrams: u64,
    flows: u64,
}

/// Every counter and gauge the agent exposes.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    received: Mutex<BTreeMap<(IpAddr, Protocol), ExporterCounts>>,
    decode_errors: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    template_misses: AtomicU64,
    counter_samples: AtomicU64,
    skipped_records: AtomicU64,
    early_sets_held: AtomicU64,
    early_sets_decoded: AtomicU64,
    early_sets_dropped: AtomicU64,
    receive_errors: AtomicU64,
    flows_held: AtomicU64,
    dropped: Mutex<BTreeMap<DropReason, u64>>,
    flows_produced: AtomicU64,
    kafka_records: AtomicU64,
    kafka_bytes: AtomicU64,
    produce_errors: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
    kafka_connected: AtomicBool,
    /// When Kafka last answered, or when the agent started if it never did.
    kafka_last_contact: Mutex<Instant>,
}

impl Default for Metrics {
    fn default() -> Self {
        let now = Instant::now();
        Metrics {
            started: now,
            received: Mutex::default(),
            decode_errors: Mutex::default(),
            template_misses: AtomicU64::default(),
            counter_samples: AtomicU64::default(),
            skipped_records: AtomicU64::default(),
            early_sets_held: AtomicU64::default(),
            early_sets_decoded: AtomicU64::default(),
            early_sets_dropped: AtomicU64::default(),
            receive_errors: AtomicU64::default(),
            flows_held: AtomicU64::default(),
            dropped: Mutex::default(),
            flows_produced: AtomicU64::default(),
            kafka_records: AtomicU64::default(),
            kafka_bytes: AtomicU64::default(),
            produce_errors: AtomicU64::default(),
            latency_buckets: Default::default(),
            latency_count: AtomicU64::default(),
            latency_sum_micros: AtomicU64::default(),
            kafka_connected: AtomicBool::default(),
            kafka_last_contact: Mutex::new(now),
        }
    }
}

/// Locks a metrics map; a thread that panicked while holding it left counts, not broken state.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Metrics {
    /// `datagrams` datagrams of `protocol` from `exporter`, giving `flows` flows
    /// (even when one also failed part-way: the flows before the fault count).
    pub fn datagrams_received(
        &self,
        exporter: IpAddr,
        protocol: Protocol,
        datagrams: u64,
        flows: u64,
    ) {
        let mut received = lock(&self.received);
        let counts = received.entry((exporter, protocol)).or_default();
        counts.datagrams += datagrams;
        counts.flows += flows;
    }

    /// One datagram (or its tail) that could not be decoded.
    pub fn decode_error(&self, protocol: &'static str, kind: &'static str) {
        *lock(&self.decode_errors)
            .entry((protocol, kind))
            .or_default() += 1;
    }

    /// Adds what a decoder counted while decoding a datagram.
    pub fn add_decode_counters(&self, counters: &DecodeCounters) {
        self.template_misses
            .fetch_add(counters.template_misses, Relaxed);
        self.counter_samples
            .fetch_add(counters.counter_samples, Relaxed);
        self.skipped_records
            .fetch_add(counters.skipped_records, Relaxed);
        self.early_sets_held
            .fetch_add(counters.early_sets_held, Relaxed);
        self.early_sets_decoded
            .fetch_add(counters.early_sets_decoded, Relaxed);
        self.early_sets_dropped
            .fetch_add(counters.early_sets_dropped, Relaxed);
    }

    pub fn receive_error(&self) {
        self.receive_errors.fetch_add(1, Relaxed);
    }

    /// The number of flows between decoding and a successful produce.
    pub fn set_flows_held(&self, flows: usize) {
        self.flows_held.store(flows as u64, Relaxed);
    }

    pub fn flows_dropped(&self, reason: DropReason, flows: usize) {
        if flows > 0 {
            *lock(&self.dropped).entry(reason).or_default() += flows as u64;
        }
    }

    /// One successful produce request.
    pub fn produced(&self, flows: usize, records: usize, bytes: usize, latency: Duration) {
        self.flows_produced.fetch_add(flows as u64, Relaxed);
        self.kafka_records.fetch_add(records as u64, Relaxed);
        self.kafka_bytes.fetch_add(bytes as u64, Relaxed);
        let seconds = latency.as_secs_f64();
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_micros
            .fetch_add(latency.as_micros() as u64, Relaxed);
        self.kafka_reachable();
    }

    pub fn produce_error(&self) {
        self.produce_errors.fetch_add(1, Relaxed);
    }

    /// Kafka answered: connected, and the unreachability clock restarts.
    pub fn kafka_reachable(&self) {
        self.kafka_connected.store(true, Relaxed);
        *lock(&self.kafka_last_contact) = Instant::now();
    }

    pub fn kafka_unreachable(&self) {
        self.kafka_connected.store(false, Relaxed);
    }

    /// How long Kafka has been unreachable (zero while connected).
    pub fn kafka_unreachable_for(&self) -> Duration {
        if self.kafka_connected.load(Relaxed) {
            Duration::ZERO
        } else {
            lock(&self.kafka_last_contact).elapsed()
        }
    }

    /// Flows successfully produced to Kafka.
    pub fn total_produced(&self) -> u64 {
        self.flows_produced.load(Relaxed)
    }

    /// Flows dropped for any reason.
    pub fn total_dropped(&self) -> u64 {
        lock(&self.dropped).values().sum()
    }

    /// Flows decoded from every exporter.
    pub fn total_decoded(&self) -> u64 {
        lock(&self.received).values().map(|c| c.flows).sum()
    }

    /// Decode errors of every kind.
    pub fn total_decode_errors(&self) -> u64 {
        lock(&self.decode_errors).values().sum()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        header(
            &mut out,
            "uptime_seconds",
            "gauge",
            "Seconds since the agent started.",
        );
        let _ = writeln!(
            out,
            "flow_agent_uptime_seconds {}",
            self.started.elapsed().as_secs()
        );

        let received = lock(&self.received).clone();
        header(
            &mut out,
            "datagrams_total",
            "counter",
            "Datagrams received of a known protocol, by exporter and protocol.",
        );
        for ((exporter, protocol), counts) in &received {
            let _ = writeln!(
                out,
                "flow_agent_datagrams_total{{exporter=\"{exporter}\",protocol=\"{}\"}} {}",
                protocol.as_str(),
                counts.datagrams
            );
        }
        header(
            &mut out,
            "flows_decoded_total",
            "counter",
            "Flows decoded, by exporter and protocol.",
        );
        for ((exporter, protocol), counts) in &received {
            let _ = writeln!(
                out,
                "flow_agent_flows_decoded_total{{exporter=\"{exporter}\",protocol=\"{}\"}} {}",
                protocol.as_str(),
                counts.flows
            );
        }
        header(
            &mut out,
            "decode_errors_total",
            "counter",
            "Datagrams that failed to decode, by kind.",
        );
        for ((protocol, kind), count) in lock(&self.decode_errors).iter() {
            let _ = writeln!(
                out,
                "flow_agent_decode_errors_total{{protocol=\"{protocol}\",kind=\"{kind}\"}} {count}"
            );
        }
        for (name, help, value) in [
            (
                "template_misses_total",
                "Data records whose template was unknown.",
                &self.template_misses,
            ),
            (
                "counter_samples_total",
                "sFlow counter samples (counted, not produced).",
                &self.counter_samples,
            ),
            (
                "skipped_records_total",
                "Malformed records skipped inside good datagrams.",
                &self.skipped_records,
            ),
            (
                "early_sets_held_total",
                "Data sets held to wait for their template.",
                &self.early_sets_held,
            ),
            (
                "early_sets_decoded_total",
                "Held data sets decoded once their template arrived.",
                &self.early_sets_decoded,
            ),
            (
                "early_sets_dropped_total",
                "Data sets not held (bounds) or whose template came too late.",
                &self.early_sets_dropped,
            ),
            (
                "receive_errors_total",
                "Socket receive errors.",
                &self.receive_errors,
            ),
            (
                "flows_produced_total",
                "Flows acknowledged by Kafka.",
                &self.flows_produced,
            ),
            (
                "kafka_records_total",
                "Kafka records produced (several flows each).",
                &self.kafka_records,
            ),
            (
                "kafka_bytes_total",
                "Uncompressed bytes of Kafka record values produced.",
                &self.kafka_bytes,
            ),
            (
                "kafka_produce_errors_total",
                "Produce requests that failed or timed out.",
                &self.produce_errors,
            ),
        ] {
            header(&mut out, name, "counter", help);
            let _ = writeln!(out, "flow_agent_{name} {}", value.load(Relaxed));
        }
        header(
            &mut out,
            "flows_dropped_total",
            "counter",
            "Flows dropped, by reason.",
        );
        for reason in [
            DropReason::BufferFull,
            DropReason::Shutdown,
            DropReason::TooLarge,
        ] {
            let count = lock(&self.dropped).get(&reason).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "flow_agent_flows_dropped_total{{reason=\"{}\"}} {count}",
                reason.as_str()
            );
        }
        header(
            &mut out,
            "flows_held",
            "gauge",
            "Flows queued or batched, not yet acknowledged by Kafka.",
        );
        let _ = writeln!(
            out,
            "flow_agent_flows_held {}",
            self.flows_held.load(Relaxed)
        );
        header(
            &mut out,
            "kafka_connected",
            "gauge",
            "1 when the last exchange with Kafka succeeded.",
        );
        let _ = writeln!(
            out,
            "flow_agent_kafka_connected {}",
            u8::from(self.kafka_connected.load(Relaxed))
        );
        header(
            &mut out,
            "kafka_unreachable_seconds",
            "gauge",
            "Seconds since Kafka last answered, 0 while connected.",
        );
        let _ = writeln!(
            out,
            "flow_agent_kafka_unreachable_seconds {}",
            self.kafka_unreachable_for().as_secs()
        );

        header(
            &mut out,
            "kafka_produce_seconds",
            "histogram",
            "Latency of successful produce requests.",
        );
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            let _ = writeln!(
                out,
                "flow_agent_kafka_produce_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Relaxed)
            );
        }
        let count = self.latency_count.load(Relaxed);
        let _ = writeln!(
            out,
            "flow_agent_kafka_produce_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let sum = self.latency_sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "flow_agent_kafka_produce_seconds_sum {sum}");
        let _ = writeln!(out, "flow_agent_kafka_produce_seconds_count {count}");
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        out,
        "# HELP flow_agent_{name} {help}\n# TYPE flow_agent_{name} {kind}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of one sample line, by its exact name and labels.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn counts_render_with_labels() {
        let metrics = Metrics::default();
        let exporter: IpAddr = [192, 0, 2, 1].into();
        metrics.datagrams_received(exporter, Protocol::Ipfix, 1, 7);
        metrics.datagrams_received(exporter, Protocol::Ipfix, 1, 3);
        metrics.decode_error("netflow", "truncated");
        metrics.flows_dropped(DropReason::BufferFull, 5);
        metrics.produced(10, 2, 300, Duration::from_millis(3));
        metrics.add_decode_counters(&DecodeCounters {
            template_misses: 4,
            early_sets_held: 3,
            early_sets_decoded: 2,
            early_sets_dropped: 1,
            ..DecodeCounters::default()
        });
        let text = metrics.render();
        for (series, value) in [
            ("flow_agent_template_misses_total", 4.0),
            ("flow_agent_early_sets_held_total", 3.0),
            ("flow_agent_early_sets_decoded_total", 2.0),
            ("flow_agent_early_sets_dropped_total", 1.0),
        ] {
            assert_eq!(sample(&text, series), Some(value), "{series}");
        }
        let labels = "{exporter=\"192.0.2.1\",protocol=\"ipfix\"}";
        assert_eq!(
            sample(&text, &format!("flow_agent_datagrams_total{labels}")),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, &format!("flow_agent_flows_decoded_total{labels}")),
            Some(10.0)
        );
        assert_eq!(
            sample(
                &text,
                "flow_agent_decode_errors_total{protocol=\"netflow\",kind=\"truncated\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "flow_agent_flows_dropped_total{reason=\"buffer-full\"}"
            ),
            Some(5.0)
        );
        assert_eq!(sample(&text, "flow_agent_flows_produced_total"), Some(10.0));
        assert_eq!(
            sample(
                &text,
                "flow_agent_kafka_produce_seconds_bucket{le=\"0.0025\"}"
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &text,
                "flow_agent_kafka_produce_seconds_bucket{le=\"0.005\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "flow_agent_kafka_produce_seconds_count"),
            Some(1.0)
        );
        assert_eq!(sample(&text, "flow_agent_kafka_connected"), Some(1.0));
        assert_eq!(metrics.total_decoded(), 10);
        assert_eq!(metrics.total_dropped(), 5);
    }

    #[test]
    fn unreachability_is_measured_from_last_contact() {
        let metrics = Metrics::default();
        metrics.kafka_reachable();
        assert_eq!(metrics.kafka_unreachable_for(), Duration::ZERO);
        metrics.kafka_unreachable();
        std::thread::sleep(Duration::from_millis(5));
        assert!(metrics.kafka_unreachable_for() >= Duration::from_millis(5));
    }
}
