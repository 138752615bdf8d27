//! A batch's intake: every event counted, decoded STIX handed to the classifier, skips named and
//! counted, merges turned into removals of the merged-away indicators.

use super::*;

impl Pipeline {
    /// Counts and classifies a batch's events; skips are counted here.
    pub(super) fn classify_batch(&mut self, batch: Vec<SourceEvent>) -> ClassifiedBatch {
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
    pub(super) fn classify_stix(
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

    pub(super) fn skip(&mut self, reason: SkipReason) {
        *self
            .stats
            .skipped
            .entry(reason.code().to_string())
            .or_default() += 1;
        metrics::global().inc("iocsync_skips_total", &[("reason", reason.code())], 1);
    }
}
