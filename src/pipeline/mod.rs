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

mod accounting;
pub mod apply;
pub mod classify;
mod collect;
mod error;
mod intake;
pub mod plan;
mod settle;
mod stats;

pub use error::PipelineError;
pub use stats::{RunStats, SinkStats};

use apply::{DeadLetters, SinkWorker, WorkerReport};
use collect::collect;

use crate::config::PipelineConfig;
use crate::control::Control;
use crate::logring::LogRing;
use crate::metrics;
use crate::model::{EventKind, IndicatorState, Payload, SourceEvent};
use crate::sinks::{Change, ChangeOp, Sink};
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
                            let planned = planned.iter().map(|p| &p.change);
                            tx.journal_event(&journal, source, note, state, planned)?;
                        }
                        changes.extend(planned.into_iter().map(|p| (*index, p)))
                    }
                    Err(PlanError::Stale { version, applied }) => {
                        tracing::debug!(id = %state.id, %version, %applied, "stale version of an indicator (replayed history): nothing to do");
                        if let Some(note) = notes.get(*index).filter(|_| journal.enabled()) {
                            tx.journal_stale_event(&journal, source, note, state, &applied)?;
                        }
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
}
