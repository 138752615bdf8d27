//! Operator control of a running daemon, in process through `app::run`: a file run paused midway
//! and resumed lands exactly what an unpaused run lands (nothing lost, nothing twice); shutdown
//! while paused returns promptly and the next run completes the set; MISP's "run now" polls at once
//! despite a long schedule; each recorded run keeps its log lines (bounded).

mod common;
#[path = "fakes/misp.rs"]
mod misp_fake;

use common::{fixture, jsonl_live_set, read_expected, read_jsonl};
use iocsync::app::{self, RunOptions};
use iocsync::config::{Config, FileConfig, PipelineConfig, StateConfig};
use iocsync::control::{Control, RunRequest};
use iocsync::logring::LogRing;
use iocsync::pipeline::{RunStats, RUN_LOG_LINES};
use iocsync::secret::Secret;
use iocsync::sinks::jsonl::JsonlConfig;
use iocsync::sources::misp::MispConfig;
use iocsync::state::State;
use misp_fake::{now, FakeMisp, KEY};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Every log line of this test binary goes to the global ring, as the daemon's do.
fn log_to_ring() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new("info,iocsync=debug"))
            .with(iocsync::logring::layer())
            .init();
    });
}

fn jsonl_path(dir: &Path) -> PathBuf {
    dir.join("out/iocs.jsonl")
}

/// The shipped OpenCTI capture through the file source into JSONL, in small batches so that the
/// run lasts long enough to be paused midway.
fn file_config(dir: &Path) -> Config {
    Config {
        source: Some("file".into()),
        file: FileConfig {
            path: Some(fixture("opencti/stream.sse")),
        },
        jsonl: JsonlConfig {
            path: Some(jsonl_path(dir)),
            ..JsonlConfig::default()
        },
        state: StateConfig {
            dir: dir.join("state"),
        },
        pipeline: PipelineConfig {
            batch_events: 16,
            linger: Duration::ZERO,
            ..PipelineConfig::default()
        },
        ..Config::default()
    }
}

fn lines(dir: &Path) -> usize {
    std::fs::read_to_string(jsonl_path(dir))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

async fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits for the pipeline's "paused" line logged after `from`.
async fn wait_paused_line(from: u64) {
    wait_until("the pipeline to pause", Duration::from_secs(30), || {
        LogRing::global()
            .since(from, usize::MAX)
            .iter()
            .any(|l| l.message.starts_with("paused by operator"))
    })
    .await;
}

fn spawn_run(
    cfg: &Config,
    control: &Control,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<Result<RunStats, app::AppError>> {
    let cfg = cfg.clone();
    let opts = RunOptions {
        once: false,
        control: Some(control.clone()),
        state_only: false,
    };
    let shutdown = shutdown.clone();
    tokio::spawn(async move { app::run(&cfg, opts, shutdown).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_and_resumed_file_run_lands_exactly_what_an_unpaused_run_lands() {
    log_to_ring();
    let plain = tempfile::tempdir().expect("tempdir");
    let plain_stats = app::run(
        &file_config(plain.path()),
        RunOptions::default(),
        CancellationToken::new(),
    )
    .await
    .expect("unpaused run");
    assert!(plain_stats.balanced(), "{plain_stats:?}");
    let expected = read_expected(&fixture("opencti/expected-live.tsv"));
    assert_eq!(
        jsonl_live_set(&read_jsonl(&jsonl_path(plain.path()))),
        expected
    );
    let plain_records = lines(plain.path());

    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = file_config(dir.path());
    let control = Control::new("file", false);
    assert!(matches!(control.request_run(), RunRequest::NotSupported(_)));
    let from = LogRing::global().next_seq();
    let run = spawn_run(&cfg, &control, &CancellationToken::new());
    wait_until("the first records", Duration::from_secs(30), || {
        lines(dir.path()) > 0
    })
    .await;
    control.pause();
    wait_paused_line(from).await;
    assert!(control.snapshot().paused);
    // Paused: nothing more reaches the sink, and the run does not end.
    let at_pause = lines(dir.path());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(lines(dir.path()), at_pause, "records written while paused");
    assert!(!run.is_finished(), "the run ended while paused");
    assert!(at_pause < plain_records, "the run was not paused midway");
    // The batch in flight was checkpointed before the pause.
    let state = State::open_read_only(&dir.path().join("state"))
        .expect("state")
        .expect("exists");
    assert!(state.checkpoint("file").expect("checkpoint").is_some());
    drop(state);

    control.resume();
    let stats = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the resumed run ends")
        .expect("task")
        .expect("resumed run");
    assert!(stats.balanced(), "{stats:?}");
    // Every event was taken exactly once and had the same outcome. (The records themselves may
    // differ: where the batch boundaries fall decides whether two changes of a value in a row are
    // merged, and they move with timing in any run.)
    assert_eq!(
        (
            stats.received,
            &stats.skipped,
            stats.applied,
            stats.dead_lettered
        ),
        (
            plain_stats.received,
            &plain_stats.skipped,
            plain_stats.applied,
            plain_stats.dead_lettered
        ),
        "paused run's outcomes differ"
    );
    assert_eq!(stats.pending, 0);
    // `jsonl_live_set` also fails on a value created twice without a delete between.
    assert_eq!(
        jsonl_live_set(&read_jsonl(&jsonl_path(dir.path()))),
        expected
    );
    let log = LogRing::global().since(from, usize::MAX);
    assert!(log.iter().any(|l| l
        .message
        .starts_with("resumed: continuing from the checkpoint")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_while_paused_returns_promptly_and_nothing_is_lost() {
    log_to_ring();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = file_config(dir.path());
    let control = Control::new("file", false);
    let shutdown = CancellationToken::new();
    let from = LogRing::global().next_seq();
    let run = spawn_run(&cfg, &control, &shutdown);
    wait_until("the first records", Duration::from_secs(30), || {
        lines(dir.path()) > 0
    })
    .await;
    control.pause();
    wait_paused_line(from).await;
    let asked = Instant::now();
    shutdown.cancel();
    let stats = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("shutdown while paused returns promptly")
        .expect("task")
        .expect("a requested shutdown is a success");
    assert!(asked.elapsed() < Duration::from_secs(5));
    assert!(stats.balanced(), "{stats:?}");

    // The next run (unpaused) continues from the checkpoint and completes the set exactly.
    app::run(&cfg, RunOptions::default(), CancellationToken::new())
        .await
        .expect("second run");
    assert_eq!(
        jsonl_live_set(&read_jsonl(&jsonl_path(dir.path()))),
        read_expected(&fixture("opencti/expected-live.tsv"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_recorded_run_keeps_its_last_log_lines() {
    log_to_ring();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = file_config(dir.path());
    let from = LogRing::global().next_seq();
    app::run(&cfg, RunOptions::default(), CancellationToken::new())
        .await
        .expect("run");
    let logged = LogRing::global().next_seq() - from;
    let state = State::open(&dir.path().join("state")).expect("state");
    let runs = state.runs().expect("runs");
    assert_eq!(runs.len(), 1);
    let log = state.run_log(runs[0].id).expect("run log");
    // The capture makes the pipeline log well over the bound (a debug line per batch).
    assert!(logged > RUN_LOG_LINES as u64, "only {logged} lines logged");
    assert_eq!(log.len(), RUN_LOG_LINES, "bounded to the run's last lines");
    assert!(log.windows(2).all(|w| w[0].seq < w[1].seq), "in order");
    assert!(log.iter().all(|l| l.seq >= from));
    let last = log.last().expect("a line");
    assert!(
        log.iter()
            .rev()
            .take(50)
            .any(|l| l.message.starts_with("run finished") && l.message.contains("source=file")),
        "the run's summary line is in its log; last: {last:?}"
    );
    assert!(state
        .run_log(runs[0].id + 1)
        .expect("unknown run")
        .is_empty());
}

fn misp_config(fake: &FakeMisp, dir: &Path) -> Config {
    Config {
        source: Some("misp".into()),
        misp: MispConfig {
            url: Some(format!("{}/", fake.url())),
            key: Some(Secret::new(KEY)),
            request_attempts: 3,
            timeout: Duration::from_secs(10),
            interval: Some(Duration::from_secs(24 * 3600)),
            ..MispConfig::default()
        },
        jsonl: JsonlConfig {
            path: Some(jsonl_path(dir)),
            ..JsonlConfig::default()
        },
        state: StateConfig {
            dir: dir.join("state"),
        },
        pipeline: PipelineConfig {
            linger: Duration::from_millis(10),
            ..PipelineConfig::default()
        },
        ..Config::default()
    }
}

fn has_value(dir: &Path, value: &str) -> bool {
    read_jsonl(&jsonl_path(dir))
        .iter()
        .any(|r| r.value == value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misp_run_now_polls_at_once_despite_a_long_schedule() {
    log_to_ring();
    let fake = FakeMisp::start().await;
    let e = fake.add_event("E", 1, &[]);
    fake.add_at(e, "ip-dst", "6.6.6.6", true, now() - 60);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = misp_config(&fake, dir.path());
    let control = Control::new("misp", true);
    let shutdown = CancellationToken::new();
    let run = spawn_run(&cfg, &control, &shutdown);

    // The first run happens at start; then the next is a day away.
    wait_until("the first run", Duration::from_secs(30), || {
        let snap = control.snapshot();
        has_value(dir.path(), "6.6.6.6") && !snap.run_in_progress && snap.next_run.is_some()
    })
    .await;
    let next = control.snapshot().next_run.expect("scheduled");
    assert!(
        next > chrono::Utc::now() + chrono::Duration::hours(23),
        "{next}"
    );

    fake.add(e, "ip-dst", "7.7.7.7", true);
    let asked = Instant::now();
    assert_eq!(control.request_run(), RunRequest::Accepted);
    wait_until("the requested run", Duration::from_secs(10), || {
        has_value(dir.path(), "7.7.7.7")
    })
    .await;
    assert!(asked.elapsed() < Duration::from_secs(10));
    wait_until("the requested run to end", Duration::from_secs(10), || {
        !control.snapshot().run_in_progress
    })
    .await;
    let state = State::open_read_only(&dir.path().join("state"))
        .expect("state")
        .expect("exists");
    assert_eq!(state.runs().expect("runs").len(), 2, "one run per poll");
    drop(state);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("stops")
        .expect("task")
        .expect("daemon run");
}
