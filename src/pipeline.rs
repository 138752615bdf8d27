//! The pipeline: reads source events in micro-batches, classifies and plans them, applies the planned
//! changes to every sink (batched, retried with backoff), records outcomes, dead-letters rejections,
//! counts everything, and moves the checkpoint only once every sink has acknowledged a batch.
//!
//! One batch at a time: while sinks work, the bounded channel fills and the source waits (back-pressure
//! without unbounded memory). Within a batch all sinks work concurrently, each in chunks of its own
//! `max_batch()`. Planning writes the intents before any sink call, so a crash at any point leaves
//! either nothing to do or intents that [`Pipeline::resolve_leftovers`] settles at the next start.

use crate::classify::{classify_object, Classified, ClassifyOptions};
use crate::config::PipelineConfig;
use crate::metrics;
use crate::model::{EventKind, IndicatorState, Payload, SourceEvent};
use crate::planner::{plan_indicator, Planned, SinkCaps};
use crate::sinks::{Change, ChangeOp, Outcome, Resolution, Sink, SinkError};
use crate::skip::SkipReason;
use crate::state::{EntryStatus, State, StateError};
use backon::{BackoffBuilder, ExponentialBuilder};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Why a pipeline run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The state database failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// A sink kept failing and this run has an end (file, `--once`): pending changes stay in the
    /// state and are settled at the next start.
    #[error("giving up on sink `{sink}` after {attempts} attempts: {error}")]
    SinkGaveUp {
        /// Sink name.
        sink: &'static str,
        /// Attempts made.
        attempts: usize,
        /// The last error.
        error: SinkError,
    },
    /// A sink refused our credential (exit code 3).
    #[error("{0}")]
    SinkAuth(SinkError),
    /// Shutdown was requested while changes were still outstanding; they stay pending.
    #[error("interrupted with changes still pending (they will be settled at the next start)")]
    Interrupted,
    /// The dead-letter file could not be written (the rejection stays pending rather than lost).
    #[error("failed to write dead letter to `{path}`: {source}")]
    DeadLetter {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A blocking task died.
    #[error("internal task failed: {0}")]
    Join(String),
}

impl PipelineError {
    /// True when the cause is a refused credential.
    pub fn is_auth(&self) -> bool {
        match self {
            PipelineError::SinkAuth(_) => true,
            PipelineError::SinkGaveUp { error, .. } => error.is_auth(),
            _ => false,
        }
    }
}

/// Counts for one sink in one run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SinkStats {
    /// Creates applied, by IOC type.
    pub created: BTreeMap<String, u64>,
    /// Deletes applied, by IOC type.
    pub deleted: BTreeMap<String, u64>,
    /// Updates applied, by IOC type.
    pub updated: BTreeMap<String, u64>,
    /// Changes rejected (dead-lettered).
    pub rejected: u64,
    /// Retried calls.
    pub retries: u64,
}

/// The statistics of one run: printed at its end, stored for `iocsync runs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunStats {
    /// Source name.
    pub source: String,
    /// RFC 3339 start.
    pub started: String,
    /// RFC 3339 end.
    pub ended: Option<String>,
    /// Duration in milliseconds.
    pub duration_ms: u64,
    /// Events carrying an object (or an unreadable one).
    pub received: u64,
    /// Events whose effects every sink acknowledged (including "nothing to do").
    pub applied: u64,
    /// Events skipped, by reason code.
    pub skipped: BTreeMap<String, u64>,
    /// Events with at least one change a sink rejected.
    pub dead_lettered: u64,
    /// Events whose changes are still outstanding (interrupted run).
    pub pending: u64,
    /// Per-sink counts.
    pub sinks: BTreeMap<String, SinkStats>,
    /// Heartbeats and other position-only events seen.
    pub heartbeats: u64,
    /// Errors that ended or disturbed the run.
    pub errors: Vec<String>,
    /// Source-specific counters (e.g. MISP's ignored by disabled feeds).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, u64>,
}

impl RunStats {
    fn new(source: &str) -> Self {
        RunStats {
            source: source.to_string(),
            started: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ..RunStats::default()
        }
    }

    /// Total skipped.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }

    /// The accounting identity every run must satisfy.
    pub fn balanced(&self) -> bool {
        self.received == self.applied + self.skipped_total() + self.dead_lettered + self.pending
    }

    /// A multi-line human summary.
    pub fn render(&self) -> String {
        let mut out = format!(
            "run summary ({}): received {} · applied {} · skipped {} · dead-lettered {} · pending {} · {:.1}s\n",
            self.source,
            self.received,
            self.applied,
            self.skipped_total(),
            self.dead_lettered,
            self.pending,
            self.duration_ms as f64 / 1000.0
        );
        if !self.skipped.is_empty() {
            let parts: Vec<String> = self
                .skipped
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            out.push_str(&format!("  skipped: {}\n", parts.join(", ")));
        }
        for (sink, s) in &self.sinks {
            let fmt = |m: &BTreeMap<String, u64>| {
                if m.is_empty() {
                    "0".to_string()
                } else {
                    let total: u64 = m.values().sum();
                    let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v}")).collect();
                    format!("{total} ({})", parts.join(", "))
                }
            };
            out.push_str(&format!(
                "  {sink}: created {} · deleted {} · updated {} · rejected {} · retries {}\n",
                fmt(&s.created),
                fmt(&s.deleted),
                fmt(&s.updated),
                s.rejected,
                s.retries
            ));
        }
        for e in &self.errors {
            out.push_str(&format!("  error: {e}\n"));
        }
        out
    }
}

/// Whether the run ends by itself (file, `--once`) or runs until stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// Stops at end of input; gives up on a sink after `retry_attempts`.
    Ends,
    /// Runs until shutdown; retries forever.
    Daemon,
}

/// Writes dead letters (JSONL, for people to read).
struct DeadLetters {
    path: PathBuf,
}

impl DeadLetters {
    fn write(&self, sink: &str, change: &Change, reason: &str) -> Result<(), PipelineError> {
        let record = serde_json::json!({
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "sink": sink,
            "op": change.op.as_str(),
            "indicator_id": change.indicator_id,
            "type": change.ioc.kind.as_str(),
            "value": change.ioc.value,
            "reason": reason,
            "meta": change.meta,
        });
        let err = |source| PipelineError::DeadLetter {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(err)?;
        writeln!(file, "{record}").map_err(err)?;
        file.sync_data().map_err(err)
    }
}

/// A change's final fate.
enum Final {
    Applied(Option<String>),
    Rejected,
}

/// The pipeline for one source and its sinks.
pub struct Pipeline {
    source_name: &'static str,
    sinks: Vec<Arc<dyn Sink>>,
    caps: Vec<SinkCaps>,
    state: Arc<Mutex<State>>,
    cfg: PipelineConfig,
    classify: ClassifyOptions,
    dead_letters: DeadLetters,
    mode: RunMode,
    committed: watch::Sender<Option<String>>,
    stats: RunStats,
    run_started: Instant,
    /// The last run finished during the current `run()` call.
    finished: Option<RunStats>,
}

/// Runs a closure on the state off the async runtime (the connection is never held across `.await`).
async fn with_state<R: Send + 'static>(
    state: &Arc<Mutex<State>>,
    f: impl FnOnce(&mut State) -> Result<R, StateError> + Send + 'static,
) -> Result<R, PipelineError> {
    let state = Arc::clone(state);
    tokio::task::spawn_blocking(move || {
        let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    })
    .await
    .map_err(|e| PipelineError::Join(e.to_string()))?
    .map_err(PipelineError::from)
}

impl Pipeline {
    /// Builds a pipeline. `committed` receives every checkpoint written (OpenCTI pings it).
    pub fn new(
        source_name: &'static str,
        sinks: Vec<Arc<dyn Sink>>,
        state: State,
        cfg: PipelineConfig,
        dead_letter_path: PathBuf,
        mode: RunMode,
        committed: watch::Sender<Option<String>>,
    ) -> Self {
        let caps = sinks
            .iter()
            .map(|s| SinkCaps {
                name: s.name(),
                supports_update: s.supports_update(),
            })
            .collect();
        let classify = ClassifyOptions {
            expand_or: cfg.expand_or,
        };
        Pipeline {
            source_name,
            sinks,
            caps,
            state: Arc::new(Mutex::new(state)),
            cfg,
            classify,
            dead_letters: DeadLetters {
                path: dead_letter_path,
            },
            mode,
            committed,
            stats: RunStats::new(source_name),
            run_started: Instant::now(),
            finished: None,
        }
    }

    /// The checkpoint to resume from.
    pub async fn checkpoint(&self) -> Result<Option<String>, PipelineError> {
        let source = self.source_name;
        with_state(&self.state, move |s| s.checkpoint(source)).await
    }

    /// The statistics of the current run so far.
    pub fn stats(&self) -> &RunStats {
        &self.stats
    }

    /// Settles intents a crash left behind: asks each sink whether it already reflects them, records
    /// those that it does, and sends the rest.
    pub async fn resolve_leftovers(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<(), PipelineError> {
        let leftovers = with_state(&self.state, |s| s.pending_intents()).await?;
        if leftovers.is_empty() {
            return Ok(());
        }
        tracing::info!(
            count = leftovers.len(),
            "settling changes left pending by the previous run"
        );
        for index in 0..self.sinks.len() {
            let name = self.sinks[index].name();
            let changes: Vec<Change> = leftovers
                .iter()
                .filter(|(s, _)| s == name)
                .map(|(_, c)| c.clone())
                .collect();
            if changes.is_empty() {
                continue;
            }
            let worker = self.worker(index, shutdown);
            let mut report = worker.report();
            let settled = worker.settle(changes, &mut report).await;
            self.merge_report(report);
            match worker.apply_all(settled?).await {
                Ok(resent) => self.merge_report(resent),
                Err((partial, err)) => {
                    self.merge_report(partial);
                    return Err(err);
                }
            }
        }
        let orphans: BTreeSet<String> = leftovers
            .iter()
            .filter(|(s, _)| !self.caps.iter().any(|c| c.name == s))
            .map(|(s, _)| s.clone())
            .collect();
        for sink in orphans {
            tracing::warn!(
                sink,
                "changes are pending for a sink that is no longer configured; they stay in the state"
            );
        }
        Ok(())
    }

    fn worker(&self, index: usize, shutdown: &CancellationToken) -> SinkWorker {
        SinkWorker {
            sink: Arc::clone(&self.sinks[index]),
            state: Arc::clone(&self.state),
            cfg: self.cfg.clone(),
            mode: self.mode,
            dead_letters: DeadLetters {
                path: self.dead_letters.path.clone(),
            },
            shutdown: shutdown.clone(),
        }
    }

    /// Runs until the source ends, shutdown, or a fatal error. Returns the run statistics.
    pub async fn run(
        &mut self,
        mut events: mpsc::Receiver<SourceEvent>,
        shutdown: &CancellationToken,
    ) -> Result<RunStats, PipelineError> {
        self.run_started = Instant::now();
        self.stats = RunStats::new(self.source_name);
        self.finished = None;
        // Events received past a batch boundary (after a `RunEnd`) wait here for the next batch.
        let mut carry = std::collections::VecDeque::new();
        loop {
            let batch = collect(
                &mut events,
                &mut carry,
                self.cfg.batch_events,
                self.cfg.linger,
                shutdown,
            )
            .await;
            if batch.is_empty() {
                break;
            }
            if let Err(err) = self.process(batch, shutdown).await {
                // Everything received in this batch and not yet accounted stays pending.
                let accounted =
                    self.stats.applied + self.stats.skipped_total() + self.stats.dead_lettered;
                self.stats.pending = self.stats.received.saturating_sub(accounted);
                self.stats.errors.push(err.to_string());
                self.finish_run().await?;
                return Err(err);
            }
            if shutdown.is_cancelled() {
                break;
            }
        }
        // A source that marks its run ends (file, MISP) has already recorded it: report that one
        // unless events arrived after it.
        if self.stats.received == 0 && self.stats.errors.is_empty() {
            if let Some(done) = self.finished.take() {
                return Ok(done);
            }
        }
        self.finish_run().await
    }

    /// Records the current run in the history and starts a new one.
    async fn finish_run(&mut self) -> Result<RunStats, PipelineError> {
        let elapsed = self.run_started.elapsed();
        let mut stats = std::mem::replace(&mut self.stats, RunStats::new(self.source_name));
        stats.ended = Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        stats.duration_ms = elapsed.as_millis() as u64;
        self.run_started = Instant::now();
        let source = self.source_name;
        let json = serde_json::to_value(&stats).unwrap_or_default();
        let ended_ms = chrono::Utc::now().timestamp_millis();
        let started_ms = ended_ms - stats.duration_ms as i64;
        let first_of_invocation = self.finished.is_none();
        if stats.received > 0
            || !stats.errors.is_empty()
            || (self.mode == RunMode::Ends && first_of_invocation)
        {
            with_state(&self.state, move |s| {
                s.record_run(source, started_ms, ended_ms, &json)
            })
            .await?;
        }
        tracing::info!(
            source,
            received = stats.received,
            applied = stats.applied,
            skipped = stats.skipped_total(),
            dead_lettered = stats.dead_lettered,
            pending = stats.pending,
            "run finished"
        );
        self.finished = Some(stats.clone());
        Ok(stats)
    }

    /// Classifies, plans and applies one batch; then moves the checkpoint.
    async fn process(
        &mut self,
        batch: Vec<SourceEvent>,
        shutdown: &CancellationToken,
    ) -> Result<(), PipelineError> {
        if self.stats.received == 0 && self.stats.heartbeats == 0 && self.stats.errors.is_empty() {
            // A run starts with its first event, not when the previous one ended (MISP idles between).
            self.run_started = Instant::now();
            self.stats.started = RunStats::new(self.source_name).started;
        }
        let mut states: Vec<(usize, IndicatorState)> = Vec::new();
        let mut removals: Vec<(usize, IndicatorState)> = Vec::new();
        let mut last_position: Option<String> = None;
        let mut reset = false;
        let mut run_end = false;
        for (index, event) in batch.iter().enumerate() {
            if let Some(p) = &event.position {
                last_position = Some(p.clone());
            }
            let kind_label = match event.kind {
                EventKind::Create => "create",
                EventKind::Update => "update",
                EventKind::Delete => "delete",
                EventKind::Heartbeat => "heartbeat",
                EventKind::Other => "other",
                EventKind::Reset => "reset",
                EventKind::RunEnd => "run_end",
            };
            metrics::global().inc("iocsync_events_received_total", &[("type", kind_label)], 1);
            match event.kind {
                EventKind::Reset => {
                    reset = true;
                    continue;
                }
                EventKind::RunEnd => {
                    run_end = true;
                    continue;
                }
                _ => {}
            }
            match &event.payload {
                Payload::None => self.stats.heartbeats += 1,
                Payload::Malformed { reason } => {
                    self.stats.received += 1;
                    tracing::warn!(position = event.position.as_deref().unwrap_or("-"), reason = %reason, "skipping malformed event");
                    self.skip(SkipReason::MalformedEvent);
                }
                Payload::Stix(object) | Payload::StixMerge { object, .. } => {
                    self.stats.received += 1;
                    if let Payload::StixMerge { merged, .. } = &event.payload {
                        let target = object.get("id").and_then(|i| i.as_str());
                        for id in merged.iter().filter(|id| {
                            id.starts_with("indicator--") && Some(id.as_str()) != target
                        }) {
                            // Merged away: whatever it held goes, unless the target holds it too.
                            removals.push((index, IndicatorState::removed(id)));
                        }
                    }
                    match classify_object(event.kind, object, self.classify) {
                        Classified::Skip { reason, id, detail } => {
                            if reason == SkipReason::NotIndicator {
                                tracing::debug!(id = id.as_deref().unwrap_or("-"), detail = %detail, "skipping non-indicator object");
                            } else {
                                tracing::warn!(id = id.as_deref().unwrap_or("-"), reason = reason.code(), detail = %detail, "skipping event");
                            }
                            self.skip(reason);
                        }
                        Classified::Indicator(state) => states.push((index, *state)),
                    }
                }
                Payload::Classified(state) => {
                    self.stats.received += 1;
                    states.push((index, (**state).clone()));
                }
            }
        }
        // Removals of merged-away indicators are planned after their event's target, so a value both
        // held is handed over rather than deleted and re-created.
        states.append(&mut removals);
        // One outcome per event: skipped when its indicator yields no IOC for a reason, else applied
        // or dead-lettered once its changes are settled.
        let mut skipped = BTreeSet::new();
        for (index, state) in &states {
            if let Some(reason) = state.skip {
                tracing::info!(id = %state.id, reason = reason.code(), pattern = state.meta.pattern.as_deref().unwrap_or("-"), "indicator yields no IOC");
                self.skip(reason);
                skipped.insert(*index);
            }
        }
        let with_effects: BTreeSet<usize> = states
            .iter()
            .map(|(index, _)| *index)
            .filter(|index| !skipped.contains(index))
            .collect();

        let planning = Instant::now();
        // Plan every indicator state in one transaction: intents are durable before any sink call.
        let caps = self.caps.clone();
        let to_plan: Vec<(usize, IndicatorState)> = states;
        let planned: Vec<(usize, Planned)> = with_state(&self.state, move |s| {
            let tx = s.tx()?;
            let mut out: Vec<(usize, Planned)> = Vec::new();
            let mut cancelled = Vec::new();
            for (index, state) in &to_plan {
                for p in plan_indicator(&tx, &caps, state, &mut cancelled)? {
                    out.push((*index, p));
                }
            }
            tx.commit()?;
            out.retain(|(_, p)| !cancelled.contains(&p.change.intent_id));
            Ok(out)
        })
        .await?;

        // Apply per sink, all sinks concurrently.
        let mut per_sink: Vec<Vec<Change>> = vec![Vec::new(); self.sinks.len()];
        let mut owner: BTreeMap<i64, usize> = BTreeMap::new();
        for (index, p) in planned {
            owner.insert(p.change.intent_id, index);
            per_sink[p.sink].push(p.change);
        }
        let planned_in = planning.elapsed();
        let applying = Instant::now();
        let changes: usize = per_sink.iter().map(Vec::len).sum();
        let rejected_intents = self.apply_sinks(per_sink, shutdown).await?;
        tracing::debug!(
            events = batch.len(),
            changes,
            plan_ms = planned_in.as_millis() as u64,
            apply_ms = applying.elapsed().as_millis() as u64,
            "batch applied"
        );
        let rejected_events: BTreeSet<usize> = rejected_intents
            .iter()
            .filter_map(|id| owner.get(id).copied())
            .collect();
        for index in &with_effects {
            if rejected_events.contains(index) {
                self.stats.dead_lettered += 1;
            } else {
                self.stats.applied += 1;
            }
        }

        if let Some(position) = last_position {
            let source = self.source_name;
            let p = position.clone();
            with_state(&self.state, move |s| s.set_checkpoint(source, &p)).await?;
            metrics::global().set(
                "iocsync_last_checkpoint_timestamp_seconds",
                &[],
                chrono::Utc::now().timestamp() as f64,
            );
            self.committed.send_replace(Some(position));
        }
        if reset {
            let source = self.source_name;
            with_state(&self.state, move |s| s.clear_checkpoint(source)).await?;
            self.committed.send_replace(None);
            tracing::warn!(source, "the source was reset remotely: checkpoint cleared, replaying from the beginning (nothing already applied is sent again)");
        }
        if run_end {
            let stats = self.finish_run().await?;
            tracing::info!("{}", stats.render().trim_end());
        }
        Ok(())
    }

    fn skip(&mut self, reason: SkipReason) {
        *self
            .stats
            .skipped
            .entry(reason.code().to_string())
            .or_default() += 1;
        metrics::global().inc("iocsync_skips_total", &[("reason", reason.code())], 1);
    }

    /// Applies each sink's changes concurrently; returns the intent ids that were rejected.
    async fn apply_sinks(
        &mut self,
        per_sink: Vec<Vec<Change>>,
        shutdown: &CancellationToken,
    ) -> Result<Vec<i64>, PipelineError> {
        let mut futures = Vec::new();
        for (index, changes) in per_sink.into_iter().enumerate() {
            if changes.is_empty() {
                continue;
            }
            let worker = self.worker(index, shutdown);
            futures.push(async move { worker.apply_all(changes).await });
        }
        let results = futures_util::future::join_all(futures).await;
        let mut rejected = Vec::new();
        let mut first_error = None;
        for result in results {
            match result {
                Ok(report) => {
                    rejected.extend(report.rejected.iter().copied());
                    self.merge_report(report);
                }
                Err((report, err)) => {
                    self.merge_report(report);
                    first_error.get_or_insert(err);
                }
            }
        }
        match first_error {
            Some(err) => Err(err),
            None => Ok(rejected),
        }
    }

    fn merge_report(&mut self, report: WorkerReport) {
        let stats = self.stats.sinks.entry(report.sink.to_string()).or_default();
        for ((op, kind), n) in report.applied {
            let map = match op {
                ChangeOp::Create => &mut stats.created,
                ChangeOp::Delete => &mut stats.deleted,
                ChangeOp::Update => &mut stats.updated,
            };
            *map.entry(kind).or_default() += n;
        }
        stats.rejected += report.rejected.len() as u64;
        stats.retries += report.retries;
    }
}

/// What one sink worker did with its share of a batch.
struct WorkerReport {
    sink: &'static str,
    applied: BTreeMap<(ChangeOp, String), u64>,
    rejected: Vec<i64>,
    retries: u64,
}

/// Applies one sink's changes: chunks, retries with backoff, records outcomes, dead-letters.
struct SinkWorker {
    sink: Arc<dyn Sink>,
    state: Arc<Mutex<State>>,
    cfg: PipelineConfig,
    mode: RunMode,
    dead_letters: DeadLetters,
    shutdown: CancellationToken,
}

impl SinkWorker {
    fn report(&self) -> WorkerReport {
        WorkerReport {
            sink: self.sink.name(),
            applied: BTreeMap::new(),
            rejected: Vec::new(),
            retries: 0,
        }
    }

    async fn apply_all(
        &self,
        changes: Vec<Change>,
    ) -> Result<WorkerReport, (WorkerReport, PipelineError)> {
        let mut report = self.report();
        // At most one change per value per batch (the planner nets them), so grouping by op is safe
        // and lets a sink send one call per op instead of one per run of alternating ops.
        let mut changes = changes;
        changes.sort_by_key(|c| match c.op {
            ChangeOp::Delete => 0,
            ChangeOp::Update => 1,
            ChangeOp::Create => 2,
        });
        let chunk_size = self.sink.max_batch().max(1);
        for chunk in changes.chunks(chunk_size) {
            if let Err(err) = self.apply_chunk(chunk.to_vec(), &mut report).await {
                return Err((report, err));
            }
        }
        Ok(report)
    }

    async fn apply_chunk(
        &self,
        mut pending: Vec<Change>,
        report: &mut WorkerReport,
    ) -> Result<(), PipelineError> {
        let name = self.sink.name();
        let mut attempt = 0usize;
        while !pending.is_empty() {
            let started = Instant::now();
            let outcomes = self.sink.apply(&pending).await;
            metrics::global().observe(
                "iocsync_batch_duration_seconds",
                &[("sink", name)],
                started.elapsed().as_secs_f64(),
            );
            if outcomes.len() != pending.len() {
                // A sink bug must not lose changes: treat the whole chunk as transient.
                tracing::error!(
                    sink = name,
                    expected = pending.len(),
                    got = outcomes.len(),
                    "sink returned a wrong number of outcomes; retrying the chunk"
                );
            }
            let mut done = Vec::new();
            let mut retry = Vec::new();
            let mut ambiguous = BTreeSet::new();
            let mut last_error: Option<(SinkError, Option<Duration>)> = None;
            if outcomes.len() == pending.len() {
                for (change, outcome) in pending.into_iter().zip(outcomes) {
                    match outcome {
                        Outcome::Applied { remote_id } => {
                            count_applied(name, &change, report);
                            done.push((change, Final::Applied(remote_id)));
                        }
                        Outcome::Rejected { reason } => {
                            tracing::warn!(sink = name, op = change.op.as_str(), indicator = %change.indicator_id, r#type = change.ioc.kind.as_str(), value = %change.ioc.value, reason = %reason, "sink rejected a change: dead-lettered");
                            self.dead_letters.write(name, &change, &reason)?;
                            metrics::global().inc(
                                "iocsync_dead_letters_total",
                                &[("sink", name)],
                                1,
                            );
                            report.rejected.push(change.intent_id);
                            done.push((change, Final::Rejected));
                        }
                        Outcome::Retry { after, error } => {
                            let keep = last_error.as_ref().and_then(|(_, a)| *a);
                            let after = match (after, keep) {
                                (Some(a), Some(b)) => Some(a.max(b)),
                                (a, b) => a.or(b),
                            };
                            if error.is_ambiguous() {
                                ambiguous.insert(change.intent_id);
                            }
                            // Report the failure that happened, not a "not sent" consequence of it.
                            if !matches!(error, SinkError::NotSent { .. }) || last_error.is_none() {
                                last_error = Some((error, after));
                            }
                            retry.push(change);
                        }
                    }
                }
            } else {
                retry = pending;
                last_error = Some((
                    SinkError::Transport {
                        sink: name,
                        endpoint: "apply".into(),
                        message: "wrong number of outcomes".into(),
                    },
                    None,
                ));
            }
            if !done.is_empty() {
                // Progress: the retry budget is for a sink that makes none.
                attempt = 0;
            }
            record_outcomes(&self.state, name, done).await?;
            pending = retry;
            if let Some((error, after)) = last_error {
                if pending.is_empty() {
                    break;
                }
                attempt += 1;
                report.retries += 1;
                let cause = if error.is_auth() {
                    "auth"
                } else if matches!(error, SinkError::RateLimited { .. }) {
                    "rate_limited"
                } else {
                    "transient"
                };
                metrics::global().inc(
                    "iocsync_retries_total",
                    &[("sink", name), ("cause", cause)],
                    1,
                );
                retry_wait(
                    &self.cfg,
                    self.mode,
                    name,
                    &error,
                    after,
                    attempt,
                    &self.shutdown,
                )
                .await?;
                if !ambiguous.is_empty() {
                    // Only what may have been applied is looked up; the rest is simply re-sent.
                    let (unsure, sure): (Vec<Change>, Vec<Change>) = pending
                        .into_iter()
                        .partition(|c| ambiguous.contains(&c.intent_id));
                    pending = sure;
                    pending.extend(self.settle(unsure, report).await?);
                }
            }
        }
        metrics::global().set("iocsync_sink_auth_failed", &[("sink", name)], 0.0);
        Ok(())
    }

    /// After a failure that may have been applied anyway (5xx, timeout, reset), asks the sink which
    /// changes it already reflects before sending them again: re-sending blindly could create a
    /// second copy. Returns the changes still to send.
    /// Sends changes known not to be applied (boxed: it recurses through `settle`).
    fn apply_known<'a>(
        &'a self,
        changes: Vec<Change>,
        report: &'a mut WorkerReport,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), PipelineError>> + Send + 'a>>
    {
        Box::pin(self.apply_chunk(changes, report))
    }

    async fn settle(
        &self,
        mut pending: Vec<Change>,
        report: &mut WorkerReport,
    ) -> Result<Vec<Change>, PipelineError> {
        let mut attempt = 0usize;
        let attempt = &mut attempt;
        let name = self.sink.name();
        loop {
            match self.sink.resolve(&pending).await {
                Ok(resolutions) if resolutions.len() == pending.len() => {
                    let mut done = Vec::new();
                    let mut resend = Vec::new();
                    let mut unknown = Vec::new();
                    for (change, resolution) in pending.into_iter().zip(resolutions) {
                        match resolution {
                            Resolution::Applied { remote_id } => {
                                count_applied(name, &change, report);
                                done.push((change, Final::Applied(remote_id)));
                            }
                            Resolution::NotApplied => resend.push(change),
                            Resolution::Unknown => unknown.push(change),
                        }
                    }
                    if !done.is_empty() {
                        tracing::info!(
                            sink = name,
                            already_applied = done.len(),
                            resend = resend.len(),
                            "a failed call had been applied in part"
                        );
                    }
                    let progress = !done.is_empty() || !resend.is_empty();
                    record_outcomes(&self.state, name, done).await?;
                    if unknown.is_empty() {
                        return Ok(resend);
                    }
                    // Settle the rest later; send nothing of theirs meanwhile.
                    if progress {
                        *attempt = 0;
                    }
                    *attempt += 1;
                    report.retries += 1;
                    let error = SinkError::Transport {
                        sink: name,
                        endpoint: "resolve".into(),
                        message: format!("{} lookups failed", unknown.len()),
                    };
                    if !resend.is_empty() {
                        // What is known not to be applied goes now; the unknown ones wait.
                        self.apply_known(resend, report).await?;
                    }
                    retry_wait(
                        &self.cfg,
                        self.mode,
                        name,
                        &error,
                        None,
                        *attempt,
                        &self.shutdown,
                    )
                    .await?;
                    pending = unknown;
                }
                Ok(_) => {
                    tracing::error!(
                        sink = name,
                        "sink resolved a different number of changes; re-sending"
                    );
                    return Ok(pending);
                }
                Err(error) => {
                    *attempt += 1;
                    report.retries += 1;
                    retry_wait(
                        &self.cfg,
                        self.mode,
                        name,
                        &error,
                        None,
                        *attempt,
                        &self.shutdown,
                    )
                    .await?;
                }
            }
        }
    }
}

/// Counts one applied change in the metrics and the worker's report.
fn count_applied(sink: &'static str, change: &Change, report: &mut WorkerReport) {
    metrics::global().inc(
        "iocsync_iocs_applied_total",
        &[
            ("sink", sink),
            ("op", change.op.as_str()),
            ("type", change.ioc.kind.as_str()),
        ],
        1,
    );
    *report
        .applied
        .entry((change.op, change.ioc.kind.as_str().to_string()))
        .or_default() += 1;
}

/// Waits before retrying a sink call, or gives up (runs with an end) / stops (shutdown).
async fn retry_wait(
    cfg: &PipelineConfig,
    mode: RunMode,
    sink: &'static str,
    error: &SinkError,
    after: Option<Duration>,
    attempt: usize,
    shutdown: &CancellationToken,
) -> Result<(), PipelineError> {
    if error.is_auth() {
        metrics::global().set("iocsync_sink_auth_failed", &[("sink", sink)], 1.0);
        if mode == RunMode::Ends {
            return Err(PipelineError::SinkAuth(clone_error(error)));
        }
    }
    if mode == RunMode::Ends && attempt >= cfg.retry_attempts {
        return Err(PipelineError::SinkGaveUp {
            sink,
            attempts: attempt,
            error: clone_error(error),
        });
    }
    let backoff = backoff_delay(cfg, attempt);
    let delay = if error.is_auth() {
        cfg.auth_retry_interval
    } else {
        after.map_or(backoff, |a| a.max(cfg.retry_min))
    };
    tracing::warn!(sink, attempt, delay_ms = delay.as_millis() as u64, error = %error, "sink call failed; retrying");
    tokio::select! {
        _ = tokio::time::sleep(delay) => Ok(()),
        _ = shutdown.cancelled() => Err(PipelineError::Interrupted),
    }
}

/// The `attempt`-th delay of an exponential backoff with jitter, capped at `retry_max`.
fn backoff_delay(cfg: &PipelineConfig, attempt: usize) -> Duration {
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(cfg.retry_min)
        .with_max_delay(cfg.retry_max)
        .with_jitter()
        .without_max_times()
        .build();
    delays
        .nth(attempt.saturating_sub(1))
        .unwrap_or(cfg.retry_max)
        .min(cfg.retry_max)
}

/// SinkError is not Clone (it can hold an io::Error); rebuild what the caller reports.
fn clone_error(error: &SinkError) -> SinkError {
    match error {
        SinkError::Auth {
            sink,
            endpoint,
            status,
            message,
        } => SinkError::Auth {
            sink,
            endpoint: endpoint.clone(),
            status: *status,
            message: message.clone(),
        },
        SinkError::Permission {
            sink,
            endpoint,
            status,
            message,
        } => SinkError::Permission {
            sink,
            endpoint: endpoint.clone(),
            status: *status,
            message: message.clone(),
        },
        other => SinkError::Transport {
            sink: sink_of(other),
            endpoint: String::new(),
            message: other.to_string(),
        },
    }
}

fn sink_of(error: &SinkError) -> &'static str {
    match error {
        SinkError::Auth { sink, .. }
        | SinkError::Permission { sink, .. }
        | SinkError::RateLimited { sink, .. }
        | SinkError::Http { sink, .. }
        | SinkError::Transport { sink, .. }
        | SinkError::Io { sink, .. }
        | SinkError::NotSent { sink, .. }
        | SinkError::Config { sink, .. } => sink,
    }
}

/// Records final outcomes: updates what the sink holds and removes the intents, in one transaction.
async fn record_outcomes(
    state: &Arc<Mutex<State>>,
    sink: &'static str,
    done: Vec<(Change, Final)>,
) -> Result<(), PipelineError> {
    if done.is_empty() {
        return Ok(());
    }
    with_state(state, move |s| {
        let tx = s.tx()?;
        for (change, fate) in done {
            let kind = change.ioc.kind.sink_kind();
            let value = change.ioc.value.as_str();
            match (change.op, fate) {
                (ChangeOp::Create, Final::Applied(remote_id)) => {
                    tx.settle_entry(
                        sink,
                        kind,
                        value,
                        EntryStatus::Live,
                        remote_id.as_deref(),
                        None,
                    )?;
                }
                (ChangeOp::Create, Final::Rejected) => {
                    tx.settle_entry(sink, kind, value, EntryStatus::Rejected, None, None)?;
                }
                (ChangeOp::Update, Final::Applied(remote_id)) => {
                    let meta = Some(&change.meta);
                    tx.settle_entry(
                        sink,
                        kind,
                        value,
                        EntryStatus::Live,
                        remote_id.as_deref(),
                        meta,
                    )?;
                }
                (ChangeOp::Update, Final::Rejected) => {
                    tx.settle_entry(sink, kind, value, EntryStatus::Live, None, None)?;
                }
                (ChangeOp::Delete, _) => tx.remove_sink_entry(sink, kind, value)?,
            }
            tx.delete_intent(change.intent_id)?;
        }
        tx.commit()
    })
    .await
}

/// Collects up to `max` events: waits for the first, then for more until `linger` has passed.
/// A `Reset` or `RunEnd` event closes the batch (events after it wait for the next batch). Returns
/// empty when the channel closed or on shutdown.
///
/// Events are taken in bulk (`recv_many`): one wake-up per burst instead of a hand-off per event.
async fn collect(
    events: &mut mpsc::Receiver<SourceEvent>,
    pending: &mut std::collections::VecDeque<SourceEvent>,
    max: usize,
    linger: Duration,
    shutdown: &CancellationToken,
) -> Vec<SourceEvent> {
    let closes = |e: &SourceEvent| matches!(e.kind, EventKind::Reset | EventKind::RunEnd);
    let mut batch = Vec::new();
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + linger;
    loop {
        while let Some(e) = pending.pop_front() {
            let done = closes(&e);
            batch.push(e);
            if done {
                return batch;
            }
            if batch.len() >= max {
                return batch;
            }
        }
        let want = max - batch.len();
        let got = if batch.is_empty() {
            tokio::select! {
                n = events.recv_many(&mut buf, want) => n,
                _ = shutdown.cancelled() => 0,
            }
        } else {
            tokio::select! {
                n = events.recv_many(&mut buf, want) => n,
                _ = tokio::time::sleep_until(deadline) => 0,
                _ = shutdown.cancelled() => 0,
            }
        };
        if got == 0 {
            return batch;
        }
        pending.extend(buf.drain(..));
    }
}
