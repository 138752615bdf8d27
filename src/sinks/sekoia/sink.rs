//! The Sekoia.io `Sink`: creates as batched JSON imports with 400 recovery (named items rejected,
//! else bisection), revokes exactly the indicators we created (by stored id, else by a term search
//! filtered on the exact value and our marker), keeps the live count against the quota, and settles
//! crash leftovers by searching again.

use super::client::SekoiaClient;
use super::config::SekoiaConfig;
use super::error::{SekoiaError, SINK};
use super::item::{build_item, marker, ItemDefaults};
use super::quota::LiveCount;
use super::types::{ImportItem, RemoteIndicator};
use crate::ioc::IocKind;
use crate::sinks::{op_runs, Change, ChangeOp, Outcome, Resolution, Sink, SinkError};
use async_trait::async_trait;
use std::collections::HashMap;

/// The Sekoia.io sink: one instance feeds one IOC collection.
#[derive(Debug)]
pub struct SekoiaSink {
    client: SekoiaClient,
    defaults: ItemDefaults,
    batch_size: usize,
    live: LiveCount,
}

/// What became of one create during `apply`, before it is turned into an `Outcome`.
#[derive(Debug, Clone)]
enum ItemResult {
    /// Imported; Sekoia's id when it is ours to revoke later.
    Created(Option<String>),
    /// Refused by Sekoia's validation: dead-letter.
    Rejected(String),
    /// Not done: retry later.
    Failed(SekoiaError),
}

/// Identity of an IOC within a batch: sink kind, lower-cased value, indicator id.
type Key = (IocKind, String, String);

fn key_of(change: &Change) -> Key {
    (
        change.ioc.kind.sink_kind(),
        change.ioc.value.trim().to_lowercase(),
        change.indicator_id.clone(),
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

/// Matches the import's answer to the items sent: same index when it fits (the normal case), else
/// any unused entry with the same value. An entry whose description lacks our marker is another
/// source's indicator Sekoia merged ours into: we report no id, so we never revoke it.
fn match_created(
    changes: &[&Change],
    sent: &[ImportItem],
    got: &[RemoteIndicator],
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
                .or_else(|| (0..got.len()).find(|&j| !used[j] && fits(&got[j])));
            let Some(pick) = pick else {
                tracing::warn!(
                    sink = SINK,
                    value = %item.value,
                    indicator = %c.indicator_id,
                    "sekoia returned no indicator for an imported value; a revoke will look it up"
                );
                return None;
            };
            used[pick] = true;
            let r = &got[pick];
            if r.description.is_some() && !r.has_marker(&marker(&c.indicator_id)) {
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

impl SekoiaSink {
    /// Builds the sink; `default_source_name` ("OpenCTI", "MISP") is used when `source_name` is unset.
    pub fn new(cfg: &SekoiaConfig, default_source_name: &str) -> Result<Self, SinkError> {
        let problems = cfg.validate();
        if !problems.is_empty() {
            let message = problems
                .iter()
                .map(|(k, m)| format!("{k}: {m}"))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(SinkError::Config {
                sink: SINK,
                key: super::config::SECTION,
                message,
            });
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
                link_template: cfg.link_template.clone(),
                valid_days: cfg.default_valid_days,
            },
            batch_size: cfg.batch_size.clamp(1, super::config::MAX_BATCH_SIZE),
            live: LiveCount::new(cfg.quota),
        })
    }

    /// The underlying client.
    pub fn client(&self) -> &SekoiaClient {
        &self.client
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

    /// Imports the items in batches; a 400 is taken apart: items Sekoia names are rejected and the
    /// rest re-sent; when it names none we bisect until single items remain. Any other failure stops
    /// all remaining imports (Sekoia is down, limiting or refusing us).
    async fn import_all(
        &self,
        changes: &[&Change],
        items: &[ImportItem],
        results: &mut [Option<ItemResult>],
    ) {
        let mut work: Vec<Vec<usize>> = (0..items.len())
            .collect::<Vec<_>>()
            .chunks(self.batch_size)
            .rev()
            .map(<[usize]>::to_vec)
            .collect();
        while let Some(group) = work.pop() {
            if group.is_empty() {
                continue;
            }
            let batch: Vec<ImportItem> = group.iter().map(|&i| items[i].clone()).collect();
            match self.client.import(&batch).await {
                Ok(got) => {
                    let sent: Vec<&Change> = group.iter().map(|&i| changes[i]).collect();
                    for (&i, id) in group.iter().zip(match_created(&sent, &batch, &got)) {
                        results[i] = Some(ItemResult::Created(id));
                    }
                }
                Err(SekoiaError::Validation {
                    status, message, ..
                }) => {
                    let mut rest = Vec::new();
                    for &i in &group {
                        if is_named(changes[i].ioc.kind, &items[i].value, &message) {
                            tracing::warn!(
                                sink = SINK,
                                value = %items[i].value,
                                indicator = %changes[i].indicator_id,
                                "sekoia rejected an IOC"
                            );
                            results[i] = Some(ItemResult::Rejected(format!(
                                "Sekoia.io rejected the IOC (HTTP {status}): {message}"
                            )));
                        } else {
                            rest.push(i);
                        }
                    }
                    if rest.len() < group.len() {
                        work.push(rest);
                    } else if group.len() == 1 {
                        results[group[0]] = Some(ItemResult::Rejected(format!(
                            "Sekoia.io rejected the IOC (HTTP {status}): {message}"
                        )));
                    } else {
                        let (a, b) = group.split_at(group.len() / 2);
                        work.push(b.to_vec());
                        work.push(a.to_vec());
                    }
                }
                // 413: the batch is too big; halving it is the cure.
                Err(SekoiaError::Http { status: 413, .. }) if group.len() > 1 => {
                    let (a, b) = group.split_at(group.len() / 2);
                    work.push(b.to_vec());
                    work.push(a.to_vec());
                }
                Err(e) => {
                    for i in group.into_iter().chain(work.drain(..).flatten()) {
                        results[i] = Some(ItemResult::Failed(e.clone()));
                    }
                }
            }
        }
    }

    /// Creates (and updates, which Sekoia has no use for: see `supports_update`), a run of
    /// consecutive non-delete changes.
    async fn apply_creates(
        &self,
        changes: &[Change],
        known: &mut HashMap<Key, String>,
    ) -> Vec<Outcome> {
        let now = chrono::Utc::now();
        let creates: Vec<&Change> = changes
            .iter()
            .filter(|c| c.op == ChangeOp::Create)
            .collect();
        let items: Vec<ImportItem> = creates
            .iter()
            .map(|c| build_item(c, &self.defaults, now))
            .collect();
        let mut results: Vec<Option<ItemResult>> = vec![None; items.len()];
        self.import_all(&creates, &items, &mut results).await;

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

    /// Our live indicators for this change: non-revoked, exactly its value, with our marker for its
    /// source indicator. Another source's indicator of the same value is never among them.
    async fn find_ours(&self, c: &Change) -> Result<Vec<RemoteIndicator>, SekoiaError> {
        let mark = marker(&c.indicator_id);
        let value = c.ioc.value.trim();
        Ok(self
            .client
            .search(value)
            .await?
            .into_iter()
            .filter(|r| !r.revoked && r.id.is_some())
            .filter(|r| r.has_value(c.ioc.kind, value) && r.has_marker(&mark))
            .collect())
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

    /// Deletes (a run of consecutive delete changes), one revoke call each: Sekoia has no bulk revoke.
    async fn apply_deletes(
        &self,
        changes: &[Change],
        known: &HashMap<Key, String>,
    ) -> Vec<Outcome> {
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
                let mark = marker(&c.indicator_id);
                let live = found.iter().filter(|r| !r.revoked).any(|r| {
                    (c.remote_id.is_some() && r.id == c.remote_id)
                        || (r.has_value(c.ioc.kind, &c.ioc.value) && r.has_marker(&mark))
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
impl Sink for SekoiaSink {
    fn name(&self) -> &'static str {
        SINK
    }

    fn max_batch(&self) -> usize {
        self.batch_size
    }

    /// Sekoia indicators are not updated in place (a re-import would add a second indicator); an
    /// `Update` that arrives anyway is acknowledged without a call.
    fn supports_update(&self) -> bool {
        false
    }

    /// Applies the batch in order, one run of same-kind changes at a time, so a create followed by a
    /// delete of the same IOC (or the reverse) ends as the source intended.
    async fn apply(&self, batch: &[Change]) -> Vec<Outcome> {
        let mut out = Vec::with_capacity(batch.len());
        let mut known: HashMap<Key, String> = HashMap::new();
        for run in op_runs(batch) {
            if run[0].op == ChangeOp::Delete {
                out.extend(self.apply_deletes(run, &known).await);
            } else {
                out.extend(self.apply_creates(run, &mut known).await);
            }
        }
        out
    }

    async fn resolve(&self, pending: &[Change]) -> Result<Vec<Resolution>, SinkError> {
        let mut out = Vec::with_capacity(pending.len());
        for c in pending {
            match self.resolve_one(c).await.map_err(|e| e.to_sink_error()) {
                Ok(r) => out.push(r),
                Err(e) if e.is_auth() => return Err(e),
                Err(e) => {
                    tracing::debug!(value = %c.ioc.value, error = %e, "lookup failed; asking again later");
                    out.push(Resolution::Unknown);
                }
            }
        }
        Ok(out)
    }

    async fn check(&self) -> Result<String, SinkError> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ioc::Ioc;
    use crate::model::IocMeta;

    fn change(value: &str, indicator: &str) -> Change {
        Change {
            intent_id: 1,
            op: ChangeOp::Create,
            ioc: Ioc {
                kind: IocKind::Domain,
                value: value.into(),
            },
            indicator_id: indicator.into(),
            remote_id: None,
            meta: IocMeta::default(),
        }
    }

    fn item(value: &str) -> ImportItem {
        ImportItem {
            value: value.into(),
            valid_from: None,
            valid_until: None,
            kill_chain_phases: Vec::new(),
            description: String::new(),
        }
    }

    fn remote(id: &str, value: &str, description: Option<&str>) -> RemoteIndicator {
        RemoteIndicator {
            id: Some(id.into()),
            x_inthreat_short_display: Some(value.into()),
            description: description.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn named_values_must_be_quoted_whole() {
        let msg = "Invalid indicators: 'b.A.example', \"x..y\" (code 400)";
        assert!(is_named(IocKind::Domain, "b.a.example", msg));
        assert!(is_named(IocKind::Domain, "x..y", msg));
        assert!(!is_named(IocKind::Domain, "a.example", msg));
        assert!(!is_named(IocKind::Url, "http://X/", "bad: 'http://x/'"));
    }

    #[test]
    fn created_ids_are_matched_and_foreign_ones_dropped() {
        let (a, b, c) = (
            change("a.example", "i--a"),
            change("b.example", "i--b"),
            change("c.example", "i--c"),
        );
        let changes = [&a, &b, &c];
        let sent = [item("a.example"), item("b.example"), item("c.example")];
        let got = [
            // Out of order, and c merged into another source's indicator.
            remote("indicator--b", "b.example", Some("x [iocsync:i--b]")),
            remote("indicator--a", "A.example", None),
            remote("indicator--c", "c.example", Some("from someone else")),
        ];
        assert_eq!(
            match_created(&changes, &sent, &got),
            [
                Some("indicator--a".to_string()),
                Some("indicator--b".to_string()),
                None
            ]
        );
        assert_eq!(match_created(&changes, &sent, &[]), [None, None, None]);
    }
}
