//! `iocsync reconcile` against the SentinelOne fake, through the binary: a synced sink is in sync
//! (exit 0); a hand-deleted IOC, a hand-added IOC with iocsync's marker and foreign IOCs are told
//! apart (exit 4), `--apply` repairs the first two and leaves the foreign ones alone; `--adopt`
//! after the state directory is lost rebuilds it so that a full replay creates nothing.

mod common;
#[path = "fakes/sekoia.rs"]
mod sekoia_fake;
#[path = "fakes/sentinelone.rs"]
mod sentinelone_fake;

use common::*;
use sentinelone_fake::{FakeS1, TOKEN};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

const ACCOUNT: &str = "1234567890";

fn with_env(mut cmd: Command, s1: &FakeS1, dir: &Path) -> Command {
    cmd.env("IOCSYNC_FILE_PATH", fixture("opencti/stream.sse"))
        .env("SENTINELONE_INTEL_URL", format!("{}/", s1.url()))
        .env("SENTINELONE_INTEL_API_KEY", format!("ApiToken {TOKEN}"))
        .env("SENTINELONE_INTEL_ACCOUNT_ID", ACCOUNT)
        .env("IOCSYNC_STATE_DIR", dir.join("state"))
        .env("IOCSYNC_PIPELINE_LINGER", "20ms")
        .env("IOCSYNC_PIPELINE_RETRY_MIN", "10ms")
        .env("IOCSYNC_PIPELINE_RETRY_MAX", "200ms");
    cmd
}

async fn sync(s1: &FakeS1, dir: &Path) {
    let mut cmd = with_env(iocsync(dir), s1, dir);
    cmd.arg("run");
    let out = output_within(cmd.into(), std::time::Duration::from_secs(180)).await;
    assert_success(&out);
}

async fn reconcile(s1: &FakeS1, dir: &Path, args: &[&str]) -> Output {
    let mut cmd = with_env(iocsync(dir), s1, dir);
    cmd.arg("reconcile").args(args);
    output_within(cmd.into(), std::time::Duration::from_secs(180)).await
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The fake's IOCs as (type, value, externalId).
fn held(s1: &FakeS1) -> BTreeSet<(String, String, String)> {
    s1.iocs()
        .iter()
        .map(|i| {
            let s = |k: &str| i[k].as_str().unwrap_or("").to_string();
            (s("type"), s("value"), s("externalId"))
        })
        .collect()
}

/// The fake's IOCs as sorted (type, value, externalId), duplicates kept.
fn entries(s1: &FakeS1) -> Vec<(String, String, String)> {
    let mut all: Vec<_> = s1
        .iocs()
        .iter()
        .map(|i| {
            let s = |k: &str| i[k].as_str().unwrap_or("").to_string();
            (s("type"), s("value"), s("externalId"))
        })
        .collect();
    all.sort();
    all
}

fn foreign(s1: &FakeS1, value: &str, external_id: Option<&str>) -> String {
    let mut ioc = json!({"type": "DNS", "value": value, "source": "analyst", "name": value})
        .as_object()
        .cloned()
        .expect("object");
    if let Some(e) = external_id {
        ioc.insert("externalId".into(), json!(e));
    }
    s1.insert(ioc, ACCOUNT)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_drift_is_found_and_repaired_and_foreign_iocs_are_left_alone() {
    let s1 = sentinelone_fake::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    sync(&s1, dir.path()).await;
    let synced = held(&s1);
    assert!(
        synced.len() > 10,
        "the fixture synced {} IOCs",
        synced.len()
    );

    // The first look: everything the pipeline sent is in sync. (A create and its update in one
    // batch once left a stale entry here, found by this test; the planner now sends the newest.)
    let out = reconcile(&s1, dir.path(), &["--json"]).await;
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    let total = &report["sinks"][0]["total"];
    assert_eq!(
        (&total["missing"], &total["extra"], &total["stale"]),
        (&json!(0), &json!(0), &json!(0)),
        "{report}"
    );
    let synced = held(&s1);
    let out = reconcile(&s1, dir.path(), &["--json"]).await;
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report["drift"], json!(false));
    assert_eq!(
        report["sinks"][0]["total"]["in_sync"].as_u64(),
        Some(synced.len() as u64)
    );

    // Drift by hand: one IOC deleted in the console, one added with iocsync's marker for an
    // indicator the source never had, two foreign ones (no externalId, a ticket number).
    let victim = s1.iocs()[3].clone();
    assert!(s1.remove(victim["uuid"].as_str().expect("uuid")));
    let marker = "indicator--99999999-9999-4999-8999-999999999999";
    foreign(&s1, "planted.example", Some(marker));
    foreign(&s1, "analyst.example", None);
    foreign(&s1, "ticket.example", Some("TICKET-42"));

    let posts_before = s1.requests("POST").len();
    let deletes_before = s1.requests("DELETE").len();
    let out = reconcile(&s1, dir.path(), &["--json"]).await;
    assert_eq!(
        out.status.code(),
        Some(4),
        "drift exits 4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json_of(&out);
    assert_eq!(report["drift"], json!(true));
    let total = &report["sinks"][0]["total"];
    assert_eq!(total["missing"], json!(1), "{report}");
    assert_eq!(total["extra"], json!(1), "{report}");
    assert_eq!(total["stale"], json!(0), "{report}");
    assert_eq!(total["not_managed"], json!(2), "{report}");
    assert_eq!(
        total["in_sync"].as_u64(),
        Some(synced.len() as u64 - 1),
        "{report}"
    );
    // The dry run changed nothing.
    assert_eq!(s1.requests("POST").len(), posts_before);
    assert_eq!(s1.requests("DELETE").len(), deletes_before);

    let out = reconcile(&s1, dir.path(), &["--apply", "--json"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json_of(&out);
    let repaired = &report["sinks"][0]["repaired"];
    assert_eq!(repaired["creates"], json!(1), "{report}");
    assert_eq!(repaired["deletes"], json!(1), "{report}");
    assert_eq!(repaired["still_pending"], json!(0), "{report}");
    assert_eq!(s1.requests("POST").len(), posts_before + 1);
    assert_eq!(s1.requests("DELETE").len(), deletes_before + 1);

    let now = held(&s1);
    let victim_key = (
        victim["type"].as_str().expect("type").to_string(),
        victim["value"].as_str().expect("value").to_string(),
        victim["externalId"]
            .as_str()
            .expect("externalId")
            .to_string(),
    );
    assert!(now.contains(&victim_key), "the deleted IOC is back");
    assert!(!now.iter().any(|(_, v, _)| v == "planted.example"));
    assert!(now.iter().any(|(_, v, _)| v == "analyst.example"));
    assert!(now.iter().any(|(_, v, _)| v == "ticket.example"));
    let ours: BTreeSet<_> = now
        .into_iter()
        .filter(|(_, v, _)| !v.ends_with("analyst.example") && v != "ticket.example")
        .collect();
    assert_eq!(ours, synced);

    let out = reconcile(&s1, dir.path(), &[]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("in sync"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopt_after_the_state_is_lost_then_a_full_replay_creates_nothing() {
    let s1 = sentinelone_fake::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    sync(&s1, dir.path()).await;
    foreign(&s1, "analyst.example", None);
    let uuids = |s1: &FakeS1| -> BTreeSet<String> {
        s1.iocs()
            .iter()
            .map(|i| i["uuid"].as_str().expect("uuid").to_string())
            .collect()
    };
    let before = uuids(&s1);

    std::fs::remove_dir_all(dir.path().join("state")).expect("lose the state");
    let out = reconcile(&s1, dir.path(), &["--adopt", "--json"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json_of(&out);
    assert_eq!(
        report["sinks"][0]["adopted"].as_u64(),
        Some(before.len() as u64 - 1),
        "{report}"
    );
    assert_eq!(report["sinks"][0]["total"]["not_managed"], json!(1));

    let before_entries = entries(&s1);
    sync(&s1, dir.path()).await;
    // Not one duplicate: S1 holds each value once, with the same indicator as before the loss.
    // (The fake creates a second entry for a POST of a value it holds, as S1 may: a value the
    // replay created again would show twice.) What the stream itself creates and later deletes
    // is created and deleted again: that history went with the state.
    assert_eq!(
        entries(&s1),
        before_entries,
        "the replay changed what S1 holds"
    );
    let out = reconcile(&s1, dir.path(), &["--json"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopt_then_a_state_only_replay_and_apply_create_nothing_but_what_s1_lost() {
    let s1 = sentinelone_fake::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    sync(&s1, dir.path()).await;
    let before_entries = entries(&s1);
    // One value hand-deleted in S1 while the state is gone: the only thing to send afterwards.
    let victim = s1
        .iocs()
        .into_iter()
        .find(|i| {
            i["externalId"]
                .as_str()
                .is_some_and(|e| e.starts_with("indicator--"))
        })
        .expect("a managed IOC");
    assert!(s1.remove(victim["uuid"].as_str().expect("uuid")));

    std::fs::remove_dir_all(dir.path().join("state")).expect("lose the state");
    assert_success(&reconcile(&s1, dir.path(), &["--adopt", "--json"]).await);
    s1.clear_journal();

    // The replay goes into the state only: S1 is not called at all.
    let mut cmd = with_env(iocsync(dir.path()), &s1, dir.path());
    cmd.args(["run", "--state-only"]);
    let out = output_within(cmd.into(), std::time::Duration::from_secs(180)).await;
    assert_success(&out);
    assert!(s1.journal().is_empty(), "a state-only run called S1");

    // --apply creates the hand-deleted value again and nothing else: not the values the stream
    // created and deleted before the loss, no second copy of anything.
    assert_success(&reconcile(&s1, dir.path(), &["--apply", "--json"]).await);
    let created: usize = s1
        .requests("POST")
        .iter()
        .map(|r| {
            r.body
                .as_ref()
                .and_then(|b| b["data"].as_array())
                .map_or(0, Vec::len)
        })
        .sum();
    assert_eq!(created, 1, "only the hand-deleted value is created again");
    assert!(s1.requests("DELETE").is_empty(), "nothing deleted");
    assert_eq!(
        entries(&s1),
        before_entries,
        "S1 holds what it held before the loss"
    );
    // In sync: exit 0.
    assert_success(&reconcile(&s1, dir.path(), &["--json"]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_jsonl_file_is_found_and_repaired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("iocs.jsonl");
    let jsonl = |args: &[&str]| {
        let mut cmd = iocsync(dir.path());
        cmd.env("IOCSYNC_FILE_PATH", fixture("opencti/stream.sse"))
            .env("IOCSYNC_JSONL_PATH", &path)
            .env("IOCSYNC_STATE_DIR", dir.path().join("state"))
            .env("IOCSYNC_PIPELINE_LINGER", "20ms")
            .args(args);
        cmd.output().expect("run iocsync")
    };
    run_ok(&mut {
        let mut cmd = iocsync(dir.path());
        cmd.env("IOCSYNC_FILE_PATH", fixture("opencti/stream.sse"))
            .env("IOCSYNC_JSONL_PATH", &path)
            .env("IOCSYNC_STATE_DIR", dir.path().join("state"))
            .env("IOCSYNC_PIPELINE_LINGER", "20ms")
            .arg("run");
        cmd
    });
    let expected = jsonl_live_set(&read_jsonl(&path));
    let out = jsonl(&["reconcile", "--json"]);
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(
        report["sinks"][0]["total"]["in_sync"].as_u64(),
        Some(expected.len() as u64)
    );

    // Cut the file at a line in its middle, with a line of someone else's at its top (the sink
    // refuses to append after a last line that is not its own).
    let text = std::fs::read_to_string(&path).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    let kept = format!(
        "# a note by hand\n{}\n",
        lines[..lines.len() / 2].join("\n")
    );
    std::fs::write(&path, kept).expect("truncate");

    let out = jsonl(&["reconcile", "--json"]);
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(4), "{report}");
    let total = &report["sinks"][0]["total"];
    assert!(total["missing"].as_u64().expect("missing") > 0, "{report}");
    assert_eq!(total["not_managed"], json!(1), "{report}");

    let out = jsonl(&["reconcile", "--apply", "--json"]);
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report["sinks"][0]["repaired"]["still_pending"], json!(0));
    let text = std::fs::read_to_string(&path).expect("read");
    let records: Vec<JsonlRecord> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect();
    assert_eq!(jsonl_live_set(&records), expected);
    let out = jsonl(&["reconcile"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_zeek_file_is_found_and_repaired_and_foreign_rows_not_managed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("intel.dat");
    let zeek = |args: &[&str]| {
        let mut cmd = iocsync(dir.path());
        cmd.env("IOCSYNC_FILE_PATH", fixture("opencti/stream.sse"))
            .env("IOCSYNC_ZEEK_INTEL_PATH", &path)
            .env("IOCSYNC_STATE_DIR", dir.path().join("state"))
            .env("IOCSYNC_PIPELINE_LINGER", "20ms")
            .args(args);
        cmd
    };
    run_ok(&mut zeek(&["run"]));
    let synced = std::fs::read_to_string(&path).expect("read");
    let rows: Vec<&str> = synced.lines().filter(|l| !l.starts_with('#')).collect();
    let live = rows.iter().filter(|r| r.ends_with("\tF")).count();
    assert!(live > 10, "the fixture wrote {live} live rows");
    let out = zeek(&["reconcile", "--json"]).output().expect("run");
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(
        report["sinks"][0]["total"]["in_sync"].as_u64(),
        Some(live as u64),
        "{report}"
    );

    // Cut the file after half its rows, and add a row of another source (counted as not managed;
    // the file is the sink's own, so the rewrite that repairs it drops that row, as any rewrite).
    let header: Vec<&str> = synced.lines().filter(|l| l.starts_with('#')).collect();
    let foreign = "analyst.example\tIntel::DOMAIN\tanalyst\tby hand\t-\tF";
    let cut = format!(
        "{}\n{}\n{foreign}\n",
        header.join("\n"),
        rows[..rows.len() / 2].join("\n")
    );
    std::fs::write(&path, &cut).expect("truncate");

    let out = zeek(&["reconcile", "--json"]).output().expect("run");
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(4), "{report}");
    let total = &report["sinks"][0]["total"];
    let lost = rows[rows.len() / 2..]
        .iter()
        .filter(|r| r.ends_with("\tF"))
        .count();
    assert!(lost > 0);
    assert_eq!(total["missing"].as_u64(), Some(lost as u64), "{report}");
    assert_eq!(total["extra"], json!(0), "{report}");
    assert_eq!(total["not_managed"], json!(1), "{report}");
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        cut,
        "the dry run changed nothing"
    );

    let out = zeek(&["reconcile", "--apply", "--json"])
        .output()
        .expect("run");
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(
        report["sinks"][0]["repaired"]["creates"].as_u64(),
        Some(lost as u64)
    );
    assert_eq!(report["sinks"][0]["repaired"]["still_pending"], json!(0));
    // The file is the sink's own again: rewritten from its live set, as after the sync.
    assert_eq!(std::fs::read_to_string(&path).expect("read"), synced);
    let out = zeek(&["reconcile"]).output().expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_sekoia_collection_is_found_and_refilled_and_foreign_indicators_are_left() {
    let fake = sekoia_fake::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sekoia = |args: &[&str]| {
        let mut cmd = iocsync(dir.path());
        cmd.env("IOCSYNC_FILE_PATH", fixture("opencti/stream.sse"))
            .env("SEKOIA_INTEL_URL", format!("{}/v2/inthreat/", fake.url()))
            .env("SEKOIA_INTEL_APIKEY", sekoia_fake::TOKEN)
            .env("SEKOIA_INTEL_IOC_COLLECTION_UUID", sekoia_fake::COLLECTION)
            .env("IOCSYNC_STATE_DIR", dir.path().join("state"))
            .env("IOCSYNC_PIPELINE_LINGER", "20ms")
            .env("IOCSYNC_PIPELINE_RETRY_MIN", "10ms")
            .env("IOCSYNC_PIPELINE_RETRY_MAX", "200ms")
            .args(args);
        tokio::process::Command::from(cmd)
    };
    let within = std::time::Duration::from_secs(180);
    let live = |fake: &sekoia_fake::FakeSekoia| -> BTreeSet<String> {
        fake.items()
            .iter()
            .filter(|i| i["revoked"].as_bool() != Some(true))
            .map(|i| {
                i["x_inthreat_short_display"]
                    .as_str()
                    .expect("value")
                    .to_string()
            })
            .collect()
    };
    assert_success(&output_within(sekoia(&["run"]), within).await);
    let synced = live(&fake);
    assert!(synced.len() > 10, "the fixture synced {}", synced.len());
    let out = output_within(sekoia(&["reconcile", "--json"]), within).await;
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(
        report["sinks"][0]["total"]["in_sync"].as_u64(),
        Some(synced.len() as u64),
        "{report}"
    );

    // The collection is purged; then another connector pushes one of the values (no marker).
    fake.purge();
    let shared = synced.iter().next().expect("a value").clone();
    let foreign_id = fake.insert(&shared, "pushed by another connector", false);
    let out = output_within(sekoia(&["reconcile", "--json"]), within).await;
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(4), "{report}");
    let total = &report["sinks"][0]["total"];
    assert_eq!(
        total["missing"].as_u64(),
        Some(synced.len() as u64),
        "{report}"
    );
    assert_eq!(total["in_sync"], json!(0), "{report}");
    assert_eq!(total["not_managed"], json!(1), "{report}");
    assert_eq!(fake.items().len(), 1, "the dry run changed nothing");

    let out = output_within(sekoia(&["reconcile", "--apply", "--json"]), within).await;
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    let repaired = &report["sinks"][0]["repaired"];
    assert_eq!(
        repaired["creates"].as_u64(),
        Some(synced.len() as u64),
        "{report}"
    );
    assert_eq!(repaired["still_pending"], json!(0), "{report}");
    assert_eq!(live(&fake), synced);
    let foreign = fake
        .items()
        .into_iter()
        .find(|i| i["id"].as_str() == Some(foreign_id.as_str()))
        .expect("the foreign indicator is still there");
    assert_eq!(
        foreign["revoked"],
        json!(false),
        "the foreign indicator is left alone"
    );

    let out = output_within(sekoia(&["reconcile", "--json"]), within).await;
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(
        report["sinks"][0]["total"]["not_managed"],
        json!(1),
        "{report}"
    );
}

/// `iocsync` with the fixture stream and the Sekoia fake as the one sink.
fn sekoia_cmd(
    fake: &sekoia_fake::FakeSekoia,
    dir: &Path,
    args: &[&str],
) -> tokio::process::Command {
    let mut cmd = iocsync(dir);
    cmd.env("IOCSYNC_FILE_PATH", fixture("opencti/stream.sse"))
        .env("SEKOIA_INTEL_URL", format!("{}/v2/inthreat/", fake.url()))
        .env("SEKOIA_INTEL_APIKEY", sekoia_fake::TOKEN)
        .env("SEKOIA_INTEL_IOC_COLLECTION_UUID", sekoia_fake::COLLECTION)
        .env("IOCSYNC_STATE_DIR", dir.join("state"))
        .env("IOCSYNC_PIPELINE_LINGER", "20ms")
        .env("IOCSYNC_PIPELINE_RETRY_MIN", "10ms")
        .env("IOCSYNC_PIPELINE_RETRY_MAX", "200ms")
        .args(args);
    tokio::process::Command::from(cmd)
}

/// Runs `iocsync` against the Sekoia fake (within 180 s).
async fn sekoia_run(fake: &sekoia_fake::FakeSekoia, dir: &Path, args: &[&str]) -> Output {
    output_within(
        sekoia_cmd(fake, dir, args),
        std::time::Duration::from_secs(180),
    )
    .await
}

/// The live indicators of the fake as value → ids (iocsync's marker or not).
fn sekoia_live(fake: &sekoia_fake::FakeSekoia) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for i in fake.items() {
        if i["revoked"].as_bool() == Some(true) {
            continue;
        }
        let value = i["x_inthreat_short_display"].as_str().expect("value");
        let id = i["id"].as_str().expect("id");
        out.entry(value.to_string())
            .or_default()
            .push(id.to_string());
    }
    out
}

/// What the sink writes in `default_fields.description` (its marker at the end).
const SEKOIA_DESCRIPTION: &str = "OpenCTI indicator synced by iocsync [iocsync]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sekoia_a_hand_revoked_value_is_missing_and_a_pushed_value_no_longer_desired_is_extra() {
    let fake = sekoia_fake::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    assert_success(&sekoia_run(&fake, dir.path(), &["run"]).await);
    let synced = sekoia_live(&fake);
    assert!(synced.len() > 10, "the fixture synced {}", synced.len());
    assert!(synced.values().all(|ids| ids.len() == 1), "{synced:?}");

    // An analyst revokes one of ours in the console.
    let (victim, victim_ids) = synced.iter().nth(2).expect("a value");
    assert!(fake.revoke(&victim_ids[0]));
    // A value the stream created and later deleted (so iocsync revoked it) is live again with
    // iocsync's marker: a restore, or a revoke that was lost.
    let revoked: BTreeSet<String> = fake
        .items()
        .iter()
        .filter(|i| i["revoked"].as_bool() == Some(true))
        .filter(|i| i["id"].as_str() != Some(victim_ids[0].as_str()))
        .map(|i| {
            i["x_inthreat_short_display"]
                .as_str()
                .expect("value")
                .to_string()
        })
        .filter(|v| !synced.contains_key(v))
        .collect();
    let gone = revoked
        .iter()
        .next()
        .expect("the fixture deletes values it created")
        .clone();
    let restored = fake.insert(&gone, SEKOIA_DESCRIPTION, false);
    // And another connector holds a value iocsync also pushed and deleted: not ours, left alone.
    let other = revoked
        .iter()
        .nth(1)
        .expect("a second deleted value")
        .clone();
    let foreign = fake.insert(&other, "pushed by another connector", false);

    let out = sekoia_run(&fake, dir.path(), &["reconcile", "--json"]).await;
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(4), "{report}");
    let total = &report["sinks"][0]["total"];
    assert_eq!(total["missing"], json!(1), "{report}");
    assert_eq!(total["extra"], json!(1), "{report}");
    assert_eq!(total["not_managed"], json!(1), "{report}");
    assert_eq!(
        total["in_sync"].as_u64(),
        Some(synced.len() as u64 - 1),
        "{report}"
    );
    let samples = report["sinks"][0]["samples"].to_string();
    assert!(samples.contains(&gone), "{report}");

    let out = sekoia_run(&fake, dir.path(), &["reconcile", "--apply", "--json"]).await;
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    let repaired = &report["sinks"][0]["repaired"];
    assert_eq!(repaired["creates"], json!(1), "{report}");
    assert_eq!(repaired["deletes"], json!(1), "{report}");
    assert_eq!(repaired["still_pending"], json!(0), "{report}");
    let item = |id: &str| fake.item(id).expect("still stored");
    assert_eq!(
        item(&restored)["revoked"],
        json!(true),
        "the extra is revoked"
    );
    assert_eq!(
        item(&foreign)["revoked"],
        json!(false),
        "the foreign one is left"
    );
    let now = sekoia_live(&fake);
    assert_eq!(
        now.get(victim).map(Vec::len),
        Some(1),
        "the revoked value is back"
    );
    let ours: BTreeSet<&String> = now.keys().filter(|v| **v != other).collect();
    assert_eq!(ours, synced.keys().collect::<BTreeSet<_>>());

    let out = sekoia_run(&fake, dir.path(), &["reconcile", "--json"]).await;
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sekoia_adopt_after_the_state_is_lost_then_a_replay_creates_no_second_live_copy() {
    let fake = sekoia_fake::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    assert_success(&sekoia_run(&fake, dir.path(), &["run"]).await);
    let before = sekoia_live(&fake);
    assert!(before.len() > 10, "the fixture synced {}", before.len());
    // Values the stream deleted at some point (iocsync revoked a copy): of the values live now,
    // the only ones a replay may import again, since their history went with the state.
    let ever_revoked: BTreeSet<String> = fake
        .items()
        .iter()
        .filter(|i| i["revoked"].as_bool() == Some(true))
        .map(|i| {
            i["x_inthreat_short_display"]
                .as_str()
                .expect("value")
                .to_string()
        })
        .collect();

    std::fs::remove_dir_all(dir.path().join("state")).expect("lose the state");
    let out = sekoia_run(&fake, dir.path(), &["reconcile", "--adopt", "--json"]).await;
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(
        report["sinks"][0]["note"]
            .as_str()
            .is_some_and(|n| n.contains("adopt")),
        "{report}"
    );

    fake.clear_journal();
    assert_success(&sekoia_run(&fake, dir.path(), &["run"]).await);
    let after = sekoia_live(&fake);
    assert!(
        after.values().all(|ids| ids.len() == 1),
        "a second live copy: {after:?}"
    );
    assert_eq!(
        after.keys().collect::<BTreeSet<_>>(),
        before.keys().collect::<BTreeSet<_>>()
    );
    // Every value that was only ever live kept its indicator: adopted, not imported again.
    for (value, ids) in &before {
        if !ever_revoked.contains(value) {
            assert_eq!(after.get(value), Some(ids), "{value} was imported again");
        }
    }
    let imported: BTreeSet<String> = fake
        .requests("POST")
        .iter()
        .flat_map(|r| {
            r.body.as_ref().expect("body")["indicators"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|i| i["value"].as_str().expect("value").to_string())
        .collect();
    // What was imported is the stream's own create-then-delete history: values not live before
    // the loss (now revoked again), or live ones it had deleted once.
    let live_only: Vec<&String> = imported
        .iter()
        .filter(|v| before.contains_key(*v) && !ever_revoked.contains(*v))
        .collect();
    assert!(live_only.is_empty(), "imported again: {live_only:?}");
    assert!(
        imported
            .iter()
            .all(|v| after.contains_key(v) == before.contains_key(v)),
        "{imported:?}"
    );

    // The state matches the collection; --apply ends the adopting mode.
    let out = sekoia_run(&fake, dir.path(), &["reconcile", "--json"]).await;
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    let out = sekoia_run(&fake, dir.path(), &["reconcile", "--apply", "--json"]).await;
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(
        report["sinks"][0]["note"]
            .as_str()
            .is_some_and(|n| n.contains("ended")),
        "{report}"
    );
}
