//! Black-box tests of what an operator sees: `iocsync check` against the fakes (exit codes and one
//! ✓/✗ line per endpoint), the `/metrics` `/healthz` `/readyz` server during a run, graceful shutdown
//! on SIGTERM (exit 0, checkpoint written, final OpenCTI ping, nothing lost after a restart) and JSON
//! logs.

mod common;
#[path = "fakes/opencti.rs"]
mod opencti_fake;
#[path = "fakes/sekoia.rs"]
mod sekoia_fake;
#[path = "fakes/sentinelone.rs"]
mod sentinelone_fake;

use common::*;
use opencti_fake::FakeOpenCti;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

const OPENCTI_TOKEN: &str = "opencti-test-token-5ecret";
const CONNECTOR_ID: &str = "0b3cb3f6-5f4e-4a7b-9c1e-2f6d8a9b0c1d";
const S1_ACCOUNT: &str = "1234567890";

/// Runs a prepared command off the async threads (the fakes live on them) and returns its output.
async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("spawn iocsync"))
        .await
        .expect("join")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn opencti_env(cmd: &mut Command, fake: &FakeOpenCti, stream: &str) {
    cmd.env("OPENCTI_URL", &fake.url)
        .env("OPENCTI_TOKEN", OPENCTI_TOKEN)
        .env("CONNECTOR_ID", CONNECTOR_ID)
        .env("CONNECTOR_LIVE_STREAM_ID", stream)
        .env("CONNECTOR_LIVE_STREAM_RECOVER_ISO_DATE", "no")
        .env("OPENCTI_REQUEST_TIMEOUT", "3s")
        .env("OPENCTI_RECONNECT_MIN", "50ms")
        .env("OPENCTI_RECONNECT_MAX", "500ms");
}

fn s1_env(cmd: &mut Command, url: &str, key: &str) {
    cmd.env("SENTINELONE_INTEL_URL", url)
        .env("SENTINELONE_INTEL_API_KEY", key)
        .env("SENTINELONE_INTEL_ACCOUNT_ID", S1_ACCOUNT)
        .env("SENTINELONE_INTEL_TIMEOUT", "3s");
}

fn sekoia_env(cmd: &mut Command, url: &str, key: &str, collection: &str) {
    cmd.env("SEKOIA_INTEL_URL", url)
        .env("SEKOIA_INTEL_APIKEY", key)
        .env("SEKOIA_INTEL_IOC_COLLECTION_UUID", collection)
        .env("SEKOIA_INTEL_TIMEOUT", "3s");
}

/// A URL nothing listens on.
fn closed_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

struct CheckFakes {
    opencti: FakeOpenCti,
    s1: sentinelone_fake::FakeS1,
    sekoia: sekoia_fake::FakeSekoia,
}

async fn check_fakes() -> CheckFakes {
    CheckFakes {
        opencti: FakeOpenCti::start(OPENCTI_TOKEN).await,
        s1: sentinelone_fake::start().await,
        sekoia: sekoia_fake::start().await,
    }
}

/// `iocsync check` with the three fakes; `tweak` breaks one thing.
async fn check(fakes: &CheckFakes, tweak: impl FnOnce(&mut Command)) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = iocsync(dir.path());
    cmd.arg("check")
        .env("IOCSYNC_STATE_DIR", dir.path().join("state"));
    opencti_env(&mut cmd, &fakes.opencti, "stream-1");
    s1_env(&mut cmd, fakes.s1.url(), sentinelone_fake::TOKEN);
    sekoia_env(
        &mut cmd,
        fakes.sekoia.url(),
        sekoia_fake::TOKEN,
        sekoia_fake::COLLECTION,
    );
    tweak(&mut cmd);
    let out = output(cmd).await;
    let (stdout, stderr) = text(&out);
    (out.status.code(), format!("{stdout}{stderr}"))
}

fn line<'a>(all: &'a str, prefix: &str) -> &'a str {
    all.lines()
        .find(|l| l.contains(prefix))
        .unwrap_or_else(|| panic!("no line with {prefix:?} in:\n{all}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_all_good_exits_0_with_one_line_per_endpoint() {
    let fakes = check_fakes().await;
    let (code, out) = check(&fakes, |_| {}).await;
    assert_eq!(code, Some(0), "{out}");
    for label in [
        "source opencti",
        "sink sentinelone",
        "sink sekoia",
        "state dir (IOCSYNC_STATE_DIR)",
    ] {
        assert!(line(&out, label).starts_with('✓'), "{out}");
    }
    assert!(!out.contains(OPENCTI_TOKEN), "a token leaked: {out}");
    assert!(
        !out.contains(sentinelone_fake::TOKEN),
        "a token leaked: {out}"
    );
    assert!(!out.contains(sekoia_fake::TOKEN), "a token leaked: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_bad_tokens_exit_3_and_name_the_key() {
    let fakes = check_fakes().await;
    let (code, out) = check(&fakes, |c| {
        c.env("SENTINELONE_INTEL_API_KEY", "not-the-token");
    })
    .await;
    assert_eq!(code, Some(3), "{out}");
    let bad = line(&out, "sink sentinelone");
    assert!(bad.starts_with('✗'), "{out}");
    assert!(bad.contains("SENTINELONE_INTEL_API_KEY"), "{out}");
    assert!(line(&out, "source opencti").starts_with('✓'), "{out}");
    assert!(line(&out, "sink sekoia").starts_with('✓'), "{out}");
    assert!(!out.contains("not-the-token"), "the token leaked: {out}");

    let (code, out) = check(&fakes, |c| {
        c.env("OPENCTI_TOKEN", "wrong-opencti-token");
        c.env("SEKOIA_INTEL_APIKEY", "wrong-sekoia-key");
    })
    .await;
    assert_eq!(code, Some(3), "{out}");
    assert!(
        line(&out, "source opencti").contains("OPENCTI_TOKEN"),
        "{out}"
    );
    assert!(
        line(&out, "sink sekoia").contains("SEKOIA_INTEL_APIKEY"),
        "{out}"
    );
    assert!(!out.contains("wrong-opencti-token") && !out.contains("wrong-sekoia-key"));

    // A user that must pass 2FA is a credential problem too.
    fakes.opencti.graphql_auth_error(Some("OTP_REQUIRED"));
    let (code, out) = check(&fakes, |_| {}).await;
    fakes.opencti.graphql_auth_error(None);
    assert_eq!(code, Some(3), "{out}");
    let bad = line(&out, "source opencti");
    assert!(
        bad.starts_with('✗') && bad.contains("OPENCTI_TOKEN"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_missing_stream_or_collection_exits_2_and_names_the_key() {
    let fakes = check_fakes().await;
    let (code, out) = check(&fakes, |c| {
        c.env("CONNECTOR_LIVE_STREAM_ID", "no-such-stream");
    })
    .await;
    assert_eq!(code, Some(2), "{out}");
    let bad = line(&out, "source opencti");
    assert!(bad.starts_with('✗'), "{out}");
    assert!(bad.contains("CONNECTOR_LIVE_STREAM_ID"), "{out}");
    assert!(bad.contains("no-such-stream"), "{out}");

    let (code, out) = check(&fakes, |c| {
        c.env(
            "SEKOIA_INTEL_IOC_COLLECTION_UUID",
            "00000000-0000-4000-8000-000000000000",
        );
    })
    .await;
    assert_eq!(code, Some(2), "{out}");
    let bad = line(&out, "sink sekoia");
    assert!(bad.starts_with('✗'), "{out}");
    assert!(bad.contains("SEKOIA_INTEL_IOC_COLLECTION_UUID"), "{out}");
    assert!(line(&out, "sink sentinelone").starts_with('✓'), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_unreachable_endpoints_exit_1_and_name_the_url_key() {
    let fakes = check_fakes().await;
    let closed = closed_url();
    let (code, out) = check(&fakes, |c| {
        c.env("SENTINELONE_INTEL_URL", &closed);
    })
    .await;
    assert_eq!(code, Some(1), "{out}");
    let bad = line(&out, "sink sentinelone");
    assert!(bad.starts_with('✗'), "{out}");
    assert!(bad.contains("SENTINELONE_INTEL_URL"), "{out}");

    let (code, out) = check(&fakes, |c| {
        c.env("OPENCTI_URL", &closed);
    })
    .await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        line(&out, "source opencti").contains("OPENCTI_URL"),
        "{out}"
    );

    // A bad token outranks an unreachable endpoint: exit 3.
    let (code, out) = check(&fakes, |c| {
        c.env("OPENCTI_URL", &closed);
        c.env("SEKOIA_INTEL_APIKEY", "wrong-sekoia-key");
    })
    .await;
    assert_eq!(code, Some(3), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_an_unwritable_state_dir_fails_and_names_iocsync_state_dir() {
    let fakes = check_fakes().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // A path under a regular file: unwritable whatever the user (tests may run as root).
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").expect("write");
    let (code, out) = check(&fakes, |cmd| {
        cmd.env("IOCSYNC_STATE_DIR", file.join("state"));
    })
    .await;
    assert_eq!(code, Some(1), "{out}");
    let state = line(&out, "state dir");
    assert!(state.starts_with('✗'), "{out}");
    assert!(state.contains("IOCSYNC_STATE_DIR"), "{out}");
    assert!(line(&out, "source opencti").starts_with('✓'), "{out}");
}

#[test]
fn check_with_a_bad_config_exits_2_before_probing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = iocsync(dir.path())
        .arg("check")
        .env("IOCSYNC_FILE_PATH", dir.path().join("in.sse"))
        .env("IOCSYNC_JSONL_PATH", dir.path().join("out.jsonl"))
        .env("IOCSYNC_HTTP_BIND", "")
        .env("CONNECTOR_EXPOSE_METRICS", "true")
        .env("CONNECTOR_METRICS_PORT", "not-a-port")
        .output()
        .expect("spawn");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("CONNECTOR_METRICS_PORT"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// A running daemon with its metrics server.

/// Generous: the machine is shared, and a debug build is slow.
const WAIT: Duration = Duration::from_secs(60);

/// A port nothing listens on now (bound then released, so the OS will not hand it out again soon).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

struct Daemon {
    child: Child,
    port: u16,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Daemon {
    /// Spawns `cmd` (already `run` with its env) with the metrics server on a free port; output
    /// goes to files (a pipe nobody reads would block a chatty process).
    fn spawn(mut cmd: Command, dir: &Path) -> Daemon {
        let port = free_port();
        let (stdout, stderr) = (dir.join("stdout.txt"), dir.join("stderr.txt"));
        cmd.env("CONNECTOR_EXPOSE_METRICS", "true")
            .env("CONNECTOR_METRICS_PORT", port.to_string())
            .env("IOCSYNC_HTTP_BIND", "127.0.0.1")
            .stdout(Stdio::from(
                std::fs::File::create(&stdout).expect("stdout file"),
            ))
            .stderr(Stdio::from(
                std::fs::File::create(&stderr).expect("stderr file"),
            ));
        let child = cmd.spawn().expect("spawn iocsync");
        Daemon {
            child,
            port,
            stdout,
            stderr,
        }
    }

    fn logs(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    /// GET a path of the metrics server: (status, body), or `None` while it does not answer.
    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let resp = reqwest::get(format!("http://127.0.0.1:{}{path}", self.port))
            .await
            .ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.text().await.ok()?))
    }

    async fn metrics(&self) -> Metrics {
        let (status, body) = self.get("/metrics").await.expect("metrics answer");
        assert_eq!(status, 200, "{body}");
        Metrics::parse(&body)
    }

    /// A scrape, or an empty one while the server is not up yet.
    async fn try_metrics(&self) -> Metrics {
        match self.get("/metrics").await {
            Some((200, body)) => Metrics::parse(&body),
            _ => Metrics(BTreeMap::new()),
        }
    }

    async fn ready_status(&self) -> Option<u16> {
        self.get("/readyz").await.map(|(s, _)| s)
    }

    async fn wait_for(&mut self, what: &str, mut cond: impl AsyncFnMut(&Daemon) -> bool) {
        let until = Instant::now() + WAIT;
        loop {
            if cond(self).await {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "iocsync exited ({status}) while waiting for {what}\n{}",
                    self.logs()
                );
            }
            assert!(
                Instant::now() < until,
                "timed out waiting for {what}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the exit; returns the status and how long it took.
    async fn exit(&mut self, within: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return (status, started.elapsed());
            }
            if started.elapsed() > within {
                let _ = self.child.kill();
                panic!("iocsync did not exit within {within:?}\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A scrape: `name{labels}` → value.
struct Metrics(BTreeMap<String, f64>);

impl Metrics {
    fn parse(text: &str) -> Metrics {
        let mut map = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (key, value) = line.rsplit_once(' ').expect("`series value` line");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}"));
            map.insert(key.to_string(), value);
        }
        Metrics(map)
    }

    /// The value of one series (labels in the registry's order).
    fn get(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }

    /// Every series of a metric, as (labels text, value).
    fn series(&self, name: &str) -> Vec<(String, f64)> {
        let prefix = format!("{name}{{");
        self.0
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(&prefix)
                    .and_then(|l| l.strip_suffix('}'))
                    .map(|l| (l.to_string(), *v))
            })
            .collect()
    }

    fn sum(&self, name: &str) -> f64 {
        self.series(name).iter().map(|(_, v)| v).sum()
    }
}

/// The state's newest run (what `iocsync runs --json` prints first).
fn last_run(dir: &Path) -> serde_json::Value {
    let out = run_ok(
        iocsync(dir)
            .args(["runs", "--json"])
            .env("IOCSYNC_STATE_DIR", dir.join("state")),
    );
    let runs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("runs json");
    runs.into_iter().next().expect("a recorded run")
}

fn checkpoint(dir: &Path) -> Option<String> {
    let out = run_ok(
        iocsync(dir)
            .args(["state", "show", "--json"])
            .env("IOCSYNC_STATE_DIR", dir.join("state")),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("state json");
    v["checkpoints"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(|c| c[1].as_str())
        .map(str::to_string)
}

/// An OpenCTI fake whose heartbeats are rare (so counters stay still once the stream is read).
async fn quiet_opencti() -> FakeOpenCti {
    let fake = FakeOpenCti::start(OPENCTI_TOKEN).await;
    fake.set_heartbeat(Duration::from_secs(60));
    fake
}

/// `iocsync run` from the OpenCTI fake into a JSONL file.
fn opencti_to_jsonl(dir: &Path, fake: &FakeOpenCti) -> Command {
    let mut cmd = iocsync(dir);
    cmd.arg("run")
        .env("IOCSYNC_STATE_DIR", dir.join("state"))
        .env("IOCSYNC_JSONL_PATH", dir.join("out/iocs.jsonl"))
        .env("IOCSYNC_PIPELINE_LINGER", "20ms")
        .env("OPENCTI_PING_INTERVAL", "200ms");
    opencti_env(&mut cmd, fake, "stream-1");
    cmd
}

fn jsonl_lines(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("out/iocs.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scraped_during_a_run_match_the_run_summary() {
    let fake = quiet_opencti().await;
    let events =
        fake.load_sse(&std::fs::read_to_string(fixture("opencti/small.sse")).expect("capture"));
    let expected = read_expected(&fixture("opencti/small-expected-live.tsv"));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut d = Daemon::spawn(opencti_to_jsonl(dir.path(), &fake), dir.path());

    let last_id = fake.events().last().expect("events").id.clone();
    let out_dir = dir.path().to_path_buf();
    d.wait_for("the whole stream checkpointed", async |_| {
        checkpoint(&out_dir).as_deref() == Some(last_id.as_str())
    })
    .await;
    assert_eq!(
        jsonl_live_set(&read_jsonl(&dir.path().join("out/iocs.jsonl"))),
        expected
    );
    assert_eq!(d.get("/healthz").await, Some((200, "ok\n".to_string())));
    assert_eq!(d.ready_status().await, Some(200), "{}", d.logs());
    let m = d.metrics().await;

    d.signal("TERM");
    let (status, _) = d.exit(WAIT).await;
    assert_eq!(status.code(), Some(0), "{}", d.logs());
    let run = last_run(dir.path());
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0) as f64;

    // Every event is counted once by type; the summary splits them into objects and heartbeats.
    assert!(events > 40, "fixture too small: {events}");
    assert_eq!(
        m.sum("iocsync_events_received_total"),
        n(&run["received"]) + n(&run["heartbeats"]),
        "{run}"
    );
    for (reason, count) in run["skipped"].as_object().expect("skipped") {
        assert_eq!(
            m.get(&format!("iocsync_skips_total{{reason=\"{reason}\"}}")),
            n(count),
            "skip {reason}"
        );
    }
    assert_eq!(
        m.sum("iocsync_skips_total"),
        run["skipped"]
            .as_object()
            .map_or(0.0, |o| o.values().map(n).sum())
    );
    let jsonl = &run["sinks"]["jsonl"];
    let mut applied = 0.0;
    for (op, field) in [
        ("create", "created"),
        ("delete", "deleted"),
        ("update", "updated"),
    ] {
        for (kind, count) in jsonl[field].as_object().into_iter().flatten() {
            let series =
                format!("iocsync_iocs_applied_total{{sink=\"jsonl\",op=\"{op}\",type=\"{kind}\"}}");
            assert_eq!(m.get(&series), n(count), "{series}");
            applied += n(count);
        }
    }
    assert!(applied >= expected.len() as f64);
    assert_eq!(m.sum("iocsync_iocs_applied_total"), applied);
    assert_eq!(
        m.get("iocsync_dead_letters_total{sink=\"jsonl\"}"),
        n(&jsonl["rejected"])
    );
    // Gauges and the rest of the catalogue.
    assert_eq!(m.get("iocsync_source_connected"), 1.0);
    assert_eq!(m.get("iocsync_sink_auth_failed{sink=\"jsonl\"}"), 0.0);
    assert_eq!(
        m.get("iocsync_sink_live_iocs{sink=\"jsonl\"}"),
        expected.len() as f64
    );
    assert!(m.get("iocsync_last_checkpoint_timestamp_seconds") > 1.7e9);
    assert!(m.get("iocsync_source_lag_seconds") > 0.0);
    assert!(m.get("iocsync_uptime_seconds") > 0.0);
    assert_eq!(
        m.get(&format!(
            "iocsync_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    assert!(m.get("iocsync_batch_duration_seconds_count{sink=\"jsonl\"}") >= 1.0);
    assert!(
        m.get("iocsync_api_calls_total{remote=\"opencti\",endpoint=\"stream\",status=\"2xx\"}")
            >= 1.0
    );
    // The printed summary is the recorded one.
    let stdout = d.stdout();
    assert!(
        stdout.contains(&format!("received {}", run["received"])),
        "{stdout}"
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_source_connection_and_sink_auth_failures() {
    let fake = quiet_opencti().await;
    let s1 = sentinelone_fake::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = iocsync(dir.path());
    cmd.arg("run")
        .env("IOCSYNC_STATE_DIR", dir.path().join("state"))
        .env("IOCSYNC_PIPELINE_LINGER", "20ms")
        .env("IOCSYNC_PIPELINE_RETRY_MIN", "50ms")
        .env("IOCSYNC_PIPELINE_AUTH_RETRY_INTERVAL", "300ms")
        .env("OPENCTI_PING_INTERVAL", "200ms");
    opencti_env(&mut cmd, &fake, "stream-1");
    s1_env(&mut cmd, s1.url(), sentinelone_fake::TOKEN);
    let mut d = Daemon::spawn(cmd, dir.path());

    fake.push("create", opencti_fake::indicator(1));
    d.wait_for("/readyz 200", async |d| d.ready_status().await == Some(200))
        .await;
    let s1_count = |n: usize| {
        let s1 = &s1;
        move || s1.iocs().len() == n
    };
    let first = s1_count(1);
    d.wait_for("the first IOC in S1", async |_| first()).await;

    // The token is rotated in S1: the next create gets 401 and the sink is flagged.
    s1.set_token("rotated-token");
    fake.push("create", opencti_fake::indicator(2));
    d.wait_for("/readyz 503", async |d| d.ready_status().await == Some(503))
        .await;
    let (_, body) = d.get("/readyz").await.expect("readyz");
    let report: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(report["ready"], false);
    assert_eq!(
        report["sinks_auth_failed"],
        serde_json::json!(["sentinelone"])
    );
    assert_eq!(report["source_connected"], true);
    let m = d.metrics().await;
    assert_eq!(m.get("iocsync_sink_auth_failed{sink=\"sentinelone\"}"), 1.0);
    assert!(m.get("iocsync_retries_total{sink=\"sentinelone\",cause=\"auth\"}") >= 1.0);
    assert!(
        m.get("iocsync_api_calls_total{remote=\"sentinelone\",endpoint=\"POST /iocs\",status=\"4xx\"}")
            >= 1.0,
        "{:?}",
        m.series("iocsync_api_calls_total")
    );

    // The operator fixes the token in S1: the retry succeeds and readiness comes back.
    s1.set_token(sentinelone_fake::TOKEN);
    d.wait_for("/readyz 200 again", async |d| {
        d.ready_status().await == Some(200)
    })
    .await;
    let second = s1_count(2);
    d.wait_for("the second IOC in S1", async |_| second()).await;
    assert_eq!(
        d.metrics()
            .await
            .get("iocsync_sink_auth_failed{sink=\"sentinelone\"}"),
        0.0
    );

    // The source losing its stream makes it unready too.
    fake.deny_stream(true);
    fake.stop_stream("stream-1");
    d.wait_for("/readyz 503 without the stream", async |d| {
        d.ready_status().await == Some(503)
    })
    .await;
    let (_, body) = d.get("/readyz").await.expect("readyz");
    assert!(body.contains("\"source_connected\":false"), "{body}");

    d.signal("TERM");
    let (status, _) = d.exit(WAIT).await;
    assert_eq!(status.code(), Some(0), "{}", d.logs());
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_exits_0_with_the_checkpoint_pinged_and_nothing_lost_after_restart() {
    let fake = quiet_opencti().await;
    fake.load_sse(&std::fs::read_to_string(fixture("opencti/stream.sse")).expect("capture"));
    let total = fake.events().len();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = opencti_to_jsonl(dir.path(), &fake);
    // One event per batch: slow enough to be stopped in the middle.
    cmd.env("IOCSYNC_PIPELINE_BATCH_EVENTS", "1")
        .env("IOCSYNC_PIPELINE_LINGER", "1ms")
        .env("IOCSYNC_PIPELINE_SHUTDOWN_TIMEOUT", "3s");
    let mut d = Daemon::spawn(cmd, dir.path());
    let out_dir = dir.path().to_path_buf();
    d.wait_for("some IOCs written", async |_| jsonl_lines(&out_dir) >= 30)
        .await;

    d.signal("TERM");
    let (status, took) = d.exit(WAIT).await;
    assert_eq!(status.code(), Some(0), "{}", d.logs());
    assert!(
        took < Duration::from_secs(8),
        "shutdown took {took:?} (bound 3 s + final ping)"
    );
    let stdout = d.stdout();
    assert!(stdout.contains("run summary (opencti)"), "{stdout}");

    let position = checkpoint(dir.path()).expect("a checkpoint after SIGTERM");
    let index = fake
        .events()
        .iter()
        .position(|e| e.id == position)
        .expect("the checkpoint is an event id");
    assert!(index + 1 < total, "the run was not stopped mid-stream");
    // The final ping published exactly the final checkpoint.
    let last_ping = fake.pinged_states().last().cloned().expect("pings");
    assert_eq!(last_ping["start_from"], position.as_str(), "{}", d.logs());
    let run = last_run(dir.path());
    assert_eq!(
        run["received"].as_u64(),
        Some(
            run["applied"].as_u64().unwrap_or(0)
                + run["skipped"]
                    .as_object()
                    .map_or(0, |o| o.values().filter_map(|v| v.as_u64()).sum())
                + run["dead_lettered"].as_u64().unwrap_or(0)
                + run["pending"].as_u64().unwrap_or(0)
        ),
        "{run}"
    );
    drop(d);

    // Restart until caught up: the expected live set, no duplicate create, nothing lost.
    let mut again = opencti_to_jsonl(dir.path(), &fake);
    again.arg("--once");
    let out = output(again).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let expected = read_expected(&fixture("opencti/expected-live.tsv"));
    assert_eq!(
        jsonl_live_set(&read_jsonl(&dir.path().join("out/iocs.jsonl"))),
        expected
    );
}

/// `iocsync run` from the OpenCTI fake into the S1 fake, with short retry and drain bounds.
fn opencti_to_s1(dir: &Path, fake: &FakeOpenCti, s1: &sentinelone_fake::FakeS1) -> Command {
    let mut cmd = iocsync(dir);
    cmd.arg("run")
        .env("IOCSYNC_STATE_DIR", dir.join("state"))
        .env("IOCSYNC_PIPELINE_LINGER", "20ms")
        .env("IOCSYNC_PIPELINE_RETRY_MIN", "200ms")
        .env("IOCSYNC_PIPELINE_SHUTDOWN_TIMEOUT", "1s");
    opencti_env(&mut cmd, fake, "stream-1");
    s1_env(&mut cmd, s1.url(), sentinelone_fake::TOKEN);
    cmd
}

/// Five indicators on a quiet OpenCTI fake.
async fn five_indicators() -> FakeOpenCti {
    let fake = quiet_opencti().await;
    for n in 1..=5 {
        fake.push("create", opencti_fake::indicator(n));
    }
    fake
}

/// A healthy run lands the five IOCs in S1, each once.
async fn assert_restart_lands_five_once(
    dir: &Path,
    fake: &FakeOpenCti,
    s1: &sentinelone_fake::FakeS1,
) {
    let mut d = Daemon::spawn(opencti_to_s1(dir, fake, s1), dir);
    d.wait_for("five IOCs in S1", async |_| s1.iocs().len() >= 5)
        .await;
    let out_dir = dir.to_path_buf();
    let last = fake.events().last().expect("events").id.clone();
    d.wait_for("the checkpoint", async |_| {
        checkpoint(&out_dir).as_deref() == Some(last.as_str())
    })
    .await;
    let values: std::collections::BTreeSet<String> = s1
        .iocs()
        .iter()
        .map(|i| i["value"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(values.len(), 5, "{values:?}");
    assert_eq!(s1.iocs().len(), 5, "a duplicate was created");
    d.signal("TERM");
    assert_eq!(d.exit(WAIT).await.0.code(), Some(0), "{}", d.logs());
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_a_sink_keeps_failing_exits_0_and_the_restart_settles_it() {
    use sentinelone_fake::Failure;
    let fake = five_indicators().await;
    let s1 = sentinelone_fake::start().await;
    let dir = tempfile::tempdir().expect("tempdir");

    // 1. S1 keeps answering 503: the pipeline is waiting to retry when the signal comes.
    s1.fail_next(1000, Failure::Status(503));
    let mut d = Daemon::spawn(opencti_to_s1(dir.path(), &fake, &s1), dir.path());
    d.wait_for("a retried batch", async |d| {
        d.try_metrics()
            .await
            .get("iocsync_retries_total{sink=\"sentinelone\",cause=\"transient\"}")
            >= 1.0
    })
    .await;
    d.signal("TERM");
    let (status, took) = d.exit(WAIT).await;
    assert_eq!(status.code(), Some(0), "{}", d.logs());
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let stdout = d.stdout();
    assert!(stdout.contains("run summary (opencti)"), "{stdout}");
    assert!(stdout.contains("pending 5"), "{stdout}");
    assert_eq!(last_run(dir.path())["pending"], 5);
    drop(d);

    // 2. The next start settles the leftovers first; S1 hangs on it and the signal comes: the
    //    drain bound (1 s) still ends the process with 0.
    s1.clear_failures();
    s1.fail_next(1, Failure::Slow(Duration::from_secs(20)));
    s1.clear_journal();
    let mut d = Daemon::spawn(opencti_to_s1(dir.path(), &fake, &s1), dir.path());
    d.wait_for("the hung lookup", async |_| !s1.journal().is_empty())
        .await;
    d.signal("TERM");
    let (status, took) = d.exit(WAIT).await;
    assert_eq!(status.code(), Some(0), "{}", d.logs());
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(d.stdout().contains("settling"), "{}", d.logs());
    drop(d);

    // 3. A healthy restart settles everything.
    s1.clear_failures();
    assert_restart_lands_five_once(dir.path(), &fake, &s1).await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_hung_sink_call_exits_0_within_the_bound() {
    use sentinelone_fake::Failure;
    let fake = five_indicators().await;
    let s1 = sentinelone_fake::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // The create call answers only after 3 s; the drain bound is 1 s.
    s1.fail_next(1, Failure::Slow(Duration::from_secs(3)));
    let mut d = Daemon::spawn(opencti_to_s1(dir.path(), &fake, &s1), dir.path());
    d.wait_for("the hung create", async |_| !s1.journal().is_empty())
        .await;
    d.signal("TERM");
    let (status, took) = d.exit(WAIT).await;
    assert_eq!(status.code(), Some(0), "{}", d.logs());
    // 1 s to drain, at most 1 s more for the source's final ping, and process start-up.
    assert!(took < Duration::from_secs(4), "took {took:?}");
    let stdout = d.stdout();
    assert!(stdout.contains("run summary (opencti)"), "{stdout}");
    assert!(stdout.contains("shutdown_timeout"), "{stdout}");
    let run = last_run(dir.path());
    assert_eq!(run["pending"], 5, "{run}");
    assert_eq!(run["received"], 5, "{run}");
    drop(d);

    // Whether S1 stored the abandoned create or not, the restart neither loses nor repeats it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_restart_lands_five_once(dir.path(), &fake, &s1).await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    use sentinelone_fake::Failure;
    let fake = quiet_opencti().await;
    fake.push("create", opencti_fake::indicator(1));
    let s1 = sentinelone_fake::start().await;
    s1.fail_next(1, Failure::Slow(Duration::from_secs(30)));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = iocsync(dir.path());
    cmd.arg("run")
        .env("IOCSYNC_STATE_DIR", dir.path().join("state"))
        .env("IOCSYNC_PIPELINE_SHUTDOWN_TIMEOUT", "30s");
    opencti_env(&mut cmd, &fake, "stream-1");
    s1_env(&mut cmd, s1.url(), sentinelone_fake::TOKEN);
    let mut d = Daemon::spawn(cmd, dir.path());
    d.wait_for("the hung call", async |_| !s1.journal().is_empty())
        .await;
    d.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(d.child.try_wait().expect("try_wait").is_none(), "draining");
    d.signal("INT");
    let (status, took) = d.exit(WAIT).await;
    assert_eq!(status.code(), Some(130), "{}", d.logs());
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_a_file_run_exits_0_and_the_rerun_completes_the_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file_run = |dir: &Path| {
        let mut cmd = iocsync(dir);
        cmd.arg("run")
            .env("IOCSYNC_FILE_PATH", fixture("opencti/stream.sse"))
            .env("IOCSYNC_STATE_DIR", dir.join("state"))
            .env("IOCSYNC_JSONL_PATH", dir.join("out/iocs.jsonl"))
            .env("IOCSYNC_PIPELINE_BATCH_EVENTS", "1")
            .env("IOCSYNC_PIPELINE_LINGER", "1ms");
        cmd
    };
    let mut d = Daemon::spawn(file_run(dir.path()), dir.path());
    let out_dir = dir.path().to_path_buf();
    d.wait_for("some IOCs written", async |_| jsonl_lines(&out_dir) >= 30)
        .await;
    d.signal("INT");
    let (status, _) = d.exit(WAIT).await;
    assert_eq!(status.code(), Some(0), "{}", d.logs());
    assert!(d.stdout().contains("run summary (file)"), "{}", d.logs());
    assert!(checkpoint(dir.path()).is_some());
    drop(d);

    let out = output(file_run(dir.path())).await;
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    assert_eq!(
        jsonl_live_set(&read_jsonl(&dir.path().join("out/iocs.jsonl"))),
        read_expected(&fixture("opencti/expected-live.tsv"))
    );
}

#[test]
fn json_logs_one_object_per_line_with_the_run_summary() {
    for flag in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = iocsync(dir.path());
        if flag {
            cmd.args(["--log-format", "json"]);
        } else {
            cmd.env("IOCSYNC_LOG_FORMAT", "json");
        }
        let out = run_ok(
            cmd.arg("run")
                .env("IOCSYNC_FILE_PATH", fixture("opencti/small.sse"))
                .env("IOCSYNC_STATE_DIR", dir.path().join("state"))
                .env("IOCSYNC_JSONL_PATH", dir.path().join("out.jsonl")),
        );
        let (stdout, stderr) = text(&out);
        assert!(stdout.contains("run summary (file)"), "{stdout}");
        let lines: Vec<serde_json::Value> = stderr
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect();
        let summary = lines
            .iter()
            .find(|l| l["message"] == "run finished")
            .unwrap_or_else(|| panic!("no run summary line in {stderr}"));
        assert_eq!(summary["level"], "INFO");
        assert!(summary["received"].as_u64().unwrap_or(0) > 40, "{summary}");
        assert!(lines.iter().all(|l| l.get("timestamp").is_some()));
    }
}

// ---------------------------------------------------------------------------------------------
// Operations edges: closed pipes and the demo directory.

/// A stdout whose reader is already gone: every write fails with EPIPE.
fn closed_pipe() -> Stdio {
    let (reader, writer) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    drop(reader);
    Stdio::from(std::os::fd::OwnedFd::from(writer))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_printing_command_exits_quietly_when_its_reader_goes_away() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A demo run leaves a state with checkpoints, counts and a run to print.
    run_ok(iocsync(dir.path()).args(["run", "--demo"]));
    let state = dir.path().join("iocsync-demo").join("state");
    let s1 = sentinelone_fake::start().await;
    let commands: &[&[&str]] = &[
        &["state", "show"],
        &["state", "show", "--json"],
        &["runs"],
        &["runs", "--json"],
        &["parse", "[ipv4-addr:value = '1.2.3.4']"],
        &["run", "--demo"],
        &["s1", "list"],
    ];
    for args in commands {
        let mut cmd = iocsync(dir.path());
        cmd.args(*args)
            .env("IOCSYNC_STATE_DIR", &state)
            .stdout(closed_pipe());
        s1_env(&mut cmd, s1.url(), sentinelone_fake::TOKEN);
        let out = output(cmd).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "iocsync {args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("error"),
            "iocsync {args:?} is quiet about the closed pipe: {stderr}"
        );
    }
}

#[test]
fn run_demo_replaces_only_a_directory_it_created() {
    let dir = tempfile::tempdir().expect("tempdir");
    let demo = dir.path().join("iocsync-demo");
    std::fs::create_dir(&demo).expect("mkdir");
    std::fs::write(demo.join("notes.txt"), "mine").expect("write");
    let out = iocsync(dir.path())
        .args(["run", "--demo"])
        .output()
        .expect("spawn");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("iocsync-demo") && stderr.contains("not created by"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(demo.join("notes.txt")).expect("still there"),
        "mine"
    );

    std::fs::remove_dir_all(&demo).expect("rm");
    for _ in 0..2 {
        let out = run_ok(iocsync(dir.path()).args(["run", "--demo"]));
        assert!(text(&out).0.contains("demo outputs"), "{}", text(&out).0);
    }
    assert!(demo.join(".iocsync-demo").is_file(), "the marker is left");
}

// ---------------------------------------------------------------------------------------------
// Packaging: `iocsync health` and secrets from files.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_exits_0_only_when_readyz_on_the_configured_address_answers_200() {
    use iocsync::http::{Readiness, Server};
    let dir = tempfile::tempdir().expect("tempdir");
    let health = |port: u16, bind: &str, expose: &str| {
        let mut cmd = iocsync(dir.path());
        cmd.arg("health")
            .env("CONNECTOR_EXPOSE_METRICS", expose)
            .env("CONNECTOR_METRICS_PORT", port.to_string())
            .env("IOCSYNC_HTTP_BIND", bind);
        cmd
    };
    let readiness = |connection: bool| Readiness {
        source: "opencti",
        source_reports_connection: connection,
        sinks: vec![],
    };
    // Ready (no connection to hold); the image binds every interface, health asks loopback.
    let ready = Server::start("127.0.0.1", 0, readiness(false), None)
        .await
        .expect("start");
    let out = output(health(ready.local_addr().port(), "0.0.0.0", "true")).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("\"ready\":true"), "{stdout}");

    // Not ready: this process never reports the OpenCTI connection.
    let unready = Server::start("127.0.0.1", 0, readiness(true), None)
        .await
        .expect("start");
    let out = output(health(unready.local_addr().port(), "127.0.0.1", "true")).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("503"), "{stderr}");

    // Nothing listening, the endpoint off, a bad configuration: 1, never Docker's reserved 2.
    for (port, expose, why) in [
        (free_port().to_string(), "true", "no answer"),
        ("9095".to_string(), "false", "CONNECTOR_EXPOSE_METRICS"),
        ("not-a-port".to_string(), "true", "CONNECTOR_METRICS_PORT"),
    ] {
        let mut cmd = health(0, "127.0.0.1", expose);
        cmd.env("CONNECTOR_METRICS_PORT", &port);
        let out = output(cmd).await;
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{why}: {stdout}{stderr}");
        assert!(stderr.contains(why), "{stderr}");
    }
    ready.stop().await;
    unready.stop().await;
}

#[test]
fn an_unreadable_secret_file_is_a_configuration_error_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = iocsync(dir.path())
        .arg("check")
        .env("OPENCTI_URL", "http://127.0.0.1:1")
        .env("OPENCTI_TOKEN_FILE", dir.path().join("absent"))
        .env("IOCSYNC_JSONL_PATH", dir.path().join("out.jsonl"))
        .output()
        .expect("spawn");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("OPENCTI_TOKEN_FILE") && stderr.contains("opencti.token"),
        "{stderr}"
    );
}

#[test]
fn a_state_written_by_a_newer_iocsync_is_refused_with_exit_2_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state_dir = dir.path().join("state");
    run_ok(
        iocsync(dir.path())
            .arg("run")
            .env("IOCSYNC_FILE_PATH", fixture("opencti/small.sse"))
            .env("IOCSYNC_STATE_DIR", &state_dir)
            .env("IOCSYNC_JSONL_PATH", dir.path().join("out.jsonl")),
    );
    let db = state_dir.join(iocsync::state::DB_FILE);
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute("UPDATE meta SET value='99' WHERE key='schema'", [])
        .expect("from the future");
    drop(conn);
    for args in [vec!["run"], vec!["state", "show"]] {
        let out = iocsync(dir.path())
            .args(&args)
            .env("IOCSYNC_FILE_PATH", fixture("opencti/small.sse"))
            .env("IOCSYNC_STATE_DIR", &state_dir)
            .env("IOCSYNC_JSONL_PATH", dir.path().join("out.jsonl"))
            .output()
            .expect("run");
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stdout}{stderr}");
        assert!(stderr.contains("newer iocsync"), "{args:?}: {stderr}");
    }
    let conn = rusqlite::Connection::open(&db).expect("open");
    let version: String = conn
        .query_row("SELECT value FROM meta WHERE key='schema'", [], |r| {
            r.get(0)
        })
        .expect("schema row");
    assert_eq!(version, "99", "the database was not touched");
}
