//! The metrics and health endpoint (`connector.expose_metrics`): `/metrics` in the Prometheus text
//! format, `/healthz` (the process is up) and `/readyz` (the source is connected and no sink is
//! refusing our credential).
//!
//! The server only reads: every number comes from the [`crate::metrics`] registry the pipeline,
//! sources and sinks count into. Values that only make sense at scrape time are set then: build info,
//! uptime, and the live IOC count of each sink (read from the state database through a connection of
//! the server's own, so a scrape never waits for the pipeline's).

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
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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

/// Shared by the handlers.
struct Shared {
    readiness: Readiness,
    started: Instant,
    /// Where the state database lives (`None`: no live counts).
    state_dir: Option<PathBuf>,
    /// The server's own read connection, opened at the first scrape.
    db: Mutex<Option<State>>,
}

/// A running server; dropping it stops it.
pub struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `bind:port` and serves until stopped or dropped. `state_dir` enables the per-sink live
    /// counts.
    pub async fn start(
        bind: &str,
        port: u16,
        readiness: Readiness,
        state_dir: Option<PathBuf>,
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
        });
        let stop = CancellationToken::new();
        let app = router(shared);
        let until = stop.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(until)
                .await
            {
                tracing::warn!(cause = %e, "metrics server stopped");
            }
        });
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

    /// Stops accepting, lets in-flight answers finish, and waits for the server task.
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
mod tests {
    use super::*;

    fn readiness(connection: bool) -> Readiness {
        Readiness {
            source: "opencti",
            source_reports_connection: connection,
            sinks: vec!["sentinelone", "jsonl"],
        }
    }

    #[test]
    fn readiness_needs_a_connection_only_from_sources_that_hold_one() {
        let m = Metrics::default();
        let r = readiness(true).evaluate(&m);
        assert!(!r.ready, "no connection reported yet");
        assert_eq!(r.source_connected, Some(false));
        m.set("iocsync_source_connected", &[], 1.0);
        assert!(readiness(true).evaluate(&m).ready);

        let m = Metrics::default();
        let r = readiness(false).evaluate(&m);
        assert!(r.ready, "a file source is ready while running");
        assert_eq!(r.source_connected, None);
    }

    #[test]
    fn a_sink_refusing_our_credential_makes_it_unready() {
        let m = Metrics::default();
        m.set("iocsync_source_connected", &[], 1.0);
        m.set("iocsync_sink_auth_failed", &[("sink", "sentinelone")], 1.0);
        m.set("iocsync_sink_auth_failed", &[("sink", "jsonl")], 0.0);
        let r = readiness(true).evaluate(&m);
        assert!(!r.ready);
        assert_eq!(r.sinks_auth_failed, vec!["sentinelone"]);
        m.set("iocsync_sink_auth_failed", &[("sink", "sentinelone")], 0.0);
        assert!(readiness(true).evaluate(&m).ready);
    }

    #[tokio::test]
    async fn bind_addresses() {
        assert_eq!(
            resolve("127.0.0.1", 9095).await.expect("ipv4"),
            "127.0.0.1:9095".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(
            resolve("[::1]", 1).await.expect("bracketed ipv6"),
            "[::1]:1".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(
            resolve("::", 2).await.expect("ipv6").port(),
            2,
            "the port comes from connector.metrics_port"
        );
        assert!(resolve("localhost", 3).await.is_ok());
        let err = resolve("0.0.0.0:9100", 9095).await.expect_err("own port");
        assert!(err.to_string().contains("CONNECTOR_METRICS_PORT"), "{err}");
        assert!(resolve(" ", 9095).await.is_err());
    }

    async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
        let resp = reqwest::get(format!("http://{addr}{path}"))
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (status, ctype, resp.text().await.expect("body"))
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The pipeline creates the state before the server starts; the server only reads it.
        crate::state::State::open(dir.path()).expect("state");
        let server = Server::start(
            "127.0.0.1",
            0,
            Readiness {
                source: "file",
                source_reports_connection: false,
                sinks: vec!["http_test_sink"],
            },
            Some(dir.path().to_path_buf()),
        )
        .await
        .expect("start");
        let addr = server.local_addr();

        let (status, ctype, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert_eq!(ctype, PROMETHEUS_TEXT);
        let version = format!(
            "iocsync_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(body.contains(&version), "{body}");
        assert!(body.contains("\niocsync_uptime_seconds "), "{body}");
        assert!(
            body.contains("iocsync_sink_live_iocs{sink=\"http_test_sink\"} 0"),
            "live count from the (empty) state: {body}"
        );
        assert!(
            body.contains("iocsync_sink_auth_failed{sink=\"http_test_sink\"} 0"),
            "{body}"
        );

        assert_eq!(get(addr, "/healthz").await.0, 200);
        let (status, _, body) = get(addr, "/readyz").await;
        assert_eq!(status, 200, "{body}");
        let report: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(report["ready"], true);

        metrics::global().set(
            "iocsync_sink_auth_failed",
            &[("sink", "http_test_sink")],
            1.0,
        );
        let (status, _, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert!(body.contains("http_test_sink"), "{body}");
        metrics::global().set(
            "iocsync_sink_auth_failed",
            &[("sink", "http_test_sink")],
            0.0,
        );
        assert_eq!(get(addr, "/readyz").await.0, 200);

        assert_eq!(get(addr, "/nope").await.0, 404);
        server.stop().await;
        assert!(reqwest::get(format!("http://{addr}/healthz"))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn a_port_in_use_is_a_bind_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = taken.local_addr().expect("addr").port();
        let err = Server::start("127.0.0.1", port, readiness(false), None)
            .await
            .err()
            .expect("port in use");
        assert!(matches!(err, HttpError::Bind { .. }), "{err}");
        assert!(err.to_string().contains(&port.to_string()), "{err}");
    }
}
