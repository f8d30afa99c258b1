//! The listener: at most `max_connections` connections served at once (the others
//! wait in the kernel's backlog), each with a bound on its request head, a time
//! limit for sending it (and for the TLS handshake before it) and one for each
//! write to a client that stops reading, so a stalled or flooding client holds one
//! slot for a bounded time and nothing else. SIGTERM or SIGINT stops accepting, lets the
//! requests in flight finish (for a bounded time), then returns.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_io_timeout::TimeoutStream;
use tokio_rustls::TlsAcceptor;

use super::routes::Routes;
use super::{HttpConfig, HttpError, tls};
use crate::config::Config;

/// How long requests in flight may take to finish after a stop signal.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves the endpoints until SIGTERM or SIGINT.
pub fn serve(config: &Config) -> Result<(), HttpError> {
    let routes = Arc::new(Routes::new(config)?);
    let acceptor = config.http.tls.as_ref().map(tls::acceptor).transpose()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.http.worker_threads)
        .max_blocking_threads(2)
        .thread_name("http")
        .enable_all()
        .build()
        .map_err(HttpError::Runtime)?;
    runtime.block_on(run(&config.http, routes, acceptor))
}

async fn run(
    config: &HttpConfig,
    routes: Arc<Routes>,
    acceptor: Option<TlsAcceptor>,
) -> Result<(), HttpError> {
    // Handlers first: a signal during start-up must still mean a clean stop.
    let mut terminate = signal(SignalKind::terminate()).map_err(HttpError::Signal)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(HttpError::Signal)?;
    let bind_error = |source| HttpError::Bind {
        address: config.listen.clone(),
        source,
    };
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    eprintln!(
        "flow-provisioner: serving on {local}; ClickHouse reaches it as {}",
        config.public_url()
    );

    let header_timeout = Duration::from_secs(config.header_timeout_seconds);
    let write_timeout = Duration::from_secs(config.write_timeout_seconds);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_header_size(config.max_header_bytes);
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit,
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        };
        let Ok(permit) = permit else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, or the peer gave up before accept: keep serving,
                // without spinning while the cause lasts.
                eprintln!("flow-provisioner: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let routes = Arc::clone(&routes);
        let builder = builder.clone();
        let stopping = stopping.clone();
        let acceptor = acceptor.clone();
        connections.spawn(async move {
            let _permit = permit;
            routes.metrics().connection_opened();
            // A client that stops reading makes writes wait: bounded, so it cannot
            // keep its slot (the head's read has its own bound, in hyper).
            let mut stream = TimeoutStream::new(stream);
            stream.set_write_timeout(Some(write_timeout));
            let stream = Box::pin(stream);
            let served = match acceptor {
                None => {
                    let io = TokioIo::new(stream);
                    serve_connection(io, peer, false, &routes, &builder, stopping).await
                }
                Some(acceptor) => match timeout(header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let io = TokioIo::new(stream);
                        serve_connection(io, peer, true, &routes, &builder, stopping).await
                    }
                    Ok(Err(_)) | Err(_) => false,
                },
            };
            routes.metrics().connection_closed(!served);
        });
        while connections.try_join_next().is_some() {}
    }
    eprintln!("flow-provisioner: stopping: finishing the requests in flight");
    let _ = stop.send(true);
    let drained = timeout(DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        eprintln!(
            "flow-provisioner: {} connections still open after {DRAIN:?}, closed",
            connections.len()
        );
    }
    eprintln!("flow-provisioner: stopped");
    Ok(())
}

/// Serves one connection's requests (HTTP or, `secure`, HTTPS) until the client
/// closes it, a bound ends it, or a stop signal drains it. False when hyper ended
/// it for a protocol error, an oversized head or a timeout.
async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    secure: bool,
    routes: &Arc<Routes>,
    builder: &http1::Builder,
    mut stopping: watch::Receiver<bool>,
) -> bool
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(|request| {
        let routes = Arc::clone(routes);
        async move { Ok::<_, Infallible>(routes.handle(request, peer, secure).await) }
    });
    // With upgrades: the proxy turns a WebSocket's 101 into a tunnel.
    let connection = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = stopping.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    result.is_ok()
}
