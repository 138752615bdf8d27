//! `iocsync explain` on real runs: the shipped small OpenCTI capture into the JSONL and Zeek sinks
//! (created, updated, revoked, deleted, merged and every skip code it exercises), and a capture into
//! the SentinelOne fake for a refused IOC (dead letter) and a change left pending by a failing sink.

mod common;
#[path = "fakes/sentinelone.rs"]
mod sentinelone_fake;

use common::*;
use sentinelone_fake::{Failure, FakeS1, TOKEN};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const CREATED: &str = "indicator--d5a2291d-8a09-5784-b135-cabff2effea1";
const UPDATED: &str = "indicator--f3c203c6-3cbc-579c-9afd-17e615ca728a";
const REVOKED: &str = "indicator--c60b0ea2-f694-5fe7-81cb-3753509645f2";
const DELETED_A: &str = "indicator--1e110b43-2b36-525b-8eee-ea298c0fdcde";
const DELETED_B: &str = "indicator--73b824aa-8fe6-5070-8bea-c9d56b4cd54f";
const DELETED_SHARED: &str = "indicator--ecc00b1d-a294-5cf0-a0e8-29060e129134";
const SHARED_HOLDER: &str = "indicator--2893fec1-4f80-54ce-83bc-2dd47c1a2f33";
const MERGED_AWAY: &str = "indicator--fff59941-20db-55ff-8265-b61116b33348";
const MERGE_TARGET: &str = "indicator--efe581e8-965e-52ea-be13-63635ce3dbe8";
const TURNED_COMPOUND: &str = "indicator--9b8db2ff-e17d-53c2-831e-0b4da04058e2";

/// Every skip code of the small capture that concerns an indicator, with the indicator and a
/// piece of the reason's wording.
const SKIPPED: [(&str, &str, &str); 10] = [
    (
        "indicator--e81ec133-eee8-5beb-a3d9-a972bb2c31a5",
        "compound",
        "OR of 2 comparisons",
    ),
    (
        "indicator--95b9071f-a9e9-5707-a532-f584fb6fbdf4",
        "qualified",
        "START qualifier",
    ),
    (
        "indicator--be874c3f-1714-5872-916f-ac961a6844d4",
        "unsupported_object",
        "object path is not one",
    ),
    (
        "indicator--1ef8e682-5eb9-5850-a620-ea6e9c36aedb",
        "unsupported_operator",
        "other than `=`",
    ),
    (
        "indicator--2744d164-df29-5e6d-b9d5-0d2f9d4f7c03",
        "empty_file_hash",
        "hash of the empty file",
    ),
    (
        "indicator--bf967733-8f2b-5413-915d-94503f8b577a",
        "cidr_range",
        "wider than one address",
    ),
    (
        "indicator--1c6dde71-3178-5587-b231-4876b44b05df",
        "not_stix",
        "not `stix`",
    ),
    (
        "indicator--f6578c72-56f3-5177-899c-f52bdae1da6a",
        "missing_pattern",
        "no pattern",
    ),
    (
        "indicator--50aa8a3b-5f5c-5c73-9894-efedac3a1c43",
        "invalid",
        "offset",
    ),
    (
        "indicator--392d9323-c93b-52d3-a375-9d98bc0f20d8",
        "invalid_value",
        "not valid for its IOC type",
    ),
];

fn explain(dir: &Path, query: &str) -> Value {
    let out = run_ok(
        iocsync(dir)
            .args(["explain", query, "--json"])
            .env("IOCSYNC_STATE_DIR", dir.join("state")),
    );
    serde_json::from_slice(&out.stdout).expect("explain --json is JSON")
}

fn explain_text(dir: &Path, query: &str) -> String {
    let out = run_ok(
        iocsync(dir)
            .args(["explain", query])
            .env("IOCSYNC_STATE_DIR", dir.join("state")),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Per indicator of a capture: (position, topic, STIX `modified`) of each event, in order; the
/// position is the file source's (`path#offset` after the line).
fn capture_events(path: &Path) -> BTreeMap<String, Vec<(String, String, String)>> {
    let text = std::fs::read_to_string(path).expect("capture");
    let mut offset = 0usize;
    let mut out: BTreeMap<String, Vec<(String, String, String)>> = BTreeMap::new();
    for line in text.split_inclusive('\n') {
        offset += line.len();
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let object = &event["data"]["data"];
        if object["type"] != "indicator" {
            continue;
        }
        let Some(id) = object["id"].as_str() else {
            continue;
        };
        out.entry(id.to_string()).or_default().push((
            format!("{}#{offset}", path.display()),
            event["event"].as_str().unwrap_or("").to_string(),
            object["modified"].as_str().unwrap_or("").to_string(),
        ));
    }
    out
}

fn value_state<'a>(x: &'a Value, value: &str) -> &'a Value {
    x["values"]
        .as_array()
        .expect("values")
        .iter()
        .find(|v| v["value"] == value)
        .unwrap_or_else(|| panic!("no value {value} in {x:#}"))
}

fn changes(event: &Value) -> Vec<(String, String, String, String)> {
    event["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or("").to_string();
            (s("sink"), s("op"), s("value"), s("outcome"))
        })
        .collect()
}

fn pair(sink: &str, op: &str, value: &str, outcome: &str) -> (String, String, String, String) {
    (sink.into(), op.into(), value.into(), outcome.into())
}

#[test]
fn explain_tells_the_life_of_fixture_indicators() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = fixture("opencti/small.ndjson");
    run_ok(
        iocsync(dir.path())
            .arg("run")
            .env("IOCSYNC_FILE_PATH", &input)
            .env("IOCSYNC_STATE_DIR", dir.path().join("state"))
            .env("IOCSYNC_JSONL_PATH", dir.path().join("out/iocs.jsonl"))
            .env("IOCSYNC_ZEEK_INTEL_PATH", dir.path().join("out/intel.dat"))
            // One event per batch, as a live stream trickles in: each event's own changes are
            // sent (in one batch, a later event cancels what an earlier one planned).
            .env("IOCSYNC_PIPELINE_BATCH_EVENTS", "1")
            .env("IOCSYNC_PIPELINE_LINGER", "20ms"),
    );
    let stream = capture_events(&input);

    // Every indicator's journal is its events, in order, with the source's positions, kinds
    // and versions.
    for (id, events) in &stream {
        let x = explain(dir.path(), id);
        assert_eq!(x["query_kind"], "indicator", "{id}");
        let journal = x["indicators"][0]["events"].as_array().expect("events");
        let mut got: Vec<(String, String, String)> = journal
            .iter()
            .map(|e| {
                (
                    e["position"].as_str().unwrap_or("").to_string(),
                    e["kind"].as_str().unwrap_or("").to_string(),
                    e["version"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        if id == MERGED_AWAY {
            // Merged away: the merge event of the target, recorded against this one too.
            let last = got.pop().expect("merged event");
            let merge = &stream[MERGE_TARGET][1];
            assert_eq!(
                (last.0.as_str(), last.1.as_str()),
                (merge.0.as_str(), "merged")
            );
            assert_eq!(journal.last().expect("last")["merged_into"], MERGE_TARGET);
        }
        assert_eq!(&got, events, "journal of {id}");
    }

    // Created: one create event, one IOC, created and applied in both sinks.
    let x = explain(dir.path(), CREATED);
    let sha = "029ff8b3ac5c827d6265b064890d9a69fc8573e37012242996a4bc918cee3c6e";
    let event = &x["indicators"][0]["events"][0];
    assert_eq!(event["iocs"][0]["type"], "sha256");
    assert_eq!(event["iocs"][0]["value"], sha);
    let mut got = changes(event);
    got.sort();
    assert_eq!(
        got,
        [
            pair("jsonl", "create", sha, "applied"),
            pair("zeek", "create", sha, "applied")
        ]
    );
    assert_eq!(
        value_state(&x, sha)["verdict"],
        "in jsonl (remote id -); in zeek (remote id -)"
    );
    let text = explain_text(dir.path(), CREATED);
    assert!(text.contains(&format!("indicator {CREATED}")), "{text}");
    assert!(text.contains(&format!("IOCs: sha256 {sha}")), "{text}");
    assert!(
        text.contains(&format!("jsonl create sha256 {sha}")),
        "{text}"
    );

    // Updated: the old value deleted, the new one created, both applied.
    let x = explain(dir.path(), UPDATED);
    let events = x["indicators"][0]["events"].as_array().expect("events");
    assert_eq!(events[0]["iocs"][0]["value"], "173.126.132.82");
    assert_eq!(events[1]["kind"], "update");
    let mut got = changes(&events[1]);
    got.sort();
    assert_eq!(
        got,
        [
            pair("jsonl", "create", "36.138.15.215", "applied"),
            pair("jsonl", "delete", "173.126.132.82", "applied"),
            pair("zeek", "create", "36.138.15.215", "applied"),
            pair("zeek", "delete", "173.126.132.82", "applied"),
        ]
    );
    assert_eq!(
        value_state(&x, "36.138.15.215")["sinks"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let old = &value_state(&x, "173.126.132.82")["verdict"];
    assert!(
        old.as_str()
            .is_some_and(|v| v.starts_with("not in any sink")),
        "{old}"
    );

    // Revoked by an update: no IOC left, its value deleted from both sinks.
    let x = explain(dir.path(), REVOKED);
    let events = x["indicators"][0]["events"].as_array().expect("events");
    assert_eq!(events[1]["iocs"], serde_json::json!([]));
    assert!(changes(&events[1])
        .iter()
        .all(|c| c.1 == "delete" && c.3 == "applied"));
    assert_eq!(x["indicators"][0]["desires"], serde_json::json!([]));

    // Deleted, by value: both holders of 116.75.236.7 (one spelt `/32`) were deleted; the answer
    // names the last deletion's position.
    let x = explain(dir.path(), "116.75.236.7");
    assert_eq!(x["query_kind"], "value");
    let ids: Vec<&str> = x["indicators"]
        .as_array()
        .expect("indicators")
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(ids, [DELETED_A, DELETED_B]);
    let last_delete = &stream[DELETED_B].last().expect("delete").0;
    assert_eq!(
        value_state(&x, "116.75.236.7")["verdict"],
        format!("not in any sink: deleted at position {last_delete} ({DELETED_B})")
    );

    // Deleted, but another indicator holds the same value (hostname GETAPP.COM): it stays.
    let x = explain(dir.path(), DELETED_SHARED);
    let v = value_state(&x, "getapp.com");
    assert_eq!(v["holders"], serde_json::json!([["domain", SHARED_HOLDER]]));
    assert_eq!(v["sinks"].as_array().map(Vec::len), Some(2));
    let text = explain_text(dir.path(), DELETED_SHARED);
    assert!(
        text.contains(&format!("also held by: {SHARED_HOLDER}")),
        "{text}"
    );

    // Merged: the value passes to the target, no sink change for the one merged away.
    let x = explain(dir.path(), MERGED_AWAY);
    let merged = x["indicators"][0]["events"]
        .as_array()
        .and_then(|e| e.last())
        .expect("merged");
    assert!(changes(merged).is_empty(), "{merged:#}");
    let sha1 = "e1c77929566af1b08c283a45aa1cdeb89f32fd99";
    let v = value_state(&x, sha1);
    assert_eq!(v["holders"], serde_json::json!([["sha1", MERGE_TARGET]]));
    assert!(explain_text(dir.path(), MERGED_AWAY).contains(&format!("merged into {MERGE_TARGET}")));

    // Every skip code, with its reason in words and the pattern.
    for (id, code, words) in SKIPPED {
        let x = explain(dir.path(), id);
        let event = &x["indicators"][0]["events"][0];
        assert_eq!(event["skip"], code, "{id}");
        let reason = event["skip_reason"].as_str().expect("reason");
        assert!(reason.starts_with(&format!("{code}: ")), "{reason}");
        assert!(reason.contains(words), "{id}: {reason}");
        assert!(changes(event).is_empty());
    }
    // A create that turned compound by an update: its value left the sinks, and the value's
    // answer names the skip.
    let x = explain(dir.path(), TURNED_COMPOUND);
    let events = x["indicators"][0]["events"].as_array().expect("events");
    assert_eq!(events[1]["skip"], "compound");
    assert_eq!(events[1]["skip_reason"], "compound: OR of 2 observations");
    let v = value_state(&x, "api1.drive-mail.shop");
    let position = &stream[TURNED_COMPOUND][1].0;
    assert_eq!(
        v["verdict"],
        format!("not in any sink: {TURNED_COMPOUND} skipped with code compound (OR of 2 observations) at position {position}")
    );
    // Skipped values are found by value too, from their patterns.
    for (value, code) in [
        (
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "empty_file_hash",
        ),
        ("64.19.149.160/28", "cidr_range"),
        ("61.234.83.73.252", "invalid_value"),
    ] {
        let x = explain(dir.path(), value);
        let verdict = value_state(&x, value)["verdict"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(
            verdict.contains(&format!("skipped with code {code}")),
            "{value}: {verdict}"
        );
    }
    // Never seen.
    let x = explain(dir.path(), "198.51.100.77");
    assert_eq!(x["indicators"], serde_json::json!([]));
    assert!(value_state(&x, "198.51.100.77")["verdict"]
        .as_str()
        .is_some_and(|v| v.starts_with("never seen")));
    assert!(explain_text(dir.path(), "198.51.100.77").contains("198.51.100.77: never seen"));
}

fn capture(path: &Path, indicators: &[(&str, &str)]) {
    let mut text = String::new();
    for (i, (id, pattern)) in indicators.iter().enumerate() {
        let event = serde_json::json!({
            "id": format!("{}-0", 1_700_000_000_000u64 + i as u64),
            "event": "create",
            "data": {"version": "4", "type": "create", "data": {
                "id": id, "type": "indicator", "spec_version": "2.1",
                "pattern_type": "stix", "pattern": pattern,
                "name": id, "valid_until": "2040-01-01T00:00:00Z",
                "modified": "2025-01-01T00:00:00.000Z"
            }}
        });
        text.push_str(&format!("{event}\n"));
    }
    std::fs::write(path, text).expect("capture");
}

fn s1_run(dir: &Path, s1: &FakeS1, input: &PathBuf, attempts: &str) -> Command {
    let mut cmd = iocsync(dir);
    cmd.arg("run")
        .env("IOCSYNC_FILE_PATH", input)
        .env("SENTINELONE_INTEL_URL", format!("{}/", s1.url()))
        .env("SENTINELONE_INTEL_API_KEY", format!("ApiToken {TOKEN}"))
        .env("SENTINELONE_INTEL_ACCOUNT_ID", "1234567890")
        .env("IOCSYNC_STATE_DIR", dir.join("state"))
        .env("IOCSYNC_PIPELINE_LINGER", "20ms")
        .env("IOCSYNC_PIPELINE_RETRY_MIN", "10ms")
        .env("IOCSYNC_PIPELINE_RETRY_MAX", "50ms")
        .env("IOCSYNC_PIPELINE_RETRY_ATTEMPTS", attempts);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_names_a_refusal_and_a_pending_change() {
    let s1 = sentinelone_fake::start().await;
    // A label ending with `-` is a domain to us but not to SentinelOne: refused, dead-lettered.
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("refused.ndjson");
    capture(
        &input,
        &[
            (
                "indicator--00000000-0000-4000-8000-000000000001",
                "[domain-name:value = 'good.example']",
            ),
            (
                "indicator--00000000-0000-4000-8000-000000000002",
                "[domain-name:value = 'bad-.example']",
            ),
        ],
    );
    let mut cmd = s1_run(dir.path(), &s1, &input, "5");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run");
    assert_success(&out);
    let x = explain(dir.path(), "bad-.example");
    let change = &x["indicators"][0]["events"][0]["changes"][0];
    assert_eq!(change["sink"], "sentinelone");
    assert_eq!(change["outcome"], "rejected");
    let error = change["error"].as_str().expect("error");
    assert!(error.contains("4000010 Validation Error"), "{error}");
    let v = value_state(&x, "bad-.example");
    assert_eq!(v["sinks"][0]["status"], "rejected");
    assert_eq!(v["verdict"], format!("refused by sentinelone: {error}"));
    let good = explain(
        dir.path(),
        "indicator--00000000-0000-4000-8000-000000000001",
    );
    let applied = &good["indicators"][0]["events"][0]["changes"][0];
    assert_eq!(applied["outcome"], "applied");
    let uuid = s1.iocs()[0]["uuid"].as_str().expect("uuid").to_string();
    assert_eq!(applied["remote_id"], uuid.as_str());
    assert_eq!(
        value_state(&good, "good.example")["verdict"],
        format!("in sentinelone (remote id {uuid})")
    );

    // SentinelOne answers 503 to everything: the run gives up with the change pending.
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("pending.ndjson");
    capture(
        &input,
        &[(
            "indicator--00000000-0000-4000-8000-000000000003",
            "[ipv4-addr:value = '203.0.113.9']",
        )],
    );
    s1.fail_every(1, Failure::Status(503));
    let mut cmd = s1_run(dir.path(), &s1, &input, "2");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run");
    assert!(!out.status.success(), "the run gives up");
    s1.clear_failures();
    let x = explain(dir.path(), "203.0.113.9");
    let change = &x["indicators"][0]["events"][0]["changes"][0];
    assert_eq!(change["outcome"], "pending");
    assert!(
        change["retries"].as_i64().is_some_and(|n| n >= 1),
        "{change}"
    );
    let intent = change["intent_id"].as_i64().expect("intent");
    let v = value_state(&x, "203.0.113.9");
    assert_eq!(v["sinks"][0]["status"], "pending_create");
    assert_eq!(v["sinks"][0]["intent_id"], intent);
    let verdict = v["verdict"].as_str().expect("verdict");
    assert!(
        verdict.starts_with(&format!(
            "waiting to be created in sentinelone (intent {intent})"
        )),
        "{verdict}"
    );
    assert!(verdict.contains("503"), "{verdict}");
}

#[test]
fn explain_names_replayed_history_ignored_as_stale() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("replay.ndjson");
    let id = "indicator--00000000-0000-4000-8000-000000000010";
    // The newer version first, then an older one (a replay of history reaching us late).
    let mut text = String::new();
    for (n, (kind, value, modified)) in [
        ("create", "new.example", "2025-01-02T00:00:00.000Z"),
        ("update", "old.example", "2025-01-01T00:00:00.000Z"),
    ]
    .into_iter()
    .enumerate()
    {
        let event = serde_json::json!({
            "id": format!("{}-0", 1_700_000_000_000u64 + n as u64),
            "event": kind,
            "data": {"version": "4", "type": kind, "data": {
                "id": id, "type": "indicator", "spec_version": "2.1",
                "pattern_type": "stix", "pattern": format!("[domain-name:value = '{value}']"),
                "name": value, "valid_until": "2040-01-01T00:00:00Z", "modified": modified
            }}
        });
        text.push_str(&format!("{event}\n"));
    }
    std::fs::write(&input, text).expect("capture");
    run_ok(
        iocsync(dir.path())
            .arg("run")
            .env("IOCSYNC_FILE_PATH", &input)
            .env("IOCSYNC_STATE_DIR", dir.path().join("state"))
            .env("IOCSYNC_JSONL_PATH", dir.path().join("iocs.jsonl"))
            .env("IOCSYNC_PIPELINE_BATCH_EVENTS", "1")
            .env("IOCSYNC_PIPELINE_LINGER", "20ms"),
    );
    let x = explain(dir.path(), id);
    let events = x["indicators"][0]["events"].as_array().expect("events");
    assert_eq!(events.len(), 2, "{x:#}");
    assert_eq!(events[0]["stale_of"], Value::Null);
    assert_eq!(events[1]["kind"], "update");
    assert_eq!(events[1]["stale_of"], "2025-01-02T00:00:00.000Z");
    assert_eq!(events[1]["changes"], serde_json::json!([]));
    let text = explain_text(dir.path(), id);
    assert!(
        text.contains(
            "replayed history ignored as stale: the version applied (2025-01-02T00:00:00.000Z) is newer; nothing changed"
        ),
        "{text}"
    );
    // Asked by the value the stale version held: found, and the answer says why it is in no sink.
    let x = explain(dir.path(), "old.example");
    assert_eq!(x["indicators"][0]["id"], id);
    let verdict = value_state(&x, "old.example")["verdict"]
        .as_str()
        .expect("verdict")
        .to_string();
    assert!(
        verdict.starts_with("not in any sink: replayed history ignored as stale"),
        "{verdict}"
    );
    assert_eq!(
        value_state(&explain(dir.path(), "new.example"), "new.example")["verdict"],
        "in jsonl (remote id -)"
    );
}
