//! The MISP source against the fake MISP, through the real pipeline into a JSONL sink (`app::run`
//! with `--once`, one poll per call): first and incremental runs (new, modified, `to_ids` flipped,
//! soft-deleted), the resync (hard deletes, deleted events, tag changes both ways), disabled feeds
//! and their counters, paging and request bodies, boundary de-duplication, a failed run retried
//! from the old `last_run_time`, transient errors, a bad key, `check`, and the daemon's interval.

mod common;
#[path = "fakes/misp.rs"]
mod misp_fake;

use common::{jsonl_live_set, read_jsonl};
use iocsync::app::{self, RunOptions};
use iocsync::config::{Config, PipelineConfig, StateConfig, Valid};
use iocsync::model::EventKind;
use iocsync::pipeline::RunStats;
use iocsync::secret::Secret;
use iocsync::sinks::jsonl::JsonlConfig;
use iocsync::sources::misp::mapping::SUPPORTED_TYPES;
use iocsync::sources::misp::{Mark, MispConfig, MispSource};
use iocsync::sources::{Source, SourceContext};
use iocsync::state::State;
use misp_fake::{now, FakeMisp, KEY};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

const SHA256: &str = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

fn config(fake: &FakeMisp, dir: &Path) -> Config {
    Config {
        source: Some("misp".into()),
        misp: MispConfig {
            url: Some(format!("{}/", fake.url())),
            key: Some(Secret::new(KEY)),
            request_attempts: 3,
            timeout: Duration::from_secs(10),
            ..MispConfig::default()
        },
        jsonl: JsonlConfig {
            path: Some(dir.join("out/iocs.jsonl")),
            ..JsonlConfig::default()
        },
        state: StateConfig {
            dir: dir.join("state"),
        },
        pipeline: PipelineConfig {
            linger: Duration::from_millis(10),
            retry_min: Duration::from_millis(10),
            retry_max: Duration::from_millis(50),
            retry_attempts: 2,
            ..PipelineConfig::default()
        },
        ..Config::default()
    }
}

async fn run_once(cfg: &Config) -> Result<RunStats, app::AppError> {
    app::run(
        cfg,
        RunOptions {
            once: true,
            control: None,
            state_only: false,
        },
        CancellationToken::new(),
    )
    .await
}

async fn run_ok(cfg: &Config) -> RunStats {
    let stats = run_once(cfg).await.expect("MISP run succeeds");
    assert!(stats.balanced(), "unbalanced run: {stats:?}");
    stats
}

fn live(dir: &Path) -> BTreeSet<(String, String)> {
    jsonl_live_set(&read_jsonl(&dir.join("out/iocs.jsonl")))
}

fn set(items: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    items
        .iter()
        .map(|(t, v)| (t.to_string(), v.to_string()))
        .collect()
}

fn skipped(stats: &RunStats, code: &str) -> u64 {
    stats.skipped.get(code).copied().unwrap_or(0)
}

fn mark(dir: &Path) -> Option<Mark> {
    let state = State::open(&dir.join("state")).expect("state");
    state
        .checkpoint("misp")
        .expect("checkpoint")
        .and_then(|p| Mark::parse(&p))
}

#[tokio::test]
async fn first_run_pushes_ids_attributes_and_counts_each_skip() {
    let fake = FakeMisp::start().await;
    // An old server: booleans as "0"/"1", and the type filter ignored.
    fake.set_old_booleans(true);
    fake.set_ignore_type_filter(true);
    let e = fake.add_event("Botnet X", 1, &[(5, "tlp:white")]);
    let t = now() - 60;
    fake.add_at(e, "ip-dst", "1.2.3.4", true, t);
    fake.add_at(e, "domain", "Evil.Example.", true, t);
    fake.add_at(
        e,
        "filename|sha256",
        &format!("evil.exe|{}", SHA256.to_uppercase()),
        true,
        t,
    );
    fake.add_at(e, "domain|ip", "c2.example|5.6.7.8", true, t);
    fake.add_at(e, "url", "http://x.example/a", true, t);
    fake.add_at(
        e,
        "stix2-pattern",
        "[url:value = 'http://y.example/']",
        true,
        t,
    );
    fake.add_at(e, "ip-dst", "9.9.9.9", false, t);
    fake.add_at(e, "ip-dst", "10.0.0.0/8", true, t);
    fake.add_at(e, "md5", "d41d8cd98f00b204e9800998ecf8427e", true, t);
    fake.add_at(e, "email-src", "boss@corp.example", true, t);
    fake.add_at(e, "ip-dst", "8.8.8.8", true, t);
    fake.add_warninglist_value("8.8.8.8");
    // Older than the 7-day look-back: never asked for.
    fake.add_at(e, "ip-dst", "7.7.7.7", true, now() - 30 * 86_400);

    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(&fake, dir.path());
    let stats = run_ok(&cfg).await;

    assert_eq!(
        live(dir.path()),
        set(&[
            ("ipv4", "1.2.3.4"),
            ("domain", "evil.example"),
            ("sha256", SHA256),
            ("domain", "c2.example"),
            ("ipv4", "5.6.7.8"),
            ("url", "http://x.example/a"),
            ("url", "http://y.example/"),
        ])
    );
    assert_eq!(stats.source, "misp");
    assert_eq!(stats.received, 10, "{stats:?}");
    for code in [
        "not_to_ids",
        "cidr_range",
        "empty_file_hash",
        "unsupported_type",
    ] {
        assert_eq!(skipped(&stats, code), 1, "{code}: {stats:?}");
    }
    let created: u64 = stats.sinks["jsonl"].created.values().sum();
    assert_eq!(created, 7);

    // The run is in the history and the mark is durable: last_run ≈ now, floor = now − 7 days.
    let state = State::open(&dir.path().join("state")).expect("state");
    let runs = state.runs().expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].source, "misp");
    assert_eq!(runs[0].stats["skipped"]["unsupported_type"], 1);
    let m = mark(dir.path()).expect("a MISP mark");
    assert!((now() - m.last_run).abs() <= 5, "{m:?}");
    let floor = m.floor.expect("floor");
    assert!((m.last_run - 7 * 86_400 - floor).abs() <= 1, "{m:?}");
    let first_search = &fake.searches()[0];
    assert_eq!(first_search["timestamp"].as_i64(), Some(floor));
}

#[tokio::test]
async fn incremental_runs_follow_changes_flips_and_soft_deletes() {
    let fake = FakeMisp::start().await;
    let e = fake.add_event("Campaign", 1, &[]);
    let t = now() - 60;
    let a = fake.add_at(e, "ip-dst", "1.2.3.4", true, t);
    let b = fake.add_at(e, "domain", "b.example", true, t);
    let c = fake.add_at(e, "url", "http://c.example/x", true, t);
    fake.add_at(e, "sha256", SHA256, true, t);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(&fake, dir.path());
    run_ok(&cfg).await;
    let first_mark = mark(dir.path()).expect("mark");

    fake.modify(&a, |x| x.value = "1.2.3.5".into());
    fake.modify(&b, |x| x.to_ids = false);
    fake.soft_delete(&c, true);
    fake.add(e, "hostname", "new.example", true);
    let stats = run_ok(&cfg).await;

    assert_eq!(
        live(dir.path()),
        set(&[
            ("ipv4", "1.2.3.5"),
            ("sha256", SHA256),
            ("domain", "new.example")
        ])
    );
    // Only what changed came back: modified, flipped, soft-deleted, new.
    assert_eq!(stats.received, 4, "{stats:?}");
    assert_eq!(skipped(&stats, "not_to_ids"), 1);
    let deleted: u64 = stats.sinks["jsonl"].deleted.values().sum();
    assert_eq!(
        deleted, 3,
        "old IP, flipped domain, soft-deleted URL: {stats:?}"
    );
    // The first run read up to its newest attribute (older than its start); the second poll asked
    // from one second before that.
    assert_eq!(first_mark.watermark, Some(t), "{first_mark:?}");
    let second = fake.searches().last().cloned().expect("a search");
    assert_eq!(second["timestamp"].as_i64(), Some(t - 1));
    assert_eq!(second["deleted"], serde_json::json!([0, 1]));
    assert!(
        second.get("to_ids").is_none(),
        "to_ids must not be filtered: {second}"
    );
}

#[tokio::test]
async fn resync_removes_hard_deletes_and_deleted_events() {
    let fake = FakeMisp::start().await;
    let e1 = fake.add_event("One", 1, &[]);
    let e2 = fake.add_event("Two", 1, &[]);
    let t = now() - 60;
    let a = fake.add_at(e1, "ip-dst", "1.1.1.1", true, t);
    fake.add_at(e1, "ip-dst", "2.2.2.2", true, t);
    fake.add_at(e2, "domain", "two.example", true, t);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(&fake, dir.path());
    run_ok(&cfg).await;

    fake.hard_delete(&a);
    fake.delete_event(e2);
    // An incremental poll cannot see either.
    let stats = run_ok(&cfg).await;
    assert_eq!(stats.received, 0, "{stats:?}");
    assert_eq!(live(dir.path()).len(), 3);

    // A resync is due once `resync_interval` has passed since the last one.
    cfg.misp.resync_interval = Duration::from_secs(1);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let stats = run_ok(&cfg).await;
    assert_eq!(live(dir.path()), set(&[("ipv4", "2.2.2.2")]));
    assert_eq!(stats.received, 2, "two removals: {stats:?}");
    let resync = fake.searches().last().cloned().expect("resync search");
    assert_eq!(resync["deleted"], 0);
    assert_eq!(resync["to_ids"], 1);
    let m = mark(dir.path()).expect("mark");
    assert_eq!(m.last_resync, Some(m.last_run));
}

#[tokio::test]
async fn resync_follows_event_tag_changes_both_ways() {
    let fake = FakeMisp::start().await;
    let e = fake.add_event("Tagged later", 1, &[]);
    fake.add_at(e, "domain", "fp.example", true, now() - 60);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(&fake, dir.path());
    cfg.misp.exclude_tags = Some("false-positive".into());
    cfg.misp.resync_interval = Duration::from_secs(1);
    run_ok(&cfg).await;
    assert_eq!(live(dir.path()), set(&[("domain", "fp.example")]));

    // Tagging an event does not bump its attributes' timestamps: only the resync notices.
    fake.set_event_tags(e, &[(9, "false-positive")]);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    run_ok(&cfg).await;
    assert!(live(dir.path()).is_empty());

    fake.set_event_tags(e, &[]);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let stats = run_ok(&cfg).await;
    assert_eq!(live(dir.path()), set(&[("domain", "fp.example")]));
    assert_eq!(stats.received, 1, "{stats:?}");
}

#[tokio::test]
async fn disabled_feeds_are_held_back_and_counted() {
    let fake = FakeMisp::start().await;
    let fixed = fake.add_event("Fixed feed event", 1, &[]);
    let tagged = fake.add_event("Some import", 1, &[(77, "feed:tagged")]);
    let by_org = fake.add_event("Org import", 5, &[]);
    let named = fake.add_event("Named feed", 1, &[]);
    let manual = fake.add_event("Analyst work", 1, &[]);
    fake.add_feed(1, "Fixed Feed", fixed, 0, 0);
    fake.add_feed(2, "Tagged Feed", 0, 0, 77);
    fake.add_feed(3, "Org Feed", 0, 5, 0);
    fake.add_feed(4, "Named", 0, 0, 0);
    let t = now() - 60;
    fake.add_at(fixed, "ip-dst", "1.0.0.1", true, t);
    fake.add_at(tagged, "ip-dst", "1.0.0.2", true, t);
    fake.add_at(by_org, "ip-dst", "1.0.0.3", true, t);
    fake.add_at(named, "ip-dst", "1.0.0.4", true, t);
    fake.add_at(manual, "ip-dst", "1.0.0.5", true, t);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(&fake, dir.path());
    cfg.misp.disabled_feeds = Some("tagged feed, 3, Nope".into());
    let stats = run_ok(&cfg).await;

    assert_eq!(
        live(dir.path()),
        set(&[
            ("ipv4", "1.0.0.1"),
            ("ipv4", "1.0.0.4"),
            ("ipv4", "1.0.0.5")
        ])
    );
    assert_eq!(skipped(&stats, "ignored_disabled_feed"), 2, "{stats:?}");

    let report = iocsync::cli::misp::feeds_report(&cfg)
        .await
        .expect("feeds report");
    assert_eq!(report.unknown_disabled, ["Nope"]);
    assert_eq!(report.last_run_unlinked, 1);
    let row = |id: &str| {
        report
            .feeds
            .iter()
            .find(|r| r.id == id)
            .cloned()
            .expect("feed row")
    };
    assert!(row("1").pushed_by_iocsync && row("4").pushed_by_iocsync);
    assert!(!row("2").pushed_by_iocsync && !row("3").pushed_by_iocsync);
    for id in ["1", "2", "3", "4"] {
        assert_eq!(row(id).last_run_attributes, 1, "feed {id}");
    }
    assert_eq!(
        (row("2").last_run_ignored, row("1").last_run_ignored),
        (1, 0)
    );

    let mut out = Vec::new();
    iocsync::cli::misp::run(
        &cfg,
        iocsync::cli::misp::MispCommand::Feeds { json: false },
        &mut out,
    )
    .await
    .expect("misp feeds");
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("Tagged Feed"), "{text}");
    assert!(text.contains("disabled"), "{text}");
    assert!(text.contains("1 attributes linked to no feed"), "{text}");
    assert!(text.contains("names no feed here: Nope"), "{text}");
}

#[tokio::test]
async fn paging_reads_every_page_and_bodies_carry_the_filters() {
    let fake = FakeMisp::start().await;
    let e = fake.add_event("Shared", 1, &[(5, "tlp:white")]);
    let unpublished = fake.add_event("Draft", 1, &[(5, "tlp:white")]);
    fake.set_published(unpublished, false);
    let other_org = fake.add_event("Other org", 2, &[(5, "tlp:white")]);
    let untagged = fake.add_event("Untagged", 1, &[]);
    let t = now() - 60;
    for i in 1..=5 {
        fake.add_at(e, "ip-dst", &format!("10.1.0.{i}"), true, t);
    }
    fake.add_at(unpublished, "ip-dst", "10.2.0.1", true, t);
    fake.add_at(other_org, "ip-dst", "10.3.0.1", true, t);
    fake.add_at(untagged, "ip-dst", "10.4.0.1", true, t);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(&fake, dir.path());
    cfg.misp.page_size = 2;
    cfg.misp.tags = Some("tlp:white".into());
    cfg.misp.exclude_tags = Some("false-positive".into());
    cfg.misp.orgs = Some("ORGNAME".into());
    cfg.misp.published_only = true;
    let stats = run_ok(&cfg).await;
    assert_eq!(stats.received, 5);
    assert_eq!(live(dir.path()).len(), 5);

    let searches = fake.searches();
    // The third page (one row) is short, but only an empty page ends the paging.
    assert_eq!(pages_of(&searches), [1, 2, 3, 4]);
    let b = &searches[0];
    assert_eq!(b["returnFormat"], "json");
    assert_eq!(b["order"], "Attribute.id ASC");
    assert_eq!(b["limit"], 2);
    assert_eq!(b["includeEventUuid"], 1);
    assert_eq!(b["enforceWarninglist"], 1);
    assert_eq!(b["published"], 1);
    assert_eq!(
        b["tags"],
        serde_json::json!(["tlp:white", "!false-positive"])
    );
    assert_eq!(b["org"], serde_json::json!(["ORGNAME"]));
    assert_eq!(
        b["type"].as_array().map(Vec::len),
        Some(SUPPORTED_TYPES.len())
    );
    for r in fake.journal() {
        assert_eq!(r.auth.as_deref(), Some(KEY), "raw key, no scheme: {r:?}");
        assert_eq!(r.accept.as_deref(), Some("application/json"));
        assert!(!r.path.contains("//"), "{r:?}");
    }
}

#[tokio::test]
async fn boundary_redelivery_is_not_counted_twice() {
    let fake = FakeMisp::start().await;
    let e = fake.add_event("Busy", 1, &[]);
    // Changed just after the run starts and before its page is read (the page takes 2.5 s).
    let during = now() + 1;
    let uuid = fake.add_at(e, "ip-dst", "3.3.3.3", true, during);
    fake.set_page_delay(Duration::from_millis(2_500));
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(&fake, dir.path());
    let first = run_ok(&cfg).await;
    assert_eq!(first.received, 1);
    fake.set_page_delay(Duration::ZERO);
    let m = mark(dir.path()).expect("mark");
    assert!(
        m.last_run <= during,
        "the run started before the change: {m:?}"
    );

    // The next poll (timestamp >= last run) gets the same version back: dropped, not re-counted.
    let second = run_ok(&cfg).await;
    assert_eq!(second.received, 0, "{second:?}");
    // A new version of the same attribute is of course taken.
    fake.modify(&uuid, |a| a.value = "3.3.3.4".into());
    let third = run_ok(&cfg).await;
    assert_eq!(third.received, 1, "{third:?}");
    assert_eq!(live(dir.path()), set(&[("ipv4", "3.3.3.4")]));
}

#[tokio::test]
async fn failed_run_keeps_the_old_mark_and_the_rerun_loses_nothing() {
    let fake = FakeMisp::start().await;
    let e = fake.add_event("Big", 1, &[]);
    let t = now() - 60;
    for i in 1..=5 {
        fake.add_at(e, "domain", &format!("d{i}.example"), true, t);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(&fake, dir.path());
    cfg.misp.page_size = 2;
    cfg.misp.request_attempts = 1;
    fake.fail_pages_from(Some((2, 500)));
    let err = run_once(&cfg).await.expect_err("page 2 fails");
    assert_eq!(err.exit_code(), 1, "{err}");
    assert!(err.to_string().contains("attributes/restSearch"), "{err}");
    // Page 1 reached the sink, but the run is not acknowledged: no mark.
    assert_eq!(live(dir.path()).len(), 2);
    assert_eq!(mark(dir.path()), None);

    fake.fail_pages_from(None);
    let stats = run_ok(&cfg).await;
    // jsonl_live_set panics on a second create of a live value: that is the no-duplicate check.
    assert_eq!(live(dir.path()).len(), 5);
    let created: u64 = stats.sinks["jsonl"].created.values().sum();
    assert_eq!(created, 3, "{stats:?}");
    // Retried from the same starting point (the first run's look-back).
    let searches = fake.searches();
    let first = searches[0]["timestamp"].as_i64().expect("timestamp");
    let last = searches[searches.len() - 1]["timestamp"]
        .as_i64()
        .expect("timestamp");
    assert!((last - first).abs() <= 2, "{first} vs {last}");
}

#[tokio::test]
async fn transient_errors_are_retried_and_a_bad_key_is_an_auth_error() {
    let fake = FakeMisp::start().await;
    let e = fake.add_event("E", 1, &[]);
    fake.add_at(e, "ip-dst", "4.4.4.4", true, now() - 60);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(&fake, dir.path());
    fake.fail_next(2, 503);
    run_ok(&cfg).await;
    assert_eq!(live(dir.path()), set(&[("ipv4", "4.4.4.4")]));
    let versions = fake
        .journal()
        .iter()
        .filter(|r| r.path == "/servers/getVersion")
        .count();
    assert_eq!(versions, 3);

    let mut out = Vec::new();
    app::check(&cfg, &mut out).await.expect("check passes");
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("MISP 2.4.190"), "{text}");
    assert!(!text.contains(KEY), "{text}");

    let mut bad = cfg.clone();
    bad.misp.key = Some(Secret::new("wrong-key"));
    let err = run_once(&bad).await.expect_err("refused");
    assert_eq!(err.exit_code(), 3, "{err}");
    assert!(err.to_string().contains("Authentication failed"), "{err}");
    let mut out = Vec::new();
    let err = app::check(&bad, &mut out).await.expect_err("check fails");
    assert_eq!(err.exit_code(), 3);

    let mut unknown_feed = cfg.clone();
    unknown_feed.misp.disabled_feeds = Some("Ghost".into());
    let err = app::check(&unknown_feed, &mut Vec::new())
        .await
        .expect_err("unknown feed");
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("misp.disabled_feeds"), "{err}");
}

#[tokio::test]
async fn daemon_polls_on_its_interval_and_stops_on_shutdown() {
    let fake = FakeMisp::start().await;
    let e = fake.add_event("E", 1, &[]);
    fake.add_at(e, "ip-dst", "6.6.6.6", true, now() - 60);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(&fake, dir.path()).misp;
    cfg.interval = Some(Duration::from_secs(1));
    let source = MispSource::new(&Valid::new(cfg).expect("valid")).expect("source");
    let state = iocsync::state::State::open(&dir.path().join("state")).expect("state");
    let (tx, mut rx) = mpsc::channel(64);
    let (_committed, committed_rx) = watch::channel(None);
    let shutdown = CancellationToken::new();
    let ctx = SourceContext {
        start: None,
        events: tx,
        committed: committed_rx,
        shutdown: shutdown.clone(),
        once: false,
        store: iocsync::sources::SourceStore::new(std::sync::Arc::new(std::sync::Mutex::new(
            state,
        ))),
        control: iocsync::control::Control::new("misp", true),
    };
    let started = std::time::Instant::now();
    let handle = tokio::spawn(Box::new(source).run(ctx));
    let mut run_ends = Vec::new();
    let mut objects = 0;
    while run_ends.len() < 2 {
        let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an event in time")
            .expect("source running");
        match ev.kind {
            EventKind::RunEnd => run_ends.push(ev.position.expect("RunEnd carries the mark")),
            _ => {
                assert_eq!(ev.position, None, "events inside a run carry no position");
                objects += 1;
            }
        }
    }
    assert_eq!(
        objects, 1,
        "the second run starts from the first one's start"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    let marks: Vec<Mark> = run_ends.iter().filter_map(|p| Mark::parse(p)).collect();
    assert_eq!(marks.len(), 2);
    assert!(marks[1].last_run > marks[0].last_run, "{marks:?}");
    shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .expect("stops after shutdown")
        .expect("no panic");
    assert!(result.is_ok(), "{result:?}");
}

/// A config whose fake MISP runs on its own frozen clock (no sleeping: tests move the clock).
fn clocked(fake: &FakeMisp, dir: &Path) -> (Config, i64) {
    let t0 = now();
    fake.set_clock(t0);
    (config(fake, dir), t0)
}

fn pages_of(searches: &[serde_json::Value]) -> Vec<i64> {
    searches.iter().filter_map(|b| b["page"].as_i64()).collect()
}

#[tokio::test]
async fn a_short_page_in_the_middle_of_an_incremental_poll_does_not_end_it() {
    let fake = FakeMisp::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut cfg, t0) = clocked(&fake, dir.path());
    cfg.misp.page_size = 2;
    let e = fake.add_event("Feed", 1, &[]);
    fake.add_at(e, "ip-dst", "10.0.0.1", true, t0 - 60);
    run_ok(&cfg).await;

    // Five changes after the first run; the second is on the warninglist, which MISP applies after
    // the LIMIT: page 1 comes back with one row although two more pages follow.
    fake.advance_clock(10);
    fake.add(e, "domain", "a.example", true);
    fake.add(e, "ip-dst", "8.8.8.8", true);
    fake.add_warninglist_value("8.8.8.8");
    for d in ["b.example", "c.example", "d.example"] {
        fake.add(e, "domain", d, true);
    }
    fake.clear_journal();
    let stats = run_ok(&cfg).await;
    assert_eq!(
        live(dir.path()),
        set(&[
            ("ipv4", "10.0.0.1"),
            ("domain", "a.example"),
            ("domain", "b.example"),
            ("domain", "c.example"),
            ("domain", "d.example"),
        ])
    );
    assert_eq!(stats.received, 4, "{stats:?}");
    let searches = fake.searches();
    // Short pages (1 row, then 2, then 1) do not end the poll: only the empty fourth page does.
    assert_eq!(pages_of(&searches), [1, 2, 3, 4]);
    for b in &searches {
        assert_eq!(b["order"], "Attribute.id ASC", "{b}");
    }
}

#[tokio::test]
async fn a_resync_reads_past_short_pages_and_removes_only_what_misp_dropped() {
    let fake = FakeMisp::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut cfg, t0) = clocked(&fake, dir.path());
    cfg.misp.page_size = 2;
    cfg.misp.resync_interval = Duration::from_secs(1);
    let e = fake.add_event("Feed", 1, &[]);
    fake.add_at(e, "ip-dst", "10.0.0.1", true, t0 - 60);
    fake.add_at(e, "ip-dst", "8.8.8.8", true, t0 - 60);
    let mut last = String::new();
    for i in 2..=6 {
        last = fake.add_at(e, "ip-dst", &format!("10.0.0.{i}"), true, t0 - 60);
    }
    run_ok(&cfg).await;
    assert_eq!(live(dir.path()).len(), 7);

    // 8.8.8.8 lands on a warninglist (so the listing's first page is short) and the last
    // attribute is hard-deleted: the resync must remove exactly those two.
    fake.add_warninglist_value("8.8.8.8");
    fake.hard_delete(&last);
    fake.advance_clock(5);
    let stats = run_ok(&cfg).await;
    let expected: Vec<(String, String)> = (1..=5)
        .map(|i| ("ipv4".to_string(), format!("10.0.0.{i}")))
        .collect();
    assert_eq!(live(dir.path()), expected.into_iter().collect());
    let deleted: u64 = stats.sinks["jsonl"].deleted.values().sum();
    assert_eq!(deleted, 2, "{stats:?}");
}

#[tokio::test]
async fn a_failed_resync_page_removes_nothing_and_the_resync_is_retried() {
    let fake = FakeMisp::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut cfg, t0) = clocked(&fake, dir.path());
    cfg.misp.page_size = 2;
    cfg.misp.request_attempts = 2;
    cfg.misp.resync_interval = Duration::from_secs(1);
    let e = fake.add_event("Feed", 1, &[]);
    let gone = fake.add_at(e, "domain", "gone.example", true, t0 - 60);
    for i in 1..=5 {
        fake.add_at(e, "domain", &format!("d{i}.example"), true, t0 - 60);
    }
    run_ok(&cfg).await;
    let first = mark(dir.path()).expect("mark");
    fake.hard_delete(&gone);

    // The resync's listing (deleted = 0) fails from its second page on; the incremental poll works.
    fake.fail_searches(Some(Box::new(|body: &serde_json::Value| {
        (body["deleted"] == 0 && body["page"].as_i64() >= Some(2)).then_some(503)
    })));
    fake.advance_clock(5);
    let stats = run_ok(&cfg).await;
    assert_eq!(
        stats.received, 0,
        "nothing removed, nothing re-added: {stats:?}"
    );
    assert_eq!(
        live(dir.path()).len(),
        6,
        "a failed listing removes nothing"
    );
    let second = mark(dir.path()).expect("mark");
    assert!(second.last_run > first.last_run, "{second:?}");
    assert_eq!(
        second.last_resync, first.last_resync,
        "the failed resync is still due"
    );

    fake.fail_searches(None);
    fake.advance_clock(5);
    let stats = run_ok(&cfg).await;
    assert_eq!(stats.received, 1, "{stats:?}");
    assert!(!live(dir.path()).contains(&("domain".to_string(), "gone.example".to_string())));
    assert_eq!(live(dir.path()).len(), 5);
    let third = mark(dir.path()).expect("mark");
    assert_eq!(third.last_resync, Some(third.last_run));
}

#[tokio::test]
async fn edits_during_a_poll_under_faults_reach_the_sink_on_the_next_poll() {
    use misp_fake::Failure;
    let fake = FakeMisp::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut cfg, t0) = clocked(&fake, dir.path());
    cfg.misp.page_size = 3;
    cfg.misp.request_attempts = 10;
    fake.fail_scattered(Some((
        3,
        &[
            Failure::Status(503),
            Failure::RateLimit(None),
            Failure::Reset,
        ],
    )));
    let e = fake.add_event("Campaign", 1, &[]);
    let a: Vec<String> = (1..=8)
        .map(|i| fake.add_at(e, "ip-dst", &format!("10.0.1.{i}"), true, t0 - 60))
        .collect();
    run_ok(&cfg).await;
    assert_eq!(live(dir.path()).len(), 8);

    // Round 2: edits in the seconds before the poll, then more while its first page is answered.
    fake.advance_clock(3);
    fake.modify(&a[1], |x| x.value = "10.0.2.2".into());
    fake.advance_clock(1);
    fake.modify(&a[4], |x| x.to_ids = false);
    fake.advance_clock(1);
    fake.add(e, "domain", "new1.example", true);
    fake.advance_clock(1);
    fake.modify(&a[2], |x| x.value = "10.0.2.3".into());
    fake.advance_clock(4);
    fake.during_page(1, {
        let a = a.clone();
        move |m| {
            // Read on page 1 a moment ago; edited again in the same second.
            m.modify(&a[1], |x| x.to_ids = false);
            m.soft_delete(&a[0], true);
            m.modify(&a[6], |x| x.value = "10.0.2.7".into());
        }
    });
    run_ok(&cfg).await;
    assert!(fake.hooks_done());

    // Round 3: the next poll must see every edit, whichever pages were retried.
    fake.advance_clock(5);
    run_ok(&cfg).await;
    let round3 = set(&[
        ("ipv4", "10.0.2.3"),
        ("ipv4", "10.0.1.4"),
        ("ipv4", "10.0.1.6"),
        ("ipv4", "10.0.2.7"),
        ("ipv4", "10.0.1.8"),
        ("domain", "new1.example"),
    ]);
    assert_eq!(live(dir.path()), round3);

    // Round 4: an attribute changed just before the poll and again, in the same second, while the
    // (slow) page that carried it was being answered: the answer is dated one second later.
    fake.advance_clock(5);
    fake.modify(&a[3], |x| x.value = "10.0.2.4".into());
    fake.during_page(1, {
        let a3 = a[3].clone();
        move |m| {
            m.modify(&a3, |x| x.to_ids = false);
            m.advance_clock(1);
        }
    });
    run_ok(&cfg).await;
    assert!(fake.hooks_done());
    fake.advance_clock(5);
    run_ok(&cfg).await;
    let round4 = set(&[
        ("ipv4", "10.0.2.3"),
        ("ipv4", "10.0.1.6"),
        ("ipv4", "10.0.2.7"),
        ("ipv4", "10.0.1.8"),
        ("domain", "new1.example"),
    ]);
    assert_eq!(live(dir.path()), round4);
    // And the poll after that has nothing new to read.
    fake.advance_clock(5);
    let stats = run_ok(&cfg).await;
    assert_eq!(stats.received, 0, "{stats:?}");
}
