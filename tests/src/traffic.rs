//! Realistic flow datagrams for benchmarks, the demo and end-to-end tests, made by
//! real exporter code: a synthetic traffic capture is generated here, then Debian's
//! softflowd (NetFlow v5, v9, IPFIX) and pmacct's sFlow probe (`pmacctd` with the
//! `sfprobe` plugin) turn it into the datagrams they would send to a collector.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use pcap_file::pcap::{PcapPacket, PcapWriter};

/// What the synthetic capture holds.
#[derive(Debug, Clone, Copy)]
pub struct TrafficShape {
    /// Distinct flows (5-tuples).
    pub flows: u32,
    /// Packets per flow, at most (each flow gets 1 to this many).
    pub max_packets_per_flow: u32,
    /// Seed of the pseudo-random choices, so a run can be repeated.
    pub seed: u64,
}

impl Default for TrafficShape {
    fn default() -> Self {
        TrafficShape {
            flows: 20_000,
            max_packets_per_flow: 6,
            seed: 0x5eed,
        }
    }
}

/// A small xorshift generator: reproducible, and enough for traffic shapes.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One packet of the synthetic traffic, before it is written.
struct Packet {
    micros: u64,
    frame: Vec<u8>,
}

/// Writes a capture of TCP and UDP traffic over IPv4 and IPv6 (Ethernet frames) and
/// returns the number of packets and bytes (IP length) it holds.
pub fn write_synthetic_capture(path: &Path, shape: TrafficShape) -> (u64, u64) {
    let mut random = Random(shape.seed | 1);
    let mut packets = Vec::new();
    let mut ip_bytes = 0u64;
    for flow in 0..shape.flows {
        let kind = random.below(10);
        let count = 1 + random.below(u64::from(shape.max_packets_per_flow)) as u32;
        let start = random.below(20_000_000);
        let src_port = 1024 + random.below(60_000) as u16;
        let dst_port = [443u16, 80, 53, 123, 22, 8080][random.below(6) as usize];
        let host = flow.to_be_bytes();
        for n in 0..count {
            let payload_len = random.below(1400) as usize;
            let payload = vec![0u8; payload_len];
            let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
            let mut frame = Vec::with_capacity(payload_len + 80);
            let written = match kind {
                0..=6 => builder
                    .ipv4(
                        [10, host[1], host[2], host[3]],
                        [198, 51, 100, (flow % 200) as u8],
                        64,
                    )
                    .tcp(src_port, dst_port, 1000 + n, 65_000)
                    .ack(1)
                    .write(&mut frame, &payload),
                7..=8 => builder
                    .ipv4(
                        [10, 128 | host[1], host[2], host[3]],
                        [192, 0, 2, (flow % 250) as u8],
                        64,
                    )
                    .udp(src_port, dst_port)
                    .write(&mut frame, &payload),
                _ => builder
                    .ipv6(
                        [
                            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, host[0], host[1],
                            host[2], host[3],
                        ],
                        [
                            0x20,
                            0x01,
                            0x0d,
                            0xb8,
                            0,
                            1,
                            0,
                            0,
                            0,
                            0,
                            0,
                            0,
                            0,
                            0,
                            0,
                            (flow % 250) as u8,
                        ],
                        64,
                    )
                    .tcp(src_port, dst_port, 1000 + n, 65_000)
                    .ack(1)
                    .write(&mut frame, &payload),
            };
            written.expect("a synthetic packet fits in memory");
            ip_bytes += (frame.len() - 14) as u64;
            packets.push(Packet {
                micros: start + u64::from(n) * 1000 + random.below(1000),
                frame,
            });
        }
    }
    packets.sort_by_key(|p| p.micros);
    let file = BufWriter::new(File::create(path).expect("create the capture"));
    let mut writer = PcapWriter::new(file).expect("write the pcap header");
    let base = Duration::from_secs(1_790_000_000);
    for packet in &packets {
        let len = packet.frame.len() as u32;
        writer
            .write_packet(&PcapPacket::new(
                base + Duration::from_micros(packet.micros),
                len,
                &packet.frame,
            ))
            .expect("write a packet");
    }
    writer.into_writer().flush().expect("flush the capture");
    (packets.len() as u64, ip_bytes)
}

/// Runs an exporter that sends to `127.0.0.1:PORT` and collects every datagram it sends,
/// until it has exited and the socket stayed quiet for a moment.
fn collect_datagrams(what: &str, mut command: impl FnMut(u16) -> Command) -> Vec<Vec<u8>> {
    // The exporter's output goes to a file: a pipe nobody reads would block it once full.
    let log = tempfile::tempfile().expect("temporary log file");
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a collector socket");
    // Exporters reading a file send as fast as they can: a default-sized receive
    // buffer loses datagrams (templates among them) whenever this thread is not
    // scheduled. As root, the limit of net.core.rmem_max does not apply.
    let _ =
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::RcvBufForce, &(64 << 20));
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("socket timeout");
    let port = socket.local_addr().expect("collector address").port();
    let mut child = command(port)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.try_clone().expect("clone the log handle"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what} (did tests/install run?): {e}"));
    let mut datagrams = Vec::new();
    let mut buf = vec![0u8; 65_536];
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut exited_at: Option<Instant> = None;
    let mut last_datagram = Instant::now();
    loop {
        if let Ok(len) = socket.recv(&mut buf) {
            datagrams.push(buf[..len].to_vec());
            last_datagram = Instant::now();
            continue;
        }
        if exited_at.is_none() && child.try_wait().expect("exporter status").is_some() {
            exited_at = Some(Instant::now());
        }
        let quiet = last_datagram.elapsed() > Duration::from_millis(500);
        if exited_at.is_some_and(|t| t.elapsed() > Duration::from_millis(500)) && quiet {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still running after 120 s: {}", read_log(log));
        }
    }
    assert!(
        !datagrams.is_empty(),
        "{what} sent nothing: {}",
        read_log(log)
    );
    datagrams
}

fn read_log(mut log: File) -> String {
    use std::io::{Read, Seek};
    let mut text = String::new();
    let _ = log.rewind().and_then(|_| log.read_to_string(&mut text));
    text
}

/// A synthetic capture in a temporary directory, removed when this is dropped: what
/// the benchmarks and the local pipeline hand to the exporters.
#[derive(Debug)]
pub struct SyntheticCapture {
    /// The pcap file.
    pub path: PathBuf,
    /// Packets it holds.
    pub packets: u64,
    _dir: tempfile::TempDir,
}

impl SyntheticCapture {
    /// Writes a capture of `shape` (see [`write_synthetic_capture`]).
    pub fn write(shape: TrafficShape) -> SyntheticCapture {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("synthetic.pcap");
        let (packets, _) = write_synthetic_capture(&path, shape);
        SyntheticCapture {
            path,
            packets,
            _dir: dir,
        }
    }
}

/// The datagrams softflowd sends for a capture: NetFlow `version` 5 or 9, or 10 for IPFIX.
pub fn softflowd_datagrams(capture: &Path, version: u8) -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().expect("temporary directory");
    collect_datagrams("softflowd", |port| {
        let mut command = Command::new("softflowd");
        command
            .arg("-r")
            .arg(capture)
            .args([
                "-v",
                &version.to_string(),
                "-n",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("-p")
            .arg(dir.path().join("softflowd.pid"))
            // No control socket: with one, softflowd 1.1.0 reading a file can block in
            // accept() for a control client that never comes.
            .args(["-c", "none"])
            // Track IPv6 flows too (NetFlow v5 cannot carry them and leaves them out).
            .arg("-6");
        command
    })
}

/// The sFlow v5 datagrams pmacct's probe (`pmacctd`, plugin `sfprobe`) sends for a capture,
/// sampling one packet in `sampling_rate`.
pub fn pmacct_sflow_datagrams(capture: &Path, sampling_rate: u32) -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = dir.path().join("pmacctd.conf");
    collect_datagrams("pmacctd", |port| {
        std::fs::write(
            &config,
            format!(
                "daemonize: false\n\
                 pcap_savefile: {}\n\
                 plugins: sfprobe\n\
                 sfprobe_receiver: 127.0.0.1:{port}\n\
                 sfprobe_agentip: 192.0.2.10\n\
                 sampling_rate: {sampling_rate}\n\
                 pidfile: {}\n",
                capture.display(),
                dir.path().join("pmacctd.pid").display()
            ),
        )
        .expect("write pmacctd.conf");
        let mut command = Command::new("pmacctd");
        command.arg("-f").arg(&config);
        command
    })
}

/// What a replay sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Datagrams the kernel accepted.
    pub datagrams: u64,
    /// Flows in those datagrams.
    pub flows: u64,
    /// How long the replay ran.
    pub elapsed: Duration,
}

/// Sends `datagrams` in a loop to `target` at `flows_per_second` for `duration`, with
/// sendmmsg in batches of up to 64. `flows[i]` is the number of flows in datagram `i`.
/// A rate of 0 sends as fast as the socket takes them.
pub fn replay(
    socket: &UdpSocket,
    target: std::net::SocketAddr,
    datagrams: &[Vec<u8>],
    flows: &[u32],
    flows_per_second: u64,
    duration: Duration,
) -> std::io::Result<ReplayStats> {
    use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};
    use std::io::IoSlice;
    use std::os::fd::AsRawFd;

    const BATCH: usize = 64;
    assert_eq!(datagrams.len(), flows.len(), "one flow count per datagram");
    let address = SockaddrStorage::from(target);
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let start = Instant::now();
    let mut stats = ReplayStats::default();
    let mut next = 0usize;
    while start.elapsed() < duration {
        if flows_per_second > 0 {
            let due = (start.elapsed().as_secs_f64() * flows_per_second as f64) as u64;
            if stats.flows >= due {
                std::thread::sleep(Duration::from_micros(100));
                continue;
            }
        }
        let batch: Vec<usize> = (0..BATCH.min(datagrams.len()))
            .map(|k| (next + k) % datagrams.len())
            .collect();
        let slices: Vec<[IoSlice<'_>; 1]> = batch
            .iter()
            .map(|&i| [IoSlice::new(&datagrams[i])])
            .collect();
        let addresses = vec![Some(address); batch.len()];
        let sent = match sendmmsg(
            socket.as_raw_fd(),
            &mut headers,
            &slices,
            &addresses,
            [],
            MsgFlags::empty(),
        ) {
            Ok(results) => results.count(),
            Err(
                nix::errno::Errno::EAGAIN
                | nix::errno::Errno::ENOBUFS
                | nix::errno::Errno::ECONNREFUSED,
            ) => 0,
            Err(error) => return Err(error.into()),
        };
        for &i in &batch[..sent] {
            stats.datagrams += 1;
            stats.flows += u64::from(flows[i]);
        }
        next = (next + sent) % datagrams.len();
    }
    stats.elapsed = start.elapsed();
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_capture(dir: &Path) -> (std::path::PathBuf, u64) {
        let path = dir.join("traffic.pcap");
        let shape = TrafficShape {
            flows: 300,
            max_packets_per_flow: 3,
            seed: 7,
        };
        let (packets, _) = write_synthetic_capture(&path, shape);
        (path, packets)
    }

    #[test]
    fn softflowd_exports_the_synthetic_traffic() {
        let dir = tempfile::tempdir().unwrap();
        let (capture, _) = small_capture(dir.path());
        for (version, header) in [(5u8, [0u8, 5]), (9, [0, 9]), (10, [0, 10])] {
            let datagrams = softflowd_datagrams(&capture, version);
            assert!(
                datagrams.iter().all(|d| d[..2] == header),
                "version {version}"
            );
        }
    }

    #[test]
    fn replay_sends_the_datagrams_in_order_and_counts_flows() {
        let receiver = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let datagrams = vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()];
        // 3 flows a cycle at 30 flows/s for 0.3 s: about 3 cycles, 9 datagrams.
        let stats = replay(
            &sender,
            receiver.local_addr().unwrap(),
            &datagrams,
            &[1, 0, 2],
            30,
            Duration::from_millis(300),
        )
        .unwrap();
        assert!((4..=15).contains(&stats.datagrams), "{stats:?}");
        let mut buf = [0u8; 16];
        for k in 0..stats.datagrams as usize {
            let len = receiver.recv(&mut buf).unwrap();
            assert_eq!(&buf[..len], &datagrams[k % 3][..]);
        }
        let cycles = stats.datagrams / 3;
        assert!(
            stats.flows >= cycles * 3 && stats.flows <= cycles * 3 + 3,
            "{stats:?}"
        );
    }

    #[test]
    fn pmacct_probe_exports_sflow() {
        let dir = tempfile::tempdir().unwrap();
        let (capture, packets) = small_capture(dir.path());
        let datagrams = pmacct_sflow_datagrams(&capture, 1);
        assert!(datagrams.iter().all(|d| d[..4] == [0, 0, 0, 5]));
        // sFlow v5 header: version, address type, agent, sub-agent, sequence, uptime, sample count.
        // pmacct's probe may leave its last, partly filled datagram unsent at exit.
        let samples: u64 = datagrams
            .iter()
            .map(|d| {
                let offset = if d[7] == 1 { 24 } else { 36 };
                u64::from(u32::from_be_bytes(
                    d[offset..offset + 4].try_into().unwrap(),
                ))
            })
            .sum();
        assert!(
            samples <= packets && samples >= packets * 95 / 100,
            "{samples} flow samples for {packets} packets at rate 1"
        );
    }
}
