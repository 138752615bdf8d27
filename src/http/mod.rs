//! The metrics and health endpoint (`connector.expose_metrics`): `/metrics` in the Prometheus text
//! format, `/healthz` (the process is up) and `/readyz` (the source is connected and no sink is
//! refusing our credential).
//!
//! The server only reads: every number comes from the [`crate::metrics`] registry the pipeline,
//! sources and sinks count into. Values that only make sense at scrape time are set then: build info,
//! uptime, and the live IOC count of each sink (read from the state database through a connection of
//! the server's own, so a scrape never waits for the pipeline's, and cached for
//! [`Limits::count_cache`] so a flood of scrapes costs one `COUNT(*)` per sink per period).
//!
//! The listener is bounded ([`Limits`]): a client has [`Limits::header_read_timeout`] to send a
//! request's headers (also while a kept-alive connection sits idle), and at most
//! [`Limits::max_connections`] connections are served at once; further ones wait in the kernel's
//! accept queue and cost the process no file descriptor, so a slow-loris client cannot starve the
//! daemon's own outgoing calls.

use crate::metrics::{self, Metrics};
use crate::state::State;
use axum::extract::State as Extract;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The Prometheus text exposition format's content type.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What `/readyz` checks.
#[derive(Debug, Clone)]
pub struct Readiness {
    /// The source's name (shown in the answer).
    pub source: &'static str,
    /// The source publishes `iocsync_source_connected` (OpenCTI): ready only while it is 1. Sources
    /// without a connection to hold (file, MISP polling) are ready while the process runs.
    pub source_reports_connection: bool,
    /// The sinks whose `iocsync_sink_auth_failed{sink}` must not be 1.
    pub sinks: Vec<&'static str>,
}

/// The answer of `/readyz` (JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReadyReport {
    /// Overall verdict.
    pub ready: bool,
    /// The source's name.
    pub source: &'static str,
    /// Whether the source is connected; `null` for sources without a connection to hold.
    pub source_connected: Option<bool>,
    /// Sinks currently refusing our credential (401/403).
    pub sinks_auth_failed: Vec<&'static str>,
}

impl Readiness {
    /// Evaluates readiness from the registry's gauges.
    pub fn evaluate(&self, m: &Metrics) -> ReadyReport {
        let source_connected = self
            .source_reports_connection
            .then(|| m.gauge("iocsync_source_connected", &[]) == Some(1.0));
        let sinks_auth_failed: Vec<&'static str> = self
            .sinks
            .iter()
            .copied()
            .filter(|s| m.gauge("iocsync_sink_auth_failed", &[("sink", s)]) == Some(1.0))
            .collect();
        ReadyReport {
            ready: source_connected != Some(false) && sinks_auth_failed.is_empty(),
            source: self.source,
            source_connected,
            sinks_auth_failed,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// `http.bind` is not an address we can listen on.
    #[error("`{bind}` is not an IP address or host name to listen on: {message}")]
    Address {
        /// The configured value.
        bind: String,
        /// What is wrong with it.
        message: String,
    },
    /// The OS refused the socket (port in use, permission).
    #[error("failed to listen on {addr} for /metrics: {source}")]
    Bind {
        /// The address tried.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The bounds of the listener (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a client may take to send a request's headers, counted from the connection's
    /// first read or the end of the previous answer; then the connection is closed.
    pub header_read_timeout: Duration,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// How long the per-sink live counts of a scrape are reused.
    pub count_cache: Duration,
}

impl Default for Limits {
    /// A Prometheus scrape sends its headers at once and a handful of scrapers is the norm: 5 s and
    /// 32 connections leave room for both while bounding what a hostile client can hold.
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(5),
            max_connections: 32,
            count_cache: Duration::from_secs(5),
        }
    }
}

/// Why `iocsync health` found the daemon not ready.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// `http.bind` cannot be resolved.
    #[error(transparent)]
    Address(#[from] HttpError),
    /// Nothing answered (the daemon is down, or listens elsewhere).
    #[error("no answer from {url}: {source}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The daemon answered, not ready.
    #[error("{url} answered HTTP {status}: {body}")]
    NotReady {
        /// The URL asked.
        url: String,
        /// The status.
        status: u16,
        /// The `/readyz` report.
        body: String,
    },
}

/// `iocsync health` (a container `HEALTHCHECK` without curl): asks the daemon's `/readyz` on the
/// configured `http.bind` and port, on loopback when the bind is every interface. The report on
/// success.
pub async fn probe_ready(bind: &str, port: u16, timeout: Duration) -> Result<String, HealthError> {
    let mut addr = resolve(bind, port).await?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        });
    }
    let url = format!("http://{addr}/readyz");
    let unreachable = |source| HealthError::Unreachable {
        url: url.clone(),
        source,
    };
    // No proxy: a container's HTTP_PROXY must not carry a loopback request away.
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .build()
        .map_err(unreachable)?;
    let resp = client.get(&url).send().await.map_err(unreachable)?;
    let status = resp.status().as_u16();
    let body = resp.text().await.map_err(unreachable)?;
    if status == 200 {
        Ok(body)
    } else {
        Err(HealthError::NotReady { url, status, body })
    }
}

/// Shared by the handlers.
struct Shared {
    readiness: Readiness,
    started: Instant,
    /// Where the state database lives (`None`: no live counts).
    state_dir: Option<PathBuf>,
    /// The server's own read connection, opened at the first scrape.
    db: Mutex<Option<State>>,
    /// When the live counts were last read, and how long they stay fresh.
    counted: Mutex<Option<Instant>>,
    count_cache: Duration,
}

/// A running server; dropping it stops it.
pub struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `bind:port` and serves until stopped or dropped, with the default [`Limits`].
    /// `state_dir` enables the per-sink live counts.
    pub async fn start(
        bind: &str,
        port: u16,
        readiness: Readiness,
        state_dir: Option<PathBuf>,
    ) -> Result<Server, HttpError> {
        Self::start_with(bind, port, readiness, state_dir, Limits::default()).await
    }

    /// [`Server::start`] with explicit limits.
    pub async fn start_with(
        bind: &str,
        port: u16,
        readiness: Readiness,
        state_dir: Option<PathBuf>,
        limits: Limits,
    ) -> Result<Server, HttpError> {
        let addr = resolve(bind, port).await?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| HttpError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| HttpError::Bind { addr, source })?;
        // Sinks that never failed still show a 0, so dashboards and alerts see every sink.
        let m = metrics::global();
        for sink in &readiness.sinks {
            if m.gauge("iocsync_sink_auth_failed", &[("sink", sink)])
                .is_none()
            {
                m.set("iocsync_sink_auth_failed", &[("sink", sink)], 0.0);
            }
        }
        let shared = Arc::new(Shared {
            readiness,
            started: Instant::now(),
            state_dir,
            db: Mutex::new(None),
            counted: Mutex::new(None),
            count_cache: limits.count_cache,
        });
        let stop = CancellationToken::new();
        let app = router(shared);
        let task = tokio::spawn(serve(listener, app, limits, stop.clone()));
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
        Ok(Server {
            addr,
            stop,
            task: Some(task),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets in-flight answers finish (at most 1 s each), and waits for the server task.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// How long a stop waits for a connection to finish its answer.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// The accept loop: one task per connection, at most `limits.max_connections` at once. On stop it
/// stops accepting, asks every connection to finish its answer in flight, and waits for them.
async fn serve(listener: TcpListener, app: Router, limits: Limits, stop: CancellationToken) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    loop {
        // The permit is taken before `accept`: at the cap, new connections stay in the kernel's queue.
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and the like: wait instead of spinning; the queue keeps the client.
                    tracing::warn!(cause = %e, "metrics server cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let conn =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let stop = stop.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    // An answer in flight takes milliseconds; a client still sending its headers
                    // would otherwise hold the stop for the whole header timeout.
                    match tokio::time::timeout(STOP_GRACE, conn).await {
                        Ok(result) => result,
                        Err(_) => Ok(()),
                    }
                }
            };
            if let Err(e) = result {
                // A client that timed out or went away: its business, not an operator's.
                tracing::debug!(cause = %e, "metrics connection ended");
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// `http.bind` + port → a socket address. Accepts an IP (IPv6 with or without brackets) or a host
/// name; rejects an address that carries its own port, which would silently fight
/// `connector.metrics_port`.
async fn resolve(bind: &str, port: u16) -> Result<SocketAddr, HttpError> {
    let raw = bind.trim();
    let err = |message: String| HttpError::Address {
        bind: bind.to_string(),
        message,
    };
    if raw.is_empty() {
        return Err(err("empty (use 0.0.0.0 for every interface)".into()));
    }
    if raw.parse::<SocketAddr>().is_ok() {
        return Err(err(
            "give the address only; the port is `connector.metrics_port` (CONNECTOR_METRICS_PORT)"
                .into(),
        ));
    }
    let host = raw
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(raw);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let mut found = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| err(e.to_string()))?;
    found
        .next()
        .ok_or_else(|| err("the name resolves to no address".into()))
}

/// The routes, for the server and for tests.
fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(shared)
}

async fn metrics_handler(Extract(shared): Extract<Arc<Shared>>) -> Response {
    let m = metrics::global();
    m.set(
        "iocsync_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    m.set(
        "iocsync_uptime_seconds",
        &[],
        shared.started.elapsed().as_secs_f64(),
    );
    let for_counts = Arc::clone(&shared);
    // SQLite is blocking: count off the async threads. A failure costs the live counts, not the scrape.
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || refresh_live_counts(&for_counts)).await
    {
        tracing::debug!(cause = %e, "live counts unavailable for this scrape");
    }
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], m.render()).into_response()
}

/// Sets `iocsync_sink_live_iocs{sink}` for every sink from the state database.
fn refresh_live_counts(shared: &Shared) -> Result<(), crate::state::StateError> {
    let Some(dir) = &shared.state_dir else {
        return Ok(());
    };
    {
        let mut counted = shared.counted.lock().unwrap_or_else(|e| e.into_inner());
        if counted.is_some_and(|at| at.elapsed() < shared.count_cache) {
            return Ok(());
        }
        // Claimed before counting: concurrent scrapes reuse the previous values instead of queueing.
        *counted = Some(Instant::now());
    }
    let mut db = shared.db.lock().unwrap_or_else(|e| e.into_inner());
    if db.is_none() {
        *db = State::open_read_only(dir)?;
    }
    if let Some(state) = db.as_ref() {
        for sink in &shared.readiness.sinks {
            let n = state.live_count(sink)?;
            metrics::global().set("iocsync_sink_live_iocs", &[("sink", sink)], n.max(0) as f64);
        }
    }
    Ok(())
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(Extract(shared): Extract<Arc<Shared>>) -> Response {
    let report = shared.readiness.evaluate(metrics::global());
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}

async fn not_found() -> (StatusCode, &'static str) {
    (
        StatusCode::NOT_FOUND,
        "not found: the endpoints are /metrics, /healthz and /readyz\n",
    )
}

#[cfg(test)]
mod tests;
