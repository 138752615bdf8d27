//! `OpenCtiSource::run` against the fake OpenCTI (real SSE and GraphQL over TCP): event kinds and
//! positions, resume ids across drops, stalls and restarts, `recover`, auth and stopped streams,
//! registration and pings, the operator's reset, and `--once`.

#[path = "fakes/opencti.rs"]
mod opencti_fake;

use iocsync::config::{ConfigError, Valid};
use iocsync::model::{EventKind, Payload, SourceEvent};
use iocsync::secret::Secret;
use iocsync::sources::opencti::{ConnectorConfig, OpenCtiConfig, OpenCtiSource};
use iocsync::sources::{Source, SourceContext, SourceError, SourceStore};
use iocsync::state::State;
use opencti_fake::{indicator, FakeOpenCti, BASE_MS};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "tok-5ecret-value";
const CONNECTOR_ID: &str = "5f1d9a4e-8d8b-4a6f-9b57-3b0d2c9a1e11";
const WAIT: Duration = Duration::from_secs(5);

/// A fake with 100 ms heartbeats (well under the tests' 400 ms watchdog).
async fn start_fake() -> FakeOpenCti {
    let f = FakeOpenCti::start(TOKEN).await;
    f.set_heartbeat(Duration::from_millis(100));
    f
}

fn configs(fake: &FakeOpenCti) -> (OpenCtiConfig, ConnectorConfig) {
    let o = OpenCtiConfig {
        url: Some(format!("{}/", fake.url)),
        token: Some(Secret::new(TOKEN)),
        stream_timeout: Duration::from_millis(400),
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(200),
        ping_interval: Duration::from_millis(100),
        progress_interval: Duration::from_millis(100),
        request_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let c = ConnectorConfig {
        id: Some(CONNECTOR_ID.into()),
        name: Some("iocsync test".into()),
        scope: Some("sentinelone,sekoia".into()),
        live_stream_id: Some("stream-1".into()),
        // Most tests read the history as is; the recover replay has its own test.
        live_stream_recover_iso_date: Some("no".into()),
        ..Default::default()
    };
    (o, c)
}

/// The source of two sections, validated as the loader does.
fn build_source(o: &OpenCtiConfig, c: &ConnectorConfig) -> OpenCtiSource {
    let o = Valid::new(o.clone()).expect("valid opencti section");
    let c = Valid::new(c.clone()).expect("valid connector section");
    OpenCtiSource::new(&o, &c).expect("source")
}

struct Run {
    events: mpsc::Receiver<SourceEvent>,
    committed: watch::Sender<Option<String>>,
    shutdown: CancellationToken,
    handle: JoinHandle<Result<(), SourceError>>,
}

/// A state for the source's notes (the OpenCTI source keeps none), in a directory left behind.
fn scratch_store() -> SourceStore {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let state = State::open(&dir).expect("state");
    SourceStore::new(std::sync::Arc::new(std::sync::Mutex::new(state)))
}

impl Run {
    fn start(o: &OpenCtiConfig, c: &ConnectorConfig, start: Option<&str>, once: bool) -> Run {
        let source = build_source(o, c);
        let (tx, events) = mpsc::channel(16);
        let (committed, committed_rx) = watch::channel(start.map(str::to_string));
        let shutdown = CancellationToken::new();
        let ctx = SourceContext {
            start: start.map(str::to_string),
            events: tx,
            committed: committed_rx,
            shutdown: shutdown.clone(),
            once,
            store: scratch_store(),
            control: iocsync::control::Control::new("opencti", false),
        };
        let handle = tokio::spawn(Box::new(source).run(ctx));
        Run {
            events,
            committed,
            shutdown,
            handle,
        }
    }

    async fn next(&mut self) -> SourceEvent {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("an event in time")
            .expect("source still running")
    }

    /// The next event that is not a heartbeat.
    async fn next_object(&mut self) -> SourceEvent {
        loop {
            let ev = self.next().await;
            if ev.kind != EventKind::Heartbeat {
                return ev;
            }
        }
    }

    async fn stop(self) -> Result<(), SourceError> {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.handle)
            .await
            .expect("run returns after shutdown")
            .expect("run did not panic")
    }
}

fn stix_id(ev: &SourceEvent) -> String {
    match &ev.payload {
        Payload::Stix(v) => v["id"].as_str().unwrap_or_default().to_string(),
        other => panic!("expected a STIX payload, got {other:?}"),
    }
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn push_four(fake: &FakeOpenCti) -> Vec<String> {
    vec![
        fake.push("create", indicator(1)),
        fake.push("update", indicator(1)),
        fake.push("merge", indicator(2)),
        fake.push("delete", indicator(2)),
    ]
}

#[tokio::test]
async fn events_arrive_in_order_with_kinds_positions_and_headers() {
    let fake = start_fake().await;
    let ids = push_four(&fake);
    let (o, c) = configs(&fake);
    let mut run = Run::start(&o, &c, None, false);
    let kinds = [
        EventKind::Create,
        EventKind::Update,
        EventKind::Update,
        EventKind::Delete,
    ];
    for (id, kind) in ids.iter().zip(kinds) {
        let ev = run.next_object().await;
        assert_eq!(ev.kind, kind);
        assert_eq!(ev.position.as_deref(), Some(id.as_str()));
    }
    // Idle: heartbeats carry the last id as their position.
    let hb = run.next().await;
    assert_eq!(hb.kind, EventKind::Heartbeat);
    assert_eq!(hb.position.as_deref(), Some(ids[3].as_str()));
    assert!(matches!(hb.payload, Payload::None));
    run.stop().await.expect("clean stop");

    let req = &fake.stream_requests()[0];
    assert_eq!(
        req.path, "/stream/stream-1",
        "no double slash from the trailing `/`"
    );
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(req.header("accept"), Some("text/event-stream"));
    assert_eq!(req.header("last-event-id"), Some("0-0"));
    assert_eq!(req.header("listen-delete"), Some("true"));
    assert_eq!(req.header("no-dependencies"), Some("true"));
    assert_eq!(req.header("with-inferences"), Some("false"));
    assert_eq!(req.query_param("recover"), None, "recover disabled by `no`");
}

#[tokio::test]
async fn unknown_topics_and_malformed_data_keep_their_positions() {
    let fake = start_fake().await;
    let good = fake.push("create", indicator(1));
    let other = format!("{}-0", BASE_MS + 10);
    let bad_json = format!("{}-0", BASE_MS + 11);
    let no_data = format!("{}-0", BASE_MS + 12);
    fake.push_raw(&other, "no-recover", "{}");
    fake.push_raw(&bad_json, "create", "{not json");
    fake.push_raw(&no_data, "update", r#"{"version":"4","type":"update"}"#);
    let (o, c) = configs(&fake);
    let mut run = Run::start(&o, &c, None, false);
    assert_eq!(
        run.next_object().await.position.as_deref(),
        Some(good.as_str())
    );
    let ev = run.next_object().await;
    assert_eq!(
        (ev.kind, ev.position.as_deref()),
        (EventKind::Other, Some(other.as_str()))
    );
    for expected in [&bad_json, &no_data] {
        let ev = run.next_object().await;
        assert_eq!(ev.position.as_deref(), Some(expected.as_str()));
        assert!(
            matches!(ev.payload, Payload::Malformed { .. }),
            "{:?}",
            ev.payload
        );
    }
    run.stop().await.expect("clean stop");
}

#[tokio::test]
async fn dropped_connections_resume_from_the_last_emitted_id() {
    let fake = start_fake().await;
    let ids: Vec<String> = (0..10).map(|n| fake.push("create", indicator(n))).collect();
    fake.drop_every(Some(3));
    let (o, c) = configs(&fake);
    let mut run = Run::start(&o, &c, None, false);
    let mut got = Vec::new();
    while got.len() < ids.len() {
        got.push(run.next_object().await.position.expect("position"));
    }
    assert_eq!(got, ids, "every event once, in order");
    run.stop().await.expect("clean stop");
    let resumes = fake.last_event_ids();
    assert_eq!(
        resumes[..4],
        [
            Some("0-0".to_string()),
            Some(ids[2].clone()),
            Some(ids[5].clone()),
            Some(ids[8].clone())
        ]
    );
}

#[tokio::test]
async fn a_restart_resumes_from_the_checkpoint() {
    let fake = start_fake().await;
    let ids = push_four(&fake);
    fake.set_connector_state(
        CONNECTOR_ID,
        &json!({"start_from": ids[1], "recover_until": false}).to_string(),
    );
    let (o, mut c) = configs(&fake);
    c.live_stream_recover_iso_date = None; // a restart must not replay even with recover on
    let mut run = Run::start(&o, &c, Some(&ids[1]), false);
    let first = run.next_object().await;
    assert_eq!(first.position.as_deref(), Some(ids[2].as_str()));
    run.stop().await.expect("clean stop");
    let req = &fake.stream_requests()[0];
    assert_eq!(req.header("last-event-id"), Some(ids[1].as_str()));
    assert_eq!(req.query_param("recover"), None);
}

#[tokio::test]
async fn a_first_run_recovers_the_current_state_per_config() {
    let fake = start_fake().await;
    let a_update = {
        fake.push("create", indicator(1));
        fake.push("update", indicator(1))
    };
    fake.push("create", indicator(2));
    fake.push("delete", indicator(2));
    let (o, mut c) = configs(&fake);
    c.live_stream_recover_iso_date = None; // default: recover up to now
    let mut run = Run::start(&o, &c, None, false);
    let ev = run.next_object().await;
    assert_eq!(
        ev.kind,
        EventKind::Create,
        "the replay sends the current state"
    );
    assert_eq!(ev.position.as_deref(), Some(a_update.as_str()));
    assert_eq!(stix_id(&ev), indicator(1)["id"]);
    // Live events follow the replay (ids after the recover date).
    let later = format!("{}-0", chrono::Utc::now().timestamp_millis() + 60_000);
    let data = opencti_fake::envelope("create", indicator(3)).to_string();
    fake.push_raw(&later, "create", &data);
    let ev = run.next_object().await;
    assert_eq!(
        ev.position.as_deref(),
        Some(later.as_str()),
        "deleted B not replayed"
    );
    run.stop().await.expect("clean stop");
    let req = &fake.stream_requests()[0];
    assert_eq!(
        req.header("last-event-id"),
        Some("0-0"),
        "recover needs a start"
    );
    let recover = req.query_param("recover").expect("recover param");
    let when = chrono::DateTime::parse_from_rfc3339(&recover).expect("ISO date");
    assert!((chrono::Utc::now() - when.with_timezone(&chrono::Utc)).num_seconds() < 60);

    // A start timestamp (ms) is the first run's start id; `false` disables the replay.
    let fake = start_fake().await;
    let ids = push_four(&fake);
    let (o, mut c) = configs(&fake);
    c.live_stream_start_timestamp = Some((BASE_MS + 2).to_string());
    c.live_stream_recover_iso_date = Some("false".into());
    let mut run = Run::start(&o, &c, None, false);
    assert_eq!(
        run.next_object().await.position.as_deref(),
        Some(ids[3].as_str())
    );
    run.stop().await.expect("clean stop");
    let req = &fake.stream_requests()[0];
    assert_eq!(
        req.header("last-event-id"),
        Some(format!("{}-0", BASE_MS + 2).as_str())
    );
    assert_eq!(req.query_param("recover"), None);
}

#[tokio::test]
async fn deletes_are_omitted_when_listen_delete_is_off() {
    let fake = start_fake().await;
    let ids = push_four(&fake);
    let (o, mut c) = configs(&fake);
    c.live_stream_listen_delete = false;
    let mut run = Run::start(&o, &c, None, false);
    for id in &ids[..3] {
        assert_eq!(
            run.next_object().await.position.as_deref(),
            Some(id.as_str())
        );
    }
    // The next message is a heartbeat already past the omitted delete.
    let hb = run.next().await;
    assert_eq!(hb.kind, EventKind::Heartbeat);
    assert_eq!(hb.position.as_deref(), Some(ids[3].as_str()));
    run.stop().await.expect("clean stop");
    assert_eq!(
        fake.stream_requests()[0].header("listen-delete"),
        Some("false")
    );
}

#[tokio::test]
async fn a_stalled_connection_is_replaced_by_the_watchdog() {
    let fake = start_fake().await;
    let ids: Vec<String> = (0..5).map(|n| fake.push("create", indicator(n))).collect();
    fake.stall_next_connection_after(2);
    let (o, c) = configs(&fake);
    let started = Instant::now();
    let mut run = Run::start(&o, &c, None, false);
    let mut got = Vec::new();
    while got.len() < ids.len() {
        got.push(run.next_object().await.position.expect("position"));
    }
    assert_eq!(got, ids);
    assert!(
        started.elapsed() >= o.stream_timeout,
        "reconnected only after the timeout"
    );
    run.stop().await.expect("clean stop");
    assert_eq!(
        fake.last_event_ids()[..2],
        [Some("0-0".to_string()), Some(ids[1].clone())]
    );
}

/// A stream that never sends a byte (not even the `connected` frame or a heartbeat) is dropped
/// by the watchdog (`opencti.stream_timeout`, 400 ms here, instead of 45 s) and reconnected,
/// again and again, until the server speaks; nothing is lost meanwhile.
#[tokio::test]
async fn a_stream_silent_from_the_start_is_reconnected_by_the_watchdog() {
    let fake = start_fake().await;
    let id = fake.push("create", indicator(1));
    fake.set_stalled(true);
    let (o, c) = configs(&fake);
    let started = Instant::now();
    let mut run = Run::start(&o, &c, None, false);
    while fake.stream_requests().len() < 3 {
        assert!(started.elapsed() < WAIT, "the watchdog never fired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        started.elapsed() >= o.stream_timeout * 2,
        "two silent connections were each given the full watchdog time"
    );
    fake.set_stalled(false);
    assert_eq!(run.next_object().await.position, Some(id));
    run.stop().await.expect("clean stop");
}

#[tokio::test]
async fn every_graphql_auth_code_is_an_auth_error() {
    let fake = start_fake().await;
    let (o, c) = configs(&fake);
    let source = build_source(&o, &c);
    for code in ["AUTH_FAILURE", "OTP_REQUIRED", "OTP_REQUIRED_ACTIVATION"] {
        fake.graphql_auth_error(Some(code));
        let err = source.check().await.expect_err("check fails");
        assert!(matches!(err, SourceError::Auth { .. }), "{code}: {err:?}");
        if code.starts_with("OTP") {
            assert!(err.to_string().contains("two-factor"), "{err}");
        }
    }
    fake.graphql_auth_error(None);
    source.check().await.expect("accepted again");
}

#[tokio::test]
async fn a_bad_token_is_an_auth_error_that_never_shows_the_token() {
    let fake = FakeOpenCti::start("the-right-token").await;
    let (o, c) = configs(&fake);
    let source = build_source(&o, &c);
    let err = source.check().await.expect_err("check fails");
    assert!(matches!(err, SourceError::Auth { .. }), "{err:?}");
    let run = Run::start(&o, &c, None, false);
    let err = tokio::time::timeout(WAIT, run.handle)
        .await
        .expect("fails fast")
        .expect("no panic")
        .expect_err("run fails");
    assert!(matches!(err, SourceError::Auth { .. }), "{err:?}");
    let text = format!("{err} {err:?}");
    assert!(text.contains("logged in"), "{text}");
    assert!(!text.contains(TOKEN), "token leaked: {text}");
    assert!(fake.stream_requests().is_empty());
}

#[tokio::test]
async fn a_refused_stream_is_retried_slowly() {
    let fake = start_fake().await;
    fake.push("create", indicator(1));
    fake.deny_stream(true);
    let (o, c) = configs(&fake);
    let mut run = Run::start(&o, &c, None, false);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let attempts = fake.stream_requests().len();
    // 401 waits reconnect_max (200 ms) × [0.75, 1]: about 5 attempts in 1 s, never dozens.
    assert!((2..=8).contains(&attempts), "{attempts} attempts in 1 s");
    fake.deny_stream(false);
    assert_eq!(run.next_object().await.kind, EventKind::Create, "recovers");
    run.stop().await.expect("clean stop");

    // In --once mode the refusal is the run's error, as what it is.
    fake.deny_stream(true);
    let run = Run::start(&o, &c, None, true);
    let err = tokio::time::timeout(WAIT, run.handle)
        .await
        .expect("returns")
        .expect("no panic")
        .expect_err("auth error");
    assert!(matches!(err, SourceError::Auth { .. }), "{err:?}");
    assert!(err.to_string().contains("401"), "{err}");
    assert!(!format!("{err:?}").contains(TOKEN));
}

#[tokio::test]
async fn a_stopped_stream_is_reported_as_stopped() {
    // At start: the stream lookup says it is stopped.
    let fake = start_fake().await;
    fake.stop_stream("stream-1");
    let (o, c) = configs(&fake);
    let run = Run::start(&o, &c, None, false);
    let err = run.handle.await.expect("no panic").expect_err("stopped");
    assert!(
        matches!(
            err,
            SourceError::Config {
                key: "connector.live_stream_id",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("stopped"), "{err}");

    // Mid-run: the reconnect gets 410.
    let fake = start_fake().await;
    let ids: Vec<String> = (0..3).map(|n| fake.push("create", indicator(n))).collect();
    fake.drop_every(Some(1));
    let (mut o, c) = configs(&fake);
    o.reconnect_min = Duration::from_millis(150);
    let mut run = Run::start(&o, &c, None, true);
    assert_eq!(
        run.next_object().await.position.as_deref(),
        Some(ids[0].as_str())
    );
    fake.stop_stream("stream-1");
    let err = tokio::time::timeout(WAIT, run.handle)
        .await
        .expect("returns")
        .expect("no panic")
        .expect_err("410");
    assert!(err.to_string().contains("410") && err.to_string().contains("stopped"));
}

#[tokio::test]
async fn registration_and_pings_carry_the_committed_position() {
    let fake = start_fake().await;
    let ids = push_four(&fake);
    let (o, c) = configs(&fake);
    let mut run = Run::start(&o, &c, None, false);
    run.next_object().await;
    let calls = fake.graphql_calls();
    let ops: Vec<&str> = calls.iter().map(|c| c.operation.as_str()).collect();
    assert_eq!(ops[..3], ["about", "streamCollection", "registerConnector"]);
    let input = &calls[2].variables["input"];
    assert_eq!(input["id"], CONNECTOR_ID);
    assert_eq!(input["type"], "STREAM");
    assert_eq!(input["name"], "iocsync test");
    assert_eq!(input["scope"], json!(["sentinelone", "sekoia"]));
    // Before any checkpoint the ping reports the start.
    wait_for("a first ping", || !fake.pinged_states().is_empty()).await;
    assert_eq!(fake.pinged_states()[0]["start_from"], "0-0");
    assert_eq!(fake.pinged_states()[0]["recover_until"], false);
    run.committed.send_replace(Some(ids[1].clone()));
    wait_for("a ping with the committed position", || {
        fake.pinged_states()
            .iter()
            .any(|s| s["start_from"] == ids[1].as_str())
    })
    .await;
    run.committed.send_replace(Some(ids[2].clone()));
    let before = fake.pinged_states().len();
    run.stop().await.expect("clean stop");
    let states = fake.pinged_states();
    assert!(states.len() > before, "a final ping on shutdown");
    assert_eq!(states.last().expect("ping")["start_from"], ids[2].as_str());
    let stored = fake.connector_state(CONNECTOR_ID).expect("registered");
    assert!(stored.contains(&ids[2]), "{stored}");
}

#[tokio::test]
async fn a_remote_reset_replays_from_the_beginning() {
    let fake = start_fake().await;
    let ids = push_four(&fake);
    let (o, c) = configs(&fake);
    let mut run = Run::start(&o, &c, None, false);
    for id in &ids {
        assert_eq!(
            run.next_object().await.position.as_deref(),
            Some(id.as_str())
        );
    }
    run.committed.send_replace(Some(ids[3].clone()));
    wait_for("the checkpoint on the platform", || {
        fake.connector_state(CONNECTOR_ID)
            .is_some_and(|s| s.contains(&ids[3]))
    })
    .await;
    fake.reset_connector_state(CONNECTOR_ID);
    let ev = run.next_object().await;
    assert_eq!((ev.kind, ev.position.clone()), (EventKind::Reset, None));
    assert!(matches!(ev.payload, Payload::None));
    for id in &ids {
        assert_eq!(
            run.next_object().await.position.as_deref(),
            Some(id.as_str())
        );
    }
    // Until the pipeline commits again, the pings report the new start, not the stale checkpoint.
    wait_for("a ping after the reset", || {
        fake.connector_state(CONNECTOR_ID)
            .is_some_and(|s| s.contains("\"0-0\""))
    })
    .await;
    run.stop().await.expect("clean stop");
    let resumes = fake.last_event_ids();
    assert_eq!(resumes.last().cloned().flatten().as_deref(), Some("0-0"));
    assert_eq!(resumes.len(), 2, "exactly one restart");
}

#[tokio::test]
async fn an_empty_platform_state_at_start_resets_the_local_checkpoint() {
    let fake = start_fake().await;
    let ids = push_four(&fake);
    let (o, c) = configs(&fake);
    let mut run = Run::start(&o, &c, Some(&ids[2]), false);
    assert_eq!(run.next().await.kind, EventKind::Reset);
    assert_eq!(
        run.next_object().await.position.as_deref(),
        Some(ids[0].as_str())
    );
    run.stop().await.expect("clean stop");
    assert_eq!(fake.last_event_ids()[0].as_deref(), Some("0-0"));
    let resets = fake.graphql_calls();
    assert!(resets.iter().any(|c| c.operation == "pingConnector"));
}

#[tokio::test]
async fn an_unknown_or_placeholder_stream_is_a_config_error() {
    let fake = start_fake().await;
    let (o, mut c) = configs(&fake);
    c.live_stream_id = Some("no-such-stream".into());
    let source = build_source(&o, &c);
    let err = source.check().await.expect_err("unknown stream");
    assert!(
        matches!(
            err,
            SourceError::Config {
                key: "connector.live_stream_id",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("no-such-stream"), "{err}");
    let run = Run::start(&o, &c, None, false);
    assert!(matches!(
        run.handle.await.expect("no panic"),
        Err(SourceError::Config {
            key: "connector.live_stream_id",
            ..
        })
    ));

    c.live_stream_id = Some("ChangeMe".into());
    match Valid::new(c.clone()) {
        Err(ConfigError::Invalid(problems)) => {
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert_eq!(problems[0].key, "connector.live_stream_id");
            assert!(
                problems[0].message.contains("placeholder"),
                "{}",
                problems[0].message
            );
        }
        Ok(_) => panic!("a placeholder stream id must be refused"),
    }

    // `live` is not a collection: no lookup, straight to the stream.
    c.live_stream_id = Some("live".into());
    let source = build_source(&o, &c);
    let desc = source.check().await.expect("live needs no lookup");
    assert!(desc.contains("token accepted"), "{desc}");
}

#[tokio::test]
async fn once_mode_returns_when_caught_up() {
    let fake = start_fake().await;
    let ids = push_four(&fake);
    let (o, c) = configs(&fake);
    let mut run = Run::start(&o, &c, None, true);
    let mut got = Vec::new();
    while let Some(ev) = tokio::time::timeout(WAIT, run.events.recv())
        .await
        .expect("ends in time")
    {
        if ev.kind != EventKind::Heartbeat {
            got.push(ev.position.expect("position"));
        }
    }
    assert_eq!(got, ids);
    // The run's owner stops the source once the pipeline has drained the closed channel.
    run.shutdown.cancel();
    tokio::time::timeout(WAIT, run.handle)
        .await
        .expect("returned")
        .expect("no panic")
        .expect("ok");
    let last_ping = fake.pinged_states().pop().expect("final ping");
    assert_eq!(
        last_ping["start_from"], "0-0",
        "nothing committed in this test"
    );
}

#[tokio::test]
async fn a_deleted_connector_is_registered_again() {
    let fake = start_fake().await;
    let ids = push_four(&fake);
    let (o, c) = configs(&fake);
    let mut run = Run::start(&o, &c, None, false);
    run.next_object().await;
    run.committed.send_replace(Some(ids[0].clone()));
    fake.delete_connector(CONNECTOR_ID);
    wait_for("the position stored again", || {
        fake.connector_state(CONNECTOR_ID)
            .is_some_and(|s| s.contains(&ids[0]))
    })
    .await;
    let registrations = fake
        .graphql_calls()
        .iter()
        .filter(|c| c.operation == "registerConnector")
        .count();
    assert_eq!(registrations, 2);
    // Not a reset: no Reset event, the stream goes on.
    for id in &ids[1..] {
        assert_eq!(
            run.next_object().await.position.as_deref(),
            Some(id.as_str())
        );
    }
    run.stop().await.expect("clean stop");
}

#[tokio::test]
async fn an_sse_capture_loads_into_the_fake() {
    let fake = start_fake().await;
    let create = opencti_fake::envelope("create", indicator(7)).to_string();
    let capture = format!(
        "event: connected\r\ndata: {{\"lastEventId\":\"1-0\"}}\r\n\r\n\
         : a comment\n\
         id: {ms}-0\nevent: create\ndata: {create}\n\n\
         id: {ms}-0\nevent: heartbeat\ndata: \"2023-11-14T22:13:20.000Z\"\n\n\
         id: {ms}-1\r\nevent: update\r\ndata: {{\"version\":\"4\",\r\ndata: \"data\":{{\"id\":\"indicator--x\"}}}}\r\n\r\n",
        ms = BASE_MS
    );
    assert_eq!(
        fake.load_sse(&capture),
        2,
        "connected and heartbeat are not events"
    );
    let (o, c) = configs(&fake);
    let mut run = Run::start(&o, &c, None, false);
    let first = run.next_object().await;
    assert_eq!(stix_id(&first), indicator(7)["id"]);
    let second = run.next_object().await;
    assert_eq!(second.kind, EventKind::Update);
    assert_eq!(
        stix_id(&second),
        "indicator--x",
        "multi-line data joined with a newline"
    );
    run.stop().await.expect("clean stop");
}
