//! The per-indicator event journal behind `iocsync explain`: each event an indicator received, what
//! the classifier made of it, the changes planned for it per sink and their outcomes. Bounded: the
//! last `pipeline.journal_events` events per indicator (pruned on write) and `pipeline.journal_days`
//! of age (an occasional sweep). Written inside the transactions the pipeline already runs, so it
//! costs a few statements per event, no extra commit.

use super::journal_values::keys_of;
use super::{now_ms, parse_json, State, StateError, Tx};
use crate::ioc::Ioc;
use crate::model::{Change, IndicatorState, Payload};
use rusqlite::params;
use serde::Serialize;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Sweep journal rows older than the retention age at most this often.
const SWEEP_EVERY_MS: i64 = 3_600_000;

/// How much of the journal to keep.
#[derive(Debug, Clone, Default)]
pub struct JournalPolicy {
    /// Events kept per indicator; 0 turns the journal off.
    pub events: u32,
    /// Age limit in days; 0 keeps events regardless of age.
    pub days: u32,
    /// When the next age sweep is due (unix ms), shared by every copy of the policy.
    next_sweep_ms: Arc<AtomicI64>,
}

impl JournalPolicy {
    /// A policy keeping `events` per indicator for `days` (0 = off / no age limit).
    pub fn new(events: u32, days: u32) -> Self {
        JournalPolicy {
            events,
            days,
            next_sweep_ms: Arc::new(AtomicI64::new(0)),
        }
    }

    /// True when events are journaled at all.
    pub fn enabled(&self) -> bool {
        self.events > 0
    }
}

/// What the pipeline knows of the source event an indicator state came from.
#[derive(Debug, Clone)]
pub struct EventNote {
    /// The source position, when the event has one.
    pub position: Option<String>,
    /// `create`, `update`, `delete`, `merge` or `expiry`.
    pub kind: &'static str,
    /// For a merge: the surviving indicator (the others were merged into it).
    pub merge_target: Option<String>,
}

impl EventNote {
    /// The note for an event of kind `kind` (its metrics label) at `position`.
    pub fn of(position: Option<&str>, kind: &'static str, payload: &Payload) -> Self {
        let (kind, merge_target) = match payload {
            Payload::StixMerge { object, .. } => (
                "merge",
                object
                    .get("id")
                    .and_then(|i| i.as_str())
                    .map(str::to_string),
            ),
            _ => (kind, None),
        };
        EventNote {
            position: position.map(str::to_string),
            kind,
            merge_target,
        }
    }
}

/// The sink-side outcome of one journaled change.
#[derive(Debug, Clone)]
pub enum ChangeFate<'a> {
    /// The sink applied it.
    Applied {
        /// The sink's id for the entry, when it gave one.
        remote_id: Option<&'a str>,
    },
    /// The sink refused it (dead-lettered) with this message.
    Rejected {
        /// The sink's reason.
        reason: &'a str,
    },
}

impl Tx<'_> {
    /// Journals one planned indicator state: the event, its classification and the ids of the
    /// intents planned for it (the first and last of `changes`: the planner writes an indicator's
    /// intents one after the other), indexes it under the values it mentions, then drops the
    /// indicator's events beyond the policy's count. The changes themselves are journaled when
    /// they settle (until then their intents say what they are). Nothing when the journal is off.
    pub fn journal_event<'c>(
        &self,
        policy: &JournalPolicy,
        source: &str,
        note: &EventNote,
        state: &IndicatorState,
        changes: impl Iterator<Item = &'c Change> + Clone,
    ) -> Result<(), StateError> {
        self.insert_event(policy, source, note, state, changes, None)
    }

    /// Journals an event the planner ignored as replayed history: its version (STIX `modified`)
    /// is older than `applied`, the version already applied, so it changed nothing.
    pub fn journal_stale_event(
        &self,
        policy: &JournalPolicy,
        source: &str,
        note: &EventNote,
        state: &IndicatorState,
        applied: &str,
    ) -> Result<(), StateError> {
        self.insert_event(
            policy,
            source,
            note,
            state,
            std::iter::empty(),
            Some(applied),
        )
    }

    fn insert_event<'c>(
        &self,
        policy: &JournalPolicy,
        source: &str,
        note: &EventNote,
        state: &IndicatorState,
        changes: impl Iterator<Item = &'c Change> + Clone,
        stale_of: Option<&str>,
    ) -> Result<(), StateError> {
        if !policy.enabled() {
            return Ok(());
        }
        let ids = changes.clone().map(|c| c.intent_id);
        let intents = ids.clone().min().zip(ids.max());
        let merged_away = stale_of.is_none()
            && note.kind == "merge"
            && note.merge_target.as_deref().is_some_and(|t| t != state.id);
        let kind = if merged_away { "merged" } else { note.kind };
        let iocs = (!state.iocs.is_empty())
            .then(|| serde_json::to_string(&state.iocs).unwrap_or_else(|_| "[]".into()));
        // The pattern is kept only when it yielded nothing: the IOCs say the rest, and a skipped
        // value can only be found by its pattern.
        let pattern = state
            .skip
            .is_some()
            .then_some(state.meta.pattern.as_deref())
            .flatten();
        let note_text = merged_away
            .then_some(note.merge_target.as_deref())
            .flatten();
        let keys = keys_of(&state.iocs, changes.map(|c| c.ioc.value.as_str()), pattern);
        self.exec(
            "INSERT INTO journal_event(indicator_id, at, source, position, kind, version, iocs, skip, pattern, note,
               first_intent, last_intent, stale_of, value_key)
             VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            params![
                state.id,
                now_ms(),
                source,
                note.position,
                kind,
                state.version,
                iocs,
                state.skip.map(|s| s.code()),
                pattern,
                note_text,
                intents.map(|i| i.0),
                intents.map(|i| i.1),
                stale_of,
                keys.first()
            ],
        )?;
        if keys.len() > 1 {
            self.index_event_values(self.conn.last_insert_rowid(), &keys[1..])?;
        }
        // Only the newest `events` of this indicator stay (their changes go with them, by trigger).
        // A create is almost always an indicator's first event, and the look for older ones cost
        // a third of journaling one (S1 bench): creates skip it. Replayed creates (a stream reset)
        // are trimmed by the indicator's next other event or by the age sweep.
        if note.kind != "create" {
            self.exec(
                "DELETE FROM journal_event WHERE indicator_id=?1 AND id <= (
                   SELECT id FROM journal_event WHERE indicator_id=?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                params![state.id, policy.events],
            )?;
        }
        Ok(())
    }

    /// Writes one change's row (an outcome, or a failed attempt while it is still pending).
    #[allow(clippy::too_many_arguments)]
    fn journal_change(
        &self,
        sink: &str,
        change: &Change,
        outcome: &str,
        remote_id: Option<&str>,
        retries: u64,
        error: Option<&str>,
    ) -> Result<(), StateError> {
        self.exec(
            "INSERT INTO journal_change(intent_id, sink, op, kind, value, outcome, at, remote_id, retries, error)
             VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT(intent_id) DO UPDATE SET outcome=excluded.outcome, at=excluded.at,
               remote_id=COALESCE(excluded.remote_id, remote_id), retries=excluded.retries,
               error=COALESCE(excluded.error, error)",
            params![
                change.intent_id,
                sink,
                change.op.as_str(),
                change.ioc.kind.as_str(),
                change.ioc.value,
                outcome,
                now_ms(),
                remote_id,
                retries as i64,
                error
            ],
        )
        .map(|_| ())
    }

    /// Records planned changes that a later event of the same batch cancelled before they were
    /// sent (their intents are gone).
    pub fn journal_cancelled(
        &self,
        policy: &JournalPolicy,
        changes: &[(&str, &Change)],
    ) -> Result<(), StateError> {
        if !policy.enabled() {
            return Ok(());
        }
        for (sink, change) in changes {
            self.journal_change(sink, change, "cancelled", None, 0, None)?;
        }
        Ok(())
    }

    /// Records the final outcome of a change in `sink` (`retries`: failed attempts before it).
    pub fn journal_outcome(
        &self,
        sink: &str,
        change: &Change,
        fate: ChangeFate<'_>,
        retries: u64,
    ) -> Result<(), StateError> {
        match fate {
            ChangeFate::Applied { remote_id } => {
                self.journal_change(sink, change, "applied", remote_id, retries, None)
            }
            ChangeFate::Rejected { reason } => {
                self.journal_change(sink, change, "rejected", None, retries, Some(reason))
            }
        }
    }

    /// Notes a failed attempt on changes still pending: how many so far and the last error.
    pub fn journal_attempt_failed(
        &self,
        sink: &str,
        changes: &[Change],
        retries: u64,
        error: &str,
    ) -> Result<(), StateError> {
        for change in changes {
            self.journal_change(sink, change, "pending", None, retries, Some(error))?;
        }
        Ok(())
    }

    /// Drops journal events older than the policy's age, at most once per hour (cheap when due:
    /// rows are in time order, so the scan stops at the first young one).
    pub fn journal_sweep_if_due(&self, policy: &JournalPolicy) -> Result<(), StateError> {
        if policy.days == 0 || !policy.enabled() {
            return Ok(());
        }
        let now = now_ms();
        if policy.next_sweep_ms.load(Ordering::Relaxed) > now {
            return Ok(());
        }
        policy
            .next_sweep_ms
            .store(now + SWEEP_EVERY_MS, Ordering::Relaxed);
        let cutoff = now - i64::from(policy.days) * 86_400_000;
        let removed = self.exec(
            "DELETE FROM journal_event WHERE id < COALESCE(
               (SELECT id FROM journal_event WHERE at >= ?1 ORDER BY id LIMIT 1), 9223372036854775807)",
            [cutoff],
        )?;
        if removed > 0 {
            tracing::debug!(removed, days = policy.days, "journal: old events dropped");
        }
        Ok(())
    }
}

/// One journaled event of an indicator, with what was planned for it.
#[derive(Debug, Clone, Serialize)]
pub struct JournalEvent {
    /// Row id (orders events).
    pub id: i64,
    /// The indicator.
    pub indicator_id: String,
    /// When it was planned (unix ms).
    pub at_ms: i64,
    /// The source's name.
    pub source: String,
    /// The source position, when the event had one.
    pub position: Option<String>,
    /// `create`, `update`, `delete`, `merge`, `merged` (merged into another) or `expiry`.
    pub kind: String,
    /// STIX `modified` / MISP timestamp.
    pub version: Option<String>,
    /// The IOCs the classifier found (empty when none).
    pub iocs: Vec<Ioc>,
    /// The skip code, when the indicator yielded nothing for a reason.
    pub skip: Option<String>,
    /// The pattern, kept for skipped indicators.
    pub pattern: Option<String>,
    /// For `merged`: the indicator it was merged into.
    pub merged_into: Option<String>,
    /// Set when the event was replayed history: the newer version already applied, against
    /// which this one changed nothing.
    pub stale_of: Option<String>,
    /// The changes planned for this event.
    pub changes: Vec<JournalChange>,
}

/// A change planned for a journaled event and what became of it.
#[derive(Debug, Clone, Serialize)]
pub struct JournalChange {
    /// The intent id.
    pub intent_id: i64,
    /// The sink.
    pub sink: String,
    /// `create`, `update` or `delete`.
    pub op: String,
    /// The IOC type.
    pub kind: String,
    /// The IOC value.
    pub value: String,
    /// `pending`, `applied`, `rejected` or `cancelled`.
    pub outcome: String,
    /// When the outcome was recorded (unix ms).
    pub at_ms: Option<i64>,
    /// The sink's id for the entry.
    pub remote_id: Option<String>,
    /// Failed attempts before the outcome (or so far).
    pub retries: i64,
    /// The sink's refusal, or the last error while still pending.
    pub error: Option<String>,
}

/// What a sink holds for a value, as the state records it.
#[derive(Debug, Clone, Serialize)]
pub struct SinkValue {
    /// The sink.
    pub sink: String,
    /// The IOC type as created.
    pub kind: String,
    /// The value.
    pub value: String,
    /// The indicator the entry was created for.
    pub indicator_id: String,
    /// The sink's id.
    pub remote_id: Option<String>,
    /// `live`, `pending_create`, `pending_update`, `pending_delete` or `rejected`.
    pub status: String,
    /// The outstanding intent, when one is.
    pub intent_id: Option<i64>,
}

impl State {
    /// The journaled events of an indicator, oldest first, with their changes.
    pub fn journal_of(&self, indicator_id: &str) -> Result<Vec<JournalEvent>, StateError> {
        self.journal_events(
            "SELECT id, indicator_id, at, source, position, kind, version, iocs, skip, pattern, note,
               first_intent, last_intent, stale_of
             FROM journal_event WHERE indicator_id=?1 ORDER BY id",
            indicator_id,
        )
    }

    fn journal_events(&self, sql: &str, arg: &str) -> Result<Vec<JournalEvent>, StateError> {
        let mut stmt = self.conn.prepare(sql).map_err(self.err())?;
        type Row = (
            i64,
            String,
            i64,
            String,
            Option<String>,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<i64>,
            Option<String>,
        );
        let rows: Vec<Row> = stmt
            .query_map([arg], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                    r.get(11)?,
                    r.get(12)?,
                    r.get(13)?,
                ))
            })
            .map_err(self.err())?
            .collect::<Result<_, _>>()
            .map_err(self.err())?;
        let mut out = Vec::with_capacity(rows.len());
        for (
            id,
            indicator_id,
            at,
            source,
            position,
            kind,
            version,
            iocs,
            skip,
            pattern,
            note,
            first,
            last,
            stale_of,
        ) in rows
        {
            let iocs = match iocs {
                Some(json) => parse_json(&self.path, "journal iocs", &json)?,
                None => Vec::new(),
            };
            out.push(JournalEvent {
                changes: match (first, last) {
                    (Some(first), Some(last)) => self.journal_changes(first, last)?,
                    _ => Vec::new(),
                },
                id,
                indicator_id,
                at_ms: at,
                source,
                position,
                kind,
                version,
                iocs,
                skip,
                pattern,
                merged_into: note,
                stale_of,
            });
        }
        Ok(out)
    }

    /// The changes of intents `first..=last`: settled (or failed) ones from the journal, the
    /// others from their intents, still outstanding.
    fn journal_changes(&self, first: i64, last: i64) -> Result<Vec<JournalChange>, StateError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT intent_id, sink, op, kind, value, outcome, at, remote_id, retries, error
                 FROM journal_change WHERE intent_id BETWEEN ?1 AND ?2 ORDER BY intent_id",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([first, last], |r| {
                Ok(JournalChange {
                    intent_id: r.get(0)?,
                    sink: r.get(1)?,
                    op: r.get(2)?,
                    kind: r.get(3)?,
                    value: r.get(4)?,
                    outcome: r.get(5)?,
                    at_ms: r.get(6)?,
                    remote_id: r.get(7)?,
                    retries: r.get(8)?,
                    error: r.get(9)?,
                })
            })
            .map_err(self.err())?;
        let mut out: Vec<JournalChange> = rows.collect::<Result<_, _>>().map_err(self.err())?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, sink, change FROM intent WHERE id BETWEEN ?1 AND ?2 ORDER BY id",
            )
            .map_err(self.err())?;
        let intents = stmt
            .query_map([first, last], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        for (id, sink, json) in intents {
            if out.iter().any(|c| c.intent_id == id) {
                continue;
            }
            let change: Change = parse_json(&self.path, "intent", &json)?;
            out.push(JournalChange {
                intent_id: id,
                sink,
                op: change.op.as_str().to_string(),
                kind: change.ioc.kind.as_str().to_string(),
                value: change.ioc.value,
                outcome: "pending".into(),
                at_ms: None,
                remote_id: change.remote_id,
                retries: 0,
                error: None,
            });
        }
        out.sort_by_key(|c| c.intent_id);
        Ok(out)
    }

    /// The IOCs an indicator desires now, `None` when the state never saw it.
    pub fn desired_iocs(&self, indicator_id: &str) -> Result<Option<Vec<Ioc>>, StateError> {
        use rusqlite::OptionalExtension;
        let json: Option<String> = self
            .conn
            .query_row(
                "SELECT iocs FROM indicator WHERE id=?1",
                [indicator_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())?;
        json.map(|j| parse_json(&self.path, "indicator iocs", &j))
            .transpose()
    }
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
