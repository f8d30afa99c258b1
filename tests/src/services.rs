//! The real services the tests use, each a child process on 127.0.0.1 with a free
//! port, a bounded wait for readiness, and a clean stop when dropped.
//!
//! Services must be started from the test's own thread (as `#[tokio::test]` runs
//! it): they are tied to that thread with PR_SET_PDEATHSIG, so that a test run that
//! is killed leaves no process behind.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A child process that is stopped (SIGTERM, then SIGKILL after a bound) when dropped.
#[derive(Debug)]
pub struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `command`, its output going to `log`.
    pub fn spawn(name: &'static str, mut command: Command, log: &Path) -> Process {
        let out = File::create(log).expect("create the service log");
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone the log handle"))
            .stderr(out);
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory
        // of the parent; it makes the kernel kill the service if the test dies.
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} (did tests/install run?): {e}"));
        Process {
            name,
            child,
            log: log.to_owned(),
        }
    }

    /// Panics with the service's log if it has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.name, self.log_tail());
        }
    }

    /// The last lines of the service's output, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The process id, for tests that freeze or kill a service.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (SIGSTOP, SIGCONT, …).
    pub fn signal(&self, signal: i32) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, signal);
        }
    }

    /// Stops the process: SIGTERM, up to 5 s to exit, then SIGKILL.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        self.signal(libc::SIGCONT); // a frozen process cannot handle SIGTERM
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free TCP port on 127.0.0.1 (bound then released: a race is possible but rare).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// Polls `ready` every 50 ms until it returns true or `limit` passes; panics with the
/// process's log if it exits or the time runs out.
pub fn wait_until(
    what: &str,
    process: &mut Process,
    limit: Duration,
    mut ready: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        process.assert_running();
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} not ready within {limit:?}:\n{}", process.log_tail());
}

/// Tansu, a Kafka-compatible broker, with memory storage (it forgets everything on restart).
#[derive(Debug)]
pub struct KafkaBroker {
    process: Process,
    /// `127.0.0.1:PORT`, for clients.
    pub bootstrap: String,
    port: u16,
    advertised: u16,
    dir: TempDir,
}

impl KafkaBroker {
    /// Starts a broker on a free port and waits until it answers Metadata.
    pub fn start() -> KafkaBroker {
        let port = free_port();
        Self::start_advertising(port, port)
    }

    /// Starts a broker on `port` that tells clients to reach it at `advertised` (a
    /// proxy in front of it: agent_tls.rs puts a TLS-terminating one there).
    pub fn start_advertising(port: u16, advertised: u16) -> KafkaBroker {
        let dir = tempfile::tempdir().expect("temporary directory");
        let process = Self::spawn(port, advertised, dir.path());
        let mut broker = KafkaBroker {
            process,
            bootstrap: format!("127.0.0.1:{port}"),
            port,
            advertised,
            dir,
        };
        broker.wait_ready();
        broker
    }

    fn spawn(port: u16, advertised: u16, dir: &Path) -> Process {
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised = format!("tcp://127.0.0.1:{advertised}");
        let mut command = Command::new(crate::cache_dir().join("bin/tansu"));
        command
            .arg("broker")
            .args([
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "warn");
        Process::spawn("tansu", command, &dir.join("tansu.log"))
    }

    fn wait_ready(&mut self) {
        let port = self.port;
        // A Kafka ApiVersions v0 request: size, api key 18, version 0, correlation 1, no client id.
        wait_until(
            "Kafka broker",
            &mut self.process,
            Duration::from_secs(20),
            || {
                let request = [0u8, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff];
                let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
                    return false;
                };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut size = [0u8; 4];
                stream.write_all(&request).is_ok() && stream.read_exact(&mut size).is_ok()
            },
        );
    }

    /// Kills the broker (memory storage: topics and records are gone).
    pub fn kill(&mut self) {
        self.process.stop();
    }

    /// Starts the broker again on the same port, empty.
    pub fn restart(&mut self) {
        self.process.stop();
        self.process = Self::spawn(self.port, self.advertised, self.dir.path());
        self.wait_ready();
    }

    /// The broker's process, to freeze it (SIGSTOP) and thaw it (SIGCONT).
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// An rskafka client connected to the broker.
    pub async fn client(&self) -> rskafka::client::Client {
        rskafka::client::ClientBuilder::new(vec![self.bootstrap.clone()])
            .build()
            .await
            .expect("connect to the test broker")
    }

    /// Creates a topic explicitly (the broker may auto-create with other settings).
    pub async fn create_topic(&self, name: &str, partitions: i32) {
        self.client()
            .await
            .controller_client()
            .expect("controller client")
            .create_topic(name, partitions, 1, 5_000)
            .await
            .unwrap_or_else(|e| panic!("create topic {name}: {e}"));
    }
}

/// The real ClickHouse engine (chdb-core) behind `support/clickhouse_front.py`.
#[derive(Debug)]
pub struct ClickHouse {
    process: Process,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The format_schemas directory: relative `kafka_schema` names resolve here.
    pub schemas_dir: PathBuf,
    _dir: TempDir,
}

impl ClickHouse {
    /// Starts the engine on a free port with a fresh data directory and waits for `/ping`.
    pub fn start() -> ClickHouse {
        let dir = tempfile::tempdir().expect("temporary directory");
        let port = free_port();
        let schemas_dir = dir.path().join("format_schemas");
        let mut command = Command::new(crate::python());
        command
            .arg(crate::support_dir().join("clickhouse_front.py"))
            .args(["--port", &port.to_string()])
            .arg("--data")
            .arg(dir.path().join("data"))
            .arg("--schemas")
            .arg(&schemas_dir)
            .arg("--fresh")
            // A fresh consumer group gets its partitions in ~4 s instead of ~25 s.
            .args(["--setting", "kafka.session_timeout_ms=6000"])
            .args(["--setting", "kafka.heartbeat_interval_ms=1000"]);
        let mut process = Process::spawn("clickhouse", command, &dir.path().join("clickhouse.log"));
        wait_until("ClickHouse", &mut process, Duration::from_secs(60), || {
            http_get(port, "/ping").is_some_and(|body| body == "Ok.\n")
        });
        ClickHouse {
            process,
            url: format!("http://127.0.0.1:{port}"),
            schemas_dir,
            _dir: dir,
        }
    }

    /// Writes every schema version's `.proto` where the engine looks for it (what init.sh does on a server).
    pub fn write_schemas(&self) {
        for version in flow_proto::VERSIONS {
            std::fs::write(
                self.schemas_dir.join(version.proto_file_name()),
                version.proto_text,
            )
            .expect("write a .proto into format_schemas");
        }
    }

    /// A client of the `clickhouse` crate, as the provisioner uses it.
    pub fn client(&self) -> clickhouse::Client {
        clickhouse::Client::default().with_url(&self.url)
    }

    /// The engine's log, for failure messages.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}

/// A minimal blocking HTTP GET on 127.0.0.1: the body of a 200 answer, or None.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    (head.split(' ').nth(1) == Some("200")).then(|| body.to_owned())
}
