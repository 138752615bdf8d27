//! The Sekoia.io `Sink`: creates as JSON imports grouped by equal `default_fields` and batched,
//! with 400 recovery (named items rejected, else bisection); learns each created indicator's id by
//! a term search for its value and our marker when the import answer has none (Sekoia documents
//! none); revokes by stored id, else by that same search; keeps the live count against the quota;
//! and settles crash leftovers by searching again.

use super::client::SekoiaClient;
use super::config::SekoiaConfig;
use super::error::{SekoiaError, SINK};
use super::item::{build_item, legacy_marker, marker, ItemDefaults};
use super::quota::LiveCount;
use super::types::{DefaultFields, ImportItem, RemoteIndicator};
use crate::config::Valid;
use crate::ioc::IocKind;
use crate::remote::RemoteFailure;
use crate::sinks::batch::{self, post_in_groups, push_lookup, BatchedSink, Batching, GroupAnswer};
use crate::sinks::{Change, ChangeOp, Outcome, Resolution, SinkError};
use async_trait::async_trait;
use futures_util::stream::{self, StreamExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// Id lookups run at once after an import: enough to hide the latency of up to 100 searches, few
/// enough not to trip Sekoia's rate limit.
const LOOKUP_CONCURRENCY: usize = 4;

/// The Sekoia.io sink: one instance feeds one IOC collection.
#[derive(Debug)]
pub struct SekoiaSink {
    client: SekoiaClient,
    defaults: ItemDefaults,
    batching: Batching,
    live: LiveCount,
}

/// What became of one item of an import.
type ItemResult = batch::ItemResult<SekoiaError>;

/// Identity of an IOC within a batch: sink kind and lower-cased value. The sink holds one
/// indicator per value (the planner ref-counts holders), whichever source indicator holds it.
type Key = (IocKind, String);

fn key_of(change: &Change) -> Key {
    (
        change.ioc.kind.sink_kind(),
        change.ioc.value.trim().to_lowercase(),
    )
}

/// For a change left unsent after `e` stopped the run of calls.
fn not_sent(e: &SekoiaError) -> Outcome {
    Outcome::Retry {
        after: e.retry_after(),
        error: SinkError::NotSent {
            sink: SINK,
            cause: e.to_string(),
        },
    }
}

fn retry(e: &SekoiaError) -> Outcome {
    Outcome::Retry {
        after: e.retry_after(),
        error: e.to_sink_error(),
    }
}

/// True when Sekoia's 400 message names this value in quotes (`'…'`, `"…"` or `` `…` ``), so that
/// `a.example` is not found in `'b.a.example'`; case-insensitive except for URLs.
fn is_named(kind: IocKind, value: &str, message: &str) -> bool {
    let value = value.trim();
    let (hay, needle) = if kind == IocKind::Url {
        (message.to_string(), value.to_string())
    } else {
        (message.to_ascii_lowercase(), value.to_ascii_lowercase())
    };
    ['\'', '"', '`']
        .iter()
        .any(|q| hay.contains(&format!("{q}{needle}{q}")))
}

/// Reads ids from an import answer, for answers that carry them (Sekoia does not document any: the
/// documented `{value, result}` items give `None` everywhere, and the caller searches). Matches the
/// items sent by index when it fits, else any unused entry with the same value. An entry whose
/// description lacks our marker is another source's indicator Sekoia merged ours into: no id, so
/// we never revoke it.
fn match_created(
    changes: &[&Change],
    sent: &[ImportItem],
    got: &[RemoteIndicator],
    mark: &str,
) -> Vec<Option<String>> {
    let mut used = vec![false; got.len()];
    changes
        .iter()
        .zip(sent)
        .enumerate()
        .map(|(i, (c, item))| {
            let fits = |r: &RemoteIndicator| {
                r.id.is_some() && (r.values().is_empty() || r.has_value(c.ioc.kind, &item.value))
            };
            let pick = got
                .get(i)
                .filter(|r| !used[i] && fits(r))
                .map(|_| i)
                .or_else(|| (0..got.len()).find(|&j| !used[j] && fits(&got[j])))?;
            used[pick] = true;
            let r = &got[pick];
            if r.description.is_some() && !r.has_marker(mark) {
                tracing::info!(
                    sink = SINK,
                    value = %item.value,
                    indicator = %c.indicator_id,
                    existing = r.id.as_deref().unwrap_or(""),
                    "sekoia kept another source's indicator for this value; it is not ours to revoke"
                );
                return None;
            }
            r.id.clone()
        })
        .collect()
}

/// Groups creates by equal default fields, in order of first appearance, and cuts each group into
/// import calls of at most `batch_size` items.
fn import_calls(fields: &[DefaultFields], batch_size: usize) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut index: HashMap<&DefaultFields, usize> = HashMap::new();
    for (i, f) in fields.iter().enumerate() {
        let g = *index.entry(f).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    groups
        .iter()
        .flat_map(|g| g.chunks(batch_size.max(1)).map(<[usize]>::to_vec))
        .collect()
}

impl SekoiaSink {
    /// Builds the sink from a validated section; `default_source_name` ("OpenCTI", "MISP") is used
    /// when `source_name` is unset. Fails only on the client's TLS setup.
    pub fn new(cfg: &Valid<SekoiaConfig>, default_source_name: &str) -> Result<Self, SinkError> {
        if cfg.link_template.is_some() {
            tracing::warn!(
                sink = SINK,
                key = "sekoia_intel.link_template",
                "ignored: Sekoia's JSON import has one description per call, so iocsync no longer \
                 writes a link per indicator"
            );
        }
        let source = cfg
            .source_name
            .clone()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| default_source_name.to_string());
        Ok(SekoiaSink {
            client: SekoiaClient::new(cfg)?,
            defaults: ItemDefaults {
                source,
                valid_days: cfg.default_valid_days,
                marker: marker(cfg.instance.as_deref()),
            },
            batching: Batching {
                sink: SINK,
                max: cfg.batch_size.clamp(1, super::config::MAX_BATCH_SIZE),
                // Sekoia indicators are not updated in place (a re-import would add a second
                // indicator); an `Update` that arrives anyway is acknowledged without a call.
                updates: false,
            },
            live: LiveCount::new(cfg.quota),
        })
    }

    /// The underlying client.
    pub fn client(&self) -> &SekoiaClient {
        &self.client
    }

    /// The marker this sink writes in `default_fields.description` and looks for when searching.
    pub fn marker(&self) -> &str {
        &self.defaults.marker
    }

    /// Seeds the count of IOCs live in the collection (from the pipeline's state); `apply` keeps it
    /// current, the gauge `iocsync_sink_live_iocs{sink="sekoia"}` shows it, and a warning is logged
    /// when it reaches 90 % of the quota.
    pub fn set_live_count(&self, n: u64) {
        self.live.set(n);
    }

    /// The current live count.
    pub fn live_count(&self) -> u64 {
        self.live.get()
    }

    /// True when the live count is at or above 90 % of the quota.
    pub fn near_quota(&self) -> bool {
        self.live.near_quota()
    }

    /// True when `r` was created by this iocsync for this change's value: exactly the value, and
    /// our marker (or the per-indicator marker of earlier versions, for this change's indicator).
    fn is_ours(&self, c: &Change, r: &RemoteIndicator) -> bool {
        r.has_value(c.ioc.kind, c.ioc.value.trim())
            && (r.has_marker(&self.defaults.marker)
                || r.has_marker(&legacy_marker(&c.indicator_id)))
    }

    /// Our live indicators for this change's value: non-revoked, exactly its value, with our
    /// marker. Another source's indicator of the same value is never among them.
    async fn find_ours(&self, c: &Change) -> Result<Vec<RemoteIndicator>, SekoiaError> {
        Ok(self
            .client
            .search(c.ioc.value.trim())
            .await?
            .into_iter()
            .filter(|r| !r.revoked && r.id.is_some() && self.is_ours(c, r))
            .collect())
    }

    /// The id of our live indicator for a value just imported, by a term search; `None` when it
    /// finds none of ours (Sekoia kept another source's indicator, which is not ours to revoke).
    async fn learn_id(&self, c: &Change) -> Result<Option<String>, SekoiaError> {
        let ours = self.find_ours(c).await?;
        if ours.is_empty() {
            tracing::info!(
                sink = SINK,
                value = %c.ioc.value,
                indicator = %c.indicator_id,
                "no indicator of ours holds this value after the import; Sekoia kept another \
                 source's, which is not ours to revoke"
            );
        } else if ours.len() > 1 {
            tracing::warn!(
                sink = SINK,
                value = %c.ioc.value,
                count = ours.len(),
                "several live indicators of ours hold this value; storing the first"
            );
        }
        Ok(ours.into_iter().find_map(|r| r.id))
    }

    /// Fills in the ids an import answer did not give, one search per item, a few at a time. The
    /// creates are done whatever happens here: after a failed search (Sekoia down or limiting us)
    /// the rest are not asked, and their revokes will search instead.
    async fn learn_ids(&self, changes: &[&Change], ids: &mut [Option<String>]) {
        let stop = AtomicBool::new(false);
        let stop = &stop;
        let wanted: Vec<usize> = (0..ids.len()).filter(|&i| ids[i].is_none()).collect();
        let found: Vec<(usize, Option<String>)> = stream::iter(wanted)
            .map(|i| async move {
                if stop.load(Ordering::Relaxed) {
                    return (i, None);
                }
                match self.learn_id(changes[i]).await {
                    Ok(id) => (i, id),
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        tracing::warn!(
                            sink = SINK,
                            value = %changes[i].ioc.value,
                            indicator = %changes[i].indicator_id,
                            error = %e,
                            "sekoia id lookup after import failed; a revoke will look it up"
                        );
                        (i, None)
                    }
                }
            })
            .buffered(LOOKUP_CONCURRENCY)
            .collect()
            .await;
        for (i, id) in found {
            ids[i] = id;
        }
    }

    /// Imports the items, one call per group of equal default fields (at most `batch_size` items);
    /// a 400 is taken apart: items Sekoia names are rejected and the rest re-sent; when it names
    /// none we bisect until single items remain. Any other failure stops all remaining imports
    /// (Sekoia is down, limiting or refusing us).
    async fn import_all(
        &self,
        changes: &[&Change],
        items: &[ImportItem],
        fields: &[DefaultFields],
        results: &mut [Option<ItemResult>],
    ) {
        // Every index of a work unit has equal default fields: a split keeps it so.
        let groups = import_calls(fields, self.batching.max);
        post_in_groups(groups, results, |group| async move {
            let Some(&first) = group.first() else {
                return GroupAnswer::Created(Vec::new());
            };
            let batch: Vec<ImportItem> = group.iter().map(|&i| items[i].clone()).collect();
            match self.client.import(&fields[first], &batch).await {
                Ok(got) => {
                    let sent: Vec<&Change> = group.iter().map(|&i| changes[i]).collect();
                    let mut ids = match_created(&sent, &batch, &got, &self.defaults.marker);
                    self.learn_ids(&sent, &mut ids).await;
                    GroupAnswer::Created(ids)
                }
                Err(SekoiaError::Validation {
                    status, message, ..
                }) => {
                    let why = format!("Sekoia.io rejected the IOC (HTTP {status}): {message}");
                    let mut named = Vec::new();
                    for &i in &group {
                        if is_named(changes[i].ioc.kind, &items[i].value, &message) {
                            tracing::warn!(
                                sink = SINK,
                                value = %items[i].value,
                                indicator = %changes[i].indicator_id,
                                "sekoia rejected an IOC"
                            );
                            named.push((i, why.clone()));
                        }
                    }
                    GroupAnswer::Refused { named, whole: why }
                }
                // 413: the batch is too big; halving it is the cure.
                Err(e @ SekoiaError::Http { status: 413, .. }) => GroupAnswer::TooLarge(e),
                Err(e) => GroupAnswer::Failed(e),
            }
        })
        .await;
    }

    /// Revokes one indicator; an unknown id means it is already gone, which is what we want.
    async fn revoke(&self, c: &Change, id: &str) -> Result<(), SekoiaError> {
        match self.client.revoke(id).await {
            Err(SekoiaError::IndicatorNotFound { message, .. }) => {
                tracing::info!(
                    sink = SINK,
                    indicator = %c.indicator_id,
                    remote_id = id,
                    %message,
                    "sekoia indicator already gone"
                );
                Ok(())
            }
            other => other,
        }
    }

    /// Revokes for one delete change: the stored id, else whatever of ours a term search finds.
    async fn revoke_change(&self, c: &Change, known: Option<&String>) -> Result<(), SekoiaError> {
        if let Some(id) = c.remote_id.as_ref().or(known) {
            return self.revoke(c, id).await;
        }
        let ours = self.find_ours(c).await?;
        if ours.is_empty() {
            tracing::info!(
                sink = SINK,
                value = %c.ioc.value,
                indicator = %c.indicator_id,
                "nothing of ours to revoke in the sekoia collection"
            );
        }
        for r in &ours {
            if let Some(id) = &r.id {
                self.revoke(c, id).await?;
            }
        }
        Ok(())
    }

    /// Settles one change left pending: a create is applied when a live indicator of ours holds
    /// its value (its id is stored, so no second import and no orphan); a delete is applied when
    /// its indicator (the stored id, else any of ours for the value) is no longer live.
    async fn resolve_one(&self, c: &Change) -> Result<Resolution, SekoiaError> {
        Ok(match c.op {
            ChangeOp::Update => Resolution::Applied {
                remote_id: c.remote_id.clone(),
            },
            ChangeOp::Create => match self.find_ours(c).await?.into_iter().find_map(|r| r.id) {
                Some(id) => Resolution::Applied {
                    remote_id: Some(id),
                },
                None => Resolution::NotApplied,
            },
            ChangeOp::Delete => {
                let found = self.client.search(c.ioc.value.trim()).await?;
                // With the stored id only that indicator counts: the marker is per instance, so
                // a later generation of the same value (created after this delete) is ours too.
                let live = found
                    .iter()
                    .filter(|r| !r.revoked)
                    .any(|r| match &c.remote_id {
                        Some(id) => r.id.as_ref() == Some(id),
                        None => self.is_ours(c, r),
                    });
                if live {
                    Resolution::NotApplied
                } else {
                    Resolution::Applied { remote_id: None }
                }
            }
        })
    }
}

#[async_trait]
impl BatchedSink for SekoiaSink {
    type Known = HashMap<Key, String>;

    fn batching(&self) -> Batching {
        self.batching
    }

    /// Creates (and updates, which Sekoia has no use for: see `batching`), a run of
    /// consecutive non-delete changes.
    async fn write_run(&self, changes: &[Change], known: &mut Self::Known) -> Vec<Outcome> {
        let now = chrono::Utc::now();
        let creates: Vec<&Change> = changes
            .iter()
            .filter(|c| c.op == ChangeOp::Create)
            .collect();
        let (items, fields): (Vec<ImportItem>, Vec<DefaultFields>) = creates
            .iter()
            .map(|c| build_item(c, &self.defaults, now))
            .unzip();
        let mut results: Vec<Option<ItemResult>> = vec![None; items.len()];
        self.import_all(&creates, &items, &fields, &mut results)
            .await;

        let mut results = results.into_iter();
        let mut created = 0;
        let out = changes
            .iter()
            .map(|c| {
                if c.op != ChangeOp::Create {
                    tracing::debug!(sink = SINK, indicator = %c.indicator_id, "update ignored");
                    return Outcome::Applied {
                        remote_id: c.remote_id.clone(),
                    };
                }
                match results.next().flatten() {
                    Some(ItemResult::Created(id)) => {
                        created += 1;
                        if let Some(id) = &id {
                            known.insert(key_of(c), id.clone());
                        }
                        Outcome::Applied { remote_id: id }
                    }
                    Some(ItemResult::Rejected(reason)) => Outcome::Rejected { reason },
                    Some(ItemResult::Failed(e)) => retry(&e),
                    None => Outcome::Retry {
                        after: None,
                        error: SinkError::Transport {
                            sink: SINK,
                            endpoint: self.client.indicators_url(),
                            message: "the item was not sent".into(),
                        },
                    },
                }
            })
            .collect();
        self.live.adjust(created, 0);
        out
    }

    /// Deletes (a run of consecutive delete changes), one revoke call each: Sekoia has no bulk revoke.
    async fn delete_run(&self, changes: &[Change], known: &Self::Known) -> Vec<Outcome> {
        let mut out = Vec::with_capacity(changes.len());
        let mut abort: Option<SekoiaError> = None;
        let mut revoked = 0;
        for c in changes {
            if let Some(e) = &abort {
                out.push(not_sent(e));
                continue;
            }
            match self.revoke_change(c, known.get(&key_of(c))).await {
                Ok(()) => {
                    revoked += 1;
                    out.push(Outcome::Applied { remote_id: None });
                }
                // Sekoia refused this revoke itself (not the service): re-sending will not help.
                Err(SekoiaError::Validation {
                    status, message, ..
                }) => out.push(Outcome::Rejected {
                    reason: format!("Sekoia.io refused the revoke (HTTP {status}): {message}"),
                }),
                Err(e) => {
                    out.push(retry(&e));
                    abort = Some(e);
                }
            }
        }
        self.live.adjust(0, revoked);
        out
    }

    async fn resolve_pending(&self, pending: &[Change]) -> Result<Vec<Resolution>, SinkError> {
        let mut out = Vec::with_capacity(pending.len());
        for c in pending {
            let answer = self.resolve_one(c).await;
            push_lookup(c, answer, &mut out).map_err(|e| e.to_sink_error())?;
        }
        Ok(out)
    }

    async fn probe(&self) -> Result<String, SinkError> {
        let collection = self
            .client
            .get_collection()
            .await
            .map_err(|e| e.to_sink_error())?;
        let name = collection
            .name
            .filter(|n| !n.trim().is_empty())
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        Ok(format!(
            "reachable at {}, API key accepted, IOC collection {}{name} found; {} live IOCs \
             counted of a {} quota; import permission is proven by the first create",
            self.client.collection_url(),
            self.client.collection_id(),
            self.live.get(),
            self.live.quota()
        ))
    }

    fn seed_live(&self, live: u64) {
        self.set_live_count(live);
    }
}

#[cfg(test)]
#[path = "sink_tests.rs"]
mod tests;
