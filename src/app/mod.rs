//! The commands behind the CLI: build the configured source and sinks, run the pipeline with signal
//! handling, probe endpoints, and read the state. `main.rs` parses arguments and calls these.

use crate::config::{Config, ConfigError, Problem, SourceKind, ValidSink, ValidSource, Validated};
use crate::control::Control;
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

mod check;
pub use check::{check, check_component, check_components};

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
    /// Exit 0, silently: the reader of our output closed it (`iocsync state show | head`).
    #[error("the output was closed by its reader")]
    OutputClosed,
}

impl AppError {
    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            AppError::Config(_) => 2,
            AppError::Auth(_) => 3,
            AppError::Other(_) => 1,
            AppError::OutputClosed => 0,
        }
    }

    fn problems(problems: Vec<Problem>) -> Self {
        AppError::Config(ConfigError::Invalid(problems))
    }
}

/// A failed write of a command's output. A closed pipe (`| head`) becomes [`AppError::OutputClosed`]:
/// the reader has what it wanted, so the command stops quietly instead of reporting an error.
pub fn output_error(e: std::io::Error) -> AppError {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        AppError::OutputClosed
    } else {
        AppError::Other(format!("failed to write output: {e}"))
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
        match e {
            // Not something a retry fixes: the configuration points at another version's state.
            crate::state::StateError::NewerSchema { .. } => AppError::problems(vec![Problem {
                key: "state.dir".to_string(),
                message: e.to_string(),
            }]),
            _ => AppError::Other(e.to_string()),
        }
    }
}

/// Options of `iocsync run`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// One pass and exit.
    pub once: bool,
    /// Operator control (pause, resume, run now); `None`: `run` makes its own.
    pub control: Option<Control>,
    /// After `reconcile --adopt`: one pass of the source into the state only, no sink called
    /// ([`crate::sinks::state_only`]); `reconcile --apply` then sends the sinks the difference.
    pub state_only: bool,
}

/// Validates without I/O, once; every problem becomes one line of the error.
pub fn validated(cfg: &Config) -> Result<Validated, AppError> {
    Ok(cfg.validated()?)
}

/// The name sinks send as the IOC's source by default.
fn default_source_label(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::OpenCti | SourceKind::File => "OpenCTI",
        SourceKind::Misp => "MISP",
    }
}

/// Builds the selected sinks. `state` (when given) tells each how many values it holds live.
pub fn build_sinks(
    valid: &Validated,
    state: Option<&State>,
) -> Result<Vec<Arc<dyn Sink>>, AppError> {
    let label = default_source_label(valid.source.kind());
    let mut sinks: Vec<Arc<dyn Sink>> = Vec::new();
    for section in &valid.sinks {
        let sink: Arc<dyn Sink> = match section {
            ValidSink::SentinelOne(c) => Arc::new(SentinelOneSink::new(c, label)?),
            ValidSink::Sekoia(c) => Arc::new(SekoiaSink::new(c, label)?),
            ValidSink::Zeek(c) => Arc::new(ZeekSink::new(c)?),
            ValidSink::Jsonl(c) => Arc::new(JsonlSink::new(c)),
        };
        let sink = match state {
            Some(state) => {
                sink.seed_live_count(state.live_count(sink.name())?.max(0) as u64);
                crate::reconcile::adopting::wrap(sink, state)?
            }
            None => sink,
        };
        sinks.push(sink);
    }
    Ok(sinks)
}

/// Builds the selected source. `console_edits`: the state to read the console's MISP edits from
/// for `check` (a run reads them itself at each run's start, so it passes `None`).
pub fn build_source(
    cfg: &Config,
    valid: &Validated,
    console_edits: Option<&State>,
) -> Result<Box<dyn Source>, AppError> {
    match &valid.source {
        ValidSource::File(path) => Ok(Box::new(FileSource::new(path))),
        ValidSource::OpenCti(opencti, connector) => {
            Ok(Box::new(OpenCtiSource::new(opencti, connector)?))
        }
        ValidSource::Misp(misp) => {
            let mut source = MispSource::new(misp)?
                .with_expansion(cfg.pipeline.expand_or.then_some(cfg.pipeline.expand_max));
            if let Some(state) = console_edits {
                match crate::sources::misp::overrides::Overrides::read(state) {
                    Ok(overrides) => source = source.with_console_overrides(overrides),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the console's MISP settings from the state")
                    }
                }
            }
            Ok(Box::new(source))
        }
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
///
/// A requested shutdown (`shutdown` cancelled) is a success: intake stops, the batch in flight is
/// finished within `pipeline.shutdown_timeout`, the source stops last (so OpenCTI's final ping
/// carries the final checkpoint), and the returned summary counts what is left pending.
pub async fn run(
    cfg: &Config,
    opts: RunOptions,
    shutdown: CancellationToken,
) -> Result<RunStats, AppError> {
    let valid = validated(cfg)?;
    let kind = valid.source.kind();
    let state = State::open(&cfg.state.dir)?;
    let mut sinks = build_sinks(&valid, Some(&state))?;
    if opts.state_only {
        let pending = state.pending_intents()?.len();
        if pending > 0 {
            return Err(AppError::Other(format!(
                "a state-only run needs a settled state, and {pending} changes are pending: \
                 settle them first with `iocsync run` or `iocsync reconcile --apply`"
            )));
        }
        tracing::info!("state-only run: the source goes into the state, no sink is called; `iocsync reconcile --apply` sends the difference");
        sinks = sinks
            .iter()
            .map(|s| {
                Arc::new(crate::sinks::state_only::StateOnly::standing_in_for(
                    s.as_ref(),
                )) as Arc<dyn Sink>
            })
            .collect();
    }
    let source = build_source(cfg, &valid, None)?;
    // Kept alive until `run` returns: dropping it stops the server.
    let _http = start_http(cfg, kind, source.name(), &sinks).await?;
    let upkeep_token = shutdown.child_token();
    let upkeep: Vec<_> = sinks
        .iter()
        .filter_map(|s| Arc::clone(s).spawn_upkeep(upkeep_token.clone()))
        .collect();
    // Reconcile (issue 16): the periodic dry run, stopped with the upkeep tasks.
    let reconcile = crate::reconcile::spawn_schedule(cfg, upkeep_token.clone());
    let mode = if opts.once || opts.state_only || kind == SourceKind::File {
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
    let control = opts
        .control
        .clone()
        .unwrap_or_else(|| Control::new(source.name(), kind == SourceKind::Misp));
    pipeline.set_control(control.clone());
    // The web console (issue 15) when console.enabled; dropping the handle stops it.
    let _console = crate::console::start_for_daemon(cfg, control.clone()).await?;
    let drain = cfg.pipeline.shutdown_timeout;
    // `None`: the drain bound expired with a sink call still running.
    let settled = {
        let settle = pipeline.resolve_leftovers(&shutdown);
        tokio::pin!(settle);
        tokio::select! {
            r = &mut settle => Some(r),
            _ = drained(&shutdown, drain) => None,
        }
    };
    match settled {
        Some(Ok(())) => {}
        Some(Err(e)) if !(shutdown.is_cancelled() && matches!(e, PipelineError::Interrupted)) => {
            return Err(e.into())
        }
        _ => {
            return Ok(RunStats {
                source: source.name().to_string(),
                errors: vec![
                    "shutdown requested while settling the previous run's pending \
                              changes; they are settled at the next start"
                        .to_string(),
                ],
                ..RunStats::default()
            })
        }
    }
    let start = pipeline.checkpoint().await?;
    let (events_tx, events_rx) =
        mpsc::channel::<SourceEvent>(cfg.pipeline.batch_events.max(16) * 2);
    // Not a child of `shutdown`: the pipeline stops taking events at the signal, and the source is
    // stopped once the pipeline is done, so its last act (OpenCTI's final ping) reports the final
    // checkpoint. Until then it can only fill the bounded channel, whose events are not checkpointed.
    let source_token = CancellationToken::new();
    let ctx = SourceContext {
        start,
        events: events_tx,
        committed: committed_rx,
        shutdown: source_token.clone(),
        once: opts.once,
        store: pipeline.source_store(),
        control,
    };
    let source_task = tokio::spawn(source.run(ctx));

    // `None`: the drain bound expired with a sink call still running (the run is not recorded).
    let result = {
        let run = pipeline.run(events_rx, &shutdown);
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => Some(r),
            _ = drained(&shutdown, drain) => None,
        }
    };
    source_token.cancel();
    upkeep_token.cancel();
    for task in upkeep.into_iter().chain(reconcile) {
        let _ = task.await;
    }
    let source_result = join_source(source_task, shutdown.is_cancelled().then_some(drain)).await;
    let stats = match result {
        // The pipeline recorded the interrupted run before returning.
        Some(Err(PipelineError::Interrupted)) if shutdown.is_cancelled() => {
            pipeline.last_run().cloned().unwrap_or_else(|| RunStats {
                source: pipeline.stats().source.clone(),
                errors: vec![PipelineError::Interrupted.to_string()],
                ..RunStats::default()
            })
        }
        Some(other) => other?,
        None => {
            pipeline
                .abandon_run(format!(
                    "shutdown: a sink call was still running after pipeline.shutdown_timeout \
                     ({drain:?}); its changes stay pending and are settled at the next start"
                ))
                .await
        }
    };
    source_result?;
    Ok(stats)
}

/// Resolves `drain` after shutdown was requested: the bound of a graceful stop.
async fn drained(shutdown: &CancellationToken, drain: std::time::Duration) {
    shutdown.cancelled().await;
    tokio::time::sleep(drain).await;
}

/// Starts the metrics/health server when `connector.expose_metrics` is set.
async fn start_http(
    cfg: &Config,
    kind: SourceKind,
    source: &'static str,
    sinks: &[Arc<dyn Sink>],
) -> Result<Option<crate::http::Server>, AppError> {
    use crate::http::{HttpError, Readiness, Server};
    if !cfg.connector.expose_metrics {
        return Ok(None);
    }
    let readiness = Readiness {
        source,
        source_reports_connection: kind == SourceKind::OpenCti,
        sinks: sinks.iter().map(|s| s.name()).collect(),
    };
    let state_dir = Some(cfg.state.dir.clone());
    match Server::start(
        &cfg.http.bind,
        cfg.connector.metrics_port,
        readiness,
        state_dir,
    )
    .await
    {
        Ok(server) => Ok(Some(server)),
        Err(e @ HttpError::Address { .. }) => Err(AppError::problems(vec![Problem {
            key: "http.bind".into(),
            message: e.to_string(),
        }])),
        Err(e) => Err(AppError::Other(format!(
            "{e} (choose another port with CONNECTOR_METRICS_PORT or address with IOCSYNC_HTTP_BIND)"
        ))),
    }
}

/// Waits for the source task; after a requested shutdown, at most `bound` (then it is abandoned:
/// only its final ping is lost, the checkpoint is already written).
async fn join_source(
    mut task: tokio::task::JoinHandle<Result<(), SourceError>>,
    bound: Option<std::time::Duration>,
) -> Result<(), SourceError> {
    let joined = match bound {
        None => (&mut task).await,
        Some(bound) => match tokio::time::timeout(bound, &mut task).await {
            Ok(joined) => joined,
            Err(_) => {
                tracing::warn!(
                    "the source did not stop within pipeline.shutdown_timeout; leaving it"
                );
                task.abort();
                return Ok(());
            }
        },
    };
    joined.unwrap_or_else(|e| {
        Err(SourceError::Other {
            source_name: "source",
            message: format!("source task failed: {e}"),
        })
    })
}

/// Opens the state of a configuration (no validation of sources/sinks needed).
pub fn open_state(cfg: &Config) -> Result<State, AppError> {
    Ok(State::open(&cfg.state.dir)?)
}

/// Opens the state for reading only (`state show`, `runs`): it never creates or writes the database,
/// so it runs safely beside a live daemon. `None` when no run has created it yet.
pub fn read_state(cfg: &Config) -> Result<Option<State>, AppError> {
    if !cfg.state.dir.join(crate::state::DB_FILE).exists() {
        return Ok(None);
    }
    Ok(State::open_read_only(&cfg.state.dir)?)
}

/// Where `run --demo` works.
pub fn demo_dir() -> PathBuf {
    PathBuf::from("iocsync-demo")
}

/// The shipped sample stream (a generated OpenCTI live-stream capture).
pub const DEMO_STREAM: &str = include_str!("../../fixtures/opencti/stream.sse");

/// The file `run --demo` leaves in the directory it creates: only a directory holding it is deleted
/// by the next demo run, so a user's own `./iocsync-demo` is never removed.
pub const DEMO_MARKER: &str = ".iocsync-demo";

/// Builds the demo configuration: the embedded capture into JSONL and Zeek files under `dir`,
/// starting from a clean state each time. An existing `dir` is replaced only when an earlier demo
/// run created it ([`DEMO_MARKER`]); any other is refused.
pub fn demo_config(dir: &Path) -> Result<Config, AppError> {
    let io = |what: &str, e: std::io::Error| {
        AppError::Other(format!("demo: failed to {what} `{}`: {e}", dir.display()))
    };
    if dir.exists() {
        if !dir.join(DEMO_MARKER).is_file() {
            return Err(AppError::Other(format!(
                "demo: `{}` already exists and was not created by `iocsync run --demo` (it has no \
                 {DEMO_MARKER} file); it is left untouched: move it away or run the demo from \
                 another directory",
                dir.display()
            )));
        }
        std::fs::remove_dir_all(dir).map_err(|e| io("clean", e))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| io("create", e))?;
    std::fs::write(
        dir.join(DEMO_MARKER),
        "created by `iocsync run --demo`, which deletes and recreates this directory\n",
    )
    .map_err(|e| io("mark", e))?;
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
            ..crate::sinks::jsonl::JsonlConfig::default()
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
