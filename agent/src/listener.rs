//! UDP listeners: receive, decode, enrich, hand to the producer.
//!
//! Each listener binds `workers` sockets to one port with SO_REUSEPORT; the
//! kernel hashes each exporter to one socket, so one exporter's templates live
//! in one worker's decoder and no decoder state is shared between threads. A
//! worker is a plain thread doing blocking `recv_from` with a short timeout (to
//! notice shutdown): decoding is CPU work, and one thread per socket is what the
//! kernel's load balancing expects. It reads with `recvmmsg` (nix), up to
//! [`BATCH`] datagrams a call, encodes their flows itself and hands them to the
//! producer once per call: under load one system call and one wake-up of the
//! producer serve a whole batch, and an idle socket still answers at once
//! (MSG_WAITFORONE: the call returns as soon as one datagram is there).
//!
//! Between those two, at a steady few hundred thousand datagrams a second, each
//! call would find one or two datagrams and the thread would sleep and wake for
//! every one: a wake-up costs more than decoding a datagram. So after a call
//! that found some datagrams but fewer than a batch, the worker pauses
//! [`COALESCE`] before the next, and the socket buffer gathers a batch
//! meanwhile, as network cards coalesce interrupts. Flows wait that much longer
//! (a fraction of a millisecond, against the producer's linger of hundreds); an
//! idle socket is unaffected (nothing received, no pause).

use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrLike, SockaddrStorage, recvmmsg};
use socket2::{Domain, Socket, Type};

use crate::config::{ListenerConfig, ListenerProtocol};
use crate::decode::{Datagram, DecodeCounters, DecodeOptions, Decoder, Flows, Protocol};
use crate::enrich::Enricher;
use crate::metrics::Metrics;
use crate::producer::{EncodedFlows, Intake};

/// How often a blocked receive wakes up to check for shutdown.
const STOP_CHECK: Duration = Duration::from_millis(200);
/// How often a worker drops decoder state its exporters stopped refreshing.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);
/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;
/// Datagrams read by one `recvmmsg` call. The buffers cost BATCH × 64 KiB of
/// address space, but only the pages datagrams touch become resident.
const BATCH: usize = 32;
/// The pause after a partial batch (see the module documentation): at 100 000
/// datagrams a second it gathers 20; the socket buffer holds far more.
const COALESCE: Duration = Duration::from_micros(200);

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address}: {source}")]
pub struct ListenerError {
    address: SocketAddr,
    source: std::io::Error,
}

/// What every worker shares.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub enricher: Arc<Enricher>,
    pub intake: Intake,
    pub metrics: Arc<Metrics>,
    pub stop: Arc<AtomicBool>,
}

/// A bound listener and its worker threads.
#[derive(Debug)]
pub struct Listener {
    /// The bound address (the port is the kernel's choice when 0 was asked).
    pub address: SocketAddr,
    workers: Vec<JoinHandle<()>>,
}

impl Listener {
    /// Binds the sockets and starts one worker per socket.
    pub fn start(config: &ListenerConfig, pipeline: &Pipeline) -> Result<Listener, ListenerError> {
        let fail = |source| ListenerError {
            address: config.address,
            source,
        };
        let first = bind(config.address, config.receive_buffer_bytes).map_err(fail)?;
        // With port 0, the others must join the port the kernel gave the first.
        let address = first.local_addr().map_err(fail)?;
        let mut sockets = vec![first];
        for _ in 1..config.workers {
            sockets.push(bind(address, config.receive_buffer_bytes).map_err(fail)?);
        }
        let mut workers = Vec::with_capacity(sockets.len());
        for (index, socket) in sockets.into_iter().enumerate() {
            let worker = Worker {
                socket,
                accepts: config.protocol,
                options: config.decode_options(),
                decoder: Decoder::default(),
                pipeline: pipeline.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("udp-{}-{index}", address.port()))
                .spawn(move || worker.run())
                .map_err(fail)?;
            workers.push(thread);
        }
        Ok(Listener { address, workers })
    }

    /// Waits for the workers, once the shared stop flag is set.
    pub fn join(self) {
        for worker in self.workers {
            let _ = worker.join();
        }
    }
}

/// One SO_REUSEPORT UDP socket with the asked receive buffer.
fn bind(address: SocketAddr, receive_buffer_bytes: usize) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    socket.set_reuse_port(true)?;
    socket.set_recv_buffer_size(receive_buffer_bytes)?;
    // Linux reports twice what it grants, capped by net.core.rmem_max.
    let granted = socket.recv_buffer_size()? / 2;
    if granted < receive_buffer_bytes {
        eprintln!(
            "flow-agent: {address}: receive buffer is {granted} bytes, not {receive_buffer_bytes} \
             (raise net.core.rmem_max)"
        );
    }
    socket.set_read_timeout(Some(STOP_CHECK))?;
    socket.bind(&address.into())?;
    Ok(socket.into())
}

/// One socket's receive-decode-enrich loop.
struct Worker {
    socket: UdpSocket,
    accepts: ListenerProtocol,
    options: DecodeOptions,
    decoder: Decoder,
    pipeline: Pipeline,
}

impl Worker {
    fn run(mut self) {
        let mut buffers = vec![vec![0u8; MAX_DATAGRAM]; BATCH];
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let mut received: Vec<(usize, Option<SocketAddr>)> = Vec::with_capacity(BATCH);
        let mut flows = Flows::default();
        let mut pending: Vec<EncodedFlows> = Vec::new();
        let mut counts = BatchCounts::default();
        let mut last_expiry = Instant::now();
        while !self.pipeline.stop.load(Ordering::Acquire) {
            received.clear();
            {
                let mut slices: Vec<[IoSliceMut<'_>; 1]> = buffers
                    .iter_mut()
                    .map(|b| [IoSliceMut::new(b.as_mut_slice())])
                    .collect();
                match recvmmsg(
                    self.socket.as_raw_fd(),
                    &mut headers,
                    slices.iter_mut(),
                    MsgFlags::MSG_WAITFORONE,
                    None,
                ) {
                    Ok(results) => {
                        received.extend(results.map(|r| (r.bytes, r.address.and_then(socket_addr))))
                    }
                    // The receive timeout (SO_RCVTIMEO): time to look at the stop flag.
                    Err(Errno::EAGAIN | Errno::EINTR) => {}
                    Err(e) => {
                        self.pipeline.metrics.receive_error();
                        eprintln!("flow-agent: receive error: {e}");
                    }
                }
            }
            // One clock reading per batch: it is in seconds, and a batch takes microseconds.
            let now = unix_seconds();
            for (&(len, source), buffer) in received.iter().zip(&buffers) {
                let Some(source) = source else {
                    self.pipeline.metrics.receive_error();
                    continue;
                };
                let datagram = Datagram {
                    source,
                    received: now,
                    payload: buffer.get(..len).unwrap_or_default(),
                };
                self.handle(&datagram, &mut flows, &mut pending, &mut counts);
            }
            counts.flush(&self.pipeline.metrics);
            if !pending.is_empty() {
                self.pipeline.intake.submit(std::mem::take(&mut pending));
            }
            if (1..BATCH).contains(&received.len()) {
                std::thread::sleep(COALESCE);
            }
            if last_expiry.elapsed() >= EXPIRE_EVERY {
                self.decoder.expire(unix_seconds());
                last_expiry = Instant::now();
            }
        }
    }

    /// Decodes one datagram into `pending`; flows decoded before an error still go on.
    fn handle(
        &mut self,
        datagram: &Datagram<'_>,
        flows: &mut Flows,
        pending: &mut Vec<EncodedFlows>,
        counts: &mut BatchCounts,
    ) {
        let metrics = &self.pipeline.metrics;
        let source = datagram.source;
        if !self.accepts_payload(datagram.payload) {
            metrics.decode_error("unknown", "unexpected-protocol");
            return;
        }
        let mut options = self.options;
        if let Some(rate) = self.pipeline.enricher.default_sampling_rate(source.ip()) {
            options.default_sampling_rate = rate;
        }
        flows.clear();
        let result = self
            .decoder
            .decode(datagram, None, &options, flows, &mut counts.decode);
        let protocol = match &result {
            Ok(protocol) => Some(*protocol),
            Err(e) => {
                let protocol = e.protocol();
                metrics.decode_error(protocol.map_or("unknown", |p| p.as_str()), e.kind());
                protocol
            }
        };
        if let Some(protocol) = protocol {
            counts.datagram(metrics, source.ip(), protocol, flows.len());
        }
        if flows.is_empty() {
            return;
        }
        self.pipeline.enricher.enrich(flows);
        self.pipeline.intake.encode(flows, pending);
    }

    fn accepts_payload(&self, payload: &[u8]) -> bool {
        matches!(
            (self.accepts, Protocol::detect(payload)),
            (ListenerProtocol::Auto, _)
                | (ListenerProtocol::Sflow, Some(Protocol::Sflow))
                | (
                    ListenerProtocol::Netflow,
                    Some(Protocol::NetflowV5 | Protocol::NetflowV9 | Protocol::Ipfix)
                )
        )
    }
}

/// What a worker counts over one receive batch before adding it to the shared
/// metrics: under load a batch holds dozens of datagrams, mostly of one
/// exporter, and the shared counters (a lock, atomics) are then touched once.
#[derive(Debug, Default)]
struct BatchCounts {
    decode: DecodeCounters,
    /// The exporter and protocol of the latest datagrams, and how many datagrams
    /// and flows they were.
    run: Option<(IpAddr, Protocol)>,
    datagrams: u64,
    flows: u64,
}

impl BatchCounts {
    fn datagram(&mut self, metrics: &Metrics, exporter: IpAddr, protocol: Protocol, flows: usize) {
        if self.run != Some((exporter, protocol)) {
            self.flush_run(metrics);
            self.run = Some((exporter, protocol));
        }
        self.datagrams += 1;
        self.flows += flows as u64;
    }

    fn flush_run(&mut self, metrics: &Metrics) {
        if let Some((exporter, protocol)) = self.run.take() {
            metrics.datagrams_received(exporter, protocol, self.datagrams, self.flows);
        }
        self.datagrams = 0;
        self.flows = 0;
    }

    /// Adds everything to `metrics` and starts again from zero.
    fn flush(&mut self, metrics: &Metrics) {
        self.flush_run(metrics);
        if self.decode != DecodeCounters::default() {
            metrics.add_decode_counters(&std::mem::take(&mut self.decode));
        }
    }
}

/// The sender's address as the standard library spells it (UDP gives IPv4 or IPv6).
fn socket_addr(address: SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddrV4::from(*v4).into());
    }
    address
        .as_sockaddr_in6()
        .map(|v6| SocketAddrV6::from(*v6).into())
        .filter(|_| address.family().is_some())
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
