//! Remote text is untrusted: a server that echoes our request headers in its error body must not
//! put our credential in the logs, `iocsync check` output or the dead-letter file; URL credentials
//! in such text are removed too. A response body beyond the limit fails clearly, naming the call and
//! the limit, instead of being read whole.

mod common;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::*;
use std::path::Path;
use std::process::{Command, Output};

const OPENCTI_TOKEN: &str = "opencti-echo-token-91ab27";
const S1_TOKEN: &str = "s1-echo-token-5c3e88d1";
const SEKOIA_KEY: &str = "sekoia-echo-key-0f4d6a";
const MISP_KEY: &str = "misp-echo-key-77e1b2c9";
const URL_PASSWORD: &str = "hunter22-url-pass";

/// What the echo server answers.
#[derive(Clone, Copy)]
enum Mode {
    /// This status, with the request's headers (Authorization first) in the body.
    Echo(u16),
    /// 200 with a chunked body one MiB over the client's limit.
    Huge,
}

/// A server that answers every request according to its mode.
struct Echo {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(State(mode): State<Mode>, headers: HeaderMap) -> Response {
    match mode {
        Mode::Echo(status) => {
            let mut body = String::new();
            if let Some(auth) = headers.get("authorization") {
                body.push_str(&format!(
                    "authorization: {}\n",
                    auth.to_str().unwrap_or("?")
                ));
            }
            body.push_str(&format!(
                "upstream https://admin:{URL_PASSWORD}@internal.example/api refused\n"
            ));
            for (name, value) in &headers {
                body.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
            }
            // S1's `errors` and Sekoia's / MISP's `message` shapes, so each client quotes it.
            let body = serde_json::json!({
                "errors": [{"code": 4000010, "title": "Validation Error", "detail": body}],
                "message": body,
            });
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, body.to_string()).into_response()
        }
        Mode::Huge => {
            // 65 MiB in 1 MiB chunks, produced lazily: no Content-Length, so the client can only
            // stop by counting.
            let chunk = bytes::Bytes::from(vec![b'x'; 1 << 20]);
            let stream = futures_util::stream::iter(
                (0..65).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
            );
            Response::new(Body::from_stream(stream))
        }
    }
}

async fn echo(mode: Mode) -> Echo {
    let app = axum::Router::new().fallback(answer).with_state(mode);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Echo { url, task }
}

/// Runs a prepared command off the async threads (the server lives on them).
async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("spawn iocsync"))
        .await
        .expect("join")
}

fn all_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [OPENCTI_TOKEN, S1_TOKEN, SEKOIA_KEY, MISP_KEY, URL_PASSWORD] {
        assert!(!text.contains(secret), "{what} carries {secret}:\n{text}");
    }
}

fn sinks_env(cmd: &mut Command, url: &str, dir: &Path) {
    cmd.env("IOCSYNC_STATE_DIR", dir.join("state"))
        .env("SENTINELONE_INTEL_URL", url)
        .env("SENTINELONE_INTEL_API_KEY", format!("ApiToken {S1_TOKEN}"))
        .env("SENTINELONE_INTEL_ACCOUNT_ID", "1234567890")
        .env("SENTINELONE_INTEL_TIMEOUT", "5s")
        .env("SEKOIA_INTEL_URL", url)
        .env("SEKOIA_INTEL_APIKEY", SEKOIA_KEY)
        .env(
            "SEKOIA_INTEL_IOC_COLLECTION_UUID",
            "6f1c2d3e-4a5b-4c6d-8e7f-901234567890",
        )
        .env("SEKOIA_INTEL_TIMEOUT", "5s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoed_credentials_never_reach_check_output_or_logs() {
    for status in [400, 500] {
        let server = echo(Mode::Echo(status)).await;
        let dir = tempfile::tempdir().expect("tempdir");

        // OpenCTI as the source, both remote sinks.
        let mut cmd = iocsync(dir.path());
        cmd.arg("check")
            .env("OPENCTI_URL", &server.url)
            .env("OPENCTI_TOKEN", OPENCTI_TOKEN)
            .env("OPENCTI_REQUEST_TIMEOUT", "5s")
            .env("CONNECTOR_ID", "6a0f3f55-2c1e-4d7b-8f0a-1b2c3d4e5f60")
            .env("CONNECTOR_LIVE_STREAM_ID", "stream-1")
            .env("IOCSYNC_LOG", "debug");
        sinks_env(&mut cmd, &server.url, dir.path());
        let out = output(cmd).await;
        let text = all_text(&out);
        assert_ne!(out.status.code(), Some(0), "{text}");
        assert_no_secret("check (OpenCTI, S1, Sekoia)", &text);
        // The echoed text itself is still there, minus the secrets.
        for echoed in ["Bearer ***", "ApiToken ***", "https://***@internal.example"] {
            assert!(text.contains(echoed), "no {echoed:?} in:\n{text}");
        }

        // MISP as the source.
        let mut cmd = iocsync(dir.path());
        cmd.arg("check")
            .env("MISP_URL", &server.url)
            .env("MISP_KEY", MISP_KEY)
            .env("MISP_TIMEOUT", "5s")
            .env("MISP_REQUEST_ATTEMPTS", "1")
            .env("IOCSYNC_STATE_DIR", dir.path().join("state"))
            .env("IOCSYNC_JSONL_PATH", dir.path().join("out.jsonl"))
            .env("IOCSYNC_LOG", "debug");
        let out = output(cmd).await;
        let text = all_text(&out);
        assert_ne!(out.status.code(), Some(0), "{text}");
        assert_no_secret("check (MISP)", &text);
        assert!(text.contains("authorization: ***"), "{text}");
        assert!(text.contains("https://***@internal.example"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoed_credentials_never_reach_the_dead_letter_file() {
    let server = echo(Mode::Echo(400)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = iocsync(dir.path());
    cmd.args(["run", "--once"])
        .env("IOCSYNC_FILE_PATH", fixture("opencti/small.ndjson"))
        .env("IOCSYNC_SINKS", "sentinelone")
        .env("IOCSYNC_PIPELINE_LINGER", "20ms")
        .env("IOCSYNC_PIPELINE_RETRY_MIN", "10ms")
        .env("IOCSYNC_PIPELINE_RETRY_MAX", "50ms")
        .env("IOCSYNC_PIPELINE_RETRY_ATTEMPTS", "2")
        .env("IOCSYNC_LOG", "debug");
    sinks_env(&mut cmd, &server.url, dir.path());
    let out = output(cmd).await;
    let text = all_text(&out);
    assert_no_secret("the logs", &text);
    let dead = std::fs::read_to_string(dir.path().join("state/dead-letters.jsonl"))
        .unwrap_or_else(|e| panic!("no dead-letter file ({e}):\n{text}"));
    assert!(!dead.trim().is_empty(), "{text}");
    assert_no_secret("the dead-letter file", &dead);
    assert!(dead.contains("authorization: ApiToken ***"), "{dead}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_fails_naming_the_call_and_the_limit() {
    let server = echo(Mode::Huge).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = iocsync(dir.path());
    cmd.arg("check")
        .env("IOCSYNC_SINKS", "sentinelone")
        .env("IOCSYNC_JSONL_PATH", dir.path().join("unused.jsonl"))
        .env("IOCSYNC_FILE_PATH", fixture("opencti/small.ndjson"));
    sinks_env(&mut cmd, &server.url, dir.path());
    let out = output(cmd).await;
    let text = all_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("sink sentinelone"))
        .unwrap_or_else(|| panic!("no sentinelone line:\n{text}"));
    assert!(line.starts_with('✗'), "{text}");
    assert!(line.contains("/threat-intelligence/iocs"), "{line}");
    assert!(line.contains(&(64usize << 20).to_string()), "{line}");
    assert!(line.contains("limit"), "{line}");
}
