//! The commands behind the CLI: build the configured source and sinks, run the pipeline with signal
//! handling, probe endpoints, and read the state. `main.rs` parses arguments and calls these.

use crate::config::{Config, ConfigError, Problem, SourceKind};
use crate::model::SourceEvent;
use crate::pipeline::{Pipeline, PipelineError, RunMode, RunStats};
use crate::sinks::jsonl::JsonlSink;
use crate::sinks::sekoia::SekoiaSink;
use crate::sinks::sentinelone::SentinelOneSink;
use crate::sinks::zeek::ZeekSink;
use crate::sinks::{Sink, SinkError};
use crate::sources::file::FileSource;
use crate::sources::misp::MispSource;
use crate::sources::opencti::OpenCtiSource;
use crate::sources::{Source, SourceContext, SourceError};
use crate::state::State;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// A command failure, with the exit code interface.md promises.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Exit 2.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Exit 3: a remote refused our credential or access.
    #[error("{0}")]
    Auth(String),
    /// Exit 1.
    #[error("{0}")]
    Other(String),
}

impl AppError {
    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            AppError::Config(_) => 2,
            AppError::Auth(_) => 3,
            AppError::Other(_) => 1,
        }
    }

    fn problems(problems: Vec<Problem>) -> Self {
        AppError::Config(ConfigError::Invalid(problems))
    }
}

impl From<SinkError> for AppError {
    fn from(e: SinkError) -> Self {
        match e {
            SinkError::Auth { .. } | SinkError::Permission { .. } => AppError::Auth(e.to_string()),
            SinkError::Config { sink, key, message } => AppError::problems(vec![Problem {
                key: key.to_string(),
                message: format!("{sink}: {message}"),
            }]),
            other => AppError::Other(other.to_string()),
        }
    }
}

impl From<SourceError> for AppError {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::Auth { .. } => AppError::Auth(e.to_string()),
            SourceError::Config {
                source_name,
                key,
                message,
            } => AppError::problems(vec![Problem {
                key: key.to_string(),
                message: format!("{source_name}: {message}"),
            }]),
            SourceError::Other { .. } => AppError::Other(e.to_string()),
        }
    }
}

impl From<PipelineError> for AppError {
    fn from(e: PipelineError) -> Self {
        if e.is_auth() {
            AppError::Auth(e.to_string())
        } else {
            AppError::Other(e.to_string())
        }
    }
}

impl From<crate::state::StateError> for AppError {
    fn from(e: crate::state::StateError) -> Self {
        AppError::Other(e.to_string())
    }
}

/// Options of `iocsync run`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// One pass and exit.
    pub once: bool,
}

/// Validates without I/O; every problem becomes one line of the error.
pub fn validated(cfg: &Config) -> Result<SourceKind, AppError> {
    let problems = cfg.validate();
    if !problems.is_empty() {
        return Err(AppError::problems(problems));
    }
    cfg.source_kind().map_err(|p| AppError::problems(vec![p]))
}

/// The name sinks send as the IOC's source by default.
fn default_source_label(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::OpenCti | SourceKind::File => "OpenCTI",
        SourceKind::Misp => "MISP",
    }
}

/// The configured sinks, plus the ones that need a background task.
pub struct BuiltSinks {
    /// Every sink, in configuration order.
    pub sinks: Vec<Arc<dyn Sink>>,
    /// The Zeek sink, whose upkeep task (tombstone expiry, periodic rewrite) must run beside it.
    pub zeek: Option<Arc<ZeekSink>>,
}

/// Builds the configured sinks. `state` (when given) seeds counters a sink keeps, such as Sekoia's
/// quota count.
pub fn build_sinks(
    cfg: &Config,
    kind: SourceKind,
    state: Option<&State>,
) -> Result<BuiltSinks, AppError> {
    let names = cfg.sink_names().map_err(|p| AppError::problems(vec![p]))?;
    let mut sinks: Vec<Arc<dyn Sink>> = Vec::new();
    let mut zeek = None;
    for name in names {
        let sink: Arc<dyn Sink> = match name {
            "sentinelone" => Arc::new(SentinelOneSink::new(
                &cfg.sentinelone_intel,
                default_source_label(kind),
            )?),
            "sekoia" => {
                let sink = SekoiaSink::new(&cfg.sekoia_intel, default_source_label(kind))?;
                if let Some(state) = state {
                    sink.set_live_count(state.live_count("sekoia")?.max(0) as u64);
                }
                Arc::new(sink)
            }
            "zeek" => {
                let sink = Arc::new(ZeekSink::new(&cfg.zeek)?);
                zeek = Some(Arc::clone(&sink));
                sink
            }
            "jsonl" => Arc::new(JsonlSink::new(&cfg.jsonl)?),
            other => {
                return Err(AppError::problems(vec![Problem {
                    key: "sinks".into(),
                    message: format!("sink `{other}` is not available in this build"),
                }]))
            }
        };
        sinks.push(sink);
    }
    Ok(BuiltSinks { sinks, zeek })
}

/// Builds the configured source.
pub fn build_source(cfg: &Config, kind: SourceKind) -> Result<Box<dyn Source>, AppError> {
    match kind {
        SourceKind::File => {
            let path = cfg.file.path.as_deref().ok_or_else(|| {
                AppError::problems(vec![Problem {
                    key: "file.path".into(),
                    message: "the file source needs a path".into(),
                }])
            })?;
            Ok(Box::new(FileSource::new(path)))
        }
        SourceKind::OpenCti => Ok(Box::new(OpenCtiSource::new(&cfg.opencti, &cfg.connector)?)),
        SourceKind::Misp => Ok(Box::new(
            MispSource::new(&cfg.misp, &cfg.state.dir)?.with_expand_or(cfg.pipeline.expand_or),
        )),
    }
}

/// Cancels `token` on the first SIGTERM/SIGINT; exits at once on the second (state stays consistent
/// thanks to the intents).
pub fn spawn_signal_handler(token: CancellationToken) {
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            wait_for_signal().await;
            count += 1;
            if count == 1 {
                tracing::info!("shutdown requested: finishing in-flight batches (a second signal exits at once)");
                token.cancel();
            } else {
                tracing::warn!(
                    "second signal: exiting now; pending changes are settled at the next start"
                );
                std::process::exit(130);
            }
        }
    });
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// `iocsync run`: one source into its sinks until the input ends (file, `--once`) or shutdown.
pub async fn run(
    cfg: &Config,
    opts: RunOptions,
    shutdown: CancellationToken,
) -> Result<RunStats, AppError> {
    let kind = validated(cfg)?;
    let state = State::open(&cfg.state.dir)?;
    let built = build_sinks(cfg, kind, Some(&state))?;
    let source = build_source(cfg, kind)?;
    let upkeep_token = shutdown.child_token();
    let upkeep = built
        .zeek
        .map(|z| z.spawn_maintenance(upkeep_token.clone()));
    let sinks = built.sinks;
    let mode = if opts.once || kind == SourceKind::File {
        RunMode::Ends
    } else {
        RunMode::Daemon
    };
    let (committed_tx, committed_rx) = watch::channel(None);
    let mut pipeline = Pipeline::new(
        source.name(),
        sinks,
        state,
        cfg.pipeline.clone(),
        cfg.dead_letter_path(),
        mode,
        committed_tx,
    );
    pipeline.resolve_leftovers(&shutdown).await?;
    let start = pipeline.checkpoint().await?;
    let (events_tx, events_rx) =
        mpsc::channel::<SourceEvent>(cfg.pipeline.batch_events.max(16) * 2);
    let source_token = shutdown.child_token();
    let ctx = SourceContext {
        start,
        events: events_tx,
        committed: committed_rx,
        shutdown: source_token.clone(),
        once: opts.once,
    };
    let source_task = tokio::spawn(source.run(ctx));

    let drain = cfg.pipeline.shutdown_timeout;
    let result = {
        let run = pipeline.run(events_rx, &shutdown);
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => r,
            _ = async { shutdown.cancelled().await; tokio::time::sleep(drain).await } => {
                Err(PipelineError::Interrupted)
            }
        }
    };
    source_token.cancel();
    upkeep_token.cancel();
    if let Some(task) = upkeep {
        let _ = task.await;
    }
    let source_result = match source_task.await {
        Ok(r) => r,
        Err(e) => Err(SourceError::Other {
            source_name: "source",
            message: format!("source task failed: {e}"),
        }),
    };
    let stats = result?;
    source_result?;
    Ok(stats)
}

/// `iocsync check`: validates, then probes the source and every sink; one line per check.
pub async fn check(cfg: &Config, out: &mut impl std::io::Write) -> Result<(), AppError> {
    let kind = validated(cfg)?;
    let source = build_source(cfg, kind)?;
    let sinks = build_sinks(cfg, kind, None)?.sinks;
    let mut worst: Option<AppError> = None;
    let mut note = |label: &str, result: Result<String, AppError>, out: &mut dyn std::io::Write| {
        match result {
            Ok(what) => {
                let _ = writeln!(out, "✓ {label}: {what}");
            }
            Err(e) => {
                let _ = writeln!(out, "✗ {label}: {e}");
                let replace = match (&worst, &e) {
                    (None, _) => true,
                    (Some(w), e) => e.exit_code() > w.exit_code(),
                };
                if replace {
                    worst = Some(e);
                }
            }
        }
    };
    let label = format!("source {}", source.name());
    note(&label, source.check().await.map_err(AppError::from), out);
    for sink in &sinks {
        let label = format!("sink {}", sink.name());
        note(&label, sink.check().await.map_err(AppError::from), out);
    }
    match worst {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// Opens the state of a configuration (no validation of sources/sinks needed).
pub fn open_state(cfg: &Config) -> Result<State, AppError> {
    Ok(State::open(&cfg.state.dir)?)
}

/// Where `run --demo` works.
pub fn demo_dir() -> PathBuf {
    PathBuf::from("iocsync-demo")
}

/// The shipped sample stream (a generated OpenCTI live-stream capture).
pub const DEMO_STREAM: &str = include_str!("../fixtures/opencti/stream.sse");

/// Builds the demo configuration: the embedded capture into JSONL and Zeek files under `dir`,
/// starting from a clean state each time.
pub fn demo_config(dir: &Path) -> Result<Config, AppError> {
    let io = |what: &str, e: std::io::Error| {
        AppError::Other(format!("demo: failed to {what} `{}`: {e}", dir.display()))
    };
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| io("clean", e))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| io("create", e))?;
    let stream = dir.join("stream.sse");
    std::fs::write(&stream, DEMO_STREAM).map_err(|e| io("write the sample stream into", e))?;
    let defaults = Config::default();
    Ok(Config {
        source: Some("file".into()),
        file: crate::config::FileConfig { path: Some(stream) },
        state: crate::config::StateConfig {
            dir: dir.join("state"),
        },
        jsonl: crate::sinks::jsonl::JsonlConfig {
            path: Some(dir.join("iocs.jsonl")),
        },
        zeek: crate::sinks::zeek::ZeekConfig {
            intel_path: Some(dir.join("intel.dat")),
            ..defaults.zeek.clone()
        },
        pipeline: crate::config::PipelineConfig {
            linger: std::time::Duration::from_millis(50),
            ..defaults.pipeline.clone()
        },
        ..defaults
    })
}
