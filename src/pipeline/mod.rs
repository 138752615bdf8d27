//! The pipeline: reads source events in micro-batches, classifies and plans them, applies the planned
//! changes to every sink (batched, retried with backoff), records outcomes, dead-letters rejections,
//! counts everything, and moves the checkpoint only once every sink has acknowledged a batch.
//!
//! Two batches at a time: while the sinks apply one, the next is classified and planned (its plan
//! waits and is redone if it touches a value still in flight); beyond that the bounded channel fills
//! and the source waits (back-pressure without unbounded memory). Within a batch all sinks work
//! concurrently, each in chunks of its own `max_batch()`. Planning writes the intents before any sink
//! call, so a crash at any point leaves either nothing to do or intents that
//! [`Pipeline::resolve_leftovers`] settles at the next start.

pub mod apply;
pub mod classify;
mod collect;
pub mod plan;
mod stats;

pub use stats::{RunStats, SinkStats};

use apply::{DeadLetters, SinkWorker, WorkerReport};
use collect::collect;

use crate::config::PipelineConfig;
use crate::control::Control;
use crate::logring::LogRing;
use crate::metrics;
use crate::model::{EventKind, IndicatorState, Payload, SourceEvent};
use crate::sinks::{Change, ChangeOp, Sink, SinkError};
use crate::skip::SkipReason;
use crate::state::{EventNote, JournalPolicy, State, StateError};
use classify::{classify_object, merged_away, Classified, ClassifyOptions};
use plan::{plan_indicator, InFlight, PlanError, Planned, SinkCaps};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

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

/// A batch's events, counted and classified.
struct ClassifiedBatch {
    /// Indicator states to plan, with the index of the event each came from.
    states: Vec<(usize, IndicatorState)>,
    marks: BatchMarks,
    /// Per event (by index): what the journal records of it.
    notes: Vec<EventNote>,
}

/// What a batch's events say beyond their changes; acted on once the batch is settled.
struct BatchMarks {
    /// Events whose outcome is decided by their changes (not skipped).
    with_effects: BTreeSet<usize>,
    /// The checkpoint to write.
    last_position: Option<String>,
    /// The source was reset remotely.
    reset: bool,
    /// The source's run ended (file, MISP poll).
    run_end: bool,
}

/// Indicator states planned per transaction. Every commit writes each page the transaction dirtied,
/// so fewer, larger transactions are cheaper (S1 bench: 250 per transaction ran 17 % slower than
/// 1,000, and 100 another 10 %); the cap bounds how long the batch in flight waits for the state
/// lock to record its outcomes when `batch_events` is set high.
const PLAN_CHUNK: usize = 1000;

/// What planning a chunk of a batch came to.
enum ChunkPlan {
    /// Committed: the changes (with the index of the event each came from) and the not-yet-sent
    /// intents of this batch that it cancelled.
    Planned {
        changes: Vec<(usize, Planned)>,
        cancelled: Vec<i64>,
    },
    /// Rolled back: a state touches a value of the batch in flight. The states come back.
    Busy {
        states: Vec<(usize, IndicatorState)>,
        why: String,
    },
}

/// A batch planned, its intents durable, on its way to the sinks.
struct PlannedBatch {
    events: usize,
    /// The changes until launched (with the index of the event each came from).
    planned: Vec<(usize, Planned)>,
    /// Once launched: intent id → index of the event it came from.
    owner: HashMap<i64, usize>,
    marks: BatchMarks,
    planned_in: Duration,
}

impl PlannedBatch {
    /// A reset clears the checkpoint and a run end closes the run's statistics: the next batch is
    /// not even planned before they are done.
    fn is_barrier(&self) -> bool {
        self.marks.reset || self.marks.run_end
    }
}

/// One sink worker's answer for its share of a batch.
type SinkResult = Result<WorkerReport, (WorkerReport, PipelineError)>;

/// A batch whose sink work runs on its own task (aborted if the pipeline is dropped).
struct Applying {
    batch: PlannedBatch,
    task: AbortOnDropHandle<Vec<SinkResult>>,
    /// The values it changes, which the next batch's planning must not touch.
    in_flight: Arc<InFlight>,
    started: Instant,
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
    /// When to look for indicators that expired next (never with `keep_expired`).
    next_expiry_sweep: Option<Instant>,
    /// Operator control: pause/resume, and the run in progress.
    control: Control,
    /// The [`LogRing`] seq of the current run's first log line.
    run_first_seq: u64,
    /// What the event journal keeps (`iocsync explain`).
    journal: JournalPolicy,
}

/// Log lines kept with each recorded run (its last ones).
pub const RUN_LOG_LINES: usize = 1_000;

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
            expand_max: cfg.expand_max,
            expired_at: None,
        };
        let cfg_keep_expired = cfg.keep_expired;
        let journal = JournalPolicy::new(cfg.journal_events, cfg.journal_days);
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
            next_expiry_sweep: (!cfg_keep_expired).then(Instant::now),
            control: Control::new(source_name, false),
            run_first_seq: LogRing::global().next_seq(),
            journal,
        }
    }

    /// Puts the pipeline under operator control (pause/resume); by default it has a control of its
    /// own that nobody pauses.
    pub fn set_control(&mut self, control: Control) {
        metrics::global().set("iocsync_paused", &[], 0.0);
        self.control = control;
    }

    /// The checkpoint to resume from.
    pub async fn checkpoint(&self) -> Result<Option<String>, PipelineError> {
        let source = self.source_name;
        with_state(&self.state, move |s| s.checkpoint(source)).await
    }

    /// A handle on the state for the source: its own durable notes and the held indicator ids,
    /// through this pipeline's connection.
    pub fn source_store(&self) -> crate::sources::SourceStore {
        crate::sources::SourceStore::new(Arc::clone(&self.state))
    }

    /// The statistics of the current run so far.
    pub fn stats(&self) -> &RunStats {
        &self.stats
    }

    /// The summary of the last run this pipeline finished and recorded in the history (also when
    /// `run()` returned an error after recording it).
    pub fn last_run(&self) -> Option<&RunStats> {
        self.finished.as_ref()
    }

    /// Ends the current run when its `run()` future was dropped mid sink call (the shutdown drain
    /// bound expired): what was not accounted for yet is pending, `why` is recorded as its error,
    /// and the run goes into the history like any other.
    pub async fn abandon_run(&mut self, why: String) -> RunStats {
        let accounted = self.stats.applied + self.stats.skipped_total() + self.stats.dead_lettered;
        self.stats.pending = self.stats.received.saturating_sub(accounted);
        self.stats.errors.push(why);
        let snapshot = self.stats.clone();
        match self.finish_run().await {
            Ok(stats) => stats,
            Err(e) => {
                tracing::warn!(cause = %e, "cannot record the abandoned run in the history");
                snapshot
            }
        }
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
    ///
    /// Two batches overlap: while batch N is applied (on its own task), batch N+1 is collected,
    /// classified and planned. N+1 is applied only once N is settled and checkpointed, so sinks see
    /// one batch at a time and checkpoints move in order.
    pub async fn run(
        &mut self,
        mut events: mpsc::Receiver<SourceEvent>,
        shutdown: &CancellationToken,
    ) -> Result<RunStats, PipelineError> {
        self.run_started = Instant::now();
        self.run_first_seq = LogRing::global().next_seq();
        self.stats = RunStats::new(self.source_name);
        self.finished = None;
        // Events received past a batch boundary (after a `RunEnd`) wait here for the next batch.
        let mut carry = VecDeque::new();
        let mut applying: Option<Applying> = None;
        let outcome = loop {
            match self
                .step(&mut events, &mut carry, &mut applying, shutdown)
                .await
            {
                Ok(true) => continue,
                Ok(false) => break Ok(()),
                Err(err) => break Err(err),
            }
        };
        // A batch still on its way is settled whatever stopped the loop; the first error wins.
        let outcome = match applying.take() {
            Some(batch) => {
                let settled = self.finish(batch).await;
                outcome.and(settled)
            }
            None => outcome,
        };
        if let Err(err) = outcome {
            // Everything received and not yet accounted stays pending.
            let accounted =
                self.stats.applied + self.stats.skipped_total() + self.stats.dead_lettered;
            self.stats.pending = self.stats.received.saturating_sub(accounted);
            self.stats.errors.push(err.to_string());
            self.finish_run().await?;
            return Err(err);
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

    /// One turn of the loop: the next batch is collected, classified and planned while the previous
    /// one is applied, then launched. False when there is nothing more to do.
    async fn step(
        &mut self,
        events: &mut mpsc::Receiver<SourceEvent>,
        carry: &mut VecDeque<SourceEvent>,
        applying: &mut Option<Applying>,
        shutdown: &CancellationToken,
    ) -> Result<bool, PipelineError> {
        if self.control.is_paused() && !shutdown.is_cancelled() {
            // The batch in flight is finished and checkpointed before the pause.
            if let Some(previous) = applying.take() {
                self.finish(previous).await?;
            }
            self.pause_until_resumed(shutdown).await;
            return Ok(!shutdown.is_cancelled());
        }
        if let Some(Applying {
            batch,
            mut task,
            in_flight,
            started,
        }) = applying.take()
        {
            // Settle the batch in flight as soon as it is done (checkpoint, pings) unless events
            // arrive first: an idle source must not hold its checkpoint back.
            tokio::select! {
                done = &mut task => {
                    self.settle(batch, done, started).await?;
                    return Ok(true);
                }
                event = events.recv() => {
                    carry.extend(event);
                    *applying = Some(Applying { batch, task, in_flight, started });
                }
            }
        }
        if let Some(due) = self.next_expiry_sweep {
            if carry.is_empty() && applying.is_none() && Instant::now() < due {
                // Idle: the next expiry is a reason to wake up as much as the next event.
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => {}
                    _ = self.control.wait_paused() => return Ok(true),
                    event = events.recv() => carry.extend(event),
                    _ = tokio::time::sleep_until(due.into()) => {}
                }
            }
            if Instant::now() >= due {
                self.sweep_expired(carry).await?;
                if carry.is_empty() && !shutdown.is_cancelled() {
                    // Nothing expired and nothing arrived: wait again (for both).
                    return Ok(true);
                }
            }
        }
        if carry.is_empty() && applying.is_none() {
            // Idle: a pause must be noticed before the next event is taken, not after its batch.
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {}
                _ = self.control.wait_paused() => return Ok(true),
                event = events.recv() => carry.extend(event),
            }
        }
        let events_in = collect(
            events,
            carry,
            self.cfg.batch_events,
            self.cfg.linger,
            shutdown,
        )
        .await;
        if events_in.is_empty() {
            return Ok(false);
        }
        let events = events_in.len();
        let classified = self.classify_batch(events_in);
        let planning = Instant::now();
        let notes = Arc::new(classified.notes);
        let planned = self.plan_batch(classified.states, notes, applying).await?;
        let batch = PlannedBatch {
            events,
            planned,
            owner: HashMap::new(),
            marks: classified.marks,
            planned_in: planning.elapsed(),
        };
        if let Some(previous) = applying.take() {
            self.finish(previous).await?;
        }
        let barrier = batch.is_barrier();
        let launched = self.launch(batch, shutdown);
        if barrier || shutdown.is_cancelled() {
            self.finish(launched).await?;
        } else {
            *applying = Some(launched);
        }
        Ok(!shutdown.is_cancelled())
    }

    /// Waits while paused (or until shutdown), saying so in the log and the metrics.
    async fn pause_until_resumed(&self, shutdown: &CancellationToken) {
        tracing::info!(
            source = self.source_name,
            "paused by operator: the batch in flight is applied and checkpointed; no more events are taken until resumed"
        );
        metrics::global().set("iocsync_paused", &[], 1.0);
        tokio::select! {
            _ = self.control.wait_resumed() => {
                tracing::info!(source = self.source_name, "resumed: continuing from the checkpoint");
            }
            _ = shutdown.cancelled() => {}
        }
        metrics::global().set("iocsync_paused", &[], 0.0);
    }

    /// Queues an [`EventKind::Expiry`] for each indicator whose validity ended while it held IOCs:
    /// planned like any event, so its values leave the sinks through intents, and a value another
    /// live indicator holds stays.
    async fn sweep_expired(
        &mut self,
        carry: &mut VecDeque<SourceEvent>,
    ) -> Result<(), PipelineError> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let due = with_state(&self.state, move |s| {
            s.expired_indicators(now_ms, PLAN_CHUNK)
        })
        .await?;
        // A full page means more are due: look again at the next turn.
        let wait = if due.len() >= PLAN_CHUNK {
            Duration::ZERO
        } else {
            self.cfg.expiry_interval
        };
        self.next_expiry_sweep = Some(Instant::now() + wait);
        if !due.is_empty() {
            tracing::info!(
                count = due.len(),
                "indicators expired: removing what they held"
            );
        }
        for (id, stored) in due.into_iter().rev() {
            carry.push_front(SourceEvent {
                position: None,
                kind: EventKind::Expiry,
                payload: Payload::Classified(Box::new(IndicatorState {
                    id,
                    iocs: Vec::new(),
                    skip: Some(SkipReason::Expired),
                    meta: stored.meta,
                    version: stored.version,
                })),
            });
        }
        Ok(())
    }

    /// Records the current run in the history and starts a new one.
    async fn finish_run(&mut self) -> Result<RunStats, PipelineError> {
        let elapsed = self.run_started.elapsed();
        let mut stats = std::mem::replace(&mut self.stats, RunStats::new(self.source_name));
        stats.ended = Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        stats.duration_ms = elapsed.as_millis() as u64;
        self.run_started = Instant::now();
        let source = self.source_name;
        let json = serde_json::to_value(&stats).map_err(|e| StateError::Encode {
            what: "the run summary",
            message: e.to_string(),
        })?;
        let ended_ms = chrono::Utc::now().timestamp_millis();
        let started_ms = ended_ms - stats.duration_ms as i64;
        let first_of_invocation = self.finished.is_none();
        // Logged before the run is recorded, so that the run's own log ends with it.
        tracing::info!(
            source,
            received = stats.received,
            applied = stats.applied,
            skipped = stats.skipped_total(),
            dead_lettered = stats.dead_lettered,
            pending = stats.pending,
            "run finished"
        );
        if stats.received > 0
            || !stats.errors.is_empty()
            || (self.mode == RunMode::Ends && first_of_invocation)
        {
            // Every line logged since the run started, also by concurrent tasks (the sinks', the
            // source's), is the run's.
            let lines = LogRing::global().since(self.run_first_seq, RUN_LOG_LINES);
            with_state(&self.state, move |s| {
                let id = s.record_run(source, started_ms, ended_ms, &json)?;
                s.record_run_log(id, &lines)
            })
            .await?;
        }
        self.control.end_run();
        self.run_first_seq = LogRing::global().next_seq();
        self.finished = Some(stats.clone());
        Ok(stats)
    }

    /// Counts and classifies a batch's events; skips are counted here.
    fn classify_batch(&mut self, batch: Vec<SourceEvent>) -> ClassifiedBatch {
        if self.stats.received == 0 && self.stats.heartbeats == 0 && self.stats.errors.is_empty() {
            // A run starts with its first event, not when the previous one ended (MISP idles between).
            self.run_started = Instant::now();
            self.stats.started = RunStats::new(self.source_name).started;
            // The first run of an invocation logs from its start (connecting, reading a file).
            let from = match self.finished {
                None => self.run_first_seq,
                Some(_) => LogRing::global().next_seq(),
            };
            self.run_first_seq = self.control.begin_run_from(from);
        }
        if self.next_expiry_sweep.is_some() {
            self.classify.expired_at = Some(chrono::Utc::now());
        }
        let mut states: Vec<(usize, IndicatorState)> = Vec::new();
        let mut removals: Vec<(usize, IndicatorState)> = Vec::new();
        let mut last_position: Option<String> = None;
        let mut reset = false;
        let mut run_end = false;
        let mut notes = Vec::with_capacity(batch.len());
        for (index, event) in batch.into_iter().enumerate() {
            let SourceEvent {
                position,
                kind,
                payload,
            } = event;
            if position.is_some() {
                last_position.clone_from(&position);
            }
            let kind_label = match kind {
                EventKind::Create => "create",
                EventKind::Update => "update",
                EventKind::Delete => "delete",
                EventKind::Heartbeat => "heartbeat",
                EventKind::Other => "other",
                EventKind::Reset => "reset",
                EventKind::RunEnd => "run_end",
                EventKind::Expiry => "expiry",
            };
            metrics::global().inc("iocsync_events_received_total", &[("type", kind_label)], 1);
            notes.push(EventNote::of(position.as_deref(), kind_label, &payload));
            match kind {
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
            match payload {
                Payload::None => self.stats.heartbeats += 1,
                Payload::Malformed { reason } => {
                    self.stats.received += 1;
                    tracing::warn!(position = position.as_deref().unwrap_or("-"), reason = %reason, "skipping malformed event");
                    self.skip(SkipReason::MalformedEvent);
                }
                Payload::Stix(object) => {
                    self.stats.received += 1;
                    self.classify_stix(index, kind, &object, &mut states);
                }
                Payload::StixMerge { object, merged } => {
                    self.stats.received += 1;
                    for id in merged_away(&object, &merged) {
                        // Merged away: whatever it held goes, unless the target holds it too.
                        removals.push((index, IndicatorState::removed(id)));
                    }
                    self.classify_stix(index, kind, &object, &mut states);
                }
                Payload::Classified(state) => {
                    self.stats.received += 1;
                    states.push((index, *state));
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

        ClassifiedBatch {
            states,
            marks: BatchMarks {
                with_effects,
                last_position,
                reset,
                run_end,
            },
            notes,
        }
    }

    /// Classifies one STIX object: an indicator state to plan, or a counted skip.
    fn classify_stix(
        &mut self,
        index: usize,
        kind: EventKind,
        object: &serde_json::Value,
        states: &mut Vec<(usize, IndicatorState)>,
    ) {
        match classify_object(kind, object, self.classify) {
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

    /// Plans a batch's indicator states, [`PLAN_CHUNK`] per transaction: all intents are durable
    /// before any sink call, and the batch in flight can record its outcomes between chunks instead
    /// of waiting for the whole plan. A chunk touching a value in flight is rolled back, the batch in
    /// flight is waited for, and the chunk planned again.
    async fn plan_batch(
        &mut self,
        states: Vec<(usize, IndicatorState)>,
        notes: Arc<Vec<EventNote>>,
        applying: &mut Option<Applying>,
    ) -> Result<Vec<(usize, Planned)>, PipelineError> {
        let mut planned: Vec<(usize, Planned)> = Vec::new();
        let mut cancelled: HashSet<i64> = HashSet::new();
        let mut rest = VecDeque::from(states);
        while !rest.is_empty() {
            let chunk: Vec<_> = rest.drain(..PLAN_CHUNK.min(rest.len())).collect();
            let in_flight = applying
                .as_ref()
                .map(|a| Arc::clone(&a.in_flight))
                .unwrap_or_default();
            match self
                .plan_chunk(chunk, in_flight, Arc::clone(&notes))
                .await?
            {
                ChunkPlan::Planned {
                    changes,
                    cancelled: gone,
                } => {
                    planned.extend(changes);
                    cancelled.extend(gone);
                }
                ChunkPlan::Busy { states, why } => {
                    tracing::debug!(%why, "waiting for the batch in flight before planning the next");
                    if let Some(previous) = applying.take() {
                        self.finish(previous).await?;
                    }
                    for state in states.into_iter().rev() {
                        rest.push_front(state);
                    }
                }
            }
        }
        // A later indicator of the batch may have cancelled what an earlier one planned.
        planned.retain(|(_, p)| !cancelled.contains(&p.change.intent_id));
        Ok(planned)
    }

    /// Plans some indicator states in one transaction, or rolls it back and hands the states back
    /// when one touches a value of the batch in flight.
    async fn plan_chunk(
        &self,
        states: Vec<(usize, IndicatorState)>,
        in_flight: Arc<InFlight>,
        notes: Arc<Vec<EventNote>>,
    ) -> Result<ChunkPlan, PipelineError> {
        let caps = self.caps.clone();
        let (source, journal) = (self.source_name, self.journal.clone());
        with_state(&self.state, move |s| {
            let tx = s.tx()?;
            let mut changes: Vec<(usize, Planned)> = Vec::new();
            let mut cancelled = Vec::new();
            for (index, state) in &states {
                match plan_indicator(&tx, &caps, state, &in_flight, &mut cancelled) {
                    Ok(planned) => {
                        if let Some(note) = notes.get(*index).filter(|_| journal.enabled()) {
                            let ids = planned.iter().map(|p| p.change.intent_id);
                            let range = ids.clone().min().zip(ids.max());
                            tx.journal_event(&journal, source, note, state, range)?;
                        }
                        changes.extend(planned.into_iter().map(|p| (*index, p)))
                    }
                    Err(PlanError::State(e)) => return Err(e),
                    Err(why @ PlanError::InFlight { .. }) => {
                        drop(tx); // rolls back
                        return Ok(ChunkPlan::Busy {
                            states,
                            why: why.to_string(),
                        });
                    }
                }
            }
            let gone: Vec<_> = changes
                .iter()
                .filter(|(_, p)| cancelled.contains(&p.change.intent_id))
                .map(|(_, p)| (caps[p.sink].name, &p.change))
                .collect();
            tx.journal_cancelled(&journal, &gone)?;
            tx.journal_sweep_if_due(&journal)?;
            tx.commit()?;
            Ok(ChunkPlan::Planned { changes, cancelled })
        })
        .await
    }

    /// Starts applying a planned batch: every sink concurrently, on a task of its own.
    fn launch(&self, mut batch: PlannedBatch, shutdown: &CancellationToken) -> Applying {
        let mut per_sink: Vec<Vec<Change>> = vec![Vec::new(); self.sinks.len()];
        let mut in_flight = InFlight::default();
        for (index, p) in std::mem::take(&mut batch.planned) {
            in_flight.insert(p.sink, &p.change);
            batch.owner.insert(p.change.intent_id, index);
            per_sink[p.sink].push(p.change);
        }
        let workers: Vec<_> = per_sink
            .into_iter()
            .enumerate()
            .filter(|(_, changes)| !changes.is_empty())
            .map(|(index, changes)| (self.worker(index, shutdown), changes))
            .collect();
        let task =
            tokio::spawn(futures_util::future::join_all(workers.into_iter().map(
                |(worker, changes)| async move { worker.apply_all(changes).await },
            )));
        Applying {
            batch,
            task: AbortOnDropHandle::new(task),
            in_flight: Arc::new(in_flight),
            started: Instant::now(),
        }
    }

    /// Waits for a launched batch and settles it.
    async fn finish(&mut self, applying: Applying) -> Result<(), PipelineError> {
        let Applying {
            batch,
            task,
            started,
            ..
        } = applying;
        let done = task.await;
        self.settle(batch, done, started).await
    }

    /// Accounts a batch the sinks are done with, then moves the checkpoint (and acts on a reset or
    /// a run end it carried).
    async fn settle(
        &mut self,
        batch: PlannedBatch,
        done: Result<Vec<SinkResult>, tokio::task::JoinError>,
        started: Instant,
    ) -> Result<(), PipelineError> {
        let results = done.map_err(|e| PipelineError::Join(e.to_string()))?;
        let mut rejected_intents = Vec::new();
        let mut first_error = None;
        for result in results {
            match result {
                Ok(report) => {
                    rejected_intents.extend(report.rejected.iter().copied());
                    self.merge_report(report);
                }
                Err((report, err)) => {
                    self.merge_report(report);
                    first_error.get_or_insert(err);
                }
            }
        }
        if let Some(err) = first_error {
            return Err(err);
        }
        tracing::debug!(
            events = batch.events,
            changes = batch.owner.len(),
            plan_ms = batch.planned_in.as_millis() as u64,
            apply_ms = started.elapsed().as_millis() as u64,
            "batch applied"
        );
        let rejected_events: BTreeSet<usize> = rejected_intents
            .iter()
            .filter_map(|id| batch.owner.get(id).copied())
            .collect();
        for index in &batch.marks.with_effects {
            if rejected_events.contains(index) {
                self.stats.dead_lettered += 1;
            } else {
                self.stats.applied += 1;
            }
        }

        if let Some(position) = batch.marks.last_position {
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
        if batch.marks.reset {
            let source = self.source_name;
            with_state(&self.state, move |s| s.clear_checkpoint(source)).await?;
            self.committed.send_replace(None);
            tracing::warn!(source, "the source was reset remotely: checkpoint cleared, replaying from the beginning (nothing already applied is sent again)");
        }
        if batch.marks.run_end {
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
