//! The planner: turns an indicator's new IOC set into per-sink changes, against what the state says
//! each sink holds. Reference counting and idempotence live here: a value is created in a sink when
//! its first holder appears and deleted when its last holder goes; replaying an event whose effect is
//! already applied plans nothing; a change not yet sent is cancelled rather than undone.

use crate::ioc::{Ioc, IocKind};
use crate::model::{IndicatorState, IocMeta};
use crate::sinks::{Change, ChangeOp};
use crate::state::{EntryStatus, SinkEntry, StateError, Tx};
use std::collections::{BTreeMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

/// What the planner needs to know of a sink.
#[derive(Debug, Clone)]
pub struct SinkCaps {
    /// The sink's name (state key).
    pub name: &'static str,
    /// Whether metadata-only updates are sent.
    pub supports_update: bool,
}

/// A planned change and the sink it goes to (index into the sink list).
#[derive(Debug, Clone)]
pub struct Planned {
    /// Index of the sink.
    pub sink: usize,
    /// The change, with its intent id.
    pub change: Change,
}

type Key = (IocKind, String);

/// Why an indicator could not be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The state database failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The indicator touches a value whose change is on its way to a sink: planning it now could
    /// cancel or rewrite that change. The caller rolls back, waits for the sink, and plans again.
    #[error("{kind} `{value}` has a change in flight to sink `{sink}`")]
    InFlight {
        /// The sink.
        sink: &'static str,
        /// The value's kind.
        kind: IocKind,
        /// The value.
        value: String,
    },
    /// The state is older than the version already applied (replayed history): nothing is
    /// planned and nothing was written.
    #[error("version {version} is older than the applied {applied}: replayed history, ignored")]
    Stale {
        /// The state's version.
        version: String,
        /// The version already applied.
        applied: String,
    },
}

/// The (sink, value) pairs of the batch being applied while the next one is planned. Kept as
/// hashes: a collision only makes the planner wait when it need not.
#[derive(Debug, Default, Clone)]
pub struct InFlight {
    keys: HashSet<u64>,
}

impl InFlight {
    fn hash(sink: usize, kind: IocKind, value: &str) -> u64 {
        // `DefaultHasher::new()` has fixed keys: the same pair hashes the same in both places.
        let mut h = DefaultHasher::new();
        (sink, kind.sink_kind(), value).hash(&mut h);
        h.finish()
    }

    /// Marks a change to sink `sink` (index) as in flight.
    pub fn insert(&mut self, sink: usize, change: &Change) {
        self.keys
            .insert(Self::hash(sink, change.ioc.kind, &change.ioc.value));
    }

    /// True when a change to this value in this sink may be in flight.
    pub fn contains(&self, sink: usize, kind: IocKind, value: &str) -> bool {
        !self.keys.is_empty() && self.keys.contains(&Self::hash(sink, kind, value))
    }

    /// True when nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn keyed(iocs: &[Ioc]) -> BTreeMap<Key, &Ioc> {
    iocs.iter()
        .map(|ioc| ((ioc.kind.sink_kind(), ioc.value.clone()), ioc))
        .collect()
}

/// Plans one indicator's new state; writes the indicator, holders, sink entries and intents in `tx`.
/// Returns the intents created (cancelled intents of this batch are removed from `tx` and their ids
/// returned in `cancelled`). Fails with [`PlanError::InFlight`] before writing anything when the
/// indicator touches a value of `in_flight`.
pub fn plan_indicator(
    tx: &Tx<'_>,
    sinks: &[SinkCaps],
    state: &IndicatorState,
    in_flight: &InFlight,
    cancelled: &mut Vec<i64>,
) -> Result<Vec<Planned>, PlanError> {
    let old = tx.indicator(&state.id)?;
    if let Some(stored) = &old {
        if let (Some(version), Some(applied)) = (&state.version, &stored.version) {
            if is_older(Some(version), Some(applied)) {
                return Err(PlanError::Stale {
                    version: version.clone(),
                    applied: applied.clone(),
                });
            }
        }
    }
    let old_iocs = old.as_ref().map(|o| o.iocs.clone()).unwrap_or_default();
    let old_keys = keyed(&old_iocs);
    let new_keys = keyed(&state.iocs);
    let mut touched: Vec<&Key> = old_keys.keys().chain(new_keys.keys()).collect();
    touched.sort();
    touched.dedup();
    for (index, sink) in sinks.iter().enumerate() {
        if let Some((kind, value)) = touched
            .iter()
            .find(|(kind, value)| in_flight.contains(index, *kind, value))
        {
            return Err(PlanError::InFlight {
                sink: sink.name,
                kind: *kind,
                value: value.clone(),
            });
        }
    }
    for (kind, value) in old_keys.keys().filter(|k| !new_keys.contains_key(*k)) {
        tx.remove_holder(*kind, value, &state.id)?;
    }
    for (kind, value) in new_keys.keys().filter(|k| !old_keys.contains_key(*k)) {
        tx.add_holder(*kind, value, &state.id)?;
    }
    tx.put_indicator(
        &state.id,
        &state.iocs,
        &state.meta,
        state.version.as_deref(),
    )?;

    // The pattern is stored once, in the indicator row: no sink sends it, and a copy in every
    // sink entry and intent made one 38 KB pattern with 3,000 members cost hundreds of MB.
    let meta = sink_meta(&state.meta);
    let mut planned = Vec::new();
    for (index, sink) in sinks.iter().enumerate() {
        for key in &touched {
            let (kind, value) = key;
            if let Some(change) = plan_key(
                tx,
                sink,
                state,
                &meta,
                new_keys.get(*key).copied(),
                *kind,
                value,
                cancelled,
            )? {
                planned.push(Planned {
                    sink: index,
                    change,
                });
            }
        }
    }
    Ok(planned)
}

/// The metadata a sink entry and an intent keep: the indicator's, without its pattern.
fn sink_meta(meta: &IocMeta) -> IocMeta {
    IocMeta {
        name: meta.name.clone(),
        description: meta.description.clone(),
        pattern: None,
        valid_from: meta.valid_from.clone(),
        valid_until: meta.valid_until.clone(),
        score: meta.score,
        confidence: meta.confidence,
        labels: meta.labels.clone(),
        kill_chain_phases: meta.kill_chain_phases.clone(),
        source_internal_id: meta.source_internal_id.clone(),
        source_url: meta.source_url.clone(),
    }
}

/// Plans one (sink, value); `meta` is the indicator's [`sink_meta`].
#[allow(clippy::too_many_arguments)]
fn plan_key(
    tx: &Tx<'_>,
    sink: &SinkCaps,
    state: &IndicatorState,
    meta: &IocMeta,
    held_by_this: Option<&Ioc>,
    kind: IocKind,
    value: &str,
    cancelled: &mut Vec<i64>,
) -> Result<Option<Change>, StateError> {
    // This indicator holding the value answers "is it desired?" without a query.
    let holder = match held_by_this {
        Some(_) => Some(state.id.clone()),
        None => tx.any_holder(kind, value)?,
    };
    let entry = tx.sink_entry(sink.name, kind, value)?;
    let desired = holder.is_some();
    let mut cancel_pending = |entry: &SinkEntry| -> Result<(), StateError> {
        if let Some(intent) = tx.intent_for(sink.name, kind, value)? {
            tx.delete_intent(intent.intent_id)?;
            cancelled.push(intent.intent_id);
        }
        let _ = entry;
        Ok(())
    };
    match (desired, entry) {
        (true, None) => {
            // Created for this indicator when it holds the value, else for a remaining holder.
            let (ioc, indicator_id, meta) = match (held_by_this, holder) {
                (Some(ioc), _) => (ioc.clone(), state.id.clone(), meta.clone()),
                (None, Some(other)) => {
                    let stored = tx.indicator(&other)?.unwrap_or_default();
                    let mut meta = stored.meta;
                    meta.pattern = None;
                    let ioc = stored
                        .iocs
                        .into_iter()
                        .find(|i| i.kind.sink_kind() == kind && i.value == value)
                        .unwrap_or(Ioc {
                            kind,
                            value: value.to_string(),
                        });
                    (ioc, other, meta)
                }
                (None, None) => return Ok(None),
            };
            let entry = SinkEntry {
                ioc,
                indicator_id,
                remote_id: None,
                status: EntryStatus::PendingCreate,
                meta,
            };
            tx.put_sink_entry(sink.name, &entry)?;
            Ok(Some(tx.insert_intent(
                sink.name,
                change_for(ChangeOp::Create, &entry),
            )?))
        }
        (true, Some(mut entry)) => match entry.status {
            EntryStatus::PendingDelete => {
                // Deleted and re-added within one batch: the delete was never sent.
                cancel_pending(&entry)?;
                entry.status = EntryStatus::Live;
                tx.put_sink_entry(sink.name, &entry)?;
                plan_update(tx, sink, state, meta, held_by_this, entry, cancelled)
            }
            EntryStatus::Live | EntryStatus::PendingUpdate => {
                plan_update(tx, sink, state, meta, held_by_this, entry, cancelled)
            }
            EntryStatus::PendingCreate | EntryStatus::Rejected => {
                if entry.status == EntryStatus::PendingCreate
                    && entry.indicator_id == state.id
                    && held_by_this.is_some()
                    && entry.meta != *meta
                {
                    // Not sent yet: send the newest metadata with the create.
                    entry.meta = meta.clone();
                    tx.put_sink_entry(sink.name, &entry)?;
                    if let Some(intent) = tx.intent_for(sink.name, kind, value)? {
                        return supersede(tx, sink, intent, meta, cancelled).map(Some);
                    }
                }
                Ok(None)
            }
        },
        (false, None) => Ok(None),
        (false, Some(mut entry)) => match entry.status {
            EntryStatus::PendingCreate => {
                cancel_pending(&entry)?;
                tx.remove_sink_entry(sink.name, kind, value)?;
                Ok(None)
            }
            EntryStatus::Rejected => {
                tx.remove_sink_entry(sink.name, kind, value)?;
                Ok(None)
            }
            EntryStatus::PendingDelete => Ok(None),
            EntryStatus::Live | EntryStatus::PendingUpdate => {
                if entry.status == EntryStatus::PendingUpdate {
                    cancel_pending(&entry)?;
                }
                entry.status = EntryStatus::PendingDelete;
                tx.put_sink_entry(sink.name, &entry)?;
                Ok(Some(tx.insert_intent(
                    sink.name,
                    change_for(ChangeOp::Delete, &entry),
                )?))
            }
        },
    }
}

/// A live entry owned by this indicator whose metadata changed gets an update (where supported);
/// `meta` is the indicator's [`sink_meta`].
fn plan_update(
    tx: &Tx<'_>,
    sink: &SinkCaps,
    state: &IndicatorState,
    meta: &IocMeta,
    held_by_this: Option<&Ioc>,
    mut entry: SinkEntry,
    cancelled: &mut Vec<i64>,
) -> Result<Option<Change>, StateError> {
    let owned = entry.indicator_id == state.id && held_by_this.is_some();
    if !sink.supports_update || !owned {
        return Ok(None);
    }
    let kind = entry.ioc.kind.sink_kind();
    if entry.status == EntryStatus::PendingUpdate {
        // Not sent yet: it carries the newest metadata instead.
        if let Some(intent) = tx.intent_for(sink.name, kind, &entry.ioc.value)? {
            return supersede(tx, sink, intent, meta, cancelled).map(Some);
        }
    }
    if metadata_equal(&entry.meta, meta) {
        return Ok(None);
    }
    let previous_meta = std::mem::replace(&mut entry.meta, meta.clone());
    entry.status = EntryStatus::PendingUpdate;
    let mut change = change_for(ChangeOp::Update, &entry);
    change.meta = meta.clone();
    // The entry keeps what the sink has until the update is acknowledged.
    entry.meta = previous_meta;
    tx.put_sink_entry(sink.name, &entry)?;
    Ok(Some(tx.insert_intent(sink.name, change)?))
}

/// Replaces a not-yet-sent intent with one carrying `meta`: the old intent is cancelled and the new
/// one returned. Rewriting the intent in place would not reach the copy of the change already
/// planned in memory for this batch (an earlier indicator or chunk), which would then go out with
/// the old metadata while the state records the new.
fn supersede(
    tx: &Tx<'_>,
    sink: &SinkCaps,
    mut intent: Change,
    meta: &IocMeta,
    cancelled: &mut Vec<i64>,
) -> Result<Change, StateError> {
    tx.delete_intent(intent.intent_id)?;
    cancelled.push(intent.intent_id);
    intent.meta = meta.clone();
    tx.insert_intent(sink.name, intent)
}

/// True when `new` is strictly older than `applied` (both RFC 3339); unknown or unparseable versions
/// are never stale.
fn is_older(new: Option<&str>, applied: Option<&str>) -> bool {
    let parse = |v: Option<&str>| v.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    matches!((parse(new), parse(applied)), (Some(n), Some(a)) if n < a)
}

/// The metadata fields a sink shows; the pattern text alone changing is not worth an update.
fn metadata_equal(a: &IocMeta, b: &IocMeta) -> bool {
    a.name == b.name
        && a.description == b.description
        && a.valid_until == b.valid_until
        && a.valid_from == b.valid_from
        && a.score == b.score
        && a.labels == b.labels
        && a.kill_chain_phases == b.kill_chain_phases
}

/// A change of an op for an entry.
fn change_for(op: ChangeOp, entry: &SinkEntry) -> Change {
    Change {
        intent_id: 0,
        op,
        ioc: entry.ioc.clone(),
        indicator_id: entry.indicator_id.clone(),
        remote_id: entry.remote_id.clone(),
        meta: entry.meta.clone(),
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
