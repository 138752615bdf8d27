//! Tests of the metrics and health server: routes, limits, readiness.

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

/// Waits (at most 30 s, a bound for a broken server rather than a performance claim) until the
/// peer answers or closes; the bytes read.
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| got)
}

async fn partial_request(addr: SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    s
}

#[tokio::test]
async fn a_slow_loris_client_is_disconnected_after_the_header_timeout() {
    let limits = Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let server = Server::start_with("127.0.0.1", 0, readiness(false), None, limits)
        .await
        .expect("start");
    let started = Instant::now();
    let mut loris = partial_request(server.local_addr()).await;
    let got = read_until_closed(&mut loris)
        .await
        .expect("the half-sent request is closed, not held open");
    let text = String::from_utf8_lossy(&got);
    assert!(
        got.is_empty() || text.starts_with("HTTP/1.1 408"),
        "closed without serving the request: {text}"
    );
    assert!(started.elapsed() >= limits.header_read_timeout);

    // An idle connection (nothing sent at all) is closed the same way.
    let mut idle = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    assert!(read_until_closed(&mut idle).await.is_some());
    server.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_to_be_accepted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let limits = Limits {
        header_read_timeout: Duration::from_secs(60),
        max_connections: 2,
        ..Limits::default()
    };
    let server = Server::start_with("127.0.0.1", 0, readiness(false), None, limits)
        .await
        .expect("start");
    let addr = server.local_addr();
    let first = partial_request(addr).await;
    let _second = partial_request(addr).await;
    let mut third = tokio::net::TcpStream::connect(addr).await.expect("connect");
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "a third connection is served while two hold the cap of 2: {early:?}"
    );
    // A slot frees up: the waiting connection is accepted and answered.
    drop(first);
    let got = read_until_closed(&mut third).await.expect("answered");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn live_counts_are_cached_between_scrapes() {
    use crate::ioc::{Ioc, IocKind};
    use crate::state::{EntryStatus, SinkEntry};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = State::open(dir.path()).expect("state");
    let sinks = Readiness {
        source: "file",
        source_reports_connection: false,
        sinks: vec!["http_cache_sink"],
    };
    let cached = Limits {
        count_cache: Duration::from_secs(3600),
        ..Limits::default()
    };
    let server = Server::start_with(
        "127.0.0.1",
        0,
        sinks.clone(),
        Some(dir.path().to_path_buf()),
        cached,
    )
    .await
    .expect("start");
    let series = "iocsync_sink_live_iocs{sink=\"http_cache_sink\"}";
    let body = get(server.local_addr(), "/metrics").await.2;
    assert!(body.contains(&format!("{series} 0")), "{body}");

    let tx = state.tx().expect("tx");
    tx.put_sink_entry(
        "http_cache_sink",
        &SinkEntry {
            ioc: Ioc {
                kind: IocKind::Ipv4,
                value: "192.0.2.1".into(),
            },
            indicator_id: "indicator--1".into(),
            remote_id: None,
            status: EntryStatus::Live,
            meta: Default::default(),
        },
    )
    .expect("put");
    tx.commit().expect("commit");

    let body = get(server.local_addr(), "/metrics").await.2;
    assert!(
        body.contains(&format!("{series} 0")),
        "the count is reused within count_cache: {body}"
    );
    let fresh = Limits {
        count_cache: Duration::ZERO,
        ..Limits::default()
    };
    let uncached = Server::start_with("127.0.0.1", 0, sinks, Some(dir.path().to_path_buf()), fresh)
        .await
        .expect("start");
    let body = get(uncached.local_addr(), "/metrics").await.2;
    assert!(body.contains(&format!("{series} 1")), "{body}");
    server.stop().await;
    uncached.stop().await;
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
