//! From decoded flows to Kafka: a bounded intake, per-partition batches, and an
//! rskafka producer that survives the broker going away.
//!
//! The bound covers every flow between decoding and Kafka's acknowledgement:
//! queued in the channel, batched, or in a produce request. [`Intake::submit`]
//! admits flows while the total stays under it and drops the newest beyond:
//! the check is one atomic add at the listener, costs nothing under load, and
//! what was admitted first (older flows, already batched) is never thrown away
//! for what comes later.
//!
//! Listeners encode their flows themselves ([`Intake::encode`], length-delimited,
//! grouped by exporter into [`EncodedFlows`]) and submit them once per receive
//! batch: the decoded messages are dropped by the thread that made them, and the
//! producer is woken once per batch, not once per datagram.
//!
//! The [`Producer`] task assigns each exporter's flows a partition by a hash of
//! its address (one exporter's flows stay together and in order), keeps them as
//! the listeners encoded them until the partition's batch reaches
//! `max_batch_bytes` or has waited `linger_ms`, then packs them into Kafka
//! records of up to `max_flows_per_message` flows or `max_message_bytes` bytes
//! and produces those. The flows stay in their chunks until Kafka acknowledged
//! them: rskafka takes the records it is given, and packing them only then
//! spares a copy of every flow kept for a retry. Up to [`MAX_IN_FLIGHT`]
//! produce requests are out at once, so that Kafka answering one does not hold
//! up compressing and sending the next. A produce call is bounded by
//! `produce_timeout_ms` (a frozen broker never answers); after any failure the
//! client is dropped and rebuilt, which re-reads the metadata, and the flows of
//! the failed request go back to the front of their partition's batch, produced
//! again after a backoff. Delivery is
//! therefore at-least-once (a request that timed out may have been written), and
//! in order per exporter unless a request failed while a later one went through.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flow_proto::{EncodeDelimited, FlowMessage};
use rskafka::BackoffConfig;
use rskafka::chrono::{DateTime, Utc};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{ClientBuilder, Credentials, SaslConfig};
use rskafka::record::Record;
use tokio::sync::mpsc;
use tokio::task::{Id, JoinSet};

use crate::config::{self, KafkaConfig, SaslMechanism};
use crate::decode::same_exporter;
use crate::metrics::{DropReason, Metrics};
use crate::tls::Transport;

/// Why producing failed; each leads to a reconnection after a backoff.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("Kafka: {0}")]
    Kafka(#[from] rskafka::client::error::Error),
    #[error("no answer from Kafka within {0:?}")]
    Timeout(Duration),
    #[error("topic {0} does not exist (yet)")]
    TopicMissing(String),
    #[error("produce call ended without an answer: {0}")]
    Lost(String),
}

/// Creates the two ends: [`Intake`] for the listeners, [`Producer`] for the async runtime.
pub fn channel(
    config: &KafkaConfig,
    transport: Transport,
    max_flows: usize,
    metrics: Arc<Metrics>,
) -> (Intake, Producer) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let held = Arc::new(AtomicUsize::new(0));
    let intake = Intake {
        sender,
        held: Arc::clone(&held),
        bound: max_flows,
        max_message_bytes: config.max_message_bytes,
        metrics: Arc::clone(&metrics),
    };
    let producer = Producer {
        config: config.clone(),
        transport,
        topic: config.topic(),
        receiver,
        held,
        metrics,
        connection: None,
        batches: BTreeMap::new(),
        in_flight: JoinSet::new(),
        requests: HashMap::new(),
        generation: 0,
        outage_logged: false,
    };
    (intake, producer)
}

/// What a listener reserves for a chunk of an exporter's flows: a couple of
/// dozen full datagrams' worth. A busy exporter's receive batch fills several,
/// each closed when full (a grown chunk would be copied whole); a quiet
/// exporter's costs little, and the producer folds it into the chunk before.
const CHUNK_CAPACITY: usize = 32 << 10;

/// One exporter's flows, encoded as a listener received them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFlows {
    /// [`exporter_hash`] of the flows' exporter address: it picks the partition.
    exporter: u64,
    encoded: Encoded,
}

impl EncodedFlows {
    /// An empty chunk with room for [`CHUNK_CAPACITY`] bytes, or for one flow's `bound`.
    fn new(exporter: u64, bound: usize) -> Self {
        EncodedFlows {
            exporter,
            encoded: Encoded {
                flows: 0,
                bytes: Vec::with_capacity(CHUNK_CAPACITY.max(bound)),
            },
        }
    }
}

/// Ends the last chunk of `pending` at `end`, dropping the room left to write
/// into, or the chunk itself when no flow went in.
fn close(pending: &mut Vec<EncodedFlows>, end: usize) {
    if let Some(last) = pending.last_mut() {
        last.encoded.bytes.truncate(end);
        if last.encoded.flows == 0 {
            pending.pop();
        }
    }
}

/// Flows as length-delimited `FlowMessage`s, ready to be copied into a Kafka record.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Encoded {
    flows: usize,
    bytes: Vec<u8>,
}

impl Encoded {
    /// Keeps the first `flows` flows.
    fn truncate(&mut self, flows: usize) {
        let (flows, bytes) = leading(&self.bytes, flows, usize::MAX);
        self.bytes.truncate(bytes);
        self.flows = flows;
    }

    /// Keeps the leading flows within `max_bytes` (one at least) and returns the others.
    fn split_off(&mut self, max_bytes: usize) -> Encoded {
        let (flows, bytes) = match leading(&self.bytes, usize::MAX, max_bytes) {
            (0, _) => leading(&self.bytes, 1, usize::MAX),
            kept => kept,
        };
        let rest = Encoded {
            flows: self.flows - flows,
            bytes: self.bytes.split_off(bytes),
        };
        self.flows = flows;
        rest
    }
}

/// The flows and bytes of the longest run of leading length-delimited messages
/// of `bytes` within both limits. The bytes were written by [`Intake::encode`],
/// so a malformed prefix cannot occur; it would end the run.
fn leading(mut bytes: &[u8], max_flows: usize, max_bytes: usize) -> (usize, usize) {
    let (mut flows, mut taken) = (0, 0);
    while flows < max_flows {
        let whole = bytes;
        let Some(message_len) = prost::encoding::decode_varint(&mut bytes)
            .ok()
            .and_then(|len| usize::try_from(len).ok())
            .map(|len| len + whole.len() - bytes.len())
            .filter(|&len| len <= whole.len() && taken + len <= max_bytes)
        else {
            break;
        };
        bytes = &whole[message_len..];
        flows += 1;
        taken += message_len;
    }
    (flows, taken)
}

/// The listeners' end: encodes flows, admits them up to the bound, counts the
/// rest as dropped.
#[derive(Debug, Clone)]
pub struct Intake {
    sender: mpsc::UnboundedSender<Vec<EncodedFlows>>,
    held: Arc<AtomicUsize>,
    bound: usize,
    max_message_bytes: usize,
    metrics: Arc<Metrics>,
}

impl Intake {
    /// Appends `flows` to `pending`, encoded, each exporter's run of flows in
    /// [`EncodedFlows`] of about [`CHUNK_CAPACITY`] bytes. A flow larger than
    /// a Kafka record may be is dropped and counted.
    pub fn encode(&self, flows: &[FlowMessage], pending: &mut Vec<EncodedFlows>) {
        // A datagram's flows share their exporter: hash it once per run of them.
        for run in flows.chunk_by(same_exporter) {
            let Some(first) = run.first() else {
                continue;
            };
            let exporter = exporter_hash(&first.exporter_address);
            if pending
                .last()
                .is_none_or(|chunk| chunk.exporter != exporter)
            {
                pending.push(EncodedFlows::new(exporter, 0));
            }
            // Past `end`, the chunk holds room to write into: it is zeroed where
            // it falls short of a flow's bound, which after the first flow is by
            // about the previous flow's length, not by a whole bound (hundreds
            // of bytes) per flow.
            let mut end = pending.last().map_or(0, |c| c.encoded.bytes.len());
            for flow in run {
                let bound = flow.max_delimited_len();
                // A full chunk is closed rather than grown: growing would copy
                // every flow it holds, and chunks are batched as they are anyway.
                if pending.last().is_some_and(|c| {
                    c.encoded.flows > 0 && end + bound > c.encoded.bytes.capacity()
                }) {
                    close(pending, end);
                    pending.push(EncodedFlows::new(exporter, bound));
                    end = 0;
                }
                let Some(chunk) = pending.last_mut().map(|c| &mut c.encoded) else {
                    continue;
                };
                if chunk.bytes.len() < end + bound {
                    chunk.bytes.resize(end + bound, 0);
                }
                let len = flow.write_delimited(&mut chunk.bytes[end..]);
                if len > self.max_message_bytes {
                    self.metrics.flows_dropped(DropReason::TooLarge, 1);
                    continue;
                }
                end += len;
                chunk.flows += 1;
            }
            close(pending, end);
        }
    }

    /// Hands encoded flows to the producer, keeping the first ones that fit
    /// under the bound and dropping (and counting) the others.
    pub fn submit(&self, mut pending: Vec<EncodedFlows>) {
        let wanted: usize = pending.iter().map(|c| c.encoded.flows).sum();
        let mut admitted = 0;
        let _ = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                admitted = wanted.min(self.bound.saturating_sub(held));
                Some(held + admitted)
            });
        self.metrics
            .flows_dropped(DropReason::BufferFull, wanted - admitted);
        if admitted == 0 {
            return;
        }
        let mut left = admitted;
        pending.retain_mut(|chunk| {
            let keep = chunk.encoded.flows.min(left);
            left -= keep;
            if keep < chunk.encoded.flows {
                chunk.encoded.truncate(keep);
            }
            keep > 0
        });
        if self.sender.send(pending).is_err() {
            // The producer has finished: shutdown is under way.
            self.held.fetch_sub(admitted, Ordering::AcqRel);
            self.metrics.flows_dropped(DropReason::Shutdown, admitted);
        }
        self.metrics
            .set_flows_held(self.held.load(Ordering::Acquire));
    }
}

/// The flows waiting for one partition, in the chunks listeners encoded them
/// in, oldest first.
#[derive(Debug)]
struct PartitionBatch {
    chunks: VecDeque<Encoded>,
    flows: usize,
    bytes: usize,
    since: Instant,
}

impl PartitionBatch {
    fn new() -> Self {
        PartitionBatch {
            chunks: VecDeque::new(),
            flows: 0,
            bytes: 0,
            since: Instant::now(),
        }
    }

    /// Appends a chunk. One mostly empty (a quiet exporter's) is copied into
    /// the room left in the last chunk if it fits: a chunk keeps its capacity
    /// until produced. A fuller one is kept as it is, not copied.
    fn add(&mut self, chunk: Encoded) {
        self.flows += chunk.flows;
        self.bytes += chunk.bytes.len();
        let mostly_empty = chunk.bytes.len() < chunk.bytes.capacity() / 2;
        match self.chunks.back_mut() {
            Some(last)
                if mostly_empty
                    && last.bytes.capacity() - last.bytes.len() >= chunk.bytes.len() =>
            {
                last.bytes.extend_from_slice(&chunk.bytes);
                last.flows += chunk.flows;
            }
            _ => self.chunks.push_back(chunk),
        }
    }

    /// Moves another batch's flows behind this one's (the partition count changed).
    fn absorb(&mut self, mut other: PartitionBatch) {
        self.chunks.append(&mut other.chunks);
        self.flows += other.flows;
        self.bytes += other.bytes;
        self.since = self.since.min(other.since);
    }

    /// Takes the leading flows for one produce request: whole chunks while they
    /// fit in `max_batch_bytes`, or part of the first one when it alone does not.
    fn take_request(&mut self, max_batch_bytes: usize) -> Vec<Encoded> {
        let mut taken = Vec::new();
        let mut bytes = 0;
        while let Some(first) = self.chunks.front_mut() {
            let room = max_batch_bytes.saturating_sub(bytes);
            if first.bytes.len() <= room {
                bytes += first.bytes.len();
                taken.extend(self.chunks.pop_front());
                continue;
            }
            if taken.is_empty() {
                let rest = first.split_off(room);
                bytes += first.bytes.len();
                taken.push(std::mem::replace(first, rest));
            }
            break;
        }
        self.flows -= taken.iter().map(|c| c.flows).sum::<usize>();
        self.bytes -= bytes;
        taken
    }

    /// Puts the flows of a failed request back in front, in their order.
    fn put_back(&mut self, chunks: Vec<Encoded>) {
        for chunk in chunks.into_iter().rev() {
            self.flows += chunk.flows;
            self.bytes += chunk.bytes.len();
            self.chunks.push_front(chunk);
        }
    }
}

/// Packs the flows of a request into Kafka records of up to
/// `max_flows_per_message` flows and `max_message_bytes` bytes, in order.
fn records(chunks: &[Encoded], config: &KafkaConfig) -> Vec<Record> {
    let timestamp = now_utc();
    let record = |value| Record {
        key: None,
        value: Some(value),
        headers: BTreeMap::new(),
        timestamp,
    };
    let mut records = Vec::new();
    let mut value = Vec::new();
    let mut flows = 0;
    for chunk in chunks {
        let (mut rest, mut rest_flows) = (chunk.bytes.as_slice(), chunk.flows);
        while rest_flows > 0 {
            if value.capacity() == 0 {
                // One allocation per record, rather than a dozen as it doubles.
                value.reserve(config.max_message_bytes);
            }
            let room_flows = config.max_flows_per_message.saturating_sub(flows);
            let room_bytes = config.max_message_bytes.saturating_sub(value.len());
            let (taken_flows, taken_bytes) = if rest_flows <= room_flows && rest.len() <= room_bytes
            {
                (rest_flows, rest.len())
            } else {
                leading(rest, room_flows, room_bytes)
            };
            if taken_flows == 0 && flows == 0 {
                // Not one flow fits an empty record: the intake lets none such through.
                break;
            }
            value.extend_from_slice(&rest[..taken_bytes]);
            flows += taken_flows;
            rest = &rest[taken_bytes..];
            rest_flows -= taken_flows;
            if rest_flows > 0 {
                records.push(record(std::mem::take(&mut value)));
                flows = 0;
            }
        }
    }
    if flows > 0 {
        records.push(record(value));
    }
    records
}

/// A live client: the partition clients of the topic, in partition order.
#[derive(Debug)]
struct Connection {
    partitions: Vec<Arc<PartitionClient>>,
}

impl Connection {
    /// Connects, reads the topic's metadata and opens one client per partition.
    async fn open(
        config: &KafkaConfig,
        transport: &Transport,
        topic: &str,
    ) -> Result<Connection, ProduceError> {
        let mut builder = ClientBuilder::new(config.brokers.clone())
            .client_id(config.client_id.clone())
            .backoff_config(BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_secs(1),
                base: 2.0,
                deadline: Some(config.produce_timeout()),
            });
        if let Some(sasl) = &config.sasl {
            let credentials = Credentials::new(sasl.username.clone(), sasl.password.clone());
            builder = builder.sasl_config(match sasl.mechanism {
                SaslMechanism::Plain => SaslConfig::Plain(credentials),
                SaslMechanism::ScramSha256 => SaslConfig::ScramSha256(credentials),
                SaslMechanism::ScramSha512 => SaslConfig::ScramSha512(credentials),
            });
        }
        let client = transport.apply(builder).build().await?;
        // Listing every topic (rather than asking for ours) keeps a broker that
        // auto-creates topics on Metadata from creating it with its defaults.
        let ids = client
            .list_topics()
            .await?
            .into_iter()
            .find(|t| t.name == topic)
            .map(|t| t.partitions)
            .filter(|partitions| !partitions.is_empty())
            .ok_or_else(|| ProduceError::TopicMissing(topic.to_owned()))?;
        let mut partitions = Vec::with_capacity(ids.len());
        for id in ids {
            let partition = client
                .partition_client(topic.to_owned(), id, UnknownTopicHandling::Retry)
                .await?;
            partitions.push(Arc::new(partition));
        }
        Ok(Connection { partitions })
    }
}

/// Exponential backoff between reconnection attempts.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);

    fn new(max: Duration) -> Self {
        Backoff {
            next: Self::FIRST,
            max,
        }
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(self.max);
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// The async end: batches, produces, reconnects. See the module documentation.
#[derive(Debug)]
pub struct Producer {
    config: KafkaConfig,
    /// Plaintext or TLS, set up once at start.
    transport: Transport,
    topic: String,
    receiver: mpsc::UnboundedReceiver<Vec<EncodedFlows>>,
    held: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    connection: Option<Connection>,
    /// By partition index (position in `Connection::partitions`): what is not
    /// yet in a request.
    batches: BTreeMap<usize, PartitionBatch>,
    /// The produce calls out, each answering with its outcome.
    in_flight: JoinSet<Result<(), ProduceError>>,
    /// The flows of each call out, by its task: kept here (not in the task)
    /// so that whatever becomes of the task, its flows are produced again.
    requests: HashMap<Id, Request>,
    /// Counts connections made: a request sent on an earlier one that fails
    /// says nothing of the current one.
    generation: u64,
    /// Whether the current outage was logged (one line per outage, not per retry).
    outage_logged: bool,
}

/// Produce requests out at once. One at a time, the agent kept up with about
/// 3 M flows/s on this project's benchmark: a request of `max_batch_bytes`
/// (900 kB) took ~3 ms to be answered, most of it the broker's, during which
/// the producer, idle, could have compressed and sent the next.
pub const MAX_IN_FLIGHT: usize = 4;

/// The flows of a produce request that is out.
#[derive(Debug)]
struct Request {
    partition: usize,
    chunks: Vec<Encoded>,
    records: usize,
    started: Instant,
    /// The connection it went out on (see `Producer::generation`).
    generation: u64,
}

impl Producer {
    /// Produces until `shutdown` resolves or every [`Intake`] is dropped, then
    /// spends up to `flush_deadline` producing what it holds; what is left is
    /// counted as dropped.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>, flush_deadline: Duration) {
        tokio::select! {
            () = self.serve() => {}
            () = shutdown => {}
        }
        self.receiver.close();
        if tokio::time::timeout(flush_deadline, self.flush_all())
            .await
            .is_err()
        {
            let left = self.held.swap(0, Ordering::AcqRel);
            eprintln!("flow-agent: shutdown deadline passed, dropping {left} flows");
            self.metrics.flows_dropped(DropReason::Shutdown, left);
            self.metrics.set_flows_held(0);
        }
    }

    /// The steady state. Cancel-safe: records leave only once Kafka acknowledged them.
    async fn serve(&mut self) {
        let mut backoff = Backoff::new(self.config.max_backoff());
        loop {
            if let Err(e) = self.ensure_connected().await {
                self.failed(&e);
                backoff.wait().await;
                continue;
            }
            let room = self.in_flight.len() < MAX_IN_FLIGHT;
            if room && let Some(partition) = self.due_partition() {
                if let Err(e) = self.send(partition) {
                    self.failed(&e);
                    backoff.wait().await;
                }
                continue;
            }
            let linger_end = self
                .batches
                .values()
                .map(|b| b.since + self.config.linger())
                .min()
                .filter(|_| room);
            tokio::select! {
                received = self.receiver.recv() => match received {
                    Some(flows) => self.add(flows),
                    None => return,
                },
                Some(answer) = self.in_flight.join_next_with_id() => {
                    match self.answered(answer) {
                        Ok(()) => backoff.reset(),
                        Err(e) => {
                            self.failed(&e);
                            backoff.wait().await;
                        }
                    }
                }
                () = sleep_until(linger_end) => {}
            }
        }
    }

    /// Takes in everything queued and produces every batch, ignoring linger.
    async fn flush_all(&mut self) {
        let mut backoff = Backoff::new(self.config.max_backoff());
        loop {
            if let Err(e) = self.ensure_connected().await {
                self.failed(&e);
                backoff.wait().await;
                continue;
            }
            while let Ok(flows) = self.receiver.try_recv() {
                self.add(flows);
            }
            let next = self.batches.keys().next().copied();
            let result = match next {
                Some(partition) if self.in_flight.len() < MAX_IN_FLIGHT => self.send(partition),
                _ => match self.in_flight.join_next_with_id().await {
                    Some(answer) => self.answered(answer),
                    None => return,
                },
            };
            if let Err(e) = result {
                self.failed(&e);
                backoff.wait().await;
            }
        }
    }

    /// Drops the connection; logs the first failure of an outage only.
    fn failed(&mut self, error: &ProduceError) {
        let was_connected = self.connection.take().is_some();
        if was_connected || !self.outage_logged {
            eprintln!("flow-agent: Kafka: {error}; retrying with backoff");
            self.outage_logged = true;
        }
        self.metrics.kafka_unreachable();
    }

    async fn ensure_connected(&mut self) -> Result<(), ProduceError> {
        if self.connection.is_some() {
            return Ok(());
        }
        let limit = self.config.produce_timeout();
        let connection = tokio::time::timeout(
            limit,
            Connection::open(&self.config, &self.transport, &self.topic),
        )
        .await
        .map_err(|_| ProduceError::Timeout(limit))??;
        self.rebalance(connection.partitions.len());
        if std::mem::take(&mut self.outage_logged) {
            eprintln!(
                "flow-agent: Kafka: connected to {} ({} partitions)",
                self.topic,
                connection.partitions.len()
            );
        }
        self.connection = Some(connection);
        self.generation += 1;
        self.metrics.kafka_reachable();
        Ok(())
    }

    /// Keeps every batch on a valid partition when the count changed.
    fn rebalance(&mut self, partitions: usize) {
        if self.batches.keys().all(|&p| p < partitions) {
            return;
        }
        for (index, batch) in std::mem::take(&mut self.batches) {
            match self.batches.entry(index % partitions) {
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(batch);
                }
                std::collections::btree_map::Entry::Occupied(mut slot) => {
                    slot.get_mut().absorb(batch)
                }
            }
        }
    }

    /// Adds flows to their partitions' batches. Needs a connection (the partition count).
    fn add(&mut self, chunks: Vec<EncodedFlows>) {
        let partitions = self.connection.as_ref().map_or(1, |c| c.partitions.len());
        for chunk in chunks {
            self.batches
                .entry(partition_of(chunk.exporter, partitions))
                .or_insert_with(PartitionBatch::new)
                .add(chunk.encoded);
        }
    }

    /// A partition whose batch is full or has lingered long enough.
    fn due_partition(&self) -> Option<usize> {
        let now = Instant::now();
        self.batches
            .iter()
            .find(|(_, b)| {
                b.bytes >= self.config.max_batch_bytes || now >= b.since + self.config.linger()
            })
            .map(|(&p, _)| p)
    }

    /// Sends the leading records of one partition's batch (up to `max_batch_bytes`).
    fn send(&mut self, partition: usize) -> Result<(), ProduceError> {
        let client = self
            .connection
            .as_ref()
            .and_then(|c| c.partitions.get(partition))
            .map(Arc::clone)
            .ok_or_else(|| ProduceError::TopicMissing(self.topic.clone()))?;
        let Some(batch) = self.batches.get_mut(&partition) else {
            return Ok(());
        };
        let taken = batch.take_request(self.config.max_batch_bytes);
        if batch.flows == 0 {
            self.batches.remove(&partition);
        }
        if taken.is_empty() {
            return Ok(());
        }
        // rskafka takes the records; the chunks stay for a retry.
        let records = records(&taken, &self.config);
        let record_count = records.len();
        let limit = self.config.produce_timeout();
        let compression = compression(self.config.compression);
        let task = self.in_flight.spawn(async move {
            match tokio::time::timeout(limit, client.produce(records, compression)).await {
                Ok(Ok(_offsets)) => Ok(()),
                Ok(Err(e)) => Err(e.into()),
                Err(_) => Err(ProduceError::Timeout(limit)),
            }
        });
        self.requests.insert(
            task.id(),
            Request {
                partition,
                chunks: taken,
                records: record_count,
                started: Instant::now(),
                generation: self.generation,
            },
        );
        Ok(())
    }

    /// Settles a request Kafka answered: its flows are released, or on failure
    /// its flows go back to the front of their partition's batch, and the
    /// error is returned if the request went out on the current connection.
    fn answered(
        &mut self,
        answer: Result<(Id, Result<(), ProduceError>), tokio::task::JoinError>,
    ) -> Result<(), ProduceError> {
        let (task, outcome) = match answer {
            Ok((task, outcome)) => (task, outcome),
            Err(e) => (e.id(), Err(ProduceError::Lost(e.to_string()))),
        };
        let Some(request) = self.requests.remove(&task) else {
            return outcome;
        };
        match outcome {
            Ok(()) => {
                let flows = request.chunks.iter().map(|c| c.flows).sum();
                let bytes = request.chunks.iter().map(|c| c.bytes.len()).sum();
                self.release(flows);
                self.metrics
                    .produced(flows, request.records, bytes, request.started.elapsed());
                Ok(())
            }
            Err(e) => {
                self.metrics.produce_error();
                let partitions = self.connection.as_ref().map_or(1, |c| c.partitions.len());
                self.batches
                    .entry(request.partition % partitions.max(1))
                    .or_insert_with(PartitionBatch::new)
                    .put_back(request.chunks);
                // A failure of an earlier connection, or of the current one
                // once it is dropped, is already being dealt with.
                if request.generation == self.generation && self.connection.is_some() {
                    Err(e)
                } else {
                    Ok(())
                }
            }
        }
    }

    fn release(&self, flows: usize) {
        let held = self.held.fetch_sub(flows, Ordering::AcqRel) - flows;
        self.metrics.set_flows_held(held);
    }
}

/// The record timestamp: the time the request was made.
fn now_utc() -> DateTime<Utc> {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let millis = i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX);
    DateTime::from_timestamp_millis(millis).unwrap_or_default()
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// What picks an exporter's partition: FNV-1a of its address, so it is stable
/// across restarts and agents, finished with SplitMix64's mixer because FNV's
/// low bits (what the modulo keeps) vary little between close addresses.
fn exporter_hash(exporter_address: &[u8]) -> u64 {
    let fnv = exporter_address
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        });
    let mut hash = fnv;
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

fn partition_of(exporter_hash: u64, partitions: usize) -> usize {
    (exporter_hash % partitions.max(1) as u64) as usize
}

fn compression(compression: config::Compression) -> Compression {
    match compression {
        config::Compression::None => Compression::NoCompression,
        config::Compression::Gzip => Compression::Gzip,
        config::Compression::Lz4 => Compression::Lz4,
        config::Compression::Zstd => Compression::Zstd,
        config::Compression::Snappy => Compression::Snappy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::decode::address_bytes;

    fn kafka_config(extra: &str) -> KafkaConfig {
        let text = format!("[kafka]\nbrokers = [\"127.0.0.1:1\"]\n{extra}");
        Config::parse(&text).unwrap_or_else(|e| panic!("{e}")).kafka
    }

    fn flow(exporter: u8, port: u32) -> FlowMessage {
        FlowMessage {
            exporter_address: vec![exporter; 16],
            src_port: port,
            bytes: 1500,
            packets: 1,
            ..FlowMessage::default()
        }
    }

    /// Encodes `flows` as a listener does.
    fn encoded(intake: &Intake, flows: &[FlowMessage]) -> Vec<EncodedFlows> {
        let mut pending = Vec::new();
        intake.encode(flows, &mut pending);
        pending
    }

    fn decoded(chunks: &[EncodedFlows]) -> Vec<FlowMessage> {
        chunks
            .iter()
            .flat_map(|c| {
                flow_proto::decode_batch::<FlowMessage>(&c.encoded.bytes)
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect()
    }

    /// The flows of Kafka records, in order.
    fn record_flows(records: &[Record]) -> Vec<FlowMessage> {
        records
            .iter()
            .flat_map(|r| {
                let value = r.value.as_deref().unwrap_or_default();
                flow_proto::decode_batch::<FlowMessage>(value).unwrap_or_else(|e| panic!("{e}"))
            })
            .collect()
    }

    /// A batch of `flows`, each exporter's run of them a chunk as a listener makes it.
    fn batch_of(intake: &Intake, flows: &[FlowMessage]) -> PartitionBatch {
        let mut batch = PartitionBatch::new();
        for chunk in encoded(intake, flows) {
            batch.add(chunk.encoded);
        }
        batch
    }

    #[test]
    fn intake_admits_up_to_the_bound_and_counts_the_rest() {
        let metrics = Arc::new(Metrics::default());
        let (intake, mut producer) = channel(
            &kafka_config(""),
            Transport::default(),
            10,
            Arc::clone(&metrics),
        );
        let six: Vec<FlowMessage> = (0..6).map(|i| flow(1, i)).collect();
        intake.submit(encoded(&intake, &six));
        // Two exporters in one submission: the second one's flows are cut.
        let mixed: Vec<FlowMessage> = (0..3)
            .map(|i| flow(1, 10 + i))
            .chain((0..3).map(|i| flow(2, 20 + i)))
            .collect();
        intake.submit(encoded(&intake, &mixed));
        intake.submit(encoded(&intake, &[flow(1, 99)]));
        assert_eq!(metrics.total_dropped(), 3);
        let first = producer.receiver.try_recv().map(|c| decoded(&c));
        let second = producer.receiver.try_recv().map(|c| decoded(&c));
        assert_eq!(first, Ok(six));
        assert_eq!(
            second,
            Ok(mixed[..4].to_vec()),
            "the newest flows are the ones dropped"
        );
        assert!(producer.receiver.try_recv().is_err());
        producer.release(10);
        intake.submit(encoded(&intake, &[flow(1, 100)]));
        let third = producer.receiver.try_recv().map(|c| decoded(&c));
        assert_eq!(third.map(|f| f[0].src_port), Ok(100));
    }

    #[test]
    fn encoding_groups_by_exporter_and_drops_flows_too_large() {
        let config = kafka_config("max_message_bytes = 60\n");
        let metrics = Arc::new(Metrics::default());
        let (intake, _producer) = channel(&config, Transport::default(), 100, Arc::clone(&metrics));
        // Too large within a run (the next flow takes its place) and as a run of its own.
        let large = |exporter| FlowMessage {
            exporter_name: "x".repeat(100),
            ..flow(exporter, 9)
        };
        let flows = [
            flow(1, 1),
            large(1),
            flow(1, 2),
            large(3),
            flow(2, 3),
            flow(1, 4),
        ];
        let chunks = encoded(&intake, &flows);
        let runs: Vec<(u64, usize)> = chunks
            .iter()
            .map(|c| (c.exporter, c.encoded.flows))
            .collect();
        let [one, two] = [1u8, 2].map(|b| exporter_hash(&[b; 16]));
        assert_eq!(runs, [(one, 2), (two, 1), (one, 1)]);
        assert_eq!(
            decoded(&chunks),
            [
                flows[0].clone(),
                flows[2].clone(),
                flows[4].clone(),
                flows[5].clone()
            ]
        );
        assert_eq!(metrics.total_dropped(), 2);
    }

    #[test]
    fn records_respect_flow_and_byte_limits() {
        let config = kafka_config("max_flows_per_message = 3\nmax_message_bytes = 1000\n");
        let metrics = Arc::new(Metrics::default());
        let (intake, _producer) = channel(&config, Transport::default(), 100, metrics);
        let flows: Vec<FlowMessage> = (0..10).map(|i| flow(1, i)).collect();
        // One flow alone fits whole; the chunk of nine must be split.
        let chunks: Vec<Encoded> = encoded(&intake, &flows[..1])
            .into_iter()
            .chain(encoded(&intake, &flows[1..]))
            .map(|c| c.encoded)
            .collect();
        let packed = records(&chunks, &config);
        let sizes: Vec<usize> = packed
            .iter()
            .map(|r| record_flows(std::slice::from_ref(r)).len())
            .collect();
        assert_eq!(sizes, [3, 3, 3, 1]);
        assert_eq!(record_flows(&packed), flows);

        let small = kafka_config("max_message_bytes = 60\nmax_batch_bytes = 130\n");
        let mut batch = batch_of(&intake, &flows);
        let mut produced = Vec::new();
        while batch.flows > 0 {
            let request = batch.take_request(small.max_batch_bytes);
            let request_bytes: usize = request.iter().map(|c| c.bytes.len()).sum();
            assert!(request_bytes <= 130, "{request_bytes} bytes in a request");
            let packed = records(&request, &small);
            assert!(
                packed
                    .iter()
                    .all(|r| r.value.as_ref().is_some_and(|v| v.len() <= 60))
            );
            produced.extend(record_flows(&packed));
        }
        assert_eq!(produced, flows);
        assert_eq!(batch.bytes, 0);
    }

    #[test]
    fn small_chunks_share_one_allocation_and_large_ones_move() {
        let config = kafka_config("");
        let metrics = Arc::new(Metrics::default());
        let (intake, _producer) = channel(&config, Transport::default(), 10_000, metrics);
        let few: Vec<FlowMessage> = (0..3).map(|i| flow(1, i)).collect();
        let mut batch = batch_of(&intake, &few);
        for chunk in encoded(&intake, &few) {
            batch.add(chunk.encoded);
        }
        assert_eq!((batch.chunks.len(), batch.flows), (1, 6));
        // More than a chunk's capacity: chunks that are not grown but added
        // as they are, none copied.
        let many: Vec<FlowMessage> = (0..CHUNK_CAPACITY as u32 / 16)
            .map(|i| flow(1, i))
            .collect();
        let many_chunks = encoded(&intake, &many);
        assert_eq!(many_chunks.len(), 2);
        assert!(
            many_chunks
                .iter()
                .all(|c| c.encoded.bytes.capacity() == CHUNK_CAPACITY)
        );
        for chunk in many_chunks {
            batch.add(chunk.encoded);
        }
        assert_eq!(batch.chunks.len(), 3);
        let everything = batch.take_request(usize::MAX);
        let expected: Vec<FlowMessage> = few.iter().chain(&few).chain(&many).cloned().collect();
        assert_eq!(record_flows(&records(&everything, &config)), expected);
    }

    #[test]
    fn flows_of_a_failed_request_go_back_in_front_in_order() {
        let config = kafka_config(
            "max_flows_per_message = 2\nmax_message_bytes = 60\nmax_batch_bytes = 60\n",
        );
        let metrics = Arc::new(Metrics::default());
        let (intake, _producer) = channel(&config, Transport::default(), 100, metrics);
        let flows: Vec<FlowMessage> = (0..6).map(|i| flow(1, i)).collect();
        let mut batch = batch_of(&intake, &flows);
        let bytes = batch.bytes;
        let first = batch.take_request(config.max_batch_bytes);
        let second = batch.take_request(config.max_batch_bytes);
        let count = |chunks: &[Encoded]| chunks.iter().map(|c| c.flows).sum::<usize>();
        assert_eq!((count(&first), count(&second), batch.flows), (2, 2, 2));
        batch.put_back(second);
        batch.put_back(first);
        assert_eq!((batch.bytes, batch.flows), (bytes, 6));
        let everything = batch.take_request(usize::MAX);
        assert_eq!(record_flows(&records(&everything, &config)), flows);
    }

    #[test]
    fn one_exporter_maps_to_one_partition() {
        let address = [10u8; 16];
        let first = partition_of(exporter_hash(&address), 8);
        assert!((0..100).all(|_| partition_of(exporter_hash(&address), 8) == first));
        let used: std::collections::BTreeSet<usize> = (1..=32u8)
            .map(|b| partition_of(exporter_hash(&address_bytes([192, 0, 2, b].into())), 8))
            .collect();
        assert_eq!(used.len(), 8, "exporters spread over every partition");
    }

    #[test]
    fn rebalancing_keeps_every_flow() {
        let config = kafka_config("");
        let metrics = Arc::new(Metrics::default());
        let (intake, mut producer) = channel(&config, Transport::default(), 100, metrics);
        for partition in 0..4 {
            let batch = batch_of(&intake, &[flow(1, partition)]);
            producer.batches.insert(partition as usize, batch);
        }
        producer.rebalance(2);
        assert_eq!(producer.batches.keys().copied().collect::<Vec<_>>(), [0, 1]);
        assert_eq!(producer.batches.values().map(|b| b.flows).sum::<usize>(), 4);
    }
}
