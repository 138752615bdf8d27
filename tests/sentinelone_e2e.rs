//! End to end into the SentinelOne fake: the fixture stream (file and OpenCTI fake) lands as exactly
//! the expected IOC set, through 429/5xx storms and a SIGKILL between a POST and its acknowledgement,
//! with no duplicate IOC and the API token never in the logs.

mod common;
#[path = "fakes/opencti.rs"]
mod opencti_fake;
#[path = "fakes/sentinelone.rs"]
mod sentinelone_fake;

use common::*;
use sentinelone_fake::{Failure, FakeS1, TOKEN};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

const ACCOUNT: &str = "1234567890";

fn s1_env(cmd: &mut std::process::Command, s1: &FakeS1, dir: &Path) {
    cmd.env("SENTINELONE_INTEL_URL", format!("{}/", s1.url()))
        .env("SENTINELONE_INTEL_API_KEY", format!("ApiToken {TOKEN}"))
        .env("SENTINELONE_INTEL_ACCOUNT_ID", ACCOUNT)
        .env("IOCSYNC_STATE_DIR", dir.join("state"))
        .env("IOCSYNC_PIPELINE_LINGER", "20ms")
        .env("IOCSYNC_PIPELINE_RETRY_MIN", "10ms")
        .env("IOCSYNC_PIPELINE_RETRY_MAX", "200ms")
        .env("IOCSYNC_PIPELINE_RETRY_ATTEMPTS", "30")
        .env("IOCSYNC_LOG", "debug");
}

fn file_to_s1(dir: &Path, s1: &FakeS1) -> tokio::process::Command {
    let mut cmd = iocsync(dir);
    cmd.arg("run")
        .env("IOCSYNC_FILE_PATH", fixture("opencti/stream.sse"));
    s1_env(&mut cmd, s1, dir);
    tokio::process::Command::from(cmd)
}

async fn output(cmd: tokio::process::Command) -> Output {
    output_within(cmd, Duration::from_secs(180)).await
}

/// The fake's IOCs as (our type, value); panics on a duplicate (type, value).
fn s1_live_set(s1: &FakeS1) -> BTreeSet<(String, String)> {
    let mut set = BTreeSet::new();
    for ioc in s1.iocs() {
        let t = ioc["type"].as_str().expect("type");
        let ours = match t {
            "DNS" => "domain".to_string(),
            other => other.to_ascii_lowercase(),
        };
        let value = ioc["value"].as_str().expect("value").to_string();
        assert!(
            ioc["externalId"]
                .as_str()
                .is_some_and(|e| e.starts_with("indicator--")),
            "{ioc}"
        );
        assert!(
            set.insert((ours, value)),
            "duplicate IOC in SentinelOne: {ioc}"
        );
    }
    set
}

fn expected() -> BTreeSet<(String, String)> {
    read_expected(&fixture("opencti/expected-live.tsv"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_stream_into_sentinelone_gives_exactly_the_expected_set() {
    let s1 = sentinelone_fake::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = output(file_to_s1(dir.path(), &s1)).await;
    assert_success(&out);
    assert_eq!(s1_live_set(&s1), expected());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains(TOKEN),
        "the API token leaked into the logs"
    );
    // Creates were batched: far fewer POSTs than IOCs.
    let posts = s1.requests("POST").len();
    assert!(posts < 20, "{posts} POSTs for {} IOCs", expected().len());
    for post in s1.requests("POST") {
        assert!(!post.path.contains("//"), "doubled slash in {}", post.path);
    }
    // An indicator created then updated (score, then description) within the stream ends with the
    // update's metadata, not the create's.
    let updated = s1
        .iocs()
        .into_iter()
        .find(|i| i["value"] == "07ad0c7a132bf9b728313bd305294d7f")
        .expect("the updated indicator's IOC");
    assert_eq!(updated["originalRiskScore"], 78, "{updated}");
    assert!(
        updated["description"]
            .as_str()
            .is_some_and(|d| d.contains("sinkholed")),
        "{updated}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_on_a_quarter_of_calls_still_give_exactly_the_expected_set() {
    let s1 = sentinelone_fake::start().await;
    s1.fail_scattered(4, Failure::Status(503));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = file_to_s1(dir.path(), &s1);
    cmd.env("IOCSYNC_PIPELINE_BATCH_EVENTS", "200")
        .env("SENTINELONE_INTEL_BATCH_SIZE", "100");
    let out = output(cmd).await;
    assert_success(&out);
    assert_eq!(s1_live_set(&s1), expected());
    assert!(String::from_utf8_lossy(&out.stdout).contains("retries"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_with_and_without_retry_after_still_give_exactly_the_expected_set() {
    let s1 = sentinelone_fake::start().await;
    s1.fail_scattered(5, Failure::RateLimit(Some(1)));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = file_to_s1(dir.path(), &s1);
    cmd.env("SENTINELONE_INTEL_BATCH_SIZE", "250");
    assert_success(&output(cmd).await);
    assert_eq!(s1_live_set(&s1), expected());

    let s1 = sentinelone_fake::start().await;
    s1.fail_scattered(3, Failure::RateLimit(None));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = file_to_s1(dir.path(), &s1);
    cmd.env("SENTINELONE_INTEL_BATCH_SIZE", "250");
    assert_success(&output(cmd).await);
    assert_eq!(s1_live_set(&s1), expected());
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_between_post_and_ack_creates_no_duplicate() {
    let s1 = sentinelone_fake::start().await;
    // The first POST is applied but answered only after 10 s: the process dies in between.
    s1.fail_next(1, Failure::SlowAck(Duration::from_secs(10)));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = file_to_s1(dir.path(), &s1);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while s1.iocs().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first POST never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;
    let landed_before_restart = s1.iocs().len();
    assert!(landed_before_restart > 0);

    s1.clear_failures();
    assert_success(&output(file_to_s1(dir.path(), &s1)).await);
    // s1_live_set panics on a duplicate (type, value): the acknowledged-by-lookup path worked.
    assert_eq!(s1_live_set(&s1), expected());
    let lookups = s1
        .requests("GET")
        .iter()
        .filter(|r| r.param("externalId").is_some())
        .count();
    assert!(
        lookups > 0,
        "the restart should look pending creates up by externalId"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_token_exits_3_and_says_so() {
    let s1 = sentinelone_fake::start().await;
    s1.set_token("another-token");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = output(file_to_s1(dir.path(), &s1)).await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("SentinelOne rejected the API token"),
        "{stderr}"
    );
    assert!(!stderr.contains(TOKEN));
    // Nothing was lost: the changes stay pending for the next run.
    let show = run_ok(
        iocsync(dir.path())
            .args(["state", "show"])
            .env("IOCSYNC_STATE_DIR", dir.path().join("state")),
    );
    assert!(!String::from_utf8_lossy(&show.stdout).contains("pending intents: 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencti_stream_into_sentinelone_gives_exactly_the_expected_set() {
    let opencti = opencti_fake::FakeOpenCti::start("octi-token").await;
    opencti.load_sse(&std::fs::read_to_string(fixture("opencti/stream.sse")).expect("fixture"));
    opencti.set_heartbeat(Duration::from_millis(200));
    opencti.drop_every(Some(250));
    let s1 = sentinelone_fake::start().await;
    s1.fail_scattered(5, Failure::Status(502));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = iocsync(dir.path());
    cmd.args(["run", "--once"])
        .env("OPENCTI_URL", &opencti.url)
        .env("OPENCTI_TOKEN", "octi-token")
        .env("OPENCTI_RECONNECT_MIN", "50ms")
        .env("OPENCTI_RECONNECT_MAX", "300ms")
        .env("CONNECTOR_ID", "6b1c4c43-3a1e-4c8e-9d6f-0c2a3b4d5e6f")
        .env("CONNECTOR_LIVE_STREAM_ID", "stream-1")
        .env("CONNECTOR_LIVE_STREAM_RECOVER_ISO_DATE", "false");
    s1_env(&mut cmd, &s1, dir.path());
    let out = output(tokio::process::Command::from(cmd)).await;
    assert_success(&out);
    assert_eq!(s1_live_set(&s1), expected());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains(TOKEN) && !stderr.contains("octi-token"),
        "a token leaked into the logs"
    );
}
