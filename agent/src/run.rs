//! The `run` and `check` commands: wiring the pipeline, and its lifecycle.
//!
//! Threads: one per listener socket (receive, decode, enrich), one for the
//! producer's single-threaded async runtime, one for HTTP, one to refresh the
//! local interfaces. Shutdown goes front to back: stop receiving, let the
//! producer flush what it holds within `shutdown_flush_ms` (counting what is
//! left as dropped), then stop serving HTTP. It runs when the [`Agent`] is
//! dropped, so a test that fails part-way leaves no thread behind.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use argh::FromArgs;

use crate::config::{Config, ConfigError, ListenerConfig};
use crate::enrich::Enricher;
use crate::http::{HttpError, HttpServer};
use crate::listener::{Listener, ListenerError, Pipeline};
use crate::metrics::Metrics;
use crate::producer;
use crate::tls::Transport;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Listener(#[from] ListenerError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("cannot start a thread or the async runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// A running agent. Dropping it shuts it down (see the module documentation).
#[derive(Debug)]
pub struct Agent {
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    listeners: Vec<Listener>,
    listen_addresses: Vec<SocketAddr>,
    producer: Option<(tokio::sync::oneshot::Sender<()>, JoinHandle<()>)>,
    http: Option<HttpServer>,
    discovery: Option<(std::sync::mpsc::Sender<()>, JoinHandle<()>)>,
}

impl Agent {
    /// Starts every part. Kafka need not be reachable: flows are held (up to
    /// the bound) until it is.
    pub fn start(config: &Config) -> Result<Agent, RunError> {
        config.validate()?;
        let metrics = Arc::new(Metrics::default());
        let enricher = Arc::new(Enricher::new(config)?);
        let transport = Transport::new(&config.kafka)?;
        let (intake, producer) = producer::channel(
            &config.kafka,
            transport,
            config.buffer.max_flows,
            Arc::clone(&metrics),
        );

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (shutdown, shutdown_received) = tokio::sync::oneshot::channel::<()>();
        let flush_deadline = Duration::from_millis(config.shutdown_flush_ms);
        let producer_thread =
            std::thread::Builder::new()
                .name("kafka".to_owned())
                .spawn(move || {
                    runtime.block_on(producer.run(
                        async {
                            let _ = shutdown_received.await;
                        },
                        flush_deadline,
                    ));
                })?;

        let mut agent = Agent {
            metrics: Arc::clone(&metrics),
            stop: Arc::new(AtomicBool::new(false)),
            listeners: Vec::new(),
            listen_addresses: Vec::new(),
            producer: Some((shutdown, producer_thread)),
            http: None,
            discovery: None,
        };
        if let Some(address) = config.http.listen {
            agent.http = Some(HttpServer::start(
                address,
                Arc::clone(&metrics),
                config.kafka.unhealthy_after(),
            )?);
        }
        if config.discovery.enabled {
            agent.discovery = Some(spawn_discovery(
                Arc::clone(&enricher),
                Duration::from_secs(config.discovery.refresh_seconds),
            )?);
        }
        let pipeline = Pipeline {
            enricher,
            intake,
            metrics,
            stop: Arc::clone(&agent.stop),
        };
        for listener in &config.listeners {
            let listener = Listener::start(listener, &pipeline)?;
            agent.listen_addresses.push(listener.address);
            agent.listeners.push(listener);
        }
        Ok(agent)
    }

    /// Every listener's bound address, in configuration order.
    pub fn listen_addresses(&self) -> &[SocketAddr] {
        &self.listen_addresses
    }

    /// The HTTP listener's bound address, if there is one.
    pub fn http_address(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|h| h.address)
    }

    /// The agent's counters (what `/metrics` shows).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Stops receiving, flushes within the deadline, stops serving.
    pub fn shutdown(self) {}
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for listener in self.listeners.drain(..) {
            listener.join();
        }
        if let Some((shutdown, thread)) = self.producer.take() {
            let _ = shutdown.send(());
            let _ = thread.join();
        }
        if let Some((stop, thread)) = self.discovery.take() {
            drop(stop);
            let _ = thread.join();
        }
        if let Some(http) = self.http.take() {
            http.stop();
        }
    }
}

/// Reads the local interfaces every `every` until the returned sender is dropped.
fn spawn_discovery(
    enricher: Arc<Enricher>,
    every: Duration,
) -> std::io::Result<(std::sync::mpsc::Sender<()>, JoinHandle<()>)> {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("discovery".to_owned())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every)
            {
                if let Err(e) = enricher.refresh_local() {
                    eprintln!("flow-agent: cannot read the local interfaces: {e}");
                }
            }
        })?;
    Ok((stop, thread))
}

/// Runs the agent until SIGTERM or SIGINT.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "run")]
pub struct RunCommand {
    /// the configuration file (TOML)
    #[argh(option)]
    config: PathBuf,
    /// the Kafka bootstrap brokers, comma-separated (replaces kafka.brokers)
    #[argh(option)]
    kafka_brokers: Option<String>,
    /// the UDP address:port to receive on; repeat for several (replaces the listeners' addresses)
    #[argh(option)]
    listen: Vec<SocketAddr>,
    /// address:port for /metrics and /healthz (replaces http.listen)
    #[argh(option)]
    metrics_listen: Option<SocketAddr>,
}

impl RunCommand {
    /// Exit code 0 after a clean shutdown, 1 when the agent cannot start.
    pub fn execute(self) -> ExitCode {
        match self.configuration().and_then(run_until_signal) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("flow-agent: {e}");
                ExitCode::FAILURE
            }
        }
    }

    /// The file, then the flags over it.
    fn configuration(&self) -> Result<Config, RunError> {
        let mut config = Config::load(&self.config)?;
        if let Some(brokers) = &self.kafka_brokers {
            config.kafka.brokers = brokers.split(',').map(|b| b.trim().to_owned()).collect();
        }
        if !self.listen.is_empty() {
            let template = config.listeners.first().cloned().unwrap_or_default();
            config.listeners = self
                .listen
                .iter()
                .map(|&address| ListenerConfig {
                    address,
                    ..template.clone()
                })
                .collect();
        }
        if let Some(address) = self.metrics_listen {
            config.http.listen = Some(address);
        }
        config.validate()?;
        Ok(config)
    }
}

/// Starts the agent, waits for SIGTERM or SIGINT, shuts down.
fn run_until_signal(config: Config) -> Result<(), RunError> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Handlers first: a signal during start-up must still mean a clean stop.
    let mut terminate = runtime.block_on(async { signal(SignalKind::terminate()) })?;
    let mut interrupt = runtime.block_on(async { signal(SignalKind::interrupt()) })?;
    let agent = Agent::start(&config)?;
    eprintln!(
        "flow-agent: receiving on {:?}, producing to {} via {}{}",
        agent.listen_addresses(),
        config.kafka.topic(),
        config.kafka.brokers.join(","),
        agent
            .http_address()
            .map(|a| format!(", metrics on http://{a}/metrics"))
            .unwrap_or_default()
    );
    runtime.block_on(async {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    });
    eprintln!("flow-agent: stopping: flushing what is held");
    agent.shutdown();
    eprintln!("flow-agent: stopped");
    Ok(())
}

/// Validates a configuration file and exits: 0 when valid, 1 naming the key at fault.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "check")]
pub struct CheckCommand {
    /// the configuration file (TOML)
    #[argh(option)]
    config: PathBuf,
}

impl CheckCommand {
    pub fn execute(self) -> ExitCode {
        let checked = Config::load(&self.config).and_then(|config| {
            Enricher::new(&config)?;
            Transport::new(&config.kafka)?;
            Ok(())
        });
        match checked {
            Ok(()) => {
                println!("{}: valid", self.config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", self.config.display());
                ExitCode::FAILURE
            }
        }
    }
}
