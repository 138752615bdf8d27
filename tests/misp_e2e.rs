//! End to end, black box: the `iocsync` binary configured by environment only, the fake MISP as the
//! source and the fake SentinelOne as the sink. `run --once` polls, pushes, and on the next run
//! follows `to_ids` flips and soft deletions with deletes in S1; `runs`, `misp feeds` and `check`
//! answer; a SIGKILL in the middle of a run followed by a rerun loses nothing and duplicates nothing;
//! edits made while a poll is answered, with faults on both sides, reach S1 at the next poll.

mod common;
#[path = "fakes/misp.rs"]
mod misp_fake;
#[path = "fakes/sentinelone.rs"]
mod sentinelone_fake;

use common::iocsync;
use misp_fake::{now, FakeMisp, KEY};
use sentinelone_fake::FakeS1;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const ACCOUNT: &str = "4242";

fn command(dir: &Path, misp: &FakeMisp, s1: &FakeS1, args: &[&str]) -> Command {
    let mut cmd = iocsync(dir);
    cmd.args(args)
        .env("MISP_URL", misp.url())
        .env("MISP_KEY", KEY)
        .env("IOCSYNC_STATE_DIR", dir.join("state"))
        .env("SENTINELONE_INTEL_URL", s1.url())
        .env("SENTINELONE_INTEL_API_KEY", sentinelone_fake::TOKEN)
        .env("SENTINELONE_INTEL_ACCOUNT_ID", ACCOUNT)
        .env("IOCSYNC_PIPELINE_LINGER", "20ms");
    cmd
}

async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("spawn iocsync"))
        .await
        .expect("join")
}

async fn ok(cmd: Command) -> Output {
    let out = output(cmd).await;
    assert!(
        out.status.success(),
        "iocsync failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(KEY),
        "the MISP key leaked into the logs"
    );
    out
}

/// S1's live IOCs as (type, value) → how many copies (a duplicate shows as 2).
fn s1_live(s1: &FakeS1) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for ioc in s1.iocs() {
        let key = (
            ioc["type"].as_str().unwrap_or_default().to_string(),
            ioc["value"].as_str().unwrap_or_default().to_string(),
        );
        *out.entry(key).or_default() += 1;
    }
    out
}

fn once(items: &[(&str, &str)]) -> BTreeMap<(String, String), usize> {
    items
        .iter()
        .map(|(t, v)| ((t.to_string(), v.to_string()), 1))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misp_to_sentinelone_with_deletions_following() {
    let misp = FakeMisp::start().await;
    let s1 = sentinelone_fake::start().await;
    let feed_event = misp.add_event("CIRCL OSINT Feed feed", 1, &[]);
    let e = misp.add_event("Phishing wave", 1, &[(3, "tlp:green")]);
    misp.add_feed(1, "CIRCL OSINT Feed", 0, 0, 0);
    let t = now() - 120;
    let ip = misp.add_at(e, "ip-dst", "203.0.113.7", true, t);
    let dom = misp.add_at(e, "domain", "login-paypa1.example", true, t);
    misp.add_at(e, "url", "https://login-paypa1.example/x", true, t);
    misp.add_at(e, "ip-dst", "198.51.100.0/24", true, t);
    misp.add_at(
        feed_event,
        "sha1",
        "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12",
        true,
        t,
    );
    let dir = tempfile::tempdir().expect("tempdir");

    let out = ok(command(dir.path(), &misp, &s1, &["run", "--once"])).await;
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("run summary (misp)"), "{summary}");
    assert_eq!(
        s1_live(&s1),
        once(&[
            ("IPV4", "203.0.113.7"),
            ("DNS", "login-paypa1.example"),
            ("URL", "https://login-paypa1.example/x"),
            ("SHA1", "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12"),
        ])
    );
    let pushed = s1.iocs();
    let ip_item = pushed
        .iter()
        .find(|i| i["value"] == "203.0.113.7")
        .expect("the IP in S1");
    assert_eq!(ip_item["externalId"], ip.as_str());
    assert_eq!(ip_item["source"], "MISP");
    assert_eq!(ip_item["name"], "Phishing wave");

    // The analyst turns the IDS flag off on the IP and deletes the domain; a new hash arrives.
    misp.modify(&ip, |a| a.to_ids = false);
    misp.soft_delete(&dom, true);
    misp.add(e, "md5", "0800fc577294c34e0b28ad2839435945", true);
    ok(command(dir.path(), &misp, &s1, &["run", "--once"])).await;
    assert_eq!(
        s1_live(&s1),
        once(&[
            ("URL", "https://login-paypa1.example/x"),
            ("SHA1", "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12"),
            ("MD5", "0800fc577294c34e0b28ad2839435945"),
        ])
    );

    // Run history: both runs, newest first, with MISP's skip reasons.
    let out = ok(command(dir.path(), &misp, &s1, &["runs", "--json"])).await;
    let runs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("runs JSON");
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r["source"] == "misp"));
    assert_eq!(runs[1]["skipped"]["cidr_range"], 1, "{}", runs[1]);
    assert_eq!(runs[0]["skipped"]["not_to_ids"], 1, "{}", runs[0]);
    assert_eq!(
        runs[0]["sinks"]["sentinelone"]["deleted"]["ipv4"], 1,
        "{}",
        runs[0]
    );
    let out = ok(command(dir.path(), &misp, &s1, &["runs"])).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("misp"));

    // Feeds: the name rule links the hash's event to the feed; counts are the last run's.
    let out = ok(command(
        dir.path(),
        &misp,
        &s1,
        &["misp", "feeds", "--json"],
    ))
    .await;
    let feeds: serde_json::Value = serde_json::from_slice(&out.stdout).expect("feeds JSON");
    assert_eq!(feeds["feeds"][0]["name"], "CIRCL OSINT Feed");
    assert_eq!(feeds["feeds"][0]["pushed_by_iocsync"], true);

    // Disabling the feed holds its attributes back (the resync then removes what it pushed).
    let mut cmd = command(dir.path(), &misp, &s1, &["run", "--once"]);
    cmd.env("MISP_DISABLED_FEEDS", "CIRCL OSINT Feed")
        .env("MISP_RESYNC_INTERVAL", "1s");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    ok(cmd).await;
    assert_eq!(
        s1_live(&s1),
        once(&[
            ("URL", "https://login-paypa1.example/x"),
            ("MD5", "0800fc577294c34e0b28ad2839435945"),
        ])
    );

    // check: reachability and key; a wrong key is exit code 3.
    let out = ok(command(dir.path(), &misp, &s1, &["check"])).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("source misp: MISP 2.4.190"), "{text}");
    let mut bad = command(dir.path(), &misp, &s1, &["check"]);
    bad.env("MISP_KEY", "not-the-key");
    let out = output(bad).await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_mistakes_name_the_misp_keys() {
    let misp = FakeMisp::start().await;
    let s1 = sentinelone_fake::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = command(dir.path(), &misp, &s1, &["run", "--once"]);
    cmd.env("MISP_INTERVAL", "15m")
        .env("MISP_FIRST_RUN_AT", "02:00")
        .env("MISP_TIMEZONE", "Europe/Atlantis");
    let out = output(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for needle in ["MISP_INTERVAL", "misp.first_run_at", "MISP_TIMEZONE"] {
        assert!(stderr.contains(needle), "{needle} missing: {stderr}");
    }
    let mut cmd = command(dir.path(), &misp, &s1, &["run", "--once"]);
    cmd.env_remove("MISP_KEY");
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MISP_KEY"));
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_then_rerun_loses_nothing_and_duplicates_nothing() {
    let misp = FakeMisp::start().await;
    let s1 = sentinelone_fake::start().await;
    let e = misp.add_event("Large", 1, &[]);
    let t = now() - 120;
    let mut expected = BTreeSet::new();
    for i in 0..60u32 {
        let value = format!("192.0.2.{}", i + 1);
        misp.add_at(e, "ip-dst", &value, true, t);
        expected.insert(("IPV4".to_string(), value));
    }
    // Small slow pages and one-event batches keep the run long enough to be killed in the middle.
    misp.set_page_delay(Duration::from_millis(120));
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |dir: &Path| {
        let mut cmd = command(dir, &misp, &s1, &["run", "--once"]);
        cmd.env("MISP_PAGE_SIZE", "4")
            .env("IOCSYNC_PIPELINE_BATCH_EVENTS", "1")
            .env("IOCSYNC_PIPELINE_LINGER", "1ms");
        cmd
    };
    let mut kills = 0;
    for delay_ms in [700u64, 1_100, 900] {
        let mut child = run(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        if child.try_wait().expect("try_wait").is_none() {
            child.kill().expect("SIGKILL");
            kills += 1;
        }
        let _ = child.wait();
    }
    assert!(kills >= 2, "the run finished too fast to be interrupted");
    let partial = s1_live(&s1).len();
    assert!(
        partial > 0 && partial < 60,
        "killed runs pushed {partial} of 60"
    );

    misp.set_page_delay(Duration::ZERO);
    ok(run(dir.path())).await;
    let live = s1_live(&s1);
    let duplicates: Vec<_> = live.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "duplicates in S1: {duplicates:?}");
    assert_eq!(live.into_keys().collect::<BTreeSet<_>>(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_during_a_poll_under_faults_on_both_sides_reach_sentinelone() {
    use misp_fake::Failure;
    let misp = FakeMisp::start().await;
    let s1 = sentinelone_fake::start().await;
    let t0 = now();
    misp.set_clock(t0);
    misp.fail_scattered(Some((
        4,
        &[
            Failure::Status(503),
            Failure::RateLimit(None),
            Failure::Reset,
        ],
    )));
    s1.fail_scattered(5, sentinelone_fake::Failure::Reset);
    let e = misp.add_event("Wave", 1, &[]);
    let a: Vec<String> = (1..=12)
        .map(|i| misp.add_at(e, "ip-dst", &format!("198.51.100.{i}"), true, t0 - 60))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let round = |dir: &Path| {
        let mut cmd = command(dir, &misp, &s1, &["run", "--once"]);
        cmd.env("MISP_PAGE_SIZE", "4")
            .env("MISP_REQUEST_ATTEMPTS", "10")
            .env("IOCSYNC_PIPELINE_RETRY_ATTEMPTS", "20")
            .env("IOCSYNC_PIPELINE_RETRY_MIN", "10ms")
            .env("IOCSYNC_PIPELINE_RETRY_MAX", "50ms");
        cmd
    };
    ok(round(dir.path())).await;
    assert_eq!(s1_live(&s1).len(), 12);

    // Edits in the seconds before the next poll, then more while its first page is answered (the
    // answer leaving a second later, as a slow page does).
    misp.advance_clock(3);
    misp.modify(&a[1], |x| x.value = "203.0.113.2".into());
    misp.advance_clock(1);
    misp.modify(&a[4], |x| x.to_ids = false);
    misp.advance_clock(1);
    misp.add(e, "domain", "fresh.example", true);
    misp.advance_clock(1);
    misp.modify(&a[2], |x| x.value = "203.0.113.3".into());
    misp.advance_clock(4);
    misp.during_page(1, {
        let a = a.clone();
        move |m| {
            m.modify(&a[1], |x| x.to_ids = false);
            m.soft_delete(&a[0], true);
            m.modify(&a[6], |x| x.value = "203.0.113.7".into());
            m.soft_delete(&a[9], false);
            m.advance_clock(1);
        }
    });
    ok(round(dir.path())).await;
    assert!(misp.hooks_done());
    misp.advance_clock(5);
    ok(round(dir.path())).await;

    let mut expected = vec![
        ("IPV4", "203.0.113.3".to_string()),
        ("IPV4", "203.0.113.7".to_string()),
        ("DNS", "fresh.example".to_string()),
    ];
    for i in [4, 6, 8, 9, 11, 12] {
        expected.push(("IPV4", format!("198.51.100.{i}")));
    }
    let expected: BTreeMap<(String, String), usize> = expected
        .into_iter()
        .map(|(t, v)| ((t.to_string(), v), 1))
        .collect();
    assert_eq!(s1_live(&s1), expected);
}
