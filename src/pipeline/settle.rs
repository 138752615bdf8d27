//! Settling: the previous run's leftover intents at start ([`Pipeline::resolve_leftovers`]), and the
//! batch in flight: launched to every sink's worker, then settled — outcomes recorded,
//! rejections dead-lettered, events accounted, the checkpoint moved once every sink acknowledged.

use super::*;

impl Pipeline {
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

    /// Starts applying a planned batch: every sink concurrently, on a task of its own.
    pub(super) fn launch(&self, mut batch: PlannedBatch, shutdown: &CancellationToken) -> Applying {
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
    pub(super) async fn finish(&mut self, applying: Applying) -> Result<(), PipelineError> {
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
    pub(super) async fn settle(
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

    pub(super) fn merge_report(&mut self, report: WorkerReport) {
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
