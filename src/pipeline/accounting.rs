//! Run accounting: the pipeline owns a run from its first event to its summary — it records the run
//! (finished or abandoned), its log lines, and keeps the last summary for `app` to print.

use super::*;

impl Pipeline {
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

    /// Records the current run in the history and starts a new one.
    pub(super) async fn finish_run(&mut self) -> Result<RunStats, PipelineError> {
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
}
