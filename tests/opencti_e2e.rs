//! End to end: the binary subscribed to the fake OpenCTI live stream, into the JSONL sink — the
//! fixture stream lands as the expected live set through dropped connections, SIGKILLs and an
//! operator's state reset, with no duplicate create.

mod common;
#[path = "fakes/opencti.rs"]
mod opencti_fake;

use common::*;
use opencti_fake::{indicator, parse_id, FakeEvent, FakeOpenCti};
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

/// The frames a proxy, a truncated write or a bug upstream can put in a stream, each with the id the
/// fake orders it by: `(raw bytes, wire id when it is a valid position)`.
fn poisoned_frame(kind: usize, id: &str) -> (Vec<u8>, Option<String>) {
    let head = format!("id: {id}\nevent: create\n");
    let mut raw = head.clone().into_bytes();
    let valid_id = Some(id.to_string());
    match kind % 6 {
        0 => {
            raw.extend_from_slice(
                b"data: {\"data\":{\"id\":\"indicator--bad-utf8\",\"type\":\"indicator\",\
                  \"pattern_type\":\"stix\",\"pattern\":\"[ipv4-addr:value = '\xff\xfe']\"}}\n\n",
            );
        }
        1 => {
            // 2 MB on one line, above the 1.5 MB bound: if it were read, its domain would land.
            let filler = "a".repeat(2 * 1024 * 1024);
            raw.extend_from_slice(
                format!(
                    "data: {{\"data\":{{\"id\":\"indicator--oversize\",\"type\":\"indicator\",\
                     \"pattern_type\":\"stix\",\"pattern\":\"[domain-name:value = \
                     'oversize.example']\",\"description\":\"{filler}\"}}}}\n\n"
                )
                .as_bytes(),
            );
        }
        2 => raw.extend_from_slice(b"data: this is not json\n\n"),
        3 => raw.extend_from_slice(b"data: {\"data\": \"a string\"}\n\n"),
        4 => raw.extend_from_slice(b"data: [1,2,3]\n\n"),
        _ => {
            // A control character in the id: not a position (it would poison `Last-Event-ID`).
            let (ms, _) = id.split_once('-').expect("id");
            return (
                format!("id: {ms}\u{1}-0\nevent: create\ndata: not json either\n\n").into_bytes(),
                None,
            );
        }
    }
    (raw, valid_id)
}

/// A real event framed the long way: comment and `retry:` lines, pretty-printed data over many
/// `data:` lines.
fn verbose_frame(e: &FakeEvent) -> Vec<u8> {
    let value: serde_json::Value = serde_json::from_str(&e.data).expect("fixture data");
    let mut out = format!(
        ": keep-alive\nretry: 5000\nid: {}\nevent: {}\n",
        e.id, e.topic
    );
    for line in serde_json::to_string_pretty(&value).expect("json").lines() {
        out.push_str(&format!("data:{line}\n"));
    }
    out.push('\n');
    out.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisoned_frames_cost_one_skipped_event_each_and_never_stall_the_stream() {
    let fake = fake_with_fixture().await;
    let events = fake.events();
    let mut poisoned = Vec::new();
    let mut malformed_ids = Vec::new();
    let mut boundary = 0usize;
    for (i, e) in events.iter().enumerate() {
        let mut e = e.clone();
        if i % 50 == 7 {
            e.raw = Some(verbose_frame(&e).into());
        }
        let (ms, seq) = parse_id(&e.id).expect("fixture id");
        let next_ms = events.get(i + 1).and_then(|n| parse_id(&n.id)).map(|n| n.0);
        poisoned.push(e);
        // Between two ids a frame with an id of its own fits: after the last event of a millisecond.
        if next_ms.is_some_and(|n| n > ms) {
            boundary += 1;
            if boundary % 9 == 0 {
                let id = format!("{ms}-{}", seq + 1);
                let (raw, position) = poisoned_frame(boundary / 9, &id);
                malformed_ids.extend(position);
                poisoned.push(FakeEvent {
                    id,
                    topic: "create".into(),
                    data: String::new(),
                    raw: Some(raw.into()),
                });
            }
        }
    }
    assert!(malformed_ids.len() >= 30, "{}", malformed_ids.len());
    fake.set_events(poisoned);
    // Reconnects land before, inside and after poisoned frames, and the body arrives in chunks
    // that cut frames anywhere (a disconnect loses the cut frame; it is sent again).
    fake.drop_every(Some(37));
    fake.chunk_bytes(Some(4093));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = opencti_run(dir.path(), &fake.url, TOKEN);
    cmd.env("OPENCTI_MAX_EVENT_BYTES", "1500000").arg("--once");
    let out = output(cmd).await;
    assert_success(&out);
    assert_eq!(
        jsonl_live_set(&read_jsonl(&dir.path().join("out/iocs.jsonl"))),
        expected()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warned: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("malformed stream event"))
        .collect();
    for id in &malformed_ids {
        assert!(
            warned.iter().any(|l| l.contains(id.as_str())),
            "no malformed_event warning for {id}"
        );
    }
    assert!(stderr.contains("not of the form <digits>-<digits>"));
    // Every reconnect resumed from a real position (never a garbled id).
    for id in fake.last_event_ids().into_iter().flatten() {
        assert!(parse_id(&id).is_some(), "resumed from {id:?}");
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_indicators_are_skipped_and_removed_when_they_expire() {
    let fake = FakeOpenCti::start(TOKEN).await;
    fake.add_stream("stream-1", "iocs", true);
    fake.set_heartbeat(Duration::from_millis(200));
    let at = |offset: chrono::Duration| {
        (chrono::Utc::now() + offset).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let with_until = |n: u32, until: Option<String>| {
        let mut i = indicator(n);
        if let Some(until) = until {
            i["valid_until"] = serde_json::json!(until);
        }
        i
    };
    // 10.0.0.1 expired an hour ago; 10.0.0.2 expires in 4 s; 10.0.0.3 never does.
    fake.push(
        "create",
        with_until(1, Some(at(chrono::Duration::hours(-1)))),
    );
    fake.push(
        "create",
        with_until(2, Some(at(chrono::Duration::seconds(4)))),
    );
    fake.push("create", with_until(3, None));
    // Another indicator holds 10.0.0.3 and expires too: the value stays, its other holder lives.
    let mut shared = with_until(3, Some(at(chrono::Duration::seconds(4))));
    shared["id"] = serde_json::json!("indicator--00000000-0000-4000-8000-000000009999");
    fake.push("create", shared);

    let dir = tempfile::tempdir().expect("tempdir");
    let jsonl = dir.path().join("out/iocs.jsonl");
    let mut cmd = opencti_run(dir.path(), &fake.url, TOKEN);
    cmd.env("IOCSYNC_PIPELINE_EXPIRY_INTERVAL", "200ms")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let live_values = || -> std::collections::BTreeSet<String> {
        jsonl_live_set(&read_jsonl(&jsonl))
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    };
    let wanted_first: std::collections::BTreeSet<String> =
        ["10.0.0.2", "10.0.0.3"].map(String::from).into();
    let wanted_last: std::collections::BTreeSet<String> = ["10.0.0.3"].map(String::from).into();
    let mut seen_first = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let live = live_values();
        seen_first |= live == wanted_first;
        if seen_first && live == wanted_last {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "live set {live:?} (saw the unexpired pair: {seen_first})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.start_kill().expect("kill");
    let out = child.wait_with_output().await.expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("reason=\"expired\""), "{stderr}");
    assert!(!read_jsonl(&jsonl).iter().any(|r| r.value == "10.0.0.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_gives_up_on_an_unreachable_platform_or_a_dead_stream() {
    // Nothing listens: the handshake never succeeds.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("addr"))
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = opencti_run(dir.path(), &closed, TOKEN);
    cmd.env("OPENCTI_ONCE_ATTEMPTS", "3").arg("--once");
    let out = output_within(cmd, Duration::from_secs(60)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("gave up after 3 failed attempts"),
        "{stderr}"
    );

    // The platform answers but its stream never sends a position: the watchdog fires each time.
    let fake = fake_with_fixture().await;
    fake.set_stalled(true);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = opencti_run(dir.path(), &fake.url, TOKEN);
    cmd.env("OPENCTI_ONCE_ATTEMPTS", "3")
        .env("OPENCTI_STREAM_TIMEOUT", "300ms")
        .arg("--once");
    let out = output_within(cmd, Duration::from_secs(60)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("gave up after 3 failed attempts"),
        "{stderr}"
    );
    assert_eq!(fake.stream_requests().len(), 3);
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
