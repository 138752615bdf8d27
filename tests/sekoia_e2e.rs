//! End to end into the Sekoia.io fake: the fixture stream lands as exactly the expected set of live
//! (non-revoked) indicators, also under injected 429/5xx and SIGKILL restarts, with no value live twice.

mod common;
#[path = "fakes/sekoia.rs"]
mod sekoia_fake;

use common::*;
use sekoia_fake::{Failure, FakeSekoia, TOKEN};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

fn file_to_sekoia(dir: &Path, fake: &FakeSekoia) -> tokio::process::Command {
    let mut cmd = iocsync(dir);
    cmd.arg("run")
        .env("IOCSYNC_FILE_PATH", fixture("opencti/stream.sse"))
        .env("SEKOIA_INTEL_URL", format!("{}/v2/inthreat/", fake.url()))
        .env("SEKOIA_INTEL_APIKEY", TOKEN)
        .env("SEKOIA_INTEL_IOC_COLLECTION_UUID", sekoia_fake::COLLECTION)
        .env("IOCSYNC_STATE_DIR", dir.join("state"))
        .env("IOCSYNC_PIPELINE_LINGER", "20ms")
        .env("IOCSYNC_PIPELINE_RETRY_MIN", "10ms")
        .env("IOCSYNC_PIPELINE_RETRY_MAX", "200ms")
        .env("IOCSYNC_PIPELINE_RETRY_ATTEMPTS", "30")
        .env("IOCSYNC_LOG", "debug");
    tokio::process::Command::from(cmd)
}

async fn output(cmd: tokio::process::Command) -> Output {
    output_within(cmd, Duration::from_secs(180)).await
}

/// Live values in the collection; panics when a value is live twice.
fn live_values(fake: &FakeSekoia) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    for item in fake.items() {
        if item["revoked"].as_bool() == Some(true) {
            continue;
        }
        let value = item["x_inthreat_short_display"]
            .as_str()
            .expect("value")
            .to_string();
        assert!(
            set.insert(value.clone()),
            "{value} is live twice in the collection"
        );
    }
    set
}

fn expected_values() -> BTreeSet<String> {
    read_expected(&fixture("opencti/expected-live.tsv"))
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_stream_into_sekoia_gives_exactly_the_expected_live_set() {
    let fake = sekoia_fake::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = output(file_to_sekoia(dir.path(), &fake)).await;
    assert_success(&out);
    assert_eq!(live_values(&fake), expected_values());
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(TOKEN),
        "the key leaked into the logs"
    );
    for post in fake.requests("POST") {
        assert!(!post.path.contains("//"), "doubled slash in {}", post.path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_server_errors_still_give_exactly_the_expected_live_set() {
    let fake = sekoia_fake::start().await;
    fake.fail_scattered(4, Failure::Status(503));
    let dir = tempfile::tempdir().expect("tempdir");
    assert_success(&output(file_to_sekoia(dir.path(), &fake)).await);
    assert_eq!(live_values(&fake), expected_values());

    let fake = sekoia_fake::start().await;
    fake.fail_scattered(5, Failure::RateLimit(Some(0)));
    let dir = tempfile::tempdir().expect("tempdir");
    assert_success(&output(file_to_sekoia(dir.path(), &fake)).await);
    assert_eq!(live_values(&fake), expected_values());
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_restarts_give_exactly_the_expected_live_set() {
    let fake = sekoia_fake::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut kills = 0;
    for delay_ms in [400u64, 250, 600, 350, 500, 300] {
        if kills == 3 {
            break;
        }
        let mut cmd = file_to_sekoia(dir.path(), &fake);
        cmd.env("IOCSYNC_PIPELINE_BATCH_EVENTS", "5")
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
    assert!(kills >= 3, "only {kills} kills landed mid-run");
    assert_success(&output(file_to_sekoia(dir.path(), &fake)).await);
    assert_eq!(live_values(&fake), expected_values());
}

/// Sekoia as documented (the default fake: no ids in the import answer, nothing read per item but
/// `value` and `valid_from`, short search pages): every value the stream deletes is revoked, also
/// across SIGKILLs, and another source's indicators of the same values are never touched.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_are_revoked_across_kills_with_the_documented_api() {
    let fake = sekoia_fake::start().await;
    // Values the stream creates then deletes, and one it keeps, already held by another source.
    let foreign: Vec<String> = [
        "125.86.176.91",
        "http://login301.org/invoice_13417.zip",
        "aaq5vug5.xyz",
    ]
    .iter()
    .map(|v| fake.insert(v, "pushed by another connector", false))
    .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut kills = 0;
    for delay_ms in [700u64, 450, 900, 600] {
        if kills == 2 {
            break;
        }
        let mut cmd = file_to_sekoia(dir.path(), &fake);
        cmd.env("IOCSYNC_PIPELINE_BATCH_EVENTS", "5")
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
    assert!(kills >= 2, "only {kills} kills landed mid-run");
    let out = output(file_to_sekoia(dir.path(), &fake)).await;
    assert_success(&out);

    let mut ours_live = BTreeSet::new();
    let mut ours_revoked = 0;
    for item in fake.items() {
        let id = item["id"].as_str().expect("id").to_string();
        if foreign.contains(&id) {
            assert_eq!(item["revoked"], false, "another source's {id} was revoked");
            continue;
        }
        let desc = item["description"].as_str().unwrap_or("");
        assert!(desc.contains("[iocsync"), "no marker on {item}");
        if item["revoked"] == true {
            ours_revoked += 1;
            continue;
        }
        let value = item["x_inthreat_short_display"].as_str().expect("value");
        assert!(
            ours_live.insert(value.to_string()),
            "{value} is live twice in the collection"
        );
    }
    let expected = expected_values();
    let unrevoked: Vec<&String> = ours_live.difference(&expected).collect();
    let missing: Vec<&String> = expected.difference(&ours_live).collect();
    assert!(
        unrevoked.is_empty(),
        "{} values should have been revoked but are live: {:?}",
        unrevoked.len(),
        unrevoked.iter().take(10).collect::<Vec<_>>()
    );
    assert!(
        missing.is_empty(),
        "{} values missing: {:?}",
        missing.len(),
        missing.iter().take(10).collect::<Vec<_>>()
    );
    assert!(ours_revoked > 0, "the stream's deletes revoked nothing");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        !log.contains("nothing of ours to revoke"),
        "a delete found nothing to revoke"
    );
}
