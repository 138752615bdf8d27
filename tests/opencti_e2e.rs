//! End to end: the binary subscribed to the fake OpenCTI live stream, into the JSONL sink — the
//! fixture stream lands as the expected live set through dropped connections, SIGKILLs and an
//! operator's state reset, with no duplicate create.

mod common;
#[path = "fakes/opencti.rs"]
mod opencti_fake;

use common::*;
use opencti_fake::FakeOpenCti;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

const TOKEN: &str = "opencti-token-3f9a";
const CONNECTOR_ID: &str = "2f0c5f0e-8a4b-4f55-9a43-3d2c7e1b9a10";

async fn fake_with_fixture() -> FakeOpenCti {
    let fake = FakeOpenCti::start(TOKEN).await;
    let capture = std::fs::read_to_string(fixture("opencti/stream.sse")).expect("fixture");
    assert!(fake.load_sse(&capture) > 2000);
    fake.set_heartbeat(Duration::from_millis(200));
    fake
}

fn opencti_run(dir: &Path, url: &str, token: &str) -> tokio::process::Command {
    let mut cmd = iocsync(dir);
    cmd.arg("run")
        .env("OPENCTI_URL", url)
        .env("OPENCTI_TOKEN", token)
        .env("OPENCTI_RECONNECT_MIN", "50ms")
        .env("OPENCTI_RECONNECT_MAX", "300ms")
        .env("CONNECTOR_ID", CONNECTOR_ID)
        .env("CONNECTOR_NAME", "iocsync e2e")
        .env("CONNECTOR_SCOPE", "sentinelone")
        .env("CONNECTOR_TYPE", "STREAM")
        .env("CONNECTOR_LIVE_STREAM_ID", "stream-1")
        .env("CONNECTOR_LIVE_STREAM_RECOVER_ISO_DATE", "false")
        .env("IOCSYNC_STATE_DIR", dir.join("state"))
        .env("IOCSYNC_JSONL_PATH", dir.join("out/iocs.jsonl"))
        .env("IOCSYNC_PIPELINE_LINGER", "20ms");
    tokio::process::Command::from(cmd)
}

async fn output(cmd: tokio::process::Command) -> Output {
    output_within(cmd, Duration::from_secs(120)).await
}

fn expected() -> std::collections::BTreeSet<(String, String)> {
    read_expected(&fixture("opencti/expected-live.tsv"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_stream_lands_exactly_the_expected_set_and_pings_the_checkpoint() {
    let fake = fake_with_fixture().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = opencti_run(dir.path(), &fake.url, TOKEN);
    cmd.arg("--once");
    let out = output(cmd).await;
    assert_success(&out);
    assert_eq!(
        jsonl_live_set(&read_jsonl(&dir.path().join("out/iocs.jsonl"))),
        expected()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains(TOKEN), "the token leaked into the logs");

    // The connector registered and its final ping carries the last event id.
    let last_id = fake.events().last().map(|e| e.id.clone()).expect("events");
    let pinged = fake.pinged_states();
    let final_state = pinged.last().expect("at least one ping");
    assert_eq!(
        final_state["start_from"].as_str(),
        Some(last_id.as_str()),
        "{pinged:?}"
    );
    let first = &fake.stream_requests()[0];
    assert_eq!(
        first.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_dropped_every_100_events_still_gives_exactly_the_expected_set() {
    let fake = fake_with_fixture().await;
    fake.drop_every(Some(100));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = opencti_run(dir.path(), &fake.url, TOKEN);
    cmd.arg("--once");
    assert_success(&output(cmd).await);
    assert_eq!(
        jsonl_live_set(&read_jsonl(&dir.path().join("out/iocs.jsonl"))),
        expected()
    );
    let resumes = fake.last_event_ids();
    assert!(
        resumes.len() >= 20,
        "expected a reconnect per 100 events, got {}",
        resumes.len()
    );
    // Every reconnect resumes from a position, never from scratch.
    assert!(
        resumes
            .iter()
            .skip(1)
            .all(|id| id.as_deref().is_some_and(|i| i != "0-0")),
        "{resumes:?}"
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_then_restart_gives_the_expected_set_without_duplicates() {
    let fake = fake_with_fixture().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut kills = 0;
    // Kill at varied points until six kills have landed mid-run (at most ten starts).
    for delay_ms in [700u64, 350, 900, 500, 650, 400, 300, 550, 450, 250] {
        if kills == 6 {
            break;
        }
        let mut cmd = opencti_run(dir.path(), &fake.url, TOKEN);
        // One event per batch keeps the run long enough to be interrupted at many points.
        cmd.env("IOCSYNC_PIPELINE_BATCH_EVENTS", "1")
            .env("IOCSYNC_PIPELINE_LINGER", "1ms")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn");
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        if child.try_wait().expect("try_wait").is_none() {
            child.start_kill().expect("SIGKILL");
            kills += 1;
        }
        let _ = child.wait().await;
    }
    assert!(kills >= 5, "only {kills} kills landed mid-run");
    let mut cmd = opencti_run(dir.path(), &fake.url, TOKEN);
    cmd.arg("--once");
    assert_success(&output(cmd).await);
    // jsonl_live_set panics on a create of a value that is already live: the no-duplicate check.
    assert_eq!(
        jsonl_live_set(&read_jsonl(&dir.path().join("out/iocs.jsonl"))),
        expected()
    );
    // Restarts resumed from the checkpoint rather than from the beginning.
    let resumed = fake
        .last_event_ids()
        .iter()
        .filter(|id| id.as_deref().is_some_and(|i| i != "0-0"))
        .count();
    assert!(
        resumed >= 3,
        "restarts did not resume from the checkpoint: {:?}",
        fake.last_event_ids()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_reset_replays_from_the_beginning_without_duplicate_creates() {
    // With pycti's default recovery (`recover=<now>`), a replay from the beginning sends the current
    // state of every object, which iocsync already holds: the replay changes nothing.
    let fake = fake_with_fixture().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let recovering = |dir: &Path| {
        let mut cmd = opencti_run(dir, &fake.url, TOKEN);
        cmd.env_remove("CONNECTOR_LIVE_STREAM_RECOVER_ISO_DATE")
            .arg("--once");
        cmd
    };
    assert_success(&output(recovering(dir.path())).await);
    assert_eq!(
        jsonl_live_set(&read_jsonl(&dir.path().join("out/iocs.jsonl"))),
        expected()
    );
    let first_len = read_jsonl(&dir.path().join("out/iocs.jsonl")).len();

    fake.reset_connector_state(CONNECTOR_ID);
    let out = output(recovering(dir.path())).await;
    assert_success(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("reset"),
        "the reset should be logged: {stderr}"
    );
    // The stream was read again from the start…
    assert!(fake
        .last_event_ids()
        .iter()
        .any(|id| id.as_deref() == Some("0-0")));
    // …and nothing already applied was sent again.
    let records = read_jsonl(&dir.path().join("out/iocs.jsonl"));
    assert_eq!(records.len(), first_len, "the replay wrote new records");
    assert_eq!(jsonl_live_set(&records), expected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_exits_3_with_a_clear_message() {
    let fake = fake_with_fixture().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = opencti_run(dir.path(), &fake.url, "not-the-token");
    cmd.arg("--once");
    let out = output(cmd).await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        stderr.contains("auth") || stderr.contains("token"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("not-the-token"),
        "the token leaked into the logs"
    );
}
