//! One sink's share of a batch: chunks, retries with backoff, settling ambiguous failures through
//! `resolve`, recording outcomes and dead-lettering rejections.

use super::{with_state, PipelineError, RunMode};
use crate::config::PipelineConfig;
use crate::metrics;
use crate::sinks::{Change, ChangeOp, Outcome, Resolution, Sink, SinkError};
use crate::state::{ChangeFate, EntryStatus, State};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Writes dead letters (JSONL, for people to read).
pub(super) struct DeadLetters {
    pub(super) path: PathBuf,
}

impl DeadLetters {
    pub(super) fn write(
        &self,
        sink: &str,
        change: &Change,
        reason: &str,
    ) -> Result<(), PipelineError> {
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
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&self.path).map_err(err)?;
        // Owner only, whatever the umask: a dead letter carries indicator ids, values and metadata.
        // Narrowed on every write, so a file from before this rule is fixed too.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(err)?;
        }
        writeln!(file, "{record}").map_err(err)?;
        file.sync_data().map_err(err)
    }
}

/// A change's final fate.
pub(super) enum Final {
    Applied(Option<String>),
    /// Refused, with the sink's reason.
    Rejected(String),
}

/// What one sink worker did with its share of a batch.
pub(super) struct WorkerReport {
    pub(super) sink: &'static str,
    pub(super) applied: BTreeMap<(ChangeOp, String), u64>,
    pub(super) rejected: Vec<i64>,
    pub(super) retries: u64,
}

/// Applies one sink's changes: chunks, retries with backoff, records outcomes, dead-letters.
pub(super) struct SinkWorker {
    pub(super) sink: Arc<dyn Sink>,
    pub(super) state: Arc<Mutex<State>>,
    pub(super) cfg: PipelineConfig,
    pub(super) mode: RunMode,
    pub(super) dead_letters: DeadLetters,
    pub(super) shutdown: CancellationToken,
}

impl SinkWorker {
    /// True when outcomes are journaled (`pipeline.journal_events` > 0).
    fn journal(&self) -> bool {
        self.cfg.journal_events > 0
    }

    pub(super) fn report(&self) -> WorkerReport {
        WorkerReport {
            sink: self.sink.name(),
            applied: BTreeMap::new(),
            rejected: Vec::new(),
            retries: 0,
        }
    }

    pub(super) async fn apply_all(
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

    pub(super) async fn apply_chunk(
        &self,
        mut pending: Vec<Change>,
        report: &mut WorkerReport,
    ) -> Result<(), PipelineError> {
        let name = self.sink.name();
        let mut attempt = 0usize;
        // Failed calls so far for this chunk (not reset by progress, unlike `attempt`): the journal's
        // retry count.
        let mut failed_calls = 0u64;
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
                            done.push((change, Final::Rejected(reason)));
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
            let call_ms = started.elapsed().as_millis() as u64;
            let recording = Instant::now();
            let recorded = done.len();
            record_outcomes(&self.state, name, done, failed_calls, self.journal()).await?;
            tracing::debug!(
                sink = name,
                recorded,
                call_ms,
                record_ms = recording.elapsed().as_millis() as u64,
                "chunk settled"
            );
            pending = retry;
            if let Some((error, after)) = last_error {
                if pending.is_empty() {
                    break;
                }
                attempt += 1;
                failed_calls += 1;
                report.retries += 1;
                if self.journal() {
                    let still = pending.clone();
                    let text = error.to_string();
                    with_state(&self.state, move |s| {
                        let tx = s.tx()?;
                        tx.journal_attempt_failed(name, &still, failed_calls, &text)?;
                        tx.commit()
                    })
                    .await?;
                }
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
    pub(super) fn apply_known<'a>(
        &'a self,
        changes: Vec<Change>,
        report: &'a mut WorkerReport,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), PipelineError>> + Send + 'a>>
    {
        Box::pin(self.apply_chunk(changes, report))
    }

    pub(super) async fn settle(
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
                    record_outcomes(&self.state, name, done, *attempt as u64, self.journal())
                        .await?;
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
pub(super) fn count_applied(sink: &'static str, change: &Change, report: &mut WorkerReport) {
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
pub(super) async fn retry_wait(
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
pub(super) fn backoff_delay(cfg: &PipelineConfig, attempt: usize) -> Duration {
    crate::remote::Backoff::new(cfg.retry_min, cfg.retry_max).delay_of_attempt(attempt)
}

/// SinkError is not Clone (it can hold an io::Error); rebuild what the caller reports.
pub(super) fn clone_error(error: &SinkError) -> SinkError {
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

pub(super) fn sink_of(error: &SinkError) -> &'static str {
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

/// Records final outcomes: updates what the sink holds, journals them (`retries`: failed calls
/// before them) and removes the intents, in one transaction.
pub(super) async fn record_outcomes(
    state: &Arc<Mutex<State>>,
    sink: &'static str,
    done: Vec<(Change, Final)>,
    retries: u64,
    journal: bool,
) -> Result<(), PipelineError> {
    if done.is_empty() {
        return Ok(());
    }
    with_state(state, move |s| {
        let tx = s.tx()?;
        let mut settled = Vec::with_capacity(done.len());
        for (change, fate) in done {
            if journal {
                let fate_of = match &fate {
                    Final::Applied(remote_id) => ChangeFate::Applied {
                        remote_id: remote_id.as_deref().or(change.remote_id.as_deref()),
                    },
                    Final::Rejected(reason) => ChangeFate::Rejected { reason },
                };
                tx.journal_outcome(sink, &change, fate_of, retries)?;
            }
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
                (ChangeOp::Create, Final::Rejected(_)) => {
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
                (ChangeOp::Update, Final::Rejected(_)) => {
                    tx.settle_entry(sink, kind, value, EntryStatus::Live, None, None)?;
                }
                (ChangeOp::Delete, _) => tx.remove_sink_entry(sink, kind, value)?,
            }
            settled.push(change.intent_id);
        }
        tx.delete_intents(settled)?;
        tx.commit()
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ioc::IocKind;
    use crate::sinks::jsonl::tests_support::change;

    #[cfg(unix)]
    #[test]
    fn dead_letters_are_private_to_the_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/dead-letters.jsonl");
        let letters = DeadLetters { path: path.clone() };
        let rejected = change(ChangeOp::Create, IocKind::Md5, "aa", "indicator--1");
        letters.write("jsonl", &rejected, "no").expect("write");
        let mode =
            |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        // A file left wider by an older version is narrowed at the next write.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        letters.write("jsonl", &rejected, "again").expect("write");
        assert_eq!(mode(&path), 0o600);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 2);
    }
}
