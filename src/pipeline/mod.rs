//! The pipeline: reads source events in micro-batches, classifies and plans them, applies the planned
//! changes to every sink (batched, retried with backoff), records outcomes, dead-letters rejections,
//! counts everything, and moves the checkpoint only once every sink has acknowledged a batch.
//!
//! One batch at a time: while sinks work, the bounded channel fills and the source waits (back-pressure
//! without unbounded memory). Within a batch all sinks work concurrently, each in chunks of its own
//! `max_batch()`. Planning writes the intents before any sink call, so a crash at any point leaves
//! either nothing to do or intents that [`Pipeline::resolve_leftovers`] settles at the next start.

mod collect;
mod stats;
mod worker;

pub use stats::{RunStats, SinkStats};

use collect::collect;
use worker::{DeadLetters, SinkWorker, WorkerReport};

use crate::classify::{classify_object, Classified, ClassifyOptions};
use crate::config::PipelineConfig;
use crate::metrics;
use crate::model::{EventKind, IndicatorState, Payload, SourceEvent};
use crate::planner::{plan_indicator, Planned, SinkCaps};
use crate::sinks::{Change, ChangeOp, Sink, SinkError};
use crate::skip::SkipReason;
use crate::state::{State, StateError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;
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

/// Whether the run ends by itself (file, `--once`) or runs until stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// Stops at end of input; gives up on a sink after `retry_attempts`.
    Ends,
    /// Runs until shutdown; retries forever.
    Daemon,
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
pub(super) async fn with_state<R: Send + 'static>(
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
