//! `flow-provisioner serve`, running as a process on a free port, against real
//! clients: curl and sh run init.sh, the real ClickHouse engine loads the three
//! dictionaries over HTTP, a local upstream stands in for Grafana behind the proxy,
//! and raw sockets send what well-behaved clients never do (half requests, huge
//! headers, absolute-form request lines).

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use flow_tests::services::{ClickHouse, Process, free_port};
use flow_tests::tls::Certificates;
use tempfile::TempDir;

/// A running `serve` with its own config file and log.
struct Serve {
    process: Process,
    port: u16,
    dir: TempDir,
}

impl Serve {
    /// Starts `serve` with `[http]` keys `http` and the other sections `rest`, and
    /// waits (bounded) for `/healthz`.
    fn start(http: &str, rest: &str) -> Serve {
        Serve::start_with(http, rest, |port| {
            raw(
                port,
                b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            )
            .is_ok_and(|answer| answer.status == 200)
        })
    }

    /// Starts `serve` and waits (bounded) until `ready(port)`.
    fn start_with(http: &str, rest: &str, ready: impl Fn(u16) -> bool) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("provisioner.toml");
        std::fs::write(
            &config,
            format!("[http]\nlisten = \"127.0.0.1:{port}\"\n{http}\n{rest}\n"),
        )
        .unwrap();
        let mut command = Command::new(flow_tests::binary("flow-provisioner"));
        command.arg("serve").arg("--config").arg(&config);
        let mut process =
            Process::spawn("flow-provisioner", command, &dir.path().join("serve.log"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            process.assert_running();
            if ready(port) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "serve not ready:\n{}",
                process.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Serve { process, port, dir }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap()
    }

    /// Waits (bounded) until the log has `line`.
    fn wait_for_log(&self, line: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.log().lines().any(|l| l == line) {
            assert!(Instant::now() < deadline, "no {line:?} in:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A response as a client saw it.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Parses `HTTP/1.1 NNN …` heads (skipping 1xx ones) and the bytes after them.
    fn parse(mut bytes: &[u8]) -> Answer {
        loop {
            let end = bytes
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .unwrap_or_else(|| {
                    panic!("no response head in {:?}", String::from_utf8_lossy(bytes))
                });
            let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
            bytes = &bytes[end + 4..];
            let mut lines = head.lines();
            let status: u16 = lines
                .next()
                .and_then(|l| l.split(' ').nth(1))
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("bad status line in {head:?}"));
            if (100..200).contains(&status) {
                continue;
            }
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                .collect();
            return Answer {
                status,
                headers,
                body: bytes.to_vec(),
            };
        }
    }
}

/// curl, the independent HTTP client, with `args`; the answer's head and body.
/// With `-I` (HEAD), curl prints the head itself.
fn curl(args: &[&str]) -> Answer {
    let head = if args.contains(&"-I") {
        &[][..]
    } else {
        &["-D", "-"][..]
    };
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--http1.1", "--max-time", "60"])
        .args(args)
        .args(head);
    Answer::parse(&succeed(&mut command))
}

/// Runs `command` and returns its output; it must exit 0.
fn succeed(command: &mut Command) -> Vec<u8> {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// A fresh connection that has sent `request` as is (maybe only part of one), with
/// a bound on how long a read waits.
fn send(port: u16, request: &[u8]) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.write_all(request)?;
    Ok(stream)
}

/// Sends `request` as is on a fresh connection and reads the answer to EOF.
fn raw(port: u16, request: &[u8]) -> std::io::Result<Answer> {
    let mut response = Vec::new();
    send(port, request)?.read_to_end(&mut response)?;
    if response.is_empty() {
        return Err(std::io::Error::other("closed without an answer"));
    }
    Ok(Answer::parse(&response))
}

const API: &str = "/api/v0/clickhouse";

#[test]
fn init_sh_writes_every_schema_byte_for_byte_and_again_idempotently() {
    let serve = Serve::start("", "");
    let answer = curl(&[&serve.url(&format!("{API}/init.sh"))]);
    assert_eq!(answer.status, 200);
    assert!(
        answer
            .header("content-type")
            .unwrap()
            .starts_with("text/x-shellscript"),
        "{:?}",
        answer.headers
    );
    let work = tempfile::tempdir().unwrap();
    let script = work.path().join("init.sh");
    std::fs::write(&script, &answer.body).unwrap();
    let schemas = work.path().join("format_schemas");

    let run =
        |dir: &Path| String::from_utf8(succeed(Command::new("sh").arg(&script).arg(dir))).unwrap();
    let first = run(&schemas);
    let second = run(&schemas);
    for version in flow_proto::VERSIONS {
        let name = version.proto_file_name();
        let path = schemas.join(&name);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            version.proto_text.as_bytes(),
            "{name}"
        );
        assert!(
            first.contains(&format!("wrote {}", path.display())),
            "{first}"
        );
        assert!(
            second.contains(&format!("unchanged {}", path.display())),
            "{second}"
        );
        // The same text is served on its own, for a look or a manual install.
        let proto = curl(&[&serve.url(&format!("{API}/{name}"))]);
        assert_eq!(proto.body, version.proto_text.as_bytes());
    }
    let left: Vec<_> = std::fs::read_dir(&schemas).unwrap().collect();
    assert_eq!(
        left.len(),
        flow_proto::VERSIONS.len(),
        "no temporary file is left"
    );

    // A changed file is put back; the README's `curl … | sh` form with the variable.
    let first_name = flow_proto::VERSIONS[0].proto_file_name();
    std::fs::write(schemas.join(&first_name), "stale").unwrap();
    let piped = succeed(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "curl -sSf {} | sh",
                serve.url(&format!("{API}/init.sh"))
            ))
            .env("CLICKHOUSE_FORMAT_SCHEMAS", &schemas),
    );
    assert!(
        String::from_utf8_lossy(&piped)
            .contains(&format!("wrote {}", schemas.join(&first_name).display()))
    );
    assert_eq!(
        std::fs::read(schemas.join(&first_name)).unwrap(),
        flow_proto::VERSIONS[0].proto_text.as_bytes()
    );

    // Conditional and HEAD requests: the ETag gives a 304, HEAD has the length and no body.
    let etag = answer.header("etag").unwrap().to_owned();
    let again = curl(&[
        "-H",
        &format!("If-None-Match: {etag}"),
        &serve.url(&format!("{API}/init.sh")),
    ]);
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    let head = curl(&["-I", &serve.url(&format!("{API}/init.sh"))]);
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length").unwrap(),
        answer.body.len().to_string()
    );
    assert!(head.body.is_empty());
}

const NETWORKS: &str = r#"
[[dictionaries.networks]]
prefix = "10.1.0.0/16"
name = "office"
role = "users"
site = "par1"
region = "eu-west"
tenant = "acme"

[[dictionaries.networks]]
prefix = "10.1.2.0/24"
name = "office-voice"
role = "voice"
site = "par1"
region = "eu-west"
tenant = "acme"

[[dictionaries.networks]]
prefix = "2001:db8:100::/48"
name = "lab, \"v6\""
role = "lab"
site = "ams2"
region = "eu-north"
tenant = "beta"
"#;

/// The name the shared AS list gives `asn`, read independently of the provisioner.
fn shared_as_name(asn: u32) -> String {
    let text = std::fs::read_to_string(flow_tests::shared_data_dir().join("asns.csv")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{asn},")))
        .unwrap()
        .trim_matches('"')
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_loads_the_three_dictionaries_with_credentials() {
    let clickhouse = ClickHouse::start();
    let asns = flow_tests::shared_data_dir().join("asns.csv");
    let serve = Serve::start(
        "[http.auth]\nusername = \"clickhouse\"\npassword = \"s3cret'pw\"\n",
        &format!("[dictionaries]\nasns = \"{}\"\n{NETWORKS}", asns.display()),
    );
    let client = clickhouse.client();
    let source = |file: &str, credentials: bool| {
        let credentials = if credentials {
            " credentials(user 'clickhouse' password 's3cret\\'pw')"
        } else {
            ""
        };
        format!(
            "SOURCE(HTTP(url '{}' format 'CSVWithNames'{credentials}))",
            serve.url(&format!("{API}/{file}"))
        )
    };
    let dictionaries = [
        (
            "protocols",
            "proto UInt8, name String, description String",
            "proto",
            "HASHED()",
            "protocols.csv",
        ),
        (
            "asns",
            "asn UInt32, name String",
            "asn",
            "HASHED()",
            "asns.csv",
        ),
        (
            "networks",
            "network String, name String, role String, site String, region String, tenant String",
            "network",
            "IP_TRIE()",
            "networks.csv",
        ),
    ];
    for (name, columns, key, layout, file) in dictionaries {
        client
            .query(&format!(
                "CREATE DICTIONARY {name} ({columns}) PRIMARY KEY {key} {} \
                 LIFETIME(3600) LAYOUT({layout})",
                source(file, true)
            ))
            .execute()
            .await
            .unwrap();
        // LIFETIME never fires in the embedded engine: load explicitly.
        client
            .query(&format!("SYSTEM RELOAD DICTIONARY {name}"))
            .execute()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", clickhouse.log_tail()));
    }

    let get = |query: String| {
        let client = client.clone();
        async move { client.query(&query).fetch_one::<String>().await.unwrap() }
    };
    assert_eq!(
        get("SELECT dictGet('protocols', 'name', toUInt64(6))".into()).await,
        "TCP"
    );
    assert_eq!(
        get("SELECT dictGet('protocols', 'name', toUInt64(58))".into()).await,
        "IPv6-ICMP"
    );
    assert_eq!(
        get("SELECT dictGet('asns', 'name', toUInt64(15169))".into()).await,
        shared_as_name(15169)
    );
    let count: u64 = client
        .query("SELECT count() FROM asns")
        .fetch_one()
        .await
        .unwrap();
    let shared_rows = std::fs::read_to_string(&asns).unwrap().lines().count() as u64 - 1;
    assert_eq!(count, shared_rows, "every AS of the shared list");

    let network = |attribute: &str, address: &str| {
        get(format!(
            "SELECT dictGet('networks', '{attribute}', toIPv6('{address}'))"
        ))
    };
    // The longest prefix wins; IPv4 prefixes match IPv4-mapped addresses too.
    assert_eq!(network("name", "::ffff:10.1.200.7").await, "office");
    assert_eq!(network("name", "::ffff:10.1.2.9").await, "office-voice");
    assert_eq!(network("tenant", "::ffff:10.1.2.9").await, "acme");
    assert_eq!(network("name", "2001:db8:100:7::1").await, "lab, \"v6\"");
    assert_eq!(network("region", "2001:db8:100:7::1").await, "eu-north");
    assert_eq!(network("name", "2001:db8:200::1").await, "");
    assert_eq!(
        get("SELECT dictGet('networks', 'site', toIPv4('10.1.3.4'))".into()).await,
        "par1"
    );

    // Without the credentials the source is refused, so the dictionary cannot load.
    client
        .query(&format!(
            "CREATE DICTIONARY anonymous (asn UInt32, name String) PRIMARY KEY asn {} \
             LIFETIME(3600) LAYOUT(HASHED())",
            source("asns.csv", false)
        ))
        .execute()
        .await
        .unwrap();
    let refused = client
        .query("SYSTEM RELOAD DICTIONARY anonymous")
        .execute()
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("401"), "{refused}");
    assert!(
        !serve.log().contains("s3cret"),
        "the password is never logged"
    );
}

#[test]
fn basic_auth_guards_the_endpoints_but_not_health() {
    let serve = Serve::start(
        "[http.auth]\nusername = \"ops\"\npassword = \"hunter2\"\n",
        "",
    );
    let url = serve.url(&format!("{API}/protocols.csv"));
    let anonymous = curl(&[&url]);
    assert_eq!(anonymous.status, 401);
    assert!(
        anonymous
            .header("www-authenticate")
            .unwrap()
            .starts_with("Basic")
    );
    assert_eq!(curl(&["-u", "ops:wrong", &url]).status, 401);
    assert_eq!(curl(&["-u", "ops:hunter2x", &url]).status, 401);
    assert_eq!(curl(&["-u", "other:hunter2", &url]).status, 401);
    let allowed = curl(&["-u", "ops:hunter2", &url]);
    assert_eq!(allowed.status, 200);
    assert!(allowed.text().starts_with("proto,name,description\n"));
    assert!(allowed.text().contains("\n6,TCP,Transmission Control\n"));
    assert_eq!(curl(&[&serve.url("/metrics")]).status, 401);
    assert_eq!(curl(&[&serve.url("/healthz")]).status, 200);
    assert!(!serve.log().contains("hunter2"));
}

#[test]
fn the_asns_file_is_read_again_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("asns.csv");
    std::fs::write(&file, "asn,name\n64500,FIRST\n").unwrap();
    let serve = Serve::start(
        "",
        &format!("[dictionaries]\nasns = \"{}\"\n", file.display()),
    );
    let url = serve.url(&format!("{API}/asns.csv"));
    let first = curl(&[&url]);
    assert_eq!(first.text(), "asn,name\n64500,FIRST\n");

    std::fs::write(
        &file,
        "network,autonomous_system_number,autonomous_system_organization\n\
         192.0.2.0/24,64501,\"Second, Ltd\"\n198.51.100.0/24,64501,\"Second, Ltd\"\n",
    )
    .unwrap();
    let second = curl(&[&url]);
    assert_eq!(second.text(), "asn,name\n64501,\"Second, Ltd\"\n");
    assert_ne!(first.header("etag"), second.header("etag"));

    // A broken file keeps the names served before, and says so.
    std::fs::write(&file, "asn,name\nnot-a-number,X\n").unwrap();
    assert_eq!(curl(&[&url]).text(), second.text());
    assert!(serve.log().contains("not-a-number"), "{}", serve.log());
    let metrics = curl(&[&serve.url("/metrics")]).text();
    assert!(
        metrics.contains("flow_provisioner_asns_reload_failures_total 1"),
        "{metrics}"
    );
}

#[test]
fn a_maxmind_mmdb_database_gives_the_as_names() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("GeoLite2-ASN.mmdb");
    let mut writer = Command::new("perl")
        .arg(flow_tests::support_dir().join("write_asn_mmdb.pl"))
        .arg(&file)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    writer
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"1.0.0.0/24,13335,CLOUDFLARENET\n8.8.8.0/24,15169,GOOGLE\n\
              2001:4860::/32,15169,GOOGLE\n2a03:2880::/32,32934,Facebook, Inc.\n",
        )
        .unwrap();
    assert!(
        writer.wait().unwrap().success(),
        "MaxMind's writer made the database"
    );
    let serve = Serve::start(
        "",
        &format!("[dictionaries]\nasns = \"{}\"\n", file.display()),
    );
    let answer = curl(&[&serve.url(&format!("{API}/asns.csv"))]);
    assert_eq!(
        answer.text(),
        "asn,name\n13335,CLOUDFLARENET\n15169,GOOGLE\n32934,\"Facebook, Inc.\"\n"
    );
}

#[test]
fn unknown_paths_wrong_methods_and_huge_heads_are_refused_and_counted() {
    let serve = Serve::start("max_header_bytes = 4096\n", "");
    assert_eq!(curl(&[&serve.url("/nope")]).status, 404);
    assert_eq!(
        curl(&[&serve.url(&format!("{API}/flow-v999.proto"))]).status,
        404
    );
    let post = curl(&[
        "-X",
        "POST",
        "-d",
        "x",
        &serve.url(&format!("{API}/init.sh")),
    ]);
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_eq!(curl(&["-X", "DELETE", &serve.url("/healthz")]).status, 405);

    let huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    assert_eq!(raw(serve.port, huge.as_bytes()).unwrap().status, 431);
    assert_eq!(curl(&[&serve.url("/healthz")]).status, 200, "still serving");

    let metrics = curl(&[&serve.url("/metrics")]).text();
    for line in [
        "flow_provisioner_http_requests_total{route=\"unknown\",status=\"404\"} 2",
        "flow_provisioner_http_requests_total{route=\"/api/v0/clickhouse/init.sh\",status=\"405\"} 1",
        "flow_provisioner_http_connection_errors_total 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

/// Opens a connection and sends the start of a request, never the end.
fn stall(port: u16) -> TcpStream {
    send(port, b"GET /healthz HTTP/1.1\r\nHost: stalled\r\nX-Half").unwrap()
}

#[test]
fn stalled_clients_do_not_stop_the_others() {
    // Many more stalled clients than worker threads: the others are still served.
    let serve = Serve::start("header_timeout_seconds = 60\n", "");
    let stalled: Vec<TcpStream> = (0..32).map(|_| stall(serve.port)).collect();
    for _ in 0..5 {
        assert_eq!(
            curl(&[&serve.url(&format!("{API}/protocols.csv"))]).status,
            200
        );
    }
    drop(stalled);

    // With every connection slot taken by stalled clients, the header timeout frees
    // them, so a new client is served rather than starved; the stalled ones are closed.
    let serve = Serve::start("max_connections = 3\nheader_timeout_seconds = 1\n", "");
    let mut stalled: Vec<TcpStream> = (0..3).map(|_| stall(serve.port)).collect();
    assert_eq!(curl(&[&serve.url("/healthz")]).status, 200);
    for stream in &mut stalled {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut rest = Vec::new();
        // The server ends the connection: EOF (possibly after a 408), not a read timeout.
        let read = stream.read_to_end(&mut rest);
        assert!(read.is_ok(), "{read:?}");
    }
}

#[test]
fn bad_config_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[grafana]\nprefix = \"grafana/\"\n", 2, "grafana.prefix"),
        ("[grafana]\nupstream = \"ftp://x\"\n", 2, "grafana.upstream"),
        (
            "[[dictionaries.networks]]\nprefix = \"10.0.0.1/8\"\n",
            2,
            "dictionaries.networks[0].prefix",
        ),
        ("[http]\nmax_connections = 0\n", 2, "http.max_connections"),
        (
            "[dictionaries]\nasns = \"/nonexistent/asns.csv\"\n",
            1,
            "dictionaries.asns",
        ),
        (
            "[http.tls]\ncert_file = \"/nonexistent/cert.pem\"\nkey_file = \"/nonexistent/key.pem\"\n",
            1,
            "http.tls.cert_file",
        ),
    ];
    for (text, code, key) in cases {
        let config = dir.path().join("bad.toml");
        std::fs::write(&config, text).unwrap();
        let output = Command::new(flow_tests::binary("flow-provisioner"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{text}: {stderr}");
        assert!(stderr.contains(key), "{text}: {stderr}");
    }
}

/// Whether a request head has this header line, names compared without case.
fn has_line(head: &str, line: &str) -> bool {
    head.lines().any(|l| l.eq_ignore_ascii_case(line))
}

/// What the test upstream saw of one request.
#[derive(Debug)]
struct Seen {
    head: String,
    body: Vec<u8>,
}

/// A small HTTP/1.1 server standing in for Grafana. `/grafana/stream` sends a large
/// body in two parts and waits, between them, for the test to say the first part
/// arrived; `/grafana/upload` says when the first chunk of a request body arrived
/// before the rest was sent; anything else is echoed.
struct Upstream {
    port: u16,
    seen: mpsc::Receiver<Seen>,
    first_part_received: mpsc::Sender<()>,
    first_chunk_arrived: mpsc::Receiver<()>,
}

const STREAM_PART: usize = 1 << 20;
const STREAM_TOTAL: usize = 8 << 20;

fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

impl Upstream {
    fn start() -> Upstream {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (seen_tx, seen) = mpsc::channel();
        let (first_part_received, part_rx) = mpsc::channel::<()>();
        let (chunk_tx, first_chunk_arrived) = mpsc::channel();
        let part_rx = std::sync::Arc::new(std::sync::Mutex::new(part_rx));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let seen_tx = seen_tx.clone();
                let chunk_tx = chunk_tx.clone();
                let part_rx = std::sync::Arc::clone(&part_rx);
                std::thread::spawn(move || {
                    let _ = Self::serve_one(stream, &seen_tx, &chunk_tx, &part_rx);
                });
            }
        });
        Upstream {
            port,
            seen,
            first_part_received,
            first_chunk_arrived,
        }
    }

    /// The `[grafana]` section that points the proxy here.
    fn grafana_section(&self) -> String {
        format!("[grafana]\nupstream = \"http://127.0.0.1:{}\"\n", self.port)
    }

    fn serve_one(
        stream: TcpStream,
        seen: &mpsc::Sender<Seen>,
        chunk_arrived: &mpsc::Sender<()>,
        part_received: &std::sync::Mutex<mpsc::Receiver<()>>,
    ) -> std::io::Result<()> {
        let mut writer = stream.try_clone()?;
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        let header = |name: &str| {
            head.lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_owned())
        };
        let path = head.split(' ').nth(1).unwrap_or("").to_owned();
        let mut body = Vec::new();
        if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            let mut first = true;
            loop {
                let mut size = String::new();
                reader.read_line(&mut size)?;
                let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; size + 2];
                reader.read_exact(&mut chunk)?;
                body.extend_from_slice(&chunk[..size]);
                if size == 0 {
                    break;
                }
                if first {
                    first = false;
                    let _ = chunk_arrived.send(());
                }
            }
        } else if let Some(length) = header("content-length") {
            body.resize(length.parse().unwrap_or(0), 0);
            reader.read_exact(&mut body)?;
        }
        if path == "/grafana/api/live/ws" {
            // A WebSocket-like switch, then an echo of whatever comes through.
            writer.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            )?;
            let _ = seen.send(Seen { head, body });
            let mut buffer = [0; 1024];
            loop {
                let n = reader.read(&mut buffer)?;
                if n == 0 {
                    return Ok(());
                }
                writer.write_all(&buffer[..n])?;
            }
        }
        if path == "/grafana/stream" {
            write!(
                writer,
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                 Content-Length: {STREAM_TOTAL}\r\nConnection: close\r\n\r\n"
            )?;
            let bytes: Vec<u8> = (0..STREAM_TOTAL).map(pattern).collect();
            writer.write_all(&bytes[..STREAM_PART])?;
            writer.flush()?;
            // The rest only once the client has the first part: a proxy that
            // buffered the whole body would never deliver it, and this would give up.
            let received = part_received
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(60));
            if received.is_err() {
                return Ok(()); // the client then sees a short body
            }
            writer.write_all(&bytes[STREAM_PART..])?;
            return Ok(());
        }
        let (status, reason) = match path.strip_prefix("/grafana/status/") {
            Some(code) => (code.parse::<u16>().unwrap_or(500), "Custom"),
            None => (200, "OK"),
        };
        let reply = format!(
            "{} {path}\n{head}\nbody={}",
            body.len(),
            String::from_utf8_lossy(&body)
        );
        write!(
            writer,
            "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nX-Upstream: grafana\r\n\
             Set-Cookie: grafana_session=abc; Path=/grafana\r\nConnection: close, X-Hop\r\n\
             X-Hop: must-not-pass\r\nContent-Length: {}\r\n\r\n{reply}",
            reply.len()
        )?;
        let _ = seen.send(Seen { head, body });
        Ok(())
    }
}

#[test]
fn the_grafana_proxy_passes_requests_and_streams_both_ways() {
    let upstream = Upstream::start();
    let serve = Serve::start("", &upstream.grafana_section());

    // GET: path and query with the prefix kept, headers through, hop-by-hop out,
    // X-Forwarded-* in; the response's headers and status come back.
    let answer = curl(&[
        "-H",
        "X-Custom: kept",
        "-H",
        "Connection: keep-alive, X-Secret",
        "-H",
        "X-Secret: hop-by-hop",
        "-H",
        "Host: flows.example.net",
        &serve.url("/grafana/d/abc?orgId=1&from=now-1h"),
    ]);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let seen = upstream.seen.recv_timeout(Duration::from_secs(30)).unwrap();
    let request_line = seen.head.lines().next().unwrap();
    assert_eq!(
        request_line,
        "GET /grafana/d/abc?orgId=1&from=now-1h HTTP/1.1"
    );
    let has = |line: &str| has_line(&seen.head, line);
    assert!(has("x-custom: kept"), "{}", seen.head);
    assert!(has("host: flows.example.net"), "{}", seen.head);
    assert!(has("x-forwarded-for: 127.0.0.1"), "{}", seen.head);
    assert!(has("x-forwarded-proto: http"), "{}", seen.head);
    assert!(has("x-forwarded-host: flows.example.net"), "{}", seen.head);
    assert!(
        !seen.head.to_ascii_lowercase().contains("x-secret"),
        "{}",
        seen.head
    );
    assert_eq!(answer.header("x-upstream"), Some("grafana"));
    assert_eq!(
        answer.header("set-cookie"),
        Some("grafana_session=abc; Path=/grafana")
    );
    assert_eq!(
        answer.header("x-hop"),
        None,
        "hop-by-hop headers of the response stay behind"
    );

    // Statuses pass through as they are.
    assert_eq!(curl(&[&serve.url("/grafana/status/418")]).status, 418);
    upstream.seen.recv_timeout(Duration::from_secs(30)).unwrap();

    // POST with a body (1 MiB, Content-Length).
    let work = tempfile::tempdir().unwrap();
    let body: Vec<u8> = (0..(1 << 20)).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(work.path().join("body"), &body).unwrap();
    let posted = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &format!("@{}", work.path().join("body").display()),
        &serve.url("/grafana/api/ds/query"),
    ]);
    assert_eq!(posted.status, 200);
    let seen = upstream.seen.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(seen.head.starts_with("POST /grafana/api/ds/query HTTP/1.1"));
    assert_eq!(seen.body, body);

    // The request body is streamed: the upstream has the first chunk before the
    // client sends the rest.
    let mut client = send(
        serve.port,
        b"POST /grafana/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\
          Connection: close\r\n\r\n5\r\nfirst\r\n",
    )
    .unwrap();
    upstream
        .first_chunk_arrived
        .recv_timeout(Duration::from_secs(60))
        .expect("the first chunk reached the upstream before the body was complete");
    client.write_all(b"7\r\n second\r\n0\r\n\r\n").unwrap();
    let mut response = Vec::new();
    client.read_to_end(&mut response).unwrap();
    let answer = Answer::parse(&response);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let seen = upstream.seen.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(seen.body, b"first second");

    // A large response is streamed: the client has the first part while the
    // upstream still holds the rest.
    let request = b"GET /grafana/stream HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let mut client = send(serve.port, request).unwrap();
    let mut received = Vec::new();
    let mut buffer = vec![0; 64 * 1024];
    let head_end = loop {
        let n = client.read(&mut buffer).unwrap();
        assert!(n > 0, "the proxy closed before the first part");
        received.extend_from_slice(&buffer[..n]);
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n")
            && received.len() - (end + 4) >= STREAM_PART
        {
            break end + 4;
        }
    };
    upstream.first_part_received.send(()).unwrap();
    client.read_to_end(&mut received).unwrap();
    let answer = Answer::parse(&received);
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("content-length"),
        Some(STREAM_TOTAL.to_string().as_str())
    );
    assert_eq!(received.len() - head_end, STREAM_TOTAL);
    assert!(
        answer
            .body
            .iter()
            .enumerate()
            .all(|(i, b)| *b == pattern(i))
    );

    // A WebSocket upgrade (Grafana Live) becomes a tunnel both ways.
    let mut socket = send(
        serve.port,
        b"GET /grafana/api/live/ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\n\
          Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0];
        socket.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(has_line(&head, "upgrade: websocket"), "{head}");
    let seen = upstream.seen.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(has_line(&seen.head, "upgrade: websocket"), "{}", seen.head);
    assert!(has_line(&seen.head, "connection: upgrade"), "{}", seen.head);
    for message in [&b"hello"[..], b"and again"] {
        socket.write_all(message).unwrap();
        let mut echoed = vec![0; message.len()];
        socket.read_exact(&mut echoed).unwrap();
        assert_eq!(echoed, message);
    }
    drop(socket);

    // An absolute-form request naming another host still goes to the one upstream.
    let answer = raw(
        serve.port,
        b"GET http://elsewhere.invalid/grafana/api/health HTTP/1.1\r\nHost: elsewhere.invalid\r\n\
          Connection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(answer.status, 200);
    let seen = upstream.seen.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(
        seen.head.starts_with("GET /grafana/api/health HTTP/1.1"),
        "{}",
        seen.head
    );

    // Outside the prefix nothing is proxied.
    assert_eq!(curl(&[&serve.url("/grafanax")]).status, 404);
    assert!(upstream.seen.try_recv().is_err());
    let _ = client.shutdown(Shutdown::Both);
}

#[test]
fn the_grafana_proxy_answers_502_when_the_upstream_is_down() {
    let down = free_port();
    let serve = Serve::start(
        "",
        &format!("[grafana]\nupstream = \"http://127.0.0.1:{down}\"\n"),
    );
    let answer = curl(&[&serve.url("/grafana/api/health")]);
    assert_eq!(answer.status, 502);
    assert!(
        answer.text().contains(&format!("http://127.0.0.1:{down}")),
        "{}",
        answer.text()
    );
    assert!(
        answer.text().contains("Connection refused"),
        "{}",
        answer.text()
    );
    // The rest of the endpoints are unaffected.
    assert_eq!(curl(&[&serve.url("/healthz")]).status, 200);
}

#[test]
fn https_with_the_configured_certificate() {
    let certificates = Certificates::make();
    let (cert, key) = (
        certificates.path("server.pem"),
        certificates.path("server.key"),
    );
    let upstream = Upstream::start();
    let cacert = certificates.path("ca.pem").display().to_string();
    let serve = Serve::start_with(
        &format!(
            "[http.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            cert.display(),
            key.display()
        ),
        &upstream.grafana_section(),
        |port| {
            Command::new("curl")
                .args(["-sf", "--max-time", "5", "--cacert", &cacert])
                .arg(format!("https://127.0.0.1:{port}/healthz"))
                .output()
                .is_ok_and(|o| o.status.success())
        },
    );
    let https = serve.url("").replace("http://", "https://");
    // Clients that connect and never start the handshake do not stop the others.
    let stalled: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect((Ipv4Addr::LOCALHOST, serve.port)).unwrap())
        .collect();
    let answer = curl(&["--cacert", &cacert, &format!("{https}{API}/protocols.csv")]);
    assert_eq!(answer.status, 200);
    assert!(
        answer.text().contains("\n17,UDP,User Datagram\n"),
        "{}",
        answer.text()
    );
    let proxied = curl(&["--cacert", &cacert, &format!("{https}/grafana/api/health")]);
    assert_eq!(proxied.status, 200);
    let seen = upstream.seen.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(
        seen.head
            .lines()
            .any(|l| l.eq_ignore_ascii_case("x-forwarded-proto: https")),
        "{}",
        seen.head
    );
    // Plain HTTP on the HTTPS port gets no HTTP answer (a TLS alert at most), and
    // nothing else is disturbed.
    let mut reply = Vec::new();
    send(serve.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap()
        .read_to_end(&mut reply)
        .unwrap();
    assert!(!reply.starts_with(b"HTTP/"), "{reply:?}");
    assert_eq!(
        curl(&["--cacert", &cacert, &format!("{https}/healthz")]).status,
        200
    );
    drop(stalled);
}

#[test]
fn a_client_that_stops_reading_loses_its_slot() {
    // An AS list far larger than the loopback socket buffers, so that writing it to
    // a client that reads nothing has to wait.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("asns.csv");
    let mut text = String::from("asn,name\n");
    for asn in 1..=600_000u32 {
        text.push_str(&format!("{asn},AS-NAME-THAT-TAKES-ROOM-{asn:08}\n"));
    }
    std::fs::write(&file, &text).unwrap();
    let serve = Serve::start(
        "max_connections = 1\nwrite_timeout_seconds = 1\n",
        &format!("[dictionaries]\nasns = \"{}\"\n", file.display()),
    );
    let request = format!("GET {API}/asns.csv HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut silent = send(serve.port, request.as_bytes()).unwrap();
    // The one slot is the silent client's until its write times out; then the next
    // client is served (with no write timeout, this curl waits forever).
    assert_eq!(curl(&[&serve.url("/healthz")]).status, 200);
    let mut received = Vec::new();
    let _ = silent.read_to_end(&mut received);
    assert!(
        received.len() < text.len(),
        "the silent client's connection was closed before the whole body"
    );
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_then_stops() {
    let upstream = Upstream::start();
    let serve = Serve::start("", &upstream.grafana_section());
    let request = b"GET /grafana/stream HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let mut client = send(serve.port, request).unwrap();
    let mut received = vec![0; 64 * 1024];
    let n = client.read(&mut received).unwrap();
    assert!(n > 0, "the response has begun");
    received.truncate(n);

    serve.process.signal(libc::SIGTERM);
    serve.wait_for_log("flow-provisioner: stopping: finishing the requests in flight");
    // The upstream sends the rest only now: the response in flight still completes.
    upstream.first_part_received.send(()).unwrap();
    client.read_to_end(&mut received).unwrap();
    let answer = Answer::parse(&received);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body.len(), STREAM_TOTAL);
    serve.wait_for_log("flow-provisioner: stopped");
}
